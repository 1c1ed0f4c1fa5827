"""SentencePiece (BPE or unigram) behind the course's tokenizer protocol.

SentencePiece is what many open models use (Llama 1/2, T5, Gemma). It works on
characters, not bytes, and treats the space as an ordinary symbol (shown as
"▁", U+2581). We configure it so that *any* string round-trips exactly:

- ``byte_fallback=True``: a character outside the vocabulary becomes its UTF-8
  bytes (256 byte pieces ``<0x00>`` .. ``<0xFF>``) instead of ``<unk>``;
- ``normalization_rule_name="identity"``, ``add_dummy_prefix=False``,
  ``remove_extra_whitespaces=False``: no NFKC rewriting, no added or squeezed spaces;
- a literal "▁" in the text would decode as a space, so it is encoded as its
  three byte pieces instead (see :meth:`_encode_ordinary`).

Training goes through ``sentence_iterator``, so it reads the same iterable of
strings as the other tokenizers. SentencePiece trains on *sentences* of at most
``MAX_SENTENCE_BYTES`` bytes, so documents are fed in pieces of whole lines (see :func:`training_pieces`).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from ..data.batching import encode_around_literal
from .base import EOT, Tokenizer, iter_texts

MODEL_NAME = "sentencepiece.model"
META = "\u2581"  # SentencePiece's visible space
MAX_SENTENCE_BYTES = 4192  # SentencePiece skips longer training "sentences"


def training_pieces(texts: Iterable[str], max_chars: int = 1000) -> Iterator[str]:
    """Cut documents into SentencePiece "sentences": runs of whole lines, newlines kept, ~``max_chars`` long.

    SentencePiece trains on sentences of at most ``MAX_SENTENCE_BYTES`` bytes
    and skips longer ones, so whole documents cannot be fed as they are. Feeding
    single lines would hide every newline from it (and each "\n" would then cost a
    byte token); pieces of whole lines keep them, so it can learn tokens like ".\n".
    1000 characters are at most 4000 bytes of UTF-8 (4 bytes a character at most), under the limit.
    """
    for text in iter_texts(texts):
        for part in text.split(EOT):
            buf = ""
            for line in part.splitlines(keepends=True):
                while len(line) > max_chars:  # a very long line: flush, then cut it into slices
                    if buf.strip():
                        yield buf
                    buf = ""
                    if line[:max_chars].strip():
                        yield line[:max_chars]
                    line = line[max_chars:]
                if len(buf) + len(line) > max_chars:
                    if buf.strip():
                        yield buf
                    buf = ""
                buf += line
            if buf.strip():
                yield buf


class SentencePieceTokenizer(Tokenizer):
    """A trained ``sentencepiece`` model; ``eot_id`` is the user-defined symbol ``<|endoftext|>``."""

    type_name = "sentencepiece"

    def __init__(self, model_proto: bytes, model_type: str = "bpe") -> None:
        import sentencepiece as spm

        self.model_proto = model_proto
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = int(self.sp.get_piece_size())
        self.eot_id = int(self.sp.piece_to_id(EOT))
        if self.sp.id_to_piece(self.eot_id) != EOT:
            raise ValueError(f"this SentencePiece model has no {EOT} symbol: train it with SentencePieceTokenizer.train")
        self._meta_ids = [int(self.sp.piece_to_id(f"<0x{b:02X}>")) for b in META.encode("utf-8")]
        self.model_type = model_type

    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1024,
        *,
        model_type: str = "bpe",
        max_sentences: int = 2_000_000,
        verbose: bool = False,
        **spm_options: Any,
    ) -> SentencePieceTokenizer:
        """Train a ``model_type`` ("bpe" or "unigram") model with ``vocab_size`` pieces in all.

        The vocabulary holds ``<unk>`` (id 0, never produced thanks to byte fallback),
        ``<|endoftext|>`` (id 1), the 256 byte pieces, then learned pieces. Extra
        keyword arguments go to ``sentencepiece.SentencePieceTrainer.train``.
        """
        import io

        import sentencepiece as spm

        if model_type not in ("bpe", "unigram"):
            raise ValueError(f'model_type must be "bpe" or "unigram", got {model_type!r}')
        if not isinstance(vocab_size, int) or vocab_size < 259:
            raise ValueError(
                f"vocab_size ({vocab_size}) too small for SentencePiece with byte fallback: it needs "
                "<unk>, <|endoftext|> and 256 byte pieces plus the characters of the text; use e.g. 1024"
            )
        counted = {"n": 0}

        def sentences() -> Iterator[str]:
            for line in training_pieces(texts):
                counted["n"] += 1
                yield line
                if counted["n"] >= max_sentences:
                    return

        # Peek so that empty data gives our clear error rather than a C++ one.
        it = sentences()
        first = next(it, None)
        if first is None:
            raise ValueError("cannot train SentencePiece on empty data: the texts contained no non-blank lines")

        def all_sentences() -> Iterator[str]:
            yield first
            yield from it

        model = io.BytesIO()
        options: dict[str, Any] = dict(
            model_type=model_type,
            vocab_size=vocab_size,
            byte_fallback=True,
            character_coverage=0.9995,  # rare characters fall back to bytes (still exact)
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            allow_whitespace_only_pieces=True,
            split_digits=True,
            user_defined_symbols=[EOT],
            unk_id=0,
            bos_id=-1,
            eos_id=-1,
            pad_id=-1,
            max_sentence_length=MAX_SENTENCE_BYTES,
            hard_vocab_limit=False,
            num_threads=2,
            minloglevel=0 if verbose else 2,
        )
        options.update(spm_options)
        t0 = time.perf_counter()
        try:
            spm.SentencePieceTrainer.train(sentence_iterator=all_sentences(), model_writer=model, **options)
        except RuntimeError as e:
            need = re.search(r"smaller than required_chars\. (\d+) vs (\d+)", str(e))
            if need:
                raise ValueError(
                    f"vocab_size ({vocab_size}) is too small for this text: SentencePiece needs at least "
                    f"{need.group(2)} (its characters, 256 byte pieces, <unk>, <|endoftext|>); "
                    "raise vocab_size or lower character_coverage"
                ) from None
            raise
        tok = cls(model.getvalue(), model_type)
        if verbose:
            print(f"SentencePieceTokenizer ({model_type}): vocab {tok.vocab_size} from {counted['n']:,} lines "
                  f"in {time.perf_counter() - t0:.1f} s")
        return tok

    def _encode_ordinary(self, text: str) -> list[int]:
        if META not in text:
            return self.sp.encode(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(META)):
            if i:
                ids.extend(self._meta_ids)
            if part:
                ids.extend(self.sp.encode(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with a literal ``<|endoftext|>`` encoded as characters, never as :attr:`eot_id`.

        SentencePiece matches its user-defined symbol ``<|endoftext|>`` wherever the string
        occurs, with no switch to turn that off; so the text is cut there and the literal is
        encoded as two pieces, ``<|endoftext`` and ``|>``, apart from its neighbours: the
        closest SentencePiece comes to ordinary text (the tokens at its edges may differ).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, got {type(text).__name__}")
        return encode_around_literal(self._encode_ordinary, text)

    def encode_batch(self, texts: Iterable[str], allowed_special: str = "none") -> list[list[int]]:
        texts = list(texts)
        if allowed_special == "none" and not any(EOT in t or META in t for t in texts):
            return self.sp.encode(texts, num_threads=2)  # C++ batch, releases the GIL
        return [self.encode(t, allowed_special) for t in texts]

    def _decode_ordinary(self, ids: Sequence[int]) -> str:
        return self.sp.decode(list(ids))

    def id_to_piece(self, i: int) -> str:
        """The piece string for id ``i`` (spaces show as "▁", bytes as ``<0xNN>``)."""
        return self.sp.id_to_piece(int(i))

    def __reduce__(self):  # picklable (e.g. for DataLoader workers): rebuild from the serialized model
        return (type(self), (self.model_proto, self.model_type))

    def _to_config(self, directory: Path) -> dict[str, Any]:
        (directory / MODEL_NAME).write_bytes(self.model_proto)
        return {"model_file": MODEL_NAME, "model_type": self.model_type, "vocab_size": self.vocab_size}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> SentencePieceTokenizer:
        file = directory / config.get("model_file", MODEL_NAME)
        if not file.is_file():
            raise FileNotFoundError(f"{directory} has a tokenizer.json but no {file.name}: save the tokenizer again")
        return cls(file.read_bytes(), config.get("model_type", "bpe"))

