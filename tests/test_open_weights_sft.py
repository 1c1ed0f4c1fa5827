"""Chapter 08, section 4 (online only in the notebook), run offline: an open-weight Llama loaded into the
course's GPT from a save_pretrained folder, conversations streamed with ``datasets`` from a dataset in the
messages format, the chat tokens added to its Hugging Face tokenizer, and LoRA SFT through train().

The notebook cell does this with SmolLM2-135M and HuggingFaceTB/smol-smoltalk; here the model is a small
random-weight Llama of the same kind (GQA, tied embeddings) with a locally trained tokenizer, and the
"Hub dataset" is a local folder that ``datasets.load_dataset(..., streaming=True)`` reads the same way."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

transformers = pytest.importorskip("transformers")
pytest.importorskip("datasets")

from minigpt_helpers import HFTokenizer, TrainConfig, load_open_weights, set_seed  # noqa: E402
from minigpt_helpers.data import sources as data_module  # noqa: E402
from minigpt_helpers.finetune.chat import ChatTokenizer, add_chat_tokens, chat_reply, sft  # noqa: E402
from minigpt_helpers.finetune.instructions import hub_conversations  # noqa: E402
from minigpt_helpers.finetune.lora import LoRAModel, count_parameters  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module
STEPS = 300
PAIRS = [("Say hello.", "Hello."), ("Say the research.", "The research shows."), ("Say goodbye.", "Goodbye.")]


@pytest.mark.slow
def test_lora_sft_of_an_open_weight_llama_on_streamed_conversations(tmp_path, monkeypatch, local_hf_tokenizer):
    hf_tok = local_hf_tokenizer  # tests/conftest.py: 300 ids, <|endoftext|> = 0
    config = transformers.LlamaConfig(vocab_size=320, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                                      num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                                      rope_theta=100000.0, max_position_embeddings=2048, bos_token_id=0,
                                      eos_token_id=0)
    set_seed(0)
    transformers.LlamaForCausalLM(config).save_pretrained(tmp_path / "model")
    hf_tok.save_pretrained(tmp_path / "model")
    folder = tmp_path / "smoltalk"  # a dataset repo's layout: data files with a "messages" column
    folder.mkdir()
    rows = [{"messages": [{"role": "user", "content": u}, {"role": "assistant", "content": a}]} for u, a in PAIRS]
    (folder / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows * 8), encoding="utf-8")

    monkeypatch.setattr(data_module, "hub_reachable", lambda *a, **k: (True, "a local imitation"))
    talk = hub_conversations(str(folder), limit=20)  # streamed with datasets, checked row by row
    assert len(talk) == 20 and talk[1] == rows[1]

    smol = load_open_weights(str(tmp_path / "model"))
    assert isinstance(smol.tokenizer, HFTokenizer) and smol.config.block_size == 2048
    smol.config = dataclasses.replace(smol.config, block_size=32)  # rows are padded to this, as in the notebook
    old_rows = smol.transformer.wte.weight[:300].detach().clone()
    add_chat_tokens(smol)  # 300 tokenizer ids + 4 chat tokens fit in the 320 rows: no resize, new rows at the mean
    assert isinstance(smol.tokenizer, ChatTokenizer) and smol.tokenizer.vocab_size == 304
    assert smol.config.vocab_size == 320 and torch.equal(smol.transformer.wte.weight[:300], old_rows)
    before = chat_reply(smol, [{"role": "user", "content": "Say hello."}], max_new_tokens=5)
    assert isinstance(before, str) and "<|" not in before

    cfg = TrainConfig(batch_size=4, max_steps=STEPS, warmup_steps=5, lr=2e-2, min_lr=2e-3, eval_interval=STEPS,
                      eval_windows=8, compile=False, device="cpu")
    result = sft(smol, talk[:-4], talk[-4:], cfg, lora={"r": 8, "alpha": 16}, eval_examples=4, live="off")
    tuned = result.model
    assert isinstance(tuned, LoRAModel) and result.step == STEPS
    trainable, total = count_parameters(tuned)
    assert trainable < total / 2  # adapters + the (whole, tied) embedding, not the blocks
    # the base is random (no pretraining to lean on), so the loss falls by a third, not to zero; greedy decoding
    # already gives the trained reply and stops at the end of the turn
    assert result.history.val_losses[-1] < 0.75 * result.history.val_losses[0]
    assert chat_reply(tuned, [{"role": "user", "content": "Say goodbye."}], max_new_tokens=8) == "Goodbye."
