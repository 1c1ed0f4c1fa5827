"""Chapter 05 in a real browser: the live loss figure moves, the bar ends on the last step, no errors.

JupyterLab (quick mode, offline) opens a copy of ``05_training.ipynb`` in headless
Chromium, clears its outputs and runs all cells. While the training cell runs, the
test waits for the live figure to be redrawn and takes a screenshot of it; when the
notebook has finished it takes another, and checks:

* the figure changed between the two screenshots (pixels of the figure element);
* the training cell's output shows the progress bar's final line with the final
  step count (``minigpt_helpers.training.live.Monitor.close`` replaces the widget bar by it);
* no cell shows an error: every code cell ran, no ``error`` output, no traceback on stderr.

Screenshots, the server log and a JSON summary are kept in ``artifacts/browser/``.
Only ``make test-browser`` runs this (it sets ``MINIGPT_BROWSER_TEST=1``).
"""

from __future__ import annotations

import json
import os
import re
import time

import pytest

if os.environ.get("MINIGPT_BROWSER_TEST") != "1":
    pytest.skip("real-browser test: run `make test-browser` (needs Chromium and Playwright)",
                allow_module_level=True)

NOTEBOOK = "05_training.ipynb"
TRAIN_CELL_MARK = "train(model"  # the one cell that trains with the live monitor
CELLS = ".jp-Notebook .jp-Cell"
MID_RUN_DRAW = 2  # the mid-run screenshot shows the live figure's second drawing (it redraws every 2 s)

# One cell's rendered state, read from the DOM: its prompt ("[*]:" while queued or
# running), the figures it shows, whether a widget progress bar is there, and its text.
CELL_STATE_JS = """
window.__cellState = (i) => {
  const cell = document.querySelectorAll('.jp-Notebook .jp-Cell')[i];
  if (!cell) return null;
  const prompt = cell.querySelector('.jp-InputPrompt');
  const out = cell.querySelector('.jp-OutputArea');
  const bar = cell.querySelector('.jp-OutputArea-output .widget-hprogress, .jp-OutputArea-output .widget-progress');
  return {
    prompt: prompt ? prompt.textContent.trim() : '',
    srcs: Array.from(cell.querySelectorAll('.jp-OutputArea-output img'), im => im.getAttribute('src')),
    bar: bar ? (bar.closest('.widget-hbox') || bar).innerText : null,
    text: out ? out.innerText : '',
    source: (cell.querySelector('.jp-InputArea-editor') || {innerText: ''}).innerText,
  };
};
"""
RUN_ALL_JS = """
() => {
  window.__runAll = {done: false};
  window.jupyterapp.commands.execute('notebook:run-all-cells').then(
    ok => { window.__runAll = {done: true, ok: ok}; },
    e => { window.__runAll = {done: true, ok: false, error: String(e)}; });
}
"""
# Resolves to the cell state once the training cell runs with its widget bar and a figure
# whose image differs from `previous` (null: any figure), or to {runAll} once Run All ended.
TRAINING_FIGURE_JS = """
([i, previous]) => {
  if (window.__runAll.done) return {runAll: window.__runAll};
  const s = window.__cellState(i);
  const running = s && s.prompt.startsWith('[*]');
  return running && s.bar !== null && s.srcs.length === 1 && s.srcs[0] !== previous ? s : false;
}
"""
# Every cell from the notebook model: type, execution count, outputs (type, name, ename).
CELLS_MODEL_JS = """
() => window.jupyterapp.shell.currentWidget.content.widgets.map(c => ({
  type: c.model.type,
  count: c.model.type === 'code' ? c.model.executionCount : null,
  outputs: c.model.type === 'code'
    ? c.model.outputs.toJSON().map(o => ({type: o.output_type, name: o.name || null,
                                          ename: o.ename || null, evalue: o.evalue || null}))
    : [],
}))
"""
STDERR_TEXTS_JS = """
() => Array.from(document.querySelectorAll(
  '.jp-Notebook .jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'), e => e.innerText)
"""


def browser_timeout_s() -> float:
    """The whole run's time limit: ``$MINIGPT_BROWSER_TIMEOUT`` seconds, default 900."""
    raw = os.environ.get("MINIGPT_BROWSER_TIMEOUT", "900")
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"MINIGPT_BROWSER_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"MINIGPT_BROWSER_TIMEOUT must be positive, got {raw!r}")
    return value


def _count(text: str) -> int | None:
    """The step count a tqdm line shows: "57it [...", "57/100 [..." or (widget, no total) "57/? [..." -> 57."""
    m = re.search(r"(?<![\d/.])(\d+)(?:it|/\d+|/\?) \[", text.replace("\u2007", " ").replace("\xa0", " "))
    return int(m.group(1)) if m else None


def _changed_fraction(a_path, b_path) -> float:
    """Fraction of pixels that differ (any channel by more than 16 of 255); 1.0 if the sizes differ."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(a_path).convert("RGB"), dtype=np.int16)
    b = np.asarray(Image.open(b_path).convert("RGB"), dtype=np.int16)
    if a.shape != b.shape:
        return 1.0
    return float((np.abs(a - b).max(axis=2) > 16).mean())


def _coloured_pixels(path) -> int:
    """Pixels in colour (channels spread by more than 40): the plotted curves, not the gray axes and text."""
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)
    return int((a.max(axis=2) - a.min(axis=2) > 40).sum())


def _remaining(deadline: float) -> float:
    """Milliseconds left before ``deadline`` (at least 1 s, so a late wait still fails cleanly)."""
    return max(1.0, deadline - time.monotonic()) * 1000


def test_chapter05_live_plot_in_browser(page, notebook_copy, lab, artifacts):  # browser first: fails fast
    t0 = time.monotonic()
    deadline = t0 + browser_timeout_s()
    nb = json.loads((notebook_copy / NOTEBOOK).read_text(encoding="utf-8"))  # what the browser opens
    marked = [i for i, c in enumerate(nb["cells"])
              if c["cell_type"] == "code" and TRAIN_CELL_MARK in "".join(c["source"])]
    assert len(marked) == 1, f"expected one code cell containing {TRAIN_CELL_MARK!r} in {NOTEBOOK}, got {marked}"
    train_index = marked[0]
    report: dict = {"notebook": NOTEBOOK, "train_cell_index": train_index}

    try:
        # 1. Open the notebook and wait for its kernel.
        page.goto(lab.lab_url(NOTEBOOK), timeout=_remaining(deadline))
        page.wait_for_function(
            "(name) => { const w = window.jupyterapp && window.jupyterapp.shell.currentWidget;"
            " return !!(w && w.context && w.context.path.endsWith(name) && w.sessionContext"
            " && w.sessionContext.session && w.sessionContext.session.kernel"
            " && w.sessionContext.session.kernel.status === 'idle'); }",
            arg=NOTEBOOK, timeout=min(180_000, _remaining(deadline)), polling=250)
        page.evaluate(CELL_STATE_JS)
        n_dom = page.locator(CELLS).count()
        assert n_dom == len(nb["cells"]), f"JupyterLab shows {n_dom} cells, the notebook has {len(nb['cells'])}"
        state = page.evaluate("(i) => window.__cellState(i)", train_index)
        assert TRAIN_CELL_MARK in state["source"], f"cell {train_index} in the page is not the training cell"

        # 2. Clear the committed outputs (so nothing old can pass for new), then Run All.
        page.evaluate("() => window.jupyterapp.commands.execute('notebook:clear-all-cell-outputs')")
        assert page.evaluate("(i) => window.__cellState(i)", train_index)["srcs"] == []
        page.evaluate(RUN_ALL_JS)
        report["run_all_started_s"] = round(time.monotonic() - t0, 1)

        # 3. Mid-run: the live figure, once it has been redrawn (about 2 s into training).
        figure = page.locator(CELLS).nth(train_index).locator(".jp-OutputArea-output img")
        src = None
        for draw in range(1, MID_RUN_DRAW + 1):
            seen = page.wait_for_function(TRAINING_FIGURE_JS, arg=[train_index, src],
                                          timeout=_remaining(deadline), polling=100).json_value()
            assert "runAll" not in seen, f"Run All ended before draw {draw} of the live figure: {seen}"
            src = seen["srcs"][0]
        figure.screenshot(path=str(artifacts / "figure_mid.png"), timeout=30_000)
        mid = page.evaluate("(i) => window.__cellState(i)", train_index)
        page.screenshot(path=str(artifacts / "page_mid.png"))
        report.update(mid_s=round(time.monotonic() - t0, 1), mid_prompt=mid["prompt"], mid_bar=mid["bar"])
        assert mid["prompt"].startswith("[*]"), (
            f"the training cell had finished ({mid['prompt']!r}) when the mid-run screenshot was taken")
        assert mid["bar"] is not None, "no widget progress bar while training (is jupyterlab_widgets installed?)"

        # 4. The end of Run All.
        done = page.wait_for_function("() => window.__runAll.done ? window.__runAll : false",
                                      timeout=_remaining(deadline), polling=500).json_value()
        report.update(run_all=done, end_s=round(time.monotonic() - t0, 1))
        end = page.evaluate("(i) => window.__cellState(i)", train_index)
        assert len(end["srcs"]) == 1, f"the training cell shows {len(end['srcs'])} figures, expected one"
        figure.screenshot(path=str(artifacts / "figure_end.png"), timeout=30_000)
        page.screenshot(path=str(artifacts / "page_end.png"))
        report["train_cell_text"] = end["text"]

        # 5. No cell shows an error, and every code cell ran.
        model = page.evaluate(CELLS_MODEL_JS)
        errors = [(i, o["ename"], o["evalue"]) for i, c in enumerate(model) for o in c["outputs"]
                  if o["type"] == "error"]
        tracebacks = [t[:2000] for t in page.evaluate(STDERR_TEXTS_JS) if "Traceback" in t]
        not_run = [i for i, c in enumerate(model) if c["type"] == "code" and c["count"] is None]
        report.update(errors=errors, tracebacks=tracebacks, not_run=not_run)
        assert not errors, f"cells with error outputs (index, exception, message): {errors}"
        assert not tracebacks, "tracebacks on stderr:\n" + "\n---\n".join(tracebacks)
        assert not not_run, f"code cells that did not run: {not_run}"
        assert done.get("ok") is True, f"Run All did not report success: {done}"

        # 6. The progress bar's final line carries the final step count (printed by the cell too).
        printed = re.search(r"(\d+) steps, [\d,]+ tokens", end["text"])
        assert printed, f"the training cell did not print its summary line:\n{end['text']}"
        steps = int(printed.group(1))
        bar_lines = [ln for ln in end["text"].splitlines() if ln.strip().startswith("train:")]
        report.update(final_steps=steps, final_bar=bar_lines)
        assert end["bar"] is None, "the widget bar is still shown: a saved notebook would show it frozen"
        assert any(_count(ln) == steps for ln in bar_lines), (
            f"no progress-bar line showing the final step count {steps}: {bar_lines}")
        mid_steps = _count(mid["bar"])
        report["mid_steps"] = mid_steps
        assert mid_steps is not None and 0 < mid_steps < steps, (
            f"mid-run bar {mid['bar']!r} should show a step count between 0 and {steps}")

        # 7. The live figure changed between the two screenshots, and both show curves.
        changed = _changed_fraction(artifacts / "figure_mid.png", artifacts / "figure_end.png")
        coloured = {k: _coloured_pixels(artifacts / f"figure_{k}.png") for k in ("mid", "end")}
        report.update(figure_changed_fraction=round(changed, 4), coloured_pixels=coloured)
        assert changed > 0.01, f"the live figure barely changed between mid-run and end ({changed:.2%} of pixels)"
        assert min(coloured.values()) > 100, f"a figure screenshot shows no curves (coloured pixels: {coloured})"
    finally:
        report["total_s"] = round(time.monotonic() - t0, 1)
        (artifacts / "report.json").write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
