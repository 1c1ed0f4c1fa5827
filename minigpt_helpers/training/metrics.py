"""Bits per byte: a loss you can compare across tokenizers (chapter 05).

Cross-entropy is measured *per token*: ``loss = mean over predicted tokens of
-ln p(token)``, in nats. Its exponential is the perplexity: the model is as
unsure as a uniform choice among ``e^loss`` tokens. Both depend on what a token
is. A character-level model predicts ~4 times as many tokens as a BPE model
whose tokens are ~4 bytes long, so 1.90 nats per character and 3.57 nats per
BPE token can describe the same model quality.

**Bits per byte** (bpb) takes the tokenizer out: the total information the
model needs to encode the text, divided by the text's length in bytes::

    bpb = (sum over predicted tokens of -ln p(token)) / (ln 2 * UTF-8 bytes of those tokens)

It is what a compressor driven by the model would achieve (8 bits per byte is
"no compression"). Two runs with different tokenizers on the same text compare
by their bpb, never by their loss per token. The same text gives
``bpb = loss_per_token / (ln 2 * bytes_per_token)`` (see :func:`loss_to_bpb`).

The bytes of each predicted token come from a lookup table built once per
tokenizer (:func:`token_byte_lengths`), exact for all three course tokenizers:
byte-level BPE knows the bytes of each id (a token may hold *part* of a UTF-8
character, so decoding single ids would miscount), SentencePiece pieces are
text (with "▁" for a space) or one byte each, and a character is its UTF-8
encoding. A chat tokenizer's role tokens count 0 bytes; a Hugging Face
tokenizer (``HFTokenizer``) is read from its token strings (exact for byte-level
BPE; a SentencePiece-style one that adds a leading "▁" counts that space too).

**The end-of-text token counts 0 bytes** (a choice; ``eot_bytes=`` changes it).
The separator is not part of any document's text, so the denominator is exactly
the text's bytes; but predicting where a document ends is information the model
must supply, so its loss stays in the numerator. Every tokenizer puts one EOT
after each document, so bpb stays comparable across tokenizers. (nanochat instead
leaves special tokens out of both sums; with one EOT per few KB of text the two
differ by well under 1 %.)
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from typing import Any

import torch

LN2 = math.log(2.0)
#: units :func:`minigpt_helpers.training.evaluate` reports: nats per token, perplexity, bits per byte
UNITS = ("nats", "ppl", "bpb")


def _bytes_of_token(tokenizer: Any, i: int) -> int:
    """UTF-8 bytes that token ``i`` of a course tokenizer stands for in the text."""
    token_bytes = getattr(tokenizer, "token_bytes", None)
    if callable(token_bytes):  # byte-level BPE (and any tokenizer that knows its bytes)
        return len(token_bytes(i))
    sp = getattr(tokenizer, "sp", None)
    if sp is not None and hasattr(sp, "is_byte"):  # SentencePiece
        if sp.is_byte(i):
            return 1
        if sp.is_control(i) or sp.is_unknown(i) or sp.is_unused(i):
            return 0
        return len(sp.id_to_piece(i).replace("\u2581", " ").encode("utf-8"))
    text = tokenizer.decode([i])  # a character-level tokenizer: the token is its text
    if "\ufffd" in text and type(tokenizer).__name__ != "CharTokenizer":
        raise ValueError(
            f"token {i} of {type(tokenizer).__name__} decodes to U+FFFD on its own, so it holds part of a "
            "UTF-8 character and its byte count cannot be read from decode(): give the tokenizer a "
            "token_bytes(i) -> bytes method"
        )
    return len(text.encode("utf-8"))


def _hf_lengths(hf: Any, vocab_size: int) -> list[int]:
    """Bytes per id of a ``transformers`` tokenizer (wrapped by ``HFTokenizer``).

    Byte-level BPE (GPT-2, Llama 3, Qwen, SmolLM2) spells each byte as one printable
    character of its token string, so a token's bytes are its length. Otherwise
    (SentencePiece-style): ``<0xNN>`` is one byte and "▁" a space. Special tokens are 0.
    """
    decoder = getattr(getattr(hf, "backend_tokenizer", None), "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    special = set(hf.all_special_ids)
    added = dict(getattr(hf, "added_tokens_decoder", {}) or {})
    pieces = hf.convert_ids_to_tokens(list(range(vocab_size)))
    out = []
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            out.append(0)
        elif i in added:
            tok = added[i]
            out.append(0 if getattr(tok, "special", False) else len(getattr(tok, "content", str(tok)).encode("utf-8")))
        elif byte_level:
            out.append(len(piece))
        elif re.fullmatch(r"<0x[0-9A-Fa-f]{2}>", piece):
            out.append(1)
        else:
            out.append(len(piece.replace("\u2581", " ").encode("utf-8")))
    return out


def _lengths(tokenizer: Any) -> list[int]:
    """Bytes per id, for the course's tokenizers and the ones that wrap another."""
    base, specials = getattr(tokenizer, "base", None), getattr(tokenizer, "special_ids", None)
    if base is not None and isinstance(specials, dict):  # chat.ChatTokenizer: base ids, then special tokens
        # the special ids come after the base ones, and a role marker is not text: 0 bytes
        return token_byte_lengths(base).tolist() + [0] * (tokenizer.vocab_size - base.vocab_size)
    hf = getattr(tokenizer, "hf", None)
    if hf is not None and hasattr(hf, "convert_ids_to_tokens"):  # tokenizers.hf.HFTokenizer
        return _hf_lengths(hf, tokenizer.vocab_size)
    return [_bytes_of_token(tokenizer, i) for i in range(tokenizer.vocab_size)]


def token_byte_lengths(tokenizer: Any, *, eot_bytes: int = 0) -> torch.Tensor:
    """``(vocab_size,)`` int64 tensor: how many UTF-8 bytes of text each token id stands for.

    Summing it over the ids of ``tokenizer.encode(text)`` gives ``len(text.encode("utf-8"))``
    exactly (tests/test_metrics.py checks it on tricky text for every tokenizer).
    The EOT id counts ``eot_bytes`` (0 by default: see the module docstring), other
    special tokens (chat roles) 0. Built once per tokenizer and cached on it.
    """
    if not isinstance(eot_bytes, int) or isinstance(eot_bytes, bool) or eot_bytes < 0:
        raise ValueError(f"eot_bytes must be an integer >= 0, got {eot_bytes!r}")
    for attr in ("vocab_size", "eot_id", "decode"):
        if not hasattr(tokenizer, attr):
            raise TypeError(f"token_byte_lengths needs a course tokenizer (with {attr}), got {type(tokenizer).__name__}")
    cache = getattr(tokenizer, "_byte_lengths", None)
    if isinstance(cache, dict) and eot_bytes in cache:
        return cache[eot_bytes]
    lengths = _lengths(tokenizer)
    lengths[tokenizer.eot_id] = eot_bytes
    table = torch.tensor(lengths, dtype=torch.int64)
    try:
        tokenizer._byte_lengths = {**(cache if isinstance(cache, dict) else {}), eot_bytes: table}
    except AttributeError:  # a tokenizer with __slots__: no cache, still correct
        pass
    return table


def bits_per_byte(total_nats: float, total_bytes: int) -> float:
    """Total loss in nats over some tokens -> bits per byte of the text those tokens spell."""
    if total_bytes <= 0:
        raise ValueError(f"total_bytes must be > 0 to compute bits per byte, got {total_bytes}")
    return float(total_nats) / (LN2 * total_bytes)


def loss_to_bpb(loss: float, bytes_per_token: float) -> float:
    """A mean loss in nats per token -> bits per byte, given the corpus's bytes per token.

    E.g. a char-level model on (ASCII) Tiny Shakespeare at 1.90 nats/char: 1 byte per
    token, so ``loss_to_bpb(1.90, 1.0)`` = 2.74 bpb. Get ``bytes_per_token`` from
    :func:`bytes_per_token` on the same text the loss was measured on.
    """
    if not bytes_per_token > 0:
        raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    return float(loss) / (LN2 * bytes_per_token)


def bpb_to_loss(bpb: float, bytes_per_token: float) -> float:
    """The inverse of :func:`loss_to_bpb`: the loss per token that means ``bpb`` for this tokenizer.

    E.g. the BPE loss that matches a char-level target: ``bpb_to_loss(loss_to_bpb(1.90, 1.0), bpt)``.
    """
    if not bytes_per_token > 0:
        raise ValueError(f"bytes_per_token must be > 0, got {bytes_per_token!r}")
    return float(bpb) * LN2 * bytes_per_token


def bytes_per_token(tokenizer: Any, texts: Iterable[Any], *, eot: bool = True) -> float:
    """UTF-8 bytes of ``texts`` divided by the number of tokens they become.

    ``texts``: strings, or dicts with a ``"text"`` field (``stream_documents``).
    ``eot=True`` counts one end-of-text token per document, as the training
    stream packs them (batching.py), so the ratio matches a loss measured on
    packed windows; the EOT itself counts no bytes (see the module docstring).
    """
    from ..data.batching import encode_text
    from ..tokenizers.base import iter_texts

    if isinstance(texts, str):
        raise TypeError("bytes_per_token takes an iterable of texts, not one string: wrap it in a list, e.g. [text]")
    n_bytes = n_tokens = 0
    for text in iter_texts(texts):
        n_bytes += len(text.encode("utf-8"))
        n_tokens += len(encode_text(tokenizer, text)) + int(eot)
    if n_tokens == 0 or n_bytes == 0:
        raise ValueError("bytes_per_token needs some non-empty text")
    return n_bytes / n_tokens


def perplexity(loss: float) -> float:
    """``e^loss``: a loss of L nats per token is as unsure as a uniform choice among e^L tokens."""
    return math.exp(loss)


def check_unit(unit: str, tokenizer: Any) -> None:
    """Raise a clear error for an unknown unit, or for ``"bpb"`` without a tokenizer."""
    if unit not in UNITS:
        raise ValueError(f"unit must be one of {UNITS}, got {unit!r}")
    if unit == "bpb" and tokenizer is None:
        raise ValueError('unit="bpb" needs tokenizer=... (the one that made the windows): '
                         "the bytes of each token come from it")


def in_unit(total_nats: float, n_tokens: int, n_bytes: int, unit: str) -> float:
    """Summed loss over ``n_tokens`` predicted tokens spelling ``n_bytes`` bytes -> one number in ``unit``."""
    if n_tokens <= 0:
        raise ValueError("no predicted tokens: give at least one window with a target")
    if unit == "bpb":
        return bits_per_byte(total_nats, n_bytes)
    mean = total_nats / n_tokens
    return perplexity(mean) if unit == "ppl" else mean
