"""Preference tuning and reinforcement learning with verifiable rewards (chapter 10).

    logprobs.py     the summed log-probability of a reply under a model, prompt and padding masked
    dpo.py          Direct Preference Optimization: its loss, preference batches, dpo() with train(), metrics
    rewards.py      rewards a program can verify (chapter 08's instruction tasks) and a fluency guard
    pairs.py        preference pairs built offline: a verified reply chosen, the SFT model's failing one rejected
    grpo.py         Group Relative Policy Optimization: groups of samples, clipped ratios, a KL penalty
"""
