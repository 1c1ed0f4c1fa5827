"""Shared pieces of the benchmark harness: the Result row and a fair timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class Result:
    """One side-by-side comparison.

    ``ratio`` is oriented so that higher is better for us: for rates (tokens/s)
    it is ours / reference; for times (seconds) pass ``lower_is_better=True`` and
    it becomes reference / ours.
    """

    name: str
    ours: float
    reference: float
    reference_name: str
    unit: str
    lower_is_better: bool = False
    target: float | None = None
    note: str = ""

    @property
    def ratio(self) -> float:
        if self.lower_is_better:
            return self.reference / self.ours if self.ours else float("inf")
        return self.ours / self.reference if self.reference else float("inf")

    @property
    def met(self) -> bool:
        return self.target is None or self.ratio >= self.target


def best_time(fn: Callable[[], object], repeat: int = 3, warmup: int = 1) -> float:
    """Minimum wall time of ``fn()`` over ``repeat`` runs after ``warmup`` runs.

    The minimum is the least noisy estimate on a shared machine. When comparing
    two implementations, interleave them (call this for A, then B, then again)
    rather than timing one long after the other.
    """
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best
