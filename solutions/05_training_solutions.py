"""Chapter 05 exercise solutions: learning rate, batch size vs throughput, dropout against overfitting.

    python solutions/05_training_solutions.py          # ~3 minutes on a laptop CPU
    MINIGPT_QUICK=1 python solutions/05_training_solutions.py   # seconds

Everything goes through ``minigpt_helpers.train`` with the ``tiny`` / ``cpu``
presets, on the offline Shakespeare corpus.
"""

import time

import torch

from minigpt_helpers import GPT, pick, preset, set_seed, stream_documents, train, train_batches
from minigpt_helpers.tokenizers.train import default_tokenizer

DATA = "shakespeare"
tok = default_tokenizer(verbose=False)
V = tok.vocab_size


def fresh(name: str, **over):
    mcfg, tcfg = preset(name, V, **over)
    set_seed(0)
    model = GPT(mcfg)
    model.tokenizer = tok
    return model, tcfg


# 1. Learning rate: same time budget, different peak rates. Too low learns slowly; too high is
#    unstable (the loss jumps around or diverges; the NaN guard stops the run if it blows up).
print("1. learning rate (tiny preset, fixed time budget)")
budget = pick(full=30, quick=3)
for lr in (1e-3, 3e-3, 1e-2, 3e-2):
    model, cfg = fresh("tiny", lr=lr, min_lr=lr / 10, max_steps=None, time_budget_s=budget)
    r = train(model, DATA, cfg, live="off")
    print(f"   lr {lr:7.0e}: {r.step:4d} steps, validation loss {r.final_val_loss:.3f} ({r.stop_reason})")

# 2. Batch size and throughput: on a CPU a bigger batch means bigger matrix multiplies, which use
#    more of the vector units per Python/kernel-launch overhead, until the cores are saturated;
#    beyond that tokens/s stays flat (and memory grows).
print("2. tokens/s of the 'cpu' preset's model by batch size")
mcfg, _ = preset("cpu", V)
batches_docs = stream_documents(DATA, "train", verbose=False)
for B in (4, 16, 64):
    set_seed(0)
    model = GPT(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    it = train_batches(batches_docs, tok, mcfg.block_size, B, seed=0)
    steps = pick(full=10, quick=2)
    x, y = next(it)
    model(x, y)[1].backward()  # warm-up step
    t0 = time.perf_counter()
    for _ in range(steps):
        x, y = next(it)
        _, loss = model(x, y)
        loss.backward()
        opt.step()
        opt.zero_grad()
    dt = time.perf_counter() - t0
    print(f"   batch {B:3d}: {steps * B * mcfg.block_size / dt:9,.0f} tokens/s")

# 3. Dropout against overfitting: the few-pages experiment of section 5, with and without dropout.
#    Dropout slows memorisation: the validation loss turns up later and less.
print("3. overfitting a few pages, dropout 0 vs 0.2")
pages = [d["text"] for d in stream_documents(DATA, "train", verbose=False).take(4)]
val = list(stream_documents(DATA, "validation", verbose=False).take(20))
for p in (0.0, 0.2):
    model, cfg = fresh("tiny", dropout=p, max_steps=pick(full=400, quick=20), eval_interval=pick(full=50, quick=10),
                       lr=3e-3, min_lr=3e-3, warmup_steps=10)
    r = train(model, pages, cfg, val_data=val, live="off")
    h = r.history
    best = min(range(len(h.val_losses)), key=h.val_losses.__getitem__)
    print(f"   dropout {p}: best validation loss {h.val_losses[best]:.3f} at step {h.val_steps[best]}, "
          f"final {h.val_losses[-1]:.3f}; final train loss {h.losses[-1]:.3f}")
