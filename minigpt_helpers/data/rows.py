"""What every source's documents share: the row protocol, the train/validation split, reading JSON Lines.

A document is a row ``{"text": str, "source": str}``. Every source (RedPajama, the
Shakespeare corpus, your own ``.txt`` / JSONL / Parquet files) gives one split of its
documents as a :class:`DocumentRows`: iterable from the start, resumable from row ``n``
(by a seek where the source can), and viewable as a ``datasets.IterableDataset``.
Every source but ``.txt`` files (split by position, see textfiles.py) puts a document
on the validation side by :func:`is_validation`, so a document never changes sides
between runs, machines or sources.
"""

from __future__ import annotations

import abc
import itertools
import json
import operator
import zlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # datasets is imported lazily: it is slow to import, and only the datasets view needs it
    from datasets import IterableDataset

VAL_FRACTION = 0.10
JSONL_HINT = 'each line must be one JSON object with a "text" string, e.g. {"text": "Once upon a time..."}'


def is_validation(text: str) -> bool:
    """Whether ``text`` is in the validation split: a stable hash, so the same text always lands on the same side.

    About :data:`VAL_FRACTION` of the documents are; the split needs no index and no state.
    """
    return zlib.crc32(text.encode("utf-8")) % 10_000 < VAL_FRACTION * 10_000


def json_lines(f: Iterable[str], path: str | Path, hint: str) -> Iterator[tuple[int, Any]]:
    """``(line number, object)`` for each non-blank line of an open JSON Lines file.

    A line that is not JSON raises a ValueError naming the file, the line and
    ``hint`` (what each line should hold). Shared by the text reader (sources.py) and
    ``instructions.read_conversations``.
    """
    for n, line in enumerate(f, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}, line {n}: not valid JSON ({e.msg}, column {e.colno}); {hint}") from None
        yield n, row


def row_index(n: Any) -> int:
    """``n`` as a row index (an int >= 0), checked: a TypeError or ValueError saying what ``n`` must be."""
    if isinstance(n, bool):
        raise TypeError("n must be an integer row index, not a bool")
    try:
        n = operator.index(n)
    except TypeError:
        raise TypeError(f"n must be an integer row index, not {type(n).__name__}") from None
    if n < 0:
        raise ValueError(f"n must be >= 0 (a row index), got {n}")
    return n


#: The value type of each column a source's rows may have, for the ``datasets`` view.
COLUMN_TYPES = {"text": "string", "source": "string", "continues": "bool"}


class DocumentRows(abc.ABC):
    """The row protocol: one split of one source's documents, read again from the start or from row ``n``.

    Every source provides it: RedPajama (:class:`~minigpt_helpers.data.mixed_rows.MixedRows`,
    from the Hub or a local copy), ``.txt`` files
    (:class:`~minigpt_helpers.data.textfiles.TextFilePieces`), JSONL/JSON/Parquet files and
    the offline Shakespeare corpus (:mod:`minigpt_helpers.data.sources`). A row is a dict
    ``{"text": str, "source": str, ...}``; the extra keys a source adds are its own
    (``continues``: this row carries on the previous row's document; ``cursor``: the
    state that restarts the source at this row; ``piece``).

    * ``iter(rows)`` reads every row of the split, from the start, every time.
    * ``rows.iter_from(n, cursor)`` yields rows ``n, n + 1, ...``. A ``seekable``
      source finds row ``n`` without reading the rows before it (from ``cursor``,
      row ``n``'s ``"cursor"``, when its rows carry one); any other reads and
      skips ``n`` rows (:func:`skip_rows`).
    * ``rows.to_dataset()`` is a ``datasets.IterableDataset`` over the same rows
      (the ``columns`` only), for code that wants ``.shuffle``, ``.map``, ``.take``.
    * ``set_epoch(epoch)`` does nothing: the rows come in the same order every pass
      (the batching code calls it when present; a shuffled ``datasets`` view reshuffles).

    A subclass holds paths and numbers only (no open file), so it pickles, e.g. to a
    ``DataLoader`` worker. Subclasses define :meth:`iter_from`, and :meth:`shards` /
    :meth:`with_shards` when their files may be read in any order (a ``datasets``
    view then shuffles their order and splits them between workers).
    """

    split: str
    columns: tuple[str, ...] = ("text", "source")  #: the columns of the ``datasets`` view
    seekable: bool = False  #: True when :meth:`iter_from` finds row ``n`` without reading the rows before it

    @abc.abstractmethod
    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        """Rows ``n, n + 1, ...`` (none past the end)."""

    def __iter__(self) -> Iterator[dict]:
        return self.iter_from(0)

    def set_epoch(self, epoch: int) -> None:  # noqa: B027 - a no-op on purpose, not a method to define
        """Nothing to do: the rows come in the same order every pass (present for the batching code)."""

    def shards(self) -> tuple[str, ...] | None:
        """The files a ``datasets`` view may reorder and split between workers, or None: one stream."""
        return None

    def with_shards(self, shards: Sequence[str]) -> DocumentRows:
        """The same source over ``shards`` (some of :meth:`shards`, in that order)."""
        raise NotImplementedError(f"{type(self).__name__} is one stream: it has no shards")

    def to_dataset(self) -> IterableDataset:
        """A ``datasets.IterableDataset`` of these rows' :attr:`columns`, read through this object.

        With :meth:`shards`, each file is a shard (a list in ``gen_kwargs``): ``.shuffle``
        then also shuffles the file order, and workers read whole files.
        """
        from datasets import Features, IterableDataset, Value

        features = Features({c: Value(COLUMN_TYPES[c]) for c in self.columns})
        shards = self.shards()
        kwargs: dict[str, Any] = {"rows": self}
        if shards is not None:
            kwargs["shards"] = list(shards)
        return IterableDataset.from_generator(_view_rows, gen_kwargs=kwargs, features=features)


def _view_rows(rows: DocumentRows, shards: list[str] | None = None) -> Iterator[dict]:
    """The rows of a ``datasets`` view: ``rows`` (over ``shards`` when given), cut to its columns."""
    part = rows if shards is None else rows.with_shards(shards)
    for row in part:
        yield {c: row[c] for c in rows.columns}


def skip_rows(rows: Iterable[dict], n: int) -> Iterator[dict]:
    """Rows ``n, n + 1, ...`` of ``rows``, the ``n`` before read and dropped (a source that cannot seek)."""
    return itertools.islice(rows, row_index(n), None)


class ChainedRows(DocumentRows):
    """Several sources' rows of one split, one after the other (a folder of ``.txt`` and JSONL files).

    Not seekable: ``iter_from(n)`` reads and skips. Its ``datasets`` view concatenates
    the parts' views, so each part's files are shuffled among themselves.
    """

    def __init__(self, parts: Sequence[DocumentRows]) -> None:
        self.parts = tuple(parts)
        self.split = self.parts[0].split
        self.columns = tuple(dict.fromkeys(c for p in self.parts for c in p.columns))

    def __repr__(self) -> str:
        return f"ChainedRows({list(self.parts)!r})"

    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        return skip_rows(itertools.chain.from_iterable(self.parts), n)

    def to_dataset(self) -> IterableDataset:
        from datasets import concatenate_datasets

        return concatenate_datasets([p.to_dataset() for p in self.parts])
