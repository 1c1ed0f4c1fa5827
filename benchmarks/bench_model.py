"""Training throughput of our GPT against a plain-PyTorch model of the same shape.

Both sides do one forward + backward pass on the same batch (B sequences of T
tokens) and are timed alternately in the same run (best of several), so the ratio
is fair on a noisy machine.

Reference: the same embeddings, final LayerNorm and tied head around a stack of
``torch.nn.TransformerEncoderLayer(norm_first=True, batch_first=True)`` with the
tanh GELU and a causal mask -- what one would write with PyTorch's built-in layers.
A second row compares our two attention paths (fused SDPA vs the explicit
softmax(qk^T/sqrt(d))v that chapter 03 derives).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from common import Result, best_time

from minigpt_helpers import GPT, GPTConfig


class ReferenceGPT(nn.Module):
    """GPT-shaped model from torch.nn built-ins (pre-LN encoder layers + causal mask)."""

    def __init__(self, c: GPTConfig) -> None:
        super().__init__()
        self.wte = nn.Embedding(c.vocab_size, c.n_embd)
        self.wpe = nn.Embedding(c.block_size, c.n_embd)
        layer = nn.TransformerEncoderLayer(
            c.n_embd, c.n_head, dim_feedforward=4 * c.n_embd, dropout=0.0,
            activation=nn.GELU(approximate="tanh"), batch_first=True, norm_first=True,
        )
        self.blocks = nn.TransformerEncoder(layer, c.n_layer, enable_nested_tensor=False)
        self.ln_f = nn.LayerNorm(c.n_embd)
        self.head = nn.Linear(c.n_embd, c.vocab_size, bias=False)
        self.head.weight = self.wte.weight

    def forward(self, idx: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        x = self.wte(idx) + self.wpe(torch.arange(T, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)
        x = self.ln_f(self.blocks(x, mask=mask, is_causal=True))
        logits = self.head(x)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1))


def _step(model: nn.Module, idx: torch.Tensor, tgt: torch.Tensor, ours: bool):
    def fn() -> None:
        model.zero_grad(set_to_none=True)
        loss = model(idx, targets=tgt)[1] if ours else model(idx, tgt)
        loss.backward()

    return fn


def run(quick: bool) -> list[Result]:
    if quick:
        cfg = GPTConfig(vocab_size=256, block_size=64, n_layer=2, n_head=4, n_embd=64)
        B, rounds, repeat = 4, 2, 2
    else:
        cfg = GPTConfig(vocab_size=1024, block_size=256, n_layer=4, n_head=8, n_embd=256)
        B, rounds, repeat = 8, 5, 3
    torch.manual_seed(0)
    ours = GPT(cfg).train()
    ref = ReferenceGPT(cfg).train()
    n_ours = ours.num_params(non_embedding=False)
    n_ref = sum(p.numel() for p in ref.parameters())
    assert n_ours == n_ref, f"models differ in size: ours {n_ours:,} vs reference {n_ref:,}"
    T = cfg.block_size
    idx = torch.randint(0, cfg.vocab_size, (B, T))
    tgt = torch.randint(0, cfg.vocab_size, (B, T))
    tokens = B * T

    t_sdpa = t_ref = t_manual = float("inf")
    for _ in range(rounds):  # interleave the three sides
        ours.set_attn_impl("sdpa")
        t_sdpa = min(t_sdpa, best_time(_step(ours, idx, tgt, True), repeat=repeat))
        t_ref = min(t_ref, best_time(_step(ref, idx, tgt, False), repeat=repeat))
        ours.set_attn_impl("manual")
        t_manual = min(t_manual, best_time(_step(ours, idx, tgt, True), repeat=repeat))
    ours.set_attn_impl("sdpa")

    shape = f"B={B} T={T} L={cfg.n_layer} H={cfg.n_head} C={cfg.n_embd} V={cfg.vocab_size}, {n_ours / 1e6:.2f}M params, fp32 CPU, {torch.get_num_threads()} threads"
    return [
        Result(
            "GPT forward+backward throughput", tokens / t_sdpa, tokens / t_ref,
            "nn.TransformerEncoderLayer GPT", "tokens/s", target=1.0, note=shape,
        ),
        Result(
            "attention path: SDPA vs manual (fwd+bwd)", tokens / t_sdpa, tokens / t_manual,
            "manual softmax(qk^T/√d)v", "tokens/s", note=shape,
        ),
    ]
