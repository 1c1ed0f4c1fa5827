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

from minigpt_helpers import attention, causal_mask, set_seed


# ---------------------------------------------------------------- 1. sliding window
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
    # output at t=10 depends only on positions 7..10: change everything older, nothing moves
    k2, v2 = k.clone(), v.clone()
    k2[:, :, :7] = torch.randn_like(k2[:, :, :7])
    v2[:, :, :7] = torch.randn_like(v2[:, :, :7])
    assert torch.allclose(window_attention(q, k2, v2, w)[:, :, 10], ours[:, :, 10], atol=1e-6)
    assert window_mask(T, T).equal(causal_mask(T, T))  # a window as long as the sequence is causal attention
    print(f"1. window attention (w={w}) == SDPA with the window mask; tokens older than w are ignored")


# ---------------------------------------------------------------- 2. multi-query attention
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
    n_mha = (C * 3 * C + 3 * C) + (C * C + C)
    kv_mha, kv_mqa = 2 * C, 2 * (C // H)  # numbers a KV cache stores per token and layer
    print(f"2. C={C}, H={H}: parameters MHA {n_mha:,} vs MQA {n_mqa:,}; "
          f"KV cache per token/layer {kv_mha} vs {kv_mqa} numbers ({kv_mha // kv_mqa}x smaller)")
    x = torch.randn(2, 10, C)
    q, k, v = mqa.c_attn(x).split([C, C // H, C // H], dim=2)
    q = q.view(2, 10, H, C // H).transpose(1, 2)
    k, v = (t.unsqueeze(1).expand(2, H, 10, C // H) for t in (k, v))  # repeat the shared head
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    ref = mqa.c_proj(ref.transpose(1, 2).reshape(2, 10, C))
    assert torch.allclose(mqa(x), ref, atol=1e-5)
    print("   MQA == SDPA on keys/values repeated across heads")


# ---------------------------------------------------------------- 3. attention sees a set
def exercise_3() -> None:
    set_seed(0)
    B, T, C, H = 1, 7, 32, 4
    c_attn = nn.Linear(C, 3 * C)
    x = torch.randn(B, T, C)

    def mha(x: torch.Tensor) -> torch.Tensor:  # no mask, no positions
        q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in c_attn(x).split(C, dim=2))
        return attention(q, k, v, causal=False).transpose(1, 2).reshape(B, T, C)

    perm = torch.randperm(T)
    assert torch.allclose(mha(x[:, perm]), mha(x)[:, perm], atol=1e-5)
    print("3. permuting the input permutes the output: attention alone has no sense of order")


if __name__ == "__main__":
    with torch.no_grad():
        exercise_1()
        exercise_2()
        exercise_3()
