"""Our modern GPT <-> Hugging Face ``LlamaForCausalLM`` / ``Qwen3ForCausalLM``, (chapter 07).

With ``rope_theta``, ``norm="rmsnorm"``, ``mlp="swiglu"`` (and any ``n_kv_head``) our GPT
computes exactly what a Llama computes; with ``qk_norm=True`` as well, a Qwen3. The
conversion is a renaming plus two concatenations, because we keep GPT-2's fused layout:

    ours                      Hugging Face (model.layers.N.)
    attn.c_attn  [q; k; v]    self_attn.q_proj, k_proj, v_proj   (stacked along the output rows)
    attn.c_proj               self_attn.o_proj
    attn.q_norm / k_norm      self_attn.q_norm / k_norm          (Qwen3 only)
    mlp.c_fc     [gate; up]   mlp.gate_proj, mlp.up_proj
    mlp.c_proj                mlp.down_proj
    ln_1 / ln_2 / ln_f        input_layernorm / post_attention_layernorm / model.norm

No permutation of the q/k rows is needed because our RoPE uses Hugging Face's
"rotate_half" layout (pairs i and i + D/2; see layers.py). Both nn.Linear and HF's
Linear store (out, in), so nothing is transposed either (unlike GPT-2's Conv1D).
"""

from __future__ import annotations

import torch

from ..model.gpt import GPT, GPTConfig
from ..model.layers import mlp_hidden_size, swiglu_hidden
from .common import require_transformers, special_token_ids


def hf_architecture(c: GPTConfig) -> str:
    """Which ``transformers`` architecture computes the same function as a GPT of config ``c``.

    "gpt2" for chapter 04's model; "llama" with RoPE + RMSNorm + SwiGLU; "qwen3" with QK-norm
    as well. Raises a ValueError naming the options no architecture here can express.
    """
    modern = {"rope_theta": c.rope_theta is not None, "norm": c.norm == "rmsnorm", "mlp": c.mlp == "swiglu"}
    if not any(modern.values()) and not c.qk_norm and c.n_kv_head in (None, c.n_head) and c.tie_embeddings \
            and c.logit_softcap is None and c.head_size in (None, c.n_embd // c.n_head) \
            and c.mlp_hidden in (None, 4 * c.n_embd) and c.mlp == "gelu":
        return "gpt2"
    problems = [f"{k}={getattr(c, k)!r}" for k, ok in modern.items() if not ok]
    if c.logit_softcap is not None:
        problems.append(f"logit_softcap={c.logit_softcap} (Llama and Qwen3 have no soft-cap)")
    if c.qk_norm and c.bias:
        problems.append("bias=True with qk_norm (Qwen3's MLP has no biases)")
    if problems:
        raise ValueError("this GPT matches neither GPT-2 nor Llama/Qwen3, so it has no Hugging Face twin: "
                         + "; ".join(problems) + ". A Llama needs rope_theta, norm='rmsnorm' and mlp='swiglu' "
                         "(Qwen3: also qk_norm=True); GPT-2 needs all the chapter 07 options off")
    return "qwen3" if c.qk_norm else "llama"


def _layout(c: GPTConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(our name, Hugging Face names) pairs; ours is the concatenation of theirs along dim 0."""
    pairs = [("transformer.wte.weight", ("model.embed_tokens.weight",))]
    kinds = ("weight", "bias") if c.bias else ("weight",)
    for i in range(c.n_layer):
        o, a = f"transformer.h.{i}.", f"model.layers.{i}."
        pairs += [(o + "ln_1.weight", (a + "input_layernorm.weight",)),
                  (o + "ln_2.weight", (a + "post_attention_layernorm.weight",))]
        for w in kinds:
            pairs += [(o + f"attn.c_attn.{w}", tuple(a + f"self_attn.{x}_proj.{w}" for x in "qkv")),
                      (o + f"attn.c_proj.{w}", (a + f"self_attn.o_proj.{w}",)),
                      (o + f"mlp.c_fc.{w}", (a + f"mlp.gate_proj.{w}", a + f"mlp.up_proj.{w}")),
                      (o + f"mlp.c_proj.{w}", (a + f"mlp.down_proj.{w}",))]
        if c.qk_norm:
            pairs += [(o + "attn.q_norm.weight", (a + "self_attn.q_norm.weight",)),
                      (o + "attn.k_norm.weight", (a + "self_attn.k_norm.weight",))]
    pairs.append(("transformer.ln_f.weight", ("model.norm.weight",)))
    if not c.tie_embeddings:
        pairs.append(("lm_head.weight", ("lm_head.weight",)))
    return pairs


def to_hf_llama(model: GPT, **config_kwargs):
    """A ``LlamaForCausalLM`` (or ``Qwen3ForCausalLM`` with QK-norm) holding a copy of ``model``'s weights.

    On the model's device, in eval mode, computing the same logits. ``config_kwargs`` go to
    the Hugging Face config (special token ids default to the attached tokenizer's).
    """
    transformers = require_transformers()
    c = model.config
    arch = hf_architecture(c)
    if arch == "gpt2":
        raise ValueError("this is a GPT-2 model: export it with to_hf_gpt2 (GPT2LMHeadModel)")
    for key, value in special_token_ids(model).items():
        config_kwargs.setdefault(key, value)
    kw = dict(vocab_size=c.vocab_size, hidden_size=c.n_embd, intermediate_size=mlp_hidden_size(c),
              num_hidden_layers=c.n_layer, num_attention_heads=c.n_head, num_key_value_heads=c.kv_heads,
              head_dim=c.head_dim, max_position_embeddings=c.block_size, rope_theta=float(c.rope_theta),
              rms_norm_eps=c.norm_eps, tie_word_embeddings=c.tie_embeddings, attention_bias=c.bias,
              attention_dropout=c.dropout, hidden_act="silu")
    if arch == "llama":
        hf_config = transformers.LlamaConfig(**kw, mlp_bias=c.bias, **config_kwargs)
        hf_model = transformers.LlamaForCausalLM(hf_config)
    else:
        hf_config = transformers.Qwen3Config(**kw, use_sliding_window=False, **config_kwargs)
        hf_model = transformers.Qwen3ForCausalLM(hf_config)
    ours, theirs = model.state_dict(), hf_model.state_dict()
    with torch.no_grad():
        for name, hf_names in _layout(c):
            missing = [n for n in hf_names if n not in theirs]
            if missing:
                raise RuntimeError(f"{type(hf_model).__name__} has no {missing[0]}: this transformers version "
                                   "lays the model out differently")
            pieces = ours[name].split([theirs[n].shape[0] for n in hf_names])
            for n, piece in zip(hf_names, pieces):
                theirs[n].copy_(piece)
    if c.tie_embeddings:
        hf_model.tie_weights()
    return hf_model.to(model.device).eval()


def _rope_theta(hf_config) -> float:
    """RoPE's base from a Hugging Face config (``rope_parameters`` in transformers 5, ``rope_theta`` before)."""
    params = getattr(hf_config, "rope_parameters", None)
    if isinstance(params, dict) and "rope_theta" in params:
        theta, kind = params["rope_theta"], params.get("rope_type", "default")
    else:
        theta = getattr(hf_config, "rope_theta", 10000.0)
        scaling = getattr(hf_config, "rope_scaling", None) or {}
        kind = scaling.get("rope_type", scaling.get("type", "default"))
    if kind != "default":
        raise ValueError(f"RoPE scaling {kind!r} (long-context extension) is not supported: our RoPE is the "
                         "plain one (rope_type 'default')")
    return float(theta)


def config_from_hf_llama(hf_config) -> GPTConfig:
    """The GPTConfig of a Llama / Qwen3 ``transformers`` config; a ValueError names what we cannot express."""
    kind = hf_config.model_type
    if kind not in ("llama", "qwen3"):
        raise ValueError(f"model_type {kind!r} is not a Llama or Qwen3")
    act = getattr(hf_config, "hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act={act!r}: our SwiGLU uses SiLU")
    attn_bias = bool(getattr(hf_config, "attention_bias", False))
    mlp_bias = bool(getattr(hf_config, "mlp_bias", False))
    if attn_bias != mlp_bias:
        raise ValueError(f"attention_bias={attn_bias} but mlp_bias={mlp_bias}: our GPT has one `bias` for both")
    if getattr(hf_config, "use_sliding_window", False):
        raise ValueError("use_sliding_window=True: our attention is always over the whole context")
    C, H = hf_config.hidden_size, hf_config.num_attention_heads
    head_dim = getattr(hf_config, "head_dim", None) or C // H
    n_kv = getattr(hf_config, "num_key_value_heads", None) or H
    hidden = hf_config.intermediate_size
    return GPTConfig(
        vocab_size=hf_config.vocab_size, block_size=hf_config.max_position_embeddings,
        n_layer=hf_config.num_hidden_layers, n_head=H, n_embd=C,
        dropout=float(getattr(hf_config, "attention_dropout", 0.0) or 0.0), bias=attn_bias,
        rope_theta=_rope_theta(hf_config), norm="rmsnorm", norm_eps=float(hf_config.rms_norm_eps),
        mlp="swiglu", mlp_hidden=None if hidden == swiglu_hidden(C) else hidden,
        n_kv_head=None if n_kv == H else n_kv, qk_norm=kind == "qwen3",
        tie_embeddings=bool(getattr(hf_config, "tie_word_embeddings", False)),
        head_size=None if (C % H == 0 and head_dim == C // H) else head_dim,
    )


def from_hf_llama(hf_model) -> GPT:
    """Build our :class:`GPT` from a ``LlamaForCausalLM`` or ``Qwen3ForCausalLM``, on its device, in eval mode."""
    config = config_from_hf_llama(hf_model.config)
    theirs = hf_model.state_dict()
    state = {}
    for name, hf_names in _layout(config):
        missing = [n for n in hf_names if n not in theirs]
        if missing:
            raise RuntimeError(f"not found in the Hugging Face model's state_dict: {missing[0]}")
        state[name] = torch.cat([theirs[n] for n in hf_names]) if len(hf_names) > 1 else theirs[hf_names[0]]
    if config.tie_embeddings:
        state["lm_head.weight"] = state["transformer.wte.weight"]
    device = next(hf_model.parameters()).device
    model = GPT.empty(config, device)  # no random init: every weight is copied in just below
    model.load_state_dict(state, strict=True)
    return model.eval()
