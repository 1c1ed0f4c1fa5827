"""An offline instruction set built from the Shakespeare corpus, and genre labels (chapter 08).

Every row is a conversation in the common format, plus what is needed to score it::

    {"messages": [{"role": "user", "content": "..."}, {"role": "assistant", "content": "..."}],
     "task": "play", "answer": "Othello", "source": "shakespeare/othello", "scene": 3,
     "scene_id": "5e1f0a2b", "split": "validation"}

**Tasks**, each with an objective check (:func:`check_reply`), short enough for
chapter 05's 64-token context and learnable by a small model from names and words
that recur across the scenes of a play:

- ``"speaker"``: a line and who said it, then "Who answers, A or B?" (both of that
  scene): the name of the next speaker, exact match (chance: 1/2);
- ``"play"``: a speaker and a line, "Which play is this from?": the title, exact match;
- ``"genre"``: a speaker and a line, "Comedy, history or tragedy?": the First
  Folio's category, exact match (plays outside the Folio are left out);
- ``"use_word"``: "Write a line of verse with the word X": the reply must contain X
  (as a word) and be verse-like (:func:`is_verse_like`); the reference answer is a
  line of the scene with X among its first two words ("Sweet love, ...").

**The split follows the corpus split.** Rows come from the documents of
``stream_documents("shakespeare")`` (one per scene, same files, same cutting), and a
row is in ``"validation"`` exactly when its scene is in the corpus's validation
split (the same hash of the scene's text, data/rows.py). So a model pretrained on the
training split and finetuned on the training rows has never seen a validation
scene. Rows are deterministic: each scene draws its rows from its own seeded
random generator, so the set does not depend on file order.

**Genre labels** (:data:`PLAYS`): comedy / history / tragedy as the First Folio
(1623) groups the plays in its catalogue. Troilus and Cressida is missing from the
catalogue; the Folio prints it, as "The Tragedie of Troylus and Cressida", between
the histories and the tragedies, and it is labelled a tragedy here. Cymbeline is
among the Folio's tragedies. Pericles (not in the Folio) and the poems have no
genre and are left out of genre rows and :func:`genre_examples`.

**The genre classifier's passages are split by play** (:func:`genre_examples`),
not by scene: the plays of :data:`GENRE_HELD_OUT` (two of each genre) are the
validation set, every other play the training set. A play's names and places give
the play away, and the play gives its genre, so with scenes of one play on both
sides a classifier could score by recognising the play. The instruction set's
``"genre"`` task keeps the corpus's split by scene: its ``"play"`` task can only be
learned for plays seen in training.

Your own data: :func:`read_conversations` reads a JSONL file of ``{"messages": [...]}``
rows; :func:`hub_conversations` streams a Hub dataset in that format (e.g.
``HuggingFaceTB/smol-smoltalk``) when the Hub answers.
"""

from __future__ import annotations

import functools
import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

TASKS = ("speaker", "play", "genre", "use_word")
GENRES = ("comedy", "history", "tragedy")
GENRE_SOURCE = ("the First Folio (1623) catalogue: Comedies, Histories, Tragedies; Troilus and Cressida "
                "(absent from the catalogue, printed as a tragedy) counted a tragedy; Pericles and the poems excluded")
#: The plays whose every scene is in the genre classifier's validation set, two of each genre (a fixed
#: list, so the split never changes). The histories are the two outside the tetralogies (Richard II to
#: Henry V, Henry VI to Richard III), whose kings and lords speak from play to play.
GENRE_HELD_OUT = ("twelfth_night", "much_ado_about_nothing", "john", "henry_viii", "macbeth", "othello")

#: file stem -> (title, First Folio genre or None for works outside the Folio)
PLAYS: dict[str, tuple[str, str | None]] = {
    # Comedies
    "tempest": ("The Tempest", "comedy"),
    "two_gentlemen_of_verona": ("Two Gentlemen of Verona", "comedy"),
    "merry_wives_of_windsor": ("The Merry Wives of Windsor", "comedy"),
    "measure_for_measure": ("Measure for Measure", "comedy"),
    "comedy_of_errors": ("The Comedy of Errors", "comedy"),
    "much_ado_about_nothing": ("Much Ado About Nothing", "comedy"),
    "loves_labours_lost": ("Love's Labour's Lost", "comedy"),
    "midsummer_nights_dream": ("A Midsummer Night's Dream", "comedy"),
    "merchant_of_venice": ("The Merchant of Venice", "comedy"),
    "as_you_like_it": ("As You Like It", "comedy"),
    "taming_of_the_shrew": ("The Taming of the Shrew", "comedy"),
    "alls_well_that_ends_well": ("All's Well That Ends Well", "comedy"),
    "twelfth_night": ("Twelfth Night", "comedy"),
    "winters_tale": ("The Winter's Tale", "comedy"),
    # Histories
    "john": ("King John", "history"),
    "richard_ii": ("King Richard II", "history"),
    "henry_iv_part_1": ("King Henry IV, Part 1", "history"),
    "henry_iv_part_2": ("King Henry IV, Part 2", "history"),
    "henry_v": ("King Henry V", "history"),
    "henry_vi_part_1": ("King Henry VI, Part 1", "history"),
    "henry_vi_part_2": ("King Henry VI, Part 2", "history"),
    "henry_vi_part_3": ("King Henry VI, Part 3", "history"),
    "richard_iii": ("King Richard III", "history"),
    "henry_viii": ("King Henry VIII", "history"),
    # Tragedies
    "troilus_and_cressida": ("Troilus and Cressida", "tragedy"),
    "coriolanus": ("Coriolanus", "tragedy"),
    "tragedy_of_titus_andronicus": ("Titus Andronicus", "tragedy"),
    "romeo_and_juliet": ("Romeo and Juliet", "tragedy"),
    "timon_of_athens": ("Timon of Athens", "tragedy"),
    "julius_caesar": ("Julius Caesar", "tragedy"),
    "macbeth": ("Macbeth", "tragedy"),
    "hamlet": ("Hamlet", "tragedy"),
    "lear": ("King Lear", "tragedy"),
    "othello": ("Othello", "tragedy"),
    "antony_and_cleopatra": ("Antony and Cleopatra", "tragedy"),
    "cymbeline": ("Cymbeline", "tragedy"),
    # Not in the First Folio
    "pericles": ("Pericles", None),
}
#: Common words of the corpus for the "use_word" task.
WORDS = ("love", "king", "death", "night", "heart", "crown", "blood", "heaven", "honour", "sword", "fair",
         "sweet", "eyes", "hand", "life", "time", "world", "soul", "lord", "grace", "war", "peace", "fear",
         "tears", "truth", "fortune", "gold", "sleep", "day", "queen", "father", "son", "friend", "joy",
         "nature", "earth", "sea", "fire", "god", "heavens")

_WORD_SET = frozenset(WORDS)
_HEADING = re.compile(r"([A-Z][A-Za-z'\-]*(?: [A-Za-z'\-]+){0,3})\.?")
_DIRECTION = re.compile(r"\[[^\]]*\]")  # a stage direction, on one line or several
_NOT_SPEAKERS = {"ACT", "SCENE", "EXIT", "EXEUNT", "ENTER"}


@dataclass(frozen=True)
class Scene:
    """One document of the offline corpus: a scene of a play (or a whole poem), with its split."""

    source: str  # "shakespeare/hamlet", as stream_documents labels it
    index: int  # its place among the documents of that file (0 = a play's title page and cast)
    text: str
    split: str  # "train" | "validation", the corpus's own split of this text

    @property
    def stem(self) -> str:
        return self.source.rpartition("/")[2]

    @property
    def scene_id(self) -> str:
        """A short fingerprint of the text (CRC-32), to match a row with its corpus document."""
        return f"{zlib.crc32(self.text.encode('utf-8')):08x}"

    @property
    def is_play_scene(self) -> bool:
        return self.stem in PLAYS and self.index > 0


@functools.lru_cache(maxsize=1)
def corpus_scenes() -> tuple[Scene, ...]:
    """Every document of the offline corpus, with the split ``stream_documents`` puts it in.

    Read by the data wing's own reader and split by its own hash function, so the
    documents and their sides are exactly those of ``stream_documents("shakespeare")``.
    """
    from ..data.rows import is_validation
    from ..data.sources import shakespeare_documents

    counts: Counter[str] = Counter()
    scenes = []
    for doc in shakespeare_documents():
        src = doc["source"]
        scenes.append(Scene(src, counts[src], doc["text"], "validation" if is_validation(doc["text"]) else "train"))
        counts[src] += 1
    return tuple(scenes)


@functools.lru_cache(maxsize=2048)
def speeches(text: str) -> list[tuple[str, list[str]]]:
    """``[(speaker, lines), ...]`` of a scene: blocks that open with a name line ("HAMLET." / "Ham.").

    Stage directions (``[Exit.]``, also over several lines) are dropped, and runs of
    spaces in a line made one. (Cached: do not modify the result.)
    """
    out = []
    for block in re.split(r"\n\s*\n", text):
        lines = [line.strip() for line in block.strip().split("\n")]
        m = _HEADING.fullmatch(lines[0]) if len(lines) > 1 else None
        if m is None or lines[0].split()[0].upper().rstrip(".") in _NOT_SPEAKERS:
            continue
        body = [" ".join(line.split()) for line in _DIRECTION.sub("", "\n".join(lines[1:])).split("\n")]
        body = [line for line in body if line]
        if body:
            out.append((m.group(1), body))
    return out


_WORD = re.compile(r"[A-Za-z']+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text)


def _cut(line: str, max_chars: int) -> str:
    """``line`` shortened to ``max_chars`` at a word boundary."""
    return line if len(line) <= max_chars else line[:max_chars].rsplit(" ", 1)[0]


def is_verse_like(text: str) -> bool:
    """One line of 4 to 14 words, at most 90 characters, starting with a capital letter."""
    line = text.strip()
    return bool(line) and "\n" not in line and line[0].isupper() and len(line) <= 90 \
        and 4 <= len(_words(line)) <= 14


def has_word(text: str, word: str) -> bool:
    """Whether ``word`` occurs in ``text`` as a whole word (case-insensitive)."""
    return re.search(rf"(?<![A-Za-z']){re.escape(word)}(?![A-Za-z'])", text, re.IGNORECASE) is not None


def _norm(text: str) -> str:
    return " ".join(text.strip().strip(".!?,;:'\"").split()).casefold()


def check_reply(row: dict[str, Any], reply: str) -> bool:
    """Whether ``reply`` solves the row's task (see the module docstring for each check)."""
    if row["task"] == "use_word":
        line = reply.strip()
        return is_verse_like(line) and has_word(line, row["word"])
    return _norm(reply) == _norm(row["answer"])


# ------------------------------------------------------------------------------ building the rows
def _row(scene: Scene, task: str, prompt: str, answer: str, **extra: Any) -> dict[str, Any]:
    return {"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": answer}],
            "task": task, "answer": answer, "source": scene.source, "scene": scene.index,
            "scene_id": scene.scene_id, "split": scene.split, **extra}


def _first_line(lines: list[str], max_chars: int, last: bool = False) -> str | None:
    """The first (or last) line of a speech with at least 3 words, cut to ``max_chars``."""
    for line in (reversed(lines) if last else lines):
        if len(_words(line)) >= 3:
            return _cut(line, max_chars)
    return None


def _scene_rows(scene: Scene, tasks: Sequence[str], per_scene: int, max_chars: int, seed: int) -> list[dict]:
    rng = random.Random(f"{seed}/{scene.source}/{scene.index}")
    rows: list[dict] = []
    title, genre = PLAYS.get(scene.stem, (None, None))
    said = speeches(scene.text) if scene.is_play_scene else []
    names = sorted({s for s, _ in said})
    if "speaker" in tasks:
        picks = []
        for k in range(1, len(said)):
            (prev, prev_lines), (who, _) = said[k - 1], said[k]
            others = [n for n in names if n not in (prev, who)]
            line = _first_line(prev_lines, max_chars, last=True)
            if who != prev and others and line:
                picks.append((prev, line, who, others))
        for prev, line, who, others in rng.sample(picks, min(per_scene, len(picks))):
            a, b = sorted([who, rng.choice(others)])
            rows.append(_row(scene, "speaker", f"{prev}: {line}\nWho answers, {a} or {b}?", who,
                             choices=[a, b]))
    lines = [(s, line) for s, body in said if (line := _first_line(body, max_chars)) and len(_words(line)) >= 4]
    for task, answer, question in (("play", title, "Which play is this from?"),
                                   ("genre", genre, "Comedy, history or tragedy?")):
        if task in tasks and answer and lines:
            for who, line in rng.sample(lines, min(per_scene, len(lines))):
                rows.append(_row(scene, task, f"{who}: {line}\n{question}", answer))
    if "use_word" in tasks:
        verse = [line for _, body in said for line in body] if scene.is_play_scene else \
            [line.strip() for line in scene.text.split("\n")] if scene.stem not in PLAYS else []
        verse = [line for line in verse if is_verse_like(line)]
        found: dict[str, list[str]] = {}
        for line in verse:  # the word among the first two: a reply a small model can learn to start
            for w in sorted(_WORD_SET.intersection(word.lower() for word in _words(line)[:2])):
                found.setdefault(w, []).append(line)
        for w in rng.sample(sorted(found), min(per_scene, len(found))):
            rows.append(_row(scene, "use_word", f'Write a line of verse with the word "{w}".',
                             rng.choice(found[w]), word=w))
    return rows


def instruction_set(split: str, *, tasks: Sequence[str] = TASKS, per_scene: int = 2, max_chars: int = 80,
                    seed: int = 0) -> list[dict[str, Any]]:
    """The rows of ``split`` ("train" or "validation"): up to ``per_scene`` rows per task and scene.

    Deterministic for given arguments. ``max_chars`` bounds the quoted line (the
    defaults fit chapter 05's 64-token context with the byte-level BPE tokenizer).
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    unknown = sorted(set(tasks) - set(TASKS))
    if unknown or not tasks:
        raise ValueError(f"unknown tasks {unknown or list(tasks)}: choose from {list(TASKS)}")
    if isinstance(per_scene, bool) or not isinstance(per_scene, int) or per_scene < 1:
        raise ValueError(f"per_scene must be an integer >= 1, got {per_scene!r}")
    rows = []
    for scene in corpus_scenes():
        if scene.split == split:
            rows += _scene_rows(scene, tuple(tasks), per_scene, max_chars, seed)
    return rows


def _passages(text: str, max_chars: int) -> list[str]:
    """A scene cut into runs of whole speeches ("NAME.\\nline\\n...") of at most ``max_chars`` characters."""
    chunks, current = [], ""
    for who, body in speeches(text):
        speech = f"{who}.\n" + "\n".join(body)
        if current and len(current) + 2 + len(speech) > max_chars:
            chunks.append(current)
            current = ""
        current = (current + "\n\n" + speech if current else speech)[:max_chars]
    return chunks + ([current] if current else [])


def genre_examples(split: str, *, max_chars: int = 300, per_scene: int = 4, seed: int = 0,
                   held_out: Sequence[str] = GENRE_HELD_OUT) -> list[dict[str, str]]:
    """Passages of plays labelled with their genre (:data:`GENRE_SOURCE`), split by play.

    ``"validation"`` holds every scene of the plays in ``held_out`` (file stems, at
    least one of each genre; :data:`GENRE_HELD_OUT` by default), ``"train"`` every
    scene of the other plays: no play has scenes on both sides, so validation asks
    for the genre of plays the classifier never had a label for. This split does not
    follow the corpus's split by scene: a model pretrained on the corpus's training
    split has read most scenes of the held-out plays, as text without a label.

    Rows ``{"text", "label", "source", "scene_id", "corpus_split"}``: up to
    ``per_scene`` passages per scene, each a run of whole speeches ("NAME.\\nline\\n...")
    of at most ``max_chars`` characters, as the corpus prints them; ``corpus_split``
    is the scene's side in the corpus (``"validation"``: never read in pretraining).
    Plays without a Folio genre are left out.
    """
    if split not in ("train", "validation"):
        raise ValueError(f"split must be 'train' or 'validation', not {split!r}")
    held = set(held_out)
    unknown = sorted(held - {stem for stem, (_, genre) in PLAYS.items() if genre is not None})
    missing = sorted(set(GENRES) - {PLAYS[stem][1] for stem in held - set(unknown)})
    if unknown or missing:
        raise ValueError(f"held_out must name plays with a Folio genre (file stems, e.g. {GENRE_HELD_OUT[0]!r}), "
                         f"at least one of each genre: unknown {unknown}, no play held out for {missing}")
    out = []
    for scene in corpus_scenes():
        genre = PLAYS.get(scene.stem, (None, None))[1]
        if not scene.is_play_scene or genre is None or (scene.stem in held) != (split == "validation"):
            continue
        chunks = _passages(scene.text, max_chars)
        rng = random.Random(f"{seed}/{scene.source}/{scene.index}/genre")
        for k in sorted(rng.sample(range(len(chunks)), min(per_scene, len(chunks)))):
            out.append({"text": chunks[k], "label": genre, "source": scene.source, "scene_id": scene.scene_id,
                        "corpus_split": scene.split})
    return out


# ------------------------------------------------------------------------------ baselines and scores
def majority_baseline(train_rows: Iterable[dict], val_rows: Sequence[dict]) -> dict[str, dict[str, Any]]:
    """Per task: the most common training answer and its accuracy on ``val_rows`` (always giving it).

    For two-choice "speaker" rows the chance level, 0.5, is the fairer floor (also reported).
    """
    by_task: dict[str, Counter[str]] = {}
    for r in train_rows:
        by_task.setdefault(r["task"], Counter())[r["answer"]] += 1
    out = {}
    for task, counts in by_task.items():
        answer = min(counts, key=lambda a: (-counts[a], a))
        rows = [r for r in val_rows if r["task"] == task]
        acc = sum(check_reply(r, answer) for r in rows) / len(rows) if rows else float("nan")
        out[task] = {"answer": answer, "accuracy": acc, "chance": 0.5 if task == "speaker" else None}
    return out


def task_accuracy(rows: Sequence[dict], replies: Sequence[str]) -> dict[str, float]:
    """Per task, the fraction of ``replies`` (one per row, in order) that pass :func:`check_reply`."""
    if len(rows) != len(replies):
        raise ValueError(f"{len(rows)} rows but {len(replies)} replies: give one reply per row")
    right: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for r, reply in zip(rows, replies):
        total[r["task"]] += 1
        right[r["task"]] += check_reply(r, reply)
    return {t: right[t] / total[t] for t in total}


def answer_rows(model: Any, rows: Sequence[dict], max_new_tokens: int = 24, **sampling: Any) -> list[str]:
    """The model's reply to each row's prompt (its messages without the last, the reference answer); greedy."""
    from .chat import chat_reply

    return [chat_reply(model, r["messages"][:-1], max_new_tokens=max_new_tokens, **sampling) for r in rows]


# ------------------------------------------------------------------------------ your own conversations
def read_conversations(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a JSON Lines file, one ``{"messages": [{"role": ..., "content": ...}, ...]}`` object a line.

    Other fields of a row are kept; blank lines are skipped. A bad line raises a
    ValueError naming the file, the line and the expected format.
    """
    from ..data.rows import json_lines
    from .chat import FORMAT_HINT, check_messages

    path = Path(path)
    rows = []
    with open(path, encoding="utf-8-sig") as f:
        for n, row in json_lines(f, path, f'each line must be one object {{"messages": [...]}}; {FORMAT_HINT}'):
            if not isinstance(row, dict):
                raise ValueError(f'{path}, line {n}: a JSON {type(row).__name__}, not an object {{"messages": [...]}}')
            rows.append({**row, "messages": check_messages(row, f"{path}, line {n}")})
    if not rows:
        raise ValueError(f"{path} holds no conversations; {FORMAT_HINT}, one JSON object per line")
    return rows


def write_conversations(rows: Iterable[dict[str, Any]], path: str | Path) -> Path:
    """Write rows as JSON Lines (UTF-8), readable by :func:`read_conversations`."""
    path = Path(path)
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    return path


def hub_conversations(repo: str = "HuggingFaceTB/smol-smoltalk", split: str = "train", limit: int = 1000,
                      column: str = "messages") -> list[dict[str, Any]]:
    """The first ``limit`` conversations of a Hub dataset in the messages format, streamed (online only).

    Raises ConnectionError (within a few seconds, see ``hub_reachable``) when the
    Hub does not answer: use a local JSONL file with :func:`read_conversations` then.
    A dataset without ``column`` gives a ValueError naming its columns (pass ``column=...``).
    """
    from ..data.sources import hub_rows
    from .chat import check_messages

    fix = "use a local JSONL file in the same format with read_conversations(path)"
    return [{"messages": check_messages(row[column], f"{repo}, row {k}")}
            for k, row in hub_rows(repo, split, limit, offline_fix=fix, columns=[column],
                                    column_fix="pass column=...")]


# ------------------------------------------------------------------------------ the later chapters' entry point
def get_chat_model(verbose: bool = True, min_context: int | None = None) -> Any:
    """The chat model chapter 08 finetuned (from ``artifacts_dir("ch08_sft")``), or one finetuned now.

    If chapter 08 has not been run, finetunes chapter 05's model (:func:`get_trained_model`,
    itself trained first if missing) on chapter 08's instruction set with chapter 08's
    recipe (SFT with early stopping on the validation rows: about a minute at full size,
    seconds in quick mode), saves it there, and says which happened.
    ``min_context``: the fewest tokens of context the caller needs (chapter 10's prompts
    and replies need 64). When chapter 05's model sees fewer (as quick mode's does), the
    same recipe runs on ``get_trained_model(min_context=...)`` into
    ``artifacts_dir("ch08_sft_ctx<N>")`` instead.
    """
    from ..config import artifacts_dir, pick, set_seed, shown_path
    from ..training.checkpoint import find_checkpoint
    from ..training.config import TrainConfig
    from ..training.loop import get_trained_model, trained_model_context
    from .chat import EarlyStopping, load_chat_model, sft

    own = min_context is None or trained_model_context() >= min_context
    out = artifacts_dir("ch08_sft" if own else f"ch08_sft_ctx{min_context}")
    ckpt = find_checkpoint(out)
    if ckpt is not None:
        if verbose:
            what = "chapter 08's chat model" if own else f"a {min_context}-token chat model"
            print(f"get_chat_model: loaded {what} from {shown_path(ckpt)}")
        return load_chat_model(ckpt)
    base = get_trained_model(verbose, min_context=min_context)
    steps = pick(full=1500, quick=20)
    if verbose:
        print(f"get_chat_model: no chat model in {shown_path(out)}; finetuning a {base.config.block_size}-token "
              f"model on chapter 08's instruction set (at most {steps} steps) ...")
    set_seed(0)
    cfg = TrainConfig(batch_size=16, max_steps=steps, warmup_steps=max(1, steps // 20), lr=2e-3, min_lr=2e-4,
                      eval_interval=pick(full=100, quick=5), compile=False)
    result = sft(base, instruction_set("train"), instruction_set("validation"), cfg, out_dir=out, eval_examples=200,
                 callback=EarlyStopping(patience=3, min_delta=0.01), live="off")
    if verbose:
        print(f"get_chat_model: finetuned in {result.train_time_s:.0f} s ({result.step} steps); saved to "
              f"{shown_path(result.checkpoint)}")
    return load_chat_model(find_checkpoint(out))
