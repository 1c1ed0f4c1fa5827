"""DPO (chapter 10): the loss against TRL's, sequence log-probabilities against a hand loop with the prompt and the
padding masked, dpo() with train() on the tiny chat model (the loss falls, the margin grows, the reference stays,
the checkpoint chats), exact resume after a stop, and one clear error for each kind of bad input. Also the later
chapters' entry point to chapter 08's chat model, get_chat_model."""

from __future__ import annotations

import copy
import io
import math
import shutil
from collections import defaultdict
from types import SimpleNamespace

import pytest
import torch
from tiny_chat import convo, tiny_model

from minigpt_helpers import TrainConfig, find_checkpoint, set_seed
from minigpt_helpers.align.dpo import (
    DPOModel,
    PreferenceCollate,
    dpo,
    dpo_loss,
    preference_examples,
    preference_metrics,
)
from minigpt_helpers.align.logprobs import sequence_logprobs, token_logprobs
from minigpt_helpers.cli import main
from minigpt_helpers.config import artifacts_dir
from minigpt_helpers.finetune.chat import (
    END,
    ChatTokenizer,
    add_chat_tokens,
    chat_reply,
    load_chat_model,
    resize_token_embeddings,
)
from minigpt_helpers.finetune.instructions import get_chat_model
from minigpt_helpers.training.examples import IGNORE
from minigpt_helpers.training.loop import get_trained_model, trained_model_context

pytestmark = pytest.mark.usefixtures("one_thread")


def pair(prompt: str, chosen: str, rejected: str) -> dict:
    return {"messages": [{"role": "user", "content": prompt}], "chosen": chosen, "rejected": rejected}


# the tiny chat model answers "hi" with "yo" and "bye" with "ciao" (tests/tiny_chat.py); these pairs prefer others
PAIRS = [pair("hi", "hey", "yo"), pair("bye", "ciao ciao", "ciao"), pair("hi there", "hey", "yo"),
         pair("ok bye", "ciao ciao", "ciao")]
HI = [{"role": "user", "content": "hi"}]


def dpo_config(steps: int, **over) -> TrainConfig:
    kw = dict(batch_size=2, max_steps=steps, warmup_steps=2, lr=5e-3, min_lr=5e-4, eval_interval=steps // 2,
              device="cpu")
    return TrainConfig(**{**kw, **over})


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_weights(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.equal(a[name], b[name]), name


# ----------------------------------------------------------------------------------------------- the loss
def trl_dpo(logps: list[torch.Tensor], beta: float) -> dict:
    """TRL's DPO loss and rewards for the four log-probabilities ``logps`` (each (B,)), computed by TRL itself.

    TRL 1.x has no stand-alone DPO loss function: ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss(self, model,
    inputs, return_outputs)`` runs the model, sums the completion tokens' log-probabilities, and computes the loss,
    the rewards and the logged metrics. It is called here unbound, on a stand-in ``self`` with the settings of plain
    sigmoid DPO (``loss_type=["sigmoid"]``, ``f_divergence_type="reverse_kl"``, no length weighting) and the
    reference's log-probabilities precomputed (``precompute_ref_log_probs=True``, TRL's own option). The stand-in
    model gives each row one completion token whose log-probability is the policy's, both as TRL 1.16's fused LM
    head returns it (``outputs.log_probs``) and as earlier 1.x versions compute it from ``outputs.logits`` (over a
    vocabulary of two, logits ``[p, log(1 - e^p)]`` have ``log_softmax = [p, ...]``, since ``e^p + 1 - e^p = 1``).
    The stand-in accelerator (one process) records what TRL gathers: the per-pair chosen and rejected rewards first.
    """
    trainer = pytest.importorskip("trl.trainer.dpo_trainer", reason="TRL is a test dependency (requirements.txt)")
    policy_chosen, policy_rejected, ref_chosen, ref_rejected = logps
    p = torch.cat([policy_chosen, policy_rejected])  # TRL's batch: the chosen rows, then the rejected rows
    n = len(p)
    logits = torch.zeros(n, 2, 2, dtype=p.dtype)  # what TRL before its fused head reads: log_softmax of the logits
    logits[:, 0, 0], logits[:, 0, 1] = p, torch.log1p(-torch.exp(p))  # [p, log(1 - e^p)]: log_softmax = [p, ...]
    outputs = SimpleNamespace(logits=logits, log_probs=p[:, None], entropy=torch.zeros(n, 1, dtype=p.dtype),
                              mean_logits=torch.zeros(n, 1, dtype=p.dtype), is_top1=torch.zeros(n, 1, dtype=torch.bool))
    gathered: list[torch.Tensor] = []
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t,
                                  gather=lambda t: gathered.append(t) or t)
    self = SimpleNamespace(model=SimpleNamespace(training=True), accelerator=accelerator, beta=beta,
                           precompute_ref_logps=True, ld_alpha=None, f_divergence_type="reverse_kl",
                           loss_types=["sigmoid"], loss_weights=[1.0], use_weighting=False, aux_loss_enabled=False,
                           _metrics={"train": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    inputs = {"input_ids": torch.zeros(n, 2, dtype=torch.long), "attention_mask": torch.ones(n, 2, dtype=torch.long),
              "completion_mask": torch.tensor([[0, 1]] * n),  # the prompt token, then one completion token
              "ref_chosen_logps": ref_chosen, "ref_rejected_logps": ref_rejected}
    loss = trainer.DPOTrainer._compute_loss(self, lambda **kw: outputs, inputs, False)
    return {"loss": loss, "chosen_rewards": gathered[0], "rejected_rewards": gathered[1],
            "metrics": {k: v[-1] for k, v in self._metrics["train"].items()}}


def test_dpo_loss_matches_trl():
    """Against TRL 1.16's ``trl.trainer.dpo_trainer.DPOTrainer._compute_loss`` (sigmoid DPO, see trl_dpo) on the
    same random log-probabilities: the loss and both rewards agree to 1e-6, and TRL's logged margin and reward
    accuracy are preference_metrics' definitions."""
    g = torch.Generator().manual_seed(0)
    for beta in (0.1, 0.5):
        logps = [-(0.1 + 50 * torch.rand(16, generator=g, dtype=torch.float64)) for _ in range(4)]
        loss, chosen, rejected = dpo_loss(*logps, beta=beta)
        trl = trl_dpo(logps, beta)
        assert trl["metrics"]["logps/chosen"] == pytest.approx(logps[0].mean().item(), abs=1e-9)  # the stand-in works
        assert abs(loss.item() - trl["loss"].item()) < 1e-6
        assert (chosen - trl["chosen_rewards"]).abs().max().item() < 1e-6
        assert (rejected - trl["rejected_rewards"]).abs().max().item() < 1e-6
        assert trl["metrics"]["rewards/margins"] == pytest.approx((chosen - rejected).mean().item(), abs=1e-9)
        assert trl["metrics"]["rewards/accuracies"] == (chosen > rejected).double().mean().item()
    # the paper's formula: ln 2 when the policy is the reference, smaller as it prefers the chosen reply
    same = torch.tensor([-3.0, -7.0])
    assert dpo_loss(same, same - 1, same, same - 1)[0].item() == pytest.approx(math.log(2))
    assert dpo_loss(same + 1, same - 1, same, same - 1)[0].item() < math.log(2)


def test_rewards_are_detached_and_the_loss_carries_the_gradient():
    policy = torch.tensor([-4.0, -2.0], requires_grad=True)
    loss, chosen, rejected = dpo_loss(policy[:1], policy[1:], torch.tensor([-4.0]), torch.tensor([-2.0]), beta=0.1)
    assert not chosen.requires_grad and not rejected.requires_grad
    loss.backward()
    assert policy.grad[0] < 0 < policy.grad[1]  # descending raises the chosen reply, lowers the rejected one


# ----------------------------------------------------------------------------------------------- log-probabilities
def test_sequence_logprobs_is_a_sum_over_the_reply_tokens_only():
    set_seed(0)
    model = add_chat_tokens(tiny_model()).eval()
    tok = model.tokenizer
    rows = [pair("hi", "yo", "hey there"),
            {"messages": convo("hi", "yo", "bye")["messages"], "chosen": "ciao", "rejected": "no"}]  # a multi-turn prompt
    x, y = PreferenceCollate(32, tok.eot_id)(preference_examples(tok, rows, 32))
    assert x.shape == y.shape == (4, 32)  # the 2 chosen replies, then the 2 rejected ones

    # only each final reply and its <|end|> are scored: not the prompt, not the earlier "yo", not the padding
    replies = ["yo", "ciao", "hey there", "no"]
    for b, reply in enumerate(replies):
        assert tok.decode(y[b][y[b] != IGNORE].tolist()) == reply + END

    got = sequence_logprobs(model, (x, y))
    per_token = token_logprobs(model, x, y)
    assert torch.equal(per_token[y == IGNORE], torch.zeros(int((y == IGNORE).sum())))
    with torch.no_grad():
        for b in range(len(x)):
            total = 0.0
            for t in range(x.shape[1]):
                if y[b, t] != IGNORE:
                    logits, _ = model(x[b: b + 1, : t + 1])  # the model sees the prefix alone
                    total += torch.log_softmax(logits[0, -1].double(), -1)[y[b, t]].item()
            assert got[b].item() == pytest.approx(total, abs=1e-5)

    # the padding after a reply never changes it (causal attention looks left only)
    last = (y != IGNORE).nonzero()[:, 1].max().item()
    x2 = x.clone()
    x2[:, last + 1:] = tok.token_id(END)
    assert torch.allclose(sequence_logprobs(model, (x2, y)), got, atol=1e-6)

    got.sum().backward()  # gradients flow to the model
    assert model.transformer.wte.weight.grad.abs().sum() > 0


# ----------------------------------------------------------------------------------------------- training
def test_dpo_trains_the_policy_and_leaves_the_reference(trained_chat, tmp_path, monkeypatch, capsys):
    sft_dir = trained_chat[1]
    model, ref = load_chat_model(sft_dir, device="cpu"), load_chat_model(sft_dir, device="cpu")
    ref_before = weights(ref)
    before = preference_metrics(model, ref, PAIRS)
    assert before["margin"] == 0 and before["accuracy"] == 0 and before["kl"] == 0
    assert before["loss"] == pytest.approx(math.log(2))

    # the reference is no parameter of the module train() runs: neither trained nor saved
    runner = DPOModel(model, ref)
    assert [id(p) for p in runner.parameters()] == [id(p) for p in model.parameters()]
    assert all(k.startswith("policy.") for k in runner.state_dict())

    out = tmp_path / "dpo"
    result = dpo(model, PAIRS, ref, dpo_config(20), val_pairs=PAIRS[:2], out_dir=out, live="off")
    assert result.model is model and result.step == 20 and result.stop_reason == "done"
    h = result.history
    assert h.losses[0] == pytest.approx(math.log(2), abs=1e-6)  # step 1: the policy is still the reference
    assert h.val_losses[0] == pytest.approx(math.log(2), abs=1e-6)
    assert sum(h.losses[-5:]) / 5 < 0.5 * math.log(2) and h.val_losses[-1] < h.val_losses[0]

    after = preference_metrics(model, ref, PAIRS)
    assert after["margin"] > 0.5 and after["accuracy"] == 1 and after["loss"] < before["loss"]
    assert_same_weights(weights(ref), ref_before)
    assert not any(p.requires_grad for p in ref.parameters())

    # the checkpoint is an ordinary chat model: load_chat_model and the chat command read it
    loaded = load_chat_model(out, device="cpu")
    assert_same_weights(weights(loaded), weights(model))
    reply = chat_reply(loaded, HI, max_new_tokens=20)
    monkeypatch.setattr("sys.stdin", io.StringIO("hi\n"))
    assert main(["chat", "--checkpoint", str(find_checkpoint(out)), "--temperature", "0", "--device", "cpu",
                 "--max-new-tokens", "20"]) == 0
    assert f"assistant> {reply}\n" in capsys.readouterr().out


def test_the_default_reference_is_a_frozen_copy_of_the_starting_model(trained_chat):
    model = load_chat_model(trained_chat[1], device="cpu")
    start = copy.deepcopy(model)
    seen = []
    result = dpo(model, PAIRS, cfg=dpo_config(4), live="off",
                 callback=lambda info: seen.append((info["model"].ref_model, info["model"].last_rewards)))
    ref = seen[0][0]
    assert all(r is ref for r, _ in seen) and ref is not model
    chosen, rejected = seen[-1][1]  # the last batch's rewards, for a callback to log: one per pair, detached
    assert chosen.shape == rejected.shape == (2,) and not chosen.requires_grad
    assert_same_weights(weights(ref), weights(start))  # unchanged by four steps
    assert preference_metrics(model, ref, PAIRS)["margin"] > 0 and result.history.losses[-1] < math.log(2)


def test_dpo_resumes_exactly_after_a_stop(trained_chat, tmp_path):
    """Eight steps straight, or four, a stop (as Ctrl-C), and a resume to eight: the same losses and weights."""
    def run(out=None, **kw):
        model = load_chat_model(trained_chat[1], device="cpu")  # the starting model: the default reference copies it
        return model, dpo(model, PAIRS, cfg=dpo_config(8), val_pairs=PAIRS[:2], out_dir=out, live="off", **kw)

    straight_model, straight = run()
    _, stopped = run(tmp_path / "run", callback=lambda info: info["step"] == 4)
    assert stopped.stop_reason == "callback" and stopped.step == 4
    assert find_checkpoint(tmp_path / "run").name == "ckpt-0000004"
    resumed_model, resumed = run(tmp_path / "run", resume=True)
    assert resumed.step == 8
    assert resumed.history.losses == straight.history.losses  # bit for bit on CPU
    assert resumed.history.val_losses == straight.history.val_losses
    assert_same_weights(weights(resumed_model), weights(straight_model))


def test_dpo_resumes_exactly_from_the_checkpoint_a_kill_leaves(trained_chat, tmp_path):
    """A kill -9 between checkpoints leaves only the older one (tests/test_training.py kills train() for real):
    resuming from it replays the lost steps on the same pairs, in the same order."""
    def run(out, **kw):
        model = load_chat_model(trained_chat[1], device="cpu")
        return model, dpo(model, PAIRS, cfg=dpo_config(8, checkpoint_every=4), out_dir=out, live="off", **kw)

    out = tmp_path / "run"
    straight_model, straight = run(out)
    assert sorted(p.name for p in out.glob("ckpt-*")) == ["ckpt-0000004", "ckpt-0000008"]
    shutil.rmtree(out / "ckpt-0000008")  # killed during steps 5 to 8: step 4's checkpoint is the last one
    resumed_model, resumed = run(out, resume=True)
    assert resumed.step == 8 and resumed.history.losses == straight.history.losses  # bit for bit on CPU
    assert_same_weights(weights(resumed_model), weights(straight_model))


def test_the_implicit_rewards_reach_the_experiment_trackers(trained_chat, tmp_path):
    """train() logs DPOModel.step_metrics(): the last batch's rewards, margin and accuracy, as TRL logs them."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    model = load_chat_model(trained_chat[1], device="cpu")
    out = tmp_path / "tracked"
    dpo(model, PAIRS, cfg=dpo_config(4, log_with="tensorboard"), out_dir=out, live="off")
    events = EventAccumulator(str(out / "runs" / "tracked"))
    events.Reload()
    margin = [e.value for e in events.Scalars("train/margin")]
    chosen = [e.value for e in events.Scalars("train/chosen_reward")]
    rejected = [e.value for e in events.Scalars("train/rejected_reward")]
    assert len(margin) == 4 and margin[0] == 0.0  # step 1: the policy is the reference
    assert all(abs(m - (c - r)) < 1e-5 for m, c, r in zip(margin, chosen, rejected))
    assert margin[-1] > 0  # the pairs are being learned
    assert {e.value for e in events.Scalars("train/accuracy")} <= {0.0, 0.5, 1.0}  # batches of 2 pairs


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("pairs, kw, message", [
    ([], {}, "no preference pairs"),
    (PAIRS, {"beta": 0}, "beta must be a number > 0"),
    (PAIRS, {"beta": float("nan")}, "beta must be a number > 0"),
    ([pair("hi", "yo " * 20, "yo")], {}, "larger block_size"),
    ([{"messages": HI, "chosen": "yo"}], {}, "not a preference pair"),
    ([{"messages": [*HI, {"role": "assistant", "content": "yo"}], "chosen": "a", "rejected": "b"}], {},
     "must end with the user message"),
    ([pair("hi", "yo", "yo")], {}, "same reply"),
    ([pair("hi", "yo", 3)], {}, "must be strings"),
    ([{"messages": "hi", "chosen": "a", "rejected": "b"}], {}, "list of messages"),
], ids=["empty", "beta-0", "beta-nan", "too-long", "no-rejected", "prompt-ends-with-reply", "same", "not-text",
        "messages-not-a-list"])
def test_bad_input_gets_one_clear_error(trained_chat, pairs, kw, message):
    model = load_chat_model(trained_chat[1], device="cpu")
    with pytest.raises(ValueError, match=message):
        dpo(model, pairs, cfg=dpo_config(2), live="off", **kw)


def test_models_that_cannot_take_part_are_named(trained_chat):
    model = load_chat_model(trained_chat[1], device="cpu")
    with pytest.raises(ValueError, match="pass a copy"):
        dpo(model, PAIRS, model, dpo_config(2), live="off")
    with pytest.raises(ValueError, match=r"no chat tokens.*sft\("):
        dpo(tiny_model(), PAIRS, cfg=dpo_config(2), live="off")
    other = add_chat_tokens(tiny_model())
    resize_token_embeddings(other, other.config.vocab_size + 1)  # one more token than the model
    with pytest.raises(ValueError, match="same tokens"):
        dpo(model, PAIRS, other, dpo_config(2), live="off")


# ----------------------------------------------------------------------------------------------- the starting model
def test_get_chat_model_loads_chapter_08s_checkpoint(trained_chat, tmp_path, monkeypatch, capsys):
    """With a chat model in artifacts_dir("ch08_sft") (MINIGPT_ARTIFACTS points at an empty folder here), it is
    loaded, not trained again: the same weights and the same replies as the saved model."""
    monkeypatch.setenv("MINIGPT_ARTIFACTS", str(tmp_path / "artifacts"))
    folder = artifacts_dir("ch08_sft")
    assert str(folder).startswith(str(tmp_path)) and not any(folder.iterdir())
    shutil.copytree(trained_chat[1], folder, dirs_exist_ok=True)  # a training folder, as sft(out_dir=...) leaves it

    def no_rebuild(*args, **kwargs):
        raise AssertionError("get_chat_model trained chapter 05's model instead of loading the checkpoint")

    monkeypatch.setattr("minigpt_helpers.training.loop.get_trained_model", no_rebuild)
    model = get_chat_model().cpu()
    assert "loaded chapter 08's chat model" in capsys.readouterr().out
    saved = load_chat_model(trained_chat[1], device="cpu")
    assert_same_weights(weights(model), weights(saved))
    for text in ("hi", "ok bye"):
        prompt = [{"role": "user", "content": text}]
        assert chat_reply(model, prompt, max_new_tokens=10) == chat_reply(saved, prompt, max_new_tokens=10)
    assert chat_reply(model, HI, max_new_tokens=10) == "yo"
    get_chat_model(verbose=False)
    assert capsys.readouterr().out == ""


@pytest.mark.slow
def test_a_caller_needing_more_context_gets_its_own_folders(tmp_path, monkeypatch, capsys):
    """Quick mode's chapter 05 model sees 32 tokens; get_chat_model(min_context=64) leaves chapters 05 and 08's
    folders alone and trains (once) a 64-token base and chat model beside them."""
    monkeypatch.setenv("MINIGPT_ARTIFACTS", str(tmp_path / "artifacts"))
    monkeypatch.setenv("MINIGPT_QUICK", "1")
    assert trained_model_context() == 32  # no chapter 05 model yet: the "tiny" preset's context
    assert get_trained_model(verbose=False).config.block_size == 32  # chapter 05's own, saved in "ch05"
    assert trained_model_context() == 32
    chat = get_chat_model(verbose=False, min_context=64)
    assert chat.config.block_size == 64 and isinstance(chat.tokenizer, ChatTokenizer)
    made = sorted(p.name for p in artifacts_dir().iterdir())
    assert made == ["ch05", "ch05_ctx64", "ch08_sft_ctx64", "tokenizer"]
    again = get_chat_model(min_context=64)
    assert "loaded a 64-token chat model" in capsys.readouterr().out
    assert_same_weights(weights(again), weights(chat))
    assert get_chat_model(verbose=False, min_context=32).config.block_size == 32  # chapter 08's own: "ch08_sft"
    assert sorted(p.name for p in artifacts_dir().iterdir()) == sorted([*made, "ch08_sft"])
