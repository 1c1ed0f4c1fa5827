"""Data-pipeline throughput: our datasets-based stream vs plain Python over the same files.

The reference reads the same Shakespeare files and splits them into the same
scenes with no ``datasets`` machinery, so the ratio is the price (or not) of the
streaming API. Tokens/s adds the course's default tokenizer on top of each.

``mix_shares`` checks the RedPajama mix: over the first 20 MB of a local imitation
whose subsets differ in document length as the real ones do, each subset's share
of the bytes must be within 10 % (relative) of its target.

``txt_at_scale`` streams one large ``.txt`` file (500 MB; quick mode 50 MB) of
generated lines (mostly ASCII, some accented, Cyrillic, CJK and emoji words):

* **memory**: a few steps of ``train()`` on it, in a fresh process, vs the same on
  a 5 MB file: peak RSS (the training process and its data worker, whichever is
  larger), target large <= 1.5x small;
* **fast resume**: what resuming at 90 % of the file's training pieces
  (``StreamPosition(doc=...)``, ``train_batches`` over ``textfiles.TextFilePieces``)
  adds to a fresh start's first batch, vs reading the whole file once in binary
  (page cache warm), target <= 10 % of it. The note gives both first-batch times,
  splits the cost (finding row ``n``; tokenizing that ~64 KiB piece), and adds the
  resume that reads and decodes the rows before (no ``iter_from``) and the timings
  from disk.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import Result, best_time

from minigpt_helpers import stream_documents
from minigpt_helpers.data import sources as data


def _ours(limit: int | None):
    ds = stream_documents("shakespeare", verbose=False)
    return [row["text"] for row in (ds.take(limit) if limit else ds)]


def _plain(limit: int | None):
    out = [row["text"] for row in data.ShakespeareRows("train")]
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


# --- one large .txt file: memory, and resuming deep into it -------------------------------
ROOT = Path(__file__).resolve().parent.parent
TXT_WORDS = ("the of and to in a is that it was for on with as his he be at by had not are but from or have "
             "an they which one you were her all she there would their we him been has when who will more no "
             "if out so said what up its about into than them can only other new some could time these two may "
             "then do first any my now such like our over man me even most made after also did many before "
             "must through back years where much your way well down should because each just those people "
             "river stone window morning letter garden silence answer number question").split()
TXT_RARE = ["café", "naïve", "Zürich", "façade", "señor", "Ærø", "Привет", "мир", "東京", "漢字", "日本語",
            "😀", "—", "“quoted”", "ß", "€5", "λόγος"]


def _text_pool(seed: int = 0, size: int = 4 << 20) -> bytes:
    """About ``size`` bytes of paragraphs of random lines: 97 % common English words, 3 % others."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < size:
        lines = []
        for _ in range(rng.randint(1, 8)):
            words = [rng.choice(TXT_RARE) if rng.random() < 0.03 else rng.choice(TXT_WORDS)
                     for _ in range(rng.randint(4, 18))]
            lines.append(" ".join(words).capitalize() + rng.choice([".", ",", ";", "?", "!"]) + "\n")
        para = "".join(lines) + "\n"
        out.append(para)
        n += len(para.encode("utf-8"))
    return "".join(out).encode("utf-8")


def _write_txt(path: Path, n_bytes: int, pool: bytes) -> None:
    """About ``n_bytes`` of chapters, each a header and the pool of paragraphs (the last one cut at a paragraph)."""
    with open(path, "wb") as f:
        written, k = 0, 0
        while written < n_bytes:
            chunk = f"Chapter {k}\n\n".encode() + pool
            if written + len(chunk) > n_bytes:
                chunk = chunk[: chunk.rfind(b"\n\n", 0, n_bytes - written) + 2] or chunk
            f.write(chunk)
            written, k = written + len(chunk), k + 1
        f.flush()
        os.fsync(f.fileno())  # on disk, so that its pages can be dropped for a read from disk


TRAIN_RSS = """
import json, resource, sys, time
import minigpt_helpers as m

path = sys.argv[1]
with open(path, "rb") as f:
    head = f.read(1 << 20).decode("utf-8", "ignore")
tok = m.CharTokenizer.train([head], unk=True)
mcfg, cfg = m.preset("tiny", tok.vocab_size, max_steps=5, device="cpu", eval_windows=8, eval_interval=5,
                     num_threads=1, compile=False)
m.set_seed(0)
model = m.GPT(mcfg)
model.tokenizer = tok
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
result = m.train(model, path, cfg, live="off")
print(json.dumps({"seconds": time.perf_counter() - t0, "step": result.step, "before_kib": before, "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "children_kib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""


def _train_peak_rss(path: Path) -> dict:
    """A few training steps on ``path`` in a fresh process: its peak RSS (KiB on Linux) and its children's."""
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    out = subprocess.run([sys.executable, "-c", TRAIN_RSS, str(path)], capture_output=True, text=True,
                         encoding="utf-8", timeout=600, cwd=ROOT, env=env)
    if out.returncode != 0:
        raise RuntimeError(f"training on {path.name} failed:\n{out.stderr[-3000:]}")
    got = json.loads(out.stdout.strip().splitlines()[-1])
    got["peak_mib"] = max(got["self_kib"], got["children_kib"]) / 1024
    return got


def large_file_memory(large: Path, small: Path) -> Result:
    """Peak RSS of ``train()`` on a large .txt vs a small one: streaming keeps it flat."""
    big, little = _train_peak_rss(large), _train_peak_rss(small)
    ratio = big["peak_mib"] / little["peak_mib"]
    mb = large.stat().st_size / 1e6
    print(f"   peak RSS training on {mb:.0f} MB: {big['peak_mib']:.0f} MiB (process {big['self_kib'] / 1024:.0f}, "
          f"worker {big['children_kib'] / 1024:.0f}; {big['seconds']:.1f} s); on "
          f"{small.stat().st_size / 1e6:.0f} MB: {little['peak_mib']:.0f} MiB ({little['seconds']:.1f} s)")
    return Result(f"data: peak RSS of 5 training steps on a {mb:.0f} MB .txt", big["peak_mib"], little["peak_mib"],
                  f"the same on a {small.stat().st_size / 1e6:.0f} MB file", "MiB", lower_is_better=True,
                  target=1 / 1.5,
                  note=f"target: large <= 1.5x small: {ratio:.2f}x, {'met' if ratio <= 1.5 else '**NOT met**'}; "
                       f"the training process grew by {(big['self_kib'] - big['before_kib']) / 1024:.0f} MiB "
                       f"during train() (vs {(little['self_kib'] - little['before_kib']) / 1024:.0f} MiB); "
                       f"peak of the training process and of its data worker, whichever is larger (fresh "
                       f"process each, preset tiny, CharTokenizer, max_steps=5, eval_windows=8)")


def _document_tokens_seeks(tok) -> bool:
    """Whether ``batching.document_tokens`` starts a seekable source at ``start_doc`` (``iter_from``)."""
    from minigpt_helpers.data.batching import document_tokens

    asked = []

    class Rows(list):
        def iter_from(self, n):
            asked.append(n)
            return iter(self[n:])

    list(document_tokens(Rows(["a", "b", "c"]), tok, start_doc=2))
    return asked == [2]


class _NoSeek:
    """The same rows without ``iter_from``: a resume then reads (and skips) every row before its own."""

    def __init__(self, rows) -> None:
        self.rows = rows

    def __iter__(self):
        return iter(self.rows)


def _drop_cache(path: Path) -> bool:
    """Ask the kernel to forget the file's pages (Linux; the file was fsync'ed): the next read is from disk."""
    if not hasattr(os, "posix_fadvise"):
        return False
    fd = os.open(path, os.O_RDONLY)
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    finally:
        os.close(fd)
    return True


def fast_resume(large: Path) -> Result:
    """Time to the first batch resumed at 90 % of the file's pieces vs reading the whole file.

    Any start of training, at step 0 or resumed, tokenizes one shuffle chunk (1024 windows) before its
    first batch: that cost depends on the tokenizer and the chunk, not on the file. What a resume adds is
    finding its place, so the target compares **the resume's extra time over a fresh start** (first batch
    at 90 % minus first batch at piece 0, and at least the time to find and read row ``n``, which is all
    that a resume does differently) with one binary read of the whole file, page cache warm (the
    strictest reference: a read from disk is ~20x slower). The note gives the whole first-batch times,
    the same from disk, and the resume that reads the rows before its own (no ``iter_from``).
    """
    from minigpt_helpers import CharTokenizer
    from minigpt_helpers.data import textfiles
    from minigpt_helpers.data.batching import StreamPosition, train_batches

    with open(large, "rb") as f:
        tok = CharTokenizer.train([f.read(1 << 20).decode("utf-8", "ignore")], unk=True)

    def rows():  # a fresh object, as in a restarted process: its piece counts are part of the cost
        return textfiles.TextFilePieces([large], "train", val_fraction=data.VAL_FRACTION)

    pieces = len(rows())
    n = int(0.9 * pieces)
    piece = next(rows().iter_from(n))["text"]

    def first_batch(at: int, docs=None):
        batches = train_batches(docs or rows(), tok, 32, 16,
                                position=StreamPosition(epoch=0, doc=at, offset=0, served=0))
        return next(batches)

    def read_all():
        with open(large, "rb") as f:
            return sum(len(b) for b in iter(lambda: f.read(1 << 20), b""))

    seeks = _document_tokens_seeks(tok)
    t_read, t_resume, t_start = float("inf"), float("inf"), float("inf")
    for _ in range(3):  # interleaved, so that machine noise hits all three alike
        t_read = min(t_read, best_time(read_all, repeat=3))
        t_resume = min(t_resume, best_time(lambda: first_batch(n), repeat=5))
        t_start = min(t_start, best_time(lambda: first_batch(0), repeat=5))
    t_seek = best_time(lambda: next(rows().iter_from(n)), repeat=5)  # finding and reading row n only
    t_encode = best_time(lambda: tok.encode(piece), repeat=5)  # tokenizing it
    t_no_seek = best_time(lambda: first_batch(n, _NoSeek(rows())), repeat=1, warmup=0)
    cold = ""
    if _drop_cache(large):
        c_resume, c_read = float("inf"), float("inf")
        for _ in range(2):  # interleaved, the best of two
            _drop_cache(large)
            c_resume = min(c_resume, best_time(lambda: first_batch(n), repeat=1, warmup=0))
            _drop_cache(large)
            c_read = min(c_read, best_time(read_all, repeat=1, warmup=0))
        cold = (f"; from disk (page cache dropped with posix_fadvise): first batch {c_resume * 1e3:.0f} ms vs "
                f"{c_read * 1e3:.0f} ms to read the file ({c_resume / c_read:.1%})")
    # what the resume adds: the measured difference, but never less than finding and reading its row
    extra = max(t_resume - t_start, t_seek)
    share = extra / t_read
    mb = large.stat().st_size / 1e6
    print(f"   resume at piece {n} of {pieces} ({mb:.0f} MB): first batch in {t_resume * 1e3:.1f} ms vs "
          f"{t_start * 1e3:.1f} ms at piece 0 (extra {extra * 1e3:.1f} ms; row {n} alone: {t_seek * 1e3:.2f} ms, "
          f"tokenizing it: {t_encode * 1e3:.1f} ms; without iter_from: {t_no_seek * 1e3:.0f} ms) vs "
          f"{t_read * 1e3:.0f} ms to read the file: {share:.1%}{cold}")
    return Result(f"data: extra time to resume at 90 % of a {mb:.0f} MB .txt (first batch, over a fresh start)",
                  extra, t_read, "reading the whole file once", "s", lower_is_better=True, target=10,
                  note=f"target: <= 10 % of a full read (page cache warm): {share:.1%}, "
                       f"{'met' if share <= 0.10 and seeks else '**NOT met**'}; first batch at piece {n} of "
                       f"{pieces}: {t_resume * 1e3:.1f} ms, at piece 0: {t_start * 1e3:.1f} ms (both tokenize one "
                       f"shuffle chunk: train_batches over textfiles.TextFilePieces, block 32, batch 16, 1024 "
                       f"windows; the whole first batch is {t_resume / t_read:.0%} of the warm read); finding "
                       f"and reading row {n}: {t_seek * 1e3:.2f} ms, tokenizing that ~64 KiB piece "
                       f"(CharTokenizer): {t_encode * 1e3:.1f} ms; the same resume reading the rows before "
                       f"(no iter_from): {t_no_seek * 1e3:.0f} ms"
                       + ("" if seeks else " (document_tokens has no iter_from yet)") + cold)


def txt_at_scale(quick: bool) -> list[Result]:
    """A large .txt file (500 MB, quick 50 MB) and a 5 MB one in a temporary folder, deleted after."""
    with tempfile.TemporaryDirectory(prefix="bench-txt-") as tmp:
        pool = _text_pool()
        large, small = Path(tmp) / "large.txt", Path(tmp) / "small.txt"
        t0 = time.perf_counter()
        _write_txt(large, (50 if quick else 500) * 10**6, pool)
        _write_txt(small, 5 * 10**6, pool)
        print(f"   wrote {large.stat().st_size / 1e6:.0f} MB + {small.stat().st_size / 1e6:.0f} MB of text "
              f"in {time.perf_counter() - t0:.1f} s")
        return [large_file_memory(large, small), fast_resume(large)]


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
        *txt_at_scale(quick),
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
