"""Preference pairs built offline from the SFT model's own samples and a verifier (chapter 10).

DPO learns from pairs "this reply is better than that one" to the same prompt.
With verifiable rewards (rewards.py) no human has to judge: for each instruction row

1. sample ``samples`` replies from the SFT model (``chat_reply`` at ``temperature``,
   the k-th sample of a row seeded from ``seed``, the row's prompt and k: the pairs are
   a function of the model, the rows and the seed, whatever the order of the rows);
   each reply is at most ``max_new_tokens`` long and short enough that the prompt, the
   reply and its ``<|end|>`` fit in the context, so that DPO scores every reply whole
   (one that no longer fits once its text is re-encoded is dropped);
2. score each with the verifier (:func:`~minigpt_helpers.align.rewards.task_reward`
   by default): a reply *passes* when its reward is above 0;
3. **rejected** = the first sample that fails: the model's own mistake, the kind of
   reply it actually writes, so DPO pushes down something it would say;
4. **chosen** = the first sample that passes (``"source": "sample"``), or, when none
   does, the row's own reference answer (``"source": "reference"``), which passes
   its check by construction;
5. a row where every sample passes has nothing to correct: it is skipped and counted
   (:attr:`PreferencePairs.skipped`). A row where neither a sample nor the reference
   passes (possible for your own rows and verifier), or whose reference answer is too long for the context, is
   skipped too (:attr:`PreferencePairs.no_chosen`).

**Split rules: chapter 08's.** ``instruction_set`` splits the rows as the corpus is
split, by scene (a row is in ``"validation"`` exactly when its scene is in the
corpus's validation split). Pairs are built from the training split only
(``instruction_set("train")``): :func:`preference_pairs` refuses a validation row. The
tuned model is then evaluated on held-out prompts, ``instruction_set("validation")``,
whose scenes neither pretraining, SFT nor DPO has seen. (The genre *classifier* of
chapter 08 splits by play; the instruction tasks, and so the pairs, split by scene.)

Each pair is a row ``{"messages": prompt messages, "chosen": str, "rejected": str,
"task", "source": "sample" | "reference"}`` plus the fields its verifier reads
(``"answer"``, ``"word"``, ``"choices"``) and ``"scene_id"``, ``"split"`` (the row's own
``"source"``, its play's file, gives way to the pair's; ``"scene_id"`` names the scene): so
``task_reward(pair, pair["chosen"])`` works on a pair as on its row, and DPO's batch
source reads ``"messages"``, ``"chosen"`` and ``"rejected"``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Sequence
from typing import Any

from torch import nn

from ..finetune.chat import chat_reply, render_conversation
from ..model.generation import check_generation_args
from .rewards import RewardFn, prompt_messages, task_reward

#: The fields of an instruction row a pair keeps besides its prompt (what verifiers read, and where it came from).
KEPT_FIELDS = ("task", "answer", "word", "choices", "scene_id", "split")


class PreferencePairs(list):
    """A list of pairs, with how many rows gave none: ``skipped`` (every sample passed) and
    ``no_chosen`` (no sample and not the reference answer passed)."""

    def __init__(self, pairs: Sequence[dict[str, Any]] = (), skipped: int = 0, no_chosen: int = 0) -> None:
        super().__init__(pairs)
        self.skipped, self.no_chosen = skipped, no_chosen

    def __repr__(self) -> str:
        return f"PreferencePairs({len(self)} pairs, skipped={self.skipped}, no_chosen={self.no_chosen})"


def sample_seed(seed: int, prompt: list[dict[str, str]], k: int) -> int:
    """The seed of the ``k``-th sample for ``prompt``: a CRC-32 of both and ``seed``, so it depends on the prompt,
    not on where the row sits in a list."""
    return zlib.crc32(f"{seed}/{k}/{json.dumps(prompt, sort_keys=True)}".encode())


def reply_room(model: nn.Module, prompt: list[dict[str, str]]) -> int:
    """How many reply tokens fit in the context after ``prompt`` with the reply's closing ``<|end|>``: a longer
    reply could not be scored whole, so DPO could not train on its pair."""
    ids, _ = render_conversation(model.tokenizer, prompt, add_generation_prompt=True)
    return model.config.block_size - len(ids)


def fits(model: nn.Module, prompt: list[dict[str, str]], reply: str) -> bool:
    """Whether ``prompt`` + ``reply`` + ``<|end|>`` fit in the context (the reply's text re-encoded, as DPO will)."""
    conversation = [*prompt, {"role": "assistant", "content": reply}]
    return len(render_conversation(model.tokenizer, conversation)[0]) <= model.config.block_size + 1


def sample_replies(model: nn.Module, row: Any, *, samples: int = 4, seed: int = 0, max_new_tokens: int = 40,
                   temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> list[str]:
    """``samples`` replies of ``model`` to the row's prompt, each with its own seed (:func:`sample_seed`), each
    at most ``max_new_tokens`` long and short enough to fit in the context after the prompt (:func:`reply_room`)."""
    prompt = prompt_messages(row)
    room = min(max_new_tokens, reply_room(model, prompt))
    if room < 1:
        return []
    return [chat_reply(model, prompt, max_new_tokens=room, temperature=temperature, top_k=top_k,
                       top_p=top_p, seed=sample_seed(seed, prompt, k)) for k in range(samples)]


def build_pair(row: dict[str, Any], replies: Sequence[str],
               reward_fn: RewardFn = task_reward) -> tuple[dict[str, Any] | None, str]:
    """``(pair, "pair")`` for ``row`` from its sampled ``replies``; ``(None, "skipped")`` when every reply
    passes, ``(None, "no_chosen")`` when none passes and the reference answer fails too."""
    passes = [reward_fn(row, r) > 0 for r in replies]
    rejected = next((r for r, ok in zip(replies, passes) if not ok), None)
    if rejected is None:
        return None, "skipped"
    chosen, source = next((r for r, ok in zip(replies, passes) if ok), None), "sample"
    if chosen is None:
        chosen, source = row.get("answer"), "reference"
        if not isinstance(chosen, str) or not reward_fn(row, chosen) > 0:
            return None, "no_chosen"
    kept = {k: row[k] for k in KEPT_FIELDS if k in row}
    return {**kept, "messages": prompt_messages(row), "chosen": chosen, "rejected": rejected, "source": source}, "pair"


def _check_rows(rows: Sequence[dict[str, Any]]) -> None:
    if isinstance(rows, dict) or not rows:
        raise ValueError("rows must be a non-empty list of instruction rows: instruction_set('train')")
    held_out = sum(isinstance(r, dict) and r.get("split") == "validation" for r in rows)
    if held_out:
        raise ValueError(f"{held_out} of the rows are from the validation split: build pairs from "
                         "instruction_set('train') and keep the validation rows to evaluate on")


def preference_pairs(model: nn.Module, rows: Sequence[dict[str, Any]], *, samples: int = 4, seed: int = 0,
                     max_new_tokens: int = 40, temperature: float = 1.0, top_k: int | None = None,
                     top_p: float | None = None, reward_fn: RewardFn = task_reward,
                     progress: bool = False) -> PreferencePairs:
    """Preference pairs from ``model``'s own samples (see the module docstring); deterministic given ``seed``.

    ``rows``: training instruction rows (``instruction_set("train")``, a validation row is
    refused). ``reward_fn(row, reply)`` is the verifier (e.g. a ``guarded_reward``).
    Returns a :class:`PreferencePairs` list, one pair per row that has a failing sample.
    """
    _check_rows(rows)
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples must be an integer >= 1, got {samples!r}")
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    bar = None
    if progress:
        from ..progress import ProgressBar

        bar = ProgressBar(total=len(rows), desc="preference pairs", unit=" rows")
    pairs = PreferencePairs()
    for row in rows:
        replies = sample_replies(model, row, samples=samples, seed=seed, max_new_tokens=max_new_tokens,
                                 temperature=temperature, top_k=top_k, top_p=top_p)
        replies = [r for r in replies if fits(model, prompt_messages(row), r)]
        pair, outcome = build_pair(row, replies, reward_fn)
        if pair is not None and not fits(model, pair["messages"], pair["chosen"]):  # a reference answer too long
            pair, outcome = None, "no_chosen"
        if pair is not None:
            pairs.append(pair)
        elif outcome == "skipped":
            pairs.skipped += 1
        else:
            pairs.no_chosen += 1
        if bar is not None:
            bar.update()
    if bar is not None:
        bar.close(f"{len(pairs)} pairs from {len(rows)} rows ({pairs.skipped} skipped: every sample passed)")
    return pairs
