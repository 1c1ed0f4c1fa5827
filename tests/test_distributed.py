"""Data parallel: the CLI under `accelerate launch` with 2 CPU processes (gloo) vs 1 process.

Two processes with batch B each must train like one process with batch 2B:
same batches (each rank takes its half of every global batch), gradients
averaged by DDP, so the same updates up to floating-point summation order. The
run itself checks that the two replicas end bit-identical.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigpt_helpers import find_checkpoint
from minigpt_helpers.cli import main

TEXT = "".join(f"Scene {i}. To be, or not to be, that is the question.\n" * 3 for i in range(60))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _args(data: Path, out: Path, batch: int) -> list[str]:
    return ["train", "--data", str(data), "--tokenizer", "char", "--preset", "tiny", "--steps", "4",
            "--batch-size", str(batch), "--eval-interval", "2", "--device", "cpu", "--out", str(out)]


@pytest.mark.skipif(shutil.which("accelerate", path=str(Path(sys.executable).parent)) is None
                    and shutil.which("accelerate") is None, reason="accelerate CLI not installed")
def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT)
    accelerate = shutil.which("accelerate", path=str(Path(sys.executable).parent)) or shutil.which("accelerate")
    # --multi_gpu is how accelerate starts several local processes; without GPUs they use gloo on CPU.
    cmd = [accelerate, "launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_free_port()),
           "-m", "minigpt_helpers", *_args(data, tmp_path / "ddp", batch=4)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 process(es)" in proc.stdout
    assert "2 replicas identical: yes" in proc.stdout
    assert proc.stdout.count("val loss") < 10  # only rank 0 logs

    assert main(_args(data, tmp_path / "single", batch=8)) == 0
    ddp, single = find_checkpoint(tmp_path / "ddp"), find_checkpoint(tmp_path / "single")
    a, b = load_file(str(ddp / "model.safetensors")), load_file(str(single / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    ha = json.loads((ddp / "trainer.json").read_text())["history"]
    hb = json.loads((single / "trainer.json").read_text())["history"]
    assert ha["steps"] == hb["steps"] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(ha["losses"]), torch.tensor(hb["losses"]), rtol=1e-5, atol=1e-5)
    assert ha["losses"][-1] < ha["losses"][0]  # it did train
