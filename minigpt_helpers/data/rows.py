"""What every source's documents share: the train/validation split and reading JSON Lines.

A document is a row ``{"text": str, "source": str}``. Every source (RedPajama, the
Shakespeare corpus, your own ``.txt`` / JSONL / Parquet files) puts a document on the
validation side by :func:`is_validation`, so a document never changes sides between
runs, machines or sources.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

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
