"""Chapter 11's concept diagrams: speculative decoding, continuous batching, prefill against decode.

``continuous_batching`` lays its requests out with :func:`slot_schedule`, a small scheduler
defined here, so the bars, the idle cells and the step counts printed under them are the
same arithmetic; the tests check that scheduler on its own.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

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

CHECK, CROSS = "\u2713", "\u2717"  # ✓ ✗
ACCEPTED = COLORS["norm"]  # green: a draft token the target kept
REJECTED = COLORS["loss"]  # red: the first draft token the target refused
SAMPLED = (SERIES[5], SERIES_EDGE[5])  # yellow: the token the target itself samples at the end of a round


# ------------------------------------------------------------------------------ ch11: speculative decoding
def _draft_and_verify(ax: plt.Axes, proposed: Sequence[str], x0: float, top: float) -> None:
    """The timeline: k small draft passes one after another, then one wide target pass."""
    k = len(proposed)
    step, bw, bh = 1.05, 0.95, 0.5
    y_draft, y_target = top - 0.5, top - 1.5
    label(ax, 0.2, y_draft + bh / 2, "draft model q\n(small, cheap)", ha="left", size=SMALL)
    label(ax, 0.2, y_target + bh / 2, "target model p\n(big)", ha="left", size=SMALL)
    for i, token in enumerate(proposed):
        box(ax, x0 + i * step, y_draft, bw, bh, f"\u2192 {token}", "compute", fontsize=SMALL)
        if i:
            arrow(ax, (x0 + i * step - step + bw - 0.04, y_draft + bh / 2), (x0 + i * step + 0.04, y_draft + bh / 2),
                  lw=1.0, shrink=0)
    tx, tw = x0 + k * step + 0.3, (k + 1) * 1.0
    box(ax, tx, y_target - 0.05, tw, bh + 0.1, f"one forward pass reads the last token + the {k} guesses:\n"
        f"p( \u00b7 | prefix) at all {k + 1} positions at once", "compute", fontsize=SMALL, lw=2.0)
    arrow(ax, (x0 + (k - 1) * step + bw, y_draft + 0.1), (tx + 0.3, y_target + bh + 0.05), rad=-0.25, lw=1.2)
    label(ax, x0 + (k * step - 0.1) / 2, y_draft - 0.22, f"{k} passes, one token each, one after another",
          size=SMALL, color=MUTED)
    label(ax, tx + tw / 2, y_target - 0.27, "1 pass: costs about one ordinary decode step", size=SMALL, color=MUTED)
    y_axis = y_target - 0.6
    arrow(ax, (x0, y_axis), (tx + tw, y_axis), color=MUTED, lw=1.0, shrink=0)
    label(ax, tx + tw + 0.08, y_axis, "time", size=SMALL, color=MUTED, ha="left")


def _round_rows(ax: plt.Axes, context: Sequence[str], proposed: Sequence[str], accepted: int, new_token: str,
                x0: float, top: float) -> None:
    """Position by position: the guesses with their verdicts, the sequence after the round, and the KV caches."""
    k, m = len(proposed), len(context)
    cw, ch = 0.9, 0.42
    y_prop, y_out, y_kv = top - 0.55, top - 1.75, top - 2.75
    label(ax, 0.2, y_prop + ch / 2, "prefix + guesses,\nchecked by p", ha="left", size=SMALL)
    label(ax, 0.2, y_out + ch / 2, "after the round", ha="left", size=SMALL)
    label(ax, 0.2, y_kv + ch / 2, "KV caches\n(q and p alike)", ha="left", size=SMALL)
    data_fill, data_edge = COLORS["data"]
    off_fill, off_edge = COLORS["off"]
    for j, token in enumerate(context):
        for y in (y_prop, y_out):
            cell(ax, x0 + j * cw, y, cw, ch, token, fill=data_fill, edge=data_edge, fontsize=SMALL)
    for i, token in enumerate(proposed):
        x = x0 + (m + i) * cw
        if i < accepted:
            cell(ax, x, y_prop, cw, ch, token, fill=ACCEPTED[0], edge=ACCEPTED[1], fontsize=SMALL)
            label(ax, x + cw / 2, y_prop + ch + 0.16, CHECK, color=ACCEPTED[1], size=FONT + 2, bold=True)
            cell(ax, x, y_out, cw, ch, token, fill=ACCEPTED[0], edge=ACCEPTED[1], fontsize=SMALL)
        elif i == accepted:
            cell(ax, x, y_prop, cw, ch, token, fill=REJECTED[0], edge=REJECTED[1], fontsize=SMALL, lw=1.6)
            label(ax, x + cw / 2, y_prop + ch + 0.16, CROSS, color=REJECTED[1], size=FONT + 2, bold=True)
        else:
            cell(ax, x, y_prop, cw, ch, token, fill=off_fill, edge=off_edge, fontsize=SMALL, color=MUTED)
    if accepted + 1 < k:
        label(ax, x0 + (m + (accepted + 1 + k) / 2) * cw, y_prop + ch + 0.16, "discarded", size=SMALL, color=MUTED)
    # the target's own token: a resample at the rejected position, or a bonus after k accepted guesses
    x_new = x0 + (m + accepted) * cw
    cell(ax, x_new, y_out, cw, ch, new_token, fill=SAMPLED[0], edge=SAMPLED[1], fontsize=SMALL, lw=1.6)
    arrow(ax, (x_new + cw / 2, y_prop - 0.02), (x_new + cw / 2, y_out + ch + 0.02), color=SAMPLED[1], lw=1.2)
    note = ("rejected: p samples a correction\nfrom norm(max(0, p \u2212 q))" if accepted < k else
            "all accepted: p's distribution at\nposition k + 1 gives a bonus token")
    label(ax, x_new + cw / 2 + 0.12, (y_prop + y_out + ch) / 2, note, size=SMALL, ha="left", color=INK)
    label(ax, x0 + (m + accepted + 1) * cw + 0.15, y_out + ch / 2,
          f"+{accepted + 1} token{'s' if accepted else ''} for one pass of p", size=SMALL, ha="left", bold=True)
    # the caches: entries past the last accepted guess are dropped, and the next round starts there
    keep = m + accepted
    for j in range(m + k):
        if j < keep:
            cell(ax, x0 + j * cw, y_kv, cw, ch, "k v", fill=COLORS["cache"][0], edge=COLORS["cache"][1],
                 fontsize=SMALL)
        else:
            cell(ax, x0 + j * cw, y_kv, cw, ch, "k v", fill=off_fill, edge=off_edge, fontsize=SMALL, color=MUTED,
                 hatch="///")
    end = x0 + (m + k) * cw + 0.15
    if keep < m + k:
        span = (m + k - keep) * cw - 0.1
        arrow(ax, (x0 + (m + k) * cw - 0.05, y_kv + ch + 0.05), (x0 + keep * cw + 0.05, y_kv + ch + 0.05),
              rad=min(0.35, 0.5 / span), color=REJECTED[1], lw=1.5)  # an arc about 0.25 in high at any span
        label(ax, end, y_kv + ch / 2, f"roll back to the last accepted position:\nkeep {keep} entries "
              f"(prefix + {accepted} accepted)", size=SMALL, ha="left", color=REJECTED[1])
    else:
        label(ax, end, y_kv + ch / 2, f"nothing to roll back: keep all {keep} entries", size=SMALL, ha="left")


def speculative_decoding(proposed: Sequence[str] = ("the", "king", "is", "dead"), accepted: int = 2, *,
                         context: Sequence[str] = ("He", "said"), correction: str = "was", bonus: str = "!",
                         ) -> Figure:
    """One round of speculative decoding: a small draft model ``q`` proposes ``k = len(proposed)`` tokens in k
    cheap passes, the big target model ``p`` scores all of them (and the position after them) in one pass, the
    first ``accepted`` guesses survive and the rest are discarded, ``p`` adds one token of its own, and both KV
    caches roll back to the last accepted position.

    Each guess ``x`` is accepted with probability min(1, p(x)/q(x)); at the first rejection ``p`` samples the
    ``correction`` from norm(max(0, p - q)), and when all k are accepted it samples a ``bonus`` token from its
    distribution after them. Either way the round yields ``accepted + 1`` tokens, distributed exactly as if
    ``p`` had sampled them one by one.
    """
    proposed, context = [str(t) for t in proposed], [str(t) for t in context]
    if not 1 <= len(proposed) <= 6:
        raise ValueError(f"pass between 1 and 6 proposed tokens (got {len(proposed)})")
    if not 0 <= accepted <= len(proposed):
        raise ValueError(f"accepted must be between 0 and len(proposed) = {len(proposed)} (got {accepted})")
    if not 1 <= len(context) <= 3:
        raise ValueError(f"pass 1 to 3 context tokens (got {len(context)})")
    k = len(proposed)
    x0 = 2.0
    W = max(12.0, x0 + k * 1.05 + 0.3 + (k + 1) + 0.8, x0 + (len(context) + k + 1) * 0.9 + 2.6)
    H = 7.4
    fig, ax = canvas(W, H, f"Speculative decoding: one round with k = {k} guesses",
                     "a small draft model guesses k tokens; the big target model checks them all in one forward "
                     "pass and keeps the longest correct prefix")
    _draft_and_verify(ax, proposed, x0, H - 0.85)
    _round_rows(ax, context, proposed, accepted, correction if accepted < k else bonus, x0, H - 3.35)
    box(ax, 0.2, 0.2, W - 0.4, 0.62, "accept each guess x, left to right, with probability min(1, p(x) / q(x));  "
        "at the first rejection sample from norm(max(0, p \u2212 q)) and stop\n"
        "so every token is distributed exactly as p alone would sample it: faster, not approximate",
        "plain", fontsize=SMALL)
    return finish(fig)


# ------------------------------------------------------------------------------ ch11: continuous batching
def slot_schedule(lengths: Sequence[int], slots: int, *, static: bool = False) -> list[tuple[int, int, int, int]]:
    """Where and when each request runs on a batch of ``slots`` rows: ``(request, slot, start, end)`` per request,
    in request order, ``end`` exclusive, in decode steps (one forward pass of the whole batch per step).

    ``lengths[r]`` is how many steps request ``r`` needs (its prefill steps plus one per generated token); the
    requests wait in a queue in that order. Continuous batching (``static=False``) gives the next request to
    whichever slot frees first (the lowest slot on a tie), at the step it frees. Static batching takes the
    requests ``slots`` at a time and starts a batch only when the longest member of the previous one is done.
    """
    lengths = [int(n) for n in lengths]
    if slots < 1:
        raise ValueError(f"slots must be at least 1 (got {slots})")
    if any(n < 1 for n in lengths):
        raise ValueError(f"every request needs at least one step (got {lengths})")
    out = []
    if static:
        start = 0
        for b in range(0, len(lengths), slots):
            batch = lengths[b:b + slots]
            out += [(b + s, s, start, start + n) for s, n in enumerate(batch)]
            start += max(batch)
        return out
    free_at = [0] * slots
    for r, n in enumerate(lengths):
        s = min(range(slots), key=lambda i: (free_at[i], i))
        out.append((r, s, free_at[s], free_at[s] + n))
        free_at[s] += n
    return out


def _schedule_panel(ax: plt.Axes, requests: Sequence[tuple[int, int]], slots: int, static: bool, x0: float,
                    top: float, cw: float, rh: float) -> None:
    """One grid: a row per slot, a column per step; each request a bar (hatched prefill, then decode), idle grey."""
    lengths = [p + d for p, d in requests]
    plan = slot_schedule(lengths, slots, static=static)
    total = max(end for *_, end in plan)
    busy = sum(lengths)
    name = "static batching: a new batch only when the whole batch is done" if static else \
        "continuous batching: a finished request's slot is refilled at the next step"
    label(ax, 0.2, top, name, bold=True, ha="left")
    grid_top = top - 0.5
    for t in range(total):
        if t % 2 == 0:
            label(ax, x0 + (t + 0.5) * cw, grid_top + 0.14, str(t), size=SMALL, color=MUTED)
    label(ax, x0 - 0.12, grid_top + 0.14, "step", size=SMALL, color=MUTED, ha="right")
    off_fill = COLORS["off"][0]
    for s in range(slots):
        y = grid_top - (s + 1) * rh
        label(ax, x0 - 0.12, y + rh / 2, f"slot {s + 1}", size=SMALL, ha="right")
        for t in range(total):  # idle unless a request covers it
            cell(ax, x0 + t * cw, y, cw, rh, fill=off_fill, edge="#ffffff", lw=1.0)
    for r, s, start, end in plan:
        y = grid_top - (s + 1) * rh
        fill, edge = SERIES[r % len(SERIES)], SERIES_EDGE[r % len(SERIES)]
        prefill = requests[r][0]
        ax.add_patch(Rectangle((x0 + start * cw, y + 0.03), prefill * cw, rh - 0.06, facecolor=fill, edgecolor=edge,
                               hatch="///", linewidth=1.0, zorder=3))
        ax.add_patch(Rectangle((x0 + (start + prefill) * cw, y + 0.03), (end - start - prefill) * cw, rh - 0.06,
                               facecolor=fill, edgecolor=edge, linewidth=1.0, zorder=3))
        label(ax, x0 + (start + prefill + 0.5) * cw, y + rh / 2, chr(ord("A") + r), size=SMALL, bold=True)
    x_end = x0 + total * cw
    ax.plot([x_end, x_end], [grid_top - slots * rh - 0.08, grid_top + 0.05], color=INK, lw=1.5, ls="--", zorder=4)
    label(ax, x_end + 0.12, grid_top - slots * rh / 2,
          f"{total} steps\n{busy} of {total * slots} slot-steps busy\n({100 * busy / (total * slots):.0f}% used)",
          size=SMALL, ha="left")


_REQUESTS = ((2, 10), (3, 4), (1, 5), (3, 2), (2, 2), (2, 6), (2, 5), (1, 4))


def continuous_batching(requests: Sequence[tuple[int, int]] = _REQUESTS, slots: int = 4) -> Figure:
    """The same queue of requests served with continuous batching and with static batching, slot by slot and
    step by step, laid out by :func:`slot_schedule`.

    ``requests`` are ``(prefill steps, decode steps)`` pairs in arrival order (a prompt of P tokens prefilled in
    chunks of c takes ceil(P/c) steps; then one step per generated token). With continuous batching a slot is
    handed to the next waiting request the step it frees; with static batching the whole batch waits for its
    longest member, and the finished rows sit idle (grey) until it is done.
    """
    requests = [(int(p), int(d)) for p, d in requests]
    if not 1 <= len(requests) <= 26 or any(p < 1 or d < 1 for p, d in requests):
        raise ValueError("pass 1 to 26 requests as (prefill steps, decode steps) pairs, each at least 1")
    if not 1 <= slots <= 8:
        raise ValueError(f"slots must be between 1 and 8 (got {slots})")
    lengths = [p + d for p, d in requests]
    cont = max(end for *_, end in slot_schedule(lengths, slots))
    stat = max(end for *_, end in slot_schedule(lengths, slots, static=True))
    if stat > 40:
        raise ValueError(f"static batching would take {stat} steps: pass fewer or shorter requests (at most 40 steps)")
    x0 = 1.1
    cw = min(0.45, 8.4 / stat)
    rh = 0.36
    panel_h = 0.5 + slots * rh + 0.55
    W, H = 12.0, 1.5 + 2 * panel_h
    names = "".join(chr(ord("A") + r) for r in range(len(requests)))
    title = (f"Continuous batching: {cont} steps instead of {stat} for the same {len(requests)} requests" if cont < stat
             else f"Continuous and static batching: {cont} steps each for these {len(requests)} requests")
    fig, ax = canvas(W, H, title,
                     f"requests {names[0]}\u2013{names[-1]} wait in a queue in that order; "
                     f"{slots} slots (rows of the batch); one forward pass of the whole batch per step")
    top = H - 1.15
    _schedule_panel(ax, requests, slots, False, x0, top, cw, rh)
    _schedule_panel(ax, requests, slots, True, x0, top - panel_h, cw, rh)
    legend(ax, 0.3, 0.32, [(SERIES[0], SERIES_EDGE[0], "prefill (the prompt)"),
                           (SERIES[0], SERIES_EDGE[0], "decode: one token per step"),
                           (COLORS["off"][0], COLORS["off"][1], "idle slot-step")],
           dx=3.0, hatch_for="prefill (the prompt)")
    label(ax, W - 0.2, 0.32, f"continuous: {cont} steps, static: {stat} steps", size=SMALL, ha="right",
          family=MONO)
    return finish(fig)


# ------------------------------------------------------------------------------ ch11: prefill against decode
def _matmul_panel(ax: plt.Axes, x0: float, top: float, rows: int, names: Sequence[str], heading: str) -> None:
    """``rows`` token vectors times a d x d weight matrix, below ``heading``."""
    rh, mw, ws = 0.3, 1.25, 1.5
    height = max(rows * rh, ws)
    mid = top - height / 2
    label(ax, x0, top + 0.35, heading, bold=True, ha="left")
    data_fill, data_edge = COLORS["data"]
    for i in range(rows):
        y = mid + rows * rh / 2 - (i + 1) * rh
        cell(ax, x0, y, mw, rh, names[i], fill=data_fill, edge=data_edge, fontsize=SMALL)
        cell(ax, x0 + mw + 2.0, y, mw, rh, f"out {i + 1}" if rows > 1 else "out", fill=data_fill, edge=data_edge,
             fontsize=SMALL)
    label(ax, x0 + mw + 0.15, mid, "\u00d7", size=FONT + 4)
    box(ax, x0 + mw + 0.3, mid - ws / 2, ws, ws, "W\nd \u00d7 d\nweights", "compute", pad=0.02)
    label(ax, x0 + mw + 1.9, mid, "=", size=FONT + 4)


def _time_bars(ax: plt.Axes, x0: float, y: float, tokens: int, unit: float) -> None:
    """Two bars for one pass: reading the weights (the same for any number of tokens) and computing (per token)."""
    read, compute = 1.6, tokens * unit
    label(ax, x0 + 1.05, y + 0.45, "read W", size=SMALL, ha="right")
    label(ax, x0 + 1.05, y + 0.1, "compute", size=SMALL, ha="right")
    cell(ax, x0 + 1.15, y + 0.33, read, 0.24, fill=COLORS["cache"][0], edge=COLORS["cache"][1])
    cell(ax, x0 + 1.15, y - 0.02, compute, 0.24, fill=COLORS["compute"][0], edge=COLORS["compute"][1])
    verdict = "compute-bound" if compute > read else "memory-bound"
    label(ax, x0 + 1.15 + max(read, compute) + 0.15, y + 0.22, verdict, size=SMALL, bold=True, ha="left")


def prefill_vs_decode(prompt_len: int = 6) -> Figure:
    """Why prefill and decode run so differently on the same model: prefill pushes all ``prompt_len`` prompt tokens
    through each weight matrix in one matrix-matrix product, decode pushes one token through per pass (a
    matrix-vector product). Each pass reads every weight from memory once; prefill does ``2 T`` FLOPs per
    weight read, decode 2, so decode waits on memory and prefill on arithmetic. Hence batching many requests into
    each decode pass, and checking several tokens per pass (speculative decoding).
    """
    if not 2 <= prompt_len <= 10:
        raise ValueError(f"prompt_len must be between 2 and 10 for the picture (got {prompt_len})")
    T = prompt_len
    body = max(T * 0.3, 1.5)
    W, H = 12.0, 1.45 + body + 2.9
    fig, ax = canvas(W, H, "Prefill against decode: the same weights, read for T tokens or for one",
                     "one linear layer y = x W of a forward pass; a pass reads all of W from memory once, "
                     "however many tokens it carries")
    top = H - 1.45
    unit = min(0.45, 3.9 / T)  # inches of compute per token: T of them outgrow the read, one does not
    for x0, rows, names, heading, product, flops, note in (
            (0.3, T, [f"prompt {i + 1}" for i in range(T)], f"prefill: all T = {T} prompt tokens in one pass",
             "matrix \u00d7 matrix: 2\u00b7T\u00b7d\u00b2 FLOPs", 2 * T, f"each weight read serves {T} tokens"),
            (6.3, 1, ["new token"], "decode: one new token per pass", "vector \u00d7 matrix: 2\u00b7d\u00b2 FLOPs",
             2, "one token per read, and W again for the next")):
        _matmul_panel(ax, x0, top, rows, names, heading)
        bottom = top - body
        label(ax, x0, bottom - 0.3, f"{product} for d\u00b2 weights read", size=SMALL, ha="left")
        label(ax, x0, bottom - 0.58, f"= {flops} FLOPs per weight read: {note}", size=SMALL, ha="left")
        _time_bars(ax, x0, bottom - 1.4, rows, unit)
    label(ax, W / 2, 1.12, "bars: the time of one pass is the longer one, as reading and computing overlap "
          "(schematic: on a modern GPU they are equal at a few hundred tokens)", size=SMALL, color=MUTED)
    box(ax, 0.2, 0.15, W - 0.4, 0.7, "decode leaves the arithmetic units idle while the weights stream in. "
        "The fixes put more tokens through each read:\nmany requests per decode pass (continuous batching), "
        "several guesses checked per pass (speculative decoding)", "plain", fontsize=SMALL)
    return finish(fig)


__all__ = ["continuous_batching", "prefill_vs_decode", "slot_schedule", "speculative_decoding"]
