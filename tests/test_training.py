"""train(): schedule, optimizer groups, exact resume after kill -9, Ctrl-C, NaN stop, time budget."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, TrainConfig, find_checkpoint, lr_at, param_groups, set_seed, train
from minigpt_helpers.tokenizer import CharTokenizer

DOCS = [f"Scene {i}. " + "To be, or not to be, that is the question. " * (3 + i % 4) for i in range(30)]
EXTRA = "Whether tis nobler in the mind to suffer"
VAL = ["Scene 99. " + "To be, or not to be, that is the question. " * 4]


def tiny_run(steps: int = 8, **over):
    """A model and config small enough to train in a second (also used by the kill subprocess)."""
    tok = CharTokenizer.train(DOCS + VAL + [EXTRA])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.tokenizer = tok
    kw = dict(batch_size=4, max_steps=steps, warmup_steps=2, lr=3e-3, min_lr=3e-4, eval_interval=4,
              eval_windows=8, shuffle_windows=16, device="cpu")
    kw.update(over)
    return model, TrainConfig(**kw)


def test_lr_schedule_values():
    cfg = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=100, max_steps=2100)
    assert lr_at(0, cfg) == pytest.approx(1e-3 / 101)
    assert lr_at(99, cfg) == pytest.approx(1e-3 * 100 / 101)
    assert lr_at(100, cfg) == pytest.approx(1e-3)  # peak right after warmup
    assert lr_at(1100, cfg) == pytest.approx((1e-3 + 1e-4) / 2)  # half way down the cosine
    assert lr_at(2100, cfg) == pytest.approx(1e-4)
    assert lr_at(5000, cfg) == pytest.approx(1e-4)  # stays at the floor
    after = [lr_at(s, cfg) for s in range(100, 2101, 50)]
    assert all(a >= b for a, b in zip(after, after[1:]))
    timed = TrainConfig(lr=1e-3, min_lr=1e-4, warmup_steps=10, max_steps=None, time_budget_s=60)
    assert lr_at(500, timed, progress=0.5) == pytest.approx(5.5e-4)
    with pytest.raises(ValueError, match="progress"):
        lr_at(500, timed)


def test_config_errors_name_the_fix():
    with pytest.raises(ValueError, match="max_steps or time_budget_s"):
        TrainConfig(max_steps=None)
    model, cfg = tiny_run()
    model.tokenizer = None
    with pytest.raises(ValueError, match="model.tokenizer"):
        train(model, DOCS, cfg, live="off")


def test_param_groups_decay_only_linear_weights():
    model, _ = tiny_run()
    decay, other = param_groups(model, 0.1)
    assert decay["weight_decay"] == 0.1 and other["weight_decay"] == 0.0
    ids = lambda ps: {id(p) for p in ps}  # noqa: E731
    assert id(model.transformer.wte.weight) in ids(other["params"])  # embedding (tied to lm_head)
    assert id(model.transformer.wpe.weight) in ids(other["params"])
    assert id(model.transformer.h[0].mlp.c_fc.weight) in ids(decay["params"])
    assert all(p.dim() >= 2 for p in decay["params"])
    assert len(decay["params"]) + len(other["params"]) == len(list(model.parameters()))


def test_training_learns_and_records_history():
    model, cfg = tiny_run(steps=30, eval_interval=10)
    r = train(model, DOCS, cfg, val_data=VAL, live="off")
    h = r.history
    assert r.stop_reason == "done" and r.step == 30 and h.steps == list(range(1, 31))
    assert h.val_steps == [0, 10, 20, 30]
    assert h.val_losses[0] == pytest.approx(math.log(model.config.vocab_size), abs=0.3)  # untrained ~ ln V
    assert h.val_losses[-1] < h.val_losses[0] - 0.8
    assert r.tokens == 30 * 4 * 16 and r.train_time_s > 0
    assert not model.training


KILL_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_training import tiny_run, DOCS, VAL
from minigpt_helpers import train
model, cfg = tiny_run(steps=8, checkpoint_every=4)
def die(info):
    if info["step"] == 6:  # two steps after the checkpoint at 4: that work is lost
        os.kill(os.getpid(), signal.SIGKILL)
train(model, DOCS, cfg, val_data=VAL, out_dir={out!r}, live="off", callback=die)
"""


def test_exact_resume_after_kill_9(tmp_path):
    model, cfg = tiny_run(steps=8, checkpoint_every=4)
    straight = train(model, DOCS, cfg, val_data=VAL, live="off")

    out = tmp_path / "run"
    code = KILL_SCRIPT.format(tests=str(Path(__file__).parent), out=str(out))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert find_checkpoint(out).name == "ckpt-0000004"

    model2, cfg2 = tiny_run(steps=8, checkpoint_every=4)
    resumed = train(model2, DOCS, cfg2, val_data=VAL, out_dir=out, resume=True, live="off")
    assert resumed.step == 8
    assert resumed.history.steps == straight.history.steps
    assert resumed.history.losses == straight.history.losses  # bit for bit on CPU
    assert resumed.history.val_losses == straight.history.val_losses
    for a, b in zip(model.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_ctrl_c_stops_cleanly_with_checkpoint(tmp_path):
    model, cfg = tiny_run(steps=50)

    def press_ctrl_c(info):
        if info["step"] == 3:
            os.kill(os.getpid(), signal.SIGINT)

    r = train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=press_ctrl_c)
    assert r.stop_reason == "interrupted" and r.step == 3 and len(r.history.losses) == 3
    assert r.checkpoint is not None and find_checkpoint(tmp_path).name == "ckpt-0000003"
    state = json.loads((r.checkpoint / "trainer.json").read_text())
    assert state["step"] == 3 and len(state["history"]["losses"]) == 3


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
    model, cfg = tiny_run(steps=20, checkpoint_every=2)

    def poison(info):
        if info["step"] == 5:
            with torch.no_grad():
                info["model"].transformer.ln_f.weight.fill_(float("nan"))

    r = train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="log", callback=poison)
    assert r.stop_reason == "non-finite loss" and r.step == 5
    assert find_checkpoint(tmp_path).name == "ckpt-0000004"  # not overwritten with NaN weights
    assert "loss is nan" in capsys.readouterr().out


def test_time_budget_stops_and_schedule_spans_it():
    model, cfg = tiny_run(max_steps=None, time_budget_s=1.5, warmup_steps=1)
    r = train(model, DOCS, cfg, live="off")
    assert r.stop_reason == "time budget" and r.step > 3
    assert r.history.lrs[-1] < cfg.lr * 0.9  # the cosine decayed over the budget
