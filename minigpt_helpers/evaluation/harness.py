"""A saved course model under lm-evaluation-harness, the tool researchers report numbers with.

``save_hf`` (interop wing) writes a folder that ``transformers`` loads with no custom code;
this module points ``lm_eval`` at it and at the course's own task folder:

    python -m lm_eval --model hf --model_args pretrained=FOLDER,dtype=float32 \\
        --tasks shakespeare-next-line --include_path "$(python -c 'import minigpt_helpers as m; print(m.LM_EVAL_TASKS)')"

:func:`run_lm_eval` does the same from Python and returns, per task, the accuracy and the
answer picked on every item, so a notebook or a test can put them beside
:func:`~minigpt_helpers.evaluation.choices.evaluate_choices`'s, item by item.

Why the two agree: both tokenize context + choice as one string and score the tokens
after the context's own ones, both cut an over-long input on the left, and both pick the
choice with the largest summed log-likelihood (``acc``). ``acc_norm`` differs by design:
lm_eval divides by the choice's characters, the course by its UTF-8 bytes (the same on
ASCII text).
"""

from __future__ import annotations

import contextlib
import io
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

LM_EVAL_TASKS = Path(__file__).with_name("lm_eval_tasks")  # --include_path for the course's tasks
LM_EVAL_HINT = 'pip install "lm-eval>=0.4.5" (or pip install -e ".[course]")'


def require_lm_eval() -> None:
    """A ModuleNotFoundError that names the install command when lm-evaluation-harness is missing."""
    try:
        import lm_eval  # noqa: F401
    except ImportError as e:
        raise ModuleNotFoundError(f"lm-evaluation-harness is not installed: {LM_EVAL_HINT}") from e


def _picks(samples: Sequence[dict[str, Any]]) -> tuple[list[int], list[int]]:
    """The answer lm_eval picked on each item (by ``doc_id``): by summed log-likelihood, and per character."""
    ordered = sorted(samples, key=lambda s: s["doc_id"])
    acc, norm = [], []
    for s in ordered:
        logliks = [float(r[0]) for r in s["filtered_resps"]]
        lengths = [len(c) for c in s["doc"]["choices"]]
        acc.append(max(range(len(logliks)), key=logliks.__getitem__))
        norm.append(max(range(len(logliks)), key=lambda i: logliks[i] / lengths[i]))
    return acc, norm


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """lm_eval's and transformers' progress bars and per-item warnings hidden; put back after."""
    import transformers

    logger = logging.getLogger("lm_eval")
    level, verbosity = logger.level, transformers.logging.get_verbosity()
    logger.setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with contextlib.redirect_stderr(io.StringIO()):  # tqdm bars write to stderr
            yield
    finally:
        logger.setLevel(level)
        transformers.logging.set_verbosity(verbosity)
        transformers.logging.enable_progress_bar()


def run_lm_eval(folder: str | Path, tasks: Sequence[str] = ("shakespeare-next-line",), *,
                limit: int | None = None, batch_size: int = 16, device: str = "cpu",
                quiet: bool = True) -> dict[str, dict[str, Any]]:
    """``lm_eval.simple_evaluate`` on a ``save_hf`` folder: ``{task: {acc, acc_norm, n, predictions,
    norm_predictions}}``.

    ``limit`` keeps the first items of each task (lm_eval's ``--limit``). The model runs in
    float32, so its numbers are the course model's up to floating-point summation order.
    ``quiet`` hides lm_eval's progress bars and its warning for every item whose context
    it cuts (errors still show).
    """
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: write the model with m.save_hf(model, folder) first")
    require_lm_eval()
    from lm_eval import simple_evaluate
    from lm_eval.tasks import TaskManager

    with _quiet() if quiet else contextlib.nullcontext():
        out = simple_evaluate(model="hf", model_args=f"pretrained={folder},dtype=float32", tasks=list(tasks),
                              task_manager=TaskManager(include_path=str(LM_EVAL_TASKS)), limit=limit,
                              batch_size=batch_size, device=device, log_samples=True, verbosity="ERROR")
    report = {}
    for task in tasks:
        metrics, samples = out["results"][task], out["samples"][task]
        acc, norm = _picks(samples)
        report[task] = {"acc": metrics["acc,none"], "acc_norm": metrics["acc_norm,none"], "n": len(samples),
                        "predictions": acc, "norm_predictions": norm}
    return report
