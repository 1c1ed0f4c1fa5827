"""Course-wide switches: quick mode, where artifacts live, and a fixed seed.

Quick mode is the one documented switch that shrinks data, steps and model
sizes so that CI (and an impatient learner) can run every chapter in minutes:

    MINIGPT_QUICK=1 jupyter lab          # or: make test, which sets it

Notebooks never read the environment themselves; they call :func:`is_quick`
or :func:`pick` so there is exactly one place that decides.
"""

from __future__ import annotations

import os
import platform
import random
import time
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
_STARTED = time.perf_counter()  # when this package was first imported: a chapter's first code cell

QUICK_ENV = "MINIGPT_QUICK"
ARTIFACTS_ENV = "MINIGPT_ARTIFACTS"
_TRUE = {"1", "true", "yes", "on"}


def is_quick() -> bool:
    """True when ``MINIGPT_QUICK`` is set to 1/true/yes/on (CI and `make test` set it)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in _TRUE


def pick(full: T, quick: T) -> T:
    """Return ``quick`` in quick mode and ``full`` otherwise.

    Example: ``steps = pick(full=2000, quick=30)``.
    """
    return quick if is_quick() else full


def repo_root() -> Path | None:
    """The course checkout this package lives in (editable install), or None."""
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() and (here / "notebooks").is_dir() else None


def artifacts_dir(*parts: str) -> Path:
    """Directory for things chapters hand to later chapters (tokenizers, checkpoints).

    ``$MINIGPT_ARTIFACTS`` if set, else ``<repo>/artifacts`` (or ``./artifacts``
    outside a checkout). Quick mode uses a separate ``quick/`` subfolder so that a
    CI run never overwrites (or is mistaken for) a learner's full-size results.
    The directory is created if needed.
    """
    env = os.environ.get(ARTIFACTS_ENV)
    root = Path(env) if env else (repo_root() or Path.cwd()) / "artifacts"
    if is_quick():
        root = root / "quick"
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def shown_path(path: str | Path) -> str:
    """``path`` as a learner should read it: relative to the course checkout when inside it.

    Messages and notebook outputs say ``artifacts/ch05/ckpt-0000100``, not the
    absolute path of one machine (which would also end up in committed notebooks).
    """
    root = repo_root()
    p = Path(path)
    if root is not None:
        try:
            return str(p.resolve().relative_to(root.resolve()))
        except ValueError:
            pass
    return str(p)


def set_seed(seed: int = 1337) -> None:
    """Seed Python, NumPy (if present) and torch so a chapter's numbers are repeatable."""
    random.seed(seed)
    try:
        import numpy as np

        np.random.seed(seed)
    except ImportError:  # pragma: no cover - numpy is a dependency, but stay importable
        pass
    import torch

    torch.manual_seed(seed)


def machine() -> str:
    """One line on the machine: CPU model and cores, accelerator, torch version."""
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    except OSError:
        pass
    if torch.cuda.is_available():
        accel = torch.cuda.get_device_name(0)
    elif getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        accel = "Apple MPS"
    else:
        accel = "no GPU"
    return f"{cpu}, {os.cpu_count()} cores, {accel}; torch {torch.__version__}, Python {platform.python_version()}"


def run_summary() -> str:
    """What a chapter's last cell prints: the machine, the mode and the time since the chapter started.

    "Started" is the first import of ``minigpt_helpers`` in this kernel, i.e. the
    chapter's first code cell, so a top-to-bottom run reports its whole run time.
    """
    seconds = time.perf_counter() - _STARTED
    mode = "quick mode" if is_quick() else "full size"
    return f"ran on: {machine()}\nthis chapter, top to bottom ({mode}): {seconds / 60:.1f} min ({seconds:.0f} s)"
