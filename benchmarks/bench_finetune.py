"""Finetuning: LoRA vs full finetuning of chapter 05's model, side by side.

The model is the ``cpu`` preset (chapter 05's) with a 1024-token BPE vocabulary,
on Shakespeare scenes; both sides run the same training steps (forward,
backward, AdamW step) on the same batches, interleaved:

1. tokens/s of a LoRA step (rank 4 on every projection, ``lora.add_lora``) vs a
   full-finetuning step;
2. trainable parameters and AdamW state of LoRA vs full finetuning (target: <= 5 %);
3. tokens/s of an SFT step (chat tokens added, one conversation per row, loss on the
   assistant's tokens only) vs a pretraining step of the same model (target: within 10 %:
   the mask lives in the targets, so no second pass).
"""

from __future__ import annotations

import time
from itertools import islice

import torch
from common import Result

import minigpt_helpers as m
from minigpt_helpers.finetune import chat, lora
from minigpt_helpers.tokenizers.bpe import BPETokenizer


def _steps_per_s(model, batches, steps: int) -> float:
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    x, y = batches[0]
    _, loss = model(x, y)  # warm-up
    loss.backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    for i in range(steps):
        x, y = batches[i % len(batches)]
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    return steps / (time.perf_counter() - t0)


def run(quick: bool) -> list[Result]:
    docs = [r["text"] for r in islice(m.stream_documents("shakespeare", verbose=False), 60)]
    tok = BPETokenizer.train(docs[:30], vocab_size=1024)
    mcfg, cfg = m.preset("cpu", tok.vocab_size)
    batches = list(islice(m.train_batches(docs, tok, mcfg.block_size, cfg.batch_size, seed=0), 8))
    m.set_seed(0)
    full = m.GPT(mcfg)
    m.set_seed(0)
    adapted = m.GPT(mcfg)
    lora.add_lora(adapted)  # rank 4 on every projection; everything else frozen
    steps = 5 if quick else 40
    rates = {"full": 0.0, "lora": 0.0}
    for _ in range(2):  # interleaved, the best of two each
        rates["full"] = max(rates["full"], _steps_per_s(full, batches, steps))
        rates["lora"] = max(rates["lora"], _steps_per_s(adapted, batches, steps))
    tokens = cfg.batch_size * mcfg.block_size
    train_full, total = lora.count_parameters(full)
    train_lora, _ = lora.count_parameters(adapted)
    state_full, state_lora = lora.adamw_state_bytes(full), lora.adamw_state_bytes(adapted)
    share = train_lora / train_full
    print(f"   LoRA r=4: {train_lora:,} trainable of {total:,} ({share:.1%}); AdamW state "
          f"{state_lora / 1e3:.0f} kB vs {state_full / 1e3:.0f} kB; {rates['lora'] * tokens / 1e3:.0f}k tok/s vs "
          f"{rates['full'] * tokens / 1e3:.0f}k tok/s")
    # SFT vs pretraining: the same model with the chat tokens, the same batch shape
    m.set_seed(0)
    base = m.GPT(mcfg)
    base.tokenizer = tok
    chat.add_chat_tokens(base)
    ctok = base.tokenizer
    convs = [[{"role": "user", "content": d[:80]}, {"role": "assistant", "content": d[80:200]}] for d in docs]
    rows = [ex for c in convs if (ex := chat.sft_example(ctok, c, mcfg.block_size)) is not None]
    collate = chat.SFTCollate(mcfg.block_size, ctok.eot_id)
    sft_batches = [collate(rows[i: i + cfg.batch_size]) for i in range(0, len(rows) - cfg.batch_size + 1,
                                                                       cfg.batch_size)][:8]
    masked = float(sum((y == chat.IGNORE).sum() for _, y in sft_batches) / sum(y.numel() for _, y in sft_batches))
    sft_rate, pre_rate = 0.0, 0.0
    for _ in range(2):
        pre_rate = max(pre_rate, _steps_per_s(base, batches, steps))
        sft_rate = max(sft_rate, _steps_per_s(base, sft_batches, steps))
    print(f"   SFT step {sft_rate * tokens / 1e3:.0f}k tok/s vs pretraining {pre_rate * tokens / 1e3:.0f}k tok/s "
          f"({masked:.0%} of targets masked)")
    return [
        Result("finetune: SFT step vs pretraining step (same model and batch shape), tokens/s", sft_rate * tokens,
               pre_rate * tokens, "pretraining", "tok/s", target=0.9,
               note=f"target: within 10 %: {sft_rate / pre_rate:.2f}x, "
                    f"{'met' if sft_rate >= 0.9 * pre_rate else '**NOT met**'}; {masked:.0%} of the targets are "
                    "masked (prompts, padding): the mask is in the targets, one forward and one backward a step"),
        Result("finetune: LoRA step vs full finetuning step (cpu preset), tokens/s", rates["lora"] * tokens,
               rates["full"] * tokens, "full finetuning", "tok/s",
               note=f"rank 4 on c_attn, c_proj, c_fc of every block; batch {cfg.batch_size} x {mcfg.block_size}; "
                    "forward + backward + AdamW, same batches, interleaved"),
        Result("finetune: LoRA trainable parameters vs full finetuning", train_lora, train_full, "full finetuning",
               "params", lower_is_better=True, target=20.0,
               note=f"target: <= 5 %: {share:.1%}, {'met' if share <= 0.05 else '**NOT met**'}; AdamW state "
                    f"{state_lora / 1e3:.0f} kB vs {state_full / 1e3:.0f} kB ({state_lora / state_full:.1%})"),
    ]
