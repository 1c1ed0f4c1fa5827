"""Diagrams of the data, training and generation steps: BPE merges, packed windows, one
training step, the learning-rate schedule, the KV cache, the sampling filters and the chat mask.

Each one is drawn with the course's own code (the merges with the BPE trainer, the
windows with ``pack_windows``, the schedule with ``lr_at``, the filters with
``top_k_filter`` / ``top_p_filter``), so picture and code cannot drift apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from typing import Any

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .style import (
    COLORS,
    FONT,
    INK,
    MONO,
    MUTED,
    SERIES,
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


# ------------------------------------------------------------------------------ ch02: BPE merges
def bpe_merges(text: str = "low lower lowest", steps: int = 4) -> Figure:
    """``steps`` byte-pair merges on ``text``, one row per step, with the pair counts behind each choice.

    The merges come from the course's trainer (``bpe.learn_merges``, ties to the
    smallest pair); the top row is the text's UTF-8 bytes inside the GPT-4
    pre-split chunks, which no merge crosses.
    """
    from ..tokenizers.bpe import count_chunks, learn_merges, merge_pair, splitter

    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    chunks = splitter()(text)
    merges = learn_merges(count_chunks([text]), steps)
    if not merges:
        raise ValueError(f"{text!r} has no pair of bytes to merge: use a text with repeated letters, e.g. 'low lower'")
    vocab: dict[int, bytes] = {i: bytes([i]) for i in range(256)}
    rows = [[list(c.encode("utf-8")) for c in chunks]]
    for k, (a, b) in enumerate(merges):
        vocab[256 + k] = vocab[a] + vocab[b]
        rows.append([merge_pair(w, a, b, 256 + k) for w in rows[-1]])

    def name(i: int) -> str:
        return show_token(vocab[i].decode("utf-8", errors="replace"))

    unit, gap, row_h = 0.3, 0.22, 0.62
    width_of = [max(1, len(name(i))) * unit * 0.55 + unit * 0.6 for i in range(256 + len(merges))]
    left = 1.5
    text_w = max(sum(width_of[i] for w in row for i in w) + gap * (len(row) - 1) for row in rows)
    W = left + text_w + 3.4
    H = 1.25 + row_h * len(rows)
    fig, ax = canvas(W, H, "Byte-pair encoding: merge the most frequent pair, again and again",
                     f"text {text!r}: UTF-8 bytes in pre-split chunks, which no merge crosses; ties go to the smaller pair")
    for r, row in enumerate(rows):
        y = H - 1.15 - r * row_h
        label(ax, left - 0.15, y + 0.18, "bytes" if r == 0 else f"after merge {r}", ha="right", size=FONT)
        pair = merges[r] if r < len(merges) else None
        x = left
        for w in row:
            j = 0
            while j < len(w):
                hit = pair is not None and j + 1 < len(w) and (w[j], w[j + 1]) == pair
                ids = w[j: j + 2] if hit else w[j: j + 1]
                for i in ids:
                    new = r > 0 and i == 255 + r
                    kind = "loss" if hit else ("compute" if new else ("data" if i >= 256 else "plain"))
                    fill, edge = COLORS[kind]
                    cell(ax, x, y, width_of[i], 0.36, name(i), fill=fill, edge=edge, fontsize=FONT,
                         lw=2.0 if hit else 1.0)
                    x += width_of[i]
                j += len(ids)
            x += gap
        counts = Counter(p for w in row for p in zip(w, w[1:]))
        if pair is not None:
            top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:3]
            shown = ", ".join(f"{name(a)}+{name(b)}: {c}" for (a, b), c in top)
            label(ax, left + text_w + 0.3, y + 0.18, f"pairs: {shown}", size=SMALL, ha="left", color=MUTED)
            label(ax, left + text_w + 0.3, y - 0.08, f"\u2192 id {256 + r} = '{name(256 + r)}'", size=SMALL,
                  ha="left", color=COLORS["loss"][1], bold=True)
    legend(ax, left, 0.3, [(COLORS["plain"][0], COLORS["plain"][1], "a byte (id 0-255)"),
                           (COLORS["loss"][0], COLORS["loss"][1], "the pair merged next"),
                           (COLORS["compute"][0], COLORS["compute"][1], "the token just made"),
                           (COLORS["data"][0], COLORS["data"][1], "an earlier merge")], dx=2.35)
    return finish(fig)


# ------------------------------------------------------------------------------ ch05: windows
def packing_windows(docs: Sequence[str] | None = None, block_size: int = 5, tokenizer: Any = None) -> Figure:
    """Documents -> one token stream with ``<|endoftext|>`` after each -> windows of ``block_size + 1`` tokens.

    Drawn from ``batching.pack_windows`` itself (a character tokenizer by default,
    so every cell is one readable character). Below each window: the input ``x =
    w[:-1]`` and, under each input, its target ``y = w[1:]``, the next token.
    """
    from ..data.batching import document_tokens, pack_windows
    from ..tokenizers.base import CharTokenizer

    docs = list(docs) if docs is not None else ["To be.", "Or not?", "Ay."]
    if not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be an integer >= 1, got {block_size!r}")
    tok = tokenizer if tokenizer is not None else CharTokenizer.train(docs)
    stream, owner = [], []
    for i, ids in document_tokens(docs, tok):
        stream += ids
        owner += [i] * len(ids)
    windows = list(pack_windows(docs, tok, block_size))
    n = block_size + 1
    if len(stream) > 40:
        raise ValueError(f"{len(stream)} tokens are too many to draw: give fewer or shorter docs (<= 40 tokens)")

    def name(i: int) -> str:
        return "EOT" if i == tok.eot_id else show_token(tok.decode([i]))

    cw = max(0.42, max(len(name(i)) for i in stream) * 0.1 + 0.14)
    left = 1.55
    W = max(left + cw * len(stream) + 0.9, 8.5)
    H = 5.2
    fig, ax = canvas(W, H, "Packing documents into training windows",
                     f"block_size = {block_size}: windows of block_size + 1 = {n} tokens, no padding, no overlap")

    def tok_cell(pos: int, y: float, i: int) -> None:
        eot = i == tok.eot_id
        d = owner[pos] % len(SERIES)
        cell(ax, left + pos * cw, y, cw, 0.4, name(i), fill="#555555" if eot else SERIES[d],
             edge=SERIES_EDGE[d], color="white" if eot else INK, fontsize=SMALL if eot else FONT)

    y_doc, y_stream, y_x, y_y = 3.85, 3.05, 1.75, 0.95
    label(ax, left - 0.15, y_doc + 0.2, "documents", ha="right")
    label(ax, left - 0.15, y_stream + 0.2, "token stream", ha="right")
    label(ax, left - 0.15, y_x + 0.2, "x = w[:-1]", ha="right", family=MONO, size=SMALL)
    label(ax, left - 0.15, y_y + 0.2, "y = w[1:]", ha="right", family=MONO, size=SMALL)
    pos = 0
    for d, doc in enumerate(docs):
        k = owner.count(d)
        box(ax, left + pos * cw, y_doc, (k - 1) * cw, 0.42, repr(doc), fill=SERIES[d % len(SERIES)],
            edge=SERIES_EDGE[d % len(SERIES)], pad=0.03)
        pos += k
    for p, i in enumerate(stream):
        tok_cell(p, y_stream, i)
    for w, win in enumerate(windows):
        s = w * n
        x0, x1 = left + s * cw + 0.03, left + (s + n) * cw - 0.03
        ax.plot([x0, x0, x1, x1], [y_stream - 0.1, y_stream - 0.2, y_stream - 0.2, y_stream - 0.1], color=INK, lw=1.2)
        label(ax, (x0 + x1) / 2, y_stream - 0.38, f"window {w}", size=SMALL)
        for t in range(block_size):
            tok_cell(s + t, y_x, win[t])
            tok_cell(s + t + 1, y_y, win[t + 1])
            cx = left + (s + t + 0.5) * cw
            arrow(ax, (cx, y_x - 0.01), (left + (s + t + 1.5) * cw, y_y + 0.41), lw=0.9, color=MUTED, shrink=1)
    tail = len(windows) * n
    if tail < len(stream):
        x0, x1 = left + tail * cw + 0.03, left + len(stream) * cw - 0.03
        ax.plot([x0, x0, x1, x1], [y_stream - 0.1, y_stream - 0.2, y_stream - 0.2, y_stream - 0.1],
                color=MUTED, lw=1.2, ls="--")
        label(ax, x0 - 0.05, y_stream - 0.38, "tail: dropped", size=SMALL, color=MUTED, ha="left")
    label(ax, 0.2, 0.45, "Each input predicts the token after it, also across an EOT: the model learns where "
          "documents end.", size=SMALL, ha="left", color=MUTED)
    label(ax, 0.2, 0.2, "The last token of a window is only a target; the next window starts after it.",
          size=SMALL, ha="left", color=MUTED)
    return finish(fig)


# ------------------------------------------------------------------------------ ch05: training step
def training_step(grad_accum: int = 1, grad_clip: float = 1.0) -> Figure:
    """One optimizer step of ``train()`` (training/loop.py), in the code's order.

    Forward and backward run ``grad_accum`` times (gradients add up), then the
    gradient norm is clipped to ``grad_clip``, AdamW steps with the learning rate
    of ``lr_at``, and the gradients are reset.
    """
    W, H = 10.0, 5.3
    fig, ax = canvas(W, H, "One training step", "what train() does, step after step (training/loop.py)")
    bw, bh = 2.05, 1.0
    top, bottom = 3.15, 1.25
    xs = [0.3, 2.75, 5.2, 7.65]
    clip_text = f"clip_grad_norm_(\nparams, {grad_clip:g})" if grad_clip else "(grad_clip = 0:\nno clipping)"
    rows = [(top, [("batch", "x, y = next(batches)\n(B, T) ids each", "data"),
                   ("forward", "logits, loss =\nmodel(x, y)", "compute"),
                   ("loss", "mean cross-entropy\nof logits vs y", "loss"),
                   ("backward", "loss.backward()\ngradients add up", "loss")]),
            (bottom, [("next step", "step += 1; every\neval_interval: eval", "off"),
                      ("zero_grad", "opt.zero_grad(\nset_to_none=True)", "off"),
                      ("optimizer step", "opt.step(): AdamW\nwith weight decay", "compute"),
                      ("clip", clip_text, "loss")])]
    for y, boxes in rows:
        for (title, code, kind), x in zip(boxes, xs):
            box(ax, x, y, bw, bh, kind=kind)
            label(ax, x + bw / 2, y + bh - 0.25, title, bold=True)
            label(ax, x + bw / 2, y + 0.35, code, family=MONO, size=SMALL)
    for a, b in zip(xs, xs[1:]):
        arrow(ax, (a + bw, top + bh / 2), (b, top + bh / 2))
        arrow(ax, (b, bottom + bh / 2), (a + bw, bottom + bh / 2))
    arrow(ax, (xs[3] + bw / 2, top), (xs[3] + bw / 2, bottom + bh))
    label(ax, xs[3] + bw / 2 - 0.1, (top + bottom + bh) / 2, "loss not finite:\nskip the update", size=SMALL,
          color=MUTED, ha="right")
    arrow(ax, (xs[0] + bw / 2, bottom + bh), (xs[0] + bw / 2, top), color=COLORS["data"][1])
    box(ax, xs[2] + 0.1, 0.2, bw - 0.2, 0.62, "lr = lr_at(step, cfg)", "norm", family=MONO, fontsize=SMALL)
    arrow(ax, (xs[2] + bw / 2, 0.82), (xs[2] + bw / 2, bottom))
    label(ax, xs[2] + bw + 0.1, 0.51, "warmup, then cosine", size=SMALL, color=MUTED, ha="left")
    if grad_accum > 1:
        arrow(ax, (xs[3] + bw / 2, top + bh), (xs[1] + bw / 2, top + bh), rad=0.25, dashed=True,
              color=COLORS["loss"][1])
        label(ax, (xs[1] + xs[3] + bw) / 2, top + bh + 0.3,
              f"x {grad_accum} micro-batches (grad_accum), each loss / {grad_accum}", size=SMALL,
              color=COLORS["loss"][1])
    return finish(fig)


# ------------------------------------------------------------------------------ ch05: schedule
def lr_schedule(cfg: Any = None, preset_name: str = "cpu") -> Figure:
    """The learning rate at every step, from ``lr_at`` itself: linear warmup, then cosine decay to ``min_lr``.

    ``cfg`` is a ``TrainConfig`` with ``max_steps``; by default the ``preset_name`` preset's.
    """
    from ..training.config import lr_at, preset

    if cfg is None:
        cfg = preset(preset_name, vocab_size=256)[1]
        source = f"the '{preset_name}' preset"
    else:
        source = "this TrainConfig"
    if cfg.max_steps is None:
        raise ValueError("lr_schedule needs a TrainConfig with max_steps (a time-budget schedule depends on speed)")
    steps = list(range(cfg.max_steps))
    exp = math.floor(math.log10(cfg.lr))
    scale = 10.0 ** exp  # plot in units of 1e-3 (say), so no offset text crowds the title
    lrs = [lr_at(s, cfg) / scale for s in steps]
    peak, low = cfg.lr / scale, cfg.min_lr / scale
    fig = plt.figure(figsize=(9.0, 3.9), dpi=100)
    ax = fig.add_axes((0.09, 0.15, 0.66, 0.66))
    fig.text(0.02, 0.96, "Learning rate: linear warmup, then cosine decay", fontsize=TITLE, fontweight="bold",
             va="top", color=INK)
    fig.text(0.02, 0.885, f"lr_at(step, cfg) for {source}: warmup_steps = {cfg.warmup_steps}, "
             f"max_steps = {cfg.max_steps}", fontsize=FONT, color=MUTED, va="top")
    ax.axvspan(0, cfg.warmup_steps, color=COLORS["norm"][0], zorder=0)
    ax.plot(steps, lrs, color=COLORS["compute"][1], lw=2)
    for value, name, real in ((peak, "lr (peak)", cfg.lr), (low, "min_lr", cfg.min_lr)):
        ax.axhline(value, color=MUTED, lw=1, ls="--")
        ax.text(cfg.max_steps * 1.02, value, f"{name} = {real:g}", fontsize=SMALL, va="center", color=INK,
                clip_on=False)
    ax.set_xlim(0, cfg.max_steps)
    ax.set_ylim(0, peak * 1.12)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel(f"learning rate (\u00d7 1e{exp})")
    style_axes(ax)
    ax.annotate("warmup: lr (step+1) / (warmup_steps+1),\nwhile Adam's moment estimates settle",
                xy=(cfg.warmup_steps, peak * 0.5), xytext=(cfg.max_steps * 0.1, peak * 0.2), fontsize=SMALL,
                color=INK, arrowprops=dict(arrowstyle="-|>", color=INK, lw=1))
    mid = cfg.warmup_steps + (cfg.max_steps - cfg.warmup_steps) // 2
    ax.annotate("cosine: big steps early,\nsmall steps to settle at the end", xy=(mid, lr_at(mid, cfg) / scale),
                xytext=(mid + cfg.max_steps * 0.08, peak * 0.82), fontsize=SMALL, color=INK,
                arrowprops=dict(arrowstyle="-|>", color=INK, lw=1))
    return finish(fig)


# ------------------------------------------------------------------------------ ch06: KV cache
def kv_cache(prompt: Sequence[str] = ("The", "cat", "sat", "on"), generated: Sequence[str] = ("the", "mat", "."),
             ) -> Figure:
    """Which keys/values each forward pass computes while generating, without and with a KV cache.

    Call 1 (the prefill) reads the prompt; each later call feeds the token the previous
    call produced. Without a cache every call recomputes k, v for all positions; with
    one, only the new position's, and the rest is read back.
    """
    prompt, generated = list(prompt), list(generated)
    if not prompt or not generated:
        raise ValueError("kv_cache needs a non-empty prompt and at least one generated token")
    P, G = len(prompt), len(generated)
    tokens = prompt + generated[:-1]
    cols = len(tokens)
    cw, ch = 0.5, 0.42
    panel_w = 1.2 + cols * cw + 0.9
    W, H = 2 * panel_w + 0.5, 1.9 + G * (ch + 0.14) + 0.4
    fig, ax = canvas(W, H, "Generating with and without a KV cache",
                     "rows: one forward call each; cells: the keys and values (of every layer) that the call needs")
    for panel, cached in enumerate((False, True)):
        x0 = 0.25 + panel * (panel_w + 0.25)
        left = x0 + 1.2
        label(ax, x0 + panel_w / 2, H - 1.0, "with a KV cache" if cached else "without a cache", bold=True)
        for c, t in enumerate(tokens):
            label(ax, left + (c + 0.5) * cw, H - 1.33, t, size=SMALL, color=INK if c < P else COLORS["loss"][1])
        computed = 0
        for r in range(G):
            y = H - 1.85 - r * (ch + 0.14)
            n = P + r
            label(ax, left - 0.1, y + ch / 2, "call 1 (prefill)" if r == 0 else f"call {r + 1}", ha="right", size=SMALL)
            for c in range(n):
                new = (not cached) or (r == 0) or c == n - 1
                computed += new
                kind = "compute" if new else "cache"
                cell(ax, left + c * cw, y, cw, ch, "k v", fill=COLORS[kind][0], edge=COLORS[kind][1], fontsize=SMALL)
            cell(ax, left + (n - 1) * cw + 0.04, y + 0.04, cw - 0.08, ch - 0.08, fill="none", edge=COLORS["attn"][1], lw=2)
            arrow(ax, (left + n * cw + 0.02, y + ch / 2), (left + n * cw + 0.3, y + ch / 2), lw=1.0, shrink=0)
            label(ax, left + n * cw + 0.34, y + ch / 2, repr(generated[r]), ha="left", size=SMALL,
                  color=COLORS["loss"][1])
        formula = f"{P} + " + " + ".join(["1"] * (G - 1)) if cached else " + ".join(str(P + r) for r in range(G))
        label(ax, x0 + panel_w / 2, 0.85, f"k, v computed: {formula} = {computed}", size=SMALL, family=MONO)
    legend(ax, 0.45, 0.35, [(COLORS["compute"][0], COLORS["compute"][1], "computed in this call"),
                            (COLORS["cache"][0], COLORS["cache"][1], "read from the cache"),
                            ("white", COLORS["attn"][1], "the one query used: the last position")], dx=2.6)
    return finish(fig)


# ------------------------------------------------------------------------------ ch06: sampling filters
_EXAMPLE_TOKENS = (" be", " die", " sleep", " go", " see", " live", " say", " the", " me", " my")
_EXAMPLE_LOGITS = (3.0, 2.2, 1.8, 1.3, 1.1, 0.9, 0.6, 0.2, -0.2, -0.6)


def sampling_filters(logits: Sequence[float] = _EXAMPLE_LOGITS, tokens: Sequence[str] = _EXAMPLE_TOKENS, *,
                     temperature: float = 0.6, top_k: int = 4, top_p: float = 0.7,
                     prompt: str = "To be, or not to") -> Figure:
    """The next-token distribution after ``prompt``, then temperature, top-k and top-p, each on its own.

    The filters are the course's (``generation.top_k_filter`` / ``top_p_filter``);
    grey bars are what a filter removes, coloured bars the renormalised rest. (``sample_next``
    combines them: logits / temperature, then top-k, then top-p, then softmax and a draw.)
    Top-p keeps as many tokens as it takes to reach mass p: few when the model is sure. The default
    p = 0.7 lies well between two cumulative sums of the example (0.60 after two tokens, 0.72 after
    three), so the two-digit labels show why the third token is kept.
    """
    import torch

    from ..model.generation import top_k_filter, top_p_filter

    if len(logits) != len(tokens) or not tokens:
        raise ValueError(f"give one logit per token: {len(logits)} logits for {len(tokens)} tokens")
    z = torch.tensor(list(logits), dtype=torch.float32)
    base = torch.softmax(z, -1)
    kept_mass_p = float(base[torch.isfinite(top_p_filter(z, top_p))].sum())
    panels = [("the model: softmax(logits)", base, torch.ones_like(base, dtype=torch.bool), COLORS["data"]),
              (f"temperature {temperature:g}: softmax(logits / {temperature:g})", torch.softmax(z / temperature, -1),
               torch.ones_like(base, dtype=torch.bool), COLORS["attn"]),
              (f"top-k, k = {top_k}: keep the {top_k} largest", torch.softmax(top_k_filter(z, top_k), -1),
               torch.isfinite(top_k_filter(z, top_k)), COLORS["compute"]),
              (f"top-p, p = {top_p:g}: smallest set with mass \u2265 p", torch.softmax(top_p_filter(z, top_p), -1),
               torch.isfinite(top_p_filter(z, top_p)), COLORS["loss"])]
    fig, axes = plt.subplots(1, 4, figsize=(10.5, 4.0), dpi=100, sharey=True)
    fig.subplots_adjust(left=0.1, right=0.985, top=0.74, bottom=0.13, wspace=0.12)
    fig.text(0.01, 0.97, "Sampling filters on one next-token distribution", fontsize=TITLE, fontweight="bold",
             va="top", color=INK)
    fig.text(0.01, 0.895, f"after {prompt!r}; each filter applied to the model's distribution alone; "
             "grey: removed, then the rest is renormalised", fontsize=FONT, color=MUTED, va="top")
    ys = list(range(len(tokens)))[::-1]
    top = float(max(p.max() for _, p, _, _ in panels))
    for ax, (title, probs, keep, (fill, edge)) in zip(axes, panels):
        for y, p0, p, k in zip(ys, base.tolist(), probs.tolist(), keep.tolist()):
            if k:
                ax.barh(y, p, color=fill, edgecolor=edge, height=0.72)
                ax.text(p + top * 0.03, y, f"{p:.2f}", va="center", fontsize=SMALL, color=INK)
            else:
                ax.barh(y, p0, color="#f2f2f2", edgecolor="#b0b0b0", hatch="///", height=0.72)
        ax.set_title(title.replace(": ", ":\n", 1), fontsize=FONT, loc="left", color=INK)
        ax.set_xlim(0, top * 1.3)
        ax.set_xlabel("probability")
        style_axes(ax)
    axes[3].text(top * 1.28, -0.9, f"kept mass {kept_mass_p:.2f} \u2265 p", ha="right", fontsize=SMALL, color=MUTED)
    axes[0].set_yticks(ys)
    axes[0].set_yticklabels([repr(t) for t in tokens], fontsize=FONT, family=MONO)
    axes[0].set_ylim(-1.2, len(tokens) - 0.4)
    return finish(fig)


# ------------------------------------------------------------------------------ ch08: chat mask
_CHAT = (("user", "What is 2+2?"), ("assistant", "4."), ("user", "And 3+3?"), ("assistant", "6."))


def _chat_cells(messages: Sequence[tuple[str, str]], tokenizer: Any) -> list[tuple[str, str, bool, str]]:
    """``(text, role, trained on, kind)`` per token of chat.py's template; kind: "open", "end" or "text".

    With a tokenizer that has the chat tokens, its own tokens (``render_conversation``);
    without one, words stand for tokens.
    """
    if tokenizer is not None:
        from ..finetune.chat import END, ROLE_TOKENS, render_conversation

        ids, mask = render_conversation(tokenizer, [{"role": r, "content": t} for r, t in messages])
        opens = {tokenizer.token_id(t): r for r, t in ROLE_TOKENS.items()} | {tokenizer.eot_id: "start"}
        end, role, cells = tokenizer.token_id(END), "start", []
        for i, trained in zip(ids, mask):
            role = opens.get(i, role)
            kind = "open" if i in opens else "end" if i == end else "text"
            cells.append((tokenizer.decode([i]), role, bool(trained), kind))
        return cells
    import re

    cells = [("<|endoftext|>", "start", False, "open")]  # opens it (chat.py)
    for role, text in messages:
        reply = role == "assistant"
        words = [(w, role, reply, "text") for w in re.findall(r"\s?[^\s]+", text)]
        cells += [(f"<|{role}|>", role, False, "open"), *words, ("<|end|>", role, reply, "end")]
    return cells


def chat_mask(messages: Sequence[tuple[str, str]] = _CHAT, tokenizer: Any = None) -> Figure:
    """A conversation as tokens (chat.py's template); the loss counts only where the target is the assistant's.

    ``<|endoftext|>`` opens the conversation, then each message is its role token,
    its text and ``<|end|>``. Targets are the tokens shifted by one; a target that is
    not part of an assistant reply (its words and its closing ``<|end|>``) is set to
    -1, which ``GPT.forward``'s cross-entropy ignores. Words stand for tokens, or,
    with ``tokenizer`` (one with the chat tokens: ``add_chat_tokens(model).tokenizer``),
    each cell is one of its tokens, as ``render_conversation`` makes them. Each cell
    is as wide as its text; a line starts at each user turn after the first, and
    wherever the tokens would pass 12 inches.
    """
    roles = {"user", "assistant", "system"}
    bad = [r for r, _ in messages if r not in roles]
    if not messages or bad:
        raise ValueError(f"messages are (role, text) pairs with role in {sorted(roles)}; got roles {bad or 'none'}")
    cells = _chat_cells(messages, tokenizer)
    if len(cells) > 150:
        raise ValueError(f"{len(cells)} tokens are too many to draw: give a shorter conversation (<= 150 tokens)")
    line = 12.0  # inches of token cells per line at most
    rows: list[list[tuple[str, str, bool, str, float]]] = [[]]
    seen_user = False
    for text, role, trained, kind in cells:
        w = max(0.5, len(show_token(text)) * 0.092 + 0.16)
        new_turn = kind == "open" and role == "user" and seen_user
        if rows[-1] and (new_turn or sum(c[4] for c in rows[-1]) + w > line):
            rows.append([])
        rows[-1].append((text, role, trained, kind, w))
        seen_user = seen_user or role == "user"
    left, rh = 1.15, 1.15
    W = max(9.0, left + max(sum(c[4] for c in row) for row in rows) + 0.3)
    H = 1.5 + rh * (len(rows) - 1) + 1.25
    fig, ax = canvas(W, H, "The chat loss mask: learn the assistant's replies, not the user's",
                     "one sequence; each token is the target of the position before it")
    role_kind = {"user": 0, "assistant": 2, "system": 5, "start": 7}
    for r, row in enumerate(rows):
        y = H - 1.5 - r * rh
        label(ax, left - 0.1, y + 0.19, "tokens", ha="right", size=SMALL)
        label(ax, left - 0.1, y - 0.22, "as target", ha="right", size=SMALL)
        x = left
        for t, role, trained, kind, w in row:
            s, special = role_kind[role], kind != "text"
            cell(ax, x, y, w, 0.38, show_token(t), fill=SERIES[s], edge=SERIES_EDGE[s], fontsize=SMALL if special else FONT,
                 lw=1.8 if special else 1.0)
            target = "loss" if trained else "off"
            cell(ax, x + 0.05, y - 0.36, w - 0.1, 0.28, "loss" if trained else "-1", fill=COLORS[target][0],
                 edge=COLORS[target][1], fontsize=SMALL, color=COLORS[target][1])
            x += w
    legend(ax, 0.3, 0.35, [(SERIES[0], SERIES_EDGE[0], "user turn"), (SERIES[2], SERIES_EDGE[2], "assistant turn"),
                            (COLORS["loss"][0], COLORS["loss"][1], "target trained on"),
                            (COLORS["off"][0], COLORS["off"][1], "target = -1 (ignored)")], dx=2.1)
    return finish(fig)


# ------------------------------------------------------------------------------ registry
