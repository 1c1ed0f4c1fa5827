"""Experiment trackers: train(log_with="tensorboard") writes what it trained, read back with TensorBoard's own reader;
the trackers are finished on a stop and on an error; bad names and missing packages are refused up front (CLI too)."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import fields

import numpy as np
import pytest
import yaml

pytest.importorskip("tensorboard")

from accelerate.tracking import TensorBoardTracker  # noqa: E402
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator  # noqa: E402

import minigpt_helpers.training.trackers as trackers  # noqa: E402
from minigpt_helpers import GPT, GPTConfig, TrainConfig, find_checkpoint, set_seed, train  # noqa: E402
from minigpt_helpers.cli import main  # noqa: E402
from minigpt_helpers.config import artifacts_dir  # noqa: E402
from minigpt_helpers.tokenizers.base import CharTokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TEXT = "".join(f"Scene {i}. To be, or not to be, that is the question.\n" for i in range(120))  # ~7 KB


@pytest.fixture(autouse=True)
def offline_trackers(monkeypatch):
    """wandb and trackio count as not installed, so no test can start one (they would reach the network)."""
    monkeypatch.setenv("WANDB_MODE", "disabled")
    monkeypatch.setitem(trackers.INSTALLED, "wandb", lambda: False)
    monkeypatch.setitem(trackers.INSTALLED, "trackio", lambda: False)


@pytest.fixture
def finished(monkeypatch):
    """The TensorBoard trackers whose finish() ran, recorded as they finish."""
    done = []
    original = TensorBoardTracker.finish

    def finish(self):
        done.append(self)
        return original(self)

    monkeypatch.setattr(TensorBoardTracker, "finish", finish)
    return done


def tiny_model():
    tok = CharTokenizer.train([TEXT])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.tokenizer = tok
    return model


def tiny_config(**over) -> TrainConfig:
    kw = dict(batch_size=4, max_steps=5, warmup_steps=1, eval_interval=2, eval_windows=8, shuffle_windows=16,
              data_workers=0, device="cpu", seed=0, log_with="tensorboard")
    return TrainConfig(**{**kw, **over})


def run_train(cfg: TrainConfig, **kw):
    return train(tiny_model(), [TEXT[:6000]], cfg, val_data=[TEXT[6000:]], live="off", **kw)


def scalars(folder, tag: str) -> dict[int, float]:
    events = EventAccumulator(str(folder))
    events.Reload()
    return {e.step: e.value for e in events.Scalars(tag)} if tag in events.Tags()["scalars"] else {}


def as_float32(values) -> list[float]:
    """What TensorBoard stores of each number: its float32."""
    return [float(np.float32(v)) for v in values]


def test_tensorboard_holds_the_run(tmp_path, finished):
    out = tmp_path / "shk"
    cfg = tiny_config()
    result = run_train(cfg, out_dir=out)
    logs = out / "runs" / "shk"  # out_dir/runs/<run_name>; run_name defaults to the out_dir's name
    h = result.history

    train_loss = scalars(logs, "train/loss")
    assert list(train_loss) == h.steps == [1, 2, 3, 4, 5]
    assert list(train_loss.values()) == as_float32(h.losses)
    assert list(scalars(logs, "train/lr").values()) == as_float32(h.lrs)
    assert all(v > 0 for v in scalars(logs, "train/tokens_per_s").values())
    val_loss = scalars(logs, "val/loss")
    assert list(val_loss) == h.val_steps == [0, 2, 4, 5]
    assert list(val_loss.values()) == as_float32(h.val_losses)

    # the hyperparameters, once: both configs as one flat dict
    saved = list(logs.rglob("hparams.yml"))
    assert len(saved) == 1
    values = yaml.safe_load(saved[0].read_text(encoding="utf-8"))
    assert values == trackers.hyperparameters(cfg, result.model.config)
    assert values["train/lr"] == cfg.lr and values["model/n_embd"] == 32 and values["train/log_with"] == "tensorboard"
    assert len([d for d in logs.iterdir() if d.is_dir() and any(d.glob("events.out.tfevents.*"))]) == 1

    # finished once, and really closed
    assert len(finished) == 1 and finished[0].writer.all_writers is None


def test_a_resumed_run_continues_its_curves(tmp_path):
    out = tmp_path / "run"
    run_train(tiny_config(max_steps=3), out_dir=out)
    result = run_train(tiny_config(max_steps=5), out_dir=out, resume=True)
    assert result.step == 5
    assert list(scalars(out / "runs" / "run", "train/loss")) == [1, 2, 3, 4, 5]


def test_finished_when_a_callback_stops_training(finished):
    cfg = tiny_config(max_steps=50, run_name="stopped")
    result = run_train(cfg, callback=lambda info: info["step"] == 2)
    assert result.stop_reason == "callback" and result.step == 2
    assert len(finished) == 1 and finished[0].writer.all_writers is None
    logs = artifacts_dir("runs") / "stopped"  # no out_dir: artifacts/runs/<run_name>
    assert list(scalars(logs, "train/loss")) == [1, 2]
    assert list(scalars(logs, "val/loss")) == [0, 2]  # the stop is evaluated


def test_finished_when_a_signal_stops_training(tmp_path, finished):
    def terminate(info):
        if info["step"] == 2:
            os.kill(os.getpid(), signal.SIGTERM)  # as Slurm or a preempted machine would

    result = run_train(tiny_config(max_steps=50), out_dir=tmp_path / "term", callback=terminate)
    assert result.stop_reason == "interrupted" and result.step == 2
    assert len(finished) == 1 and finished[0].writer.all_writers is None
    assert list(scalars(tmp_path / "term" / "runs" / "term", "train/loss")) == [1, 2]


def test_finished_when_training_raises(tmp_path, finished):
    def fail(info):
        if info["step"] == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        run_train(tiny_config(max_steps=50), out_dir=tmp_path / "err", callback=fail)
    assert len(finished) == 1 and finished[0].writer.all_writers is None
    assert list(scalars(tmp_path / "err" / "runs" / "err", "train/loss")) == [1, 2, 3]


def test_bad_names_are_refused_with_the_choices():
    for bad in ("tensorbord", ["tensorboard", "mlflow"], 3):
        with pytest.raises(ValueError, match=r"log_with must be None, 'tensorboard', 'trackio', 'wandb' or a list"):
            TrainConfig(log_with=bad)
    with pytest.raises(ValueError, match="run_name must be"):
        TrainConfig(run_name="a/b")
    with pytest.raises(ValueError, match="project must be"):
        TrainConfig(project="")
    # a config saved before these fields existed loads with their defaults
    old = {k: v for k, v in TrainConfig().to_dict().items() if k not in ("log_with", "project", "run_name")}
    loaded = TrainConfig.from_dict(old)
    assert (loaded.log_with, loaded.project, loaded.run_name) == (None, "minigpt", None)


def test_a_missing_package_is_named_before_training(tmp_path, monkeypatch):
    monkeypatch.setitem(trackers.INSTALLED, "tensorboard", lambda: False)
    calls = []
    with pytest.raises(ModuleNotFoundError, match="pip install tensorboard"):
        run_train(tiny_config(), out_dir=tmp_path / "never", callback=calls.append)
    assert calls == [] and not (tmp_path / "never").exists()
    with pytest.raises(ModuleNotFoundError, match="pip install wandb"):
        run_train(tiny_config(log_with=["wandb"]), out_dir=tmp_path / "never")


def test_hyperparameters_are_flat_and_storable():
    cfg = TrainConfig(log_with=["tensorboard", "wandb"], max_steps=None, time_budget_s=60)
    model = GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=32)
    values = trackers.hyperparameters(cfg, model)
    assert values["train/log_with"] == "['tensorboard', 'wandb']"  # a list, as text
    assert values["train/max_steps"] is None and values["model/vocab_size"] == 65
    assert set(values) == {f"train/{k}" for k in cfg.to_dict()} | {f"model/{f.name}" for f in fields(model)}
    assert all(v is None or isinstance(v, (bool, int, float, str)) for v in values.values())


@pytest.fixture()
def play(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def test_cli_log_with_round_trip(play, tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["train", "--data", str(play), "--preset", "tiny", "--steps", "2", "--eval-interval", "2",
                 "--device", "cpu", "--log-with", "tensorboard", "--run-name", "first", "--out", str(out)]) == 0
    logs = out / "runs" / "first"
    assert list(scalars(logs, "train/loss")) == [1, 2] and list(scalars(logs, "val/loss")) == [0, 2]
    state = json.loads((find_checkpoint(out) / "trainer.json").read_text(encoding="utf-8"))
    assert state["train_config"]["log_with"] == ["tensorboard"] and state["train_config"]["run_name"] == "first"
    # resumed with --log-with none: no trackers, and the saved setting is off
    assert main(["train", "--out", str(out), "--resume", "--steps", "3", "--log-with", "none"]) == 0
    state = json.loads((find_checkpoint(out) / "trainer.json").read_text(encoding="utf-8"))
    assert state["step"] == 3 and state["train_config"]["log_with"] is None
    assert list(scalars(logs, "train/loss")) == [1, 2]
    capsys.readouterr()


@pytest.mark.parametrize("flags, message", [
    (["--log-with", "tensorbord"], "error: --log-with must be None, 'tensorboard', 'trackio', 'wandb' or a list"),
    (["--log-with", "tensorboard", "--log-with", "mlflow"], "error: --log-with must be"),
    (["--run-name", "a/b"], "error: --run-name must be"),
    (["--log-with", "wandb"], "error: log_with=['wandb'] needs wandb, which is not installed: pip install wandb"),
])
def test_cli_refuses_bad_trackers_in_one_line(flags, message, play, tmp_path, capsys):
    out = tmp_path / "bad"
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--data", str(play), "--preset", "tiny", "--out", str(out), *flags])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(message) and err.count("\n") == 1
    assert not out.exists()  # refused before anything was made
