"""Training batches made in a background process, so the model never waits for Python.

Tokenizing, packing and shuffling (batching.py) are pure Python: done in the
training loop they stall every step, and on a GPU the GPU waits for the CPU. So
:class:`BackgroundBatches` runs the very same :func:`~minigpt_helpers.data.batching.train_batches`
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
are made in the training process instead, and the pipeline says so.

One worker tokenizes the whole stream, like the in-process path; that is the
limit of :class:`BackgroundBatches` (about 1.5 M tokens/s of byte-level BPE on
one core, measured in ``make bench``). For more, :class:`ParallelTokens` spreads
the tokenizing over ``n`` worker processes (``TrainConfig(data_workers=n)``,
``n >= 2``): the rows are cut into groups of about ``GROUP_CHARS`` characters,
worker ``k`` tokenizes groups ``k, k + n, ...`` and the ``DataLoader`` hands them
back in order, so the training process gets exactly the tokens of
:func:`~minigpt_helpers.data.batching.document_tokens` and packs and shuffles them
itself (list slicing: cheap). The batches, their positions and resuming are
those of the one-process path, batch for batch. Every worker reads every row
(to cut the same groups) but tokenizes only its own: cheap for local files, but
a Hub stream is downloaded once per worker.
"""

from __future__ import annotations

import multiprocessing
import pickle
import signal
import sys
from array import array
from typing import Any

import torch

from .batching import (
    StreamPosition,
    Texts,
    doc_text,
    encode_text,
    mark_ends,
    row_tokens,
    rows_from,
    train_batches,
)


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


GROUP_CHARS = 1 << 18  # characters of rows per group that one ParallelTokens worker tokenizes and sends
_WORKER = {"id": 0}  # this process's worker id (0 in the training process)


def _init_worker(worker_id: int) -> None:
    _WORKER["id"] = worker_id
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


# ---------------------------------------------------------------------------- several tokenizing workers
def _meta(doc: Any) -> dict[str, Any] | None:
    """What :func:`~minigpt_helpers.data.batching.mark_ends` needs of a row (not its text)."""
    if not isinstance(doc, dict):
        return None
    return {"continues": doc.get("continues"), "source": doc.get("source"), "cursor": doc.get("cursor")}


class _TokenGroups(torch.utils.data.IterableDataset):
    """Worker ``k`` of ``n``: the rows from ``start`` on, cut into groups of ~``GROUP_CHARS`` characters
    (every worker cuts them alike), tokenized for groups ``k, k + n, ...`` only.

    Each item is ``(group, row indices, int32 token bytes, row lengths, row metas)``.
    """

    def __init__(self, docs: Texts, tokenizer: Any, start: int, workers: int, cursor: dict | None = None) -> None:
        self.docs, self.tokenizer, self.start, self.workers, self.cursor = docs, tokenizer, start, workers, cursor

    def _encode(self, g: int, rows: list[tuple[int, str, Any]]):
        ids = [encode_text(self.tokenizer, text) for _, text, _ in rows]
        flat = array("i", [t for row in ids for t in row])
        return g, [i for i, _, _ in rows], flat.tobytes(), [len(r) for r in ids], [m for _, _, m in rows]

    def __iter__(self):
        mine = _WORKER["id"]
        try:
            g, chars, rows = 0, 0, []
            for i, doc in rows_from(self.docs, self.start, self.cursor):
                text = doc_text(doc)
                if g % self.workers == mine:
                    rows.append((i, text, _meta(doc)))
                chars += len(text)
                if chars >= GROUP_CHARS:
                    if rows:
                        yield self._encode(g, rows)
                    g, chars, rows = g + 1, 0, []
            if rows:
                yield self._encode(g, rows)
        except Exception as e:  # noqa: BLE001 - every data error goes to the training process
            yield _WorkerError(e)


class ParallelTokens:
    """``(epoch, start_doc, cursor) -> (index, ids, row)``, tokenized by ``workers`` processes; see the module docstring.

    Pass it to ``train_batches(..., token_source=partial(ParallelTokens, workers=n))``.
    """

    def __init__(self, docs_for_epoch, tokenizer: Any, workers: int = 2, prefetch: int = 4) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.docs_for_epoch, self.tokenizer, self.workers, self.prefetch = docs_for_epoch, tokenizer, workers, prefetch

    def __call__(self, epoch: int, start: int, cursor: dict | None = None):
        source = _TokenGroups(self.docs_for_epoch(epoch), self.tokenizer, start, self.workers, cursor)
        loader = torch.utils.data.DataLoader(source, batch_size=None, num_workers=self.workers,
                                             prefetch_factor=max(1, self.prefetch), worker_init_fn=_init_worker,
                                             multiprocessing_context=_context())
        try:
            return self._rows(iter(loader))
        except (pickle.PicklingError, AttributeError, TypeError) as e:  # spawn could not pickle the data
            print(f"[minigpt] data: tokenizing in the training process ({type(e).__name__}: {e})")
            return row_tokens(self.docs_for_epoch(epoch), self.tokenizer, start, cursor)

    def _rows(self, it):
        """The groups back in order, as rows; the workers stop when this generator is closed or ends."""
        def rows():
            for expected, item in enumerate(it):
                if isinstance(item, _WorkerError):
                    raise item.error
                g, indices, flat, lengths, metas = item
                if g != expected:  # the DataLoader takes the workers' items in turn: order is the contract
                    raise RuntimeError(f"token groups out of order: got {g}, expected {expected}")
                ids = array("i")
                ids.frombytes(flat)
                tokens, at = ids.tolist(), 0
                for i, n, meta in zip(indices, lengths, metas):
                    yield i, tokens[at: at + n], meta
                    at += n
        try:
            yield from mark_ends(rows(), self.tokenizer.eot_id)
        finally:
            shutdown = getattr(it, "_shutdown_workers", None)
            if shutdown is not None:
                shutdown()
