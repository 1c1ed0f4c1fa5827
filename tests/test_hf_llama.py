"""Llama / Qwen3 interop (logit parity both ways on weights moved off init), the HF tokenizer behind the
course's protocol, and the SmolLM2-135M open-weight path, offline: a random-weight Llama of exactly
SmolLM2's configuration and a locally trained tokenizer, read back from a save_pretrained folder."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from minigpt_helpers import (  # noqa: E402
    GPT,
    GPTConfig,
    HFTokenizer,
    from_hf,
    generate,
    load_open_weights,
    load_tokenizer,
    to_hf,
)
from minigpt_helpers.tokenizers.base import EOT  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module
TEXTS = ["The research shows that small models learn quickly.", "Hello world, the research goes on.",
         "To be, or not to be, that is the question. Ünïcödé und Straße!"]
SMALL = dict(vocab_size=97, hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
             max_position_embeddings=32, rope_theta=5000.0, rms_norm_eps=1e-6)


def _shake(model: torch.nn.Module, scale: float = 0.1, seed: int = 0) -> None:
    """Move every weight (norm gains included) off its initial value, so a missed copy cannot hide."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


CASES = {
    "llama_gqa_tied": ("LlamaForCausalLM", "LlamaConfig", dict(num_key_value_heads=2, tie_word_embeddings=True)),
    "llama_mha_untied": ("LlamaForCausalLM", "LlamaConfig", dict(num_key_value_heads=4, tie_word_embeddings=False)),
    "llama_bias": ("LlamaForCausalLM", "LlamaConfig",
                   dict(num_key_value_heads=2, attention_bias=True, mlp_bias=True, tie_word_embeddings=False)),
    "qwen3_head_dim_24": ("Qwen3ForCausalLM", "Qwen3Config",
                          dict(num_key_value_heads=2, head_dim=24, tie_word_embeddings=False)),
    "qwen3_mqa_tied": ("Qwen3ForCausalLM", "Qwen3Config", dict(num_key_value_heads=1, tie_word_embeddings=True)),
}


def _hf_model(case: str):
    model_cls, config_cls, extra = CASES[case]
    torch.manual_seed(0)
    hf = getattr(transformers, model_cls)(getattr(transformers, config_cls)(**SMALL, **extra)).eval()
    _shake(hf)
    return hf


@pytest.mark.parametrize("case", CASES)
def test_hf_to_ours_to_hf_logit_parity(case):
    hf = _hf_model(case)
    x = torch.randint(0, 97, (2, 20), generator=torch.Generator().manual_seed(1))
    ours = from_hf(hf)
    c = ours.config
    assert (c.rope_theta, c.norm, c.mlp, c.norm_eps) == (5000.0, "rmsnorm", "swiglu", 1e-6)
    assert c.qk_norm == case.startswith("qwen3") and c.kv_heads == CASES[case][2]["num_key_value_heads"]
    assert c.tie_embeddings == CASES[case][2]["tie_word_embeddings"]
    with torch.no_grad():
        ref = hf(x).logits
        torch.testing.assert_close(ours(x)[0], ref, atol=1e-4, rtol=0)
        # our KV cache, one token at a time, against Hugging Face's full forward
        cache = ours.new_kv_cache(batch_size=2)
        steps = [ours(x[:, :12], kv_cache=cache)[0]] + [ours(x[:, t: t + 1], kv_cache=cache)[0] for t in range(12, 20)]
        torch.testing.assert_close(torch.cat(steps, dim=1), ref, atol=1e-4, rtol=0)
        back = to_hf(ours)
        assert type(back) is type(hf)
        torch.testing.assert_close(back(x).logits, ref, atol=1e-4, rtol=0)
    assert from_hf(back).config == c


@pytest.mark.parametrize("qk_norm", [False, True])
def test_ours_to_hf_to_ours_logit_parity(qk_norm):
    torch.manual_seed(3)
    ours = GPT(GPTConfig(vocab_size=97, block_size=32, n_layer=2, n_head=4, n_embd=64, bias=False, rope_theta=1e4,
                         norm="rmsnorm", mlp="swiglu", n_kv_head=2, qk_norm=qk_norm, tie_embeddings=qk_norm)).eval()
    _shake(ours, seed=3)
    hf = to_hf(ours)
    assert type(hf).__name__ == ("Qwen3ForCausalLM" if qk_norm else "LlamaForCausalLM")
    x = torch.randint(0, 97, (2, 24), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        torch.testing.assert_close(hf(x).logits, ours(x)[0], atol=1e-4, rtol=0)
        again = from_hf(hf)
        assert again.config == ours.config
        torch.testing.assert_close(again(x)[0], ours(x)[0], atol=1e-4, rtol=0)


def test_unsupported_models_name_the_difference():
    hf = transformers.LlamaForCausalLM(transformers.LlamaConfig(
        **{**SMALL, "rope_theta": None}, rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1e4}))
    with pytest.raises(ValueError, match="RoPE scaling 'linear'"):
        from_hf(hf)
    silu_free = transformers.LlamaForCausalLM(transformers.LlamaConfig(**SMALL, hidden_act="gelu"))
    with pytest.raises(ValueError, match="hidden_act"):
        from_hf(silu_free)

    class Fake:
        config = transformers.PretrainedConfig()
        config.model_type = "mamba"

    with pytest.raises(ValueError, match="mamba"):
        from_hf(Fake())


# ------------------------------------------------------------------------------ tokenizer
def test_hf_tokenizer_follows_the_course_protocol(tmp_path, local_hf_tokenizer):
    tok = HFTokenizer(local_hf_tokenizer)
    assert tok.eot_id == 0 and tok.vocab_size == 300
    for text in TEXTS + ["emoji 🙂 and new\nlines  "]:
        assert tok.decode(tok.encode(text)) == text
    with pytest.raises(ValueError, match="allowed_special"):
        tok.encode(f"a{EOT}b")
    ids = tok.encode(f"The end{EOT}Hello", allowed_special="all")
    assert ids.count(tok.eot_id) == 1 and tok.decode(ids) == f"The end{EOT}Hello"
    assert tok.encode_batch(TEXTS) == [tok.encode(t) for t in TEXTS]
    tok.save(tmp_path / "tok")
    again = load_tokenizer(tmp_path / "tok")
    assert isinstance(again, HFTokenizer) and again.encode(TEXTS[2]) == tok.encode(TEXTS[2])
    # a model carries it through save / load like any course tokenizer
    model = GPT(GPTConfig(vocab_size=300, block_size=16, n_layer=1, n_head=2, n_embd=16))
    model.tokenizer = tok
    model.save(tmp_path / "m")
    assert GPT.load(tmp_path / "m").tokenizer.encode("The research") == tok.encode("The research")


# ------------------------------------------------------------------------------ open weights
SMOLLM2_CONFIG = dict(vocab_size=49152, hidden_size=576, intermediate_size=1536, num_hidden_layers=30,
                      num_attention_heads=9, num_key_value_heads=3, tie_word_embeddings=True, rope_theta=100000.0,
                      rms_norm_eps=1e-5, max_position_embeddings=8192, hidden_act="silu", bos_token_id=0,
                      eos_token_id=0)


def _random_weight_model(config, vocab_used: int):
    """A LlamaForCausalLM with random weights, filled from a periodic random pool (Hugging Face's own
    initialisation of 135 M weights takes ~10 s on a busy 2-core machine; this takes ~1 s). Rows of the
    embedding past ``vocab_used`` are zero, so greedy choices stay inside the small test tokenizer."""
    with torch.device("meta"):
        hf = transformers.LlamaForCausalLM(config)
    hf.to_empty(device="cpu")  # allocated, not initialised; non-persistent buffers are not saved anyway
    pool = torch.randn(1_000_003, generator=torch.Generator().manual_seed(0))  # a prime period: rows differ
    with torch.no_grad():
        for p in hf.parameters():
            values = pool.repeat(p.numel() // pool.numel() + 1)[: p.numel()].view_as(p)
            p.copy_(1.0 + 0.1 * values if p.ndim == 1 else 0.02 * values)  # norm gains near 1, matrices small
        hf.model.embed_tokens.weight[vocab_used:] = 0.0
    hf.tie_weights()
    return hf


@pytest.mark.slow
def test_smollm2_shaped_model_loads_from_a_folder_and_generates_with_the_kv_cache(tmp_path, local_hf_tokenizer):
    """What load_open_weights("HuggingFaceTB/SmolLM2-135M") does online, on a local random-weight twin."""
    hf_tok = local_hf_tokenizer
    hf = _random_weight_model(transformers.LlamaConfig(**SMOLLM2_CONFIG), vocab_used=len(hf_tok))
    n_params = sum(p.numel() for p in hf.parameters())
    hf.save_pretrained(tmp_path)
    hf_tok.save_pretrained(tmp_path)
    del hf

    model = load_open_weights(str(tmp_path))
    c = model.config
    assert (c.n_layer, c.n_embd, c.n_head, c.kv_heads, c.vocab_size, c.block_size) == (30, 576, 9, 3, 49152, 8192)
    assert c.tie_embeddings and c.rope_theta == 1e5 and c.norm_eps == 1e-5 and c.mlp_hidden is None  # 1536
    assert model.num_params(non_embedding=False) == n_params  # 134.5 M
    assert isinstance(model.tokenizer, HFTokenizer) and model.tokenizer.eot_id == 0
    assert model.kv_cache_bytes_per_token() == 2 * 30 * 3 * 64 * 4  # a third of 9 heads' cache
    prompt = "The research shows"
    x = torch.tensor([model.tokenizer.encode(prompt)])
    reloaded = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path)).eval()  # Hugging Face's reading
    with torch.no_grad():
        torch.testing.assert_close(model(x)[0], reloaded(x).logits, atol=1e-4, rtol=0)
    del reloaded
    cached = generate(model, prompt, max_new_tokens=4, temperature=0, use_cache=True)
    uncached = generate(model, prompt, max_new_tokens=4, temperature=0, use_cache=False)
    assert cached == uncached and cached.startswith(prompt) and len(cached) > len(prompt)


def test_open_weights_fail_fast_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConnectionError, match="not reachable.*HF_HUB_OFFLINE.*local folder"):
        load_open_weights("minigpt-tests/not-a-cached-model")
