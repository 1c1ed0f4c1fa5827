"""The command line end to end on a tiny run: train, checkpoint, resume, generate."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from types import SimpleNamespace

import pytest

import minigpt_helpers.data.sources as data
import minigpt_helpers.model.generation as generation
import minigpt_helpers.training.loop as training
from minigpt_helpers import GPT, GPTConfig, find_checkpoint, load_checkpoint, save_checkpoint, set_seed
from minigpt_helpers.cli import main
from minigpt_helpers.tokenizers.base import CharTokenizer

TEXT = "".join(f"ROMEO {i}. But soft, what light through yonder window breaks?\n" * 2 for i in range(80))


@pytest.fixture()
def play(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


@pytest.mark.slow
def test_train_resume_generate(play, tmp_path, capsys):
    out = tmp_path / "run"
    # the real entry point, in a fresh interpreter
    proc = subprocess.run([sys.executable, "-m", "minigpt_helpers", "train", "--data", str(play), "--tokenizer",
                           "char", "--preset", "tiny", "--steps", "6", "--checkpoint-every", "3",
                           "--log-interval", "3", "--out", str(out)], capture_output=True, text=True, encoding="utf-8",
                          timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3/6 | loss" in proc.stdout and "val loss" in proc.stdout
    assert find_checkpoint(out).name == "ckpt-0000006"
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    # a single text file: first 90 % train, last 10 % validation
    state = json.loads((out / "ckpt-0000006" / "trainer.json").read_text(encoding="utf-8"))
    assert state["step"] == 6 and len(state["history"]["losses"]) == 6

    # --resume continues from the checkpoint (and says from which step), with more steps
    assert main(["train", "--out", str(out), "--resume", "--steps", "9", "--log-interval", "3"]) == 0
    said = capsys.readouterr().out
    assert "continuing" in said and "from step 6" in said and "step 9/9" in said
    assert find_checkpoint(out).name == "ckpt-0000009"
    model = load_checkpoint(out, device="cpu")
    assert model.tokenizer is not None and model.config.block_size == 32

    assert main(["generate", "--checkpoint", str(out), "--prompt", "ROMEO", "--max-new-tokens", "20",
                 "--seed", "0"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("ROMEO") and len(text.strip()) > len("ROMEO")


def test_time_budget_and_errors(play, tmp_path, capsys):
    out = tmp_path / "timed"
    assert main(["train", "--data", str(play), "--preset", "tiny", "--time-budget", "1", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert "1 s budget" in said and "time budget at step" in said
    # the tokenizer line counts the characters it really read: the file's training split, not the cap
    read = int(re.search(r"tokenizer: trained .* on ([\d,]+) characters of the training split", said)[1].replace(",", ""))
    assert 0.8 * len(TEXT) <= read < len(TEXT)
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "nodata")])  # --data is required for a new run
    assert main(["--list-presets"]) == 0
    assert "cpu:" in capsys.readouterr().out
    assert main(["train", "--list-presets"]) == 0  # as the README writes it: no --out needed
    assert "tiny:" in capsys.readouterr().out


@pytest.fixture()
def checkpoint(tmp_path):
    """A small saved model with its tokenizer (no training needed to test generation)."""
    tok = CharTokenizer.train([TEXT])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=1, n_head=2, n_embd=16))
    model.tokenizer = tok
    return save_checkpoint(tmp_path / "saved", model, step=1)


@pytest.fixture()
def generate_calls(monkeypatch):
    """Every call the CLI makes to generate(), with its keyword arguments."""
    calls = []
    real = generation.generate

    def spy(model, prompt="", **kwargs):
        calls.append(kwargs)
        return real(model, prompt, **kwargs)

    monkeypatch.setattr(generation, "generate", spy)
    return calls


def test_generate_offers_top_p_and_streaming(checkpoint, generate_calls, capsys):
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "ROMEO", "--max-new-tokens", "30",
            "--seed", "3", "--top-p", "0.9", "--top-k", "20", "--temperature", "1.0"]
    assert main(args + ["--no-stream"]) == 0
    whole = capsys.readouterr().out
    assert main(args + ["--stream"]) == 0
    streamed = capsys.readouterr().out
    assert [c.get("stream", False) for c in generate_calls] == [False, True]
    assert all(c["top_p"] == 0.9 and c["top_k"] == 20 for c in generate_calls)
    assert streamed == whole and whole.startswith("ROMEO") and whole.endswith("\n")  # same text, one newline


def test_generate_streams_to_a_terminal_by_default(checkpoint, generate_calls, capsys, monkeypatch):
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "ROMEO", "--max-new-tokens", "5", "--seed", "0"]
    assert main(args) == 0  # captured output: not a terminal, all at once
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    assert main(args) == 0
    assert [c.get("stream", False) for c in generate_calls] == [False, True]
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[0] == out[1]


def test_generate_stops_at_endoftext_unless_told(checkpoint, generate_calls):
    args = ["generate", "--checkpoint", str(checkpoint), "--prompt", "ROMEO", "--max-new-tokens", "5", "--seed", "0"]
    assert main(args) == 0
    assert main(args + ["--no-stop-at-eot"]) == 0
    assert main(args + ["--stop-at-eot"]) == 0
    assert [c["stop_at_eot"] for c in generate_calls] == [True, False, True]


@pytest.fixture()
def tiny_shakespeare(tmp_path, monkeypatch):
    """A two-play stand-in for the offline corpus (fast to tokenize)."""
    corpus = tmp_path / "shakespeare"
    corpus.mkdir()
    for name in ("romeo", "hamlet"):
        scenes = "".join(f"SCENE {i}. A street.\n\n{TEXT[:800]}\n" for i in range(1, 6))
        (corpus / f"{name}_gut.txt").write_text(f"ACT I.\n\n{scenes}", encoding="utf-8")
    monkeypatch.setenv("MINIGPT_SHAKESPEARE_DIR", str(corpus))
    return corpus


def test_run_records_what_auto_chose_and_resume_keeps_it(tiny_shakespeare, tmp_path, monkeypatch):
    """--data auto without a network is Shakespeare; a --resume once the network is back must not
    switch to RedPajama half-way through (nor retrain the tokenizer on other text)."""
    seen = []

    def fake_train(model, data_source, cfg, *, out_dir, resume, live):  # records the data; saves a checkpoint
        seen.append(data_source)
        optimizer = training.make_optimizer(model, cfg, model.device)
        path = save_checkpoint(out_dir, model, step=len(seen), optimizer=optimizer,
                               trainer={"train_config": cfg.to_dict()})
        return SimpleNamespace(final_val_loss=None, stop_reason="done", step=len(seen), checkpoint=path)

    monkeypatch.setattr(training, "train", fake_train)
    out = tmp_path / "run"
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (False, "no network (test)"))
    assert main(["train", "--data", "auto", "--preset", "tiny", "--steps", "1", "--out", str(out)]) == 0
    run = json.loads((out / "run.json").read_text(encoding="utf-8"))
    assert run == {"data": "shakespeare", "tokenizer": "char", "tokenizer_data": "shakespeare"}
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (True, "the Hub is back (test)"))
    assert main(["train", "--out", str(out), "--resume", "--steps", "2"]) == 0
    assert seen == ["shakespeare", "shakespeare"]
    assert json.loads((out / "run.json").read_text(encoding="utf-8")) == run


def test_the_cli_closes_its_process_group_before_it_returns(capsys):
    """A launched run must not leave its gloo group to the interpreter's teardown, which can abort
    a finished process with SIGABRT ("terminate called without an active exception")."""
    import torch.distributed as dist

    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        with pytest.raises(SystemExit):
            main(["--help"])
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
