"""Solutions to chapter 09's exercises (evaluation and scaling laws), runnable as a script.

    python solutions/09_evaluation_and_scaling_solutions.py                  # learner sizes
    MINIGPT_QUICK=1 python solutions/09_evaluation_and_scaling_solutions.py  # a couple of minutes

Uses chapter 05's model (``get_trained_model`` trains a small one if it is missing) and the chapter's
IsoFLOP sweep: the same settings and folder (``artifacts/ch09_isoflop``), so the runs the notebook trained
are loaded, not trained again (without them, the sweep runs first: about ten minutes at full size).
"""

from __future__ import annotations

import math
import random
import warnings
from collections import Counter

import numpy as np
from scipy.optimize import least_squares

import minigpt_helpers as m
from minigpt_helpers import pick

N_ITEMS = pick(full=600, quick=100)  # questions per variant of the task
KAPLAN_LND = dict(alpha_n=0.076, alpha_d=0.103)  # Kaplan et al. 2020, Table 2: the fit of L(N, D)

# The chapter's sweep (section 6), setting for setting: a saved run is reused only if they match.
WIDTHS = pick(full=(16, 32, 48, 64, 96, 128, 160, 192), quick=(8, 12, 16, 24, 32, 48))
HEAD_DIM, BLOCK, BATCH = pick(full=(16, 64, 16), quick=(4, 16, 8))
BUDGETS = pick(full=(1e11, 3e11, 1e12), quick=(1e9, 3e9))
MIN_STEPS = pick(full=50, quick=20)
N_BOOT = pick(full=200, quick=20)


# ----------------------------------------------------------------------------- shared pieces
def unigram_scorer():
    """The chapter's unigram model: add-one smoothed character frequencies of the training split."""
    chars = Counter()
    for doc in m.stream_documents("shakespeare", "train", verbose=False):
        chars.update(doc["text"])
    total, kinds = sum(chars.values()), len(chars) + 1
    return lambda text: sum(math.log((chars[c] + 1) / (total + kinds)) for c in text)


def unigram_accuracy(logp, items: list[dict]) -> tuple[float, tuple[float, float]]:
    right = sum(max(range(len(it["choices"])), key=lambda j, it=it: logp(it["choices"][j])) == it["label"]
                for it in items)
    return right / len(items), m.wilson_interval(right, len(items))


def show(name: str, acc: float, ci: tuple[float, float], extra: str = "") -> None:
    print(f"  {name:34} acc {acc:6.1%}  (95% {ci[0]:.1%}-{ci[1]:.1%}){extra}")


def overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


# ----------------------------------------------------------------------------- 1. another distractor rule
# Distractors from other plays only, or from other scenes of the same play (length-matched as before):
# which is easier, for chapter 05's model and for the unigram model?
def with_distractors(items: list[dict], pool: list[dict], rule: str, seed: int = 0) -> list[dict]:
    """``items`` with their three distractors replaced by the pool's true lines chosen by ``rule``.

    ``rule``: "other plays" (another work than the question's) or "same play" (the same work, another
    scene). Among the lines the rule allows, the three nearest in length to the true line are taken
    (ties: pool order), so length still gives nothing away; the four lines are shuffled with ``seed``.
    """
    rng = random.Random(seed)
    out = []
    for it in items:
        true = it["choices"][it["label"]]
        allowed = [p["choices"][p["label"]] for p in pool
                   if p["scene_id"] != it["scene_id"] and p["choices"][p["label"]] != true
                   and (p["source"] != it["source"] if rule == "other plays" else p["source"] == it["source"])]
        if len(allowed) < 3:
            continue
        picks = sorted(dict.fromkeys(allowed), key=lambda line: abs(len(line) - len(true)))[:3]
        choices = [true, *picks]
        rng.shuffle(choices)
        out.append({**it, "choices": choices, "label": choices.index(true)})
    return out


def distractor_rules(model) -> dict[str, dict]:
    """Accuracy of the unigram model and chapter 05's model under each rule, on the same questions."""
    print("== 1. another distractor rule")
    pool = m.shakespeare_next_line(pick(full=3000, quick=600))  # true lines to draw distractors from
    logp = unigram_scorer()
    out = {}
    for rule in ("other plays", "same play"):
        items = m.items_within_window(model, with_distractors(pool[:N_ITEMS], pool, rule))
        r = m.evaluate_choices(model, items)
        uni = unigram_accuracy(logp, items)
        print(f" distractors from {rule}: {len(items)} questions")
        show("unigram (characters)", *uni)
        show("chapter 05", r["acc"], r["acc_ci"])
        out[rule] = {"model": (r["acc"], r["acc_ci"]), "unigram": uni}
    for who in ("model", "unigram"):
        (a, ca), (b, cb) = out["other plays"][who], out["same play"][who]
        verdict = "within the noise" if overlap(ca, cb) else ("easier" if a > b else "harder")
        print(f" {who}: other plays {a:.1%} vs same play {b:.1%}: distractors from other plays are {verdict}"
              + ("" if verdict == "within the noise" else " (the intervals do not overlap)"))
    print(" A model that gains from other-play distractors is using what a play is about (its names and words),"
          " not what comes next; the unigram model sees no context, so only the lines' own letters can move it.")
    return out


# ----------------------------------------------------------------------------- 2. more context
# n_context_lines = 1, 2, 4, 8: does accuracy rise with context? How many contexts are cut?
def more_context(model, lines=(1, 2, 4, 8)) -> list[dict]:
    print("== 2. more context")
    tok, block = model.tokenizer, model.config.block_size
    rows = []
    for k in lines:
        task = m.shakespeare_next_line(N_ITEMS, n_context_lines=k)
        items = m.items_within_window(model, task)
        r = m.evaluate_choices(model, items)
        context_tokens = np.mean([len(tok.encode_ordinary(it["context"])) for it in items])
        rows.append({"lines": k, "acc": r["acc"], "ci": r["acc_ci"], "cut": r["n_truncated"] / len(items),
                     "tokens": context_tokens})
        show(f"{k} context line{'s' if k > 1 else ''} ({len(items)} questions)", r["acc"], r["acc_ci"],
             f"  context {context_tokens:.0f} tokens on average; cut to {block}: {r['n_truncated'] / len(items):.0%}")
    first, last = rows[0], rows[-1]
    rises = last["acc"] > first["acc"] and not overlap(first["ci"], last["ci"])
    print(f" from {first['lines']} to {last['lines']} lines: {first['acc']:.1%} -> {last['acc']:.1%}: "
          + ("a rise beyond the noise" if rises else "no rise beyond the noise")
          + f". Beyond the {block}-token window the extra lines never reach the model (cut in "
          f"{last['cut']:.0%} of the questions at {last['lines']} lines), so more context cannot help past it;"
          " a longer block_size (and a model that uses it) would.")
    return rows


# ----------------------------------------------------------------------------- 3. a fourth budget
# A budget between two of the sweep's (twice the smallest), trained with the same family; refit: do the
# exponents stay inside the three-budget intervals, and do the intervals narrow?
def sweep_setup():
    train_texts = [d["text"] for d in m.stream_documents("shakespeare", "train", verbose=False)]
    val_texts = [d["text"] for d in m.stream_documents("shakespeare", "validation", verbose=False)]
    tok = m.CharTokenizer.train(train_texts)
    base = m.TrainConfig(**{**m.PRESETS["cpu-modern"]["train"], "batch_size": BATCH,
                            "eval_windows": pick(full=200, quick=50), "data_workers": 0, "num_threads": 1,
                            "log_with": None})
    return train_texts, val_texts, tok, base


def run_budgets(budgets, setup) -> list[dict]:
    """The sweep's runs at ``budgets`` (loaded from artifacts/ch09_isoflop where the chapter trained them)."""
    train_texts, val_texts, tok, base = setup
    family = m.model_family(WIDTHS, vocab_size=tok.vocab_size, head_dim=HEAD_DIM, block_size=BLOCK)
    plan = m.isoflop_plan(budgets, family, batch_size=BATCH, min_steps=MIN_STEPS,
                          max_tokens=2 * sum(map(len, train_texts)), verbose=False)
    runs = m.run_isoflop(plan, train_texts, tok, val_documents=val_texts, base_train_config=base,
                         out_dir=m.artifacts_dir("ch09_isoflop"))
    return [r for r in runs if math.isfinite(r["val_bpb"])]


def approach2(sample: list[dict]) -> dict[str, float]:
    """The exponent a of N_opt ~ C^a from one parabola per budget (the chapter's section 6)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vertices outside the sizes tried: expected in some resamples
        opt = m.isoflop_optima(sample)
    return {"a": m.fit_power_law([o["budget"] for o in opt], [o["n_opt"] for o in opt])[1]}  # ValueError: skipped


def fourth_budget(setup) -> dict[str, tuple[float, tuple[float, float]]] | None:
    print("== 3. a fourth budget")
    extra_budget = 2 * BUDGETS[0]
    four = run_budgets([*BUDGETS, extra_budget], setup)  # one plan: the saved file keeps all four budgets' runs
    three = [r for r in four if r["budget"] != extra_budget]
    new = sorted((r for r in four if r["budget"] == extra_budget), key=lambda r: r["N"])
    print(f" budget {extra_budget:.2g}: widths {[r['n_embd'] for r in new]}, validation bits per byte "
          f"{[round(r['val_bpb'], 3) for r in new]}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            m.fit_parabola([math.log(r["N"]) for r in new], [r["val_bpb"] for r in new])
    except ValueError as e:  # the new profile has no valley: it cannot add a vertex
        print(f" its profile cannot be used: {e}")
        return None
    out = {}
    names = (f"{len(BUDGETS)} budgets", f"{len(BUDGETS) + 1} budgets")
    for name, runs in zip(names, (three, four)):
        a = approach2(runs)["a"]
        ci = m.bootstrap(runs, approach2, n=N_BOOT, strata="budget")["a"]
        out[name] = (a, ci)
        print(f"  {name}: a = {a:.2f}, 90% interval {ci[0]:.2f}-{ci[1]:.2f} (width {ci[1] - ci[0]:.2f})")
    (_, ci3), (a4, ci4) = out[names[0]], out[names[1]]
    print(f" with the new budget the exponent is {'inside' if ci3[0] <= a4 <= ci3[1] else 'outside'} the old interval, "
          f"and the interval {'narrowed' if ci4[1] - ci4[0] < ci3[1] - ci3[0] else 'did not narrow'}. One more "
          "profile adds one vertex; a budget beyond the range (3x the largest) would lengthen the lever arm more")
    return out


# ----------------------------------------------------------------------------- 4. Kaplan's form
# L(N, D) = [(N_c / N)^(alpha_N / alpha_D) + D_c / D]^alpha_D, fitted in log space; compare with Chinchilla's form.
def kaplan_log_loss(p: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> np.ndarray:
    """ln L of Kaplan's L(N, D) for parameters p = (ln N_c, ln D_c, alpha_N, alpha_D), computed in logs."""
    log_nc, log_dc, alpha_n, alpha_d = p
    return alpha_d * np.logaddexp(alpha_n / alpha_d * (log_nc - log_n), log_dc - log_d)


def fit_kaplan(runs: list[dict]) -> dict[str, float]:
    """Kaplan's L(N, D) by least squares on ln L, from a small grid of starting points (the best fit kept)."""
    log_n, log_d, log_l = (np.log([r[k] for r in runs]) for k in ("N", "D", "val_bpb"))
    best = None
    for log_nc in (5.0, 15.0, 30.0):
        for log_dc in (5.0, 15.0, 30.0):
            for alpha_d in (0.05, 0.3):
                res = least_squares(lambda p: kaplan_log_loss(p, log_n, log_d) - log_l,
                                    [log_nc, log_dc, 0.1, alpha_d], bounds=([-50, -50, 1e-4, 1e-4], [200, 200, 5, 5]))
                if best is None or res.cost < best.cost:
                    best = res
    log_nc, log_dc, alpha_n, alpha_d = best.x
    rms = float(np.sqrt(np.mean(best.fun ** 2)))
    return dict(N_c=math.exp(log_nc), D_c=math.exp(log_dc), alpha_n=float(alpha_n), alpha_d=float(alpha_d), rms=rms)


def kaplan_form(setup) -> dict[str, float]:
    print("== 4. Kaplan's form")
    runs = run_budgets(BUDGETS, setup)
    kaplan = fit_kaplan(runs)
    chin = m.fit_chinchilla([r["N"] for r in runs], [r["D"] for r in runs], [r["val_bpb"] for r in runs])
    pred = m.chinchilla_loss(chin, np.array([r["N"] for r in runs]), np.array([r["D"] for r in runs]))
    rms_chin = float(np.sqrt(np.mean((np.log([r["val_bpb"] for r in runs]) - np.log(pred)) ** 2)))
    print(f"  Kaplan:     L = [({kaplan['N_c']:.3g} / N)^({kaplan['alpha_n']:.3f} / {kaplan['alpha_d']:.3f}) + "
          f"{kaplan['D_c']:.3g} / D]^{kaplan['alpha_d']:.3f}   RMS error of ln L {kaplan['rms']:.4f} (4 parameters)")
    print(f"  Chinchilla: L = {chin['E']:.3f} + {chin['A']:.3g} / N^{chin['alpha']:.3f} + {chin['B']:.3g} / "
          f"D^{chin['beta']:.3f}   RMS error of ln L {rms_chin:.4f} (5 parameters)")
    better = "Chinchilla's" if rms_chin < kaplan["rms"] else "Kaplan's"
    print(f" {better} form fits these runs more closely (by the RMS error; it has {'one more' if better[0] == 'C' else 'one fewer'}"
          f" parameter). Kaplan's has no irreducible loss: its L goes to 0 as N and D grow, where Chinchilla's levels"
          f" off at E, here {chin['E']:.2f} bits per byte.")
    print(f" exponents: alpha_N {kaplan['alpha_n']:.3f} (Kaplan's {KAPLAN_LND['alpha_n']}), alpha_D "
          f"{kaplan['alpha_d']:.3f} (Kaplan's {KAPLAN_LND['alpha_d']}); theirs were measured in nats per BPE token on "
          "web text, with models of up to a billion parameters")
    return {"kaplan_rms": kaplan["rms"], "chinchilla_rms": rms_chin, **kaplan}


if __name__ == "__main__":
    model = m.get_trained_model().eval()
    distractor_rules(model)
    more_context(model)
    setup = sweep_setup()
    fourth_budget(setup)
    kaplan_form(setup)
