"""Chapter 01 — solutions to the exercises (run: python solutions/01_streaming_data_solutions.py)."""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

from datasets import interleave_datasets

import minigpt_helpers as m

N = m.pick(full=300, quick=60)


def exercise_1_buffer_displacement() -> dict[int, float]:
    """Mean |output position - original position| grows with the buffer size."""
    order = {d["text"]: i for i, d in enumerate(islice(m.stream_documents("shakespeare", verbose=False), 10_000))}
    result = {}
    for size in (1, 10, 100, 1000):
        out = islice(m.stream_documents("shakespeare", shuffle=True, seed=0, buffer_size=size, verbose=False), N)
        moves = [abs(pos - order[d["text"]]) for pos, d in enumerate(out)]
        result[size] = sum(moves) / len(moves)
        print(f"buffer {size:5d}: mean displacement {result[size]:7.1f} documents")
    return result


def exercise_2_mixture() -> Counter:
    """A 70/30 mixture of two sources of your own, as the RedPajama loader mixes its subsets."""
    tmp = Path(tempfile.mkdtemp())
    for name, n in (("poetry", 2000), ("recipes", 2000)):
        rows = (json.dumps({"text": f"{name} #{i}"}) for i in range(n))
        (tmp / f"{name}.jsonl").write_text("\n".join(rows), encoding="utf-8")
    streams = [m.stream_documents(str(tmp / f"{name}.jsonl"), verbose=False) for name in ("poetry", "recipes")]
    mixed = interleave_datasets(streams, probabilities=[0.7, 0.3], seed=0)
    counts = Counter(row["source"] for row in islice(mixed, 1000))
    print("mixture over 1000 rows:", dict(counts))
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
    exercise_1_buffer_displacement()
    exercise_2_mixture()
    exercise_3_hash_split_is_stable()
