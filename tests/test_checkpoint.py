"""Checkpoints: safetensors + JSON only, atomic under a crash, ready GPT with its tokenizer."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

import minigpt_helpers.checkpoint as ck
from minigpt_helpers import GPT, GPTConfig, find_checkpoint, load_checkpoint, save_checkpoint, set_seed
from minigpt_helpers.tokenizer import CharTokenizer
from minigpt_helpers.training import TrainConfig, make_optimizer


def _model(seed: int = 0):
    tok = CharTokenizer.train(["hello shakespeare"])
    set_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16))
    model.tokenizer = tok
    return model


def _trained_optimizer(model):
    opt = make_optimizer(model, TrainConfig(), torch.device("cpu"))
    x = torch.randint(0, model.config.vocab_size, (2, 8))
    for _ in range(2):
        _, loss = model(x, x)
        loss.backward()
        opt.step()
        opt.zero_grad()
    return opt


def test_roundtrip_ready_model_with_tokenizer(tmp_path):
    model = _model()
    opt = _trained_optimizer(model)
    path = save_checkpoint(tmp_path, model, step=7, optimizer=opt, trainer={"note": "hi"})
    assert path.name == "ckpt-0000007" and (tmp_path / "latest").read_text().strip() == path.name
    loaded = load_checkpoint(tmp_path, device="cpu")  # the output folder or ...
    again = load_checkpoint(path, device="cpu")  # ... the checkpoint folder itself
    for m in (loaded, again):
        assert isinstance(m, GPT) and not m.training
        assert m.tokenizer.decode(m.tokenizer.encode("shakespeare")) == "shakespeare"
        for (k, a), b in zip(model.state_dict().items(), m.state_dict().values()):
            assert torch.equal(a, b), k
    # nothing pickled: only safetensors and JSON (and the tokenizer's own files)
    suffixes = {f.suffix for f in path.rglob("*") if f.is_file()}
    assert suffixes <= {".safetensors", ".json", ".model", ".txt", ""}, suffixes
    assert json.loads((path / "trainer.json").read_text())["note"] == "hi"


def test_optimizer_state_roundtrip_through_safetensors():
    model = _model()
    opt = _trained_optimizer(model)
    tensors, meta = ck.optimizer_to_safetensors(opt.state_dict())
    meta = json.loads(json.dumps(meta))  # must survive JSON
    opt2 = make_optimizer(_model(), TrainConfig(), torch.device("cpu"))
    opt2.load_state_dict(ck.optimizer_from_safetensors(tensors, meta))
    a, b = opt.state_dict(), opt2.state_dict()
    assert a["param_groups"] == b["param_groups"]
    for i in a["state"]:
        for k in a["state"][i]:
            assert torch.equal(torch.as_tensor(a["state"][i][k]), torch.as_tensor(b["state"][i][k]))


def test_rng_roundtrip():
    tensors, meta = ck.rng_state()
    meta = json.loads(json.dumps(meta))
    expected = (torch.rand(3), np.random.rand(3), random.random())
    ck.set_rng_state(tensors, meta)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1]) and expected[2] == got[2]


def test_crash_during_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    model = _model()
    opt = _trained_optimizer(model)
    save_checkpoint(tmp_path, model, step=1, optimizer=opt)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.transformer.wte.weight.add_(1.0)

    import safetensors.torch

    def crash(*args, **kwargs):
        raise OSError("disk full (simulated crash half-way through the save)")

    monkeypatch.setattr(safetensors.torch, "save_file", crash)  # model.safetensors is written, then this
    with pytest.raises(OSError, match="simulated"):
        save_checkpoint(tmp_path, model, step=2, optimizer=opt)
    monkeypatch.undo()
    assert find_checkpoint(tmp_path).name == "ckpt-0000001"
    assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # the half-written one, ignored
    loaded = load_checkpoint(tmp_path, device="cpu")
    for k, v in loaded.state_dict().items():
        assert torch.equal(v, before[k]), k
    # the next successful save cleans the debris up and moves `latest`
    save_checkpoint(tmp_path, model, step=3, optimizer=opt)
    assert find_checkpoint(tmp_path).name == "ckpt-0000003"
    assert not any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())


def test_crash_before_latest_is_updated(tmp_path, monkeypatch):
    model = _model()
    save_checkpoint(tmp_path, model, step=1)
    monkeypatch.setattr(ck, "_write_text_atomic", lambda *a, **k: (_ for _ in ()).throw(OSError("killed")))
    with pytest.raises(OSError):
        save_checkpoint(tmp_path, model, step=2)
    monkeypatch.undo()
    assert find_checkpoint(tmp_path).name == "ckpt-0000001"  # `latest` still names a complete checkpoint


def test_keeps_the_last_two(tmp_path):
    model = _model()
    for step in (1, 2, 3):
        save_checkpoint(tmp_path, model, step=step)
    assert sorted(p.name for p in tmp_path.glob("ckpt-*")) == ["ckpt-0000002", "ckpt-0000003"]


def test_missing_checkpoint_error_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="--out"):
        load_checkpoint(tmp_path)
