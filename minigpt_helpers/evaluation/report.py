"""A model's report card: validation bits per byte, task accuracies, and what it cost.

:func:`report_card` measures, :func:`format_report` prints it, and the CLI's ``eval``
command does both and writes the card as ``eval.json`` beside the checkpoint:

    python -m minigpt_helpers eval --checkpoint runs/shk

Each task's accuracy comes with its 95 % interval and its chance level: a model at 27 %
on a 4-way task whose interval is 23-31 % has learned nothing anyone can see.
Bits per byte is the loss that compares across tokenizers (training/metrics.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from ..data.batching import val_windows
from ..data.sources import stream_documents
from ..training.loop import evaluate
from .choices import evaluate_choices, items_within_window
from .tasks import NEXT_LINE_TASK, hellaswag_items, shakespeare_next_line

TASKS: dict[str, Callable[[int | None], list[dict] | None]] = {
    NEXT_LINE_TASK: lambda n: shakespeare_next_line(n or 600),
    "hellaswag": hellaswag_items,  # online only: None offline (it says so)
}
REPORT_FILE = "eval.json"


def check_tasks(tasks: Sequence[str]) -> None:
    """A ValueError naming the known tasks if ``tasks`` asks for another."""
    unknown = [t for t in tasks if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown task {', '.join(map(repr, unknown))}: choose from {', '.join(TASKS)}")


def validation_bpb(model: torch.nn.Module, data: str, *, windows: int = 200, batch_size: int = 16) -> float | None:
    """Bits per byte on the first ``windows`` windows of ``data``'s validation split (None if it is too short)."""
    tok, device = model.tokenizer, next(model.parameters()).device
    val = val_windows(stream_documents(data, "validation", verbose=False), tok, model.config.block_size, windows)
    return None if val is None else evaluate(model, val, batch_size, device, unit="bpb", tokenizer=tok)


def task_scores(model: torch.nn.Module, task: str, *, limit: int | None = None) -> dict[str, Any]:
    """``{acc, acc_ci, acc_norm, acc_norm_ci, n, chance, left_out}`` on ``task``, or ``{"skipped": why}``.

    Items with a choice longer than the model's window are left out (``left_out`` counts them).
    """
    items = TASKS[task](limit)
    if items is None:
        return {"skipped": "offline: the Hub cannot be reached"}
    items = items[:limit] if limit else items
    fitting = items_within_window(model, items)
    if not fitting:
        return {"skipped": f"no item's choices fit the model's {model.config.block_size}-token window"}
    r = evaluate_choices(model, fitting)
    return {**{k: r[k] for k in ("acc", "acc_ci", "acc_norm", "acc_norm_ci", "n", "chance")},
            "left_out": len(items) - len(fitting)}


def report_card(model: torch.nn.Module, *, data: str = "shakespeare", tasks: Sequence[str] = (NEXT_LINE_TASK,),
                limit: int | None = None, trainer: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything :func:`format_report` prints, as a JSON-ready dict.

    ``data``: the source whose validation split gives bits per byte (the one the model was
    trained on, for a fair number). ``trainer``: the checkpoint's ``trainer.json``, for the
    training tokens and time (absent: reported as unknown). ``limit``: the first items of each task.
    """
    check_tasks(tasks)
    trainer = trainer or {}
    return {
        "parameters": sum(p.numel() for p in {id(p): p for p in model.parameters()}.values()),
        "training_tokens": trainer.get("tokens"),
        "training_seconds": trainer.get("train_time"),
        "steps": trainer.get("step"),
        "data": data,
        "val_bpb": validation_bpb(model, data),
        "tasks": {t: task_scores(model, t, limit=limit) for t in tasks},
    }


def _task_line(name: str, r: dict[str, Any]) -> str:
    if "skipped" in r:
        return f"  {name:<24} skipped ({r['skipped']})"
    lo, hi = r["acc_ci"]
    left_out = f" ({r['left_out']} left out: a choice longer than the window)" if r.get("left_out") else ""
    return (f"  {name:<24} acc {r['acc']:.1%} (95% {lo:.1%}-{hi:.1%})  acc_norm {r['acc_norm']:.1%}  "
            f"chance {r['chance']:.1%}  n={r['n']}{left_out}")


def format_report(card: dict[str, Any]) -> str:
    """The report card as a few aligned lines of text."""
    def known(v: Any, fmt: str) -> str:
        return "unknown" if v is None else format(v, fmt)

    bpb = card["val_bpb"]
    lines = [f"  parameters               {card['parameters']:,}",
             f"  training                 {known(card['training_tokens'], ',')} tokens, "
             f"{known(card['training_seconds'], '.0f')} s, {known(card['steps'], ',')} steps",
             f"  validation ({card['data']})".ljust(27) + (f"{bpb:.3f} bits per byte" if bpb is not None else "too short"),
             *(_task_line(n, r) for n, r in card["tasks"].items())]
    return "\n".join(lines)


def save_report(card: dict[str, Any], folder: str | Path) -> Path:
    """Writes ``folder/eval.json`` (intervals as two-element lists) and returns its path."""
    Path(folder).mkdir(parents=True, exist_ok=True)
    path = Path(folder) / REPORT_FILE
    path.write_text(json.dumps(card, indent=1) + "\n", encoding="utf-8")
    return path
