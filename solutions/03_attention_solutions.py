"""Chapter 03 (attention): solutions to the exercises.

Run: python solutions/03_attention_solutions.py   (a few seconds on a laptop CPU)

1. sliding-window attention, checked against SDPA with an explicit mask;
2. multi-query attention: parameters and KV-cache size, checked against SDPA;
3. without a mask or positions, attention is permutation-equivariant.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_helpers import CausalSelfAttention, GPTConfig, attention, causal_mask, set_seed


# ---------------------------------------------------------------- 1. sliding window
# A mask in which each position sees only the last w positions (itself included), checked against
# F.scaled_dot_product_attention with that boolean attn_mask; position t's output must not change
# when tokens older than t-w+1 change.
def window_mask(T: int, w: int) -> torch.Tensor:
    """(T, T) bool: position t sees positions t-w+1 .. t (itself and the w-1 before it)."""
    i = torch.arange(T)[:, None]
    j = torch.arange(T)[None, :]
    return (j <= i) & (j > i - w)


def window_attention(q, k, v, w: int):
    """softmax(q k^T / sqrt(D)) v with the window mask instead of the causal one."""
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5  # (..., T, T)
    scores = scores.masked_fill(~window_mask(q.size(-2), w), float("-inf"))
    return F.softmax(scores, dim=-1) @ v


def exercise_1() -> None:
    set_seed(0)
    T, w = 12, 4
    q, k, v = (torch.randn(2, 3, T, 8) for _ in range(3))  # (B, H, T, D)
    ours = window_attention(q, k, v, w)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=window_mask(T, w))
    assert torch.allclose(ours, ref, atol=1e-5)
    # A token at position s only enters attention through its key and value there (its query
    # belongs to position s itself), so altering a token older than t-w+1 = 7 means altering
    # k and v at positions 0..6. The output at t = 10 must not move; altering position 7 must move it.
    t, first = 10, 10 - w + 1
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :first] = torch.randn_like(k2[:, :, :first])
    v2[:, :, :first] = torch.randn_like(v2[:, :, :first])
    older = (window_attention(q, k2, v2, w)[:, :, t] - ours[:, :, t]).abs().max().item()
    k2[:, :, first] = torch.randn_like(k2[:, :, first])
    inside = (window_attention(q, k2, v2, w)[:, :, t] - ours[:, :, t]).abs().max().item()
    assert older < 1e-6 < inside
    assert window_mask(T, T).equal(causal_mask(T, T))  # a window as long as the sequence is causal attention
    print(f"1. window attention (w={w}) == SDPA with the window mask; at t={t}, altering tokens 0..{first - 1} "
          f"moves the output by {older:.1e}, altering token {first} (inside the window) by {inside:.2f}")


# ---------------------------------------------------------------- 2. multi-query attention
# All heads share one key and one value head: the projection's parameters and the keys and values a
# KV cache stores per token, against multi-head attention; checked against SDPA on repeated keys/values.
class MultiQueryAttention(nn.Module):
    """H query heads share one key head and one value head (Shazeer, 2019)."""

    def __init__(self, n_embd: int, n_head: int) -> None:
        super().__init__()
        self.n_head, self.head_dim = n_head, n_embd // n_head
        self.c_attn = nn.Linear(n_embd, n_embd + 2 * self.head_dim)  # C query channels + one k and one v head
        self.c_proj = nn.Linear(n_embd, n_embd)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split([C, self.head_dim, self.head_dim], dim=2)
        q = q.view(B, T, self.n_head, self.head_dim).transpose(1, 2)  # (B, H, T, D)
        k, v = k.unsqueeze(1), v.unsqueeze(1)  # (B, 1, T, D): broadcast over the heads
        y = attention(q, k, v, causal=True)  # (B, H, T, D)
        return self.c_proj(y.transpose(1, 2).reshape(B, T, C))


def exercise_2() -> None:
    set_seed(0)
    C, H = 64, 8
    mqa = MultiQueryAttention(C, H)
    n_mqa = sum(p.numel() for p in mqa.parameters())
    mha = CausalSelfAttention(GPTConfig(vocab_size=1, block_size=16, n_layer=1, n_head=H, n_embd=C, bias=True))
    n_mha = sum(p.numel() for p in mha.parameters())
    D = C // H
    assert n_mha - n_mqa == 2 * (C - D) * (C + 1)  # k and v shrink from C to D outputs (weights and biases)
    x = torch.randn(2, 10, C)
    kv_mha = 2 * mha.c_attn(x).split(C, dim=2)[1].size(-1)  # numbers a KV cache stores per token and layer
    kv_mqa = 2 * mqa.c_attn(x).split([C, D, D], dim=2)[1].size(-1)
    assert kv_mha == H * kv_mqa
    print(f"2. C={C}, H={H}: parameters MHA {n_mha:,} vs MQA {n_mqa:,} ({1 - n_mqa / n_mha:.0%} fewer); "
          f"KV cache per token/layer {kv_mha} vs {kv_mqa} numbers ({kv_mha // kv_mqa}x smaller)")
    q, k, v = mqa.c_attn(x).split([C, C // H, C // H], dim=2)
    q = q.view(2, 10, H, C // H).transpose(1, 2)
    k, v = (t.unsqueeze(1).expand(2, H, 10, C // H) for t in (k, v))  # repeat the shared head
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = mqa.c_proj(ref.transpose(1, 2).reshape(2, 10, C))
    assert torch.allclose(mqa(x), ref, atol=1e-5)
    print("   MQA == SDPA on keys/values repeated across heads")


# ---------------------------------------------------------------- 3. attention sees a set
# Without a causal mask and without position embeddings, permuting the input tokens permutes the
# output of CausalSelfAttention's maths (its c_attn and c_proj, attention(..., causal=False)).
def exercise_3() -> None:
    set_seed(0)
    B, T, C, H = 1, 7, 32, 4
    layer = CausalSelfAttention(GPTConfig(vocab_size=1, block_size=T, n_layer=1, n_head=H, n_embd=C))
    x = torch.randn(B, T, C)

    def mha(x: torch.Tensor, causal: bool) -> torch.Tensor:  # no positions
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in layer.c_attn(x).split(C, dim=2))
        return layer.c_proj(attention(q, k, v, causal=causal).transpose(1, 2).reshape(B, T, C))

    perm = torch.randperm(T)
    assert torch.allclose(mha(x[:, perm], causal=False), mha(x, causal=False)[:, perm], atol=1e-5)
    masked = (mha(x[:, perm], causal=True) - mha(x, causal=True)[:, perm]).abs().max().item()
    assert masked > 1e-3  # the causal mask is the only thing that knows the order
    print("3. without a mask, permuting the input permutes the output: attention alone has no sense of order "
          f"(with the causal mask the permuted outputs differ by up to {masked:.2f})")


if __name__ == "__main__":
    with torch.no_grad():
        exercise_1()
        exercise_2()
        exercise_3()
