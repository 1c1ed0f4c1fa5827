"""The command line: the notebook's ``train()`` and ``generate()``, for scripts and clusters.

    python -m minigpt_helpers train --data shakespeare --tokenizer char --time-budget 300 --out runs/shk
    python -m minigpt_helpers train --data my_notes.txt --tokenizer bpe --steps 2000 --out runs/notes
    python -m minigpt_helpers train --out runs/shk --resume            # continue where it stopped
    python -m minigpt_helpers generate --checkpoint runs/shk --prompt "ROMEO:"
    accelerate launch --num_processes 4 -m minigpt_helpers train ...   # data-parallel on 4 GPUs

``--data`` is anything ``stream_documents`` takes: "auto", "shakespeare",
"redpajama", or your own .txt / .jsonl / .parquet files (a path, folder or glob;
a single text file is split by position, first 90 % train, last 10 % validation).
Without ``--preset`` the recommended preset for the device is used (see
``--list-presets``).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

TOKENIZER_CHARS = 2_000_000  # characters of the training split used to train a tokenizer


def _build_tokenizer(kind: str, data: str, out: Path, vocab_size: int | None, main: bool):
    """Load ``out/tokenizer`` if it is there, else train ``kind`` on the training split (rank 0) and save it."""
    from .tokenizer import CONFIG_NAME, DEFAULT_VOCAB, load_tokenizer

    path = out / "tokenizer"
    if (path / CONFIG_NAME).is_file():
        tok = load_tokenizer(path)
        if main:
            print(f"[minigpt] tokenizer: loaded {tok!r} from {path}")
        return tok
    if not main:
        raise RuntimeError("internal: only rank 0 trains the tokenizer")
    from .data import stream_documents

    def texts():
        used = 0
        for doc in stream_documents(data, split="train", verbose=False):
            yield doc["text"][: TOKENIZER_CHARS - used]
            used += len(doc["text"])
            if used >= TOKENIZER_CHARS:
                return

    if kind == "char":
        from .tokenizer import CharTokenizer

        tok = CharTokenizer.train(texts(), vocab_size, unk=True)
    elif kind == "bpe":
        from .bpe import BPETokenizer

        tok = BPETokenizer.train(texts(), vocab_size=vocab_size or DEFAULT_VOCAB["bpe"][0])
    else:
        from .sentencepiece_tokenizer import SentencePieceTokenizer

        tok = SentencePieceTokenizer.train(texts(), vocab_size=vocab_size or DEFAULT_VOCAB["sentencepiece"][0],
                                           model_type="bpe")
    tok.save(path)
    print(f"[minigpt] tokenizer: trained {tok!r} on up to {TOKENIZER_CHARS:,} characters; saved to {path}")
    return tok


def cmd_train(args: argparse.Namespace) -> int:
    from .checkpoint import find_checkpoint
    from .config import set_seed
    from .model import GPT, GPTConfig
    from .training import PRESETS, TrainConfig, _dist, preset, recommended_preset, train

    rank, world, _ = _dist()
    main = rank == 0
    out = Path(args.out)
    saved = find_checkpoint(out) if args.resume else None
    if args.resume and saved is None and main:
        print(f"[minigpt] --resume: no checkpoint in {out}, starting a new run")
    if saved is not None:  # the run's own settings, with what was given on this command line on top
        trainer = json.loads((saved / "trainer.json").read_text())
        mcfg = GPTConfig.from_dict(json.loads((saved / "config.json").read_text()))
        tdict = trainer["train_config"]
        run = json.loads((out / "run.json").read_text()) if (out / "run.json").is_file() else {}
        data = args.data or run.get("data")
        if data is None:
            raise SystemExit(f"--resume: {out}/run.json does not record --data; pass --data again")
        if main:
            print(f"[minigpt] --resume: continuing {saved} from step {trainer['step']}")
    else:
        if not args.data:
            raise SystemExit("train needs --data SOURCE (e.g. --data shakespeare, or a path to your .txt files)")
        data = args.data
        tdict = None
    if main:
        out.mkdir(parents=True, exist_ok=True)
    if world > 1:
        from accelerate import PartialState

        state = PartialState(cpu=args.device == "cpu")
        if main:
            tok = _build_tokenizer(args.tokenizer, data, out, args.vocab_size, True)
        state.wait_for_everyone()
        if not main:
            tok = _build_tokenizer(args.tokenizer, data, out, args.vocab_size, False)
    else:
        tok = _build_tokenizer(args.tokenizer, data, out, args.vocab_size, True)

    over = {k: v for k, v in dict(
        max_steps=args.steps, time_budget_s=args.time_budget, checkpoint_every=args.checkpoint_every,
        batch_size=args.batch_size, lr=args.lr, seed=args.seed, eval_interval=args.eval_interval,
        log_interval=args.log_interval, device=args.device, precision=args.precision,
        compile=args.compile, grad_accum=args.grad_accum).items() if v is not None}
    if args.time_budget is not None and args.steps is None:
        over["max_steps"] = None  # train by time: the schedule spans the budget
    if saved is not None:
        cfg = TrainConfig.from_dict({**tdict, **over})
    else:
        name = args.preset or recommended_preset(args.device)
        mcfg, cfg = preset(name, tok.vocab_size, **over)
        if main:
            print(f"[minigpt] preset {name!r}: {PRESETS[name]['doc']}")
            print(f"[minigpt] model {mcfg}")
    set_seed(cfg.seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    if main:
        how = [f"{cfg.max_steps} steps"] if cfg.max_steps else []
        how += [f"{cfg.time_budget_s:g} s budget"] if cfg.time_budget_s else []
        print(f"[minigpt] {model.num_params() / 1e6:.2f}M parameters; {world} process(es); {' / '.join(how)}")
    if main:
        (out / "run.json").write_text(json.dumps({"data": str(data), "tokenizer": args.tokenizer}) + "\n")
    result = train(model, data, cfg, out_dir=out, resume=saved is not None, live="log")
    if main:
        v = result.final_val_loss
        print(f"[minigpt] {result.stop_reason} at step {result.step}; "
              f"{f'val loss {v:.4f}; ' if v is not None else ''}checkpoint: {result.checkpoint}")
    return 1 if result.stop_reason == "non-finite loss" else 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .checkpoint import load_checkpoint
    from .generation import generate

    model = load_checkpoint(args.checkpoint, device=args.device)
    text = generate(model, args.prompt, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                    top_k=args.top_k, seed=args.seed)
    print(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .training import PRESETS

    p = argparse.ArgumentParser(prog="python -m minigpt_helpers", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list-presets", action="store_true", help="describe the presets and exit")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a GPT on a text stream")
    t.add_argument("--data", help="'auto', 'shakespeare', 'redpajama', or your .txt/.jsonl/.parquet path/folder/glob")
    t.add_argument("--tokenizer", choices=["char", "bpe", "sentencepiece"], default="char",
                   help="tokenizer to train on the data (loaded from OUT/tokenizer if present; default char)")
    t.add_argument("--vocab-size", type=int, default=None, help="tokenizer vocabulary (bpe/sentencepiece: 1024)")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model + optimisation settings (default: 'gpu' on CUDA, else 'cpu')")
    g = t.add_argument_group("how long (one or both; default: the preset's steps)")
    g.add_argument("--steps", type=int, default=None, help="optimizer steps")
    g.add_argument("--time-budget", type=float, default=None, metavar="SECONDS",
                   help="wall-clock budget; alone, the learning-rate schedule spans it")
    t.add_argument("--out", required=True, help="output folder: checkpoints, tokenizer")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    t.add_argument("--checkpoint-every", type=int, default=None, metavar="N", help="checkpoint every N steps")
    for name, typ, hlp in [("--batch-size", int, "sequences per micro-batch per process"),
                           ("--grad-accum", int, "micro-batches per step"), ("--lr", float, "peak learning rate"),
                           ("--seed", int, "random seed"), ("--eval-interval", int, "steps between val losses"),
                           ("--log-interval", int, "steps between log lines")]:
        t.add_argument(name, type=typ, default=None, help=hlp)
    t.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    t.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default=None)
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    t.set_defaults(func=cmd_train)
    q = sub.add_parser("generate", help="sample text from a checkpoint")
    q.add_argument("--checkpoint", required=True, help="a checkpoint folder or a training --out folder")
    q.add_argument("--prompt", default="")
    q.add_argument("--max-new-tokens", type=int, default=200)
    q.add_argument("--temperature", type=float, default=0.8)
    q.add_argument("--top-k", type=int, default=None)
    q.add_argument("--seed", type=int, default=None)
    q.add_argument("--device", default=None)
    q.set_defaults(func=cmd_generate)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        from .training import PRESETS

        for name, p in PRESETS.items():
            print(f"{name}: {p['doc']}\n  model: {p['model']}\n  train: {p['train']}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    return args.func(args)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
