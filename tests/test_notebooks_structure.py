"""Every chapter follows the course's shape; nbval (in `make test`) separately re-executes them.

These checks read the committed notebooks: a chapter opens with what you will build,
its first code cell is the Colab/fresh-kernel setup cell, it is committed with the
outputs of a clean top-to-bottom run, and it ends with a summary and exercises whose
solutions exist.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
EXPECTED = ["01_streaming_data", "02_tokenization", "03_attention", "04_gpt_model", "05_training", "06_generation"]


def cells(path: Path) -> list[dict]:
    return json.loads(path.read_text(encoding="utf-8"))["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def test_every_chapter_exists():
    assert [p.stem for p in NOTEBOOKS] == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_chapter_shape(path: Path):
    cs = cells(path)
    assert cs[0]["cell_type"] == "markdown" and "what you will build" in source(cs[0]).lower()
    code = [c for c in cs if c["cell_type"] == "code"]
    assert 'find_spec("minigpt_helpers")' in source(code[0]), "first code cell must be the setup cell"
    tail = "\n".join(source(c) for c in cs[-3:] if c["cell_type"] == "markdown").lower()
    assert "summary" in tail and "exercise" in tail
    assert (ROOT / "solutions" / f"{path.stem}_solutions.py").exists()
    markdown = [c for c in cs if c["cell_type"] == "markdown"]
    assert len(markdown) >= len(code) / 2, "explain before each step"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_with_a_clean_full_run(path: Path):
    code = [c for c in cells(path) if c["cell_type"] == "code"]
    counts = [c.get("execution_count") for c in code]
    assert counts == list(range(1, len(code) + 1)), "re-run the notebook top to bottom before committing"
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors
    assert any(c.get("outputs") for c in code)
    size = sum(len(json.dumps(o)) for c in code for o in c.get("outputs", []))
    assert size < 3_000_000, f"outputs are {size / 1e6:.1f} MB; keep notebooks light"
