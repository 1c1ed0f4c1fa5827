"""Data-pipeline throughput: our datasets-based stream vs plain Python over the same files.

The reference reads the same Shakespeare files and splits them into the same
scenes with no ``datasets`` machinery, so the ratio is the price (or not) of the
streaming API. Tokens/s adds the course's default tokenizer on top of each.
"""

from __future__ import annotations

import time

from common import Result

from minigpt_helpers import data, stream_documents


def _ours(limit: int | None):
    ds = stream_documents("shakespeare", verbose=False)
    return [row["text"] for row in (ds.take(limit) if limit else ds)]


def _plain(limit: int | None):
    files = sorted(map(str, data.shakespeare_dir().glob("*_gut.txt")))
    out = [row["text"] for row in data._shakespeare_gen(files) if not data._is_validation(row["text"])]
    return out[:limit] if limit else out


def _timed(fn, repeat: int):
    best, result = float("inf"), None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    return best, result


def run(quick: bool) -> list[Result]:
    limit = 60 if quick else None
    repeat = 1 if quick else 3
    # interleave the two sides so machine noise hits both alike
    t_plain, docs_plain = _timed(lambda: _plain(limit), repeat)
    t_ours, docs = _timed(lambda: _ours(limit), repeat)
    t_plain = min(t_plain, _timed(lambda: _plain(limit), repeat)[0])
    assert docs == docs_plain, "the stream and the plain reader disagree"
    mb = sum(len(d.encode("utf-8")) for d in docs) / 1e6
    results = [
        Result("data: Shakespeare stream, documents/s", len(docs) / t_ours, len(docs) / t_plain,
               "plain Python", "docs/s"),
        Result("data: Shakespeare stream, MB/s", mb / t_ours, mb / t_plain, "plain Python", "MB/s",
               note=f"{len(docs)} documents, {mb:.1f} MB of training split"),
    ]
    try:
        from minigpt_helpers import default_tokenizer
    except ImportError:  # chapter 02 not there yet
        return results
    tok = default_tokenizer()
    sample = docs[: max(10, len(docs) // 4)]

    def tokens_stream():
        return sum(len(tok.encode(t)) for t in (r["text"] for r in stream_documents("shakespeare", verbose=False)
                                                .take(len(sample))))

    def tokens_plain():
        return sum(len(tok.encode(t)) for t in sample)

    t_tp, n = _timed(tokens_plain, repeat)
    t_ts, n2 = _timed(tokens_stream, repeat)
    assert n == n2
    results.append(Result(f"data+tokenize ({type(tok).__name__}), tokens/s", n / t_ts, n / t_tp,
                          "tokenize in-memory list", "tok/s"))
    return results
