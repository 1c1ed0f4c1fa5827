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
EXPECTED = ["01_streaming_data", "02_tokenization", "03_attention", "04_gpt_model", "05_training", "06_generation",
            "07_modern_gpt", "08_finetuning", "09_evaluation_and_scaling", "10_preference_and_rl",
            "11_inference"]


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


# ------------------------------------------------------------------------------ figures
# Diagrams must render in JupyterLab, Colab and on GitHub with nothing but the notebook: an image is a cell
# attachment, a file in the repository, or drawn by minigpt_helpers.diagrams; never fetched from the network.
MD_IMAGE = re.compile(r"!\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_IMAGE = re.compile(r"<img\b[^>]*?\bsrc\s*=\s*[\"']([^\"']+)[\"']", re.I)
DIAGRAM_CALL = re.compile(r"\bdiagrams(?:_model)?\.([A-Za-z_]\w*)\s*\(")
DIAGRAM_IMPORT = re.compile(r"from\s+minigpt_helpers\.diagrams(?:_model)?\s+import\s+(\([^)]*\)|[^\n#]+)")
IMAGE_FILE = re.compile(r"""\b(?:Image|SVG|imread|open)\(\s*(?:filename\s*=\s*)?["']([^"']+\.(?:png|jpe?g|gif|svg))["']""")


def figure_problems(cs: list[dict], folder: Path) -> list[str]:
    """Every figure a notebook references that would not render: missing attachment, file or diagram; a URL."""
    from minigpt_helpers import diagrams

    problems = []
    for n, c in enumerate(cs):
        text = source(c)
        if c["cell_type"] == "markdown":
            for src in MD_IMAGE.findall(text) + HTML_IMAGE.findall(text):
                if src.startswith("attachment:"):
                    if src[len("attachment:"):] not in (c.get("attachments") or {}):
                        problems.append(f"cell {n}: {src} is not attached to the cell")
                elif re.match(r"(?i)[a-z][\w+.-]*://", src):
                    problems.append(f"cell {n}: {src} needs the network: attach the image or draw it in minigpt_helpers/diagrams")
                elif not src.startswith("data:") and not (folder / src.split("#")[0].split("?")[0]).is_file():
                    problems.append(f"cell {n}: {src} does not exist (relative to {folder.name}/)")
        elif c["cell_type"] == "code":
            names = DIAGRAM_CALL.findall(text)
            names += [x.split(" as ")[0].strip() for m in DIAGRAM_IMPORT.findall(text)
                      for x in m.strip("()").split(",") if x.strip()]
            problems += [f"cell {n}: diagrams.{x} does not exist (see diagrams.DIAGRAMS)"
                         for x in names if not callable(getattr(diagrams, x, None))]
            problems += [f"cell {n}: image file {f} does not exist" for f in IMAGE_FILE.findall(text)
                         if not (folder / f).is_file()]
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_referenced_figure_exists(path: Path):
    problems = figure_problems(cells(path), path.parent)
    assert not problems, "\n".join(problems)


def test_the_figure_check_catches_what_it_looks_for(tmp_path: Path):
    (tmp_path / "here.png").write_bytes(b"\x89PNG")

    def md(text: str, attachments: dict | None = None) -> dict:
        return {"cell_type": "markdown", "source": text, **({"attachments": attachments} if attachments else {})}

    def code(text: str) -> dict:
        return {"cell_type": "code", "source": text}

    good = [md("![windows](attachment:w.png)", {"w.png": {"image/png": "iVBOR"}}), md("![a](here.png)"),
            md('<img src="here.png" width=400>'), md("![inline](data:image/png;base64,iVBOR)"),
            code("from minigpt_helpers import diagrams\ndiagrams.kv_cache()\nsorted(diagrams.DIAGRAMS)"),
            code("from minigpt_helpers.diagrams import lr_schedule, gqa as g\nlr_schedule()"),
            code("from minigpt_helpers.diagrams import (\n    lora,\n    chat_mask,\n)"),
            code('Image(filename="here.png")')]
    assert figure_problems(good, tmp_path) == []
    bad = [md("![w](attachment:w.png)"), md("![a](missing.png)"), md('<img src="gone/x.svg">'),
           md("![web](https://example.com/fig.png)"), code("diagrams.kv_cahce()"),
           code("from minigpt_helpers.diagrams import nope"), code('plt.imread("lost.png")')]
    problems = figure_problems(bad, tmp_path)
    assert [p.split(":")[0] for p in problems] == [f"cell {n}" for n in range(len(bad))], problems


def diagram_cells_without_a_picture(cs: list[dict]) -> list[int]:
    """Code cells that draw a concept diagram but saved no image: e.g. ``diagrams.x(); plt.show()``
    shows nothing, because the diagram functions return a Figure detached from pyplot (end the cell
    with the call, or ``display(fig)``)."""
    return [n for n, c in enumerate(cs) if c["cell_type"] == "code" and DIAGRAM_CALL.search(source(c))
            and not any("image/png" in o.get("data", {}) for o in c.get("outputs", []))]


MAX_STREAM_OUTPUTS = 20  # a long log is coalesced (one print per line would be dozens of outputs)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_diagram_is_drawn_and_no_log_floods_a_cell(path: Path):
    cs = cells(path)
    assert not diagram_cells_without_a_picture(cs), "these cells draw a diagram but show none"
    floods = {n: k for n, c in enumerate(cs) if c["cell_type"] == "code"
              and (k := sum(o.get("output_type") == "stream" for o in c.get("outputs", []))) > MAX_STREAM_OUTPUTS}
    assert not floods, f"cells with more than {MAX_STREAM_OUTPUTS} separate stream outputs: {floods}"


def test_the_diagram_and_flood_checks_catch_what_they_look_for():
    png = {"output_type": "display_data", "data": {"image/png": "iVBOR"}}
    cs = [{"cell_type": "code", "source": "diagrams.kv_cache()", "outputs": [png]},
          {"cell_type": "code", "source": "diagrams.kv_cache(); plt.show()", "outputs": []}]
    assert diagram_cells_without_a_picture(cs) == [1]
