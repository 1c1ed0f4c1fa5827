"""Chapter 01 — solutions to the exercises (run: python solutions/01_streaming_data_solutions.py)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

from datasets import interleave_datasets

import minigpt_helpers as m

def shuffled(buffer_size: int, n: int) -> list[dict]:
    """The first n training documents, shuffled with seed 0 and this buffer (as in the chapter)."""
    stream = m.stream_documents("shakespeare", shuffle=True, seed=0, buffer_size=buffer_size, verbose=False)
    return list(islice(stream, n))


def exercise_1_late_documents(sizes: tuple[int, ...] = (10, 30, 100)) -> dict[int, tuple[int, float]]:
    """How late can a document come out of a shuffle buffer? There is no hard limit.

    A document that is not let out this time is in the same position as every other one
    left in the buffer: it may be passed over again, and again. The chance of waiting
    many rounds shrinks geometrically but never reaches zero, so a few documents come out
    several buffer sizes late (the largest delay is 4x the buffer when we ran it), while
    none comes out more than ``buffer_size - 1`` places early: the buffer cannot hold more.
    """
    n = m.pick(full=600, quick=200)
    no_buffer = shuffled(1, n + max(sizes))  # same shard order, no buffer: the order the buffer sees
    where = {d["text"]: k for k, d in enumerate(no_buffer)}
    result = {}
    for size in sizes:
        moved = [k - where[d["text"]] for k, d in enumerate(shuffled(size, n))]
        late = sum(x > 2 * size for x in moved) / len(moved)
        result[size] = (max(moved), late)
        print(f"buffer {size:3d}: latest {max(moved):4d} places ({max(moved) / size:.1f}x the buffer), "
              f"{late:.1%} delayed by more than 2x the buffer; earliest {min(moved)}")
        assert min(moved) >= -(size - 1)
    return result


def exercise_2_mixture() -> Counter:
    """A 70/30 mixture of two sources: by documents (interleave_datasets), then by bytes (mix_by_share).

    With recipes about ten times longer than poems, a 70/30 mix of *documents* gives
    the poems only about a sixth of the bytes (16 % when we ran it); mixing by bytes
    keeps them at 70 % of the text, which is what a model is trained on.
    """
    tmp = Path(tempfile.mkdtemp())
    for name, n, repeat in (("poetry", 2000, 1), ("recipes", 2000, 10)):
        rows = (json.dumps({"text": f"{name} #{i} " * repeat}) for i in range(n))
        (tmp / f"{name}.jsonl").write_text("\n".join(rows), encoding="utf-8")
    names = ("poetry", "recipes")
    streams = {name: m.stream_documents(str(tmp / f"{name}.jsonl"), verbose=False) for name in names}
    by_docs = list(islice(interleave_datasets(list(streams.values()), probabilities=[0.7, 0.3], seed=0), 1000))
    by_bytes = list(islice(m.mix_by_share(streams, {"poetry": 0.7, "recipes": 0.3}), 1000))
    counts = Counter(row["source"] for row in by_docs)
    print("by documents, rows over 1000:", dict(counts))
    for label, rows in (("by documents", by_docs), ("by bytes", by_bytes)):
        size = Counter()
        for row in rows:
            size[row["source"]] += len(row["text"].encode("utf-8"))
        print(f"{label}: poetry holds {size['poetry.jsonl'] / sum(size.values()):.0%} of the bytes")
    return counts


def exercise_3_hash_split_is_stable() -> None:
    """The validation set is the same whatever the shuffle: membership depends on the text only.

    "Every 10th document" depends on *position*, which a shuffle changes, so a document
    could be validation in one run and training in the next: the model would be
    evaluated on text it has trained on.
    """
    sets = [
        {d["text"] for d in m.stream_documents("shakespeare", "validation", shuffle=True, seed=s, verbose=False)}
        for s in (0, 1, 2)
    ]
    assert sets[0] == sets[1] == sets[2]
    print(f"validation set identical under 3 shuffles ({len(sets[0])} documents)")


if __name__ == "__main__":
    exercise_1_late_documents()
    exercise_2_mixture()
    exercise_3_hash_split_is_stable()
