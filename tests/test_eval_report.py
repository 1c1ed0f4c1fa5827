"""The report card (``python -m minigpt_helpers eval``) and the course's task under lm-evaluation-harness.

* The task file that lm_eval reads is the task: the same items as ``shakespeare_next_line()``.
* lm_eval, run on a ``save_hf`` folder with the course's task folder, picks the same
  answer as ``evaluate_choices`` on every item.
* ``eval --checkpoint`` prints the card and writes ``eval.json``; bad input is one line
  on stderr and exit status 2.
"""

from __future__ import annotations

import json

import pytest
import torch

from minigpt_helpers import (
    GPT,
    LM_EVAL_TASKS,
    CharTokenizer,
    GPTConfig,
    evaluate_choices,
    items_within_window,
    report_card,
    run_lm_eval,
    save_checkpoint,
    save_hf,
    shakespeare_next_line,
    training_texts,
)
from minigpt_helpers.cli import main
from minigpt_helpers.evaluation.lm_eval_tasks import next_line


@pytest.fixture(scope="module")
def corpus_model() -> GPT:
    """A tiny model whose character vocabulary covers the corpus (unknown characters map to one id)."""
    tok = CharTokenizer.train(training_texts("shakespeare", 200_000), unk=True)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.tokenizer = tok
    return model.eval()


def test_the_task_file_lm_eval_reads_holds_the_task():
    rows = next_line.load()["test"]
    items = shakespeare_next_line(len(rows))
    assert len(rows) == 600
    assert [r["context"] for r in rows] == [it["context"] for it in items]
    assert [r["choices"] for r in rows] == [it["choices"] for it in items]
    assert [r["label"] for r in rows] == [it["label"] for it in items]
    assert (LM_EVAL_TASKS / "shakespeare_next_line.yaml").is_file()


@pytest.mark.slow
def test_lm_eval_picks_the_same_answer_as_evaluate_choices_on_every_item(corpus_model, tmp_path):
    pytest.importorskip("lm_eval")
    n = 40
    save_hf(corpus_model, tmp_path / "hf")
    theirs = run_lm_eval(tmp_path / "hf", limit=n)["shakespeare-next-line"]
    ours = evaluate_choices(corpus_model, shakespeare_next_line(n))
    assert theirs["n"] == n
    assert theirs["predictions"] == ours["predictions"]  # item by item, not only the same mean
    assert theirs["acc"] == pytest.approx(ours["acc"])
    assert ours["n_truncated"] > 0  # contexts longer than the 96-character window: both cut them the same way


def test_run_lm_eval_names_the_fix_for_a_folder_without_a_model(tmp_path):
    with pytest.raises(FileNotFoundError, match="save_hf"):
        run_lm_eval(tmp_path)


def test_the_report_card_measures_what_it_prints(corpus_model):
    card = report_card(corpus_model, data="shakespeare", limit=20, trainer={"tokens": 1000, "train_time": 2.5,
                                                                             "step": 7})
    assert card["parameters"] == sum(p.numel() for p in corpus_model.parameters())
    assert (card["training_tokens"], card["training_seconds"], card["steps"]) == (1000, 2.5, 7)
    assert 4 < card["val_bpb"] < 12  # an untrained model: about log2(vocabulary) bits per character
    task = card["tasks"]["shakespeare-next-line"]
    assert task["n"] == 20 and task["chance"] == 0.25
    assert task["acc_ci"][0] <= task["acc"] <= task["acc_ci"][1]
    with pytest.raises(ValueError, match="choose from"):
        report_card(corpus_model, tasks=["mmlu"])


def test_a_short_window_leaves_out_the_items_it_cannot_read(corpus_model):
    """A 32-character window cannot hold many lines: the card scores the items that fit and says how many it left."""
    short = GPT(GPTConfig(**{**corpus_model.config.to_dict(), "block_size": 32}))
    short.tokenizer = corpus_model.tokenizer
    items = shakespeare_next_line(60)
    fitting = items_within_window(short, items)
    assert 0 < len(fitting) < len(items)
    assert all(len(c) <= 32 for it in fitting for c in it["choices"])  # one character, one token
    assert all(any(len(c) > 32 for c in it["choices"]) for it in items if it not in fitting)
    task = report_card(short, limit=60)["tasks"]["shakespeare-next-line"]
    assert task["n"] == len(fitting) and task["left_out"] == len(items) - len(fitting)


@pytest.mark.slow
def test_the_eval_command_prints_the_card_and_writes_eval_json(corpus_model, tmp_path, capsys):
    ckpt = save_checkpoint(tmp_path / "run", corpus_model, step=3, trainer={"tokens": 384, "train_time": 1.0,
                                                                            "data_source": "shakespeare"})
    assert main(["eval", "--checkpoint", str(tmp_path / "run"), "--limit", "12"]) == 0
    out = capsys.readouterr().out
    card = json.loads((ckpt / "eval.json").read_text(encoding="utf-8"))
    assert card["training_tokens"] == 384 and card["data"] == "shakespeare"
    assert card["tasks"]["shakespeare-next-line"]["n"] == 12
    assert f"{card['val_bpb']:.3f} bits per byte" in out
    assert "shakespeare-next-line" in out and "chance 25.0%" in out


@pytest.mark.parametrize("args, fix", [
    (["--tasks", "mmlu"], "choose from"),
    (["--limit", "0"], "positive integer"),
])
def test_the_eval_command_refuses_bad_input_in_one_line(corpus_model, tmp_path, capsys, args, fix):
    save_checkpoint(tmp_path / "run", corpus_model, step=1)
    with pytest.raises(SystemExit) as e:  # argparse's own errors exit 2 as well
        code = main(["eval", "--checkpoint", str(tmp_path / "run"), *args])
        raise SystemExit(code)
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and fix in err[0]


def test_the_eval_command_names_a_missing_checkpoint(tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "checkpoint" in err[0]
