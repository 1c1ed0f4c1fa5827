"""Chapter 07 exercise solutions: the other modern options, Muon's learning rate, the modern model in Hugging Face.

    python solutions/07_modern_gpt_solutions.py                   # ~30 minutes on a laptop CPU
    MINIGPT_QUICK=1 python solutions/07_modern_gpt_solutions.py   # under a minute

The protocol of the chapter's ablation: chapter 05's `cpu` preset (`tiny` in quick mode), the offline
Shakespeare corpus, the same wall-clock budget for every run (60 s), the same seeds, validation bits per byte on
fixed held-out windows. A difference larger than the two rows' standard deviations together is "better" or
"worse"; a smaller one is "within noise".
"""

import statistics

import torch

from minigpt_helpers import (GPT, Muon, evaluate, generate_ids, pick, preset, set_seed, stream_documents, to_hf,
                             train, val_windows)
from minigpt_helpers.tokenizers.train import default_tokenizer

DATA = "shakespeare"
PRESET = pick(full="cpu", quick="tiny")
BUDGET_S = pick(full=60, quick=1.0)  # the chapter's wall-clock seconds per run
SEEDS = pick(full=[0, 1, 2], quick=[0, 1])
tok = default_tokenizer(verbose=False)
V = tok.vocab_size
BASE = preset(PRESET, V)[0]
val_docs = list(stream_documents(DATA, "validation", verbose=False).take(pick(full=400, quick=40)))
VAL = val_windows(val_docs, tok, BASE.block_size, pick(full=400, quick=40))  # the chapter's held-out windows


def run(seed: int, **change):
    """One run of the chapter's protocol; returns (validation bits per byte, the trained model)."""
    mcfg, tcfg = preset(PRESET, V, max_steps=None, time_budget_s=BUDGET_S, seed=seed, eval_interval=10**6,
                        eval_windows=20, data_workers=pick(full=1, quick=0), **change)
    set_seed(seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    train(model, DATA, tcfg, live="off")
    return evaluate(model, VAL, 32, torch.device("cpu"), unit="bpb", tokenizer=tok), model


def mean_sd(xs: list[float]) -> tuple[float, float]:
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def verdict(row: tuple[float, float], base: tuple[float, float]) -> str:
    """The chapter's verdict: the difference of the means against the two standard deviations added."""
    d, noise = row[0] - base[0], row[1] + base[1]
    return "better" if d < -noise else "worse" if d > noise else "within noise"


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# 1. The other modern options as rows of the ablation (same budget, same seeds): mlp="relu2",
#    tie_embeddings=False, zero_init_proj=True, logit_softcap=15.0. Which are better than GPT-2 by more
#    than the noise? First what each one is, checked; then the table.
def check_options() -> None:
    """ReLU² has the GELU MLP's parameters; untying adds a V x C output matrix; zero-initialised
    projections start every block as the identity; the soft-cap bounds the logits."""
    set_seed(0)
    gpt2, relu2, untied = (GPT(preset(PRESET, V, **c)[0]) for c in ({}, dict(mlp="relu2"),
                                                                     dict(tie_embeddings=False)))
    assert n_params(relu2) == n_params(gpt2)
    assert n_params(untied) - n_params(gpt2) == V * BASE.n_embd
    zero = GPT(preset(PRESET, V, zero_init_proj=True)[0])
    x = torch.randn(2, BASE.block_size, BASE.n_embd)
    assert all(torch.equal(block(x), x) for block in zero.transformer.h)
    capped = GPT(preset(PRESET, V, logit_softcap=15.0)[0])
    with torch.no_grad():
        capped.lm_head.weight.mul_(1000)  # huge logits without the cap
        top = capped(VAL[:2, :-1])[0].abs().max().item()
    assert top <= 15.0
    print(f"   checked: ReLU² adds no parameters, untying adds V x C = {V * BASE.n_embd:,} "
          f"(+{V * BASE.n_embd / n_params(gpt2):.0%}), zero-init blocks start as the identity, "
          f"soft-capped logits stay within ±15 (largest {top:.2f}) with the head's weights x1000")


def exercise_1() -> dict[str, str]:
    print(f"1. the other modern options ({PRESET} preset, {BUDGET_S} s per run, seeds {SEEDS})")
    check_options()
    rows = {"GPT-2": {}, "+ ReLU²": dict(mlp="relu2"), "+ untied embeddings": dict(tie_embeddings=False),
            "+ zero-init projections": dict(zero_init_proj=True), "+ logit soft-cap 15": dict(logit_softcap=15.0)}
    stats, verdicts = {}, {}
    for name, change in rows.items():
        stats[name] = mean_sd([run(seed, **change)[0] for seed in SEEDS])
        verdicts[name] = "—" if name == "GPT-2" else verdict(stats[name], stats["GPT-2"])
        m, s = stats[name]
        print(f"   {name:24s} {m:.3f} ± {s:.3f} bpb  {m - stats['GPT-2'][0]:+.3f}  {verdicts[name]}", flush=True)
    for label in ("better", "within noise", "worse"):
        print(f"   {label} than GPT-2 by more than the noise:" if label != "within noise" else "   within noise:",
              ", ".join(n for n, v in verdicts.items() if v == label) or "none")
    return verdicts


# 2. Muon's learning rate on the all-six model, same budget: muon_lr 0.005, 0.01, 0.02, 0.04 and 0.08.
#    Where is the best value, and how flat is the curve around it? Muon's step has a size set by the
#    learning rate alone, whatever the gradient's scale: too low and it is too small to use the budget,
#    too high and the weights' spectral norms grow faster than the loss falls.
def check_muon_step_size() -> None:
    """Muon's update is the orthogonalised gradient times the learning rate: its size follows muon_lr
    and does not depend on the gradient's scale (weight decay off, so only the update moves W)."""
    torch.manual_seed(0)
    w0, g = torch.randn(64, 128), torch.randn(64, 128)

    def update(lr: float, grad: torch.Tensor) -> torch.Tensor:
        w = torch.nn.Parameter(w0.clone())
        opt = Muon([w], lr=lr, weight_decay=0.0, ns_dtype=torch.float32)
        w.grad = grad
        opt.step()
        return (w.detach() - w0).norm()

    ratio = (update(0.04, g) / update(0.01, g)).item()
    scale = (update(0.02, 100 * g) / update(0.02, g)).item()
    assert abs(ratio - 4) < 1e-3 and abs(scale - 1) < 1e-2
    print(f"   checked: 4x muon_lr gives a {ratio:.3f}x larger step; a 100x larger gradient, a {scale:.3f}x one")


ALL_SIX = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=BASE.n_head // 2, qk_norm=True,
               optimizer="muon")


def exercise_2() -> dict[float, tuple[float, float]]:
    print("2. Muon's learning rate (all six changes)")
    check_muon_step_size()
    curve = {}
    for muon_lr in pick(full=[0.005, 0.01, 0.02, 0.04, 0.08], quick=[0.01, 0.04]):
        values = [run(seed, **ALL_SIX, muon_lr=muon_lr)[0] for seed in SEEDS]
        curve[muon_lr] = mean_sd(values)
        print(f"   muon_lr {muon_lr:<6g} {curve[muon_lr][0]:.3f} ± {curve[muon_lr][1]:.3f} bpb (seeds {SEEDS}: "
              f"{', '.join(f'{v:.3f}' for v in values)})", flush=True)
    best = min(curve, key=lambda lr: curve[lr][0])
    flat = [lr for lr in curve if verdict(curve[lr], curve[best]) == "within noise"]
    print(f"   best muon_lr here: {best:g} ({curve[best][0]:.3f} bpb); within noise of it: "
          f"{', '.join(f'{lr:g}' for lr in flat)} (a range of {max(flat) / min(flat):g}x); the default 0.02 is "
          + (f"{curve[0.02][0] - curve[best][0]:+.3f} bpb from the best" if 0.02 in curve else "not in this run"))
    return curve


# 3. Convert an all-six model you trained with to_hf (a Qwen3: QK-norm on top of a Llama), check its
#    logits match ours to 1e-4, and compare Hugging Face's greedy generate with the course's.
def exercise_3() -> None:
    print("3. the all-six model in Hugging Face")
    _, model = run(0, **ALL_SIX)
    model.eval()
    hf = to_hf(model)
    x = VAL[:4, :-1]
    with torch.no_grad():
        diff = (hf(x).logits - model(x)[0]).abs().max().item()
    print(f"   {type(hf).__name__}: max |logit difference| {diff:.2e}")
    assert diff < 1e-4
    prompt = tok.encode("ROMEO.\n")
    ours = list(generate_ids(model, prompt, 20, temperature=0))
    theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
    assert theirs and theirs == ours[: len(theirs)]  # Hugging Face may stop earlier, at the end-of-text token
    print(f"   greedy, ours: {tok.decode(ours)!r}\n   greedy, Hugging Face: {tok.decode(theirs)!r}: "
          f"{'the same' if len(theirs) == len(ours) else f'the same first {len(theirs)}'} tokens")


if __name__ == "__main__":
    exercise_1()
    exercise_2()
    exercise_3()
