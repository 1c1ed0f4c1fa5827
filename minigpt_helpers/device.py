"""Pick a device and a precision, with explicit fallbacks.

CUDA -> Apple MPS -> CPU. On CUDA we use bf16 autocast where the GPU supports it
(Ampere and newer) and fp16 with a gradient scaler otherwise; on CPU we stay in
fp32, because bf16 matmuls on a typical laptop/server CPU without AMX are far
slower than fp32 (measured ~100x slower on the course's 2-core CI machine).
"""

from __future__ import annotations

import contextlib
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]


def default_device(preferred: str | torch.device | None = None) -> torch.device:
    """The best available device, or ``preferred`` if given (checked to exist)."""
    if preferred is not None and str(preferred) != "auto":
        dev = torch.device(preferred)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"device {preferred!r} requested but CUDA is not available; use 'cpu' or 'auto'")
        if dev.type == "mps" and not (torch.backends.mps.is_available()):
            raise ValueError(f"device {preferred!r} requested but MPS is not available; use 'cpu' or 'auto'")
        return dev
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def default_precision(device: torch.device | str) -> Precision:
    """bf16 on CUDA GPUs that support it, fp16 on older CUDA GPUs, fp32 elsewhere."""
    device = torch.device(device)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    return "fp32"


def autocast(device: torch.device | str, precision: Precision):
    """A context manager for mixed precision, or a no-op for fp32."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def peak_flops(device: torch.device | str, precision: Precision = "fp32") -> float | None:
    """Approximate peak dense FLOP/s of the device, for MFU; None when unknown.

    Values are the vendors' dense (non-sparse) numbers; CPU peak is not knowable
    portably, so CPU MFU is reported as unknown rather than guessed.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device).upper()
    table = {  # (bf16/fp16 tensor-core, fp32) dense FLOP/s
        "H200": (989e12, 67e12),
        "H100": (989e12, 67e12),
        "A100": (312e12, 19.5e12),
        "L4": (121e12, 30e12),
        "A10": (125e12, 31e12),
        "T4": (65e12, 8.1e12),
        "V100": (125e12, 15.7e12),
    }
    for key, (half, single) in table.items():
        if key in name:
            return single if precision == "fp32" else half
    return None
