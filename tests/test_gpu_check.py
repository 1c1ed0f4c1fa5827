"""`make gpu-check` (benchmarks/gpu_check.py) without a GPU: the one-line exit, the CPU dry run, the watchdog.

The real thing needs CUDA; ``--device cpu --tiny`` runs the same report code end to
end on the CPU with tiny shapes, which is what keeps it from rotting between GPU runs.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytestmark = pytest.mark.slow  # every test runs benchmarks/gpu_check.py in a subprocess
SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "gpu_check.py"
SECTIONS = ("## 1. Precision and compile decisions", "## 2. Short training runs", "## 3. Resume on the device",
            "## 4. Attention (SDPA) backend", "## 5a. Measured matmul peak", "## 5b. Throughput and MFU",
            "## 6. One vs two processes", "## Summary")


def _run(*args: str, timeout: float = 180) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # 1 thread: no oversubscription on a shared CI machine
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, encoding="utf-8",
                          errors="replace", timeout=timeout, env=env)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the check would really run")
def test_without_cuda_it_says_so_in_one_line_and_exits_0():
    proc = _run()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 1 and "no CUDA GPU" in lines[0], proc.stdout


def test_cpu_dry_run_writes_every_section(tmp_path):
    out = tmp_path / "GPU_CHECK.md"
    proc = _run("--device", "cpu", "--tiny", "--out", str(out))
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = out.read_text(encoding="utf-8")
    assert report.strip() in proc.stdout  # printed as well as written
    positions = [report.find(s) for s in SECTIONS]
    assert all(p >= 0 for p in positions) and positions == sorted(positions), positions
    assert "| precision | fp32 |" in report and "100x" in report  # the decision and its reason
    assert "| torch.compile | off |" in report
    assert "| loss falls (fp32, compile off) | pass |" in report
    assert "**match**" in report and "| resume matches uninterrupted | pass |" in report
    assert "profiler saw: **flash" in report or "profiler saw: **math" in report
    assert "TFLOP/s" in report and "MFU" in report
    assert "skipped: --device cpu" in report  # one vs two processes: GPUs only
    assert "all checks passed" in report


def test_a_section_over_its_time_limit_is_stopped_not_hung(tmp_path):
    out = tmp_path / "GPU_CHECK.md"
    # not hung: the watchdog ends the run (exit 3) long before _run's subprocess timeout would
    proc = _run("--device", "cpu", "--tiny", "--out", str(out), "--time-limit", "0.05")
    assert proc.returncode == 3, proc.stdout[-4000:] + proc.stderr[-4000:]
    report = out.read_text(encoding="utf-8")
    assert "did not finish within its limit of 0.05 s" in report and "**Stopped:**" in proc.stdout
