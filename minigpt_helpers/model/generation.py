"""Turn a trained GPT into a text generator: sampling controls and a KV cache.

Chapter 06 derives each piece; this module is the finished version the rest of
the course imports::

    from minigpt_helpers import generate
    print(generate(model, "The research shows"))          # the model carries its tokenizer

It stops early when the model writes ``<|endoftext|>`` (the boundary between two
training documents), unless told ``stop_at_eot=False``.

The pipeline, one token at a time::

    logits (V,) --/temperature--> top-k --> top-p --> softmax --> sample --> next id

*Why a KV cache.* Without it, every new token re-runs the model over the whole
context, although the keys and values of all earlier positions have not changed.
With it we run one *prefill* pass over the prompt, keep each layer's K and V, and
then feed only the newest token, which attends to the cached K/V. Per token the
work drops from O(T) positions to one.

*The context window policy (one definition, used by both paths).* The model has
learned positions 0 .. block_size-1 only. The window the model sees is
``ids[start:]``; it starts as the last ``block_size`` tokens of the prompt (a
longer prompt is cropped, with a notice). When a new token would make the window
longer than ``block_size``, the window jumps forward to the last
``block_size // 2`` tokens. With the cache this means: reset and re-prefill those
tokens (one big pass every ``block_size // 2`` tokens, so the cost stays
amortised). Without the cache the model is simply run on the same window. Because
both paths feed the model exactly the same tokens at the same positions, greedy
decoding gives token-for-token identical output with and without the cache.
(A sliding window that moves by one token every step would keep slightly more
context, but with learned absolute positions it invalidates the whole cache on
every step, so the cache would save nothing.)

*Many samples of one prompt* (chapter 10's GRPO): :func:`sample_group_ids` samples a
group of continuations as one batch with a KV cache of that many rows; the rows
share the prompt, so they need no padding.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch

from .sampling import (
    check_generation_args,
    last_logits,
    model_device,
    sample_logits,
    sample_next,
    seeded_generator,
    top_k_filter,
    top_p_filter,
    window_start,
)
from .speculative import speculative_ids

__all__ = [
    "check_generation_args",
    "continuation_text",
    "encode_prompt",
    "generate",
    "generate_ids",
    "prepare_prompt",
    "sample_group_ids",
    "sample_next",
    "top_k_filter",
    "top_p_filter",
    "window_start",
    "StreamDecoder",
    "stream_text",
    "time_generation",
]



def generate_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    use_cache: bool = True,
    stop_ids: Sequence[int] = (),
) -> Iterator[int]:
    """Yield new token ids one at a time (the engine under :func:`generate`).

    ``prompt_ids`` must be non-empty and already cropped to ``block_size`` (the
    window policy then handles growth). With ``use_cache`` the model is prefilled
    on the window and fed one token per step; without it the whole window is fed
    every step. Generation stops after ``max_new_tokens`` or right after yielding
    a token in ``stop_ids``. Arguments are checked now, not at the first ``next``.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty: start from [tokenizer.eot_id] (generate() does this for you)")
    block_size = int(model.config.block_size)
    if len(ids) > block_size:
        raise ValueError(
            f"prompt_ids has {len(ids)} tokens but the context is {block_size}: crop to ids[-{block_size}:] "
            "(generate() does this for you)"
        )
    return _start_generation(model, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop_ids)


def _start_generation(
    model: torch.nn.Module,
    ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    seed: int | None,
    use_cache: bool,
    stop_ids: Sequence[int],
) -> Iterator[int]:
    """The token loop of :func:`generate_ids` on checked arguments: the seeded generator, the cache or none."""
    generator = seeded_generator(model_device(model), seed)
    if use_cache and not hasattr(model, "new_kv_cache"):
        warnings.warn(
            "use_cache=True but this model has no new_kv_cache(); generating without a KV cache",
            stacklevel=3,
        )
        use_cache = False
    stop = {int(s) for s in stop_ids}
    loop_ids = list(ids)  # the loop appends to its own copy: the caller still holds the prompt alone
    return _generate_loop(model, loop_ids, max_new_tokens, temperature, top_k, top_p, generator, use_cache, stop)


@torch.no_grad()
def _generate_loop(
    model: torch.nn.Module,
    ids: list[int],
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    use_cache: bool,
    stop: set[int],
) -> Iterator[int]:
    block_size = int(model.config.block_size)
    device = model_device(model)
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(batch_size=1) if use_cache else None
        start, cached_upto = 0, 0  # window start; ids[start:cached_upto] are in the cache
        for _ in range(max_new_tokens):
            start_now = window_start(len(ids), start, block_size)
            if cache is None:
                window = torch.tensor([ids[start_now:]], dtype=torch.long, device=device)
                logits = last_logits(model, window)[0]
            else:
                if start_now != start or cached_upto == 0:  # new window: (re-)prefill
                    cache.reset()
                    cached_upto = start_now
                feed = torch.tensor([ids[cached_upto:]], dtype=torch.long, device=device)
                logits = last_logits(model, feed, kv_cache=cache)[0]
                cached_upto = len(ids)
            start = start_now
            nxt = int(sample_logits(logits, temperature, top_k, top_p, generator))
            ids.append(nxt)
            yield nxt
            if nxt in stop:
                break
    finally:
        model.train(was_training)


def sample_group_ids(
    model: torch.nn.Module,
    prompt_ids: Sequence[int],
    group_size: int,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
) -> list[list[int]]:
    """``group_size`` continuations of ONE prompt, sampled together as one batch; a list of new ids per row.

    What GRPO needs: a group of samples of the same prompt. Every row starts with the
    same prompt, so the rows need no padding: one prefill of the (G, T) batch fills a
    KV cache of ``group_size`` rows, then each step feeds the G newest tokens (one per
    row) and samples G next tokens with :func:`sample_next`'s pipeline. A row ends
    right after it writes a token in ``stop_ids`` (that token is the row's last); a
    finished row is still fed (its stop token again, a pad whose outputs are never
    used) so that the batch keeps its shape, but it is not extended. Sampling stops
    when every row has finished, or after ``max_new_tokens``.

    No window policy here: the prompt plus ``max_new_tokens`` must fit in the context
    (a ValueError says by how much it does not), so every row is scored later on
    exactly the tokens it was sampled from. A group of one with a ``seed`` gives the
    same tokens as :func:`generate_ids` with that seed (the same draws from the same
    generator); with ``temperature=0`` every row is the greedy continuation.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise ValueError(f"group_size must be an integer >= 1 (samples of the prompt), got {group_size!r}")
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty: start from [tokenizer.eot_id]")
    block_size = int(model.config.block_size)
    if len(ids) + max_new_tokens > block_size:
        raise ValueError(
            f"the prompt ({len(ids)} tokens) plus max_new_tokens={max_new_tokens} is longer than the context "
            f"({block_size}): ask for at most max_new_tokens={max(block_size - len(ids), 0)}, or shorten the prompt"
        )
    if max_new_tokens == 0:
        return [[] for _ in range(group_size)]
    generator = seeded_generator(model_device(model), seed)
    return _group_loop(model, ids, group_size, max_new_tokens, temperature, top_k, top_p, generator,
                       {int(s) for s in stop_ids})


@torch.no_grad()
def _group_loop(
    model: torch.nn.Module,
    ids: list[int],
    group_size: int,
    max_new_tokens: int,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    generator: torch.Generator | None,
    stop: set[int],
) -> list[list[int]]:
    """The token loop of :func:`sample_group_ids` on checked arguments (with the KV cache where the model has one)."""
    device = model_device(model)
    done = torch.zeros(group_size, dtype=torch.bool, device=device)
    stop_t = torch.tensor(sorted(stop), dtype=torch.long, device=device)
    seq = torch.tensor([ids], dtype=torch.long, device=device).repeat(group_size, 1)  # (G, T): the shared prompt
    feed, last, new = seq, seq[:, -1], []
    was_training = model.training
    model.eval()
    try:
        cache = model.new_kv_cache(batch_size=group_size) if hasattr(model, "new_kv_cache") else None
        for _ in range(max_new_tokens):
            logits = last_logits(model, feed, cache) if cache is not None else last_logits(model, seq)
            nxt = sample_logits(logits, temperature, top_k, top_p, generator)  # (G,)
            last = torch.where(done, last, nxt)  # a finished row is fed its stop token again
            new.append(last)
            done = done | torch.isin(last, stop_t)
            if bool(done.all()):
                break
            feed = last[:, None]
            if cache is None:
                seq = torch.cat([seq, feed], dim=1)
    finally:
        model.train(was_training)
    return [_cut_after_stop(row, stop) for row in torch.stack(new, dim=1).tolist()]


def _cut_after_stop(row: list[int], stop: set[int]) -> list[int]:
    """``row`` up to and including its first token in ``stop`` (all of it if it has none)."""
    for i, token in enumerate(row):
        if token in stop:
            return row[: i + 1]
    return row


# ----------------------------------------------------------------------------- text in, text out


def encode_prompt(tokenizer: Any, prompt: str) -> list[int]:
    """Encode ``prompt``; an empty prompt becomes ``[eot_id]``; unknown characters get a clear error."""
    if not isinstance(prompt, str):
        raise TypeError(f"prompt must be a str, got {type(prompt).__name__}")
    if prompt == "":
        eot = getattr(tokenizer, "eot_id", None)
        if eot is None:
            raise ValueError("empty prompt and the tokenizer has no eot_id to start from: pass some text")
        return [int(eot)]
    try:
        try:
            return list(tokenizer.encode(prompt, allowed_special="all"))
        except TypeError:  # a tokenizer without special-token handling
            return list(tokenizer.encode(prompt))
    except (ValueError, KeyError) as err:
        bad = []
        for ch in dict.fromkeys(prompt):
            try:
                tokenizer.encode(ch)
            except (ValueError, KeyError):
                bad.append(f"{ch!r} (U+{ord(ch):04X})")
        named = ", ".join(bad) if bad else str(err)
        raise ValueError(
            f"the prompt contains characters this tokenizer cannot encode: {named}. "
            "Remove or replace them, or use a byte-level tokenizer (BPE), which encodes any text."
        ) from None


class StreamDecoder:
    """Turn token ids into text pieces as they arrive, never splitting a character.

    A byte-level token can end in the middle of a multi-byte UTF-8 character, and
    some tokenizers (SentencePiece) decode a piece differently at the start of a
    text. So we decode ``context + pending`` and emit only the new suffix:

    - if it does not end in U+FFFD, the token boundary is clean: emit the rest and
      start a new pending run (the last few tokens stay as left ``context``, which
      keeps every decode short);
    - if it ends in U+FFFD (an incomplete character, or a stray byte), everything
      before that last character is final: emit it, and hold the last one back
      until more tokens show what it becomes.

    Works with any tokenizer that has ``decode(ids) -> str``; the pieces joined are
    exactly the decode of all the ids.
    """

    CONTEXT = 8  # tokens of left context kept for decoding

    def __init__(self, tokenizer: Any, prefix_ids: Sequence[int] = ()):
        self.tokenizer = tokenizer
        self.context = [int(i) for i in prefix_ids][-self.CONTEXT :]
        self.pending: list[int] = []
        self.sent = 0  # characters of the pending run's text already emitted

    def _delta(self) -> str:
        base = self.tokenizer.decode(self.context) if self.context else ""
        full = self.tokenizer.decode(self.context + self.pending)
        return full[len(base) :] if full.startswith(base) else self.tokenizer.decode(self.pending)

    def push(self, token_id: int) -> str:
        """Add one token; return the newly final text ('' while a character is incomplete)."""
        self.pending.append(int(token_id))
        text = self._delta()
        if text.endswith("\ufffd"):
            piece = text[self.sent : len(text) - 1]
            self.sent += len(piece)
            return piece
        return self._commit(text)

    def _commit(self, text: str) -> str:
        piece = text[self.sent :]
        self.context = (self.context + self.pending)[-self.CONTEXT :]
        self.pending, self.sent = [], 0
        return piece

    def flush(self) -> str:
        """Whatever is still held back (U+FFFD if generation stopped mid-character)."""
        return self._commit(self._delta()) if self.pending else ""


def continuation_text(tokenizer: Any, prompt_ids: list[int], new_ids: list[int]) -> str:
    """decode(prompt + new) minus decode(prompt): the text the new tokens add."""
    if not new_ids:
        return ""
    base = tokenizer.decode(prompt_ids)
    full = tokenizer.decode(prompt_ids + new_ids)
    return full[len(base) :] if full.startswith(base) else tokenizer.decode(new_ids)


def prepare_prompt(model: torch.nn.Module, prompt: str, tokenizer: Any) -> tuple[Any, list[int]]:
    """(tokenizer, prompt ids) for text in: the model's own tokenizer unless one is given, an empty prompt as
    ``[eot_id]``, a prompt longer than the context cropped to its last ``block_size`` tokens with a warning."""
    tok = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    if tok is None:
        raise ValueError(
            "the model has no tokenizer attached: set model.tokenizer = your_tokenizer "
            "(checkpoints from chapter 05 carry one) or pass tokenizer=..."
        )
    ids = encode_prompt(tok, prompt)
    block_size = int(model.config.block_size)
    if len(ids) > block_size:
        warnings.warn(
            f"the prompt is {len(ids)} tokens but the model's context is {block_size}: "
            f"it sees only the last {block_size} tokens of the prompt",
            stacklevel=3,
        )
        ids = ids[-block_size:]
    return tok, ids


def generate(
    model: torch.nn.Module,
    prompt: str = "",
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stream: bool = False,
    use_cache: bool = True,
    tokenizer: Any = None,
    stop_at_eot: bool = True,
    draft: torch.nn.Module | None = None,
    lookahead: int = 4,
) -> str | Iterator[str]:
    """Continue ``prompt`` with up to ``max_new_tokens`` tokens; return prompt + continuation.

    - ``temperature=0`` is greedy; ``top_k`` / ``top_p`` restrict sampling; ``seed``
      makes sampling reproducible (without it, torch's global RNG is used).
    - ``stream=True`` returns an iterator of text pieces (the prompt first, then
      each new piece as soon as it forms complete characters); ``"".join(...)`` of
      it equals the non-streaming result.
    - ``use_cache`` uses the KV cache (same greedy tokens, much faster).
    - The model's own ``model.tokenizer`` is used unless ``tokenizer`` is given.
    - An empty prompt starts from ``<|endoftext|>``; a prompt longer than the
      context is cropped to its last ``block_size`` tokens with a warning.
    - ``stop_at_eot`` (on by default) stops right after the model writes
      ``<|endoftext|>``: in training that token separated one document from the
      next, so whatever follows it starts a new, unrelated document. The text then
      ends with ``<|endoftext|>``, which shows why it is shorter than asked.
      ``stop_at_eot=False`` always generates ``max_new_tokens`` tokens (as
      :func:`generate_ids` does unless given ``stop_ids``); a tokenizer without an
      ``eot_id`` never stops early.
    - ``draft``: a much smaller model with the same tokenizer proposes ``lookahead``
      tokens at a time and this model checks them in one pass (speculative decoding,
      speculative.py): the text follows this model's distribution exactly (greedy: the
      very same text), often faster. Needs the KV cache.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    tok, ids = prepare_prompt(model, prompt, tokenizer)  # a non-empty prompt that fits the context
    eot = getattr(tok, "eot_id", None)
    stop_ids = (eot,) if stop_at_eot and eot is not None else ()
    if draft is not None:
        if not use_cache:
            raise ValueError("speculative decoding (draft=...) rolls back the KV caches: it needs use_cache=True")
        new = speculative_ids(model, draft, ids, max_new_tokens, lookahead, temperature, top_k, top_p, seed, stop_ids)
    else:
        new = _start_generation(model, ids, max_new_tokens, temperature, top_k, top_p, seed, use_cache, stop_ids)
    if stream:
        return stream_text(tok, new, prompt_ids=ids, prompt=prompt)
    return prompt + continuation_text(tok, ids, list(new))


def stream_text(
    tokenizer: Any, new_ids: Iterable[int], *, prompt_ids: Sequence[int] = (), prompt: str = ""
) -> Iterator[str]:
    """The text of ``new_ids`` in pieces, each yielded as soon as it forms complete characters.

    ``prompt`` (if any) comes first, as given; ``prompt_ids`` is the context the new
    tokens continue, so each piece decodes as it would after the prompt (see
    :class:`StreamDecoder`). ``"".join`` of the pieces is ``prompt`` plus the decoded
    continuation. Used by :func:`generate` (``stream=True``) and by the chat helpers.
    """
    if prompt:
        yield prompt
    dec = StreamDecoder(tokenizer, prompt_ids)
    for token_id in new_ids:
        piece = dec.push(token_id)
        if piece:
            yield piece
    tail = dec.flush()
    if tail:
        yield tail


def time_generation(
    model: torch.nn.Module, prompt_ids: Sequence[int], max_new_tokens: int, use_cache: bool
) -> list[float]:
    """Seconds elapsed after each generated token (greedy): the data for a time-vs-length plot."""
    t0 = time.perf_counter()
    stamps = []
    for _ in generate_ids(model, prompt_ids, max_new_tokens, temperature=0, use_cache=use_cache):
        stamps.append(time.perf_counter() - t0)
    return stamps
