"""Training the tokenizer the later chapters use: one function for chapter 02, ``default_tokenizer`` and the CLI.

:func:`train_tokenizer` trains any of the course's kinds on an iterable of texts;
:func:`training_texts` is the text it trains on (the first characters of a source's
training split); :func:`default_tokenizer` loads chapter 02's saved tokenizer, or
trains one with these two and saves it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..config import artifacts_dir, pick, shown_path
from ..data.sources import stream_documents
from .base import CONFIG_NAME, CharTokenizer, Tokenizer, load_tokenizer
from .bpe import BPETokenizer
from .sentencepiece import SentencePieceTokenizer

DEFAULT_KIND = "bpe"
#: vocab size per kind, (full, quick). Chosen and justified in chapter 02:
#: 1024 = 256 bytes + 767 merges + EOT, a multiple of 64 for the embedding matmul.
DEFAULT_VOCAB = {"bpe": (1024, 384), "sentencepiece": (1024, 384), "char": (None, None)}
#: how much text (characters) to train the default tokenizer on, (full, quick)
DEFAULT_TRAIN_CHARS = (6_000_000, 300_000)


def training_texts(source: str = "auto", n_chars: int | None = None, *, verbose: bool = False) -> Iterator[str]:
    """The documents of ``source``'s training split until about ``n_chars`` characters (whole documents).

    ``n_chars`` defaults to :data:`DEFAULT_TRAIN_CHARS` (quick mode: the smaller one).
    The last document is kept whole, so the total runs over by at most one document.
    """
    budget = pick(*DEFAULT_TRAIN_CHARS) if n_chars is None else n_chars
    used = 0
    for doc in stream_documents(source, split="train", verbose=verbose):
        yield doc["text"]
        used += len(doc["text"])
        if used >= budget:
            return


def train_tokenizer(kind: str, texts: Iterable[str], vocab_size: int | None = None, *,
                    progress: bool = False) -> Tokenizer:
    """A ``kind`` tokenizer ("bpe", "sentencepiece" or "char") trained on ``texts``.

    ``vocab_size`` defaults to :data:`DEFAULT_VOCAB` (quick mode: the smaller one).
    BPE is the course's byte-level BPE; SentencePiece trains its BPE model; "char"
    keeps an unknown-character id, so text from another source cannot crash a later chapter.
    ``progress`` shows BPE's live line (characters read, then each merge); the other
    kinds train in one call with nothing to show, so it does not apply to them.
    """
    if kind not in DEFAULT_VOCAB:
        raise ValueError(f"unknown tokenizer kind {kind!r}: choose one of {sorted(DEFAULT_VOCAB)}")
    vocab_size = vocab_size or pick(*DEFAULT_VOCAB[kind])
    if kind == "bpe":
        return BPETokenizer.train(texts, vocab_size=vocab_size, progress=progress)
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train(texts, vocab_size=vocab_size, model_type="bpe")
    return CharTokenizer.train(texts, vocab_size, unk=True)


def default_tokenizer(kind: str | None = None, *, verbose: bool = True) -> Tokenizer:
    """The tokenizer chapters 04-08 use: chapter 02's artifact, trained here if missing.

    Loads ``artifacts_dir("tokenizer", kind)`` when a tokenizer is saved there;
    otherwise trains one on the first few MB of ``stream_documents("auto")``
    (quick mode: ~300 KB and a smaller vocabulary), saves it there, and says so.
    ``kind`` is "bpe" (the default: byte-level BPE, vocab 1024), "sentencepiece"
    (BPE via SentencePiece, vocab 1024) or "char".
    """
    kind = kind or DEFAULT_KIND
    if kind not in DEFAULT_VOCAB:
        raise ValueError(f"unknown tokenizer kind {kind!r}: choose one of {sorted(DEFAULT_VOCAB)}")
    directory = artifacts_dir("tokenizer", kind)
    if (directory / CONFIG_NAME).is_file():
        tok = load_tokenizer(directory)
        if verbose:
            print(f"default_tokenizer: loaded {tok!r} from {shown_path(directory)}")
        return tok
    budget, vocab_size = pick(*DEFAULT_TRAIN_CHARS), pick(*DEFAULT_VOCAB[kind])
    if verbose:
        print(f"default_tokenizer: no {kind} tokenizer at {shown_path(directory)}; training one "
              f"(vocab_size={vocab_size}) on ~{budget / 1e6:g}M characters of stream_documents('auto') ...")
    tok = train_tokenizer(kind, training_texts("auto", budget, verbose=verbose), vocab_size)
    tok.save(directory)
    if verbose:
        print(f"default_tokenizer: saved {tok!r} to {shown_path(directory)}")
    return tok
