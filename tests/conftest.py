"""Test-session setup: never touch the learner's (or the notebooks') artifacts.

Chapters hand tokenizers and checkpoints to each other through ``artifacts/``.
Tests must not leave a half-trained model there for a notebook to pick up, so the
whole session (and every subprocess it starts) writes to a temporary folder.
"""

from __future__ import annotations

import os
import tempfile

os.environ["MINIGPT_ARTIFACTS"] = tempfile.mkdtemp(prefix="minigpt-test-artifacts-")


def pytest_configure(config) -> None:
    config.addinivalue_line("markers", "large: generates hundreds of MB; run by `make bench` (MINIGPT_LARGE_TESTS=1)")


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``large`` run only with ``MINIGPT_LARGE_TESTS=1`` (``make bench`` sets it), so that
    ``make test`` stays within its time budget; their asserts are then checked there."""
    if os.environ.get("MINIGPT_LARGE_TESTS") == "1":
        return
    import pytest

    skip = pytest.mark.skip(reason="large: run by `make bench` (or set MINIGPT_LARGE_TESTS=1)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
