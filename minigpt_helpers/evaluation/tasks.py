"""Multiple-choice tasks for :func:`~minigpt_helpers.evaluation.choices.evaluate_choices` (chapter 09).

Each item is ``{"context": str, "choices": [str, ...], "label": int}`` (plus fields that
say where it came from).

**shakespeare-next-line** (:func:`shakespeare_next_line`, offline): a few lines of a scene,
then "which of these four lines comes next?". Built as follows:

1. *Only held-out text.* The scenes are the documents of ``stream_documents("shakespeare")``
   (one per scene) in the corpus's **validation** split (``data.rows.is_validation``, a
   hash of the scene's text), read through ``finetune.instructions.corpus_scenes``. A
   model pretrained on the training split has read none of them. Title pages, cast lists
   and the poems are left out.
2. *The scene as printed.* A scene is cut into speeches (``finetune.instructions.speeches``:
   a name line, then the lines spoken; stage directions dropped) and printed back as the
   corpus prints it: ``"NAME."`` on a line, the speech's lines, a blank line between
   speeches.
3. *Questions.* A question is a spoken line of at least 4 words (the true line) and the
   ``n_context_lines`` printed lines before it in its scene (name lines count), the context
   ending with a newline. It is kept only when context + true line stand in the scene's
   text exactly so, the true line a whole line (no stage direction or dropped block in
   between or after), and when the true line is not also a line of any training document
   (a model could have learned it there).
4. *Distractors.* The candidates are the spoken lines of at least 4 words of the validation
   scenes, each a whole line of its scene's text (no stage direction cut out of it), that
   occur in exactly one scene and in no training document. Three are drawn
   from scenes other than the question's: the candidates are ordered by length (in
   characters), ``k`` of the three come from the 8 nearest shorter-or-equal lines and
   ``3 - k`` from the 8 nearest longer-or-equal ones, with ``k`` uniform in 0..3. The pool
   is large, so the nearest lines are usually exactly as long as the true one: in the
   600 items of ``shakespeare_next_line()`` all four choices have the same number of
   characters in 586 (98 %), and never differ by more than 3. Length tells nothing.
5. *Order.* The four lines are shuffled; the questions are shuffled and the first
   ``n_items`` kept. Everything is drawn from ``random.Random`` seeded by ``seed`` (a
   question's choices from its own seeded generator), so the items depend only on the
   arguments, and a smaller ``n_items`` gives a prefix of a larger one. Chance is 25%.

The held-out scenes yield several thousand questions; asking for more is a ValueError that
says how many there are.

**HellaSwag** (:func:`hellaswag_items`, online): the validation split of ``Rowan/hellaswag``
streamed with ``datasets`` and prepared as lm-evaluation-harness's ``hellaswag`` task does
(``lm_eval/tasks/hellaswag/utils.py``). Offline it says so in one line and returns None.

:func:`write_jsonl_task` writes items as JSON Lines for an lm_eval YAML task (``doc_to_text:
"{{context}}"``, ``doc_to_choice: "{{choices}}"``, ``doc_to_target: "{{label}}"``,
``target_delimiter: ""``: the contexts and choices already hold their spaces and newlines).
"""

from __future__ import annotations

import bisect
import functools
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .choices import check_items

if TYPE_CHECKING:
    from ..finetune.instructions import Scene

__all__ = ["HELLASWAG_REPO", "NEXT_LINE_TASK", "hellaswag_item", "hellaswag_items", "hellaswag_preprocess",
           "shakespeare_next_line", "write_jsonl_task"]

NEXT_LINE_TASK = "shakespeare-next-line"
N_CHOICES = 4
MIN_WORDS = 4  # a true line or a distractor has at least this many words
NEIGHBOURS = 8  # distractors come from the 8 shorter and the 8 longer candidates nearest in length
HELLASWAG_REPO = "Rowan/hellaswag"


# ------------------------------------------------------------------------------ shakespeare-next-line
@dataclass(frozen=True)
class _Line:
    text: str
    spoken: bool  # False for a speaker's name line
    opens_speech: bool  # a name line, printed after a blank line (except at the scene's start)


def _printed_lines(text: str) -> list[_Line]:
    """A scene's speeches as the corpus prints them: ``NAME.``, then the lines spoken."""
    from ..finetune.instructions import speeches

    out = []
    for who, body in speeches(text):
        out.append(_Line(f"{who}.", False, True))
        out += [_Line(line, True, False) for line in body]
    return out


def _render(lines: Sequence[_Line]) -> str:
    """Lines joined as printed: a newline between lines, a blank line before each speech but the first shown."""
    return "".join(("\n\n" if ln.opens_speech and k else "\n" if k else "") + ln.text for k, ln in enumerate(lines))


def _is_candidate(line: _Line) -> bool:
    return line.spoken and len(line.text.split()) >= MIN_WORDS


@functools.lru_cache(maxsize=1)
def _training_lines() -> frozenset[str]:
    """Every line (spaces normalised) of every training document of the corpus: lines a model may have learned."""
    from ..finetune.instructions import corpus_scenes

    return frozenset(" ".join(line.split()) for s in corpus_scenes() if s.split == "train"
                     for line in s.text.split("\n"))


@dataclass(frozen=True)
class _Question:
    scene: Scene
    lines: tuple[_Line, ...]  # the scene, printed
    at: int  # index of the true line in ``lines``


@functools.lru_cache(maxsize=4)
def _next_line_pool(n_context_lines: int) -> tuple[list[_Question], list[tuple[int, int, str, str]]]:
    """The questions (step 3 of the module docstring) and the distractor candidates, sorted by length.

    A candidate is ``(length, crc32, text, scene_id)``: the checksum orders lines of equal length.
    """
    from ..finetune.instructions import corpus_scenes

    trained = _training_lines()
    scenes = [s for s in corpus_scenes() if s.split == "validation" and s.is_play_scene]
    printed = {s.scene_id: tuple(_printed_lines(s.text)) for s in scenes}
    in_scenes: Counter[str] = Counter()
    for s in scenes:
        in_scenes.update({ln.text for ln in printed[s.scene_id] if _is_candidate(ln)})
    questions, candidates = [], set()
    for s in scenes:
        lines, whole_lines = printed[s.scene_id], {line.strip() for line in s.text.split("\n")}
        for at, ln in enumerate(lines):
            if not _is_candidate(ln) or ln.text in trained or ln.text not in whole_lines:
                continue
            if in_scenes[ln.text] == 1:
                candidates.add((len(ln.text), zlib.crc32(ln.text.encode("utf-8")), ln.text, s.scene_id))
            if at >= n_context_lines and _render(lines[at - n_context_lines:at + 1]) + "\n" in s.text + "\n":
                questions.append(_Question(s, lines, at))
    return questions, sorted(candidates)


def _nearest(pool: list[tuple[int, int, str, str]], key: tuple[int, int], scene_id: str, step: int) -> list[str]:
    """Up to NEIGHBOURS candidate lines from other scenes next to ``key`` in length order (step -1: shorter)."""
    out = []
    k = bisect.bisect_left(pool, key) + (-1 if step < 0 else 0)
    while 0 <= k < len(pool) and len(out) < NEIGHBOURS:
        _, _, text, sid = pool[k]
        if sid != scene_id:  # a candidate occurs in one scene only: never the true line's text
            out.append((text, sid))
        k += step
    return out


def _item(q: _Question, n_context_lines: int, pool: list, seed: int) -> dict[str, Any]:
    true = q.lines[q.at].text
    rng = random.Random(f"{NEXT_LINE_TASK}/{seed}/{q.scene.scene_id}/{q.at}")
    key = (len(true), zlib.crc32(true.encode("utf-8")))
    shorter, longer = _nearest(pool, key, q.scene.scene_id, -1), _nearest(pool, key, q.scene.scene_id, 1)
    n_short = rng.randrange(N_CHOICES)  # how many distractors are shorter: uniform, so length tells nothing
    n_short = min(max(n_short, N_CHOICES - 1 - len(longer)), len(shorter))  # at the ends of the length order
    picks = rng.sample(shorter, n_short) + rng.sample(longer, N_CHOICES - 1 - n_short)
    options = [(true, q.scene.scene_id)] + picks
    rng.shuffle(options)
    return {"context": _render(q.lines[q.at - n_context_lines:q.at]) + "\n",
            "choices": [text for text, _ in options], "label": options.index((true, q.scene.scene_id)),
            "source": q.scene.source, "scene": q.scene.index, "scene_id": q.scene.scene_id,
            "choice_scene_ids": [sid for _, sid in options]}


def shakespeare_next_line(n_items: int = 600, *, n_context_lines: int = 4, seed: int = 0) -> list[dict[str, Any]]:
    """The offline task ``shakespeare-next-line``: which of 4 lines comes next in a held-out scene?

    Items ``{"context", "choices", "label", "source", "scene", "scene_id", "choice_scene_ids"}``
    (``choice_scene_ids``: the scene each choice comes from). Built from the corpus's
    validation scenes only, with distractors of the true line's length from other scenes;
    deterministic for given arguments (the module docstring says exactly how).
    """
    for name, value in (("n_items", n_items), ("n_context_lines", n_context_lines)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    questions, pool = _next_line_pool(n_context_lines)
    if len(questions) < n_items:
        raise ValueError(f"the held-out (validation) scenes of the Shakespeare corpus yield {len(questions)} "
                         f"questions with {n_context_lines} context lines, fewer than n_items={n_items}: ask for "
                         f"at most {len(questions)} items (or fewer context lines)")
    order = list(range(len(questions)))
    random.Random(f"{NEXT_LINE_TASK}/{seed}").shuffle(order)
    return [_item(questions[k], n_context_lines, pool, seed) for k in order[:n_items]]


# ------------------------------------------------------------------------------ HellaSwag
def hellaswag_preprocess(text: str) -> str:
    """lm_eval's HellaSwag text cleanup: strip, ``" [title]"`` -> ``". "``, drop other ``[...]``, fold double spaces."""
    text = text.strip()
    text = text.replace(" [title]", ". ")  # brackets are artifacts of HellaSwag's WikiHow part
    text = re.sub("\\[.*?\\]", "", text)
    return text.replace("  ", " ")


def hellaswag_item(doc: dict[str, Any]) -> dict[str, Any]:
    """One HellaSwag row as an item, as lm_eval's ``hellaswag`` task builds its request.

    Context: ``preprocess(activity_label + ": " + ctx_a + " " + ctx_b.capitalize())``;
    choices: each ending preprocessed, with lm_eval's target delimiter, a space, in front.
    """
    ctx = doc["ctx_a"] + " " + doc["ctx_b"].capitalize()
    return {"context": hellaswag_preprocess(doc["activity_label"] + ": " + ctx),
            "choices": [" " + hellaswag_preprocess(e) for e in doc["endings"]], "label": int(doc["label"])}


def hellaswag_items(n: int | None = None) -> list[dict[str, Any]] | None:
    """The first ``n`` (default: all 10,042) HellaSwag validation items, streamed from the Hub; None offline.

    Offline (``data.sources.hub_reachable()`` false, decided within a few seconds) it
    prints one line saying it skips HellaSwag and returns None.
    """
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n must be an integer >= 1 or None (all items), got {n!r}")
    from ..data.sources import hub_reachable

    ok, reason = hub_reachable()
    if not ok:
        print(f"[minigpt] HellaSwag skipped: the Hugging Face Hub is not reachable ({reason})", flush=True)
        return None
    from datasets import load_dataset

    items = []
    for doc in load_dataset(HELLASWAG_REPO, split="validation", streaming=True):
        if n is not None and len(items) >= n:
            break
        items.append(hellaswag_item(doc))
    return items


# ------------------------------------------------------------------------------ writing a task
def write_jsonl_task(items: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Write ``items`` as JSON Lines (UTF-8), one ``{"context", "choices", "label"}`` object a line; return the path.

    Other fields of an item are left out. The items are checked first (as by ``evaluate_choices``).
    """
    check_items(items)
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for it in items:
            f.write(json.dumps({"context": it["context"], "choices": list(it["choices"]), "label": it["label"]},
                               ensure_ascii=False) + "\n")
    return path
