"""Preference tuning and reinforcement learning with verifiable rewards (chapter 10).

    logprobs.py     the summed log-probability of a reply under a model, prompt and padding masked
    dpo.py          Direct Preference Optimization: its loss, preference batches, dpo() with train(), metrics
    rewards.py      rewards a program can verify (chapter 08's instruction tasks) and a fluency guard
    pairs.py        preference pairs built offline: a verified reply chosen, the SFT model's failing one rejected
    grpo.py         Group Relative Policy Optimization: groups of samples, clipped ratios, a KL penalty
    live.py         GRPO's per-step statistics as a figure, redrawn live in a notebook
    evaluate.py     success rates of sampled replies per task: what DPO and GRPO change
    arithmetic.py   a verifiable arithmetic set (from the Hub, or made locally) and its reward
"""
