"""`python -m minigpt_helpers chat` end to end, scripted over stdin: replies that stop at the end of the turn,
multi-turn memory, /reset, /quit, and one-line messages for bad input and bad checkpoints."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

import pytest
from tiny_chat import tiny_model

from minigpt_helpers import find_checkpoint
from minigpt_helpers.cli import main


@pytest.fixture(scope="module")
def chat_dir(trained_chat):
    return trained_chat[1]  # tests/conftest.py: a tiny model that answers "hi" with "yo" and "bye" with "ciao", in any turn


def run_chat(checkpoint: Path, stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "minigpt_helpers", "chat", "--checkpoint", str(checkpoint),
                           "--temperature", "0", "--max-new-tokens", "20", "--device", "cpu"],
                          input=stdin, capture_output=True, text=True, encoding="utf-8", timeout=180)


@pytest.mark.slow
def test_a_scripted_conversation(chat_dir):
    proc = run_chat(chat_dir, "hi\nbye\n\n/reset\n   \nhi\n/what\n/quit\nhi\n")
    assert proc.returncode == 0, proc.stderr[-2000:]
    out = proc.stdout
    assert "/reset" in out.splitlines()[0]  # the banner says how to reset and leave
    # each reply is streamed after "assistant> " and ends at the end of its turn, on its own line
    replies = [line.split("assistant> ", 1)[1] for line in out.splitlines() if "assistant> " in line]
    assert replies == ["yo", "ciao", "yo"]  # the last "hi" came after /quit: never answered
    assert out.index("new conversation") < out.rindex("assistant> yo")
    errors = proc.stderr.strip().splitlines()
    assert [e.split(":")[:2] for e in errors] == [["error", " empty message"], ["error", " empty message"],
                                                  ["error", " unknown command /what"]]
    assert all("/reset" in e and "/quit" in e for e in errors)  # each says what to type instead


def test_end_of_input_ends_the_chat(chat_dir, monkeypatch, capsys):
    monkeypatch.setattr("sys.stdin", io.StringIO("bye\n"))  # no /quit: Ctrl-D (end of input) leaves
    assert main(["chat", "--checkpoint", str(find_checkpoint(chat_dir)), "--temperature", "0"]) == 0
    assert "assistant> ciao\n" in capsys.readouterr().out


def test_bad_checkpoints_get_one_line(tmp_path, chat_dir, capsys):
    assert main(["chat", "--checkpoint", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no checkpoint in") and err.count("\n") == 1

    plain = tmp_path / "plain"
    tiny_model().save(plain)  # a text continuer: no chat tokens
    assert main(["chat", "--checkpoint", str(plain)]) == 2
    err = capsys.readouterr().err
    assert "has no chat tokens" in err and "sft(" in err and err.count("\n") == 1

    damaged = tmp_path / "damaged"
    damaged.mkdir()
    for f in find_checkpoint(chat_dir).iterdir():
        if f.is_file():
            data = f.read_bytes()
            (damaged / f.name).write_bytes(data[: len(data) // 2] if f.name == "model.safetensors" else data)
    assert main(["chat", "--checkpoint", str(damaged)]) == 2
    err = capsys.readouterr().err
    assert "damaged" in err and err.count("\n") == 1
