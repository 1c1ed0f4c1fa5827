"""Concept diagrams, drawn by code: a picture wherever a learner would rather look than read.

Each function returns a matplotlib ``Figure``. End a notebook cell with the call and
it shows as a PNG output, so it renders in JupyterLab, Colab and on GitHub with no
network, and its source stays here where it can be changed::

    from minigpt_helpers import diagrams
    diagrams.packing_windows(block_size=5)

Where a diagram shows something the course computes, it computes it with the
course's own code (the windows with ``pack_windows``, the merges with the BPE
trainer, the mask with ``causal_mask``, the schedule with ``lr_at``, the filters
with ``top_k_filter`` / ``top_p_filter``), so picture and code cannot drift apart.
One visual style for all (style.py): blue data, orange layers, green
LayerNorm, purple attention, red loss and trainable parts, grey masked or frozen.

The diagrams (:data:`DIAGRAMS` maps each name to its function):

    packing_windows      ch05  documents -> token stream with EOT -> windows, x and y shifted by one
    bpe_merges           ch02  a few BPE merge steps on a small text, with the pair counts
    causal_attention     ch03  Q, K, V and the causal mask: each query sees keys at or before it
    head_split           ch03  C -> n_head x head_dim -> attention per head -> concat -> c_proj
    pre_ln_block         ch04  the pre-LN block on the residual stream
    gpt_architecture     ch04  token + position embedding -> n_layer blocks -> ln_f -> lm_head -> softmax
    training_step        ch05  forward, loss, backward, clip, optimizer step with lr_at, zero_grad
    lr_schedule          ch05  linear warmup + cosine decay, drawn with lr_at
    kv_cache             ch06  what each generation step recomputes without a cache and reuses with one
    sampling_filters     ch06  temperature, top-k and top-p on one example distribution
    gqa                  ch07  multi-head, grouped-query and multi-query attention: shared K/V heads
    lora                 ch08  a frozen W plus a trainable low-rank update B A
    chat_mask            ch08  a conversation's tokens; the loss only on the assistant's replies
    choice_scoring       ch09  context + each choice -> the model -> one log-likelihood per choice -> argmax
    isoflop_profiles     ch09  loss against model size at fixed compute; the optimum's size against compute
    rlhf_vs_dpo          ch10  RLHF's reward model and PPO against DPO's single loss on the same pairs
    grpo_group           ch10  a group of samples as its own baseline; a zero-variance group teaches nothing
    prefill_vs_decode    ch11  T prompt tokens per weight read (compute-bound) against one (memory-bound)
    speculative_decoding ch11  a draft model's k guesses checked in one target pass; accept, reject, roll back
    continuous_batching  ch11  slots over steps: a freed slot takes the next request, against static batches

The model diagrams are in model.py, chapter 09's in evaluation.py, chapter 10's in align.py, chapter 11's in
inference.py (with ``slot_schedule``, the scheduler that lays out ``continuous_batching``), the rest in
pipeline.py; import them all from here.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import matplotlib.pyplot as plt
from matplotlib.figure import Figure

from .align import grpo_group, rlhf_vs_dpo
from .evaluation import choice_scoring, isoflop_profiles
from .inference import continuous_batching, prefill_vs_decode, slot_schedule, speculative_decoding
from .model import causal_attention, gpt_architecture, gqa, head_split, lora, pre_ln_block
from .pipeline import (
    bpe_merges,
    chat_mask,
    kv_cache,
    lr_schedule,
    packing_windows,
    sampling_filters,
    training_step,
)

DIAGRAMS: dict[str, Callable[..., Figure]] = {
    "packing_windows": packing_windows,
    "bpe_merges": bpe_merges,
    "causal_attention": causal_attention,
    "head_split": head_split,
    "pre_ln_block": pre_ln_block,
    "gpt_architecture": gpt_architecture,
    "training_step": training_step,
    "lr_schedule": lr_schedule,
    "kv_cache": kv_cache,
    "sampling_filters": sampling_filters,
    "gqa": gqa,
    "lora": lora,
    "chat_mask": chat_mask,
    "choice_scoring": choice_scoring,
    "isoflop_profiles": isoflop_profiles,
    "rlhf_vs_dpo": rlhf_vs_dpo,
    "grpo_group": grpo_group,
    "prefill_vs_decode": prefill_vs_decode,
    "speculative_decoding": speculative_decoding,
    "continuous_batching": continuous_batching,
}
#: the chapter each diagram belongs to
CHAPTER = {"bpe_merges": "02", "causal_attention": "03", "head_split": "03", "pre_ln_block": "04",
           "gpt_architecture": "04", "packing_windows": "05", "training_step": "05", "lr_schedule": "05",
           "kv_cache": "06", "sampling_filters": "06", "gqa": "07", "lora": "08", "chat_mask": "08",
           "choice_scoring": "09", "isoflop_profiles": "09", "rlhf_vs_dpo": "10", "grpo_group": "10",
           "prefill_vs_decode": "11", "speculative_decoding": "11", "continuous_batching": "11"}


def save_all(directory: str | Path, dpi: int = 100) -> list[Path]:
    """Render every diagram to ``directory/<name>.png`` (e.g. for a README); returns the paths."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, draw in DIAGRAMS.items():
        fig = draw()
        path = out / f"{name}.png"
        fig.savefig(path, dpi=dpi, facecolor="white")
        plt.close(fig)
        paths.append(path)
    return paths



__all__ = sorted(DIAGRAMS) + ["CHAPTER", "DIAGRAMS", "save_all", "slot_schedule"]
