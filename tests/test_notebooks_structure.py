"""Every chapter follows the course's shape; nbval (in `make test`) separately re-executes them.

These checks read the committed notebooks: a chapter opens with what you will build,
its first code cell is the Colab/fresh-kernel setup cell, it is committed with the
outputs of a clean top-to-bottom run, and it ends with a summary and exercises whose
solutions exist.
"""

from __future__ import annotations

import json
import re
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


MACHINE_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.~-]+)+[/\\](?:artifacts|notebooks|minigpt_helpers)\b")
FROZEN_BAR = re.compile(r"\b0it \[00:00|\| 0/\d+ \[00:00<")


def _output_texts(path: Path) -> list[str]:
    texts = []
    for c in cells(path):
        for o in c.get("outputs", []) if c["cell_type"] == "code" else []:
            texts.append("".join(o.get("text", "")))
            for kind, value in o.get("data", {}).items():
                if kind.startswith("text/"):
                    texts.append("".join(value) if isinstance(value, list) else value)
    return texts


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_show_no_machine_paths_and_no_frozen_bars(path: Path):
    # readers on GitHub or Colab see the saved outputs: paths relative to the repo (shown_path),
    # and a progress bar's final state, not the "0it" a saved widget falls back to
    texts = _output_texts(path)
    paths = sorted({m.group(0) for t in texts for m in MACHINE_PATH.finditer(t)})
    assert not paths, f"machine paths in the outputs (print them with shown_path): {paths[:3]}"
    frozen = [t[:80] for t in texts if FROZEN_BAR.search(t)]
    assert not frozen, f"progress bars frozen at 0 in the outputs: {frozen[:2]}"


def test_the_checks_catch_what_they_look_for():
    assert MACHINE_PATH.search("saved to /home/ada/minigpt/artifacts/ch05/ckpt-0000100")
    assert MACHINE_PATH.search(r"C:\Users\ada\minigpt\artifacts\ch05")
    assert not MACHINE_PATH.search("saved to artifacts/ch05/ckpt-0000100")
    assert FROZEN_BAR.search("train: 0it [00:00, ?it/s]")
    assert not FROZEN_BAR.search("train: 100%|#####| 30/30 [00:02<00:00, 14.1it/s]")
