"""Many prompts at once: batched generation with continuous batching (chapter 11).

Decoding one sequence reads every weight of the model to produce one token, so on
most hardware a decode step of 16 sequences costs little more than a step of one:
the weights are read once and used 16 times. Batching is how servers turn that
into throughput. Two problems come with it:

* *Prompts of different lengths.* We keep a ragged cache (attention.SlotKVCache):
  every row ("slot") holds its own sequence at its own positions, and each row
  attends only to its own keys. The alternative, left padding, shifts positions
  (a model with learned positions would see them at the wrong places) and wastes
  the padded cells; a ragged cache needs a per-row mask and per-row positions, both
  cheap. Each prompt is prefilled on its own (one matrix-matrix pass, already
  efficient) and copied into its slot; only the decode steps are batched.
* *Outputs of different lengths.* Static batching waits for the longest member
  before starting the next batch, so finished rows sit idle. Continuous batching
  (Yu et al. 2022, "Orca") lets a row that finished free its slot at once, and
  the next waiting prompt takes it at the next step. That is what
  :class:`BatchEngine` does, in its simplest form: admit, decode one token for
  every running row, retire the finished, repeat.

Each row follows generate()'s context-window policy on its own: when its window
would outgrow the context, that row alone is re-prefilled on its last
``block_size // 2`` tokens. So, for greedy decoding, every row gets exactly the
tokens :func:`generation.generate_ids` gives its prompt alone (up to float
rounding between a batch of one and a batch of many, which can only flip a
near-tie).

What it costs: the cache holds ``slots`` rows of up to block_size positions, and a
step reads the longest row's keys for every row (masked), so wildly different
lengths waste some attention work; the prefill of a new prompt pauses the batch
for one pass. Production servers (vLLM's paged attention) remove both with
paged caches and chunked prefill.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from .attention import KVCache
from .generation import continuation_text, prepare_prompt
from .sampling import (
    check_generation_args,
    last_logits,
    model_device,
    sample_logits,
    seeded_generator,
    window_start,
)

__all__ = ["BatchEngine", "BatchRequest", "generate_batch", "generate_batch_ids"]


@dataclass(eq=False)
class BatchRequest:
    """One prompt in a :class:`BatchEngine`: its settings, the tokens so far, how it ended."""

    prompt_ids: list[int]
    max_new_tokens: int
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    stop_ids: frozenset[int] = frozenset()
    on_token: Callable[[BatchRequest, int], Any] | None = None
    on_finish: Callable[[BatchRequest], Any] | None = None
    generator: torch.Generator | None = None
    new_ids: list[int] = field(default_factory=list)
    finished: bool = False
    finish_reason: str | None = None  # "stop" (wrote a stop id, the last of new_ids), "length", "cancelled"
    cancelled: bool = False
    start: int = 0  # window start in prompt_ids + new_ids

    @property
    def ids(self) -> list[int]:
        """The whole sequence: prompt then new tokens."""
        return self.prompt_ids + self.new_ids


class BatchEngine:
    """Continuous batching over ``slots`` rows: submit prompts any time, call :meth:`step` to advance them all.

    ``submit`` and ``cancel`` may be called from any thread; ``step`` from one thread
    (a server's worker). Each new token goes to the request's ``on_token`` callback,
    and its end to ``on_finish``, both called from the stepping thread.
    """

    def __init__(self, model: torch.nn.Module, slots: int = 16) -> None:
        if isinstance(slots, bool) or not isinstance(slots, int) or slots < 1:
            raise ValueError(f"slots must be an integer >= 1 (rows decoded together), got {slots!r}")
        if not hasattr(model, "new_slot_cache"):
            raise ValueError("batched generation needs a course GPT (model.new_slot_cache)")
        self.model = model
        self.slots = slots
        self.block_size = int(model.config.block_size)
        self.device = model_device(model)
        self.cache = model.new_slot_cache(slots)
        self.running: list[BatchRequest | None] = [None] * slots  # the request in each slot
        self.waiting: deque[BatchRequest] = deque()
        self.lock = threading.Lock()

    @property
    def pending(self) -> int:
        """Requests running or waiting."""
        with self.lock:
            return len(self.waiting) + sum(r is not None for r in self.running)

    def submit(self, prompt_ids: Sequence[int], max_new_tokens: int, temperature: float = 1.0,
               top_k: int | None = None, top_p: float | None = None, seed: int | None = None,
               stop_ids: Sequence[int] = (), on_token: Callable[[BatchRequest, int], Any] | None = None,
               on_finish: Callable[[BatchRequest], Any] | None = None) -> BatchRequest:
        """Queue a prompt (ids, non-empty, within the context); it starts at the next :meth:`step` with a free slot."""
        check_generation_args(max_new_tokens, temperature, top_k, top_p)
        ids = [int(i) for i in prompt_ids]
        if not ids:
            raise ValueError("the prompt is empty: start from [tokenizer.eot_id]")
        if len(ids) > self.block_size:
            raise ValueError(f"the prompt has {len(ids)} tokens but the context is {self.block_size}: "
                             f"shorten it (or keep its last {self.block_size} tokens)")
        request = BatchRequest(ids, max_new_tokens, temperature, top_k, top_p, frozenset(int(s) for s in stop_ids),
                               on_token, on_finish, seeded_generator(self.device, seed))
        with self.lock:
            self.waiting.append(request)
        return request

    def cancel(self, request: BatchRequest) -> None:
        """Stop ``request``: its slot is freed at the next step, and on_finish gets "cancelled"."""
        with self.lock:
            request.cancelled = True

    # ------------------------------------------------------------------ one step
    @torch.no_grad()
    def step(self) -> bool:
        """Admit waiting prompts into free slots, then one token for every running row; True while work remains."""
        was_training = self.model.training
        self.model.eval()
        try:
            self._retire_cancelled()
            self._admit()
            self._decode()
        finally:
            self.model.train(was_training)
        return self.pending > 0

    def run(self) -> None:
        """Step until every submitted request has finished."""
        while self.step():
            pass

    def _finish(self, request: BatchRequest, reason: str) -> None:
        request.finished, request.finish_reason = True, reason
        if request.on_finish is not None:
            request.on_finish(request)

    def _retire_cancelled(self) -> None:
        with self.lock:
            gone = [r for r in self.waiting if r.cancelled]
            self.waiting = deque(r for r in self.waiting if not r.cancelled)
            for slot, r in enumerate(self.running):
                if r is not None and r.cancelled:
                    gone.append(r)
                    self.running[slot] = None
        for r in gone:
            self._finish(r, "cancelled")

    def _prefill(self, request: BatchRequest) -> tuple[torch.Tensor, KVCache]:
        """Run the request's window alone through a fresh one-row cache: its next-token logits (V,) and that cache."""
        cache = self.model.new_kv_cache(batch_size=1)
        window = torch.tensor([request.ids[request.start:]], dtype=torch.long, device=self.device)
        return last_logits(self.model, window, kv_cache=cache)[0], cache

    def _admit(self) -> None:
        """Fill free slots from the queue: prefill each prompt, copy it into its slot, emit its first token."""
        while True:
            with self.lock:
                free = [s for s, r in enumerate(self.running) if r is None]
                if not free or not self.waiting:
                    return
                request, slot = self.waiting.popleft(), free[0]
                if request.max_new_tokens > 0:
                    self.running[slot] = request
            if request.max_new_tokens == 0:  # nothing to generate: done before it starts
                self._finish(request, "length")
                continue
            logits, cache = self._prefill(request)
            self.cache.load(slot, cache)
            self._emit(slot, request, logits)

    def _emit(self, slot: int, request: BatchRequest, logits: torch.Tensor) -> None:
        """Sample the request's next token from ``logits``, hand it over, and retire the request if it is done."""
        token = int(sample_logits(logits, request.temperature, request.top_k, request.top_p, request.generator))
        request.new_ids.append(token)
        if request.on_token is not None:
            request.on_token(request, token)
        reason = "stop" if token in request.stop_ids else (
            "length" if len(request.new_ids) >= request.max_new_tokens else None)
        if reason is not None:
            with self.lock:
                self.running[slot] = None
            self._finish(request, reason)

    def _decode(self) -> None:
        """One token for every running row: a row whose window jumps is re-prefilled alone, the rest in one batch."""
        with self.lock:
            rows = [(s, r) for s, r in enumerate(self.running) if r is not None]
        batch = []
        for slot, request in rows:
            start = window_start(len(request.ids), request.start, self.block_size)
            if start != request.start:  # the window moved: this row starts over on its last block_size // 2 tokens
                request.start = start
                logits, cache = self._prefill(request)
                self.cache.load(slot, cache)
                self._emit(slot, request, logits)
            else:
                batch.append((slot, request))
        if not batch:
            return
        self.cache.select([slot for slot, _ in batch])
        last = torch.tensor([[r.ids[-1]] for _, r in batch], dtype=torch.long, device=self.device)  # (B, 1)
        logits = last_logits(self.model, last, kv_cache=self.cache)  # (B, V)
        for i, (slot, request) in enumerate(batch):
            self._emit(slot, request, logits[i])


def generate_batch_ids(
    model: torch.nn.Module,
    prompts_ids: Sequence[Sequence[int]],
    max_new_tokens: int = 200,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    slots: int | None = None,
) -> list[list[int]]:
    """The new ids for every prompt (lists of ids, each non-empty and within the context), decoded together.

    ``slots`` rows run at once (default: all prompts); with fewer slots than prompts,
    a finished row's slot goes to the next prompt. With a ``seed``, prompt i samples
    with seed ``seed + i``: the same tokens generate_ids(prompt_i, seed=seed + i) gives.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    if not prompts_ids:
        return []
    n_slots = len(prompts_ids) if slots is None else slots
    engine = BatchEngine(model, min(n_slots, len(prompts_ids)) if isinstance(n_slots, int) else n_slots)
    requests = [engine.submit(p, max_new_tokens, temperature, top_k, top_p,
                              None if seed is None else seed + i, stop_ids)
                for i, p in enumerate(prompts_ids)]
    if max_new_tokens > 0:
        engine.run()
    return [r.new_ids for r in requests]


def generate_batch(
    model: torch.nn.Module,
    prompts: Sequence[str],
    max_new_tokens: int = 200,
    temperature: float = 0.8,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    slots: int | None = None,
    stop_at_eot: bool = True,
    tokenizer: Any = None,
) -> list[str]:
    """Continue every prompt, decoding them together: generate()'s text in, text out, for a list.

    Each result is prompt + continuation, as :func:`generation.generate` returns it
    for that prompt alone (greedy: the same text; with a ``seed``, prompt i gets seed
    ``seed + i``). ``slots`` caps the rows decoded at once (continuous batching).
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings: for one prompt use generate()")
    prepared = [prepare_prompt(model, p, tokenizer) for p in prompts]
    if not prepared:
        return []
    tok = prepared[0][0]
    eot = getattr(tok, "eot_id", None)
    stop = (eot,) if stop_at_eot and eot is not None else ()
    new = generate_batch_ids(model, [ids for _, ids in prepared], max_new_tokens, temperature, top_k, top_p,
                             seed, stop, slots)
    return [p + continuation_text(tok, ids, n) for p, (_, ids), n in zip(prompts, prepared, new)]
