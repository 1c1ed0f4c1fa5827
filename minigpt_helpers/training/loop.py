"""Training the GPT on a stream of text: one ``train()`` for the notebook, the CLI and multi-GPU.

The loop has the shape of nanoGPT's train.py, in four parts you can read in order:

1. **setup**: device, precision and compilation (each with its reason, see
   device.py), the optimizer, the state (fresh or from the newest checkpoint),
   the data;
2. **one step** (``one_step``): ``grad_accum`` micro-batches, forward under
   autocast (bf16 on recent GPUs, fp16 + gradient scaler on older ones, fp32 on
   CPU) and backward; clip the gradient norm to ``grad_clip``; an AdamW step with
   the learning rate of :func:`lr_at` (linear warmup, then cosine decay to
   ``min_lr``), weight decay only on matrices that multiply activations;
3. **one shared decision to stop** (``_agree``): Ctrl-C, SIGTERM, a callback, the
   time budget. With several processes, every rank must stop on the same step
   and read the same clock, or one waits forever in the next all-reduce;
4. **checkpoint**: at every evaluation by default, at the end, on a stop, and on
   an error when the state is consistent (atomic, see checkpoint.py).

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
import hashlib
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

from ..config import artifacts_dir, pick, set_seed, shown_path
from ..data.batching import StreamPosition, train_batches, val_windows
from ..data.pipeline import BackgroundBatches, ParallelTokens
from .checkpoint import find_checkpoint, load_training_state, save_checkpoint

# The settings live in train_config.py; importable from here too, as before.
from .config import PRESETS as PRESETS
from .config import TrainConfig as TrainConfig
from .config import lr_at as lr_at
from .config import preset as preset
from .config import recommended_preset as recommended_preset
from .device import autocast, choose_compile, choose_precision, default_device, enable_tf32, peak_flops
from .live import Monitor


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


def _dist() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


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


# ------------------------------------------------------------------------------ stopping, together
class _Signals:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop after the current step, save, and return.

    SIGTERM is what Slurm, torchrun and a preempted cloud machine send before they
    kill a job, so it is treated exactly like Ctrl-C. A *second* Ctrl-C stops sooner:
    it interrupts the step in progress, but never the lines that apply an update and
    count it, nor a checkpoint being written (``critical()``: it is delivered when
    they end). So the weights, the step counter and the data position always agree.
    """

    def __init__(self) -> None:
        self.requested = False
        self._pending = False
        self._depth = 0
        self._old: dict[int, Any] = {}

    def __enter__(self) -> _Signals:
        if threading.current_thread() is threading.main_thread():  # Python allows handlers only there
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._old[sig] = signal.getsignal(sig)
                signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)

    def _handle(self, signum: int, frame: Any) -> None:
        if signum == signal.SIGINT and self.requested:
            if self._depth:
                self._pending = True  # deliver when the update / save in progress is complete
                return
            raise KeyboardInterrupt
        self.requested = True

    @contextlib.contextmanager
    def critical(self, deliver: bool = True):
        """A block that a second Ctrl-C must not cut in half."""
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._pending and not self._depth:
            self._pending = False
            if deliver:
                raise KeyboardInterrupt


def _step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one step on one rank: dropout masks depend on (seed, rank, step) only.

    Re-seeding every step costs microseconds and makes resume exact on every rank,
    with no per-rank RNG state to save. (Resuming with a different number of
    processes gives ranks other rows of the batch, so their masks differ anyway.)
    """
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def _agree(env: _Env, stop_votes: tuple[int, int], clock: float) -> tuple[int, int, float]:
    """One shared decision for all ranks: (signal votes, callback votes, rank 0's clock).

    Each rank may see Ctrl-C/SIGTERM or a callback's answer at a different moment,
    and each has its own clock. If every rank decided alone, one could stop while
    another waits in the next step's all-reduce (a hang), and their time-based
    learning rates would differ (replicas drift). So after every step the ranks
    sum their stop votes and all take rank 0's clock: one small all-reduce.
    """
    if env.world == 1:
        return stop_votes[0], stop_votes[1], clock
    import torch.distributed as dist

    t = torch.tensor([float(stop_votes[0]), float(stop_votes[1]), clock if env.main else 0.0],
                     dtype=torch.float64, device=env.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    signals, callbacks, clock0 = t.tolist()
    return int(signals), int(callbacks), clock0


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
    """Everything a checkpoint must hold to continue exactly (besides weights and optimizer)."""

    step: int = 0
    elapsed: float = 0.0  # wall-clock seconds of the run so far, rank 0's clock (budget, schedule)
    train_time: float = 0.0  # seconds spent in optimizer steps (not evaluation or checkpoints)
    tokens: int = 0
    position: StreamPosition | None = None  # of the next batch after step `step`
    history: History = field(default_factory=History)
    t_warm: float | None = None  # elapsed seconds when warmup ended (time-budget schedule)
    data_source: str | None = None  # what "auto" resolved to, so a resume reads the same data
    data_wait: float = 0.0  # seconds of train_time spent waiting for batches


def _unwrap(model: nn.Module) -> tuple[nn.Module, nn.Module | None]:
    """(the model itself, the user's torch.compile wrapper or None).

    ``train(torch.compile(model))`` must save and resume the plain model's weights
    (a compiled module's keys start with ``_orig_mod.``) and must not compile twice.
    """
    inner = getattr(model, "_orig_mod", None)
    return (inner, model) if isinstance(inner, nn.Module) else (model, None)


def _environment(cfg: TrainConfig) -> _Env:
    """Rank, device, precision and compilation, with the reasons for each choice."""
    rank, world, _ = _dist()
    if world > 1:
        from accelerate import PartialState

        device = PartialState(cpu=cfg.device == "cpu").device  # initialises the process group (nccl/gloo)
    else:
        device = default_device(cfg.device)
    precision, why_p = choose_precision(device, cfg.precision)
    use_compile, why_c = choose_compile(device, precision, cfg.compile)
    if precision == "fp32":
        enable_tf32(device)  # fp32 matmuls on tensor cores where the GPU has them
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)
    return _Env(rank, world, device, precision, use_compile, f"{why_p} {why_c}")


def _restore(out_dir: str | Path | None, resume: bool, model: nn.Module, optimizer, env: _Env) -> tuple[_RunState, dict]:
    """The run's state: fresh, or from the newest checkpoint in ``out_dir``."""
    run = _RunState()
    saved = load_training_state(out_dir) if (resume and out_dir is not None) else None
    if saved is None:
        if resume and env.main:
            print(f"[minigpt] resume: no checkpoint in {out_dir}; starting from step 0")
        return run, {}
    ckpt, st, optim_sd, _rng = saved  # RNG: not needed, every step re-seeds (_step_seed)
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


def _lr_now(run: _RunState, cfg: TrainConfig) -> float:
    """The learning rate for the next step, from the step count or the shared clock."""
    if run.step >= cfg.warmup_steps and run.t_warm is None:
        run.t_warm = run.elapsed  # the cosine spans the budget left after warmup
    progress = None
    if cfg.max_steps is None:  # by time: progress through the budget left after warmup
        assert cfg.time_budget_s is not None
        progress = 0.0 if run.t_warm is None else (run.elapsed - run.t_warm) / max(cfg.time_budget_s - run.t_warm, 1e-9)
    return lr_at(run.step, cfg, progress)


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


# ------------------------------------------------------------------------------ the loop
def train(model: nn.Module, data: Any = "auto", cfg: TrainConfig | None = None, *, val_data: Any = None,
          out_dir: str | Path | None = None, resume: bool = False, live: str = "auto",
          callback: Callable[[dict[str, Any]], Any] | None = None) -> TrainResult:
    """Train ``model`` (a GPT with ``model.tokenizer`` set) on ``data``; returns a :class:`TrainResult`.

    data: a source for ``stream_documents`` ("auto", "shakespeare", a path...),
        whose validation split is then used for ``val_data``; or a list of
        strings / a datasets.IterableDataset (then pass ``val_data`` yourself).
        Or a *batch source*, for examples that are not packed text (classification,
        chat; e.g. ``classify.ExampleSource``): ``data.batches(batch_size, *, seed,
        position, rank, world_size, device)`` gives an iterator of ``(x, y)`` with
        ``position()`` (a StreamPosition, saved in checkpoints, passed back on resume)
        and ``close()``; ``data.evaluate(model, batch_size, device, precision)`` the validation
        loss (or None). ``model(x, y)`` returns ``(logits, loss)``; a model with a
        ``load_weights(folder)`` method reads its own checkpoint files on resume.
    out_dir: where checkpoints go (at every evaluation unless ``cfg.checkpoint_every``
        says otherwise, at the end, on Ctrl-C / SIGTERM, and on an error when the
        state is consistent). ``resume=True`` continues from the newest one there.
    live: "auto" (live plot in Jupyter, log lines elsewhere), "notebook", "log", "off".
    callback: called after every step (after that step's evaluation, if any) with a
        dict (step, loss, lr, tokens, train_time, model, history); returning True
        stops training cleanly, like Ctrl-C.

    ``model`` may be wrapped by ``torch.compile``: the plain model is trained, saved
    and returned, and the wrapper is used for the steps (it is not compiled twice).
    """
    # --- setup: device, model, optimizer, state, data
    cfg = cfg or TrainConfig()
    model, user_compiled = _unwrap(model)
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError("model.tokenizer is None: attach the tokenizer the data should be encoded with, "
                         "e.g. model.tokenizer = default_tokenizer()")
    if tok.vocab_size > model.config.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} ids but the model only {model.config.vocab_size}: "
                         "build the model with GPTConfig(vocab_size=tokenizer.vocab_size, ...)")
    env = _environment(cfg)
    block = model.config.block_size
    model.to(env.device)
    optimizer = make_optimizer(model, cfg, env.device)
    run, saved = _restore(out_dir, resume, model, optimizer, env)

    if isinstance(data, (str, os.PathLike)):
        from ..data.sources import resolve_source

        # "auto" is decided once per run: a resumed run reads what it read before.
        run.data_source = run.data_source if (resume and run.data_source and str(data) == "auto") \
            else resolve_source(str(data), verbose=env.main)
        data = run.data_source
    train_docs = _docs_from(data, "train", cfg.seed, shuffle=True)
    if val_data is None and isinstance(data, (str, os.PathLike)):
        val_data = _docs_from(data, "validation", cfg.seed, shuffle=False)
    val = val_windows(val_data, tok, block, cfg.eval_windows) if val_data is not None else None
    where = dict(shuffle_windows=cfg.shuffle_windows, seed=cfg.seed, position=run.position, rank=env.rank,
                 world_size=env.world)
    source = data if hasattr(data, "batches") and hasattr(data, "evaluate") else None  # a batch source
    if source is not None:  # not packed text (classification, chat): the source makes the batches
        batches = source.batches(cfg.batch_size, seed=cfg.seed, position=run.position, rank=env.rank,
                                 world_size=env.world, device=env.device)
    elif cfg.data_workers == 1:  # tokenizing, packing and shuffling in a background process (pipeline.py)
        batches = BackgroundBatches(train_docs, tok, block, cfg.batch_size, device=env.device, verbose=env.main,
                                    **where)
    else:  # in the loop (0), or tokenized by data_workers processes and packed here (the same batches)
        parallel = functools.partial(ParallelTokens, workers=cfg.data_workers) if cfg.data_workers > 1 else None
        batches = train_batches(train_docs, tok, block, cfg.batch_size, device=env.device, token_source=parallel,
                                **where)
    run.position = batches.position()

    # --- the module that runs the steps: DDP replica and/or compiled (once)
    runner: nn.Module = model
    if env.world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP

        runner = DDP(model, device_ids=[env.device.index] if env.device.type == "cuda" else None)
    elif user_compiled is not None:
        runner = user_compiled
    if env.use_compile and (user_compiled is None or env.world > 1):
        runner = torch.compile(runner)
    scaler = torch.amp.GradScaler(env.device.type) if env.precision == "fp16" else None
    if scaler is not None and saved.get("scaler"):
        scaler.load_state_dict(saved["scaler"])

    tokens_per_step = cfg.batch_size * block * cfg.grad_accum * env.world  # all ranks together
    peak = peak_flops(env.device, env.precision)
    flops_tok = model.flops_per_token() if hasattr(model, "flops_per_token") else None
    monitor = Monitor(live if env.main else "off", total=cfg.max_steps, initial=run.step,
                      log_interval=cfg.log_interval)
    checkpoint_every = cfg.checkpoint_every or cfg.eval_interval
    if monitor.mode == "log":
        monitor.message(f"[minigpt] {env.why}")  # precision and compilation, and why

    def checkpoint() -> Path | None:
        """Rank 0 writes the state after step ``run.step`` (atomic; see checkpoint.py)."""
        if out_dir is None or not env.main:
            return None
        state = dict(elapsed=run.elapsed, train_time=run.train_time, tokens=run.tokens,
                     position=run.position.to_dict(), history=run.history.to_dict(), train_config=cfg.to_dict(),
                     world_size=env.world, scaler=scaler.state_dict() if scaler is not None else None,
                     t_warm=run.t_warm, data_source=run.data_source, data_wait=run.data_wait)
        return save_checkpoint(out_dir, model, step=run.step, optimizer=optimizer, trainer=state)

    def run_eval() -> None:
        v = source.evaluate(model, cfg.batch_size, env.device, env.precision) if source is not None else None
        if v is None and val is None:
            return
        if v is None:
            v = evaluate(model, val, cfg.batch_size, env.device, env.precision)
        run.history.val_steps.append(run.step)
        run.history.val_losses.append(v)
        run.history.val_times.append(run.train_time)
        monitor.evaluated(run.history, step=run.step, val_loss=v)

    def one_step(lr: float) -> tuple[float, float]:
        """One optimizer step: forward + backward over ``grad_accum`` micro-batches, then the update.

        Returns (the loss averaged over micro-batches and ranks, seconds). When the
        loss is not finite, no update is made.
        """
        nonlocal consistent
        t0 = time.perf_counter()
        torch.manual_seed(_step_seed(cfg.seed, env.rank, run.step))  # dropout: same masks after a resume
        loss_sum = torch.zeros((), device=env.device)
        for micro in range(cfg.grad_accum):
            t_wait = time.perf_counter()
            x, y = next(batches)  # (B, T) each
            run.data_wait += time.perf_counter() - t_wait
            no_sync = env.world > 1 and micro < cfg.grad_accum - 1  # DDP: all-reduce gradients once per step
            with runner.no_sync() if no_sync else contextlib.nullcontext():
                with autocast(env.device, env.precision):
                    _, loss = runner(x, y)
                if cfg.grad_accum > 1:
                    loss = loss / cfg.grad_accum
                (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += loss.detach()
        if env.world > 1:  # the logged loss is the mean over ranks (SUM, then divide: gloo has no AVG)
            torch.distributed.all_reduce(loss_sum, op=torch.distributed.ReduceOp.SUM)
            loss_sum /= env.world
        loss_val = loss_sum.item()  # the loss at every iteration (a host sync: cheap next to a step)
        if not math.isfinite(loss_val):
            optimizer.zero_grad(set_to_none=True)
            return loss_val, time.perf_counter() - t0
        for g in optimizer.param_groups:
            g["lr"] = lr
        if scaler:
            scaler.unscale_(optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        with signals.critical():  # the update and its bookkeeping happen together or not at all
            consistent = False
            if scaler:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            dt = time.perf_counter() - t0
            run.step += 1
            run.tokens += tokens_per_step
            run.train_time += dt
            run.position = batches.position()
            h = run.history
            h.steps.append(run.step)
            h.losses.append(loss_val)
            h.lrs.append(lr)
            h.times.append(run.train_time)
            consistent = True
        return loss_val, dt

    # --- the loop: step, report, evaluate/checkpoint, one shared decision to stop
    model.train()
    stop_reason, last_ckpt, consistent = "done", None, True
    t_session, elapsed0 = time.perf_counter(), run.elapsed
    if not run.history.val_steps or run.history.val_steps[-1] != run.step:
        run_eval()  # step 0: the loss of an untrained model, ~ln(vocab_size)
    with _Signals() as signals:
        try:
            if cfg.time_budget_s is not None and run.elapsed >= cfg.time_budget_s:
                stop_reason = "time budget"  # resumed with the budget already spent
            while stop_reason == "done" and (cfg.max_steps is None or run.step < cfg.max_steps):
                lr = _lr_now(run, cfg)
                loss, dt = one_step(lr)
                if not math.isfinite(loss):  # all ranks agree: the loss is averaged over them
                    stop_reason = "non-finite loss"
                    monitor.message(
                        f"[minigpt] step {run.step + 1}: the loss is {loss}; stopping without saving. "
                        f"The last good checkpoint ({find_checkpoint(out_dir) if out_dir else 'none'}) is kept. "
                        "Usual fixes: a lower learning rate (lr), more warmup, gradient clipping, or fp32.")
                    break
                tok_s, mfu = throughput(tokens_per_step, dt, env.world, flops_tok, peak)
                monitor.step(run.history, step=run.step, loss=loss, lr=lr, tok_s=tok_s, mfu=mfu,
                             total=cfg.max_steps)

                last = cfg.max_steps is not None and run.step >= cfg.max_steps
                if run.step % cfg.eval_interval == 0 or last:
                    run_eval()
                if run.step % checkpoint_every == 0 and not last:
                    with signals.critical():
                        last_ckpt = checkpoint() or last_ckpt
                asked = bool(callback and callback(dict(step=run.step, loss=loss, lr=lr, tokens=run.tokens,
                                                        train_time=run.train_time, model=model,
                                                        history=run.history)))
                by_signal, by_callback, run.elapsed = _agree(
                    env, (int(signals.requested), int(asked)), elapsed0 + time.perf_counter() - t_session)
                if by_signal or by_callback:
                    stop_reason = "interrupted" if by_signal else "callback"
                    break
                if cfg.time_budget_s is not None and run.elapsed >= cfg.time_budget_s:
                    stop_reason = "time budget"
                    break
        except KeyboardInterrupt:  # a second Ctrl-C: the state is consistent (see _Signals)
            stop_reason = "interrupted"
        except Exception as e:
            saved_to = None
            if consistent:
                with contextlib.suppress(Exception):
                    saved_to = checkpoint()
            message = _explain(e, saved_to, last_ckpt or (find_checkpoint(out_dir) if out_dir else None), consistent)
            monitor.message(message)
            monitor.close(run.history)
            if hasattr(e, "add_note"):  # Python >= 3.11: the note is printed with the traceback
                e.add_note(message)
            raise
        finally:
            batches.close()  # the workers stop at the end, on Ctrl-C and on errors
        run.elapsed = elapsed0 + time.perf_counter() - t_session
        if stop_reason != "non-finite loss":
            if stop_reason != "done" and (not run.history.val_steps or run.history.val_steps[-1] != run.step):
                run_eval()
            with signals.critical(deliver=False):  # a Ctrl-C now waits for the save to finish
                last_ckpt = checkpoint() or last_ckpt
    if stop_reason == "interrupted":
        monitor.message(f"[minigpt] interrupted at step {run.step}: model, curves"
                        f"{' and checkpoint ' + shown_path(last_ckpt) if last_ckpt else ''} kept")
    monitor.close(run.history)
    if env.world > 1:
        diff = replica_difference(model)
        if env.main:
            print(f"[minigpt] {env.world} replicas identical: {'yes' if diff == 0 else 'NO'} "
                  f"(max |difference| {diff:g})")
        if diff > 0:
            raise RuntimeError(f"data-parallel replicas diverged (max |difference| {diff:g}): "
                               "this is a bug; please report it with your command line")
    model.eval()
    return TrainResult(model, run.history, run.step, stop_reason, last_ckpt, run.tokens, run.train_time,
                       run.data_wait)


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
    from ..model.gpt import GPT
    from ..tokenizers.train import default_tokenizer
    from .checkpoint import load_checkpoint

    out = artifacts_dir("ch05")
    if find_checkpoint(out) is not None:
        model = load_checkpoint(out)
        if verbose:
            print(f"get_trained_model: loaded chapter 05's model from {shown_path(find_checkpoint(out))}")
        return model
    tok = default_tokenizer(verbose=verbose)
    name = pick(full="cpu", quick="tiny")
    steps = pick(full=1500, quick=150)
    if verbose:
        print(f"get_trained_model: no checkpoint in {shown_path(out)}; training preset {name!r} for {steps} steps "
              "on the offline Shakespeare corpus ...")
    mcfg, tcfg = preset(name, tok.vocab_size, max_steps=steps, eval_interval=steps)
    set_seed(tcfg.seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    result = train(model, "shakespeare", tcfg, out_dir=out, live="off")
    if verbose:
        print(f"get_trained_model: trained in {result.train_time_s:.0f} s, validation loss "
              f"{result.final_val_loss:.3f}; saved to {shown_path(result.checkpoint)}")
    return result.model
