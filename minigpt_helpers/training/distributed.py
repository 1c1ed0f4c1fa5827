"""Training on several processes, and stopping cleanly: what ``train()`` needs beyond one step.

* :func:`dist_env`: which process this is, from the launcher's environment
  (``accelerate launch`` and ``torchrun`` set ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``).
* :class:`StopSignals`: Ctrl-C and SIGTERM ask training to stop after the current
  step; a second Ctrl-C stops sooner, but never in the middle of an update.
* :func:`shared_stop_vote`: every rank stops on the same step and reads the same
  clock, or one would wait forever in the next all-reduce.
* :func:`mean_over_ranks`: the logged loss, averaged over ranks.
* :func:`step_seed`: the random seed of one step on one rank, so a resume is exact.
* :func:`replica_difference` / :func:`check_replicas`: DDP keeps the replicas
  bit-identical; this checks it at the end of a run.
* :func:`end_process_group`: every process closes the process group before it exits.

With one process (``WORLD_SIZE`` unset) every function here is a no-op or a
plain computation: no process group is needed.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import threading
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn


def dist_env() -> tuple[int, int, int]:
    """(rank, world_size, local_rank) from the launcher's environment; (0, 1, 0) for one process."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


class StopSignals:
    """Ctrl-C (SIGINT) and SIGTERM ask training to stop after the current step, save, and return.

    SIGTERM is what Slurm, torchrun and a preempted cloud machine send before they
    kill a job, so it is treated exactly like Ctrl-C. A *second* Ctrl-C stops sooner:
    it interrupts the step in progress, but never the lines that apply an update and
    count it, nor a checkpoint being written (``critical()``: it is delivered when
    they end). So the weights, the step counter and the data position always agree.

    Use it as a context manager: the previous handlers are put back on exit.
    Handlers are installed only on the main thread (Python allows them nowhere else).
    """

    def __init__(self) -> None:
        self.requested = False  # a first Ctrl-C / SIGTERM arrived: stop after this step
        self._pending = False  # a second Ctrl-C arrived inside a critical block
        self._depth = 0  # how many critical blocks are open
        self._old: dict[int, Any] = {}

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is threading.main_thread():
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
    def critical(self, deliver: bool = True) -> Iterator[None]:
        """A block that a second Ctrl-C must not cut in half.

        A Ctrl-C that arrived inside it raises KeyboardInterrupt when it ends
        (``deliver=False``: it is dropped, e.g. for the last save before returning).
        """
        self._depth += 1
        try:
            yield
        finally:
            self._depth -= 1
        if self._pending and not self._depth:
            self._pending = False
            if deliver:
                raise KeyboardInterrupt


def shared_stop_vote(by_signal: bool, by_callback: bool, clock: float, *, rank: int, world: int,
                     device: torch.device) -> tuple[int, int, float]:
    """One shared decision for all ranks: (signal votes, callback votes, rank 0's clock).

    Each rank may see Ctrl-C/SIGTERM or a callback's answer at a different moment,
    and each has its own clock. If every rank decided alone, one could stop while
    another waits in the next step's all-reduce (a hang), and their time-based
    learning rates would differ (replicas drift). So after every step the ranks
    sum their stop votes and all take rank 0's clock: one small all-reduce.
    """
    if world == 1:
        return int(by_signal), int(by_callback), clock
    import torch.distributed as dist

    t = torch.tensor([float(by_signal), float(by_callback), clock if rank == 0 else 0.0],
                     dtype=torch.float64, device=device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    signals, callbacks, clock0 = t.tolist()
    return int(signals), int(callbacks), clock0


def mean_over_ranks(t: torch.Tensor, world: int) -> torch.Tensor:
    """``t`` averaged over the ``world`` ranks, in place (SUM, then divide: gloo on older torch has no AVG)."""
    if world > 1:
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.SUM)
        t /= world
    return t


def step_seed(seed: int, rank: int, step: int) -> int:
    """The torch seed of one step on one rank: dropout masks depend on (seed, rank, step) only.

    Re-seeding every step costs microseconds and makes resume exact on every rank,
    with no per-rank RNG state to save. (Resuming with a different number of
    processes gives ranks other rows of the batch, so their masks differ anyway.)
    """
    digest = hashlib.blake2b(f"{seed}/{rank}/{step}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


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


def check_replicas(model: nn.Module, *, rank: int, world: int) -> None:
    """With several processes: rank 0 says whether the replicas are identical; a RuntimeError if not."""
    if world == 1:
        return
    diff = replica_difference(model)
    if rank == 0:
        print(f"[minigpt] {world} replicas identical: {'yes' if diff == 0 else 'NO'} (max |difference| {diff:g})")
    if diff > 0:
        raise RuntimeError(f"data-parallel replicas diverged (max |difference| {diff:g}): "
                           "this is a bug; please report it with your command line")


def end_process_group() -> None:
    """Close the default process group, if this process has one; call it once per process, last.

    A gloo process group left open has worker threads that the interpreter's teardown
    can destroy while they are still joinable: C++ then calls ``std::terminate``
    ("terminate called without an active exception") and the process dies with SIGABRT
    *after* a successful run, now and then, depending on timing. Closing the group
    while Python is fully alive removes the race. No collective runs here, so a rank
    that ends early on an error does not wait for the others.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
