"""Alignment (chapter 10): GRPO's batched rollouts and the cost of a DPO step, side by side.

The model has chapter 08's shape (a vocabulary of 1024 BPE ids + 4 chat tokens, a
context of 64, 2 layers, 4 heads, width 128) and random weights: speed does not
depend on what it learned.

1. GRPO samples a group of G = 8 completions of one prompt. ``sample_group_ids`` does it
   in one batch of 8 rows with one KV cache; the reference is 8 ``generate_ids`` calls,
   one completion each (with its own KV cache, as by default). No stop ids, so every row
   writes all ``max_new_tokens`` tokens; both sides sample at temperature 1 with the same
   pipeline. Counted: generated tokens/s (8 x 40 per group).
2. A DPO step (``DPOModel``: the policy runs forward and backward on the B chosen and the
   B rejected replies, one (2B, T) batch, and the frozen reference runs forward on the same
   batch) vs an SFT step on the same model (forward and backward on a (B, T) batch of
   chapter 08's ``SFTCollate``), each with its AdamW step. Counted: the tokens of the
   sequences trained on, i.e. the (2B, T) batch's for DPO (chosen and rejected both) and the
   (B, T) batch's for SFT, per second. A DPO step does the work of about 8/3 SFT steps per
   pair (two sequences forward and backward, plus the reference's forward), so about 4/3 of
   SFT's work per token: the ratio is about 0.75 at best. Target: >= 0.45. (``train()`` shows
   the rate of pairs' tokens, one sequence per pair, which is half this.)
"""

from __future__ import annotations

import copy
import time
from itertools import islice

import torch
from common import Result, best_time

import minigpt_helpers as m
from minigpt_helpers.align.dpo import DPOModel, PreferenceCollate, preference_examples
from minigpt_helpers.align.pairs import fits
from minigpt_helpers.finetune.chat import SFTCollate, add_chat_tokens, sft_example
from minigpt_helpers.finetune.instructions import instruction_set
from minigpt_helpers.model.generation import generate_ids, sample_group_ids
from minigpt_helpers.tokenizers.bpe import BPETokenizer

GROUP, PROMPT_TOKENS, NEW_TOKENS = 8, 20, 40
BLOCK, BATCH = 64, 16


def _chat_model() -> m.GPT:
    """Chapter 08's shape with random weights: a 1024-id BPE tokenizer, its 4 chat tokens in the last rows."""
    docs = [r["text"] for r in islice(m.stream_documents("shakespeare", verbose=False), 30)]
    m.set_seed(0)
    model = m.GPT(m.GPTConfig(vocab_size=1028, block_size=BLOCK, n_layer=2, n_head=4, n_embd=128))
    model.tokenizer = BPETokenizer.train(docs, vocab_size=1024)
    return add_chat_tokens(model)


def rollouts(model: m.GPT, rounds: int) -> tuple[float, float]:
    """Best seconds for one group of GROUP completions: batched (one KV cache) and GROUP sequential calls."""
    g = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 1024, (PROMPT_TOKENS,), generator=g).tolist()

    def batched() -> None:
        rows = sample_group_ids(model, prompt, GROUP, NEW_TOKENS, temperature=1.0, seed=0, stop_ids=[])
        assert all(len(r) == NEW_TOKENS for r in rows)

    def sequential() -> None:
        for k in range(GROUP):
            assert len(list(generate_ids(model, prompt, NEW_TOKENS, temperature=1.0, seed=k))) == NEW_TOKENS

    t_group, t_seq = float("inf"), float("inf")
    for _ in range(rounds):  # interleaved, the best of each
        t_group = min(t_group, best_time(batched, repeat=3))
        t_seq = min(t_seq, best_time(sequential, repeat=3))
    return t_group, t_seq


def _batches(model: m.GPT, n: int) -> tuple[list, list]:
    """n SFT batches (B rows) and n preference batches (B pairs: 2B rows) from chapter 08's training rows.

    Each pair's chosen reply is the row's answer, its rejected one the next row's different answer of the same task.
    """
    tok = model.tokenizer
    rows = instruction_set("train")[: 40 * BATCH * n]
    sft_rows = [ex for r in rows if (ex := sft_example(tok, r["messages"], BLOCK)) is not None]
    pairs = []
    for row, nxt in zip(rows, rows[1:]):
        prompt = row["messages"][:-1]
        if nxt["task"] == row["task"] and nxt["answer"] != row["answer"] and \
                fits(model, prompt, row["answer"]) and fits(model, prompt, nxt["answer"]):
            pairs.append({"messages": prompt, "chosen": row["answer"], "rejected": nxt["answer"]})
    examples = preference_examples(tok, pairs, BLOCK)
    sft_collate, pair_collate = SFTCollate(BLOCK, tok.eot_id), PreferenceCollate(BLOCK, tok.eot_id)
    sft = [sft_collate(sft_rows[i * BATCH: (i + 1) * BATCH]) for i in range(n)]
    dpo = [pair_collate(examples[i * BATCH: (i + 1) * BATCH]) for i in range(n)]
    if len(sft[-1][0]) != BATCH or len(dpo[-1][0]) != 2 * BATCH:
        raise RuntimeError(f"too few rows: {len(sft_rows)} SFT rows, {len(examples)} pairs")
    return sft, dpo


def _tokens_per_s(module: torch.nn.Module, batches: list, steps: int) -> float:
    """Tokens per second of ``module``'s optimizer steps (forward, backward, AdamW) on ``batches`` in turn, after one
    warm-up; a batch's tokens are its input's (every row, padding included, as in chapter 05's count)."""
    opt = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-4)

    def step(i: int) -> None:
        x, y = batches[i % len(batches)]
        _, loss = module(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    step(0)
    tokens = sum(batches[i % len(batches)][0].numel() for i in range(steps))
    t0 = time.perf_counter()
    for i in range(steps):
        step(i)
    return tokens / (time.perf_counter() - t0)


def run(quick: bool) -> list[Result]:
    model = _chat_model().eval()
    t_group, t_seq = rollouts(model, rounds=1 if quick else 3)
    tokens = GROUP * NEW_TOKENS
    print(f"   a group of {GROUP} x {NEW_TOKENS} tokens: {t_group * 1e3:.0f} ms batched, {t_seq * 1e3:.0f} ms as "
          f"{GROUP} generate_ids calls")

    policy = model.train()
    runner = DPOModel(policy, copy.deepcopy(policy))  # the reference: a frozen copy, outside the optimizer
    sft_batches, dpo_batches = _batches(policy, 4)
    steps = 3 if quick else 20
    sft_rate, dpo_rate = 0.0, 0.0
    for _ in range(1 if quick else 3):  # interleaved, the best of each
        sft_rate = max(sft_rate, _tokens_per_s(policy, sft_batches, steps))
        dpo_rate = max(dpo_rate, _tokens_per_s(runner, dpo_batches, steps))
    print(f"   DPO {dpo_rate:,.0f} tok/s vs SFT {sft_rate:,.0f} tok/s ({BATCH} pairs vs {BATCH} rows)")
    threads = torch.get_num_threads()
    return [
        Result(f"align: GRPO rollouts, a group of G={GROUP} sampled with one KV cache vs {GROUP} sequential "
               "generate calls, tokens/s", tokens / t_group, tokens / t_seq, f"{GROUP} generate_ids calls",
               "tok/s", target=4.0,
               note=f"chapter 08's shape (vocab 1028, ctx {BLOCK}, 2 layers, 4 heads, width 128), random weights; "
                    f"a {PROMPT_TOKENS}-token prompt, {NEW_TOKENS} new tokens per row at temperature 1, no stop ids "
                    f"(every row writes them all); both with a KV cache; {threads} torch threads"),
        Result("align: DPO step vs SFT step on the same model, tokens/s (chosen and rejected both counted; the "
               "frozen reference's forward pass included)", dpo_rate, sft_rate, "SFT step", "tok/s", target=0.45,
               note=f"B = {BATCH} pairs (2B rows: chosen and rejected) vs B = {BATCH} rows, chapter 08's rows, "
                    f"context {BLOCK}; the tokens of every row a step trains on (padding included) per second; a DPO "
                    f"step also runs the 2B rows through the frozen reference, forward only, so about 4/3 of SFT's "
                    f"work per token (0.75x at best); forward + backward + AdamW, interleaved, the best of the "
                    f"rounds; {threads} torch threads. train() shows pair tokens (one sequence per pair): half this"),
    ]


if __name__ == "__main__":
    for r in run(quick=False):
        print(r, f"ratio {r.ratio:.2f}x")
