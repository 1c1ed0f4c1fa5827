"""Every chapter's solutions script runs to the end in quick mode, offline, as a learner would start it
(``python solutions/0N_..._solutions.py`` from the repository root): exit status 0 and no traceback."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOLUTIONS = sorted((ROOT / "solutions").glob("[0-9][0-9]_*.py"))
QUICK_OFFLINE = {"MINIGPT_QUICK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
                 "TOKENIZERS_PARALLELISM": "false", "MPLBACKEND": "Agg"}


def test_every_chapter_has_its_solutions():
    assert [p.name[:2] for p in SOLUTIONS] == [f"{k:02d}" for k in range(1, 12)]


@pytest.mark.slow
@pytest.mark.parametrize("script", SOLUTIONS, ids=[p.stem for p in SOLUTIONS])
def test_solutions_run_in_quick_mode(script: Path):
    """MINIGPT_ARTIFACTS (set by conftest.py) is inherited: the scripts write to the session's temporary folder."""
    env = {**os.environ, **QUICK_OFFLINE}
    proc = subprocess.run([sys.executable, str(script.relative_to(ROOT))], cwd=ROOT, env=env, capture_output=True,
                          text=True, encoding="utf-8", timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-4000:]
    assert "Traceback (most recent call last)" not in output, output[-4000:]
