"""Tokenizers: how text becomes the integers a model reads (chapter 02).

Three tokenizers share one small protocol (the :class:`Tokenizer` base class):

    encode(text, allowed_special="none") -> list[int]
    encode_ordinary(text) -> list[int]   ``<|endoftext|>`` in the text is text, not the special id
    decode(ids) -> str
    vocab_size, eot_id
    save(path)          writes a *directory* (created if needed)
    Tokenizer.load(path), Tokenizer.train(texts, vocab_size=..., **kw)

``texts`` is any iterable of strings, so a tokenizer trains straight from
``stream_documents(...)`` (its dicts are accepted too: the ``"text"`` field is used).

Every tokenizer has the special token ``<|endoftext|>`` (:data:`EOT`) that
separates documents. Text that *contains* that string is ambiguous (is it a
document boundary or somebody writing about tokenizers?), so ``encode`` refuses
it unless told ``allowed_special="all"`` - never a silent choice. ``encode_ordinary``
is the other choice, made explicitly: the string is encoded as the ordinary text it is
(tiktoken's method of the same name).

This module holds the protocol, the registry of saved types, the character-level
tokenizer and :func:`load_tokenizer`. Byte-level BPE lives in ``bpe.py``, the
SentencePiece wrapper in ``sentencepiece.py``, and training the course's default
tokenizer in ``train.py``. Each subclass registers itself under its ``type_name``
when it is defined, so this module names none of them.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

EOT = "<|endoftext|>"
AllowedSpecial = Literal["none", "all"]
CONFIG_NAME = "tokenizer.json"
#: every tokenizer class by the ``"type"`` it saves; filled in as the classes are defined
TOKENIZER_TYPES: dict[str, type[Tokenizer]] = {}


def iter_texts(texts: Iterable[Any]) -> Iterator[str]:
    """Yield strings from ``texts``: plain strings, or dicts with a ``"text"`` field.

    Why: ``stream_documents`` yields ``{"text": ..., "source": ...}`` and a learner
    should be able to pass it straight to ``train`` without a list comprehension.
    A single string is rejected because iterating it would train on characters.
    """
    if isinstance(texts, str | bytes):
        raise TypeError("train() takes an iterable of strings, not one string: wrap it in a list, e.g. [text]")
    for item in texts:
        if isinstance(item, dict):
            item = item.get("text")
        if not isinstance(item, str):
            raise TypeError(f"train() expects strings (or dicts with a 'text' field), got {type(item).__name__}")
        yield item


def check_special(text: str, allowed_special: str) -> bool:
    """Validate ``allowed_special`` and return True when ``text`` must be split on EOT."""
    if allowed_special not in ("none", "all"):
        raise ValueError(f'allowed_special must be "none" or "all", got {allowed_special!r}')
    if EOT in text:
        if allowed_special == "none":
            raise ValueError(
                f"text contains the special token {EOT}; pass allowed_special=\"all\" to encode it as the "
                "end-of-text id, or use encode_ordinary(text) to encode it as plain text"
            )
        return True
    return False


class Tokenizer:
    """The protocol every tokenizer follows (see the module docstring).

    Subclasses implement ``_encode_ordinary`` (text without special tokens),
    ``_decode_ordinary``, ``vocab_size``, ``eot_id``, ``train``, ``_to_config`` and
    ``_from_config``; this base class handles the special token, batching and the
    on-disk format (a directory with ``tokenizer.json`` whose ``"type"`` says which
    class to rebuild).
    """

    type_name: ClassVar[str] = "base"

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """Register each concrete tokenizer under its ``type_name``: what ``load_tokenizer`` dispatches on."""
        super().__init_subclass__(**kwargs)
        if cls.type_name != "base":
            TOKENIZER_TYPES[cls.type_name] = cls
    vocab_size: int
    eot_id: int

    # -- to implement --------------------------------------------------------------
    def _encode_ordinary(self, text: str) -> list[int]:
        raise NotImplementedError

    def _decode_ordinary(self, ids: Sequence[int]) -> str:
        raise NotImplementedError

    def _to_config(self, directory: Path) -> dict[str, Any]:
        raise NotImplementedError

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> Tokenizer:
        raise NotImplementedError

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, **kwargs: Any) -> Tokenizer:
        raise NotImplementedError

    # -- shared ----------------------------------------------------------------------
    def encode(self, text: str, allowed_special: AllowedSpecial = "none") -> list[int]:
        """Token ids for ``text``. ``allowed_special="all"`` maps ``<|endoftext|>`` to :attr:`eot_id`."""
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        if not check_special(text, allowed_special):
            return self._encode_ordinary(text)
        ids: list[int] = []
        for i, part in enumerate(text.split(EOT)):
            if i:
                ids.append(self.eot_id)
            if part:
                ids.extend(self._encode_ordinary(part))
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids for ``text`` with a literal ``<|endoftext|>`` encoded as ordinary text, never as :attr:`eot_id`.

        Web text does contain that string. Here it is text like any other: for byte-level BPE its
        bytes go through the same pre-split and merges as the text around it, so the tokens at its
        edges are the ones ordinary BPE gives (what tiktoken's ``encode_ordinary`` does).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, got {type(text).__name__}")
        return self._encode_ordinary(text)

    def encode_batch(self, texts: Iterable[str], allowed_special: AllowedSpecial = "none") -> list[list[int]]:
        """``[encode(t) for t in texts]`` (subclasses may do it faster)."""
        return [self.encode(t, allowed_special) for t in texts]

    def decode(self, ids: Iterable[int]) -> str:
        """Text for ``ids``; :attr:`eot_id` decodes to ``<|endoftext|>``. Never raises on valid ids."""
        ids = [int(i) for i in ids]  # also accepts tensors / numpy arrays
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"ids out of range for vocab_size {self.vocab_size}: {bad[:5]}")
        if self.eot_id not in ids:
            return self._decode_ordinary(ids)
        parts: list[list[int]] = [[]]
        for i in ids:
            if i == self.eot_id:
                parts.append([])
            else:
                parts[-1].append(i)
        return EOT.join(self._decode_ordinary(p) for p in parts)

    def save(self, path: str | Path) -> Path:
        """Write this tokenizer into directory ``path`` (created) and return it."""
        directory = Path(path)
        directory.mkdir(parents=True, exist_ok=True)
        config = {"type": self.type_name, "format_version": 1, **self._to_config(directory)}
        # Always UTF-8, never the locale's encoding: a character vocabulary holds any Unicode
        # character, which cp1252 (Windows) or an ASCII/C locale cannot encode.
        (directory / CONFIG_NAME).write_text(json.dumps(config, ensure_ascii=False), encoding="utf-8")
        return directory

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        """Load a tokenizer saved with :meth:`save`; it must be of this class (use ``load_tokenizer`` for any)."""
        directory, config = _read_config(path)
        if cls is not Tokenizer and config["type"] != cls.type_name:
            raise ValueError(
                f"{directory} holds a {config['type']!r} tokenizer, not {cls.type_name!r}: "
                f"use load_tokenizer({str(directory)!r}) to load whatever type is saved there"
            )
        return TOKENIZER_TYPES[config["type"]]._from_config(config, directory)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(vocab_size={self.vocab_size})"


def _read_utf8_or_legacy(file: Path) -> str:
    """The text of ``file``: UTF-8 (what :meth:`Tokenizer.save` writes), or else the locale's encoding.

    A ``tokenizer.json`` written in the locale's encoding (e.g. cp1252 on Windows, by
    code that opened it without ``encoding=``) is not valid UTF-8 when its vocabulary
    is not ASCII; we read it the way it was written and say how to convert it, rather
    than refusing a tokenizer someone trained.
    """
    import locale
    import warnings

    raw = file.read_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        legacy = locale.getpreferredencoding(False)
        if legacy.lower().replace("-", "") in ("utf8", "ascii", "ansi_x3.41968"):
            raise  # no other encoding to try: the file is simply not text
        text = raw.decode(legacy)
        warnings.warn(f"{file} is not UTF-8: read it as {legacy}, this machine's locale encoding; "
                      "save the tokenizer again to write UTF-8", stacklevel=3)
        return text


def _read_config(path: str | Path) -> tuple[Path, dict[str, Any]]:
    directory = Path(path)
    if directory.is_file() and directory.name == CONFIG_NAME:
        directory = directory.parent
    file = directory / CONFIG_NAME
    if not file.is_file():
        raise FileNotFoundError(
            f"no saved tokenizer at {directory}: expected a directory containing {CONFIG_NAME}, "
            "as written by tokenizer.save(directory)"
        )
    try:
        config = json.loads(_read_utf8_or_legacy(file))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{file} is not a saved tokenizer (not valid JSON: {e})") from None
    known = sorted(TOKENIZER_TYPES)
    if not isinstance(config, dict) or config.get("type") not in known:
        got = config.get("type") if isinstance(config, dict) else None
        raise ValueError(f"{file} is not a saved tokenizer: its \"type\" is {got!r}, expected one of {known}")
    return directory, config


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Load any tokenizer saved with ``.save(path)``, dispatching on its saved ``"type"``."""
    return Tokenizer.load(path)


# ------------------------------------------------------------------------------------
# Character level
# ------------------------------------------------------------------------------------
class CharTokenizer(Tokenizer):
    """One id per character seen in training: the simplest tokenizer.

    Ids ``0 .. len(chars)-1`` are the characters (sorted, so training is
    deterministic), then ``eot_id = len(chars)``, then - only if built with
    ``unk=True`` - an unknown-token id that decodes to U+FFFD.

    Without ``unk`` a character the tokenizer never saw raises a ValueError naming
    it: mapping it to some other id would silently corrupt the data.
    """

    type_name = "char"
    UNK_TEXT = "\ufffd"

    def __init__(self, chars: Iterable[str], unk: bool = False) -> None:
        chars = list(chars)
        if not chars:
            raise ValueError("CharTokenizer needs at least one character: train it on non-empty text")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars: list[str] = chars
        self.unk = bool(unk)
        self.stoi: dict[str, int] = {c: i for i, c in enumerate(chars)}
        self.eot_id = len(chars)
        self.unk_id: int | None = len(chars) + 1 if self.unk else None
        self.vocab_size = len(chars) + 1 + int(self.unk)
        self._itos = chars + [EOT] + ([self.UNK_TEXT] if self.unk else [])

    @classmethod
    def train(
        cls, texts: Iterable[str], vocab_size: int | None = None, *, unk: bool = False, verbose: bool = False
    ) -> CharTokenizer:
        """Build the vocabulary from ``texts``.

        ``vocab_size=None`` keeps every character seen; a number keeps the most
        frequent ones so that the total (with EOT and, if ``unk``, the unknown id)
        is at most ``vocab_size``. Characters dropped that way become unknown.
        """
        counts: Counter[str] = Counter()
        n = 0
        for t in iter_texts(texts):
            counts.update(t)
            n += len(t)
        if not counts:
            raise ValueError("cannot train a CharTokenizer on empty data: the texts contained no characters")
        chars = sorted(counts)
        if vocab_size is not None:
            room = vocab_size - 1 - int(unk)
            if room < 1:
                raise ValueError(f"vocab_size ({vocab_size}) too small: need room for EOT{' and UNK' if unk else ''}")
            if room < len(chars):
                keep = {c for c, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:room]}
                chars = [c for c in chars if c in keep]
        if verbose:
            print(f"CharTokenizer: {len(chars)} characters from {n:,} characters of text")
        return cls(chars, unk=unk)

    def _encode_ordinary(self, text: str) -> list[int]:
        stoi = self.stoi
        try:
            return [stoi[c] for c in text]
        except KeyError:
            if self.unk_id is not None:
                u = self.unk_id
                return [stoi.get(c, u) for c in text]
            missing = sorted({c for c in text if c not in stoi})
            raise ValueError(
                f"characters not in this CharTokenizer's vocabulary: {missing[:20]!r}"
                f"{' ...' if len(missing) > 20 else ''}; train it on text that contains them, "
                "or build it with unk=True to map unknown characters to an unknown-token id"
            ) from None

    def _decode_ordinary(self, ids: Sequence[int]) -> str:
        itos = self._itos
        return "".join(itos[i] for i in ids)

    def _to_config(self, directory: Path) -> dict[str, Any]:
        return {"chars": self.chars, "unk": self.unk}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> CharTokenizer:
        return cls(config["chars"], unk=config.get("unk", False))
