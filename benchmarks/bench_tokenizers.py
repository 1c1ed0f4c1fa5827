"""Tokenizers: our pure-Python byte-level BPE vs SentencePiece and HF `tokenizers` (both C++/Rust).

Input (full): the offline Shakespeare corpus (train + validation scenes, ~5 MB)
plus ``../shared/data/tinyshakespeare.txt`` when present (1.1 MB), cycled document
by document until there are 10 MB of text. Quick mode: the first ~300 KB.

- Training time at vocab 4096 (quick: 512) on that text, the three trainers
  interleaved run by run, best of two. The target: ours within 10x of
  SentencePiece's BPE (ratio >= 0.1).
  SentencePiece gets the same text cut into ~1000-character pieces of whole lines
  (how ``SentencePieceTokenizer`` feeds it), prepared before timing, and 2 threads;
  HF `tokenizers` (ByteLevel BPE, like ours) uses its default threads.
  Ours is single-threaded Python.
- Encode speed (MB of UTF-8 per second) over the same 10 MB, warm chunk cache
  (steady state, as when chapter 05 encodes a corpus) and cold (a fresh tokenizer
  with the same merges: includes encoding each distinct chunk once). The
  target is >= 2 MB/s; the side-by-side references are HF `tokenizers`
  (``encode_batch``, multi-threaded Rust) and SentencePiece.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from common import Result

from minigpt_helpers import BPETokenizer, stream_documents
from minigpt_helpers.tokenizers.base import EOT
from minigpt_helpers.tokenizers.sentencepiece import training_pieces

TINY = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "tinyshakespeare.txt"
TARGET_MB = 10.0
ENCODE_TARGET = 2.0  # MB/s: chapter 05 encodes its corpus in seconds at this rate


def _corpus(quick: bool) -> tuple[list[str], str]:
    docs = [r["text"] for split in ("train", "validation") for r in stream_documents("shakespeare", split, verbose=False)]
    what = f"{len(docs)} Shakespeare scenes ({sum(map(len, docs)) / 1e6:.2f} MB)"
    if TINY.is_file():
        tiny = TINY.read_text(encoding="utf-8")
        docs += [tiny[i : i + 20_000] for i in range(0, len(tiny), 20_000)]
        what += " + tinyshakespeare.txt (1.1 MB, in 20 KB pieces)"
    else:
        print(f"   ({TINY} not found: using the offline corpus alone)")
    budget = 300_000 if quick else int(TARGET_MB * 1e6)
    out, n, i = [], 0, 0
    while n < budget:
        d = docs[i % len(docs)][: budget - n]
        out.append(d)
        n += len(d.encode("utf-8"))
        i += 1
    return out, what + (", cycled" if i > len(docs) else "") + f" to {n / 1e6:.2f} MB"


def _train_ours(docs: list[str], vocab: int) -> BPETokenizer:
    return BPETokenizer.train(docs, vocab_size=vocab)


def _train_spm(lines: list[str], vocab: int) -> bytes:
    import io

    import sentencepiece as spm

    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab,
        byte_fallback=True, character_coverage=1.0, normalization_rule_name="identity",
        add_dummy_prefix=False, remove_extra_whitespaces=False, user_defined_symbols=[EOT],
        bos_id=-1, eos_id=-1, num_threads=2, minloglevel=2,
    )
    return model.getvalue()


def _train_hf(docs: list[str], vocab: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(docs, trainer=trainer)
    return tok


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def run(quick: bool) -> list[Result]:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "true")
    import sentencepiece as spm

    docs, what = _corpus(quick)
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    lines = list(training_pieces(docs))  # what SentencePieceTokenizer.train feeds it, prepared up front
    vocab = 512 if quick else 4096
    repeat = 1 if quick else 2
    print(f"   text: {what}; vocab {vocab}")

    t_ours = t_spm = t_hf = float("inf")
    for _ in range(repeat):  # interleaved: machine noise hits all three alike
        dt, ours = _timed(lambda: _train_ours(docs, vocab))
        t_ours = min(t_ours, dt)
        dt, spm_model = _timed(lambda: _train_spm(lines, vocab))
        t_spm = min(t_spm, dt)
        dt, hf = _timed(lambda: _train_hf(docs, vocab))
        t_hf = min(t_hf, dt)
    print(f"   train: ours {t_ours:.2f} s, sentencepiece {t_spm:.2f} s, hf tokenizers {t_hf:.2f} s")

    sp = spm.SentencePieceProcessor(model_proto=spm_model)
    merges = ours.merges
    e_warm = e_cold = e_hf = e_sp = float("inf")
    n_tokens = 0
    for _ in range(repeat + 1):
        cold = BPETokenizer(merges)
        dt, ids = _timed(lambda: [cold.encode(d) for d in docs])  # noqa: B023
        e_cold = min(e_cold, dt)
        dt, ids = _timed(lambda: [cold.encode(d) for d in docs])  # noqa: B023 - same tokenizer, warm cache
        e_warm = min(e_warm, dt)
        n_tokens = sum(map(len, ids))
        dt, _ = _timed(lambda: hf.encode_batch(docs))
        e_hf = min(e_hf, dt)
        dt, _ = _timed(lambda: sp.encode(docs, num_threads=2))
        e_sp = min(e_sp, dt)
    warm, cold_rate, hf_rate, sp_rate = mb / e_warm, mb / e_cold, mb / e_hf, mb / e_sp
    print(f"   encode MB/s: ours warm {warm:.2f}, cold {cold_rate:.2f}; hf {hf_rate:.2f}; sentencepiece {sp_rate:.2f}"
          f" ({mb * 1e6 / n_tokens:.2f} bytes/token for ours)")

    return [
        Result(f"BPE train, vocab {vocab}, {mb:.1f} MB", t_ours, t_spm, "sentencepiece BPE", "s",
               lower_is_better=True, target=0.1,
               note=f"pure-Python trainer vs SentencePiece (C++, 2 threads); target: within 10x. Text: {what}."),
        Result(f"BPE train, vocab {vocab}, {mb:.1f} MB", t_ours, t_hf, "HF tokenizers ByteLevel BPE", "s",
               lower_is_better=True),
        Result("BPE encode (warm cache)", warm, ENCODE_TARGET, "target", "MB/s", target=1.0,
               note=f"absolute target {ENCODE_TARGET} MB/s; cold cache (fresh tokenizer) {cold_rate:.2f} MB/s. "
                    "Shakespeare is pure ASCII, which takes the stdlib-`re` fast path of the GPT-4 split; "
                    "non-ASCII documents use the `regex` module (about half the split speed)."),
        Result("BPE encode (warm cache)", warm, hf_rate, "HF tokenizers encode_batch", "MB/s"),
        Result("BPE encode (warm cache)", warm, sp_rate, "sentencepiece encode", "MB/s"),
    ]
