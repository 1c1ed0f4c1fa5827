"""The legibility check of a drawn figure (not a test module): labels of at least 9 pt, none cut off at the
figure's edge, no two overlapping. test_diagrams.py runs it on every concept diagram, test_chat.py on the chat
mask drawn with a real tokenizer."""

from __future__ import annotations

import warnings

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Text


def drawn_texts(fig: Figure) -> list[Text]:
    """The non-empty texts that are actually drawn: free texts, titles, and tick/axis labels of visible axes."""
    out = list(fig.texts)
    for ax in fig.axes:
        out += ax.texts
        if ax.axison:
            out += [ax.title, ax._left_title, ax.xaxis.label, ax.yaxis.label]
            (x0, x1), (y0, y1) = sorted(ax.get_xlim()), sorted(ax.get_ylim())
            out += [t for t in ax.get_xticklabels() if x0 <= t.get_position()[0] <= x1]  # drawn ticks only
            out += [t for t in ax.get_yticklabels() if y0 <= t.get_position()[1] <= y1]
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def legibility_problems(fig: Figure) -> list[str]:
    """Labels under 9 pt, labels that overlap, and labels that stick out of the figure."""
    canvas = FigureCanvasAgg(fig)  # a closed pyplot figure keeps only a bare canvas
    with warnings.catch_warnings():
        # "Glyph ... missing from font(s)": the character would show as an empty box
        warnings.filterwarnings("error", message=r"(?i).*glyph.*missing")
        canvas.draw()
    renderer = canvas.get_renderer()
    texts = drawn_texts(fig)
    problems = [f"{t.get_text()!r} is {t.get_fontsize():g} pt" for t in texts if t.get_fontsize() < 9]
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in texts]
    frame = fig.bbox
    for name, b in boxes:
        if b.x0 < frame.x0 - 1 or b.y0 < frame.y0 - 1 or b.x1 > frame.x1 + 1 or b.y1 > frame.y1 + 1:
            problems.append(f"{name!r} is cut off at the figure's edge")
    for i, (a_name, a) in enumerate(boxes):
        for b_name, b in boxes[i + 1:]:
            w = min(a.x1, b.x1) - max(a.x0, b.x0)
            h = min(a.y1, b.y1) - max(a.y0, b.y0)
            if w > 1.5 and h > 1.5:  # pixels: touching is fine, overlapping is not
                problems.append(f"{a_name!r} overlaps {b_name!r}")
    return problems
