"""GPT: config validation, shapes, causality, both attention paths, KV cache, save/load, HF parity."""

from __future__ import annotations

import json
import math

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, from_hf, to_hf

SMALL = dict(vocab_size=101, block_size=16, n_layer=2, n_head=2, n_embd=32)


def make(seed=0, **overrides) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(**{**SMALL, **overrides})).eval()


def randomize(model: torch.nn.Module, seed=1, std=0.3) -> None:
    """Replace every parameter with large random values so that any wrong mapping shows up."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


def tokens(B=3, T=16, seed=0, vocab=101):
    return torch.randint(0, vocab, (B, T), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- config


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=100, n_head=3), "divisible by n_head"),
        (dict(vocab_size=0), "vocab_size must be positive"),
        (dict(block_size=-4), "block_size must be positive"),
        (dict(n_layer=0), "n_layer must be positive"),
        (dict(n_head=0), "n_head must be positive"),
        (dict(n_embd=32.0), "n_embd must be an int"),
        (dict(dropout=1.0), "dropout"),
        (dict(dropout=-0.1), "dropout"),
        (dict(bias="yes"), "bias"),
        (dict(attn_impl="flash"), "attn_impl"),
    ],
)
def test_config_validation(overrides, message):
    with pytest.raises(ValueError, match=message):
        GPTConfig(**{**SMALL, **overrides})


def test_config_dict_round_trip():
    cfg = GPTConfig(**SMALL, dropout=0.1, bias=False, attn_impl="manual")
    d = cfg.to_dict()
    assert json.loads(json.dumps(d)) == d
    assert GPTConfig.from_dict(d) == cfg
    with pytest.raises(ValueError, match="unknown GPTConfig keys"):
        GPTConfig.from_dict({**d, "n_embed": 32})


# ---------------------------------------------------------------- forward


def test_shapes_and_loss():
    model = make()
    idx = tokens()
    logits, loss = model(idx)
    assert logits.shape == (3, 16, 101) and loss is None
    logits, loss = model(idx, targets=tokens(seed=1))
    assert loss.dim() == 0 and torch.isfinite(loss)
    logits, _ = model(idx[:, :5])  # shorter than block_size is fine
    assert logits.shape == (3, 5, 101)


def test_loss_ignores_minus_one():
    model = make()
    idx, tgt = tokens(), tokens(seed=1)
    logits, _ = model(idx)
    masked = tgt.clone()
    masked[:, 8:] = -1
    _, loss = model(idx, targets=masked)
    expected = torch.nn.functional.cross_entropy(logits[:, :8].reshape(-1, 101), tgt[:, :8].reshape(-1))
    torch.testing.assert_close(loss, expected)


def test_initial_loss_is_about_ln_vocab():
    model = make(vocab_size=512, n_embd=64, n_head=4)
    _, loss = model(tokens(B=8, vocab=512), targets=tokens(B=8, seed=1, vocab=512))
    assert abs(loss.item() - math.log(512)) < 0.1


def test_too_long_sequence_raises():
    model = make()
    with pytest.raises(ValueError, match="exceeds block_size 16"):
        model(torch.zeros(1, 17, dtype=torch.long))
    with pytest.raises(ValueError, match="batch, time"):
        model(torch.zeros(16, dtype=torch.long))


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_causality(impl):
    """Changing token t+1 (or anything later) never changes the logits at positions <= t."""
    model = make(attn_impl=impl)
    randomize(model)
    idx = tokens(B=2)
    base, _ = model(idx)
    for t in (0, 5, 14):
        changed = idx.clone()
        changed[:, t + 1 :] = (changed[:, t + 1 :] + 7) % 101
        out, _ = model(changed)
        torch.testing.assert_close(out[:, : t + 1], base[:, : t + 1], atol=1e-5, rtol=1e-5)
        assert not torch.allclose(out[:, t + 1 :], base[:, t + 1 :], atol=1e-3)


def test_sdpa_equals_manual():
    model = make()
    randomize(model, std=0.2)
    idx = tokens()
    sdpa, _ = model(idx)
    model.set_attn_impl("manual")
    assert model.config.attn_impl == "manual"
    assert all(b.attn.attn_impl == "manual" for b in model.transformer.h)
    manual, _ = model(idx)
    torch.testing.assert_close(sdpa, manual, atol=1e-4, rtol=1e-4)
    # gradients agree too
    model.train()
    grads = []
    for impl in ("sdpa", "manual"):
        model.set_attn_impl(impl)
        model.zero_grad()
        model(idx, targets=tokens(seed=2))[1].backward()
        grads.append(model.transformer.h[0].attn.c_attn.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1], atol=1e-4, rtol=1e-4)


def test_dropout_active_only_in_train_mode():
    model = make(dropout=0.2)
    idx = tokens()
    torch.testing.assert_close(model(idx)[0], model(idx)[0])
    model.train()
    assert not torch.allclose(model(idx)[0], model(idx)[0])


def test_one_optimizer_step_lowers_loss_and_reaches_every_parameter():
    model = make()
    model.train()
    idx, tgt = tokens(B=4), tokens(B=4, seed=1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    _, loss0 = model(idx, targets=tgt)
    loss0.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    _, loss1 = model(idx, targets=tgt)
    assert loss1.item() < loss0.item()


# ---------------------------------------------------------------- structure


def test_weight_tying_and_init():
    model = make(n_layer=8, n_embd=128, n_head=4, vocab_size=1000)
    assert model.lm_head.weight is model.transformer.wte.weight
    assert "lm_head.weight" in model.state_dict()
    for block in model.transformer.h:
        for proj in (block.attn.c_proj, block.mlp.c_proj):
            assert abs(proj.weight.std().item() - 0.02 / math.sqrt(16)) < 0.001
            assert (proj.bias == 0).all()
    assert abs(model.transformer.h[0].attn.c_attn.weight.std().item() - 0.02) < 0.002
    assert abs(model.transformer.wte.weight.std().item() - 0.02) < 0.002
    assert (model.transformer.ln_f.weight == 1).all()
    assert model.tokenizer is None
    assert model.device == torch.device("cpu")


def test_bias_false_has_no_biases():
    model = make(bias=False)
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]
    logits, _ = model(tokens())
    assert logits.shape == (3, 16, 101)


def test_num_params_and_flops():
    model = make()
    C, V, L, T = 32, 101, 2, 16
    per_block = 2 * 2 * C + (C * 3 * C + 3 * C) + (C * C + C) + (C * 4 * C + 4 * C) + (4 * C * C + C)
    total = V * C + T * C + L * per_block + 2 * C  # wte (tied with lm_head, counted once) + wpe + blocks + ln_f
    assert model.num_params(non_embedding=False) == total
    assert model.num_params() == total - T * C
    assert model.flops_per_token() == 6 * (total - T * C) + 12 * L * 2 * 16 * T


# ---------------------------------------------------------------- KV cache


@pytest.mark.parametrize("impl", ["sdpa", "manual"])
def test_kv_cache_incremental_equals_full_forward(impl):
    model = make(attn_impl=impl)
    randomize(model, std=0.2)
    idx = tokens(B=2)
    full, _ = model(idx)
    with torch.no_grad():
        # token by token from an empty cache
        cache = model.new_kv_cache(batch_size=2)
        steps = [model(idx[:, t : t + 1], kv_cache=cache)[0] for t in range(16)]
        assert cache.pos == 16
        torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
        # prefill 6, decode 1, then a chunk of 5 after the prefix, then decode the rest
        cache.reset()
        chunks = [(0, 6), (6, 7), (7, 12), (12, 13), (13, 16)]
        outs = [model(idx[:, a:b], kv_cache=cache)[0] for a, b in chunks]
        torch.testing.assert_close(torch.cat(outs, dim=1), full, atol=1e-4, rtol=1e-4)


def test_kv_cache_limits():
    model = make()
    cache = model.new_kv_cache()
    assert cache.k.shape == (2, 1, 2, 16, 16) and cache.k.dtype == torch.float32
    with torch.no_grad():
        model(tokens(B=1, T=10), kv_cache=cache)
        with pytest.raises(ValueError, match="KV cache full"):
            model(tokens(B=1, T=7), kv_cache=cache)
        assert cache.pos == 10  # a refused call leaves the cache untouched
        with pytest.raises(ValueError, match="batch size"):
            model(tokens(B=2, T=1), kv_cache=cache)
        cache.reset()
        logits, _ = model(tokens(B=1, T=16), kv_cache=cache)
    assert logits.shape == (1, 16, 101)


# ---------------------------------------------------------------- save / load


def test_save_load_round_trip(tmp_path):
    model = make(dropout=0.1, attn_impl="manual")
    randomize(model)
    model.save(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    loaded = GPT.load(tmp_path / "ckpt").eval()
    assert loaded.config == model.config
    assert loaded.lm_head.weight is loaded.transformer.wte.weight  # tying survives
    assert loaded.tokenizer is None
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), loaded.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2)
    idx = tokens()
    torch.testing.assert_close(loaded(idx)[0], model(idx)[0])


def test_save_load_missing_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="GPT.save"):
        GPT.load(tmp_path)


def test_save_calls_tokenizer_save(tmp_path):
    class FakeTokenizer:
        def __init__(self):
            self.saved_to = None

        def save(self, path):
            self.saved_to = path

    model = make()
    model.tokenizer = FakeTokenizer()
    assert "tokenizer" not in str(list(model.state_dict()))
    model.save(tmp_path)
    assert model.tokenizer.saved_to == tmp_path / "tokenizer"


def test_save_load_with_tokenizer(tmp_path):
    tok_mod = pytest.importorskip("minigpt_helpers.tokenizers.base")
    tok = tok_mod.CharTokenizer.train(["hello world"])
    model = make(vocab_size=tok.vocab_size)
    model.tokenizer = tok
    model.save(tmp_path)
    loaded = GPT.load(tmp_path)
    assert loaded.tokenizer is not None
    assert loaded.tokenizer.encode("hello") == tok.encode("hello")


# ---------------------------------------------------------------- Hugging Face interop


def _hf_config(**kw):
    transformers = pytest.importorskip("transformers")
    base = dict(vocab_size=101, n_positions=16, n_embd=32, n_layer=2, n_head=2,
                resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=None, eos_token_id=None)
    return transformers, transformers.GPT2Config(**{**base, **kw})


def test_hf_to_ours_parity():
    transformers, cfg = _hf_config()
    torch.manual_seed(0)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    randomize(hf)
    hf.tie_weights()
    ours = from_hf(hf)
    assert ours.config.block_size == 16 and ours.config.vocab_size == 101
    idx = tokens()
    with torch.no_grad():
        ref = hf(idx).logits
        out, _ = ours(idx)
    assert ref.abs().max() > 1.0  # large enough that a wrong mapping could not hide under atol
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)


def test_ours_to_hf_parity():
    pytest.importorskip("transformers")
    model = make()
    randomize(model)
    hf = to_hf(model)
    assert hf.lm_head.weight.data_ptr() == hf.transformer.wte.weight.data_ptr()
    idx = tokens()
    with torch.no_grad():
        ref, _ = model(idx)
        out = hf(idx).logits
    assert ref.abs().max() > 1.0
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    # and back again, exactly
    back = from_hf(hf)
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1


def test_hf_conversion_refuses_what_it_cannot_express():
    transformers, cfg = _hf_config(n_inner=48)
    with pytest.raises(ValueError, match="n_inner"):
        from_hf(transformers.GPT2LMHeadModel(cfg))
    _, cfg = _hf_config(activation_function="relu")
    with pytest.raises(ValueError, match="activation_function"):
        from_hf(transformers.GPT2LMHeadModel(cfg))
    # bias=False models are exported with zero biases now: tests/test_hf_export.py


def test_config_summary_names_the_shape_and_only_the_changed_options():
    gpt2 = GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=2, n_embd=64)
    assert gpt2.summary() == "2 layers x 64 wide, 2 heads, context 32, vocabulary 100"  # GPT-2's defaults
    modern = GPTConfig(vocab_size=100, block_size=32, n_layer=2, n_head=4, n_embd=64, bias=False, rope_theta=1e4,
                       norm="rmsnorm", mlp="swiglu", n_kv_head=1)
    line = modern.summary()
    assert line.startswith("2 layers x 64 wide, 4 heads, context 32, vocabulary 100 (")
    for option in ("bias=False", "rope_theta=10000.0", "norm='rmsnorm'", "mlp='swiglu'", "n_kv_head=1"):
        assert option in line
    assert "dropout" not in line and "attn_impl" not in line  # defaults are left out
