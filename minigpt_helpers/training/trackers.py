"""Experiment trackers for ``train()``: TensorBoard, Trackio or Weights & Biases, through accelerate.

``TrainConfig(log_with="tensorboard")`` (or ``"trackio"``, ``"wandb"``, or a list of
them) makes rank 0 log, as nanoGPT's ``wandb_log`` does:

* once, the hyperparameters: the TrainConfig and the model's GPTConfig as one flat
  dict (``train/lr``, ``model/n_layer``, ...);
* after every step, ``train/loss``, ``train/lr`` and ``train/tokens_per_s``, and the
  numbers of the model's own ``step_metrics()`` if it has one (``train/reward``,
  ``train/kl``, ... for GRPO; ``train/margin``, ... for DPO);
* at every evaluation, ``val/loss`` (step 0 included: the untrained model's loss).

The trackers are accelerate's own classes (``accelerate.tracking``), started here
without an ``Accelerator``: ``TensorBoardTracker`` writes event files to
``out_dir/runs/<run_name>`` (``artifacts/runs/<run_name>`` without an ``out_dir``),
so ``tensorboard --logdir out_dir/runs`` shows the curves, live or after the run;
``WandBTracker`` and ``TrackioTracker`` log to the ``project`` under ``run_name``.
:class:`Trackers` is a context manager, so they are finished when training ends,
also on a stop (Ctrl-C, SIGTERM, a callback) or an error.

A tracker whose package is missing is refused when :class:`Trackers` is made, at the
start of ``train()`` (and by the CLI before anything else), naming the ``pip install``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

from accelerate.utils import is_tensorboard_available, is_trackio_available, is_wandb_available

from ..config import artifacts_dir
from .config import TrainConfig

LOG_FOLDER = "runs"  # out_dir/runs/<run_name>: TensorBoard's (and wandb's local) files

# Whether each tracker's package is installed (accelerate's own checks).
INSTALLED: dict[str, Callable[[], bool]] = {
    "tensorboard": is_tensorboard_available,
    "trackio": is_trackio_available,
    "wandb": is_wandb_available,
}


def tracker_names(log_with: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """``TrainConfig.log_with`` as a list of names, each once, in the order given."""
    if log_with is None:
        return []
    return list(dict.fromkeys([log_with] if isinstance(log_with, str) else log_with))


def require_trackers(log_with: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The tracker names of ``log_with``; a ``ModuleNotFoundError`` naming the ``pip install`` if one is missing."""
    names = tracker_names(log_with)
    missing = [name for name in names if not INSTALLED[name]()]
    if missing:
        raise ModuleNotFoundError(f"log_with={log_with!r} needs {' and '.join(missing)}, which "
                                  f"{'is' if len(missing) == 1 else 'are'} not installed: "
                                  f"pip install {' '.join(missing)}")
    return names


def log_dir(out_dir: str | Path | None) -> Path:
    """Where the trackers write: ``out_dir/runs``, or ``artifacts/runs`` without an ``out_dir``."""
    if out_dir is None:
        return artifacts_dir(LOG_FOLDER)
    path = Path(out_dir) / LOG_FOLDER
    path.mkdir(parents=True, exist_ok=True)
    return path


def run_name(cfg: TrainConfig, out_dir: str | Path | None) -> str:
    """``cfg.run_name``, else the ``out_dir``'s folder name (a resumed run continues its curves), else the time."""
    if cfg.run_name:
        return cfg.run_name
    if out_dir is not None and Path(out_dir).resolve().name:
        return Path(out_dir).resolve().name
    return time.strftime("run-%Y%m%d-%H%M%S")


def hyperparameters(cfg: TrainConfig, model_config: Any) -> dict[str, bool | int | float | str | None]:
    """The TrainConfig and the model's config as one flat dict, ``train/<field>`` and ``model/<field>``.

    Values are what every tracker stores as a hyperparameter (bool, int, float, str or
    None); anything else (a list of trackers) is written as its text.
    """
    model = asdict(model_config) if is_dataclass(model_config) else dict(vars(model_config))
    flat = {**{f"train/{k}": v for k, v in cfg.to_dict().items()}, **{f"model/{k}": v for k, v in model.items()}}
    return {k: v if v is None or isinstance(v, (bool, int, float, str)) else str(v) for k, v in flat.items()}


def make_tracker(name: str, project: str, run: str, folder: Path):
    """One of accelerate's tracker classes, not started: TensorBoard in ``folder/run``, the others under ``project``."""
    from accelerate.tracking import TensorBoardTracker, TrackioTracker, WandBTracker

    if name == "tensorboard":
        return TensorBoardTracker(run, folder)
    if name == "wandb":
        return WandBTracker(project, name=run, dir=str(folder))
    if name == "trackio":
        return TrackioTracker(project, name=run)
    raise ValueError(f"unknown tracker {name!r}: choose among {sorted(INSTALLED)}")


class Trackers:
    """``train()``'s experiment trackers: checked when made, started by :meth:`start` on rank 0, finished on exit.

    ``with Trackers(cfg, model.config, out_dir) as trackers: trackers.start(main); ...
    trackers.log({"train/loss": loss}, step)``. With ``cfg.log_with=None`` every call
    does nothing. Leaving the ``with`` block (normally, on a stop or on an error)
    finishes every tracker that started, so event files are flushed and runs closed.
    """

    def __init__(self, cfg: TrainConfig, model_config: Any, out_dir: str | Path | None) -> None:
        self.names = require_trackers(cfg.log_with)  # on every rank: a missing package fails before training
        self.cfg, self.model_config, self.out_dir = cfg, model_config, out_dir
        self.folder: Path | None = None  # where they write, once started
        self.started: list[Any] = []
        self._finish = contextlib.ExitStack()  # each started tracker's finish(), all called even if one fails

    def __enter__(self) -> Trackers:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def start(self, main: bool) -> None:
        """Rank 0 (``main``) starts each tracker and logs the hyperparameters once; other ranks do nothing."""
        if not (main and self.names):
            return
        from accelerate import PartialState
        from accelerate.tracking import filter_trackers

        PartialState()  # accelerate's trackers log through its logger, which needs it (already set up when launched)
        self.folder = log_dir(self.out_dir)
        run = run_name(self.cfg, self.out_dir)
        for kind in filter_trackers(self.names, self.folder):
            tracker = make_tracker(str(kind), self.cfg.project, run, self.folder)
            tracker.start()
            self._finish.callback(tracker.finish)
            self.started.append(tracker)
        values = hyperparameters(self.cfg, self.model_config)
        for tracker in self.started:
            tracker.store_init_configuration(values)

    def log(self, values: dict[str, float], step: int) -> None:
        """Logs ``values`` at ``step`` to every started tracker."""
        for tracker in self.started:
            tracker.log(values, step=step)

    def close(self) -> None:
        """Finishes every started tracker (TensorBoard: flush and close the event files); idempotent."""
        self.started = []
        self._finish.close()
