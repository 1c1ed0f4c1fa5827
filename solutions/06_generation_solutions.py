"""Solutions to chapter 06's exercises (generation), runnable as a script.

    python solutions/06_generation_solutions.py          # learner sizes
    MINIGPT_QUICK=1 python solutions/06_generation_solutions.py   # seconds

Uses chapter 05's model (``get_trained_model`` trains a small one if it is missing).
"""

from __future__ import annotations

import torch

import minigpt_helpers as m
from minigpt_helpers import generate, sample_next


# ----------------------------------------------------------------------------- 1. repetition penalty
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


def exercise_1(model) -> None:
    print("== 1. repetition penalty (greedy)")
    n = m.pick(full=150, quick=40)
    for penalty in (1.0, 1.3, 2.0):
        text = generate_with_penalty(model, "The research shows", n, penalty)
        print(f"penalty {penalty}: distinct 4-grams {distinct_ngrams(text):.2f}\n{text}\n")
    print("A penalty breaks the loops, but it also punishes words that must repeat ('the', spaces, newlines):")
    print("too strong and the text avoids its own common tokens; CTRL found ~1.2 a good balance.\n")


# ----------------------------------------------------------------------------- 2. stop strings
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


def exercise_2(model) -> None:
    print("== 2. stop at the first blank line")
    out = generate_until(model, "ROMEO:", "\n\n", m.pick(full=300, quick=60), temperature=0.8, seed=1)
    print(out)
    assert "\n\n" not in out
    print(f"-- stopped after {len(out)} characters\n")


# ----------------------------------------------------------------------------- 3. speed-up vs context
def exercise_3() -> None:
    print("== 3. KV-cache speed-up vs context length (random weights)")
    contexts = m.pick(full=[64, 128, 256, 512], quick=[32, 64])
    n_tokens = m.pick(full=300, quick=60)
    ratios = []
    for ctx in contexts:
        m.set_seed(0)
        model = m.GPT(m.GPTConfig(vocab_size=256, block_size=ctx, n_layer=2, n_head=4, n_embd=128)).eval()
        ids = list(range(10))
        m.time_generation(model, ids, 5, use_cache=True)  # warm-up
        t_cache = m.time_generation(model, ids, n_tokens, use_cache=True)[-1]
        t_plain = m.time_generation(model, ids, n_tokens, use_cache=False)[-1]
        ratios.append(t_plain / t_cache)
        print(f"context {ctx:4d}: {n_tokens / t_cache:7.1f} tok/s with cache, {n_tokens / t_plain:7.1f} without "
              f"-> {ratios[-1]:.1f}x")
    print("The ratio grows with the context: without a cache each step re-runs the whole window (on average ~3/4")
    print("of the context under generate's window policy); with it, one token plus an attention over the cache.\n")
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
    exercise_1(model)
    exercise_2(model)
    exercise_3()
