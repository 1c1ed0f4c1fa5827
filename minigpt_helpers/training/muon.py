"""Muon: orthogonalised momentum for the hidden matrices, AdamW for the rest (chapter 07).

Muon (Keller Jordan et al. 2024, https://kellerjordan.github.io/posts/muon/; used by
modded-nanogpt and nanochat; "Muon is Scalable for LLM Training", Liu et al. 2025)
keeps SGD's momentum M for each 2-D weight matrix but steps along ``orth(M) = U V^T``
(where ``M = U S V^T``) instead of M itself: every singular direction of the update
gets the same size, so the few directions that dominate a gradient no longer crowd
out the rest. ``U V^T`` is computed without an SVD by a few Newton-Schulz iterations
(:func:`zeropower_via_newtonschulz`), which need only matrix products.

Muon is for the *hidden* matrices (attention and MLP weights). Embeddings (lookups,
not linear maps on activations), the output head and the 1-D gains/biases keep
AdamW: the split nanochat and modded-nanogpt use (:func:`hidden_matrices`).

:class:`Muon` is the course's own implementation, written to match
``torch.optim.Muon`` (torch >= 2.9) step for step; tests/test_muon.py checks that.
:func:`make_muon` uses torch's when this torch has it and falls back to ours (with a
warning) otherwise, so torch >= 2.3 keeps working. On a CPU it uses ours with the
Newton-Schulz products in float32: torch's always computes them in bfloat16, which a
CPU without bf16 matrix units runs ~25x slower than float32 (chapter 07 measures it). :class:`MuonAdamW` presents the
pair as one optimizer to ``train()`` (step, zero_grad, state_dict, param_groups).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

# Keller Jordan's quintic coefficients: chosen to make the slope at 0 as steep as possible
# while keeping every singular value in roughly [0.7, 1.2] after 5 steps (not exactly 1:
# close enough, and much faster to reach than the cubic iteration's exact convergence).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
NS_STEPS = 5
TORCH_HAS_MUON = hasattr(torch.optim, "Muon")


def zeropower_via_newtonschulz(g: torch.Tensor, steps: int = NS_STEPS,
                               coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                               eps: float = 1e-7, dtype: torch.dtype = torch.bfloat16) -> torch.Tensor:
    """Approximately ``U V^T`` for ``g = U S V^T`` (2-D), by the quintic Newton-Schulz iteration.

    Scale ``X = g / ||g||_F`` so every singular value is in [0, 1]; then each step
    ``X <- a X + (b A + c A^2) X`` with ``A = X X^T`` maps each singular value s to
    ``p(s) = a s + b s^3 + c s^5`` and leaves U, V alone. Five steps of this p push
    every s > 0 near 1. Works on the wide orientation (rows <= columns) so that A is the
    smaller Gram matrix, and in bfloat16 by default, as Keller Jordan's and torch's do.
    """
    if g.ndim != 2:
        raise ValueError(f"Newton-Schulz orthogonalises a matrix: expected a 2-D tensor, got shape {tuple(g.shape)}")
    a, b, c = coefficients
    x = g.to(dtype)
    tall = g.size(0) > g.size(1)
    if tall:
        x = x.T
    x = x / x.norm().clamp(min=eps)  # spectral norm <= Frobenius norm = 1
    for _ in range(steps):
        gram = x @ x.T  # A = X X^T
        poly = torch.addmm(gram, gram, gram, beta=b, alpha=c)  # b A + c A^2
        x = torch.addmm(x, poly, x, beta=a)  # a X + (b A + c A^2) X
    return x.T if tall else x


def adjusted_lr(lr: float, adjust_lr_fn: str | None, shape: torch.Size) -> float:
    """Muon's per-matrix learning rate, so that updates of rectangular matrices have comparable RMS.

    "original" (Keller Jordan's, the default): ``lr * sqrt(max(1, rows / cols))``.
    "match_rms_adamw" (Moonshot's): ``lr * 0.2 * sqrt(max(rows, cols))``, an update RMS
    like AdamW's, so AdamW's learning rate and weight decay can be reused.
    """
    rows, cols = shape[:2]
    if adjust_lr_fn in (None, "original"):
        return lr * math.sqrt(max(1.0, rows / cols))
    if adjust_lr_fn == "match_rms_adamw":
        return lr * 0.2 * math.sqrt(max(rows, cols))
    raise ValueError(f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}")


class Muon(torch.optim.Optimizer):
    """The course's Muon, with ``torch.optim.Muon``'s arguments, defaults and arithmetic.

    Per matrix W with gradient G, momentum buffer B (starts at 0):
        B <- momentum * B + (1 - momentum) * G
        U <- (1 - momentum) * G + momentum * B   (Nesterov; plain: U <- B)
        W <- W * (1 - lr * weight_decay) - adjusted_lr(lr) * NS(U)
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = NS_STEPS, adjust_lr_fn: str | None = None,
                 ns_dtype: torch.dtype = torch.bfloat16) -> None:
        if not lr >= 0 or not momentum >= 0 or not weight_decay >= 0:
            raise ValueError(f"lr, momentum and weight_decay must be >= 0, got {lr}, {momentum}, {weight_decay}")
        adjusted_lr(1.0, adjust_lr_fn, (1, 1))  # validates the name
        defaults = dict(lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                        ns_coefficients=ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)
        super().__init__(params, defaults)
        # the dtype of the Newton-Schulz products (torch's: always bfloat16). Kept out of the group
        # defaults, so state_dict() stays JSON-friendly and loads into torch.optim.Muon.
        self.ns_dtype = ns_dtype
        for group in self.param_groups:
            for p in group["params"]:
                if p.ndim != 2:
                    raise ValueError(f"Muon only takes 2-D matrices, got a parameter of shape {tuple(p.shape)}: "
                                     "give embeddings, gains and biases to AdamW")

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, mu, wd = group["lr"], group["momentum"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                state = self.state[p]
                if "momentum_buffer" not in state:
                    state["momentum_buffer"] = torch.zeros_like(g, memory_format=torch.preserve_format)
                buf = state["momentum_buffer"]
                buf.lerp_(g, 1 - mu)  # B <- mu B + (1 - mu) G
                update = g.lerp(buf, mu) if group["nesterov"] else buf
                update = zeropower_via_newtonschulz(update, group["ns_steps"], group["ns_coefficients"],
                                                    group["eps"], dtype=self.ns_dtype)
                p.mul_(1 - lr * wd)  # decoupled weight decay
                p.add_(update, alpha=-adjusted_lr(lr, group["adjust_lr_fn"], p.shape))
        return loss


_warned = False


def make_muon(params: Iterable[Any], **kwargs: Any) -> torch.optim.Optimizer:
    """``torch.optim.Muon(params, **kwargs)`` where this torch has it (>= 2.9), else the course's :class:`Muon`.

    Matrices on the CPU get the course's Muon with float32 Newton-Schulz (same update up to
    rounding): torch's bfloat16 products are ~25x slower than float32 on a CPU without bf16
    matrix units, which would make Muon lose any race against the clock there.
    """
    global _warned
    params = [dict(p, params=list(p["params"])) if isinstance(p, dict) else p for p in params]
    tensors = [t for p in params for t in (p["params"] if isinstance(p, dict) else [p])]
    on_cpu = bool(tensors) and all(t.device.type == "cpu" for t in tensors)
    if TORCH_HAS_MUON and not on_cpu:
        return torch.optim.Muon(params, **kwargs)
    if TORCH_HAS_MUON:
        return Muon(params, ns_dtype=torch.float32, **kwargs)
    if not _warned:
        warnings.warn(f"torch {torch.__version__} has no torch.optim.Muon (added in 2.9): using the course's "
                      "own Muon (minigpt_helpers.muon.Muon), which computes the same update", stacklevel=2)
        _warned = True
    return Muon(params, ns_dtype=torch.float32 if on_cpu else torch.bfloat16, **kwargs)


def hidden_matrices(model: nn.Module) -> list[nn.Parameter]:
    """The parameters Muon should own: 2-D weights that multiply activations inside the network.

    Left out (for AdamW): embeddings (lookups; a head tied to one counts as one), the
    output head ``lm_head`` (its rows are per-token, like an embedding's), and every
    1-D parameter (norm gains, biases).
    """
    skip = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    head = getattr(model, "lm_head", None)
    if isinstance(head, nn.Module):
        skip |= {id(p) for p in head.parameters()}
    return [p for p in model.parameters() if p.requires_grad and p.ndim == 2 and id(p) not in skip]


class MuonAdamW:
    """Muon for the hidden matrices and AdamW for the rest, behind one optimizer's interface.

    ``train()`` treats it like any optimizer: ``step()``, ``zero_grad()``, ``state_dict()``
    / ``load_state_dict()`` (one dict: Muon's entries first, then AdamW's, each group
    tagged with its ``"optimizer"``, so a checkpoint stores it like AdamW's), and
    ``param_groups``, a list of both optimizers' group dicts (``GradScaler.unscale_``
    reads the gradients through it).

    The learning-rate schedule sets one ``lr`` for every group (AdamW's scale). Muon's
    groups carry ``lr_scale = muon_lr / lr`` and are stepped at ``lr * lr_scale``, so
    warmup and cosine decay apply to both optimizers in proportion.
    """

    def __init__(self, muon: torch.optim.Optimizer, adamw: torch.optim.Optimizer, lr_scale: float) -> None:
        self.muon, self.adamw = muon, adamw
        for g in muon.param_groups:
            g.setdefault("lr_scale", lr_scale)
            g["optimizer"] = "muon"
        for g in adamw.param_groups:
            g["optimizer"] = "adamw"

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return self.muon.param_groups + self.adamw.param_groups

    @property
    def state(self) -> dict:
        return {**self.muon.state, **self.adamw.state}

    @torch.no_grad()
    def step(self) -> None:
        """One update of every parameter: Muon's at ``lr * lr_scale``, then AdamW's at ``lr``."""
        base = [g["lr"] for g in self.muon.param_groups]
        try:
            for g in self.muon.param_groups:
                g["lr"] = g["lr"] * g["lr_scale"]
            self.muon.step()
        finally:
            for g, lr in zip(self.muon.param_groups, base):
                g["lr"] = lr
        self.adamw.step()

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.muon.zero_grad(set_to_none=set_to_none)
        self.adamw.zero_grad(set_to_none=set_to_none)

    def _n_muon(self) -> int:
        return sum(len(g["params"]) for g in self.muon.param_groups)

    def state_dict(self) -> dict[str, Any]:
        m, a = self.muon.state_dict(), self.adamw.state_dict()
        n = self._n_muon()
        groups = m["param_groups"] + [dict(g, params=[i + n for i in g["params"]]) for g in a["param_groups"]]
        return {"state": {**m["state"], **{i + n: s for i, s in a["state"].items()}}, "param_groups": groups}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        groups = state_dict["param_groups"]
        kinds = [g.get("optimizer") for g in groups]
        if kinds != [g["optimizer"] for g in self.param_groups]:
            raise ValueError(f"this optimizer state has groups {kinds}, not Muon + AdamW's "
                             f"{[g['optimizer'] for g in self.param_groups]}: it was saved with another "
                             "TrainConfig.optimizer; resume with the same optimizer (or start a new run)")
        n = self._n_muon()
        state = {int(i): s for i, s in state_dict["state"].items()}
        k = len(self.muon.param_groups)
        self.muon.load_state_dict({"state": {i: s for i, s in state.items() if i < n}, "param_groups": groups[:k]})
        self.adamw.load_state_dict({"state": {i - n: s for i, s in state.items() if i >= n},
                                    "param_groups": [dict(g, params=[i - n for i in g["params"]]) for g in groups[k:]]})

    def __repr__(self) -> str:
        return f"MuonAdamW(muon={type(self.muon).__module__}.{type(self.muon).__name__}, adamw={self.adamw!r})"
