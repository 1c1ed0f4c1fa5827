"""What the GPT-2 and the Llama / Qwen3 converters share: the optional import and the special token ids."""

from __future__ import annotations

from ..model.gpt import GPT


def require_transformers():
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the dev/test environment has it
        raise ImportError(
            "Hugging Face interop needs the `transformers` package: pip install 'transformers>=4.40' "
            "(or pip install -e '.[hf]' in the course checkout)"
        ) from e
    return transformers


def special_token_ids(model: GPT) -> dict[str, int | None]:
    """``bos_token_id`` / ``eos_token_id`` / ``pad_token_id`` for the exported config.

    With a tokenizer attached, bos and eos are its ``<|endoftext|>`` id, as in GPT-2
    (one token both separates and ends documents). pad stays None, as in GPT-2:
    ``generate()`` pads with eos by itself, whereas pad = eos would make
    ``transformers`` warn about padding for every input that starts or ends with
    end-of-text, which packed training windows often do. Without a tokenizer:
    GPT-2's id 50256 when the vocabulary has it, else None, because GPT2Config's
    default 50256 would point outside a small vocabulary.
    """
    tok = getattr(model, "tokenizer", None)
    eot = getattr(tok, "eot_id", None)
    vocab = model.config.vocab_size
    if eot is not None:
        if not 0 <= int(eot) < vocab:
            raise ValueError(f"the attached tokenizer's eot_id {eot} is outside the model's vocabulary of {vocab}: "
                             "attach the tokenizer the model was trained with")
        return {"bos_token_id": int(eot), "eos_token_id": int(eot), "pad_token_id": None}
    gpt2_eot = 50256 if vocab > 50256 else None
    return {"bos_token_id": gpt2_eot, "eos_token_id": gpt2_eot, "pad_token_id": None}
