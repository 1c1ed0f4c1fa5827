"""The course's GPT and the Hugging Face ecosystem: export, import, and open weights (chapters 04 and 07).

:func:`to_hf` / :func:`from_hf` pick the architecture from the config: chapter 04's
GPT-2 goes to ``GPT2LMHeadModel`` (gpt2.py); a model with chapter 07's RoPE + RMSNorm +
SwiGLU (+ GQA) to ``LlamaForCausalLM``, with QK-norm too to ``Qwen3ForCausalLM`` (llama.py).

:func:`load_open_weights` loads a real checkpoint such as ``HuggingFaceTB/SmolLM2-135M``
(a Llama: 30 layers, 576 wide, 9 query and 3 KV heads, tied embeddings) together with
its tokenizer (tokenizers/hf.py), and fails fast with a clear message offline.
"""

from __future__ import annotations

from pathlib import Path

import torch
from huggingface_hub import try_to_load_from_cache

from ..data.sources import hub_reachable
from ..model.gpt import GPT
from ..tokenizers.hf import HFTokenizer
from .common import require_transformers
from .gpt2 import from_hf_gpt2, to_hf_gpt2
from .llama import from_hf_llama, hf_architecture, to_hf_llama

HF_ARCHITECTURES = ("gpt2", "llama", "qwen3")
SMOLLM2 = "HuggingFaceTB/SmolLM2-135M"


def to_hf(model: GPT, **config_kwargs):
    """A ``transformers`` model with ``model``'s weights: GPT2LMHeadModel, LlamaForCausalLM or Qwen3ForCausalLM.

    The architecture follows the config (:func:`hf_architecture`); a config none of them
    expresses raises a ValueError naming the options. The result is on the model's device,
    in eval mode, and computes the same logits; ``config_kwargs`` go to the HF config.
    """
    if hf_architecture(model.config) == "gpt2":
        return to_hf_gpt2(model, **config_kwargs)
    return to_hf_llama(model, **config_kwargs)


def from_hf(hf_model) -> GPT:
    """Our :class:`GPT` from a ``GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``.

    On the HF model's device, in eval mode; any other architecture raises a ValueError.
    """
    require_transformers()
    kind = getattr(hf_model.config, "model_type", None)
    if kind in ("llama", "qwen3"):
        return from_hf_llama(hf_model)
    if kind != "gpt2":
        raise ValueError(f"cannot convert a {kind!r} model: the course's GPT loads gpt2, llama and qwen3 models")
    return from_hf_gpt2(hf_model)


def _hf_source(name: str) -> tuple[str, bool]:
    """(where to read ``name`` from, local_files_only); raises ConnectionError fast when it cannot be had.

    A local folder (written by ``save_pretrained``) is read as is. A Hub id is read from
    the local Hugging Face cache when it is there (works offline); otherwise only if the
    Hub answers a short probe (data.hub_reachable honours HF_HUB_OFFLINE at once).
    """
    if Path(name).is_dir():
        return str(Path(name)), True
    if isinstance(try_to_load_from_cache(name, "config.json"), str):
        return name, True
    ok, reason = hub_reachable()
    if not ok:
        raise ConnectionError(
            f"cannot load {name!r}: it is not in the local Hugging Face cache and the Hub is not reachable "
            f"({reason}). Connect to the internet and call this again (it is cached from then on), or pass "
            "a local folder written by model.save_pretrained() and tokenizer.save_pretrained()")
    return name, False


def load_open_weights(name: str = SMOLLM2, device: str | torch.device | None = None) -> GPT:
    """An open-weight Llama / Qwen3 / GPT-2 checkpoint as a course :class:`GPT`, with ``model.tokenizer`` set.

    ``name`` is a Hub id (default SmolLM2-135M) or a local folder holding a model and its
    tokenizer as ``save_pretrained`` writes them. The weights are read in float32, copied
    into our GPT (:func:`from_hf`) and the Hugging Face copy is
    dropped; the tokenizer is wrapped in the course's protocol (``HFTokenizer``), so
    ``generate(model, "The research shows")`` works with the course's own KV cache.
    Offline, without a cached copy, it raises ConnectionError at once with what to do.
    """
    transformers = require_transformers()
    source, local_only = _hf_source(name)
    hf_config = transformers.AutoConfig.from_pretrained(source, local_files_only=local_only)
    if hf_config.model_type not in HF_ARCHITECTURES:
        raise ValueError(f"{name!r} is a {hf_config.model_type!r} model; the course's GPT can load "
                         f"{', '.join(HF_ARCHITECTURES)} models")
    try:
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only,
                                                                     dtype=torch.float32)
    except TypeError:  # transformers < 4.56 calls it torch_dtype
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(source, local_files_only=local_only,
                                                                     torch_dtype=torch.float32)
    model = from_hf(hf_model)
    del hf_model
    model.tokenizer = HFTokenizer(transformers.AutoTokenizer.from_pretrained(source, local_files_only=local_only))
    if model.tokenizer.vocab_size > model.config.vocab_size:
        raise ValueError(f"the tokenizer of {name!r} has {model.tokenizer.vocab_size} ids but the model only "
                         f"{model.config.vocab_size}: they do not belong together")
    return model.to(device) if device is not None else model
