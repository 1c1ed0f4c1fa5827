"""Training the GPT on a stream of text: one ``train()`` for the notebook, the CLI and multi-GPU.

What happens in one optimizer step (the same as nanoGPT's train.py, in a function):

1. ``grad_accum`` micro-batches: forward under autocast (bf16 on recent GPUs,
   fp16 + gradient scaler on older ones, fp32 on CPU), backward;
2. clip the gradient norm to ``grad_clip``;
3. AdamW step with the learning rate of :func:`lr_at` (linear warmup, then
   cosine decay to ``min_lr``), weight decay only on matrices that multiply
   activations (not on biases, LayerNorms or embeddings).

Around it: validation every ``eval_interval`` steps on a fixed held-out set,
checkpoints every ``checkpoint_every`` steps (atomic, see checkpoint.py), a
progress bar / live plot / log lines (live.py), a clean stop on Ctrl-C, on a
non-finite loss, or when the wall-clock budget ``time_budget_s`` is spent.

Launched with ``accelerate launch`` (or ``torchrun``) on several processes it
runs data-parallel: every process holds a replica, reads its own disjoint rows
of each global batch, and DDP averages the gradients, so the replicas stay
identical; only rank 0 writes checkpoints and logs.
"""

from __future__ import annotations

import contextlib
import math
import os
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .batching import StreamPosition, train_batches, val_windows
from .checkpoint import find_checkpoint, load_training_state, save_checkpoint, set_rng_state
from .config import artifacts_dir, pick, set_seed
from .device import autocast, default_device, default_precision, peak_flops
from .live import Monitor


@dataclass
class TrainConfig:
    """How to train (the model's shape is its GPTConfig). Defaults: nanoGPT's CPU recipe.

    Stop after ``max_steps`` optimizer steps or ``time_budget_s`` seconds, whichever
    comes first; with only a time budget the cosine schedule spans the budget.
    """

    batch_size: int = 12  # sequences per micro-batch, per process
    grad_accum: int = 1  # micro-batches per optimizer step
    max_steps: int | None = 2000
    time_budget_s: float | None = None
    lr: float = 1e-3  # peak learning rate, reached after warmup
    min_lr: float = 1e-4  # end of the cosine decay
    warmup_steps: int = 100
    weight_decay: float = 0.1
    beta1: float = 0.9
    beta2: float = 0.99
    grad_clip: float = 1.0  # max global gradient norm; 0 disables clipping
    eval_interval: int = 250  # steps between validation losses (and at the end)
    eval_windows: int = 200  # held-out windows scored at each evaluation
    checkpoint_every: int | None = None  # steps between checkpoints (always one at the end)
    log_interval: int = 100  # steps between log lines on a terminal
    shuffle_windows: int = 1024  # windows shuffled together (see batching.py)
    seed: int = 1337
    device: str = "auto"  # "auto" = CUDA -> MPS -> CPU
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16"
    compile: bool | None = None  # torch.compile; None = on CUDA only (no gain measured on CPU)
    num_threads: int | None = None  # torch CPU threads; None = torch's default

    def __post_init__(self) -> None:
        if self.max_steps is None and self.time_budget_s is None:
            raise ValueError("give max_steps or time_budget_s (or both): e.g. TrainConfig(time_budget_s=300)")
        for name in ("batch_size", "grad_accum"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.precision not in ("auto", "fp32", "bf16", "fp16"):
            raise ValueError(f"precision must be 'auto', 'fp32', 'bf16' or 'fp16', got {self.precision!r}")
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})


# A preset is a named, documented model shape + training settings. The CPU one is
# tuned in benchmarks/bench_training.py against nanoGPT's CPU recipe.
PRESETS: dict[str, dict[str, Any]] = {
    "cpu": {
        "doc": "Recommended on a laptop CPU: 2 layers x 128 wide, context 64, no dropout, batch 16, "
               "lr 3e-3, shuffled over the whole of a small corpus. On a CPU time goes into FLOPs, so a "
               "shallower model trained on more tokens learns faster per second than nanoGPT's 4-layer "
               "one: on char-level Tiny Shakespeare it reaches nanoGPT's CPU-recipe validation loss (1.90) "
               "in about a third of the time (benchmarks/bench_training.py, BENCHMARKS.md).",
        "model": dict(n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False),
        "train": dict(batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=30, max_steps=1200,
                      weight_decay=0.1, beta2=0.99, eval_interval=100, eval_windows=200,
                      shuffle_windows=16384),
    },
    "gpu": {
        "doc": "One GPU: nanoGPT's Shakespeare model (6 layers x 384 wide, context 256, dropout 0.2), "
               "bf16/fp16 autocast, torch.compile; a few minutes on a recent GPU.",
        "model": dict(n_layer=6, n_head=6, n_embd=384, block_size=256, dropout=0.2, bias=False),
        "train": dict(batch_size=64, lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=5000,
                      beta2=0.99, eval_interval=250, eval_windows=1000, shuffle_windows=8192),
    },
    "tiny": {
        "doc": "Seconds on any CPU: for tests and quick mode (2 layers x 64 wide, context 32).",
        "model": dict(n_layer=2, n_head=2, n_embd=64, block_size=32, dropout=0.0, bias=False),
        "train": dict(batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=10, max_steps=100,
                      eval_interval=50, eval_windows=50, log_interval=20),
    },
}


def recommended_preset(device: str | torch.device | None = None) -> str:
    """"gpu" when training would run on CUDA, else "cpu"."""
    return "gpu" if default_device(device).type == "cuda" else "cpu"


def preset(name: str, vocab_size: int, **overrides: Any):
    """(GPTConfig, TrainConfig) of a preset; ``overrides`` go to whichever config has the field."""
    from .model import GPTConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    m, t = dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])
    model_keys = {f.name for f in fields(GPTConfig)}
    for k, v in overrides.items():
        (m if k in model_keys else t)[k] = v
    return GPTConfig(vocab_size=vocab_size, **m), TrainConfig(**t)


# ------------------------------------------------------------------------------ pieces
def lr_at(step: int, cfg: TrainConfig, progress: float | None = None) -> float:
    """Learning rate for optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then cosine decay from ``lr`` to
    ``min_lr``. ``progress`` in [0, 1] (fraction of the time budget left after
    warmup that is used) replaces step-based progress when training for a
    wall-clock budget.
    """
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / (cfg.warmup_steps + 1)
    if progress is None:
        if cfg.max_steps is None:
            raise ValueError("lr_at needs progress= when training by time budget only")
        span = max(1, cfg.max_steps - cfg.warmup_steps)
        progress = (step - cfg.warmup_steps) / span
    progress = min(max(progress, 0.0), 1.0)
    coeff = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return cfg.min_lr + coeff * (cfg.lr - cfg.min_lr)


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Two AdamW groups: decay for the weight matrices of Linear layers, none for the rest.

    Biases and LayerNorm gains are not "sizes" of a function, so shrinking them
    toward 0 only hurts; embeddings are lookup tables whose rows for rare tokens
    would be decayed to nothing. A weight tied to an embedding counts as one.
    """
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, other, seen = [], [], set()
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in no_decay else other).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW over :func:`param_groups`; the fused kernel where this torch has one for ``device``."""
    groups = param_groups(model, cfg.weight_decay)
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        return torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel for this device
        return torch.optim.AdamW(groups, **kw)


@dataclass
class History:
    """Per-step train loss and learning rate, per-evaluation validation loss, with times."""

    steps: list[int] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    lrs: list[float] = field(default_factory=list)
    times: list[float] = field(default_factory=list)  # seconds of training (not eval/checkpoint) so far
    val_steps: list[int] = field(default_factory=list)
    val_losses: list[float] = field(default_factory=list)
    val_times: list[float] = field(default_factory=list)

    def to_dict(self) -> dict[str, list]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, list]) -> History:
        return cls(**{k: list(d.get(k, [])) for k in (f.name for f in fields(cls))})


@dataclass
class TrainResult:
    """What :func:`train` returns: the trained model and how it went."""

    model: nn.Module
    history: History
    step: int
    stop_reason: str  # "done" | "time budget" | "interrupted" | "callback" | "non-finite loss"
    checkpoint: Path | None = None
    tokens: int = 0
    train_time_s: float = 0.0

    @property
    def final_val_loss(self) -> float | None:
        return self.history.val_losses[-1] if self.history.val_losses else None


def _dist() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def _docs_from(data: Any, split: str, seed: int, shuffle: bool):
    """A source name/path -> stream_documents; anything else (list, dataset) as is."""
    if isinstance(data, (str, os.PathLike)):
        from .data import stream_documents

        return stream_documents(str(data), split=split, shuffle=shuffle, seed=seed, verbose=False)
    return data


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device,
             precision: str = "fp32") -> float:
    """Mean next-token loss over fixed windows ``(N, T+1)`` (dropout off during it)."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(windows), batch_size):
        w = windows[i: i + batch_size].to(device)
        with autocast(device, precision):
            _, loss = model(w[:, :-1], w[:, 1:])
        total += loss.item() * len(w)
        count += len(w)
    model.train(was_training)
    return total / count


class _StopFlag:
    """First Ctrl-C (SIGINT) asks the loop to stop after the current step; a second one interrupts."""

    def __init__(self) -> None:
        self.requested = False
        self._old = None

    def __enter__(self) -> _StopFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)

            def handler(signum, frame):
                if self.requested:
                    raise KeyboardInterrupt
                self.requested = True

            signal.signal(signal.SIGINT, handler)
        return self

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


# ------------------------------------------------------------------------------ the loop
def train(model: nn.Module, data: Any = "auto", cfg: TrainConfig | None = None, *, val_data: Any = None,
          out_dir: str | Path | None = None, resume: bool = False, live: str = "auto",
          callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train ``model`` (a GPT with ``model.tokenizer`` set) on ``data``; returns a :class:`TrainResult`.

    data: a source for ``stream_documents`` ("auto", "shakespeare", a path...),
        whose validation split is then used for ``val_data``; or a list of
        strings / a datasets.IterableDataset (then pass ``val_data`` yourself).
    out_dir: where checkpoints go (every ``cfg.checkpoint_every`` steps, at the
        end, and on Ctrl-C). ``resume=True`` continues from the newest one there.
    live: "auto" (live plot in Jupyter, log lines elsewhere), "notebook", "log", "off".
    callback: called after every step (after that step's evaluation, if any) with a
        dict (step, loss, lr, tokens, train_time, model, history); returning True
        stops training cleanly, like Ctrl-C.
    """
    cfg = cfg or TrainConfig()
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the data should be encoded with, "
                         "e.g. model.tokenizer = default_tokenizer()")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
                         "build the model with GPTConfig(vocab_size=tokenizer.vocab_size, ...)")
    rank, world, local_rank = _dist()
    if world > 1:
        from accelerate import PartialState

        device = PartialState(cpu=cfg.device == "cpu").device  # initialises the process group (nccl/gloo)
    else:
        device = default_device(cfg.device)
    precision = default_precision(device) if cfg.precision == "auto" else cfg.precision
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    main = rank == 0
    block = model.config.block_size

    # --- state: fresh, or from the newest checkpoint in out_dir
    set_seed(cfg.seed + rank)
    step, elapsed, train_time, tokens, position, history = 0, 0.0, 0.0, 0, None, History()
    t_warm: float | None = None  # elapsed seconds when warmup ended (time-budget schedule)
    model.to(device)
    optimizer = make_optimizer(model, cfg, device)
    saved = load_training_state(out_dir) if (resume and out_dir is not None) else None
    if resume and saved is None and main:
        print(f"[minigpt] resume: no checkpoint in {out_dir}; starting from step 0")
    if saved is not None:
        ckpt, st, optim_sd, rng = saved
        from safetensors.torch import load_model

        load_model(model, str(ckpt / "model.safetensors"), strict=True, device=str(device))
        optimizer.load_state_dict(optim_sd)
        step, elapsed, train_time, tokens = st["step"], st["elapsed"], st["train_time"], st["tokens"]
        t_warm = st.get("t_warm")
        position, history = StreamPosition.from_dict(st["position"]), History.from_dict(st["history"])
        set_rng_state(rng, st["rng"])  # rank 0's states (only rank 0 saves): matters for dropout only
        if main:
            print(f"[minigpt] resumed from {ckpt} at step {step}")

    # --- data
    train_docs = _docs_from(data, "train", cfg.seed, shuffle=True)
    if val_data is None and isinstance(data, (str, os.PathLike)):
        val_data = _docs_from(data, "validation", cfg.seed, shuffle=False)
    val = val_windows(val_data, tok, block, cfg.eval_windows) if val_data is not None else None
    batches = train_batches(train_docs, tok, block, cfg.batch_size, shuffle_windows=cfg.shuffle_windows,
                            seed=cfg.seed, position=position, rank=rank, world_size=world, device=device)

    # --- the model that runs the steps: DDP replica and/or compiled
    runner: nn.Module = model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(model, device_ids=[device.index] if device.type == "cuda" else None)
    use_compile = cfg.compile if cfg.compile is not None else device.type == "cuda"
    if use_compile:
        runner = torch.compile(runner)
    scaler = torch.amp.GradScaler(device.type) if precision == "fp16" else None
    if scaler is not None and saved is not None and saved[1].get("scaler"):
        scaler.load_state_dict(saved[1]["scaler"])

    tokens_per_step = cfg.batch_size * block * cfg.grad_accum * world
    peak = peak_flops(device, precision)
    flops_tok = model.flops_per_token() if hasattr(model, "flops_per_token") else None
    monitor = Monitor(live if main else "off", total=cfg.max_steps, initial=step, log_interval=cfg.log_interval)

    def checkpoint() -> Path | None:
        if out_dir is None or not main:
            return None
        state = dict(elapsed=elapsed, train_time=train_time, tokens=tokens, position=batches.position().to_dict(),
                     history=history.to_dict(), train_config=cfg.to_dict(), world_size=world,
                     scaler=scaler.state_dict() if scaler is not None else None, t_warm=t_warm)
        return save_checkpoint(out_dir, model, step=step, optimizer=optimizer, trainer=state)

    def run_eval() -> None:
        if val is None:
            return
        v = evaluate(model, val, cfg.batch_size, device, precision)
        history.val_steps.append(step)
        history.val_losses.append(v)
        history.val_times.append(train_time)
        monitor.evaluated(history, step=step, val_loss=v)

    model.train()
    stop_reason, last_ckpt = "done", None
    t_session = time.perf_counter()
    elapsed0 = elapsed
    if not history.val_steps or history.val_steps[-1] != step:
        run_eval()  # step 0: the loss of an untrained model, ~ln(vocab_size)
    with _StopFlag() as stop:
        try:
            while True:
                elapsed = elapsed0 + time.perf_counter() - t_session
                if cfg.max_steps is not None and step >= cfg.max_steps:
                    break
                if cfg.time_budget_s is not None and elapsed >= cfg.time_budget_s:
                    stop_reason = "time budget"
                    break
                if step >= cfg.warmup_steps and t_warm is None:
                    t_warm = elapsed  # the cosine spans the budget left after warmup
                progress = None
                if cfg.max_steps is None:
                    progress = (elapsed - t_warm) / max(cfg.time_budget_s - t_warm, 1e-9) if t_warm is not None else 0.0
                lr = lr_at(step, cfg, progress)
                t0 = time.perf_counter()
                for g in optimizer.param_groups:
                    g["lr"] = lr
                loss_sum = None
                for micro in range(cfg.grad_accum):
                    x, y = next(batches)  # (B, T) each
                    sync = micro == cfg.grad_accum - 1
                    ctx = runner.no_sync() if (world > 1 and not sync and hasattr(runner, "no_sync")) else contextlib.nullcontext()
                    with ctx:
                        with autocast(device, precision):
                            _, loss = runner(x, y)
                        if cfg.grad_accum > 1:
                            loss = loss / cfg.grad_accum
                        (scaler.scale(loss) if scaler else loss).backward()
                    loss_sum = loss.detach() if loss_sum is None else loss_sum + loss.detach()
                if world > 1:
                    torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.AVG)
                loss_val = loss_sum.item()  # the loss at every iteration (a host sync: cheap next to a step)
                if not math.isfinite(loss_val):
                    optimizer.zero_grad(set_to_none=True)
                    stop_reason = "non-finite loss"
                    monitor.message(
                        f"[minigpt] step {step + 1}: the loss is {loss_val}; stopping without saving. "
                        f"The last good checkpoint ({find_checkpoint(out_dir) if out_dir else 'none'}) is kept. "
                        "Usual fixes: a lower learning rate (lr), more warmup, gradient clipping, or fp32.")
                    break
                if scaler:
                    scaler.unscale_(optimizer)
                if cfg.grad_clip:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                dt = time.perf_counter() - t0
                step += 1
                train_time += dt
                tokens += tokens_per_step
                history.steps.append(step)
                history.losses.append(loss_val)
                history.lrs.append(lr)
                history.times.append(train_time)
                tok_s = tokens_per_step / max(dt, 1e-9)
                mfu = flops_tok * tok_s / peak if (peak and flops_tok) else None
                monitor.step(history, step=step, loss=loss_val, lr=lr, tok_s=tok_s, mfu=mfu, total=cfg.max_steps)
                last = cfg.max_steps is not None and step >= cfg.max_steps
                if step % cfg.eval_interval == 0 or last:
                    run_eval()
                if cfg.checkpoint_every and step % cfg.checkpoint_every == 0 and not last:
                    last_ckpt = checkpoint() or last_ckpt
                if callback is not None and callback(dict(step=step, loss=loss_val, lr=lr, tokens=tokens,
                                                          train_time=train_time, model=model, history=history)):
                    stop_reason = "callback"
                    break
                if stop.requested:
                    stop_reason = "interrupted"
                    break
        except KeyboardInterrupt:
            stop_reason = "interrupted"
        elapsed = elapsed0 + time.perf_counter() - t_session
        if stop_reason != "non-finite loss":
            if stop_reason != "done" and (not history.val_steps or history.val_steps[-1] != step):
                run_eval()
            last_ckpt = checkpoint() or last_ckpt
    if stop_reason == "interrupted":
        monitor.message(f"[minigpt] interrupted at step {step}: model, curves"
                        f"{' and checkpoint ' + str(last_ckpt) if last_ckpt else ''} kept")
    monitor.close(history)
    if world > 1:
        diff = replica_difference(model)
        if main:
            print(f"[minigpt] {world} replicas identical: {'yes' if diff == 0 else 'NO'} (max |difference| {diff:g})")
        if diff > 0:
            raise RuntimeError(f"data-parallel replicas diverged (max |difference| {diff:g}): "
                               "this is a bug; please report it with your command line")
    model.eval()
    return TrainResult(model, history, step, stop_reason, last_ckpt, tokens, train_time)


def replica_difference(model: nn.Module) -> float:
    """Largest |difference| between this process's weights and rank 0's (0.0 when in sync).

    DDP averages gradients, so every replica applies the same update and the
    weights should stay bit-identical; this checks it (one broadcast of the model).
    """
    import torch.distributed as dist

    flat = torch.cat([p.detach().reshape(-1).float() for p in model.parameters()])
    ref = flat.clone()
    dist.broadcast(ref, src=0)
    diff = (flat - ref).abs().max().reshape(1)
    dist.all_reduce(diff, op=dist.ReduceOp.MAX)
    return float(diff.item())


# ------------------------------------------------------------------------------ chapter 06's entry point
def get_trained_model(verbose: bool = True):
    """The model chapter 05 trained (from ``artifacts_dir("ch05")``), or a quickly trained one.

    If chapter 05 has not been run, trains a small model on the offline
    Shakespeare corpus with the default tokenizer (about a minute in quick mode,
    a few minutes otherwise), saves it there, and says which happened.
    """
    from .checkpoint import load_checkpoint
    from .model import GPT
    from .tokenizer import default_tokenizer

    out = artifacts_dir("ch05")
    if find_checkpoint(out) is not None:
        model = load_checkpoint(out)
        if verbose:
            print(f"get_trained_model: loaded chapter 05's model from {find_checkpoint(out)}")
        return model
    tok = default_tokenizer(verbose=verbose)
    name = pick(full="cpu", quick="tiny")
    steps = pick(full=1500, quick=150)
    if verbose:
        print(f"get_trained_model: no checkpoint in {out}; training preset {name!r} for {steps} steps "
              "on the offline Shakespeare corpus ...")
    mcfg, tcfg = preset(name, tok.vocab_size, max_steps=steps, eval_interval=steps)
    set_seed(tcfg.seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    result = train(model, "shakespeare", tcfg, out_dir=out, live="off")
    if verbose:
        print(f"get_trained_model: trained in {result.train_time_s:.0f} s, validation loss "
              f"{result.final_val_loss:.3f}; saved to {result.checkpoint}")
    return result.model
