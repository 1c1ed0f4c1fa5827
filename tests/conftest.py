"""Test-session setup: never touch the learner's (or the notebooks') artifacts.

Chapters hand tokenizers and checkpoints to each other through ``artifacts/``.
Tests must not leave a half-trained model there for a notebook to pick up, so the
whole session (and every subprocess it starts) writes to a temporary folder.
"""

from __future__ import annotations

import os
import tempfile

os.environ["MINIGPT_ARTIFACTS"] = tempfile.mkdtemp(prefix="minigpt-test-artifacts-")
