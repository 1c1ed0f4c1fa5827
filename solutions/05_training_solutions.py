"""Chapter 05 exercise solutions: learning rate, batch size vs throughput, dropout against overfitting.

    python solutions/05_training_solutions.py          # ~6 minutes on a laptop CPU
    MINIGPT_QUICK=1 python solutions/05_training_solutions.py   # well under a minute

Everything goes through ``minigpt_helpers.train`` with the ``tiny`` / ``cpu``
presets, on the chapter's data ("auto": the offline Shakespeare corpus when the Hub is unreachable).
"""

import time

import torch

from minigpt_helpers import GPT, is_quick, pick, preset, set_seed, stream_documents, train, train_batches
from minigpt_helpers.tokenizers.train import default_tokenizer

DATA = "auto"
tok = default_tokenizer(verbose=False)
V = tok.vocab_size


def fresh(name: str, **over):
    """A seeded model of preset ``name`` and its TrainConfig (quick mode: batches made in the loop,
    so that a few-second budget is not spent starting a worker process)."""
    mcfg, tcfg = preset(name, V, data_workers=pick(full=1, quick=0), **over)
    set_seed(0)
    model = GPT(mcfg)
    model.tokenizer = tok
    return model, tcfg


# 1. Learning rate: the tiny preset for the same 30-second budget with lr 1e-3, 3e-3 and 1e-2; which
#    reaches the lowest validation loss, and what happens at 3e-2? Too low learns slowly; too high is
#    unstable (the loss jumps around or diverges; the NaN guard stops the run if it blows up).
print("1. learning rate (tiny preset, fixed time budget)")
budget = pick(full=30, quick=2)
val_loss = {}
for lr in (1e-3, 3e-3, 1e-2, 3e-2):
    model, cfg = fresh("tiny", lr=lr, min_lr=lr / 10, max_steps=None, time_budget_s=budget)  # min_lr: the preset's lr / 10
    r = train(model, DATA, cfg, live="off")
    val_loss[lr] = r.final_val_loss
    print(f"   lr {lr:7.0e}: {r.step:4d} steps, validation loss {r.final_val_loss:.3f} ({r.stop_reason})")
best = min((1e-3, 3e-3, 1e-2), key=lambda lr: val_loss[lr])
print(f"   lowest of the three in {budget} s: lr {best:.0e} ({val_loss[best]:.3f}); lr 3e-2 ends at "
      f"{val_loss[3e-2]:.3f}, {val_loss[3e-2] - val_loss[best]:+.3f} from it")
if not is_quick():  # quick mode's 2-second runs barely leave the warmup
    assert best != 1e-3 and val_loss[3e-2] > val_loss[best]  # 1e-3 learns too slowly, 3e-2 is past the best

# 2. Batch size and throughput: tokens/s of the cpu preset's model for batch sizes 4, 16 and 64 (a few
#    steps each). On a CPU a bigger batch means bigger matrix multiplies, which use more of the vector
#    units per Python/kernel-launch overhead, until the cores are saturated; beyond that tokens/s stays flat.
print("2. tokens/s of the 'cpu' preset's model by batch size")
mcfg, _ = preset("cpu", V)
docs = stream_documents(DATA, "train", verbose=False)


def throughput(B: int, steps: int) -> float:
    """Tokens per second of AdamW steps on the cpu preset's model with batch size B."""
    set_seed(0)
    model = GPT(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = train_batches(docs, tok, mcfg.block_size, B, seed=0)

    def step() -> None:
        x, y = next(it)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()

    step()  # warm-up: allocates AdamW's state
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * B * mcfg.block_size / (time.perf_counter() - t0)


tokens_per_s = {}
for B in (4, 16, 64):
    tokens_per_s[B] = throughput(B, pick(full=10, quick=3))
    print(f"   batch {B:3d}: {tokens_per_s[B]:9,.0f} tokens/s")
gain_small, gain_large = tokens_per_s[16] / tokens_per_s[4], tokens_per_s[64] / tokens_per_s[16]
print(f"   4 -> 16: x{gain_small:.2f} tokens/s; 16 -> 64: x{gain_large:.2f} "
      f"({'still helping' if gain_large > 1.1 else 'it stops helping: the cores are saturated'})")
if not is_quick():  # timings: checked at full size (quick mode's 3 steps on a busy machine only print them)
    assert tokens_per_s[16] > tokens_per_s[4]

# 3. Overfitting cure: section 5 (the tiny model on four pages, a 90-second budget) with dropout 0.2.
#    Does the validation loss still turn up, and when? Dropout slows memorisation.
print("3. overfitting a few pages, dropout 0 vs 0.2")
pages = [d["text"] for d in stream_documents(DATA, "train", verbose=False).take(4)]
val = list(stream_documents(DATA, "validation", verbose=False).take(20))
turn = {}
for p in (0.0, 0.2):
    model, cfg = fresh("tiny", dropout=p, max_steps=None, time_budget_s=pick(full=90, quick=5),
                       eval_interval=pick(full=20, quick=5), warmup_steps=10, lr=3e-3, min_lr=3e-3)
    h = train(model, pages, cfg, val_data=val, live="off").history
    best_i = min(range(len(h.val_losses)), key=h.val_losses.__getitem__)
    rise = h.val_losses[-1] - h.val_losses[best_i]
    turn[p] = (h.val_steps[best_i], rise)
    when = (f"turns up after step {h.val_steps[best_i]} and rises by {rise:.3f} by step {h.val_steps[-1]}"
            if rise > 0.02 else f"has not turned up by step {h.val_steps[-1]}")
    print(f"   dropout {p}: best validation loss {h.val_losses[best_i]:.3f} at step {h.val_steps[best_i]}, "
          f"final {h.val_losses[-1]:.3f}; final train loss {h.losses[-1]:.3f}: validation {when}")
if not is_quick():  # 5 seconds are too few to overfit four pages
    assert turn[0.0][1] > 0.02  # without dropout the validation loss turns up, as in section 5
    assert turn[0.2][1] < turn[0.0][1]  # with dropout it turns up less (or not at all)
