"""How to train, as data: ``TrainConfig`` (every field checked), the named presets, the schedule.

Kept apart from the loop in loop.py so that each file reads in one sitting:
this one says *what* a run does (batch, learning rate, when to evaluate and
checkpoint), loop.py *how*.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch

from .device import default_device


def _valid_device(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if value == "auto":
        return True
    try:
        torch.device(value)
    except (RuntimeError, ValueError):
        return False
    return True


# Every TrainConfig field: (check, what a valid value is). Checked in __post_init__,
# so a bad setting fails when the config is made, with a message naming the range.
def _int(lo: int) -> Callable[[Any], bool]:
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= lo


def _num(lo: float, hi: float = math.inf, lo_open: bool = False, hi_open: bool = False) -> Callable[[Any], bool]:
    def ok(v: Any) -> bool:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
            return False
        return (v > lo if lo_open else v >= lo) and (v < hi if hi_open else v <= hi)
    return ok


def _optional(check: Callable[[Any], bool]) -> Callable[[Any], bool]:
    return lambda v: v is None or check(v)


# The experiment trackers train() can log to (trackers.py), each through accelerate's tracker class.
TRACKERS = ("tensorboard", "trackio", "wandb")


def _trackers(v: Any) -> bool:
    """None, one tracker name, or a list of them."""
    names = [v] if isinstance(v, str) else v
    return v is None or (isinstance(names, (list, tuple)) and all(n in TRACKERS for n in names))


def _name(v: Any) -> bool:
    """A non-empty name that is also a folder name (no path separators)."""
    return isinstance(v, str) and v.strip() == v and v not in ("", ".", "..") and not any(c in v for c in "/\\")


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "batch_size": (_int(1), "an integer >= 1"),
    "grad_accum": (_int(1), "an integer >= 1"),
    "max_steps": (_optional(_int(1)), "None or an integer >= 1"),
    "time_budget_s": (_optional(_num(0, lo_open=True)), "None or a number of seconds > 0"),
    "lr": (_num(0, lo_open=True), "a finite number > 0"),
    "min_lr": (_num(0), "a finite number >= 0"),
    "warmup_steps": (_int(0), "an integer >= 0"),
    "weight_decay": (_num(0), "a finite number >= 0"),
    "beta1": (_num(0, 1, hi_open=True), "a number in [0, 1)"),
    "beta2": (_num(0, 1, hi_open=True), "a number in [0, 1)"),
    "grad_clip": (_num(0), "a finite number >= 0 (0 disables clipping)"),
    "eval_interval": (_int(1), "an integer >= 1"),
    "eval_windows": (_int(1), "an integer >= 1"),
    "checkpoint_every": (_optional(_int(1)), "None (at every evaluation) or an integer >= 1"),
    "log_interval": (_int(1), "an integer >= 1"),
    "shuffle_windows": (_int(1), "an integer >= 1"),
    "seed": (_int(0), "an integer >= 0"),
    "device": (_valid_device, "'auto' or a torch device such as 'cpu', 'cuda', 'cuda:1', 'mps'"),
    "precision": (lambda v: v in ("auto", "fp32", "bf16", "fp16"), "'auto', 'fp32', 'bf16' or 'fp16'"),
    "compile": (lambda v: v is None or isinstance(v, bool), "None (on CUDA only), True or False"),
    "num_threads": (_optional(_int(1)), "None or an integer >= 1"),
    "optimizer": (lambda v: v in ("adamw", "muon"), "'adamw' or 'muon' (Muon for hidden matrices + AdamW)"),
    "muon_lr": (_num(0, lo_open=True), "a finite number > 0"),
    "muon_momentum": (_num(0, 1, hi_open=True), "a number in [0, 1)"),
    "muon_weight_decay": (_num(0), "a finite number >= 0"),
    "data_workers": (lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64,
                     "0 (in the training process), 1 (one background process) or 2..64 (tokenizing processes)"),
    "log_with": (_trackers, f"None, {', '.join(map(repr, TRACKERS))} or a list of them"),
    "project": (_name, "a non-empty name without a path separator ('/' or '\\')"),
    "run_name": (_optional(_name), "None or a non-empty name without a path separator ('/' or '\\')"),
}


@dataclass
class TrainConfig:
    """How to train (the model's shape is its GPTConfig). Defaults: nanoGPT's CPU recipe.

    Stop after ``max_steps`` optimizer steps or ``time_budget_s`` seconds, whichever
    comes first; with only a time budget the cosine schedule spans the budget.
    Every field is checked when the config is made: a bad value raises a
    ``ValueError`` that names the valid range.
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
    # Steps between checkpoints; None = at every evaluation, so a crash or a lost
    # Colab session costs at most eval_interval steps. There is always one at the end.
    checkpoint_every: int | None = None
    log_interval: int = 100  # steps between log lines on a terminal
    shuffle_windows: int = 1024  # windows shuffled together (see batching.py)
    seed: int = 1337
    device: str = "auto"  # "auto" = CUDA -> MPS -> CPU
    precision: str = "auto"  # "auto" | "fp32" | "bf16" | "fp16" (see device.choose_precision)
    compile: bool | None = None  # torch.compile; None = where it works and helps (see device.choose_compile)
    num_threads: int | None = None  # torch CPU threads; None = torch's default
    # "adamw", or "muon": Muon for the hidden matrices, AdamW (lr, betas, weight_decay) for embeddings,
    # head and gains (muon.py). Muon's learning rate follows the same schedule, scaled by muon_lr / lr.
    optimizer: str = "adamw"
    muon_lr: float = 0.02  # Muon's peak learning rate (Keller Jordan's and nanochat's 0.02)
    muon_momentum: float = 0.95
    muon_weight_decay: float = 0.0  # decoupled, times Muon's lr (Keller Jordan's Muon: 0)
    data_workers: int = 1  # 1: batches made in a background process; n >= 2: n processes tokenize; 0: in the loop
    # Experiment trackers (trackers.py): rank 0 logs both configs once, then each step's loss, lr and tokens/s
    # and each validation loss, to out_dir/runs/<run_name> (artifacts/runs/<run_name> without an out_dir).
    log_with: str | list[str] | None = None  # None, "tensorboard", "trackio", "wandb", or a list of them
    project: str = "minigpt"  # the wandb / trackio project
    run_name: str | None = None  # None: the out_dir's folder name, else the time the run started

    def __post_init__(self) -> None:
        for name, (ok, valid) in _RULES.items():
            value = getattr(self, name)
            if not ok(value):
                raise ValueError(f"TrainConfig.{name} must be {valid}, got {value!r}")
        if self.max_steps is None and self.time_budget_s is None:
            raise ValueError("give max_steps or time_budget_s (or both): e.g. TrainConfig(time_budget_s=300)")
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
               "in a fraction of the time (measured by benchmarks/bench_training.py: BENCHMARKS.md).",
        "model": dict(n_layer=2, n_head=4, n_embd=128, block_size=64, dropout=0.0, bias=False),
        "train": dict(batch_size=16, lr=3e-3, min_lr=3e-4, warmup_steps=30, max_steps=1200,
                      weight_decay=0.1, beta2=0.99, eval_interval=100, eval_windows=200,
                      shuffle_windows=16384),
    },
    "cpu-modern": {
        "doc": "The CPU preset built from chapter 07's ablation table and sized by chapter 09's scaling fit: a "
               "Qwen3-style model (rotary positions, RMSNorm, SwiGLU, QK-norm; it exports to Qwen3ForCausalLM), "
               "2 layers x 96 wide (3 heads of 32), context 64, batch 24, trained with Muon for the hidden "
               "matrices and AdamW at lr 6e-3 for embeddings and gains, a 10-step warmup and a 200-step schedule "
               "(pass max_steps or time_budget_s to train longer). The fit puts the compute-optimal size at this "
               "budget below the `cpu` shape's 2 x 128; 2 x 96 is the smallest that also stays ahead of `cpu` at "
               "chapter 05's 8-minute budget. On char-level Tiny Shakespeare it reaches nanoGPT's CPU-recipe "
               "validation loss (1.90) at least 10x sooner than that recipe (benchmarks/bench_training.py, "
               "BENCHMARKS.md).",
        "model": dict(n_layer=2, n_head=3, n_embd=96, block_size=64, dropout=0.0, bias=False,
                      rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", qk_norm=True),
        "train": dict(batch_size=24, lr=6e-3, min_lr=6e-4, warmup_steps=10, max_steps=200,
                      weight_decay=0.1, beta2=0.99, eval_interval=50, eval_windows=200,
                      shuffle_windows=16384, optimizer="muon", muon_lr=0.02),
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
    from ..model.gpt import GPTConfig

    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}: choose one of {sorted(PRESETS)}")
    m, t = dict(PRESETS[name]["model"]), dict(PRESETS[name]["train"])
    model_keys = {f.name for f in fields(GPTConfig)}
    for k, v in overrides.items():
        (m if k in model_keys else t)[k] = v
    return GPTConfig(vocab_size=vocab_size, **m), TrainConfig(**t)


# ------------------------------------------------------------------------------ the schedule
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
