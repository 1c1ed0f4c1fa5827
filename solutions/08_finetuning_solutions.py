"""Solutions to chapter 08's exercises (finetuning), runnable as a script.

    python solutions/08_finetuning_solutions.py                  # learner sizes
    MINIGPT_QUICK=1 python solutions/08_finetuning_solutions.py  # under a minute

Uses chapter 05's model (``get_trained_model`` trains a small one if it is missing) and the chapter's
settings: section 1's genre classifier (300 steps, batch 16) and section 5's SFT at its 1,500-step
ceiling (no early stopping here, so that both runs get the same steps).
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
    TASKS,
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

STEPS = pick(full=300, quick=15)  # section 1's steps per classifier
SFT_STEPS = pick(full=1500, quick=20)  # section 5's ceiling, run in full: a comparison at equal steps


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
# The genre classifier with LoRA at ranks 1, 2, 4, 8 and 16 (alpha = 2r); accuracy against trainable
# parameters. Where does a larger rank stop helping?
def rank_sweep(model, source, ranks=(1, 2, 4, 8, 16)) -> list[tuple[int, float, int]]:
    """(rank, accuracy, trainable parameters) for LoRA at each rank, alpha = 2r (so alpha/r stays 2).

    The trainable parameters grow linearly with r (r (d_in + d_out) per adapted layer, plus
    the head). Accuracy stops rising once the task's update fits in the rank: more rank
    then only adds parameters to fit.
    """
    out = []
    print("== 1. LoRA's rank (genre classifier)")
    for r in ranks:
        acc, n = genre_run(model, source, "lora", 3e-3, lora={"r": r, "alpha": 2 * r})
        out.append((r, acc, n))
        print(f"rank {r:2d}: accuracy {acc:.3f}, trainable {n:,}")
    per_rank = {(n - out[0][2]) / (r - out[0][0]) for r, _, n in out[1:]}
    assert len(per_rank) == 1  # linear in r: the same number of parameters per unit of rank
    best = max(acc for _, acc, _ in out)
    enough = next(r for r, acc, _ in out if acc >= best - 0.02)  # within 2 points of the best rank
    print(f"{per_rank.pop():,.0f} trainable parameters per unit of rank; rank {enough} is within 0.02 of the best "
          f"accuracy ({best:.3f}): {'a larger rank stops helping there' if enough < ranks[-1] else 'it still helps'}")
    plot_ranks(out)
    return out


def plot_ranks(out: list[tuple[int, float, int]]) -> None:
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3))
    ax.plot([n for _, _, n in out], [acc for _, acc, _ in out], marker="o")
    for r, acc, n in out:
        ax.annotate(f"r={r}", (n, acc), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set(xscale="log", xlabel="trainable parameters", ylabel="validation accuracy", title="LoRA's rank")
    fig.tight_layout()
    path = m.artifacts_dir("ch08") / "lora_rank.png"
    fig.savefig(path, dpi=80)
    plt.close(fig)
    print(f"plot saved to {m.shown_path(path)}")


# ----------------------------------------------------------------------------- 2. mean or last token
# Section 1 again with pooling="last": which modes suffer most, and why the head-only mode most of all?
def pooling_comparison(model, source) -> dict[tuple[str, str], float]:
    """Accuracy of each mode with mean and last-token pooling.

    The head-only mode suffers most with ``"last"``: its GPT is frozen, and a
    pretrained GPT's last state is about the *next* token, not a summary of the
    passage. Training the blocks ("all", "lora") can teach the last position to
    summarise, so they lose less.
    """
    out = {}
    print("== 2. mean or last-token pooling")
    modes = (("head", 3e-3), ("all", 1e-3), ("lora", 3e-3))  # section 1's learning rates
    for mode, lr in modes:
        for pooling in ("mean", "last"):
            out[mode, pooling] = genre_run(model, source, mode, lr, pooling=pooling)[0]
            print(f"{mode:5} {pooling:5}: accuracy {out[mode, pooling]:.3f}")
    drop = {mode: out[mode, "mean"] - out[mode, "last"] for mode, _ in modes}
    worst = max(drop, key=drop.get)
    print("accuracy lost with the last token: " + ", ".join(f"{k} {v:+.3f}" for k, v in drop.items())
          + f"; {worst} suffers most")
    if not m.is_quick():  # quick mode's 15 steps leave every mode near the majority class
        assert worst == "head"  # a frozen GPT's last state predicts the next token; it summarises nothing
    return out


# ----------------------------------------------------------------------------- 3. your own task
# A JSONL file of conversations ("What is the next line?" from the corpus), read with
# read_conversations, added to the instruction set for SFT. Does it help or hurt the other tasks?
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
    """Per-task accuracy after SFT (section 5's settings) without and with the new task, read back from JSONL."""
    print("== 3. your own task: 'What is the next line?'")
    written = next_line_conversations("train", pick(full=2000, quick=50))
    with tempfile.TemporaryDirectory() as d:
        mine = read_conversations(write_conversations(written, Path(d) / "mine.jsonl"))
    assert mine == written  # the file holds exactly the conversations written
    train_rows, val_rows = instruction_set("train"), instruction_set("validation")
    per_task = pick(full=None, quick=3)  # section 5 scores every validation row (quick mode: 3 per task)
    eval_rows = [r for t in TASKS for r in [r for r in val_rows if r["task"] == t][:per_task]]
    scores = []
    for extra in ([], mine):
        set_seed(0)
        cfg = TrainConfig(batch_size=16, max_steps=SFT_STEPS, warmup_steps=max(1, SFT_STEPS // 20), lr=2e-3,
                          min_lr=2e-4, eval_interval=SFT_STEPS, compile=False)
        result = m.sft(copy.deepcopy(model), train_rows + extra, [], cfg, live="off")
        scores.append(task_accuracy(eval_rows, answer_rows(result.model.eval(), eval_rows)))
    print(f"{len(mine)} new conversations added to {len(train_rows)}; accuracy on {len(eval_rows)} validation rows:")
    print(f"{'task':9}{'without':>9}{'with':>7}")
    for task in TASKS:
        print(f"{task:9}{scores[0][task]:9.3f}{scores[1][task]:7.3f}")
    delta = sum(scores[1][t] - scores[0][t] for t in TASKS) / len(TASKS)
    print(f"mean change over the four tasks {delta:+.3f}: adding the task "
          f"{'helps' if delta > 0 else 'hurts' if delta < 0 else 'changes nothing on'} the others at "
          f"{SFT_STEPS} steps (the same steps now share their batches with the new task)")
    return scores[0], scores[1]


if __name__ == "__main__":
    model = m.get_trained_model()
    src = classification_source(model.tokenizer, genre_examples("train"), genre_examples("validation"), GENRES,
                                model.config.block_size)
    rank_sweep(model, src)
    pooling_comparison(model, src)
    own_task(model)
