"""Bits per byte: evaluate(unit=...) against a hand computation, exact byte counts per token."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn import functional as F

from minigpt_helpers import GPT, GPTConfig, evaluate
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.tokenizers.bpe import BPETokenizer
from minigpt_helpers.tokenizers.sentencepiece import SentencePieceTokenizer
from minigpt_helpers.training.metrics import (
    bits_per_byte,
    bpb_to_loss,
    bytes_per_token,
    loss_to_bpb,
    perplexity,
    token_byte_lengths,
)

CPU = torch.device("cpu")
FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
CORPUS = [
    "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n" * 20,
    "Hello, world! naïve café, Ünïcödé, 中文字符, Emoji 😀👍🏽, Greek αβγ, combining é\u0301.\n" * 10,
]
TEXT = "To be, or not to be: naïve café 中文 😀, that is the question.\n"


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(CORPUS, vocab_size=320)


@pytest.fixture(scope="module")
def sp() -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(CORPUS, vocab_size=400, model_type="bpe")


@pytest.fixture(scope="module")
def char() -> CharTokenizer:
    return CharTokenizer.train(CORPUS)


@pytest.fixture(scope="module")
def hf_bytelevel():
    """A GPT-2-style byte-level BPE trained here with `tokenizers`, behind HFTokenizer (the Hub is offline)."""
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    from minigpt_helpers.tokenizers.hf import HFTokenizer

    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                             initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(CORPUS, trainer)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")
    return HFTokenizer(fast)


class Bigram(nn.Module):
    """logits = table[previous token]: small enough to compute its loss by hand."""

    def __init__(self, table: list[list[float]]) -> None:
        super().__init__()
        self.table = nn.Embedding(len(table), len(table[0]))
        with torch.no_grad():
            self.table.weight.copy_(torch.tensor(table, dtype=torch.float32))

    def forward(self, idx, targets=None):
        logits = self.table(idx)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-1)
        return logits, loss


# ------------------------------------------------------------------------- a hand computation
TABLE = [[0.0, 1.0, 2.0, 3.0], [1.0, 0.0, 0.0, -1.0], [2.0, -1.0, 0.5, 0.0], [0.0, 0.5, 0.0, 0.0]]
WINDOWS = [[3, 0, 1, 2, 3], [2, 2, 1, 0, 3], [0, 1, 1, 2, 0]]


def _hand() -> tuple[float, int, int]:
    """Sum of -ln p(target | previous) with math.exp/log; bytes of the targets: a=1, é=2, €=3, EOT=0."""
    size = {0: 1, 1: 2, 2: 3, 3: 0}
    nats, tokens, n_bytes = 0.0, 0, 0
    for w in WINDOWS:
        for prev, tgt in zip(w, w[1:]):
            row = TABLE[prev]
            nats += math.log(sum(math.exp(v) for v in row)) - row[tgt]
            tokens += 1
            n_bytes += size[tgt]
    return nats, tokens, n_bytes


@pytest.mark.parametrize("batch_size", [1, 2, 3])
def test_evaluate_matches_a_hand_computation(batch_size: int) -> None:
    tok = CharTokenizer(["a", "é", "€"])  # 1, 2 and 3 bytes of UTF-8; EOT is id 3
    assert tok.eot_id == 3
    model = Bigram(TABLE)
    nats, tokens, n_bytes = _hand()
    assert (tokens, n_bytes) == (12, 1 + 2 + 3 + 0 + 3 + 2 + 1 + 0 + 2 + 2 + 3 + 1)
    w = torch.tensor(WINDOWS)
    got = evaluate(model, w, batch_size, CPU, unit="bpb", tokenizer=tok)
    assert got == pytest.approx(nats / (math.log(2) * n_bytes), rel=1e-6)
    assert evaluate(model, w, batch_size, CPU) == pytest.approx(nats / tokens, rel=1e-6)
    assert evaluate(model, w, batch_size, CPU, unit="ppl") == pytest.approx(math.exp(nats / tokens), rel=1e-6)


def test_default_unit_is_unchanged_mean_loss_per_token() -> None:
    # what evaluate returned before units existed: the model's mean loss, averaged over equal-size batches
    model = Bigram(TABLE)
    w = torch.tensor(WINDOWS)
    _, loss = model(w[:, :-1], w[:, 1:])
    assert evaluate(model, w, 3, CPU, "fp32") == pytest.approx(loss.item(), rel=1e-6)


def test_padding_targets_are_skipped_like_the_model_skips_them() -> None:
    tok = CharTokenizer(["a", "é", "€"])
    model = Bigram(TABLE)
    w = torch.tensor(WINDOWS)
    last_pad = w.clone()
    last_pad[:, -1] = -1  # the last target of every row is padding (an input is never -1)
    nats, tokens, n_bytes = _hand()
    dropped = sum(math.log(sum(math.exp(v) for v in TABLE[r[-2]])) - TABLE[r[-2]][r[-1]] for r in WINDOWS)
    dropped_bytes = sum({0: 1, 1: 2, 2: 3, 3: 0}[r[-1]] for r in WINDOWS)
    got = evaluate(model, last_pad, 2, CPU, unit="bpb", tokenizer=tok)
    assert got == pytest.approx((nats - dropped) / (math.log(2) * (n_bytes - dropped_bytes)), rel=1e-6)
    assert evaluate(model, last_pad, 2, CPU) == pytest.approx((nats - dropped) / (tokens - len(WINDOWS)), rel=1e-6)


def test_evaluate_restores_training_mode_and_rejects_bad_units() -> None:
    model = Bigram(TABLE).train()
    w = torch.tensor(WINDOWS)
    with pytest.raises(ValueError, match="unit must be one of"):
        evaluate(model, w, 2, CPU, unit="bits")
    with pytest.raises(ValueError, match="needs tokenizer="):
        evaluate(model, w, 2, CPU, unit="bpb")
    with pytest.raises(ValueError, match="outside the tokenizer's vocabulary"):
        evaluate(model, w, 2, CPU, unit="bpb", tokenizer=CharTokenizer(["a", "b"]))  # ids 0..2 only
    assert model.training
    with pytest.raises(ValueError, match="no predicted tokens"):
        evaluate(model, w[:0], 2, CPU)


# ------------------------------------------------------------------------- exact bytes per token
def _byte_sum(tok, text: str) -> int:
    return int(token_byte_lengths(tok)[torch.tensor(tok.encode(text), dtype=torch.long)].sum())


@pytest.mark.parametrize("name", ["bpe", "sp", "hf_bytelevel"])
@FAST
@given(st.text(max_size=60))
@example(TEXT)
@example(" \u2581 a literal \u2581, spaces  and\ttabs\n")
def test_token_bytes_sum_to_the_text_bytes(name: str, request: pytest.FixtureRequest, text: str) -> None:
    tok = request.getfixturevalue(name)
    assert _byte_sum(tok, text) == len(text.encode("utf-8"))


def test_char_token_bytes_and_the_eot_choice(char: CharTokenizer, bpe: BPETokenizer) -> None:
    text = "naïve 中文 😀 question"
    assert _byte_sum(char, text) == len(text.encode("utf-8"))
    for tok in (char, bpe):
        assert token_byte_lengths(tok)[tok.eot_id] == 0  # the separator is not text
        assert token_byte_lengths(tok, eot_bytes=1)[tok.eot_id] == 1
    with pytest.raises(ValueError, match="eot_bytes"):
        token_byte_lengths(char, eot_bytes=-1)


def test_a_bpe_token_may_hold_part_of_a_character(bpe: BPETokenizer) -> None:
    # the trap the lookup table avoids: decoding one id of a split character gives U+FFFD (3 bytes)
    ids = bpe.encode("🙂")  # 4 bytes of UTF-8, split over several tokens
    naive = sum(len(bpe.decode([i]).encode("utf-8")) for i in ids)
    assert len(ids) > 1 and naive > 4
    assert sum(int(token_byte_lengths(bpe)[i]) for i in ids) == 4


def test_a_tokenizer_that_cannot_tell_its_bytes_is_refused() -> None:
    class Opaque:
        vocab_size, eot_id = 3, 2

        def decode(self, ids):
            return {0: "a", 1: "\ufffd", 2: "<|endoftext|>"}[ids[0]]

    with pytest.raises(ValueError, match="token_bytes"):
        token_byte_lengths(Opaque())
    with pytest.raises(TypeError, match="course tokenizer"):
        token_byte_lengths(object())


# ------------------------------------------------------------------------- a uniform model
def _uniform_gpt(vocab_size: int) -> GPT:
    model = GPT(GPTConfig(vocab_size=vocab_size, block_size=128, n_layer=1, n_head=2, n_embd=16, dropout=0.0))
    with torch.no_grad():
        model.transformer.wte.weight.zero_()  # tied to lm_head: every logit is 0, p = 1/V
    return model


@pytest.mark.parametrize("name", ["char", "bpe", "sp"])
def test_uniform_model_bpb_is_log2_vocab_times_tokens_per_byte(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    ids = tok.encode(TEXT)
    window = torch.tensor([[tok.eot_id] + ids])  # the targets spell exactly TEXT
    model = _uniform_gpt(tok.vocab_size)
    n_bytes = len(TEXT.encode("utf-8"))
    got = evaluate(model, window, 1, CPU, unit="bpb", tokenizer=tok)
    assert got == pytest.approx(math.log2(tok.vocab_size) * len(ids) / n_bytes, rel=1e-5)
    # the same number from the loss per token and the text's bytes per token
    nats = evaluate(model, window, 1, CPU)
    assert nats == pytest.approx(math.log(tok.vocab_size), rel=1e-5)
    assert loss_to_bpb(nats, bytes_per_token(tok, [TEXT], eot=False)) == pytest.approx(got, rel=1e-5)


def test_char_and_bpe_bpb_differ_only_by_vocabulary_and_compression(char: CharTokenizer, bpe: BPETokenizer) -> None:
    # same text, same (uniform) ignorance: per token the losses differ by ln(V), per byte they also
    # carry how many tokens each tokenizer needs; the ratio of bpb is exactly that product
    got = {}
    for tok in (char, bpe):
        window = torch.tensor([[tok.eot_id] + tok.encode(TEXT)])
        got[tok] = evaluate(_uniform_gpt(tok.vocab_size), window, 1, CPU, unit="bpb", tokenizer=tok)
    ratio = (math.log2(bpe.vocab_size) * len(bpe.encode(TEXT))) / (math.log2(char.vocab_size) * len(char.encode(TEXT)))
    assert got[bpe] / got[char] == pytest.approx(ratio, rel=1e-5)
    assert len(bpe.encode(TEXT)) < len(char.encode(TEXT))  # BPE compresses: fewer, more expensive tokens


# ------------------------------------------------------------------------- conversions
def test_bytes_per_token_counts_one_eot_per_document(char: CharTokenizer) -> None:
    docs = ["To be", {"text": "or not"}]
    assert bytes_per_token(char, docs, eot=False) == pytest.approx(11 / 11)
    assert bytes_per_token(char, docs) == pytest.approx(11 / 13)
    assert bytes_per_token(char, ["café"], eot=False) == pytest.approx(5 / 4)
    with pytest.raises(TypeError, match="wrap it in a list"):
        bytes_per_token(char, "To be")
    with pytest.raises(ValueError, match="non-empty"):
        bytes_per_token(char, [""], eot=False)


def test_conversions() -> None:
    assert loss_to_bpb(1.90, 1.0) == pytest.approx(1.90 / math.log(2))  # char-level Shakespeare, ASCII
    assert bpb_to_loss(loss_to_bpb(3.57, 3.2), 3.2) == pytest.approx(3.57)
    assert bits_per_byte(8 * math.log(2), 1) == pytest.approx(8.0)  # 8 bits a byte: no compression
    assert perplexity(math.log(65)) == pytest.approx(65)
    for bad in (lambda: loss_to_bpb(1.0, 0), lambda: bpb_to_loss(1.0, -1), lambda: bits_per_byte(1.0, 0)):
        with pytest.raises(ValueError, match="> 0"):
            bad()


def test_chat_tokens_count_no_bytes(bpe: BPETokenizer) -> None:
    from minigpt_helpers.finetune.chat import ChatTokenizer

    chat = ChatTokenizer(bpe)
    table = token_byte_lengths(chat)
    assert table[: bpe.vocab_size].tolist() == token_byte_lengths(bpe).tolist()
    assert all(table[i] == 0 for i in chat.special_ids.values())
    text = "<|user|>naïve 😀?<|end|><|assistant|>café<|end|>"
    ids = torch.tensor(chat.encode(text, allowed_special="all"))
    assert int(table[ids].sum()) == len("naïve 😀?café".encode())
