"""Chapter 01 — solutions to the exercises (run: python solutions/01_streaming_data_solutions.py).

1. Late documents: how late a shuffle buffer lets a document out (no hard limit).
2. A mixture of your own: 70/30 by documents (interleave_datasets), then by bytes (mix_by_share).
3. Hash split stability: the validation set is the same under every shuffle; a positional split is not.
"""

from __future__ import annotations

import json
import tempfile
from collections import Counter
from itertools import islice
from pathlib import Path

from datasets import interleave_datasets

import minigpt_helpers as m

N_DOCS = 600  # section 6's number of documents (a few seconds: no smaller quick value needed)


def shuffled(buffer_size: int, n: int) -> list[dict]:
    """The first n training documents, shuffled with seed 0 and this buffer (section 6's helper)."""
    stream = m.stream_documents("shakespeare", shuffle=True, seed=0, buffer_size=buffer_size, verbose=False)
    return list(islice(stream, n))


# 1. For buffer sizes 10, 30 and 100: the largest delay, and the share of documents delayed by more
#    than twice buffer_size. Why is there no hard limit on the delay?
def exercise_1_late_documents(sizes: tuple[int, ...] = (10, 30, 100)) -> dict[int, tuple[int, float]]:
    """How late can a document come out of a shuffle buffer? There is no hard limit.

    Each time the buffer lets a document out it picks one of its ``buffer_size`` documents
    at random. A document passed over is in the same position as every other one left in
    the buffer: it may be passed over again, and again, each time with probability
    ``1 - 1/buffer_size``. The chance of waiting k rounds shrinks geometrically but never
    reaches zero, so some documents come out several buffer sizes late, while none comes
    out more than ``buffer_size - 1`` places early: the buffer cannot hold more.
    """
    no_buffer = shuffled(1, N_DOCS + max(sizes))  # same shard order, no buffer: the order the buffer sees
    where = {d["text"]: k for k, d in enumerate(no_buffer)}
    result = {}
    for size in sizes:
        moved = [k - where[d["text"]] for k, d in enumerate(shuffled(size, N_DOCS))]
        latest, late = max(moved), sum(x > 2 * size for x in moved) / len(moved)
        result[size] = (latest, late)
        print(f"1. buffer {size:3d}: latest {latest:4d} places ({latest / size:.1f}x the buffer), "
              f"{late:.1%} delayed by more than 2x the buffer; earliest {min(moved)} (bound {-(size - 1)})")
        assert min(moved) >= -(size - 1)  # early: never more than buffer_size - 1 places
        assert latest > 2 * size and late > 0  # late: well beyond the early bound, with no limit of its own
    return result


# 2. A 70/30 mixture of documents with interleave_datasets, checked over 1,000 rows; then recipes ten
#    times longer: poetry's share of the bytes, and the mixture again with m.mix_by_share.
def write_jsonl(path: Path, name: str, n: int, repeat: int) -> Path:
    """n documents ``"<name> #i "`` repeated ``repeat`` times, one JSON object a line."""
    path.write_text("\n".join(json.dumps({"text": f"{name} #{i} " * repeat}) for i in range(n)), encoding="utf-8")
    return path


def byte_shares(rows: list[dict]) -> dict[str, float]:
    """Each source's share of the UTF-8 bytes of ``rows``."""
    size = Counter()
    for row in rows:
        size[row["source"]] += len(row["text"].encode("utf-8"))
    return {name: n / sum(size.values()) for name, n in size.items()}


def mean_bytes(rows: list[dict], source: str) -> float:
    """Mean UTF-8 length of the documents of ``source`` in ``rows``."""
    sizes = [len(r["text"].encode("utf-8")) for r in rows if r["source"] == source]
    return sum(sizes) / len(sizes)


def exercise_2_mixture() -> dict[str, float]:
    """A 70/30 mixture of two sources: by documents (interleave_datasets), then by bytes (mix_by_share).

    With recipes ten times longer than poems, a 70/30 mix of *documents* gives the poems
    only 0.7 Lp / (0.7 Lp + 0.3 Lr) of the bytes (Lp, Lr: mean document lengths), about a
    sixth here; mixing by bytes keeps them at 70 % of the text, which is what a model reads.
    """
    tmp = Path(tempfile.mkdtemp())
    poetry = write_jsonl(tmp / "poetry.jsonl", "poetry", 2000, 1)

    def by_documents(recipes: Path) -> list[dict]:
        streams = [m.stream_documents(str(p), verbose=False) for p in (poetry, recipes)]
        return list(islice(interleave_datasets(streams, probabilities=[0.7, 0.3], seed=0), 1000))

    same_length = by_documents(write_jsonl(tmp / "recipes.jsonl", "recipes", 2000, 1))
    poems = Counter(row["source"] for row in same_length)["poetry.jsonl"] / len(same_length)
    print(f"2. 70/30 by documents, over {len(same_length)} rows: poetry {poems:.1%} of the documents")
    assert abs(poems - 0.7) < 0.05

    long_recipes = write_jsonl(tmp / "long_recipes.jsonl", "recipes", 2000, 10)
    docs = by_documents(long_recipes)
    mean_len = {s: mean_bytes(docs, s) for s in ("poetry.jsonl", "long_recipes.jsonl")}
    expected = 0.7 * mean_len["poetry.jsonl"] / (0.7 * mean_len["poetry.jsonl"] + 0.3 * mean_len["long_recipes.jsonl"])
    streams = {name: m.stream_documents(str(p), verbose=False) for name, p in (("poetry", poetry),
                                                                              ("recipes", long_recipes))}
    by_bytes = list(islice(m.mix_by_share(streams, {"poetry": 0.7, "recipes": 0.3}), 1000))
    shares = {"by documents": byte_shares(docs)["poetry.jsonl"], "by bytes": byte_shares(by_bytes)["poetry.jsonl"]}
    print(f"   recipes 10x longer: poetry holds {shares['by documents']:.1%} of the bytes mixed by documents "
          f"(0.7 Lp / (0.7 Lp + 0.3 Lr) predicts {expected:.1%}), {shares['by bytes']:.1%} mixed by bytes (target 70%)")
    assert abs(shares["by documents"] - expected) < 0.03 and shares["by documents"] < 0.3
    assert abs(shares["by bytes"] - 0.7) < 0.02
    return shares


# 3. The validation set does not change when the stream is shuffled with different seeds; a split
#    "every 10th document" would.
def exercise_3_hash_split_is_stable(seeds: tuple[int, ...] = (0, 1, 2)) -> None:
    """The validation set is the same whatever the shuffle: membership depends on the text only.

    "Every 10th document" depends on *position*, which a shuffle changes, so a document
    could be validation in one run and training in the next: the model would be
    evaluated on text it has trained on.
    """
    by_hash = [{d["text"] for d in m.stream_documents("shakespeare", "validation", shuffle=True, seed=s,
                                                       verbose=False)} for s in seeds]
    assert all(s == by_hash[0] for s in by_hash)
    print(f"3. hash split: validation set identical under {len(seeds)} shuffles ({len(by_hash[0])} documents)")
    every_10th = [{d["text"] for k, d in enumerate(m.stream_documents("shakespeare", "train", shuffle=True, seed=s,
                                                                       verbose=False)) if k % 10 == 0}
                  for s in seeds[:2]]
    kept = len(every_10th[0] & every_10th[1]) / len(every_10th[0])
    print(f"   'every 10th document' of the shuffled stream: seeds {seeds[0]} and {seeds[1]} share only {kept:.0%} "
          f"of their {len(every_10th[0])} validation documents; the rest would be trained on in the other run")
    assert kept < 0.5


if __name__ == "__main__":
    exercise_1_late_documents()
    exercise_2_mixture()
    exercise_3_hash_split_is_stable()
