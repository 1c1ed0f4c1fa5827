"""Checkpoints: safetensors + JSON only, atomic under a crash, ready GPT with its tokenizer."""

from __future__ import annotations

import errno
import json
import os
import random
import re

import numpy as np
import pytest
import torch

import minigpt_helpers.training.checkpoint as ck
from minigpt_helpers import GPT, GPTConfig, find_checkpoint, load_checkpoint, save_checkpoint, set_seed
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.training.loop import TrainConfig, make_optimizer


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
    assert path.name == "ckpt-0000007" and (tmp_path / "latest").read_text(encoding="utf-8").strip() == path.name
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
    assert json.loads((path / "trainer.json").read_text(encoding="utf-8"))["note"] == "hi"


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


def test_no_rng_state_is_saved_and_an_older_checkpoint_with_one_still_loads(tmp_path):
    # training re-seeds every step from (seed, rank, step), so a checkpoint holds no RNG state;
    # one written by an older version (rng.safetensors, trainer.json's "rng") loads, those ignored
    from safetensors.torch import save_file

    model = _model()
    opt = _trained_optimizer(model)
    path = save_checkpoint(tmp_path, model, step=3, optimizer=opt, trainer={"note": "hi"})
    assert not (path / "rng.safetensors").exists()
    assert "rng" not in json.loads((path / "trainer.json").read_text(encoding="utf-8"))
    ckpt, state, optim = ck.load_training_state(tmp_path)
    assert ckpt == path and state["step"] == 3

    save_file({"torch": torch.get_rng_state()}, str(path / "rng.safetensors"))
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    version, py_state, py_gauss = random.getstate()
    state["rng"] = {"numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(gauss)],
                    "python": [version, list(py_state), py_gauss]}
    (path / "trainer.json").write_text(json.dumps(state), encoding="utf-8")
    ckpt, again, optim_again = ck.load_training_state(tmp_path)
    assert ckpt == path and again["step"] == 3 and again["note"] == "hi"
    opt2 = make_optimizer(_model(), TrainConfig(), torch.device("cpu"))
    opt2.load_state_dict(optim_again)
    assert opt2.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


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


def test_save_works_where_fsync_needs_a_writable_descriptor(tmp_path, monkeypatch):
    """Windows refuses fsync on a file opened read-only (EBADF): a save must fsync through a descriptor opened for writing."""
    fcntl = pytest.importorskip("fcntl")  # POSIX only: F_GETFL tells how a descriptor was opened
    real_fsync = os.fsync
    refused = []

    def windows_like_fsync(fd):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY:
            refused.append(fd)
            raise OSError(errno.EBADF, "Bad file descriptor")
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", windows_like_fsync)
    model = _model()
    path = save_checkpoint(tmp_path, model, step=1, optimizer=_trained_optimizer(model))
    monkeypatch.undo()
    assert find_checkpoint(tmp_path) == path
    assert torch.equal(load_checkpoint(tmp_path, device="cpu").transformer.wte.weight, model.transformer.wte.weight)


@pytest.fixture()
def saved(tmp_path):
    model = _model()
    path = save_checkpoint(tmp_path, model, step=4, optimizer=_trained_optimizer(model))
    return path


def test_truncated_weights_name_the_checkpoint_and_the_fix(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # a copy cut short
    for load in (lambda: load_checkpoint(saved.parent, device="cpu"), lambda: ck.load_training_state(saved.parent)):
        with pytest.raises(ValueError, match="cut short") as e:
            load()
        assert str(weights) in str(e.value) and f"delete the folder {saved}" in str(e.value)


def test_config_that_does_not_match_the_weights_names_the_fix(saved):
    cfg = json.loads((saved / "config.json").read_text(encoding="utf-8"))
    (saved / "config.json").write_text(json.dumps(dict(cfg, n_embd=32)), encoding="utf-8")
    for load in (lambda: load_checkpoint(saved, device="cpu"), lambda: ck.load_training_state(saved.parent)):
        with pytest.raises(ValueError, match="does not match .*config.json.*delete the folder"):
            load()
    (saved / "config.json").write_text(json.dumps(dict(cfg, n_layer=2)), encoding="utf-8")
    with pytest.raises(ValueError, match=r"the config needs transformer\.h\.1\."):
        load_checkpoint(saved, device="cpu")
    (saved / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        load_checkpoint(saved, device="cpu")


def test_damaged_training_state_names_the_fix(saved):
    (saved / "trainer.json").write_text('{"step": 4, "optim', encoding="utf-8")  # cut short
    with pytest.raises(ValueError, match="trainer.json is damaged.*delete the folder"):
        ck.load_training_state(saved.parent)


def test_a_file_instead_of_a_folder_names_the_folder(saved):
    with pytest.raises(NotADirectoryError, match=re.escape(f"pass the checkpoint folder that holds it, e.g. {saved}")):
        load_checkpoint(saved / "model.safetensors")
