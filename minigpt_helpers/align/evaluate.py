"""How often a chat model's *sampled* replies pass their verifier: chapter 10's measure of success.

Greedy decoding gives one reply per prompt, the model's single most likely one; a
tuned model can leave it unchanged while it changes everything else it would say.
DPO and GRPO train on *sampled* replies (the pairs' rejected replies, GRPO's groups),
so :func:`success_rates` measures what they change: for each row, ``samples`` replies
at ``temperature`` (one batch with the KV cache, :func:`sample_group_ids`), the share
that the verifier passes, per task. Seeded by ``seed`` and the row's prompt only, so
two models are compared on the same random draws, and the noise band between
``seed`` values is the sampling noise of the measurement itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from ..finetune.chat import ChatTokenizer, render_conversation
from ..model.generation import sample_group_ids
from .pairs import reply_room, sample_seed
from .rewards import RewardFn, prompt_messages, task_reward


def sampled_replies(model: nn.Module, row: Any, samples: int = 8, *, max_new_tokens: int = 24,
                    temperature: float = 1.0, seed: int = 0) -> list[str]:
    """``samples`` replies to the row's prompt, sampled together (one KV-cached batch), each cut to fit the context
    after the prompt (:func:`~minigpt_helpers.align.pairs.reply_room`); the text without the closing token."""
    tok = model.tokenizer
    prompt = prompt_messages(row)
    ids, _ = render_conversation(tok, prompt, add_generation_prompt=True)
    room = min(max_new_tokens, reply_room(model, prompt))
    group = sample_group_ids(model, ids, samples, room, temperature, seed=sample_seed(seed, prompt, 0),
                             stop_ids=tok.stop_ids)
    return [tok.reply_text(c) for c in group]


def success_rates(model: nn.Module, rows: Sequence[dict[str, Any]], reward_fn: RewardFn = task_reward, *,
                  samples: int = 8, max_new_tokens: int = 24, temperature: float = 1.0,
                  seed: int = 0) -> dict[str, float]:
    """Per task (the rows' ``"task"``), the share of sampled replies whose reward is above 0; ``"all"``: over every
    reply. Rows whose prompt fills the context are refused: keep those with ``reply_room(model, prompt) > 0``."""
    if not isinstance(getattr(model, "tokenizer", None), ChatTokenizer):
        raise ValueError("the model has no chat tokens: measure a chat model (chapter 08's load_chat_model)")
    if isinstance(rows, dict) or not rows:
        raise ValueError("rows must be a non-empty list of instruction rows (instruction_set('validation'))")
    full = sum(reply_room(model, prompt_messages(r)) < 1 for r in rows)
    if full:
        raise ValueError(f"{full} row(s) leave no room for a reply in the {model.config.block_size}-token context: "
                         "keep the rows with reply_room(model, prompt_messages(row)) > 0")
    passed: dict[str, list[bool]] = {}
    was_training = model.training
    model.eval()
    try:
        for row in rows:
            replies = sampled_replies(model, row, samples, max_new_tokens=max_new_tokens, temperature=temperature,
                                      seed=seed)
            passed.setdefault(row.get("task", "all"), []).extend(reward_fn(row, r) > 0 for r in replies)
    finally:
        model.train(was_training)
    rates = {task: sum(v) / len(v) for task, v in passed.items()}
    every = [p for v in passed.values() for p in v]
    return {**rates, "all": sum(every) / len(every)}
