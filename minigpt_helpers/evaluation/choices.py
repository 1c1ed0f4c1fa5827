"""Multiple-choice evaluation by log-likelihood, the way lm-evaluation-harness does it (chapter 09).

A multiple-choice item is a context and a few continuations ("choices"); the model
picks the choice it finds most likely::

    items = [{"context": "The capital of France is", "choices": [" Paris", " Rome"], "label": 0}]
    evaluate_choices(model, items)     # {"acc": 1.0, "acc_norm": 1.0, "n": 1, "chance": 0.5, ...}

No text is generated: for each choice we sum ``log p(token | everything before it)``
over the choice's tokens, one forward pass over context + choice.

**The tokenization convention is lm-evaluation-harness's** (``TemplateLM._encode_pair``
and ``HFLM._loglikelihood_tokens``, lm_eval 0.4), so scores can be compared item by
item with ``lm_eval`` run on the same model:

1. Trailing whitespace of the context moves to the front of the choice
   (``"Q: 2+2 = "`` + ``"4"`` is scored as ``"Q: 2+2 ="`` + ``" 4"``): byte-level BPE
   makes a space the start of the next word's token, so a context that ends in a space
   would leave a lone space token no text ever has there.
2. Context + choice is tokenized as ONE string, and the choice's tokens are those after
   the first ``len(encode(context))`` tokens; the model reads ``encode(context)``
   followed by them. Every choice of an item is thus read after the same context tokens,
   and the cut depends on token counts only. When a token straddles the boundary (BPE
   merges the context's last characters with the choice's first), the input is not what
   the tokenizer makes of the whole string and can lose or repeat a character there
   (context ``"I th"`` + choice ``"ank you"`` can be read as ``"I th"`` + ``"nk you"``);
   lm_eval accepts that, and so do we, so that the scores match its own. Contexts that
   end at a word and choices that start with a space (HellaSwag's) do not meet it.
   A context that is empty (or only whitespace) is replaced by the end-of-text id,
   lm_eval's "prefix token" for that case.
3. Longer than the model's window: the input is the last ``block_size + 1`` tokens of
   context + choice minus the final one (left truncation, lm_eval's
   ``(context_enc + continuation_enc)[-(max_length + 1):][:-1]``), so the choice keeps
   all its tokens and the context loses its oldest. This is ``generate``'s cropping of a
   long prompt to its last ``block_size`` tokens; ``generation.window_start``'s jump to
   half a window is for the KV cache while generating and does not apply to scoring.
   A choice longer than ``block_size`` tokens is an error.
4. Requests are sorted longest first and run in batches, right-padded; logits are read
   only at the real positions of each row (a causal model's real positions never see
   the padding to their right).

Text is encoded with ``encode_ordinary``: a literal ``<|endoftext|>`` in an item is text.

**Two accuracies.** ``acc`` takes the choice with the highest summed log-likelihood, which
favours short choices (fewer tokens, fewer log-probabilities below 0 to add).
``acc_norm`` divides by the choice's length first. lm_eval's ``acc_norm`` (HellaSwag's
headline number) divides by the number of *characters*; here it is the number of UTF-8
*bytes*: the score is then minus the choice's bits per byte (in nats), the unit in which
models with different tokenizers compare (training.metrics), and for a byte-level
tokenizer every byte is something the model had to predict, whereas a character may be
one to four of them. On ASCII text the two are the same. (lm_eval counts the choice
without its ``target_delimiter``, the space it puts in front; here a choice is counted
as given, so write HellaSwag's choices as ``" ending"`` and its acc_norm may differ on a
near-tie. A context ending in the delimiter instead counts exactly as lm_eval does: see 1.)

Each accuracy comes with a 95% Wilson score interval (:func:`wilson_interval`): on 600
items an accuracy of 30% is known to about +-4 points, which says which differences
between two models are noise.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["ChoiceScore", "check_items", "encode_pair", "evaluate_choices", "score_choices", "wilson_interval"]

ITEM_FORMAT = '{"context": str, "choices": [str, str, ...], "label": int}'


@dataclass(frozen=True)
class ChoiceScore:
    """One choice's score: summed log-likelihood (nats), its size, and the score per byte."""

    choice: str
    loglik: float  # sum of log p(token | before) over the choice's tokens
    n_tokens: int  # tokens scored (after the context's own token count)
    n_bytes: int  # UTF-8 bytes of the choice as given
    per_byte: float  # loglik / n_bytes: what acc_norm compares
    truncated: bool  # context + choice was longer than the model's window: the oldest context tokens were cut


# ----------------------------------------------------------------------------- checks
def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a proportion ``successes / n`` (z = 1.96: 95%).

    Unlike the normal approximation ``p +- z sqrt(p(1-p)/n)`` it stays inside [0, 1]
    and is not empty at 0 or n successes (Wilson 1927; Brown, Cai & DasGupta 2001
    recommend it). ``n = 0`` gives ``(0.0, 1.0)``: nothing is known.
    """
    if isinstance(successes, bool) or isinstance(n, bool) or not isinstance(successes, int) \
            or not isinstance(n, int) or n < 0 or not 0 <= successes <= n:
        raise ValueError(f"need integers 0 <= successes <= n, got successes={successes!r}, n={n!r}")
    if not isinstance(z, (int, float)) or isinstance(z, bool) or not z > 0:
        raise ValueError(f"z must be a positive number (1.96 for 95%), got {z!r}")
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def _check_choices(choices: Any, where: str, min_choices: int) -> None:
    if not isinstance(choices, (list, tuple)) or len(choices) < min_choices:
        raise ValueError(f"{where}: choices must be a list of at least {min_choices} strings, got {choices!r}")
    for c in choices:
        if not isinstance(c, str) or not c:
            raise ValueError(f"{where}: every choice must be a non-empty string, got {c!r}")


def check_items(items: Any) -> None:
    """Raise a ValueError naming the first bad item of a multiple-choice list, and how it should look."""
    if isinstance(items, (str, dict)) or not isinstance(items, Sequence) or not items:
        raise ValueError(f"items must be a non-empty list of dicts {ITEM_FORMAT}, got {type(items).__name__}")
    for k, item in enumerate(items):
        where = f"item {k}"
        if not isinstance(item, dict) or not {"context", "choices", "label"} <= set(item):
            raise ValueError(f"{where} must be a dict {ITEM_FORMAT}, got {item!r:.200}")
        if not isinstance(item["context"], str):
            raise ValueError(f"{where}: context must be a string, got {type(item['context']).__name__}")
        _check_choices(item["choices"], where, 2)
        label = item["label"]
        if isinstance(label, bool) or not isinstance(label, int) or not 0 <= label < len(item["choices"]):
            raise ValueError(f"{where}: label must be the index of the right choice, an int in "
                             f"0..{len(item['choices']) - 1}, got {label!r}")


def _resolve_tokenizer(model: torch.nn.Module, tokenizer: Any) -> Any:
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None or not hasattr(tok, "encode_ordinary"):
        raise ValueError("no tokenizer: the model has none attached (model.tokenizer is None); pass tokenizer=..., "
                         "the one the model was trained with")
    return tok


def _block_size(model: torch.nn.Module) -> int:
    size = getattr(getattr(model, "config", None), "block_size", None)
    if not isinstance(size, int):
        raise ValueError(f"{type(model).__name__} has no config.block_size: score a minigpt GPT (or a wrapper "
                         "such as LoRAModel that passes config through)")
    return size


def _check_batch_size(batch_size: Any) -> None:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")


# ----------------------------------------------------------------------------- encoding
def encode_pair(tokenizer: Any, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """``(context_ids, continuation_ids)`` as lm_eval's ``_encode_pair`` makes them for a causal model.

    Trailing whitespace moves from the context to the continuation; the pair is
    tokenized as one string and cut after ``len(encode(context))`` tokens (see the
    module docstring). An empty context becomes ``[eot_id]``.
    """
    n_spaces = len(context) - len(context.rstrip())
    if n_spaces:
        context, continuation = context[:-n_spaces], context[-n_spaces:] + continuation
    if not context:
        return [tokenizer.eot_id], tokenizer.encode_ordinary(continuation)
    whole = tokenizer.encode_ordinary(context + continuation)
    context_ids = tokenizer.encode_ordinary(context)
    return context_ids, whole[len(context_ids):]


def items_within_window(model: torch.nn.Module, items: Sequence[dict], *, tokenizer: Any = None) -> list[dict]:
    """The items whose every choice fits in the model's window (``block_size`` tokens), in their order.

    A longer choice cannot be scored at all (its first tokens would have no context,
    and lm_eval refuses it too), so a model with a short window is evaluated on the
    items it can read; say how many were left out beside the accuracy.
    """
    check_items(items)
    tok, block = _resolve_tokenizer(model, tokenizer), _block_size(model)
    return [it for it in items if all(len(encode_pair(tok, it["context"], c)[1]) <= block for c in it["choices"])]


@dataclass(frozen=True)
class _Request:
    ids: list[int]  # the model's input: context + continuation minus the last token, left-truncated
    targets: list[int]  # the continuation's tokens, predicted at the last len(targets) positions of ids
    truncated: bool


def _request(tokenizer: Any, context: str, choice: str, block_size: int) -> _Request:
    context_ids, cont = encode_pair(tokenizer, context, choice)
    if not cont:
        raise ValueError(f"choice {choice!r} adds no token after the context {context[-40:]!r} (its tokens merge "
                         "into the context's or the tokenizer drops them): give choices that add text")
    if len(cont) > block_size:
        raise ValueError(f"choice {choice[:40]!r}... is {len(cont)} tokens, more than the model's block_size "
                         f"{block_size}: shorten the choices, or keep the items that fit with items_within_window")
    full = context_ids + cont
    return _Request(full[-(block_size + 1):][:-1], cont, len(full) > block_size + 1)


# ----------------------------------------------------------------------------- scoring
def _model_device(model: torch.nn.Module) -> torch.device:
    try:
        return next(model.parameters()).device
    except StopIteration:
        return torch.device("cpu")


def _forward_logits(model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    out = model(x)
    return out[0] if isinstance(out, (tuple, list)) else out


def _logliks(model: torch.nn.Module, requests: Sequence[_Request], batch_size: int, bar: Any = None) -> list[float]:
    """Summed log-likelihood of each request's targets; longest first, ``batch_size`` rows per forward pass."""
    order = sorted(range(len(requests)), key=lambda i: -len(requests[i].ids))
    out = [0.0] * len(requests)
    device = _model_device(model)
    for start in range(0, len(order), batch_size):
        rows = [requests[i] for i in order[start:start + batch_size]]
        width = len(rows[0].ids)
        x = torch.zeros(len(rows), width, dtype=torch.long)
        for r, req in enumerate(rows):
            x[r, :len(req.ids)] = torch.tensor(req.ids)
        logits = _forward_logits(model, x.to(device))
        for r, (i, req) in enumerate(zip(order[start:start + batch_size], rows)):
            end = len(req.ids)  # right padding: the real positions are 0 .. end-1
            logp = logits[r, end - len(req.targets):end].float().log_softmax(-1)
            targets = torch.tensor(req.targets, device=logp.device)
            out[i] = float(logp.gather(-1, targets[:, None]).sum())
        if bar is not None:
            bar.update(len(rows))
    return out


def _scores(model: torch.nn.Module, tokenizer: Any, questions: Sequence[tuple[str, Sequence[str]]],
            batch_size: int, bar: Any = None) -> list[list[ChoiceScore]]:
    """Every choice of every ``(context, choices)`` scored, in eval mode without gradients (train mode restored)."""
    block_size = _block_size(model)
    requests = [_request(tokenizer, context, c, block_size) for context, choices in questions for c in choices]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            lls = iter(_logliks(model, requests, batch_size, bar))
    finally:
        model.train(was_training)
    reqs = iter(requests)
    out = []
    for _, choices in questions:
        row = []
        for c in choices:
            ll, req, n_bytes = next(lls), next(reqs), len(c.encode("utf-8"))
            row.append(ChoiceScore(c, ll, len(req.targets), n_bytes, ll / n_bytes, req.truncated))
        out.append(row)
    return out


def score_choices(model: torch.nn.Module, context: str, choices: Sequence[str], *, tokenizer: Any = None,
                  batch_size: int = 16) -> list[ChoiceScore]:
    """Each choice's log-likelihood given ``context`` (see the module docstring for the exact convention).

    ``tokenizer`` defaults to ``model.tokenizer``. ``batch_size`` rows go through the
    model per forward pass; lower it for long contexts with a large vocabulary (the
    logits of a batch are ``batch_size x length x vocab_size`` floats).
    """
    if not isinstance(context, str):
        raise ValueError(f"context must be a string, got {type(context).__name__}")
    _check_choices(choices, "score_choices", 1)
    _check_batch_size(batch_size)
    return _scores(model, _resolve_tokenizer(model, tokenizer), [(context, choices)], batch_size)[0]


def evaluate_choices(model: torch.nn.Module, items: Sequence[dict], *, tokenizer: Any = None, batch_size: int = 16,
                     progress: bool = False) -> dict[str, Any]:
    """Accuracy of ``model`` on multiple-choice ``items`` (dicts ``{"context", "choices", "label"}``).

    Returns ``{"acc", "acc_ci", "acc_norm", "acc_norm_ci", "n", "chance", "n_truncated",
    "predictions", "predictions_norm", "labels", "logliks"}``:

    - ``acc``: the fraction of items whose highest summed log-likelihood is the label's
      (lm_eval's ``acc``); ``acc_norm``: the same with the log-likelihood per UTF-8 byte
      of the choice. lm_eval's HellaSwag ``acc_norm`` divides by characters; bytes suit a
      byte-level tokenizer, whose log-likelihood is a sum over bytes it predicted, and
      make the score minus bits per byte (in nats). The two agree on ASCII text.
    - ``acc_ci``, ``acc_norm_ci``: 95% Wilson intervals; ``chance``: the mean of
      ``1 / len(choices)``, the accuracy of guessing.
    - ``predictions``, ``predictions_norm``: the chosen index per item (ties go to the
      first choice, as ``numpy.argmax`` in lm_eval); ``logliks``: every choice's summed
      log-likelihood per item, to compare item by item with lm_eval's ``resps``.
    - ``n_truncated``: items with a choice whose context was cut to fit ``block_size``.
    """
    check_items(items)
    _check_batch_size(batch_size)
    tok = _resolve_tokenizer(model, tokenizer)
    bar = None
    if progress:
        from ..progress import ProgressBar

        bar = ProgressBar(total=sum(len(it["choices"]) for it in items), desc="scoring choices", unit=" choices")
    scores = _scores(model, tok, [(it["context"], it["choices"]) for it in items], batch_size, bar)
    labels = [it["label"] for it in items]
    pred = [max(range(len(row)), key=lambda j, row=row: (row[j].loglik, -j)) for row in scores]
    pred_norm = [max(range(len(row)), key=lambda j, row=row: (row[j].per_byte, -j)) for row in scores]
    n = len(items)
    right = sum(p == y for p, y in zip(pred, labels))
    right_norm = sum(p == y for p, y in zip(pred_norm, labels))
    result = {
        "acc": right / n, "acc_ci": wilson_interval(right, n),
        "acc_norm": right_norm / n, "acc_norm_ci": wilson_interval(right_norm, n),
        "n": n, "chance": sum(1 / len(it["choices"]) for it in items) / n,
        "n_truncated": sum(any(s.truncated for s in row) for row in scores),
        "predictions": pred, "predictions_norm": pred_norm, "labels": labels,
        "logliks": [[s.loglik for s in row] for row in scores],
    }
    if bar is not None:
        bar.close(f"{n} items: acc {result['acc']:.3f}, acc_norm {result['acc_norm']:.3f} "
                  f"(chance {result['chance']:.3f})")
    return result
