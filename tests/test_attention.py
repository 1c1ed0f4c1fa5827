"""Attention: the functional form, the module's two paths, the causal mask and the KV cache."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt_helpers import CausalSelfAttention, GPTConfig, KVCache, attention, causal_mask


def _qkv(B=2, H=3, T=7, D=8, T_k=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    T_k = T if T_k is None else T_k
    q = torch.randn(B, H, T, D, generator=g)
    k = torch.randn(B, H, T_k, D, generator=g)
    v = torch.randn(B, H, T_k, D, generator=g)
    return q, k, v


@pytest.mark.parametrize("causal", [True, False])
def test_functional_matches_sdpa(causal):
    q, k, v = _qkv()
    ours = attention(q, k, v, causal=causal)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert ours.shape == (2, 3, 7, 8)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_functional_matches_sdpa_with_queries_after_a_prefix():
    # 3 queries at positions 5, 6, 7 of 8 keys (what a KV cache produces)
    q, k, v = _qkv(T=3, T_k=8)
    ours = attention(q, k, v, causal=True)
    ref = F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(3, 8))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)
    # and it equals the last 3 rows of full causal attention over the same 8 positions
    q_full = torch.cat([torch.randn(2, 3, 5, 8), q], dim=2)
    full = attention(q_full, k, v, causal=True)
    torch.testing.assert_close(ours, full[:, :, 5:], atol=1e-5, rtol=1e-5)


def test_weights_are_causal_and_normalised():
    q, k, v = _qkv(T=6)
    out, w = attention(q, k, v, causal=True, return_weights=True)
    assert w.shape == (2, 3, 6, 6)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 3, 6))
    upper = torch.triu(torch.ones(6, 6, dtype=torch.bool), diagonal=1)
    assert (w[..., upper] == 0).all()
    assert (w[..., ~upper] > 0).all()
    # the first position can only attend to itself
    torch.testing.assert_close(out[:, :, 0], v[:, :, 0])


def test_scaling_keeps_score_variance_near_one():
    # the reason for 1/sqrt(d): unscaled q.k has variance ~d
    d = 256
    q, k = torch.randn(4000, d), torch.randn(4000, d)
    raw = (q * k).sum(-1)
    assert raw.var().item() > d / 2
    assert 0.8 < (raw / math.sqrt(d)).var().item() < 1.25


def test_causal_mask():
    m = causal_mask(4, 4)
    assert torch.equal(m, torch.tril(torch.ones(4, 4, dtype=torch.bool)))
    m = causal_mask(2, 5)  # queries at positions 3 and 4
    assert m.tolist() == [[True, True, True, True, False], [True, True, True, True, True]]
    with pytest.raises(ValueError, match="more queries"):
        causal_mask(5, 4)


def _module(impl="sdpa", dropout=0.0, seed=0):
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=11, block_size=16, n_layer=1, n_head=4, n_embd=32, dropout=dropout, attn_impl=impl)
    return CausalSelfAttention(cfg).eval()


def test_module_sdpa_equals_manual():
    m = _module()
    x = torch.randn(3, 10, 32)
    y_sdpa = m(x)
    m.set_attn_impl("manual")
    y_manual = m(x)
    assert y_sdpa.shape == (3, 10, 32)
    torch.testing.assert_close(y_sdpa, y_manual, atol=1e-5, rtol=1e-5)


def test_module_matches_per_head_derivation():
    # multi-head attention == each head attending on its slice of the channels, concatenated, projected
    m = _module()
    x = torch.randn(2, 5, 32)
    q, k, v = m.c_attn(x).split(32, dim=2)
    heads = [attention(q[..., h * 8 : (h + 1) * 8], k[..., h * 8 : (h + 1) * 8], v[..., h * 8 : (h + 1) * 8]) for h in range(4)]
    ref = m.c_proj(torch.cat(heads, dim=-1))
    torch.testing.assert_close(m(x), ref, atol=1e-5, rtol=1e-5)


def test_module_returns_weights():
    m = _module()
    y, w = m(torch.randn(2, 5, 32), return_weights=True)
    assert y.shape == (2, 5, 32) and w.shape == (2, 4, 5, 5)
    with pytest.raises(ValueError, match="attn_impl"):
        m.set_attn_impl("flash")


def test_module_dropout_only_in_training():
    m = _module(dropout=0.5)
    x = torch.randn(2, 6, 32)
    torch.testing.assert_close(m(x), m(x))  # eval: deterministic
    m.train()
    assert not torch.allclose(m(x), m(x))


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_module_with_cache_in_chunks_equals_full(impl):
    m = _module(impl)
    x = torch.randn(2, 9, 32)
    full = m(x)
    cache = KVCache(1, 2, 4, 8, capacity=16)
    outs = []
    for a, b in [(0, 4), (4, 5), (5, 9)]:  # prefill, one token, a chunk after a prefix
        outs.append(m(x[:, a:b], kv_cache=cache, layer_idx=0))
        cache.advance(b - a)
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)


def test_cache_errors_and_reset():
    cache = KVCache(2, 1, 2, 4, capacity=8)
    cache.check_room(1, 8)
    with pytest.raises(ValueError, match="KV cache full"):
        cache.check_room(1, 9)
    with pytest.raises(ValueError, match="batch size"):
        cache.check_room(2, 1)
    cache.advance(5)
    with pytest.raises(ValueError, match="reset"):
        cache.check_room(1, 4)
    cache.reset()
    assert cache.pos == 0
    cache.check_room(1, 8)
