"""A Hugging Face tokenizer (``AutoTokenizer``) behind the course's tokenizer protocol (chapter 07).

Open-weight models come with their own tokenizer; to run them with the course's
``generate`` and ``train`` we wrap it in the protocol of base.py:
``encode(text, allowed_special)``, ``decode(ids)``, ``vocab_size``, ``eot_id``, ``save``.

* ``eot_id`` is the tokenizer's ``<|endoftext|>`` when it has one (GPT-2, SmolLM2,
  Qwen), else its end-of-sequence token (Llama's ``</s>``): the id that separates
  documents. As with every course tokenizer, the text ``<|endoftext|>`` is encoded to it
  only with ``allowed_special="all"``; ``encode_ordinary`` encodes it as ordinary text.
* Ordinary text is encoded without added special tokens (no BOS): the course's data
  pipeline puts its own separators between documents.
* ``save(path)`` writes the Hugging Face files into ``path/hf/`` (``save_pretrained``)
  next to the course's ``tokenizer.json``, so ``load_tokenizer(path)`` rebuilds it
  offline, and a saved model carries its tokenizer as for the other tokenizers.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .base import EOT, Tokenizer

HF_DIR = "hf"


class HFTokenizer(Tokenizer):
    """Wraps a ``transformers`` tokenizer (fast or slow) in the course's :class:`Tokenizer` protocol."""

    type_name = "hf"

    def __init__(self, hf_tokenizer: Any) -> None:
        if not (hasattr(hf_tokenizer, "encode") and hasattr(hf_tokenizer, "decode")):
            raise TypeError(f"HFTokenizer wraps a transformers tokenizer (e.g. AutoTokenizer.from_pretrained(...)), "
                            f"got {type(hf_tokenizer).__name__}")
        self.hf = hf_tokenizer
        self.vocab_size = len(hf_tokenizer)
        eot = hf_tokenizer.convert_tokens_to_ids(EOT) if EOT in hf_tokenizer.get_vocab() else None
        eot = eot if eot is not None else hf_tokenizer.eos_token_id
        if eot is None:
            raise ValueError(f"this tokenizer has neither {EOT} nor an eos_token: set one, e.g. "
                             f"hf_tokenizer.add_special_tokens({{'eos_token': '{EOT}'}}), and resize the model")
        self.eot_id = int(eot)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, **kwargs: Any) -> HFTokenizer:
        """``AutoTokenizer.from_pretrained(name_or_path, **kwargs)``, wrapped."""
        from transformers import AutoTokenizer

        return cls(AutoTokenizer.from_pretrained(str(name_or_path), **kwargs))

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int, **kwargs: Any) -> Tokenizer:
        raise NotImplementedError("an HFTokenizer wraps a pretrained tokenizer: load one with "
                                  "HFTokenizer.from_pretrained(name), or train a BPETokenizer / SentencePieceTokenizer")

    def _encode_ordinary(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def encode_ordinary(self, text: str) -> list[int]:
        """Ids of ``text`` with special-token strings in it (``<|endoftext|>``, ...) encoded as ordinary text.

        ``split_special_tokens=True`` makes the Hugging Face tokenizer treat them like any other
        characters (transformers >= 4.42 for fast tokenizers), never as their special ids.
        """
        if not isinstance(text, str):
            raise TypeError(f"encode_ordinary() takes a str, got {type(text).__name__}")
        return list(self.hf.encode(text, add_special_tokens=False, split_special_tokens=True))

    def encode_batch(self, texts: Iterable[str], allowed_special: str = "none") -> list[list[int]]:
        texts = list(texts)
        if allowed_special == "none" and not any(EOT in t for t in texts) and texts:
            return [list(ids) for ids in self.hf(texts, add_special_tokens=False)["input_ids"]]
        return [self.encode(t, allowed_special) for t in texts]

    def _decode_ordinary(self, ids: Sequence[int]) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=False, clean_up_tokenization_spaces=False)

    def _to_config(self, directory: Path) -> dict[str, Any]:
        self.hf.save_pretrained(str(directory / HF_DIR))
        return {"hf_dir": HF_DIR, "vocab_size": self.vocab_size}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> HFTokenizer:
        folder = directory / config.get("hf_dir", HF_DIR)
        if not folder.is_dir():
            raise FileNotFoundError(f"{directory} has a tokenizer.json of type 'hf' but no {folder.name}/ folder: "
                                    "save the tokenizer again")
        return cls.from_pretrained(folder, local_files_only=True)
