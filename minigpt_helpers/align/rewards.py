"""Rewards a program can verify, from chapter 08's instruction tasks, and a fluency guard against reward hacking.

**Verifiable rewards.** Every task of ``finetune/instructions.py`` has an objective
check, :func:`~minigpt_helpers.finetune.instructions.check_reply`, so a reward needs
no learned reward model: it is 1.0 when the reply passes the check, else 0.0.

- :func:`use_word_reward`: one line of verse (4 to 14 words, at most 90 characters,
  a capital first) with the asked word *as a word* (``has_word``: "crowned" is not
  "crown"; case and punctuation around it do not matter);
- :func:`genre_reward`, :func:`play_reward`: the reply is the right label (the genre,
  the play's title), up to case, outer punctuation and spaces;
- :func:`speaker_reward`: the reply is the right one of two names (chance: 1/2).

:func:`arithmetic_reward` checks chapter 10's arithmetic rows (arithmetic.py): the
last number in the reply must equal the answer, so a reply may show its working first.

There is no line-count or format task in chapter 08 (``TASKS``); ``use_word``'s
"one line of verse" is its format check. :func:`task_reward` picks the reward by
the row's ``"task"``. A row is what ``instruction_set`` makes (its ``"answer"``,
and ``"word"`` for ``use_word``); a reply is the generated text, without ``<|end|>``.

**The fluency guard.** A verifier checks only what it checks. A policy optimised
against it finds the cheapest reply that passes: for ``use_word``, a "line" such as
``"Crown crown crown crown"`` passes (four words, a capital, the word), and without
the verse check a reply that is just the word would score 1.0. That is *reward
hacking*. :func:`guarded_reward` takes the reward away from a reply that is empty or not fluent:
one whose bits per byte under a frozen base model (:func:`fluency_bpb`, the reply
scored after its prompt, rendered with the chat template) is above ``max_bpb``. A
model that has read text finds gibberish, or a word alone followed by the end of the
turn, far less likely per byte than a line it could have written. A repeated phrase
is the guard's blind spot: after its first occurrence a model predicts the repeats
well (copying is what attention does best), so "The crown the crown the crown" can
score as fluent as verse under a small model. The KL penalty to the reference, and
reading the samples, cover what the guard misses.

**Picking the threshold**: measure the SFT model's own replies (or the reference
answers) to training prompts with :func:`fluency_threshold` and take a high quantile
(0.95 by default), so that almost every reply the model writes normally passes and
only outliers are cut. Too low a threshold rejects good replies (less reward to learn
from); too high lets the hack through.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from ..finetune.chat import SFTCollate, check_messages, render_conversation, sft_example
from ..finetune.instructions import check_reply
from ..training.examples import IGNORE
from ..training.metrics import bits_per_byte, token_byte_lengths
from .logprobs import token_logprobs

RewardFn = Callable[[dict[str, Any], str], float]


# ------------------------------------------------------------------------------ verifiable rewards
def _verified(task: str, row: dict[str, Any], reply: str) -> float:
    """1.0 when ``reply`` passes chapter 08's check of ``row`` (a row of ``task``), else 0.0."""
    if not isinstance(row, dict) or row.get("task") != task:
        got = row.get("task") if isinstance(row, dict) else type(row).__name__
        raise ValueError(f"a {task!r} reward needs a {task!r} row (as instruction_set makes it), got {got!r}: "
                         "use task_reward(row, reply) to pick the reward by the row's task")
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str (the generated text), got {type(reply).__name__}")
    return 1.0 if check_reply(row, reply) else 0.0


def use_word_reward(row: dict[str, Any], reply: str) -> float:
    """1.0 for one line of verse that contains ``row["word"]`` as a whole word (any case), else 0.0."""
    return _verified("use_word", row, reply)


def genre_reward(row: dict[str, Any], reply: str) -> float:
    """1.0 when the reply is the row's genre ("comedy", "history" or "tragedy"), else 0.0."""
    return _verified("genre", row, reply)


def play_reward(row: dict[str, Any], reply: str) -> float:
    """1.0 when the reply is the title of the row's play (e.g. "King Lear"), else 0.0."""
    return _verified("play", row, reply)


def speaker_reward(row: dict[str, Any], reply: str) -> float:
    """1.0 when the reply is the name of the next speaker (one of the two offered), else 0.0."""
    return _verified("speaker", row, reply)


NUMBER = re.compile(r"-?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?")  # 1,200 is one number; 1,2,3 three


def last_number(text: str) -> float | None:
    """The last number written in ``text`` (a thousands comma, as in "1,200", ignored), or None if there is none."""
    found = NUMBER.findall(text)
    if not found:
        return None
    try:
        return float(found[-1].replace(",", ""))
    except ValueError:
        return None


def arithmetic_reward(row: dict[str, Any], reply: str) -> float:
    """1.0 when the last number in ``reply`` equals the row's ``"answer"`` (compared as numbers), else 0.0."""
    want, got = last_number(str(row["answer"])), last_number(reply)
    return float(want is not None and got is not None and abs(got - want) < 1e-9)


#: task -> its verifiable reward
REWARDS: dict[str, RewardFn] = {"use_word": use_word_reward, "genre": genre_reward, "play": play_reward,
                                "speaker": speaker_reward, "arithmetic": arithmetic_reward}


def task_reward(row: dict[str, Any], reply: str) -> float:
    """The reward of ``reply`` to ``row``, by the row's task (:data:`REWARDS`); 1.0 or 0.0."""
    task = row.get("task") if isinstance(row, dict) else None
    if task not in REWARDS:
        raise ValueError(f"no verifier for task {task!r}: rewards exist for the tasks {sorted(REWARDS)} "
                         "(rows of instruction_set carry their task in row['task'])")
    return REWARDS[task](row, reply)


# ------------------------------------------------------------------------------ the fluency guard
def prompt_messages(row_or_prompt: Any) -> list[dict[str, str]]:
    """The messages a reply answers: a row's (its reference answer, a last assistant message, left out),
    a list of messages (likewise), or a string as one user message."""
    if isinstance(row_or_prompt, str):
        return [{"role": "user", "content": row_or_prompt}]
    messages = check_messages(row_or_prompt, "the prompt")
    if messages[-1]["role"] == "assistant":
        messages = messages[:-1]
    if not messages:
        raise ValueError("the prompt holds only an assistant message: give the user's message the reply answers")
    return messages


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _reply_targets(tokenizer: Any, prompt: list[dict[str, str]], reply: str,
                  block_size: int) -> tuple[list[int], list[int]]:
    """(x, y) of ``prompt`` + the assistant's ``reply`` (``sft_example``), only the reply and its ``<|end|>`` scored.

    An assistant turn inside the prompt is context, not scored. A reply longer than
    the window is cut (its first tokens are scored, and bits per byte counts their
    bytes only); a prompt that leaves no room for a reply token is a ValueError.
    """
    start = len(render_conversation(tokenizer, prompt, add_generation_prompt=True)[0]) - 1  # first reply target
    ex = sft_example(tokenizer, [*prompt, {"role": "assistant", "content": reply}], block_size)
    if ex is None or start >= len(ex[1]):
        raise ValueError(f"the prompt fills the model's {block_size}-token window, so no reply token can be "
                         "scored: use a shorter prompt")
    x, y = ex
    y[:start] = [IGNORE] * start
    return x, y


@torch.no_grad()
def _replies_bpb(model: nn.Module, prompts: Sequence[list[dict[str, str]]], replies: Sequence[str],
                 batch_size: int) -> list[float]:
    """Bits per byte of each reply (its tokens and its ``<|end|>``) after its prompt, ``batch_size`` rows a pass.

    A reply with no bytes scored (empty) gets ``inf``: never fluent.
    """
    tok, block = model.tokenizer, model.config.block_size
    nbytes = token_byte_lengths(tok)
    collate = SFTCollate(block, tok.eot_id)
    examples = [_reply_targets(tok, prompt, reply, block) for prompt, reply in zip(prompts, replies)]
    out: list[float] = []
    was_training = model.training
    model.eval()
    try:
        for start in range(0, len(examples), batch_size):
            x, y = collate(examples[start: start + batch_size])
            x, y = x.to(_device(model)), y.to(_device(model))
            nats = -token_logprobs(model, x, y).sum(-1)
            scored = (nbytes[y.clamp(min=0).cpu()] * (y != IGNORE).cpu()).sum(-1).tolist()  # bytes per row
            out += [bits_per_byte(n, b) if b > 0 else math.inf for n, b in zip(nats.tolist(), scored)]
    finally:
        model.train(was_training)
    return out


def _check_replies(replies: Sequence[str]) -> None:
    if isinstance(replies, str) or not all(isinstance(r, str) for r in replies):
        raise TypeError("replies must be a list of strings (one string: use fluency_bpb)")


def fluency_bpb_batch(base_model: nn.Module, row_or_prompt: Any, replies: Sequence[str],
                      batch_size: int = 32) -> list[float]:
    """Bits per byte of each reply to one prompt under ``base_model``, a group in one forward pass.

    Each reply is scored as the assistant's turn after the prompt, rendered with the
    chat template (``sft_example``): its tokens and its closing ``<|end|>`` (so a reply
    that stops where no reply would is penalised), divided by the reply's UTF-8 bytes.
    ``base_model`` needs the chat tokens (a chapter 08 chat model, kept frozen). An
    empty reply gives ``inf``. Lower is more fluent.
    """
    _check_replies(replies)
    prompt = prompt_messages(row_or_prompt)
    return _replies_bpb(base_model, [prompt] * len(replies), list(replies), batch_size)


def fluency_bpb(base_model: nn.Module, row_or_prompt: Any, reply: str) -> float:
    """Bits per byte of ``reply`` to the prompt under ``base_model`` (see :func:`fluency_bpb_batch`)."""
    if not isinstance(reply, str):
        raise TypeError(f"reply must be a str, got {type(reply).__name__}")
    return fluency_bpb_batch(base_model, row_or_prompt, [reply])[0]


def fluency_threshold(base_model: nn.Module, rows: Sequence[Any], replies: Sequence[str], quantile: float = 0.95,
                      batch_size: int = 32) -> float:
    """The ``quantile`` of the bits per byte of ``replies`` (one per row, e.g. the SFT model's own, or the
    reference answers) under ``base_model``: a ``max_bpb`` for :func:`guarded_reward`."""
    _check_replies(replies)
    if len(rows) != len(replies) or not rows:
        raise ValueError(f"{len(rows)} rows but {len(replies)} replies: give one reply per row (at least one)")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile must be in (0, 1], got {quantile!r}")
    bpb = _replies_bpb(base_model, [prompt_messages(r) for r in rows], list(replies), batch_size)
    finite = torch.tensor([b for b in bpb if math.isfinite(b)], dtype=torch.float64)
    if finite.numel() == 0:
        raise ValueError("every reply is empty: give replies with some text")
    return float(torch.quantile(finite, quantile))


class GuardedReward:
    """``reward_fn`` whose positive rewards an empty or non-fluent reply loses (see :func:`guarded_reward`).

    Call it as ``reward(row, reply)``, or ``reward.batch(row, replies)`` for a group of
    replies to one prompt (their fluency in one forward pass).
    """

    def __init__(self, reward_fn: RewardFn, base_model: nn.Module, max_bpb: float) -> None:
        self.reward_fn, self.base_model, self.max_bpb = reward_fn, base_model, float(max_bpb)

    def __call__(self, row: Any, reply: str) -> float:
        return self.batch(row, [reply])[0]

    def batch(self, row: Any, replies: Sequence[str]) -> list[float]:
        """The guarded reward of each reply to ``row``; fluency is measured only for replies with a positive reward."""
        _check_replies(replies)
        rewards = [float(self.reward_fn(row, r)) for r in replies]
        paid = [k for k, r in enumerate(rewards) if r > 0]
        fluent = [replies[k] for k in paid if replies[k].strip()]
        bpb = iter(fluency_bpb_batch(self.base_model, row, fluent) if fluent else [])
        for k in paid:  # a positive reward is taken away from an empty or non-fluent reply, never given
            if not replies[k].strip() or next(bpb) > self.max_bpb:
                rewards[k] = 0.0
        return rewards

    def __repr__(self) -> str:
        name = getattr(self.reward_fn, "__name__", type(self.reward_fn).__name__)
        return f"GuardedReward({name}, max_bpb={self.max_bpb:g})"


def guarded_reward(reward_fn: RewardFn, base_model: nn.Module, max_bpb: float) -> GuardedReward:
    """``reward_fn`` guarded against reward hacking: a positive reward becomes 0.0 for an empty reply or one above
    ``max_bpb`` bits per byte (a zero or negative reward stays: the guard never gives reward).

    ``base_model`` is a frozen chat model (the SFT model before tuning); a reply's
    fluency is its bits per byte there (:func:`fluency_bpb`). Without the guard a
    policy learns replies that satisfy the verifier and nothing else ("Crown crown
    crown crown" for the word "crown"). Pick ``max_bpb`` as a high quantile of the SFT
    model's own replies' bits per byte (:func:`fluency_threshold`). The result is called
    like ``reward_fn``, ``reward(row, reply)``, and has ``.batch(row, replies)``.
    """
    if not callable(reward_fn):
        raise TypeError(f"reward_fn must be a function reward(row, reply) -> float, got {type(reward_fn).__name__}")
    if not hasattr(base_model, "tokenizer") or not hasattr(base_model, "config"):
        raise TypeError("base_model must be a chat model with its tokenizer attached (chapter 08's load_chat_model)")
    if isinstance(max_bpb, bool) or not isinstance(max_bpb, (int, float)) or not max_bpb > 0:
        raise ValueError(f"max_bpb must be a number > 0 (bits per byte), got {max_bpb!r}: "
                         "pick it with fluency_threshold(base_model, rows, replies)")
    return GuardedReward(reward_fn, base_model, max_bpb)
