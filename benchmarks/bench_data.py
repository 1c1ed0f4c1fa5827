"""Data-pipeline throughput: our datasets-based stream vs plain Python over the same files.

The reference reads the same Shakespeare files and splits them into the same
scenes with no ``datasets`` machinery, so the ratio is the price (or not) of the
streaming API. Tokens/s adds the course's default tokenizer on top of each.

``mix_shares`` checks the RedPajama mix: over the first 20 MB of a local imitation
whose subsets differ in document length as the real ones do, each subset's share
of the bytes must be within 10 % (relative) of its target.
"""

from __future__ import annotations

import json
import random
import tempfile
import time
from pathlib import Path

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


# Mean UTF-8 bytes per document, in roughly RedPajama's proportions (a book ~80x a C4 page, a
# paper ~30x), scaled down so that 20 MB holds ~25 books: a real book (~0.5 MB) is more than the
# books' whole 2 % share of 20 MB, and no mix of whole documents can hit that share then. A
# subset's share can be off by up to one of its documents, so 10 % needs its longest document
# under a tenth of its share (43 KB for books at 20 MB).
MIX_DOC_BYTES = {"book": 16_000, "arxiv": 6_000, "github": 1_000, "wikipedia": 800, "stackexchange": 600,
                 "c4": 200}
MIX_CC_BYTES = 300


def _doc_lengths(name: str, scale: float, seed: int = 0):
    """Endless document lengths of one subset: log-normal around its mean, within 0.1x..2.5x of it."""
    rng = random.Random(f"{name}-{seed}")
    mean = MIX_DOC_BYTES.get(name, MIX_CC_BYTES) * scale
    while True:
        yield max(20, int(min(2.5, max(0.1, rng.lognormvariate(-0.125, 0.5))) * mean))


def _write_imitation(folder: Path, total: float, scale: float) -> None:
    """The 11 RedPajama files, each with ~1.25x its share of ``total`` bytes of training text."""
    filler = " ".join(random.Random(1).choice("the of and to in is was for on that é naïve data".split())
                      for _ in range(100_000))
    weight_sum = sum(data.REDPAJAMA_WEIGHTS.values())
    for name, fname in data.REDPAJAMA_FILES.items():
        want = 1.25 * total * data.REDPAJAMA_WEIGHTS[name] / weight_sum / (1 - data.VAL_FRACTION)
        lines, size = [], 0
        for j, n in enumerate(_doc_lengths(name, scale)):
            start = (j * 7919) % (len(filler) - n)
            text = f"{name} {j}: " + filler[start:start + n]  # n <= 40 KB, far less than the filler
            lines.append(json.dumps({"text": text}, ensure_ascii=False))
            size += len(text.encode("utf-8"))
            if size >= want:
                break
        (folder / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")


def _worst(got: dict[str, int], targets: dict[str, float]) -> tuple[float, str]:
    total = sum(got.values())
    return max((abs(got.get(k, 0) / total / t - 1), k) for k, t in targets.items())


def mix_shares(quick: bool) -> Result:
    """Realised byte shares of ``redpajama()`` over the first 20 MB vs document picking by token share."""
    total, scale = (4e6, 0.2) if quick else (20e6, 1.0)
    weight_sum = sum(data.REDPAJAMA_WEIGHTS.values())
    targets = {k: w / weight_sum for k, w in data.REDPAJAMA_WEIGHTS.items()}
    got: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="bench-redpajama-") as tmp:
        _write_imitation(Path(tmp), total, scale)
        t0 = time.perf_counter()
        n_docs = 0
        for row in data.redpajama("train", base=tmp):
            name = row["source"].removeprefix("redpajama/")
            got[name] = got.get(name, 0) + len(row["text"].encode("utf-8"))
            n_docs += 1
            if sum(got.values()) >= total:
                break
        seconds = time.perf_counter() - t0
    # the reference: what interleave_datasets(probabilities=token shares) does, picking *documents*
    # by those shares (simulated on the same length distributions, fresh documents, never running out)
    rng, lengths = random.Random(0), {k: _doc_lengths(k, scale, seed=1) for k in targets}
    names, probs = list(targets), list(targets.values())
    ref: dict[str, int] = {}
    while sum(ref.values()) < total:
        k = rng.choices(names, probs)[0]
        ref[k] = ref.get(k, 0) + next(lengths[k])
    (ours, worst_name), (theirs, ref_name) = _worst(got, targets), _worst(ref, targets)
    shares = ", ".join(f"{k} {got.get(k, 0) / sum(got.values()) / t - 1:+.1%}" for k, t in targets.items())
    print(f"   mix by bytes, first {total / 1e6:.0f} MB: worst relative error {ours:.1%} ({worst_name}); "
          f"picking documents by token share: {theirs:.0%} ({ref_name})")
    return Result(f"data: RedPajama mix, worst byte-share error over the first {total / 1e6:.0f} MB",
                  100 * ours, 100 * theirs, "documents picked by token share", "% off target",
                  lower_is_better=True,
                  note=f"target: every subset within 10 %: {'met' if ours <= 0.10 else '**NOT met**'}; "
                       f"{n_docs} documents at {total / 1e6 / seconds:.1f} MB/s; per subset: {shares}")


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
        mix_shares(quick),
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
