"""train(): schedule, optimizer groups, exact resume after kill -9, Ctrl-C and SIGTERM, NaN stop, time budget,
settings validation, saving on errors, compiled models, the recorded data source."""

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
from safetensors.torch import load_file
from torch.optim.optimizer import register_optimizer_step_post_hook

from minigpt_helpers import GPT, GPTConfig, TrainConfig, find_checkpoint, lr_at, param_groups, set_seed, train
from minigpt_helpers.tokenizers.base import CharTokenizer

DOCS = [f"Scene {i}. " + "To be, or not to be, that is the question. " * (3 + i % 4) for i in range(30)]
EXTRA = "Whether tis nobler in the mind to suffer"
VAL = ["Scene 99. " + "To be, or not to be, that is the question. " * 4]


def tiny_run(steps: int = 8, dropout: float = 0.0, **over):
    """A model and config small enough to train in a second (also used by the kill subprocess)."""
    tok = CharTokenizer.train(DOCS + VAL + [EXTRA])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False,
                          dropout=dropout))
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


@pytest.mark.slow
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
    state = json.loads((r.checkpoint / "trainer.json").read_text(encoding="utf-8"))
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


# ------------------------------------------------------------------------------ settings, stops, crashes
@pytest.mark.parametrize("field,value", [
    ("eval_interval", 0), ("batch_size", 0), ("grad_accum", -1), ("max_steps", -5), ("max_steps", 2.5),
    ("time_budget_s", 0), ("time_budget_s", float("inf")), ("lr", float("nan")), ("lr", -1e-3),
    ("min_lr", -1e-5), ("warmup_steps", -1), ("weight_decay", float("nan")), ("beta1", 1.0), ("beta2", -0.1),
    ("grad_clip", -1.0), ("eval_windows", 0), ("checkpoint_every", 0), ("log_interval", 0),
    ("shuffle_windows", 0), ("seed", -1), ("device", "gpu9"), ("precision", "int8"), ("compile", "yes"),
    ("num_threads", 0), ("batch_size", True),
])
def test_every_setting_is_validated(field, value):
    with pytest.raises(ValueError, match=f"TrainConfig.{field} must be"):
        TrainConfig(**{field: value})


def test_throughput_mfu_is_per_device():
    from minigpt_helpers.training.loop import throughput

    # 2 ranks x 1000 tokens in 1 s: 2000 tok/s overall, but each device did 1000 tokens' work
    tok_s, mfu = throughput(2000, 1.0, world=2, flops_per_token=6e6, peak_per_device=1e12)
    assert tok_s == 2000
    assert mfu == pytest.approx(1000 * 6e6 / 1e12)
    assert throughput(2000, 1.0, world=2, flops_per_token=6e6, peak_per_device=None)[1] is None


SIGTERM_SCRIPT = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from test_training import tiny_run, DOCS, VAL
from minigpt_helpers import train
model, cfg = tiny_run(steps=50)
def term(info):
    if info["step"] == 3:
        os.kill(os.getpid(), signal.SIGTERM)  # what Slurm, torchrun or a preempted VM sends
r = train(model, DOCS, cfg, val_data=VAL, out_dir={out!r}, live="off", callback=term)
print("stopped", r.stop_reason, r.step)
"""


@pytest.mark.slow
def test_sigterm_finishes_the_step_saves_and_exits_0(tmp_path):
    code = SIGTERM_SCRIPT.format(tests=str(Path(__file__).parent), out=str(tmp_path))
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "stopped interrupted 3" in proc.stdout
    assert find_checkpoint(tmp_path).name == "ckpt-0000003"


def _weights_after_each_step(steps: int) -> list[dict[str, torch.Tensor]]:
    model, cfg = tiny_run(steps=steps)
    seen: list[dict[str, torch.Tensor]] = []
    train(model, DOCS, cfg, val_data=VAL, live="off",
          callback=lambda info: seen.append({k: v.clone() for k, v in info["model"].state_dict().items()}))
    return seen


def test_second_ctrl_c_never_saves_a_half_counted_step(tmp_path):
    # Two Ctrl-C right after optimizer.step() of step 3, before train() has counted the step:
    # the checkpoint must hold step 3 *and* the weights after 3 updates, never 2 with 3's weights.
    expected = _weights_after_each_step(3)[2]
    model, cfg = tiny_run(steps=50)
    calls = []

    def after_update(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGINT)

    handle = register_optimizer_step_post_hook(after_update)
    try:
        r = train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off")
    finally:
        handle.remove()
    assert r.stop_reason == "interrupted" and r.step == 3
    ckpt = find_checkpoint(tmp_path)
    assert json.loads((ckpt / "trainer.json").read_text(encoding="utf-8"))["step"] == 3
    saved = load_file(str(ckpt / "model.safetensors"))
    for k, v in expected.items():
        if k in saved:
            assert torch.equal(saved[k], v), k


@pytest.mark.slow
def test_checkpoint_at_every_evaluation_by_default(tmp_path):
    model, cfg = tiny_run(steps=12, eval_interval=4)
    assert cfg.checkpoint_every is None
    found = {}

    def look(info):
        found[info["step"]] = find_checkpoint(tmp_path)

    train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=look)
    assert found[3] is None and found[4].name == "ckpt-0000004" and found[7].name == "ckpt-0000004"
    assert found[9].name == "ckpt-0000008"  # a crash now would lose at most eval_interval steps


@pytest.mark.slow
def test_an_error_saves_the_last_complete_step_and_names_it(tmp_path):
    model, cfg = tiny_run(steps=50)

    def boom(info):
        if info["step"] == 3:
            raise RuntimeError("a data error")

    with pytest.raises(RuntimeError, match="a data error") as err:
        train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=boom)
    assert find_checkpoint(tmp_path).name == "ckpt-0000003"
    assert any("ckpt-0000003" in note for note in getattr(err.value, "__notes__", [])) or sys.version_info < (3, 11)


@pytest.mark.slow
def test_out_of_memory_names_the_fix_and_a_half_update_is_never_saved(tmp_path, capsys):
    model, cfg = tiny_run(steps=50, checkpoint_every=2)
    calls = []

    def oom_in_update(optimizer, args, kwargs):  # after optimizer.step() of step 3: weights half-way
        calls.append(1)
        if len(calls) == 3:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    handle = register_optimizer_step_post_hook(oom_in_update)
    try:
        with pytest.raises(torch.cuda.OutOfMemoryError):
            train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="log")
    finally:
        handle.remove()
    said = capsys.readouterr().out
    assert "--batch-size" in said and "--grad-accum" in said
    assert "nothing was saved" in said
    assert find_checkpoint(tmp_path).name == "ckpt-0000002"  # the last consistent one, untouched


@pytest.mark.slow
def test_a_compiled_model_trains_saves_and_resumes_without_compiling_twice(tmp_path, monkeypatch):
    straight, cfg = tiny_run(steps=6, checkpoint_every=3)
    train(straight, DOCS, cfg, val_data=VAL, live="off")

    compiles = []
    real_compile = torch.compile
    monkeypatch.setattr(torch, "compile", lambda m, **kw: compiles.append(1) or real_compile(m, **kw))
    model, cfg = tiny_run(steps=6, checkpoint_every=3, compile=True)
    wrapped = real_compile(model, backend="eager")
    stop_at_3 = lambda info: info["step"] == 3  # noqa: E731
    r = train(wrapped, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=stop_at_3)
    assert r.model is model and r.step == 3 and compiles == []  # the user's wrapper runs the steps
    assert all(not k.startswith("_orig_mod") for k in load_file(str(find_checkpoint(tmp_path) / "model.safetensors")))

    model2, cfg2 = tiny_run(steps=6, checkpoint_every=3, compile=False)
    r2 = train(real_compile(model2, backend="eager"), DOCS, cfg2, val_data=VAL, out_dir=tmp_path, resume=True,
               live="off")
    assert r2.step == 6
    for a, b in zip(straight.state_dict().values(), model2.state_dict().values()):
        assert torch.equal(a, b)


def test_auto_source_is_recorded_and_kept_on_resume(tmp_path, monkeypatch):
    import minigpt_helpers.data.sources as data

    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (False, "offline in this test"))
    tok = CharTokenizer.train(DOCS, unk=True)
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.tokenizer = tok
    cfg = TrainConfig(batch_size=4, max_steps=2, warmup_steps=1, eval_interval=2, eval_windows=4,
                      shuffle_windows=8, device="cpu")
    r = train(model, "auto", cfg, out_dir=tmp_path, live="off")
    assert json.loads((r.checkpoint / "trainer.json").read_text(encoding="utf-8"))["data_source"] == "shakespeare"

    asked = []
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: asked.append(1) or (True, "the network is back"))
    cfg3 = TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 3})
    r3 = train(model, "auto", cfg3, out_dir=tmp_path, resume=True, live="off")
    assert r3.step == 3 and asked == []  # no probe, no RedPajama: the run keeps reading Shakespeare
    assert json.loads((r3.checkpoint / "trainer.json").read_text(encoding="utf-8"))["data_source"] == "shakespeare"


@pytest.mark.slow
def test_text_files_train_from_seekable_pieces_and_resume_exactly(tmp_path):
    from minigpt_helpers.data.textfiles import TextFilePieces
    from minigpt_helpers.training.loop import _docs_from

    text = "".join(f"Line {i}: to be, or not to be, that is the question.\n" for i in range(3000))
    (tmp_path / "play.txt").write_text(text, encoding="utf-8")
    assert isinstance(_docs_from(str(tmp_path / "play.txt"), "train", 0, shuffle=True), TextFilePieces)
    straight, cfg = tiny_run(steps=8, checkpoint_every=4)
    straight.tokenizer = CharTokenizer.train([text])
    model, cfg = tiny_run(steps=8, checkpoint_every=4)
    model.tokenizer = straight.tokenizer
    a = train(straight, str(tmp_path / "play.txt"), cfg, live="off")
    train(model, str(tmp_path / "play.txt"), cfg, out_dir=tmp_path / "run", live="off",
          callback=lambda info: info["step"] == 5)  # stops after step 5, with a checkpoint there
    model2, _ = tiny_run(steps=8, checkpoint_every=4)
    model2.tokenizer = straight.tokenizer
    b = train(model2, str(tmp_path / "play.txt"), cfg, out_dir=tmp_path / "run", resume=True, live="off")
    assert b.history.losses == a.history.losses


def test_num_threads_holds_for_the_call_only():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        model, cfg = tiny_run(steps=2, num_threads=1, data_workers=0)
        seen = []
        train(model, DOCS, cfg, val_data=VAL, live="off", callback=lambda info: seen.append(torch.get_num_threads()))
        assert seen == [1, 1]  # the setting applies during training ...
        assert torch.get_num_threads() == 2  # ... and the process gets its own count back

        def boom(info):
            raise RuntimeError("a data error")

        model, cfg = tiny_run(steps=2, num_threads=1, data_workers=0)
        with pytest.raises(RuntimeError, match="a data error"):
            train(model, DOCS, cfg, val_data=VAL, live="off", callback=boom)
        assert torch.get_num_threads() == 2  # also when training raises
    finally:
        torch.set_num_threads(before)


def test_a_checkpoint_holding_rng_files_resumes_exactly(tmp_path):
    # A checkpoint may hold RNG states (rng.safetensors and trainer.json's "rng"), which a resume
    # never needs: every step re-seeds from (seed, rank, step). Such a checkpoint resumes exactly.
    import random

    import numpy as np
    from safetensors.torch import save_file

    straight, cfg = tiny_run(steps=8, checkpoint_every=4, dropout=0.1)  # dropout: randomness to resume
    a = train(straight, DOCS, cfg, val_data=VAL, live="off")
    model, cfg = tiny_run(steps=8, checkpoint_every=4, dropout=0.1)
    train(model, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=lambda info: info["step"] == 4)
    ckpt = find_checkpoint(tmp_path)
    assert ckpt.name == "ckpt-0000004" and not (ckpt / "rng.safetensors").exists()
    state = json.loads((ckpt / "trainer.json").read_text(encoding="utf-8"))
    assert "rng" not in state
    save_file({"torch": torch.get_rng_state()}, str(ckpt / "rng.safetensors"))  # what they wrote
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state["rng"] = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                    "python": [version, list(py_state), py_gauss]}
    (ckpt / "trainer.json").write_text(json.dumps(state), encoding="utf-8")

    model2, cfg2 = tiny_run(steps=8, checkpoint_every=4, dropout=0.1)
    b = train(model2, DOCS, cfg2, val_data=VAL, out_dir=tmp_path, resume=True, live="off")
    assert b.step == 8 and b.history.losses == a.history.losses  # bit for bit, dropout masks included
    assert not (b.checkpoint / "rng.safetensors").exists()
