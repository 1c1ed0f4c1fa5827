"""Convert between chapter 04's GPT and Hugging Face's ``transformers.GPT2LMHeadModel``.

``hub.to_hf`` / ``hub.from_hf`` pick the architecture from the config and call
:func:`to_hf_gpt2` / :func:`from_hf_gpt2` for GPT-2 (llama.py handles Llama and Qwen3).

Our parameter names follow GPT-2's, so the conversion is a renaming plus one detail:
GPT-2's checkpoints use a ``Conv1D`` layer whose weight is stored as (in, out), while
``nn.Linear`` stores (out, in). The four projection matrices of each block
(``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) are therefore
transposed on the way in and out; everything else is copied as is.

Why bother: a model converted with :func:`to_hf_gpt2` can be pushed to the Hub
(``hf_model.push_to_hub(...)``), used in ``transformers.pipeline("text-generation")``
or evaluated with any tool that speaks ``transformers``; :func:`from_hf_gpt2` lets you load
GPT-2 itself (``GPT2LMHeadModel.from_pretrained("gpt2")``) into the course's code.

**Bias-free models.** Every course preset is built with ``bias=False`` (as nanoGPT
recommends: a little faster, no worse), while GPT-2 always has biases. A missing bias
is exactly a zero bias, so :func:`to_hf_gpt2` exports zeros there and the exported model
computes the same function. It also records ``minigpt_bias=False`` in the exported
config (saved in its ``config.json``); :func:`from_hf_gpt2` then gives back a ``bias=False``
GPT if all those biases are still exactly zero, and a ``bias=True`` one (equally exact)
if they were changed since, e.g. by fine-tuning in ``transformers``.

``transformers`` is an optional dependency (``pip install minigpt-helpers[hf]``); it is
imported only when these functions are called.
"""

from __future__ import annotations

import torch

from ..model.gpt import GPT, GPTConfig
from .common import require_transformers, special_token_ids

# Weights stored transposed by GPT-2's Conv1D.
_CONV1D_SUFFIXES = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def _copy_weights(src: dict, dst: dict, names: list[str]) -> None:
    """dst[name] <- src[name] for each name, transposing the Conv1D matrices."""
    with torch.no_grad():
        for name in names:
            value = src[name].t() if name.endswith(_CONV1D_SUFFIXES) else src[name]
            if value.shape != dst[name].shape:
                raise RuntimeError(f"shape mismatch for {name}: {tuple(value.shape)} vs {tuple(dst[name].shape)}")
            dst[name].copy_(value)


def _dropout_of(hf_config) -> float:
    """Our single dropout from GPT-2's three (they are equal in every GPT-2 release)."""
    drops = {float(getattr(hf_config, n, 0.0) or 0.0) for n in ("resid_pdrop", "embd_pdrop", "attn_pdrop")}
    return max(drops)


def _check_expressible(hf_config) -> None:
    """Raise a clear error for GPT-2 variants our GPT cannot represent exactly."""
    problems = []
    n_inner = getattr(hf_config, "n_inner", None)
    if n_inner is not None and n_inner != 4 * hf_config.n_embd:
        problems.append(f"n_inner={n_inner} (ours is always 4 * n_embd = {4 * hf_config.n_embd})")
    act = getattr(hf_config, "activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        problems.append(f"activation_function={act!r} (ours is the tanh GELU, 'gelu_new')")
    if not getattr(hf_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False (ours always divides by sqrt(head_dim))")
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx=True")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False (ours ties lm_head to wte)")
    if problems:
        raise ValueError("this GPT-2 configuration cannot be expressed by minigpt's GPT: " + "; ".join(problems))


def to_hf_gpt2(model: GPT, **config_kwargs):
    """Return a ``transformers`` model holding a copy of ``model``'s weights.

    A ``GPT2LMHeadModel``, for chapter 04's GPT (``hub.to_hf`` sends other configs to llama.py).

    The result is on the same device as ``model`` and in eval mode, and computes the
    same logits. A ``bias=False`` model is exported with zero biases (exactly the
    same function; see the module docstring). The special token ids come from the
    attached tokenizer (:func:`special_token_ids`); ``config_kwargs`` are passed to
    ``GPT2Config`` and override them.
    """
    transformers = require_transformers()
    c = model.config
    for key, value in special_token_ids(model).items():
        config_kwargs.setdefault(key, value)
    config_kwargs.setdefault("minigpt_bias", c.bias)  # read back by from_hf_gpt2
    hf_config = transformers.GPT2Config(
        vocab_size=c.vocab_size,
        n_positions=c.block_size,
        n_embd=c.n_embd,
        n_layer=c.n_layer,
        n_head=c.n_head,
        n_inner=None,
        activation_function="gelu_new",
        resid_pdrop=c.dropout,
        embd_pdrop=c.dropout,
        attn_pdrop=c.dropout,
        layer_norm_epsilon=c.norm_eps,
        tie_word_embeddings=True,
        **config_kwargs,
    )
    hf_model = transformers.GPT2LMHeadModel(hf_config)
    theirs = hf_model.state_dict()
    missing = [n for n, _ in model.named_parameters() if n not in theirs]
    if missing:
        raise RuntimeError(f"parameters with no counterpart in GPT2LMHeadModel: {missing}")
    ours = model.state_dict()
    _copy_weights(ours, theirs, [n for n in theirs if n in ours])
    # A bias=False model has no biases: GPT-2's are set to exactly zero, the same function.
    # Other names only HF has (attention-mask buffers in older transformers) are left alone.
    hf_params = dict(hf_model.named_parameters())
    with torch.no_grad():
        for name in theirs:
            if name not in ours and name.endswith(".bias") and name in hf_params:
                theirs[name].zero_()
    hf_model.tie_weights()  # generation_config picked up the token ids from hf_config
    return hf_model.to(model.device).eval()


def _biases_all_zero(state: dict) -> bool:
    """Whether every bias in a GPT-2 state dict (Conv1D and LayerNorm) is exactly zero."""
    return all(not torch.any(v) for n, v in state.items() if n.endswith(".bias") and v.is_floating_point())


def from_hf_gpt2(hf_model) -> GPT:
    """Build our :class:`GPT` from a ``transformers.GPT2LMHeadModel``, ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``.

    Works for configurations GPT-2 and our GPT share (tanh GELU, 4x MLP, tied head);
    anything else raises a ``ValueError`` naming the difference.
    The result is on the HF model's device and in eval mode. It has ``bias=True``,
    except for a model exported by :func:`to_hf_gpt2` from a ``bias=False`` GPT whose
    biases are all still exactly zero: that one comes back ``bias=False``, as it was.
    """
    hf_config = hf_model.config
    _check_expressible(hf_config)
    theirs = hf_model.state_dict()
    bias = getattr(hf_config, "minigpt_bias", True) is not False or not _biases_all_zero(theirs)
    config = GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=_dropout_of(hf_config),
        bias=bias,
        norm_eps=float(getattr(hf_config, "layer_norm_epsilon", 1e-5)),
    )
    model = GPT(config)
    ours = model.state_dict()
    names = [n for n in ours if n != "lm_head.weight"]  # lm_head is tied to wte, copied under that name
    missing = [n for n in names if n not in theirs]
    if missing:
        raise RuntimeError(f"not found in the Hugging Face model's state_dict: {missing}")
    _copy_weights(theirs, ours, names)
    device = next(hf_model.parameters()).device
    return model.to(device).eval()
