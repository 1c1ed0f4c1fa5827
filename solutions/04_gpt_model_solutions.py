"""Chapter 04 (the GPT model): solutions to the exercises.

Run: python solutions/04_gpt_model_solutions.py   (well under a minute on a laptop CPU;
MINIGPT_QUICK=1 makes it shorter still)

1. untie the language-model head: extra parameters, and overfitting speed;
2. post-LN blocks: the residual stream and the gradients at depth, against pre-LN;
3. measure training throughput and estimate how long GPT-2 small would take.
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_helpers import GPT, Block, GPTConfig, default_tokenizer, pick, set_seed, stream_documents

tok = default_tokenizer(verbose=False)
CONFIG = GPTConfig(  # the chapter's model ("our config")
    vocab_size=tok.vocab_size,
    block_size=pick(full=128, quick=64),
    n_layer=pick(full=4, quick=2),
    n_head=4,
    n_embd=pick(full=128, quick=64),
)
GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)


def text_batch(B: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The chapter's batch of real text: B rows of T + 1 tokens from the start of the stream."""
    ids: list[int] = []
    for doc in stream_documents(verbose=False):
        ids += tok.encode(doc["text"])
        if len(ids) > B * (T + 1):
            break
    chunk = torch.tensor(ids[: B * (T + 1)]).view(B, T + 1)
    return chunk[:, :-1], chunk[:, 1:]


def overfit_steps(model: GPT, xb: torch.Tensor, yb: torch.Tensor, max_steps: int, target: float = 1.0) -> int:
    """Steps of the chapter's AdamW (lr 3e-3) until the loss on one batch drops below ``target``."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(max_steps):
        _, loss = model(xb, targets=yb)
        if loss.item() < target:
            return step
        opt.zero_grad()
        loss.backward()
        opt.step()
    return max_steps


def n_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())  # a shared (tied) tensor counts once


# ---------------------------------------------------------------- 1. untied head
# An lm_head with its own weight: the parameters it adds (our config, GPT-2 small), and whether
# overfitting one batch (section 5: lr 3e-3, loss below 1) gets faster or slower.
def untie(model: GPT) -> GPT:
    """A copy of ``model`` whose lm_head has its own weight (initialised like GPT-2's Linear layers)."""
    model = copy.deepcopy(model)
    model.lm_head.weight = nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.02)
    return model


def exercise_1() -> None:
    for name, cfg in (("ours", CONFIG), ("GPT-2 small", GPT2_SMALL)):
        with torch.device("meta"):
            tied = GPT(cfg)
            extra = n_params(untie(tied)) - n_params(tied)
        assert extra == cfg.vocab_size * cfg.n_embd
        print(f"1. {name}: untying adds V x C = {extra:,} parameters (+{extra / n_params(tied):.0%} of {n_params(tied):,})")
    set_seed(1337)
    tied = GPT(CONFIG).train()
    untied = untie(tied)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    xb, yb = text_batch(pick(full=8, quick=4), CONFIG.block_size)
    max_steps = pick(full=150, quick=80)  # section 5's steps
    steps = {"tied": overfit_steps(tied, xb, yb, max_steps), "untied": overfit_steps(untied, xb, yb, max_steps)}
    faster = min(steps, key=steps.get)
    print(f"   steps to loss < 1 on one batch of text (max {max_steps}): tied {steps['tied']}, untied "
          f"{steps['untied']}: the {faster} head overfits "
          f"{'as fast' if steps['tied'] == steps['untied'] else 'faster'}")
    assert max(steps.values()) < max_steps  # both memorise the batch, as section 5 asserts for the tied model


# ---------------------------------------------------------------- 2. post-LN
# Normalise after the residual addition (x = ln_1(x + attn(x))) and repeat section 3's 24-layer
# experiment: the residual stream's std after each block, and the gradient reaching the first block.
class PostLNBlock(Block):
    """The original transformer's order: add, then normalise (x = LN(x + f(x)))."""

    def forward(self, x, kv_cache=None, layer_idx=0):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


def depth_profile(post_ln: bool, n_layer: int = 24) -> tuple[list[float], float]:
    """Residual-stream std after each block at init, and the gradient norm reaching block 0."""
    set_seed(0)
    cfg = GPTConfig(vocab_size=CONFIG.vocab_size, block_size=64, n_layer=n_layer, n_head=4, n_embd=128)  # section 3
    model = GPT(cfg)
    if post_ln:
        for i in range(n_layer):
            post = PostLNBlock(cfg)
            post.load_state_dict(model.transformer.h[i].state_dict())
            model.transformer.h[i] = post
    idx, tgt = (torch.randint(cfg.vocab_size, (8, 64)) for _ in range(2))
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(64))
    stds = [x.std().item()]
    for block in model.transformer.h:
        x = block(x)
        stds.append(x.std().item())
    loss = F.cross_entropy(model.lm_head(model.transformer.ln_f(x)).view(-1, cfg.vocab_size), tgt.view(-1))
    loss.backward()
    grad0 = model.transformer.h[0].mlp.c_fc.weight.grad.norm().item()
    return stds, grad0


def exercise_2() -> None:
    (pre_stds, pre_grad), (post_stds, post_grad) = depth_profile(False), depth_profile(True)
    for name, stds, grad0 in (("pre-LN ", pre_stds, pre_grad), ("post-LN", post_stds, post_grad)):
        print(f"2. {name}: residual std at blocks 0/12/24 = {stds[0]:.3f}/{stds[12]:.3f}/{stds[24]:.3f}; "
              f"|grad| at block 0's MLP = {grad0:.2e}")
    spread = max(abs(s - 1) for s in post_stds[1:])
    print(f"   post-LN: after every block the stream's std is 1 (within {spread:.3f}): each block's output is"
          f" re-normalised, so no block adds to a running sum; the gradient reaching block 0 is "
          f"{pre_grad / post_grad:.0f}x smaller than with pre-LN (it passes through {2 * (len(post_stds) - 1)} LayerNorms)")
    assert spread < 0.01  # post-LN: the stream is normalised after every block
    assert post_grad < pre_grad / 3  # and the first block gets a much smaller gradient


# ---------------------------------------------------------------- 3. throughput and GPT-2 small
# Training throughput of our model (tokens/s), in FLOP/s with flops_per_token(), and the time GPT-2
# small would need for 10 billion tokens at that rate.
def exercise_3() -> None:
    set_seed(0)
    model = GPT(CONFIG).train()
    B = 8
    xb, yb = text_batch(B, CONFIG.block_size)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def step() -> None:
        _, loss = model(xb, targets=yb)
        opt.zero_grad()
        loss.backward()
        opt.step()

    step()  # warm-up
    n = pick(full=20, quick=5)
    t0 = time.perf_counter()
    for _ in range(n):
        step()
    tokens_per_s = n * B * CONFIG.block_size / (time.perf_counter() - t0)
    flops_per_s = tokens_per_s * model.flops_per_token()
    with torch.device("meta"):
        big = GPT(GPT2_SMALL)
    seconds = 10e9 * big.flops_per_token() / flops_per_s
    print(f"3. our model: {tokens_per_s:,.0f} tokens/s x {model.flops_per_token() / 1e6:.1f} MFLOPs/token = "
          f"{flops_per_s / 1e9:.1f} GFLOP/s achieved")
    print(f"   GPT-2 small needs {big.flops_per_token() / 1e6:,.0f} MFLOPs/token ({big.flops_per_token() / model.flops_per_token():.0f}x ours) "
          f"-> 10B tokens at that rate: {seconds / 86400 / 365:,.1f} years (an H100 at ~40% MFU of 989 TFLOP/s: "
          f"{10e9 * big.flops_per_token() / (0.4 * 989e12) / 3600:.1f} hours)")
    assert big.flops_per_token() == 6 * big.num_params() + 12 * 12 * 768 * 1024  # 6N + 12 L C T


if __name__ == "__main__":
    exercise_1()
    exercise_2()
    exercise_3()
