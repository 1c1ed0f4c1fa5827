"""Solutions to chapter 10's exercises (preference tuning and RL), runnable as a script.

    python solutions/10_preference_and_rl_solutions.py                  # learner sizes, a few minutes
    MINIGPT_QUICK=1 python solutions/10_preference_and_rl_solutions.py  # under a minute

Starts from chapter 08's chat model (``get_chat_model`` finetunes one if it is missing) and the chapter's
settings: the same rows, pairs, learning rates and sampling seeds.
"""

from __future__ import annotations

import copy
import random
import re
from collections import Counter

import numpy as np
import torch

import minigpt_helpers as m
from minigpt_helpers import TrainConfig, pick, set_seed
from minigpt_helpers.finetune.chat import chat_reply
from minigpt_helpers.finetune.instructions import TASKS, instruction_set

SAMPLES = pick(full=8, quick=2)
PER_TASK = pick(full=None, quick=4)
GRPO_STEPS = pick(full=300, quick=4)

sft = m.get_chat_model(min_context=64, verbose=False).eval()


def with_room(rows, room=8):
    return [r for r in rows if m.reply_room(sft, m.prompt_messages(r)) >= room]


train_rows = instruction_set("train")
val_rows = [r for t in TASKS for r in [r for r in with_room(instruction_set("validation")) if r["task"] == t][:PER_TASK]]


def grpo_cfg(seed: int = 0) -> TrainConfig:
    return TrainConfig(batch_size=16, max_steps=GRPO_STEPS, lr=1e-3, min_lr=1e-4, warmup_steps=min(5, GRPO_STEPS),
                       weight_decay=0.0, eval_interval=GRPO_STEPS, compile=False, seed=seed)


# ----------------------------------------------------------------------------- 1. beta and the learning rate in DPO
# The chapter's pairs, then DPO with the paper's beta = 0.1 and a 5x larger learning rate, 150 steps.
print("1. DPO with beta = 0.1 and lr 5e-4")
rows_for_pairs = random.Random(0).sample(train_rows, pick(full=1200, quick=40))
pairs = m.preference_pairs(sft, rows_for_pairs, samples=4, seed=0, max_new_tokens=24)
n_val = max(2, len(pairs) // 10)
steps = pick(full=150, quick=6)
set_seed(0)
run = m.dpo(copy.deepcopy(sft), pairs[:-n_val], beta=0.1, live="off",
            cfg=TrainConfig(batch_size=16, max_steps=steps, lr=5e-4, min_lr=5e-5, warmup_steps=max(1, steps // 12),
                            weight_decay=0.0, eval_interval=steps, compile=False))
hot = run.model.eval()
before, after = m.success_rates(sft, val_rows, samples=SAMPLES), m.success_rates(hot, val_rows, samples=SAMPLES)
for task in (*TASKS, "all"):
    print(f"  {task:9} sampled success {before[task]:.3f} -> {after[task]:.3f}")
held = m.preference_metrics(hot, sft, pairs[-n_val:], beta=0.1)
print(f"  held-out pairs: margin {held['margin']:+.2f}, accuracy {held['accuracy']:.2f}, "
      f"chosen reward {held['chosen_reward']:+.2f}, rejected reward {held['rejected_reward']:+.2f}")
# The rewards are beta (log pi - log pi_ref): with both negative, the policy made the chosen AND the rejected
# replies less likely, the rejected ones more so. The loss only sees their difference, so lowering both (and the
# probability of most other replies with them) satisfies it; the mass goes to replies no pair mentions, and
# success falls. A larger beta and a smaller learning rate keep the policy nearer the reference.

# ----------------------------------------------------------------------------- 2. Dr. GRPO
print("\n2. Dr. GRPO against the chapter's normalisation (use_word, no guard: the length is what is compared)")
uw_train = [r for r in train_rows if r["task"] == "use_word"]
lengths = {}
for name, kw in (("grpo, std", {}), ("dr_grpo, none", dict(normalization="dr_grpo", scale="none"))):
    set_seed(0)
    result = m.grpo(copy.deepcopy(sft), uw_train, m.use_word_reward, grpo_cfg(), group_size=8, max_new_tokens=24,
                    live="off", **kw)
    lengths[name] = [s["length"] for s in result.stats]
    print(f"  {name:14} mean completion length: first 20 steps {np.mean(lengths[name][:20]):.1f}, "
          f"last 20 {np.mean(lengths[name][-20:]):.1f} tokens")
# "grpo" averages each completion's loss over its own tokens: a long wrong completion's tokens each get a smaller
# push down than a short wrong one's, so long wrong replies are punished less and lengths drift up (Liu et al.
# 2025). With a fixed divisor (dr_grpo) every token counts the same. On this short task the difference is small:
# compare the two lines above with the noise of your own seeds before reading a trend into it.

# ----------------------------------------------------------------------------- 3. filter the prompts
print("\n3. GRPO on genre prompts the SFT model gets right sometimes")
genre_train = [r for r in train_rows if r["task"] == "genre" and m.reply_room(sft, m.prompt_messages(r)) >= 12]
genre_train = genre_train[: pick(full=None, quick=16)]
passes = [sum(m.genre_reward(r, t) > 0 for t in m.sampled_replies(sft, r, 8, max_new_tokens=12, seed=0))
          for r in genre_train]
mixed = [r for r, k in zip(genre_train, passes) if 0 < k < 8]
print(f"  passes out of 8 per prompt: {dict(sorted(Counter(passes).items()))}")
print(f"  {len(mixed)} of {len(genre_train)} prompts have 1 to 7 passes")
genre_val = [r for r in val_rows if r["task"] == "genre"]
if len(mixed) >= 2:
    set_seed(0)
    filtered = m.grpo(copy.deepcopy(sft), mixed, m.genre_reward, grpo_cfg(), group_size=8, max_new_tokens=12,
                      live="off")
    set_seed(0)
    plain = m.grpo(copy.deepcopy(sft), genre_train, m.genre_reward, grpo_cfg(), group_size=8, max_new_tokens=12,
                   live="off")
    for name, result in (("all prompts", plain), ("filtered", filtered)):
        zero = np.mean([s["zero_variance"] for s in result.stats])
        success = m.success_rates(result.model, genre_val, samples=SAMPLES)["genre"]
        print(f"  {name:12} zero-variance share {zero:.2f} | held-out sampled success {success:.3f}")
else:
    print("  too few mixed prompts to train on")
# Filtering removes the groups that carry no signal, so every step learns from two informative groups instead of
# (mostly) none. The zero-variance share is not 0 after filtering: the policy changes, and a prompt it now always
# gets right becomes a zero-variance group again (DAPO re-samples for that reason).

# ----------------------------------------------------------------------------- 4. hack the guard
print("\n4. A reply that passes the guard without being verse")
guard_rows = random.Random(1).sample(uw_train, pick(full=200, quick=20))
own = [chat_reply(sft, m.prompt_messages(r), max_new_tokens=24, temperature=1.0, seed=k)
       for k, r in enumerate(guard_rows)]
guarded = m.guarded_reward(m.use_word_reward, sft, m.fluency_threshold(sft, guard_rows, own))
row = {"task": "use_word", "word": "crown", "messages": [{"role": "user", "content":
       'Write a line of verse with the word "crown".'}]}
hack = "The crown, the crown, the crown, the crown, the crown."
print(f"  {hack!r}: reward {m.use_word_reward(row, hack)}, guarded {guarded(row, hack)} "
      f"(bits per byte {m.fluency_bpb(sft, row, hack):.2f}, threshold {guarded.max_bpb:.2f})")


def repeats_capped(reward_fn, max_share: float = 0.34):
    """``reward_fn``, but a reply whose most frequent word is more than ``max_share`` of its words earns 0."""
    def reward(row, reply):
        words = re.findall(r"[A-Za-z']+", reply.lower())
        if words and Counter(words).most_common(1)[0][1] / len(words) > max_share:
            return 0.0
        return reward_fn(row, reply)
    return reward


capped = repeats_capped(guarded)
kept = [guarded(r, t) > 0 for r, t in zip(guard_rows, own)]
still = [capped(r, t) > 0 for r, t, k in zip(guard_rows, own, kept) if k]
print(f"  with a cap on repeated words: the hack earns {capped(row, hack)}; of the {sum(kept)} SFT replies the "
      f"guard passes, {sum(still)} still pass")
# A cap on the share of the most frequent word closes this gap; a reply such as "The crown and the king and the
# crown and the king" (two words alternating) shows the next one. Each rule a checker adds is one more thing a
# policy under pressure learns to satisfy exactly: read the samples.

# ----------------------------------------------------------------------------- 5. why did genre get worse?
print("\n5. genre at lr 1e-3: the chapter's run, without the KL term, and with Dr. GRPO's advantages")
genre_val_rows = [r for r in val_rows if r["task"] == "genre"]
print(f"  SFT: held-out sampled success {m.success_rates(sft, genre_val_rows, samples=SAMPLES)['genre']:.3f}")
for name, kw in (("beta 0.04 (the chapter)", {}), ("beta 0 (no KL term)", dict(beta=0.0)),
                 ("scale none (Dr. GRPO)", dict(scale="none"))):
    set_seed(0)
    result = m.grpo(copy.deepcopy(sft), genre_train, m.genre_reward, grpo_cfg(), group_size=8, max_new_tokens=12,
                    live="off", **kw)
    print(f"  {name:24} held-out sampled success "
          f"{m.success_rates(result.model, genre_val_rows, samples=SAMPLES)['genre']:.3f}")
adv = m.group_advantages(torch.tensor([[1.0] * 7 + [0.0]]))
print(f"  advantages of a group with 7 right and 1 wrong (std scaling): {adv[0].numpy().round(2).tolist()}")
# With the std scaling, the lone wrong answer of a nearly-solved group gets A = -2.47 and the right ones +0.35: the
# loss pushes hard on one sample. Without it (scale="none") they are -0.875 and +0.125, 2.8x smaller, which looks
# gentler; but AdamW rescales each update by the recent gradients' size, so the advantages' scale barely changes
# the step, and only their direction and noise count (on our machine this run fell furthest of the three). If the
# run without the KL term falls less than the chapter's, the KL term's gradient on zero-variance steps is part of
# the cause. The remedy that works whatever the cause is the chapter's: a smaller learning rate (or fewer
# zero-variance groups, exercise 3).
print(m.run_summary())
