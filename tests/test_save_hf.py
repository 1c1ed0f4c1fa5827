"""save_hf: a course model and its tokenizer as a plain Hugging Face folder (no custom code).

For each course tokenizer and a GPT-2- and a Qwen3-shaped model, transformers' Auto classes read the
folder back and give the course's ids on text that mixes scripts, emoji, combining marks, whitespace
runs, digits and <|endoftext|>, decode them to the same text, and compute the same logits. A chat
model's template renders conversations as the course does.
"""

from __future__ import annotations

import json

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

transformers = pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from tiny_chat import convo, tiny_model  # noqa: E402

from minigpt_helpers import GPT, GPTConfig, HFTokenizer  # noqa: E402
from minigpt_helpers.finetune.chat import (  # noqa: E402
    CHAT_TOKENS,
    ChatTokenizer,
    add_chat_tokens,
    chat_text,
    render_conversation,
)
from minigpt_helpers.interop.save import hf_tokenizer, save_hf  # noqa: E402
from minigpt_helpers.tokenizers.base import EOT, CharTokenizer, Tokenizer  # noqa: E402
from minigpt_helpers.tokenizers.bpe import BPETokenizer  # noqa: E402
from minigpt_helpers.tokenizers.sentencepiece import SentencePieceTokenizer  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module

CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's 2024, we're here; they'll see.\n" * 4,
    "def f(x):\n    return x ** 2  # code\n\n\t\ttabs   and    spaces   \r\n" * 3,
    "中文字符和汉字。مرحبا بالعالم. Ελληνικά αβγ. naïve café e\u0301 Straße <0x41> <unk>\n" * 3,
    "Emoji 😀👍🏽 family 👨\u200d👩\u200d👧 and more 😀😀 numbers 1234567 3.14159\n" * 3,
]
TRICKY = [
    "Hello, world! It's the quick brown fox.",
    "中文字符 and English, مرحبا بالعالم, Ελληνικά.",
    "emoji 😀👍🏽 family 👨\u200d👩\u200d👧 🦜 (a parrot the corpus never saw)",
    "combining: e\u0301 a\u0308\u0323 Ǆ'LL ſ's naïve",
    "\ttabs\t\tand\nnewlines\n\n\r\nand    multiple     spaces   ",
    "digits 1234567890 3.14159 ١٢٣",
    f"before{EOT}after {EOT} and {EOT}{EOT}",
    "a literal ▁ marker ▁▁ and <0x41> <unk> <|end|>",
    "  leading and trailing  ",
]
ARCHS = {
    "gpt2": {},
    "qwen3": dict(rope_theta=10000.0, norm="rmsnorm", norm_eps=1e-6, mlp="swiglu", qk_norm=True, n_kv_head=1,
                  head_size=24, tie_embeddings=False),
}


@pytest.fixture(scope="module")
def tokenizers_by_kind() -> dict[str, Tokenizer]:
    """One small trained tokenizer of each kind the course has."""
    return {
        "char": CharTokenizer.train(CORPUS, unk=True),
        "bpe": BPETokenizer.train(CORPUS, vocab_size=400),
        "sp_bpe": SentencePieceTokenizer.train(CORPUS, vocab_size=400, model_type="bpe"),
        "sp_unigram": SentencePieceTokenizer.train(CORPUS, vocab_size=400, model_type="unigram"),
    }


@pytest.fixture(scope="module")
def built(tokenizers_by_kind) -> dict:
    """The Hugging Face tokenizers of the BPE tokenizers, built once for the property test."""
    return {kind: hf_tokenizer(tokenizers_by_kind[kind]) for kind in ("bpe", "sp_bpe")}


def course_model(tok: Tokenizer, arch: str, seed: int = 0) -> GPT:
    """A tiny GPT of ``arch``'s shape for ``tok``, its weights moved well off their initial values."""
    torch.manual_seed(seed)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=96, n_layer=2, n_head=2, n_embd=32, bias=False,
                          **ARCHS[arch]))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.tokenizer = tok
    return model.eval()


def load_folder(folder):
    """(tokenizer, model) read back by transformers' Auto classes, with no custom code."""
    hf_tok = transformers.AutoTokenizer.from_pretrained(folder, trust_remote_code=False)
    hf_model = transformers.AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=False).eval()
    return hf_tok, hf_model


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("kind", ["char", "bpe", "sp_bpe", "sp_unigram"])
def test_saved_folder_gives_the_course_ids_text_and_logits(tokenizers_by_kind, kind, arch, tmp_path):
    tok = tokenizers_by_kind[kind]
    model = course_model(tok, arch)
    folder = save_hf(model, tmp_path / "hf")
    assert not list(folder.glob("*.py")) and "auto_map" not in json.loads((folder / "config.json").read_text(encoding="utf-8"))
    hf_tok, hf_model = load_folder(folder)
    assert type(hf_model).__name__ == {"gpt2": "GPT2LMHeadModel", "qwen3": "Qwen3ForCausalLM"}[arch]
    assert hf_tok.eos_token_id == hf_tok.bos_token_id == tok.eot_id == hf_model.config.eos_token_id
    assert hf_tok.model_max_length == model.config.block_size
    for text in TRICKY:
        ids = tok.encode(text, allowed_special="all")
        assert hf_tok(text)["input_ids"] == ids, text
        assert hf_tok.decode(ids) == tok.decode(ids), text
        if kind != "char":  # the character tokenizer spells characters it never saw as its unknown token
            assert hf_tok.decode(ids) == text
    ids = tok.encode("".join(TRICKY), allowed_special="all")[: model.config.block_size]
    x = torch.tensor([ids])
    with torch.no_grad():
        ref, _ = model(x)
        got = hf_model(torch.tensor([hf_tok("".join(TRICKY))["input_ids"][: model.config.block_size]])).logits
    assert ref.abs().max() > 1.0  # large enough that a wrong weight could not hide under atol
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=0)


def test_char_tokenizer_without_unk_raises_on_unseen_characters_in_both(tmp_path):
    tok = CharTokenizer.train(["hello world\n"])
    hf_tok, _ = load_folder(save_hf(course_model(tok, "gpt2"), tmp_path / "hf"))
    text = f"hello{EOT}world\n"
    assert hf_tok(text)["input_ids"] == tok.encode(text, allowed_special="all")
    assert hf_tok.decode(tok.encode(text, allowed_special="all")) == text
    with pytest.raises(ValueError, match="not in this CharTokenizer"):
        tok.encode("hello there")
    with pytest.raises(Exception, match="UNK"):  # tokenizers: "Missing [UNK] token from the vocabulary"
        hf_tok("hello there")


# Scripts, marks, spaces and emoji that Unicode 14.0 (the version of tokenizers' regex engine) has in full.
POOL = "".join(chr(c) for r in [(0x09, 0x0D), (0x20, 0x7E), (0x85, 0x85), (0xA0, 0x24F), (0x300, 0x36F),
                                (0x391, 0x3C9), (0x400, 0x44F), (0x5D0, 0x5EA), (0x620, 0x64A), (0x660, 0x669),
                                (0x2000, 0x200D), (0x2028, 0x2029), (0x3000, 0x3002), (0x4E00, 0x4E3F),
                                (0x1F600, 0x1F64F), (0x1F3FB, 0x1F3FF)]
               for c in range(r[0], r[1] + 1)) + "▁<|>"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.sampled_from(POOL) | st.sampled_from([EOT, EOT[:-2], "▁▁", "<0x41>", "<unk>"]), max_size=40)
       .map("".join))
def test_bpe_and_sentencepiece_match_hugging_face_on_any_text(tokenizers_by_kind, built, text):
    """Same pre-split (regex vs Oniguruma) and the same merges applied in the same order, for any text."""
    for kind, fast in built.items():
        tok = tokenizers_by_kind[kind]
        ids = tok.encode(text, allowed_special="all")
        assert fast.encode(text, add_special_tokens=False) == ids
        assert fast.decode(ids) == tok.decode(ids)


def test_hf_tokenizer_is_saved_as_it_is(local_hf_tokenizer, tmp_path):
    tok = HFTokenizer(local_hf_tokenizer)
    folder = save_hf(course_model(tok, "qwen3"), tmp_path / "hf")
    hf_tok, hf_model = load_folder(folder)
    assert hf_tok.model_max_length == 96 and hf_model.config.eos_token_id == tok.eot_id
    for text in TRICKY:
        ids = tok.encode(text, allowed_special="all")
        assert hf_tok(text, add_special_tokens=False)["input_ids"] == ids
        assert hf_tok.decode(ids) == tok.decode(ids)


def test_chat_template_renders_like_the_course(tmp_path):
    model = add_chat_tokens(tiny_model())
    tok = model.tokenizer
    folder = save_hf(model, tmp_path / "chat")
    assert "chat_template" in json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    hf_tok, hf_model = load_folder(folder)
    assert hf_tok.convert_tokens_to_ids(list(CHAT_TOKENS)) == [tok.token_id(t) for t in CHAT_TOKENS]
    assert hf_model.generation_config.eos_token_id == [tok.eot_id, *(tok.token_id(t) for t in CHAT_TOKENS)]
    system = {"role": "system", "content": "be brief."}
    for row in (convo("hi", "yo"), convo("hi there", "yo", "ok bye", "ciao"), convo("hi")):
        messages = [system, *row["messages"]]
        for prompt in (False, True):
            text = hf_tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=prompt)
            assert text == chat_text(messages, add_generation_prompt=prompt)
            ids, _ = render_conversation(tok, messages, add_generation_prompt=prompt)
            assert hf_tok(text)["input_ids"] == ids
    with pytest.raises(Exception, match="role"):
        hf_tok.apply_chat_template([{"role": "robot", "content": "hi"}], tokenize=False)


def test_chat_tokens_over_bpe_keep_the_course_ids(tokenizers_by_kind, tmp_path):
    chat = ChatTokenizer(tokenizers_by_kind["bpe"])
    fast = hf_tokenizer(chat)
    text = "".join(f"{t}{s}" for t, s in zip(CHAT_TOKENS, TRICKY))
    ids = chat.encode(text, allowed_special="all")
    assert fast.encode(text, add_special_tokens=False) == ids
    assert fast.decode(ids) == chat.decode(ids) == text


def test_a_sentencepiece_model_with_options_it_cannot_express_is_refused(tmp_path):
    tok = SentencePieceTokenizer.train(CORPUS, vocab_size=400, add_dummy_prefix=True)
    with pytest.raises(ValueError, match="gives other ids"):
        save_hf(course_model(tok, "gpt2"), tmp_path / "hf")
    assert not (tmp_path / "hf").exists()


def test_unsupported_tokenizer_or_model_is_a_type_error(tokenizers_by_kind, tmp_path):
    class Custom(Tokenizer):  # type_name stays "base": not registered
        vocab_size, eot_id = 10, 9

    model = course_model(tokenizers_by_kind["bpe"], "gpt2")
    for bad in (Custom(), "gpt2", transformers):
        with pytest.raises(TypeError, match="supported are CharTokenizer, BPETokenizer, SentencePieceTokenizer"):
            save_hf(model, tmp_path / "x", tokenizer=bad)
    with pytest.raises(TypeError, match="course GPT"):
        save_hf(torch.nn.Linear(2, 2), tmp_path / "x")
    assert not (tmp_path / "x").exists()
