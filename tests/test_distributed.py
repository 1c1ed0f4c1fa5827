"""Data parallel on 2 CPU processes (gloo): the same run as one process, and stopping together.

* Two processes with batch B each must train like one process with batch 2B: the
  same batches (each rank takes its half of every global batch), gradients
  averaged by DDP, so the same updates up to floating-point summation order. The
  run itself checks that the two replicas end bit-identical.
* Every stop is one decision shared by all ranks: a time budget (each rank has its
  own clock), or SIGTERM sent to one rank only. Both end on the same step with
  identical replicas, and a resume continues exactly (dropout included).
* The worker refuses ``all_reduce(op=AVG)``, as gloo does on older torch: the
  loss is averaged with SUM and a division.

Why torchrun --standalone and not ``accelerate launch --main_process_port P``: a
port picked by the test and handed to the launcher can be taken by another
process in between (a rare, load-dependent failure). ``--standalone`` lets the
launcher bind port 0 itself, atomically. ``accelerate launch`` starts the same
torch launcher, with the same environment variables that train() reads. Every
process runs with one thread, so floating-point results cannot depend on the
machine's core count or load.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minigpt_helpers import find_checkpoint

pytestmark = pytest.mark.slow  # every test starts torchrun with two processes
TEXT = "".join(f"Scene {i}. To be, or not to be, that is the question.\n" * 3 for i in range(60))
WORKER = Path(__file__).with_name("ddp_worker.py")
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
if sys.platform.startswith("linux"):
    ENV.setdefault("GLOO_SOCKET_IFNAME", "lo")  # loopback: never depends on the machine's network setup


def _launch(*args: str, procs: int = 2, timeout: int = 240) -> subprocess.CompletedProcess:
    """``args`` under torchrun with ``procs`` local processes; fails with both ranks' output."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=ENV)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-4000:]
    return proc


def _ranks(out: Path) -> list[dict]:
    return [json.loads((out / f"rank{r}.json").read_text(encoding="utf-8")) for r in (0, 1)]


def _worker(out: Path, **opts) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    _launch(str(WORKER), str(out), json.dumps(opts))
    return _ranks(out)


def _cli_args(data: Path, out: Path, batch: int) -> list[str]:
    return ["train", "--data", str(data), "--tokenizer", "char", "--preset", "tiny", "--steps", "4",
            "--batch-size", str(batch), "--eval-interval", "2", "--device", "cpu", "--out", str(out)]


def test_two_processes_match_one_process_on_the_combined_batch(tmp_path):
    data = tmp_path / "play.txt"
    data.write_text(TEXT, encoding="utf-8")
    proc = _launch("-m", "minigpt_helpers", *_cli_args(data, tmp_path / "ddp", batch=4))
    assert "2 process(es)" in proc.stdout
    assert "2 replicas identical: yes" in proc.stdout
    assert proc.stdout.count("val loss") < 10  # only rank 0 logs
    # the same command in one process with twice the batch (and one thread, like each rank)
    single = subprocess.run([sys.executable, "-m", "minigpt_helpers", *_cli_args(data, tmp_path / "single", 8)],
                            capture_output=True, text=True, timeout=240, env=ENV)
    assert single.returncode == 0, single.stderr[-3000:]

    ddp, one = find_checkpoint(tmp_path / "ddp"), find_checkpoint(tmp_path / "single")
    a, b = load_file(str(ddp / "model.safetensors")), load_file(str(one / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-4, atol=1e-5, msg=lambda m, k=k: f"{k}: {m}")
    ha = json.loads((ddp / "trainer.json").read_text(encoding="utf-8"))["history"]
    hb = json.loads((one / "trainer.json").read_text(encoding="utf-8"))["history"]
    assert ha["steps"] == hb["steps"] == [1, 2, 3, 4]
    torch.testing.assert_close(torch.tensor(ha["losses"]), torch.tensor(hb["losses"]), rtol=1e-5, atol=1e-5)
    assert ha["losses"][-1] < ha["losses"][0]  # it did train


def test_modern_options_and_muon_train_the_same_in_two_processes_as_in_one(tmp_path):
    # chapter 07's options (RoPE, RMSNorm, SwiGLU, multi-query attention, QK-norm) with Muon: 2 ranks x 4 rows
    # must train exactly what 1 process does with the 8 rows of each combined batch
    modern = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True)
    two = _worker(tmp_path / "two", model=modern, optimizer="muon", muon_lr=0.05)
    (tmp_path / "one").mkdir()
    _launch(str(WORKER), str(tmp_path / "one"), json.dumps(dict(model=modern, optimizer="muon", muon_lr=0.05,
                                                                batch_size=8)), procs=1)
    one = json.loads((tmp_path / "one" / "rank0.json").read_text(encoding="utf-8"))
    assert two[0]["weights"] == two[1]["weights"]  # replicas bit-identical
    assert two[0]["steps"] == one["steps"] == [1, 2, 3, 4, 5, 6]
    torch.testing.assert_close(torch.tensor(two[0]["losses"]), torch.tensor(one["losses"]), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(torch.tensor(two[0]["weights"]), torch.tensor(one["weights"]), rtol=1e-4, atol=1e-5)
    assert one["losses"][-1] < one["losses"][0]  # it did train


def test_time_budget_is_one_decision_for_all_ranks(tmp_path):
    # Each rank has its own clock; the schedule and the stop must use one (rank 0's).
    r0, r1 = _worker(tmp_path, max_steps=None, time_budget_s=3.0, warmup_steps=2)
    assert r0["stop_reason"] == r1["stop_reason"] == "time budget"
    assert r0["step"] == r1["step"] > 3
    assert r0["lrs"] == r1["lrs"]  # the same learning rate at every step: no drift
    assert r0["weights"] == r1["weights"]  # replicas bit-identical (train() also checks it)
    assert r0["lrs"][-1] < r0["lrs"][2]  # the cosine decayed over the budget


def test_sigterm_to_one_rank_stops_both_with_a_checkpoint_and_resume_is_exact(tmp_path):
    # dropout on: a resume must restore every rank's randomness, not rank 0's only
    straight = _worker(tmp_path / "straight", max_steps=6, dropout=0.1)
    run = tmp_path / "run"
    stopped = _worker(run, max_steps=6, dropout=0.1, sigterm_at=2, out_dir=str(run / "ckpt"), eval_interval=5)
    assert [r["stop_reason"] for r in stopped] == ["interrupted", "interrupted"]
    assert [r["step"] for r in stopped] == [2, 2]  # both ranks finished the step in progress, then stopped
    assert stopped[0]["weights"] == stopped[1]["weights"]
    assert find_checkpoint(run / "ckpt").name == "ckpt-0000002"

    resumed = _worker(run, max_steps=6, dropout=0.1, out_dir=str(run / "ckpt"), resume=True, eval_interval=5)
    for rank in (0, 1):
        assert resumed[rank]["step"] == 6 and resumed[rank]["stop_reason"] == "done"
        assert resumed[rank]["steps"] == straight[rank]["steps"] == list(range(1, 7))
        assert resumed[rank]["losses"] == straight[rank]["losses"]  # bit for bit, dropout included
        assert resumed[rank]["weights"] == straight[rank]["weights"]
