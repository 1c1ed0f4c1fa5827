"""int8 weight-only quantization (chapter 11): the same GPT in about a quarter of the bytes.

A trained weight matrix W (out, in) is stored as 8-bit integers q and one float scale per
row (output channel), ``W ≈ q * scale[:, None]``:

    scale_i = max_j |W_ij| / 127        (a row of zeros gets scale 1)
    q_ij    = round(W_ij / scale_i)      in [-127, 127], as torch.int8

Rounding moves each weight by at most half a step, ``|W_ij - q_ij scale_i| <= scale_i / 2``,
so the error of an output ``y_i = sum_j W_ij x_j`` is at most ``scale_i / 2 * sum_j |x_j|``.

**Why one scale per row, not one per matrix.** With a single scale for the whole matrix
(per-tensor), the largest weight anywhere sets the step for every weight: one row with an
outlier (trained models have them) makes the step coarse for all the others, whose small
weights then round to a handful of levels, many to zero. A scale per output channel lets
each row use all 255 levels for its own range, and costs one float per row (4 bytes per
``in`` int8 weights: 6 % at in = 64, 0.5 % at in = 768).

**Why symmetric.** Weights are centred on zero, so the grid ``{-127 .. 127} * scale`` fits
them without an offset (a "zero point"), and dequantising is one multiply. We give up one
of int8's 256 values (-128) to keep the grid symmetric, so ``W`` and ``-W`` quantize alike.

**Why weight-only.** Generating one token for one user (batch 1) multiplies every weight
matrix by a single vector: each weight is read from memory once and used for one
multiply-add. On a CPU, and at batch 1 on a GPU too, decoding is therefore limited by the
bytes read, not by arithmetic, and 1 byte per weight instead of 4 is what matters.
Activations stay in float, which keeps the error small and the code short.

**What it costs here.** :class:`Int8Linear` converts its int8 matrix to float on every
call, then runs an ordinary float matmul and scales the result, ``F.linear(x, q) * scale``
(equal to ``x @ (q * scale)^T``, with the scale applied after the matmul). Without a fused
kernel that reads int8 straight into the multiply, that conversion makes it *slower* than
the fp32 model (it reads the int8 matrix, writes a float copy, then reads that): the saving
is in memory and on disk, not yet in speed. Real int8 inference
uses such kernels: ``torch.ao.quantization.quantize_dynamic`` (tested against this module)
runs fbgemm's int8 matmuls on x86 CPUs and quantizes the activations too, on the fly, to 8
bits per tensor; llama.cpp, bitsandbytes and torchao ship their own for 8 and 4 bits.

Token embeddings are quantized the same way, one scale per row (per token), and a lookup
dequantizes only the rows it reads. When the output head is tied to the embedding (GPT-2),
the embedding's per-row scales are exactly the head's per-output-channel scales, so the two
share one int8 matrix, as the float model shares one float matrix. Norm weights, biases
and RoPE tables stay float: they are vectors, a small fraction of the bytes.

    qmodel = quantize_int8(model)              # a new model; `model` is untouched
    weight_bytes(model) / weight_bytes(qmodel) # about 3.9 for a course-sized GPT
    qmodel.save("ch11_int8"); GPT.load("ch11_int8")  # reloads as int8 (quantization.json)
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "QUANTIZATION_FILE",
    "Int8Embedding",
    "Int8Linear",
    "dequantize_weight",
    "quantization_marker",
    "quantize_int8",
    "quantize_weight",
    "saved_quantization",
    "weight_bytes",
]

QMAX = 127  # the largest int8 level used: the grid is symmetric, {-127 .. 127} * scale
QUANTIZATION_FILE = "quantization.json"  # written by GPT.save beside config.json for a quantized model
METHODS = {"int8": "per-channel symmetric"}  # the methods this module builds, and their schemes


def quantize_weight(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A float matrix (out, in) -> (q int8 (out, in), scale float32 (out,)), one scale per row.

    ``scale_i = max_j |w_ij| / 127`` (1 for a row of zeros, so nothing divides by zero) and
    ``q = round(w / scale[:, None])`` in [-127, 127]: each row's largest weight becomes ±127,
    and every weight moves by at most ``scale_i / 2`` (see :func:`dequantize_weight`).
    """
    if w.dim() != 2 or not w.is_floating_point():
        raise ValueError(f"quantize_weight takes a 2-D float matrix (out, in), got a {w.dim()}-D {w.dtype} tensor: "
                         "pass a Linear's or an Embedding's .weight")
    w = w.detach().float()
    amax = w.abs().amax(dim=1)  # (out,) the largest magnitude in each row
    scale = torch.where(amax > 0, amax / QMAX, torch.ones_like(amax))
    q = torch.round(w / scale[:, None]).clamp(-QMAX, QMAX).to(torch.int8)
    return q, scale


def dequantize_weight(q: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """(q int8 (out, in), scale (out,)) -> the float matrix ``q * scale[:, None]`` they stand for."""
    if q.dim() != 2 or scale.shape != q.shape[:1]:
        raise ValueError(f"q must be (out, in) and scale (out,), got {tuple(q.shape)} and {tuple(scale.shape)}: "
                         "pass the pair quantize_weight returned")
    return q.to(scale.dtype) * scale[:, None]


def _frozen(t: torch.Tensor) -> nn.Parameter:
    """``t`` as a Parameter that takes no gradient (an existing Parameter is kept as it is, so sharing survives)."""
    return t if isinstance(t, nn.Parameter) else nn.Parameter(t, requires_grad=False)


def _check_int8(weight: torch.Tensor, scale: torch.Tensor, what: str, shape: str, scale_shape: str,
                fix: str) -> None:
    """A ValueError naming the fix unless ``weight`` is a 2-D int8 matrix with one scale per row."""
    if weight.dtype != torch.int8 or weight.dim() != 2 or scale.shape != weight.shape[:1]:
        raise ValueError(f"{what} needs an int8 weight {shape} and a scale {scale_shape}, got {weight.dtype} "
                         f"{tuple(weight.shape)} and {tuple(scale.shape)}: use {fix}")


class Int8Linear(nn.Module):
    """A Linear layer whose weight is int8 with one float scale per output channel.

    ``weight`` (out, in) int8 and ``scale`` (out,) float32 are kept as Parameters that take no
    gradient, not as buffers: ``Module.to()`` moves a Parameter in place, so a matrix shared
    with the tied embedding stays one matrix on any device, where buffers would be copied
    module by module and the tie silently lost. ``bias`` (out,) stays float.

    ``forward`` computes ``F.linear(x, q) * scale + bias``: the int8 matrix is converted to
    x's dtype (a full-size float copy, every call), multiplied, and each output channel is
    then scaled. In float16 the unscaled sums can exceed its range (65504): use bfloat16 or float32.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        super().__init__()
        _check_int8(weight, scale, "Int8Linear", "(out, in)", "(out,)", "Int8Linear.from_float(linear)")
        self.out_features, self.in_features = weight.shape
        self.weight = _frozen(weight)
        self.scale = _frozen(scale)
        self.bias = bias if bias is None or isinstance(bias, nn.Parameter) else nn.Parameter(bias)

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        """Quantize an ``nn.Linear`` (its bias is kept, float)."""
        return cls(*quantize_weight(linear.weight), linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = F.linear(x, self.weight.to(x.dtype)) * self.scale.to(x.dtype)  # = x @ (q * scale)^T
        if self.bias is not None:
            y = y + self.bias.to(x.dtype)
        return y

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}, int8"


class Int8Embedding(nn.Module):
    """An embedding table stored as int8 rows, one float scale per row (per token id).

    A lookup reads only the requested rows and dequantizes them: ``q[idx] * scale[idx]``,
    in the scale's dtype. ``weight`` (V, C) int8 and ``scale`` (V,) are Parameters that
    take no gradient (see :class:`Int8Linear`); a tied output head shares both.
    """

    def __init__(self, weight: torch.Tensor, scale: torch.Tensor) -> None:
        super().__init__()
        _check_int8(weight, scale, "Int8Embedding", "(num, dim)", "(num,)", "Int8Embedding.from_float(emb)")
        self.num_embeddings, self.embedding_dim = weight.shape
        self.weight = _frozen(weight)
        self.scale = _frozen(scale)

    @classmethod
    def from_float(cls, embedding: nn.Embedding) -> Int8Embedding:
        """Quantize an ``nn.Embedding``, one scale per row."""
        return cls(*quantize_weight(embedding.weight))

    def forward(self, idx: torch.Tensor) -> torch.Tensor:  # (...) ids -> (..., dim)
        rows = F.embedding(idx, self.weight)  # (..., dim) int8: only the rows asked for
        return rows.to(self.scale.dtype) * self.scale[idx].unsqueeze(-1)

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8"


def quantize_int8(model: nn.Module) -> nn.Module:
    """A new copy of ``model`` with every ``nn.Linear`` and ``nn.Embedding`` stored as int8.

    The float model is left as it is. Each module gets one int8 matrix and per-row scales
    (:func:`quantize_weight`); modules that share a weight (a head tied to the token
    embedding) share the int8 matrix and its scales, so it is stored once. Norms, biases
    and other tensors stay float; ``tokenizer`` and ``config`` are kept, and the copy gets
    the attribute ``quantization = "int8"``, which ``GPT.save`` records so ``GPT.load``
    rebuilds an int8 model.
    """
    if not isinstance(model, nn.Module):
        raise ValueError(f"quantize_int8 takes an nn.Module (a GPT), got {type(model).__name__}")
    if getattr(model, "quantization", None) is not None:
        raise ValueError(f"this model is already quantized ({model.quantization}): quantize the float model instead")
    targets = [m for m in model.modules() if isinstance(m, (nn.Linear, nn.Embedding))]
    if not targets:
        raise ValueError("the model has no nn.Linear or nn.Embedding to quantize: pass the float GPT")
    if any(isinstance(m, nn.Embedding) and m.max_norm is not None for m in targets):
        raise ValueError("an nn.Embedding with max_norm renormalises its rows at every lookup, which an int8 table "
                         "cannot: build it with max_norm=None")
    tokenizer = getattr(model, "tokenizer", None)
    memo = {id(tokenizer): tokenizer} if tokenizer is not None else {}  # the tokenizer is shared, not copied
    qmodel = copy.deepcopy(model, memo)
    int8: dict[int, tuple[nn.Parameter, nn.Parameter]] = {}  # id(float weight) -> its (q, scale)

    def int8_of(weight: torch.Tensor) -> tuple[nn.Parameter, nn.Parameter]:
        """The int8 form of ``weight``, made once however many modules use it (weight tying)."""
        if id(weight) not in int8:
            q, scale = quantize_weight(weight)
            int8[id(weight)] = (_frozen(q), _frozen(scale))
        return int8[id(weight)]

    for parent in list(qmodel.modules()):
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                setattr(parent, name, Int8Linear(*int8_of(child.weight), child.bias))
            elif isinstance(child, nn.Embedding):
                setattr(parent, name, Int8Embedding(*int8_of(child.weight)))
    qmodel.quantization = "int8"
    return qmodel


def weight_bytes(model: nn.Module) -> int:
    """Bytes of the model's parameters and persistent buffers (what a checkpoint stores), each tensor once.

    A tensor shared by several modules (a tied embedding and head) is counted once;
    non-persistent buffers (the RoPE tables, rebuilt from the config) are not counted.
    """
    seen: set = set()
    total = 0
    for t in model.state_dict(keep_vars=True).values():
        if t.device.type == "meta" or t.numel() == 0:
            key = ("id", id(t))  # no storage to compare: the same object is the same tensor
        else:
            key = (t.device, t.untyped_storage().data_ptr(), t.storage_offset(), t.dtype, tuple(t.shape), t.stride())
        if key not in seen:
            seen.add(key)
            total += t.numel() * t.element_size()
    return total


def quantization_marker(model: nn.Module) -> dict | None:
    """What ``GPT.save`` writes to ``quantization.json``: ``{"method": "int8", "scheme": ...}``, or None for a float model."""
    method = getattr(model, "quantization", None)
    if method is None:
        return None
    if method not in METHODS:
        raise ValueError(f"model.quantization is {method!r}, which cannot be saved: the methods are {sorted(METHODS)}")
    return {"method": method, "scheme": METHODS[method]}


def saved_quantization(directory: str | Path) -> str | None:
    """The method a checkpoint folder's ``quantization.json`` names ("int8"), or None when there is none (float).

    A file that is not JSON, or names a method this module does not build, raises a ValueError
    naming the file (``GPT.check_saved`` adds what to do about the folder).
    """
    path = Path(directory) / QUANTIZATION_FILE
    if not path.is_file():
        return None
    try:
        marker = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:  # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors
        raise ValueError(f"{path} is not valid JSON ({e}): the checkpoint is damaged") from None
    method = marker.get("method") if isinstance(marker, dict) else None
    if method not in METHODS:
        raise ValueError(f"{path} names the quantization method {method!r}; this code loads {sorted(METHODS)}")
    return method
