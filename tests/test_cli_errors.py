"""The command line's errors: one line on stderr that names the fix, exit status 2, never a traceback.

Each case runs ``main([...])`` in this process (the real entry point is run in a
subprocess at the end) and checks the whole of stderr, not just the message.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, save_checkpoint, set_seed
from minigpt_helpers.cli import main
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.training.loop import TrainConfig, make_optimizer

TEXT = "".join(f"ROMEO {i}. But soft, what light through yonder window breaks?\n" for i in range(100))


def one_line_error(capsys, argv: list[str]) -> str:
    """Run the CLI; assert exit status 2 and exactly one non-empty stderr line, and return that line."""
    try:
        code = main(argv)
    except SystemExit as e:  # argparse's own way out
        code = e.code
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err, err
    assert code == 2, f"exit status {code}; stderr: {err}"
    assert len(lines) == 1, err
    assert lines[0].startswith("error: "), err
    return lines[0]


@pytest.fixture()
def play(tmp_path):
    path = tmp_path / "play.txt"
    path.write_text(TEXT, encoding="utf-8")
    return path


def train_args(data, out, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--preset", "tiny", "--steps", "1", "--out", str(out), *extra]


# --- bad arguments ------------------------------------------------------------------
BAD_TRAIN_ARGS = [  # the settings of TrainConfig are checked by TrainConfig: its message, under the flag's name
    (["--steps", "-5"], "--steps must be None or an integer >= 1, got -5"),
    (["--steps", "0"], "--steps must be None or an integer >= 1, got 0"),
    (["--steps", "ten"], "--steps must be None or an integer >= 1, got 'ten'"),
    (["--steps", "2.5"], "--steps must be None or an integer >= 1, got 2.5"),
    (["--time-budget", "0"], "--time-budget must be None or a number of seconds > 0, got 0"),
    (["--time-budget", "-3"], "--time-budget must be None or a number of seconds > 0, got -3"),
    (["--batch-size", "0"], "--batch-size must be an integer >= 1, got 0"),
    (["--eval-interval", "0"], "--eval-interval must be an integer >= 1, got 0"),
    (["--checkpoint-every", "0"], "--checkpoint-every must be None (at every evaluation) or an integer >= 1, got 0"),
    (["--grad-accum", "0"], "--grad-accum must be an integer >= 1, got 0"),
    (["--log-interval", "0"], "--log-interval must be an integer >= 1, got 0"),
    (["--lr", "nan"], "--lr must be a finite number > 0, got nan"),
    (["--lr", "-0.001"], "--lr must be a finite number > 0, got -0.001"),
    (["--seed", "-1"], "--seed must be an integer >= 0, got -1"),
    (["--precision", "fp8"], "--precision must be 'auto', 'fp32', 'bf16' or 'fp16', got 'fp8'"),
    (["--vocab-size", "0"], "--vocab-size must be a positive integer, got 0"),
    (["--tokenizer", "words"], "--tokenizer: invalid choice: 'words'"),
    (["--bogus", "1"], "unrecognized arguments: --bogus 1"),
]


@pytest.mark.parametrize(("extra", "message"), [pytest.param(*c, id=" ".join(c[0])) for c in BAD_TRAIN_ARGS])
def test_bad_train_arguments(extra, message, play, tmp_path, capsys):
    line = one_line_error(capsys, train_args(play, tmp_path / "out", *extra))
    assert message in line
    assert not (tmp_path / "out").exists()  # refused before anything was done


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_unavailable_device(play, tmp_path, capsys):
    line = one_line_error(capsys, train_args(play, tmp_path / "out", "--device", "cuda"))
    assert "--device" in line and "'cuda' is not available" in line and "--device cpu" in line
    line = one_line_error(capsys, train_args(play, tmp_path / "out", "--device", "gpu"))
    assert "--device must be 'cpu', 'cuda'" in line


def test_out_that_is_a_file(play, tmp_path, capsys):
    (tmp_path / "taken").write_text("not a folder", encoding="utf-8")
    line = one_line_error(capsys, train_args(play, tmp_path / "taken"))
    assert f"--out must be a folder, but {tmp_path / 'taken'} is a file" in line


def test_missing_required_arguments(play, tmp_path, capsys):
    assert "train needs --out DIR" in one_line_error(capsys, ["train", "--data", str(play)])
    assert "the following arguments are required: --checkpoint" in one_line_error(capsys, ["generate"])
    line = one_line_error(capsys, ["train", "--out", str(tmp_path / "x")])
    assert "train needs --data" in line


# --- bad data ----------------------------------------------------------------------------
BAD_DATA = [  # (file name, bytes or None for "no such file", what the error must say)
    ("missing.txt", None, "not a file, folder or glob"),
    ("empty.txt", b"", "empty data files"),
    ("random.txt", random.Random(0).randbytes(4096), "random.txt is not UTF-8 text"),
    ("zeros.txt", b"\x00" * 512, "zeros.txt is not UTF-8 text: it contains NUL bytes"),
    ("latin1.txt", "Roméo, où es-tu?\n".encode("latin-1") * 50,
     "latin1.txt is not UTF-8 text: the byte at offset 3 (0xe9)"),
    ("broken.jsonl", b'{"text": "fine"}\n{"text": "cut sho', "broken.jsonl, line 2: not valid JSON"),
    ("fields.jsonl", b'{"content": "hello"}\n', "fields.jsonl, line 1: no \"text\" field (its fields: 'content')"),
    ("tiny.txt", b"To be.\n", "fewer than block_size + 1"),
]


@pytest.mark.parametrize(("name", "content", "message"), [pytest.param(*c, id=c[0]) for c in BAD_DATA])
def test_bad_data_files(name, content, message, tmp_path, capsys):
    path = tmp_path / name
    if content is not None:
        path.write_bytes(content)
    line = one_line_error(capsys, train_args(path, tmp_path / "out"))
    assert message in line


# --- damaged checkpoints -----------------------------------------------------------------------
@pytest.fixture()
def run_dir(play, tmp_path):
    """A training folder as `train --out` leaves it: checkpoint, tokenizer, run.json."""
    out = tmp_path / "run"
    tok = CharTokenizer.train([TEXT])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    model.tokenizer = tok
    cfg = TrainConfig(max_steps=2, batch_size=2, eval_interval=1)
    save_checkpoint(out, model, step=2, optimizer=make_optimizer(model, cfg, torch.device("cpu")),
                    trainer={"train_config": cfg.to_dict()})
    tok.save(out / "tokenizer")
    (out / "run.json").write_text(json.dumps({"data": str(play), "tokenizer": "char"}), encoding="utf-8")
    return out


def truncate(file):
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])  # a copy cut short


def mismatch(file):
    config = json.loads(file.read_text(encoding="utf-8"))
    file.write_text(json.dumps(dict(config, n_embd=32)), encoding="utf-8")  # the weights are 16 wide


@pytest.mark.parametrize(("damage", "file", "message"), [
    pytest.param(truncate, "model.safetensors", "cut short", id="truncated-weights"),
    pytest.param(mismatch, "config.json", "does not match", id="config-mismatch"),
])
@pytest.mark.parametrize("command", ["generate", "resume"])
def test_damaged_checkpoint(command, damage, file, message, run_dir, capsys):
    ckpt = run_dir / "ckpt-0000002"
    damage(ckpt / file)
    argv = (["generate", "--checkpoint", str(run_dir), "--max-new-tokens", "3"] if command == "generate"
            else ["train", "--out", str(run_dir), "--resume", "--steps", "3"])
    line = one_line_error(capsys, argv)
    assert message in line and f"delete the folder {ckpt}" in line  # names the checkpoint and the fix


def test_missing_checkpoint(tmp_path, capsys):
    assert "no checkpoint in" in one_line_error(capsys, ["generate", "--checkpoint", str(tmp_path / "none")])


BAD_GENERATE_ARGS = [
    (["--temperature", "-1"], "--temperature must be a number >= 0"),
    (["--temperature", "nan"], "--temperature must be a number >= 0"),
    (["--temperature", "warm"], "--temperature must be a number >= 0"),
    (["--top-k", "0"], "--top-k must be an integer >= 1"),
    (["--top-k", "2.5"], "--top-k must be an integer >= 1"),
    (["--top-p", "0"], "--top-p must be in (0, 1]"),
    (["--top-p", "1.5"], "--top-p must be in (0, 1]"),
    (["--max-new-tokens", "-1"], "--max-new-tokens must be an integer >= 0, got -1"),
]


@pytest.mark.parametrize(("extra", "message"), [pytest.param(*c, id=" ".join(c[0])) for c in BAD_GENERATE_ARGS])
def test_bad_generate_arguments(extra, message, run_dir, capsys):
    line = one_line_error(capsys, ["generate", "--checkpoint", str(run_dir), *extra])
    assert message in line


# --- the real entry point, and the way back to tracebacks ------------------------------------------
def test_debug_variable_gives_the_traceback(tmp_path, monkeypatch):
    monkeypatch.setenv("MINIGPT_DEBUG", "1")
    with pytest.raises(FileNotFoundError, match="not a file, folder or glob"):
        main(train_args(tmp_path / "missing.txt", tmp_path / "out"))


@pytest.mark.slow
def test_entry_point_prints_one_line_and_exits_2(run_dir, tmp_path):
    truncate(run_dir / "ckpt-0000002" / "model.safetensors")
    env = {k: v for k, v in os.environ.items() if k != "MINIGPT_DEBUG"}
    for argv in (train_args(tmp_path / "missing.txt", tmp_path / "out"), ["generate", "--checkpoint", str(run_dir)]):
        proc = subprocess.run([sys.executable, "-m", "minigpt_helpers", *argv], capture_output=True, text=True,
                              encoding="utf-8", env=env, timeout=120)
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
        assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr


@pytest.mark.parametrize("command", ["generate", "chat"])
def test_sampling_flags_are_refused_before_the_model_loads(command, tmp_path, capsys):
    """A bad --top-p is reported as such even when the checkpoint does not exist: checked first."""
    line = one_line_error(capsys, [command, "--checkpoint", str(tmp_path / "none"), "--top-p", "2"])
    assert "--top-p must be in (0, 1]" in line and "no checkpoint" not in line
