"""Sampling: from a model's logits to the next token id (chapter 06), shared by every decoding loop.

The pipeline, one token at a time::

    logits (V,) --/temperature--> top-k --> top-p --> softmax --> sample --> next id

This module holds the pieces every decoding loop needs: the argument checks, the
filters, :func:`sample_next` (checked, for learners) and :func:`sample_logits` (the same
pipeline unchecked, for loops that checked their arguments once), the context-window
policy :func:`window_start`, and :func:`last_logits`, the model's next-token logits
with the ids its tokenizer cannot decode masked out. generation.py (one sequence),
speculative.py (a draft and a target) and batch.py (many sequences at once) build on it.
"""

from __future__ import annotations

from typing import Any

import torch

__all__ = [
    "check_generation_args",
    "check_sampling_args",
    "last_logits",
    "model_device",
    "sample_logits",
    "sample_next",
    "sampling_probs",
    "seeded_generator",
    "top_k_filter",
    "top_p_filter",
    "window_start",
]


# ----------------------------------------------------------------------------- argument checks
# Each public entry point (the filters, sample_next, generate_ids, generate) checks its
# arguments once, when it is called; the per-token path then runs unchecked internals.
def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _check_top_k(k: Any) -> None:
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"top_k must be an integer >= 1 (or None to disable), got {k!r}")


def _check_top_p(p: Any) -> None:
    if not _is_number(p) or not 0.0 < p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1] (or None to disable), got {p!r}")


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not _is_number(temperature) or not temperature >= 0:  # NaN fails >= 0
        raise ValueError(
            f"temperature must be a number >= 0 (0 = greedy, 1 = the model's own distribution), got {temperature!r}"
        )
    if top_k is not None:
        _check_top_k(top_k)
    if top_p is not None:
        _check_top_p(top_p)


def check_generation_args(max_new_tokens: int, temperature: float, top_k: int | None, top_p: float | None) -> None:
    """Raise a ValueError naming the first bad sampling argument (what :func:`generate` checks on entry).

    Public so that a caller (the command line) can refuse bad settings before loading a model.
    """
    check_sampling_args(temperature, top_k, top_p)
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an integer >= 0, got {max_new_tokens!r}")


# ----------------------------------------------------------------------------- filters


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the ``k`` largest logits along the last dim, set the rest to ``-inf``.

    Exactly ``k`` tokens survive even when several logits tie at the threshold
    (ties are broken by ``torch.topk``'s order). ``k >= vocab`` keeps everything.
    Why: the long tail of unlikely tokens holds most of the "nonsense" mass; cutting
    it keeps samples on topic while still varying.
    """
    _check_top_k(k)
    return _top_k(logits, k)


def _top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """:func:`top_k_filter` on an already checked ``k`` (the per-token path)."""
    if k >= logits.size(-1):
        return logits
    idx = torch.topk(logits, k, dim=-1).indices
    out = torch.full_like(logits, float("-inf"))
    return out.scatter(-1, idx, logits.gather(-1, idx))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filter: keep the smallest set of most-likely tokens whose probability sums to >= ``p``.

    A token is kept when the probability mass of the tokens ranked above it is
    still below ``p``, so the top token always survives. Unlike top-k, the number
    of kept tokens adapts: few when the model is sure, many when it is not.
    ``p = 1`` keeps everything.
    """
    _check_top_p(p)
    return _top_p(logits, p)


def _top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """:func:`top_p_filter` on an already checked ``p`` (the per-token path)."""
    if p >= 1.0:
        return logits
    sorted_logits, sorted_idx = torch.sort(logits, dim=-1, descending=True)
    probs = torch.softmax(sorted_logits.float(), dim=-1)
    mass_before = torch.cumsum(probs, dim=-1) - probs  # mass of strictly higher-ranked tokens
    remove_sorted = mass_before >= p
    remove = torch.zeros_like(remove_sorted).scatter(-1, sorted_idx, remove_sorted)
    return logits.masked_fill(remove, float("-inf"))


def sample_next(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Pick the next token id(s) from ``logits`` of shape (..., V); returns shape (...).

    ``temperature = 0`` is greedy (argmax; top-k/top-p cannot change the argmax).
    Otherwise: divide by the temperature (<1 sharpens, >1 flattens), apply top-k
    then top-p, softmax, and draw one token with ``generator`` (for reproducibility).
    """
    check_sampling_args(temperature, top_k, top_p)
    return sample_logits(logits, temperature, top_k, top_p, generator)


def sampling_probs(
    logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None
) -> torch.Tensor:
    """The distribution (..., V) that :func:`sample_logits` draws from, on checked arguments.

    Temperature, then top-k, then top-p, then softmax, in float32. ``temperature = 0``
    (greedy) gives a one-hot on the argmax: drawing from it is taking the argmax, which
    lets speculative decoding treat greedy decoding as one more distribution.
    """
    if temperature == 0:
        return torch.nn.functional.one_hot(torch.argmax(logits, dim=-1), logits.size(-1)).float()
    logits = logits.float() / temperature
    if top_k is not None:
        logits = _top_k(logits, top_k)
    if top_p is not None:
        logits = _top_p(logits, top_p)
    return torch.softmax(logits, dim=-1)


def sample_logits(
    logits: torch.Tensor,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """:func:`sample_next` on already checked arguments (the per-token path)."""
    if temperature == 0:
        return torch.argmax(logits, dim=-1)
    probs = sampling_probs(logits, temperature, top_k, top_p)
    flat = probs.reshape(-1, probs.size(-1))
    ids = torch.multinomial(flat, num_samples=1, generator=generator)  # (N, 1)
    return ids.reshape(probs.shape[:-1])


# ----------------------------------------------------------------------------- the loop


def window_start(n_tokens: int, start: int, block_size: int) -> int:
    """Where the model's window begins once the sequence holds ``n_tokens`` tokens.

    The one definition of the context policy (see the module docstring): keep the
    current ``start`` while the window ``ids[start:]`` fits in ``block_size``;
    when it would not, jump to the last ``max(1, block_size // 2)`` tokens.
    """
    if n_tokens - start <= block_size:
        return start
    return n_tokens - max(1, block_size // 2)


def model_device(model: torch.nn.Module) -> torch.device:
    dev = getattr(model, "device", None)
    if dev is not None:
        return torch.device(dev)
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def last_logits(model: torch.nn.Module, idx: torch.Tensor, kv_cache: Any = None) -> torch.Tensor:
    """The logits (B, V) after the last token of every row of ``idx`` (B, T).

    A model may have more rows than its tokenizer has ids (a vocabulary padded to a
    round number, or spare rows kept when chat tokens were added): those ids have no
    text, so their logits are set to -inf and they are never picked, greedy or sampled.
    """
    out = model(idx, kv_cache=kv_cache) if kv_cache is not None else model(idx)
    logits = out[0] if isinstance(out, (tuple, list)) else out
    last = logits[:, -1, :]
    n_ids = getattr(getattr(model, "tokenizer", None), "vocab_size", None)
    if isinstance(n_ids, int) and 0 < n_ids < last.size(-1):
        last = last.clone()
        last[:, n_ids:] = float("-inf")
    return last


def seeded_generator(device: torch.device, seed: int | None) -> torch.Generator | None:
    """A generator on ``device`` seeded with ``seed``; None (torch's global RNG) without a seed."""
    if seed is None:
        return None
    generator = torch.Generator(device=device)
    generator.manual_seed(int(seed))
    return generator

