"""Chapter 07 exercise solutions: the other modern options, Muon's learning rate, the modern model in Hugging Face.

    python solutions/07_modern_gpt_solutions.py                   # ~20 minutes on a laptop CPU
    MINIGPT_QUICK=1 python solutions/07_modern_gpt_solutions.py   # about a minute

The protocol of the chapter's ablation: chapter 05's `cpu` preset (`tiny` in quick mode), the offline
Shakespeare corpus, the same wall-clock budget for every run, several seeds, validation bits per byte on
fixed held-out windows. A difference smaller than the two rows' standard deviations together is "within noise".
"""

import statistics

import torch

from minigpt_helpers import (GPT, evaluate, generate_ids, pick, preset, set_seed, stream_documents, to_hf, train,
                             val_windows)
from minigpt_helpers.tokenizers.train import default_tokenizer

DATA = "shakespeare"
PRESET = pick(full="cpu", quick="tiny")
BUDGET_S = pick(full=40, quick=1.0)
SEEDS = pick(full=[0, 1, 2], quick=[0, 1])
tok = default_tokenizer(verbose=False)
V = tok.vocab_size
BLOCK = preset(PRESET, V)[0].block_size
VAL = val_windows(stream_documents(DATA, "validation", verbose=False).take(400), tok, BLOCK, pick(full=400, quick=40))


def run(seed: int, **change):
    """One run of the chapter's protocol; returns (validation bits per byte, the trained model)."""
    mcfg, tcfg = preset(PRESET, V, max_steps=None, time_budget_s=BUDGET_S, seed=seed, eval_interval=10**6,
                        eval_windows=20, data_workers=pick(full=1, quick=0), **change)
    set_seed(seed)
    model = GPT(mcfg)
    model.tokenizer = tok
    train(model, DATA, tcfg, live="off")
    return evaluate(model, VAL, 32, torch.device("cpu"), unit="bpb", tokenizer=tok), model


def table(rows: dict[str, dict]) -> None:
    """Train every row with every seed and print mean ± sd and the verdict against the first row."""
    stats = {}
    for name, change in rows.items():
        values = [run(seed, **change)[0] for seed in SEEDS]
        stats[name] = (statistics.mean(values), statistics.stdev(values))
        base_m, base_s = next(iter(stats.values()))
        m, s = stats[name]
        verdict = "" if len(stats) == 1 else (
            "better" if m - base_m < -(s + base_s) else "worse" if m - base_m > s + base_s else "within noise")
        print(f"   {name:22s} {m:.3f} ± {s:.3f} bpb  {verdict}", flush=True)


# 1. The other modern options. ReLU² is as cheap as GELU; untying adds a V x C output matrix (at V = 1024 and
#    C = 128 a large share of this small model); zero-initialised projections start every block as the
#    identity; the soft-cap bounds the logits. At this scale expect most of them within noise: read the verdicts.
print(f"1. the other modern options ({PRESET} preset, {BUDGET_S} s per run, seeds {SEEDS})")
table({"GPT-2": {}, "+ ReLU²": dict(mlp="relu2"), "+ untied embeddings": dict(tie_embeddings=False),
       "+ zero-init projections": dict(zero_init_proj=True), "+ logit soft-cap 15": dict(logit_softcap=15.0)})

# 2. Muon's learning rate, on the all-six model. Too low and Muon's fixed-size steps are too small to use the
#    budget; too high and the weights' spectral norms grow faster than the loss falls. The curve is usually
#    flat over a factor of 2 around its best value, so 0.02 is a reasonable default even where it is not best.
ALL_SIX = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=preset(PRESET, V)[0].n_head // 2,
               qk_norm=True, optimizer="muon")
print("2. Muon's learning rate (all six changes)")
for muon_lr in pick(full=[0.005, 0.01, 0.02, 0.04, 0.08], quick=[0.01, 0.04]):
    values = [run(seed, **ALL_SIX, muon_lr=muon_lr)[0] for seed in SEEDS[:2]]
    print(f"   muon_lr {muon_lr:<6g} {statistics.mean(values):.3f} bpb (seeds {SEEDS[:2]}: "
          f"{', '.join(f'{v:.3f}' for v in values)})", flush=True)

# 3. The all-six model is a Qwen3 (a Llama with QK-norm): to_hf() gives a Qwen3ForCausalLM with the same
#    logits, and Hugging Face's greedy generate picks the same tokens as ours (it may stop earlier, at the
#    end-of-text token, where ours goes on).
print("3. the all-six model in Hugging Face")
_, model = run(0, **ALL_SIX)
model.eval()
hf = to_hf(model)
x = VAL[:4, :-1]
with torch.no_grad():
    diff = (hf(x).logits - model(x)[0]).abs().max().item()
print(f"   {type(hf).__name__}: max |logit difference| {diff:.2e}")
assert diff < 1e-4
prompt = tok.encode("ROMEO:")
ours = list(generate_ids(model, prompt, 20, temperature=0))
theirs = hf.generate(torch.tensor([prompt]), max_new_tokens=20, do_sample=False)[0, len(prompt):].tolist()
assert theirs == ours[: len(theirs)] and theirs
print(f"   greedy, ours: {tok.decode(ours)!r}\n   greedy, Hugging Face: {tok.decode(theirs)!r}")
