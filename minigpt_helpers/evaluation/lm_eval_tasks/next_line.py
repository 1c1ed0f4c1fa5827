"""The data of the ``shakespeare-next-line`` lm_eval task: the JSON Lines file beside this one.

lm_eval calls :func:`load` (the YAML's ``custom_dataset``) with the task's metadata as keyword
arguments. The file is :func:`minigpt_helpers.evaluation.tasks.shakespeare_next_line`'s items,
written by ``write_jsonl_task``; a test checks that the two still agree.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

DATA = Path(__file__).with_name("shakespeare_next_line.jsonl")


def load(**_metadata: Any) -> dict[str, Any]:
    """``{"test": Dataset}`` of the items, in the file's order (lm_eval's ``doc_id`` is the line number)."""
    import datasets

    with DATA.open(encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    return {"test": datasets.Dataset.from_list(rows)}
