"""Solutions to chapter 08's exercises (finetuning), runnable as a script.

    python solutions/08_finetuning_solutions.py                  # learner sizes
    MINIGPT_QUICK=1 python solutions/08_finetuning_solutions.py  # a minute or two

Uses chapter 05's model (``get_trained_model`` trains a small one if it is missing).
"""

from __future__ import annotations

import copy
import tempfile
from pathlib import Path

import minigpt_helpers as m
from minigpt_helpers import TrainConfig, pick, set_seed, train
from minigpt_helpers.finetune.classify import GPTClassifier, accuracy, classification_source
from minigpt_helpers.finetune.instructions import (
    GENRES,
    answer_rows,
    corpus_scenes,
    genre_examples,
    instruction_set,
    read_conversations,
    speeches,
    task_accuracy,
    write_conversations,
)
from minigpt_helpers.finetune.lora import count_parameters

STEPS = pick(full=300, quick=10)


def genre_run(model, source, mode: str, lr: float, **kwargs) -> tuple[float, int]:
    """(validation accuracy, trainable parameters) of one genre classifier trained for STEPS steps."""
    set_seed(0)
    clf = GPTClassifier(copy.deepcopy(model), GENRES, mode, **kwargs)
    trainable, _ = count_parameters(clf)
    cfg = TrainConfig(batch_size=16, max_steps=STEPS, warmup_steps=max(1, STEPS // 10), lr=lr, min_lr=lr / 10,
                      eval_interval=STEPS, compile=False)
    train(clf, source, cfg, live="off")
    return accuracy(clf, source), trainable


# ----------------------------------------------------------------------------- 1. LoRA's rank
def rank_sweep(model, source, ranks=(1, 2, 4, 8, 16)) -> list[tuple[int, float, int]]:
    """(rank, accuracy, trainable parameters) for LoRA at each rank, alpha = 2r (so alpha/r stays 2).

    Typically accuracy rises from rank 1 to 4 and then flattens: the task needs a
    low-rank update, and more rank only adds parameters (and noise) to fit.
    """
    out = []
    for r in ranks:
        acc, n = genre_run(model, source, "lora", 3e-3, lora={"r": r, "alpha": 2 * r})
        out.append((r, acc, n))
        print(f"rank {r:2d}: accuracy {acc:.3f}, trainable {n:,}")
    return out


# ----------------------------------------------------------------------------- 2. mean or last token
def pooling_comparison(model, source) -> dict[tuple[str, str], float]:
    """Accuracy of each mode with mean and last-token pooling.

    The head-only mode suffers most with ``"last"``: its GPT is frozen, and a
    pretrained GPT's last state is about the *next* token, not a summary of the
    passage. Training the blocks ("all", "lora") can teach the last position to
    summarise, so they lose less.
    """
    out = {}
    for mode, lr in (("head", 3e-3), ("all", 1e-3), ("lora", 3e-3)):
        for pooling in ("mean", "last"):
            out[mode, pooling] = genre_run(model, source, mode, lr, pooling=pooling)[0]
            print(f"{mode:5} {pooling:5}: accuracy {out[mode, pooling]:.3f}")
    return out


# ----------------------------------------------------------------------------- 3. your own task
def next_line_conversations(split: str, limit: int) -> list[dict]:
    """"What is the next line?" conversations from the scenes of ``split`` (same split as the corpus)."""
    rows = []
    for scene in corpus_scenes():
        if scene.split != split or not scene.is_play_scene:
            continue
        for who, lines in speeches(scene.text):
            lines = [line.strip() for line in lines if len(line.split()) >= 3]
            if len(lines) >= 2 and len(lines[0]) <= 60 and len(lines[1]) <= 60:
                rows.append({"messages": [{"role": "user", "content": f"{who}: {lines[0]}\nWhat is the next line?"},
                                          {"role": "assistant", "content": lines[1]}]})
                break
        if len(rows) >= limit:
            break
    return rows


def own_task(model) -> tuple[dict, dict]:
    """Per-task accuracy after SFT without and with the new task, written to and read back from JSONL."""
    with tempfile.TemporaryDirectory() as d:
        path = write_conversations(next_line_conversations("train", pick(full=2000, quick=50)), Path(d) / "mine.jsonl")
        mine = read_conversations(path)
    train_rows, val_rows = instruction_set("train"), instruction_set("validation")
    eval_rows = [r for t in ("play", "genre") for r in [r for r in val_rows if r["task"] == t][: pick(full=40, quick=3)]]
    steps = pick(full=1500, quick=10)
    scores = []
    for extra in ([], mine):
        set_seed(0)
        cfg = TrainConfig(batch_size=16, max_steps=steps, warmup_steps=max(1, steps // 20), lr=2e-3, min_lr=2e-4,
                          eval_interval=steps, compile=False)
        result = m.sft(copy.deepcopy(model), train_rows + extra, [], cfg, live="off")
        scores.append(task_accuracy(eval_rows, answer_rows(result.model.eval(), eval_rows)))
    print("without the new task:", scores[0], "\nwith it:             ", scores[1])
    return scores[0], scores[1]


if __name__ == "__main__":
    model = m.get_trained_model()
    src = classification_source(model.tokenizer, genre_examples("train"), genre_examples("validation"), GENRES,
                                model.config.block_size)
    rank_sweep(model, src)
    pooling_comparison(model, src)
    own_task(model)
