"""How likely a model finds a reply: per-token and summed log-probabilities, on chapter 08's batches.

DPO and GRPO both compare how probable a reply is under two models (the policy
being trained and a frozen reference). The reply is scored token by token::

    log p(reply | prompt) = sum over the reply's tokens t of log p(token_t | everything before it)

The batches are exactly chapter 08's (``finetune/chat.py``: ``sft_example`` and
``SFTCollate``): ``x`` the input ids, ``y`` the next tokens with the prompt, the
padding and anything else not to be scored set to :data:`IGNORE`. So the tokens
scored are the ones SFT trained (each assistant text and its closing ``<|end|>``),
and one forward pass scores every row of a batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..training.examples import IGNORE


def token_logprobs(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """(B, T) log p(y[b, t] | x[b, :t+1]) under ``model``, 0.0 where y == IGNORE (-1).

    x, y are exactly what chapter 08's SFTCollate makes (finetune/chat.py): x the input ids, y the
    targets with the prompt, the padding and anything not to be scored set to IGNORE (training.examples.IGNORE).
    Gradients flow (call it under torch.no_grad() for a frozen model).

    The log-softmax is taken in float32 (logits may be bf16 under autocast), and the
    target of an ignored position is gathered at id 0 and then zeroed, so IGNORE never
    indexes the vocabulary.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"x and y must both be (batch, time), got {tuple(x.shape)} and {tuple(y.shape)}: "
                         "pass the (x, y) of SFTCollate")
    logits, _ = model(x)
    logp = F.log_softmax(logits.float(), dim=-1)  # (B, T, V)
    scored = y != IGNORE
    picked = logp.gather(-1, y.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    return picked.masked_fill(~scored, 0.0)


def sequence_logprobs(model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """(B,) the summed log-probability of each row's scored tokens: token_logprobs(model, *batch).sum(-1)."""
    x, y = batch
    return token_logprobs(model, x, y).sum(-1)
