"""Classification finetuning: modes, last-token pooling, train() with a batch source, exact resume after kill -9."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, TrainConfig, find_checkpoint, load_checkpoint, set_seed, train
from minigpt_helpers.finetune.classify import (
    GPTClassifier,
    accuracy,
    classification_source,
    hidden_states,
    majority_accuracy,
)
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.training.examples import ExampleBatches

LABELS = ["day", "night"]
WORDS = {"day": ["sun", "noon", "lark", "bright"], "night": ["moon", "owl", "star", "dark"]}


def rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Texts whose label is told by its words (the first word of each is shared, so pooling must look on)."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        label = LABELS[i % 2]
        words = [WORDS[label][int(k)] for k in torch.randint(0, 4, (3,), generator=g)]
        out.append(("the " + " ".join(words), label))
    return out


def tiny_classifier(mode: str = "lora", steps: int = 8, **over):
    """A classifier, its data and a config small enough to train in a second (also used by the kill subprocess)."""
    train_rows, val_rows = rows(40, 0), rows(12, 1)
    tok = CharTokenizer.train([t for t, _ in train_rows + val_rows])
    set_seed(0)
    gpt = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=24, n_layer=2, n_head=2, n_embd=32, bias=False))
    gpt.tokenizer = tok
    model = GPTClassifier(gpt, LABELS, mode, n_blocks=1)
    source = classification_source(tok, train_rows, val_rows, LABELS, block_size=24)
    kw = dict(batch_size=8, max_steps=steps, warmup_steps=2, lr=3e-3, min_lr=3e-4, eval_interval=4, device="cpu")
    kw.update(over)
    return model, source, TrainConfig(**kw)


def trainable(model) -> set[str]:
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_each_mode_trains_what_it_says():
    head = {"head.weight", "head.bias"}
    assert trainable(tiny_classifier("head")[0]) == head
    last = trainable(tiny_classifier("last_blocks")[0])
    assert head < last and "backbone.transformer.ln_f.weight" in last
    assert all(n.startswith(("head.", "backbone.transformer.h.1.", "backbone.transformer.ln_f")) for n in last)
    model = tiny_classifier("all")[0]
    assert trainable(model) == {n for n, _ in model.named_parameters()}
    lora = trainable(tiny_classifier("lora")[0])
    assert head < lora and all(n in head or ".lora_" in n for n in lora)
    with pytest.raises(ValueError, match="mode must be one of"):
        tiny_classifier("everything")
    with pytest.raises(ValueError, match="n_blocks"):
        GPTClassifier(tiny_classifier("head")[0].backbone, LABELS, "last_blocks", n_blocks=3)


def test_pooling_is_blind_to_padding():
    model, source, _ = tiny_classifier("head")
    model.eval()
    ids = source.train[0][0]
    x, _ = source.collate([source.train[0], source.train[1]])
    assert x.shape == (2, 24) and int((x[0] >= 0).sum()) == len(ids) < 24  # right-padded with -1
    alone = hidden_states(model.backbone, torch.tensor([ids]))[0]  # (T, C) of the text on its own
    assert model.pooling == "mean" and torch.allclose(model.features(x)[0], alone.mean(0), atol=1e-6)
    model.pooling = "last"
    assert torch.allclose(model.features(x)[0], alone[-1], atol=1e-6)


@pytest.mark.slow
def test_a_classifier_learns_with_the_training_loop_and_beats_the_majority():
    model, source, cfg = tiny_classifier("all", steps=24, lr=3e-3, eval_interval=12)
    _, majority = majority_accuracy([LABELS[y] for _, y in source.train], [LABELS[y] for _, y in source.validation])
    result = train(model, source, cfg, live="off")
    losses = result.history.val_losses
    assert result.history.val_steps == [0, 12, 24] and losses[-1] < 0.5 * losses[0]  # it learned
    assert accuracy(model, source) >= 0.9 > 0.5 == majority
    texts = [t for t, _ in rows(4, 7)]
    assert model.predict(texts) == [label for _, label in rows(4, 7)]


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_classify import tiny_classifier
from minigpt_helpers import train
model, source, cfg = tiny_classifier("lora", steps=8, checkpoint_every=4)
def die(info):
    if info["step"] == 6:  # two steps after the checkpoint at 4: that work is lost
        os.kill(os.getpid(), signal.SIGKILL)
train(model, source, cfg, out_dir={out!r}, live="off", callback=die)
"""


@pytest.mark.slow
def test_classification_resumes_exactly_after_kill_9(tmp_path):
    model, source, cfg = tiny_classifier("lora", steps=8, checkpoint_every=4)
    straight = train(model, source, cfg, live="off")

    out = tmp_path / "run"
    code = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert find_checkpoint(out).name == "ckpt-0000004"

    model2, source2, cfg2 = tiny_classifier("lora", steps=8, checkpoint_every=4)
    resumed = train(model2, source2, cfg2, out_dir=out, resume=True, live="off")
    assert resumed.step == 8
    assert resumed.history.losses == straight.history.losses  # bit for bit on CPU
    assert resumed.history.val_losses == straight.history.val_losses
    for (name, a), b in zip(model.state_dict().items(), model2.state_dict().values()):
        assert torch.equal(a, b), name

    # the checkpoint is a GPT folder (base weights) plus the head and adapters
    ckpt = find_checkpoint(out)
    assert isinstance(load_checkpoint(ckpt, device="cpu"), GPT)
    back = GPTClassifier.load(out, device="cpu")
    x, _ = source.collate(source.validation[:4])
    assert back.mode == "lora" and torch.allclose(back(x)[0], model.eval()(x)[0], atol=1e-6)


def test_resuming_the_wrong_kind_of_checkpoint_names_the_problem(tmp_path):
    model, source, cfg = tiny_classifier("head", steps=2)
    train(model, source, cfg, out_dir=tmp_path / "cls", live="off")
    meta = tmp_path / "cls" / find_checkpoint(tmp_path / "cls").name / "classifier.json"
    assert json.loads(meta.read_text(encoding="utf-8"))["labels"] == LABELS
    lm = tmp_path / "lm"
    model.backbone.save(lm)  # a plain language model: no head
    with pytest.raises(ValueError, match="not a classifier"):
        model.load_weights(lm)
    with pytest.raises(FileNotFoundError, match="no classifier checkpoint"):
        GPTClassifier.load(lm)


def test_example_batches_resume_exactly_and_split_ranks():
    examples = list(range(10))

    def collate(xs):
        return torch.tensor(xs), torch.tensor(xs)

    straight = ExampleBatches(examples, collate, 3, seed=1)
    first = [next(straight)[0].tolist() for _ in range(4)]  # 3 per pass (the tail of 1 skipped), then a new pass
    assert sorted(sum(first[:3], [])) == sorted(set(sum(first[:3], []))) and straight.position().epoch == 1
    later = ExampleBatches(examples, collate, 3, seed=1, position=straight.position().to_dict())
    assert [next(later)[0].tolist() for _ in range(3)] == [next(straight)[0].tolist() for _ in range(3)]
    r0, r1 = (ExampleBatches(examples, collate, 2, seed=1, rank=r, world_size=2) for r in (0, 1))
    both = next(r0)[0].tolist() + next(r1)[0].tolist()
    assert both == ExampleBatches(examples, collate, 4, seed=1).order(0)[:4]
    with pytest.raises(ValueError, match="smaller batch_size"):
        ExampleBatches(examples, collate, 11)
