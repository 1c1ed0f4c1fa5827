"""The modern GPT's KV cache (chapter 07): grouped-query attention's memory, and generation speed with the cache.

One model with the chapter's architecture (RoPE, RMSNorm, SwiGLU, QK-norm) and
``n_kv_head = n_head / 4``, next to the same model with one K/V head per query head
(multi-head attention). Both are prefilled with a full context, and the bytes their
caches really hold are compared (prediction: a quarter). Then the GQA model generates
with and without its cache, the two sides alternating, each keeping its best round
(random weights: speed does not depend on what a model learned). A long prompt (most of a
context of 512, as long contexts are where GQA is used) and enough new tokens to cross the
context, so the window policy's re-prefill is paid too, as in bench_generation.py.
"""

from __future__ import annotations

import string

import torch
from bench_generation import cache_vs_plain
from common import Result

from minigpt_helpers import GPT, GPTConfig, set_seed
from minigpt_helpers.tokenizers.base import CharTokenizer

PROMPT = "The research shows that "
MODERN = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False)


def _model(n_kv_head: int, block_size: int, n_layer: int, n_head: int, n_embd: int) -> GPT:
    set_seed(0)
    tok = CharTokenizer.train([string.printable])
    model = GPT(GPTConfig(tok.vocab_size, block_size, n_layer, n_head, n_embd, n_kv_head=n_kv_head, **MODERN)).eval()
    model.tokenizer = tok
    return model


@torch.no_grad()
def _cache_bytes(model: GPT) -> int:
    """Bytes the KV cache holds after a prefill of a full context (keys + values, all layers)."""
    cache = model.new_kv_cache(batch_size=1)
    idx = torch.randint(0, model.config.vocab_size, (1, model.config.block_size), generator=torch.Generator().manual_seed(0))
    model(idx, kv_cache=cache)
    return cache.k.nbytes + cache.v.nbytes


def run(quick: bool) -> list[Result]:
    if quick:
        block_size, n_layer, n_head, n_embd, new_tokens, rounds = 64, 2, 4, 64, 100, 1
    else:
        block_size, n_layer, n_head, n_embd, new_tokens, rounds = 512, 4, 8, 256, 300, 2
    prompt = (PROMPT * block_size)[: block_size * 3 // 4]  # characters = tokens (CharTokenizer)
    n_kv = n_head // 4
    gqa = _model(n_kv, block_size, n_layer, n_head, n_embd)
    mha = _model(n_head, block_size, n_layer, n_head, n_embd)
    gqa_bytes, mha_bytes = _cache_bytes(gqa), _cache_bytes(mha)
    assert gqa_bytes * 4 == mha_bytes and gqa.kv_cache_bytes_per_token() * 4 == mha.kv_cache_bytes_per_token()

    t_cache, t_plain = cache_vs_plain(gqa, prompt, new_tokens, rounds)  # bench_generation's measurement
    shape = f"{n_layer} layers, {n_head} query heads of {n_embd // n_head}, ctx {block_size}"
    return [
        Result(
            name=f"KV cache bytes, GQA with n_kv_head = n_head/4 = {n_kv} ({shape}, full context)",
            ours=gqa_bytes,
            reference=mha_bytes,
            reference_name=f"same model, {n_head} K/V heads (MHA)",
            unit="bytes",
            lower_is_better=True,
            target=4.0,
            note=f"{gqa.kv_cache_bytes_per_token():,} vs {mha.kv_cache_bytes_per_token():,} bytes per token (float32)",
        ),
        Result(
            name=f"generate {new_tokens} tokens after a {len(prompt)}-token prompt with the KV cache, GQA model ({shape})",
            ours=new_tokens / t_cache,
            reference=new_tokens / t_plain,
            reference_name="same model, no cache",
            unit="tokens/s",
            target=5.0,
            note=f"{torch.get_num_threads()} torch threads; random weights; RoPE + RMSNorm + SwiGLU + QK-norm",
        ),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r, f"ratio {r.ratio:.1f}x")
