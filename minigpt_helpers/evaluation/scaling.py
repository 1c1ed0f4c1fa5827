"""IsoFLOP sweeps and scaling-law fits (chapter 09): how good a model *will* get with more compute.

A training run costs about ``C = 6 N D`` FLOPs: ``N`` parameters that each do one
multiply-add (2 FLOPs) per token forward and two backward, over ``D`` tokens
(Kaplan et al. 2020, section 2.1). For a fixed budget ``C`` a bigger model sees
fewer tokens. An **IsoFLOP profile** trains several sizes at the same ``C`` and
plots the final loss against ``log N``: the loss is high for tiny models (too
little capacity) and for huge ones (too few tokens), and the bottom of the
valley is the compute-optimal size ``N_opt(C)``. Repeating it at several budgets
gives ``N_opt(C) ~ C^a`` and ``D_opt(C) ~ C^b`` (Hoffmann et al. 2022, "Training
Compute-Optimal Large Language Models", approach 2).

The pieces, in the order chapter 09 uses them:

    non_embedding_params, flops_per_token   what N is, and what a token costs
    model_family                            model shapes around a preset, ~10x apart in N or more
    isoflop_plan                            for each budget and size: tokens D = C / (6N), steps
    run_isoflop, train_run                  trains each run with train(), resumably, one callback per run
    fit_parabola, isoflop_optima            approach 2: a parabola in log N per profile, its vertex
    fit_power_law                           N_opt(C) ~ C^a and D_opt(C) ~ C^b
    fit_chinchilla, chinchilla_loss,        approach 3: L(N, D) = E + A / N^alpha + B / D^beta
      chinchilla_optimum                      and the compute-optimal (N, D) it implies
    bootstrap                               percentile intervals by resampling runs
    PUBLISHED                               Chinchilla's and Kaplan's numbers, for comparison

The fits use numpy and scipy only (scipy is imported inside the function that needs it).
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..config import set_seed
from ..data.batching import val_windows
from ..model.gpt import GPT, GPTConfig
from ..training.config import PRESETS, TrainConfig
from ..training.loop import evaluate, train
from ..training.metrics import loss_to_bpb, token_byte_lengths

#: Published results, for comparison with a sweep's own fits.
PUBLISHED: dict[str, dict[str, float]] = {
    # Hoffmann et al. 2022, "Training Compute-Optimal Large Language Models" (arXiv:2203.15556):
    # E, A, B, alpha, beta are approach 3's fit (section 3.3, eq. 10); a and b, the exponents of
    # N_opt ~ C^a and D_opt ~ C^b, are approaches 1 and 2's (Table 2: 0.50/0.50 and 0.49/0.51).
    # Approach 3's own fit implies a = 0.46, b = 0.54.
    "chinchilla": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, a=0.50, b=0.50),
    # Kaplan et al. 2020, "Scaling Laws for Neural Language Models" (arXiv:2001.08361), section 6.1:
    # N_opt ~ C^0.73 and batch x steps ~ C^0.24 * C^0.03, so D_opt ~ C^0.27 (non-embedding N).
    "kaplan": dict(a=0.73, b=0.27),
}

#: The file in ``run_isoflop``'s ``out_dir`` that holds the finished runs.
RESULTS_FILE = "isoflop.json"
#: TrainConfig fields a resumed sweep may change: the ones each run sets from the plan, and the
#: ones that say where and how fast it computes, not what (every other field must match).
NOT_SHARED = ("max_steps", "time_budget_s", "batch_size", "grad_accum", "warmup_steps", "eval_interval",
              "device", "num_threads", "data_workers", "compile", "log_interval", "checkpoint_every",
              "log_with", "project", "run_name")


# ------------------------------------------------------------------------------ what N and C are
def _as_model(model_or_config: GPT | GPTConfig) -> GPT:
    """A GPT to count: the model itself, or one built on the meta device (shapes only, no memory)."""
    if isinstance(model_or_config, GPTConfig):
        with torch.device("meta"):
            return GPT(model_or_config)
    if isinstance(model_or_config, GPT):
        return model_or_config
    raise TypeError(f"expected a GPTConfig or a GPT, got {type(model_or_config).__name__}")


def non_embedding_params(model_or_config: GPT | GPTConfig) -> int:
    """N: the parameters that cost 6 FLOPs per training token (``GPT.num_params(non_embedding=True)``).

    Every matrix that multiplies activations counts, and so do the norms' gains. Left
    out are the lookups, which cost no multiply-adds: learned position embeddings
    (none with RoPE) and an *untied* token embedding. With tied embeddings (the
    course's models) the one matrix is also the output head, whose matmul costs
    ``6 * vocab_size * n_embd`` FLOPs per token, so it counts, once. This is
    Kaplan et al.'s "non-embedding" count with the head kept in; Hoffmann et al.
    count every parameter. At the course's sizes the head is a large share of N
    (with a 1024-token vocabulary, 57 % of a 1 x 64 model, 8 % of a 4 x 256 one), and the choice moves
    the fitted exponents (Pearce & Song 2024, "Reconciling Kaplan and Chinchilla
    Scaling Laws"): what matters is that a sweep counts one way throughout, and
    that C = 6 N D uses the same N.
    """
    return _as_model(model_or_config).num_params(non_embedding=True)


def flops_per_token(model_or_config: GPT | GPTConfig) -> int:
    """Training FLOPs per token with attention: ``6 N + 12 n_layer n_head head_dim block_size`` (``GPT.flops_per_token``).

    The second term is the attention scores and weighted sum over a full context
    (PaLM's count; Kaplan et al.'s Table 1 counts half of it). The sweep's budgets
    use ``C = 6 N D`` without it, as Hoffmann et al. do; at context 64 it adds
    about 6 % to a 2 x 128 model, less to wider ones.
    """
    return _as_model(model_or_config).flops_per_token()


def model_family(widths: Sequence[int] = (64, 96, 128, 160, 192, 256), *, vocab_size: int,
                 base: str = "cpu-modern", aspect: int = 64, head_dim: int = 32, **overrides: Any) -> list[GPTConfig]:
    """Model shapes around preset ``base``, one per width: depth = width / ``aspect``, heads = width / ``head_dim``.

    Depth and width grow together at a fixed aspect ratio (default 64: 2 layers at
    width 128, chapter 05's shape) and a fixed head size (default 32, the CPU presets'), as in Kaplan et al.'s
    and Hoffmann et al.'s families; everything else (RoPE, RMSNorm, SwiGLU,
    QK-norm, context) is the preset's, with ``overrides`` on top (e.g.
    ``block_size=16`` for a test). ``vocab_size`` stays fixed across the family:
    the tokenizer's. The default widths span about 30x in N with a 1024-token vocabulary.
    """
    if base not in PRESETS:
        raise ValueError(f"unknown preset {base!r}: choose one of {sorted(PRESETS)}")
    if not widths:
        raise ValueError("give at least one width, e.g. widths=(64, 128, 256)")
    bad = [w for w in widths if not isinstance(w, int) or w <= 0 or w % head_dim]
    if bad:
        raise ValueError(f"widths {bad} are not positive multiples of head_dim={head_dim}: "
                         f"choose widths such as {[head_dim * k for k in (2, 3, 4, 6, 8)]}")
    if aspect <= 0:
        raise ValueError(f"aspect must be > 0 (width per layer), got {aspect}")
    shape = {**PRESETS[base]["model"], **overrides}
    return [GPTConfig(vocab_size=vocab_size, **{**shape, "n_embd": w, "n_head": w // head_dim,
                                                "n_layer": max(1, int(w / aspect + 0.5))})
            for w in widths]


# ------------------------------------------------------------------------------ the plan
def run_id(budget: float, cfg: GPTConfig, batch_size: int) -> str:
    """The name of one run of a sweep (the key a resumed sweep skips by)."""
    return f"C={budget:.4g} L={cfg.n_layer} d={cfg.n_embd} h={cfg.n_head} T={cfg.block_size} B={batch_size}"


def isoflop_plan(budgets: Sequence[float], family: Sequence[GPTConfig], *, batch_size: int,
                 block_size: int | None = None, min_steps: int = 50, max_tokens: int | None = None,
                 verbose: bool = True) -> list[dict[str, Any]]:
    """One run per budget and size: ``D = C / (6 N)`` tokens, as ``steps = round(D / (batch_size * block_size))``.

    Each entry holds the budget, N, the tokens and FLOPs it really gets (``D =
    steps * batch_size * block_size``, ``C = 6 N D``: the budget up to half a step
    of rounding), the steps, and the model's config. A run is dropped when:

    * it has fewer than ``min_steps`` steps: a big model at a small budget, whose
      loss is still falling off the warmup when the schedule ends and says nothing
      about the model's size (its point would sit far above any parabola);
    * it would read more than ``max_tokens`` tokens (e.g. the corpus's size): the
      laws assume every token is new; repeated data helps less (Muennighoff et al.
      2023, "Scaling Data-Constrained Language Models").

    ``block_size`` must match the family's (it is each config's when None). With
    ``verbose`` the dropped runs are listed, and budgets left with fewer than 3
    sizes (too few for a parabola).
    """
    if not family:
        raise ValueError("family is empty: make one with model_family(...)")
    if not budgets or any(not (isinstance(c, (int, float)) and math.isfinite(c) and c > 0) for c in budgets):
        raise ValueError(f"budgets must be positive numbers of FLOPs, e.g. [1e12, 3e12, 1e13], got {budgets!r}")
    if not (isinstance(batch_size, int) and batch_size >= 1 and isinstance(min_steps, int) and min_steps >= 1):
        raise ValueError(f"batch_size and min_steps must be integers >= 1, got {batch_size!r} and {min_steps!r}")
    if block_size is not None and any(cfg.block_size != block_size for cfg in family):
        raise ValueError(f"block_size={block_size} differs from the family's {sorted({c.block_size for c in family})}: "
                         "make the family with model_family(..., block_size=...) or leave block_size out")
    plan, dropped = [], []
    for budget in budgets:
        for cfg in family:
            n, tokens_per_step = non_embedding_params(cfg), batch_size * cfg.block_size
            steps = round(budget / (6 * n) / tokens_per_step)
            entry = dict(id=run_id(budget, cfg, batch_size), budget=float(budget), N=n, D=steps * tokens_per_step,
                         C=6.0 * n * steps * tokens_per_step, steps=steps, batch_size=batch_size,
                         block_size=cfg.block_size, n_layer=cfg.n_layer, n_embd=cfg.n_embd, n_head=cfg.n_head,
                         config=cfg.to_dict())
            too_long = max_tokens is not None and entry["D"] > max_tokens
            (dropped if steps < min_steps or too_long else plan).append(entry)
    if verbose:
        _say_dropped(dropped, plan, min_steps, max_tokens)
    return plan


def _say_dropped(dropped: list[dict], plan: list[dict], min_steps: int, max_tokens: int | None) -> None:
    """Prints which runs the plan left out, and budgets with too few sizes left for a parabola."""
    for e in dropped:
        print(f"[isoflop] dropped {e['id']}: {e['steps']} steps "
              f"(need >= {min_steps}{'' if max_tokens is None else f' and <= {max_tokens} tokens'})")
    counts: dict[float, int] = {}
    for e in plan:
        counts[e["budget"]] = counts.get(e["budget"], 0) + 1
    for budget in sorted({e["budget"] for e in dropped} - {b for b, k in counts.items() if k >= 3}):
        print(f"[isoflop] budget {budget:.3g} keeps {counts.get(budget, 0)} sizes: a parabola needs 3 or more; "
              "add smaller models or raise the budget")


# ------------------------------------------------------------------------------ the runs
def _load_results(path: Path | None, settings: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The finished runs saved in ``path``, by id; raises if they were trained with other settings."""
    if path is None or not path.exists():
        return {}
    saved = json.loads(path.read_text(encoding="utf-8"))
    if saved.get("train_config") != settings:
        changed = sorted(k for k in settings if saved.get("train_config", {}).get(k) != settings[k])
        raise ValueError(f"{path} holds runs trained with other settings ({', '.join(changed)}): "
                         "pass the same base_train_config, or another out_dir for a new sweep")
    return {r["id"]: r for r in saved["results"]}


def _save_results(path: Path | None, settings: dict[str, Any], results: list[dict[str, Any]]) -> None:
    """Writes the finished runs to ``path`` (a temporary file renamed over it: never half written)."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(dict(train_config=settings, results=results), indent=1), encoding="utf-8")
    os.replace(tmp, path)


def _bytes_per_target(windows: torch.Tensor, tokenizer: Any) -> float:
    """UTF-8 bytes per predicted token in ``windows`` (the end-of-text token counts 0, see metrics.py)."""
    targets = windows[:, 1:]
    return float(token_byte_lengths(tokenizer)[targets].sum()) / targets.numel()


def train_run(entry: Mapping[str, Any], documents: Any, tokenizer: Any, windows: torch.Tensor,
              base: TrainConfig, *, warmup_frac: float = 0.02, live: str = "off") -> dict[str, Any]:
    """Trains one run of a plan from scratch and scores it on ``windows``: the entry plus its results.

    ``train()`` runs for ``entry["steps"]`` steps with ``base``'s settings, a linear warmup
    over ``warmup_frac`` of them (default 2 %) and a cosine that ends at the
    last step, as each of Hoffmann et al.'s runs did (a schedule longer than the run
    leaves its loss too high; their figure A1). The validation loss is in nats per
    token and in bits per byte; a run whose loss became NaN gets NaN for both.
    """
    steps = entry["steps"]
    cfg = replace(base, max_steps=steps, time_budget_s=None, batch_size=entry["batch_size"], grad_accum=1,
                  warmup_steps=max(1, round(warmup_frac * steps)), eval_interval=steps)
    set_seed(cfg.seed)
    model = GPT(GPTConfig.from_dict(entry["config"]))
    model.tokenizer = tokenizer
    t0 = time.perf_counter()
    out = train(model, documents, cfg, live=live)
    seconds = time.perf_counter() - t0
    loss = math.nan
    if out.stop_reason != "non-finite loss":
        loss = evaluate(out.model, windows, cfg.batch_size, out.model.device)
    bpb = loss_to_bpb(loss, _bytes_per_target(windows, tokenizer))
    return {**entry, "val_loss": loss, "val_bpb": bpb, "train_loss": out.history.losses[-1],
            "seconds": seconds, "stop_reason": out.stop_reason}


def run_isoflop(plan: Sequence[Mapping[str, Any]], documents: Any, tokenizer: Any, *, val_documents: Any,
                base_train_config: TrainConfig | None = None,
                on_result: Callable[[dict[str, Any], list[dict[str, Any]]], Any] | None = None,
                out_dir: str | os.PathLike | None = None, warmup_frac: float = 0.02,
                live: str = "off") -> list[dict[str, Any]]:
    """Trains every run of ``plan`` (see :func:`train_run`); returns one result per run, in the plan's order.

    documents: the training texts (a list of strings, or a source name for ``train``).
    val_documents: the held-out texts; the first ``eval_windows`` windows of them score every run.
    base_train_config: the settings every run shares (default: cpu-modern's); the plan sets
        the steps, the batch size, the warmup and the schedule's end. A resumed sweep must
        share them (all but :data:`NOT_SHARED`), or this raises.
    on_result: called as ``on_result(result, results_so_far)`` when each run lands, e.g. to
        redraw a plot.
    out_dir: where the results are saved after each run (``isoflop.json``). Called again
        with the same folder, runs already there are skipped, so an interrupted sweep
        continues where it stopped (a run cut short starts over), and runs of another plan
        saved there are kept. Ctrl-C stops the sweep after saving the finished runs.
    """
    if not plan:
        raise ValueError("the plan is empty: make one with isoflop_plan(...) (did it drop every run?)")
    if not 0.0 <= warmup_frac < 1.0:
        raise ValueError(f"warmup_frac must be in [0, 1), got {warmup_frac!r}")
    base = base_train_config or TrainConfig(**PRESETS["cpu-modern"]["train"])
    settings = {k: v for k, v in base.to_dict().items() if k not in NOT_SHARED}
    settings["warmup_frac"] = warmup_frac
    path = Path(out_dir) / RESULTS_FILE if out_dir is not None else None
    done = _load_results(path, settings)
    results = [done[e["id"]] for e in plan if e["id"] in done]
    planned = {e["id"] for e in plan}
    others = [r for i, r in done.items() if i not in planned]  # runs of another plan in the same folder: kept
    windows: dict[int, torch.Tensor] = {}
    for entry in plan:
        if entry["id"] in done:
            continue
        block = entry["block_size"]
        if block not in windows:
            windows[block] = val_windows(val_documents, tokenizer, block, base.eval_windows)
            if windows[block] is None:
                raise ValueError(f"val_documents hold fewer than {block + 1} tokens: give more held-out text")
        result = train_run(entry, documents, tokenizer, windows[block], base, warmup_frac=warmup_frac, live=live)
        if result["stop_reason"] == "interrupted":
            print(f"[isoflop] interrupted: {len(results)} of {len(plan)} runs done"
                  f"{'; call run_isoflop again with the same out_dir to continue' if path else ''}")
            break
        results.append(result)
        _save_results(path, settings, others + results)
        if on_result is not None:
            on_result(result, list(results))
    order = {e["id"]: i for i, e in enumerate(plan)}
    return sorted(results, key=lambda r: order[r["id"]])


# ------------------------------------------------------------------------------ approach 2: parabolas and power laws
def fit_parabola(log_n: Sequence[float], loss: Sequence[float]) -> tuple[float, float, float, float, float]:
    """``loss ~ a x^2 + b x + c`` with ``x = ln N`` (natural log) by least squares: ``(a, b, c, n_opt, loss_opt)``.

    The vertex ``x* = -b / (2a)`` is the profile's compute-optimal size ``n_opt = e^x*``
    and ``loss_opt`` the loss there (Hoffmann et al.'s approach 2). Raises if the
    parabola opens downward (``a <= 0``): the sizes do not bracket the optimum.
    Warns if the vertex lies outside the sizes tried (an extrapolation).
    """
    x, y = np.asarray(log_n, dtype=float), np.asarray(loss, dtype=float)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"log_n and loss must be 1-D and of the same length, got shapes {x.shape} and {y.shape}")
    if len(np.unique(x)) < 3 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        raise ValueError("a parabola needs 3 or more different sizes with finite losses")
    a, b, c = np.polyfit(x, y, 2)
    if a <= 0:
        raise ValueError(f"the parabola opens downward (a = {a:.3g}): this profile does not bracket the optimum, "
                         "the loss does not rise on both sides. Add smaller and larger models at this budget "
                         "(or drop runs that diverged) until the loss curves up at both ends")
    x_opt = -b / (2 * a)
    if abs(x_opt) > 700:  # e^x overflows a float past ~709: an almost flat profile
        raise ValueError(f"the parabola is almost flat (a = {a:.3g}): its vertex, ln N = {x_opt:.3g}, is out of any "
                         "range; add sizes further apart at this budget so the loss curves up at both ends")
    if not x.min() <= x_opt <= x.max():
        warnings.warn(f"the vertex (N = {math.exp(x_opt):.3g}) lies outside the sizes tried "
                      f"({math.exp(x.min()):.3g} to {math.exp(x.max()):.3g}): the optimum is extrapolated; "
                      "add sizes on that side", stacklevel=2)
    return float(a), float(b), float(c), float(math.exp(x_opt)), float(c - b * b / (4 * a))


def isoflop_optima(results: Sequence[Mapping[str, Any]], *, key: str = "val_bpb") -> list[dict[str, float]]:
    """One parabola per budget: ``{budget, n_opt, d_opt, loss_opt, runs}`` per budget, budgets in increasing order.

    ``d_opt = budget / (6 n_opt)``. Runs whose ``key`` is not finite (a diverged run) are left out.
    """
    by_budget: dict[float, list[Mapping[str, Any]]] = {}
    for r in results:
        if math.isfinite(r[key]):
            by_budget.setdefault(r["budget"], []).append(r)
    optima = []
    for budget in sorted(by_budget):
        runs = by_budget[budget]
        *_, n_opt, loss_opt = fit_parabola([math.log(r["N"]) for r in runs], [r[key] for r in runs])
        optima.append(dict(budget=budget, n_opt=n_opt, d_opt=budget / (6 * n_opt), loss_opt=loss_opt, runs=len(runs)))
    return optima


def fit_power_law(x: Sequence[float], y: Sequence[float]) -> tuple[float, float]:
    """``y = coef * x^exponent`` by least squares on ``ln y = ln coef + exponent ln x``: ``(coef, exponent)``.

    E.g. ``fit_power_law(budgets, n_opts)`` gives ``N_opt(C) ~ C^a`` (Chinchilla: a ~ 0.5).
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if x.shape != y.shape or x.ndim != 1 or len(np.unique(x)) < 2:
        raise ValueError("a power law needs x and y of the same length with 2 or more different x")
    if not ((x > 0).all() and (y > 0).all()):
        raise ValueError("a power law is fitted in log-log: every x and y must be > 0")
    exponent, log_coef = np.polyfit(np.log(x), np.log(y), 1)
    if not (np.isfinite(exponent) and abs(log_coef) < 700):  # exp overflows a float past ~709
        raise ValueError(f"the power law's fit is degenerate (exponent {exponent:g}, ln coef {log_coef:g}): "
                         "give points spread over a wider range of x")
    return float(math.exp(log_coef)), float(exponent)


# ------------------------------------------------------------------------------ approach 3: L(N, D)
def chinchilla_loss(fit: Mapping[str, float], n: Any, d: Any) -> Any:
    """``L(N, D) = E + A / N^alpha + B / D^beta`` (numbers or arrays)."""
    n, d = np.asarray(n, dtype=float), np.asarray(d, dtype=float)
    return fit["E"] + fit["A"] / n ** fit["alpha"] + fit["B"] / d ** fit["beta"]


def chinchilla_optimum(fit: Mapping[str, float], c: Any) -> tuple[Any, Any, Any]:
    """``(N_opt, D_opt, L_opt)`` minimising :func:`chinchilla_loss` subject to ``6 N D = C``.

    Hoffmann et al.'s eq. 4: ``N_opt = G (C/6)^a``, ``D_opt = (C/6)^b / G`` with
    ``G = (alpha A / (beta B))^(1 / (alpha + beta))``, ``a = beta / (alpha + beta)``,
    ``b = alpha / (alpha + beta)``.
    """
    alpha, beta = fit["alpha"], fit["beta"]
    g = (alpha * fit["A"] / (beta * fit["B"])) ** (1 / (alpha + beta))
    c6 = np.asarray(c, dtype=float) / 6
    n_opt, d_opt = g * c6 ** (beta / (alpha + beta)), c6 ** (alpha / (alpha + beta)) / g
    return n_opt, d_opt, chinchilla_loss(fit, n_opt, d_opt)


def _huber_objective(p: np.ndarray, log_n: np.ndarray, log_d: np.ndarray, log_l: np.ndarray,
                     delta: float) -> tuple[np.ndarray, np.ndarray]:
    """Hoffmann et al.'s objective and its gradient, for parameters ``p`` of shape ``(..., 5)``.

    ``p = (a, b, e, alpha, beta)``; the prediction is ``LSE(a - alpha ln N, b - beta ln D, e)``
    = ``ln(A / N^alpha + B / D^beta + E)``, compared with ``ln L`` by the Huber loss. The
    sum is divided by ``delta^2`` (it does not move the minimum): at ``delta = 1e-3`` the raw
    sum is ~1e-6, below which L-BFGS's default tolerance stops it at once, the cause of
    Hoffmann et al.'s unconverged fit found by Besiroglu et al. 2024 ("Chinchilla Scaling:
    A Replication Attempt").
    """
    p = np.asarray(p, dtype=float)
    a, b, e, alpha, beta = (p[..., i, None] for i in range(5))
    terms = np.stack(np.broadcast_arrays(a - alpha * log_n, b - beta * log_d, e))  # (3, ..., runs)
    top = terms.max(axis=0)
    exp = np.exp(terms - top)
    total = exp.sum(axis=0)
    r = top + np.log(total) - log_l  # log-sum-exp, minus ln L
    small = np.abs(r) <= delta
    value = np.where(small, 0.5 * r * r, delta * (np.abs(r) - 0.5 * delta)).sum(axis=-1) / delta**2
    w = exp / total * (np.clip(r, -delta, delta) / delta**2)  # d value / d term: softmax times d huber / d r
    grad = np.stack([w[0].sum(-1), w[1].sum(-1), w[2].sum(-1), -(w[0] * log_n).sum(-1), -(w[1] * log_d).sum(-1)], -1)
    return value, grad


#: Hoffmann et al.'s grid of initialisations (appendix D.2): alpha, beta in 0..2 by 0.5,
#: e in -1..1 by 0.5, a and b (the logs of A and B) in 0..25 by 5: 4500 starting points.
CHINCHILLA_GRID = dict(alpha=np.arange(0, 2.01, 0.5), beta=np.arange(0, 2.01, 0.5), e=np.arange(-1, 1.01, 0.5),
                       a=np.arange(0, 25.1, 5), b=np.arange(0, 25.1, 5))


def fit_chinchilla(n: Sequence[float], d: Sequence[float], loss: Sequence[float], *, delta: float = 1e-3,
                   starts: int = 8) -> dict[str, float]:
    """Hoffmann et al.'s approach 3: ``L(N, D) = E + A / N^alpha + B / D^beta`` from runs ``(n, d, loss)``.

    Minimises the Huber loss (``delta``) between ``ln L`` and ``ln`` of the prediction with
    L-BFGS (scipy), as Hoffmann et al. did, over ``(ln A, ln B, ln E, alpha, beta)``. They
    start L-BFGS from every point of a grid (:data:`CHINCHILLA_GRID`) and keep the best
    fit; here the objective is evaluated at all 4500 grid points at once (milliseconds)
    and L-BFGS (a tenth of a second per start) starts from the ``starts`` best of them:
    on laws like Chinchilla's, 8 starts find the same minimum as 200 (tests/test_scaling.py
    checks that more starts find no lower one).

    Returns ``E, A, B, alpha, beta``; the allocation exponents ``a = beta / (alpha + beta)``
    (N_opt ~ C^a) and ``b = alpha / (alpha + beta)`` (D_opt ~ C^b); and ``objective``, the
    Huber sum at the fit (divided by ``delta^2``).
    """
    from scipy.optimize import minimize

    log_n, log_d, log_l = (np.log(np.asarray(v, dtype=float)) for v in (n, d, loss))
    if not (log_n.shape == log_d.shape == log_l.shape and log_n.ndim == 1 and len(log_n) >= 5):
        raise ValueError("fit_chinchilla needs n, d and loss of the same length, 5 runs or more (5 parameters)")
    if not (np.isfinite(log_n).all() and np.isfinite(log_d).all() and np.isfinite(log_l).all()):
        raise ValueError("every n, d and loss must be finite and > 0 (leave out runs that diverged)")
    if not (isinstance(starts, int) and starts >= 1 and delta > 0):
        raise ValueError(f"starts must be an integer >= 1 and delta > 0, got starts={starts!r}, delta={delta!r}")
    g = CHINCHILLA_GRID
    grid = np.stack(np.meshgrid(g["a"], g["b"], g["e"], g["alpha"], g["beta"], indexing="ij"), -1).reshape(-1, 5)
    values, _ = _huber_objective(grid, log_n, log_d, log_l, delta)
    best = None
    for p0 in grid[np.argsort(values)[:starts]]:
        res = minimize(_huber_objective, p0, args=(log_n, log_d, log_l, delta), jac=True, method="L-BFGS-B",
                       options=dict(ftol=1e-12, gtol=1e-8, maxiter=1000))
        if best is None or res.fun < best.fun:
            best = res
    a, b, e, alpha, beta = best.x
    return dict(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=float(alpha), beta=float(beta),
                a=float(beta / (alpha + beta)), b=float(alpha / (alpha + beta)), objective=float(best.fun))


# ------------------------------------------------------------------------------ uncertainty
def _resample(rng: np.random.Generator, groups: list[np.ndarray]) -> np.ndarray:
    """Indices drawn with replacement within each group, as many as the group holds."""
    return np.concatenate([rng.choice(idx, size=len(idx), replace=True) for idx in groups])


def bootstrap(results: Sequence[Any], fit_fn: Callable[[list[Any]], Mapping[str, float]], n: int = 200,
              seed: int = 0, *, level: float = 0.9, strata: str | None = None) -> dict[str, tuple[float, float]]:
    """Percentile intervals of what ``fit_fn`` returns, over ``n`` resamples of ``results`` with replacement.

    ``fit_fn(sample)`` gets a list of results and returns named numbers (exponents, a
    predicted loss or N_opt at a bigger budget...); the answer maps each name to its
    central ``level`` interval ``(low, high)``. ``strata="budget"`` resamples runs
    within each budget, so every IsoFLOP profile keeps its number of runs. A resample
    whose fit raises ``ValueError`` (e.g. a profile left without 3 different sizes)
    is skipped; if more than half are, this raises.
    """
    if not results or n < 1 or not 0 < level < 1:
        raise ValueError(f"bootstrap needs results, n >= 1 and 0 < level < 1; got {len(results)} results, "
                         f"n={n}, level={level}")
    keys = [r[strata] for r in results] if strata else [0] * len(results)
    groups = [np.flatnonzero([k == key for k in keys]) for key in dict.fromkeys(keys)]
    rng = np.random.default_rng(seed)
    draws: dict[str, list[float]] = {}
    for _ in range(n):
        try:
            out = fit_fn([results[i] for i in _resample(rng, groups)])
        except ValueError:
            continue
        for name, value in out.items():
            draws.setdefault(name, []).append(float(value))
    kept = len(next(iter(draws.values()), []))
    if kept < n / 2:
        raise RuntimeError(f"only {kept} of {n} resamples could be fitted: the fit is fragile on these runs; "
                           "add runs (more sizes per budget) before trusting its intervals")
    tail = 100 * (1 - level) / 2
    return {name: (float(np.percentile(v, tail)), float(np.percentile(v, 100 - tail))) for name, v in draws.items()}
