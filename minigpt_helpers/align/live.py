"""GRPO's statistics as a figure, drawn live in a notebook while :func:`~minigpt_helpers.align.grpo.grpo` runs.

``train()``'s own live plot shows the loss, which says little in GRPO (its value
depends on the advantages of the batch, which average to zero). What does say how
the run goes is in :data:`~minigpt_helpers.align.grpo.STAT_KEYS`, one value per step:
the mean reward, the share of groups whose rewards are all equal (they teach
nothing), the KL to the reference, the mean completion length and the clip
fraction. :func:`plot_grpo_stats` draws them; :class:`StatsMonitor` redraws that
figure in place (one display handle, at most every ``every_s`` seconds, and once more
at the end) from ``grpo``'s callback.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

from ..progress import LiveFigure

PANELS = (("reward", "mean reward"), ("zero_variance", "zero-variance groups"), ("kl", "KL to the reference"),
          ("length", "completion length (tokens)"), ("clip_fraction", "clip fraction"))


def running_mean(values: Sequence[float], window: int) -> list[float]:
    """The mean of the last ``window`` values at each point (fewer at the start): a curve through noisy steps."""
    out, total = [], 0.0
    for k, v in enumerate(values):
        total += v
        if k >= window:
            total -= values[k - window]
        out.append(total / min(k + 1, window))
    return out


def plot_grpo_stats(stats: Sequence[dict[str, float]], axes: Any = None, *, title: str | None = None,
                    window: int = 20):
    """Five panels, one per GRPO statistic against the step: the per-step values (faint) and their running mean
    over ``window`` steps. ``axes``: five matplotlib axes to draw on (cleared first); None makes a new figure."""
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, len(PANELS), figsize=(13, 2.6), dpi=80)
    steps = [s["step"] for s in stats]
    for ax, (key, name) in zip(axes, PANELS):
        ax.clear()
        values = [s[key] for s in stats]
        if values:
            ax.plot(steps, values, color="C0", alpha=0.25, lw=0.8)
            ax.plot(steps, running_mean(values, window), color="C0", lw=1.8)
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    if title:
        axes[0].figure.suptitle(title, fontsize=11)
    axes[0].figure.tight_layout()
    return axes[0].figure


class StatsMonitor:
    """Redraws :func:`plot_grpo_stats` in place in a notebook (at most every ``every_s`` seconds, and at the end)."""

    def __init__(self, title: str | None = None, every_s: float = 2.0) -> None:
        self.title, self.every_s = title, every_s
        self.figure: LiveFigure | None = None
        self.last = 0.0

    def update(self, stats: Sequence[dict[str, float]], force: bool = False) -> None:
        """Draw ``stats`` if ``every_s`` seconds have passed since the last drawing (always if ``force``)."""
        if not stats or not (force or time.perf_counter() - self.last >= self.every_s):
            return
        if self.figure is None:
            self.figure = LiveFigure(1, len(PANELS), figsize=(13, 2.6), dpi=80)
        plot_grpo_stats(stats, self.figure.axes, title=self.title)
        self.figure.show()
        self.last = time.perf_counter()
