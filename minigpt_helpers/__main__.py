"""``python -m minigpt_helpers train|generate ...`` (and the ``minigpt`` script): see cli.py."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
