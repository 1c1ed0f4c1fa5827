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

from minigpt_helpers import GPT, Block, GPTConfig, pick, set_seed

SMALL = GPTConfig(vocab_size=512, block_size=64, n_layer=2, n_head=4, n_embd=64)
GPT2_SMALL = GPTConfig(vocab_size=50257, block_size=1024, n_layer=12, n_head=12, n_embd=768)


def overfit_steps(model: GPT, xb: torch.Tensor, yb: torch.Tensor, target: float = 1.0, max_steps: int = 300) -> int:
    """Steps of AdamW until the loss on one batch drops below ``target`` (max_steps if never)."""
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(max_steps):
        _, loss = model(xb, targets=yb)
        if loss.item() < target:
            return step
        opt.zero_grad()
        loss.backward()
        opt.step()
    return max_steps


# ---------------------------------------------------------------- 1. untied head
def untie(model: GPT) -> GPT:
    """A copy of ``model`` whose lm_head has its own weight (initialised like GPT-2's Linear layers)."""
    model = copy.deepcopy(model)
    model.lm_head.weight = nn.Parameter(torch.randn_like(model.lm_head.weight) * 0.02)
    return model


def exercise_1() -> None:
    for name, cfg in (("ours", SMALL), ("GPT-2 small", GPT2_SMALL)):
        with torch.device("meta"):
            tied = GPT(cfg)
        extra = cfg.vocab_size * cfg.n_embd
        print(f"1. {name}: untying adds {extra:,} parameters "
              f"(+{extra / tied.num_params(non_embedding=False):.0%} of {tied.num_params(non_embedding=False):,})")
    set_seed(0)
    tied = GPT(SMALL)
    untied = untie(tied)
    assert untied.lm_head.weight is not untied.transformer.wte.weight
    xb, yb = (torch.randint(SMALL.vocab_size, (4, SMALL.block_size)) for _ in range(2))
    max_steps = pick(full=300, quick=60)
    n_tied, n_untied = overfit_steps(tied, xb, yb, max_steps=max_steps), overfit_steps(untied, xb, yb, max_steps=max_steps)
    print(f"   steps to loss < 1 on one random batch (max {max_steps}): tied {n_tied}, untied {n_untied}"
          " (the untied head has more free parameters to memorise with; on real data tying usually"
          " generalises better)")


# ---------------------------------------------------------------- 2. post-LN
class PostLNBlock(Block):
    """The original transformer's order: add, then normalise (x = LN(x + f(x)))."""

    def forward(self, x, kv_cache=None, layer_idx=0):
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


def depth_profile(post_ln: bool, n_layer: int = 24) -> tuple[list[float], float]:
    """Residual-stream std after each block at init, and the gradient norm reaching block 0."""
    set_seed(0)
    cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=n_layer, n_head=4, n_embd=64)
    model = GPT(cfg)
    if post_ln:
        for i in range(n_layer):
            post = PostLNBlock(cfg)
            post.load_state_dict(model.transformer.h[i].state_dict())
            model.transformer.h[i] = post
    idx, tgt = (torch.randint(256, (8, 64)) for _ in range(2))
    x = model.transformer.wte(idx) + model.transformer.wpe(torch.arange(64))
    stds = [x.std().item()]
    for block in model.transformer.h:
        x = block(x)
        stds.append(x.std().item())
    loss = F.cross_entropy(model.lm_head(model.transformer.ln_f(x)).view(-1, 256), tgt.view(-1))
    loss.backward()
    grad0 = model.transformer.h[0].mlp.c_fc.weight.grad.norm().item()
    return stds, grad0


def exercise_2() -> None:
    for name, post in (("pre-LN ", False), ("post-LN", True)):
        stds, grad0 = depth_profile(post)
        print(f"2. {name}: residual std at blocks 0/12/24 = {stds[0]:.3f}/{stds[12]:.3f}/{stds[24]:.3f}; "
              f"|grad| at block 0's MLP = {grad0:.2e}")
    print("   post-LN re-normalises the stream to std 1 after every block, so each block's contribution is"
          " squashed and the gradient reaching the first blocks is smaller: deep post-LN models need"
          " learning-rate warm-up; pre-LN keeps an identity path from the loss to every layer.")


# ---------------------------------------------------------------- 3. throughput and GPT-2 small
def exercise_3() -> None:
    set_seed(0)
    model = GPT(SMALL).train()
    B = 8
    xb, yb = (torch.randint(SMALL.vocab_size, (B, SMALL.block_size)) for _ in range(2))
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
    tokens_per_s = n * B * SMALL.block_size / (time.perf_counter() - t0)
    flops_per_s = tokens_per_s * model.flops_per_token()
    with torch.device("meta"):
        big = GPT(GPT2_SMALL)
    seconds = 10e9 * big.flops_per_token() / flops_per_s
    print(f"3. our model: {tokens_per_s:,.0f} tokens/s = {flops_per_s / 1e9:.1f} GFLOP/s achieved")
    print(f"   GPT-2 small needs {big.flops_per_token() / 1e6:,.0f} MFLOPs/token -> 10B tokens at that rate: "
          f"{seconds / 86400 / 365:,.1f} years (an H100 at ~40% MFU of 989 TFLOP/s: "
          f"{10e9 * big.flops_per_token() / (0.4 * 989e12) / 3600:.1f} hours)")


if __name__ == "__main__":
    exercise_1()
    exercise_2()
    exercise_3()
