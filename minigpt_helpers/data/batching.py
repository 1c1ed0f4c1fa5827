"""From a stream of documents to training batches, with a position you can resume from.

The stream is tokenized document by document, with ``<|endoftext|>`` after each
document, and cut into contiguous, non-overlapping windows of ``block_size + 1``
tokens: no padding, and every token lands in exactly one window. A window ``w``
gives an input ``x = w[:-1]`` and a target ``y = w[1:]`` (the next token at
every position).

Two details make this a good training stream:

* **Local shuffling.** Consecutive windows come from the same document, so a
  batch of them would be highly correlated. We fill a *chunk* of
  ``shuffle_windows`` windows, shuffle it with a seed derived from where the
  chunk starts, and serve from it. A long text file then trains almost as well as
  random sampling, while everything stays deterministic.
* **A resumable position.** :class:`StreamPosition` (epoch, document, token
  offset of the current chunk, windows already served from it) is all that a
  checkpoint needs to continue *exactly* where training stopped: rebuild the
  chunk, reshuffle it with the same seed, skip the windows already used.

For data-parallel training each process (rank) takes a disjoint slice of every
global batch: rank ``r`` of ``W`` gets rows ``r*B:(r+1)*B`` of the ``W*B``
windows a single process would have used. We shard at the window level rather
than by document (``datasets.distributed.split_dataset_by_node``) because a
single text file is *one* document, which a document-level split would hand to
one rank only, and because it makes ``W`` processes with batch ``B`` see exactly
the batches of one process with batch ``W*B``.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import torch

Texts = Iterable[Any]  # strings, or dicts with a "text" field (a datasets.IterableDataset)


def doc_text(doc: Any) -> str:
    """A document's text: the string itself, or a row's ``"text"``."""
    return doc["text"] if isinstance(doc, dict) else doc


EOT_TEXT = "<|endoftext|>"


def encode_text(tokenizer, text: str) -> list[int]:
    """``tokenizer.encode(text)``, with a literal "<|endoftext|>" in the text encoded as ordinary text.

    Web text does contain that string; it must not end a document early, and it
    must not stop training either (our tokenizers refuse it in ``encode`` by default).
    ``tokenizer.encode_ordinary`` (the course's tokenizers; tiktoken's encodings too)
    encodes the whole text as if there were no special token, so the literal's bytes
    go through the same merges as the text around it: the same ids as ordinary BPE.
    A tokenizer without that method gets the text cut at the literal, which is then
    encoded in two pieces apart from its neighbours (never the end-of-text id).
    """
    if EOT_TEXT not in text:
        return tokenizer.encode(text)
    ordinary = getattr(tokenizer, "encode_ordinary", None)
    if ordinary is not None:
        return list(ordinary(text))
    return encode_around_literal(tokenizer.encode, text)


def encode_around_literal(encode: Callable[[str], list[int]], text: str) -> list[int]:
    """``encode`` applied to ``text`` cut at each literal "<|endoftext|>", the literal itself as the two
    pieces ``<|endoftext`` and ``|>``: never the end-of-text id, for a tokenizer that cannot encode the
    literal as ordinary text (its tokens at the cuts may differ from what whole-text encoding would give)."""
    ids: list[int] = []
    for i, part in enumerate(text.split(EOT_TEXT)):
        if i:
            ids += encode(EOT_TEXT[:-2]) + encode(EOT_TEXT[-2:])
        if part:
            ids += encode(part)
    return ids


def _continues(doc: Any, prev: Any) -> bool:
    """True for a row that carries on ``prev``'s document: the next piece of the same long .txt file.

    The source must match too: in a shuffled stream a piece can follow a piece of another file.
    """
    return (isinstance(doc, dict) and bool(doc.get("continues"))
            and isinstance(prev, dict) and doc.get("source") == prev.get("source"))


def rows_from(docs: Texts, start_doc: int = 0, cursor: dict | None = None) -> Iterator[tuple[int, Any]]:
    """``(index, row)`` for each row of ``docs`` from ``start_doc`` on.

    A source with an ``iter_from(n)`` method (the row protocol,
    :class:`~minigpt_helpers.data.rows.DocumentRows`) is asked to start at row ``n``:
    a seekable one (``.txt`` pieces, RedPajama) need not even read the rows before;
    others are read and skipped. ``cursor`` (the ``"cursor"`` of row ``n`` of a source
    whose rows carry one, e.g. RedPajama's :class:`~minigpt_helpers.data.mixed_rows.MixedRows`)
    is passed on to ``iter_from``.
    """
    if start_doc and hasattr(docs, "iter_from"):  # a source that can seek: no re-reading
        rows = docs.iter_from(start_doc) if cursor is None else docs.iter_from(start_doc, cursor)
        return enumerate(rows, start=start_doc)
    return ((i, doc) for i, doc in enumerate(docs) if i >= start_doc)


def mark_ends(rows: Iterable[tuple[int, list[int], Any]], eot: int) -> Iterator[tuple[int, list[int], Any]]:
    """``(index, ids, row)`` -> the same with ``<|endoftext|>`` after each document's last row.

    A row marked ``{"continues": True}`` carries on the previous row's document (see
    :func:`document_tokens`), so a row's EOT is decided when the next row is seen.
    """
    held: tuple[int, list[int], Any] | None = None  # the previous row, until we know whether its document ends
    for i, ids, doc in rows:
        if held is not None:
            yield held[0], held[1] if _continues(doc, held[2]) else held[1] + [eot], held[2]
        held = (i, ids, doc)
    if held is not None:
        yield held[0], held[1] + [eot], held[2]


def cursor_of(row: Any) -> dict | None:
    """The cursor a row carries (the state that restarts its source at it), if any."""
    return row.get("cursor") if isinstance(row, dict) else None


def row_tokens(docs: Texts, tokenizer, start_doc: int = 0,
                cursor: dict | None = None) -> Iterator[tuple[int, list[int], Any]]:
    """:func:`document_tokens` with each row alongside: ``(index, ids, row)``."""
    return mark_ends(((i, encode_text(tokenizer, doc_text(doc)), doc) for i, doc in rows_from(docs, start_doc, cursor)),
                     tokenizer.eot_id)


def document_tokens(docs: Texts, tokenizer, *, start_doc: int = 0) -> Iterator[tuple[int, list[int]]]:
    """Yield ``(index, ids)`` for each row from ``start_doc`` on, with ``<|endoftext|>`` after each document.

    Rows before ``start_doc`` are skipped without being tokenized (that is what
    makes resuming cheap); a source with an ``iter_from(n)`` method is asked to
    start at row ``n`` instead, so it need not even read the rows before. A row marked ``{"continues": True}`` is the next piece
    of the previous row's document when both come from the same ``source`` (a long
    ``.txt`` file is streamed in ~64 KiB pieces): no end-of-text token goes between them, only after the last piece,
    so a row's EOT is decided when the next row is seen. A literal
    "<|endoftext|>" inside a text is text, never the separator (see :func:`encode_text`).
    """
    return ((i, ids) for i, ids, _ in row_tokens(docs, tokenizer, start_doc))


def pack_windows(docs: Texts, tokenizer, block_size: int) -> Iterator[list[int]]:
    """Contiguous ``block_size + 1`` windows of the tokenized stream (one pass, no shuffling).

    Concatenating the windows gives back the token stream exactly, except for the
    final tail shorter than a window, which is dropped.
    """
    n = block_size + 1
    buf: list[int] = []
    for _, ids in document_tokens(docs, tokenizer):
        buf.extend(ids)
        start = 0
        while start + n <= len(buf):  # by index: deleting from the front is quadratic
            yield buf[start: start + n]
            start += n
        buf = buf[start:]


@dataclass
class StreamPosition:
    """Where the training stream is: enough to rebuild it exactly after a restart.

    ``epoch, doc, offset`` is where the current shuffle chunk starts (document
    ``doc`` of pass ``epoch``, ``offset`` tokens into it, counting its EOT);
    ``served`` is how many windows of that chunk are already used (by all ranks).
    ``cursor``: for a source whose rows carry one (RedPajama), the cursor of row
    ``doc``, so that a resume seeks there instead of reading the rows before.
    """

    epoch: int = 0
    doc: int = 0
    offset: int = 0
    served: int = 0
    cursor: dict | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> StreamPosition:
        return cls(**{k: int(d[k]) for k in ("epoch", "doc", "offset", "served")}, cursor=d.get("cursor"))


class PackedStream:
    """An endless, resumable iterator of ``block_size + 1`` windows, shuffled within chunks.

    ``docs_for_epoch(epoch)`` returns the documents of one pass over the data
    (so each epoch can be shuffled differently). A pass whose token count is not a
    multiple of the window drops its last partial window.
    """

    def __init__(self, docs_for_epoch: Callable[[int], Texts], tokenizer, block_size: int, *,
                 shuffle_windows: int = 1024, seed: int = 0, position: StreamPosition | None = None,
                 tokens: Callable[[int, int, dict | None], Iterator[tuple[int, list[int], Any]]] | None = None,
                 ) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be >= 1, got {block_size}")
        self.docs_for_epoch = docs_for_epoch
        self.tokenizer = tokenizer
        self.window = block_size + 1
        self.shuffle_windows = max(1, int(shuffle_windows))
        self.seed = seed
        # (epoch, start_doc, cursor) -> (index, ids, row) of each row from start_doc on, EOTs placed: made
        # here, or the same by several worker processes (pipeline.ParallelTokens)
        self.tokens = tokens or (lambda epoch, doc, cursor: row_tokens(self.docs_for_epoch(epoch), self.tokenizer,
                                                                        doc, cursor))
        self.pos = StreamPosition(**asdict(position)) if position else StreamPosition()
        self._chunk: list[list[int]] = []
        self._next: tuple[int, int, int, dict | None] = (0, 0, 0, None)  # where the chunk after this one starts
        self._live: tuple | None = None  # (start, ids, open document iterator) of the next chunk
        self._load_chunk()

    def _load_chunk(self) -> None:
        """Fill the chunk that starts at ``self.pos`` (epoch, doc, offset) and shuffle it.

        In a straight run the document iterator stays open from chunk to chunk (a
        long document is tokenized once); after a restart it is reopened at ``doc``.
        """
        epoch, doc, offset = self.pos.epoch, self.pos.doc, self.pos.offset
        for attempt in range(2):  # the chunk may start exactly at the end of a pass
            if self._live is not None and self._live[0] == (epoch, doc, offset):
                _, ids, row, raw = self._live
                docs = itertools.chain([(doc, ids, row)], raw)
            else:
                self.close()
                raw = self.tokens(epoch, doc, self.pos.cursor if (epoch, doc) == (self.pos.epoch, self.pos.doc)
                                  else None)
                docs = raw
            self._live = None
            chunk: list[list[int]] = []
            buf: list[int] = []  # the start of a window that spans documents (< one window)
            nxt = None
            for i, ids, row in docs:
                # Cut windows by index: ``del buf[:n]`` on a long document's token list
                # would shift the whole list for every window (quadratic in its length).
                start, n = (offset if i == doc else 0), len(ids)
                if buf:  # finish the window begun in earlier documents
                    need = self.window - len(buf)
                    buf.extend(ids[start: start + need])
                    start = min(n, start + need)
                    if len(buf) < self.window:
                        continue
                    chunk.append(buf)
                    buf = []
                while len(chunk) < self.shuffle_windows and start + self.window <= n:
                    chunk.append(ids[start: start + self.window])
                    start += self.window
                if len(chunk) == self.shuffle_windows:
                    nxt = (epoch, i, start, cursor_of(row))  # the next chunk starts at the first unused token
                    self._live = (nxt[:3], ids, row, raw)
                    break
                buf = ids[start:]
            if nxt is None:  # the pass ended inside this chunk: next chunk opens the next pass
                nxt = (epoch + 1, 0, 0, None)
            if chunk:
                break
            if attempt == 0 and (doc, offset) != (0, 0):
                epoch, doc, offset = epoch + 1, 0, 0  # we were at the very end of a pass: roll over
                self.pos = StreamPosition(epoch, 0, 0, self.pos.served)
                continue
            raise ValueError(
                f"the data has fewer than block_size + 1 = {self.window} tokens in a whole pass: "
                "use more text or a smaller block_size"
            )
        rng = random.Random(f"{self.seed}/{epoch}/{doc}/{offset}")
        rng.shuffle(chunk)
        self._chunk, self._next = chunk, nxt

    def __iter__(self) -> PackedStream:
        return self

    def __next__(self) -> list[int]:
        while self.pos.served >= len(self._chunk):
            epoch, doc, offset, cursor = self._next
            self.pos = StreamPosition(epoch, doc, offset, self.pos.served - len(self._chunk), cursor)
            self._load_chunk()
        w = self._chunk[self.pos.served]
        self.pos.served += 1
        return w

    def position(self) -> StreamPosition:
        """The position of the next window (a copy: safe to store in a checkpoint)."""
        return StreamPosition(**asdict(self.pos))

    def close(self) -> None:
        """Close the open document iterator, if any (it may hold worker processes)."""
        live, self._live = self._live, None
        if live is not None:
            getattr(live[3], "close", lambda: None)()


class TrainBatches:
    """Batches ``(x, y)`` of shape ``(batch_size, block_size)`` for one rank of ``world_size``.

    Each call to ``next()`` consumes ``world_size * batch_size`` windows of the
    shared stream and returns this rank's ``batch_size`` of them.
    """

    def __init__(self, stream: PackedStream, batch_size: int, *, rank: int = 0, world_size: int = 1,
                 device: torch.device | str = "cpu") -> None:
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} must be in [0, world_size={world_size})")
        self.stream, self.batch_size, self.rank, self.world_size = stream, batch_size, rank, world_size
        self.device = torch.device(device)

    def __iter__(self) -> TrainBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        rows = [next(self.stream) for _ in range(self.batch_size * self.world_size)]
        mine = rows[self.rank * self.batch_size: (self.rank + 1) * self.batch_size]
        t = torch.tensor(mine, dtype=torch.long)  # (B, T+1)
        x, y = t[:, :-1].contiguous(), t[:, 1:].contiguous()  # (B, T) each
        if self.device.type == "cuda":
            return (x.pin_memory().to(self.device, non_blocking=True),
                    y.pin_memory().to(self.device, non_blocking=True))
        return x.to(self.device), y.to(self.device)

    def position(self) -> StreamPosition:
        return self.stream.position()

    def close(self) -> None:
        """Release the stream's document iterator (and any worker processes behind it)."""
        self.stream.close()


def train_batches(docs: Texts | Callable[[int], Texts], tokenizer, block_size: int, batch_size: int, *,
                  shuffle_windows: int = 1024, seed: int = 0, position: StreamPosition | dict | None = None,
                  rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu",
                  token_source: Callable[..., Callable[[int, int, dict | None], Iterator]] | None = None,
                  ) -> TrainBatches:
    """Endless training batches from ``docs`` (re-read for each pass), resumable from ``position``.

    ``docs`` is a list of strings, a ``datasets.IterableDataset`` of ``{"text"}``
    rows (its ``set_epoch`` is called so a shuffled stream reshuffles each pass),
    or a function ``epoch -> documents``. ``token_source(docs_for_epoch, tokenizer)``,
    if given, makes the tokens instead of :func:`document_tokens` (the same tokens:
    e.g. ``pipeline.ParallelTokens``, several processes at once).
    """
    if callable(docs) and not hasattr(docs, "__iter__"):
        docs_for_epoch = docs
    else:
        def docs_for_epoch(epoch: int, _docs=docs) -> Texts:
            if hasattr(_docs, "set_epoch"):
                _docs.set_epoch(epoch)
            return _docs
    if isinstance(position, dict):
        position = StreamPosition.from_dict(position)
    tokens = token_source(docs_for_epoch, tokenizer) if token_source is not None else None
    stream = PackedStream(docs_for_epoch, tokenizer, block_size, shuffle_windows=shuffle_windows,
                          seed=seed, position=position, tokens=tokens)
    return TrainBatches(stream, batch_size, rank=rank, world_size=world_size, device=device)


def val_windows(docs: Texts, tokenizer, block_size: int, max_windows: int) -> torch.Tensor | None:
    """The first ``max_windows`` windows of the held-out split as one tensor ``(N, block_size + 1)``.

    Fixed once, so every evaluation scores the same tokens and curves are
    comparable. None (with the reason printed) if the split is too short.
    """
    rows: list[list[int]] = []
    for w in pack_windows(docs, tokenizer, block_size):
        rows.append(w)
        if len(rows) >= max_windows:
            break
    if not rows:
        print(f"[minigpt] validation data has fewer than {block_size + 1} tokens: no validation loss")
        return None
    return torch.tensor(rows, dtype=torch.long)
