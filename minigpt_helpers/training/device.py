"""Pick a device, a precision and whether to compile, with explicit fallbacks and reasons.

Device: CUDA -> Apple MPS -> CPU.

Precision (:func:`choose_precision`), judged for the GPU actually used:

* CUDA, compute capability >= 8.0 (Ampere, Ada, Hopper, Blackwell): bf16 autocast.
  Native bf16 tensor cores, the range of fp32, no gradient scaler needed.
* CUDA, capability < 8.0 (Colab's T4 is 7.5, V100 is 7.0): fp16 autocast with a
  gradient scaler. ``torch.cuda.is_bf16_supported()`` returns True on these GPUs
  because it counts *emulation* (it only checks that a bf16 tensor can be
  created): bf16 matmuls then run without tensor cores, and ``torch.compile``'s
  Triton kernels fail to compile bf16 code below capability 8.0. So we look at
  the capability ourselves, of the device we were given (``cuda:1`` is judged by
  GPU 1, not by whichever GPU is current).
* CPU: fp32. bf16 matmuls on a CPU without AMX (most laptops and cloud VMs) were
  measured ~100x slower than fp32 on the course's 2-core CI machine.
* MPS: fp32. Autocast on MPS depends on the macOS and torch versions (bf16 needs
  macOS 14, fp16 needs a gradient scaler that older torch lacks on MPS) and the
  course is not tested with it there; fp32 always works.

Compilation (:func:`choose_compile`): ``torch.compile``'s default backend
(inductor) generates Triton kernels on CUDA, which needs the ``triton`` package and
a GPU of compute capability >= 7.0 (inductor refuses older GPUs with
``GPUTooOldForTriton``), and bf16 only compiles from capability 8.0 on. It is on by
default where it works on CUDA; off by default on CPU (no speed-up measured for the
course's models) and on MPS (inductor's MPS backend is experimental).

TF32 (:func:`enable_tf32`): for fp32 training on an Ampere-or-newer GPU, fp32
matmuls may use TF32 tensor cores (10-bit mantissa inputs, fp32 accumulation):
several times faster, and accurate enough for training.
"""

from __future__ import annotations

import contextlib
import importlib.util
import re
from dataclasses import dataclass
from typing import Literal

import torch

Precision = Literal["fp32", "bf16", "fp16"]
PRECISIONS: tuple[str, ...] = ("auto", "fp32", "bf16", "fp16")
#: bf16 tensor cores (and a bf16 that Triton compiles) start with Ampere
BF16_MIN_CAPABILITY = (8, 0)
#: torch.compile's inductor backend needs Triton, which needs Volta or newer
COMPILE_MIN_CAPABILITY = (7, 0)


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


# ------------------------------------------------------------------------------ CUDA facts
def _cuda_index(device: torch.device) -> int:
    """The GPU index ``device`` refers to (``cuda`` alone means the current GPU)."""
    return device.index if device.index is not None else torch.cuda.current_device()


def _check_cuda(device: torch.device) -> None:
    if not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use 'cpu' or 'auto'")


def cuda_capability(device: torch.device | str) -> tuple[int, int]:
    """Compute capability (major, minor) of the GPU ``device`` refers to, e.g. (7, 5) for a T4."""
    device = torch.device(device)
    major, minor = torch.cuda.get_device_capability(_cuda_index(device))
    return int(major), int(minor)


def _describe(device: torch.device) -> str:
    """E.g. "Tesla T4 (cuda:0, compute capability 7.5)"."""
    index = _cuda_index(device)
    major, minor = cuda_capability(device)
    return f"{torch.cuda.get_device_name(index)} (cuda:{index}, compute capability {major}.{minor})"


def _is_rocm() -> bool:
    return getattr(torch.version, "hip", None) is not None


def _has_triton() -> bool:
    """Whether the ``triton`` package (inductor's GPU code generator) is installed."""
    return importlib.util.find_spec("triton") is not None


# ------------------------------------------------------------------------------ precision
def choose_precision(device: torch.device | str, requested: str = "auto") -> tuple[Precision, str]:
    """(precision, one-sentence reason) for training on ``device``.

    ``requested="auto"`` applies the rules of the module docstring; an explicit
    "fp32" / "bf16" / "fp16" is kept, except bf16 on a CUDA GPU of compute
    capability < 8.0, which raises a ValueError naming the fix (fp16).
    """
    if requested not in PRECISIONS:
        raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {requested!r}")
    device = torch.device(device)
    if device.type == "cuda":
        _check_cuda(device)
        if _is_rocm():  # every GPU that current ROCm supports has bf16; torch says so without emulation
            if requested != "auto":
                return requested, f"{requested} as requested."  # type: ignore[return-value]
            return "bf16", "ROCm GPU: bf16 autocast (native on the AMD GPUs ROCm supports)."
        cap = cuda_capability(device)
        what = _describe(device)
        native_bf16 = cap >= BF16_MIN_CAPABILITY
        if requested == "bf16" and not native_bf16:
            raise ValueError(
                f"bf16 needs CUDA compute capability >= 8.0 (Ampere or newer), but {what} is older: there bf16 "
                "is only emulated (torch.cuda.is_bf16_supported() counts emulation) and torch.compile fails on it; "
                "use precision 'fp16' (--precision fp16, with a gradient scaler) or 'fp32' instead"
            )
        if requested != "auto":
            return requested, f"{requested} as requested on {what}."  # type: ignore[return-value]
        if native_bf16:
            return "bf16", f"{what} has bf16 tensor cores: bf16 autocast, no gradient scaler needed."
        return "fp16", (
            f"{what} has no native bf16 (capability < 8.0; torch.cuda.is_bf16_supported() would count slow "
            "emulation, and torch.compile fails on bf16 there): fp16 autocast with a gradient scaler."
        )
    if requested != "auto":
        note = " (slow: bf16 matmuls on CPUs without AMX were measured ~100x slower than fp32)" \
            if device.type == "cpu" and requested == "bf16" else ""
        return requested, f"{requested} as requested on {device.type}{note}."  # type: ignore[return-value]
    if device.type == "mps":
        return "fp32", ("MPS: fp32, because autocast support on MPS depends on the macOS and torch versions "
                        "and the course is not tested with it there.")
    return "fp32", (f"{device.type}: fp32, because bf16 matmuls on CPUs without AMX were measured ~100x slower "
                    "than fp32.")


def default_precision(device: torch.device | str) -> Precision:
    """bf16 on CUDA GPUs of compute capability >= 8.0, fp16 on older ones, fp32 on CPU and MPS."""
    return choose_precision(device, "auto")[0]


# ------------------------------------------------------------------------------ compile
def choose_compile(device: torch.device | str, precision: str,
                   requested: bool | None = None) -> tuple[bool, str]:
    """(whether to ``torch.compile`` the model, one-sentence reason).

    ``requested=None`` gives the default: on for CUDA where inductor works (Triton
    installed, compute capability >= 7.0, and >= 8.0 for bf16), off on CPU and MPS.
    ``requested=True`` where compilation cannot work raises a ValueError naming the
    fix (``--no-compile``); ``requested=False`` is always honoured.
    """
    device = torch.device(device)
    if requested is False:
        return False, "torch.compile off as requested (--no-compile)."
    if device.type == "cuda":
        _check_cuda(device)
        problem = None
        if not _has_triton():
            problem = ("the `triton` package is not installed (torch.compile's GPU code generator; "
                       "pip install triton, or triton-windows on Windows)")
        elif not _is_rocm():
            cap = cuda_capability(device)
            if cap < COMPILE_MIN_CAPABILITY:
                problem = f"{_describe(device)} is too old for Triton, which needs compute capability >= 7.0"
            elif precision == "bf16" and cap < BF16_MIN_CAPABILITY:
                problem = f"Triton cannot compile bf16 on {_describe(device)} (needs capability >= 8.0); use fp16"
        if problem is not None:
            if requested:
                raise ValueError(f"torch.compile cannot work here: {problem}; train without it (--no-compile, "
                                 "TrainConfig(compile=False))")
            return False, f"torch.compile off: {problem}."
        return True, (f"torch.compile {'as requested' if requested else 'on'}: Triton kernels for "
                      f"{_describe(device) if not _is_rocm() else 'this ROCm GPU'} fuse the elementwise work "
                      "between matmuls.")
    if requested:
        note = ("inductor's MPS backend is experimental" if device.type == "mps"
                else "it needs a C++ compiler and gave no measured speed-up for the course's models on CPU")
        return True, f"torch.compile as requested on {device.type} ({note})."
    if device.type == "mps":
        return False, "torch.compile off on MPS: inductor's MPS backend is experimental (--compile to try it)."
    return False, (f"torch.compile off on {device.type}: no speed-up was measured for the course's models "
                   "(--compile to try it).")


# ------------------------------------------------------------------------------ TF32
def enable_tf32(device: torch.device | str) -> bool:
    """Let fp32 matmuls (and cuDNN convolutions) use TF32 tensor cores on ``device``; True if it did.

    Only CUDA GPUs of compute capability >= 8.0 have TF32, so elsewhere nothing is
    changed and False is returned. The setting is process-wide.

    We call ``torch.set_float32_matmul_precision("high")`` rather than only the
    per-backend ``torch.backends.cuda.matmul.fp32_precision = "tf32"`` of torch >= 2.9:
    setting only the latter makes ``torch.get_float32_matmul_precision()`` raise a
    "mix of the legacy and new APIs" error, and inductor calls it; the former sets
    both consistently (checked on torch 2.13) and works on every torch since 1.12.
    """
    device = torch.device(device)
    if device.type != "cuda" or not torch.cuda.is_available() or _is_rocm():
        return False
    if cuda_capability(device) < BF16_MIN_CAPABILITY:  # TF32 tensor cores arrived with Ampere too
        return False
    torch.set_float32_matmul_precision("high")
    conv = getattr(torch.backends.cudnn, "conv", None)
    if conv is not None and hasattr(conv, "fp32_precision"):  # torch >= 2.9 (already its default)
        conv.fp32_precision = "tf32"
    else:
        torch.backends.cudnn.allow_tf32 = True
    return True


def tf32_enabled() -> bool:
    """Whether fp32 CUDA matmuls currently run in TF32 (read without tripping torch's mixed-API check)."""
    new = getattr(torch.backends.cuda.matmul, "fp32_precision", None)
    if isinstance(new, str) and new in ("tf32", "ieee"):
        return new == "tf32"
    return bool(torch.backends.cuda.matmul.allow_tf32)


def autocast(device: torch.device | str, precision: Precision):
    """A context manager for mixed precision, or a no-op for fp32."""
    device = torch.device(device)
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


# ------------------------------------------------------------------------------ peak FLOP/s
@dataclass(frozen=True)
class GPUPeak:
    """Vendor datasheet peak *dense* (not 2:4-sparse) FLOP/s of one GPU model; None = not available."""

    bf16: float | None  # bf16 tensor cores (None before Ampere: only emulated)
    fp16: float  # fp16 tensor cores (fp32 accumulation)
    tf32: float | None  # fp32 matmuls in TF32 (None before Ampere)
    fp32: float  # plain fp32 (CUDA cores)


# Model -> variant -> peak. A model with several variants (SXM / PCIe / NVL boards
# differ in clocks and power, hence in peak) lists them; "" is the only entry of a
# model whose variants share one figure. Numbers: NVIDIA datasheets, dense.
_PEAKS: dict[str, dict[str, GPUPeak]] = {
    "H100": {"SXM": GPUPeak(989.4e12, 989.4e12, 494.7e12, 66.9e12),
             "NVL": GPUPeak(835.5e12, 835.5e12, 417.5e12, 60.0e12),
             "PCIE": GPUPeak(756.5e12, 756.5e12, 378.0e12, 51.2e12)},
    "H200": {"SXM": GPUPeak(989.4e12, 989.4e12, 494.7e12, 66.9e12),
             "NVL": GPUPeak(835.5e12, 835.5e12, 417.5e12, 60.0e12)},
    "GH200": {"": GPUPeak(989.4e12, 989.4e12, 494.7e12, 66.9e12)},
    "A100": {"": GPUPeak(312e12, 312e12, 156e12, 19.5e12)},  # SXM4 and PCIe, 40 and 80 GB alike
    "A10": {"": GPUPeak(125e12, 125e12, 62.5e12, 31.2e12)},
    "L4": {"": GPUPeak(121e12, 121e12, 60e12, 30.3e12)},
    "L40": {"": GPUPeak(181e12, 181e12, 90.5e12, 90.5e12)},
    "L40S": {"": GPUPeak(362e12, 362e12, 183e12, 91.6e12)},
    "T4": {"": GPUPeak(None, 65e12, None, 8.1e12)},
    "V100": {"SXM": GPUPeak(None, 125e12, None, 15.7e12),
             "PCIE": GPUPeak(None, 112e12, None, 14.0e12)},
    "V100S": {"": GPUPeak(None, 130e12, None, 16.4e12)},
}
# Name tokens that say which board a GPU is. The SXM H100 reports itself as
# "NVIDIA H100 80GB HBM3" (HBM3 memory is SXM-only; the PCIe board has HBM2e).
_VARIANT_TOKENS = {"SXM": "SXM", "SXM2": "SXM", "SXM4": "SXM", "SXM5": "SXM", "HBM3": "SXM", "HBM3E": "SXM",
                   "PCIE": "PCIE", "NVL": "NVL"}


def gpu_model(name: str) -> tuple[str, str] | None:
    """(model, variant) of a GPU name as CUDA reports it, or None for a GPU not in the table.

    The rule is exact, never a substring test: the name is split into tokens on
    spaces, "-" and "_" (``"NVIDIA A100-SXM4-40GB"`` -> NVIDIA, A100, SXM4, 40GB), the
    model is the first token that *equals* a known model (so "L4" is not found in
    "NVIDIA L40S", nor "A10" in "NVIDIA A10G"), and the variant is the first token
    naming a board (SXM*, HBM3 -> "SXM"; PCIE; NVL). When a model's boards differ
    and the name names none, the variant is the fastest one ("SXM"): MFU computed
    against it can only be understated, never overstated.
    """
    tokens = [t for t in re.split(r"[\s\-_]+", name.upper()) if t]
    model = next((t for t in tokens if t in _PEAKS), None)
    if model is None:
        return None
    variants = _PEAKS[model]
    if "" in variants:
        return model, ""
    named = next((_VARIANT_TOKENS[t] for t in tokens if _VARIANT_TOKENS.get(t) in variants), None)
    return model, named or max(variants, key=lambda v: variants[v].fp16)


def peak_flops(device: torch.device | str, precision: Precision = "fp32") -> float | None:
    """Datasheet peak dense FLOP/s of ``device`` in ``precision``, for MFU; None when unknown.

    None (reported as "unknown") rather than a guess for: CPUs and MPS (no portable
    way to know), GPUs not in the table (see :func:`gpu_model` for the exact name
    rule), and bf16 on GPUs without bf16 tensor cores (T4, V100). For "fp32" the
    TF32 figure is used while TF32 matmuls are enabled (see :func:`enable_tf32`).
    ``benchmarks/gpu_check.py`` measures the real matmul peak instead.
    """
    device = torch.device(device)
    if device.type != "cuda":
        return None
    found = gpu_model(torch.cuda.get_device_name(_cuda_index(device)))
    if found is None:
        return None
    peak = _PEAKS[found[0]][found[1]]
    if precision == "bf16":
        return peak.bf16
    if precision == "fp16":
        return peak.fp16
    return peak.tf32 if (peak.tf32 is not None and tf32_enabled()) else peak.fp32
