"""Showing progress the same way everywhere: a bar in Jupyter, a line on a terminal, a final line in logs.

The training monitor (training/live.py) and the BPE trainer (tokenizers/bpe.py) both
report through this module, so a saved notebook shows the same finished state for both.
"""

from __future__ import annotations

import sys


def in_notebook() -> bool:
    """True inside a Jupyter / Colab kernel (where rich display works)."""
    if "google.colab" in sys.modules:
        return True
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    ip = get_ipython()
    return ip is not None and type(ip).__name__ in ("ZMQInteractiveShell", "Shell")
