"""Direct Preference Optimization (Rafailov et al., 2023): learn from "this reply, not that one" (chapter 10).

**The data** is preference pairs, one a row::

    {"messages": [{"role": "user", "content": "A line with the word crown"}],   # the prompt
     "chosen": "The crown sits heavy on his head",                               # the better reply
     "rejected": "The king is tired tonight"}                                    # the worse one

``messages`` is the conversation so far (chapter 08's format; it ends with a user
message), ``chosen`` and ``rejected`` two possible next replies of the assistant.
Each reply is rendered with chapter 08's template and loss mask (``sft_example``:
the reply's text and its ``<|end|>`` are scored), and only the final reply: an
assistant turn inside the prompt is context, as the user's text is. A batch of B
pairs is one ``(2B, T)`` batch of ``SFTCollate``: the B chosen rows, then the B
rejected rows in the same order, so one forward pass scores both.

**The loss** (:func:`dpo_loss`) needs four numbers per pair: the summed
log-probability of each reply under the policy being trained and under a frozen
reference (the starting SFT model), :func:`~minigpt_helpers.align.logprobs.sequence_logprobs`.

**Training** (:func:`dpo`) goes through :func:`~minigpt_helpers.training.train`, the
same loop as pretraining and SFT (checkpoints, exact resume, Ctrl-C, the live plot):
the data is a :class:`PreferenceSource` and the model a :class:`DPOModel`, whose
``forward(x, y)`` returns the DPO loss and whose checkpoints are ordinary chat GPT
folders (``load_chat_model`` and ``python -m minigpt_helpers chat --checkpoint`` load them).
:func:`preference_metrics` measures rewards, margins, accuracy and the drift from the
reference before and after.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..finetune.chat import ChatTokenizer, SFTCollate, check_messages, render_conversation, sft_example
from ..finetune.lora import wrapped_tokenizer
from ..training.examples import IGNORE, ExampleSource
from .logprobs import sequence_logprobs

PAIR_HINT = ('a preference pair is {"messages": [...the prompt, ending with a user message...], '
             '"chosen": "the better reply", "rejected": "the worse reply"}')
Example = tuple[list[int], list[int]]  # (x, y) of one reply, as sft_example makes them


# ------------------------------------------------------------------------------ the loss
def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             beta: float = 0.1) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(the mean DPO loss over the batch, chosen rewards (B,), rejected rewards (B,)).

    Each argument is (B,): the summed log-probability of each pair's chosen or
    rejected reply under the policy or the frozen reference. From the KL-constrained
    objective ``max_pi E[r(x, y)] - beta KL(pi || pi_ref)``:

    1. its maximiser is ``pi*(y|x) = pi_ref(y|x) exp(r(x, y) / beta) / Z(x)``;
    2. so ``r(x, y) = beta log(pi*(y|x) / pi_ref(y|x)) + beta log Z(x)``: the policy defines its own reward;
    3. in Bradley-Terry's ``p(y_w > y_l) = sigmoid(r_w - r_l)`` the intractable ``Z(x)`` cancels, and the
       negative log-likelihood of the preferences is
       ``-log sigmoid(beta [(log pi(y_w) - log pi_ref(y_w)) - (log pi(y_l) - log pi_ref(y_l))])``.

    The rewards are the implicit ``beta (log pi - log pi_ref)`` of each reply, detached:
    they are for logging, the loss alone carries the gradient.
    """
    logits = (policy_chosen_logps - policy_rejected_logps) - (ref_chosen_logps - ref_rejected_logps)
    loss = -F.logsigmoid(beta * logits).mean()
    chosen_rewards = beta * (policy_chosen_logps - ref_chosen_logps).detach()
    rejected_rewards = beta * (policy_rejected_logps - ref_rejected_logps).detach()
    return loss, chosen_rewards, rejected_rewards


# ------------------------------------------------------------------------------ the data
def check_pair(row: Any, where: str = "the pair") -> tuple[list[dict[str, str]], str, str]:
    """(prompt messages, chosen, rejected) of a preference row; a ValueError naming the fix otherwise."""
    if not isinstance(row, dict) or not {"messages", "chosen", "rejected"} <= set(row):
        raise ValueError(f"{where}: {str(row)[:80]!r} is not a preference pair; {PAIR_HINT}")
    messages = check_messages(row["messages"], where)
    if messages[-1]["role"] != "user":
        raise ValueError(f"{where}: the prompt ends with a {messages[-1]['role']} message; it must end with the "
                         f"user message the replies answer; {PAIR_HINT}")
    chosen, rejected = row["chosen"], row["rejected"]
    if not isinstance(chosen, str) or not isinstance(rejected, str):
        raise ValueError(f"{where}: chosen and rejected must be strings (the replies' text); {PAIR_HINT}")
    if chosen == rejected:
        raise ValueError(f"{where}: chosen and rejected are the same reply, which teaches nothing: drop the pair")
    return messages, chosen, rejected


def reply_example(tokenizer: ChatTokenizer, messages: list[dict[str, str]], reply: str, block_size: int,
                  where: str = "the reply") -> Example:
    """(x, y) of ``messages`` + the assistant's ``reply``: chapter 08's rendering, only the reply scored.

    A ValueError if the reply (with its ``<|end|>``) does not fit in ``block_size``
    tokens after the prompt: a cut reply would be compared on part of its text.
    """
    prompt, _ = render_conversation(tokenizer, messages, add_generation_prompt=True)
    conversation = [*messages, {"role": "assistant", "content": reply}]
    n = len(render_conversation(tokenizer, conversation)[0])
    if n > block_size + 1:
        raise ValueError(f"{where}: the prompt and reply are {n - 1} tokens but the model sees {block_size}: "
                         "shorten the prompt or the reply, drop the pair, or use a model with a larger block_size")
    x, y = sft_example(tokenizer, conversation, block_size)
    y[: len(prompt) - 1] = [IGNORE] * (len(prompt) - 1)  # an assistant turn in the prompt is context
    return x, y


def preference_examples(tokenizer: Any, pairs: Iterable[Any], block_size: int,
                        name: str = "pair") -> list[tuple[Example, Example]]:
    """[((chosen x, y), (rejected x, y)), ...] of preference rows, each checked (:func:`check_pair`)."""
    if not isinstance(tokenizer, ChatTokenizer):
        raise ValueError("the model has no chat tokens: finetune it to chat first with "
                         "minigpt_helpers.sft(model, conversations) (chapter 08)")
    out = []
    for k, row in enumerate(pairs):
        where = f"{name} {k}"
        messages, chosen, rejected = check_pair(row, where)
        out.append((reply_example(tokenizer, messages, chosen, block_size, f"{where} (chosen)"),
                    reply_example(tokenizer, messages, rejected, block_size, f"{where} (rejected)")))
    return out


class PreferenceCollate:
    """Pairs -> one ``SFTCollate`` batch (2B, block_size): the B chosen replies, then the B rejected ones."""

    def __init__(self, block_size: int, pad_id: int) -> None:
        self.collate = SFTCollate(block_size, pad_id)

    def __call__(self, pairs: list[tuple[Example, Example]]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.collate([c for c, _ in pairs] + [r for _, r in pairs])


def split_pairs(values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) halves of a (2B, ...) tensor laid out by :class:`PreferenceCollate`."""
    if values.shape[0] % 2:
        raise ValueError(f"a preference batch has 2B rows (B chosen, then B rejected), got {values.shape[0]}: "
                         "make it with PreferenceCollate / preference_source")
    half = values.shape[0] // 2
    return values[:half], values[half:]


class PreferenceSource(ExampleSource):
    """Preference pairs as a *batch source* for ``train()``; ``batch_size`` counts pairs (2 rows each).

    Its :meth:`evaluate` is the mean DPO loss over the validation pairs, each pair counted once.
    """

    def evaluate(self, model: DPOModel, batch_size: int, device: torch.device | str,
                 precision: str = "fp32") -> float | None:
        """The mean DPO loss of ``model`` (the :class:`DPOModel` train() runs) over the validation pairs, or None.

        Computed as :func:`preference_metrics` computes it: the policy's and the reference's
        log-probabilities in float32 with dropout off, then :func:`dpo_loss` over all pairs at once
        (``device`` and ``precision`` are the models' own).
        """
        if not self.validation:
            return None
        policy = pair_logprobs(model.policy, self.validation, batch_size)
        ref = pair_logprobs(model.reference(), self.validation, batch_size)
        return dpo_loss(*policy, *ref, beta=model.beta)[0].item()


def preference_source(tokenizer: Any, train: Iterable[Any], validation: Iterable[Any], block_size: int,
                      eval_examples: int | None = None) -> PreferenceSource:
    """A :class:`PreferenceSource` of preference rows (see the module docstring), every pair checked."""
    return PreferenceSource(preference_examples(tokenizer, train, block_size),
                            preference_examples(tokenizer, validation, block_size, "validation pair"),
                            PreferenceCollate(block_size, tokenizer.eot_id), eval_examples)


# ------------------------------------------------------------------------------ the model train() runs
class DPOModel(nn.Module):
    """The policy (trained) and a frozen reference: ``forward(x, y)`` is the DPO loss of a preference batch.

    Only the policy is a submodule: the reference sits in a tuple, so it is neither
    in the optimizer nor in the checkpoints, and ``train()``'s ``model.to(device)``
    leaves it alone (:meth:`reference` moves it to the policy's device). It is set to
    eval mode and its parameters stop requiring gradients. Checkpoints are the policy's
    own folder (:meth:`save`), which ``load_chat_model`` reads.
    """

    def __init__(self, policy: nn.Module, ref_model: nn.Module, beta: float = 0.1) -> None:
        super().__init__()
        self.policy, self.beta = policy, beta
        ref_model.requires_grad_(False)
        self.frozen = (ref_model.eval(),)
        self.last_rewards: tuple[torch.Tensor, torch.Tensor] | None = None  # of the last batch, for callbacks

    @property
    def ref_model(self) -> nn.Module:
        return self.frozen[0]

    def reference(self) -> nn.Module:
        """The frozen reference, moved to the policy's device first if it is elsewhere (train() moves the policy)."""
        ref, device = self.frozen[0], next(self.policy.parameters()).device
        if next(ref.parameters()).device != device:
            ref.to(device)
        return ref

    # the pieces train() reads from a GPT
    @property
    def config(self):
        return self.policy.config

    tokenizer = wrapped_tokenizer("policy")

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[None, torch.Tensor]:
        """(None, the mean DPO loss) of a (2B, T) preference batch (B chosen rows, then B rejected rows)."""
        policy = split_pairs(sequence_logprobs(self.policy, (x, y)))
        with torch.no_grad():
            ref = split_pairs(sequence_logprobs(self.reference(), (x, y)))
        loss, chosen, rejected = dpo_loss(*policy, *ref, beta=self.beta)
        self.last_rewards = (chosen, rejected)
        return None, loss

    def step_metrics(self) -> dict[str, float]:
        """The last batch's implicit rewards, as TRL logs them: what ``train()`` sends to the experiment trackers."""
        if self.last_rewards is None:
            return {}
        chosen, rejected = self.last_rewards
        return {"chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item(),
                "margin": (chosen - rejected).mean().item(), "accuracy": (chosen > rejected).float().mean().item()}

    def save(self, directory: str | Path) -> Path:
        """The policy as an ordinary chat GPT folder (``model.safetensors``, ``config.json``, ``tokenizer/``)."""
        return self.policy.save(directory)

    @torch.no_grad()
    def load_weights(self, directory: str | Path) -> None:
        """Read a folder written by :meth:`save` into the policy (``train(resume=True)`` calls it)."""
        load_policy_weights(self.policy, directory)


def load_policy_weights(policy: nn.Module, directory: str | Path) -> None:
    """Read a policy's checkpoint folder into ``policy``: a LoRA model reads its adapters, a GPT its weights."""
    from safetensors.torch import load_model

    if hasattr(policy, "load_weights"):
        policy.load_weights(directory)
    else:
        load_model(policy, str(Path(directory) / "model.safetensors"), strict=True, device="cpu")


# ------------------------------------------------------------------------------ training and measuring
def check_beta(beta: Any) -> float:
    """``beta`` as a float; a ValueError naming the fix unless it is a finite number > 0."""
    if isinstance(beta, bool) or not isinstance(beta, (int, float)) or not (math.isfinite(beta) and beta > 0):
        raise ValueError(f"beta must be a number > 0 (the strength of the pull towards the reference; "
                         f"0.1 is usual), got {beta!r}")
    return float(beta)


def check_reference(model: nn.Module, ref_model: nn.Module | None) -> nn.Module:
    """The reference: a frozen deep copy of ``model`` by default; ``ref_model`` if it can score the same tokens."""
    if ref_model is None:
        return copy.deepcopy(model)
    if ref_model is model:
        raise ValueError("ref_model is the model being trained, so it would move with it: pass a copy "
                         "(copy.deepcopy(model)) or leave ref_model=None for one")
    ours, theirs = model.config.vocab_size, getattr(getattr(ref_model, "config", None), "vocab_size", None)
    if theirs != ours:
        raise ValueError(f"ref_model has vocab_size {theirs} but the model {ours}: the reference must score the "
                         "same tokens; use the model DPO starts from (e.g. chapter 08's load_chat_model(...))")
    return ref_model


def dpo(model: nn.Module, pairs: Sequence[Any], ref_model: nn.Module | None = None, cfg: Any = None, *,
        val_pairs: Sequence[Any] = (), beta: float = 0.1, out_dir: str | Path | None = None,
        resume: bool = False, live: str = "auto", callback: Any = None):
    """DPO-tune a chat model on preference ``pairs`` with :func:`train`; returns its TrainResult.

    ``model`` (a chat GPT, e.g. chapter 08's ``load_chat_model(...)``) is trained in
    place; the result's ``model`` is it (not the :class:`DPOModel` around it), ready for
    ``chat_reply``. ``ref_model`` is the frozen reference, by default a deep copy of
    ``model`` as it is now: on ``resume=True`` pass the same starting model again (not
    the checkpoint), so that the reference is the same. A ``ref_model`` you pass is
    frozen in place. ``cfg.batch_size`` counts pairs: a step runs twice as many
    sequences through the policy, and once more through the reference (the tokens/s
    ``train()`` shows count one sequence per pair). ``val_pairs`` give the validation
    curve (the mean DPO loss per pair). Every pair is checked here first.
    """
    from ..training.loop import train

    beta = check_beta(beta)
    pairs, val_pairs = list(pairs), list(val_pairs)
    if not pairs:
        raise ValueError(f"no preference pairs to train on: pass at least one; {PAIR_HINT}")
    tok, block = getattr(model, "tokenizer", None), model.config.block_size
    source = preference_source(tok, pairs, val_pairs, block)
    runner = DPOModel(model, check_reference(model, ref_model), beta)
    result = train(runner, source, cfg, out_dir=out_dir, resume=resume, live=live, callback=callback)
    return dataclasses.replace(result, model=model)


@torch.no_grad()
def pair_logprobs(model: nn.Module, examples: list[tuple[Example, Example]],
                  batch_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """(chosen, rejected) summed log-probabilities (N,) of each pair's replies under ``model`` (eval mode)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    collate = PreferenceCollate(model.config.block_size, model.tokenizer.eot_id)
    chosen, rejected = [], []
    try:
        for i in range(0, len(examples), batch_size):
            x, y = collate(examples[i: i + batch_size])
            c, r = split_pairs(sequence_logprobs(model, (x.to(device), y.to(device))))
            chosen.append(c.float().cpu())
            rejected.append(r.float().cpu())
    finally:
        model.train(was_training)
    return torch.cat(chosen), torch.cat(rejected)


def preference_metrics(model: nn.Module, ref_model: nn.Module, pairs: Sequence[Any], beta: float = 0.1,
                       batch_size: int = 16) -> dict[str, float]:
    """How ``model`` (the policy) ranks the pairs' replies against ``ref_model``: means over the pairs.

    - ``chosen_reward``, ``rejected_reward``: the implicit rewards ``beta (log pi - log pi_ref)`` of the replies;
    - ``margin``: chosen minus rejected reward (0 for the reference itself);
    - ``accuracy``: the share of pairs whose chosen reward is strictly above the rejected one;
    - ``loss``: the DPO loss (``ln 2`` = 0.693 for the reference itself);
    - ``kl``: a reference-KL estimate, the mean of ``log pi(chosen) - log pi_ref(chosen)`` (nats per reply).
      The KL ``E_{y ~ pi}[log pi(y) - log pi_ref(y)]`` averages over replies sampled from
      the policy; this proxy reads the fixed chosen replies instead, so it needs no
      sampling (deterministic, Monte-Carlo-free), but it is biased and may be negative:
      it says how far the policy moved on the replies it was pushed towards;
    - ``pairs``: how many pairs were scored.
    """
    beta = check_beta(beta)
    examples = preference_examples(getattr(model, "tokenizer", None), list(pairs), model.config.block_size)
    if not examples:
        raise ValueError(f"no preference pairs to measure: pass at least one; {PAIR_HINT}")
    policy_c, policy_r = pair_logprobs(model, examples, batch_size)
    ref_c, ref_r = pair_logprobs(ref_model, examples, batch_size)
    loss, chosen, rejected = dpo_loss(policy_c, policy_r, ref_c, ref_r, beta)
    return {"chosen_reward": chosen.mean().item(), "rejected_reward": rejected.mean().item(),
            "margin": (chosen - rejected).mean().item(), "accuracy": (chosen > rejected).float().mean().item(),
            "loss": loss.item(), "kl": (policy_c - ref_c).mean().item(), "pairs": len(examples)}
