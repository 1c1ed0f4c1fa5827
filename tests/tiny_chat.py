"""Builders for the chat tests (not a test module): a tiny character-level GPT and the SFT run that teaches it
to answer "hi" with "yo" and "bye" with "ciao". test_chat.py uses them directly; conftest.py's
``trained_chat`` fixture trains the chat model once per session for test_chat.py and test_chat_cli.py."""

from __future__ import annotations

from pathlib import Path

from minigpt_helpers import GPT, GPTConfig, TrainConfig, set_seed
from minigpt_helpers.finetune.chat import sft
from minigpt_helpers.tokenizers.base import CharTokenizer

CHARS = "abcdefghijklmnopqrstuvwxyz ?!.,'<|>"
GREETINGS = [("hi", "yo"), ("bye", "ciao"), ("hi there", "yo"), ("ok bye", "ciao")]


def convo(*turns: str) -> dict:
    """convo("hi", "yo", "bye", "ciao"): user and assistant in turn."""
    return {"messages": [{"role": ("user", "assistant")[k % 2], "content": t} for k, t in enumerate(turns)]}


def tiny_model(block_size: int = 32, seed: int = 0) -> GPT:
    """An untrained 2-layer GPT over CHARS, with its CharTokenizer attached (no chat tokens yet)."""
    set_seed(seed)
    tok = CharTokenizer(list(CHARS))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32,
                          bias=False))
    model.tokenizer = tok
    return model


def tiny_chat_model(out_dir: str | Path | None = None, steps: int = 40, **sft_kw):
    """A tiny model SFT-trained to answer "hi" with "yo" and "bye" with "ciao", in any turn."""
    model = tiny_model()
    cfg = TrainConfig(batch_size=4, max_steps=steps, warmup_steps=5, lr=2e-2, min_lr=2e-3, eval_interval=steps,
                      device="cpu")
    singles = [convo(u, a) for u, a in GREETINGS]
    doubles = [convo(*GREETINGS[i], *GREETINGS[j]) for i in range(4) for j in range(4) if i % 2 != j % 2]
    return sft(model, singles + doubles, [convo("hi", "yo", "bye", "ciao")], cfg, out_dir=out_dir, live="off",
               **sft_kw)
