"""Generation speed: tokens/s with the KV cache vs without it, same model, same run.

The model has random weights (speed does not depend on what it learned) and a
context of 256; we ask for 500 new tokens, so generation also crosses the
context limit and pays the cache's re-prefill (see generation.py's window
policy). Without the cache every step re-runs the model on the whole window
(128..256 tokens); with it, one token per step. The two sides alternate, and
each keeps its best of the rounds.
"""

from __future__ import annotations

import string

import torch
from common import Result, best_time

from minigpt_helpers import GPT, GPTConfig, generate, set_seed
from minigpt_helpers.tokenizers.base import CharTokenizer

PROMPT = "The research shows"


def _model(block_size: int, n_layer: int, n_head: int, n_embd: int) -> GPT:
    set_seed(0)
    tok = CharTokenizer.train([string.printable])
    model = GPT(GPTConfig(tok.vocab_size, block_size, n_layer, n_head, n_embd)).eval()
    model.tokenizer = tok
    return model


def cache_vs_plain(model: GPT, prompt: str, new_tokens: int, rounds: int) -> tuple[float, float]:
    """Best seconds to generate ``new_tokens`` with the KV cache and without, interleaved ``rounds`` times.

    Both ways first give the same greedy tokens, so the comparison is like for like. Every run
    makes all ``new_tokens`` (``stop_at_eot=False``): a random model can write ``<|endoftext|>``.
    """
    def gen(use_cache: bool) -> None:
        generate(model, prompt, new_tokens, temperature=1.0, seed=0, use_cache=use_cache, stop_at_eot=False)

    assert generate(model, prompt, 50, temperature=0, use_cache=True, stop_at_eot=False) == generate(
        model, prompt, 50, temperature=0, use_cache=False, stop_at_eot=False
    )
    t_cache, t_plain = float("inf"), float("inf")
    gen(True)  # warm-up
    for _ in range(rounds):
        t_cache = min(t_cache, best_time(lambda: gen(True), repeat=1, warmup=0))
        t_plain = min(t_plain, best_time(lambda: gen(False), repeat=1, warmup=0))
    return t_cache, t_plain


def run(quick: bool) -> list[Result]:
    if quick:
        block_size, n_layer, n_head, n_embd, new_tokens, rounds = 64, 2, 2, 64, 100, 1
    else:
        block_size, n_layer, n_head, n_embd, new_tokens, rounds = 256, 4, 4, 256, 500, 2
    model = _model(block_size, n_layer, n_head, n_embd)
    n_params = model.num_params() / 1e6

    t_cache, t_plain = cache_vs_plain(model, PROMPT, new_tokens, rounds)
    return [
        Result(
            name=f"generate {new_tokens} tokens, KV cache (ctx {block_size}, {n_params:.1f}M params)",
            ours=new_tokens / t_cache,
            reference=new_tokens / t_plain,
            reference_name="same model, no cache",
            unit="tokens/s",
            target=5.0,
            note=f"{torch.get_num_threads()} torch threads; random weights; prompt {PROMPT!r}",
        )
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r, f"ratio {r.ratio:.1f}x")
