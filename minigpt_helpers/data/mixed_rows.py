"""RedPajama's mixed stream as rows that resume by seeking: a byte offset per file, not a re-read.

The RedPajama sample is one JSON Lines file per subset. ``datasets`` can save a
stream's place (``IterableDataset.state_dict()``), but within one file that place
is a count of examples, and ``load_state_dict`` gets back to it by reading the
file from its start and skipping them (``datasets/iterable_dataset.py``: an
``islice`` over the shard): for a single-file subset on the Hub, a resume
downloads everything before it again. So the course reads these files itself,
through ``fsspec`` (local paths, and ``hf://`` paths served by
``huggingface_hub.HfFileSystem``, which reads by HTTP range requests), and
every row carries a **cursor**: the state needed to start the stream at that row,

    {"row": n, "mix": MixState.to_dict(), "offsets": {subset: byte offset of its next line}}

:meth:`MixedRows.iter_from` ``(n, cursor)`` seeks each file to its offset and
continues the mix from its saved :class:`~minigpt_helpers.data.mixing.MixState`: no byte
before the offsets is read again. The training stream saves the cursor of the
row its current shuffle chunk starts at in its :class:`~minigpt_helpers.data.batching.StreamPosition`.

:func:`minigpt_helpers.data.sources.redpajama` is the ``datasets`` view of these rows
(:meth:`~minigpt_helpers.data.rows.DocumentRows.to_dataset`). Each file is hash-split on its own (a document
is in validation when the hash of its text says so), then mixed by byte share.
Without a cursor (an older checkpoint), ``iter_from(n)`` reads and skips ``n`` rows.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from .mixing import MixState, mix_by_share
from .rows import JSONL_HINT, DocumentRows, is_validation, row_index


def _open(url: str):
    """A binary, seekable file: a local path, or any ``fsspec`` URL (``hf://datasets/...``)."""
    if "://" not in url:
        return open(url, "rb")
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    return fs.open(path=path, mode="rb")


class MixedRows(DocumentRows):
    """The rows of one split of the RedPajama files ``names`` under ``base``, mixed by byte share.

    A :class:`~minigpt_helpers.data.rows.DocumentRows`: iterable (from the start) and
    seekable (:meth:`iter_from` with a cursor); it pickles, so a spawned
    ``DataLoader`` worker can read it. Each row is ``{"text", "source", "cursor"}``.
    Its ``datasets`` view is one stream (no shards): shuffling the file order or
    splitting files between workers would cut the one mix into independent pieces.
    """

    seekable = True

    def __init__(self, base: str, names: tuple[str, ...], split: str, seed: int, files: dict[str, str],
                 weights: dict[str, float]) -> None:
        self.base, self.names, self.split, self.seed = base.rstrip("/"), tuple(names), split, seed
        self.files, self.weights = dict(files), {n: weights[n] for n in names}

    def __repr__(self) -> str:
        return f"MixedRows({self.base!r}, {len(self.names)} subsets, split={self.split!r})"

    def _subset(self, name: str, offsets: dict[str, int]) -> Iterator[dict]:
        """The ``split`` rows of one file from ``offsets[name]`` on; ``offsets[name]`` follows each row yielded."""
        want_val = self.split == "validation"
        url = f"{self.base}/{self.files[name]}"
        with _open(url) as f:
            f.seek(offsets[name])
            at = offsets[name]
            for line in f:
                at += len(line)
                if not line.strip():
                    continue
                try:
                    text = json.loads(line)["text"]
                except (ValueError, KeyError, TypeError) as e:
                    raise ValueError(f"{url}, byte {at - len(line)}: not a JSON object with a \"text\" string "
                                     f"({type(e).__name__}: {e}); {JSONL_HINT}") from None
                if is_validation(text) != want_val:
                    continue
                offsets[name] = at  # before the yield: the mixer has taken this row when it gets it
                yield {"text": text, "source": f"redpajama/{name}"}

    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        """Rows ``n, n+1, ...``: by seeking when ``cursor`` is row ``n``'s, else by reading and skipping ``n``."""
        n = row_index(n)
        if cursor is not None and cursor.get("row") != n:
            raise ValueError(f"the cursor is for row {cursor.get('row')}, not row {n}")
        if cursor is not None:
            state, offsets = MixState.from_dict(cursor["mix"]), {k: int(v) for k, v in cursor["offsets"].items()}
        else:
            state, offsets = MixState(), {name: 0 for name in self.names}
        streams = {name: self._subset(name, offsets) for name in self.names}
        rows = mix_by_share(streams, self.weights, seed=self.seed, state=state, positioned=cursor is not None)
        before = cursor
        for i, doc in enumerate(rows, start=0 if cursor is None else n):
            if i >= n:
                yield {**doc, "cursor": before}
            # the mixer updated ``state`` and the reader ``offsets`` for this row: the next row starts here
            before = {"row": i + 1, "mix": state.to_dict(), "offsets": dict(offsets)}
