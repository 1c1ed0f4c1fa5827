"""GRPO (chapter 10): the per-token loss by hand, the aggregated loss against TRL, group advantages, the k3 KL
estimator against the exact KL, the batched group sampler against generate_ids, and grpo() through train():
its statistics, its checkpoints (chat GPT folders), exact resume after a stop, and its errors. Then what
chapter 10 measures and shows around it: success rates of sampled replies (evaluate.py) and the stats'
figure (live.py)."""

from __future__ import annotations

import math
import shutil

import numpy as np
import pytest
import torch
from tiny_chat import convo, tiny_model

from minigpt_helpers import TrainConfig
from minigpt_helpers.align.evaluate import sampled_replies, success_rates
from minigpt_helpers.align.grpo import (
    STAT_KEYS,
    STATS_FILE,
    group_advantages,
    grpo,
    grpo_loss,
    grpo_token_loss,
    kl_k3,
    zero_variance_groups,
)
from minigpt_helpers.align.live import PANELS, StatsMonitor, plot_grpo_stats, running_mean
from minigpt_helpers.align.pairs import sample_seed
from minigpt_helpers.finetune.chat import chat_reply, load_chat_model, render_conversation
from minigpt_helpers.model.generation import generate_ids, sample_group_ids
from minigpt_helpers.training.checkpoint import find_checkpoint

pytestmark = pytest.mark.usefixtures("one_thread")

# ------------------------------------------------------------------------------------------------ the loss
# Two completions of three tokens; the second has two real tokens (its third is padding).
LOGP = [[-1.0, -0.5, -2.0], [-0.3, -1.2, -0.7]]
OLD = [[-1.3, -0.5, -1.5], [-0.3, -0.9, -0.9]]  # logp - old: [0.3, 0, -0.5], [0, -0.3, 0.2]
REF = [[-1.0, -0.7, -2.0], [-0.5, -1.2, -0.7]]  # ref - logp: [0, -0.2, 0], [-0.2, 0, 0]
ADV = [1.0, -1.0]
MASK = [[True, True, True], [True, True, False]]
EPS, BETA = 0.2, 0.1
K = math.exp(-0.2) + 0.2 - 1  # k3 where ref - logp = -0.2 (0 where they are equal)

# loss_t = -min(r A, clip(r, 0.8, 1.2) A) + 0.1 k3, branch by branch:
#   (0, 0) r = e^0.3 = 1.35 > 1.2, A > 0: the clipped 1.2 is smaller  -> -1.2                  (clipped)
#   (0, 1) r = 1:                                                      -> -1 + 0.1 K
#   (0, 2) r = e^-0.5 = 0.61 < 0.8, A > 0: r A is smaller, kept       -> -e^-0.5
#   (1, 0) r = 1, A = -1:                                              -> 1 + 0.1 K
#   (1, 1) r = e^-0.3 = 0.74 < 0.8, A < 0: -0.8 < -0.74, the clip     -> 0.8                   (clipped)
#   (1, 2) r = e^0.2 = 1.22 > 1.2, A < 0: -1.22 < -1.2, r A kept      -> e^0.2                 (padding)
HAND_LOSS = [[-1.2, -1 + BETA * K, -math.exp(-0.5)], [1 + BETA * K, 0.8, math.exp(0.2)]]
# d loss_t / d logp_t: 0 where the clip acts; -r A from the surrogate; 0.1 (1 - e^(ref - logp)) from k3
HAND_GRAD = [[0.0, -1 + BETA * (1 - math.exp(-0.2)), -math.exp(-0.5)],
             [1 + BETA * (1 - math.exp(-0.2)), 0.0, math.exp(0.2)]]
ROW0 = HAND_LOSS[0][0] + HAND_LOSS[0][1] + HAND_LOSS[0][2]  # 3 tokens
ROW1 = HAND_LOSS[1][0] + HAND_LOSS[1][1]  # 2 tokens
HAND_AGGREGATE = {"grpo": (ROW0 / 3 + ROW1 / 2) / 2, "token": (ROW0 + ROW1) / 5, "dr_grpo": (ROW0 + ROW1) / (2 * 4)}


def t(values, dtype=torch.float64) -> torch.Tensor:
    return torch.tensor(values, dtype=dtype)


def test_the_per_token_loss_and_its_gradient_match_a_hand_computation():
    logp = t(LOGP).requires_grad_(True)
    per_token = grpo_token_loss(logp, t(OLD), t(REF), t(ADV), clip_eps=EPS, beta=BETA)
    assert torch.allclose(per_token, t(HAND_LOSS), atol=1e-12)
    per_token.sum().backward()
    assert torch.allclose(logp.grad, t(HAND_GRAD), atol=1e-12)  # clipped tokens get no gradient


@pytest.mark.parametrize("normalization", ["grpo", "token", "dr_grpo"])
def test_each_normalization_aggregates_the_hand_losses(normalization):
    loss, stats = grpo_loss(t(LOGP), t(OLD), t(REF), t(ADV), t(MASK, torch.bool), clip_eps=EPS, beta=BETA,
                            normalization=normalization, max_length=4)
    assert loss.item() == pytest.approx(HAND_AGGREGATE[normalization], abs=1e-12)
    assert stats["clip_fraction"] == pytest.approx(2 / 5)  # (0, 0) and (1, 1); (1, 2) is padding
    assert stats["kl"] == pytest.approx(2 * K / 5) and stats["tokens"] == 5
    assert len(set(HAND_AGGREGATE.values())) == 3  # the three really differ on this case


def test_the_clip_fraction_is_zero_on_policy_and_beta_zero_drops_the_kl():
    logp = t(LOGP)
    loss, stats = grpo_loss(logp, logp, t(REF), t(ADV), t(MASK, torch.bool), beta=0.0, normalization="token")
    assert stats["clip_fraction"] == 0 and stats["ratio"] == 1
    assert loss.item() == pytest.approx(-(3 * 1.0 + 2 * -1.0) / 5)  # -mean(A) over the 5 tokens, no KL


# ------------------------------------------------------------------------------------------------ TRL
TRL_LOSS_TYPES = {"grpo": "grpo", "dr_grpo": "dr_grpo", "token": "bnpo"}  # ours -> TRL's loss_type


def trl_grpo(logp: torch.Tensor, old: torch.Tensor, ref: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, *,
             loss_type: str, beta: float, eps: float, max_length: int) -> tuple[torch.Tensor, dict]:
    """(loss, metrics) of TRL 1.16's ``trl.trainer.grpo_trainer.GRPOTrainer._compute_loss(self, model, inputs)``.

    TRL has no stand-alone GRPO loss function: ``_compute_loss`` computes the policy's log-probabilities with
    ``self._get_per_token_logps_and_entropies(model, ...)`` and everything after that (the ratio, the clip, the
    k3 term, the normalisation of each ``loss_type``, the KL and clip metrics) from ``inputs`` and attributes of
    ``self``. It is called here unbound on a stand-in ``self`` whose log-prob method returns ``logp`` (and zero
    entropies), with TRL's defaults otherwise (token-level ratios, one process, no gradient accumulation, no
    vLLM, no entropy masking or bonus, no off-policy mask).
    """
    grpo_trainer = pytest.importorskip("trl.trainer.grpo_trainer", reason="TRL is a test dependency (requirements.txt)")
    from collections import defaultdict
    from types import SimpleNamespace

    accelerator = SimpleNamespace(num_processes=1, reduce=lambda x, reduction: x, gather=lambda x: x,
                                  gather_for_metrics=lambda x: x, sync_gradients=True)
    stand_in = SimpleNamespace(
        _get_per_token_logps_and_entropies=lambda *a, **k: (logp, torch.zeros_like(logp), None),
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=beta, loss_type=loss_type, epsilon_low=eps, epsilon_high=eps,
        args=SimpleNamespace(use_bias_correction_kl=False, delta=None, steps_per_generation=1),
        use_vllm=False, vllm_importance_sampling_correction=False, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_length, _entropy_bonus_enabled=False,
        _metrics=defaultdict(lambda: defaultdict(list)), accelerator=accelerator)
    b, n = logp.shape
    inputs = {"prompt_ids": torch.zeros(b, 2, dtype=torch.long), "prompt_mask": torch.ones(b, 2, dtype=torch.long),
              "completion_ids": torch.zeros(b, n, dtype=torch.long), "completion_mask": mask.long(),
              "advantages": adv, "old_per_token_logps": old, "ref_per_token_logps": ref,
              "num_items_in_batch": mask.sum()}
    loss = grpo_trainer.GRPOTrainer._compute_loss(stand_in, None, inputs)
    return loss, {k: v[-1] for k, v in stand_in._metrics["train"].items()}


@pytest.mark.parametrize("normalization", ["grpo", "dr_grpo", "token"])
def test_the_aggregated_loss_and_its_gradient_match_trl(normalization):
    """Against TRL 1.16's ``GRPOTrainer._compute_loss`` (see trl_grpo) on random completions of different lengths,
    with the ratio off 1 so that the clip acts: the loss and its gradient to 1e-6, the KL and clip metrics."""
    g = torch.Generator().manual_seed(0)
    b, n = 6, 7
    logp = -torch.rand(b, n, generator=g, dtype=torch.float64) * 3
    old = logp + 0.4 * torch.randn(b, n, generator=g, dtype=torch.float64)
    ref = logp + 0.3 * torch.randn(b, n, generator=g, dtype=torch.float64)
    adv = torch.randn(b, generator=g, dtype=torch.float64)
    lengths = torch.tensor([7, 1, 4, 6, 2, 5])
    mask = torch.arange(n)[None, :] < lengths[:, None]
    ours_logp, theirs_logp = logp.clone().requires_grad_(True), logp.clone().requires_grad_(True)
    loss, stats = grpo_loss(ours_logp, old, ref, adv, mask, clip_eps=0.2, beta=0.04, normalization=normalization,
                            max_length=9)
    trl_loss, metrics = trl_grpo(theirs_logp, old, ref, adv, mask, loss_type=TRL_LOSS_TYPES[normalization],
                                 beta=0.04, eps=0.2, max_length=9)
    assert abs(loss.item() - trl_loss.item()) < 1e-6
    loss.backward()
    trl_loss.backward()
    assert (ours_logp.grad - theirs_logp.grad).abs().max().item() < 1e-6
    assert stats["kl"] == pytest.approx(metrics["kl"], abs=1e-6)
    assert stats["clip_fraction"] == pytest.approx(metrics["clip_ratio/region_mean"], abs=1e-6)
    assert 0 < stats["clip_fraction"] < 1  # the clip acted on some tokens, not all


def test_token_normalization_is_trls_dapo_on_one_batch():
    g = torch.Generator().manual_seed(1)
    logp = -torch.rand(4, 5, generator=g, dtype=torch.float64)
    old, ref = logp + 0.3 * torch.randn(4, 5, generator=g, dtype=torch.float64), logp - 0.1
    adv, mask = torch.randn(4, generator=g, dtype=torch.float64), torch.rand(4, 5, generator=g) < 0.7
    loss, _ = grpo_loss(logp, old, ref, adv, mask, normalization="token")
    trl_loss, _ = trl_grpo(logp, old, ref, adv, mask, loss_type="dapo", beta=0.04, eps=0.2, max_length=5)
    assert abs(loss.item() - trl_loss.item()) < 1e-6


def test_group_advantages_use_trls_std():
    """TRL scales by ``trl.trainer.utils.nanstd`` (Bessel's correction) + 1e-4, as group_advantages does."""
    utils = pytest.importorskip("trl.trainer.utils", reason="TRL is a test dependency (requirements.txt)")
    rewards = torch.randn(5, 8, generator=torch.Generator().manual_seed(2))
    trl_adv = (rewards - rewards.mean(1, keepdim=True)) / (utils.nanstd(rewards, dim=1, keepdim=True) + 1e-4)
    assert torch.allclose(group_advantages(rewards), trl_adv, atol=1e-6)


# ------------------------------------------------------------------------------------------------ advantages, KL
def test_group_advantages_by_hand_and_zero_variance_groups_are_exact_zeros():
    rewards = torch.tensor([[1.0, 0.0, 0.0, 1.0], [0.1, 0.1, 0.1, 0.1], [2.0, 0.0, 1.0, 1.0], [0.0, 0.0, 0.0, 0.0]])
    adv = group_advantages(rewards)
    assert zero_variance_groups(rewards).tolist() == [False, True, False, True]
    assert not adv.isnan().any()
    assert torch.equal(adv[1], torch.zeros(4)) and torch.equal(adv[3], torch.zeros(4))  # exactly, not ~1e-9
    # group 0: mean 0.5, sample std sqrt(4 * 0.25 / 3); group 2: mean 1, sample std sqrt(2 / 3)
    assert torch.allclose(adv[0], torch.tensor([0.5, -0.5, -0.5, 0.5]) / (math.sqrt(1 / 3) + 1e-4))
    assert torch.allclose(adv[2], torch.tensor([1.0, -1.0, 0.0, 0.0]) / (math.sqrt(2 / 3) + 1e-4))
    plain = group_advantages(rewards, scale="none")  # Dr. GRPO: centred only
    assert torch.allclose(plain[2], torch.tensor([1.0, -1.0, 0.0, 0.0])) and torch.equal(plain[1], torch.zeros(4))


def test_k3_is_a_nonnegative_unbiased_estimate_of_the_kl_to_the_reference():
    p = t([0.5, 0.2, 0.15, 0.1, 0.05])  # the policy
    q = t([0.1, 0.3, 0.2, 0.2, 0.2])  # the reference
    exact = float((p * (p / q).log()).sum())  # KL(p || q) = 0.542
    reverse = float((q * (q / p).log()).sum())  # KL(q || p) = 0.434: the other direction
    k3 = kl_k3(p.log(), q.log())  # the estimate at each outcome
    assert (k3 >= 0).all()
    assert float((p * k3).sum()) == pytest.approx(exact, abs=1e-12)  # its expectation under p is exactly the KL
    n = 200_000
    draws = k3[torch.multinomial(p, n, replacement=True, generator=torch.Generator().manual_seed(0))]
    mean, se = float(draws.mean()), float(draws.std()) / math.sqrt(n)
    assert se < 0.002
    assert abs(mean - exact) < 4 * se  # the sample mean converges to KL(policy || reference)
    assert abs(mean - reverse) > 25 * se  # and the tolerance tells it from the reverse KL


# ------------------------------------------------------------------------------------------------ the group sampler
def chat_prompt(model, text: str) -> list[int]:
    return render_conversation(model.tokenizer, [{"role": "user", "content": text}], add_generation_prompt=True)[0]


def chat_stops(model) -> list[int]:
    return [model.tokenizer.eot_id, *model.tokenizer.special_ids.values()]


class NoCache(torch.nn.Module):
    """A model without a KV cache (the sampler then feeds every row's whole sequence at each step)."""

    def __init__(self, model) -> None:
        super().__init__()
        self.model, self.config = model, model.config

    def forward(self, idx):
        return self.model(idx)


def test_greedy_group_rows_are_generate_ids_greedy_output(trained_chat):
    model = trained_chat[0].model
    ids, stop = chat_prompt(model, "hi"), chat_stops(model)
    expected = list(generate_ids(model, ids, 10, temperature=0, stop_ids=stop))
    assert model.tokenizer.decode(expected) == "yo<|end|>"
    assert sample_group_ids(model, ids, 3, 10, temperature=0, stop_ids=stop) == [expected] * 3
    assert sample_group_ids(NoCache(model), ids, 2, 10, temperature=0, stop_ids=stop) == [expected] * 2
    ids = chat_prompt(model, "ok bye")
    expected = list(generate_ids(model, ids, 20, temperature=0))  # no stop: 20 tokens, past the end of the turn
    assert len(expected) == 20 and sample_group_ids(model, ids, 2, 20, temperature=0) == [expected] * 2


def test_seeded_sampling_is_reproducible_and_a_group_of_one_is_generate_ids():
    model = tiny_model()
    model.train()
    ids = [model.tokenizer.eot_id, 7, 4]
    a = sample_group_ids(model, ids, 6, 12, temperature=1.0, seed=3)
    assert a == sample_group_ids(model, ids, 6, 12, temperature=1.0, seed=3)
    assert a != sample_group_ids(model, ids, 6, 12, temperature=1.0, seed=4)
    assert len({tuple(row) for row in a}) == 6  # six different samples, not one copied
    assert model.training  # the sampler puts the mode back
    for kw in ({}, {"top_k": 5, "top_p": 0.9}):  # the same draws from the same generator
        assert sample_group_ids(model, ids, 1, 12, seed=11, **kw) == [list(generate_ids(model, ids, 12, seed=11, **kw))]


def test_each_row_stops_at_its_own_stop_id():
    model = tiny_model()
    stop = list(range(12))  # a third of the vocabulary: most rows stop early, at different steps
    rows = sample_group_ids(model, [model.tokenizer.eot_id], 16, 10, temperature=1.0, seed=0, stop_ids=stop)
    for row in rows:
        assert all(i not in stop for i in row[:-1])  # nothing after a stop id
        assert row[-1] in stop or len(row) == 10
    lengths = {len(row) for row in rows}
    assert len(lengths) >= 3 and min(lengths) < 10


def test_the_sampler_refuses_what_does_not_fit():
    model = tiny_model(block_size=32)
    with pytest.raises(ValueError, match="at most max_new_tokens=2"):
        sample_group_ids(model, [0] * 30, 4, 3)
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        sample_group_ids(model, [0], 0, 3)
    with pytest.raises(ValueError, match="prompt_ids is empty"):
        sample_group_ids(model, [], 2, 3)
    with pytest.raises(ValueError, match="temperature"):
        sample_group_ids(model, [0], 2, 3, temperature=-1)
    assert sample_group_ids(model, [0] * 32, 3, 0) == [[], [], []]  # nothing asked, nothing sampled


# ------------------------------------------------------------------------------------------------ grpo()
PROMPTS = [convo("hi", "yo"), convo("bye", "ciao"), [{"role": "user", "content": "hi there"}], convo("ok bye", "ciao")]


def says_y(row, text: str) -> float:
    """The toy reward: 1 if the reply contains a "y" ("yo" does, "ciao" does not)."""
    return float("y" in text)


def run_grpo(chat_dir, out=None, stop_at=None, resume=False, steps=4, checkpoint_every=None, log_with=None, **kw):
    model = load_chat_model(chat_dir, device="cpu")
    cfg = TrainConfig(batch_size=8, max_steps=steps, warmup_steps=1, lr=3e-3, min_lr=3e-4, eval_interval=steps // 2,
                      device="cpu", seed=5, checkpoint_every=checkpoint_every, log_with=log_with)
    seen = []

    def callback(info):
        seen.append(len(info["grpo"]) == info["step"])
        return stop_at is not None and info["step"] == stop_at

    result = grpo(model, PROMPTS, says_y, cfg, group_size=4, max_new_tokens=6, temperature=2.0, out_dir=out,
                  resume=resume, live="off", callback=callback, **kw)
    assert seen and all(seen)  # the callback gets the stats, this step's last
    return result


def same_weights(a, b) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_grpo_records_its_stats_checkpoints_a_chat_model_and_resumes_exactly(trained_chat, tmp_path):
    chat_dir = trained_chat[1]
    start = load_chat_model(chat_dir, device="cpu")
    straight = run_grpo(chat_dir)
    stats = straight.stats
    assert straight.step == 4 and [s["step"] for s in stats] == [1, 2, 3, 4]
    assert all(set(s) == {"step", *STAT_KEYS} for s in stats)
    assert stats[0]["kl"] == 0.0 and stats[1]["kl"] > 1e-3  # the policy starts as the reference, then moves
    assert all(s["clip_fraction"] == 0 for s in stats)  # on-policy: the ratio is 1 at every step
    assert all(0 <= s["reward"] <= 1 and 0 <= s["zero_variance"] <= 1 and 1 <= s["length"] <= 6 for s in stats)
    assert min(s["zero_variance"] for s in stats) < 1  # some groups carried a signal
    assert not same_weights(straight.model, start)

    out = tmp_path / "run"
    first = run_grpo(chat_dir, out, stop_at=2)
    assert first.step == 2 and first.stop_reason == "callback" and first.stats == stats[:2]
    resumed = run_grpo(chat_dir, out, resume=True)
    assert resumed.step == 4
    assert resumed.history.losses == straight.history.losses  # bit for bit on the CPU
    assert resumed.stats == stats
    assert same_weights(resumed.model, straight.model)

    back = load_chat_model(out, device="cpu")  # the checkpoint is an ordinary chat GPT folder (no reference in it)
    assert same_weights(back, resumed.model)
    assert isinstance(chat_reply(back, [{"role": "user", "content": "hi"}], max_new_tokens=4), str)
    assert (find_checkpoint(out) / STATS_FILE).is_file()


def test_grpo_raises_the_reward_of_the_toy_task(trained_chat):
    stats = run_grpo(trained_chat[1], steps=24).stats
    first, last = [sum(s["reward"] for s in part) / len(part) for part in (stats[:4], stats[-8:])]
    assert last > first + 0.25  # the share of replies with a "y" grows


def test_grpo_with_grad_accum_and_dr_grpo_records_one_entry_per_step(trained_chat):
    model = load_chat_model(trained_chat[1], device="cpu")
    cfg = TrainConfig(batch_size=4, grad_accum=2, max_steps=2, warmup_steps=0, lr=1e-3, eval_interval=2,
                      device="cpu")
    result = grpo(model, PROMPTS, says_y, cfg, group_size=2, max_new_tokens=4, normalization="dr_grpo",
                  scale="none", beta=0.0, live="off")
    assert [s["step"] for s in result.stats] == [1, 2] and result.model is model


def test_bad_input_gets_a_clear_error(trained_chat, tmp_path):
    chat_dir = trained_chat[1]
    model = load_chat_model(chat_dir, device="cpu")
    cfg = TrainConfig(batch_size=8, max_steps=1, device="cpu")
    ok = dict(group_size=4, max_new_tokens=6, live="off")
    cases = [
        (dict(model=tiny_model()), "no chat tokens"),
        (dict(temperature=0), "temperature must be > 0"),
        (dict(group_size=1), "group_size must be an integer >= 2"),
        (dict(cfg=TrainConfig(batch_size=6, device="cpu")), "multiple of group_size"),
        (dict(normalization="ppo"), "normalization must be one of"),
        (dict(beta=-1.0), "beta must be a finite number >= 0"),
        (dict(prompts=[convo("hi " * 12, "yo")]), "prompt 0 is .* max_new_tokens"),
        (dict(prompts=[]), "non-empty list"),
        (dict(prompts=[[{"role": "assistant", "content": "yo"}]]), "only an assistant message"),
        (dict(prompts=PROMPTS[:1]), "1 prompt"),
        (dict(reward_fn="y"), "reward_fn must be a function"),
        (dict(ref_model=model), "ref_model is the model being trained"),
    ]
    for change, message in cases:
        kw = dict(model=model, prompts=PROMPTS, reward_fn=says_y, cfg=cfg, **ok)
        kw.update(change)
        with pytest.raises(ValueError, match=message):
            grpo(**kw)
    with pytest.raises(ValueError, match="reward_fn returned None"):
        grpo(model, PROMPTS, lambda row, text: None, cfg, **ok)
    sft_run = tmp_path / "sft"
    shutil.copytree(chat_dir, sft_run)
    with pytest.raises(ValueError, match="not written by grpo"):
        grpo(model, PROMPTS, says_y, cfg, out_dir=sft_run, resume=True, **ok)
    with pytest.raises(ValueError, match="rewards must be a"):
        group_advantages(torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="ref_logp has shape"):
        grpo_loss(t(LOGP), t(OLD), t(REF)[:, :2], t(ADV), t(MASK, torch.bool))
    with pytest.raises(ValueError, match="advantages must be"):
        grpo_loss(t(LOGP), t(OLD), t(REF), t([1.0]), t(MASK, torch.bool))


# ------------------------------------------------------------------------------------------------ success rates
GREET = [{**convo("hi", "yo"), "answer": "yo", "task": "hi"}, {**convo("bye", "ciao"), "answer": "ciao", "task": "bye"},
         {**convo("hi there", "yo"), "answer": "yo", "task": "hi"}]


def says_answer(row, text: str) -> float:
    return float(text == row["answer"])


def hand_rates(model, rows, reward_fn, samples: int, max_new_tokens: int, temperature: float, seed: int) -> dict:
    """success_rates by hand: each row's group from sample_group_ids with the seed of its prompt, cut at the stop."""
    tok, passed = model.tokenizer, {}
    stops = chat_stops(model)
    for row in rows:
        prompt = row["messages"][:-1]
        ids = render_conversation(tok, prompt, add_generation_prompt=True)[0]
        room = min(max_new_tokens, model.config.block_size - len(ids))
        group = sample_group_ids(model, ids, samples, room, temperature, seed=sample_seed(seed, prompt, 0),
                                 stop_ids=stops)
        texts = [tok.decode(g[:-1] if g[-1] in stops else g) for g in group]
        passed.setdefault(row["task"], []).extend(reward_fn(row, text) > 0 for text in texts)
    every = [p for v in passed.values() for p in v]
    return {**{k: sum(v) / len(v) for k, v in passed.items()}, "all": sum(every) / len(every)}


def test_success_rates_match_a_hand_loop_over_sample_group_ids(trained_chat):
    model = trained_chat[0].model
    model.train()
    rates = success_rates(model, GREET, says_answer, samples=8, max_new_tokens=6, temperature=2.0, seed=3)
    assert model.training  # measured in eval mode, then put back
    assert rates == hand_rates(model.eval(), GREET, says_answer, 8, 6, 2.0, 3)
    assert set(rates) == {"hi", "bye", "all"} and rates["all"] == pytest.approx((2 * rates["hi"] + rates["bye"]) / 3)
    assert 0 < rates["all"] < 1  # at temperature 2 the tiny model says "yo" / "ciao" often, not always
    assert success_rates(model, GREET, says_answer, samples=8, max_new_tokens=6, temperature=2.0, seed=3) == rates
    assert any(success_rates(model, GREET, says_answer, samples=8, max_new_tokens=6, temperature=2.0, seed=s) != rates
               for s in (4, 5))  # another seed, other draws
    assert success_rates(model, GREET, lambda row, text: 1.0, samples=2) == {"hi": 1.0, "bye": 1.0, "all": 1.0}
    assert success_rates(model, GREET, lambda row, text: 0.0, samples=2)["all"] == 0.0


def test_sampled_replies_are_the_groups_text_and_fit_the_context(trained_chat):
    model = trained_chat[0].model
    replies = sampled_replies(model, GREET[0], 4, max_new_tokens=6, temperature=0.0)
    assert replies == ["yo"] * 4  # greedy: the trained reply, without its <|end|>
    replies = sampled_replies(model, GREET[1], 5, max_new_tokens=40, temperature=2.0, seed=1)
    room = model.config.block_size - len(chat_prompt(model, "bye"))
    assert len(replies) == 5 and all(len(model.tokenizer.encode(r)) <= room for r in replies)
    assert "<|" not in "".join(replies)


def test_success_rates_refuse_what_they_cannot_measure(trained_chat):
    model = trained_chat[0].model
    full = {**convo("hi " * 10, "yo"), "answer": "yo", "task": "hi"}  # 30 characters + 4 tokens: over 32
    with pytest.raises(ValueError, match="1 row\\(s\\) leave no room.*reply_room"):
        success_rates(model, [*GREET, full], says_answer)
    with pytest.raises(ValueError, match="no chat tokens"):
        success_rates(tiny_model(), GREET, says_answer)
    with pytest.raises(ValueError, match="non-empty list"):
        success_rates(model, [], says_answer)


# ------------------------------------------------------------------------------------------------ the stats' figure
def fake_stats(n: int) -> list[dict]:
    return [{"step": k + 1, "reward": k / n, "zero_variance": 1 - k / n, "kl": 0.01 * k, "length": 3.0 + k % 2,
             "clip_fraction": 0.0} for k in range(n)]


def test_running_mean_by_hand():
    assert running_mean([1.0, 2.0, 3.0, 4.0, 5.0], 2) == [1.0, 1.5, 2.5, 3.5, 4.5]
    assert running_mean([1.0, 2.0, 3.0, 4.0, 5.0], 3) == [1.0, 1.5, 2.0, 3.0, 4.0]
    assert running_mean([4.0, 0.0], 1) == [4.0, 0.0] and running_mean([], 5) == []
    assert running_mean([2.0, 4.0, 9.0], 10) == [2.0, 3.0, 5.0]  # fewer values than the window: their mean


def test_plot_grpo_stats_draws_one_panel_per_statistic():
    import matplotlib.pyplot as plt

    assert [key for key, _ in PANELS] == list(STAT_KEYS)
    stats = fake_stats(30)
    fig = plot_grpo_stats(stats, title="GRPO", window=5)
    try:
        assert len(fig.axes) == 5 and [ax.get_title() for ax in fig.axes] == [name for _, name in PANELS]
        assert fig.get_suptitle() == "GRPO"
        for ax, (key, _) in zip(fig.axes, PANELS):
            raw, smooth = ax.get_lines()  # the per-step values and their running mean
            assert list(raw.get_xdata()) == list(range(1, 31)) and list(raw.get_ydata()) == [s[key] for s in stats]
            assert list(smooth.get_ydata()) == pytest.approx(running_mean([s[key] for s in stats], 5))
        plt.close(fig)
        own, axes = plt.subplots(1, 5)
        assert plot_grpo_stats(stats[:3], axes) is own  # onto the given axes
        assert plot_grpo_stats(stats, axes) is own and all(len(ax.get_lines()) == 2 for ax in axes)  # cleared first
        assert all(len(ax.get_lines()) == 0 for ax in plot_grpo_stats([], axes).axes)
    finally:
        plt.close("all")


def test_the_stats_monitor_draws_outside_a_notebook_without_failing(capsys):
    import matplotlib.pyplot as plt

    monitor = StatsMonitor("GRPO", every_s=3600.0)
    try:
        monitor.update([])  # nothing to draw yet
        assert monitor.figure is None
        monitor.update(fake_stats(3))  # the first drawing is never held back
        fig, first = monitor.figure.fig, monitor.last
        assert fig is not None and first > 0 and [ax.get_title() for ax in fig.axes] == [n for _, n in PANELS]
        monitor.update(fake_stats(4))  # within every_s: not redrawn
        assert monitor.last == first and len(fig.axes[0].get_lines()[0].get_xdata()) == 3
        monitor.update(fake_stats(4), force=True)
        assert monitor.figure.fig is fig and monitor.last > first and len(fig.axes[0].get_lines()[0].get_xdata()) == 4
        assert "Figure" in capsys.readouterr().out  # outside a kernel, IPython's display prints the figure's repr
    finally:
        plt.close("all")


def test_grpo_resumes_exactly_from_the_checkpoint_a_kill_leaves(trained_chat, tmp_path):
    """A kill -9 between checkpoints leaves only the older one (training's own kill test, tests/test_training.py,
    shows train() writes nothing else): resuming from it replays the lost steps' rollouts exactly."""
    chat_dir = trained_chat[1]
    out = tmp_path / "run"
    straight = run_grpo(chat_dir, out, checkpoint_every=2)  # checkpoints at steps 2 and 4
    assert sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-0000002", "ckpt-0000004"]
    shutil.rmtree(out / "ckpt-0000004")  # killed during step 3 or 4: step 2's checkpoint is the last one
    resumed = run_grpo(chat_dir, out, resume=True)
    assert resumed.step == 4 and resumed.stats == straight.stats
    assert resumed.history.losses == straight.history.losses  # the two replayed steps too, bit for bit
    assert same_weights(resumed.model, straight.model)


def test_the_stats_reach_the_experiment_trackers(trained_chat, tmp_path):
    """train() logs a model's step_metrics(): GRPO's five statistics go to TensorBoard beside the loss."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "tracked"
    result = run_grpo(trained_chat[1], out, log_with="tensorboard")
    events = EventAccumulator(str(out / "runs" / "tracked"))
    events.Reload()
    for key in STAT_KEYS:
        logged = [(e.step, e.value) for e in events.Scalars(f"train/{key}")]
        assert logged == [(s["step"], float(np.float32(s[key]))) for s in result.stats]
