"""Chapter 11's inference pieces, each against the plain way, side by side in one run.

1. Speculative decoding. Target: chapter 07's model family (rotary, RMSNorm, SwiGLU,
   QK-norm) at nanoGPT's Shakespeare size, 6 layers x 384 (10.6M parameters); draft:
   the same family at 1 layer x 64, about 100x fewer parameters. Both are trained on
   the same characters of Tiny Shakespeare with the same tokenizer (the target briefly:
   on 2 cores its steps are slow; the draft longer). Greedy decoding of 200 tokens:
   tokens/s of ``generate(target, draft=draft, lookahead=4)`` against the target alone
   with its KV cache, with the acceptance rate. Both give the same text (asserted).
   Target: >= 1.5x.
2. int8 weights (quantize.py): bytes of the weights, fp32 over int8 (target >= 3.5x),
   and greedy tokens/s of the int8 model against fp32, whatever it is (stated).
3. Batched generation (batch.py): 16 prompts of different lengths, 128 new tokens
   each (greedy, no early stop), ``generate_batch`` against 16 ``generate`` calls one
   after the other, same model; tokens/s. Target: >= 4x.
4. The server (serve/): requests/s and time to first token with 1, 4 and 16
   concurrent clients, each asking for a 32-token completion through the official
   ``openai`` client (streamed, so the first token's arrival is measured).

Timings use the machine's default thread count; sides alternate and keep their best.
"""

from __future__ import annotations

import statistics
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from common import Result, best_time

from minigpt_helpers import (
    GPT,
    GPTConfig,
    SpeculativeStats,
    TrainConfig,
    generate,
    generate_batch,
    quantize_int8,
    set_seed,
    speculative_ids,
    stream_documents,
    train,
    weight_bytes,
)
from minigpt_helpers.tokenizers.base import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
MODERN = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", qk_norm=True, bias=False, dropout=0.0)
PROMPT = "ROMEO:\nWhat light through yonder window breaks?\n"


def _text(split: str) -> str:
    if DATA.is_file():
        return "".join(d["text"] for d in stream_documents(str(DATA), split, verbose=False))
    return "".join(d["text"] for d in stream_documents("shakespeare", split, verbose=False))


def _trained(tok: CharTokenizer, text: str, shape: dict, block_size: int, steps: int, lr: float) -> GPT:
    """A chapter 07-family model of ``shape`` trained for ``steps`` steps of 16 x block_size characters."""
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, **shape, **MODERN))
    model.tokenizer = tok
    cfg = TrainConfig(batch_size=16, max_steps=steps, lr=lr, min_lr=lr / 10, warmup_steps=min(20, steps // 5),
                      eval_interval=steps, device="cpu", precision="fp32", compile=False)
    train(model, [text], cfg, val_data=[text[:20000]], live="off")
    return model.eval()


def speculative(quick: bool) -> list[Result]:
    text = _text("train")
    tok = CharTokenizer.train([text], unk=True)
    target_shape = dict(n_layer=2, n_head=2, n_embd=64) if quick else dict(n_layer=6, n_head=6, n_embd=384)
    target = _trained(tok, text, target_shape, 128, 10 if quick else 150, 2e-3)
    draft = _trained(tok, text, dict(n_layer=1, n_head=2, n_embd=64), 128, 10 if quick else 600, 3e-3)
    new_tokens, lookahead = (40, 4) if quick else (200, 4)

    def alone() -> str:
        return generate(target, PROMPT, new_tokens, temperature=0, stop_at_eot=False)

    def drafted() -> str:
        return generate(target, PROMPT, new_tokens, temperature=0, stop_at_eot=False, draft=draft,
                        lookahead=lookahead)

    assert alone() == drafted()  # greedy speculative decoding is the target's own text
    stats = SpeculativeStats()
    prompt_ids = tok.encode(PROMPT)
    list(speculative_ids(target, draft, prompt_ids, new_tokens, lookahead, temperature=0, stats=stats))
    t_alone, t_spec = float("inf"), float("inf")
    for _ in range(1 if quick else 3):
        t_alone = min(t_alone, best_time(alone, repeat=1, warmup=0))
        t_spec = min(t_spec, best_time(drafted, repeat=1, warmup=0))
    ratio = target.num_params() / draft.num_params()
    return [Result(
        name=f"speculative decoding, {new_tokens} greedy tokens, lookahead {lookahead} "
             f"(target {target.num_params() / 1e6:.1f}M, draft {ratio:.0f}x smaller)",
        ours=new_tokens / t_spec, reference=new_tokens / t_alone, reference_name="target alone, KV cache",
        unit="tokens/s", target=1.5,
        note=f"acceptance {stats.acceptance_rate:.2f}, {stats.tokens_per_round:.2f} tokens per target pass; "
             f"same text (asserted); {torch.get_num_threads()} torch threads")]


def _random_model(block_size: int, n_layer: int, n_head: int, n_embd: int) -> GPT:
    set_seed(0)
    tok = CharTokenizer.train([_text("validation")], unk=True)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=n_head,
                          n_embd=n_embd, **MODERN)).eval()
    model.tokenizer = tok
    return model


def batched(quick: bool) -> list[Result]:
    model = _random_model(256, *((2, 2, 64) if quick else (4, 4, 256)))
    val = _text("validation")
    n_prompts, new_tokens = (4, 16) if quick else (16, 128)
    prompts = [val[i * 997: i * 997 + 5 + 7 * i] for i in range(n_prompts)]  # 5 .. 110 characters

    def one_by_one() -> list[str]:
        return [generate(model, p, new_tokens, temperature=0, stop_at_eot=False) for p in prompts]

    def together() -> list[str]:
        return generate_batch(model, prompts, new_tokens, temperature=0, stop_at_eot=False)

    assert together() == one_by_one()  # the same greedy text, prompt by prompt
    t_one, t_batch = float("inf"), float("inf")
    for _ in range(1 if quick else 2):
        t_one = min(t_one, best_time(one_by_one, repeat=1, warmup=0))
        t_batch = min(t_batch, best_time(together, repeat=1, warmup=0))
    total = n_prompts * new_tokens
    return [Result(
        name=f"batched generation, {n_prompts} prompts of 5-{5 + 7 * (n_prompts - 1)} characters x {new_tokens} "
             f"tokens ({model.num_params() / 1e6:.1f}M params)",
        ours=total / t_batch, reference=total / t_one, reference_name=f"{n_prompts} generate() calls in turn",
        unit="tokens/s", target=4.0,
        note=f"same text (asserted); random weights; {torch.get_num_threads()} torch threads")]


def int8(quick: bool) -> list[Result]:
    model = _random_model(256, *((2, 2, 64) if quick else (6, 6, 384)))
    qmodel = quantize_int8(model)
    new_tokens = 20 if quick else 100
    fp32_bytes, int8_bytes = weight_bytes(model), weight_bytes(qmodel)

    def gen(net: GPT) -> str:
        return generate(net, PROMPT, new_tokens, temperature=0, stop_at_eot=False)

    t_fp32, t_int8 = float("inf"), float("inf")
    for _ in range(1 if quick else 3):
        t_fp32 = min(t_fp32, best_time(lambda: gen(model), repeat=1, warmup=0))
        t_int8 = min(t_int8, best_time(lambda: gen(qmodel), repeat=1, warmup=0))
    size = f"{model.num_params() / 1e6:.1f}M params"
    return [
        Result(name=f"int8 weights (quantize_int8), bytes of the weights ({size})", ours=int8_bytes,
               reference=fp32_bytes, reference_name="fp32", unit="bytes", lower_is_better=True, target=3.5,
               note="every Linear and Embedding in int8 with one fp32 scale per output row; norms stay fp32"),
        Result(name=f"int8 weights, greedy decoding {new_tokens} tokens ({size})", ours=new_tokens / t_int8,
               reference=new_tokens / t_fp32, reference_name="fp32", unit="tokens/s",
               note="no fused int8 kernel on CPU: each Int8Linear reads 4x fewer bytes of weights but converts "
                    "them to float at every call; which wins depends on the machine's memory and caches, and "
                    "varies from run to run here (best of 3 rounds each)"),
    ]


def _client_load(url: str, name: str, clients: int, requests_each: int, max_tokens: int) -> tuple[float, float]:
    """``clients`` threads, each sending ``requests_each`` streamed completions in turn: (requests/s, median TTFT s)."""
    from openai import OpenAI

    client = OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0)
    first_token: list[float] = []

    def one(i: int) -> None:
        for j in range(requests_each):
            t0 = time.perf_counter()
            stream = client.completions.create(model=name, prompt=f"{PROMPT[: 10 + (i + j) % 30]}",
                                               max_tokens=max_tokens, temperature=0, stream=True)
            seen = False
            for chunk in stream:
                if not seen and chunk.choices and chunk.choices[0].text:
                    first_token.append(time.perf_counter() - t0)
                    seen = True

    t0 = time.perf_counter()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(one, range(clients)))
    wall = time.perf_counter() - t0
    return clients * requests_each / wall, statistics.median(first_token)


def server(quick: bool) -> list[Result]:
    from minigpt_helpers.serve.server import create_app, serve_in_background

    model = _random_model(256, *((2, 2, 64) if quick else (4, 4, 256)))
    max_tokens, requests_each = (8, 2) if quick else (32, 4)
    results, base = [], None
    with serve_in_background(create_app(model, "bench", slots=16)) as running:
        _client_load(running.url, "bench", 1, 1, max_tokens)  # warm-up
        for clients in (1, 4, 16):
            rps, ttft = _client_load(running.url, "bench", clients, requests_each, max_tokens)
            if base is None:
                base = (rps, ttft)
                continue
            results += [
                Result(name=f"server: {clients} concurrent clients, {max_tokens}-token streamed completions, "
                            f"requests/s", ours=rps, reference=base[0], reference_name="1 client",
                       unit="req/s", note="in-process uvicorn (serve_in_background), the official openai client in "
                                          "threads; random weights, 16 slots"),
                Result(name=f"server: {clients} concurrent clients, median time to first token", ours=ttft,
                       reference=base[1], reference_name="1 client", unit="s", lower_is_better=True),
            ]
    print(f"   server, 1 client: {base[0]:.1f} requests/s, median time to first token {1e3 * base[1]:.0f} ms")
    return results


def run(quick: bool) -> list[Result]:
    t0 = time.perf_counter()
    results = speculative(quick) + int8(quick) + batched(quick) + server(quick)
    print(f"bench_inference: {time.perf_counter() - t0:.0f} s")
    return results


if __name__ == "__main__":
    import sys

    for r in run(quick="--quick" in sys.argv):
        print(r, f"ratio {r.ratio:.2f}x")
