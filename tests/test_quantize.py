"""int8 weight-only quantization (model/quantize.py): the per-channel grid and its error bound, Int8Linear's output
bound, whole-model logits (GPT-2 and a modern config), weight tying kept in memory and on disk, torch.ao's dynamic
quantization as the reference, save/load and generation, and the validation bits per byte of a trained model."""

from __future__ import annotations

import copy
import itertools
import json
import warnings

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from minigpt_helpers import (
    GPT,
    GPTConfig,
    Int8Embedding,
    Int8Linear,
    TrainConfig,
    dequantize_weight,
    evaluate,
    quantize_int8,
    quantize_weight,
    set_seed,
    train,
    val_windows,
    weight_bytes,
)
from minigpt_helpers.model.generation import generate_ids
from minigpt_helpers.model.quantize import QUANTIZATION_FILE
from minigpt_helpers.tokenizers.base import CharTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

# Rounding w / scale and q * scale in float32 can each move a value by 2^-24 of itself, and |q| <= 127:
# the exact bound of half a step then holds up to this fraction of a step.
FLOAT_SLACK = 127 * 2 ** -22

CONFIGS = {
    "gpt2": dict(n_embd=64, n_head=4),
    "modern": dict(n_embd=64, n_head=4, bias=False, rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=2,
                   qk_norm=True, tie_embeddings=False),
    "relu2-mqa": dict(n_embd=48, n_head=4, rope_theta=500000.0, norm="rmsnorm", mlp="relu2", n_kv_head=1,
                      tie_embeddings=False),
}


def tiny_gpt(kind: str = "gpt2", seed: int = 0, vocab_size: int = 97) -> GPT:
    set_seed(seed)
    return GPT(GPTConfig(vocab_size=vocab_size, block_size=32, n_layer=2, **CONFIGS[kind])).eval()


def logits(model: nn.Module, idx: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(idx)[0]


def rms(t: torch.Tensor) -> float:
    return float(t.pow(2).mean().sqrt())


# ------------------------------------------------------------------------------ the grid
def test_quantize_weight_grid_range_and_error_bound():
    torch.manual_seed(0)
    w = torch.randn(64, 96) * torch.rand(64, 1)  # rows of different ranges
    w[5, 7] = 40.0  # an outlier: it sets row 5's scale and no other
    w[9] = 0.0  # a zero row
    q, scale = quantize_weight(w)
    assert q.dtype == torch.int8 and q.shape == w.shape
    assert scale.dtype == torch.float32 and scale.shape == (64,)
    assert int(q.min()) >= -127 and int(q.max()) <= 127  # symmetric: -128 is never used
    rows = [i for i in range(64) if i != 9]
    amax = w.abs().amax(dim=1)
    assert torch.equal(scale[rows], amax[rows] / 127)  # per channel: each row's own range
    assert torch.equal(q[rows].abs().amax(dim=1), torch.full((63,), 127, dtype=torch.int8))  # the row max is ±127
    assert q[5, 7] == 127 and q[5].abs().float().mean() < 2  # the outlier's row: the rest rounds to a few levels
    assert scale[9] == 1.0 and not q[9].any()  # zero row: scale 1, nothing divided by zero
    err = (w - dequantize_weight(q, scale)).abs()
    assert (err <= scale[:, None] * (0.5 + FLOAT_SLACK)).all()  # at most half a step per weight
    assert float((err / scale[:, None]).max()) > 0.45  # ... and the bound is nearly reached (not vacuous)
    with pytest.raises(ValueError, match="2-D float matrix"):
        quantize_weight(torch.randn(5))
    with pytest.raises(ValueError, match="pass the pair"):
        dequantize_weight(q, scale[:-1])


def test_int8_linear_error_obeys_the_bound():
    torch.manual_seed(1)
    linear = nn.Linear(80, 48)
    q8 = Int8Linear.from_float(linear)
    assert q8.weight.dtype == torch.int8 and q8.bias.dtype == torch.float32 and not q8.weight.requires_grad
    x = torch.randn(3, 7, 80) * 2
    with torch.no_grad():
        y, y32 = q8(x), linear(x)
        y_deq = F.linear(x, dequantize_weight(q8.weight, q8.scale), linear.bias)
        # |y_i - y32_i| = |sum_j x_j (q_ij s_i - W_ij)| <= sum_j |x_j| * s_i / 2, plus float32 rounding of the sums
        bound = x.abs().sum(-1, keepdim=True) * q8.scale * 0.5
        rounding = 1e-5 * (x.abs() @ linear.weight.abs().T + linear.bias.abs()) + 1e-6
    err = (y - y32).abs()
    assert (err <= bound + rounding).all()
    assert float(err.max()) > 0  # it did quantize
    torch.testing.assert_close(y, y_deq, rtol=1e-5, atol=1e-5)  # scale after the matmul = dequantized matrix


def test_int8_embedding_reads_only_dequantized_rows():
    torch.manual_seed(2)
    emb = nn.Embedding(50, 24)
    q8 = Int8Embedding.from_float(emb)
    full = dequantize_weight(q8.weight, q8.scale)
    for idx in (torch.tensor([[3, 0, 49]]), torch.tensor([[7], [8]]), torch.tensor(5)):  # (B, T), (B, 1), ()
        out = q8(idx)
        assert out.shape == (*idx.shape, 24) and out.dtype == torch.float32
        assert torch.equal(out, full[idx])
        assert ((out - emb(idx)).abs() <= q8.scale[idx].unsqueeze(-1) * (0.5 + FLOAT_SLACK)).all()


# ------------------------------------------------------------------------------ the whole model
@pytest.mark.parametrize("kind", list(CONFIGS))
def test_quantized_gpt_logits_stay_close(kind):
    """Bound: the logits' RMS error is at most 2 % of the fp32 logits' standard deviation and the largest at most
    8 % (measured on seeds 0-3: about 1 % and 3-5 %). The float model is left exactly as it was."""
    model = tiny_gpt(kind)
    model.tokenizer = CharTokenizer([chr(33 + i) for i in range(96)])
    before = copy.deepcopy(model.state_dict())
    qmodel = quantize_int8(model)
    assert qmodel is not model and qmodel.quantization == "int8" and not hasattr(model, "quantization")
    assert qmodel.tokenizer is model.tokenizer and qmodel.config == model.config
    assert not [m for m in qmodel.modules() if isinstance(m, (nn.Linear, nn.Embedding))]  # every one replaced
    int8 = [m for m in qmodel.modules() if isinstance(m, (Int8Linear, Int8Embedding))]
    assert all(m.weight.dtype == torch.int8 for m in int8) and len(int8) >= 2 + 4 * model.config.n_layer
    assert all(p.dtype == torch.float32 for n, p in qmodel.named_parameters() if "ln" in n or "norm" in n)
    for key, value in model.state_dict().items():  # the fp32 model is untouched
        assert torch.equal(value, before[key])
    idx = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(0))
    a, b = logits(model, idx), logits(qmodel, idx)
    diff = b - a
    assert 0 < rms(diff) <= 0.02 * float(a.std())
    assert float(diff.abs().max()) <= 0.08 * float(a.std())
    with pytest.raises(ValueError, match="already quantized"):
        quantize_int8(qmodel)


def test_tied_head_shares_the_int8_matrix_and_bytes_shrink(tmp_path):
    model = tiny_gpt("gpt2")
    qmodel = quantize_int8(model)
    head, wte = qmodel.lm_head, qmodel.transformer.wte
    assert isinstance(head, Int8Linear) and isinstance(wte, Int8Embedding)
    assert head.weight.data_ptr() == wte.weight.data_ptr() and head.scale.data_ptr() == wte.scale.data_ptr()
    moved = copy.deepcopy(qmodel).to(torch.float64)  # Module.to() converts the scales: the tie must survive it
    assert moved.lm_head.scale.dtype == torch.float64 and moved.lm_head.weight.dtype == torch.int8
    assert moved.lm_head.scale.data_ptr() == moved.transformer.wte.scale.data_ptr()
    assert moved.lm_head.weight.data_ptr() == moved.transformer.wte.weight.data_ptr()
    qmodel.save(tmp_path)
    loaded = GPT.load(tmp_path)
    assert loaded.lm_head.weight.data_ptr() == loaded.transformer.wte.weight.data_ptr()
    assert loaded.lm_head.scale.data_ptr() == loaded.transformer.wte.scale.data_ptr()
    # the fp32 model: 4 bytes per parameter, the tied matrix once; the checkpoint holds it once too
    assert weight_bytes(model) == 4 * sum(p.numel() for p in model.parameters())
    assert 0 < (tmp_path / "model.safetensors").stat().st_size - weight_bytes(qmodel) < 16_384  # + the header
    ratio = weight_bytes(model) / weight_bytes(qmodel)
    assert ratio >= 3.5, ratio  # n_embd 64: the scales and biases cost ~ 8 / 64 of the int8 bytes
    untied = quantize_int8(tiny_gpt("modern"))
    assert untied.lm_head.weight.data_ptr() != untied.transformer.wte.weight.data_ptr()
    assert weight_bytes(tiny_gpt("modern")) / weight_bytes(untied) >= 3.5


# ------------------------------------------------------------------------------ torch.ao as the reference
@pytest.mark.parametrize("kind", ["gpt2", "modern"])
def test_matches_torch_ao_dynamic_quantization(kind):
    """torch.ao's per-channel symmetric observer uses the whole int8 range: scale = max|w| / 127.5 and
    q = clamp(round(w * (1 / scale)), -128, 127) in float32 (its values are reproduced exactly here). Ours divides
    by 127, so the two grids differ slightly; each dequantized weight is within half its own step of w, so the two
    agree within (our step + its step) / 2, less than one of our steps. Its Linear layers also quantize the
    activations (8 bits per tensor), so its logits are further from fp32 than ours."""
    ao = pytest.importorskip("torch.ao.quantization")
    model = tiny_gpt(kind)
    ours = quantize_int8(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao.quantization is deprecated in favour of torchao
        theirs = ao.quantize_dynamic(copy.deepcopy(model), {nn.Linear: ao.per_channel_dynamic_qconfig},
                                     dtype=torch.qint8)
    ao_linears = {n: m for n, m in theirs.named_modules() if hasattr(m, "weight") and callable(m.weight)}
    float_linears = {n: m for n, m in model.named_modules() if isinstance(m, nn.Linear)}
    assert set(ao_linears) == set(float_linears) and len(ao_linears) == 4 * model.config.n_layer + 1
    for name, linear in float_linears.items():
        w = linear.weight.detach()
        qw = ao_linears[name].weight()  # a quantized tensor: int values, per-channel scales, zero points
        s_ao = qw.q_per_channel_scales().float()
        assert torch.equal(s_ao, w.abs().amax(dim=1) / 127.5)
        assert not qw.q_per_channel_zero_points().any()  # symmetric
        assert torch.equal(qw.int_repr(), torch.round(w * (1 / s_ao)[:, None]).clamp(-128, 127).to(torch.int8))
        mine = ours.get_submodule(name)
        torch.testing.assert_close(mine.scale, s_ao * 127.5 / 127, rtol=1e-6, atol=0)  # the same row maxima
        d_ours, d_ao = dequantize_weight(mine.weight, mine.scale), qw.dequantize().float()
        gap = (d_ours - d_ao).abs()
        assert (gap <= (mine.scale + s_ao)[:, None] * (0.5 + FLOAT_SLACK)).all()
        assert (gap < mine.scale[:, None]).all()  # within one of our steps
    idx = torch.randint(0, 97, (4, 32), generator=torch.Generator().manual_seed(1))
    a, b, c = logits(model, idx), logits(ours, idx), logits(theirs, idx)
    assert rms(b - c) <= 0.05 * float(a.std())  # measured: about 2.5 %
    assert rms(b - a) < rms(c - a)  # weight-only: closer to fp32 than also quantizing the activations


# ------------------------------------------------------------------------------ save, load, generate
def test_save_load_round_trip_and_generation(tmp_path):
    model = tiny_gpt("gpt2", vocab_size=40)
    model.tokenizer = CharTokenizer(list("abcdefghijklmnopqrstuvwxyz .,;:!?'-ABCD"))
    qmodel = quantize_int8(model)
    idx = torch.randint(0, 40, (2, 32), generator=torch.Generator().manual_seed(2))
    ids = list(generate_ids(qmodel, [0, 1], 5, temperature=0))
    qmodel.save(tmp_path)
    marker = json.loads((tmp_path / QUANTIZATION_FILE).read_text(encoding="utf-8"))
    assert marker == {"method": "int8", "scheme": "per-channel symmetric"}
    assert GPT.check_saved(tmp_path) == model.config
    loaded = GPT.load(tmp_path)
    assert loaded.quantization == "int8"
    assert {n: p.dtype for n, p in loaded.named_parameters()} == {n: p.dtype for n, p in qmodel.named_parameters()}
    assert loaded.transformer.h[0].mlp.c_fc.weight.dtype == torch.int8
    assert torch.equal(logits(loaded, idx), logits(qmodel, idx))
    assert loaded.tokenizer.decode(loaded.tokenizer.encode("to be, or not")) == "to be, or not"
    assert list(generate_ids(loaded, [0, 1], 5, temperature=0)) == ids
    model.save(tmp_path)  # the float model over the same folder: it loads as float again
    assert not (tmp_path / QUANTIZATION_FILE).exists()
    assert GPT.load(tmp_path).lm_head.weight.dtype == torch.float32


def test_damaged_or_missing_marker_names_the_fix(tmp_path):
    quantize_int8(tiny_gpt("gpt2")).save(tmp_path)
    marker = tmp_path / QUANTIZATION_FILE
    marker.write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match=r"quantization\.json is not valid JSON.*delete the folder"):
        GPT.load(tmp_path)
    marker.write_text(json.dumps({"method": "int4"}), encoding="utf-8")
    with pytest.raises(ValueError, match="'int4'.*this code loads"):
        GPT.check_saved(tmp_path)
    marker.unlink()  # int8 weights read as a float model: the scales have no place
    with pytest.raises(ValueError, match="scale.*which the config has no place for"):
        GPT.check_saved(tmp_path)


def test_generation_with_kv_cache_matches_without():
    qmodel = quantize_int8(tiny_gpt("gpt2", vocab_size=40))
    assert list(generate_ids(qmodel, [0, 1], 5, temperature=0)) == list(
        generate_ids(qmodel, [0, 1], 5, temperature=0, use_cache=False))


# ------------------------------------------------------------------------------ a trained model
def test_validation_bits_per_byte_moves_at_most_one_percent():
    """A character model trained briefly on Shakespeare (about 5 s here): int8 changes its validation bits per
    byte by at most 1 % (measured: about 0.01 %)."""
    from minigpt_helpers.data.sources import shakespeare_documents

    text = "".join(d["text"] for d in itertools.islice(shakespeare_documents(), 60))
    train_text, val_text = text[:150_000], text[150_000:170_000]
    docs = [train_text[i: i + 2000] for i in range(0, len(train_text), 2000)]
    tok = CharTokenizer.train(docs + [val_text])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=32, n_layer=2, n_head=4, n_embd=64))
    model.tokenizer = tok
    cfg = TrainConfig(batch_size=16, max_steps=150, warmup_steps=20, lr=3e-3, min_lr=3e-4, eval_interval=150,
                      eval_windows=4, device="cpu")
    train(model, docs, cfg, val_data=[val_text], live="off")
    windows = val_windows([val_text], tok, 32, 128)
    cpu = torch.device("cpu")
    bpb = evaluate(model, windows, 64, cpu, unit="bpb", tokenizer=tok)
    bpb_int8 = evaluate(quantize_int8(model), windows, 64, cpu, unit="bpb", tokenizer=tok)
    assert bpb < 0.75 * torch.log2(torch.tensor(float(tok.vocab_size)))  # it learned something
    assert abs(bpb_int8 - bpb) <= 0.01 * bpb, (bpb, bpb_int8)
