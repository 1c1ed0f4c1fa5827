"""Exporting what a learner trains to Hugging Face.

Every course preset is bias-free, while GPT-2 always has biases. A missing bias is a
zero bias: the export must be exact, carry the tokenizer's special token ids, and come
back through ``from_hf`` as the same model.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from minigpt_helpers import GPT, CharTokenizer, from_hf, to_hf
from minigpt_helpers.training.loop import PRESETS, preset

transformers = pytest.importorskip("transformers")

TEXT = "To be, or not to be, that is the question: — café, naïve, 漢字.\n" * 3


def _trained_like(name: str) -> GPT:
    """A preset's model with a CharTokenizer, its weights moved well away from initialisation."""
    tok = CharTokenizer.train([TEXT])
    mcfg, _ = preset(name, tok.vocab_size)
    assert mcfg.bias is False  # what the course trains: the bias-free case
    torch.manual_seed(0)
    model = GPT(mcfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))  # LayerNorm gains too
    model.tokenizer = tok
    return model.eval()


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_exports_with_logit_parity_and_token_ids(name, capfd):
    model = _trained_like(name)
    tok = model.tokenizer
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        hf = to_hf(model)
    out, err = capfd.readouterr()
    said = " ".join(str(w.message) for w in caught) + out + err
    assert "eos_token_id" not in said and "bos_token_id" not in said, said
    assert hf.config.eos_token_id == tok.eot_id and hf.config.bos_token_id == tok.eot_id
    assert hf.generation_config.eos_token_id == tok.eot_id
    idx = torch.tensor([tok.encode(TEXT[: model.config.block_size])])
    with torch.no_grad():
        ref, _ = model(idx)
        got = hf(idx).logits
    assert ref.abs().max() > 1.0  # large enough that a wrong mapping could not hide under atol
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)


def test_bias_free_round_trip_comes_back_bias_free(tmp_path):
    model = _trained_like("tiny")
    hf = to_hf(model)
    back = from_hf(hf)
    assert back.config == model.config
    for (n1, p1), (n2, p2) in zip(model.state_dict().items(), back.state_dict().items()):
        assert n1 == n2 and torch.equal(p1, p2), n1
    # through the Hub format (config.json + safetensors) too
    hf.save_pretrained(tmp_path)
    again = from_hf(transformers.GPT2LMHeadModel.from_pretrained(tmp_path))
    assert again.config.bias is False


def test_biases_changed_after_export_come_back_as_bias_true():
    """Fine-tuned in transformers (biases not zero): still exact, with biases."""
    model = _trained_like("tiny")
    hf = to_hf(model)
    with torch.no_grad():
        hf.transformer.h[0].mlp.c_fc.bias.fill_(0.1)
    back = from_hf(hf)
    assert back.config.bias is True
    idx = torch.tensor([model.tokenizer.encode(TEXT[:32])])
    with torch.no_grad():
        torch.testing.assert_close(back(idx)[0], hf(idx).logits, atol=1e-4, rtol=1e-4)


def test_without_a_tokenizer_small_vocab_has_no_special_ids():
    model = _trained_like("tiny")
    model.tokenizer = None
    hf = to_hf(model)
    assert hf.config.eos_token_id is None and hf.config.bos_token_id is None
    hf = to_hf(model, eos_token_id=3)  # explicit kwargs still win
    assert hf.config.eos_token_id == 3
