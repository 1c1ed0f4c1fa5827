"""Training the GPT on a stream of text: one ``train()`` for the notebook, the CLI and multi-GPU.

``train()`` is one flat loop in the shape of nanoGPT's train.py; the setup it
calls, and the small parts of a step, are named functions below it:

1. **setup**: device, precision and compilation (each with its reason, see
   device.py), the optimizer, the state (fresh or from the newest checkpoint),
   the data, the module that runs the steps (DDP and/or compiled);
2. **one step**: ``grad_accum`` micro-batches, forward under autocast (bf16 on
   recent GPUs, fp16 + gradient scaler on older ones, fp32 on CPU) and backward;
   clip the gradient norm to ``grad_clip``; an AdamW step with the learning rate
   of :func:`lr_at` (linear warmup, then cosine decay to ``min_lr``), weight decay
   only on matrices that multiply activations;
3. **evaluate and checkpoint**: every ``eval_interval`` steps; checkpoints at every
   evaluation by default, at the end, on a stop, and on an error when the state
   is consistent (atomic, see checkpoint.py);
4. **one shared decision to stop** (distributed.py): Ctrl-C, SIGTERM, a callback,
   the time budget. With several processes, every rank must stop on the same step
   and read the same clock, or one waits forever in the next all-reduce.

Launched with ``accelerate launch`` (or ``torchrun``) on several processes it
runs data-parallel: every process holds a replica, reads its own disjoint rows
of each global batch, and DDP averages the gradients, so the replicas stay
identical; only rank 0 writes checkpoints and logs. A run resumed with a
different number of processes continues the data stream where it stopped (the
position counts windows of the shared stream, whatever the world size); each
step then reads ``world_size * batch_size`` rows, so the global batch changes
with it, and dropout masks (seeded by seed, rank and step) differ from an
uninterrupted run's.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..config import artifacts_dir, pick, set_seed, shown_path
from ..data.batching import StreamPosition, train_batches, val_windows
from ..data.pipeline import BackgroundBatches, ParallelTokens
from .checkpoint import find_checkpoint, load_training_state, save_checkpoint

# The settings live in config.py; importable from here too.
from .config import PRESETS as PRESETS
from .config import TrainConfig as TrainConfig
from .config import lr_at as lr_at
from .config import preset as preset
from .config import recommended_preset as recommended_preset
from .device import autocast, choose_compile, choose_precision, default_device, enable_tf32, peak_flops
from .distributed import StopSignals, check_replicas, dist_env, mean_over_ranks, shared_stop_vote, step_seed
from .live import Monitor
from .trackers import Trackers


def param_groups(model: nn.Module, weight_decay: float, skip: Any = ()) -> list[dict[str, Any]]:
    """Two AdamW groups: decay for the weight matrices of Linear layers, none for the rest.

    Biases and LayerNorm gains are not "sizes" of a function, so shrinking them
    toward 0 only hurts; embeddings are lookup tables whose rows for rare tokens
    would be decayed to nothing. A weight tied to an embedding counts as one.
    Parameters in ``skip`` are left out (those Muon optimises, see make_optimizer).
    """
    no_decay = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, other, seen = [], [], {id(p) for p in skip}
    for p in model.parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        (decay if p.dim() >= 2 and id(p) not in no_decay else other).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]


def make_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device):
    """AdamW over :func:`param_groups`; the fused kernel where this torch has one for ``device``.

    With ``cfg.optimizer == "muon"``: Muon (``torch.optim.Muon``, or the course's own on
    torch < 2.9) for the hidden matrices (muon.hidden_matrices) and this AdamW for the
    rest, as one :class:`~minigpt_helpers.muon.MuonAdamW`.
    """
    from .muon import MuonAdamW, hidden_matrices, make_muon

    hidden = hidden_matrices(model) if cfg.optimizer == "muon" else []
    groups = param_groups(model, cfg.weight_decay, skip=hidden)
    kw = dict(lr=cfg.lr, betas=(cfg.beta1, cfg.beta2))
    try:
        adamw = torch.optim.AdamW(groups, fused=True, **kw)
    except (RuntimeError, TypeError, ValueError):  # older torch, or no fused kernel for this device
        adamw = torch.optim.AdamW(groups, **kw)
    if cfg.optimizer != "muon":
        return adamw
    muon = make_muon(hidden, lr=cfg.lr, momentum=cfg.muon_momentum, weight_decay=cfg.muon_weight_decay)
    return MuonAdamW(muon, adamw, lr_scale=cfg.muon_lr / cfg.lr)


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
    data_wait_s: float = 0.0  # of train_time_s, the seconds spent waiting for a batch

    @property
    def final_val_loss(self) -> float | None:
        return self.history.val_losses[-1] if self.history.val_losses else None


def _docs_from(data: Any, split: str, seed: int, shuffle: bool):
    """A source name/path -> its documents (seekable rows where the source can seek); anything else as is."""
    from ..data.sources import training_documents

    return training_documents(data, split, seed, shuffle)


@torch.no_grad()
def evaluate(model: nn.Module, windows: torch.Tensor, batch_size: int, device: torch.device,
             precision: str = "fp32", *, unit: str = "nats", tokenizer: Any = None) -> float:
    """Next-token loss over fixed windows ``(N, T+1)`` (dropout off during it), in ``unit``.

    ``unit="nats"``: mean cross-entropy per predicted token (what training minimises);
    ``"ppl"``: perplexity, ``e^nats``; ``"bpb"``: bits per byte, the loss summed over
    all targets divided by ``ln 2`` times the UTF-8 bytes they spell (``tokenizer``,
    the one that made the windows, gives the bytes), so runs with different
    tokenizers compare (see metrics.py). Targets of -1 (padding) are skipped, as the model does.
    """
    from .metrics import check_unit, in_unit, token_byte_lengths

    check_unit(unit, tokenizer)
    table = token_byte_lengths(tokenizer).to(device) if unit == "bpb" else None
    was_training = model.training
    model.eval()
    nats, tokens, n_bytes = 0.0, 0, 0
    try:
        for i in range(0, len(windows), batch_size):
            w = windows[i: i + batch_size].to(device)
            y = w[:, 1:]
            n = int((y >= 0).sum())
            if n == 0:
                continue  # all padding: the mean loss of nothing is NaN
            with autocast(device, precision):
                _, loss = model(w[:, :-1], y)
            nats += loss.item() * n  # the model's loss is the mean over its n targets
            tokens += n
            if table is not None:
                ids = y[y >= 0]
                if int(ids.max()) >= len(table):
                    raise ValueError(f"token id {int(ids.max())} is outside the tokenizer's vocabulary "
                                     f"({len(table)}): pass the tokenizer that made these windows")
                n_bytes += int(table[ids].sum())
    finally:
        model.train(was_training)
    return in_unit(nats, tokens, n_bytes, unit)


# ------------------------------------------------------------------------------ setup
@dataclass
class _Env:
    """Where and how this process trains."""

    rank: int
    world: int
    device: torch.device
    precision: str
    use_compile: bool
    why: str  # the precision and compile decisions, in words

    @property
    def main(self) -> bool:
        return self.rank == 0


@dataclass
class _RunState:
    """Where the run stands: what a checkpoint must hold to continue exactly (besides weights and optimizer).

    ``consistent`` is not saved: it is False only while an update is half applied
    (weights changed, step not yet counted), when an error must not save.
    """

    step: int = 0
    elapsed: float = 0.0  # wall-clock seconds of the run so far, rank 0's clock (budget, schedule)
    train_time: float = 0.0  # seconds spent in optimizer steps (not evaluation or checkpoints)
    tokens: int = 0
    position: StreamPosition | None = None  # of the next batch after step `step`
    history: History = field(default_factory=History)
    t_warm: float | None = None  # elapsed seconds when warmup ended (time-budget schedule)
    data_source: str | None = None  # what "auto" resolved to, so a resume reads the same data
    data_wait: float = 0.0  # seconds of train_time spent waiting for batches
    consistent: bool = True

    def count_step(self, loss: float, lr: float, seconds: float, tokens: int, position: StreamPosition) -> None:
        """Book one applied update: the step, its tokens and time, the data position after it, the history."""
        self.step += 1
        self.tokens += tokens
        self.train_time += seconds
        self.position = position
        h = self.history
        h.steps.append(self.step)
        h.losses.append(loss)
        h.lrs.append(lr)
        h.times.append(self.train_time)

    def evaluated_now(self) -> bool:
        """Whether the history already has a validation loss at the current step."""
        return bool(self.history.val_steps) and self.history.val_steps[-1] == self.step


def _unwrap(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the model itself, the user's torch.compile wrapper or None).

    ``train(torch.compile(model))`` must save and resume the plain model's weights
    (a compiled module's keys start with ``_orig_mod.``) and must not compile twice.
    """
    inner = getattr(model, "_orig_mod", None)
    return (inner, model) if isinstance(inner, nn.Module) else (model, None)


def _check_tokenizer(model: nn.Module) -> None:
    """The model must carry the tokenizer of its data, and have an embedding row for each of its ids."""
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the data should be encoded with, "
                         "e.g. model.tokenizer = default_tokenizer()")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
                         "build the model with GPTConfig(vocab_size=tokenizer.vocab_size, ...)")


@contextlib.contextmanager
def _torch_threads(n: int | None) -> Iterator[None]:
    """torch's CPU thread count is ``n`` inside the block and what it was after it (``n=None``: untouched).

    ``torch.set_num_threads`` is process-wide: without the reset, one ``train(...,
    TrainConfig(num_threads=1))`` would leave every later computation on one thread.
    """
    if not n:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _environment(cfg: TrainConfig) -> _Env:
    """Rank, device, precision and compilation, with the reasons for each choice."""
    rank, world, _ = dist_env()
    if world > 1:
        from accelerate import PartialState

        device = PartialState(cpu=cfg.device == "cpu").device  # initialises the process group (nccl/gloo)
    else:
        device = default_device(cfg.device)
    precision, why_p = choose_precision(device, cfg.precision)
    use_compile, why_c = choose_compile(device, precision, cfg.compile)
    if precision == "fp32":
        enable_tf32(device)  # fp32 matmuls on tensor cores where the GPU has them
    return _Env(rank, world, device, precision, use_compile, f"{why_p} {why_c}")


def _restore(out_dir: str | Path | None, resume: bool, model: nn.Module, optimizer, env: _Env) -> tuple[_RunState, dict]:
    """The run's state: fresh, or from the newest checkpoint in ``out_dir``."""
    run = _RunState()
    saved = load_training_state(out_dir) if (resume and out_dir is not None) else None
    if saved is None:
        if resume and env.main:
            print(f"[minigpt] resume: no checkpoint in {out_dir}; starting from step 0")
        return run, {}
    ckpt, st, optim_sd = saved
    from safetensors.torch import load_model

    if hasattr(model, "load_weights"):  # a model whose checkpoint holds more than a GPT's files (LoRA, a head)
        model.load_weights(ckpt)
    else:  # read on the CPU, copied into the parameters where they live (safetensors refuses "cpu:0")
        load_model(model, str(ckpt / "model.safetensors"), strict=True, device="cpu")
    optimizer.load_state_dict(optim_sd)
    run = _RunState(step=st["step"], elapsed=st["elapsed"], train_time=st["train_time"], tokens=st["tokens"],
                    position=StreamPosition.from_dict(st["position"]), history=History.from_dict(st["history"]),
                    t_warm=st.get("t_warm"), data_source=st.get("data_source"),
                    data_wait=st.get("data_wait", 0.0))
    if env.main:
        before = st.get("world_size", 1)
        more = (f" (saved by {before} process(es), now {env.world}: the data continues where it stopped, "
                "but each step now reads a different number of rows)") if before != env.world else ""
        print(f"[minigpt] resumed from {shown_path(ckpt)} at step {run.step}{more}")
    return run, st


def _resolve_source(data: Any, run: _RunState, resume: bool, verbose: bool) -> Any:
    """A source name with "auto" resolved (once per run: a resumed run reads what it read before); else ``data``."""
    if not isinstance(data, (str, os.PathLike)):
        return data
    from ..data.sources import resolve_source

    resumed_auto = resume and run.data_source and str(data) == "auto"
    run.data_source = run.data_source if resumed_auto else resolve_source(str(data), verbose=verbose)
    return run.data_source


def _is_batch_source(data: Any) -> bool:
    """Examples that are not packed text (classification, chat): the source makes the batches itself."""
    return hasattr(data, "batches") and hasattr(data, "evaluate")


def _val_windows(data: Any, val_data: Any, tok: Any, block: int, cfg: TrainConfig) -> torch.Tensor | None:
    """The fixed validation windows: of ``val_data``, else of a named source's validation split; None without."""
    if val_data is None and isinstance(data, (str, os.PathLike)):
        val_data = _docs_from(data, "validation", cfg.seed, shuffle=False)
    return val_windows(val_data, tok, block, cfg.eval_windows) if val_data is not None else None


def _batches(docs: Any, tok: Any, block: int, cfg: TrainConfig, position: StreamPosition | None, env: _Env):
    """This rank's training batches ``(x, y)`` from ``position`` on, an iterator with ``position()`` and ``close()``.

    A batch source makes its own; packed text is tokenized, packed and shuffled in a
    background process (``data_workers=1``, pipeline.py), in the loop (0), or
    tokenized by ``data_workers`` processes and packed here: the same batches each way.
    """
    if _is_batch_source(docs):
        return docs.batches(cfg.batch_size, seed=cfg.seed, position=position, rank=env.rank,
                            world_size=env.world, device=env.device)
    where = dict(shuffle_windows=cfg.shuffle_windows, seed=cfg.seed, position=position, rank=env.rank,
                 world_size=env.world)
    if cfg.data_workers == 1:
        return BackgroundBatches(docs, tok, block, cfg.batch_size, device=env.device, verbose=env.main, **where)
    parallel = functools.partial(ParallelTokens, workers=cfg.data_workers) if cfg.data_workers > 1 else None
    return train_batches(docs, tok, block, cfg.batch_size, device=env.device, token_source=parallel, **where)


def _runner(model: nn.Module, user_compiled: nn.Module | None, env: _Env) -> nn.Module:
    """The module that runs the steps: a DDP replica with several processes, compiled once if asked.

    A model the user compiled runs as given (one process); a DDP wrapper is compiled
    around, so that its gradient all-reduce is not traced.
    """
    runner: nn.Module = model
    if env.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    elif user_compiled is not None:
        runner = user_compiled
    if env.use_compile and (user_compiled is None or env.world > 1):
        runner = torch.compile(runner)
    return runner


def _scaler(env: _Env, saved: dict) -> torch.amp.GradScaler:
    """The gradient scaler: on in fp16 (whose small gradients would round to 0), a pass-through otherwise.

    Disabled, ``scale(loss)`` is the loss, ``unscale_`` and ``update`` do nothing and
    ``step(optimizer)`` is ``optimizer.step()``: one code path for every precision.
    """
    scaler = torch.amp.GradScaler(env.device.type, enabled=env.precision == "fp16")
    if scaler.is_enabled() and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])
    return scaler


def _monitor(live: str, cfg: TrainConfig, run: _RunState, env: _Env) -> Monitor:
    """Progress reporting on rank 0 (silent on the others); log mode first says how the run computes."""
    monitor = Monitor(live if env.main else "off", total=cfg.max_steps, initial=run.step,
                      log_interval=cfg.log_interval)
    if monitor.mode == "log":
        monitor.message(f"[minigpt] {env.why}")  # precision and compilation, and why
    return monitor


def _flops_per_token(model: nn.Module) -> float | None:
    """The model's training FLOPs per token (for MFU), if it can say."""
    return model.flops_per_token() if hasattr(model, "flops_per_token") else None


# ------------------------------------------------------------------------------ parts of a step
def _next_batch(batches: Any, run: _RunState) -> tuple[torch.Tensor, torch.Tensor]:
    """The next ``(x, y)``, each (B, T); the seconds spent waiting for it are added to ``run.data_wait``."""
    t_wait = time.perf_counter()
    x, y = next(batches)
    run.data_wait += time.perf_counter() - t_wait
    return x, y


def _clip(model: nn.Module, optimizer, scaler: torch.amp.GradScaler, lr: float, grad_clip: float) -> None:
    """Sets the learning rate and clips the gradient norm to ``grad_clip`` (0: no clipping).

    Under fp16 the gradients are unscaled first, so the threshold is in true units.
    """
    for group in optimizer.param_groups:
        group["lr"] = lr
    scaler.unscale_(optimizer)
    if grad_clip:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)


def _lr_now(run: _RunState, cfg: TrainConfig) -> float:
    """The learning rate for the next step, from the step count or the shared clock."""
    if run.step >= cfg.warmup_steps and run.t_warm is None:
        run.t_warm = run.elapsed  # the cosine spans the budget left after warmup
    progress = None
    if cfg.max_steps is None:  # by time: progress through the budget left after warmup
        assert cfg.time_budget_s is not None
        progress = 0.0 if run.t_warm is None else (run.elapsed - run.t_warm) / max(cfg.time_budget_s - run.t_warm, 1e-9)
    return lr_at(run.step, cfg, progress)


def throughput(tokens_per_step: int, seconds: float, world: int, flops_per_token: float | None,
               peak_per_device: float | None) -> tuple[float, float | None]:
    """(tokens/s of the whole run, MFU of one device) for a step of ``seconds``.

    ``tokens_per_step`` counts every rank's tokens, while a peak is one device's:
    MFU is measured per device, so the tokens are divided among the ``world`` devices.
    """
    tok_s = tokens_per_step / max(seconds, 1e-9)
    if not (peak_per_device and flops_per_token):
        return tok_s, None
    return tok_s, flops_per_token * (tok_s / world) / peak_per_device


# ------------------------------------------------------------------------------ evaluation, checkpoints, stops
def _validation_loss(model: nn.Module, data: Any, windows: torch.Tensor | None, cfg: TrainConfig,
                     env: _Env) -> float | None:
    """The validation loss now: a batch source's own, else over the fixed windows; None without validation data."""
    loss = data.evaluate(model, cfg.batch_size, env.device, env.precision) if _is_batch_source(data) else None
    if loss is None and windows is not None:
        loss = evaluate(model, windows, cfg.batch_size, env.device, env.precision)
    return loss


def _validate(run: _RunState, monitor: Monitor, trackers: Trackers,
              validation_loss: Callable[[], float | None]) -> None:
    """Evaluates at ``run.step`` and records the loss in the history, the monitor and the trackers (if there is
    validation data)."""
    loss = validation_loss()
    if loss is None:
        return
    run.history.val_steps.append(run.step)
    run.history.val_losses.append(loss)
    run.history.val_times.append(run.train_time)
    monitor.evaluated(run.history, step=run.step, val_loss=loss)
    trackers.log({"val/loss": loss}, run.step)


def _save(out_dir: str | Path | None, model: nn.Module, optimizer, scaler: torch.amp.GradScaler,
          cfg: TrainConfig, env: _Env, run: _RunState) -> Path | None:
    """Rank 0 writes the state after step ``run.step`` (atomic; see checkpoint.py); the folder, or None."""
    if out_dir is None or not env.main:
        return None
    state = dict(elapsed=run.elapsed, train_time=run.train_time, tokens=run.tokens,
                 position=run.position.to_dict(), history=run.history.to_dict(), train_config=cfg.to_dict(),
                 world_size=env.world, scaler=scaler.state_dict() if scaler.is_enabled() else None,
                 t_warm=run.t_warm, data_source=run.data_source, data_wait=run.data_wait)
    return save_checkpoint(out_dir, model, step=run.step, optimizer=optimizer, trainer=state)


def _step_values(model: nn.Module, loss: float, lr: float, tok_s: float) -> dict[str, float]:
    """What the trackers get after a step: the loss, the learning rate, tokens/s, and the numbers the model's own
    ``step_metrics()`` returns, if it has one (GRPO's reward and KL, DPO's reward margin), each under ``train/``."""
    values = {"train/loss": loss, "train/lr": lr, "train/tokens_per_s": tok_s}
    extra = getattr(model, "step_metrics", None)
    if callable(extra):
        values.update({f"train/{k}": float(v) for k, v in extra().items()})
    return values


def _callback_asks_to_stop(callback: Callable[[dict[str, Any]], Any] | None, run: _RunState, model: nn.Module,
                           loss: float, lr: float) -> bool:
    """Calls the user's ``callback`` with this step's numbers; True if it returned True (stop cleanly)."""
    if callback is None:
        return False
    info = dict(step=run.step, loss=loss, lr=lr, tokens=run.tokens, train_time=run.train_time, model=model,
                history=run.history)
    return bool(callback(info))


def _over_budget(cfg: TrainConfig, run: _RunState) -> bool:
    """Whether the run's clock (rank 0's) has reached ``cfg.time_budget_s``."""
    return cfg.time_budget_s is not None and run.elapsed >= cfg.time_budget_s


def _stop_reason(cfg: TrainConfig, env: _Env, run: _RunState, by_signal: bool, by_callback: bool,
                 clock: float) -> str | None:
    """Why every rank stops after this step, or None to go on: one vote for all (see shared_stop_vote).

    Sets ``run.elapsed`` to rank 0's clock, which the schedule and the budget read.
    """
    signals, callbacks, run.elapsed = shared_stop_vote(by_signal, by_callback, clock, rank=env.rank,
                                                       world=env.world, device=env.device)
    if signals:
        return "interrupted"
    if callbacks:
        return "callback"
    return "time budget" if _over_budget(cfg, run) else None


def _nan_message(loss: float, step: int, out_dir: str | Path | None) -> str:
    return (f"[minigpt] step {step + 1}: the loss is {loss}; stopping without saving. "
            f"The last good checkpoint ({find_checkpoint(out_dir) if out_dir else 'none'}) is kept. "
            "Usual fixes: a lower learning rate (lr), more warmup, gradient clipping, or fp32.")


def _explain(error: BaseException, saved: Path | None, kept: Path | None, consistent: bool) -> str:
    """What to tell the learner when training dies of an exception."""
    if saved is not None:
        where = f"a checkpoint of the last complete step was saved to {shown_path(saved)}; resume with resume=True / --resume."
    elif not consistent:
        where = (f"the error came in the middle of an update, so nothing was saved; the last checkpoint "
                 f"({kept or 'none'}) is kept.")
    else:
        where = "nothing was saved (no out_dir)."
    fix = ""
    if isinstance(error, torch.cuda.OutOfMemoryError) or "out of memory" in str(error).lower():
        fix = (" Out of memory: use a smaller batch_size with a larger grad_accum, e.g. --batch-size 8 "
               "--grad-accum 8 instead of --batch-size 64 (same tokens per step, less memory).")
    return f"[minigpt] training stopped by {type(error).__name__}: {where}{fix}"


def _report_error(error: Exception, run: _RunState, save: Callable[[_RunState], Path | None],
                  out_dir: str | Path | None, last_ckpt: Path | None, monitor: Monitor) -> None:
    """Training dies of ``error``: save the last complete step if the state is consistent, and say what to do."""
    saved_to = None
    if run.consistent:
        with contextlib.suppress(Exception):
            saved_to = save(run)
    kept = last_ckpt or (find_checkpoint(out_dir) if out_dir else None)
    message = _explain(error, saved_to, kept, run.consistent)
    monitor.message(message)
    monitor.close(run.history)
    if hasattr(error, "add_note"):  # Python >= 3.11: the note is printed with the traceback
        error.add_note(message)


# ------------------------------------------------------------------------------ the loop
def train(model: nn.Module, data: Any = "auto", cfg: TrainConfig | None = None, *, val_data: Any = None,
          out_dir: str | Path | None = None, resume: bool = False, live: str = "auto",
          callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train ``model`` (a GPT with ``model.tokenizer`` set) on ``data``; returns a :class:`TrainResult`.

    data: a source for ``stream_documents`` ("auto", "shakespeare", a path...),
        whose validation split is then used for ``val_data``; or a list of
        strings / a datasets.IterableDataset (then pass ``val_data`` yourself).
        Or a *batch source*, for examples that are not packed text (classification,
        chat; e.g. ``training.examples.ExampleSource``): ``data.batches(batch_size, *, seed,
        position, rank, world_size, device)`` gives an iterator of ``(x, y)`` with
        ``position()`` (a StreamPosition, saved in checkpoints, passed back on resume)
        and ``close()``; ``data.evaluate(model, batch_size, device, precision)`` the validation
        loss (or None). ``model(x, y)`` returns ``(logits, loss)``; a model with a
        ``load_weights(folder)`` method reads its own checkpoint files on resume.
    out_dir: where checkpoints go (at every evaluation unless ``cfg.checkpoint_every``
        says otherwise, at the end, on Ctrl-C / SIGTERM, and on an error when the
        state is consistent). ``resume=True`` continues from the newest one there.
    live: "auto" (live plot in Jupyter, log lines elsewhere), "notebook", "log", "off".
        ``cfg.log_with`` adds experiment trackers (TensorBoard, Trackio, wandb; see trackers.py),
        logging to ``out_dir/runs`` (or ``artifacts/runs``).
    callback: called after every step (after that step's evaluation, if any) with a
        dict (step, loss, lr, tokens, train_time, model, history); returning True
        stops training cleanly, like Ctrl-C.

    ``model`` may be wrapped by ``torch.compile``: the plain model is trained, saved
    and returned, and the wrapper is used for the steps (it is not compiled twice).
    ``cfg.num_threads`` holds for this call only: torch's thread count is put back after.
    """
    cfg = cfg or TrainConfig()
    model, user_compiled = _unwrap(model)
    _check_tokenizer(model)
    tok, block = model.tokenizer, model.config.block_size
    with _torch_threads(cfg.num_threads), Trackers(cfg, model.config, out_dir) as trackers:  # finished on any exit
        # --- setup: device, optimizer, state (fresh or resumed), data, the module that runs the steps
        env = _environment(cfg)
        trackers.start(main=env.main)  # rank 0: TensorBoard / Trackio / wandb, if cfg.log_with names them
        model.to(env.device)
        optimizer = make_optimizer(model, cfg, env.device)
        run, saved = _restore(out_dir, resume, model, optimizer, env)
        data = _resolve_source(data, run, resume, verbose=env.main)
        train_docs = _docs_from(data, "train", cfg.seed, shuffle=True)
        val = _val_windows(data, val_data, tok, block, cfg)
        batches = _batches(train_docs, tok, block, cfg, run.position, env)
        run.position = batches.position()
        runner = _runner(model, user_compiled, env)
        scaler = _scaler(env, saved)
        monitor = _monitor(live, cfg, run, env)
        validation_loss = functools.partial(_validation_loss, model, data, val, cfg, env)
        save = functools.partial(_save, out_dir, model, optimizer, scaler, cfg, env)
        tokens_per_step = cfg.batch_size * block * cfg.grad_accum * env.world  # all ranks together
        flops_tok, peak = _flops_per_token(model), peak_flops(env.device, env.precision)
        checkpoint_every = cfg.checkpoint_every or cfg.eval_interval

        # --- the loop: step, report, evaluate, checkpoint, one shared decision to stop
        model.train()
        stop, last_ckpt = None, None
        t_session, elapsed0 = time.perf_counter(), run.elapsed
        if not run.evaluated_now():
            _validate(run, monitor, trackers, validation_loss)  # step 0: an untrained model's loss, ~ln(vocab_size)
        with StopSignals() as signals:
            try:
                stop = "time budget" if _over_budget(cfg, run) else None  # resumed with the budget spent
                while stop is None and (cfg.max_steps is None or run.step < cfg.max_steps):
                    lr = _lr_now(run, cfg)
                    t0 = time.perf_counter()
                    torch.manual_seed(step_seed(cfg.seed, env.rank, run.step))  # dropout: same masks on resume
                    loss_sum = torch.zeros((), device=env.device)
                    for micro in range(cfg.grad_accum):  # forward + backward; gradients add up in .grad
                        x, y = _next_batch(batches, run)
                        no_sync = env.world > 1 and micro < cfg.grad_accum - 1  # DDP: all-reduce once per step
                        with runner.no_sync() if no_sync else contextlib.nullcontext():
                            with autocast(env.device, env.precision):
                                _, loss = runner(x, y)
                            loss = loss / cfg.grad_accum  # the mean over micro-batches (exact for 1)
                            scaler.scale(loss).backward()
                        loss_sum += loss.detach()
                    loss = mean_over_ranks(loss_sum, env.world).item()  # a host sync, cheap next to a step
                    if not math.isfinite(loss):  # every rank sees it: the loss is averaged over them
                        optimizer.zero_grad(set_to_none=True)
                        stop = "non-finite loss"
                        monitor.message(_nan_message(loss, run.step, out_dir))
                        break
                    _clip(model, optimizer, scaler, lr, cfg.grad_clip)
                    with signals.critical():  # the update and its bookkeeping happen together or not at all
                        run.consistent = False
                        scaler.step(optimizer)
                        scaler.update()
                        optimizer.zero_grad(set_to_none=True)
                        dt = time.perf_counter() - t0
                        run.count_step(loss, lr, dt, tokens_per_step, batches.position())
                        run.consistent = True
                    tok_s, mfu = throughput(tokens_per_step, dt, env.world, flops_tok, peak)
                    monitor.step(run.history, step=run.step, loss=loss, lr=lr, tok_s=tok_s, mfu=mfu,
                                 total=cfg.max_steps)
                    trackers.log(_step_values(model, loss, lr, tok_s), run.step)

                    last = cfg.max_steps is not None and run.step >= cfg.max_steps
                    if run.step % cfg.eval_interval == 0 or last:
                        _validate(run, monitor, trackers, validation_loss)
                    if run.step % checkpoint_every == 0 and not last:
                        with signals.critical():
                            last_ckpt = save(run) or last_ckpt
                    asked = _callback_asks_to_stop(callback, run, model, loss, lr)
                    clock = elapsed0 + time.perf_counter() - t_session
                    stop = _stop_reason(cfg, env, run, signals.requested, asked, clock)
            except KeyboardInterrupt:  # a second Ctrl-C: the state is consistent (see StopSignals)
                stop = "interrupted"
            except Exception as e:
                _report_error(e, run, save, out_dir, last_ckpt, monitor)
                raise
            finally:
                batches.close()  # the workers stop at the end, on Ctrl-C and on errors
            run.elapsed = elapsed0 + time.perf_counter() - t_session
            if stop != "non-finite loss":
                if stop is not None and not run.evaluated_now():
                    _validate(run, monitor, trackers, validation_loss)
                with signals.critical(deliver=False):  # a Ctrl-C now waits for the save to finish
                    last_ckpt = save(run) or last_ckpt
        if stop == "interrupted":
            monitor.message(f"[minigpt] interrupted at step {run.step}: model, curves"
                            f"{' and checkpoint ' + shown_path(last_ckpt) if last_ckpt else ''} kept")
        monitor.close(run.history)
        check_replicas(model, rank=env.rank, world=env.world)
    model.eval()
    return TrainResult(model, run.history, run.step, stop or "done", last_ckpt, run.tokens, run.train_time,
                       run.data_wait)


# ------------------------------------------------------------------------------ chapter 06's entry point
def _chapter05_preset() -> str:
    """The preset :func:`get_trained_model` trains when chapter 05 has not been run."""
    return pick(full="cpu", quick="tiny")


def trained_model_context() -> int:
    """The context of the model :func:`get_trained_model` gives without ``min_context``: chapter 05's saved
    model's, or that of the preset it would train."""
    from ..model.gpt import GPT

    ckpt = find_checkpoint(artifacts_dir("ch05"))
    if ckpt is not None:
        return GPT.check_saved(ckpt).block_size  # config.json and the weights' header only
    return int(PRESETS[_chapter05_preset()]["model"]["block_size"])


def get_trained_model(verbose: bool = True, min_context: int | None = None):
    """The model chapter 05 trained (from ``artifacts_dir("ch05")``), or a quickly trained one.

    If chapter 05 has not been run, trains a small model on the offline
    Shakespeare corpus with the default tokenizer (about a minute in quick mode,
    a few minutes otherwise), saves it there, and says which happened.
    ``min_context``: the fewest tokens of context the caller needs. When chapter 05's
    model sees fewer (quick mode's "tiny" preset sees 32), a model of the same recipe
    with ``block_size=min_context`` is used instead, from ``artifacts_dir("ch05_ctx<N>")``
    (trained there the first time).
    """
    from ..model.gpt import GPT
    from ..tokenizers.train import default_tokenizer
    from .checkpoint import load_checkpoint

    own = min_context is None or trained_model_context() >= min_context
    out = artifacts_dir("ch05" if own else f"ch05_ctx{min_context}")
    if find_checkpoint(out) is not None:
        if verbose:
            what = "chapter 05's model" if own else f"a {min_context}-token model"
            print(f"get_trained_model: loaded {what} from {shown_path(find_checkpoint(out))}")
        return load_checkpoint(out)
    tok = default_tokenizer(verbose=verbose)
    name, steps = _chapter05_preset(), pick(full=1500, quick=150)
    extra = {} if own else {"block_size": min_context}
    mcfg, tcfg = preset(name, tok.vocab_size, max_steps=steps, eval_interval=steps, **extra)
    if verbose:
        print(f"get_trained_model: no checkpoint in {shown_path(out)}; training preset {name!r} (context "
              f"{mcfg.block_size}) for {steps} steps on the offline Shakespeare corpus ...")
    set_seed(tcfg.seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    result = train(model, "shakespeare", tcfg, out_dir=out, live="off")
    if verbose:
        print(f"get_trained_model: trained in {result.train_time_s:.0f} s, validation loss "
              f"{result.final_val_loss:.3f}; saved to {shown_path(result.checkpoint)}")
    return result.model
