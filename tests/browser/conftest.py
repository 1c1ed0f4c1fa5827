"""Fixtures for the real-browser test (`make test-browser`): JupyterLab, headless Chromium, artifacts.

Chromium is the system's (Debian's ``chromium`` package, or ``$CHROMIUM``), driven by
Playwright from PyPI; Playwright's own browser download is never used. Anything
missing is a test *failure* with the command that fixes it: this folder runs only
when asked for (``MINIGPT_BROWSER_TEST=1``, set by ``make test-browser``).
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from lab_server import running_lab  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "artifacts" / "browser"  # git-ignored; kept after the run
# The Jupyter server's (and so the kernel's) environment on top of ours: quick mode, offline.
LAB_ENV = {"MINIGPT_QUICK": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false"}


def find_chromium() -> str:
    """``$CHROMIUM``, else ``chromium`` / ``chromium-browser`` on PATH; a failure naming the fix if none."""
    explicit = os.environ.get("CHROMIUM")
    if explicit:
        if not (os.path.isfile(explicit) and os.access(explicit, os.X_OK)):
            pytest.fail(f"CHROMIUM={explicit!r} is not an executable file: point it at a Chromium binary")
        return explicit
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.fail("no Chromium found: install Debian's package (`sudo apt-get install chromium`; "
                "`make test-browser` does this when run as root) or set CHROMIUM=/path/to/chromium")


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """artifacts/browser/, emptied of a previous run's screenshots and logs."""
    if ARTIFACTS.exists():
        shutil.rmtree(ARTIFACTS)
    ARTIFACTS.mkdir(parents=True)
    return ARTIFACTS


@pytest.fixture(scope="session")
def notebook_copy(tmp_path_factory) -> Path:
    """A throw-away folder with a copy of chapter 05: the committed notebook is never opened or saved."""
    folder = tmp_path_factory.mktemp("notebooks")
    shutil.copy2(REPO / "notebooks" / "05_training.ipynb", folder / "05_training.ipynb")
    return folder


@pytest.fixture(scope="session")
def lab(notebook_copy, artifacts):
    """JupyterLab on 127.0.0.1 (free port, token) serving the copy; stopped at the end, pass or fail."""
    env = dict(os.environ, **LAB_ENV)
    env.pop("MPLBACKEND", None)  # the kernel must keep its inline backend: figures are shown as PNGs
    kernel_artifacts = tempfile.mkdtemp(prefix="minigpt-browser-artifacts-")
    env["MINIGPT_ARTIFACTS"] = kernel_artifacts  # checkpoints and tokenizer: not the learner's artifacts/
    try:
        with running_lab(notebook_copy, env=env, log_path=artifacts / "jupyter.log") as running:
            yield running
    finally:
        shutil.rmtree(kernel_artifacts, ignore_errors=True)


@pytest.fixture(scope="session")
def browser():
    """Headless system Chromium through Playwright."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        pytest.fail("Playwright is not installed: `make test-browser` installs it "
                    "(or: .venv/bin/pip install playwright); never run `playwright install`, "
                    "the test uses the system's Chromium")
    executable = find_chromium()
    with sync_playwright() as p:
        try:
            b = p.chromium.launch(executable_path=executable, headless=True, timeout=60_000,
                                  args=["--disable-dev-shm-usage", "--no-proxy-server"])
        except Exception as e:  # reported with the fix
            pytest.fail(f"could not start {executable} headless through Playwright: {e}\n"
                        "Check that it runs: `chromium --headless --dump-dom about:blank`")
        try:
            yield b
        finally:
            b.close()


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    """Keep each phase's report on the test item (``item.rep_call``), so a fixture can see how its test ended."""
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture
def page(browser, request, artifacts):
    """A fresh page, 1400x1000 at scale 1, so screenshots have stable sizes. If the test fails, the page as it
    was is saved to ``artifacts/<test name>_failure.png`` before it closes."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, device_scale_factor=1)
    pg = context.new_page()
    pg.set_default_timeout(60_000)
    try:
        yield pg
        call = getattr(request.node, "rep_call", None)
        if call is not None and call.failed:
            try:
                pg.screenshot(path=str(artifacts / f"{request.node.name}_failure.png"))
            except Exception:  # the test's own failure is what matters; a screenshot is a bonus
                pass
    finally:
        context.close()
