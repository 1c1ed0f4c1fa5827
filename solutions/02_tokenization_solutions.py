"""Chapter 02 (tokenization): solutions to the exercises, runnable as a script.

    python solutions/02_tokenization_solutions.py          # MINIGPT_QUICK=1 for a faster run

1. Pre-splitting matters: BPE with no pre-split learns tokens that glue words,
   spaces and punctuation together.
2. Encoding with your own merges (in training order, chunk by chunk) matches
   ``BPETokenizer.encode``.
3. Out-of-domain text: a tokenizer trained on Shakespeare compresses Python code
   much worse than Shakespeare.
4. A larger vocabulary in a time budget: the default (1,024) against 4,096, chapter 05's
   CPU model trained for the same time, compared in bits per byte.
"""

from __future__ import annotations

import inspect
import time

import regex

import minigpt_helpers as m
from minigpt_helpers import BPETokenizer, SentencePieceTokenizer
from minigpt_helpers.tokenizers import bpe as bpe_module

TRAIN_CHARS = m.pick(full=2_000_000, quick=150_000)  # the chapter's text for its experiments
VAL_CHARS = m.pick(full=300_000, quick=40_000)  # and its held-out text
split = regex.compile(m.GPT4_SPLIT_PATTERN)  # the chapter's pre-split regex


def take_chars(split_name: str, n_chars: int) -> list[str]:
    """Documents from the stream until about ``n_chars`` characters (the chapter's helper)."""
    docs, n = [], 0
    for row in m.stream_documents("auto", split=split_name, verbose=False):
        docs.append(row["text"])
        n += len(row["text"])
        if n >= n_chars:
            break
    return docs


def bytes_per_token(tok, text: str) -> float:
    return len(text.encode("utf-8")) / len(tok.encode(text, allowed_special="all"))  # code may mention <|endoftext|>


def token_text(tok: BPETokenizer, i: int) -> str:
    return tok.token_bytes(i).decode("utf-8", "replace")


# 1. BPE without pre-split (pattern [\s\S]+) against the GPT-4 pattern, vocabulary 384, on train_docs[:5]:
#    the 20 longest tokens of the first, and bytes per token on val_text.
def exercise_1_presplit(train_docs: list[str], val_text: str) -> None:
    """Without a pre-split each document is a single chunk, so merges may cross spaces and punctuation.

    (Slow-ish: every merge rescans whole documents, so a few documents and a small vocabulary;
    the same five documents at full size and in quick mode.)
    A token spans chunks when the GPT-4 pattern cuts its text in two or more pieces: such a
    token can never be learned with the pattern, whose merges stay inside one chunk.
    """
    few = train_docs[:5]
    plain = BPETokenizer.train(few, vocab_size=384, pattern=r"[\s\S]+")
    gpt4 = BPETokenizer.train(few, vocab_size=384)
    longest = sorted(range(256, plain.eot_id), key=lambda i: -len(plain.token_bytes(i)))[:20]
    print("1. longest tokens without pre-split:", [token_text(plain, i) for i in longest])

    def spans_chunks(tok: BPETokenizer, i: int) -> bool:
        return len(split.findall(token_text(tok, i))) > 1

    crossing = [token_text(plain, i) for i in longest if spans_chunks(plain, i)]
    n_plain = sum(spans_chunks(plain, i) for i in range(256, plain.eot_id))
    n_gpt4 = sum(spans_chunks(gpt4, i) for i in range(256, gpt4.eot_id))
    print(f"   {len(crossing)} of these 20 span several GPT-4 chunks (a word with its space or punctuation, "
          f"or several words), e.g. {crossing[:4]}; over the vocabulary: {n_plain} such tokens without "
          f"pre-split, {n_gpt4} with it")
    assert crossing and n_gpt4 == 0
    bpt = {"no pre-split": bytes_per_token(plain, val_text), "GPT-4 pre-split": bytes_per_token(gpt4, val_text)}
    best = max(bpt, key=bpt.get)
    print(f"   bytes/token on held-out text: no pre-split {bpt['no pre-split']:.2f}, "
          f"GPT-4 pre-split {bpt['GPT-4 pre-split']:.2f}: {best} compresses it better by "
          f"{max(bpt.values()) / min(bpt.values()) - 1:.1%}")
    assert best == "GPT-4 pre-split"  # merges spent on phrases of 5 documents pay off only in those documents


# 2. my_encode(text, merges) with split.findall and replace_pair, checked against bpe.encode on the
#    first 5,000 characters of val_text.
def replace_pair(ids: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    """ids with every (non-overlapping, left to right) occurrence of pair replaced by new_id (the chapter's)."""
    out, i = [], 0
    while i < len(ids):
        hit = tuple(ids[i : i + 2]) == pair
        out.append(new_id if hit else ids[i])
        i += 2 if hit else 1
    return tuple(out)


def my_encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
    """Pre-split, then apply every merge in training order to each chunk."""
    out: list[int] = []
    for chunk in split.findall(text):
        ids = tuple(chunk.encode("utf-8"))
        for k, pair in enumerate(merges):
            if len(ids) < 2:
                break
            ids = replace_pair(ids, tuple(pair), 256 + k)
        out.extend(ids)
    return out


def exercise_2_my_encode(bpe: BPETokenizer, val_text: str) -> None:
    sample = val_text[:5000]
    assert my_encode(sample, bpe.merges) == bpe.encode(sample)
    print(f"2. my_encode matches bpe.encode on {len(sample):,} characters")


# 3. Bytes per token of bpe and sp_bpe on Python source code (the text of the course's bpe.py) against
#    Shakespeare. Why worse, and what would tokenize code well?
def exercise_3_out_of_domain(bpe: BPETokenizer, sp_bpe: SentencePieceTokenizer, val_text: str) -> None:
    """Code is full of indentation runs, brackets, operators and identifiers (snake_case, numbers)
    that never occur in Shakespeare, so they fall back to short pieces or single bytes. To tokenize
    code well, train on a mixture that contains code (RedPajama has a GitHub subset) and give
    whitespace runs their own tokens."""
    code = inspect.getsource(bpe_module)
    for name, tok in [("byte-level BPE", bpe), ("SentencePiece BPE", sp_bpe)]:
        prose, py = bytes_per_token(tok, val_text), bytes_per_token(tok, code)
        print(f"3. {name:18} bytes/token: Shakespeare {prose:.2f}, Python code {py:.2f} ({prose / py:.1f}x worse)")
        assert py < prose
    ids = bpe.encode(code, allowed_special="all")
    single = sum(i < 256 for i in ids) / len(ids)
    spaces = sum(len(t) for t in (bpe.token_bytes(i) for i in ids if i < bpe.eot_id) if not t.strip(b" "))
    print(f"   on the code, {single:.0%} of byte-level BPE's tokens are single bytes (Shakespeare: "
          f"{sum(i < 256 for i in bpe.encode(val_text)) / len(bpe.encode(val_text)):.0%}), and runs of "
          f"spaces take {spaces / len(code.encode('utf-8')):.0%} of its bytes")


# 4. A 4,096-token BPETokenizer trained like default_bpe, and chapter 05's CPU model trained with each
#    vocabulary for the same time (120 s); bits per byte on held_out. Which would you pick?
def exercise_4_larger_vocabulary_in_a_time_budget(train_docs: list[str], val_text: str) -> dict[int, float]:
    """Bits per byte of chapter 05's CPU model after the same training *time* with two vocabularies.

    Per step the larger vocabulary wins (section 9): each 64-token window holds more text.
    Per second it pays for a wider output layer, which on a CPU makes each step slower, so
    it takes fewer steps in the same time. Whether it still wins depends on the budget and
    the machine: decide with bits per byte, never with the loss per token. On a GPU the
    output layer's extra FLOPs cost little time at this size, so the larger vocabulary's
    per-step advantage carries over almost whole.
    """
    default_bpe = m.default_tokenizer("bpe", verbose=False)  # chapter 02's saved tokenizer (trained if missing)
    large = m.train_tokenizer("bpe", m.training_texts(), vocab_size=m.pick(full=4096, quick=1024))  # like default_bpe
    held_out = val_text[: m.pick(full=60_000, quick=20_000)]  # section 9's held-out text
    budget = m.pick(full=120, quick=8)
    rows = {}
    for tok in (default_bpe, large):
        m.set_seed(0)
        gpt_cfg, train_cfg = m.preset("cpu", tok.vocab_size, max_steps=None, time_budget_s=budget)
        model = m.GPT(gpt_cfg)
        model.tokenizer = tok
        t0 = time.perf_counter()
        result = m.train(model, train_docs, train_cfg, live="off")
        windows = m.val_windows([held_out], tok, gpt_cfg.block_size, max_windows=10**6)
        bpb = m.evaluate(model, windows, 64, next(model.parameters()).device, unit="bpb", tokenizer=tok)
        rows[tok.vocab_size] = (bpb, result.step, bytes_per_token(tok, held_out), model.flops_per_token())
        print(f"4. vocab {tok.vocab_size:5}: {result.step} steps in {time.perf_counter() - t0:.0f} s, "
              f"{bpb:.3f} bits per byte on held-out text ({rows[tok.vocab_size][2]:.2f} bytes per token)")
    (small_v, small), (large_v, big) = sorted(rows.items())
    pick_v = min(rows, key=lambda v: rows[v][0])
    print(f"   in the same {budget} s, vocabulary {pick_v} ends lower (vocab {small_v}: {small[0]:.3f}, vocab "
          f"{large_v}: {big[0]:.3f} bits per byte): pick {pick_v} for this CPU budget. Vocabulary {large_v} costs {big[3] / small[3]:.2f}x the FLOPs "
          f"per token for {big[2] / small[2]:.2f}x the bytes per token, i.e. {big[3] / small[3] / (big[2] / small[2]):.2f}x "
          f"the FLOPs per byte; it ran {big[1] / small[1]:.2f}x the steps")
    assert big[2] > small[2]  # the larger vocabulary packs more text into each token
    if not m.is_quick():  # quick mode's short budget on a busy machine makes step counts noisy
        assert big[1] < small[1]  # on a CPU its wider output layer makes every step slower
    return {v: r[0] for v, r in rows.items()}


if __name__ == "__main__":
    train_docs = take_chars("train", TRAIN_CHARS)
    val_text = "\n".join(take_chars("validation", VAL_CHARS))
    bpe = BPETokenizer.train(train_docs, vocab_size=1024)
    sp_bpe = SentencePieceTokenizer.train(train_docs, vocab_size=1024, model_type="bpe")
    exercise_1_presplit(train_docs, val_text)
    exercise_2_my_encode(bpe, val_text)
    exercise_3_out_of_domain(bpe, sp_bpe, val_text)
    exercise_4_larger_vocabulary_in_a_time_budget(train_docs, val_text)
