"""LoRA from scratch: finetune a big matrix through a small low-rank update (chapter 08).

A frozen ``nn.Linear`` computes ``W x`` with ``W`` of shape (out, in). LoRA adds a
trainable update of rank ``r``::

    y = W x + (alpha / r) * B (A x)        A: (r, in), B: (out, r), r << min(in, out)

* **B starts at zero**, so at step 0 the model computes exactly what it did before;
  **A starts Kaiming-uniform** (``a = sqrt(5)``, the default of ``nn.Linear``, as in
  Microsoft's loralib and ``peft``), so the gradient reaching B is not zero either.
* Only A and B train: ``r * (in + out)`` numbers per layer instead of ``in * out``,
  and AdamW keeps two moments for each, so the optimizer state shrinks in proportion
  (:func:`count_parameters`, :func:`adamw_state_bytes`).
* ``alpha / r`` keeps the size of the update roughly independent of the rank chosen,
  so a learning rate tuned at one rank still works at another.
* The defaults, rank 4 on every projection of every block (``alpha = 2r``), train
  about 3 % of chapter 05's model (peft's default rank is 8; the original paper
  adapted only the attention's query and value matrices).
* **Merge** for inference: ``W' = W + (alpha/r) B A`` costs nothing extra per token.
  **Unmerge** gives back the very same ``W`` bit for bit: the original is kept while
  merged (subtracting the update again would leave rounding errors of ~1e-7).

:class:`LoRAModel` wraps a GPT for :func:`~minigpt_helpers.training.train`: its
checkpoints hold the base model's files unchanged (``model.safetensors`` +
``config.json``: any GPT loader reads them) plus ``adapter.safetensors`` and
``adapter.json``, and resume exactly. ``tests/test_lora.py`` checks the layer
against ``peft`` on the model exported with ``to_hf()``: same A and B, same logits,
and the same merged weights as ``merge_and_unload``.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

#: The projections of a GPT block: attention (c_attn, c_proj) and MLP (c_fc, c_proj).
DEFAULT_TARGETS = ("c_attn", "c_proj", "c_fc")
ADAPTER_FILE = "adapter.safetensors"
ADAPTER_CONFIG = "adapter.json"


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) * B(A(dropout(x)))`` around a frozen ``nn.Linear`` (see the module docstring)."""

    def __init__(self, base: nn.Linear, r: int = 4, alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        if not isinstance(base, nn.Linear):
            raise TypeError(f"LoRALinear wraps an nn.Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, int) or r < 1:
            raise ValueError(f"the LoRA rank r must be an integer >= 1 (e.g. 8), got {r!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
            raise ValueError(f"the LoRA alpha must be a number > 0 (e.g. 2 * r), got {alpha!r}")
        if not isinstance(dropout, (int, float)) or not 0.0 <= dropout < 1.0:
            raise ValueError(f"the LoRA dropout must be in [0, 1), got {dropout!r}")
        self.base = base
        self.r, self.alpha, self.scaling = r, float(alpha), float(alpha) / r
        w = base.weight
        self.lora_A = nn.Parameter(torch.empty(r, base.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(base.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))  # as nn.Linear's own init, loralib and peft
        self.dropout = nn.Dropout(dropout) if dropout else nn.Identity()
        self._unmerged: torch.Tensor | None = None  # the base weight, kept while merged

    @property
    def merged(self) -> bool:
        return self._unmerged is not None

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) * B @ A``, shaped like the base weight (out, in)."""
        return (self.lora_B @ self.lora_A) * self.scaling

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.merged:  # the update is inside the weight already
            return out
        return out + F.linear(F.linear(self.dropout(x), self.lora_A), self.lora_B) * self.scaling

    @torch.no_grad()
    def merge(self) -> None:
        """Fold the update into the base weight (for inference: one matmul per layer again)."""
        if self.merged:
            return
        self._unmerged = self.base.weight.detach().clone()
        self.base.weight.add_(self.delta_weight().to(self.base.weight.dtype))

    @torch.no_grad()
    def unmerge(self) -> None:
        """Give the base weight back exactly as it was before :meth:`merge`."""
        if self._unmerged is None:
            return
        self.base.weight.copy_(self._unmerged)
        self._unmerged = None

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


def _set_module(root: nn.Module, name: str, module: nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, child, module)


def lora_layers(model: nn.Module) -> dict[str, LoRALinear]:
    """Every LoRA layer of ``model``, by module name."""
    return {n: m for n, m in model.named_modules() if isinstance(m, LoRALinear)}


def add_lora(model: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS, r: int = 4, alpha: float = 8.0,
             dropout: float = 0.0, *, freeze: bool = True) -> list[str]:
    """Wrap every ``nn.Linear`` of ``model`` named by ``targets`` in a :class:`LoRALinear`; return their names.

    A target matches a module's full name or its last part (``"c_attn"`` matches
    ``transformer.h.0.attn.c_attn``). ``freeze=True`` freezes every parameter of the
    model first, so that only the new A and B matrices train. The weights are not
    copied: the LoRA layers hold the model's own Linear modules.
    """
    targets = tuple(targets)
    if isinstance(targets, str) or not targets:
        raise ValueError(f"targets must be a non-empty list of layer names, e.g. {list(DEFAULT_TARGETS)}")
    if lora_layers(model):
        raise ValueError("this model has LoRA layers already: add them once (merge_lora / remove_lora to undo)")
    names = [n for n, m in model.named_modules()
             if isinstance(m, nn.Linear) and (n in targets or n.rpartition(".")[2] in targets)]
    if not names:
        linear = sorted({n.rpartition(".")[2] for n, m in model.named_modules() if isinstance(m, nn.Linear)})
        raise ValueError(f"no nn.Linear layer matches targets {list(targets)}; this model's Linear layers "
                         f"are named {linear}")
    if freeze:
        for p in model.parameters():
            p.requires_grad_(False)
    for n in names:
        _set_module(model, n, LoRALinear(model.get_submodule(n), r=r, alpha=alpha, dropout=dropout))
    return names


def merge_lora(model: nn.Module) -> None:
    """Merge every LoRA layer (see :meth:`LoRALinear.merge`)."""
    for m in lora_layers(model).values():
        m.merge()


def unmerge_lora(model: nn.Module) -> None:
    """Unmerge every LoRA layer: the base weights come back bit for bit."""
    for m in lora_layers(model).values():
        m.unmerge()


def remove_lora(model: nn.Module, merge: bool = True) -> nn.Module:
    """Put plain ``nn.Linear`` layers back (with the update merged in if ``merge``): peft's ``merge_and_unload``."""
    for name, m in lora_layers(model).items():
        m.merge() if merge else m.unmerge()
        m._unmerged = None  # the merged weight is now the layer's own
        _set_module(model, name, m.base)
    return model


@contextlib.contextmanager
def without_lora(model: nn.Module) -> Iterator[nn.Module]:
    """Inside the block, ``model`` is its plain self: LoRA layers swapped for their base Linear, unmerged.

    Its ``state_dict()``, ``save()`` and ``load_state_dict()`` then see exactly the
    base model's tensors (the same Parameter objects), which is how a LoRA
    checkpoint stays readable by every GPT loader.
    """
    layers = lora_layers(model)
    was_merged = {n for n, m in layers.items() if m.merged}
    for name, m in layers.items():
        m.unmerge()
        _set_module(model, name, m.base)
    try:
        yield model
    finally:
        for name, m in layers.items():
            _set_module(model, name, m)
            if name in was_merged:
                m.merge()


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The A and B matrices only: ``{"<layer>.lora_A": ..., "<layer>.lora_B": ...}``."""
    return {f"{n}.{k}": getattr(m, k).detach() for n, m in lora_layers(model).items() for k in ("lora_A", "lora_B")}


@torch.no_grad()
def load_lora_state_dict(model: nn.Module, tensors: dict[str, torch.Tensor], where: str = "the adapter") -> None:
    """Copy A and B matrices saved by :func:`lora_state_dict` into ``model``'s LoRA layers (names must match)."""
    ours = lora_state_dict(model)
    if set(ours) != set(tensors):
        missing, extra = sorted(set(ours) - set(tensors)), sorted(set(tensors) - set(ours))
        raise ValueError(f"{where} does not fit this model's LoRA layers (missing {missing[:3]}, "
                         f"unexpected {extra[:3]}): it was saved with other targets; use the same targets")
    layers = lora_layers(model)
    for key, value in tensors.items():
        name, _, kind = key.rpartition(".")
        param = getattr(layers[name], kind)
        if param.shape != value.shape:
            raise ValueError(f"{where}: {key} has shape {list(value.shape)}, the model's {list(param.shape)} "
                             "(another rank r?)")
        param.copy_(value)


# ------------------------------------------------------------------------------ accounting
def _unique_params(model: nn.Module) -> list[nn.Parameter]:
    return list({id(p): p for p in model.parameters()}.values())  # a tied weight once


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) numbers of parameters, a tied weight counted once."""
    params = _unique_params(model)
    return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)


def adamw_state_bytes(model: nn.Module) -> int:
    """Bytes AdamW will keep for ``model``: two moments (exp_avg, exp_avg_sq) per trainable number.

    (Plus one step counter per tensor, a few bytes each, left out.) For fp32
    weights that is 8 bytes per trainable parameter: often more than the weights.
    """
    return sum(2 * p.numel() * p.element_size() for p in _unique_params(model) if p.requires_grad)


def optimizer_state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes an optimizer actually holds in its state tensors (measure after at least one step)."""
    return sum(v.numel() * v.element_size() for st in optimizer.state.values() for v in st.values()
               if torch.is_tensor(v))


# ------------------------------------------------------------------------------ a GPT with adapters, for train()
def wrapped_tokenizer(attr: str) -> property:
    """A ``tokenizer`` property for a wrapper module: reads and sets the tokenizer of ``self.<attr>``.

    A wrapper (``LoRAModel``, ``GPTClassifier``) has no tokenizer of its own; the
    wrapped GPT carries it into checkpoints, so both must see the same one.
    """
    return property(lambda self: getattr(self, attr).tokenizer,
                    lambda self, value: setattr(getattr(self, attr), "tokenizer", value))


class LoRAModel(nn.Module):
    """A model (a GPT) with LoRA adapters that :func:`train` can train, checkpoint and resume.

    Calls go to the wrapped ``model`` (forward, ``config``, ``tokenizer``,
    ``new_kv_cache``... so ``generate`` works on it), like peft's ``PeftModel``.
    Only A and B train (``add_lora(..., freeze=True)``).
    """

    def __init__(self, model: nn.Module, targets: Iterable[str] = DEFAULT_TARGETS, r: int = 4,
                 alpha: float = 8.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.model = model
        self.layers = add_lora(model, targets, r=r, alpha=alpha, dropout=dropout)
        self.lora_config = {"targets": list(targets), "r": r, "alpha": float(alpha), "dropout": float(dropout)}

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(super().__getattr__("model"), name)

    tokenizer = wrapped_tokenizer("model")

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def merge(self) -> None:
        merge_lora(self.model)

    def unmerge(self) -> None:
        unmerge_lora(self.model)

    def merge_and_unload(self) -> nn.Module:
        """The wrapped model with every update merged in and plain Linear layers (this wrapper is then empty)."""
        return remove_lora(self.model, merge=True)

    # -- checkpoints: the base model's files + the adapter -------------------------------
    def save(self, directory: str | Path) -> Path:
        """The base model's own files (unmerged weights) + ``adapter.safetensors`` + ``adapter.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        with without_lora(self.model):
            self.model.save(directory)
        save_file({k: v.contiguous() for k, v in lora_state_dict(self.model).items()}, str(directory / ADAPTER_FILE))
        (directory / ADAPTER_CONFIG).write_text(json.dumps(self.lora_config) + "\n", encoding="utf-8")
        return directory

    def load_weights(self, directory: str | Path) -> None:
        """Read a folder written by :meth:`save` into this model (what ``train(resume=True)`` calls)."""
        from safetensors.torch import load_file, load_model

        directory = Path(directory)
        if not (directory / ADAPTER_FILE).is_file():
            raise ValueError(f"{directory} has no {ADAPTER_FILE}: it is not a LoRA checkpoint; resume it "
                             "without LoRA, or train the adapter into a new folder")
        with without_lora(self.model):
            load_model(self.model, str(directory / "model.safetensors"), strict=True, device="cpu")
        load_lora_state_dict(self.model, load_file(str(directory / ADAPTER_FILE)), where=str(directory / ADAPTER_FILE))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> LoRAModel:
        """A LoRA checkpoint (a folder from :meth:`save`, or a training folder) as a ready LoRAModel."""
        from ..training.checkpoint import find_checkpoint, load_checkpoint

        ckpt = find_checkpoint(directory)
        if ckpt is None:
            raise FileNotFoundError(f"no checkpoint in {directory}")
        config = read_adapter_config(ckpt)
        if config is None:
            raise ValueError(f"{ckpt} has no {ADAPTER_CONFIG}: not a LoRA checkpoint (load it with load_checkpoint)")
        model = cls(load_checkpoint(ckpt, device=device), **config)
        model.load_weights(ckpt)
        return model.eval()


def read_adapter_config(directory: str | Path) -> dict[str, Any] | None:
    """The LoRA settings saved in ``directory/adapter.json``, or None when there is none."""
    file = Path(directory) / ADAPTER_CONFIG
    if not file.is_file():
        return None
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
        return {k: config[k] for k in ("targets", "r", "alpha", "dropout")}
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{file} is damaged ({type(e).__name__}: {e}); save the adapter again") from None
