"""Checkpoints that survive a kill at any moment and never run code when loaded.

Layout of a training output folder::

    out/
      latest                  text file: the name of the newest complete checkpoint
      ckpt-0000500/
        model.safetensors     weights        (GPT.save: safetensors, no pickle)
        config.json           GPTConfig      (GPT.save)
        tokenizer/            the tokenizer  (GPT.save)
        optimizer.safetensors AdamW moments  (tensors only)
        trainer.json          step, time, data position, TrainConfig, history,
                              and the optimizer's hyper-parameters

**No random-number-generator state.** Training re-seeds torch at every step from
(seed, rank, step) (``distributed.step_seed``), so a resume is exact without it.
A checkpoint written with an ``rng.safetensors`` and an ``"rng"`` entry in
``trainer.json`` still loads: those are ignored.

**Atomic.** A checkpoint is written into a hidden temporary folder, flushed to
disk, renamed into place, and only then does ``latest`` (rewritten through a
temporary file + ``os.replace``) point at it. A crash at any moment leaves
either the old ``latest`` (pointing at a complete checkpoint) or the new one.
Older checkpoints are deleted only after that, keeping ``keep`` of them.

**Safe.** Only safetensors and JSON are read back: loading a checkpoint from a
stranger cannot execute anything (``torch.load`` of a pickle could).

**Checked.** A checkpoint that was cut short (a copy interrupted, a full disk) or
whose ``config.json`` does not match its weights fails on loading with a
ValueError that names the folder and the fix (delete it: the previous one is then
used), not with a raw safetensors or ``load_state_dict`` error.

**Portable.** Text is written as UTF-8 whatever the platform's locale, and files
are flushed through descriptors opened for writing (Windows refuses ``fsync`` on
a read-only one).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

LATEST = "latest"
PREFIX = "ckpt-"
TRAINER_FILE = "trainer.json"
OPTIM_FILE = "optimizer.safetensors"


# ------------------------------------------------------------------------------ optimizer
def optimizer_to_safetensors(sd: dict) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors and a JSON-able remainder."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for key, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{idx}.{key}"] = value.detach().contiguous().cpu()
            else:
                scalars.setdefault(str(idx), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_from_safetensors(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict:
    """Inverse of :func:`optimizer_to_safetensors`: a dict for ``optimizer.load_state_dict``."""
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        idx, key = name.split(".", 1)
        state.setdefault(int(idx), {})[key] = t
    for idx, st in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(st)
    groups = [dict(g, betas=tuple(g["betas"])) if "betas" in g else dict(g) for g in meta["param_groups"]]
    return {"state": state, "param_groups": groups}


# ------------------------------------------------------------------------------ finding checkpoints
def _complete(d: Path) -> bool:
    return (d / "model.safetensors").is_file() and (d / "config.json").is_file()


def find_checkpoint(path: str | Path) -> Path | None:
    """The checkpoint folder ``path`` refers to, or None if there is none.

    ``path`` may be a checkpoint folder itself, or a training output folder
    (then ``latest`` is followed; without it, the newest complete ``ckpt-*``).
    """
    path = Path(path)
    if _complete(path):
        return path
    latest = path / LATEST
    if latest.is_file():
        target = path / latest.read_text(encoding="utf-8", errors="replace").strip()
        if _complete(target):
            return target
    found = sorted(d for d in path.glob(PREFIX + "*") if d.is_dir() and _complete(d))
    return found[-1] if found else None


def load_checkpoint(path: str | Path, device: str | torch.device | None = None):
    """A ready :class:`GPT` from a checkpoint (or a training output folder), tokenizer attached.

    Weights, config and tokenizer only; training state is read by
    :func:`load_training_state`. ``device=None`` picks the best available one.
    """
    from ..model.gpt import GPT
    from .device import default_device

    if Path(path).is_file():
        raise NotADirectoryError(f"{path} is a file: pass the checkpoint folder that holds it, "
                                 f"e.g. {Path(path).parent}")
    ckpt = find_checkpoint(path)
    if ckpt is None:
        raise FileNotFoundError(
            f"no checkpoint in {path}: expected model.safetensors + config.json there, or a folder written "
            "by train(..., out_dir=...) / `python -m minigpt_helpers train --out DIR`"
        )
    model = GPT.load(ckpt, device=default_device(device))  # checks the files: clear errors if damaged
    model.eval()
    return model


def read_trainer_state(ckpt: str | Path) -> dict[str, Any]:
    """The contents of ``ckpt/trainer.json``; a ValueError naming the fix if it is damaged."""
    from ..model.gpt import damaged_checkpoint_fix

    file = Path(ckpt) / TRAINER_FILE
    try:
        state = json.loads(file.read_text(encoding="utf-8"))
    except ValueError as e:  # invalid JSON, or bytes that are not UTF-8
        raise ValueError(f"{file} is damaged ({e}); {damaged_checkpoint_fix(ckpt)}") from None
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise ValueError(f"{file} is not a training state (no step count); {damaged_checkpoint_fix(ckpt)}")
    return state


def load_training_state(path: str | Path) -> tuple[Path, dict[str, Any], dict] | None:
    """(folder, trainer.json contents, optimizer state_dict) of the newest checkpoint, or None.

    None when there is no checkpoint, or it holds a model but no training state
    (saved by ``GPT.save``). Every file is checked first, the weights against the
    config included: a damaged checkpoint raises a ValueError naming the fix. Files
    this version does not read (an ``rng.safetensors`` of an older version) are ignored.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from ..model.gpt import GPT, damaged_checkpoint_fix

    ckpt = find_checkpoint(path)
    if ckpt is None or not (ckpt / TRAINER_FILE).is_file():
        return None
    GPT.check_saved(ckpt)  # model.safetensors intact and matching config.json (the caller loads it)
    trainer = read_trainer_state(ckpt)
    fix = damaged_checkpoint_fix(ckpt)
    if not (ckpt / OPTIM_FILE).is_file():
        raise ValueError(f"{ckpt} has no {OPTIM_FILE}, so training cannot continue from it; {fix}")
    if not isinstance(trainer.get("optimizer"), dict):
        raise ValueError(f"{ckpt / TRAINER_FILE} lacks the optimizer state; {fix}")
    try:
        optim = optimizer_from_safetensors(load_file(str(ckpt / OPTIM_FILE)), trainer["optimizer"])
    except SafetensorError as e:
        raise ValueError(f"{ckpt / OPTIM_FILE} is damaged ({e}); {fix}") from None
    return ckpt, trainer, optim


# ------------------------------------------------------------------------------ saving
def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows cannot open folders
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _fsync_file(path: Path) -> None:
    """Flush a written file to disk. Windows' fsync needs a descriptor open for writing (EBADF otherwise)."""
    fd = os.open(path, os.O_RDWR | getattr(os, "O_BINARY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def save_checkpoint(out_dir: str | Path, model, *, step: int, optimizer: torch.optim.Optimizer | None = None,
                    trainer: dict[str, Any] | None = None, keep: int = 2) -> Path:
    """Write ``out_dir/ckpt-<step>/`` atomically and point ``out_dir/latest`` at it.

    ``model`` is a GPT (unwrapped: not DDP / compiled); ``trainer`` is the JSON-able
    training state (step, position, config, history...). Returns the checkpoint folder.
    """
    from safetensors.torch import save_file

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    name = f"{PREFIX}{step:07d}"
    final = out_dir / name
    tmp = out_dir / f".tmp-{name}-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save(tmp)  # model.safetensors + config.json + tokenizer/
    trainer = dict(trainer or {}, step=step)
    if optimizer is not None:
        tensors, meta = optimizer_to_safetensors(optimizer.state_dict())
        save_file(tensors, str(tmp / OPTIM_FILE))
        trainer["optimizer"] = meta
    (tmp / TRAINER_FILE).write_text(json.dumps(trainer), encoding="utf-8")
    for f in tmp.rglob("*"):  # flush every file before the rename makes the folder visible
        if f.is_file():
            _fsync_file(f)
    if final.exists():  # re-saving the same step (e.g. after a resume): move the old one aside first
        trash = out_dir / f".old-{name}-{os.getpid()}"
        os.replace(final, trash)
        os.replace(tmp, final)
        shutil.rmtree(trash, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_dir(out_dir)
    _write_text_atomic(out_dir / LATEST, name + "\n")
    old = sorted(d for d in out_dir.glob(PREFIX + "*") if d.is_dir() and d.name != name)
    for d in old[: max(0, len(old) - (keep - 1))]:
        shutil.rmtree(d, ignore_errors=True)
    for d in out_dir.glob(".tmp-*"):  # leftovers of a save that was killed half-way
        if d.is_dir():
            shutil.rmtree(d, ignore_errors=True)
    return final
