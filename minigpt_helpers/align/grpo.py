"""Group Relative Policy Optimization (GRPO): reinforcement learning with a reward a program computes (chapter 10).

GRPO (Shao et al. 2024, "DeepSeekMath", section 4) is PPO without the value
network. For each prompt it samples a *group* of G completions from the current
policy, scores each with ``reward_fn(prompt, completion) -> float``, and uses the
group itself as the baseline::

    advantage_i = (r_i - mean(r_1..r_G)) / (std(r_1..r_G) + eps)          (scale="std", DeepSeekMath)
    advantage_i =  r_i - mean(r_1..r_G)                                    (scale="none", Dr. GRPO)

Every token of completion i gets advantage_i. A group whose rewards are all equal
(all right, or all wrong) has zero advantages: it teaches nothing, only the KL term
acts on it; the share of such groups is logged at every step.

**The loss per token** (DeepSeekMath eq. 3, with PPO's clipped surrogate)::

    r_t   = exp(logp_t - old_logp_t)                      the probability ratio to the sampling policy
    loss_t = -min(r_t A, clip(r_t, 1 - eps, 1 + eps) A) + beta * k3_t
    k3_t  = exp(ref_t - logp_t) - (ref_t - logp_t) - 1    Schulman's unbiased, always >= 0 estimator of
                                                          KL(policy || reference) from the policy's own samples

**Normalisations** (how the per-token losses become one number): ``"grpo"`` the mean
over each completion's tokens, then over completions (DeepSeekMath; a long completion's
tokens weigh less each); ``"dr_grpo"`` the sum over all tokens divided by (completions
x a constant max length) (Liu et al. 2025, "Understanding R1-Zero-Like Training": no
length bias); ``"token"`` the mean over all tokens of the batch (DAPO, Yu et al. 2025;
TRL's default ``"dapo"``/``"bnpo"`` on one batch).

**On-policy, one step per batch.** :func:`grpo` samples fresh completions with the
current weights for every micro-batch and takes one optimizer step per batch, so
the policy that sampled them is the policy being trained: ``old_logp`` is the
policy's own log-probability, detached, and the ratio is exactly 1 at the step (as
in TRL with ``num_iterations=1``). The ratio still carries the gradient
(d r / d logp = r = 1), but the clip never acts here (the clip fraction logged is 0);
it matters when the same samples are reused for several updates (PPO epochs, TRL's
``num_iterations > 1`` or ``steps_per_generation``), which :func:`grpo_loss` supports
by taking ``old_logp`` as an argument.

**Training** goes through :func:`~minigpt_helpers.training.train` (checkpoints,
exact resume, live plot, Ctrl-C): :class:`GroupRollouts` is the batch source (its
batches are sampled, rendered with chapter 08's chat template, scored and given
advantages and the reference's log-probabilities), :class:`GRPOPolicy` the module
whose ``forward`` returns the loss. The reference is a frozen copy of the starting
model, held by the source, so it is neither trained nor saved.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..data.batching import StreamPosition
from ..finetune.chat import ChatTokenizer, SFTCollate, render_conversation
from ..finetune.lora import wrapped_tokenizer
from ..model.generation import sample_group_ids
from ..model.gpt import damaged_checkpoint_fix
from ..progress import in_notebook
from ..training.config import TrainConfig
from ..training.examples import IGNORE, ExampleBatches
from ..training.loop import TrainResult, train
from .dpo import check_reference, load_policy_weights
from .live import StatsMonitor
from .logprobs import token_logprobs
from .rewards import prompt_messages

NORMALIZATIONS = ("grpo", "dr_grpo", "token")
SCALES = ("std", "none")
STATS_FILE = "grpo.json"  # a GRPO checkpoint's per-step statistics and settings, next to the GPT's files
STAT_KEYS = ("reward", "zero_variance", "kl", "length", "clip_fraction")


# ------------------------------------------------------------------------------ advantages and the KL estimator
def zero_variance_groups(rewards: torch.Tensor) -> torch.Tensor:
    """(P,) True for each group (a row of ``rewards`` (P, G)) whose rewards are all equal: it carries no signal."""
    return (rewards == rewards[:, :1]).all(dim=1)


def group_advantages(rewards: torch.Tensor, scale: str = "std", eps: float = 1e-4) -> torch.Tensor:
    """(P, G) advantages of the rewards (P, G) of P groups of G completions: each group is its own baseline.

    ``scale="std"``: (r - group mean) / (group std + eps), DeepSeekMath's; the std is
    the sample std (Bessel's correction) and eps 1e-4, as in TRL. ``scale="none"``:
    r - group mean (Dr. GRPO: dividing by the std up-weights the groups that are
    almost all right or all wrong). A group with zero variance gets exact zeros.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES} ('std': DeepSeekMath, 'none': Dr. GRPO), got {scale!r}")
    if not isinstance(rewards, torch.Tensor) or rewards.dim() != 2 or rewards.size(1) < 2:
        shape = tuple(rewards.shape) if isinstance(rewards, torch.Tensor) else type(rewards).__name__
        raise ValueError(f"rewards must be a (prompts, group_size) tensor with group_size >= 2 (a group is its own "
                         f"baseline), got {shape}: reshape with rewards.view(-1, group_size)")
    rewards = rewards.float()
    centred = rewards - rewards.mean(dim=1, keepdim=True)
    if scale == "std":
        centred = centred / (rewards.std(dim=1, keepdim=True) + eps)
    return centred.masked_fill(zero_variance_groups(rewards)[:, None], 0.0)


def kl_k3(logp: torch.Tensor, ref_logp: torch.Tensor) -> torch.Tensor:
    """Schulman's k3 estimator of KL(policy || reference), per token: exp(ref - logp) - (ref - logp) - 1.

    With x sampled from the policy, E[k3] = KL(policy || reference) exactly (the
    expectation of exp(ref - logp) is 1), and k3 >= 0 for every sample, unlike the
    plain log-ratio logp - ref (Schulman 2020, "Approximating KL Divergence"). Computed as
    expm1(d) - d, the same number, which keeps its digits when the two log-probabilities
    are close (exp(d) - 1 in float32 rounds a difference below 1e-7 away).
    """
    log_ratio = ref_logp - logp
    return torch.expm1(log_ratio) - log_ratio


# ------------------------------------------------------------------------------ the loss
def _check_number(name: str, value: Any, fix: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0 ({fix}), got {value!r}")


def grpo_token_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
                    *, clip_eps: float = 0.2, beta: float = 0.04) -> torch.Tensor:
    """(B, T) the loss of each token: -min(r A, clip(r, 1 - eps, 1 + eps) A) + beta * k3 (see the module docstring).

    ``advantages`` is (B,), one per completion, or (B, T). Padding is not masked here:
    :func:`grpo_loss` does it.
    """
    adv = advantages[:, None] if advantages.dim() == 1 else advantages
    ratio = torch.exp(logp - old_logp)
    surrogate = torch.min(ratio * adv, ratio.clamp(1 - clip_eps, 1 + clip_eps) * adv)
    return -surrogate + beta * kl_k3(logp, ref_logp)


def _check_loss_inputs(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
                       mask: torch.Tensor, normalization: str) -> None:
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS} ('grpo': DeepSeekMath, 'dr_grpo': Dr. GRPO, "
                         f"'token': DAPO), got {normalization!r}")
    if logp.dim() != 2:
        raise ValueError(f"logp must be (completions, tokens), got shape {tuple(logp.shape)}")
    for name, t in (("old_logp", old_logp), ("ref_logp", ref_logp), ("mask", mask)):
        if t.shape != logp.shape:
            raise ValueError(f"{name} has shape {tuple(t.shape)} but logp {tuple(logp.shape)}: one value per token")
    if advantages.shape not in (logp.shape[:1], logp.shape):
        raise ValueError(f"advantages must be ({logp.size(0)},), one per completion, or {tuple(logp.shape)}, "
                         f"got {tuple(advantages.shape)}")


def grpo_loss(logp: torch.Tensor, old_logp: torch.Tensor, ref_logp: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor, *, clip_eps: float = 0.2, beta: float = 0.04, normalization: str = "grpo",
              max_length: int | None = None) -> tuple[torch.Tensor, dict[str, float]]:
    """(the loss, stats) of a batch of B completions of T tokens; ``mask`` (B, T) marks the completions' tokens.

    ``logp``, ``old_logp`` (the sampling policy's) and ``ref_logp`` (the frozen
    reference's) are (B, T) log-probabilities of the sampled tokens; ``advantages`` (B,).
    ``normalization``: ``"grpo"``, ``"dr_grpo"`` (divides by ``max_length``, by default
    T) or ``"token"`` (see the module docstring). stats: ``kl`` (the mean k3 over the
    tokens), ``clip_fraction`` (the share of tokens whose clipped term is the one
    taken, so their gradient is cut: r < 1 - eps with A < 0, or r > 1 + eps with A > 0),
    ``ratio`` (the mean ratio) and ``tokens``.
    """
    _check_loss_inputs(logp, old_logp, ref_logp, advantages, mask, normalization)
    _check_number("clip_eps", clip_eps, "PPO's 0.2")
    _check_number("beta", beta, "0 turns the KL penalty off")
    if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int) or max_length < 1):
        raise ValueError(f"max_length must be an integer >= 1 (the longest completion allowed), got {max_length!r}")
    m = mask.to(logp.dtype)
    per_token = grpo_token_loss(logp, old_logp, ref_logp, advantages, clip_eps=clip_eps, beta=beta) * m
    if normalization == "grpo":
        loss = (per_token.sum(-1) / m.sum(-1).clamp(min=1.0)).mean()
    elif normalization == "token":
        loss = per_token.sum() / m.sum().clamp(min=1.0)
    else:
        loss = per_token.sum() / (logp.size(0) * (max_length or logp.size(1)))
    with torch.no_grad():
        ratio = torch.exp(logp - old_logp)
        adv = advantages[:, None] if advantages.dim() == 1 else advantages
        clipped = ((ratio < 1 - clip_eps) & (adv < 0)) | ((ratio > 1 + clip_eps) & (adv > 0))
        n = m.sum().clamp(min=1.0)
        stats = {"kl": float((kl_k3(logp, ref_logp) * m).sum() / n), "clip_fraction": float((clipped * m).sum() / n),
                 "ratio": float((ratio * m).sum() / n), "tokens": float(m.sum())}
    return loss, stats


# ------------------------------------------------------------------------------ the module train() runs
@dataclass
class RolloutBatch:
    """What a batch of sampled completions carries besides the input ids (the ``y`` of train's ``(x, y)``).

    targets (B, T): the sampled tokens, IGNORE elsewhere (chapter 08's SFT targets);
    advantages (B,); ref_logp (B, T): the frozen reference's log-probabilities of the
    targets; rewards (P, G): the rewards, one group of G completions per row.
    """

    targets: torch.Tensor
    advantages: torch.Tensor
    ref_logp: torch.Tensor
    rewards: torch.Tensor


class GRPOPolicy(nn.Module):
    """The policy (a chat GPT) and the GRPO loss: what :func:`train` runs on :class:`GroupRollouts`' batches.

    ``forward(x, batch)`` returns ``(the policy's token log-probabilities, the loss)``.
    :attr:`stats` holds one dict per step (the keys of :data:`STAT_KEYS`, averaged over
    the step's ``grad_accum`` micro-batches, and ``step``). :meth:`save` writes the
    policy as an ordinary chat GPT checkpoint (:func:`~minigpt_helpers.finetune.chat.load_chat_model`
    loads it) plus ``grpo.json`` (the stats and settings); :meth:`load_weights` reads both on resume.
    """

    tokenizer = wrapped_tokenizer("policy")

    def __init__(self, policy: nn.Module, *, clip_eps: float = 0.2, beta: float = 0.04, normalization: str = "grpo",
                 max_new_tokens: int | None = None, grad_accum: int = 1,
                 settings: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.policy = policy
        self.clip_eps, self.beta, self.normalization = clip_eps, beta, normalization
        self.max_new_tokens, self.grad_accum = max_new_tokens, grad_accum
        self.settings = dict(settings or {})
        self.stats: list[dict[str, float]] = []
        self.micro: list[dict[str, float]] = []  # the current step's micro-batches so far

    @property
    def config(self):
        return self.policy.config

    def flops_per_token(self) -> int:
        return self.policy.flops_per_token()

    def forward(self, x: torch.Tensor, batch: RolloutBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """(the policy's log-probabilities (B, T) of the sampled tokens, the GRPO loss); records the stats."""
        logp = token_logprobs(self.policy, x, batch.targets)
        mask = batch.targets != IGNORE
        loss, stats = grpo_loss(logp, logp.detach(), batch.ref_logp, batch.advantages, mask, clip_eps=self.clip_eps,
                                beta=self.beta, normalization=self.normalization, max_length=self.max_new_tokens)
        self.record(batch, mask, stats)
        return logp, loss

    def record(self, batch: RolloutBatch, mask: torch.Tensor, stats: dict[str, float]) -> None:
        """Keep one micro-batch's numbers; after ``grad_accum`` of them, their means become the step's entry."""
        self.micro.append({"reward": float(batch.rewards.mean()),
                           "zero_variance": float(zero_variance_groups(batch.rewards).float().mean()),
                           "kl": stats["kl"], "length": float(mask.sum(1).float().mean()),
                           "clip_fraction": stats["clip_fraction"]})
        if len(self.micro) == self.grad_accum:
            entry = {"step": len(self.stats) + 1}
            entry.update({k: sum(m[k] for m in self.micro) / len(self.micro) for k in STAT_KEYS})
            self.stats.append(entry)
            self.micro = []

    def step_metrics(self) -> dict[str, float]:
        """The last step's statistics (:data:`STAT_KEYS`): what ``train()`` sends to the experiment trackers."""
        return {k: v for k, v in self.stats[-1].items() if k != "step"} if self.stats else {}

    def save(self, directory: str | Path) -> Path:
        """The policy as a chat GPT folder (weights, config, tokenizer) + ``grpo.json`` (stats, settings)."""
        directory = Path(directory)
        self.policy.save(directory)
        meta = {"settings": self.settings, "stats": self.stats}
        (directory / STATS_FILE).write_text(json.dumps(meta, indent=1) + "\n", encoding="utf-8")
        return directory

    @torch.no_grad()
    def load_weights(self, directory: str | Path) -> None:
        """Read a folder written by :meth:`save` (``train(resume=True)`` calls it): the policy's weights, the stats."""
        directory = Path(directory)
        file = directory / STATS_FILE
        if not file.is_file():
            raise ValueError(f"{directory} has no {STATS_FILE}: it was not written by grpo(); give grpo() a new "
                             "out_dir (or resume=False)")
        try:
            stats = json.loads(file.read_text(encoding="utf-8"))["stats"]
        except (ValueError, KeyError, TypeError) as e:
            fix = damaged_checkpoint_fix(directory)
            raise ValueError(f"{file} is damaged ({type(e).__name__}: {e}); {fix}") from None
        load_policy_weights(self.policy, directory)
        self.stats, self.micro = [dict(s) for s in stats], []


# ------------------------------------------------------------------------------ the batch source
@dataclass
class Prompt:
    """One prompt: the row as given (what ``reward_fn`` receives) and its rendered ids (ending ``<|assistant|>``)."""

    row: Any
    ids: list[int]


class RolloutBatches(ExampleBatches):
    """Endless batches of sampled groups, P prompts each (shuffled passes over the prompts, as ExampleBatches).

    The position's ``served`` counts the rollout batches already made (all ranks
    together: one per micro-batch, so with ``grad_accum=1`` it is the step); each
    batch's sampling seed is a function of (seed, that count, rank) only, so a resumed
    run samples exactly the completions the uninterrupted run would have.
    """

    def __init__(self, prompts: Sequence[Prompt], rollout: Callable[..., tuple[torch.Tensor, RolloutBatch]],
                 prompts_per_batch: int, **kw: Any) -> None:
        super().__init__(prompts, rollout, prompts_per_batch, **kw)
        self.rollout = rollout

    def __next__(self) -> tuple[torch.Tensor, RolloutBatch]:
        need = self.batch_size * self.world_size
        if self.pos.doc + need > len(self.examples):  # the pass is used up: start the next one
            self.pos = StreamPosition(self.pos.epoch + 1, 0, 0, self.pos.served)
        start = self.pos.doc + self.rank * self.batch_size
        prompts = [self.examples[i] for i in self.order(self.pos.epoch)[start: start + self.batch_size]]
        seed = random.Random(f"grpo/{self.seed}/{self.pos.served}/{self.rank}").getrandbits(63)
        self.pos.doc += need
        self.pos.served += 1
        return self.rollout(prompts, seed, self.device)


class GroupRollouts:
    """A batch source for :func:`train`: each batch is P prompts x G completions sampled from the current policy.

    For each prompt, :func:`~minigpt_helpers.model.generation.sample_group_ids` samples
    its group in one batch with the KV cache; each completion ends at the end of the
    turn (any special token, as ``chat_reply``) or after ``max_new_tokens``. The
    reward of each (``reward_fn(prompt.row, completion_text)``, the text without the
    closing token) gives the advantages; the rows are laid out as chapter 08's SFT
    batches (prompt + completion, the completion's tokens and its closing token
    scored), and the frozen ``ref`` scores them. ``batch_size`` (train's) counts
    completions: P = batch_size // group_size prompts per batch.
    """

    def __init__(self, policy: nn.Module, ref: nn.Module, prompts: Sequence[Prompt],
                 reward_fn: Callable[[Any, str], float], *, group_size: int, max_new_tokens: int,
                 temperature: float = 1.0, scale: str = "std") -> None:
        tok = policy.tokenizer
        self.policy, self.ref, self.prompts, self.reward_fn = policy, ref, list(prompts), reward_fn
        self.group_size, self.max_new_tokens = group_size, max_new_tokens
        self.temperature, self.scale = temperature, scale
        self.tokenizer = tok
        self.stop_ids = tok.stop_ids
        self.collate = SFTCollate(policy.config.block_size, tok.eot_id)

    def batches(self, batch_size: int, *, seed: int = 0, position: StreamPosition | dict | None = None,
                rank: int = 0, world_size: int = 1, device: torch.device | str = "cpu") -> RolloutBatches:
        if batch_size % self.group_size:
            raise ValueError(f"batch_size ({batch_size}) counts completions per micro-batch: make it a multiple of "
                             f"group_size ({self.group_size})")
        self.ref.to(device)
        return RolloutBatches(self.prompts, self.rollout, batch_size // self.group_size, seed=seed, position=position,
                              rank=rank, world_size=world_size, device=device)

    def evaluate(self, model: nn.Module, batch_size: int, device: torch.device | str, precision: str = "fp32") -> None:
        """No validation loss: GRPO's progress is the reward (the stats), measured on held-out prompts by the caller."""
        return None

    def reward(self, prompt: Prompt, text: str) -> float:
        value = self.reward_fn(prompt.row, text)
        try:
            number = float(value)
        except (TypeError, ValueError):
            number = math.nan
        if not math.isfinite(number):
            raise ValueError(f"reward_fn returned {value!r} for the completion {text!r}: it must return a finite "
                             "number (e.g. 1.0 if the reply is right, else 0.0; True and False count as 1 and 0)")
        return number

    def rollout(self, prompts: list[Prompt], seed: int, device: torch.device) -> tuple[torch.Tensor, RolloutBatch]:
        """Sample, score and lay out one batch: ``(x, RolloutBatch)`` on ``device``."""
        rng = random.Random(seed)
        rows, rewards = [], []
        for prompt in prompts:
            group = sample_group_ids(self.policy, prompt.ids, self.group_size, self.max_new_tokens, self.temperature,
                                     seed=rng.getrandbits(63), stop_ids=self.stop_ids)
            for completion in group:
                rewards.append(self.reward(prompt, self.tokenizer.reply_text(completion)))
                rows.append((prompt.ids + completion[:-1], [IGNORE] * (len(prompt.ids) - 1) + completion))
        x, y = self.collate(rows)
        x, y = x.to(device), y.to(device)
        reward_t = torch.tensor(rewards, dtype=torch.float32, device=device).view(len(prompts), self.group_size)
        with torch.no_grad():
            ref_logp = token_logprobs(self.ref, x, y)
        advantages = group_advantages(reward_t, self.scale).flatten()
        return x, RolloutBatch(targets=y, advantages=advantages, ref_logp=ref_logp, rewards=reward_t)


# ------------------------------------------------------------------------------ grpo()
@dataclass
class GRPOResult(TrainResult):
    """:func:`grpo`'s result: train's, with ``model`` the trained chat GPT and ``stats`` one dict per step."""

    stats: list[dict[str, float]] = field(default_factory=list)


def default_grpo_config(group_size: int = 8) -> TrainConfig:
    """The TrainConfig :func:`grpo` uses when given none: two prompts of G completions a step, a small learning
    rate, no compilation (most of a step is sampling, which runs uncompiled)."""
    return TrainConfig(batch_size=2 * group_size, max_steps=100, lr=1e-4, min_lr=1e-5, warmup_steps=5,
                       weight_decay=0.0, eval_interval=25, compile=False)


def _prompts(tok: ChatTokenizer, prompts: Sequence[Any], block_size: int, max_new_tokens: int) -> list[Prompt]:
    if isinstance(prompts, (str, dict)) or not isinstance(prompts, Sequence) or not prompts:
        raise ValueError("prompts must be a non-empty list of instruction rows ({'messages': [...], ...}, chapter 08), "
                         "of message lists or of strings")
    out = []
    for k, item in enumerate(prompts):
        ids, _ = render_conversation(tok, prompt_messages(item), add_generation_prompt=True)
        if len(ids) + max_new_tokens > block_size:
            raise ValueError(f"prompt {k} is {len(ids)} tokens: with max_new_tokens={max_new_tokens} it needs "
                             f"{len(ids) + max_new_tokens} positions but the context is {block_size}; use a smaller "
                             f"max_new_tokens or leave out the prompts longer than {block_size - max_new_tokens} "
                             "tokens")
        out.append(Prompt(item, ids))
    return out


def _check_grpo_args(model: nn.Module, reward_fn: Any, cfg: TrainConfig, group_size: int, max_new_tokens: int,
                     temperature: float, loss_args: dict[str, Any], scale: str) -> None:
    if not isinstance(getattr(model, "tokenizer", None), ChatTokenizer):
        raise ValueError("the model has no chat tokens: GRPO starts from a chat model; finetune it first with "
                         "sft(model, conversations) or load one with load_chat_model(folder) (chapter 08)")
    if not callable(reward_fn):
        raise ValueError(f"reward_fn must be a function (prompt_row, completion_text) -> float, got {reward_fn!r}")
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 2:
        raise ValueError(f"group_size must be an integer >= 2 (a group is its own baseline), got {group_size!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}: greedy completions of a prompt are all the "
                         "same, so every group would have zero variance and teach nothing")
    if loss_args["normalization"] not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {loss_args['normalization']!r}")
    _check_number("beta", loss_args["beta"], "0 turns the KL penalty off")
    _check_number("clip_eps", loss_args["clip_eps"], "PPO's 0.2")
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {SCALES}, got {scale!r}")
    if cfg.batch_size % group_size:
        raise ValueError(f"cfg.batch_size ({cfg.batch_size}) counts completions per micro-batch: make it a multiple "
                         f"of group_size ({group_size}), e.g. TrainConfig(batch_size={2 * group_size}, ...)")


def _with_stats(callback: Callable[[dict[str, Any]], Any] | None, policy: GRPOPolicy,
                monitor: StatsMonitor | None):
    """train's callback, given the GRPO stats too (``info["grpo"]``: one dict per step so far, the last this
    step's); with a ``monitor``, the stats' figure is redrawn first."""
    if callback is None and monitor is None:
        return None

    def call(info: dict[str, Any]) -> Any:
        if monitor is not None:
            monitor.update(policy.stats)
        return None if callback is None else callback({**info, "grpo": policy.stats})

    return call


def grpo(model: nn.Module, prompts: Sequence[Any], reward_fn: Callable[[Any, str], float],
         cfg: TrainConfig | None = None, *, group_size: int = 8, max_new_tokens: int = 24, temperature: float = 1.0,
         beta: float = 0.04, clip_eps: float = 0.2, normalization: str = "grpo", scale: str = "std",
         ref_model: nn.Module | None = None, out_dir: str | Path | None = None, resume: bool = False,
         live: str = "auto", callback: Callable[[dict[str, Any]], Any] | None = None) -> GRPOResult:
    """Train a chat model with GRPO on ``prompts`` scored by ``reward_fn(prompt_row, completion_text) -> float``.

    ``prompts``: chapter 08's instruction rows (the reference answer, their last
    message, is left out of the prompt), message lists or strings (one user message;
    see ``rewards.prompt_messages``); ``reward_fn`` receives the item as given. Each
    step samples ``cfg.batch_size // group_size`` prompts x ``group_size`` completions
    with the current weights (temperature ``temperature``, at most ``max_new_tokens``
    tokens), and takes one step on :func:`grpo_loss` (``beta``, ``clip_eps``,
    ``normalization``; advantages scaled by ``scale``).
    ``ref_model`` (default: a frozen copy of ``model`` as given) anchors the KL term;
    on resume pass the same starting model, since the copy is made before the
    checkpoint's weights are loaded. ``model`` is trained in place and is the result's
    ``model``; ``result.stats`` (and ``info["grpo"]`` in ``callback``) hold per step the
    mean reward, the share of zero-variance groups, the KL, the mean completion length
    and the clip fraction; in a notebook (``live="auto"`` or ``"notebook"``) they are
    drawn live below train's progress bar and loss plot (:mod:`.live`). Checkpoints in ``out_dir`` are chat GPT folders
    (``load_chat_model`` loads them); ``resume=True`` continues exactly.
    Without ``cfg``: :func:`default_grpo_config`. ``cfg.compile=None`` becomes False:
    most of a step is sampling, which runs the model uncompiled, so compiling the loss
    pass would cost more than it saves.
    """
    cfg = cfg or default_grpo_config(group_size)
    if cfg.compile is None:
        cfg = dataclasses.replace(cfg, compile=False)
    loss_args = dict(clip_eps=clip_eps, beta=beta, normalization=normalization)
    _check_grpo_args(model, reward_fn, cfg, group_size, max_new_tokens, temperature, loss_args, scale)
    items = _prompts(model.tokenizer, prompts, model.config.block_size, max_new_tokens)
    if len(items) < cfg.batch_size // group_size:
        raise ValueError(f"{len(items)} prompt(s) for {cfg.batch_size // group_size} per batch (cfg.batch_size "
                         f"{cfg.batch_size} / group_size {group_size}): give more prompts or a smaller batch_size")
    ref = check_reference(model, ref_model).eval().requires_grad_(False)
    settings = dict(group_size=group_size, max_new_tokens=max_new_tokens, temperature=temperature, scale=scale,
                    **loss_args)
    policy = GRPOPolicy(model, **loss_args, max_new_tokens=max_new_tokens, grad_accum=cfg.grad_accum,
                        settings=settings)
    source = GroupRollouts(model, ref, items, reward_fn, group_size=group_size, max_new_tokens=max_new_tokens,
                           temperature=temperature, scale=scale)
    monitor = StatsMonitor("GRPO, per step") if live == "notebook" or (live == "auto" and in_notebook()) else None
    result = train(policy, source, cfg, out_dir=out_dir, resume=resume, live=live,
                   callback=_with_stats(callback, policy, monitor))
    del policy.stats[result.step:]  # a step whose loss was not finite was recorded but not taken
    if monitor is not None:
        monitor.update(policy.stats, force=True)  # the finished curves stay in the saved notebook
    done = {f.name: getattr(result, f.name) for f in dataclasses.fields(TrainResult)}
    return GRPOResult(**{**done, "model": model}, stats=policy.stats)
