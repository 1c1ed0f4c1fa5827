"""Watching training: a progress bar and a live plot in Jupyter, plain log lines on a terminal.

The seed of this course promised "the loss at every iteration". Printing a line
per step would flood a notebook with thousands of lines, so instead:

* in Jupyter / Colab: a ``tqdm`` bar whose postfix carries the current loss,
  tokens/s and MFU (updated every step), and *one* figure of train loss,
  validation loss and learning rate, redrawn in place through a display handle
  at most every ``plot_every_s`` seconds (so the notebook keeps one image);
* on a terminal (the CLI, scripts, tests): a plain log line every
  ``log_interval`` steps and at every evaluation.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..progress import LiveFigure, ProgressBar, in_notebook


def _fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x < 1e6 else f"{x / 1e6:.2f}M"


def plot_history(history, ax_loss=None, ax_lr=None, *, title: str | None = None):
    """Train loss (and its running mean), validation loss, and the learning rate, against steps."""
    import matplotlib.pyplot as plt

    if ax_loss is None:
        fig, (ax_loss, ax_lr) = plt.subplots(1, 2, figsize=(9, 3.2), dpi=80, width_ratios=[2.2, 1])
    steps, losses = history.steps, history.losses
    ax_loss.clear()
    if steps:
        ax_loss.plot(steps, losses, color="tab:blue", alpha=0.3, lw=0.8, label="train (each step)")
        k = max(1, min(50, len(losses) // 20))
        if k > 1:
            smooth = [sum(losses[max(0, i - k + 1): i + 1]) / len(losses[max(0, i - k + 1): i + 1])
                      for i in range(len(losses))]
            ax_loss.plot(steps, smooth, color="tab:blue", lw=1.5, label=f"train (mean of {k})")
    if history.val_steps:
        ax_loss.plot(history.val_steps, history.val_losses, "o-", color="tab:orange", ms=3, label="validation")
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("cross-entropy loss (nats)")
    ax_loss.grid(alpha=0.3)
    if steps or history.val_steps:
        ax_loss.legend(loc="upper right", fontsize=8)
    if title:
        ax_loss.set_title(title, fontsize=9)
    if ax_lr is not None:
        ax_lr.clear()
        ax_lr.plot(steps, history.lrs, color="tab:green")
        ax_lr.set_xlabel("step")
        ax_lr.set_ylabel("learning rate")
        ax_lr.ticklabel_format(axis="y", style="sci", scilimits=(-3, 3))
        ax_lr.grid(alpha=0.3)
    return ax_loss.figure


class Monitor:
    """Progress reporting for :func:`minigpt_helpers.train` (rank 0 only).

    ``mode``: "notebook" (bar + live plot), "log" (plain lines) or "off";
    "auto" picks notebook inside Jupyter and log elsewhere.
    """

    def __init__(self, mode: str = "auto", *, total: int | None = None, initial: int = 0,
                 log_interval: int = 50, plot_every_s: float = 2.0, desc: str = "train") -> None:
        if mode == "auto":
            mode = "notebook" if in_notebook() else "log"
        if mode not in ("notebook", "log", "off"):
            raise ValueError(f"live mode must be 'auto', 'notebook', 'log' or 'off', got {mode!r}")
        self.mode, self.log_interval, self.plot_every_s = mode, max(1, log_interval), plot_every_s
        self.bar = self.figure = None
        self._last_plot = 0.0
        if mode == "notebook":  # a widget bar that ends as its final line of text (progress.ProgressBar)
            self.bar = ProgressBar(total, initial=initial, desc=desc, notebook=True)

    def step(self, history, *, step: int, loss: float, lr: float, tok_s: float, mfu: float | None,
             total: int | None) -> None:
        """Called after every optimizer step."""
        if self.mode == "notebook":
            self.bar.update(step - self.bar.n)
            post = {"loss": f"{loss:.4f}", "tok/s": _fmt_rate(tok_s)}
            post["mfu"] = f"{mfu:.1%}" if mfu is not None else "n/a"
            self.bar.set_postfix(post, refresh=False)
            if time.perf_counter() - self._last_plot >= self.plot_every_s:
                self.plot(history)
        elif self.mode == "log" and (step % self.log_interval == 0 or step == 1):
            of = f"/{total}" if total else ""
            mfu_s = f" | mfu {mfu:.1%}" if mfu is not None else ""
            print(f"step {step}{of} | loss {loss:.4f} | lr {lr:.2e} | {_fmt_rate(tok_s)} tok/s{mfu_s}", flush=True)

    def evaluated(self, history, *, step: int, val_loss: float) -> None:
        """Called after each validation."""
        if self.mode == "log":
            ppl = math.exp(val_loss) if val_loss < 50 else float("inf")
            print(f"step {step} | val loss {val_loss:.4f} (perplexity {ppl:.1f})", flush=True)
        elif self.mode == "notebook":
            self.plot(history)

    def message(self, text: str) -> None:
        if self.mode == "notebook" and self.bar is not None:
            self.bar.write(text)
        elif self.mode != "off":
            print(text, flush=True)

    def plot(self, history) -> None:
        """Redraw the live figure in place (one display handle, never a new output)."""
        if self.mode != "notebook":
            return
        if self.figure is None:
            self.figure = LiveFigure(1, 2, figsize=(9, 3.2), dpi=80, width_ratios=[2.2, 1])
        plot_history(history, *self.figure.axes)
        self.figure.fig.tight_layout()
        self.figure.show()
        self._last_plot = time.perf_counter()

    def close(self, history: Any = None) -> None:
        """Final redraw (so a saved notebook shows the finished curves) and close the bar."""
        if self.mode == "notebook":
            if history is not None:
                self.plot(history)
            if self.bar is not None:  # the widget becomes its final line, e.g. "train: 100%|...| 6966/6966 [...]"
                self.bar.close()
