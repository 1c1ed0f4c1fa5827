"""Causal self-attention: the functional form chapter 03 derives, the module GPT uses, and the KV cache.

Three pieces, from smallest to largest:

* :func:`attention` -- softmax(q k^T / sqrt(d)) v with an optional causal mask, written
  out step by step. Chapter 03 derives it and checks it against PyTorch's fused
  ``torch.nn.functional.scaled_dot_product_attention`` (SDPA).
* :class:`KVCache` -- the keys and values of tokens already processed, kept so that
  generating token t+1 costs one new row of attention instead of recomputing all t.
* :class:`CausalSelfAttention` -- multi-head attention with a fused q/k/v projection
  (GPT-2's ``c_attn``) and an output projection (``c_proj``). It runs either through
  SDPA (``attn_impl="sdpa"``, the default: flash / memory-efficient kernels where the
  device has them) or through :func:`attention` (``attn_impl="manual"``). Both give the
  same output; the manual path exists so a learner can read (and return) the weights.

Shapes use nanoGPT's letters: B batch, T time (sequence length), C channels
(``n_embd``), H heads, D head size (``C // H``).

Chapter 07's options (see model.GPTConfig) live here too: rotary position embeddings
are applied to q and k (layers.apply_rotary); grouped-query attention (Ainslie et al.
2023, "GQA") gives the keys and values only ``n_kv_head`` heads, each shared by
``n_head / n_kv_head`` query heads, so the KV cache shrinks by that factor; QK-norm
(Henry et al. 2020, "Query-Key Normalization for Transformers"; Dehghani et al.
2023; Qwen3) RMS-normalises each head's q and k before the dot product.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from .layers import RMSNorm, apply_rotary

ATTN_IMPLS = ("sdpa", "manual")
CACHE_CHUNK = 256  # positions a KV cache allocates at first; it doubles as needed, up to its capacity


def causal_mask(t_q: int, t_k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean (t_q, t_k) mask, True where query i may look at key j.

    The queries are the *last* ``t_q`` positions of the ``t_k`` keys (what a KV cache
    gives: keys for positions 0..t_k-1, queries for t_k-t_q..t_k-1), so query i sits
    at absolute position ``i + t_k - t_q`` and may see keys ``j <= i + t_k - t_q``.
    With ``t_q == t_k`` this is the familiar lower-triangular matrix.
    """
    if t_q > t_k:
        raise ValueError(f"more queries ({t_q}) than keys ({t_k}): queries must be the last t_q of the keys")
    i = torch.arange(t_q, device=device).unsqueeze(1)
    j = torch.arange(t_k, device=device).unsqueeze(0)
    return j <= i + (t_k - t_q)


def attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    causal: bool = True,
    dropout_p: float = 0.0,
    return_weights: bool = False,
    mask: torch.Tensor | None = None,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Scaled dot-product attention, spelled out (what chapter 03 derives).

    q: (..., T_q, D), k and v: (..., T_k, D) -- usually (B, H, T, D).
    Returns the output (..., T_q, D), and the attention weights (..., T_q, T_k) when
    ``return_weights`` is set. ``mask`` (boolean, broadcastable to (..., T_q, T_k), True
    where a query may look) hides more keys, on top of the causal mask if ``causal``:
    chapter 11's batches of sequences of different lengths use it.

    Why each step:
      * ``q @ k^T`` scores how well each query matches each key;
      * dividing by sqrt(D) keeps the scores' variance ~1 whatever the head size, so the
        softmax does not saturate into a one-hot (where its Jacobian, diag(p) - pp^T, is near zero for most rows);
      * the causal mask sets "future" scores to -inf, so after softmax they get weight 0;
      * softmax turns scores into weights that sum to 1 over the keys;
      * the weights average the values.
    """
    d = q.size(-1)
    scores = (q @ k.transpose(-2, -1)) / math.sqrt(d)  # (..., T_q, T_k)
    if causal:
        scores = scores.masked_fill(~causal_mask(q.size(-2), k.size(-2), device=q.device), float("-inf"))
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    weights = F.softmax(scores, dim=-1)  # (..., T_q, T_k), rows sum to 1
    if dropout_p > 0.0:
        weights = F.dropout(weights, p=dropout_p, training=True)
    out = weights @ v  # (..., T_q, D)
    return (out, weights) if return_weights else out


def _grown(buffer: torch.Tensor, end: int, capacity: int, keep: int) -> torch.Tensor:
    """A cache buffer (n_layer, B, H, positions, D) re-allocated with room for ``end`` positions (double the
    allocation, at most ``capacity``), its first ``keep`` positions copied over."""
    size = min(capacity, max(end, 2 * buffer.size(3)))
    new = buffer.new_zeros(*buffer.shape[:3], size, buffer.size(4))
    new[:, :, :, :keep] = buffer[:, :, :, :keep]
    return new


class KVCache:
    """Keys and values of every layer for the tokens seen so far (for fast generation).

    Buffers have shape (n_layer, B, H_kv, allocated, D); ``pos`` is the number of
    positions filled. Create one with ``model.new_kv_cache(batch_size)``; the model's
    forward writes the new keys/values of each layer at ``pos .. pos+T-1`` and advances
    ``pos`` by T once all layers are done. ``reset()`` starts a new sequence (no
    reallocation). Use it for inference, under ``torch.no_grad()``: the buffers are
    written in place.

    Memory: a cache holds ``bytes_per_token`` bytes per position of each sequence
    (2 tensors x n_layer x H_kv x D numbers). It allocates ``CACHE_CHUNK`` positions at
    first and doubles when they fill up, never beyond ``capacity`` (block_size), so a
    model with a long context (SmolLM2: 8192) does not reserve it all for a short reply.
    """

    def __init__(
        self,
        n_layer: int,
        batch_size: int,
        n_head: int,
        head_dim: int,
        capacity: int,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        if batch_size < 1 or capacity < 1:
            raise ValueError(f"batch_size ({batch_size}) and capacity ({capacity}) must be >= 1")
        shape = (n_layer, batch_size, n_head, min(capacity, CACHE_CHUNK), head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.n_layer = n_layer
        self.n_head = n_head  # key/value heads: n_kv_head of the model
        self.head_dim = head_dim
        self.batch_size = batch_size
        self.capacity = capacity
        self.pos = 0

    @property
    def bytes_per_token(self) -> int:
        """Bytes the cache needs per position of one sequence: keys + values of every layer."""
        return 2 * self.n_layer * self.n_head * self.head_dim * self.k.element_size()

    @property
    def nbytes(self) -> int:
        """Bytes allocated right now (all sequences, all allocated positions)."""
        return self.k.numel() * self.k.element_size() + self.v.numel() * self.v.element_size()

    def reset(self) -> None:
        """Forget everything: the next forward starts again at position 0."""
        self.pos = 0

    def truncate(self, n: int) -> None:
        """Keep only the first ``n`` positions: the next forward writes at position ``n``.

        Speculative decoding's rollback: the keys and values of rejected draft tokens
        stay in the buffer but are never read, and the next tokens overwrite them.
        """
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= self.pos:
            raise ValueError(f"truncate to n positions needs 0 <= n <= pos ({self.pos}), got {n!r}")
        self.pos = n

    def positions(self, t: int) -> torch.Tensor:
        """The positions (t,) of the next ``t`` tokens: pos .. pos+t-1, the same for every row."""
        return torch.arange(self.pos, self.pos + t, dtype=torch.long, device=self.k.device)

    def attn_mask(self, t: int) -> None:
        """No extra mask: every row holds the same positions, so the causal mask is all it takes."""
        return None

    def check_room(self, batch_size: int, t: int) -> None:
        """Raise a clear error if ``t`` more tokens (of this batch size) do not fit."""
        if batch_size != self.batch_size:
            raise ValueError(
                f"input batch size ({batch_size}) differs from the KV cache's ({self.batch_size}): "
                f"create the cache with model.new_kv_cache(batch_size={batch_size})"
            )
        if self.pos + t > self.capacity:
            raise ValueError(
                f"KV cache full: {self.pos} positions used + {t} new > capacity {self.capacity} (block_size). "
                "Call cache.reset() and re-feed the last block_size tokens (a sliding window)."
            )

    def _grow(self, end: int) -> None:
        """Make room for positions up to ``end`` (double the allocation, at most ``capacity``)."""
        self.k, self.v = (_grown(t, end, self.capacity, self.pos) for t in (self.k, self.v))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store layer ``layer``'s new k, v (B, H_kv, T, D) at pos..pos+T-1; return all keys/values so far."""
        t = k.size(-2)
        end = self.pos + t
        if end > self.k.size(3):
            self._grow(end)
        self.k[layer, :, :, self.pos : end] = k
        self.v[layer, :, :, self.pos : end] = v
        return self.k[layer, :, :, :end], self.v[layer, :, :, :end]

    def advance(self, t: int) -> None:
        """Mark ``t`` more positions as filled (called by the model after its last layer)."""
        self.pos += t


class SlotKVCache:
    """A KV cache whose rows ("slots") hold different sequences of different lengths (continuous batching).

    Buffers (n_layer, slots, H_kv, allocated, D) as in :class:`KVCache`, but every slot
    has its own length ``lengths[s]``: a new sequence is prefilled on its own (a batch of
    one, in a :class:`KVCache`) and copied into a free slot with :meth:`load`; then each
    decode step feeds ONE token per running slot, written at that slot's own position.
    Each row attends to its own keys only (:meth:`attn_mask`), so a short sequence never
    sees the stale keys beyond its end, and positions (learned or rotary) are per row.

    Why prefill apart: a prompt is many tokens in one matrix-matrix pass (compute-bound,
    fast per token); decoding is one token per pass (memory-bound: every weight is read
    for a single token), which is where batching rows pays. ``rows`` picks the slots the
    next forward feeds (None: all of them); finished slots are simply left out.
    """

    def __init__(self, n_layer: int, slots: int, n_head: int, head_dim: int, capacity: int,
                 device: torch.device | str | None = None, dtype: torch.dtype = torch.float32) -> None:
        if slots < 1 or capacity < 1:
            raise ValueError(f"slots ({slots}) and capacity ({capacity}) must be >= 1")
        shape = (n_layer, slots, n_head, min(capacity, CACHE_CHUNK), head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.capacity = capacity
        self.slots = slots
        self.lengths = torch.zeros(slots, dtype=torch.long, device=device)  # positions filled, per slot
        self.rows: torch.Tensor | None = None  # slots fed by the next forward; None = all
        self._end, self._mask = 0, None  # set by check_room, once per forward

    def select(self, rows: list[int] | None) -> None:
        """Feed these slots, in this order, in the next forward (None: every slot)."""
        all_rows = rows is None or list(rows) == list(range(self.slots))
        self.rows = None if all_rows else torch.tensor(rows, dtype=torch.long, device=self.k.device)

    def _lengths(self) -> torch.Tensor:
        return self.lengths if self.rows is None else self.lengths[self.rows]

    def check_room(self, batch_size: int, t: int) -> None:
        """One token per selected slot, and room for it in each."""
        n_rows = self.slots if self.rows is None else len(self.rows)
        if t != 1 or batch_size != n_rows:
            raise ValueError(f"a SlotKVCache takes one token per selected slot ({n_rows} rows x 1), got "
                             f"{batch_size} x {t}: prefill a sequence in a KVCache and copy it in with load()")
        lengths = self._lengths()
        self._end = int(lengths.max()) + 1  # keys to read this forward: the longest selected row's, + the new one
        if self._end > self.capacity:
            raise ValueError(f"a slot is full (capacity {self.capacity}, block_size): free it or reload it "
                             "with a shorter window")
        if self._end > self.k.size(3):
            self._grow(self._end)
        keys = torch.arange(self._end, device=lengths.device)
        self._mask = (keys[None, :] <= lengths[:, None])[:, None, None, :]  # (B, 1, 1, T_k)

    def positions(self, t: int) -> torch.Tensor:
        """Each selected row's next position: (B, 1)."""
        return self._lengths()[:, None]

    def _grow(self, end: int) -> None:
        """Make room for positions up to ``end`` in every slot (as KVCache does)."""
        self.k, self.v = (_grown(t, end, self.capacity, t.size(3)) for t in (self.k, self.v))

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write each row's new k, v (B, H_kv, 1, D) at its own position; return its keys/values so far."""
        lengths, end = self._lengths(), self._end
        rows = torch.arange(self.slots, device=self.k.device) if self.rows is None else self.rows
        self.k[layer][rows, :, lengths] = k[:, :, 0]  # (B, H_kv, D) into (slot, :, position)
        self.v[layer][rows, :, lengths] = v[:, :, 0]
        if self.rows is None:
            return self.k[layer, :, :, :end], self.v[layer, :, :, :end]
        return self.k[layer, self.rows, :, :end], self.v[layer, self.rows, :, :end]

    def attn_mask(self, t: int) -> torch.Tensor:
        """(B, 1, 1, T_k): row b may see keys 0 .. lengths[b] (its own, the new one included)."""
        return self._mask

    def advance(self, t: int) -> None:
        """The selected slots now hold ``t`` more positions."""
        if self.rows is None:
            self.lengths += t
        else:
            self.lengths[self.rows] += t

    def load(self, slot: int, cache: KVCache) -> None:
        """Copy a one-row :class:`KVCache` (a prefilled sequence) into ``slot``, replacing what it held."""
        n = cache.pos
        if n > self.k.size(3):
            self._grow(n)
        self.k[:, slot, :, :n] = cache.k[:, 0, :, :n]
        self.v[:, slot, :, :n] = cache.v[:, 0, :, :n]
        self.lengths[slot] = n


class CausalSelfAttention(nn.Module):
    """Multi-head causal self-attention with GPT-2's parameter layout.

    ``c_attn`` projects x (B, T, C) to queries, keys and values at once (one matmul
    instead of three); the heads are then split out of the channel dimension, attend
    independently, are concatenated back and mixed by ``c_proj``. With grouped-query
    attention the keys and values have ``n_kv_head`` heads (c_attn: C -> (H + 2 H_kv) D)
    and query head h reads key/value head ``h // (H / H_kv)``, as in Hugging Face's Llama.
    """

    def __init__(self, config) -> None:
        super().__init__()
        self.n_head = config.n_head
        self.n_kv_head = config.n_kv_head or config.n_head
        self.n_embd = config.n_embd
        self.head_dim = config.head_dim
        self.dropout = config.dropout
        q_dim, kv_dim = self.n_head * self.head_dim, self.n_kv_head * self.head_dim
        self.split_sizes = (q_dim, kv_dim, kv_dim)
        self.c_attn = nn.Linear(config.n_embd, q_dim + 2 * kv_dim, bias=config.bias)
        self.c_proj = nn.Linear(q_dim, config.n_embd, bias=config.bias)
        if config.qk_norm:  # one gain per channel of a head, shared by all heads (Qwen3)
            self.q_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
            self.k_norm = RMSNorm(self.head_dim, eps=config.norm_eps)
        self.resid_dropout = nn.Dropout(config.dropout)
        self.attn_impl = "sdpa"
        self.set_attn_impl(config.attn_impl)

    def set_attn_impl(self, impl: str) -> None:
        """Switch between the fused SDPA kernel ("sdpa") and the explicit path ("manual")."""
        if impl not in ATTN_IMPLS:
            raise ValueError(f"attn_impl must be one of {ATTN_IMPLS}, got {impl!r}")
        self.attn_impl = impl

    def forward(
        self,
        x: torch.Tensor,
        kv_cache: KVCache | None = None,
        layer_idx: int = 0,
        return_weights: bool = False,
        rope: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """x: (B, T, C) -> (B, T, C). With a cache, x holds positions cache.pos .. cache.pos+T-1.

        ``rope``: the (cos, sin) tables (T, D) of those positions, when the model uses
        rotary embeddings. ``return_weights=True`` also returns the attention weights
        (B, H, T, T_k); it uses the manual path, since fused kernels never materialise them.
        """
        B, T, C = x.shape
        H, H_kv, D = self.n_head, self.n_kv_head, self.head_dim
        q, k, v = self.c_attn(x).split(self.split_sizes, dim=2)  # (B, T, H*D), 2 x (B, T, H_kv*D)
        # split the channels into heads: (B, T, H*D) -> (B, T, H, D)
        q, k, v = q.view(B, T, H, D), k.view(B, T, H_kv, D), v.view(B, T, H_kv, D)
        if hasattr(self, "q_norm"):  # QK-norm: each head's q and k get unit RMS (times a gain)
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H or H_kv, T, D)
        if rope is not None:  # rotate q and k by their positions' angles
            q, k = apply_rotary(q, *rope), apply_rotary(k, *rope)
        row_mask = None
        if kv_cache is not None:
            k, v = kv_cache.update(layer_idx, k, v)  # (B, H_kv, pos+T, D)
            row_mask = kv_cache.attn_mask(T)  # (B, 1, T, T_k) when rows hold different lengths, else None
        if H_kv != H:  # GQA: each key/value head serves H / H_kv consecutive query heads
            k = k.repeat_interleave(H // H_kv, dim=1)  # (B, H, T_k, D)
            v = v.repeat_interleave(H // H_kv, dim=1)
        t_k = k.size(2)
        dropout_p = self.dropout if self.training else 0.0

        weights = None
        if row_mask is not None:  # a SlotKVCache: each row sees its own keys only
            if self.attn_impl == "manual" or return_weights:
                y, weights = attention(q, k, v, causal=False, return_weights=True, mask=row_mask)
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=row_mask)
        elif self.attn_impl == "manual" or return_weights:
            y, weights = attention(q, k, v, causal=True, dropout_p=dropout_p, return_weights=True)
        else:
            # SDPA's is_causal aligns the mask top-left, which is only right when the
            # queries and keys cover the same positions; a single new query (decode)
            # may see every key; otherwise (chunk after a prefix) pass the mask.
            if t_k == T:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
            elif T == 1:
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p)
            else:
                mask = causal_mask(T, t_k, device=x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
        y = y.transpose(1, 2).contiguous().view(B, T, H * D)  # re-assemble the heads: (B, T, H*D)
        y = self.resid_dropout(self.c_proj(y))  # (B, T, C)
        return (y, weights) if return_weights else y
