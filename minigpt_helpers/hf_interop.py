"""Convert between our GPT and Hugging Face's ``transformers.GPT2LMHeadModel``.

Our parameter names follow GPT-2's, so the conversion is a renaming plus one detail:
GPT-2's checkpoints use a ``Conv1D`` layer whose weight is stored as (in, out), while
``nn.Linear`` stores (out, in). The four projection matrices of each block
(``attn.c_attn``, ``attn.c_proj``, ``mlp.c_fc``, ``mlp.c_proj``) are therefore
transposed on the way in and out; everything else is copied as is.

Why bother: a model converted with :func:`to_hf` can be pushed to the Hub
(``hf_model.push_to_hub(...)``), used in ``transformers.pipeline("text-generation")``
or evaluated with any tool that speaks ``transformers``; :func:`from_hf` lets you load
GPT-2 itself (``GPT2LMHeadModel.from_pretrained("gpt2")``) into the course's code.

``transformers`` is an optional dependency (``pip install minigpt-helpers[hf]``); it is
imported only when these functions are called.
"""

from __future__ import annotations

import torch

from .model import GPT, GPTConfig

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


def _require_transformers():
    try:
        import transformers
    except ImportError as e:  # pragma: no cover - the dev/test environment has it
        raise ImportError(
            "Hugging Face interop needs the `transformers` package: pip install 'transformers>=4.40' "
            "(or pip install -e '.[hf]' in the course checkout)"
        ) from e
    return transformers


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
    eps = getattr(hf_config, "layer_norm_epsilon", 1e-5)
    if abs(eps - 1e-5) > 1e-12:
        problems.append(f"layer_norm_epsilon={eps} (ours is 1e-5)")
    if not getattr(hf_config, "scale_attn_weights", True):
        problems.append("scale_attn_weights=False (ours always divides by sqrt(head_dim))")
    if getattr(hf_config, "scale_attn_by_inverse_layer_idx", False):
        problems.append("scale_attn_by_inverse_layer_idx=True")
    if not getattr(hf_config, "tie_word_embeddings", True):
        problems.append("tie_word_embeddings=False (ours ties lm_head to wte)")
    if problems:
        raise ValueError("this GPT-2 configuration cannot be expressed by minigpt's GPT: " + "; ".join(problems))


def to_hf(model: GPT, **config_kwargs):
    """Return a ``transformers.GPT2LMHeadModel`` holding a copy of ``model``'s weights.

    The result is on the same device as ``model`` and in eval mode. ``config_kwargs``
    are passed to ``GPT2Config`` (e.g. ``bos_token_id``/``eos_token_id`` for generation).
    Models built with ``bias=False`` cannot be converted: GPT-2 always has biases.
    """
    transformers = _require_transformers()
    c = model.config
    if not c.bias:
        raise ValueError("GPT-2 always has biases: only a model built with GPTConfig(bias=True) can be converted")
    # GPT2Config defaults to GPT-2's <|endoftext|> id 50256, meaningless for a smaller vocabulary.
    for key in ("bos_token_id", "eos_token_id"):
        config_kwargs.setdefault(key, 50256 if c.vocab_size > 50256 else None)
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
        layer_norm_epsilon=1e-5,
        tie_word_embeddings=True,
        **config_kwargs,
    )
    hf_model = transformers.GPT2LMHeadModel(hf_config)
    theirs = hf_model.state_dict()
    missing = [n for n, _ in model.named_parameters() if n not in theirs]
    if missing:
        raise RuntimeError(f"parameters with no counterpart in GPT2LMHeadModel: {missing}")
    # names only HF has (e.g. attention-mask buffers in older transformers) are left alone
    _copy_weights(model.state_dict(), theirs, [n for n in theirs if n in model.state_dict()])
    hf_model.tie_weights()
    return hf_model.to(model.device).eval()


def from_hf(hf_model) -> GPT:
    """Build our :class:`GPT` from a ``transformers.GPT2LMHeadModel`` (or its state).

    Works for configurations GPT-2 and our GPT share (tanh GELU, 4x MLP, tied head,
    LayerNorm eps 1e-5); anything else raises a ``ValueError`` naming the difference.
    The result is on the HF model's device and in eval mode.
    """
    _require_transformers()
    hf_config = hf_model.config
    _check_expressible(hf_config)
    config = GPTConfig(
        vocab_size=hf_config.vocab_size,
        block_size=hf_config.n_positions,
        n_layer=hf_config.n_layer,
        n_head=hf_config.n_head,
        n_embd=hf_config.n_embd,
        dropout=_dropout_of(hf_config),
        bias=True,
    )
    model = GPT(config)
    theirs, ours = hf_model.state_dict(), model.state_dict()
    names = [n for n in ours if n != "lm_head.weight"]  # lm_head is tied to wte, copied under that name
    missing = [n for n in names if n not in theirs]
    if missing:
        raise RuntimeError(f"not found in the Hugging Face model's state_dict: {missing}")
    _copy_weights(theirs, ours, names)
    device = next(hf_model.parameters()).device
    return model.to(device).eval()
