"""Batch sources of fixed examples: what ``train()`` reads for classification and chat finetuning (chapter 08).

Pretraining packs a stream of text into windows (batching.py). A finetuning
example is not packed: it is one labelled text (classify.py) or one conversation
(chat.py), and a batch is a few of them padded to one length by a ``collate``
function. :class:`ExampleSource` holds the training and validation examples and is
a *batch source* for ``train()``: ``batches(...)`` gives endless shuffled batches
with a resumable position (:class:`ExampleBatches`), ``evaluate(...)`` the mean
validation loss. :data:`IGNORE` is the target the loss skips.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from typing import Any

import torch
from torch import nn

from ..data.batching import StreamPosition
from .device import autocast

IGNORE = -1  #: a target our GPT's loss skips (model/gpt.py: ``ignore_index=-1``); also "no token" in an input


class ExampleBatches:
    """Endless shuffled batches of a fixed list of examples, for one rank of ``world_size``.

    The position is a :class:`~minigpt_helpers.data.batching.StreamPosition` whose
    ``epoch`` is the pass and ``doc`` the number of examples of that pass's
    shuffled order already used: a checkpoint stores it, and a resumed run gets
    exactly the batches it would have had. Each step uses ``world_size * batch_size``
    examples (rank ``r`` takes rows ``r*B:(r+1)*B``); a pass's tail shorter than
    that is skipped, so every batch is full.
    """

    def __init__(self, examples: Sequence[Any], collate: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]],
                 batch_size: int, *, seed: int = 0, position: StreamPosition | dict | None = None, rank: int = 0,
                 world_size: int = 1, device: torch.device | str = "cpu") -> None:
        if len(examples) < batch_size * world_size:
            raise ValueError(f"only {len(examples)} training examples for a batch of {batch_size * world_size}: "
                             "use a smaller batch_size or more examples")
        self.examples, self.collate, self.batch_size = examples, collate, batch_size
        self.seed, self.rank, self.world_size, self.device = seed, rank, world_size, torch.device(device)
        if isinstance(position, dict):
            position = StreamPosition.from_dict(position)
        self.pos = StreamPosition(**asdict(position)) if position else StreamPosition()
        self._order: tuple[int, list[int]] | None = None

    def order(self, epoch: int) -> list[int]:
        """The shuffled order of the examples in pass ``epoch`` (a function of seed and epoch only)."""
        if self._order is None or self._order[0] != epoch:
            idx = list(range(len(self.examples)))
            random.Random(f"{self.seed}/{epoch}").shuffle(idx)
            self._order = (epoch, idx)
        return self._order[1]

    def __iter__(self) -> ExampleBatches:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        need = self.batch_size * self.world_size
        if self.pos.doc + need > len(self.examples):  # the pass is used up: start the next one
            self.pos = StreamPosition(self.pos.epoch + 1, 0, 0, 0)
        start = self.pos.doc + self.rank * self.batch_size
        rows = self.order(self.pos.epoch)[start: start + self.batch_size]
        self.pos.doc += need
        x, y = self.collate([self.examples[i] for i in rows])
        return x.to(self.device), y.to(self.device)

    def position(self) -> StreamPosition:
        """Where the next batch starts (a copy: safe to store in a checkpoint)."""
        return StreamPosition(**asdict(self.pos))

    def close(self) -> None:
        """Nothing to stop: batches are made in the training loop (train() calls it for every source)."""


class ExampleSource:
    """Fixed training and validation examples, batched by ``collate``: a *batch source* for ``train()``.

    ``collate(list_of_examples) -> (x, y)`` makes one batch; the model's
    ``forward(x, y)`` returns ``(logits, loss)``. :meth:`evaluate` is the mean loss
    over the first ``eval_examples`` validation examples (all by default; the same
    ones every time, so curves compare), each target counted once: rows for a
    label, or the targets that are not :data:`IGNORE` for text.
    """

    def __init__(self, train: Sequence[Any], validation: Sequence[Any],
                 collate: Callable[[list[Any]], tuple[torch.Tensor, torch.Tensor]],
                 eval_examples: int | None = None) -> None:
        if not train:
            raise ValueError("no training examples: the source needs at least one batch of them")
        self.train, self.collate = list(train), collate
        self.validation = list(validation)[:eval_examples] if eval_examples else list(validation)

    def batches(self, batch_size: int, *, seed: int = 0, position: StreamPosition | dict | None = None,
                rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> ExampleBatches:
        return ExampleBatches(self.train, self.collate, batch_size, seed=seed, position=position, rank=rank,
                              world_size=world_size, device=device)

    def val_batches(self, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(0, len(self.validation), batch_size):
            yield self.collate(self.validation[i: i + batch_size])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, batch_size: int, device: torch.device | str,
                 precision: str = "fp32") -> float | None:
        """Mean validation loss (dropout off), or None without validation examples."""
        if not self.validation:
            return None
        device = torch.device(device)
        was_training = model.training
        model.eval()
        total, count = 0.0, 0
        try:
            for x, y in self.val_batches(batch_size):
                n = int((y != IGNORE).sum())
                if n == 0:
                    continue
                with autocast(device, precision):  # mixed precision as in training; a no-op for fp32
                    _, loss = model(x.to(device), y.to(device))
                total += loss.item() * n
                count += n
        finally:
            model.train(was_training)
        return total / count if count else None
