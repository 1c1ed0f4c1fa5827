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
from minigpt_helpers.tokenizers.bpe import merge_pair
from minigpt_helpers.tokenizers.train import DEFAULT_TRAIN_CHARS, DEFAULT_VOCAB


def take_chars(split: str, n_chars: int) -> list[str]:
    docs, n = [], 0
    for row in m.stream_documents("shakespeare", split=split, verbose=False):
        docs.append(row["text"])
        n += len(row["text"])
        if n >= n_chars:
            break
    return docs


def bytes_per_token(tok, text: str) -> float:
    return len(text.encode("utf-8")) / len(tok.encode(text, allowed_special="all"))  # code may mention <|endoftext|>


def main() -> None:
    train_docs = take_chars("train", m.pick(full=1_000_000, quick=150_000))
    val_text = "\n".join(take_chars("validation", m.pick(full=200_000, quick=40_000)))
    bpe = BPETokenizer.train(train_docs, vocab_size=1024)

    # 1. No pre-split: each document is a single chunk, so merges may cross spaces and punctuation.
    #    (Slow-ish: every merge rescans whole documents, so use a few documents and a small vocabulary.)
    few = train_docs[:5]
    plain = BPETokenizer.train(few, vocab_size=384, pattern=r"[\s\S]+")
    gpt4 = BPETokenizer.train(few, vocab_size=384)
    longest = sorted(range(256, plain.eot_id), key=lambda i: -len(plain.token_bytes(i)))[:20]
    print("1. longest tokens without pre-split:", [plain.token_bytes(i).decode("utf-8", "replace") for i in longest])
    print("   they span word boundaries (e.g. 'word.\\n' or ' of the'), which the GPT-4 pattern forbids.")
    print(f"   bytes/token on held-out text: no pre-split {bytes_per_token(plain, val_text):.2f}, "
          f"GPT-4 pre-split {bytes_per_token(gpt4, val_text):.2f}")
    print("   merges spent on phrases like 'COUNTESS.\\n' that only pay off in the text they were learned from")

    # 2. Encode with our own merges: pre-split, then apply every merge in training order to each chunk.
    split = regex.compile(m.GPT4_SPLIT_PATTERN)

    def my_encode(text: str, merges: list[tuple[int, int]]) -> list[int]:
        out = []
        for chunk in split.findall(text):
            ids = list(chunk.encode("utf-8"))
            for k, (a, b) in enumerate(merges):
                if len(ids) < 2:
                    break
                ids = merge_pair(ids, a, b, 256 + k)
            out.extend(ids)
        return out

    sample = val_text[:5000]
    assert my_encode(sample, bpe.merges) == bpe.encode(sample)
    print(f"2. my_encode matches bpe.encode on {len(sample):,} characters")

    # 3. Out-of-domain text: Python source code.
    code = inspect.getsource(m.bpe)
    sp = SentencePieceTokenizer.train(train_docs, vocab_size=1024, model_type="bpe")
    for name, tok in [("byte-level BPE", bpe), ("SentencePiece BPE", sp)]:
        print(f"3. {name:18} bytes/token: Shakespeare {bytes_per_token(tok, val_text):.2f}, "
              f"Python code {bytes_per_token(tok, code):.2f}")
    print("   Code is full of indentation runs, brackets, operators and identifiers (snake_case, numbers) that never\n"
          "   occur in Shakespeare, so they fall back to short pieces or single bytes. To tokenize code well, train on\n"
          "   a mixture that contains code (RedPajama has a GitHub subset) and give whitespace runs their own tokens.")



def first_chars(n_chars: int, split: str = "train"):
    """Documents of the stream until about n_chars characters (the training ones are what default_tokenizer() reads)."""
    used = 0
    for row in m.stream_documents("auto", split=split, verbose=False):
        yield row["text"]
        used += len(row["text"])
        if used >= n_chars:
            return


def exercise_4_larger_vocabulary_in_a_time_budget() -> dict[int, float]:
    """Bits per byte of chapter 05's CPU model after the same training *time* with two vocabularies.

    Per step the larger vocabulary wins (chapter 02, section 9): each 64-token window holds
    more text. Per second it pays for an output layer 4x wider, which on a CPU makes each step
    roughly 1.7-2.5x slower (its FLOPs per token grow from 3.3 M to 5.7 M), so it takes fewer
    steps in the same time. Whether it still wins depends on the budget and the machine: print
    both and decide with bits per byte, never with the loss per token. On a GPU the output layer
    costs little, so the larger vocabulary's per-step advantage carries over almost whole.
    """
    default = m.pick(*DEFAULT_VOCAB["bpe"])
    text = list(first_chars(m.pick(*DEFAULT_TRAIN_CHARS)))
    held_out = "\n".join(first_chars(m.pick(full=60_000, quick=20_000), split="validation"))
    budget = m.pick(full=120, quick=10)
    bpb = {}
    for vocab in (default, 4 * default):
        tok = BPETokenizer.train(text, vocab_size=vocab)
        m.set_seed(0)
        gpt_cfg, train_cfg = m.preset("cpu", tok.vocab_size, max_steps=None, time_budget_s=budget)
        model = m.GPT(gpt_cfg)
        model.tokenizer = tok
        t0 = time.perf_counter()
        result = m.train(model, text, train_cfg, live="off")
        windows = m.val_windows([held_out], tok, gpt_cfg.block_size, max_windows=10**6)
        device = next(model.parameters()).device
        bpb[vocab] = m.evaluate(model, windows, 64, device, unit="bpb", tokenizer=tok)
        print(f"4. vocab {vocab:5}: {result.step} steps in {time.perf_counter() - t0:.0f} s, "
              f"{bpb[vocab]:.3f} bits per byte on held-out text")
    return bpb


if __name__ == "__main__":
    main()
    exercise_4_larger_vocabulary_in_a_time_budget()
