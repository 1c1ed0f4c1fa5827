"""Training batches made in a background process, so the model never waits for Python.

Tokenizing, packing and shuffling (batching.py) are pure Python: done in the
training loop they stall every step, and on a GPU the GPU waits for the CPU. So
:class:`BackgroundBatches` runs the very same :func:`~minigpt_helpers.batching.train_batches`
in a worker process of a ``torch.utils.data.DataLoader``, behind a bounded queue
of ``prefetch`` ready batches:

* the worker sends contiguous ``(x, y)`` CPU tensors, each with the stream
  position *after* it, a group at a time (a transfer between processes costs
  ~1-3 ms whatever its size, so small batches travel ~64k tokens together); the
  DataLoader pins them (CUDA) and the training process copies them to the
  device with ``non_blocking=True``;
* :meth:`BackgroundBatches.position` is the position after the last batch the
  training loop *consumed*, not the last one produced, so a checkpoint resumes
  exactly; the batches are the same as the in-process ones, batch for batch;
* the worker ignores Ctrl-C and SIGTERM (a terminal, or Slurm, sends them to
  every process of the job):
  the training process decides when to stop and shuts the worker down
  (:meth:`close`) at the end, on Ctrl-C and on errors; a worker whose parent
  dies exits by itself (the DataLoader's watchdog);
* a data error in the worker (too little text, a bad file) is raised in the
  training process as the original exception, when the pipeline starts.

On Linux the worker is forked (nothing needs pickling). Elsewhere it is spawned,
which needs the documents and the tokenizer to pickle; if they do not, batches
are made in the training process instead, and the pipeline says so. One worker
per process (per rank): it tokenizes the whole stream, like the in-process path.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
from typing import Any

import torch

from .batching import StreamPosition, Texts, train_batches


class _WorkerError:
    """An exception raised in the worker, carried to the training process to be raised there."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


GROUP_TOKENS = 1 << 16  # tokens sent per transfer: each costs ~1-3 ms, whatever its size (measured)


class _BatchSource(torch.utils.data.IterableDataset):
    """The worker's side: ``train_batches`` on the CPU, sent ``group`` batches at a time.

    Each item is ``(xs, ys, positions)``: ``(group, B, T)`` tensors and the stream
    position after each of the batches.
    """

    def __init__(self, docs: Texts, tokenizer: Any, kwargs: dict[str, Any], group: int) -> None:
        self.docs, self.tokenizer, self.kwargs, self.group = docs, tokenizer, kwargs, group

    def __iter__(self):
        try:
            batches = train_batches(self.docs, self.tokenizer, device="cpu", **self.kwargs)
            while True:
                xs, ys, positions = [], [], []
                for _ in range(self.group):
                    x, y = next(batches)
                    xs.append(x)
                    ys.append(y)
                    positions.append(batches.position().to_dict())
                yield torch.stack(xs), torch.stack(ys), positions
        except Exception as e:  # noqa: BLE001 - every data error goes to the training process
            yield _WorkerError(e)


def _init_worker(worker_id: int) -> None:
    # The training process decides when to stop: a terminal's Ctrl-C and Slurm's SIGTERM reach
    # every process of the job, and a worker dying of them would turn a clean stop into an error.
    # (Shutdown does not need signals: close() tells the worker to exit, and it exits by itself
    # if the training process dies.)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    # A datasets stream that sees it runs in a DataLoader worker shards and orders itself
    # for that worker; ours must yield exactly what it yields in the training process.
    # (torch reads this only for get_worker_info(); the worker loop keeps its own copy.)
    torch.utils.data._utils.worker._worker_info = None


def _context() -> str:
    return "fork" if sys.platform.startswith("linux") and "fork" in multiprocessing.get_all_start_methods() \
        else "spawn"


class BackgroundBatches:
    """``(x, y)`` batches of ``train_batches(...)``, made by a worker process; see the module docstring.

    Use as an iterator (``next(batches)``), read :meth:`position` for checkpoints,
    and :meth:`close` it (or use ``with``) when training ends.
    """

    def __init__(self, docs: Texts, tokenizer: Any, block_size: int, batch_size: int, *,
                 device: torch.device | str = "cpu", prefetch: int = 4, verbose: bool = True,
                 **kwargs: Any) -> None:
        self.device = torch.device(device)
        kwargs.update(block_size=block_size, batch_size=batch_size)
        position = kwargs.get("position")
        self._position = StreamPosition.from_dict(position) if isinstance(position, dict) \
            else StreamPosition(**vars(position)) if position else StreamPosition()
        # A transfer between processes costs ~1-3 ms whatever its size (shared memory, a file
        # descriptor): for small batches that is most of a fast step, so batches travel in groups.
        group = max(1, min(64, GROUP_TOKENS // (batch_size * (block_size + 1))))
        source = _BatchSource(docs, tokenizer, kwargs, group)
        self._ready: list[tuple[torch.Tensor, torch.Tensor, dict[str, int]]] = []
        self.in_process = False
        try:
            loader = torch.utils.data.DataLoader(
                source, batch_size=None, num_workers=1, prefetch_factor=max(1, prefetch),
                pin_memory=self.device.type == "cuda", worker_init_fn=_init_worker,
                multiprocessing_context=_context())
            self._it = iter(loader)
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # spawn could not pickle the data
            if verbose:
                print(f"[minigpt] data: batches are made in the training process ({type(e).__name__}: {e})")
            self.in_process = True
            self._it = iter(source)
        self._fetch()  # start the pipeline now: a data error surfaces here, not mid-training

    def _fetch(self) -> None:
        item = next(self._it)
        if isinstance(item, _WorkerError):
            self.close()
            raise item.error
        xs, ys, positions = item
        self._ready = [(xs[i], ys[i], p) for i, p in enumerate(positions)][::-1]  # popped from the end

    def __iter__(self) -> BackgroundBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        if not self._ready:
            self._fetch()
        x, y, position = self._ready.pop()
        self._position = StreamPosition.from_dict(position)
        non_blocking = self.device.type == "cuda"  # the DataLoader pinned them: the copy overlaps compute
        return x.to(self.device, non_blocking=non_blocking), y.to(self.device, non_blocking=non_blocking)

    def position(self) -> StreamPosition:
        """The position after the last batch consumed (a copy: safe to store in a checkpoint)."""
        return StreamPosition(**vars(self._position))

    def close(self) -> None:
        """Stop the worker (idempotent)."""
        shutdown = getattr(self._it, "_shutdown_workers", None)
        if shutdown is not None:
            shutdown()
        self._it = iter(())

    def __enter__(self) -> BackgroundBatches:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
