"""Concept diagrams of the model (chapters 03, 04, 07, 08); the package docstring lists them all.

Import them from ``minigpt_helpers.diagrams``: this module only keeps that one shorter.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

from matplotlib.figure import Figure
from matplotlib.patches import Circle

from .style import (
    COLORS,
    FONT,
    INK,
    MONO,
    MUTED,
    SERIES,
    SERIES_EDGE,
    SMALL,
    arrow,
    box,
    canvas,
    cell,
    finish,
    label,
    legend,
)


def _plus(ax, x: float, y: float, r: float = 0.17) -> None:
    """The ⊕ where a branch adds into the residual stream."""
    ax.add_patch(Circle((x, y), r, facecolor="white", edgecolor=INK, lw=1.4, zorder=4))
    label(ax, x, y + 0.01, "+", size=FONT + 2, bold=True)


# ------------------------------------------------------------------------------ ch03: Q, K, V and the mask
def _round_keeping_total(values: Sequence[float], places: int = 2) -> list[float]:
    """``values`` rounded to ``places`` decimals so that the rounded numbers add up to the rounded total.

    Largest-remainder rounding: every value is rounded down, and the units still missing go to the values
    that lost the most. Rounding each weight on its own can show a softmax row that adds up to 0.98.
    """
    unit = 10**places
    scaled = [v * unit for v in values]
    kept = [math.floor(s) for s in scaled]
    missing = round(sum(scaled)) - sum(kept)
    for i in sorted(range(len(kept)), key=lambda i: kept[i] - scaled[i])[:missing]:  # largest remainder first
        kept[i] += 1
    return [k / unit for k in kept]


def causal_attention(tokens: Sequence[str] = ("The", "cat", "sat", "on", "the", "mat"), query: int = 2,
                     seed: int = 0) -> Figure:
    """Q, K, V from the same tokens, and the causal mask: query ``i`` attends to keys ``j <= i`` only.

    The mask is ``attention.causal_mask``; the weights are a softmax of random scores
    (seeded) with the masked cells at -inf, so every row sums to 1 over the past. They are shown
    to two decimals, rounded so that each row's shown numbers add up to exactly 1.
    """
    import torch

    from ..model.attention import causal_mask

    T = len(tokens)
    if not 2 <= T <= 10 or not 0 <= query < T:
        raise ValueError(f"give 2-10 tokens and a query position in 0..{T - 1}; got {T} tokens, query={query}")
    mask = causal_mask(T, T)
    g = torch.Generator().manual_seed(seed)
    scores = torch.randn(T, T, generator=g) * 1.2
    weights = torch.softmax(scores.masked_fill(~mask, float("-inf")), dim=-1)
    shown = [_round_keeping_total(row[: i + 1].tolist()) for i, row in enumerate(weights)]  # the visible cells
    cs = 0.52
    W, H = 10.4, 1.75 + T * cs + 1.0
    fig, ax = canvas(W, H, "Self-attention with a causal mask",
                     "every token makes a query, a key and a value; a query may only look at keys at or before it")
    # left: the pipeline
    x0, bw, bh = 0.3, 1.05, 0.5
    top = H - 1.55
    box(ax, x0, top - 1.2, bw, bh, "x\n(T, C)", "data", fontsize=SMALL)
    for k, (name, desc) in enumerate((("W_q", "Q: what am I\nlooking for?"), ("W_k", "K: what do I\ncontain?"),
                                      ("W_v", "V: what do I\npass on?"))):
        y = top - 0.2 - k * 1.0
        arrow(ax, (x0 + bw, top - 0.95), (x0 + bw + 0.35, y + bh / 2))
        box(ax, x0 + bw + 0.35, y, 0.75, bh, name, "compute", family=MONO, fontsize=SMALL)
        label(ax, x0 + bw + 1.2, y + bh / 2, desc, ha="left", size=SMALL, color=COLORS["attn"][1])
    label(ax, x0, 1.75, r"weights = softmax($Q K^\top / \sqrt{d}$ + mask)", ha="left", size=FONT)
    label(ax, x0, 1.3, "out = weights @ V", ha="left", size=FONT, family=MONO)
    label(ax, x0, 0.95, "mask = -inf where key j > query i:\nexp(-inf) = 0, so the future gets no weight",
          ha="left", size=SMALL, color=MUTED, va="top")
    # right: the weight matrix
    gx = 4.75
    gy = H - 1.85 - T * cs
    label(ax, gx + T * cs / 2, gy + T * cs + 0.5, "keys j (what is looked at)", size=SMALL, color=MUTED)
    label(ax, gx - 0.95, gy + T * cs / 2, "queries i", size=SMALL, color=MUTED, rotation=90)
    for j, t in enumerate(tokens):
        label(ax, gx + (j + 0.5) * cs, gy + T * cs + 0.15, t, size=SMALL)
    for i, t in enumerate(tokens):
        label(ax, gx - 0.08, gy + (T - i - 0.5) * cs, t, size=SMALL, ha="right")
        for j in range(T):
            y = gy + (T - i - 1) * cs
            if mask[i, j]:
                w = shown[i][j]
                shade = 1 - 0.75 * w
                fill = (1 - 0.45 * (1 - shade), 1 - 0.6 * (1 - shade), 1 - 0.2 * (1 - shade))
                cell(ax, gx + j * cs, y, cs, cs, f"{w:.2f}", fill=fill, edge="#8f7bb8", fontsize=SMALL)
            else:
                cell(ax, gx + j * cs, y, cs, cs, "", fill=COLORS["off"][0], edge=COLORS["off"][1], hatch="///")
    qy = gy + (T - query - 1) * cs
    cell(ax, gx - 0.02, qy - 0.02, (query + 1) * cs + 0.04, cs + 0.04, fill="none", edge=COLORS["loss"][1], lw=2.2)
    label(ax, gx + T * cs + 0.2, qy + cs / 2,
          f"query {tokens[query]!r} (position {query})\nmixes the values of\n"
          f"{', '.join(repr(t) for t in tokens[:query + 1])}:\nits weights sum to 1",
          ha="left", size=SMALL, color=COLORS["loss"][1])
    legend(ax, gx, 0.35, [(COLORS["attn"][0], COLORS["attn"][1], "weight (darker = more)"),
                          (COLORS["off"][0], COLORS["off"][1], "masked: key after query")], dx=2.2,
           hatch_for="masked: key after query")
    return finish(fig)


# ------------------------------------------------------------------------------ ch03: heads
def head_split(n_embd: int = 12, n_head: int = 3) -> Figure:
    """Multi-head attention for one token: split C into ``n_head`` pieces of ``head_dim``, attend, concat, project."""
    if n_head < 1 or n_embd % n_head or n_embd > 24 or n_head > 6:
        raise ValueError(f"n_embd ({n_embd}) must be a multiple of n_head ({n_head}), n_embd <= 24, n_head <= 6")
    hd = n_embd // n_head
    ch, gap = 0.2, 0.22
    col_h = n_embd * ch
    H = max(col_h + gap * (n_head - 1), 2.4) + 2.9
    W = 10.2
    fig, ax = canvas(W, H, "Multi-head attention: split, attend per head, concatenate, project",
                     f"n_embd = C = {n_embd}, n_head = {n_head}, head_dim = C / n_head = {hd}; one token's vectors shown")
    mid = (H - 0.7) / 2 + 0.5
    ys_split = [mid + (col_h + gap * (n_head - 1)) / 2 - (h + 1) * hd * ch - h * gap for h in range(n_head)]

    def column(x: float, y_top: float, n: int, colours: Sequence[int] | None, edge: str = "#555555") -> None:
        for i in range(n):
            c = colours[i] if colours is not None else None
            cell(ax, x, y_top - (i + 1) * ch, 0.3, ch, fill=SERIES[c] if c is not None else COLORS["data"][0],
                 edge=SERIES_EDGE[c] if c is not None else edge, lw=0.8)

    head_of = [i // hd for i in range(n_embd)]
    xs = {"q": 0.5, "split": 2.4, "attn": 3.35, "out": 5.6, "cat": 7.0, "proj": 8.0, "y": 9.55}
    column(xs["q"], mid + col_h / 2, n_embd, head_of)
    label(ax, xs["q"] + 0.15, mid + col_h / 2 + 0.2, "q (also k, v)", size=SMALL)
    label(ax, xs["q"] + 0.15, mid - col_h / 2 - 0.2, f"C = {n_embd}", size=SMALL, color=MUTED)
    label(ax, xs["split"] + 0.15, mid + col_h / 2 + gap * (n_head - 1) / 2 + 0.2, f"{n_head} x {hd}", size=SMALL,
          color=MUTED)
    for h in range(n_head):
        y_top = ys_split[h] + hd * ch
        column(xs["split"], y_top, hd, [h] * hd)
        arrow(ax, (xs["q"] + 0.32, mid + col_h / 2 - (h + 0.5) * hd * ch), (xs["split"] - 0.02, y_top - hd * ch / 2),
              lw=1.0)
        box(ax, xs["attn"], y_top - hd * ch - 0.02, 1.75, hd * ch + 0.04, f"head {h}: its own\nattention over T tokens",
            fill=SERIES[h], edge=SERIES_EDGE[h], fontsize=SMALL, pad=0.02)
        arrow(ax, (xs["split"] + 0.3, y_top - hd * ch / 2), (xs["attn"] + 0.02, y_top - hd * ch / 2), lw=1.0)
        column(xs["out"], y_top, hd, [h] * hd)
        arrow(ax, (xs["attn"] + 1.73, y_top - hd * ch / 2), (xs["out"], y_top - hd * ch / 2), lw=1.0)
        arrow(ax, (xs["out"] + 0.32, y_top - hd * ch / 2), (xs["cat"] - 0.02, mid + col_h / 2 - (h + 0.5) * hd * ch),
              lw=1.0)
    column(xs["cat"], mid + col_h / 2, n_embd, head_of)
    box(ax, xs["proj"], mid - 0.55, 1.15, 1.1, "c_proj\nLinear(C, C)\nmixes heads", "compute", fontsize=SMALL)
    arrow(ax, (xs["cat"] + 0.32, mid), (xs["proj"], mid))
    column(xs["y"], mid + col_h / 2, n_embd, None)
    arrow(ax, (xs["proj"] + 1.15, mid), (xs["y"] - 0.02, mid))
    label(ax, xs["y"] + 0.15, mid + col_h / 2 + 0.2, "out", size=SMALL)
    for key, text in (("split", "split"), ("out", "head outputs"), ("cat", "concat")):
        label(ax, xs[key] + 0.15, mid - col_h / 2 - gap * (n_head - 1) / 2 - 0.45, text, size=SMALL, color=MUTED)
    for k, (what, code, shape) in enumerate((
            ("split:", "q.view(B, T, n_head, head_dim).transpose(1, 2)", "(B, T, C) -> (B, n_head, T, head_dim)"),
            ("merge:", "y.transpose(1, 2).reshape(B, T, C)", "(B, n_head, T, head_dim) -> (B, T, C)"))):
        y = 0.6 - k * 0.3
        label(ax, 0.3, y, what, size=SMALL, ha="left", bold=True)
        label(ax, 1.0, y, code, size=SMALL, ha="left", family=MONO)
        label(ax, 5.9, y, shape, size=SMALL, ha="left", family=MONO, color=MUTED)
    return finish(fig)


# ------------------------------------------------------------------------------ ch04: the block
def pre_ln_block() -> Figure:
    """The pre-LN transformer block: two branches read a LayerNorm'd copy of the residual stream and add back."""
    W, H = 10.2, 4.3
    fig, ax = canvas(W, H, "The pre-LN block on the residual stream",
                     "x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))   (model.Block)")
    ys = 1.25
    ax.plot([0.9, 9.45], [ys, ys], color=COLORS["data"][1], lw=7, alpha=0.35, solid_capstyle="round", zorder=1)
    label(ax, 0.5, ys, "x", bold=True)
    label(ax, 0.5, ys - 0.38, "(B, T, C)", size=SMALL, family=MONO, color=MUTED)
    arrow(ax, (9.2, ys), (9.95, ys), lw=1.6)
    label(ax, 9.6, ys + 0.35, "to the\nnext block", size=SMALL, color=MUTED)
    up = 2.35
    for x_in, x_ln, x_f, w_f, x_add, name, f_label, note, code in (
            (1.3, 1.7, 2.75, 1.95, 5.0, "ln_1", "causal\nself-attention", "tokens talk to each other",
             "attn(ln_1(x))"),
            (5.45, 5.85, 6.85, 1.8, 8.95, "ln_2", "MLP: Linear(C, 4C)\nGELU, Linear(4C, C)",
             "each token thinks on its own", "mlp(ln_2(x))")):
        ax.plot([x_in, x_in], [ys, up + 0.3], color=INK, lw=1.4, zorder=3)
        arrow(ax, (x_in, up + 0.3), (x_ln, up + 0.3), shrink=0)
        box(ax, x_ln, up, 0.8, 0.6, name, "norm", family=MONO, fontsize=SMALL)
        arrow(ax, (x_ln + 0.8, up + 0.3), (x_f, up + 0.3))
        box(ax, x_f, up - 0.1, w_f, 0.8, f_label, "attn" if name == "ln_1" else "compute", fontsize=SMALL)
        label(ax, x_f + w_f / 2, up + 0.9, note, size=SMALL, color=MUTED, italic=True)
        ax.plot([x_f + w_f, x_add], [up + 0.3, up + 0.3], color=INK, lw=1.4, zorder=3)
        arrow(ax, (x_add, up + 0.3), (x_add, ys + 0.17), shrink=0)
        _plus(ax, x_add, ys)
        label(ax, x_add, ys - 0.45, f"x + {code}", size=SMALL, family=MONO)
    label(ax, 0.3, 0.3, "The stream itself only ever gets additions, so the gradient flows straight down it to "
          "early layers; each branch sees a normalised copy.", size=SMALL, ha="left", color=MUTED)
    return finish(fig)


# ------------------------------------------------------------------------------ ch04: the whole GPT
def gpt_architecture(n_layer: int | str = "n_layer", tokens: Sequence[str] = ("The", " cat", " sat")) -> Figure:
    """The whole GPT, bottom to top: ids -> wte + wpe -> ``n_layer`` blocks -> ln_f -> lm_head -> softmax."""
    W, H = 8.6, 8.0
    fig, ax = canvas(W, H, "The GPT, bottom to top", "shapes on the right; B batch, T tokens, C = n_embd, V = vocab_size")
    cx, bw = 3.55, 3.4
    x0 = cx - bw / 2
    sx = 6.55  # shapes column
    T = len(tokens)
    tw = 0.62
    tx0 = cx - T * tw / 2
    for i, t in enumerate(tokens):
        cell(ax, tx0 + i * tw, 0.3, tw, 0.36, repr(t).strip("'"), fill=COLORS["data"][0], edge=COLORS["data"][1],
             fontsize=SMALL)
    label(ax, sx, 0.48, "token ids (B, T)", ha="left", size=SMALL, family=MONO)
    # embeddings
    ye = 1.05
    box(ax, x0 - 0.15, ye, 1.75, 0.62, "wte: token\nembedding (V, C)", "data", fontsize=SMALL)
    box(ax, cx + 0.1, ye, 1.75, 0.62, "wpe: position\nembedding (T_max, C)", "data", fontsize=SMALL)
    arrow(ax, (cx - 0.3, 0.68), (x0 + 0.7, ye + 0.04))
    label(ax, cx + 1.95, 0.72, "positions 0 .. T-1", size=SMALL, color=MUTED, ha="left")
    arrow(ax, (cx + 1.9, 0.8), (cx + 1.0, ye + 0.04))
    _plus(ax, cx, 2.05)
    arrow(ax, (x0 + 0.7, ye + 0.6), (cx - 0.15, 2.0))
    arrow(ax, (cx + 1.0, ye + 0.6), (cx + 0.15, 2.0))
    label(ax, cx + 0.3, 2.05, "sum, then dropout", ha="left", size=SMALL, color=MUTED)
    label(ax, sx, 2.05, "(B, T, C)", ha="left", size=SMALL, family=MONO)
    # blocks
    yb = 2.6
    for k in (2, 1):
        box(ax, x0 + 0.12 * k, yb + 0.12 * k, bw, 1.25, kind="compute", lw=1.0)
    box(ax, x0, yb, bw, 1.25, kind="compute")
    label(ax, cx, yb + 0.88, "Block", bold=True)
    label(ax, cx, yb + 0.42, "x + attn(ln_1(x))\nx + mlp(ln_2(x))", size=SMALL, family=MONO)
    n = n_layer if isinstance(n_layer, str) else f"{n_layer}"
    label(ax, x0 + bw + 0.45, yb + 0.7, f"\u00d7 {n}", bold=True, ha="left")
    arrow(ax, (cx, 2.22), (cx, yb + 0.02))
    label(ax, sx, yb + 0.62, "(B, T, C)", ha="left", size=SMALL, family=MONO)
    # head
    yl, yh, ys = 4.35, 5.15, 6.05
    box(ax, x0 + 0.5, yl, bw - 1.0, 0.5, "ln_f: final LayerNorm", "norm", fontsize=SMALL)
    arrow(ax, (cx, yb + 1.25), (cx, yl + 0.04))
    box(ax, x0, yh, bw, 0.62, "lm_head: Linear(C, V)\nits weight is wte's (tied)", "compute", fontsize=SMALL)
    arrow(ax, (cx, yl + 0.5), (cx, yh + 0.04))
    label(ax, sx, yh + 0.31, "logits (B, T, V)", ha="left", size=SMALL, family=MONO)
    arrow(ax, (x0 - 0.1, ye + 0.35), (x0 - 0.02, yh + 0.3), rad=-0.3, dashed=True, color=COLORS["data"][1])
    label(ax, 0.15, (ye + yh) / 2 + 0.3, "weight\ntying:\none matrix,\ntwo uses", size=SMALL,
          color=COLORS["data"][1], ha="left")
    box(ax, x0 + 0.5, ys, bw - 1.0, 0.5, "softmax", "loss", fontsize=SMALL)
    arrow(ax, (cx, yh + 0.62), (cx, ys + 0.04))
    label(ax, sx, ys + 0.25, "p(next token)\nat every position", ha="left", size=SMALL, va="center")
    probs = (0.05, 0.1, 0.45, 0.08, 0.2, 0.04, 0.08)
    for i, p in enumerate(probs):
        cell(ax, cx - 0.9 + i * 0.26, ys + 0.62, 0.18, p * 1.2, fill=COLORS["loss"][0], edge=COLORS["loss"][1], lw=0.8)
    arrow(ax, (cx, ys + 0.5), (cx, ys + 0.64), shrink=0, lw=1.0)
    return finish(fig)


# ------------------------------------------------------------------------------ ch07: GQA
def gqa(n_head: int = 8, n_kv_head: int = 2) -> Figure:
    """Multi-head, grouped-query and multi-query attention: how many key/value heads the query heads share.

    Query head ``h`` reads key/value head ``h // (n_head // n_kv_head)`` (the
    ``repeat_interleave`` of attention.py); the KV cache stores only the K/V heads.
    """
    if n_head < 2 or n_head > 12 or not 1 <= n_kv_head <= n_head or n_head % n_kv_head:
        raise ValueError(f"n_head ({n_head}) must be 2-12 and a multiple of n_kv_head ({n_kv_head})")
    variants = [("multi-head (MHA)", n_head), ("grouped-query (GQA)", n_kv_head), ("multi-query (MQA)", 1)]
    pw = 3.3
    W, H = 3 * pw + 0.4, 4.1
    fig, ax = canvas(W, H, "Grouped-query attention: query heads share key/value heads",
                     f"n_head = {n_head} query heads; GQA here with n_kv_head = {n_kv_head}; the KV cache keeps only the K/V heads")
    qw = min(0.34, (pw - 0.5) / n_head)
    for p, (title, n_kv) in enumerate(variants):
        x0 = 0.2 + p * pw
        label(ax, x0 + pw / 2, H - 1.05, title, bold=True)
        group = n_head // n_kv
        q_x = [x0 + (pw - n_head * qw) / 2 + h * qw for h in range(n_head)]
        kv_w = min(0.5, (pw - 0.4) / n_kv)
        kv_x = [x0 + (pw - n_kv * kv_w) / 2 + j * kv_w for j in range(n_kv)]
        yq, ykv = 2.45, 1.15
        for j in range(n_kv):
            c = j % len(SERIES)
            cell(ax, kv_x[j] + 0.03, ykv, kv_w - 0.06, 0.5, "K\nV" if kv_w > 0.3 else "", fill=SERIES[c],
                 edge=SERIES_EDGE[c], fontsize=SMALL)
        for h in range(n_head):
            j = h // group
            c = j % len(SERIES)
            cell(ax, q_x[h] + 0.03, yq, qw - 0.06, 0.4, "Q" if qw > 0.25 else "", fill=SERIES[c], edge=SERIES_EDGE[c],
                 fontsize=SMALL)
            ax.plot([q_x[h] + qw / 2, kv_x[j] + kv_w / 2], [yq, ykv + 0.5], color=SERIES_EDGE[c], lw=1.0, zorder=1)
        frac = Fraction(n_kv, n_head)
        share = "the full cache" if n_kv == n_head else (
            f"cache {n_kv}/{n_head}" + (f" = {frac}" if frac.numerator != n_kv else "") + " of MHA's")
        label(ax, x0 + pw / 2, 0.75, f"{n_kv} K/V head{'s' if n_kv > 1 else ''}: {share}", size=SMALL)
        label(ax, x0 + pw / 2, 0.45, f"{group} quer{'ies' if group > 1 else 'y'} per K/V head", size=SMALL,
              color=MUTED)
    return finish(fig)


# ------------------------------------------------------------------------------ ch08: LoRA
def lora(d_in: int = 768, d_out: int = 768, r: int = 8, alpha: float = 16) -> Figure:
    """LoRA: the pretrained ``W`` stays frozen; a rank-``r`` update ``(alpha / r) B A`` is trained beside it."""
    if r < 1 or r > min(d_in, d_out):
        raise ValueError(f"the rank r ({r}) must be between 1 and min(d_in, d_out) = {min(d_in, d_out)}")
    W, H = 10.0, 5.0
    fig, ax = canvas(W, H, "LoRA: a frozen matrix plus a small trainable low-rank update",
                     f"h = W x + (alpha / r) B A x     d_in = {d_in}, d_out = {d_out}, r = {r}, alpha = {alpha:g}")
    side = 2.2
    yx = 1.9
    cell(ax, 0.4, yx - 0.9, 0.3, 1.8, "", fill=COLORS["data"][0], edge=COLORS["data"][1])
    label(ax, 0.55, yx + 1.1, "x", bold=True)
    label(ax, 0.55, yx - 1.1, f"({d_in})", size=SMALL, family=MONO, color=MUTED)
    # frozen W
    wx, wy = 1.5, 1.9
    cell(ax, wx, wy, side, side * d_out / max(d_in, d_out), "", fill=COLORS["off"][0], edge=COLORS["off"][1], lw=1.4)
    label(ax, wx + side / 2, wy + side / 2 + 0.15, "W", bold=True, size=FONT + 4)
    label(ax, wx + side / 2, wy + side / 2 - 0.35, f"({d_out}, {d_in})\nfrozen", size=SMALL, color=MUTED)
    arrow(ax, (0.72, yx + 0.5), (wx, wy + side / 2))
    # A and B
    thin = max(0.22, side * r / max(d_in, d_out))
    ax_, ay = 1.5, 0.55
    cell(ax, ax_, ay, side, thin, "", fill=COLORS["loss"][0], edge=COLORS["loss"][1], lw=1.4)
    label(ax, ax_ + side / 2, ay - 0.22, f"A ({r}, {d_in}): random init, trained", size=SMALL,
          color=COLORS["loss"][1])
    arrow(ax, (0.72, yx - 0.5), (ax_, ay + thin / 2))
    bx, by = 4.35, 0.3
    cell(ax, bx, by, thin, side * 0.62, "", fill=COLORS["loss"][0], edge=COLORS["loss"][1], lw=1.4)
    label(ax, bx + thin + 0.12, by + 0.95, f"B ({d_out}, {r})\nzeros at first:\nat step 0, h = W x", size=SMALL,
          color=COLORS["loss"][1], ha="left", va="center")
    arrow(ax, (ax_ + side, ay + thin / 2), (bx, ay + thin / 2))
    label(ax, (ax_ + side + bx) / 2, ay + thin / 2 + 0.22, "A x", size=SMALL, family=MONO)
    label(ax, (ax_ + side + bx) / 2, ay + thin / 2 - 0.22, f"({r})", size=SMALL, family=MONO, color=MUTED)
    # sum
    px, py = 6.6, 3.0
    _plus(ax, px, py)
    arrow(ax, (wx + side, wy + side / 2), (px - 0.17, py))
    label(ax, (wx + side + px) / 2, py + 0.22, "W x", size=SMALL, family=MONO)
    arrow(ax, (bx + thin / 2, by + side * 0.62), (px - 0.05, py - 0.17), rad=-0.25)
    label(ax, 5.85, 2.25, "\u00d7 alpha / r", size=SMALL, family=MONO, color=COLORS["loss"][1])
    cell(ax, 7.3, py - 0.9, 0.3, 1.8, "", fill=COLORS["data"][0], edge=COLORS["data"][1])
    arrow(ax, (px + 0.17, py), (7.3, py))
    label(ax, 7.45, py + 1.1, "h", bold=True)
    label(ax, 7.45, py - 1.1, f"({d_out})", size=SMALL, family=MONO, color=MUTED)
    full, small = d_in * d_out, r * (d_in + d_out)
    label(ax, 7.95, 1.2, f"numbers trained:\nall of W: {full:,}\nLoRA, r (d_in + d_out):\n"
          f"{small:,} = {small / full:.1%}\n\nmerge for inference:\nW' = W + (alpha/r) B A", size=SMALL, ha="left",
          va="center")
    return finish(fig)
