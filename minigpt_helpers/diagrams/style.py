"""The drawing kit of the concept diagrams (pipeline.py, model.py): one visual style.

Every diagram is drawn on one axes that covers the whole figure, in **inches**
(``x`` from 0 to the figure's width, ``y`` from 0 to its height), so a box of
width 1 is one inch wide whatever the figure, and font sizes in points are
predictable. The colours say what a thing is, the same in every diagram:

    data     token ids, text, tensors flowing in      blue
    compute  layers with weights: Linear, MLP, model  orange
    norm     LayerNorm                                green
    attn     attention, keys/values                   purple
    loss     targets, the loss, things that train     red
    off      masked, frozen, dropped, not computed    grey
    cache    read back from a cache                   teal

Labels are at least 9 pt (``SMALL``) at the default size; text is 10 pt (``FONT``).
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch, Rectangle

FONT = 10  # pt: labels inside boxes, annotations
SMALL = 9  # pt: the smallest text in any diagram (shapes, code, captions)
TITLE = 12  # pt
INK = "#333333"  # text and arrows
MUTED = "#666666"  # secondary text
MONO = "DejaVu Sans Mono"  # ships with matplotlib: renders the same everywhere
SPACE = "\u2423"  # ␣: a visible space in token cells
RETURN = "\u23ce"  # ⏎: a newline in token cells

#: kind -> (fill, edge)
COLORS: dict[str, tuple[str, str]] = {
    "data": ("#dbe9f6", "#2f6399"),
    "compute": ("#fde3c8", "#b35c12"),
    "norm": ("#d8efd5", "#3a7d36"),
    "attn": ("#e6dcf3", "#5e3f99"),
    "loss": ("#f7d3d3", "#a83232"),
    "off": ("#eeeeee", "#9e9e9e"),
    "cache": ("#d2eeec", "#23807a"),
    "plain": ("#ffffff", "#555555"),
}
#: fills for telling documents / heads / roles apart (light, colour-blind friendly)
SERIES = ["#cfe1f5", "#fbd9b4", "#d3ecd0", "#e3d7f2", "#f8d0d6", "#fdf1b8", "#d0ecec", "#e8e1d6"]
SERIES_EDGE = ["#2f6399", "#b35c12", "#3a7d36", "#5e3f99", "#a8324a", "#9c7d00", "#23807a", "#7a6a55"]


def canvas(width: float, height: float, title: str | None = None, subtitle: str | None = None) -> tuple[Figure, plt.Axes]:
    """A figure ``width`` x ``height`` inches with one axes in inch units, axis off, title at top left.

    Made with pyplot (so the notebook backend is set up) and closed again by :func:`finish`.
    """
    fig = plt.figure(figsize=(width, height), dpi=100)
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_xlim(0, width)
    ax.set_ylim(0, height)
    ax.set_axis_off()
    if title:
        ax.text(0.2, height - 0.22, title, fontsize=TITLE, fontweight="bold", color=INK, va="top", ha="left")
    if subtitle:
        ax.text(0.2, height - 0.52, subtitle, fontsize=FONT, color=MUTED, va="top", ha="left")
    return fig, ax


def finish(fig: Figure) -> Figure:
    """Detach ``fig`` from pyplot and return it.

    A notebook cell that *ends* with a diagram call then shows it exactly once (an
    open pyplot figure would be shown a second time when the cell finishes);
    ``display(fig)`` and ``fig.savefig(path)`` work as usual.
    """
    plt.close(fig)
    return fig


def box(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str = "", kind: str = "compute", *,
        fontsize: float = FONT, fill: str | None = None, edge: str | None = None, bold: bool = False,
        family: str | None = None, dashed: bool = False, lw: float = 1.3, color: str = INK,
        pad: float = 0.04) -> FancyBboxPatch:
    """A rounded box with lower-left corner ``(x, y)``, ``text`` centred in it."""
    f, e = COLORS[kind]
    patch = FancyBboxPatch((x + pad, y + pad), w - 2 * pad, h - 2 * pad, boxstyle=f"round,pad={pad}",
                           facecolor=fill or f, edgecolor=edge or e, linewidth=lw,
                           linestyle="--" if dashed else "-", zorder=2)
    ax.add_patch(patch)
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=color,
                fontweight="bold" if bold else "normal", family=family, zorder=3)
    return patch


def cell(ax: plt.Axes, x: float, y: float, w: float, h: float, text: str = "", *, fill: str = "#ffffff",
         edge: str = "#555555", fontsize: float = FONT, color: str = INK, hatch: str | None = None,
         family: str | None = None, lw: float = 1.0) -> Rectangle:
    """A square-cornered cell (a token, a matrix entry) with ``text`` centred in it."""
    patch = Rectangle((x, y), w, h, facecolor=fill, edgecolor=edge, linewidth=lw, hatch=hatch, zorder=2)
    ax.add_patch(patch)
    if text:
        ax.text(x + w / 2, y + h / 2, text, ha="center", va="center", fontsize=fontsize, color=color,
                family=family, zorder=3)
    return patch


def arrow(ax: plt.Axes, start: Sequence[float], end: Sequence[float], *, color: str = INK, lw: float = 1.4,
          rad: float = 0.0, style: str = "-|>", dashed: bool = False, shrink: float = 2.0) -> FancyArrowPatch:
    """An arrow from ``start`` to ``end`` (data coordinates); ``rad`` bends it."""
    a = FancyArrowPatch(tuple(start), tuple(end), arrowstyle=style, mutation_scale=13, color=color, linewidth=lw,
                        connectionstyle=f"arc3,rad={rad}", linestyle="--" if dashed else "-",
                        shrinkA=shrink, shrinkB=shrink, zorder=4)
    ax.add_patch(a)
    return a


def label(ax: plt.Axes, x: float, y: float, text: str, *, size: float = FONT, color: str = INK,
          ha: str = "center", va: str = "center", bold: bool = False, italic: bool = False,
          family: str | None = None, rotation: float = 0.0) -> plt.Text:
    """Free text at ``(x, y)``."""
    return ax.text(x, y, text, fontsize=size, color=color, ha=ha, va=va, family=family, rotation=rotation,
                   fontweight="bold" if bold else "normal", fontstyle="italic" if italic else "normal",
                   zorder=5)


def legend(ax: plt.Axes, x: float, y: float, entries: Sequence[tuple[str, str, str]], *, dx: float = 2.2,
           hatch_for: str | None = None) -> None:
    """A row of ``(fill, edge, text)`` swatches starting at ``(x, y)``, ``dx`` inches apart."""
    for i, (fill, edge, text) in enumerate(entries):
        cell(ax, x + i * dx, y - 0.09, 0.18, 0.18, fill=fill, edge=edge,
             hatch="///" if hatch_for is not None and text == hatch_for else None)
        label(ax, x + i * dx + 0.26, y, text, size=SMALL, ha="left")


def show_token(text: str) -> str:
    """A token's text for a cell: spaces as ␣, newlines as ⏎."""
    return text.replace(" ", SPACE).replace("\n", RETURN)


def style_axes(ax: plt.Axes) -> None:
    """For the diagrams that are real plots: the same fonts and a quiet frame."""
    ax.tick_params(labelsize=SMALL, colors=INK)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    ax.xaxis.label.set_size(FONT)
    ax.yaxis.label.set_size(FONT)
    ax.title.set_size(FONT)
