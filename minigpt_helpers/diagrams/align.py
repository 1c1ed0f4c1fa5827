"""Chapter 10's concept diagrams: RLHF against DPO, and a GRPO group as its own baseline."""

from __future__ import annotations

from collections.abc import Sequence

from matplotlib.figure import Figure

from ..align.grpo import group_advantages
from .style import COLORS, FONT, MONO, MUTED, SMALL, arrow, box, canvas, cell, finish, label


# ------------------------------------------------------------------------------ ch10: RLHF and DPO
def rlhf_vs_dpo() -> Figure:
    """RLHF (a reward model, then PPO with sampling, a value network and a KL penalty) against DPO (one loss on
    the same preference pairs, no reward model, no sampling)."""
    W, H = 12.0, 5.4
    fig, ax = canvas(W, H, "From preferences to a policy: RLHF's three models against DPO's one loss",
                     "both start from the SFT model and pairs (prompt, chosen reply, rejected reply)")
    # RLHF row
    y = 3.05
    label(ax, 0.25, y + 1.05, "RLHF (InstructGPT, 2022)", bold=True, ha="left")
    box(ax, 0.2, y, 1.9, 0.8, "preference\npairs", "data")
    box(ax, 2.6, y, 2.3, 0.8, "train a reward\nmodel r(x, y)", "loss")
    box(ax, 5.4, y, 3.6, 0.8, "PPO: sample replies, score them\nwith r, a value net, a KL penalty", "loss")
    box(ax, 9.6, y, 2.1, 0.8, "tuned policy", "compute")
    arrow(ax, (2.1, y + 0.4), (2.6, y + 0.4))
    arrow(ax, (4.9, y + 0.4), (5.4, y + 0.4))
    arrow(ax, (9.0, y + 0.4), (9.6, y + 0.4))
    label(ax, 5.4, y - 0.3, "in memory at once: policy, reference, reward model, value network; "
          "sampling in the loop", size=SMALL, color=MUTED, ha="left")
    # DPO row
    y = 0.75
    label(ax, 0.25, y + 1.05, "DPO (Rafailov et al., 2023)", bold=True, ha="left")
    box(ax, 0.2, y, 1.9, 0.8, "preference\npairs", "data")
    box(ax, 2.6, y, 6.4, 0.8, "one loss:  -log \u03c3( \u03b2 [log \u03c0/\u03c0_ref (chosen) - log \u03c0/\u03c0_ref (rejected)] )",
        "loss", fontsize=FONT)
    box(ax, 9.6, y, 2.1, 0.8, "tuned policy", "compute")
    arrow(ax, (2.1, y + 0.4), (2.6, y + 0.4))
    arrow(ax, (9.0, y + 0.4), (9.6, y + 0.4))
    label(ax, 2.6, y - 0.3, "the reward model is implicit: r = \u03b2 log \u03c0/\u03c0_ref; "
          "no sampling, a frozen reference, a supervised-style loop", size=SMALL, color=MUTED, ha="left")
    return finish(fig)


# ------------------------------------------------------------------------------ ch10: a GRPO group
def grpo_group(rewards: Sequence[float] = (1, 0, 0, 1, 0, 0, 0, 0), flat: Sequence[float] = (1, 1, 1, 1, 1, 1, 1, 1),
               ) -> Figure:
    """Two groups of G completions of one prompt each: the advantages are the rewards minus the group's mean, over
    its std (computed with :func:`~minigpt_helpers.align.grpo.group_advantages`); a group whose rewards are all
    equal gets zero advantages and teaches nothing."""
    import torch

    if len(rewards) != len(flat) or len(rewards) < 2:
        raise ValueError("give two groups of the same size G >= 2")
    G = len(rewards)
    adv = group_advantages(torch.tensor([list(rewards), list(flat)], dtype=torch.float32))
    W, H = 12.0, 6.0
    fig, ax = canvas(W, H, "GRPO: each prompt's group of samples is its own baseline",
                     f"G = {G} completions per prompt; advantage A = (r - mean r) / std r, the same for every token "
                     "of a completion")
    for g, (rs, a, name) in enumerate(((rewards, adv[0], "prompt 1"), (flat, adv[1], "prompt 2"))):
        y = 3.55 - g * 2.55
        box(ax, 0.2, y - 0.05, 1.6, 0.9, f"{name}\n\u2192 G samples", "data", fontsize=SMALL)
        label(ax, 2.3, y + 0.25, "r", size=SMALL, family=MONO, color=MUTED)
        label(ax, 2.3, y - 0.25, "A", size=SMALL, family=MONO, color=MUTED)
        for k in range(G):
            x = 2.6 + k * 0.82
            cell(ax, x, y + 0.55, 0.72, 0.4, f"#{k + 1}", fill=COLORS["data"][0], edge=COLORS["data"][1],
                 fontsize=SMALL)
            cell(ax, x, y + 0.05, 0.72, 0.4, f"{rs[k]:g}", fill="#ffffff", fontsize=SMALL, family=MONO)
            value = float(a[k])
            kind = "loss" if value > 0 else "off" if value == 0 else "cache"
            cell(ax, x, y - 0.45, 0.72, 0.4, f"{value:+.2f}", fill=COLORS[kind][0], edge=COLORS[kind][1],
                 fontsize=SMALL, family=MONO)
        arrow(ax, (1.8, y + 0.4), (2.6, y + 0.75))
        mean, std = float(torch.tensor(rs, dtype=torch.float32).mean()), float(torch.tensor(rs).float().std())
        note = (f"mean {mean:.2f}, std {std:.2f}:\nabove the mean pushed up,\nbelow it pushed down" if std > 0 else
                f"all rewards {rs[0]:g}: A = 0\nfor every sample: no signal\n(only the KL term acts)")
        label(ax, 2.6 + G * 0.82 + 0.15, y + 0.25, note, size=SMALL, ha="left")
    return finish(fig)
