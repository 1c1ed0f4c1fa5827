"""Verifiable rewards on chapter 08's instruction tasks, the fluency guard, and offline preference pairs.

The fluency guard and the pairs need a chat model that has read some text. conftest's ``trained_chat``
speaks lower-case greetings only (its characters cannot spell a Shakespeare line), so this module trains
its own: a tiny character-level GPT, SFT-trained for a few seconds on the training rows of the ``genre``
and ``use_word`` tasks.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from minigpt_helpers import GPT, GPTConfig, TrainConfig, set_seed
from minigpt_helpers.align import pairs as pairs_module
from minigpt_helpers.align.dpo import preference_source
from minigpt_helpers.align.pairs import (
    PreferencePairs,
    build_pair,
    fits,
    preference_pairs,
    reply_room,
    sample_replies,
)
from minigpt_helpers.align.rewards import (
    REWARDS,
    arithmetic_reward,
    fluency_bpb,
    fluency_bpb_batch,
    fluency_threshold,
    genre_reward,
    guarded_reward,
    last_number,
    play_reward,
    speaker_reward,
    task_reward,
    use_word_reward,
)
from minigpt_helpers.finetune.chat import render_conversation, sft
from minigpt_helpers.finetune.instructions import TASKS, instruction_set
from minigpt_helpers.tokenizers.base import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

CROWN = {"task": "use_word", "word": "crown", "answer": "Crown me, I say, and give me the golden round.",
         "messages": [{"role": "user", "content": 'Write a line of verse with the word "crown".'},
                      {"role": "assistant", "content": "Crown me, I say, and give me the golden round."}]}
GENRE = {"task": "genre", "answer": "tragedy",
         "messages": [{"role": "user", "content": "OTHELLO: Put out the light.\nComedy, history or tragedy?"}]}
PLAY = {"task": "play", "answer": "King Lear"}
SPEAKER = {"task": "speaker", "answer": "HAMLET", "choices": ["HAMLET", "HORATIO"]}
GIBBERISH = "Qxzv jjwq zzpt vbkj crown xqqz"  # verse-like, with the word: the verifier passes it


# ------------------------------------------------------------------------------ the verifiers
@pytest.mark.parametrize("reply, expected", [
    ("Upon my head they placed a fruitless crown", 1.0),
    ("Upon my head they placed a fruitless CROWN.", 1.0),  # any case, punctuation around it
    ("The crown, the sceptre and the sword are mine", 1.0),
    ("  Give me the crown, and let me go in peace  ", 1.0),  # outer spaces
    ("Upon my head they placed a fruitless crowns", 0.0),  # the word inside another word
    ("The crowned king rode out to meet his foes", 0.0),
    ("Upon my head they placed a fruitless hat", 0.0),  # no word
    ("crown", 0.0),  # the word alone is not a line of verse
    ("Upon my head they placed\na fruitless crown", 0.0),  # two lines
    ("Crown crown crown crown", 1.0),  # the verifier alone can be hacked: what the fluency guard is for
])
def test_use_word_reward(reply, expected):
    assert use_word_reward(CROWN, reply) == expected
    assert task_reward(CROWN, reply) == expected


@pytest.mark.parametrize("fn, row, right, wrong", [
    (genre_reward, GENRE, ["tragedy", "Tragedy.", "  TRAGEDY! "],
     ["comedy", "It is a tragedy", "tragedy, comedy, history", "", "tragic"]),
    (play_reward, PLAY, ["King Lear", "king lear.", "King  Lear"], ["Lear", "King Lear and Hamlet", "Hamlet"]),
    (speaker_reward, SPEAKER, ["HAMLET", "Hamlet"], ["HORATIO", "HAMLET or HORATIO"]),
])
def test_label_rewards_name_the_exact_label(fn, row, right, wrong):
    for reply in right:
        assert fn(row, reply) == 1.0 == task_reward(row, reply), reply
    for reply in wrong:
        assert fn(row, reply) == 0.0 == task_reward(row, reply), reply


def test_task_reward_dispatches_and_names_the_tasks_it_verifies():
    # chapter 08's tasks (no line-count or format task besides use_word's verse check) and chapter 10's arithmetic
    assert set(REWARDS) == {*TASKS, "arithmetic"} and REWARDS["arithmetic"] is arithmetic_reward
    rows = instruction_set("validation")
    assert all(task_reward(r, r["answer"]) == 1.0 for r in rows)  # every reference answer passes its own task
    genre = next(r for r in rows if r["task"] == "genre")
    assert task_reward(genre, next(g for g in ("comedy", "history", "tragedy") if g != genre["answer"])) == 0.0
    for bad in ({"task": "chat", "answer": "hi"}, {"answer": "hi"}):
        with pytest.raises(ValueError, match="no verifier.*'genre'.*'use_word'"):
            task_reward(bad, "hi")
    with pytest.raises(ValueError, match="a 'genre' reward needs a 'genre' row.*task_reward"):
        genre_reward(PLAY, "King Lear")
    with pytest.raises(TypeError, match="reply must be a str"):
        play_reward(PLAY, None)


@pytest.mark.parametrize("text, number", [
    ("7", 7.0), ("-5", -5.0), ("It is -12.", -12.0), ("1,200", 1200.0), ("12.0", 12.0), ("3.25 apples", 3.25),
    ("3 + 4 = 7", 7.0), ("7 or 8", 8.0), ("10-3=7", 7.0), ("The answer is 7.", 7.0), ("seven", None), ("", None),
])
def test_last_number_reads_the_last_number_written(text, number):
    assert last_number(text) == number


@pytest.mark.parametrize("answer, reply, expected", [
    ("7", "7", 1.0), ("7", "3 + 4 = 7", 1.0),  # the working first, the answer last
    ("7", "The answer is 7.", 1.0), ("7", "7 or 8", 0.0),  # the last number counts, not any number
    ("7", "8 or 7", 1.0), ("7", "seven", 0.0), ("7", "", 0.0), ("7", "77", 0.0), ("7", "7.5", 0.0),
    ("1200", "1,200", 1.0), ("1,200", "1200", 1.0),  # commas between digits are not part of the value
    ("12", "12.0", 1.0), ("12.0", "12", 1.0),  # compared as numbers, not as strings
    ("-3", "5 - 8 = -3", 1.0), ("-3", "3", 0.0), ("3", "-3", 0.0),  # the sign counts
])
def test_arithmetic_reward_compares_the_last_number_with_the_answer(answer, reply, expected):
    row = {"task": "arithmetic", "answer": answer, "messages": [{"role": "user", "content": "What is it?"}]}
    assert arithmetic_reward(row, reply) == expected
    assert task_reward(row, reply) == expected  # REWARDS["arithmetic"]


def test_an_arithmetic_answer_without_a_number_never_pays():
    row = {"task": "arithmetic", "answer": "n/a"}
    assert arithmetic_reward(row, "n/a") == 0.0 and arithmetic_reward(row, "7") == 0.0


# ------------------------------------------------------------------------------ a chat model that has read text
@pytest.fixture(scope="module")
def rows() -> dict[str, list[dict]]:
    return {s: instruction_set(s, tasks=("genre", "use_word"), per_scene=1) for s in ("train", "validation")}


@pytest.fixture(scope="module")
def text_chat(rows):
    """A 2-layer character-level chat model, SFT-trained for 250 steps on the training rows."""
    texts = [m["content"] for split in rows.values() for r in split for m in r["messages"]]
    tok = CharTokenizer.train(texts + [GIBBERISH])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=160, n_layer=2, n_head=2, n_embd=32, bias=False))
    model.tokenizer = tok
    cfg = TrainConfig(batch_size=8, max_steps=250, warmup_steps=20, lr=1e-2, min_lr=1e-3, eval_interval=250,
                      device="cpu", precision="fp32", compile=False, data_workers=0)
    result = sft(model, rows["train"], rows["validation"][:32], cfg, live="off", eval_examples=32)
    return result.model.eval()


def hand_bpb(model, prompt: list[dict], reply: str) -> float:
    """Bits per byte of the reply and its <|end|>, from the model's logits on the whole rendered conversation:
    the targets from the reply's first token on (an earlier assistant turn is context)."""
    ids, _ = render_conversation(model.tokenizer, [*prompt, {"role": "assistant", "content": reply}])
    start = len(render_conversation(model.tokenizer, prompt, add_generation_prompt=True)[0]) - 1
    with torch.no_grad():
        logits, _ = model(torch.tensor([ids[:-1]]))
    nats = F.cross_entropy(logits[0], torch.tensor(ids[1:]), reduction="none")[start:].sum()
    return float(nats) / math.log(2) / len(reply.encode("utf-8"))


def test_fluency_bpb_is_the_replys_bits_per_byte_and_batches(text_chat):
    replies = [CROWN["answer"], "Crown the king with gold and let him reign", GIBBERISH, "crown"]
    batch = fluency_bpb_batch(text_chat, CROWN, replies)
    for reply, b in zip(replies, batch):
        assert b == pytest.approx(hand_bpb(text_chat, CROWN["messages"][:1], reply), rel=1e-5)
        assert b == pytest.approx(fluency_bpb(text_chat, CROWN["messages"][:1], reply), rel=1e-5)  # a prompt list
    assert fluency_bpb(text_chat, 'Write a line of verse with the word "crown".', replies[0]) == pytest.approx(batch[0])
    two_turns = [*CROWN["messages"], {"role": "user", "content": "Another."}]  # the first reply is not scored
    assert fluency_bpb(text_chat, two_turns, replies[1]) == pytest.approx(hand_bpb(text_chat, two_turns, replies[1]))
    assert fluency_bpb(text_chat, CROWN, "") == math.inf
    text_chat.train()
    try:  # scored in eval mode, then left in the mode it was in
        assert fluency_bpb(text_chat, CROWN, replies[0]) == pytest.approx(batch[0]) and text_chat.training
    finally:
        text_chat.eval()
    with pytest.raises(TypeError, match="list of strings"):
        fluency_bpb_batch(text_chat, CROWN, "one string")


def test_the_fluency_guard_passes_lines_and_stops_the_hack(text_chat, rows):
    train = [r for r in rows["train"] if r["task"] == "use_word"][:96]
    max_bpb = fluency_threshold(text_chat, train, [r["answer"] for r in train], quantile=0.95)
    val = [r for r in rows["validation"] if r["task"] == "use_word"][:40]
    fluent = [fluency_bpb(text_chat, r, r["answer"]) <= max_bpb for r in val]
    assert sum(fluent) >= 0.8 * len(val)  # held-out lines of verse are fluent
    assert fluency_bpb(text_chat, CROWN, "crown") > max_bpb  # the word alone
    assert fluency_bpb(text_chat, CROWN, GIBBERISH) > max_bpb

    guarded = guarded_reward(use_word_reward, text_chat, max_bpb)
    line = next(r for r, ok in zip(val, fluent) if ok)
    assert use_word_reward(CROWN, GIBBERISH) == 1.0 and guarded(CROWN, GIBBERISH) == 0.0  # hacked, then guarded
    assert guarded(line, line["answer"]) == 1.0
    assert guarded(line, "") == 0.0 and guarded(line, "Upon my head they placed a fruitless hat") == 0.0
    assert guarded.batch(CROWN, [GIBBERISH, CROWN["answer"], "   "]) == [0.0, guarded(CROWN, CROWN["answer"]), 0.0]
    plus_minus = guarded_reward(lambda row, reply: 2 * use_word_reward(row, reply) - 1, text_chat, max_bpb)
    assert plus_minus(CROWN, GIBBERISH) == 0.0 and plus_minus(CROWN, "") == -1.0  # takes reward away, never gives
    with pytest.raises(ValueError, match="max_bpb must be a number > 0.*fluency_threshold"):
        guarded_reward(use_word_reward, text_chat, 0)


# ------------------------------------------------------------------------------ preference pairs
def test_build_pair_chooses_a_passing_sample_else_the_reference():
    pair, outcome = build_pair(GENRE, ["comedy", "Tragedy", "history", "tragedy"])
    assert outcome == "pair" and (pair["chosen"], pair["rejected"], pair["source"]) == ("Tragedy", "comedy", "sample")
    pair, outcome = build_pair(GENRE, ["comedy", "history"])
    assert (pair["chosen"], pair["rejected"], pair["source"]) == ("tragedy", "comedy", "reference")
    assert build_pair(GENRE, ["tragedy", "Tragedy."]) == (None, "skipped")  # nothing to correct
    assert build_pair(GENRE, ["comedy"], lambda row, reply: 0.0) == (None, "no_chosen")  # the reference fails too
    pair, _ = build_pair(CROWN, ["crown"])
    assert pair["messages"] == CROWN["messages"][:1] and pair["word"] == "crown" and pair["task"] == "use_word"


def test_preference_pairs_are_deterministic_verified_and_from_training_rows(text_chat, rows):
    genre = [r for r in rows["train"] if r["task"] == "genre"]
    train = genre[::97][:6] + [r for r in rows["train"] if r["task"] == "use_word"][:2]  # rows of several plays
    kw = dict(samples=4, max_new_tokens=12, temperature=1.0)
    pairs = preference_pairs(text_chat, train, seed=0, **kw)
    assert isinstance(pairs, PreferencePairs) and len(pairs) + pairs.skipped + pairs.no_chosen == len(train)
    assert pairs.no_chosen == 0 and len(pairs) >= 2
    assert preference_pairs(text_chat, train, seed=0, **kw) == pairs  # the same seed, the same pairs
    assert preference_pairs(text_chat, train[::-1], seed=0, **kw) == pairs[::-1]  # seeded per row, not per position
    assert preference_pairs(text_chat, train, seed=1, **kw) != pairs
    for p in pairs:
        assert task_reward(p, p["chosen"]) == 1.0 and task_reward(p, p["rejected"]) == 0.0
        assert p["split"] == "train" and [m["role"] for m in p["messages"]] == ["user"]
        assert p["source"] in ("sample", "reference")
    assert "reference" in {p["source"] for p in pairs}  # 12 characters never make a line of verse
    train_scenes = {r["scene_id"] for r in rows["train"]}
    assert {p["scene_id"] for p in pairs} <= train_scenes
    with pytest.raises(ValueError, match="validation split.*instruction_set\\('train'\\)"):
        preference_pairs(text_chat, train + rows["validation"][:1], **kw)


def test_preference_pairs_with_another_verifier_choose_passing_samples(text_chat, rows):
    """The tiny model rarely writes a right label; a lenient verifier (the label's first letter) lets its own
    samples be chosen, and rows whose samples all pass be skipped."""
    def first_letter(row, reply):
        return float(reply[:1].lower() == row["answer"][:1].lower())

    train = [r for r in rows["train"] if r["task"] == "genre"][::53][:10]
    pairs = preference_pairs(text_chat, train, samples=4, max_new_tokens=4, reward_fn=first_letter)
    assert "sample" in {p["source"] for p in pairs} and len(pairs) + pairs.skipped == len(train)
    for p in pairs:
        assert first_letter(p, p["chosen"]) == 1.0 and first_letter(p, p["rejected"]) == 0.0


# ------------------------------------------------------------------------------ pairs that fit the context
def long_prompt_row(model, room: int, answer: str) -> dict:
    """A row whose prompt leaves exactly ``room`` reply tokens in the tiny chat model's context (one token a
    character), the answer the reference; its task is "echo" (verified by :func:`says_answer`)."""
    tok, block = model.tokenizer, model.config.block_size
    overhead = len(render_conversation(tok, [{"role": "user", "content": ""}], add_generation_prompt=True)[0])
    text = ("hi there ok bye " * 4)[: block - room - overhead]
    return {"messages": [{"role": "user", "content": text}], "answer": answer, "task": "echo"}


def says_answer(row, reply: str) -> float:
    return float(reply == row["answer"])


def test_reply_room_and_fits_count_the_tokens_after_the_prompt(trained_chat):
    model = trained_chat[0].model  # block_size 32, one token per character
    tok, block = model.tokenizer, model.config.block_size
    prompt = [{"role": "user", "content": "hi"}]
    ids, _ = render_conversation(tok, prompt, add_generation_prompt=True)
    assert reply_room(model, prompt) == block - len(ids) > 0
    room = reply_room(model, prompt)
    assert fits(model, prompt, "y" * room) and not fits(model, prompt, "y" * (room + 1))  # + <|end|>: block + 1 ids
    row = long_prompt_row(model, 3, "yo")
    assert reply_room(model, row["messages"]) == 3
    assert reply_room(model, long_prompt_row(model, 0, "yo")["messages"]) == 0


def test_sampled_replies_are_cut_to_the_room_left(trained_chat):
    model = trained_chat[0].model
    row = long_prompt_row(model, 3, "yo")
    replies = sample_replies(model, row, samples=6, max_new_tokens=40, temperature=2.0)
    assert len(replies) == 6 and all(len(model.tokenizer.encode(r)) <= 3 for r in replies)
    assert max(len(r) for r in replies) == 3  # at temperature 2 some reply uses all the room
    assert all(fits(model, row["messages"], r) for r in replies)
    assert sample_replies(model, long_prompt_row(model, 0, "yo"), samples=2) == []  # no room: no replies


def test_every_preference_pair_fits_the_context_dpo_trains_in(trained_chat):
    """A small-context model and long prompts: the pairs preference_pairs keeps can all be rendered whole by DPO's
    batch source; a row whose reference answer does not fit gives no pair and counts in no_chosen."""
    model = trained_chat[0].model
    block = model.config.block_size
    rows = [long_prompt_row(model, room, "yo") for room in (2, 3, 5)]
    rows.append(long_prompt_row(model, 3, "ciao ciao"))  # 9 characters: the reference does not fit in 3
    pairs = preference_pairs(model, rows, samples=4, max_new_tokens=40, temperature=2.0, reward_fn=says_answer)
    assert len(pairs) + pairs.skipped + pairs.no_chosen == len(rows)
    assert pairs.no_chosen == 1 and "ciao ciao" not in {p["chosen"] for p in pairs}
    assert len(pairs) == 3  # the samples at temperature 2 are rarely exactly "yo": each row has a failing one
    for p in pairs:
        assert fits(model, p["messages"], p["chosen"]) and fits(model, p["messages"], p["rejected"])
    source = preference_source(model.tokenizer, pairs, pairs[:1], block)  # raises if one reply did not fit
    assert len(source.train) == len(pairs)
    with pytest.raises(ValueError, match="larger block_size"):  # what happened to a reply cut to max_new_tokens
        preference_source(model.tokenizer, [{**pairs[0], "rejected": "y" * 12}], [], block)


def test_a_sampled_reply_that_does_not_fit_once_re_encoded_is_dropped(trained_chat, monkeypatch):
    """A reply's text re-encoded can be longer than the tokens it was sampled as (a BPE merges differently): such
    a reply is never a pair's rejected (or chosen) reply."""
    model = trained_chat[0].model
    row = long_prompt_row(model, 3, "yo")
    monkeypatch.setattr(pairs_module, "sample_replies", lambda *a, **k: ["nope", "no", "yo"])  # "nope": 4 > 3
    pairs = preference_pairs(model, [row], reward_fn=says_answer)
    assert [(p["chosen"], p["rejected"], p["source"]) for p in pairs] == [("yo", "no", "sample")]
