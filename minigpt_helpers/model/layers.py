"""The pieces of a modern GPT (chapter 07): RMSNorm, rotary position embeddings, and the MLP variants.

Each piece replaces one part of GPT-2 (chapter 04) and is switched on by one
``GPTConfig`` option (see gpt.py); with every option off the model is GPT-2.

* :class:`RMSNorm` (Zhang & Sennrich 2019, "Root Mean Square Layer Normalization"):
  LayerNorm without the mean subtraction and without a bias, ``x / rms(x) * g``.
  Cheaper, and as good in practice; Llama, Qwen, Gemma and nanochat use it.
* :class:`Rotary` (Su et al. 2021, "RoFormer: Enhanced Transformer with Rotary Position
  Embedding"): instead of adding a learned vector per position to the input, rotate
  every query and key by an angle proportional to its position. The score q·k then
  depends only on the *offset* between the two positions (:func:`apply_rotary`).
* :class:`MLP`: GPT-2's GELU MLP, SwiGLU (Shazeer 2020, "GLU Variants Improve
  Transformer"; Llama) and ReLU² (So et al. 2021, "Primer"; modded-nanogpt, nanochat).

**The RoPE layout.** A head of size D is split into D/2 pairs of coordinates, pair i
rotating at frequency ``theta ** (-2i / D)``. We pair coordinate i with i + D/2
("rotate_half", the layout of Hugging Face's Llama, GPT-NeoX and Qwen), not the
interleaved (2i, 2i+1) of the RoFormer paper and Meta's original Llama code. The two
are the same function up to a fixed permutation of the q/k projection rows; choosing
Hugging Face's layout means weights copy to and from ``LlamaForCausalLM`` /
``Qwen3ForCausalLM`` as they are, with no permutation (interop/llama.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

NORMS = ("layernorm", "rmsnorm")
MLPS = ("gelu", "swiglu", "relu2")


def check_modern_options(c) -> None:
    """Validate chapter 07's GPTConfig options (called by ``GPTConfig.__post_init__``); errors name the fix."""
    for name in ("qk_norm", "tie_embeddings", "zero_init_proj"):
        if not isinstance(getattr(c, name), bool):
            raise ValueError(f"{name} must be True or False, got {getattr(c, name)!r}")
    if c.norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {c.norm!r}")
    if c.mlp not in MLPS:
        raise ValueError(f"mlp must be one of {MLPS}, got {c.mlp!r}")
    for name in ("norm_eps", "rope_theta", "logit_softcap"):
        value = getattr(c, name)
        if value is None and name != "norm_eps":
            continue
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
            off = "" if name == "norm_eps" else "None (off) or "
            raise ValueError(f"{name} must be {off}a number > 0, got {value!r}")
    if c.n_kv_head is not None and c.n_head % c.n_kv_head:
        divisors = [d for d in range(1, c.n_head + 1) if c.n_head % d == 0]
        raise ValueError(f"n_head ({c.n_head}) must be a multiple of n_kv_head ({c.n_kv_head}): each "
                         f"key/value head serves a whole group of query heads; choose one of {divisors}")
    if c.rope_theta is not None and c.head_dim % 2:
        raise ValueError(f"RoPE rotates pairs of channels, so the head size must be even, got {c.head_dim}: "
                         "change n_embd or n_head (or set head_size)")


class RMSNorm(nn.Module):
    """``x / sqrt(mean(x**2) + eps) * weight`` over the last dimension (no mean, no bias).

    Computed in float32 whatever the input dtype (as Hugging Face's LlamaRMSNorm does),
    because the mean of squares over-/underflows in fp16 and loses digits in bf16.
    ``torch.nn.RMSNorm`` (torch >= 2.4) computes the same; this one also runs on older torch.
    """

    def __init__(self, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., dim) -> (..., dim)
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)

    def extra_repr(self) -> str:
        return f"{self.weight.numel()}, eps={self.eps}"


def make_norm(config, dim: int | None = None) -> nn.Module:
    """The block's normalisation layer: LayerNorm (GPT-2) or RMSNorm (``config.norm``)."""
    dim = config.n_embd if dim is None else dim
    if config.norm == "rmsnorm":
        return RMSNorm(dim, eps=config.norm_eps)
    return nn.LayerNorm(dim, eps=config.norm_eps, bias=config.bias)


# ------------------------------------------------------------------------------ RoPE
def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90 degree turn of each pair (i, i + D/2)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate each pair (i, i + D/2) of ``x`` (..., T, D) by the angles whose cos/sin (T, D) are given.

    A 2-D rotation by angle a maps (u, v) to (u cos a - v sin a, u sin a + v cos a),
    which is exactly ``x * cos + rotate_half(x) * sin`` with both halves of cos/sin
    holding the same angles. Rotating q at position m and k at position n gives
    ``q·k = Re[q̃ conj(k̃) e^{i(m-n)a}]``: only the offset m - n is left.
    """
    return (x * cos + rotate_half(x) * sin).to(x.dtype)


class Rotary(nn.Module):
    """cos/sin tables of the rotary angles for positions 0 .. max_len-1 (no parameters).

    Pair i of a head of size D turns by ``pos * theta ** (-2i / D)``: fast for the first
    pairs (fine position), slow for the last (coarse position). The tables are
    non-persistent buffers: rebuilt from the config, never stored in a checkpoint.
    """

    def __init__(self, head_dim: int, max_len: int, theta: float = 10000.0) -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"RoPE rotates pairs of coordinates: head_dim must be even, got {head_dim}")
        self.head_dim, self.max_len, self.theta = head_dim, max_len, float(theta)
        cos, sin = self.tables(head_dim, max_len, theta)
        self.register_buffer("cos", cos, persistent=False)  # (max_len, D)
        self.register_buffer("sin", sin, persistent=False)

    @staticmethod
    def tables(head_dim: int, max_len: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
        """(cos, sin), each (max_len, head_dim) in float32: both halves repeat the D/2 angles."""
        inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32, device=device) / head_dim))
        angles = torch.outer(torch.arange(max_len, dtype=torch.float32, device=device), inv_freq)  # (T, D/2)
        emb = torch.cat((angles, angles), dim=-1)  # (T, D): pair i and i + D/2 share an angle
        return emb.cos(), emb.sin()

    def forward(self, start: int, t: int) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin (t, D) for positions start .. start+t-1."""
        if start + t > self.max_len:
            raise ValueError(f"positions up to {start + t - 1} asked of a rotary table of {self.max_len} "
                             "(block_size): crop the input to block_size tokens")
        return self.cos[start: start + t], self.sin[start: start + t]

    def at(self, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """cos/sin at the given positions: (T, D) for positions (T,); (B, 1, T, D) for per-row positions (B, T),
        ready to broadcast over the heads of q and k (B, H, T, D). The caller keeps positions below
        block_size (GPT.forward and the KV caches check it once per forward)."""
        cos, sin = self.cos[positions], self.sin[positions]
        if positions.dim() == 2:
            cos, sin = cos[:, None], sin[:, None]
        return cos, sin


# ------------------------------------------------------------------------------ MLP
def swiglu_hidden(n_embd: int, multiple_of: int = 8) -> int:
    """SwiGLU's hidden size for the same parameters as GELU's 4C MLP: 2/3 * 4C, rounded up.

    A GELU MLP has two C x 4C matrices (8C² weights); SwiGLU has three C x h, so
    h = 8C/3 keeps the count (Shazeer 2020; Llama's ``int(2 * 4C / 3)``). Llama then
    rounds up to a multiple of 256 for its GPUs; at the course's widths that would
    add up to 40 % more weights, so we round up to a multiple of 8 instead. For
    SmolLM2's C = 576 this gives exactly its 1536.
    """
    h = int(2 * 4 * n_embd / 3)
    return multiple_of * ((h + multiple_of - 1) // multiple_of)


def mlp_hidden_size(config) -> int:
    """The MLP's hidden width: ``config.mlp_hidden`` if set, else 4C (GELU, ReLU²) or :func:`swiglu_hidden`."""
    if config.mlp_hidden is not None:
        return config.mlp_hidden
    return swiglu_hidden(config.n_embd) if config.mlp == "swiglu" else 4 * config.n_embd


class MLP(nn.Module):
    """Position-wise feed-forward: widen, non-linearity, project back. Where most parameters live.

    * ``gelu`` (GPT-2): ``c_proj(gelu(c_fc(x)))``, c_fc: C -> 4C.
    * ``relu2`` (Primer): ``c_proj(relu(c_fc(x))**2)``, the same shapes.
    * ``swiglu`` (Llama): ``c_proj(silu(gate) * up)`` where ``c_fc`` computes [gate; up]
      in one matmul (C -> 2h; Hugging Face's gate_proj and up_proj stacked).
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.kind = config.mlp
        hidden = mlp_hidden_size(config)
        fc_out = 2 * hidden if self.kind == "swiglu" else hidden
        self.c_fc = nn.Linear(config.n_embd, fc_out, bias=config.bias)
        # GPT-2 uses the tanh approximation of GELU ("gelu_new" in transformers); matching
        # it is what lets our logits agree with Hugging Face's to fp32 precision.
        self.gelu = nn.GELU(approximate="tanh")
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        h = self.c_fc(x)  # (B, T, hidden) or (B, T, 2 * hidden)
        if self.kind == "swiglu":
            gate, up = h.chunk(2, dim=-1)
            h = F.silu(gate) * up  # the gate decides, per unit, how much of "up" passes
        elif self.kind == "relu2":
            h = F.relu(h).square()
        else:
            h = self.gelu(h)
        return self.dropout(self.c_proj(h))
