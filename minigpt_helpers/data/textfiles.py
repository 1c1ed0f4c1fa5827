"""Plain ``.txt`` files streamed in pieces of about ``BLOCK_BYTES``, each found by a seek.

A ``.txt`` file is one long document. Reading it whole costs several times its
size in RAM (the bytes, the decoded ``str``, its tokens), so a 1 GB file would not
fit a laptop. Instead each split of the file (first 90 % train, last 10 %
validation) is read as consecutive *pieces*:

* **A fixed grid.** Piece ``k`` of a split starts at the first break at or after
  byte ``lo + k * block_bytes`` (``lo``: where the split starts), looking at most
  ``LOOKAHEAD_BYTES`` ahead: after a paragraph break (a line break followed by
  blank lines, the whole run of them) if there is one, else after a line break,
  else at the grid offset itself, moved to the next character boundary. So piece
  ``k`` is a function of the bytes near its grid offset only, and
  ``iter_text_pieces(path, split, start_piece=k)`` seeks straight to it without
  reading what comes before (a resume can restart at piece ``k`` in milliseconds).
* **Exact text.** Boundaries never split a UTF-8 character nor a ``"\\r\\n"``, so
  the pieces of both splits, joined, are exactly the file's text as
  ``open(path, encoding="utf-8-sig", errors="replace").read()`` gives it: a
  leading byte-order mark dropped, ``"\\r\\n"`` and ``"\\r"`` read as ``"\\n"``.
  (Invalid bytes become U+FFFD; only a boundary inside a run of them could
  change how many.)
* **The split cut, by bytes.** The train/validation cut is at 90 % of the
  file's *bytes* (after a byte-order mark), moved to the next line break within
  ``CUT_LOOKAHEAD_BYTES`` (else to the next character boundary), found with a
  few small reads, never by reading the whole text to count its *characters*.
  For ASCII text bytes and characters agree; where multi-byte characters are
  spread unevenly they differ: validation is 10 % of the bytes, e.g. for a file
  whose first half is Chinese (3 bytes a character) and second half English,
  20 % of the characters. Same file, same cut, always.
* **Flat memory.** One piece (about ``block_bytes`` plus the look-ahead) is held at
  a time, whatever the size of the file.

:class:`TextFilePieces` gives the rows of one split of a list of files as a
:class:`~minigpt_helpers.data.rows.DocumentRows` that pickles and seeks:
``iter_from(n)`` starts at row ``n`` from the earlier files' piece counts (a few
small reads each) and one seek. It is the one reader of ``.txt`` files: training
reads it, and :func:`minigpt_helpers.data.sources.local_files` is its ``datasets`` view.

Pieces are consecutive parts of one document: a consumer must not put an
``<|endoftext|>`` between them (:mod:`minigpt_helpers.data` marks every piece
after the first with ``"continues": True``).

Tokenization at a piece boundary: a piece ends after a whole run of blank lines
(or a line break), so the next one starts with a non-blank line. A tokenizer
that never merges across the end of such a run (the character tokenizer; our
byte-level BPE, whose split pattern ends a chunk at the last line break of a
whitespace run) encodes the pieces exactly as it would the whole text. A
SentencePiece model may have learnt pieces spanning a newline (e.g. "\\nThe"),
and a cut inside a line (no line break within the look-ahead) splits a word: a
token or two may then differ at that boundary, once per ~``BLOCK_BYTES``.
"""

from __future__ import annotations

import codecs
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any, BinaryIO, NamedTuple

from .rows import VAL_FRACTION, DocumentRows, row_index

BLOCK_BYTES = 1 << 16  # the grid of pieces: one piece starts near every BLOCK_BYTES bytes of a split
LOOKAHEAD_BYTES = 1 << 14  # how far past a grid offset a piece boundary looks for a break
CUT_LOOKAHEAD_BYTES = 1 << 12  # how far past 90 % of the file the train/validation cut looks for a line break
MIN_BLOCK_BYTES = 8  # a boundary stays inside its block (a character moves it up to 3 bytes): tiny blocks for tests

_BOM = codecs.BOM_UTF8
_PARAGRAPH = re.compile(rb"\n(?:[ \t\r\f\v]*\n)+")  # a line break, then one or more blank lines
_MAX_CONTINUATION = 3  # a UTF-8 character is at most 4 bytes: 1 lead byte and up to 3 continuation bytes


class TextPiece(NamedTuple):
    """Piece ``index`` of a split: bytes ``[start, end)`` of the file, decoded to ``text``."""

    index: int
    start: int
    end: int
    text: str


def _decode(data: bytes | memoryview) -> str:
    """UTF-8 bytes -> text as ``open(..., encoding="utf-8", errors="replace")`` reads it (universal newlines)."""
    text = str(data, "utf-8", "replace")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _char_boundary(data: bytes, at: int) -> int:
    """``at`` moved forward to the start of a character: past at most 3 UTF-8 continuation bytes."""
    p, stop = at, min(len(data), at + _MAX_CONTINUATION)
    while p < stop and 0x80 <= data[p] < 0xC0:
        p += 1
    return p


def _after_break(data: bytes, at: int, lookahead: int, paragraph: bool = True) -> int:
    """Where a boundary near ``at`` goes: just after the first paragraph break (if ``paragraph``) or else
    line break in ``data[at : at + lookahead]``, else ``at`` moved to a character boundary.

    ``data`` must run to ``at + max(lookahead, 3)`` or to the end of the range being cut, whichever
    comes first: the answer depends on those bytes only, so it is the same whether the caller read
    them in passing (a full pass) or by a seek (``start_piece``). A boundary never falls between the
    ``"\\r"`` and ``"\\n"`` of a line break: a ``"\\n"`` at ``at`` is a line break, found first.
    """
    window = data[at: at + lookahead]
    if paragraph:
        m = _PARAGRAPH.search(window)
        if m:
            return at + m.end()
    nl = window.find(b"\n")
    if nl >= 0:
        return at + nl + 1
    return _char_boundary(data, at)


def _read(f: BinaryIO, start: int, stop: int) -> bytes:
    f.seek(start)
    return f.read(max(0, stop - start))


def _reach(lookahead: int) -> int:
    """How many bytes past a grid offset :func:`_after_break` may look at."""
    return max(lookahead, _MAX_CONTINUATION)


def _split_range(f: BinaryIO, split: str, val_fraction: float) -> tuple[int, int]:
    size = os.fstat(f.fileno()).st_size
    base = len(_BOM) if _read(f, 0, len(_BOM)) == _BOM else 0  # utf-8-sig: a leading BOM is no text
    target = base + int((size - base) * (1 - val_fraction))
    if target <= base:
        cut = base
    else:
        data = _read(f, target, min(size, target + _reach(CUT_LOOKAHEAD_BYTES)))
        cut = target + _after_break(data, 0, CUT_LOOKAHEAD_BYTES, paragraph=False)
    if split == "train":
        return base, cut
    if split == "validation":
        return cut, size
    raise ValueError(f"split must be 'train' or 'validation', not {split!r}")


def split_range(path: str | os.PathLike, split: str, val_fraction: float = VAL_FRACTION) -> tuple[int, int]:
    """The bytes ``[start, end)`` of the file that ``split`` reads (a few small reads near the cut)."""
    with open(path, "rb") as f:
        return _split_range(f, split, val_fraction)


def _check_block(block_bytes: int | None) -> int:
    block = BLOCK_BYTES if block_bytes is None else int(block_bytes)
    if block < MIN_BLOCK_BYTES:
        raise ValueError(f"block_bytes must be >= {MIN_BLOCK_BYTES}, got {block}")
    return block


def _piece_start(f: BinaryIO, lo: int, hi: int, k: int, block: int, lookahead: int) -> int:
    """Where piece ``k >= 1`` of the split ``[lo, hi)`` starts (one read of ``lookahead`` bytes); ``hi`` if none."""
    grid = lo + k * block
    if grid >= hi:
        return hi
    return grid + _after_break(_read(f, grid, min(hi, grid + _reach(lookahead))), 0, lookahead)


def iter_text_pieces(path: str | os.PathLike, split: str = "train", start_piece: int = 0, *,
                     block_bytes: int | None = None, val_fraction: float = VAL_FRACTION) -> Iterator[TextPiece]:
    """The pieces ``start_piece, start_piece + 1, ...`` of ``split`` of a UTF-8 text file.

    ``start_piece=k`` seeks to piece ``k`` (one small read near its grid offset):
    it yields exactly what a full pass yields from piece ``k`` on. Every piece is
    non-empty; the first piece of a split has ``index == 0``. ``block_bytes``
    defaults to ``BLOCK_BYTES`` (read when called, so tests can change it).
    """
    block = _check_block(block_bytes)
    if start_piece < 0:
        raise ValueError(f"start_piece must be >= 0, got {start_piece}")
    # A boundary lies within `reach` bytes of its grid offset, so it stays before the next grid offset:
    # piece starts grow strictly, and each is found without knowing the one before.
    lookahead = min(LOOKAHEAD_BYTES, block - 1)
    reach = _reach(lookahead)
    with open(path, "rb") as f:
        lo, hi = _split_range(f, split, val_fraction)
        k = start_piece
        start = lo if k == 0 else _piece_start(f, lo, hi, k, block, lookahead)
        while start < hi:
            grid = lo + (k + 1) * block  # where the next piece's search begins
            data = _read(f, start, min(hi, grid + reach))
            end = hi if grid >= hi else start + _after_break(data, grid - start, lookahead)
            yield TextPiece(k, start, end, _decode(memoryview(data)[: end - start]))
            del data
            k, start = k + 1, end


def count_pieces(path: str | os.PathLike, split: str = "train", *, block_bytes: int | None = None,
                 val_fraction: float = VAL_FRACTION) -> int:
    """How many pieces :func:`iter_text_pieces` yields for ``split``, from a few small reads (no full read).

    Piece ``k`` starts within its block, so every grid offset inside the split
    starts a piece, except that the last one can vanish (its break ends the split):
    only where the last piece starts is read, not the piece.
    """
    block = _check_block(block_bytes)
    with open(path, "rb") as f:
        lo, hi = _split_range(f, split, val_fraction)
        n = -(-(hi - lo) // block)  # grid offsets lo, lo + block, ... below hi
        if n > 1 and _piece_start(f, lo, hi, n - 1, block, min(LOOKAHEAD_BYTES, block - 1)) >= hi:
            n -= 1
    return n


def _has_text(f: BinaryIO, lo: int, hi: int) -> bool:
    """Whether bytes ``[lo, hi)`` hold anything but whitespace (``str.strip``'s), read in growing chunks.

    Usually the first 4 KB answer. Decoded as the pieces are (invalid bytes -> U+FFFD, not
    whitespace), so it says whether some piece of the split has ``piece.text.strip()``.
    """
    decoder = codecs.getincrementaldecoder("utf-8")("replace")
    pos, size = lo, 1 << 12
    while pos < hi:
        data = _read(f, pos, min(hi, pos + size))
        if not data:  # the file shrank under us
            break
        pos += len(data)
        if decoder.decode(data, final=pos >= hi).strip():
            return True
        size = min(4 * size, BLOCK_BYTES)
    return False


def _stamp(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class TextFilePieces(DocumentRows):
    """The rows of one split of ``.txt`` files, file by file, piece by piece: iterable, picklable, seekable.

    A :class:`~minigpt_helpers.data.rows.DocumentRows`. Each row is
    ``{"text", "source", "continues", "piece"}``: ``source`` is the file's name,
    ``continues`` is True for every piece after the first of its file, ``piece`` is
    the piece's index in its file's split (the ``datasets`` view drops it). A split
    that holds only whitespace gives no row, and otherwise every piece of it is a
    row (leading blank pieces included).

    * ``iter(rows)`` reads all of them again, from the start, every time.
    * ``rows.iter_from(n)`` yields rows ``n, n + 1, ...`` reading only what they
      need: it finds row ``n`` from each earlier file's piece count (a few small
      reads per file, done once and cached) and seeks to it, so resuming deep
      into a 1 GB file costs a few MB of reads, not the 1 GB before it.
    * ``len(rows)`` is the number of rows (the same cached counts).

    It holds paths and numbers only (no open file), so it pickles, e.g. to a
    ``DataLoader`` worker. ``block_bytes`` (default ``BLOCK_BYTES``, read once
    here) and ``val_fraction`` are as for :func:`iter_text_pieces`. Cached counts
    are recomputed for a file whose size or modification time changed.
    """

    columns = ("text", "source", "continues")
    seekable = True

    def __init__(self, files: str | os.PathLike | list[str | os.PathLike] | tuple[str | os.PathLike, ...],
                 split: str = "train", *, block_bytes: int | None = None,
                 val_fraction: float = VAL_FRACTION) -> None:
        if isinstance(files, (str, os.PathLike)):
            files = [files]
        if isinstance(files, (bytes, dict)) or not hasattr(files, "__iter__"):
            raise TypeError(f"files must be a path or a list of paths to .txt files, not {type(files).__name__}")
        paths = []
        for p in files:
            if not isinstance(p, (str, os.PathLike)):
                raise TypeError(f"files must hold paths (str or pathlib.Path), not {type(p).__name__} {p!r:.60}")
            path = os.fspath(p)
            if os.path.splitext(path)[1] != ".txt":
                raise ValueError(f"{path} is not a .txt file: TextFilePieces reads plain .txt files "
                                 "(read .jsonl/.json/.parquet files with minigpt_helpers.data.sources.local_files)")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{path}: no such file; pass paths of existing .txt files")
            paths.append(path)
        if not paths:
            raise ValueError("files is empty: pass at least one .txt file")
        if split not in ("train", "validation"):
            raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
        if isinstance(val_fraction, bool) or not isinstance(val_fraction, (int, float)) \
                or not 0 <= val_fraction <= 1:
            raise ValueError(f"val_fraction must be a number in [0, 1], e.g. 0.1, got {val_fraction!r}")
        self.files: tuple[str, ...] = tuple(paths)
        self.split = split
        self.block_bytes = _check_block(block_bytes)
        self.val_fraction = float(val_fraction)
        self._counts: dict[int, tuple[tuple[int, int], int]] = {}  # file index -> (its stamp, its rows)

    def __repr__(self) -> str:
        return (f"TextFilePieces({len(self.files)} file{'s' * (len(self.files) != 1)}, split={self.split!r}, "
                f"block_bytes={self.block_bytes})")

    def _kw(self) -> dict:
        return {"block_bytes": self.block_bytes, "val_fraction": self.val_fraction}

    def _blank(self, path: str) -> bool:
        with open(path, "rb") as f:
            return not _has_text(f, *_split_range(f, self.split, self.val_fraction))

    def file_rows(self, i: int) -> int:
        """How many rows file ``i`` gives (0 for a blank split): a few small reads, then cached."""
        path = self.files[i]
        stamp = _stamp(path)
        cached = self._counts.get(i)
        if cached is None or cached[0] != stamp:
            n = 0 if self._blank(path) else count_pieces(path, self.split, **self._kw())
            self._counts[i] = cached = (stamp, n)
        return cached[1]

    def __len__(self) -> int:
        return sum(self.file_rows(i) for i in range(len(self.files)))

    def _rows(self, i: int, start: int) -> Iterator[dict]:
        path = self.files[i]
        if start == 0 and self._blank(path):  # from ``start > 0`` the caller knows it has rows
            return
        name = os.path.basename(path)
        for p in iter_text_pieces(path, self.split, start, **self._kw()):
            yield {"text": p.text, "source": name, "continues": p.index > 0, "piece": p.index}

    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        """Rows ``n, n + 1, ...`` (none past the end), reading only what they need (see the class).

        No cursor is needed (these rows carry none): row ``n`` is found from the piece counts.
        """
        return self._iter_from(row_index(n))

    def _iter_from(self, n: int) -> Iterator[dict]:
        i = 0
        while n > 0 and i < len(self.files):  # skip whole files by their counts
            c = self.file_rows(i)
            if n < c:
                break
            n, i = n - c, i + 1
        if i == len(self.files):
            return
        yield from self._rows(i, n)
        for j in range(i + 1, len(self.files)):
            yield from self._rows(j, 0)

    def shards(self) -> tuple[str, ...]:
        """The files: a ``datasets`` view may read them in any order (each one is its own document)."""
        return self.files

    def with_shards(self, shards: Sequence[str]) -> TextFilePieces:
        return TextFilePieces(list(shards), self.split, block_bytes=self.block_bytes, val_fraction=self.val_fraction)
