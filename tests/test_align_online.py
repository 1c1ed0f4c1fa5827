"""Chapter 10's online section, run offline: an arithmetic set streamed with ``datasets`` from a dataset laid out
like the Hub's ``Kyleyee/arithmetic-grpo`` (a chat prompt and a ground truth per row), and GRPO with LoRA on an
open-weight Llama loaded into the course's GPT, with the chat tokens added to its Hugging Face tokenizer.

The notebook does this with SmolLM2-135M-Instruct; here the model is a small random-weight Llama of the same kind
(GQA, tied embeddings, its vocabulary exactly its tokenizer's, so that the chat tokens are new rows) with a locally
trained tokenizer, and the "Hub dataset" is a local folder that ``datasets.load_dataset(..., streaming=True)``
reads the same way. Also here: the local arithmetic rows that stand in for the Hub offline.
"""

from __future__ import annotations

import dataclasses
import json
import operator
import re
import time

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("datasets")

from minigpt_helpers import TrainConfig, load_open_weights, set_seed  # noqa: E402
from minigpt_helpers.align.arithmetic import arithmetic_rows, hub_arithmetic  # noqa: E402
from minigpt_helpers.align.grpo import STAT_KEYS, STATS_FILE, grpo  # noqa: E402
from minigpt_helpers.align.rewards import arithmetic_reward, task_reward  # noqa: E402
from minigpt_helpers.data import sources as data_module  # noqa: E402
from minigpt_helpers.finetune.chat import add_chat_tokens, chat_reply, load_chat_model  # noqa: E402
from minigpt_helpers.finetune.lora import ADAPTER_FILE, LoRAModel, lora_state_dict  # noqa: E402
from minigpt_helpers.training.checkpoint import find_checkpoint  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module
OPS = {"+": operator.add, "-": operator.sub, "*": operator.mul}
QUESTION = re.compile(r"What is (\d+) ([-+*]) (\d+)\?")


# ------------------------------------------------------------------------------ the local arithmetic set
def test_arithmetic_rows_are_seeded_and_their_answers_right():
    rows = arithmetic_rows(200, seed=3)
    assert rows == arithmetic_rows(200, seed=3) and rows != arithmetic_rows(200, seed=4)
    assert arithmetic_rows(5, seed=3) == rows[:5]
    ops = set()
    for row in rows:
        assert row["task"] == "arithmetic" and [m["role"] for m in row["messages"]] == ["user"]
        a, op, b = QUESTION.fullmatch(row["messages"][0]["content"]).groups()
        assert 0 <= int(a) <= 20 and 0 <= int(b) <= 20
        assert row["answer"] == str(OPS[op](int(a), int(b)))  # the question computed here
        assert task_reward(row, f"{a} {op} {b} = {row['answer']}") == 1.0
        ops.add(op)
    assert ops == set(OPS) and any(row["answer"].startswith("-") for row in rows)  # every operator, negatives too
    small = arithmetic_rows(50, seed=0, max_operand=3, ops="+")
    assert all(re.fullmatch(r"What is [0-3] \+ [0-3]\?", r["messages"][0]["content"]) for r in small)
    for bad in (0, -1, 2.0, True):
        with pytest.raises(ValueError, match="n must be an integer >= 1"):
            arithmetic_rows(bad)


# ------------------------------------------------------------------------------ the Hub set, read from a local folder
def write_hub_folder(folder, rows: list[dict]):
    """A dataset repo's layout: a data file of rows (``datasets`` infers the columns)."""
    folder.mkdir()
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return folder


def hub_rows(n: int) -> list[dict]:
    """Rows as ``Kyleyee/arithmetic-grpo`` holds them: "prompt" (chat messages), "ground_truth" (a string)."""
    return [{"prompt": [{"role": "user", "content": f"What is {a} + {7 - a}?"}], "ground_truth": "7"}
            for a in range(n)]


def test_hub_arithmetic_fails_at_once_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.perf_counter()
    with pytest.raises(ConnectionError, match="not reachable.*arithmetic_rows"):
        hub_arithmetic()
    assert time.perf_counter() - start < 5  # no network wait: the offline setting is read first


def test_hub_arithmetic_streams_chat_rows_from_a_dataset_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(data_module, "hub_reachable", lambda *a, **k: (True, "a local imitation"))
    folder = write_hub_folder(tmp_path / "arithmetic-grpo", hub_rows(8))
    rows = hub_arithmetic(str(folder), limit=5)
    assert len(rows) == 5
    assert rows[2] == {"messages": [{"role": "user", "content": "What is 2 + 5?"}], "answer": "7",
                       "task": "arithmetic"}
    assert all(task_reward(r, "2 + 5 = 7") == 1.0 for r in rows)
    assert len(hub_arithmetic(str(folder), limit=100)) == 8

    plain = write_hub_folder(tmp_path / "plain", [{"question": "What is 6 * 7?", "answer": 42}])
    assert hub_arithmetic(str(plain), prompt_column="question", answer_column="answer") == [
        {"messages": [{"role": "user", "content": "What is 6 * 7?"}], "answer": "42", "task": "arithmetic"}]
    with pytest.raises(ValueError, match=r"no \['prompt', 'ground_truth'\] column.*\['answer', 'question'\]"):
        hub_arithmetic(str(plain))


# ------------------------------------------------------------------------------ GRPO with LoRA on an open-weight Llama
SEVEN_LEAN = 0.7  # see open_llama


def open_llama(folder, hf_tok):
    """A random-weight SmolLM2-shaped Llama (GQA, tied embeddings, 300 ids: its tokenizer's) saved as on the Hub.

    Every embedding row gets a shared direction, and the digit "7" twice as much of it: the residual stream of a
    random model is mostly the input token's embedding, so every logit shares a term and "7"'s term is larger.
    About half the tokens it samples are then "7" (under 1 % without the lean), so that replies to "What is
    a + b?" (answer 7) sometimes end in the number 7 and sometimes not ("77", or no digit): groups differ in reward and
    GRPO has something to learn from.
    """
    config = transformers.LlamaConfig(vocab_size=300, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      rope_theta=100000.0, max_position_embeddings=2048, bos_token_id=0,
                                      eos_token_id=0)
    set_seed(0)
    hf = transformers.LlamaForCausalLM(config)
    direction = torch.randn(64, generator=torch.Generator().manual_seed(0))
    direction *= SEVEN_LEAN / direction.norm()
    with torch.no_grad():
        hf.model.embed_tokens.weight += direction
        hf.model.embed_tokens.weight[hf_tok.convert_tokens_to_ids("7")] += direction
    hf.save_pretrained(folder)
    hf_tok.save_pretrained(folder)
    return folder


def lora_policy(folder) -> LoRAModel:
    """The notebook's steps: load the open weights, a short context, the chat tokens, LoRA adapters (seeded A)."""
    model = load_open_weights(str(folder), device="cpu")
    model.config = dataclasses.replace(model.config, block_size=32)  # rollouts are padded to this
    add_chat_tokens(model)  # 300 ids fill the vocabulary: four new rows
    set_seed(1)
    return LoRAModel(model, r=8, alpha=16)


def run(folder, rows, out=None, stop_at=None, resume=False):
    policy = lora_policy(folder)
    cfg = TrainConfig(batch_size=8, max_steps=4, warmup_steps=1, lr=1e-2, min_lr=1e-3, eval_interval=2,
                      device="cpu", seed=5, compile=False)
    result = grpo(policy, rows, arithmetic_reward, cfg, group_size=4, max_new_tokens=4, out_dir=out, resume=resume,
                  live="off", callback=lambda info: stop_at is not None and info["step"] == stop_at)
    return policy, result


def test_grpo_trains_only_the_lora_adapters_of_an_open_weight_llama(tmp_path, monkeypatch, local_hf_tokenizer):
    monkeypatch.setattr(data_module, "hub_reachable", lambda *a, **k: (True, "a local imitation"))
    rows = hub_arithmetic(str(write_hub_folder(tmp_path / "arithmetic-grpo", hub_rows(8))))
    folder = open_llama(tmp_path / "model", local_hf_tokenizer)
    start = lora_policy(folder).state_dict()
    assert all(not torch.any(v) for k, v in start.items() if k.endswith("lora_B"))  # B = 0: the base model's outputs

    policy, straight = run(folder, rows)
    stats = straight.stats
    assert straight.model is policy and straight.step == 4 and [s["step"] for s in stats] == [1, 2, 3, 4]
    assert all(set(s) == {"step", *STAT_KEYS} for s in stats)
    assert stats[0]["kl"] == 0 and max(s["kl"] for s in stats) > 0  # the policy starts as the reference, then moves
    assert all(s["length"] == 4 for s in stats)  # the random model never ends its turn within 4 tokens
    assert min(s["zero_variance"] for s in stats) < 1 and 0 < stats[0]["reward"] < 1  # groups with a signal

    # only the adapters moved: every base weight, the chat tokens' embedding rows included, is bit for bit the same
    # (grpo trains the parameters that require a gradient; LoRAModel froze all but A and B, and grpo does not
    # unfreeze the new token rows as sft(lora=...) does)
    after = policy.state_dict()
    changed = {k for k in start if not torch.equal(start[k], after[k])}
    assert changed == {f"model.{k}" for k in lora_state_dict(policy.model)}  # every A and B, nothing else
    assert policy.transformer.wte.weight.requires_grad is False

    # exact resume: two steps, a stop, two more from the checkpoint
    out = tmp_path / "run"
    _, first = run(folder, rows, out, stop_at=2)
    assert first.step == 2 and first.stop_reason == "callback" and first.stats == stats[:2]
    resumed_policy, resumed = run(folder, rows, out, resume=True)
    assert resumed.step == 4 and resumed.history.losses == straight.history.losses  # bit for bit on the CPU
    assert resumed.stats == stats
    assert all(torch.equal(v, after[k]) for k, v in resumed_policy.state_dict().items())

    # the checkpoint: the base model's files, the adapter and grpo.json; load_chat_model merges the adapter in
    ckpt = find_checkpoint(out)
    assert (ckpt / ADAPTER_FILE).is_file() and (ckpt / STATS_FILE).is_file()
    chat = load_chat_model(out, device="cpu")
    assert not isinstance(chat, LoRAModel) and chat.tokenizer.vocab_size == 304
    x = torch.tensor([[0, 5, 23, 301, 7]])
    with torch.no_grad():
        assert torch.allclose(chat(x)[0], resumed_policy.eval()(x)[0], atol=1e-5)
    question = rows[0]["messages"]
    reply = chat_reply(chat, question, max_new_tokens=4)
    assert isinstance(reply, str) and reply == chat_reply(resumed_policy, question, max_new_tokens=4)
