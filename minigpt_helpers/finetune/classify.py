"""Classification finetuning: a pretrained GPT plus a small head that picks a label (chapter 08).

    text --tokenizer--> ids --GPT blocks + ln_f--> hidden states (B, T, C) --pool--> (B, C) --head--> (B, K)

**Pooling: the mean over the real tokens** (the default) or **the last real token**
(``pooling="last"``). In a causal model only the last position has read the whole
text, which is why large models are usually read there. But a small model's last
state is mostly about predicting the *next* token, while the mean gathers the
evidence of every position (each has read its prefix: the names, the words).
Chapter 08's exercise 2 compares the two on the genre of held-out plays (its
solution prints the accuracies). Inputs are right-padded with -1 (no token): causal attention
never looks right, so padding cannot change the real positions; ``(x >= 0)``
marks them, and ``(x >= 0).sum(1) - 1`` is where each text ends.

**Modes** (what trains; everything else is frozen):

- ``"head"``: the head only: the GPT is a fixed feature extractor (fast: no
  backward pass through it);
- ``"last_blocks"``: the head, the last ``n_blocks`` blocks and the final LayerNorm;
- ``"all"``: everything;
- ``"lora"``: the head and LoRA adapters on the blocks' projections (lora.py).

Training reuses :func:`~minigpt_helpers.training.train`, the same loop as
pretraining (checkpoints, exact resume, live plot, Ctrl-C): the data is an
:class:`~minigpt_helpers.training.examples.ExampleSource` (a *batch source*: shuffled batches of fixed
examples with a resumable position) and :meth:`GPTClassifier.forward` returns ``(logits, loss)``.
A checkpoint folder holds the backbone as an ordinary GPT (``model.safetensors`` +
``config.json`` + ``tokenizer/``, unmerged base weights) plus
``classifier.safetensors`` (head, LoRA matrices) and ``classifier.json``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data.batching import encode_text
from ..training.examples import IGNORE, ExampleSource
from .lora import (
    DEFAULT_TARGETS,
    add_lora,
    load_lora_state_dict,
    lora_state_dict,
    without_lora,
    wrapped_tokenizer,
)

MODES = ("head", "last_blocks", "all", "lora")
POOLINGS = ("last", "mean")
CLASSIFIER_FILE = "classifier.safetensors"
CLASSIFIER_CONFIG = "classifier.json"


# ------------------------------------------------------------------------------ the classifier
def hidden_states(gpt: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    """The GPT's final hidden states ``(B, T, C)``: its forward pass without the language-model head."""
    t = gpt.transformer
    pos = torch.arange(idx.size(1), device=idx.device)
    x = t.drop(t.wte(idx) + t.wpe(pos))
    for block in t.h:
        x = block(x)
    return t.ln_f(x)


class GPTClassifier(nn.Module):
    """A GPT backbone + a linear head over the pooled hidden state (see the module docstring).

    The backbone is used, frozen and trained in place: to compare modes from the
    same pretrained model, give each classifier its own ``copy.deepcopy(model)``.
    ``lora`` overrides the LoRA settings (``targets``, ``r``, ``alpha``, ``dropout``).
    """

    def __init__(self, backbone: nn.Module, labels: Sequence[str], mode: str = "head", *, n_blocks: int = 1,
                 pooling: str = "mean", lora: dict[str, Any] | None = None) -> None:
        super().__init__()
        labels = [str(label) for label in labels]
        if len(labels) < 2 or len(set(labels)) != len(labels):
            raise ValueError(f"labels must be at least two distinct class names, got {labels}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        n_layer = backbone.config.n_layer
        if mode == "last_blocks" and not (isinstance(n_blocks, int) and 1 <= n_blocks <= n_layer):
            raise ValueError(f"n_blocks must be an integer in [1, {n_layer}] (the model's layers), got {n_blocks!r}")
        self.backbone, self.labels, self.mode, self.pooling = backbone, labels, mode, pooling
        self.n_blocks = n_blocks if mode == "last_blocks" else None
        self.head = nn.Linear(backbone.config.n_embd, len(labels))
        nn.init.normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self.head.to(backbone.transformer.wte.weight.device)
        self.lora_config = None
        for p in backbone.parameters():
            p.requires_grad_(mode == "all")
        if mode == "last_blocks":
            for m in [*backbone.transformer.h[-n_blocks:], backbone.transformer.ln_f]:
                m.requires_grad_(True)
        if mode == "lora":
            self.lora_config = {"targets": list(DEFAULT_TARGETS), "r": 4, "alpha": 8.0, "dropout": 0.0,
                                **(lora or {})}
            add_lora(backbone, **self.lora_config)

    # the pieces train() reads from a GPT
    @property
    def config(self):
        return self.backbone.config

    tokenizer = wrapped_tokenizer("backbone")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Pooled hidden states ``(B, C)`` of right-padded ids ``x`` (B, T), -1 after each text."""
        real = x >= 0
        lengths = real.sum(1)
        if bool((lengths == 0).any()):
            raise ValueError("an input row holds no token (all -1): every text must give at least one token")
        h = hidden_states(self.backbone, x.clamp(min=0))
        if self.pooling == "mean":
            m = real.unsqueeze(-1).to(h.dtype)
            return (h * m).sum(1) / lengths.unsqueeze(-1).to(h.dtype)
        return h[torch.arange(len(x), device=x.device), lengths - 1]

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(logits (B, K), the mean cross-entropy over the batch if labels ``y`` (B,) are given)."""
        logits = self.head(self.features(x))
        return logits, (F.cross_entropy(logits.float(), y) if y is not None else None)

    @torch.no_grad()
    def predict(self, texts: Sequence[str], batch_size: int = 64) -> list[str]:
        """The predicted label of each text."""
        was_training = self.training
        self.eval()
        device = self.head.weight.device
        block = self.config.block_size
        out: list[str] = []
        try:
            for i in range(0, len(texts), batch_size):
                rows = [(encode_example(self.tokenizer, t, block), 0) for t in texts[i: i + batch_size]]
                x, _ = collate_labels(rows, block)
                out += [self.labels[int(k)] for k in self(x.to(device))[0].argmax(-1)]
        finally:
            self.train(was_training)
        return out

    # -- checkpoints: an ordinary GPT folder + the head and adapters --------------------------------
    def save(self, directory: str | Path) -> Path:
        """The backbone as a GPT (base weights, tokenizer) + ``classifier.safetensors`` + ``classifier.json``."""
        from safetensors.torch import save_file

        directory = Path(directory)
        with without_lora(self.backbone):
            self.backbone.save(directory)
        extra = {f"head.{k}": v.detach().contiguous() for k, v in self.head.state_dict().items()}
        extra.update({f"backbone.{k}": v.contiguous() for k, v in lora_state_dict(self.backbone).items()})
        save_file(extra, str(directory / CLASSIFIER_FILE))
        meta = {"labels": self.labels, "mode": self.mode, "n_blocks": self.n_blocks, "pooling": self.pooling,
                "lora": self.lora_config}
        (directory / CLASSIFIER_CONFIG).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @torch.no_grad()
    def load_weights(self, directory: str | Path) -> None:
        """Read a folder written by :meth:`save` into this classifier (``train(resume=True)`` calls it)."""
        from safetensors import SafetensorError
        from safetensors.torch import load_file, load_model

        directory = Path(directory)
        file = directory / CLASSIFIER_FILE
        if not file.is_file():
            raise ValueError(f"{directory} has no {CLASSIFIER_FILE}: it holds a language model, not a classifier; "
                             "train the classifier into a new folder")
        with without_lora(self.backbone):
            load_model(self.backbone, str(directory / "model.safetensors"), strict=True, device="cpu")
        try:
            extra = load_file(str(file))
        except SafetensorError as e:
            raise ValueError(f"{file} is damaged ({e}); delete the folder and use the previous checkpoint") from None
        head = {k[5:]: v for k, v in extra.items() if k.startswith("head.")}
        if set(head) != set(self.head.state_dict()) or head["weight"].shape != self.head.weight.shape:
            raise ValueError(f"{file} holds a head for other classes than {self.labels}: use the same labels")
        self.head.load_state_dict(head)
        load_lora_state_dict(self.backbone, {k[9:]: v for k, v in extra.items() if k.startswith("backbone.")},
                             where=str(file))

    @classmethod
    def load(cls, directory: str | Path, device: str | torch.device | None = None) -> GPTClassifier:
        """A classifier from its checkpoint folder (or a training folder: the newest checkpoint)."""
        from ..training.checkpoint import find_checkpoint, load_checkpoint

        ckpt = find_checkpoint(directory)
        if ckpt is None or not (ckpt / CLASSIFIER_CONFIG).is_file():
            raise FileNotFoundError(f"no classifier checkpoint in {directory}: expected {CLASSIFIER_CONFIG} "
                                    "there, written by GPTClassifier.save / train(classifier, ...)")
        try:
            meta = json.loads((ckpt / CLASSIFIER_CONFIG).read_text(encoding="utf-8"))
            kw = dict(n_blocks=meta["n_blocks"] or 1, pooling=meta["pooling"], lora=meta["lora"])
            labels, mode = meta["labels"], meta["mode"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"{ckpt / CLASSIFIER_CONFIG} is damaged ({type(e).__name__}: {e})") from None
        backbone = load_checkpoint(ckpt, device=device)
        model = cls(backbone, labels, mode, **kw)
        model.load_weights(ckpt)
        return model.eval()


# ------------------------------------------------------------------------------ data
def encode_example(tokenizer: Any, text: str, block_size: int) -> list[int]:
    """``<|endoftext|>`` + the text's ids, cut to ``block_size`` tokens (the start of the text is kept).

    The leading end-of-text token is how every document began in pretraining. A
    literal "<|endoftext|>" inside the text is encoded as text (batching.encode_text).
    """
    return ([tokenizer.eot_id] + encode_text(tokenizer, text))[:block_size]


def collate_labels(rows: list[tuple[list[int], int]], block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``[(ids, label), ...]`` -> x (B, block_size) right-padded with -1, y (B,) labels.

    Every batch has the model's full width, like pretraining batches, so a step
    costs the same and the reported tokens/s counts the positions computed.
    """
    x = torch.full((len(rows), block_size), IGNORE, dtype=torch.long)
    for i, (ids, _) in enumerate(rows):
        x[i, : len(ids)] = torch.tensor(ids[:block_size], dtype=torch.long)
    return x, torch.tensor([label for _, label in rows], dtype=torch.long)


def _label_rows(tokenizer: Any, rows: Iterable[Any], labels: Sequence[str], block_size: int) -> list[tuple]:
    index = {name: i for i, name in enumerate(labels)}
    out = []
    for row in rows:
        text, label = (row["text"], row["label"]) if isinstance(row, dict) else row
        if label not in index:
            raise ValueError(f"label {label!r} is not one of {list(labels)}")
        out.append((encode_example(tokenizer, text, block_size), index[label]))
    return out


def classification_source(tokenizer: Any, train: Iterable[Any], validation: Iterable[Any], labels: Sequence[str],
                          block_size: int, eval_examples: int | None = None) -> ExampleSource:
    """A batch source of ``(text, label)`` pairs (or ``{"text", "label"}`` rows) for ``train(classifier, ...)``."""
    fn = _Collate(block_size)
    return ExampleSource(_label_rows(tokenizer, train, labels, block_size),
                         _label_rows(tokenizer, validation, labels, block_size), fn, eval_examples)


class _Collate:
    """``collate_labels`` with the block size bound (a class, so a source pickles)."""

    def __init__(self, block_size: int) -> None:
        self.block_size = block_size

    def __call__(self, rows: list[tuple[list[int], int]]) -> tuple[torch.Tensor, torch.Tensor]:
        return collate_labels(rows, self.block_size)


@torch.no_grad()
def accuracy(model: GPTClassifier, source: ExampleSource, batch_size: int = 64) -> float:
    """The fraction of ``source``'s validation examples whose predicted label is right."""
    if not source.validation:
        raise ValueError("the source has no validation examples to score")
    was_training = model.training
    model.eval()
    device = model.head.weight.device
    right = 0
    try:
        for x, y in source.val_batches(batch_size):
            right += int((model(x.to(device))[0].argmax(-1).cpu() == y).sum())
    finally:
        model.train(was_training)
    return right / len(source.validation)


def majority_accuracy(train_labels: Iterable[str], validation_labels: Sequence[str]) -> tuple[str, float]:
    """(the most common training label, the accuracy of always answering it on ``validation_labels``)."""
    from collections import Counter

    counts = Counter(train_labels)
    if not counts or not validation_labels:
        raise ValueError("majority_accuracy needs training labels and validation labels")
    best = min(counts, key=lambda k: (-counts[k], k))  # ties: alphabetical, so the answer is deterministic
    return best, sum(label == best for label in validation_labels) / len(validation_labels)
