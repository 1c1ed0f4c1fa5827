"""Chapter 07's GPTConfig options, alone and all together: shapes, causality, KV cache (incl. beyond the
context), save/load, resume through train(), parameter and FLOP counts; RoPE's relative-position property;
RMSNorm, SwiGLU's width, GQA's cache size; old configs still load as GPT-2."""

from __future__ import annotations

import math

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, TrainConfig, generate_ids, set_seed, to_hf, train
from minigpt_helpers.model.attention import CACHE_CHUNK
from minigpt_helpers.model.layers import RMSNorm, Rotary, apply_rotary, rotate_half, swiglu_hidden
from minigpt_helpers.tokenizers.base import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module

BASE = dict(vocab_size=37, block_size=16, n_layer=2, n_head=4, n_embd=32, bias=False)
ALL = dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=True, tie_embeddings=False,
           zero_init_proj=True, logit_softcap=15.0)
OPTIONS = {
    "gpt2": {},
    "rope": dict(rope_theta=10000.0),
    "rmsnorm": dict(norm="rmsnorm"),
    "swiglu": dict(mlp="swiglu"),
    "relu2": dict(mlp="relu2"),
    "gqa": dict(n_kv_head=2),
    "mqa": dict(n_kv_head=1),
    "qk_norm": dict(qk_norm=True),
    "untied": dict(tie_embeddings=False),
    "zero_init": dict(zero_init_proj=True),
    "softcap": dict(logit_softcap=15.0),
    "all": ALL,
    "all_relu2_mqa": dict(ALL, mlp="relu2", n_kv_head=1),
}


def make(name: str, seed: int = 0, noise: float = 0.05, **over) -> GPT:
    """A tiny model with option set ``name``; weights moved off init so that every path (norm gains, zeroed
    projections) matters."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(**{**BASE, **OPTIONS[name], **over}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(noise * torch.randn_like(p))
    return model.eval()


def ids(B: int = 2, T: int = 12, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, BASE["vocab_size"], (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", OPTIONS)
def test_shapes_and_parameters(name):
    model = make(name)
    c = model.config
    logits, loss = model(ids(), ids(seed=2))
    assert logits.shape == (2, 12, c.vocab_size) and torch.isfinite(loss)
    assert ("wpe" in model.transformer) == (c.rope_theta is None)
    attn = model.transformer.h[0].attn
    assert attn.c_attn.out_features == (c.n_head + 2 * c.kv_heads) * c.head_dim
    assert hasattr(attn, "q_norm") == c.qk_norm
    assert (model.lm_head.weight is model.transformer.wte.weight) == c.tie_embeddings
    assert isinstance(model.transformer.ln_f, RMSNorm) == (c.norm == "rmsnorm")
    if c.logit_softcap is not None:
        assert logits.abs().max() < c.logit_softcap
    # FLOPs: 6 per parameter (forward + backward) plus attention over the context
    assert model.flops_per_token() == 6 * model.num_params() + 12 * c.n_layer * c.n_head * c.head_dim * c.block_size


@pytest.mark.parametrize("name", OPTIONS)
def test_causal(name):
    model = make(name)
    x = ids(B=1, T=12)
    y = x.clone()
    y[0, 7] = (y[0, 7] + 1) % BASE["vocab_size"]
    with torch.no_grad():
        a, b = model(x)[0], model(y)[0]
    torch.testing.assert_close(a[:, :7], b[:, :7], atol=1e-6, rtol=0)
    assert not torch.allclose(a[:, 7:], b[:, 7:])


@pytest.mark.parametrize("name", OPTIONS)
def test_kv_cache_matches_full_forward_and_greedy_beyond_the_context(name):
    model = make(name, seed=1, noise=0.2)  # (a random model whose greedy output is not one repeated token)
    x = ids(B=2, T=16)
    with torch.no_grad():
        full = model(x)[0]
        cache = model.new_kv_cache(batch_size=2)
        assert cache.k.shape[2] == model.config.kv_heads  # GQA caches only the key/value heads
        outs = [model(x[:, a:b], kv_cache=cache)[0] for a, b in [(0, 5), (5, 6), (6, 11), (11, 16)]]
    torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-5, rtol=1e-5)
    # 40 new tokens with a context of 16: the window slides (RoPE positions restart with it)
    prompt = ids(B=1, T=5, seed=3)[0].tolist()
    with_cache = list(generate_ids(model, prompt, 40, temperature=0, use_cache=True))
    without = list(generate_ids(model, prompt, 40, temperature=0, use_cache=False))
    assert with_cache == without and len(set(with_cache)) > 1


@pytest.mark.parametrize("name", OPTIONS)
def test_save_load_roundtrip(name, tmp_path):
    model = make(name)
    model.save(tmp_path / "m")
    assert GPT.check_saved(tmp_path / "m") == model.config
    loaded = GPT.load(tmp_path / "m")
    assert loaded.config == model.config
    assert (loaded.lm_head.weight is loaded.transformer.wte.weight) == model.config.tie_embeddings
    assert loaded.num_params() == model.num_params()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(loaded.eval()(x)[0], model(x)[0], atol=0, rtol=0)



def test_check_saved_refuses_options_that_do_not_fit_the_weights(tmp_path):
    import json

    make("rope").save(tmp_path / "m")  # tied: the shared matrix is stored once
    cfg_file = tmp_path / "m" / "config.json"
    for change, match in [({"tie_embeddings": False}, "weights lack"), ({"n_kv_head": 1}, "c_attn"),
                          ({"rope_theta": None}, "wpe"), ({"mlp": "swiglu"}, "c_fc")]:
        saved = json.loads(cfg_file.read_text(encoding="utf-8"))
        cfg_file.write_text(json.dumps({**saved, **change}), encoding="utf-8")
        with pytest.raises(ValueError, match=match):
            GPT.load(tmp_path / "m")
        cfg_file.write_text(json.dumps(saved), encoding="utf-8")
    assert GPT.load(tmp_path / "m").config == make("rope").config


DOCS = [f"Scene {i}. " + "To be, or not to be, that is the question. " * (3 + i % 4) for i in range(20)]
VAL = ["Scene 99. " + "To be, or not to be, that is the question. " * 4]


def _tiny_run(name: str, optimizer: str = "adamw"):
    tok = CharTokenizer.train(DOCS + VAL)
    set_seed(0)
    model = GPT(GPTConfig(**{**BASE, "vocab_size": tok.vocab_size, **OPTIONS[name]}))
    model.tokenizer = tok
    cfg = TrainConfig(batch_size=4, max_steps=4, warmup_steps=1, lr=3e-3, min_lr=3e-4, eval_interval=2,
                      eval_windows=4, shuffle_windows=16, device="cpu", data_workers=0, optimizer=optimizer)
    return model, cfg


@pytest.mark.parametrize("name,optimizer", [(n, "adamw") for n in OPTIONS] + [("all", "muon")])
def test_resume_through_train_is_exact(name, optimizer, tmp_path):
    model, cfg = _tiny_run(name, optimizer)
    straight = train(model, DOCS, cfg, val_data=VAL, live="off")
    model2, _ = _tiny_run(name, optimizer)
    stop = train(model2, DOCS, cfg, val_data=VAL, out_dir=tmp_path, live="off", callback=lambda i: i["step"] == 2)
    assert stop.stop_reason == "callback" and stop.step == 2
    model3, _ = _tiny_run(name, optimizer)
    resumed = train(model3, DOCS, cfg, val_data=VAL, out_dir=tmp_path, resume=True, live="off")
    assert resumed.step == 4
    assert resumed.history.losses == straight.history.losses  # bit for bit on CPU
    assert straight.history.losses[-1] < straight.history.losses[0]
    for (k, a), b in zip(model.state_dict().items(), model3.state_dict().values()):
        assert torch.equal(a, b), k


# ------------------------------------------------------------------------------ the pieces
def test_rope_score_depends_only_on_the_offset():
    D = 16
    rot = Rotary(D, max_len=64, theta=10000.0)
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(D, generator=g), torch.randn(D, generator=g)

    def score(m: int, n: int) -> torch.Tensor:
        cq, sq = rot(m, 1)
        ck, sk = rot(n, 1)
        return (apply_rotary(q[None], cq, sq) * apply_rotary(k[None], ck, sk)).sum()

    for m, n in [(5, 2), (9, 9), (3, 11)]:
        for shift in (1, 7, 40):
            torch.testing.assert_close(score(m + shift, n + shift), score(m, n), atol=1e-5, rtol=1e-5)
    by_offset = torch.stack([score(m, 0) for m in range(8)])
    assert by_offset.max() - by_offset.min() > 0.1 * q.norm() * k.norm()  # other offsets, other scores
    # rotation keeps lengths, and at position 0 it is the identity
    c5, s5 = rot(5, 1)
    torch.testing.assert_close(apply_rotary(q[None], c5, s5).norm(), q.norm())
    c0, s0 = rot(0, 1)
    torch.testing.assert_close(apply_rotary(q[None], c0, s0)[0], q)


def test_rope_is_a_complex_rotation_of_pairs_i_and_i_plus_half():
    """The rotate_half layout = multiplying z_i = x_i + i x_{i+D/2} by e^{i pos theta^(-2i/D)}."""
    D, pos, theta = 8, 13, 500.0
    x = torch.randn(D, dtype=torch.float64)
    cos, sin = Rotary.tables(D, pos + 1, theta)
    ours = x * cos[pos].double() + rotate_half(x) * sin[pos].double()
    angles = pos * theta ** (-torch.arange(0, D, 2, dtype=torch.float64) / D)
    z = torch.complex(x[: D // 2], x[D // 2:]) * torch.exp(1j * angles)
    torch.testing.assert_close(ours, torch.cat([z.real, z.imag]), atol=1e-5, rtol=1e-5)


def test_rope_matches_hugging_face_llama():
    llama = pytest.importorskip("transformers.models.llama.modeling_llama")
    from transformers import LlamaConfig

    cfg = LlamaConfig(hidden_size=64, num_attention_heads=4, max_position_embeddings=32, rope_theta=1234.0)
    hf_rope = llama.LlamaRotaryEmbedding(cfg)
    q, k = torch.randn(1, 4, 10, 16), torch.randn(1, 4, 10, 16)
    pos = torch.arange(3, 13)[None]
    cos, sin = hf_rope(q, pos)
    hq, hk = llama.apply_rotary_pos_emb(q, k, cos, sin)
    ours = Rotary(16, 32, 1234.0)(3, 10)
    torch.testing.assert_close(apply_rotary(q, *ours), hq, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(apply_rotary(k, *ours), hk, atol=1e-5, rtol=1e-5)


def test_rmsnorm_matches_torch_and_ignores_the_mean():
    x = torch.randn(3, 5, 32) * 4 + 2
    norm = RMSNorm(32, eps=1e-6)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    y = norm(x)
    torch.testing.assert_close(y.pow(2).div(norm.weight ** 2).mean(-1), torch.ones(3, 5), atol=1e-4, rtol=1e-4)
    if hasattr(torch.nn, "RMSNorm"):
        ref = torch.nn.RMSNorm(32, eps=1e-6)
        ref.weight.data.copy_(norm.weight.data)
        torch.testing.assert_close(y, ref(x))
    assert not torch.allclose(y, torch.nn.functional.layer_norm(x, (32,), norm.weight), atol=1e-2)


def test_swiglu_width_matches_gelu_parameters():
    assert swiglu_hidden(576) == 1536  # SmolLM2-135M's intermediate_size
    for C in (64, 128, 384, 576, 768):
        h = swiglu_hidden(C)
        assert h % 8 == 0 and abs(3 * C * h - 8 * C * C) / (8 * C * C) < 0.05
    gelu, swiglu = (GPT(GPTConfig(**{**BASE, "n_embd": 128, "mlp": m})) for m in ("gelu", "swiglu"))
    assert abs(swiglu.num_params() - gelu.num_params()) / gelu.num_params() < 0.02
    explicit = GPT(GPTConfig(**{**BASE, "mlp": "swiglu", "mlp_hidden": 40}))
    assert explicit.transformer.h[0].mlp.c_fc.out_features == 80  # [gate; up]


def test_gqa_cache_is_a_quarter_per_token_and_grows_on_demand():
    cfg = dict(BASE, n_head=8, n_embd=64, block_size=CACHE_CHUNK + 64, rope_theta=10000.0)
    mha, gqa = GPT(GPTConfig(**cfg)).eval(), GPT(GPTConfig(**cfg, n_kv_head=2)).eval()
    assert gqa.kv_cache_bytes_per_token() * 4 == mha.kv_cache_bytes_per_token()
    c_mha, c_gqa = mha.new_kv_cache(), gqa.new_kv_cache()
    assert c_gqa.bytes_per_token * 4 == c_mha.bytes_per_token == mha.kv_cache_bytes_per_token()
    assert c_gqa.nbytes * 4 == c_mha.nbytes
    assert c_gqa.bytes_per_token == 2 * 2 * 2 * 8 * 4  # k and v, 2 layers, 2 heads, head_dim 8, fp32
    # a long context is allocated a chunk at a time, and growing keeps the cached positions
    assert c_gqa.k.shape[3] == CACHE_CHUNK
    x = ids(B=1, T=CACHE_CHUNK + 40)
    with torch.no_grad():
        full = gqa(x)[0]
        a = gqa(x[:, :CACHE_CHUNK - 3], kv_cache=c_gqa)[0]
        b = gqa(x[:, CACHE_CHUNK - 3:], kv_cache=c_gqa)[0]
    assert c_gqa.k.shape[3] == CACHE_CHUNK + 64  # doubled, capped at the capacity
    torch.testing.assert_close(torch.cat([a, b], dim=1), full, atol=1e-5, rtol=1e-5)


def test_parameter_counts_follow_the_options():
    gpt2, gqa, untied = (GPT(GPTConfig(**BASE, **o)) for o in ({}, {"n_kv_head": 1}, {"tie_embeddings": False}))
    C, H, D, L, V = 32, 4, 8, 2, 37
    assert gpt2.num_params() - gqa.num_params() == L * 2 * (H - 1) * D * C  # K and V lose 3 heads each
    assert untied.num_params(non_embedding=False) - gpt2.num_params(non_embedding=False) == V * C
    assert untied.num_params() == gpt2.num_params()  # untied: the lookup table is not counted, the head is
    rope = GPT(GPTConfig(**BASE, rope_theta=1e4))
    assert rope.num_params(non_embedding=False) == gpt2.num_params(non_embedding=False) - 16 * C  # no wpe
    assert not any("rotary" in k for k in rope.state_dict())  # the RoPE tables are not weights


def test_zero_init_starts_every_block_as_the_identity():
    model = GPT(GPTConfig(**BASE, zero_init_proj=True, tie_embeddings=False))
    for name, p in model.named_parameters():
        if name.endswith("c_proj.weight") or name == "lm_head.weight":
            assert not p.any(), name
    x = ids()
    with torch.no_grad():
        t = model.transformer
        h = t.wte(x) + t.wpe(torch.arange(12))
        for block in t.h:
            torch.testing.assert_close(block(h), h)
    assert model(x, x)[1].item() == pytest.approx(math.log(37), abs=1e-5)  # zero head: uniform prediction


def test_softcap_bounds_the_logits():
    raw, capped = make("gpt2", noise=1.0), make("gpt2", noise=1.0, logit_softcap=2.0)  # the same weights
    with torch.no_grad():
        a, b = raw(ids())[0], capped(ids())[0]
    assert a.abs().max() > 2.0 >= b.abs().max()
    torch.testing.assert_close(b, 2.0 * torch.tanh(a / 2.0))


def test_old_configs_load_as_gpt2_and_bad_options_name_the_fix():
    old = dict(BASE, dropout=0.0, attn_impl="sdpa")  # what chapters 04-06 saved
    c = GPTConfig.from_dict(old)
    assert (c.rope_theta, c.norm, c.mlp, c.n_kv_head, c.qk_norm, c.tie_embeddings, c.logit_softcap) == \
        (None, "layernorm", "gelu", None, False, True, None)
    assert list(GPT(c).state_dict()) == list(GPT(GPTConfig(**BASE)).state_dict())
    for bad, match in [(dict(n_kv_head=3), r"multiple of n_kv_head.*\[1, 2, 4\]"), (dict(norm="batchnorm"), "norm"),
                       (dict(mlp="gelu2"), "mlp"), (dict(rope_theta=0), "rope_theta"),
                       (dict(logit_softcap=-1.0), "logit_softcap"), (dict(qk_norm=1), "qk_norm"),
                       (dict(n_embd=36, n_head=4, rope_theta=1e4), "even"), (dict(mlp_hidden=0), "mlp_hidden")]:
        with pytest.raises(ValueError, match=match):
            GPTConfig(**{**BASE, **bad})
    # an explicit head size (Qwen3 style) frees n_embd from n_head
    q = GPT(GPTConfig(**{**BASE, "n_embd": 30, "n_head": 4, "head_size": 8, "n_kv_head": 2, "rope_theta": 1e4}))
    assert q(ids())[0].shape == (2, 12, 37)


def test_to_hf_refuses_what_no_architecture_expresses():
    from minigpt_helpers import hf_architecture

    assert hf_architecture(GPTConfig(**BASE)) == "gpt2"
    llama = dict(rope_theta=1e4, norm="rmsnorm", mlp="swiglu")
    assert hf_architecture(GPTConfig(**BASE, **llama, n_kv_head=2, tie_embeddings=False)) == "llama"
    assert hf_architecture(GPTConfig(**BASE, **llama, qk_norm=True)) == "qwen3"
    with pytest.raises(ValueError, match="logit_softcap"):
        hf_architecture(GPTConfig(**BASE, **llama, logit_softcap=30.0))
    with pytest.raises(ValueError, match="norm='layernorm'"):
        to_hf(GPT(GPTConfig(**BASE, rope_theta=1e4, mlp="swiglu")))


def test_cpu_modern_preset_is_cpu_plus_the_changes_the_ablation_kept():
    """``cpu-modern`` is the ``cpu`` model with chapter 07's options (a Qwen3-shaped model, so it exports), sized
    down as chapter 09's fit says (narrower, the same depth, context and head size), with Muon, a larger batch
    and a shorter schedule."""
    from dataclasses import fields

    from minigpt_helpers.interop.llama import hf_architecture
    from minigpt_helpers.training.config import preset

    (m0, t0), (m1, t1) = preset("cpu", 65), preset("cpu-modern", 65)
    changed = {f.name for f in fields(m0) if getattr(m0, f.name) != getattr(m1, f.name)}
    assert changed == {"rope_theta", "norm", "mlp", "qk_norm", "n_embd", "n_head"}
    assert m1.n_embd < m0.n_embd and (m1.n_layer, m1.block_size, m1.head_dim) == (m0.n_layer, m0.block_size, m0.head_dim)
    assert (t1.optimizer, t0.optimizer) == ("muon", "adamw")
    assert t1.batch_size > t0.batch_size and t1.max_steps < t0.max_steps
    assert hf_architecture(m1) == "qwen3"
