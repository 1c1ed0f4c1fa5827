"""Chapter 09's multiple-choice evaluation: score_choices against a hand computation (every tokenizer, a
modern model, a BPE merge across the boundary, a context beyond the window) and against lm_eval itself;
evaluate_choices on a rigged model; Wilson intervals; the offline shakespeare-next-line task; HellaSwag."""

from __future__ import annotations

import itertools
import json
import math
from types import SimpleNamespace

import pytest
import torch

from minigpt_helpers import GPT, CharTokenizer, GPTConfig, HFTokenizer
from minigpt_helpers.data.sources import document_rows, shakespeare_documents
from minigpt_helpers.evaluation.choices import encode_pair, evaluate_choices, score_choices, wilson_interval
from minigpt_helpers.evaluation.tasks import (
    hellaswag_item,
    hellaswag_items,
    shakespeare_next_line,
    write_jsonl_task,
)
from minigpt_helpers.finetune.instructions import corpus_scenes
from minigpt_helpers.tokenizers.bpe import BPETokenizer
from minigpt_helpers.tokenizers.sentencepiece import SentencePieceTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module

BLOCK = 64
MODERN = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True, tie_embeddings=False,
              bias=False)
CONTEXT = "HAMLET.\nTo be, or not to be, that is the question: "
CHOICES = ["Whether 'tis nobler in the mind to suffer", "I thank you", "and\nso", "ABC"]


@pytest.fixture(scope="module")
def text() -> str:
    """About 40,000 characters of the corpus: what the small tokenizers are trained on."""
    return "".join(d["text"] for d in itertools.islice(shakespeare_documents(), 12))[:40_000]


@pytest.fixture(scope="module")
def bpe(text: str) -> BPETokenizer:
    return BPETokenizer.train([text], vocab_size=400)


@pytest.fixture
def tokenizer(request: pytest.FixtureRequest, text: str, bpe: BPETokenizer):
    kind = request.param
    if kind == "char":
        return CharTokenizer.train([text, CONTEXT, *CHOICES])
    if kind in ("bpe", "modern"):
        return bpe
    if kind == "sentencepiece":
        return SentencePieceTokenizer.train([text], vocab_size=400)
    return HFTokenizer(request.getfixturevalue("local_hf_tokenizer"))


def tiny_model(vocab_size: int, seed: int = 0, **options) -> GPT:
    """A tiny GPT with weights moved well off their initial values, so its log-probabilities vary by token
    and position (at init they are all about -log(vocab_size), and a scoring bug would go unseen)."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=BLOCK, n_layer=2, n_head=2, n_embd=32, **options))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def by_hand(model: GPT, tok, context: str, choice: str) -> float:
    """lm_eval's recipe written out: move the context's trailing whitespace to the choice, tokenize the whole,
    take the tokens past the context's own token count as the choice's and put them after the context's
    tokens, keep the last block_size + 1, run the model once, sum log_softmax at the choice's positions."""
    kept = context.rstrip()
    choice = context[len(kept):] + choice
    context_ids = tok.encode_ordinary(kept)
    choice_ids = tok.encode_ordinary(kept + choice)[len(context_ids):]
    n_choice = len(choice_ids)
    ids = (context_ids + choice_ids)[-(BLOCK + 1):]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids[:-1]]))[0][0].double(), dim=-1)
    return sum(float(logp[t - 1, ids[t]]) for t in range(len(ids) - n_choice, len(ids)))


# ------------------------------------------------------------------------------ score_choices
@pytest.mark.parametrize("tokenizer", ["char", "bpe", "sentencepiece", "hf", "modern"], indirect=True)
def test_scores_match_the_hand_computation(tokenizer, request: pytest.FixtureRequest) -> None:
    modern = request.node.callspec.id == "modern"
    model = tiny_model(tokenizer.vocab_size, **(MODERN if modern else {}))
    model.train()
    scores = score_choices(model, CONTEXT, CHOICES, tokenizer=tokenizer, batch_size=3)
    for s, choice in zip(scores, CHOICES):
        assert s.choice == choice
        assert s.loglik == pytest.approx(by_hand(model, tokenizer, CONTEXT, choice), abs=1e-4)
        assert s.n_bytes == len(choice.encode("utf-8"))
        assert s.per_byte == pytest.approx(s.loglik / s.n_bytes)
        context_ids, choice_ids = encode_pair(tokenizer, CONTEXT, choice)
        assert s.n_tokens == len(choice_ids) >= 1 and s.loglik < 0
        assert s.truncated == (len(context_ids) + len(choice_ids) > BLOCK + 1)
    assert model.training, "score_choices must give the model back in train mode"
    one_by_one = [score_choices(model, CONTEXT, [c], tokenizer=tokenizer)[0].loglik for c in CHOICES]
    assert [s.loglik for s in scores] == pytest.approx(one_by_one, abs=1e-4)  # padding changes nothing


def test_the_model_s_own_tokenizer_is_the_default(bpe: BPETokenizer) -> None:
    model = tiny_model(bpe.vocab_size)
    with pytest.raises(ValueError, match="pass tokenizer="):
        score_choices(model, CONTEXT, CHOICES)
    model.tokenizer = bpe
    assert score_choices(model, CONTEXT, CHOICES) == score_choices(model, CONTEXT, CHOICES, tokenizer=bpe)


def test_a_bpe_merge_across_the_boundary_is_cut_at_the_context_s_token_count(bpe: BPETokenizer) -> None:
    context, choice = "I th", "ank you"
    ctx_ids, whole = bpe.encode_ordinary(context), bpe.encode_ordinary(context + choice)
    assert whole[:len(ctx_ids)] != ctx_ids, "the case needs a token that straddles the boundary"
    assert encode_pair(bpe, context, choice) == (ctx_ids, whole[len(ctx_ids):])
    model = tiny_model(bpe.vocab_size)
    (score,) = score_choices(model, context, [choice], tokenizer=bpe)
    assert score.n_tokens == len(whole) - len(ctx_ids)
    assert score.loglik == pytest.approx(by_hand(model, bpe, context, choice), abs=1e-4)
    # the model reads the context's own tokens, then the whole's tail: not the whole's tokens
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([whole[:-1]]))[0][0], dim=-1)
    as_one_string = sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx_ids), len(whole)))
    assert abs(score.loglik - as_one_string) > 1e-3


def test_trailing_whitespace_moves_to_the_choice_and_an_empty_context_is_end_of_text(bpe: BPETokenizer) -> None:
    assert encode_pair(bpe, "Good morrow ", "sir") == (bpe.encode_ordinary("Good morrow"), bpe.encode_ordinary(" sir"))
    assert encode_pair(bpe, " \n", "sir") == ([bpe.eot_id], bpe.encode_ordinary(" \nsir"))


def test_encode_pair_is_lm_eval_s(bpe: BPETokenizer) -> None:
    """lm_eval's own _encode_pair, given our tokenizer, cuts every pair as ours does."""
    model_api = pytest.importorskip("lm_eval.api.model")
    lm = SimpleNamespace(backend="causal", tok_encode=lambda s, **kw: bpe.encode_ordinary(s))
    for context, choice in [(CONTEXT, c) for c in CHOICES] + [("I th", "ank you"), ("Good morrow  ", "sir")]:
        assert encode_pair(bpe, context, choice) == model_api.TemplateLM._encode_pair(lm, context, choice)


def test_a_context_longer_than_the_window_keeps_its_last_tokens() -> None:
    tok = CharTokenizer.train(["abcdefghij klmnop"])
    model = tiny_model(tok.vocab_size)
    context, choice = "abcdefghij klmnop " * 8, "klm"
    (long,) = score_choices(model, context, [choice], tokenizer=tok)
    assert long.truncated
    assert long.loglik == pytest.approx(by_hand(model, tok, context, choice), abs=1e-4)
    # a character tokenizer: the window holds the last BLOCK + 1 - len(" klm") characters of the context
    (cut,) = score_choices(model, context.rstrip()[-(BLOCK + 1 - 4):], [" klm"], tokenizer=tok)
    assert not cut.truncated and cut.loglik == pytest.approx(long.loglik, abs=1e-5)
    with pytest.raises(ValueError, match="block_size"):
        score_choices(model, "a", ["b" * (BLOCK + 1)], tokenizer=tok)


def test_scores_match_lm_eval_s_hf_model(local_hf_tokenizer) -> None:
    """The same model exported to transformers and scored by lm_eval's HFLM gives the same log-likelihoods,
    including a pair lm_eval truncates on the left."""
    pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    from minigpt_helpers import to_hf

    tok = HFTokenizer(local_hf_tokenizer)
    model = tiny_model(tok.vocab_size, seed=1)
    context = "To be, or not to be, that is the question. " * 3 + "The research shows that small models "
    choices = ["learn quickly.", "goes on.", " research goes on. Hello world"]
    lm = HFLM(pretrained=to_hf(model), tokenizer=local_hf_tokenizer, batch_size=2, max_length=BLOCK)
    theirs = lm.loglikelihood([Instance("loglikelihood", {}, (context, c), i) for i, c in enumerate(choices)],
                              disable_tqdm=True)
    ours = score_choices(model, context, choices, tokenizer=tok)
    assert [s.loglik for s in ours] == pytest.approx([ll for ll, _ in theirs], abs=1e-4)
    assert any(s.truncated for s in ours)


@pytest.mark.parametrize("bad, match", [
    (dict(context=3), "context must be a string"),
    (dict(choices="abc"), "choices must be a list"),
    (dict(choices=[]), "choices must be a list"),
    (dict(choices=["a", ""]), "non-empty string"),
    (dict(batch_size=0), "batch_size"),
])
def test_score_choices_refuses_bad_arguments(bad: dict, match: str) -> None:
    tok = CharTokenizer.train(["abc"])
    args = dict(context="ab", choices=["a", "b"], tokenizer=tok, batch_size=2) | bad
    with pytest.raises(ValueError, match=match):
        score_choices(tiny_model(tok.vocab_size), args.pop("context"), args.pop("choices"), **args)


# ------------------------------------------------------------------------------ evaluate_choices
class Rigged(torch.nn.Module):
    """A 'model' that gives one token logit 5 and every other 0, at every position: log p(a) > log p(other)."""

    def __init__(self, vocab_size: int, favourite: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(block_size=8)
        self.logits = torch.nn.Parameter(torch.zeros(vocab_size))
        with torch.no_grad():
            self.logits[favourite] = 5.0

    def forward(self, idx: torch.Tensor):
        return self.logits.expand(*idx.shape, -1), None


def test_evaluate_choices_on_a_rigged_model_gives_the_known_accuracies(capsys: pytest.CaptureFixture) -> None:
    tok = CharTokenizer.train(["abcdx"])
    model = Rigged(tok.vocab_size, tok.encode("a")[0])
    # "ab" vs "c": log p(a) + log p(b) < log p(c) in sum, but above it per byte: acc wrong, acc_norm right
    items = [{"context": "x", "choices": ["ab", "c"], "label": 0}] * 3 \
        + [{"context": "x", "choices": ["c", "a", "d"], "label": 1}] * 2 \
        + [{"context": "x", "choices": ["a", "c"], "label": 1}] * 5
    result = evaluate_choices(model, items, tokenizer=tok, batch_size=4, progress=True)
    assert result["predictions"] == [1] * 3 + [1] * 2 + [0] * 5
    assert result["predictions_norm"] == [0] * 3 + [1] * 2 + [0] * 5
    assert (result["acc"], result["acc_norm"], result["n"]) == (0.2, 0.5, 10)
    assert result["chance"] == pytest.approx((8 * 0.5 + 2 / 3) / 10)
    assert result["acc_ci"] == wilson_interval(2, 10) and result["acc_norm_ci"] == wilson_interval(5, 10)
    assert result["labels"] == [it["label"] for it in items] and result["n_truncated"] == 0
    assert len(result["logliks"][3]) == 3
    assert "10 items: acc 0.200, acc_norm 0.500" in capsys.readouterr().out


def test_wilson_interval_against_known_values() -> None:
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(1.96**2 / (10 + 1.96**2))  # the closed form at 0 successes
    lo, hi = wilson_interval(30, 100)
    assert (lo, hi) == pytest.approx((0.21895, 0.39585), abs=1e-5)
    assert wilson_interval(70, 100) == pytest.approx((1 - hi, 1 - lo))
    assert wilson_interval(0, 0) == (0.0, 1.0)
    stats = pytest.importorskip("scipy.stats")
    ci = stats.binomtest(137, 600).proportion_ci(confidence_level=0.95, method="wilson")
    assert wilson_interval(137, 600, z=stats.norm.ppf(0.975)) == pytest.approx((ci.low, ci.high), abs=1e-12)
    with pytest.raises(ValueError, match="successes <= n"):
        wilson_interval(11, 10)


@pytest.mark.parametrize("items, match", [
    ("not a list", "non-empty list of dicts"),
    ([], "non-empty list of dicts"),
    ([{"context": "a", "choices": ["b", "c"]}], "item 0 must be a dict"),
    ([{"context": 1, "choices": ["b", "c"], "label": 0}], "item 0: context must be a string"),
    ([{"context": "a", "choices": ["b"], "label": 0}], "at least 2"),
    ([{"context": "a", "choices": ["b", 3], "label": 0}], "non-empty string"),
    ([{"context": "a", "choices": ["b", "c"], "label": 0}, {"context": "a", "choices": ["b", "c"], "label": 2}],
     r"item 1: label must be the index of the right choice, an int in 0\.\.1"),
    ([{"context": "a", "choices": ["b", "c"], "label": True}], "label must be the index"),
])
def test_bad_items_are_refused_with_the_fix(items, match: str) -> None:
    tok = CharTokenizer.train(["abc"])
    with pytest.raises(ValueError, match=match):
        evaluate_choices(tiny_model(tok.vocab_size), items, tokenizer=tok)


# ------------------------------------------------------------------------------ shakespeare-next-line
@pytest.fixture(scope="module")
def task() -> list[dict]:
    return shakespeare_next_line(600)


@pytest.fixture(scope="module")
def training_lines() -> set[str]:
    """Every line of every training document, read through the data wing's rows (what training reads)."""
    return {" ".join(line.split()) for d in document_rows("shakespeare", "train", verbose=False)
            for line in d["text"].split("\n")}


def test_the_task_is_deterministic_and_large_enough(task: list[dict]) -> None:
    assert len(task) == 600
    assert shakespeare_next_line(50) == task[:50]
    assert shakespeare_next_line(50, seed=1) != task[:50]
    assert all(len(it["choices"]) == 4 for it in task)
    with pytest.raises(ValueError, match="held-out .* yield \\d+ questions"):
        shakespeare_next_line(10**6)


def test_the_task_uses_held_out_scenes_only(task: list[dict], training_lines: set[str]) -> None:
    scenes = {s.scene_id: s for s in corpus_scenes()}
    for it in task:
        scene = scenes[it["scene_id"]]
        assert scene.split == "validation" and scene.source == it["source"]
        assert it["context"] + it["choices"][it["label"]] + "\n" in scene.text + "\n"  # contiguous, as printed
        assert it["context"].endswith("\n") and it["context"].count("\n") >= 4
        for j, (choice, sid) in enumerate(zip(it["choices"], it["choice_scene_ids"])):
            assert choice not in training_lines
            assert (sid == it["scene_id"]) == (j == it["label"]), "distractors come from other scenes"
            assert scenes[sid].split == "validation"
            assert choice in {" ".join(line.split()) for line in scenes[sid].text.split("\n")}


def test_the_answer_s_position_and_length_give_nothing_away(task: list[dict]) -> None:
    n = len(task)
    counts = [sum(it["label"] == k for it in task) / n for k in range(4)]
    assert all(0.19 < c < 0.31 for c in counts), counts
    lengths = [[len(c) for c in it["choices"]] for it in task]

    def accuracy(pick) -> float:
        return sum(pick(ls) == it["label"] for ls, it in zip(lengths, task)) / n

    longest = accuracy(lambda ls: max(range(4), key=ls.__getitem__))
    shortest = accuracy(lambda ls: min(range(4), key=ls.__getitem__))
    middle = accuracy(lambda ls: min(range(4), key=lambda j: abs(ls[j] - sum(ls) / 4)))
    assert all(0.19 < a < 0.31 for a in (longest, shortest, middle)), (longest, shortest, middle)
    close = [max(abs(x - ls[it["label"]]) for x in ls) <= 0.1 * ls[it["label"]] for ls, it in zip(lengths, task)]
    assert sum(close) >= 0.95 * n  # the four lengths are within 10% of each other


def test_write_jsonl_task_keeps_the_three_fields(task: list[dict], tmp_path) -> None:
    path = write_jsonl_task(task[:5], tmp_path / "next_line.jsonl")
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    assert rows == [{"context": it["context"], "choices": it["choices"], "label": it["label"]} for it in task[:5]]
    with pytest.raises(ValueError, match="label"):
        write_jsonl_task([{"context": "a", "choices": ["b", "c"], "label": 5}], tmp_path / "bad.jsonl")


# ------------------------------------------------------------------------------ HellaSwag
def test_hellaswag_offline_says_so_in_one_line_and_returns_none(monkeypatch, capsys) -> None:
    monkeypatch.setattr("minigpt_helpers.data.sources.hub_reachable", lambda *a, **k: (False, "offline in a test"))
    assert hellaswag_items(5) is None
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "HellaSwag" in out and "offline in a test" in out


def test_hellaswag_items_are_prepared_as_lm_eval_prepares_them() -> None:
    utils = pytest.importorskip("lm_eval.tasks.hellaswag.utils")
    from datasets import Dataset

    doc = {"activity_label": "Home and Garden", "ctx_a": "[header] How to plant a tree  [title] Dig a hole.",
           "ctx_b": "then you", "endings": ["water it [step] well.", "sing  to it.", "leave.", "eat the  [title] soil"],
           "label": "2"}
    theirs = utils.process_docs(Dataset.from_list([doc]))[0]
    ours = hellaswag_item(doc)
    assert ours["context"] == theirs["query"] and ours["label"] == theirs["gold"] == 2
    assert ours["choices"] == [" " + c for c in theirs["choices"]]  # lm_eval's target delimiter, a space


def test_per_byte_scores_are_finite_for_non_ascii_choices(bpe: BPETokenizer) -> None:
    model = tiny_model(bpe.vocab_size)
    scores = score_choices(model, "Straße", ["!", " Ünïcödé"], tokenizer=bpe)
    assert [s.n_bytes for s in scores] == [1, 12] and all(math.isfinite(s.per_byte) for s in scores)
