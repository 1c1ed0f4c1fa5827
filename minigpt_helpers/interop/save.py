"""A course model as a plain Hugging Face folder: weights, tokenizer and chat template, no custom code.

:func:`save_hf` writes what ``transformers.AutoModelForCausalLM.from_pretrained(folder)`` and
``AutoTokenizer.from_pretrained(folder)`` load without ``trust_remote_code``:

* the weights, through :func:`~minigpt_helpers.interop.hub.to_hf` (GPT-2, Llama or Qwen3, as the
  model's options say), written by ``save_pretrained`` (``config.json``, ``model.safetensors``);
* a ``tokenizer.json`` built with the ``tokenizers`` library (:func:`hf_tokenizer`) that gives the
  same ids as the course tokenizer's ``encode(text, allowed_special="all")`` - what a Hugging Face
  tokenizer does with its special tokens - and decodes them to the same text.

How each course tokenizer is spelled in ``tokenizers``:

``CharTokenizer``
    a ``WordLevel`` model over single code points (each one its own pre-token). With ``unk=True``
    an unknown character becomes the unknown id, which decodes to U+FFFD, as in the course.
    Without it the course raises a ValueError; Hugging Face raises too (``tokenizers`` says
    "Missing [UNK] token from the vocabulary").
``BPETokenizer``
    a ``BPE`` model over GPT-2's byte-to-character map (``ByteLevel``'s alphabet), merges in rank
    order, after the tokenizer's own split pattern (``Split``, isolated) and ``ByteLevel`` without
    its own regex. HF's BPE merges the lowest-rank pair present first, leftmost first, which is
    minbpe's order, so the ids agree. The one limit is the regex engine: ``tokenizers`` runs the
    pattern with Oniguruma (Unicode 14.0), the course with ``regex`` (newer Unicode), so a letter or
    digit added to Unicode after 14.0 may be split differently.
``SentencePieceTokenizer``
    SentencePiece's own ``BPE`` (merges derived from its pieces, ranked by the merged piece, as
    ``transformers``' converters do) or ``Unigram`` model with ``byte_fallback``. The space marker
    "▁" is spelled as a real space in the vocabulary, so a literal "▁" in the text is an unknown
    character that falls back to its three bytes, which is what the course wrapper encodes it as.
    A unigram model in ``tokenizers`` matches every vocabulary entry in the text, SentencePiece only
    its real pieces, so the names of the byte and unknown pieces (``<0x41>``, ``<unk>``) are kept
    from matching (:func:`unigram_model`, :func:`split_loose_characters`). Decoding agrees on the
    ids ``encode`` gives; on bytes that are not UTF-8 Hugging Face's ``ByteFallback`` turns the whole
    run of byte tokens into U+FFFD where SentencePiece keeps its valid bytes, and the unknown id
    (never produced, thanks to byte fallback) decodes to ``<unk>``, not SentencePiece's " ⁇ ".
``HFTokenizer``
    the wrapped Hugging Face tokenizer itself (a copy), whose own conventions (BOS...) stay.

A tokenizer that extends one of these with special tokens - finetune.chat's ``ChatTokenizer`` -
is recognised by two attributes, ``base`` (the tokenizer it extends) and ``special_tokens`` (their
strings, whose ids follow the base's in that order); they become special added tokens. If it has a
``chat_template`` (a Jinja string: ``ChatTokenizer`` renders ``render_conversation``'s layout), that
is stored too, so ``apply_chat_template`` renders conversations as the course does. The chat wing
sits above this one, so it provides the template and this module never imports it.

Every tokenizer built here is checked on a probe text against the course tokenizer before it is
written: a SentencePiece model trained with options these rules do not express (a dummy prefix,
NFKC) is refused with a ValueError rather than saved with different ids.
"""

from __future__ import annotations

import contextlib
import copy
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from ..model.gpt import GPT
from ..tokenizers.base import EOT, CharTokenizer, Tokenizer
from ..tokenizers.bpe import BPETokenizer
from ..tokenizers.hf import HFTokenizer
from ..tokenizers.sentencepiece import META, SentencePieceTokenizer
from .common import require_transformers
from .hub import to_hf

SUPPORTED = ("CharTokenizer, BPETokenizer, SentencePieceTokenizer, HFTokenizer, or one of them extended with "
             "special tokens (ChatTokenizer)")
#: mixed scripts, runs of whitespace, digits, a literal "▁" and the end-of-text token: the self-check
PROBE = ("Hello, world! It's 2024 - naïve café, e\u0301, 中文字符, مرحبا, 😀👍🏽👨\u200d👩\u200d👧 ▁ \t\tx   y\r\n\n"
         f"{EOT}  12345 'LL ſ")
#: the class name under which transformers 4 and 5 both load a tokenizer.json
TOKENIZER_CLASS = "PreTrainedTokenizerFast"


def split_extension(tokenizer: Tokenizer) -> tuple[Tokenizer, list[str]]:
    """(the tokenizer underneath, its added special tokens): ``(tok, [])`` for a plain tokenizer."""
    base = getattr(tokenizer, "base", None)
    if isinstance(base, Tokenizer) and hasattr(tokenizer, "special_tokens"):
        return base, list(tokenizer.special_tokens)
    return tokenizer, []


def check_tokenizer(tokenizer: Any) -> None:
    """A TypeError naming what is supported unless ``tokenizer`` is a tokenizer :func:`hf_tokenizer` can write."""
    if isinstance(tokenizer, Tokenizer):
        base, _ = split_extension(tokenizer)
        if isinstance(base, (CharTokenizer, BPETokenizer, SentencePieceTokenizer, HFTokenizer)):
            return
    raise TypeError(f"cannot write a {type(tokenizer).__name__} as a Hugging Face tokenizer: supported are "
                    f"{SUPPORTED}")


# ------------------------------------------------------------------------------ one backend per tokenizer
def char_backend(tok: CharTokenizer):
    """A ``tokenizers.Tokenizer`` with a CharTokenizer's ids: one WordLevel token per code point."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    vocab = {c: i for i, c in enumerate(tok.chars)}
    vocab[EOT] = tok.eot_id
    if tok.unk:
        if tok.UNK_TEXT in vocab:
            raise ValueError(f"this CharTokenizer has {tok.UNK_TEXT!r} both as a character and as its unknown "
                             "token: a Hugging Face vocabulary needs one string per id")
        vocab[tok.UNK_TEXT] = tok.unk_id
    backend = Backend(models.WordLevel(vocab=vocab, unk_token=tok.UNK_TEXT if tok.unk else None))
    backend.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    backend.decoder = decoders.Fuse()
    return backend


def bpe_backend(tok: BPETokenizer):
    """A ``tokenizers.Tokenizer`` with a BPETokenizer's ids: byte-level BPE after the same split pattern."""
    from tokenizers import Regex, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    byte_char = byte_alphabet()
    spell = ["".join(byte_char[b] for b in tok.token_bytes(i)) for i in range(tok.eot_id)]
    vocab = {s: i for i, s in enumerate(spell)}
    if len(vocab) != len(spell) or EOT in vocab:
        raise ValueError(f"two tokens of this BPETokenizer (or one and {EOT}) stand for the same bytes: a "
                         "Hugging Face BPE vocabulary needs one string per id")
    vocab[EOT] = tok.eot_id
    merges = [(spell[a], spell[b]) for a, b in tok.merges]
    backend = Backend(models.BPE(vocab=vocab, merges=merges))
    backend.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(tok.pattern), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    backend.decoder = decoders.ByteLevel()
    return backend


def byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character map, the alphabet of ``tokenizers``' ByteLevel."""
    require_transformers()
    from transformers.convert_slow_tokenizer import bytes_to_unicode

    return bytes_to_unicode()


def sentencepiece_backend(tok: SentencePieceTokenizer):
    """A ``tokenizers.Tokenizer`` with a SentencePiece model's ids (BPE or unigram, byte fallback).

    Pieces are renamed "▁" -> " " (see the module docstring); byte, unknown and control pieces and
    the end-of-text symbol keep their names and take no part in merges.
    """
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, normalizers

    sp = tok.sp
    n = tok.vocab_size
    special = [sp.is_unknown(i) or sp.is_control(i) or sp.is_byte(i) or sp.is_unused(i) or i == tok.eot_id
               for i in range(n)]
    names = [sp.id_to_piece(i) if special[i] else sp.id_to_piece(i).replace(META, " ") for i in range(n)]
    unk_id = int(sp.unk_id())
    if tok.model_type == "unigram":
        backend = Backend(unigram_model(names, special, [sp.get_score(i) for i in range(n)], unk_id))
        backend.pre_tokenizer = split_loose_characters(names, special)
    else:
        backend = Backend(models.BPE(vocab={name: i for i, name in enumerate(names)},
                                     merges=piece_merges(names, special), unk_token=names[unk_id], byte_fallback=True))
    if " " not in names:  # trained without spaces: a space is "▁", unknown, spelled as its bytes
        backend.normalizer = normalizers.Replace(" ", META)
    backend.decoder = decoders.Sequence([decoders.ByteFallback(), decoders.Fuse()])
    return backend


def unigram_model(names: Sequence[str], special: Sequence[bool], scores: Sequence[float], unk_id: int):
    """A ``tokenizers`` Unigram model of SentencePiece's pieces, whose special pieces never win over text.

    SentencePiece never matches a byte, unknown or control piece in the text; ``tokenizers`` matches
    every piece of its vocabulary, so those are scored below any spelling of their name by real
    pieces (each real piece scores at least the lowest one). That also lowers the unknown-character
    penalty (the lowest score minus 10), but by the same amount on every path, so no choice changes.
    """
    from tokenizers import models

    lowest = min([s for s, sp in zip(scores, special) if not sp] + [-1.0])
    longest = max(len(name) for name, sp in zip(names, special) if sp)
    low = (longest + 1) * lowest
    vocab = [(name, low if sp else float(score)) for name, sp, score in zip(names, special, scores)]
    return models.Unigram(vocab, unk_id=unk_id, byte_fallback=True)


def split_loose_characters(names: Sequence[str], special: Sequence[bool]):
    """A pre-tokenizer that cuts the text around the characters of special piece names no real piece holds, or None.

    No SentencePiece piece spans such a character (an unknown "<", say: it is spelled by its bytes),
    so cutting there changes no choice. It keeps ``tokenizers`` from reading a special piece's name
    (``<0x41>``) out of the text, which no score can: the alternative spells the unknown character
    with the unknown-character penalty, lower than any score.
    """
    from tokenizers import Regex, pre_tokenizers

    inside = set().union(*(name for name, sp in zip(names, special) if not sp))
    loose = sorted(set().union(*(name for name, sp in zip(names, special) if sp)) - inside)
    if not loose:
        return None
    pattern = "[" + "".join(f"\\x{{{ord(c):x}}}" for c in loose) + "]"
    return pre_tokenizers.Split(Regex(pattern), behavior="isolated")


def piece_merges(names: Sequence[str], special: Sequence[bool]) -> list[tuple[str, str]]:
    """Every pair of real pieces that concatenates to a real piece, ranked by that piece's id.

    SentencePiece's BPE merges any adjacent pair whose concatenation is a piece, the best-scored
    (earliest learned, lowest id) first; these merges in this order make ``tokenizers``' BPE do the same.
    """
    ids = {name: i for i, name in enumerate(names) if not special[i]}
    ranked = []
    for name, i in ids.items():
        for cut in range(1, len(name)):
            left, right = name[:cut], name[cut:]
            if left in ids and right in ids:
                ranked.append((i, ids[left], ids[right], left, right))
    return [(left, right) for *_, left, right in sorted(ranked)]


# ------------------------------------------------------------------------------ the transformers tokenizer
def fast_tokenizer(tok: Tokenizer):
    """``tok``'s ids as a ``transformers.PreTrainedTokenizerFast`` (a copy of an HFTokenizer's own)."""
    transformers = require_transformers()
    if isinstance(tok, HFTokenizer):
        return copy.deepcopy(tok.hf)
    builders = {CharTokenizer: char_backend, BPETokenizer: bpe_backend, SentencePieceTokenizer: sentencepiece_backend}
    backend = builders[type(tok)](tok)
    backend.add_special_tokens([EOT])  # in the vocabulary already, at the course's id
    # A declared token is matched in the text itself: SentencePiece's "<unk>" never is (byte fallback).
    unk = {"unk_token": tok.UNK_TEXT} if isinstance(tok, CharTokenizer) and tok.unk else {}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=backend, bos_token=EOT, eos_token=EOT,
                                                pad_token=EOT, clean_up_tokenization_spaces=False, **unk)


def add_special_tokens(fast: Any, tokens: Sequence[str], first_id: int) -> None:
    """Add ``tokens`` as special tokens with ids ``first_id, first_id + 1, ...``; a ValueError if they land elsewhere."""
    from tokenizers import AddedToken

    fast.add_tokens([AddedToken(t, special=True, normalized=False) for t in tokens], special_tokens=True)
    got = fast.convert_tokens_to_ids(list(tokens))
    want = list(range(first_id, first_id + len(tokens)))
    if got != want:
        raise ValueError(f"the special tokens {list(tokens)} got ids {got} in the Hugging Face tokenizer, not "
                         f"{want}: its vocabulary has some of these strings already")


def check_ids(tok: Tokenizer, fast: Any, text: str) -> None:
    """A ValueError unless ``fast`` encodes ``text`` to the ids ``tok.encode(text, "all")`` gives."""
    want = tok.encode(text, allowed_special="all")
    got = list(fast.encode(text, add_special_tokens=False, verbose=False))  # longer than the window: no warning
    if got != want:
        at = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
        raise ValueError(f"the Hugging Face tokenizer built for this {type(tok).__name__} gives other ids "
                         f"(first at position {at}: {got[at:at + 5]} instead of {want[at:at + 5]}): it was "
                         "trained with options save_hf cannot express")


def probe_text(tok: Tokenizer) -> str:
    """The self-check text: :data:`PROBE`, or for a CharTokenizer without ``unk`` its own characters."""
    if isinstance(tok, CharTokenizer) and not tok.unk:
        return "".join(tok.chars) + EOT + "".join(reversed(tok.chars))
    return PROBE


def hf_tokenizer(tokenizer: Tokenizer, *, model_max_length: int | None = None, chat_template: str | None = None):
    """A ``transformers.PreTrainedTokenizerFast`` that gives ``tokenizer``'s ids (see the module docstring).

    bos, eos and pad are ``<|endoftext|>`` (an HFTokenizer keeps its own); extra special tokens (a
    ChatTokenizer's) are added with their course ids. ``chat_template`` defaults to the tokenizer's
    own ``chat_template`` attribute when it has one. Checked on a probe text before it is returned.
    """
    check_tokenizer(tokenizer)
    base, extra = split_extension(tokenizer)
    fast = fast_tokenizer(base)
    if extra:
        add_special_tokens(fast, extra, base.vocab_size)
    if model_max_length is not None:
        fast.model_max_length = int(model_max_length)
    template = chat_template if chat_template is not None else getattr(tokenizer, "chat_template", None)
    if template is not None:
        fast.chat_template = template
    if not isinstance(base, HFTokenizer):
        check_ids(tokenizer, fast, probe_text(base) + "".join(extra))
    return fast


# ------------------------------------------------------------------------------ the folder
def stop_ids(tokenizer: Tokenizer) -> int | list[int]:
    """What generation stops at: end-of-text, and every added special token (a chat turn's end)."""
    base, extra = split_extension(tokenizer)
    if not extra:
        return tokenizer.eot_id
    return [tokenizer.eot_id, *range(base.vocab_size, base.vocab_size + len(extra))]


def name_tokenizer_class(folder: Path) -> None:
    """Write :data:`TOKENIZER_CLASS` into ``tokenizer_config.json`` where transformers 5 wrote its own class name.

    transformers 5 saves a tokenizer.json-backed tokenizer as "TokenizersBackend", a name transformers 4
    does not know; "PreTrainedTokenizerFast" loads the same tokenizer.json in both.
    """
    file = folder / "tokenizer_config.json"
    config = json.loads(file.read_text(encoding="utf-8"))
    if config.get("tokenizer_class") != "TokenizersBackend":
        return
    config["tokenizer_class"] = TOKENIZER_CLASS
    config.pop("backend", None)
    file.write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def _no_progress_bar() -> Iterator[None]:
    """transformers' progress bars off inside the block, as they were after it."""
    from transformers.utils import logging as hf_logging

    was_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            hf_logging.enable_progress_bar()


def save_hf(model: GPT, folder: str | Path, *, tokenizer: Tokenizer | None = None,
            chat_template: str | None = None) -> Path:
    """Write ``model`` and its tokenizer into ``folder`` as a plain Hugging Face model; returns the folder.

    ``AutoModelForCausalLM.from_pretrained(folder)`` then computes the model's logits and
    ``AutoTokenizer.from_pretrained(folder)`` gives the course tokenizer's ids (module docstring),
    with no custom code. ``tokenizer`` defaults to ``model.tokenizer``; ``chat_template`` to the
    tokenizer's own (a ChatTokenizer's renders conversations as ``render_conversation`` does).
    The tokenizer's ``model_max_length`` is the model's ``block_size``; generation stops at
    end-of-text and, for a chat model, at every chat token.
    """
    if not isinstance(model, GPT):
        raise TypeError(f"save_hf writes a course GPT, got {type(model).__name__}; for a LoRAModel call "
                        "merge_and_unload() first")
    if not isinstance(folder, (str, Path)):
        raise TypeError(f"folder must be a str or Path, got {type(folder).__name__}")
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the model was trained with, or pass "
                         "save_hf(model, folder, tokenizer=...)")
    fast = hf_tokenizer(tok, model_max_length=model.config.block_size, chat_template=chat_template)  # checks tok
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
                         "they do not belong together")
    hf = to_hf(model, bos_token_id=tok.eot_id, eos_token_id=tok.eot_id)
    hf.generation_config.eos_token_id = stop_ids(tok)
    folder = Path(folder)
    with _no_progress_bar():  # one shard of a small model: a bar would only be left behind in a notebook
        hf.save_pretrained(folder)
    fast.save_pretrained(folder, save_jinja_files=False)  # a chat template in tokenizer_config.json: all versions read it
    name_tokenizer_class(folder)
    return folder
