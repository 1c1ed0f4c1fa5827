"""One rank of a data-parallel test run (launched by tests/test_distributed.py under torchrun).

    python -m torch.distributed.run --standalone --nproc-per-node 2 tests/ddp_worker.py OUT '{"max_steps": 6}'

Trains a tiny model with ``train()`` on in-memory text (with ``all_reduce(AVG)``
refused, as older gloo does) and writes what this rank
saw to ``OUT/rank<r>.json``: the steps it ran, why it stopped, its losses and a
checksum of its weights. Extra keys in the JSON: ``sigterm_at`` (rank 1 sends
itself SIGTERM after that step), ``resume`` and ``out_dir`` (checkpoints), ``model`` (GPTConfig options).
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import torch

from minigpt_helpers import GPT, GPTConfig, TrainConfig, set_seed, train
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.training.distributed import end_process_group

DOCS = [f"Scene {i}. " + "To be, or not to be, that is the question. " * (3 + i % 5) for i in range(80)]
VAL = ["Scene 99. " + "Whether tis nobler in the mind to suffer the slings and arrows. " * 6]


def _gloo_without_avg() -> None:
    """Make ``all_reduce(op=AVG)`` fail, as it does on gloo in older torch (the course allows torch >= 2.3).

    train() must average with SUM and a division. (DDP's own gradient averaging runs
    in C++ and is not affected.)
    """
    import torch.distributed as dist

    real = dist.all_reduce

    def all_reduce(tensor, op=dist.ReduceOp.SUM, *args, **kwargs):
        if op == dist.ReduceOp.AVG:
            raise RuntimeError("ReduceOp.AVG is not supported by this backend (gloo on older torch)")
        return real(tensor, op, *args, **kwargs)

    dist.all_reduce = all_reduce


def main() -> None:
    out, opts = Path(sys.argv[1]), json.loads(sys.argv[2])
    _gloo_without_avg()
    rank = int(os.environ.get("RANK", 0))
    tok = CharTokenizer.train(DOCS + VAL)
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32,
                          dropout=opts.pop("dropout", 0.0), bias=False, **opts.pop("model", {})))
    model.tokenizer = tok
    sigterm_at = opts.pop("sigterm_at", None)
    resume = opts.pop("resume", False)
    out_dir = opts.pop("out_dir", None)
    cfg = TrainConfig(**{**dict(batch_size=4, warmup_steps=2, lr=3e-3, min_lr=3e-4, eval_interval=3,
                                eval_windows=8, shuffle_windows=32, device="cpu", max_steps=6), **opts})

    def callback(info):
        if sigterm_at is not None and rank == 1 and info["step"] == sigterm_at:
            os.kill(os.getpid(), signal.SIGTERM)  # only this rank is told to stop

    r = train(model, DOCS, cfg, val_data=VAL, out_dir=out_dir, resume=resume, live="off", callback=callback)
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    (out / f"rank{rank}.json").write_text(json.dumps({
        "step": r.step, "stop_reason": r.stop_reason, "steps": r.history.steps, "losses": r.history.losses,
        "lrs": r.history.lrs, "weights": flat.tolist()}), encoding="utf-8")
    end_process_group()


if __name__ == "__main__":
    main()
