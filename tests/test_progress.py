"""The course's progress bar (progress.ProgressBar): it ends as one line of text, wherever it runs.

The BPE trainer's use of it is tested in test_tokenizers.py; here the bar itself and
the training monitor, whose widget bar must become its final line in a saved notebook.
"""

from __future__ import annotations

import sys

import pytest

import minigpt_helpers.progress as progress
from minigpt_helpers.progress import ProgressBar
from minigpt_helpers.training.live import Monitor


@pytest.fixture()
def fake_notebook(monkeypatch):
    """display() recorded instead of shown: (what was displayed, what each display handle was updated to)."""
    pytest.importorskip("ipywidgets")
    import IPython.display

    displayed: list = []
    updates: list = []

    class Handle:
        def update(self, obj) -> None:
            updates.append(obj)

    def fake_display(obj, display_id=False):
        assert display_id is True  # a handle, so the final line replaces this output
        displayed.append(obj)
        return Handle()

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    return displayed, updates


def test_off_a_terminal_only_the_final_line_is_printed(capsys):
    bar = ProgressBar(10, desc="work")
    for _ in range(10):
        bar.update()
    bar.close("work: done")
    assert capsys.readouterr() == ("work: done\n", "")
    silent = ProgressBar(3, desc="work")
    silent.update(3)
    silent.close()  # no final line given: nothing at all
    assert capsys.readouterr() == ("", "")


def test_on_a_terminal_the_bar_is_drawn_on_stderr_and_cleared_for_the_final_line(monkeypatch, capsys):
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = ProgressBar(4, desc="work")
    bar.update(4)
    bar.close("work: done")
    out, err = capsys.readouterr()
    assert "\rwork:" in err and err.endswith("\r") and out == "work: done\n"


def test_in_a_notebook_the_widget_becomes_its_final_line(fake_notebook, capsys):
    import IPython.display

    displayed, updates = fake_notebook
    bar = ProgressBar(5, desc="work")
    bar.update(5)
    bar.set_postfix({"loss": "1.23"}, refresh=False)
    bar.close()
    assert len(displayed) == 1 and displayed[0].children[1].value == 5  # tqdm's widget, counted to the end
    assert len(updates) == 1 and isinstance(updates[0], IPython.display.Pretty)
    assert "5/5" in updates[0].data and "loss=1.23" in updates[0].data  # the bar's own last line, as text
    assert capsys.readouterr().out == ""


def test_monitor_bar_ends_as_its_final_line_in_a_notebook(fake_notebook):
    import IPython.display

    displayed, updates = fake_notebook
    monitor = Monitor("notebook", total=6, desc="train", plot_every_s=float("inf"))  # the bar alone, no figure
    for step in range(1, 7):
        monitor.step(None, step=step, loss=2.5, lr=1e-3, tok_s=12_000, mfu=None, total=6)
    monitor.close()
    assert len(displayed) == 1 and len(updates) == 1 and isinstance(updates[0], IPython.display.Pretty)
    line = updates[0].data  # e.g. "train: 100%|...| 6/6 [00:00<00:00, ..., loss=2.5000, tok/s=12.0k, mfu=n/a]"
    assert line.startswith("train: 100%") and "6/6" in line and "loss=2.5000" in line and "tok/s=12.0k" in line


def test_live_figures_redraw_one_output_in_place(fake_notebook):
    """Train's loss plot and GRPO's statistics share LiveFigure: the first drawing is displayed, every later one
    updates that same output, and pyplot does not hold the figure (so the cell's end shows no second copy)."""
    import matplotlib.pyplot as plt

    from minigpt_helpers.align.live import StatsMonitor

    displayed, updates = fake_notebook
    stats = [{"step": k, "reward": 0.5, "zero_variance": 0.0, "kl": 0.1, "length": 8.0, "clip_fraction": 0.0}
             for k in range(1, 4)]
    monitor = StatsMonitor(every_s=0.0)
    for n in range(1, 4):
        monitor.update(stats[:n])
    assert displayed == [monitor.figure.fig] and updates == [monitor.figure.fig] * 2
    assert monitor.figure.fig.number not in plt.get_fignums()
    assert [ax.get_title() for ax in monitor.figure.axes][0] == "mean reward"
