"""Solutions to chapter 06's exercises (generation), runnable as a script.

    python solutions/06_generation_solutions.py          # learner sizes
    MINIGPT_QUICK=1 python solutions/06_generation_solutions.py   # seconds

Uses chapter 05's model (``get_trained_model`` trains a small one if it is missing) and, like the
chapter, a prompt from the data it read.
"""

from __future__ import annotations

import torch

import minigpt_helpers as m
from minigpt_helpers import generate, sample_next
from minigpt_helpers.training.checkpoint import read_trainer_state


def chapter_prompt() -> str:
    """The chapter's prompt: from Shakespeare when chapter 05's model read Shakespeare, else from the web."""
    source = read_trainer_state(m.find_checkpoint(m.artifacts_dir("ch05"))).get("data_source")
    return "ROMEO.\n" if source == "shakespeare" else "The research shows"


# ----------------------------------------------------------------------------- 1. repetition penalty
# Before sampling, divide the logits of tokens already in the text by a penalty > 1 (multiply if
# negative), as in CTRL. Does it stop greedy decoding's loops? What does it do to words that should
# repeat, like "the"?
def apply_repetition_penalty(logits: torch.Tensor, previous: list[int], penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019): make tokens already in the text less likely.

    Positive logits are divided by ``penalty`` and negative ones multiplied, so a
    seen token always loses probability whatever the sign of its score.
    """
    if penalty < 1:
        raise ValueError(f"penalty must be >= 1 (1 = off), got {penalty}")
    seen = torch.tensor(sorted(set(previous)), dtype=torch.long, device=logits.device)
    out = logits.clone()
    vals = out[seen]
    out[seen] = torch.where(vals > 0, vals / penalty, vals * penalty)
    return out


@torch.no_grad()
def generate_with_penalty(model, prompt: str, max_new_tokens: int, penalty: float, temperature: float = 0.0,
                          seed: int = 0) -> str:
    """A plain (cache-free, sliding-window) loop: the penalty needs the logits before sampling."""
    tok = model.tokenizer
    ids = tok.encode(prompt)
    gen = torch.Generator(device=model.device).manual_seed(seed)
    n_prompt = len(ids)
    for _ in range(max_new_tokens):
        window = torch.tensor([ids[-model.config.block_size:]], device=model.device)
        logits = model(window)[0][0, -1]
        logits = apply_repetition_penalty(logits, ids, penalty)
        ids.append(int(sample_next(logits, temperature, generator=gen)))
    return prompt + tok.decode(ids[n_prompt:])


def distinct_ngrams(text: str, n: int = 4) -> float:
    """Fraction of the text's character n-grams that are distinct: low = loops."""
    grams = [text[i : i + n] for i in range(len(text) - n + 1)]
    return len(set(grams)) / max(1, len(grams))


def common_words(text: str, words: tuple[str, ...] = ("the", "and", "of", "to", "i", "a")) -> int:
    """How often the most common English words occur in ``text``: words that *should* repeat."""
    return sum(w.strip(".,;:!?'\"").lower() in words for w in text.split())


def repeat_share(tok, prompt: str, text: str) -> float:
    """Share of the generated tokens that already occurred earlier in the text (prompt included)."""
    ids = tok.encode(text)
    start = len(tok.encode(prompt))
    return sum(ids[i] in ids[:i] for i in range(start, len(ids))) / max(1, len(ids) - start)


def exercise_1(model, prompt: str) -> None:
    print("== 1. repetition penalty (greedy)")
    n = m.pick(full=150, quick=40)
    distinct, common, repeats = {}, {}, {}
    for penalty in (1.0, 1.3, 2.0):
        text = generate_with_penalty(model, prompt, n, penalty)
        new = text[len(prompt):]
        distinct[penalty], common[penalty] = distinct_ngrams(new), common_words(new)
        repeats[penalty] = repeat_share(model.tokenizer, prompt, text)
        print(f"penalty {penalty}: distinct 4-grams {distinct[penalty]:.2f}, tokens already in the text "
              f"{repeats[penalty]:.0%}, common words ('the', 'and', ...) {common[penalty]}\n{text}\n")
    print(f"Distinct 4-grams go from {distinct[1.0]:.2f} without a penalty to {distinct[1.3]:.2f} at 1.3 and "
          f"{distinct[2.0]:.2f} at 2.0: the penalty {'breaks' if distinct[2.0] > distinct[1.0] else 'does not break'} "
          f"the loops. The common words that should repeat occur {common[1.0]}, {common[1.3]} and {common[2.0]} "
          f"times{' (rarer with the penalty)' if common[2.0] < common[1.0] else ''}: the penalty punishes them "
          "(and spaces, newlines) like any loop,\nso too strong a penalty makes the text avoid its own commonest "
          "tokens; CTRL found ~1.2 a good balance.\n")
    assert distinct[2.0] > distinct[1.0]  # fewer repeated 4-grams: the loops are broken
    assert repeats[2.0] < repeats[1.0]  # and fewer tokens reused, the common words among them


# ----------------------------------------------------------------------------- 2. stop strings
# Stop generation at the first blank line ("\n\n", the end of a speech), built on
# generate(..., stream=True), and cut the text at the stop string.
def generate_until(model, prompt: str, stop: str = "\n\n", max_new_tokens: int = 300, **kwargs) -> str:
    """Stream, and stop as soon as ``stop`` appears in the new text (the text is cut before it)."""
    text = ""
    pieces = generate(model, prompt, max_new_tokens=max_new_tokens, stream=True, **kwargs)
    next(pieces)  # the prompt itself
    for piece in pieces:
        text += piece
        cut = text.find(stop)
        if cut >= 0:
            pieces.close()  # stops the generator: no more tokens are computed
            return prompt + text[:cut]
    return prompt + text


def exercise_2(model, prompt: str) -> None:
    print("== 2. stop at the first blank line")
    max_new = m.pick(full=300, quick=60)
    out = generate_until(model, prompt, "\n\n", max_new, temperature=0.8, seed=1)
    full = generate(model, prompt, max_new_tokens=max_new, temperature=0.8, seed=1)  # the same draws, no stop
    print(out)
    assert "\n\n" not in out[len(prompt):] and full.startswith(out)
    stopped = "\n\n" in full[len(prompt):]
    print(f"-- {'stopped at the blank line' if stopped else f'no blank line in {max_new} tokens'} after "
          f"{len(out)} characters (without the stop string: {len(full)})\n")


# ----------------------------------------------------------------------------- 3. speed-up vs context
# Time 300 new tokens with and without the cache for contexts 64, 128, 256 and 512 (random weights,
# section 5's timing model) and plot the ratio.
def exercise_3(vocab_size: int) -> None:
    print("== 3. KV-cache speed-up vs context length (random weights)")
    contexts = m.pick(full=[64, 128, 256, 512], quick=[32, 64])
    n_tokens = m.pick(full=300, quick=60)
    ratios = []
    for ctx in contexts:
        m.set_seed(0)
        model = m.GPT(m.GPTConfig(vocab_size=vocab_size, block_size=ctx, n_layer=m.pick(full=4, quick=2), n_head=4,
                                  n_embd=m.pick(full=256, quick=64))).eval()
        ids = list(range(10))
        m.time_generation(model, ids, 5, use_cache=True)  # warm-up
        t_cache = m.time_generation(model, ids, n_tokens, use_cache=True)[-1]
        t_plain = m.time_generation(model, ids, n_tokens, use_cache=False)[-1]
        ratios.append(t_plain / t_cache)
        print(f"context {ctx:4d}: {n_tokens / t_cache:7.1f} tok/s with cache, {n_tokens / t_plain:7.1f} without "
              f"-> {ratios[-1]:.1f}x")
    grows = all(b > a for a, b in zip(ratios, ratios[1:]))
    print(f"The ratio goes from {ratios[0]:.1f}x at context {contexts[0]} to {ratios[-1]:.1f}x at {contexts[-1]}"
          f"{' and grows at every step' if grows else ''}: without a cache each new token re-runs the whole window\n"
          "(on average ~3/4 of the context under generate's window policy, so its cost grows with the context);\n"
          "with it, one token plus an attention over the cache, almost independent of the context at this size.\n")
    if not m.is_quick():  # timings: checked at full size (quick mode's short runs on a busy machine only print)
        assert ratios[-1] > ratios[0]
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(5, 3))
        ax.plot(contexts, ratios, marker="o")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("context (block_size)")
        ax.set_ylabel("speed-up with KV cache (x)")
        fig.tight_layout()
        path = m.artifacts_dir("ch06") / "kv_cache_speedup.png"
        fig.savefig(path, dpi=80)
        print(f"plot saved to {path}")
    except ImportError:  # pragma: no cover - matplotlib is a course dependency
        pass


if __name__ == "__main__":
    model = m.get_trained_model()
    prompt = chapter_prompt()
    exercise_1(model, prompt)
    exercise_2(model, prompt)
    exercise_3(model.config.vocab_size)
