"""Mixing by byte share: the mixer on its own, and RedPajama mixed with it."""

from __future__ import annotations

import json
import random
import warnings
from collections import Counter
from itertools import islice

import pytest

from minigpt_helpers.data import sources as data


@pytest.fixture
def mixing():
    # imported here, not at the top, so that the RedPajama test below also runs (and fails
    # for the right reason) against code that predates minigpt_helpers.data.mixing
    from minigpt_helpers.data import mixing

    return mixing


def nbytes(doc: dict) -> int:
    return len(doc["text"].encode("utf-8"))


def books_and_web(n_books: int = 400, n_web: int = 40_000):
    """'book' documents of ~50 KB and 'web' pages of ~500 B, half of them 2-byte characters."""
    books = [{"text": f"book {i} " + "b" * (50_000 + 37 * (i % 11)), "source": "book"}
             for i in range(n_books)]
    web = [{"text": f"web {i} " + ("é" if i % 2 else "ww") * (250 + i % 50), "source": "web"}
           for i in range(n_web)]
    return {"book": books, "web": web}


def test_byte_shares_follow_targets_whatever_the_document_lengths(mixing):
    targets = {"book": 0.2, "web": 0.8}
    totals, total, worst = Counter(), 0, 0.0
    for doc in mixing.mix_by_share(books_and_web(), targets, seed=0):
        totals[doc["source"]] += nbytes(doc)
        total += nbytes(doc)
        if total >= 15e6:  # from 15 MB on, at every document, not just at one lucky point
            worst = max(worst, *(abs(totals[k] / total / t - 1) for k, t in targets.items()))
        if total >= 20e6:
            break
    assert total >= 20e6, "a subset ran out before 20 MB: the test data is too small"
    assert worst <= 0.02, f"realised byte shares {dict(totals)} are {worst:.1%} off the targets {targets}"


def test_the_mix_is_deterministic_for_a_seed(mixing):
    targets = {"book": 0.2, "web": 0.8}

    def head(seed):
        mix = mixing.mix_by_share(books_and_web(50, 500), targets, seed=seed)
        return [doc["text"][:12] for doc in islice(mix, 300)]

    assert head(0) == head(0)
    assert head(7) == head(7)
    assert len({head(s)[0].split()[0] for s in range(8)}) == 2  # the seed decides which subset opens the mix


def three_subsets():
    rng = random.Random(1)
    return {
        "a": [{"text": f"a{i} " + "a" * rng.randint(100, 2_000)} for i in range(100)],
        "b": [{"text": f"b{i} " + "b" * 3_000} for i in range(5)],  # runs out early
        "c": [{"text": f"c{i} " + "ç" * rng.randint(50, 300)} for i in range(300)],
    }


@pytest.mark.parametrize("n", [0, 1, 9, 37, 150, 404, 405])
def test_a_mixer_rebuilt_from_saved_state_continues_exactly(mixing, n):
    targets = {"a": 0.5, "b": 0.3, "c": 0.2}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", mixing.SubsetExhaustedWarning)
        full = list(mixing.mix_by_share(three_subsets(), targets, seed=3))
        assert len(full) == 405
        state = mixing.MixState()
        first = list(islice(mixing.mix_by_share(three_subsets(), targets, seed=3, state=state), n))
        saved = json.loads(json.dumps(state.to_dict()))  # plain JSON, as a checkpoint stores it
        # fresh one-shot iterators, as after a restart
        streams = {k: iter(v) for k, v in three_subsets().items()}
        resumed_state = mixing.MixState.from_dict(saved)
        rest = list(mixing.mix_by_share(streams, targets, seed=3, state=resumed_state))
    assert first == full[:n]
    assert rest == full[n:]
    assert resumed_state.total_docs == 405 and sorted(resumed_state.exhausted) == ["a", "b", "c"]


def test_a_saved_state_refuses_another_recipe_or_changed_data(mixing):
    targets = {"a": 0.5, "b": 0.3, "c": 0.2}
    state = mixing.MixState()
    list(islice(mixing.mix_by_share(three_subsets(), targets, seed=3, state=state), 20))
    saved = state.to_dict()
    with pytest.raises(ValueError, match="seed"):
        mixing.mix_by_share(three_subsets(), targets, seed=4, state=mixing.MixState.from_dict(saved))
    with pytest.raises(ValueError, match="targets"):
        mixing.mix_by_share(three_subsets(), {"a": 0.4, "b": 0.4, "c": 0.2}, seed=3,
                            state=mixing.MixState.from_dict(saved))
    # weights on another scale are the same recipe
    scaled = {k: 10 * v for k, v in targets.items()}
    assert next(mixing.mix_by_share(three_subsets(), scaled, seed=3, state=mixing.MixState.from_dict(saved)))
    changed = three_subsets()
    changed["a"][0] = {"text": changed["a"][0]["text"] + "!"}
    with pytest.raises(ValueError, match="data changed"):
        next(mixing.mix_by_share(changed, targets, seed=3, state=mixing.MixState.from_dict(saved)))
    with pytest.raises(ValueError, match="positive"):
        mixing.mix_by_share(three_subsets(), {"a": 1, "b": 0, "c": 1})
    with pytest.raises(ValueError, match="different subsets"):
        mixing.mix_by_share(three_subsets(), {"a": 1, "b": 1})


def exhaustion_case():
    rng = random.Random(2)
    streams = {
        "small": [{"text": f"s{i} " + "s" * 200} for i in range(3)],
        "a": [{"text": f"a{i} " + "a" * rng.randint(100, 300)} for i in range(2_000)],
        "b": [{"text": f"b{i} " + "b" * rng.randint(100, 300)} for i in range(2_000)],
    }
    return streams, {"small": 0.5, "a": 0.3, "b": 0.2}


def test_an_exhausted_subset_is_dropped_and_the_rest_renormalised(mixing):
    streams, targets = exhaustion_case()
    events = []

    def on_exhausted(name, state):
        events.append((name, state.nbytes["a"] / (state.nbytes["a"] + state.nbytes["b"]), state.total_docs))

    out = list(mixing.mix_by_share(streams, targets, seed=0, on_exhausted=on_exhausted))
    assert [name for name, _, _ in events] == ["small", "a", "b"]  # small at once, then a (60 % of the rest)
    assert events[0][2] < 20
    # while both lasted, a and b shared the bytes 0.3 : 0.2, i.e. 60 % : 40 %
    assert events[1][1] == pytest.approx(0.6, rel=0.02)
    # every document of every subset exactly once, in its stream's order, nothing repeated
    texts = [d["text"] for d in out]
    assert Counter(texts) == Counter(d["text"] for docs in streams.values() for d in docs)
    for name, docs in streams.items():
        assert [t for t in texts if t.startswith(name[0])] == [d["text"] for d in docs]


def test_exhaustion_is_announced_once_per_subset_by_default(mixing):
    streams, targets = exhaustion_case()
    with pytest.warns(mixing.SubsetExhaustedWarning) as caught:
        n = sum(1 for _ in mixing.mix_by_share(streams, targets, seed=0))
    assert n == 4_003
    messages = [str(w.message) for w in caught if issubclass(w.category, mixing.SubsetExhaustedWarning)]
    # 'small' and 'a' ran out while others remained; the last one just ends the mix
    assert len(messages) == 2 and "'small'" in messages[0] and "'a'" in messages[1], messages


# --- RedPajama, mixed by bytes, on a local imitation of the Hub repo -----------------------
# mean document size per subset in bytes: books and papers far longer than web pages
DOC_BYTES = {"book": 2_500, "arxiv": 1_500, "github": 500, "wikipedia": 400, "stackexchange": 300, "c4": 120}
CC_BYTES = 160
MEASURE_BYTES = 2_500_000


@pytest.fixture
def redpajama_imitation(tmp_path):
    """The 11 files, each holding a bit more than its share of MEASURE_BYTES (train split), ~4.5 MB in all."""
    rng = random.Random(0)
    words = [w for w in "the of and to in is was for on that with as by at from é naïve ü data".split()]
    filler = " ".join(rng.choice(words) for _ in range(200_000))
    total = sum(data.REDPAJAMA_WEIGHTS.values())
    for name, fname in data.REDPAJAMA_FILES.items():
        mean = DOC_BYTES.get(name, CC_BYTES)
        want = 1.25 * MEASURE_BYTES * data.REDPAJAMA_WEIGHTS[name] / total / (1 - data.VAL_FRACTION)
        lines, size, j = [], 0, 0
        while size < want:
            n = int(mean * rng.uniform(0.8, 1.2))
            start = rng.randrange(len(filler) - n)
            text = f"{name} {j}: " + filler[start:start + n]
            lines.append(json.dumps({"text": text, "meta": {"subset": name, "i": j}}, ensure_ascii=False))
            size, j = size + len(text.encode("utf-8")), j + 1
        (tmp_path / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return tmp_path


def test_redpajama_text_follows_the_token_shares_not_the_document_counts(redpajama_imitation):
    total_w = sum(data.REDPAJAMA_WEIGHTS.values())
    targets = {f"redpajama/{k}": w / total_w for k, w in data.REDPAJAMA_WEIGHTS.items()}
    available = Counter()  # training documents per subset: none may run out while we measure
    for name, fname in data.REDPAJAMA_FILES.items():
        for line in (redpajama_imitation / fname).read_text(encoding="utf-8").splitlines():
            available[f"redpajama/{name}"] += not data.is_validation(json.loads(line)["text"])
    ds = data.redpajama("train", base=str(redpajama_imitation), seed=0)
    taken, got, total = Counter(), Counter(), 0
    for row in ds:
        assert set(row) == {"text", "source"}
        taken[row["source"]] += 1
        got[row["source"]] += nbytes(row)
        total += nbytes(row)
        if total >= MEASURE_BYTES:
            break
    errors = {k: got[k] / total / t - 1 for k, t in targets.items()}
    ran_out = [k for k in targets if taken[k] >= available[k]]  # shares are only meaningful while all last
    assert not ran_out and all(abs(e) <= 0.10 for e in errors.values()), (
        f"byte shares vs targets: { {k: f'{e:+.0%}' for k, e in errors.items()} }; ran out: {ran_out}")


def test_redpajama_is_one_mix_deterministic_for_a_seed(redpajama_imitation):
    ds = data.redpajama("train", base=str(redpajama_imitation), seed=0)
    assert ds.n_shards == 1  # one mix: shuffling or splitting by worker must not cut it into pieces
    first = [row["text"] for row in islice(ds, 300)]
    again = data.redpajama("train", base=str(redpajama_imitation))
    assert first == [row["text"] for row in islice(again, 300)]
    with pytest.raises(FileNotFoundError, match="book_sample.jsonl"):
        (redpajama_imitation / "book_sample.jsonl").unlink()
        data.redpajama("train", base=str(redpajama_imitation))
