"""The command line: the notebook's ``train()`` and ``generate()``, for scripts and clusters.

    python -m minigpt_helpers train --data shakespeare --tokenizer char --time-budget 300 --out runs/shk
    python -m minigpt_helpers train --data my_notes.txt --tokenizer bpe --steps 2000 --out runs/notes
    python -m minigpt_helpers train --out runs/shk --resume            # continue where it stopped
    python -m minigpt_helpers generate --checkpoint runs/shk --prompt "ROMEO:"
    python -m minigpt_helpers chat --checkpoint runs/sft          # talk with a model finetuned by sft()
    python -m minigpt_helpers eval --checkpoint runs/shk          # report card: bits per byte, task accuracy
    python -m minigpt_helpers serve --checkpoint runs/sft         # OpenAI-compatible server + chat page
    accelerate launch --num_processes 4 -m minigpt_helpers train ...   # data-parallel on 4 GPUs

``--data`` is anything ``stream_documents`` takes: "auto", "shakespeare",
"redpajama", or your own .txt / .jsonl / .parquet files (a path, folder or glob;
a single text file is split by position, first 90 % train, last 10 % validation).
"auto" is decided once, when the run starts, and ``OUT/run.json`` records what it
chose (and what the tokenizer was trained on), so ``--resume`` reads the same
data even if the network has come back or gone since. Without ``--preset`` the
recommended preset for the device is used (see ``--list-presets``).

``serve`` answers OpenAI's API (``/v1/models``, ``/v1/completions``, ``/v1/chat/completions``, streamed
or not) and serves a chat page at ``/``, on 127.0.0.1:8000 unless told ``--host`` / ``--port``; Ctrl-C stops it.

``generate`` prints the text as it is generated when the output is a terminal
(or with ``--stream``), and all at once otherwise. It stops when the model writes
``<|endoftext|>``, the end of a document (``--no-stop-at-eot`` to go on).

Errors: a bad argument or input (a negative ``--steps``, a missing or binary
data file, a device this machine lacks, a damaged checkpoint...) prints one line
on stderr, ``error: <what is wrong and how to fix it>``, and exits with status 2.
Set ``MINIGPT_DEBUG=1`` in the environment to get the full traceback instead.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path
from typing import Any, NoReturn

from .config import shown_path

TOKENIZER_CHARS = 2_000_000  # characters of the training split used to train a tokenizer
RUN_FILE = "run.json"  # OUT/run.json: the data (resolved) and the tokenizer a run uses
DEBUG_ENV = "MINIGPT_DEBUG"  # set to 1 for tracebacks instead of one-line errors


# ------------------------------------------------------------------------------ one-line errors
class _Parser(argparse.ArgumentParser):
    """argparse with each usage error on one line: ``error: --vocab-size must be a positive integer, got 0``.

    (Subcommand parsers are made with the parent's class, so they behave the same.)
    """

    def error(self, message: str) -> NoReturn:
        checked = re.match(r"argument ([^:]+): (must .*)", message)  # our own type checks, below
        if checked:
            message = f"{checked[1]} {checked[2]}"
        else:
            message = f"{re.sub(r'^argument ', '', message)} (see: {self.prog} --help)"
        self.exit(2, f"error: {' '.join(message.split())}\n")


def _usage_error(message: str) -> NoReturn:
    """A command-line mistake found after parsing: one line and exit status 2, as argparse does."""
    sys.stdout.flush()
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _shown(text: str) -> str:
    return text if text and text.strip() == text else repr(text)


def _int_at_least(low: int, what: str):
    """An argparse type: an integer >= ``low``, refused in one line naming what was given."""
    def check(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = low - 1
        if value < low:
            raise argparse.ArgumentTypeError(f"must be {what}, got {_shown(text)}")
        return value
    return check


_positive_int = _int_at_least(1, "a positive integer")
_natural_int = _int_at_least(0, "an integer >= 0")


def _port(text: str) -> int:
    """An argparse type: a TCP port, 0 (any free port) to 65535."""
    value = _natural_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port in [0, 65535] (0 = any free port), got {_shown(text)}")
    return value


def _device(text: str) -> str:
    """A device this machine has (checked now, not after the tokenizer has been trained)."""
    import torch

    from .training.device import default_device

    if text == "auto":
        return text
    try:
        dev = default_device(text)
    except RuntimeError:  # torch.device("gpu"): not a device name at all
        raise argparse.ArgumentTypeError(
            f"must be 'cpu', 'cuda', 'cuda:N', 'mps' or 'auto', got {_shown(text)}") from None
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a device this machine has, but {text!r} is not available "
                                         "here: use --device cpu, or leave --device out for the best one") from None
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise argparse.ArgumentTypeError(f"must be a device this machine has, but it has "
                                         f"{torch.cuda.device_count()} GPU(s), so no {text!r}")
    return text


def _out_dir(text: str) -> Path:
    path = Path(text).expanduser()
    for p in (path, *path.parents):
        if p.exists():
            if not p.is_dir():
                raise argparse.ArgumentTypeError(f"must be a folder, but {p} is a file: choose another --out")
            break
    return path


def _expected_errors() -> tuple[type[BaseException], ...]:
    """What a bad input raises, as opposed to a bug (which keeps its traceback)."""
    errors: list[type[BaseException]] = [ValueError, OSError]  # OSError: FileNotFound, ConnectionError...
    try:
        from safetensors import SafetensorError

        errors.append(SafetensorError)
    except ImportError:  # pragma: no cover
        pass
    import torch

    oom = getattr(torch, "OutOfMemoryError", None)  # a GPU too small for the batch: train() says what to do
    if oom is not None:
        errors.append(oom)
    return tuple(errors)


# ------------------------------------------------------------------------------ train settings
# The train flags that set a TrainConfig field. TrainConfig checks every value (training/config.py);
# a bad one is reported under its flag's name.
TRAIN_FLAGS: dict[str, str] = {
    "--steps": "max_steps", "--time-budget": "time_budget_s", "--checkpoint-every": "checkpoint_every",
    "--batch-size": "batch_size", "--grad-accum": "grad_accum", "--lr": "lr", "--seed": "seed",
    "--eval-interval": "eval_interval", "--log-interval": "log_interval", "--device": "device",
    "--precision": "precision", "--compile": "compile", "--log-with": "log_with", "--project": "project",
    "--run-name": "run_name",
}
_FIELD_ERROR = re.compile(r"TrainConfig\.(\w+) (must be .*)", re.DOTALL)  # TrainConfig's message for one field


def _as_given(text: str) -> int | float | str:
    """An argparse type that only reads the text: an int, else a float, else the text itself.

    The value is checked by TrainConfig, which knows each field's range.
    """
    for read in (int, float):
        try:
            return read(text)
        except ValueError:
            pass
    return text


def _flag_message(message: str) -> str:
    """TrainConfig's ``TrainConfig.max_steps must be ...`` as ``--steps must be ...``."""
    flags = {field: flag for flag, field in TRAIN_FLAGS.items()}
    field = _FIELD_ERROR.match(message)
    if field and field[1] in flags:
        return f"{flags[field[1]]} {field[2]}"
    return message


def _train_config(args: argparse.Namespace, saved_config: dict[str, Any] | None):
    """``(TrainConfig, preset name)``: the settings of the run being resumed (``saved_config``; no preset) or
    of the preset, with the flags on top. Checked now, before any folder is made or tokenizer trained."""
    from .training.config import PRESETS, TrainConfig, recommended_preset
    from .training.trackers import require_trackers

    over = {field: getattr(args, field) for field in TRAIN_FLAGS.values() if getattr(args, field) is not None}
    if args.time_budget_s is not None and args.max_steps is None:
        over["max_steps"] = None  # train by time: the schedule spans the budget
    if over.get("log_with") == ["none"]:
        over["log_with"] = None  # --log-with none: no trackers (e.g. resuming a run that had some)
    name = None if saved_config is not None else args.preset or recommended_preset(args.device)
    base = saved_config if saved_config is not None else PRESETS[name]["train"]
    try:
        cfg = TrainConfig.from_dict({**base, **over})
        require_trackers(cfg.log_with)  # a tracker's missing package: `pip install ...`, before anything is made
    except (ValueError, ImportError) as e:
        _usage_error(_flag_message(str(e)))
    return cfg, name


# ------------------------------------------------------------------------------ train
def _read_run(out: Path, strict: bool) -> dict[str, Any]:
    """``OUT/run.json`` ({} if absent). ``strict``: a damaged one is an error, else it is ignored."""
    file = out / RUN_FILE
    if not file.is_file():
        return {}
    try:
        run = json.loads(file.read_text(encoding="utf-8"))
        if not isinstance(run, dict):
            raise ValueError("not a JSON object")
    except ValueError as e:
        if strict:
            raise ValueError(f"{file} is damaged ({e}): delete it and pass --data (and --tokenizer) "
                             "again with --resume") from None
        return {}
    return run


def _write_run(out: Path, data: str, tokenizer: str, tokenizer_data: str | None) -> None:
    record = {"data": data, "tokenizer": tokenizer, "tokenizer_data": tokenizer_data}
    (out / RUN_FILE).write_text(json.dumps(record) + "\n", encoding="utf-8")


def _build_tokenizer(kind: str, data: str, out: Path, vocab_size: int | None, main: bool):
    """Load ``out/tokenizer`` if it is there, else train ``kind`` on the training split (rank 0) and save it.

    Returns ``(tokenizer, trained_now)``.
    """
    from .tokenizers.base import CONFIG_NAME, load_tokenizer
    from .tokenizers.train import DEFAULT_VOCAB, train_tokenizer, training_texts

    path = out / "tokenizer"
    if (path / CONFIG_NAME).is_file():
        tok = load_tokenizer(path)
        if main:
            print(f"[minigpt] tokenizer: loaded {tok!r} from {shown_path(path)}")
        return tok, False
    if not main:
        raise RuntimeError("internal: only rank 0 trains the tokenizer")
    texts = list(training_texts(data, TOKENIZER_CHARS))  # at most ~TOKENIZER_CHARS characters: a few MB
    # the full-size vocabulary even in quick mode: a CLI run is a real run
    tok = train_tokenizer(kind, texts, vocab_size or DEFAULT_VOCAB[kind][0])
    tok.save(path)
    print(f"[minigpt] tokenizer: trained {tok!r} on {sum(map(len, texts)):,} characters of the training split; "
          f"saved to {shown_path(path)}")
    return tok, True


def _tokenizer_for_run(args: argparse.Namespace, data: str, out: Path, run: dict[str, Any], main: bool):
    """Rank 0: the tokenizer (loaded or trained), and ``run.json`` written with what the run reads."""
    tok, trained = _build_tokenizer(args.tokenizer or "char", data, out, args.vocab_size, main)
    kind = getattr(tok, "type_name", args.tokenizer or "char")
    if main:
        if not trained and args.tokenizer and args.tokenizer != kind:
            print(f"[minigpt] tokenizer: --tokenizer {args.tokenizer} ignored: {out}/tokenizer holds a {kind} "
                  "tokenizer (use a new --out to train another)")
        _write_run(out, data, kind, data if trained else run.get("tokenizer_data"))
    return tok


def _resume_point(args: argparse.Namespace, out: Path, run: dict[str, Any], main: bool):
    """``(checkpoint, its GPTConfig, data, its saved TrainConfig dict)`` of the run ``--resume`` continues,
    checked now (weights intact, training state present); ``(None, None, --data, None)`` for a new run."""
    from .model.gpt import GPT
    from .training.checkpoint import TRAINER_FILE, find_checkpoint, read_trainer_state

    saved = find_checkpoint(out) if args.resume else None
    if args.resume and saved is None and main:
        print(f"[minigpt] --resume: no checkpoint in {out}, starting a new run")
    if saved is None:
        if not args.data:
            _usage_error("train needs --data SOURCE (e.g. --data shakespeare, or a path to your .txt files)")
        return None, None, args.data, None
    # the run's own settings, with what was given on this command line on top
    mcfg = GPT.check_saved(saved)  # weights intact and matching config.json, or a clear error now
    if not (saved / TRAINER_FILE).is_file():
        raise ValueError(f"{saved} holds a model but no training state ({TRAINER_FILE}), so it cannot be "
                         "resumed: train into a new --out instead")
    trainer = read_trainer_state(saved)
    tdict = trainer.get("train_config")
    if not isinstance(tdict, dict):
        raise ValueError(f"{saved / TRAINER_FILE} has no train_config: the checkpoint is damaged; delete "
                         f"{saved} to resume from the previous one")
    data = args.data or run.get("data") or trainer.get("data_source")
    if data is None:
        _usage_error(f"--resume: {out / RUN_FILE} does not record --data; pass --data again")
    if main:
        print(f"[minigpt] --resume: continuing {shown_path(saved)} from step {trainer['step']}")
    return saved, mcfg, data, tdict


def _data_and_tokenizer(args: argparse.Namespace, data: str, out: Path, run: dict[str, Any], main: bool,
                        world: int):
    """``(data, tokenizer)``: rank 0 makes ``out``, decides what "auto" stands for (once, saying why) and loads
    or trains the tokenizer; the other ranks wait for it, then read its decision from ``run.json``."""
    from .data.sources import resolve_source

    if main:
        out.mkdir(parents=True, exist_ok=True)
        data = resolve_source(data, verbose=True)  # "auto" -> the corpus it stands for, recorded in run.json
    if world == 1:
        return data, _tokenizer_for_run(args, data, out, run, True)
    from accelerate import PartialState

    state = PartialState(cpu=args.device == "cpu")
    tok = _tokenizer_for_run(args, data, out, run, True) if main else None
    state.wait_for_everyone()
    if not main:
        data = _read_run(out, strict=True)["data"]  # rank 0's decision, not a probe of our own
        tok = _tokenizer_for_run(args, data, out, run, False)
    return data, tok


def _say_result(result: Any) -> None:
    v = result.final_val_loss
    where = shown_path(result.checkpoint) if result.checkpoint else None
    print(f"[minigpt] {result.stop_reason} at step {result.step}; "
          f"{f'val loss {v:.4f}; ' if v is not None else ''}checkpoint: {where}")


def cmd_train(args: argparse.Namespace) -> int:
    from .config import set_seed
    from .model.gpt import GPT, GPTConfig
    from .training.distributed import dist_env
    from .training.loop import PRESETS, train

    if args.out is None:  # checked here, not by argparse, so that `train --list-presets` needs no --out
        _usage_error("train needs --out DIR, the folder for its checkpoints and tokenizer")
    rank, world, _ = dist_env()
    main = rank == 0
    out: Path = args.out
    run = _read_run(out, strict=args.resume)
    saved, mcfg, data, tdict = _resume_point(args, out, run, main)
    cfg, name = _train_config(args, tdict)  # a bad setting stops the run here, before anything is made
    data, tok = _data_and_tokenizer(args, data, out, run, main, world)
    if saved is None:
        mcfg = GPTConfig(vocab_size=tok.vocab_size, **PRESETS[name]["model"])
        if main:
            print(f"[minigpt] preset {name!r}: {PRESETS[name]['doc']}")
            print(f"[minigpt] model: {mcfg.summary()}")
    set_seed(cfg.seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    if main:
        how = [f"{cfg.max_steps} steps"] if cfg.max_steps else []
        how += [f"{cfg.time_budget_s:g} s budget"] if cfg.time_budget_s else []
        print(f"[minigpt] {model.num_params() / 1e6:.2f}M parameters; {world} process(es); {' / '.join(how)}")
    result = train(model, data, cfg, out_dir=out, resume=saved is not None, live="log")
    if main:
        _say_result(result)
    return 1 if result.stop_reason == "non-finite loss" else 0


# ------------------------------------------------------------------------------ generate
SAMPLING_FLAGS = {"max_new_tokens": "--max-new-tokens", "temperature": "--temperature", "top_k": "--top-k",
                  "top_p": "--top-p"}


def _check_sampling(args: argparse.Namespace) -> None:
    """Refuse bad sampling flags before the model is loaded, with generation's own rule under the flag's name."""
    from .model.generation import check_generation_args

    try:
        check_generation_args(args.max_new_tokens, args.temperature, args.top_k, args.top_p)
    except ValueError as e:
        field, _, rule = str(e).partition(" ")
        _usage_error(f"{SAMPLING_FLAGS.get(field, field)} {rule}")


def cmd_generate(args: argparse.Namespace) -> int:
    from .model.generation import generate
    from .training.checkpoint import load_checkpoint

    _check_sampling(args)
    model = load_checkpoint(args.checkpoint, device=args.device)
    sampling = dict(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_k=args.top_k,
                    top_p=args.top_p, seed=args.seed, stop_at_eot=args.stop_at_eot)
    stream = args.stream if args.stream is not None else sys.stdout.isatty()
    if stream:  # each piece as soon as it forms complete characters: the text appears as it is written
        for piece in generate(model, args.prompt, stream=True, **sampling):
            print(piece, end="", flush=True)
        print()
    else:
        print(generate(model, args.prompt, **sampling))
    return 0


# ------------------------------------------------------------------------------ eval
def _eval_data(args: argparse.Namespace, trainer: dict[str, Any], ckpt: Path) -> str:
    """The source for bits per byte: --data, else what training read (trainer.json, run.json), else "auto"."""
    if args.data:
        return args.data
    if isinstance(trainer.get("data_source"), str):
        return trainer["data_source"]
    return _read_run(ckpt.parent, strict=False).get("data") or "auto"


def cmd_eval(args: argparse.Namespace) -> int:
    from .evaluation.report import check_tasks, format_report, report_card, save_report
    from .training.checkpoint import find_checkpoint, load_checkpoint, read_trainer_state

    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    check_tasks(tasks)
    model = load_checkpoint(args.checkpoint, device=args.device)
    ckpt = find_checkpoint(args.checkpoint)
    trainer = read_trainer_state(ckpt) if (ckpt / "trainer.json").is_file() else {}
    card = report_card(model, data=_eval_data(args, trainer, ckpt), tasks=tasks, limit=args.limit, trainer=trainer)
    print(f"[minigpt] report card for {shown_path(ckpt)}")
    print(format_report(card))
    print(f"[minigpt] saved {shown_path(save_report(card, args.out or ckpt))}")
    return 0


# ------------------------------------------------------------------------------ chat
CHAT_HELP = "/reset starts a new conversation, /quit (or Ctrl-D) leaves"


def cmd_chat(args: argparse.Namespace) -> int:
    """A multi-turn conversation with a model finetuned by ``sft()``: each reply streams until its end of turn."""
    from .finetune.chat import ChatSession, load_chat_model
    from .training.checkpoint import find_checkpoint

    _check_sampling(args)
    model = load_chat_model(args.checkpoint, device=args.device)  # a clear one-line error if it cannot chat
    session = ChatSession(model, system=args.system, max_new_tokens=args.max_new_tokens,
                          temperature=args.temperature, top_k=args.top_k, top_p=args.top_p, seed=args.seed)
    print(f"[minigpt] chatting with {shown_path(find_checkpoint(args.checkpoint))}: {CHAT_HELP}", flush=True)
    while True:
        try:
            text = input("you> ").strip()
        except (EOFError, KeyboardInterrupt):
            print()
            return 0
        if text in ("/quit", "/exit"):
            return 0
        if text == "/reset":
            session.reset()
            print("[minigpt] new conversation", flush=True)
            continue
        if not text or text.startswith("/"):
            what = f"unknown command {text.split()[0]}" if text else "empty message"
            sys.stdout.flush()
            print(f"error: {what}: type some text; {CHAT_HELP}", file=sys.stderr, flush=True)
            continue
        print("assistant> ", end="", flush=True)
        try:
            for piece in session.send(text, stream=True):
                print(piece, end="", flush=True)
        except KeyboardInterrupt:  # Ctrl-C stops this reply; the conversation goes on
            print(" [stopped]", end="")
        print(flush=True)


# ------------------------------------------------------------------------------ serve
def cmd_serve(args: argparse.Namespace) -> int:
    """An OpenAI-compatible server with continuous batching and a chat page, until Ctrl-C (chapter 11)."""
    try:
        from .serve.server import serve
    except ImportError as e:
        _usage_error(f"serve needs fastapi and uvicorn ({e}): pip install fastapi uvicorn "
                     "(or pip install -e '.[course]')")
    try:
        serve(args.checkpoint, host=args.host, port=args.port, slots=args.slots, int8=args.int8,
              device=args.device, model_name=args.name)
    except KeyboardInterrupt:  # Ctrl-C before the server was up (while the model loaded)
        pass
    return 0


# ------------------------------------------------------------------------------ the parser
def build_parser() -> argparse.ArgumentParser:
    from .training.loop import PRESETS

    p = _Parser(prog="python -m minigpt_helpers", description=__doc__,
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--list-presets", action="store_true", help="describe the presets and exit")
    sub = p.add_subparsers(dest="command")
    t = sub.add_parser("train", help="train a GPT on a text stream")
    t.add_argument("--data", help="'auto', 'shakespeare', 'redpajama', or your .txt/.jsonl/.parquet path/folder/glob")
    t.add_argument("--tokenizer", choices=["char", "bpe", "sentencepiece"], default=None,
                   help="tokenizer to train on the data (loaded from OUT/tokenizer if present; default char)")
    t.add_argument("--vocab-size", type=_positive_int, default=None,
                   help="tokenizer vocabulary (bpe/sentencepiece: 1024)")
    t.add_argument("--preset", choices=sorted(PRESETS), default=None,
                   help="model + optimisation settings (default: 'gpu' on CUDA, else 'cpu')")
    g = t.add_argument_group("how long (one or both; default: the preset's steps)")
    # the TrainConfig settings are read as given (_as_given) and checked by TrainConfig itself
    g.add_argument("--steps", dest=TRAIN_FLAGS["--steps"], type=_as_given, default=None, metavar="N",
                   help="optimizer steps")
    g.add_argument("--time-budget", dest=TRAIN_FLAGS["--time-budget"], type=_as_given, default=None,
                   metavar="SECONDS", help="wall-clock budget; alone, the learning-rate schedule spans it")
    t.add_argument("--out", type=_out_dir, default=None, help="output folder: checkpoints, tokenizer (required)")
    t.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    for name, hlp in [("--checkpoint-every", "steps between checkpoints (default: at every evaluation)"),
                      ("--batch-size", "sequences per micro-batch per process"),
                      ("--grad-accum", "micro-batches per step"),
                      ("--lr", "peak learning rate"),
                      ("--seed", "random seed"),
                      ("--eval-interval", "steps between val losses"),
                      ("--log-interval", "steps between log lines")]:
        t.add_argument(name, dest=TRAIN_FLAGS[name], type=_as_given, default=None, help=hlp,
                       metavar="N" if name != "--lr" else "LR")
    t.add_argument("--device", type=_device, default=None, help="cpu, cuda, cuda:1, mps (default: best available)")
    t.add_argument("--precision", default=None, help="auto (default), fp32, bf16 or fp16")
    t.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None, help="torch.compile")
    k = t.add_argument_group("experiment tracking (logs to OUT/runs/RUN_NAME)")
    k.add_argument("--log-with", dest=TRAIN_FLAGS["--log-with"], action="append", default=None, metavar="TRACKER",
                   help="tensorboard, trackio or wandb; repeat for several; none turns off a resumed run's")
    k.add_argument("--project", dest=TRAIN_FLAGS["--project"], default=None, help="wandb / trackio project (minigpt)")
    k.add_argument("--run-name", dest=TRAIN_FLAGS["--run-name"], default=None,
                   help="the run's name (default: the --out folder's name)")
    t.add_argument("--list-presets", action="store_true", default=argparse.SUPPRESS,
                   help="describe the presets and exit")
    t.set_defaults(func=cmd_train)
    q = sub.add_parser("generate", help="sample text from a checkpoint")
    q.add_argument("--checkpoint", required=True, help="a checkpoint folder or a training --out folder")
    q.add_argument("--prompt", default="")
    q.add_argument("--max-new-tokens", type=_as_given, default=200)
    q.add_argument("--temperature", type=_as_given, default=0.8, help="0 = greedy (default 0.8)")
    q.add_argument("--top-k", type=_as_given, default=None, help="sample among the k likeliest tokens")
    q.add_argument("--top-p", type=_as_given, default=None,
                   help="sample among the likeliest tokens that hold this much probability (nucleus), e.g. 0.9")
    q.add_argument("--seed", type=_natural_int, default=None)
    q.add_argument("--device", type=_device, default=None)
    q.add_argument("--stream", action=argparse.BooleanOptionalAction, default=None,
                   help="print the text as it is generated (default: when the output is a terminal)")
    q.add_argument("--stop-at-eot", action=argparse.BooleanOptionalAction, default=True,
                   help="stop when the model writes <|endoftext|>, where a new, unrelated document would begin")
    q.set_defaults(func=cmd_generate)
    e = sub.add_parser("eval", help="a report card: validation bits per byte and task accuracies (eval.json)")
    e.add_argument("--checkpoint", required=True, help="a checkpoint folder or a training --out folder")
    e.add_argument("--tasks", default="shakespeare-next-line",
                   help="comma-separated: shakespeare-next-line (offline), hellaswag (online)")
    e.add_argument("--limit", type=_positive_int, default=None, help="score only the first N items of each task")
    e.add_argument("--data", default=None, help="validation data for bits per byte (default: what training read)")
    e.add_argument("--out", type=Path, default=None, help="folder for eval.json (default: the checkpoint's)")
    e.add_argument("--device", type=_device, default=None)
    e.set_defaults(func=cmd_eval)
    c = sub.add_parser("chat", help="talk with a model finetuned to chat (chapter 08's sft)")
    c.add_argument("--checkpoint", required=True, help="a checkpoint folder or a training --out folder of sft()")
    c.add_argument("--system", default=None, help="a system message that opens every conversation")
    c.add_argument("--max-new-tokens", type=_as_given, default=200, help="longest reply, in tokens")
    c.add_argument("--temperature", type=_as_given, default=0.7, help="0 = greedy (default 0.7)")
    c.add_argument("--top-k", type=_as_given, default=None, help="sample among the k likeliest tokens")
    c.add_argument("--top-p", type=_as_given, default=None, help="nucleus sampling, e.g. 0.9")
    c.add_argument("--seed", type=_natural_int, default=None)
    c.add_argument("--device", type=_device, default=None)
    c.set_defaults(func=cmd_chat)
    v = sub.add_parser("serve", help="an OpenAI-compatible server and a chat page (chapter 11)")
    v.add_argument("--checkpoint", required=True, help="a checkpoint folder or a training --out folder")
    v.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1, this machine only; 0.0.0.0: every interface, "
                        "so anyone who can reach it can use the model)")
    v.add_argument("--port", type=_port, default=8000, help="port to listen on (default 8000; 0 = any free port)")
    v.add_argument("--slots", type=_positive_int, default=16, help="requests decoded together as one batch")
    v.add_argument("--int8", action="store_true", help="quantize the weights to int8 first (less memory)")
    v.add_argument("--name", default=None, help="the model id clients ask for (default: the folder's name)")
    v.add_argument("--device", type=_device, default=None)
    v.set_defaults(func=cmd_serve)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run the command line. Usage errors raise ``SystemExit(2)`` (as argparse does); an error in
    the command's inputs prints one line on stderr and returns 2 (``MINIGPT_DEBUG=1``: re-raised)."""
    try:
        return _run(argv)
    except BrokenPipeError:  # `... generate | head -3` closed our output early: not an error of ours
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # no second error at exit
        except (OSError, ValueError):  # pragma: no cover - stdout without a file descriptor
            pass
        return 1
    finally:
        if "torch.distributed" in sys.modules:  # a command that ran torch (not --help) may hold a process group
            from .training.distributed import end_process_group

            end_process_group()  # a launched run (torchrun, accelerate launch) closes it before exit


def _run(argv: list[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.list_presets:
        from .training.loop import PRESETS

        for name, p in PRESETS.items():
            print(f"{name}: {p['doc']}\n  model: {p['model']}\n  train: {p['train']}")
        return 0
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.func(args)
    except BrokenPipeError:
        raise
    except _expected_errors() as e:
        if os.environ.get(DEBUG_ENV, "").strip().lower() in {"1", "true", "yes", "on"}:
            raise
        sys.stdout.flush()
        print(f"error: {' '.join(str(e).split()) or type(e).__name__}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
