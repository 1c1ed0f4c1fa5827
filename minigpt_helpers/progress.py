"""Showing progress the same way everywhere: a bar in Jupyter, a line on a terminal, a final line in logs.

The training monitor (training/live.py) and the BPE trainer (tokenizers/bpe.py) both
report through this module, so a saved notebook shows the same finished state for both.
"""

from __future__ import annotations

import sys
from typing import Any


def in_notebook() -> bool:
    """True inside a Jupyter / Colab kernel (where rich display works)."""
    if "google.colab" in sys.modules:
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ in ("ZMQInteractiveShell", "Shell")


class ProgressBar:
    """A ``tqdm`` progress bar that ends as one line of text, wherever it runs.

    - In Jupyter / Colab (or ``notebook=True``): tqdm's widget bar, shown through our
      own display handle. :meth:`close` replaces the widget by its final line, as text:
      a saved notebook cannot show a widget's last state (GitHub and Colab would show a
      frozen "0it" bar). Without ipywidgets: tqdm's text bar.
    - On a terminal (stderr is a TTY): tqdm's text bar on stderr, redrawn in place.
    - Elsewhere (a log file, CI): no bar at all; :meth:`close` prints the final line only.

    ``close(final)`` ends with ``final`` (e.g. a summary) in place of the bar's own last
    line: the bar is cleared and ``final`` shown (in a notebook) or printed on stdout.
    The other methods are tqdm's: ``update``, ``set_postfix``, ``set_description_str``,
    ``reset``, ``write``.
    """

    def __init__(self, total: float | None = None, *, desc: str = "", initial: float = 0, unit: str = "it",
                 unit_scale: bool = False, notebook: bool | None = None) -> None:
        from tqdm.std import tqdm as text_tqdm

        options = dict(total=total, initial=initial, desc=desc, unit=unit, unit_scale=unit_scale,
                       dynamic_ncols=True)
        self.handle = None  # the display handle of the widget bar, in a notebook
        notebook = in_notebook() if notebook is None else notebook
        self.bar = self._widget_bar(options) if notebook else None
        if self.bar is None:  # a text bar where it can be redrawn (a terminal, a notebook without ipywidgets)
            self.bar = text_tqdm(**options, disable=not (notebook or sys.stderr.isatty()))

    def _widget_bar(self, options: dict):
        """tqdm's notebook bar displayed through a handle we keep, or None without ipywidgets."""
        try:
            from IPython.display import display
            from tqdm.notebook import tqdm as widget_tqdm

            bar = widget_tqdm(**options, display=False)
        except ImportError:  # no ipywidgets (tqdm.notebook needs them): a text bar instead
            return None
        self.handle = display(bar.container, display_id=True)
        return bar

    @property
    def n(self) -> float:
        """The count so far."""
        return self.bar.n

    def update(self, n: float = 1) -> None:
        self.bar.update(n)

    def set_postfix(self, values: dict[str, Any] | None = None, refresh: bool = True) -> None:
        self.bar.set_postfix(values, refresh=refresh)

    def set_description_str(self, text: str, refresh: bool = True) -> None:
        self.bar.set_description_str(text, refresh=refresh)

    def reset(self, total: float | None = None, *, desc: str | None = None, unit: str | None = None) -> None:
        """Count again from 0 (up to ``total``) on the same bar, the next phase of one task, with its own
        ``desc`` and ``unit`` (shown unscaled) if given."""
        if unit is not None:
            self.bar.unit, self.bar.unit_scale = unit, False
        if desc is not None:
            self.bar.set_description_str(desc, refresh=False)
        self.bar.reset(total=total)

    def write(self, text: str) -> None:
        """Print ``text`` above the bar (tqdm.write), without breaking the bar."""
        self.bar.write(text)

    def close(self, final: str | None = None) -> None:
        """End the bar: a notebook keeps one line of text (``final``, else the bar's last line)."""
        if self.handle is not None:
            line = final if final is not None else str(self.bar)
            self.bar.close()
            from IPython.display import Pretty

            self.handle.update(Pretty(line))
            return
        if final is not None:
            self.bar.leave = False  # clear the live bar: ``final`` takes its place
        self.bar.close()
        if final is not None:
            print(final, flush=True)


class LiveFigure:
    """A matplotlib figure redrawn in place in a notebook: the first :meth:`show` displays it, later ones update
    that same output (one display handle), so a live plot never stacks up copies of itself.

    ``LiveFigure(*args, **kw)`` makes the figure with ``plt.subplots(*args, **kw)``
    (``.fig``, ``.axes``) and closes it in pyplot, so that the cell's end does not show
    it a second time. Draw on ``.axes``, then call :meth:`show`.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        import matplotlib.pyplot as plt

        self.fig, self.axes = plt.subplots(*args, **kwargs)
        plt.close(self.fig)
        self.handle = None

    def show(self) -> None:
        from IPython.display import display

        if self.handle is None:
            self.handle = display(self.fig, display_id=True)
        else:
            self.handle.update(self.fig)

