"""Mixing document streams by *byte* share: a corpus recipe that holds for long and short documents alike.

A recipe such as RedPajama's says what share of the training *tokens* each subset
should supply. Picking *documents* with those probabilities (what
``datasets.interleave_datasets(probabilities=...)`` does) gets the tokens wrong
whenever documents differ in length: a book is ~100x longer than a web page, so
books would take ~100x their share. :func:`mix_by_share` mixes by size instead.

Size is counted in UTF-8 bytes of ``text``: a proxy for tokens that needs no
tokenizer (so the mix is the same whichever tokenizer trains on it), close
enough for a recipe (a BPE token is ~4 bytes of English, a few more or fewer for
code and other languages).

The rule: the next document comes from the subset furthest below its target,

    deficit(s) = target_share(s) * bytes_so_far - bytes_of(s)_so_far

(the largest deficit wins; ties go by an order drawn from ``seed``). A subset is
never ahead of its target by more than one of its own documents, nor behind by
more than the others are ahead, so a share is off by about one document's worth
of bytes: the realised shares converge to the targets as the stream goes on
(at a 2 % share, one 0.5 MB book is 10 % of the share only after 250 MB). The rule is
deterministic: the same streams, targets and seed give the same mix, and a
:class:`MixState` saved along the way lets a rebuilt mixer continue it exactly.

A subset that runs out is dropped, and the others' targets are renormalised
among themselves (with ``{a: .5, b: .3, c: .2}`` and ``c`` gone, ``a`` and ``b``
go on at 5 : 3; shares then count the bytes of the subsets still in the mix, so
``a`` and ``b`` keep the 5 : 3 they had all along). This is announced once, through ``on_exhausted`` or a
:class:`SubsetExhaustedWarning`, since the mix no longer follows the recipe. The
mix ends when every subset has run out; no document is ever repeated.
"""

from __future__ import annotations

import math
import random
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from itertools import islice


class SubsetExhaustedWarning(UserWarning):
    """A subset of a mix ran out; the others go on with renormalised targets."""


def text_bytes(text: str) -> int:
    """Size of ``text`` in UTF-8 bytes (without encoding it when it is ASCII: ``str.isascii`` is O(1))."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))


@dataclass
class MixState:
    """How far a mix has got: per subset, the documents and UTF-8 bytes taken so far.

    Pass one to :func:`mix_by_share` and it is updated in place before each
    document is yielded, so after taking ``n`` documents it describes exactly
    those ``n``. Save it with :meth:`to_dict` (plain JSON); a mixer given
    ``MixState.from_dict(saved)`` and the same streams continues where that one
    stopped. ``targets`` and ``seed`` are recorded so that a resume with a
    different recipe fails loudly instead of silently producing another mix.
    """

    docs: dict[str, int] = field(default_factory=dict)
    nbytes: dict[str, int] = field(default_factory=dict)
    exhausted: list[str] = field(default_factory=list)  # in the order they ran out
    targets: dict[str, float] = field(default_factory=dict)
    seed: int | None = None

    @property
    def total_bytes(self) -> int:
        return sum(self.nbytes.values())

    @property
    def total_docs(self) -> int:
        return sum(self.docs.values())

    def shares(self) -> dict[str, float]:
        """The realised byte share of each subset so far (all 0 before the first document)."""
        total = self.total_bytes
        return {k: (v / total if total else 0.0) for k, v in self.nbytes.items()}

    def to_dict(self) -> dict:
        return {"docs": dict(self.docs), "nbytes": dict(self.nbytes), "exhausted": list(self.exhausted),
                "targets": dict(self.targets), "seed": self.seed}

    @classmethod
    def from_dict(cls, d: Mapping) -> MixState:
        return cls(docs={k: int(v) for k, v in d["docs"].items()},
                   nbytes={k: int(v) for k, v in d["nbytes"].items()},
                   exhausted=[str(k) for k in d["exhausted"]],
                   targets={k: float(v) for k, v in d["targets"].items()},
                   seed=None if d.get("seed") is None else int(d["seed"]))


def _normalise(targets: Mapping[str, float], names: Iterable[str]) -> dict[str, float]:
    total = sum(targets[n] for n in names)
    return {n: targets[n] / total for n in names}


def _prepare(streams: Mapping[str, Iterable[dict]], targets: Mapping[str, float], seed: int,
             state: MixState) -> None:
    """Check the recipe, and either start ``state`` afresh or check that it belongs to this recipe."""
    if set(streams) != set(targets):
        raise ValueError(f"streams and targets name different subsets: {sorted(streams)} vs "
                         f"{sorted(targets)}")
    if not targets:
        raise ValueError("nothing to mix: no subsets given")
    bad = {k: v for k, v in targets.items()
           if not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)}
    if bad:
        raise ValueError(f"targets must be positive numbers, got {bad}; "
                         "leave a subset out rather than give it 0")
    if not state.targets:  # a fresh state
        if state.docs or state.nbytes or state.exhausted:
            raise ValueError("the state has counts but no targets; build it with MixState.from_dict(saved)")
        state.targets = {k: float(v) for k, v in targets.items()}
        state.seed = seed
        state.docs = {k: 0 for k in targets}
        state.nbytes = {k: 0 for k in targets}
        return
    saved, given = _normalise(state.targets, state.targets), _normalise(targets, targets)
    same = set(saved) == set(given) and all(math.isclose(saved[k], given[k], rel_tol=1e-9) for k in given)
    if not same or state.seed != seed:
        raise ValueError(f"the saved mix had targets {state.targets} and seed {state.seed}, not "
                         f"{dict(targets)} and seed {seed}: resuming it with another recipe would not "
                         "continue the same mix")
    missing = set(targets) - (set(state.docs) & set(state.nbytes))
    if missing:
        raise ValueError(f"the saved state has no counts for {sorted(missing)}")


def mix_by_share(streams: Mapping[str, Iterable[dict]], targets: Mapping[str, float], *, seed: int = 0,
                 state: MixState | None = None,
                 on_exhausted: Callable[[str, MixState], None] | None = None,
                 positioned: bool = False) -> Iterator[dict]:
    """Mix document streams so that each supplies ``targets[name]`` of the UTF-8 bytes.

    streams: ``{name: iterable of {"text": str, ...}}``; documents are yielded
        unchanged (label them yourself, e.g. with a ``"source"`` field). Each
        stream is pulled lazily, one document when its turn comes.
    targets: ``{name: weight}``, positive, normalised here (token counts do).
    seed: orders ties. Every subset ties at the start, so it picks which one
        opens the mix; after that the mix is decided by the documents' sizes.
    state: a :class:`MixState` to update in place as documents are yielded (save
        it with ``to_dict``), or one restored with ``MixState.from_dict`` to
        resume. Resuming *iterates* each stream past the documents already taken
        (checking their count and bytes, so changed data fails loudly): cheap
        for local files, a re-read for remote ones; unless ``positioned``.
    positioned: the streams already start after the documents ``state`` counts
        (they were opened at saved byte offsets: see :mod:`minigpt_helpers.data.mixed_rows`),
        so nothing is skipped.
    on_exhausted: called as ``on_exhausted(name, state)`` when a subset runs out
        (its documents and bytes are in ``state``). By default a subset that runs
        out while others remain issues a :class:`SubsetExhaustedWarning` (once);
        the last one simply ends the mix.

    Targets must be > 0 and the same subsets as ``streams``; a state must come
    from the same targets and seed (else ``ValueError``, raised here, not at the
    first ``next``).
    """
    state = state if state is not None else MixState()
    _prepare(streams, targets, seed, state)
    order = sorted(targets)
    random.Random(seed).shuffle(order)
    rank = {name: i for i, name in enumerate(order)}
    # the recorded targets, not `targets`: a resumed mix computes with exactly the same floats
    return _mix(streams, state.targets, rank, state, on_exhausted, positioned)


def _mix(streams: Mapping[str, Iterable[dict]], targets: Mapping[str, float], rank: dict[str, int],
         state: MixState, on_exhausted: Callable[[str, MixState], None] | None,
         positioned: bool = False) -> Iterator[dict]:
    active = [n for n in sorted(targets, key=rank.__getitem__) if n not in state.exhausted]
    iters = {n: iter(streams[n]) for n in active}
    for name in [] if positioned else active:  # resume: skip what the saved mix took, checking it is the same
        want_docs, want_bytes = state.docs[name], state.nbytes[name]
        got_docs = got_bytes = 0
        for doc in islice(iters[name], want_docs):
            got_docs += 1
            got_bytes += text_bytes(doc["text"])
        if (got_docs, got_bytes) != (want_docs, want_bytes):
            raise ValueError(f"subset {name!r}: the saved mix took {want_docs} documents ({want_bytes} "
                             f"bytes), but the stream has {got_docs} documents ({got_bytes} bytes) there: "
                             "the data changed")
    share = _normalise(targets, active) if active else {}
    active_bytes = sum(state.nbytes[n] for n in active)
    while active:
        # the largest deficit wins; `active` is in tie-break order and max() keeps the first maximum
        name = max(active, key=lambda n: share[n] * active_bytes - state.nbytes[n])
        try:
            doc = next(iters[name])
        except StopIteration:
            active.remove(name)
            state.exhausted.append(name)
            del iters[name]
            share = _normalise(targets, active) if active else {}
            active_bytes -= state.nbytes[name]
            if on_exhausted is not None:
                on_exhausted(name, state)
            elif active:
                warnings.warn(
                    f"mix: subset {name!r} ran out after {state.docs[name]} documents "
                    f"({state.nbytes[name]:,} bytes); its share goes to the other {len(active)} "
                    "in proportion to their targets: "
                    + ", ".join(f"{n} {share[n]:.1%}" for n in active), SubsetExhaustedWarning, stacklevel=2)
            continue
        n_bytes = text_bytes(doc["text"])
        state.docs[name] += 1
        state.nbytes[name] += n_bytes
        active_bytes += n_bytes
        yield doc

