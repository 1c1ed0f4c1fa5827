"""Speculative decoding: a small draft model guesses, the big target model checks (chapter 11).

Decoding one token costs one forward pass of the target, and at batch size one that
pass is memory-bound: every weight is read to produce a single token. Checking k
tokens at once costs about the same as producing one. So a much smaller *draft*
model proposes ``k`` tokens, one by one with its own KV cache, and the target scores
all of them in ONE pass (Leviathan et al. 2023, "Fast Inference from Transformers via
Speculative Decoding"; Chen et al. 2023, "Accelerating Large Language Model Decoding
with Speculative Sampling")::

    draft:   x1 ~ q1, x2 ~ q2, ..., xk ~ qk           k cheap passes
    target:  p1, p2, ..., p(k+1) for [last, x1, ..., xk]   one pass
    accept x_i with probability min(1, p_i(x_i) / q_i(x_i)), left to right;
    at the first rejection draw the replacement from norm(max(0, p_i - q_i)) and stop;
    if all k are accepted, draw a bonus token from p(k+1).

Why the output is exactly the target's distribution: a token x comes out at step i
either accepted, with probability q(x) min(1, p(x)/q(x)) = min(p(x), q(x)), or as the
replacement after a rejection, with probability (sum_y max(0, p(y) - q(y))) times
max(0, p(x) - q(x)) / sum_y max(0, p(y) - q(y)) = max(0, p(x) - q(x)). The two add up
to min(p, q) + max(0, p - q) = p(x). So a bad draft costs speed, never quality. With
``temperature=0`` both distributions are one-hot on their argmax and the rule becomes
"accept while the draft's token is the target's argmax": the output is the target's
own greedy text.

Rollback: both KV caches hold the rejected tokens' keys and values after a round;
:meth:`KVCache.truncate` sets their length back to the accepted prefix, and the next
round overwrites the rest. The caches only ever hold tokens in order, so RoPE offsets,
GQA and learned positions need nothing special. The context window follows
generate()'s policy (sampling.window_start) for the target, so every target
prediction sees exactly the window plain decoding would have given it; a round's
lookahead shrinks when the window is nearly full. The draft has its own window.

What it costs: when the draft is wrong the target's pass checked tokens it throws
away, and the draft's own passes are pure overhead. The speed-up is roughly
(expected tokens per round) / (1 + k * draft cost / target cost); it pays when the
draft is much cheaper than the target and agrees with it often.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .sampling import (
    check_generation_args,
    model_device,
    sampling_probs,
    seeded_generator,
    window_start,
)

__all__ = ["SpeculativeStats", "accept_draft", "check_draft", "speculative_ids"]

PROBE_TEXT = "The quick brown fox, 1066! Ça va? naïve — 日本語 🙂\n  indented\tline"


@dataclass
class SpeculativeStats:
    """What a speculative run did: draft tokens proposed and accepted, target passes (rounds), tokens out."""

    proposed: int = 0
    accepted: int = 0
    rounds: int = 0
    tokens: int = 0

    @property
    def acceptance_rate(self) -> float:
        """Share of the draft's proposals the target accepted."""
        return self.accepted / self.proposed if self.proposed else 0.0

    @property
    def tokens_per_round(self) -> float:
        """New tokens per target forward pass (plain decoding: 1)."""
        return self.tokens / self.rounds if self.rounds else 0.0


def _tokenizer_difference(a: Any, b: Any) -> str | None:
    """Why tokenizers ``a`` and ``b`` differ, or None when they encode and decode alike."""
    if type(a) is not type(b):
        return f"{type(b).__name__} against the target's {type(a).__name__}"
    if a.vocab_size != b.vocab_size:
        return f"{b.vocab_size} ids against the target's {a.vocab_size}"
    sample = list(range(0, a.vocab_size, max(1, a.vocab_size // 256)))
    if any(a.decode([i]) != b.decode([i]) for i in sample):
        return "the same ids decode to different text"
    try:
        same = a.encode_ordinary(PROBE_TEXT) == b.encode_ordinary(PROBE_TEXT)
    except (ValueError, KeyError):  # a character tokenizer lacks some of the probe's characters: use its own
        probe = a.decode(sample)
        same = a.encode(probe, allowed_special="all") == b.encode(probe, allowed_special="all")
    return None if same else "they encode the same text to different ids"


def check_draft(target: torch.nn.Module, draft: torch.nn.Module, tokenizer: Any = None) -> None:
    """Raise a ValueError unless ``draft`` can draft for ``target``: both cached GPTs, one tokenizer.

    The acceptance rule compares p(x) and q(x) for the same id x, so an id must mean
    the same text to both models.
    """
    tok = tokenizer if tokenizer is not None else getattr(target, "tokenizer", None)
    draft_tok = getattr(draft, "tokenizer", None)
    for name, m in (("target", target), ("draft", draft)):
        if not hasattr(m, "new_kv_cache"):
            raise ValueError(f"the {name} model has no new_kv_cache(): speculative decoding needs two course GPTs")
    if tok is None or draft_tok is None:
        raise ValueError("speculative decoding needs the tokenizer of both models: attach it as model.tokenizer "
                         "(checkpoints carry theirs)")
    why = _tokenizer_difference(tok, draft_tok)
    if why is not None:
        raise ValueError(f"the draft model's tokenizer differs from the target's ({why}): the two models must "
                         "share one tokenizer, since each draft token is checked by its id; train the draft "
                         "with the target's tokenizer (draft.tokenizer = target.tokenizer before training)")
    if draft.config.vocab_size < tok.vocab_size:
        raise ValueError(f"the draft model predicts {draft.config.vocab_size} ids but the tokenizer has "
                         f"{tok.vocab_size}: build the draft with vocab_size >= {tok.vocab_size}")


def accept_draft(p: torch.Tensor, q: torch.Tensor, drafted: Sequence[int],
                 generator: torch.Generator | None = None) -> tuple[int, int]:
    """The acceptance rule: (how many drafted tokens are kept, the token that follows them).

    ``p`` (k+1, V): the target's distributions at the k drafted positions and one more;
    ``q`` (k, V): the draft's distributions the tokens ``drafted`` (k) were drawn from.
    Token i is kept with probability min(1, p_i(x_i) / q_i(x_i)); at the first rejection
    the next token is drawn from max(0, p_i - q_i), renormalised; when all are kept it is
    drawn from p_k (the bonus). The tokens out follow p exactly (see the module docstring).
    """
    for i, x in enumerate(drafted):
        px, qx = float(p[i, x]), float(q[i, x])
        if px >= qx:  # min(1, p/q) = 1: always kept, no draw needed
            continue
        if px > 0 and float(torch.rand((), generator=generator, device=p.device)) * qx < px:
            continue
        residual = (p[i] - q[i]).clamp(min=0)
        return i, int(torch.multinomial(residual / residual.sum(), 1, generator=generator))
    k = len(drafted)
    return k, int(torch.multinomial(p[k], 1, generator=generator))


def speculative_ids(
    target: torch.nn.Module,
    draft: torch.nn.Module,
    prompt_ids: Sequence[int],
    max_new_tokens: int = 200,
    lookahead: int = 4,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
    stop_ids: Sequence[int] = (),
    stats: SpeculativeStats | None = None,
) -> Iterator[int]:
    """Yield new token ids drawn from ``target``'s distribution, ``draft`` proposing ``lookahead`` at a time.

    The same contract as generate_ids (prompt non-empty and within the target's context,
    stop right after a token in ``stop_ids``), and the same sampling arguments, applied
    to both models. ``stats`` (a :class:`SpeculativeStats`) counts proposals, acceptances
    and rounds as the tokens come out. Arguments are checked now, not at the first ``next``.
    """
    check_generation_args(max_new_tokens, temperature, top_k, top_p)
    if isinstance(lookahead, bool) or not isinstance(lookahead, int) or lookahead < 1:
        raise ValueError(f"lookahead must be an integer >= 1 (draft tokens per round), got {lookahead!r}")
    check_draft(target, draft)
    ids = [int(i) for i in prompt_ids]
    if not ids:
        raise ValueError("prompt_ids is empty: start from [tokenizer.eot_id] (generate() does this for you)")
    if len(ids) > target.config.block_size:
        raise ValueError(f"prompt_ids has {len(ids)} tokens but the target's context is "
                         f"{target.config.block_size}: crop to ids[-{target.config.block_size}:]")
    rounds = _Rounds(target, draft, ids, lookahead, (temperature, top_k, top_p),
                     seeded_generator(model_device(target), seed), stats if stats is not None else SpeculativeStats())
    return rounds.run(max_new_tokens, {int(s) for s in stop_ids})


class _Rounds:
    """The state of one speculative run: the sequence, each model's cache and window."""

    def __init__(self, target: torch.nn.Module, draft: torch.nn.Module, ids: list[int], lookahead: int,
                 sampling: tuple[float, int | None, float | None], generator: torch.Generator | None,
                 stats: SpeculativeStats) -> None:
        self.target, self.draft, self.ids, self.k = target, draft, ids, lookahead
        self.sampling, self.generator, self.stats = sampling, generator, stats
        self.vocab = int(target.tokenizer.vocab_size)  # both models' logits are cut to the ids that have text
        self.device = model_device(target)
        self.caches = {"target": target.new_kv_cache(1), "draft": draft.new_kv_cache(1)}
        self.start = {"target": 0, "draft": 0}  # each model's window start in ids
        self.cached = {"target": 0, "draft": 0}  # ids[start:cached] are in that model's cache

    def _window(self, name: str, n_tokens: int) -> None:
        """Move ``name``'s window for a sequence of ``n_tokens`` (generate()'s policy); reset its cache if it moved."""
        block = int((self.target if name == "target" else self.draft).config.block_size)
        start = window_start(n_tokens, self.start[name], block)
        if start != self.start[name] or self.cached[name] < start:
            self.caches[name].reset()
            self.start[name] = self.cached[name] = start

    def _forward(self, name: str, tokens: list[int]) -> torch.Tensor:
        """Feed ``tokens`` to ``name`` through its cache; its logits (len(tokens), vocab)."""
        model = self.target if name == "target" else self.draft
        x = torch.tensor([tokens], dtype=torch.long, device=self.device)
        logits, _ = model(x, kv_cache=self.caches[name])
        self.cached[name] += len(tokens)
        return logits[0, :, : self.vocab]

    def _propose(self, k: int) -> tuple[list[int], torch.Tensor]:
        """The draft's k tokens and the distributions (k, V) they were drawn from."""
        self._window("draft", len(self.ids) + k - 1)
        feed, drafted, dists = self.ids[self.cached["draft"]:], [], []
        for _ in range(k):
            q = sampling_probs(self._forward("draft", feed)[-1], *self.sampling)
            x = int(torch.multinomial(q, 1, generator=self.generator))
            drafted.append(x)
            dists.append(q)
            feed = [x]
        return drafted, torch.stack(dists)

    def _round(self, remaining: int) -> list[int]:
        """One draft-and-verify round: the accepted tokens and the one after them (1 .. k+1 tokens)."""
        n = len(self.ids)
        self._window("target", n)
        room = int(self.target.config.block_size) - (n - self.start["target"])  # predictions left in this window
        # after a jump the draft's window must still start before the newest token: k <= its block_size // 2
        k = min(self.k, room, remaining - 1, max(1, int(self.draft.config.block_size) // 2))
        drafted, q = self._propose(k) if k > 0 else ([], None)
        logits = self._forward("target", self.ids[self.cached["target"]:] + drafted)[-(k + 1):]
        p = sampling_probs(logits, *self.sampling)  # (k+1, V)
        kept, nxt = accept_draft(p, q if q is not None else p[:0], drafted, self.generator)
        for name in ("target", "draft"):  # roll back: keep the tokens before `nxt`, which is fed next round
            keep = min(self.cached[name], n + kept)
            self.caches[name].truncate(keep - self.start[name])
            self.cached[name] = keep
        self.stats.proposed += k
        self.stats.accepted += kept
        self.stats.rounds += 1
        return drafted[:kept] + [nxt]

    @torch.no_grad()
    def run(self, max_new_tokens: int, stop: set[int]) -> Iterator[int]:
        """Rounds until ``max_new_tokens`` tokens or a stop token; the models in eval mode meanwhile."""
        modes = (self.target.training, self.draft.training)
        self.target.eval()
        self.draft.eval()
        try:
            produced = 0
            while produced < max_new_tokens:
                for token in self._round(max_new_tokens - produced):
                    self.ids.append(token)
                    produced += 1
                    self.stats.tokens += 1
                    yield token
                    if token in stop:
                        return
        finally:
            self.target.train(modes[0])
            self.draft.train(modes[1])
