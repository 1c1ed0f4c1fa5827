"""evaluation/scaling.py: what N is, model families, IsoFLOP plans and runs (resumable), and the fits:
parabolas, power laws, Chinchilla's L(N, D) and bootstrap intervals, each on data from a known law."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from minigpt_helpers import GPT, GPTConfig, TrainConfig
from minigpt_helpers.evaluation import scaling
from minigpt_helpers.evaluation.scaling import (
    PUBLISHED,
    RESULTS_FILE,
    bootstrap,
    chinchilla_loss,
    chinchilla_optimum,
    fit_chinchilla,
    fit_parabola,
    fit_power_law,
    flops_per_token,
    isoflop_optima,
    isoflop_plan,
    model_family,
    non_embedding_params,
    run_isoflop,
)
from minigpt_helpers.model.layers import swiglu_hidden
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.training.metrics import LN2, token_byte_lengths

pytestmark = pytest.mark.usefixtures("one_thread")

# A known law, not Chinchilla's own numbers, so the fits cannot lean on them; a = beta / (alpha + beta) = 0.529.
TRUE = dict(E=1.8, A=300.0, B=800.0, alpha=0.32, beta=0.36)
BUDGETS = [1e18, 1e19, 1e20, 1e21]


def isoflop_runs(law: dict, budgets=BUDGETS, sizes: int = 9, noise: float = 1e-3, seed: int = 0) -> list[dict]:
    """Runs on IsoFLOP profiles of ``law``: sizes from N_opt / 8 to 8 N_opt per budget, loss times e^(noise * z)."""
    rng = np.random.default_rng(seed)
    runs = []
    for c in budgets:
        n_opt, _, _ = chinchilla_optimum(law, c)
        for n in n_opt * np.geomspace(1 / 8, 8, sizes):
            d = c / (6 * n)
            loss = float(chinchilla_loss(law, n, d)) * math.exp(noise * rng.normal())
            runs.append(dict(budget=c, N=float(n), D=float(d), val_bpb=loss))
    return runs


# ------------------------------------------------------------------------------ N, C and the family
def test_non_embedding_params_counts_every_matrix_that_computes_and_the_tied_head_once():
    cfg = model_family([128], vocab_size=1024)[0]  # 2 x 128 with cpu-modern's RoPE, RMSNorm, SwiGLU, QK-norm, tied, no bias
    d, h, hd, layers = 128, swiglu_hidden(128), cfg.head_dim, cfg.n_layer
    per_layer = 4 * d * d + 3 * d * h + 2 * d + 2 * hd  # q,k,v,o; SwiGLU's three matrices; two norms; q/k norms
    expected = layers * per_layer + d + 1024 * d  # final norm; the tied embedding, which is also the output head
    assert non_embedding_params(cfg) == expected
    assert non_embedding_params(GPT(cfg)) == expected  # from a model too
    untied = GPTConfig(**{**cfg.to_dict(), "tie_embeddings": False})
    assert non_embedding_params(untied) == expected  # the lookup table is left out, the head counted
    gpt2 = GPTConfig(vocab_size=50, block_size=32, n_layer=1, n_head=2, n_embd=16)
    model = GPT(gpt2)
    assert non_embedding_params(gpt2) == sum(p.numel() for p in model.parameters()) - 32 * 16  # no wpe
    assert flops_per_token(cfg) == 6 * expected + 12 * layers * cfg.n_head * hd * cfg.block_size
    with pytest.raises(TypeError, match="GPTConfig or a GPT"):
        non_embedding_params(cfg.to_dict())


def test_model_family_keeps_the_preset_and_spans_ten_times_in_n():
    family = model_family(vocab_size=1024)
    for cfg in family:
        assert cfg.head_dim == 32 and cfg.n_embd % cfg.n_head == 0
        assert cfg.n_layer == max(1, round(cfg.n_embd / 64 + 1e-9))
        assert (cfg.block_size, cfg.mlp, cfg.norm, cfg.qk_norm, cfg.vocab_size) == (64, "swiglu", "rmsnorm", True, 1024)
    n = [non_embedding_params(cfg) for cfg in family]
    assert n == sorted(n) and n[-1] / n[0] >= 10
    assert [c.n_layer for c in model_family([64, 128, 256], vocab_size=10, aspect=32)] == [2, 4, 8]
    assert model_family([48], vocab_size=10, head_dim=16, block_size=16)[0].block_size == 16
    with pytest.raises(ValueError, match="multiples of head_dim=32"):
        model_family([100], vocab_size=10)


def test_plan_gives_c_equal_6nd_and_drops_short_and_overlong_runs(capsys):
    family = model_family(vocab_size=1024)
    budgets, batch, min_steps = [1e12, 4e12, 1.6e13], 16, 100
    plan = isoflop_plan(budgets, family, batch_size=batch, min_steps=min_steps)
    tokens_per_step = batch * 64
    kept = {(e["budget"], e["n_embd"]) for e in plan}
    for c in budgets:
        for cfg in family:
            n = non_embedding_params(cfg)
            steps = round(c / (6 * n * tokens_per_step))
            assert ((c, cfg.n_embd) in kept) == (steps >= min_steps)
    assert (1e12, 256) not in kept and (1e12, 64) in kept  # the biggest model gets ~47 steps at the smallest budget
    for e in plan:
        assert e["D"] == e["steps"] * tokens_per_step and e["C"] == 6 * e["N"] * e["D"]
        assert abs(e["C"] - e["budget"]) <= 6 * e["N"] * tokens_per_step / 2  # half a step of rounding
        assert GPTConfig.from_dict(e["config"]).n_embd == e["n_embd"]
    assert len({e["id"] for e in plan}) == len(plan)
    assert "dropped" in capsys.readouterr().out
    capped = isoflop_plan(budgets, family, batch_size=batch, min_steps=1, max_tokens=2_000_000, verbose=False)
    assert capped and all(e["D"] <= 2_000_000 for e in capped)
    assert len(capped) < len(budgets) * len(family)
    with pytest.raises(ValueError, match="block_size=32 differs"):
        isoflop_plan(budgets, family, batch_size=batch, block_size=32)
    with pytest.raises(ValueError, match="budgets must be positive"):
        isoflop_plan([0], family, batch_size=batch)


# ------------------------------------------------------------------------------ running a sweep
TEXT = [f"Act {i}. " + "Now is the winter of our discontent made glorious summer by this sun of York. " * 4
        for i in range(12)]
VAL = ["Act 99. And all the clouds that lour'd upon our house in the deep bosom of the ocean buried. " * 3]


def test_run_isoflop_trains_every_run_once_and_resumes(tmp_path, monkeypatch):
    tok = CharTokenizer.train(TEXT + VAL)
    family = model_family([16, 32], vocab_size=tok.vocab_size, aspect=16, head_dim=8, block_size=16)
    n_small, tokens_per_step = non_embedding_params(family[0]), 4 * 16
    budgets = [6 * n_small * tokens_per_step * 6, 6 * n_small * tokens_per_step * 12]  # the small model: 6, 12 steps
    plan = isoflop_plan(budgets, family, batch_size=4, min_steps=1, verbose=False)
    assert len(plan) == 4
    base = TrainConfig(batch_size=4, max_steps=1, lr=3e-3, min_lr=3e-4, eval_windows=8, shuffle_windows=16,
                       device="cpu", data_workers=0, optimizer="muon")
    calls, seen = [], []
    real_train = scaling.train

    def counting_train(*args, **kw):
        calls.append(args[2].max_steps)
        assert args[2].warmup_steps >= 1 and args[2].eval_interval == args[2].max_steps  # cosine ends at the last step
        return real_train(*args, **kw)

    monkeypatch.setattr(scaling, "train", counting_train)
    kw = dict(val_documents=VAL, base_train_config=base, out_dir=tmp_path)
    first = run_isoflop(plan[:3], TEXT, tok, on_result=lambda r, so_far: seen.append((r["id"], len(so_far))), **kw)
    assert [r["id"] for r in first] == [e["id"] for e in plan[:3]]
    assert seen == [(plan[i]["id"], i + 1) for i in range(3)]
    last = run_isoflop(plan[3:], TEXT, tok, **kw)  # another plan in the same folder: the fourth run only
    saved = json.loads((tmp_path / RESULTS_FILE).read_text(encoding="utf-8"))["results"]
    assert [r["id"] for r in saved] == [e["id"] for e in plan]  # the first plan's runs are kept
    results = run_isoflop(plan, TEXT, tok, **kw)  # all four are done: nothing is trained
    assert results[3:] == last
    assert calls == [e["steps"] for e in plan]
    assert [r["id"] for r in results] == [e["id"] for e in plan] and results[:3] == first
    windows = scaling.val_windows(VAL, tok, 16, base.eval_windows)
    bytes_per_target = float(token_byte_lengths(tok)[windows[:, 1:]].sum()) / windows[:, 1:].numel()
    for r, e in zip(results, plan):
        assert r["stop_reason"] == "done" and r["steps"] == e["steps"] and r["N"] == e["N"]
        assert 0 < r["val_loss"] < math.log(tok.vocab_size) + 1 and r["seconds"] > 0
        assert r["val_bpb"] == pytest.approx(r["val_loss"] / (LN2 * bytes_per_target))
    assert len(json.loads((tmp_path / RESULTS_FILE).read_text(encoding="utf-8"))["results"]) == 4

    def no_train(*args, **kw):
        raise AssertionError("a finished run was trained again")

    monkeypatch.setattr(scaling, "train", no_train)
    assert run_isoflop(plan, TEXT, tok, **kw) == results
    elsewhere = TrainConfig(**{**base.to_dict(), "num_threads": 2, "log_with": "tensorboard"})  # may change on resume
    assert run_isoflop(plan, TEXT, tok, val_documents=VAL, base_train_config=elsewhere, out_dir=tmp_path) == results
    with pytest.raises(ValueError, match="other settings \\(lr\\)"):
        run_isoflop(plan, TEXT, tok, val_documents=VAL, base_train_config=TrainConfig(**{**base.to_dict(), "lr": 1e-2}),
                    out_dir=tmp_path)


# ------------------------------------------------------------------------------ fits
def test_parabola_finds_a_known_vertex_and_refuses_one_that_opens_downward():
    x = np.linspace(1.0, 5.0, 7)
    rng = np.random.default_rng(0)
    y = 2.0 * (x - 3.2) ** 2 + 1.5 + rng.normal(0, 1e-4, len(x))
    a, b, c, n_opt, loss_opt = fit_parabola(x, y)
    assert a == pytest.approx(2.0, rel=1e-3) and math.log(n_opt) == pytest.approx(3.2, abs=1e-3)
    assert loss_opt == pytest.approx(1.5, abs=1e-3) and a * 3.2**2 + b * 3.2 + c == pytest.approx(1.5, abs=1e-3)
    with pytest.raises(ValueError, match="does not bracket the optimum"):
        fit_parabola(x, -y)
    with pytest.warns(UserWarning, match="outside the sizes tried"):
        fit_parabola(x[:3], y[:3] + 0.1 * x[:3] ** 3)
    with pytest.raises(ValueError, match="3 or more different sizes"):
        fit_parabola([1.0, 1.0, 2.0], [1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="almost flat"):  # a line with a hint of curvature: the vertex is far away
        fit_parabola(x, 0.01 * x + 1e-9 * x**2)


def test_power_law_recovers_a_known_exponent():
    rng = np.random.default_rng(1)
    x = np.geomspace(1e15, 1e20, 12)
    y = 0.3 * x**0.52 * np.exp(rng.normal(0, 0.01, len(x)))
    coef, exponent = fit_power_law(x, y)
    assert exponent == pytest.approx(0.52, abs=0.01) and coef == pytest.approx(0.3, rel=0.3)
    with pytest.raises(ValueError, match="must be > 0"):
        fit_power_law([1, 2], [1, -1])
    with pytest.raises(ValueError, match="degenerate"):  # x barely spread: the intercept's exp would overflow
        fit_power_law([1e12, 1e12 * (1 + 1e-12)], [1.0, 2.0])


def test_chinchilla_fit_recovers_a_known_law():
    runs = isoflop_runs(TRUE)
    n, d, loss = (np.array([r[k] for r in runs]) for k in ("N", "D", "val_bpb"))
    fit = fit_chinchilla(n, d, loss)
    assert fit["alpha"] == pytest.approx(TRUE["alpha"], abs=0.005)
    assert fit["beta"] == pytest.approx(TRUE["beta"], abs=0.005)
    assert fit["E"] == pytest.approx(TRUE["E"], rel=0.005)
    assert fit["A"] == pytest.approx(TRUE["A"], rel=0.05) and fit["B"] == pytest.approx(TRUE["B"], rel=0.05)
    assert fit["a"] == pytest.approx(TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"]), abs=0.005)
    assert fit["a"] + fit["b"] == pytest.approx(1.0)
    assert fit_chinchilla(n, d, loss, starts=24)["objective"] >= fit["objective"] - 1e-6  # more starts: no lower minimum
    with pytest.raises(ValueError, match="5 runs or more"):
        fit_chinchilla(n[:4], d[:4], loss[:4])


def test_chinchilla_optimum_is_the_lowest_loss_at_its_budget():
    law = PUBLISHED["chinchilla"]
    c = np.array([1e20, 1e22])
    n_opt, d_opt, l_opt = chinchilla_optimum(law, c)
    assert 6 * n_opt * d_opt == pytest.approx(c)
    for factor in (0.8, 1.25):  # moving along the IsoFLOP line either way costs loss
        assert (chinchilla_loss(law, n_opt * factor, d_opt / factor) > l_opt).all()
    a = law["beta"] / (law["alpha"] + law["beta"])  # N_opt ~ C^a
    assert math.log(n_opt[1] / n_opt[0]) / math.log(100) == pytest.approx(a)


def test_isoflop_optima_recover_the_allocation_exponent_and_skip_diverged_runs():
    runs = isoflop_runs(TRUE, noise=0.0)
    runs.append(dict(budget=BUDGETS[0], N=1e9, D=1e9, val_bpb=math.nan))  # a run that diverged
    optima = isoflop_optima(runs)
    assert [o["budget"] for o in optima] == BUDGETS and all(o["runs"] == 9 for o in optima)
    for o in optima:
        assert 6 * o["n_opt"] * o["d_opt"] == pytest.approx(o["budget"])
    _, a = fit_power_law([o["budget"] for o in optima], [o["n_opt"] for o in optima])
    _, b = fit_power_law([o["budget"] for o in optima], [o["d_opt"] for o in optima])
    true_a = TRUE["beta"] / (TRUE["alpha"] + TRUE["beta"])
    assert a == pytest.approx(true_a, abs=0.02) and a + b == pytest.approx(1.0)


def test_bootstrap_intervals_contain_the_truth():
    rng = np.random.default_rng(2)
    x = np.geomspace(1.0, 1e4, 20)
    runs = [dict(x=float(v), y=float(2.0 * v**-0.3 * math.exp(rng.normal(0, 0.05)))) for v in x]

    def fit(sample):
        coef, exponent = fit_power_law([r["x"] for r in sample], [r["y"] for r in sample])
        return {"exponent": exponent, "y_at_1e6": coef * 1e6**exponent}

    intervals = bootstrap(runs, fit, n=200, seed=0)
    lo, hi = intervals["exponent"]
    assert lo < -0.3 < hi and hi - lo < 0.05
    lo, hi = intervals["y_at_1e6"]
    assert lo < 2.0 * 1e6**-0.3 < hi
    assert bootstrap(runs, fit, n=50, seed=0) == bootstrap(runs, fit, n=50, seed=0)  # seeded
    per_budget = bootstrap(isoflop_runs(TRUE), lambda s: {"first": sum(r["budget"] == BUDGETS[0] for r in s)},
                           n=20, strata="budget")
    assert per_budget["first"] == (9.0, 9.0)  # resampled within each budget: every profile keeps its 9 runs

    def never(sample):
        raise ValueError("no fit")

    with pytest.raises(RuntimeError, match="only 0 of 10 resamples"):
        bootstrap(runs, never, n=10)
