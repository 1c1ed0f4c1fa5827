"""A small verifiable arithmetic set from the Hugging Face Hub, and its reward (chapter 10, online section).

Chapter 10 ends by running GRPO on an open-weight instruct model (SmolLM2-135M-Instruct,
chapters 07 and 08's loading path) on arithmetic questions, the task reasoning-from-scratch
and nanochat use at a larger scale: the answer is a number, so a program checks it.

- :func:`hub_arithmetic` streams the first ``limit`` rows of a Hub dataset whose rows
  hold a chat prompt (a list of messages) and the answer (``Kyleyee/arithmetic-grpo``:
  ``"prompt"`` and ``"ground_truth"`` columns) and returns chapter 08's row format:
  ``{"messages": prompt, "answer": str, "task": "arithmetic"}``. Like
  ``hub_conversations`` it fails within seconds with a ConnectionError offline.
- the reward is :func:`~minigpt_helpers.align.rewards.arithmetic_reward` (rewards.py,
  with the other verifiers): the last number in the reply must equal the answer.
- :func:`arithmetic_rows` makes such rows locally ("What is 7 + 5?"): the offline
  stand-in the tests use, and a set you can make as large or hard as you like.
"""

from __future__ import annotations

import random
from typing import Any


def arithmetic_rows(n: int, seed: int = 0, max_operand: int = 20, ops: str = "+-*") -> list[dict[str, Any]]:
    """``n`` questions "What is a OP b?" with their answers, as chapter 08's rows; deterministic given ``seed``."""
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be an integer >= 1, got {n!r}")
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b, op = rng.randint(0, max_operand), rng.randint(0, max_operand), rng.choice(ops)
        answer = a + b if op == "+" else a - b if op == "-" else a * b
        rows.append({"messages": [{"role": "user", "content": f"What is {a} {op} {b}?"}], "answer": str(answer),
                     "task": "arithmetic"})
    return rows


def hub_arithmetic(repo: str = "Kyleyee/arithmetic-grpo", split: str = "train", limit: int = 200,
                   prompt_column: str = "prompt", answer_column: str = "ground_truth") -> list[dict[str, Any]]:
    """The first ``limit`` rows of a Hub arithmetic dataset, streamed, as ``{"messages", "answer", "task"}`` rows.

    ``prompt_column`` holds the chat prompt (a list of messages; a plain string becomes one
    user message), ``answer_column`` the answer. Raises ConnectionError within a few
    seconds when the Hub does not answer: use :func:`arithmetic_rows` offline. A dataset
    without those columns gives a ValueError naming its columns (pass ``prompt_column=...``
    and ``answer_column=...``).
    """
    from ..data.sources import hub_rows
    from ..finetune.chat import check_messages

    fix = "use arithmetic_rows(n) for a local set of the same form"
    rows = []
    for k, row in hub_rows(repo, split, limit, offline_fix=fix, columns=[prompt_column, answer_column],
                           column_fix="pass prompt_column=... and answer_column=..."):
        prompt = row[prompt_column]
        if isinstance(prompt, str):
            prompt = [{"role": "user", "content": prompt}]
        rows.append({"messages": check_messages(prompt, f"{repo}, row {k}"), "answer": str(row[answer_column]),
                     "task": "arithmetic"})
    return rows
