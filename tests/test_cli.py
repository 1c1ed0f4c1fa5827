"""The command line end to end on a tiny run: train, checkpoint, resume, generate."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from minigpt_helpers import find_checkpoint, load_checkpoint
from minigpt_helpers.cli import main

TEXT = "".join(f"ROMEO {i}. But soft, what light through yonder window breaks?\n" * 2 for i in range(80))


@pytest.fixture()
def play(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT)
    return path


def test_train_resume_generate(play, tmp_path, capsys):
    out = tmp_path / "run"
    # the real entry point, in a fresh interpreter
    proc = subprocess.run([sys.executable, "-m", "minigpt_helpers", "train", "--data", str(play), "--tokenizer",
                           "char", "--preset", "tiny", "--steps", "6", "--checkpoint-every", "3",
                           "--log-interval", "3", "--out", str(out)], capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "step 3/6 | loss" in proc.stdout and "val loss" in proc.stdout
    assert find_checkpoint(out).name == "ckpt-0000006"
    assert (out / "tokenizer" / "tokenizer.json").is_file()
    # a single text file: first 90 % train, last 10 % validation
    state = json.loads((out / "ckpt-0000006" / "trainer.json").read_text())
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
    with pytest.raises(SystemExit):
        main(["train", "--out", str(tmp_path / "nodata")])  # --data is required for a new run
    assert main(["--list-presets"]) == 0
    assert "cpu:" in capsys.readouterr().out
