"""Muon: Newton-Schulz orthogonalisation, the course's Muon against torch.optim.Muon, and the Muon + AdamW
pair behind train()'s optimizer interface (parameter split, LR schedule, checkpoint state, GradScaler)."""

from __future__ import annotations

import json

import pytest
import torch

import minigpt_helpers.training.muon as muon_mod
from minigpt_helpers import GPT, GPTConfig, TrainConfig
from minigpt_helpers.training.checkpoint import optimizer_from_safetensors, optimizer_to_safetensors
from minigpt_helpers.training.loop import make_optimizer
from minigpt_helpers.training.muon import Muon, MuonAdamW, hidden_matrices, zeropower_via_newtonschulz

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module
needs_torch_muon = pytest.mark.skipif(not hasattr(torch.optim, "Muon"), reason="torch.optim.Muon needs torch >= 2.9")
MODERN = dict(vocab_size=29, block_size=8, n_layer=2, n_head=4, n_embd=32, bias=False, rope_theta=1e4,
              norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=True, tie_embeddings=False)


@pytest.mark.parametrize("shape", [(24, 64), (64, 24)])
def test_newton_schulz_keeps_singular_vectors_and_evens_singular_values(shape):
    g = torch.Generator().manual_seed(0)
    u, _ = torch.linalg.qr(torch.randn(shape[0], 4, generator=g))
    v, _ = torch.linalg.qr(torch.randn(shape[1], 4, generator=g))
    G = u @ torch.diag(torch.tensor([30.0, 10.0, 5.0, 3.0])) @ v.T  # rank 4, singular values over a decade
    X = zeropower_via_newtonschulz(G, dtype=torch.float32)
    s = torch.linalg.svdvals(X)
    assert X.shape == G.shape
    assert ((s[:4] > 0.5) & (s[:4] < 1.5)).all(), s[:4]  # all four directions now about the same size
    assert (s[4:] < 1e-4).all()  # nothing outside G's singular directions
    torch.testing.assert_close(u.T @ X @ v, torch.diag(torch.diag(u.T @ X @ v)), atol=1e-4, rtol=0)
    # bfloat16 (the default, as in torch and Keller Jordan's code) on a full-rank gradient: the same update
    # up to rounding. (On the rank-4 G above it is not: bf16 rounding adds tiny singular values, which the
    # iteration pumps up like any other.)
    F = torch.randn(shape, generator=g)
    X, Y = zeropower_via_newtonschulz(F, dtype=torch.float32), zeropower_via_newtonschulz(F).float()
    assert (Y * X).sum() / (Y.norm() * X.norm()) > 0.999
    s = torch.linalg.svdvals(Y)
    assert s.min() > 0.5 and s.max() < 1.5
    with pytest.raises(ValueError, match="2-D"):
        zeropower_via_newtonschulz(torch.randn(2, 3, 4))


@needs_torch_muon
@pytest.mark.parametrize("kw", [
    dict(lr=0.05, weight_decay=0.1, momentum=0.9, nesterov=True, adjust_lr_fn=None),
    dict(lr=0.02, weight_decay=0.0, momentum=0.95, nesterov=False, adjust_lr_fn="match_rms_adamw"),
    dict(lr=0.01, weight_decay=0.01, momentum=0.8, nesterov=True, adjust_lr_fn="original", ns_steps=3),
])
def test_course_muon_matches_torch_muon(kw):
    g = torch.Generator().manual_seed(1)
    ours = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in [(16, 8), (8, 24), (12, 12)]]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    a, b = Muon(ours, **kw), torch.optim.Muon(theirs, **kw)
    for _ in range(4):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape, generator=g)
            q.grad = p.grad.clone()
        a.step()
        b.step()
        for p, q in zip(ours, theirs):
            torch.testing.assert_close(p, q, atol=1e-6, rtol=1e-6)
    assert not torch.equal(ours[0], theirs[0].new_zeros(1)) and a.state[ours[0]]["momentum_buffer"].any()


def _model(seed: int = 0) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**MODERN))


def _grads(model: GPT, seed: int) -> None:
    x = torch.randint(0, 29, (2, 8), generator=torch.Generator().manual_seed(seed))
    model.zero_grad(set_to_none=True)
    model(x, x)[1].backward()


def test_split_gives_hidden_matrices_to_muon_and_the_rest_to_adamw():
    model = _model()
    opt = make_optimizer(model, TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert isinstance(opt, MuonAdamW)
    in_muon = {id(p) for g in opt.muon.param_groups for p in g["params"]}
    in_adamw = {id(p) for g in opt.adamw.param_groups for p in g["params"]}
    names = {id(p): n for n, p in model.named_parameters()}
    assert not in_muon & in_adamw and in_muon | in_adamw == set(names)
    assert {names[i] for i in in_muon} == {f"transformer.h.{i}.{m}.weight" for i in range(2)
                                           for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")}
    adamw_names = {names[i] for i in in_adamw}
    assert {"transformer.wte.weight", "lm_head.weight", "transformer.ln_f.weight",
            "transformer.h.0.attn.q_norm.weight"} <= adamw_names
    assert [p.ndim for p in hidden_matrices(model)] == [2] * 8
    # plain AdamW stays what it was
    assert isinstance(make_optimizer(model, TrainConfig(), torch.device("cpu")), torch.optim.AdamW)
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="sgd")
    with pytest.raises(ValueError, match="muon_lr"):
        TrainConfig(optimizer="muon", muon_lr=0)


def test_schedule_lr_scales_muon_and_adamw_together():
    """train() writes one lr into every group; Muon steps at lr * muon_lr / cfg.lr."""
    cfg = TrainConfig(optimizer="muon", lr=1e-3, muon_lr=0.02, muon_momentum=0.9, muon_weight_decay=0.05)
    model, twin = _model(), _model()
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    hidden = hidden_matrices(twin)
    ref = muon_mod.make_muon(hidden, lr=0.5 * 0.02, momentum=0.9, weight_decay=0.05)
    for g in opt.param_groups:
        g["lr"] = 0.5e-3  # half the peak, as in the middle of the cosine
    _grads(model, 0)
    _grads(twin, 0)
    opt.step()
    ref.step()
    assert all(g["lr"] == 0.5e-3 for g in opt.param_groups)  # the schedule's value is left in place
    for p, q in zip(hidden_matrices(model), hidden):
        torch.testing.assert_close(p, q, atol=0, rtol=0)
    assert not torch.equal(model.transformer.wte.weight, _model().transformer.wte.weight)  # AdamW moved them


def test_state_dict_survives_a_checkpoint_and_resumes_exactly():
    cfg = TrainConfig(optimizer="muon")
    model = _model()
    opt = make_optimizer(model, cfg, torch.device("cpu"))
    for s in range(2):
        _grads(model, s)
        opt.step()
    tensors, meta = optimizer_to_safetensors(opt.state_dict())
    tensors = {k: v.clone() for k, v in tensors.items()}  # as read back from optimizer.safetensors
    meta = json.loads(json.dumps(meta))  # what trainer.json keeps
    model2 = _model(seed=5)
    model2.load_state_dict(model.state_dict())
    opt2 = make_optimizer(model2, cfg, torch.device("cpu"))
    opt2.load_state_dict(optimizer_from_safetensors(tensors, meta))
    for m, o in ((model, opt), (model2, opt2)):
        _grads(m, 7)
        o.step()
    for a, b in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    adamw_state = make_optimizer(model, TrainConfig(), torch.device("cpu")).state_dict()
    with pytest.raises(ValueError, match="same optimizer"):
        opt2.load_state_dict(adamw_state)


def test_grad_scaler_unscales_before_muon():
    """fp16 training: GradScaler.unscale_ and step() go through the pair like through one optimizer."""
    cfg = TrainConfig(optimizer="muon")
    model, twin = _model(), _model()
    opt, ref = (make_optimizer(m, cfg, torch.device("cpu")) for m in (model, twin))
    scaler = torch.amp.GradScaler("cpu", init_scale=1024.0)
    x = torch.randint(0, 29, (2, 8), generator=torch.Generator().manual_seed(3))
    scaler.scale(model(x, x)[1]).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1e9)
    scaler.step(opt)
    scaler.update()
    twin(x, x)[1].backward()
    ref.step()
    for a, b in zip(model.parameters(), twin.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)


def test_falls_back_to_the_course_muon_and_says_so(monkeypatch):
    monkeypatch.setattr(muon_mod, "TORCH_HAS_MUON", False)
    monkeypatch.setattr(muon_mod, "_warned", False)
    with pytest.warns(UserWarning, match="no torch.optim.Muon"):
        opt = make_optimizer(_model(), TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert type(opt.muon) is Muon
    with pytest.raises(ValueError, match="2-D"):
        Muon([torch.nn.Parameter(torch.zeros(3))])


def test_on_a_cpu_newton_schulz_runs_in_float32():
    """torch.optim.Muon always multiplies in bfloat16, ~25x slower than float32 on a CPU without bf16 units."""
    opt = make_optimizer(_model(), TrainConfig(optimizer="muon"), torch.device("cpu"))
    assert type(opt.muon) is Muon and opt.muon.ns_dtype == torch.float32
    p = torch.nn.Parameter(torch.zeros(8, 24))
    p.grad = torch.randn(8, 24, generator=torch.Generator().manual_seed(2))
    muon_mod.make_muon([p], lr=1.0, weight_decay=0.0, momentum=0.0, nesterov=False).step()  # W <- -NS(G)
    torch.testing.assert_close(p.detach(), -zeropower_via_newtonschulz(p.grad, dtype=torch.float32),
                               atol=1e-6, rtol=0)
