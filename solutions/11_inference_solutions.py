"""Solutions to chapter 11's exercises (inference), runnable as a script.

    python solutions/11_inference_solutions.py                  # learner sizes, a few minutes
    MINIGPT_QUICK=1 python solutions/11_inference_solutions.py  # under a minute

Starts from chapter 05's model (``get_trained_model`` trains one if it is missing) and the chapter's draft
(``artifacts/ch11_draft``, trained again here if it is missing, with the chapter's settings).
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import torch

import minigpt_helpers as m
from minigpt_helpers import GPT, GPTConfig, TrainConfig, pick, set_seed

model = m.get_trained_model(verbose=False).eval()
tok, cfg = model.tokenizer, model.config
N_NEW = pick(full=200, quick=24)
PROMPTS = ["ROMEO:\n", "First Citizen:\nWe are accounted poor citizens", "KING HENRY:\nOnce more unto the"]


def chapter_draft() -> GPT:
    """The chapter's draft: 1 block x 64, the target's tokenizer, trained on the same stream."""
    out = m.artifacts_dir("ch11_draft")
    if m.find_checkpoint(out) is not None:
        return m.load_checkpoint(out).eval()
    set_seed(0)
    draft = GPT(GPTConfig(vocab_size=cfg.vocab_size, block_size=cfg.block_size, n_layer=1, n_head=2, n_embd=64,
                          bias=False, dropout=0.0))
    draft.tokenizer = tok
    steps = pick(full=1500, quick=40)
    run = m.train(draft, "shakespeare", TrainConfig(batch_size=16, max_steps=steps, lr=3e-3, min_lr=3e-4,
                                                    warmup_steps=20, eval_interval=steps, device="cpu"),
                  out_dir=out, live="off")
    return run.model.eval()


draft = chapter_draft()


def acceptance(k: int, temperature: float) -> m.SpeculativeStats:
    stats = m.SpeculativeStats()
    for i, p in enumerate(PROMPTS):
        list(m.speculative_ids(model, draft, tok.encode(p), N_NEW, lookahead=k, temperature=temperature,
                               seed=i, stats=stats))
    return stats


def exercise_1() -> None:
    """Acceptance falls with temperature: a flatter target spreads p over more tokens, and the draft's own
    samples land on tokens p gives less weight to. Greedy accepts whenever the two argmaxes agree."""
    print("exercise 1: acceptance rate against temperature (lookahead 4)")
    rates = {t: acceptance(4, t).acceptance_rate for t in (0.0, 0.7, 1.0)}
    for t, r in rates.items():
        print(f"  temperature {t}: {r:.2f}")


def exercise_2() -> None:
    """(1 - a^(k+1)) / (1 - a) assumes independent acceptances; real ones are correlated (easy stretches of
    text accept runs of guesses, hard ones reject the first), and a round is cut short near the end of the
    context window or of max_new_tokens, so the measured tokens per round fall below the formula."""
    print("exercise 2: tokens per round, measured against (1 - a^(k+1)) / (1 - a)")
    for k in (1, 2, 4):
        s = acceptance(k, 0.0)
        a = s.acceptance_rate
        formula = (1 - a ** (k + 1)) / (1 - a) if a < 1 else k + 1
        print(f"  k={k}: acceptance {a:.2f}, measured {s.tokens_per_round:.2f}, formula {formula:.2f}")


def per_tensor_int8(net: GPT) -> GPT:
    """A copy of ``net`` whose Linear weights are rounded to int8 with ONE scale per matrix (stored as floats)."""
    fake = GPT(net.config)
    fake.load_state_dict(net.state_dict())
    fake.tokenizer = net.tokenizer
    with torch.no_grad():
        for mod in fake.modules():
            if isinstance(mod, torch.nn.Linear):
                s = mod.weight.abs().max() / 127
                mod.weight.copy_(torch.round(mod.weight / s).clamp(-127, 127) * s)
    return fake.eval()


def exercise_3() -> None:
    print("exercise 3: bits per byte, per-channel against per-tensor int8")
    val = list(m.stream_documents("shakespeare", "validation", verbose=False))
    windows = m.val_windows(val, tok, cfg.block_size, pick(full=400, quick=40))
    for name, net in (("fp32", model), ("per channel", m.quantize_int8(model)), ("per tensor", per_tensor_int8(model))):
        bpb = m.evaluate(net, windows, 32, torch.device("cpu"), unit="bpb", tokenizer=tok)
        print(f"  {name:12s}: {bpb:.4f}")


def exercise_4() -> None:
    """Static batches of 4 take as many steps as their longest reply each; the engine refills slots at once."""
    print("exercise 4: static batches against continuous batching")
    rng = np.random.default_rng(0)
    lengths = [int(n) for n in rng.integers(2, pick(full=24, quick=10), size=10)]
    prompts = [tok.encode(PROMPTS[i % 3]) for i in range(10)]
    static_steps = 0
    for g in range(0, 10, 4):
        group = list(range(g, min(g + 4, 10)))
        engine = m.BatchEngine(model, slots=4)
        for i in group:
            engine.submit(prompts[i], lengths[i], temperature=0)
        while engine.step():
            static_steps += 1
        static_steps += 1
    engine = m.BatchEngine(model, slots=4)
    for i in range(10):
        engine.submit(prompts[i], lengths[i], temperature=0)
    steps = 0
    while engine.step():
        steps += 1
    steps += 1
    print(f"  lengths {lengths}: static {static_steps} steps, continuous {steps} steps")
    assert steps <= static_steps


def exercise_5() -> None:
    """A streamed chat completion read with urllib: one `data: {...}` line per chunk, then `data: [DONE]`."""
    print("exercise 5: a client without the openai package")
    chat = m.get_chat_model(min_context=64, verbose=False)  # quick mode: a 64-token one in ch08_sft_ctx64
    chat_dir = m.find_checkpoint(m.artifacts_dir("ch08_sft" if chat.config.block_size == cfg.block_size
                                                 else "ch08_sft_ctx64"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "minigpt_helpers", "serve", "--checkpoint", str(chat_dir),
                               "--port", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{base}/v1/models", timeout=2)
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("the server did not start") from None
                time.sleep(0.2)
        body = {"model": "any", "stream": True, "temperature": 0, "max_tokens": 24,
                "messages": [{"role": "user", "content": 'Write a line of verse with the word "love".'}]}
        name = json.load(urllib.request.urlopen(f"{base}/v1/models"))["data"][0]["id"]
        body["model"] = name
        req = urllib.request.Request(f"{base}/v1/chat/completions", data=json.dumps(body).encode("utf-8"),
                                     headers={"Content-Type": "application/json"})
        pieces = []
        with urllib.request.urlopen(req, timeout=60) as resp:
            for raw in resp:
                line = raw.decode("utf-8").strip()
                if not line.startswith("data: "):
                    continue
                if line == "data: [DONE]":
                    break
                chunk = json.loads(line[len("data: "):])
                pieces.append(chunk["choices"][0]["delta"].get("content") or "" if chunk["choices"] else "")
        print(f"  {len(pieces)} chunks: {''.join(pieces)!r}")
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    for exercise in (exercise_1, exercise_2, exercise_3, exercise_4, exercise_5):
        exercise()
