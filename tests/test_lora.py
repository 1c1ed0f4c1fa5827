"""LoRA from scratch: parity with peft on the to_hf() export, exact merge/unmerge, counts, checkpoints."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from minigpt_helpers import GPT, GPTConfig, load_checkpoint, to_hf
from minigpt_helpers.finetune.lora import (
    LoRALinear,
    LoRAModel,
    adamw_state_bytes,
    add_lora,
    count_parameters,
    lora_layers,
    merge_lora,
    optimizer_state_bytes,
    remove_lora,
    unmerge_lora,
    without_lora,
)
from minigpt_helpers.tokenizers.base import CharTokenizer

TARGETS = ["c_attn", "c_proj", "c_fc"]


def tiny_gpt(seed: int = 0, bias: bool = True) -> GPT:
    torch.manual_seed(seed)
    return GPT(GPTConfig(vocab_size=50, block_size=16, n_layer=2, n_head=2, n_embd=32, bias=bias)).eval()


def test_same_a_and_b_give_peft_logits_and_merged_weights():
    peft = pytest.importorskip("peft")
    model = tiny_gpt(bias=False)  # as the course's presets (exported with zero biases)
    x = torch.randint(0, 50, (2, 16), generator=torch.Generator().manual_seed(1))
    before = model(x)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hf = peft.get_peft_model(to_hf(model), peft.LoraConfig(r=4, lora_alpha=8, target_modules=TARGETS,
                                                                 fan_in_fan_out=True, lora_dropout=0.0))
    names = add_lora(model, TARGETS, r=4, alpha=8)
    assert len(names) == 8  # 4 projections x 2 blocks, lm_head untouched
    assert torch.equal(model(x)[0], before)  # B = 0: the model is unchanged at the start
    g = torch.Generator().manual_seed(2)
    with torch.no_grad():
        for name, layer in lora_layers(model).items():
            theirs = hf.base_model.model.get_submodule(name)
            theirs.lora_B["default"].weight.normal_(generator=g)  # a non-zero update
            layer.lora_A.copy_(theirs.lora_A["default"].weight)
            layer.lora_B.copy_(theirs.lora_B["default"].weight)
    hf.eval()
    ref = hf(input_ids=x).logits
    ours = model(x)[0]
    assert (ours - before).abs().max() > 1e-2  # the update does something
    assert torch.allclose(ours, ref, atol=1e-5, rtol=0)

    originals = {n: m.base.weight.detach().clone() for n, m in lora_layers(model).items()}
    merge_lora(model)
    assert torch.allclose(model(x)[0], ref, atol=1e-5, rtol=0)
    merged = hf.merge_and_unload().state_dict()
    for name, layer in lora_layers(model).items():  # Conv1D stores (in, out): transposed
        assert torch.allclose(layer.base.weight, merged[f"{name}.weight"].t(), atol=1e-6, rtol=0)
    unmerge_lora(model)
    for name, layer in lora_layers(model).items():
        assert torch.equal(layer.base.weight, originals[name])  # bit for bit
    assert torch.equal(model(x)[0], ours)


def test_layer_init_freezing_and_validation():
    base = nn.Linear(32, 64)
    layer = LoRALinear(base, r=4, alpha=8)
    assert layer.scaling == 2.0 and torch.count_nonzero(layer.lora_B) == 0
    bound = 1 / 32 ** 0.5  # kaiming_uniform(a=sqrt(5)) on fan_in 32, as nn.Linear and peft
    assert layer.lora_A.abs().max() <= bound and layer.lora_A.std() > bound / 4
    model = tiny_gpt()
    add_lora(model, ["c_attn"], r=2)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {f"transformer.h.{i}.attn.c_attn.lora_{k}" for i in range(2) for k in "AB"}
    with pytest.raises(ValueError, match="already"):
        add_lora(model, ["c_fc"])
    with pytest.raises(ValueError, match="no nn.Linear layer matches.*c_attn"):
        add_lora(tiny_gpt(), ["q_proj"])
    with pytest.raises(ValueError, match="rank r"):
        LoRALinear(nn.Linear(4, 4), r=0)


def test_counts_and_optimizer_state():
    model = tiny_gpt(bias=False)
    _, total = count_parameters(model)
    full = adamw_state_bytes(model)
    add_lora(model, TARGETS, r=2)
    trainable, total_with = count_parameters(model)
    # r * (in + out) per layer: c_attn 32->96, attn c_proj 32->32, c_fc 32->128, mlp c_proj 128->32
    assert trainable == 2 * 2 * ((32 + 96) + (32 + 32) + (32 + 128) + (128 + 32))
    assert total_with == total + trainable
    assert adamw_state_bytes(model) == 2 * 4 * trainable < full / 10
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad])
    model(torch.zeros(1, 4, dtype=torch.long), torch.zeros(1, 4, dtype=torch.long))[1].backward()
    opt.step()
    tensors = 2 * len(opt.param_groups[0]["params"])
    assert adamw_state_bytes(model) <= optimizer_state_bytes(opt) <= adamw_state_bytes(model) + 8 * tensors


def test_lora_model_saves_base_files_and_adapter_and_loads_back(tmp_path):
    model = tiny_gpt()
    model.tokenizer = CharTokenizer(list("abcdefghij"))
    base = {k: v.clone() for k, v in model.state_dict().items()}
    wrapped = LoRAModel(model, r=2, alpha=4)
    with torch.no_grad():
        for layer in lora_layers(wrapped).values():
            layer.lora_B.normal_()
    x = torch.randint(0, 11, (1, 8))
    want = wrapped(x)[0]
    wrapped.merge()  # saving a merged model still writes the base weights
    wrapped.save(tmp_path / "ckpt")
    plain = load_checkpoint(tmp_path / "ckpt", device="cpu")  # any GPT loader reads the base model
    for k, v in plain.state_dict().items():
        assert torch.equal(v, base[k])
    back = LoRAModel.load(tmp_path / "ckpt", device="cpu")
    assert torch.allclose(back(x)[0], want, atol=1e-6) and back.tokenizer.vocab_size == 11
    assert back.config.block_size == 16 and hasattr(back, "new_kv_cache")  # calls reach the GPT
    merged = back.merge_and_unload()
    assert isinstance(merged, GPT) and not lora_layers(merged)
    assert torch.allclose(merged(x)[0], want, atol=1e-5)


def test_without_lora_and_remove_lora_keep_the_base_keys():
    model = tiny_gpt()
    keys = set(model.state_dict())
    add_lora(model, TARGETS)
    merge_lora(model)
    with without_lora(model):
        assert set(model.state_dict()) == keys and not lora_layers(model)
    assert all(m.merged for m in lora_layers(model).values())  # put back as it was
    remove_lora(model)
    assert set(model.state_dict()) == keys
