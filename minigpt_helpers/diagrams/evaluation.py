"""Diagrams of chapter 09: multiple-choice scoring by log-likelihood, and IsoFLOP profiles.

``choice_scoring`` scores its choices with the evaluation wing's own convention
(``evaluation.choices.encode_pair``: one string, cut after the context's own tokens),
on a real model when one is given; ``isoflop_profiles`` draws ``chinchilla_loss`` and
``chinchilla_optimum`` with Hoffmann et al.'s published fit.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .style import (
    COLORS,
    FONT,
    INK,
    MONO,
    MUTED,
    SERIES_EDGE,
    SMALL,
    TITLE,
    arrow,
    box,
    canvas,
    cell,
    finish,
    label,
    legend,
    show_token,
    style_axes,
)

# Words stand for tokens and the numbers are made up when no model is given.
_CONTEXT = "JULIET.\nO Romeo, Romeo, wherefore art thou"
_CHOICES = (" Romeo?", " gone to the market?", " so late?", " a rose?")
_EXAMPLE_LOGP = ((-1.2,), (-3.1, -2.0, -0.9, -1.8), (-3.4, -2.2), (-3.0, -3.3))


def token_logprobs(model: Any, context: str, choice: str) -> list[tuple[str, float]]:
    """``(token text, log p(token | everything before it))`` for each of ``choice``'s tokens after ``context``.

    The tokens are lm-evaluation-harness's (``evaluation.choices.encode_pair``) and the
    input is cut on the left to the model's window as ``score_choices`` cuts it, so the
    values add up to ``score_choices``' log-likelihood of the choice.
    """
    import torch

    from ..evaluation.choices import encode_pair

    tok = model.tokenizer
    context_ids, cont = encode_pair(tok, context, choice)
    if not cont:
        raise ValueError(f"choice {choice!r} adds no token after the context: give a choice that adds text")
    block = model.config.block_size
    ids = (context_ids + cont)[-(block + 1):][:-1]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(torch.tensor([ids], device=next(model.parameters()).device))
    finally:
        model.train(was_training)
    logits = out[0] if isinstance(out, (tuple, list)) else out  # (1, T, V)
    logp = logits[0, -len(cont):].float().log_softmax(-1)  # (len(cont), V): the positions that predict the choice
    values = logp.gather(-1, torch.tensor(cont, device=logp.device)[:, None])[:, 0].tolist()
    return [(tok.decode([i]), v) for i, v in zip(cont, values)]


def _choice_rows(model: Any, context: str, choices: Sequence[str]) -> list[list[tuple[str, float]]]:
    """Each choice as ``(token, log p)`` pairs: the model's, or, without one, words and example numbers."""
    if model is not None:
        return [token_logprobs(model, context, c) for c in choices]
    if tuple(choices) != _CHOICES or context != _CONTEXT:
        raise ValueError("without a model the diagram shows its own example: pass model=... (with its tokenizer) "
                         "to score other choices")
    return [[(w, lp) for w, lp in zip(re.findall(r"\s?\S+", c), logps)] for c, logps in zip(choices, _EXAMPLE_LOGP)]


def choice_scoring(context: str = _CONTEXT, choices: Sequence[str] = _CHOICES, label_index: int | None = 0,
                   model: Any = None) -> Figure:
    """A multiple-choice item scored as lm-evaluation-harness scores it: one log-likelihood per choice, then argmax.

    Each row is the context followed by one choice; the model reads the row once and
    gives ``log p(token | everything before it)`` for each of the choice's tokens (under
    the cells); their sum is the choice's score (``acc`` picks the largest; ``acc_norm``
    divides it by the choice's UTF-8 bytes first). With ``model`` (a GPT with its
    tokenizer) the cells are its tokens and the numbers its own; without one, words
    stand for tokens and the numbers are an example. ``label_index`` marks the true
    choice (None: unmarked).
    """
    if not choices or len(choices) > 6:
        raise ValueError(f"give 1 to 6 choices to draw, got {len(choices)}")
    if label_index is not None and not 0 <= label_index < len(choices):
        raise ValueError(f"label_index must be None or an index into choices (0..{len(choices) - 1}), got {label_index}")
    rows = _choice_rows(model, context, choices)
    sums = [sum(lp for _, lp in row) for row in rows]
    picked = max(range(len(rows)), key=lambda j: (sums[j], -j))  # ties to the first choice, as evaluate_choices
    widths = [[max(0.62, len(show_token(t)) * 0.1 + 0.2) for t, _ in row] for row in rows]
    ctx_w, left = 1.45, 0.35
    tokens_w = max(sum(w) for w in widths)
    x_sum = left + ctx_w + 0.25 + max(tokens_w, 3.3) + 0.55  # room for the header above the tokens
    W = max(10.0, x_sum + 4.3)
    ctx_lines = context.split("\n")
    top = 1.25 + 0.2 * len(ctx_lines)
    rh = 0.95
    H = top + 1.85 + rh * (len(rows) - 1)
    fig, ax = canvas(W, H, "Multiple choice by log-likelihood: score every choice, pick the best",
                     "no text is generated: one forward pass per row, log p(token | everything before it) "
                     "summed over the choice's tokens")
    box(ax, left, H - top - 0.08, W - 2 * left, 0.22 * len(ctx_lines) + 0.2, "", kind="data")
    label(ax, left + 0.15, H - top + 0.12 + 0.22 * len(ctx_lines) - 0.11, "context:", size=SMALL, ha="left",
          va="top", color=MUTED)
    label(ax, left + 1.0, H - top + 0.12 + 0.22 * len(ctx_lines) - 0.11, context.rstrip("\n"), size=SMALL,
          ha="left", va="top", family=MONO)
    y0 = H - top - 0.85
    label(ax, left + ctx_w + 0.25, y0 + 0.6, "the choice's tokens; log p of each under it", size=SMALL,
          ha="left", color=MUTED)
    label(ax, x_sum + 0.62, y0 + 0.6, "\u03a3 log p", size=SMALL, color=MUTED)
    for j, (row, ws) in enumerate(zip(rows, widths)):
        y = y0 - j * rh
        cell(ax, left, y, ctx_w, 0.36, "context", fill=COLORS["data"][0], edge=COLORS["data"][1], fontsize=SMALL)
        x = left + ctx_w + 0.25
        arrow(ax, (left + ctx_w, y + 0.18), (x, y + 0.18), lw=1.0, shrink=0)
        for (t, lp), w in zip(row, ws):
            cell(ax, x, y, w, 0.36, show_token(t), fill="#ffffff", edge=SERIES_EDGE[0], family=MONO, fontsize=SMALL)
            label(ax, x + w / 2, y - 0.17, f"{lp:.2f}", size=SMALL, color=COLORS["loss"][1], family=MONO)
            x += w
        arrow(ax, (x + 0.05, y + 0.18), (x_sum, y + 0.18), lw=1.0, shrink=0)
        chosen = j == picked
        box(ax, x_sum, y - 0.04, 1.25, 0.44, f"{sums[j]:.2f}", kind="loss" if chosen else "plain",
            bold=chosen, lw=2.2 if chosen else 1.0, family=MONO)
        notes = (["argmax: picked"] if chosen else []) + (["true line"] if j == label_index else [])
        if notes:
            label(ax, x_sum + 1.4, y + 0.18, " \u00b7 ".join(notes), size=SMALL, ha="left",
                  color=COLORS["loss"][1] if chosen else INK, bold=chosen)
    verdict = ("right" if picked == label_index else "wrong") if label_index is not None else None
    legend(ax, 0.45, 0.33, [(COLORS["data"][0], COLORS["data"][1], "read, not scored"),
                            ("#ffffff", SERIES_EDGE[0], "scored: the choice's tokens"),
                            (COLORS["loss"][0], COLORS["loss"][1],
                             "highest sum: the answer" + (f" ({verdict})" if verdict else ""))], dx=2.75)
    return finish(fig)


# ------------------------------------------------------------------------------ IsoFLOP profiles
def isoflop_profiles(budgets: Sequence[float] = (1e18, 1e19, 1e20, 1e21), fit: Mapping[str, float] | None = None
                     ) -> Figure:
    """Loss against model size at fixed compute ``C = 6 N D``, from Chinchilla's fitted ``L(N, D)``.

    Left: one IsoFLOP profile per budget, ``L(N, C / 6N)``: too small a model lacks
    capacity, too large a one sees too few tokens, and the valley's bottom is the
    compute-optimal size (``chinchilla_optimum``). Right: those sizes against the
    budget on log-log axes, a straight line of slope ``a``. ``fit`` defaults to
    Hoffmann et al.'s approach-3 fit (``PUBLISHED["chinchilla"]``).
    """
    import numpy as np

    from ..evaluation.scaling import PUBLISHED, chinchilla_loss, chinchilla_optimum

    fit = dict(PUBLISHED["chinchilla"] if fit is None else fit)
    budgets = sorted(float(c) for c in budgets)
    if len(budgets) < 2 or budgets[0] <= 0:
        raise ValueError(f"give two or more positive budgets in FLOPs, e.g. (1e18, 1e19, 1e20), got {budgets}")
    n_opt, d_opt, l_opt = (np.asarray(v, dtype=float) for v in chinchilla_optimum(fit, budgets))
    fig = plt.figure(figsize=(10.5, 4.3), dpi=100)
    fig.text(0.015, 0.97, "IsoFLOP profiles: at a fixed budget there is a best model size", fontsize=TITLE,
             fontweight="bold", va="top", color=INK)
    fig.text(0.015, 0.9, "C = 6 N D: a bigger model reads fewer tokens.  Curves: Chinchilla's fitted "
             f"L(N, D) = E + A / N^{fit['alpha']:.2f} + B / D^{fit['beta']:.2f}", fontsize=FONT, color=MUTED, va="top")
    left = fig.add_axes((0.07, 0.14, 0.5, 0.62))
    right = fig.add_axes((0.7, 0.14, 0.28, 0.62))
    for k, (c, n_star, l_star) in enumerate(zip(budgets, n_opt, l_opt)):
        n = np.geomspace(n_star / 30, n_star * 30, 200)
        color = SERIES_EDGE[k % len(SERIES_EDGE)]
        left.plot(n, chinchilla_loss(fit, n, c / (6 * n)), color=color, lw=2)
        left.plot([n_star], [l_star], "o", color=color, ms=7, mec="white", mew=1.2)
        left.text(n_star * 30 * 1.15, chinchilla_loss(fit, n_star * 30, c / (6 * n_star * 30)), f"C = {c:.0e}",
                  fontsize=SMALL, color=color, va="center")
    left.set_xscale("log")
    left.set_xlim(n_opt[0] / 40, n_opt[-1] * 300)
    left.set_xlabel("parameters N (log)")
    left.set_ylabel("loss (nats per token)")
    style_axes(left)
    lo = float(min(l_opt))
    left.text(n_opt[0] / 35, lo - 0.02 * (1 + lo), "dots: the compute-optimal size", fontsize=SMALL, color=INK,
              va="top")
    left.set_ylim(lo - 0.12 * (1 + lo), None)
    right.loglog(budgets, n_opt, "o-", color=COLORS["compute"][1], lw=2, label="N_opt")
    right.loglog(budgets, d_opt, "s--", color=COLORS["data"][1], lw=2, label="D_opt")
    right.set_xlabel("compute C (FLOPs, log)")
    right.set_ylabel("N_opt, D_opt (log)")
    a = fit["beta"] / (fit["alpha"] + fit["beta"])
    right.set_title(f"N_opt ~ C^{a:.2f}, D_opt ~ C^{1 - a:.2f}", fontsize=FONT, loc="left", color=INK)
    right.legend(fontsize=SMALL, frameon=False, loc="upper left")
    style_axes(right)
    right.minorticks_off()
    span = math.log10(budgets[-1] / budgets[0])
    right.set_xticks([budgets[0], budgets[-1]])
    right.set_xticklabels([f"{budgets[0]:.0e}", f"{budgets[-1]:.0e}"] if span > 0 else [f"{budgets[0]:.0e}"])
    return finish(fig)
