"""Generation: sampling filters, the KV-cache loop and its window policy, streaming, bad input.

Every test builds a tiny random GPT directly (no training), with weights scaled up
so that its next-token distributions are peaked and varied: greedy decoding then
has clear winners (cache and no-cache logits differ only by float rounding) and
sampling has something to choose from.
"""

from __future__ import annotations

import math
import warnings

import pytest
import torch

from minigpt_helpers import (
    GPT,
    GPTConfig,
    StreamDecoder,
    generate,
    generate_ids,
    sample_group_ids,
    sample_next,
    top_k_filter,
    top_p_filter,
    window_start,
)
from minigpt_helpers.model.generation import stream_text
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.tokenizers.bpe import BPETokenizer

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py: one torch thread in this module

TEXT = "The research shows that a small model, trained well, writes text.\nFirst Citizen: speak!"


def tiny_model(tokenizer, block_size: int = 16, seed: int = 0, std: float = 0.5) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=block_size, n_layer=2, n_head=2, n_embd=32)
    model = GPT(cfg)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() == 2:  # embeddings and linear weights: larger than GPT-2's 0.02 init
                p.normal_(0.0, std)
    model.tokenizer = tokenizer
    return model.eval()


@pytest.fixture(scope="module")
def char_tok() -> CharTokenizer:
    return CharTokenizer.train([TEXT])


@pytest.fixture(scope="module")
def byte_tok() -> BPETokenizer:
    return BPETokenizer(merges=[])  # pure bytes: a random model emits partial UTF-8 all the time


@pytest.fixture(scope="module")
def model(char_tok) -> GPT:
    return tiny_model(char_tok)


# ----------------------------------------------------------------------------- filters


def test_top_k_keeps_exactly_the_k_largest():
    logits = torch.tensor([0.1, 3.0, -1.0, 2.0, 2.5, 0.0])
    out = top_k_filter(logits, 3)
    assert torch.isfinite(out).nonzero().flatten().tolist() == [1, 3, 4]
    assert torch.equal(out[[1, 3, 4]], logits[[1, 3, 4]])  # kept logits unchanged
    # ties: still exactly k survive
    assert torch.isfinite(top_k_filter(torch.zeros(10), 4)).sum() == 4
    # k >= vocab keeps everything; batches filter row by row
    assert torch.equal(top_k_filter(logits, 6), logits)
    batch = torch.tensor([[0.0, 1.0, 2.0], [2.0, 1.0, 0.0]])
    assert torch.isfinite(top_k_filter(batch, 1)).tolist() == [[False, False, True], [True, False, False]]


def test_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([0.05, 0.5, 0.15, 0.3])  # ranked: 1 (0.5), 3 (0.3), 2 (0.15), 0 (0.05)
    logits = probs.log()

    def kept(p):
        return set(torch.isfinite(top_p_filter(logits, p)).nonzero().flatten().tolist())

    assert kept(0.4) == {1}  # the top token alone already has 0.5 >= 0.4
    assert kept(0.7) == {1, 3}  # 0.5 < 0.7, 0.5 + 0.3 >= 0.7
    assert kept(0.9) == {1, 3, 2}
    assert kept(0.99) == {0, 1, 2, 3}
    assert kept(1.0) == {0, 1, 2, 3}
    assert kept(1e-6) == {1}  # the most likely token always survives
    out = top_p_filter(logits, 0.7)
    assert torch.equal(out[[1, 3]], logits[[1, 3]])
    batch = torch.stack([logits, logits.flip(0)])
    assert torch.isfinite(top_p_filter(batch, 0.7)).tolist() == [[False, True, False, True], [True, False, True, False]]


def test_sample_next_only_draws_kept_tokens_and_greedy_is_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.tensor([1.0, 0.5, 0.0, -0.5, 2.0, 0.9])
    assert int(sample_next(logits, temperature=0)) == 4
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(300)}
    assert draws == {0, 4}
    draws = {int(sample_next(logits, 1.0, top_p=0.5, generator=g)) for _ in range(300)}
    assert draws <= {0, 4} and 4 in draws
    draws = {int(sample_next(logits, 1.0, generator=g)) for _ in range(600)}
    assert draws == set(range(6))  # no filter: every token can come out
    # a very low temperature is (almost surely) greedy; a batch gives one id per row
    assert int(sample_next(logits, 1e-4, generator=g)) == 4
    assert sample_next(torch.zeros(3, 5), 1.0, generator=g).shape == (3,)


# ----------------------------------------------------------------------------- the window policy and the cache


def test_window_policy():
    assert window_start(10, 0, 16) == 0
    assert window_start(16, 0, 16) == 0
    assert window_start(17, 0, 16) == 9  # jump to the last 16 // 2 = 8 tokens
    assert window_start(25, 9, 16) == 9
    assert window_start(26, 9, 16) == 18
    assert window_start(3, 0, 1) == 2  # block_size 1: the window is the last token


@pytest.mark.parametrize("prompt", ["The", "The research shows that a small model"])  # 3 and 37 > 16 tokens
def test_greedy_is_token_for_token_identical_with_and_without_cache(model, char_tok, prompt):
    ids = char_tok.encode(prompt)[-16:]
    with_cache = list(generate_ids(model, ids, 60, temperature=0, use_cache=True))
    without = list(generate_ids(model, ids, 60, temperature=0, use_cache=False))
    assert len(with_cache) == 60  # 60 new tokens cross block_size (16) several times
    assert len(set(with_cache)) >= 4  # a varied output, so the comparison means something
    assert with_cache == without
    # and through the text interface, prompts longer than the context included
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = generate(model, prompt, 60, temperature=0, use_cache=True, stop_at_eot=False)
        b = generate(model, prompt, 60, temperature=0, use_cache=False, stop_at_eot=False)
    assert len(caught) == (2 if len(prompt) > 16 else 0)  # the crop notice, once per call
    assert a == b == prompt + char_tok.decode(with_cache)


def test_cache_path_prefills_once_then_feeds_one_token(model, char_tok):
    """What the model is actually fed: prefill, single tokens, a re-prefill of block_size // 2 when full."""
    calls = []
    hook = model.register_forward_pre_hook(
        lambda m, args, kwargs: calls.append((args[0].shape[1], kwargs.get("kv_cache") is not None)),
        with_kwargs=True,
    )
    try:
        list(generate_ids(model, char_tok.encode("The res"), 12, temperature=0, use_cache=True))
        cached = list(calls)
        calls.clear()
        list(generate_ids(model, char_tok.encode("The res"), 12, temperature=0, use_cache=False))
    finally:
        hook.remove()
    # 7 prompt tokens; steps 2..10 see 8..16 tokens (one new token each); step 11 would see 17 > 16,
    # so the window jumps to the last 16 // 2 = 8 tokens and they are re-prefilled; step 12 adds one
    assert cached == [(7, True)] + [(1, True)] * 9 + [(8, True)] + [(1, True)]
    assert calls == [(7 + i, False) for i in range(10)] + [(8, False), (9, False)]


def test_model_mode_is_restored(model, char_tok):
    model.train()
    try:
        generate(model, "The", 3, temperature=0)
        assert model.training
    finally:
        model.eval()


# ----------------------------------------------------------------------------- sampling


def test_seed_makes_sampling_reproducible(model):
    a = generate(model, "The", 40, temperature=1.0, seed=123, stop_at_eot=False)  # all 40 tokens, so seeds differ
    b = generate(model, "The", 40, temperature=1.0, seed=123, stop_at_eot=False)
    c = generate(model, "The", 40, temperature=1.0, seed=124, stop_at_eot=False)
    assert a == b
    assert a != c
    d = generate(model, "The", 40, temperature=0.9, top_k=5, top_p=0.9, seed=7, use_cache=False)
    assert d == generate(model, "The", 40, temperature=0.9, top_k=5, top_p=0.9, seed=7, use_cache=False)


def test_top_k_one_is_greedy(model):
    assert generate(model, "The", 30, temperature=1.5, top_k=1, seed=3) == generate(model, "The", 30, temperature=0)


def test_zero_new_tokens_returns_the_prompt(model):
    assert generate(model, "The", 0) == "The"
    assert list(generate(model, "The", 0, stream=True)) == ["The"]


def test_generation_stops_right_after_a_stop_token(model):
    first = list(generate_ids(model, [0, 1], 5, temperature=0))
    assert len(first) == 5
    assert list(generate_ids(model, [0, 1], 5, temperature=0, stop_ids=[first[2]])) == first[: first.index(first[2]) + 1]


class SpareRows(torch.nn.Module):
    """``model`` with 8 more output rows than its tokenizer has ids, and those rows' logits far above the rest."""

    def __init__(self, model: GPT) -> None:
        super().__init__()
        self.inner, self.config, self.tokenizer = model, model.config, model.tokenizer

    def forward(self, idx):
        logits, _ = self.inner(idx)
        return torch.cat([logits, logits.new_full((*logits.shape[:2], 8), 100.0)], dim=-1), None


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_rows_past_the_tokenizer_are_never_picked(model, char_tok, temperature):
    """A vocabulary padded past the tokenizer's ids: the spare rows have no text, so generation never picks them,
    however large their logits."""
    padded = SpareRows(model)
    ids = list(generate_ids(padded, [1, 2], 12, temperature=temperature, seed=0, use_cache=False))
    assert len(ids) == 12 and max(ids) < char_tok.vocab_size
    group = sample_group_ids(padded, [1, 2], 4, 6, temperature=max(temperature, 1.0), seed=0)
    assert all(len(row) == 6 and max(row) < char_tok.vocab_size for row in group)
    padded.tokenizer = None  # without a tokenizer nothing says which rows are spare: one wins (and has no embedding)
    assert list(generate_ids(padded, [1, 2], 1, temperature=0, use_cache=False))[0] >= char_tok.vocab_size


def test_generate_stops_at_endoftext_by_default(model, char_tok):
    """<|endoftext|> separated documents in training: generate stops right after it unless stop_at_eot=False."""
    calls = []

    def eot_third(module, args, output):  # the model writes <|endoftext|> as its 3rd token, and only then
        logits, loss = output
        calls.append(1)
        logits = logits.clone()
        logits[:, -1, char_tok.eot_id] = 1e4 if len(calls) == 3 else -1e4
        return logits, loss

    hook = model.register_forward_hook(eot_third)
    texts, n_calls = {}, {}
    try:
        for name, kwargs in [("default", {}), ("stream", dict(stream=True)), ("plain", dict(use_cache=False)),
                             ("on", dict(stop_at_eot=False))]:
            calls.clear()  # one forward call per new token, with the cache (prefill first) and without
            out = generate(model, "The", 10, temperature=0, **kwargs)
            texts[name] = "".join(out) if name == "stream" else out
            n_calls[name] = len(calls)
    finally:
        hook.remove()
    eot = char_tok.decode([char_tok.eot_id])
    assert eot == "<|endoftext|>"
    stopped = texts["default"]
    assert stopped.endswith(eot) and len(stopped) == len("The") + 2 + len(eot)  # 2 characters, then the end
    assert texts["stream"] == texts["plain"] == stopped
    assert n_calls["default"] == n_calls["plain"] == 3  # nothing is computed after it
    went_on = texts["on"]
    assert n_calls["on"] == 10 and went_on.startswith(stopped)
    assert len(went_on) == len(stopped) + 7  # the 7 tokens after it, one character each


# ----------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_stream_equals_non_stream_char(model, seed):
    pieces = list(generate(model, "The", 50, temperature=1.0, seed=seed, stream=True))
    assert pieces[0] == "The"
    assert "".join(pieces) == generate(model, "The", 50, temperature=1.0, seed=seed)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_stream_equals_non_stream_bytes(byte_tok, seed):
    m = tiny_model(byte_tok, block_size=32, seed=seed)
    prompt = "Größe: 5 €, "
    text = generate(m, prompt, 120, temperature=1.0, seed=seed, stop_at_eot=False)  # all 120 random bytes
    pieces = list(generate(m, prompt, 120, temperature=1.0, seed=seed, stream=True, stop_at_eot=False))
    assert "".join(pieces) == text
    assert "\ufffd" in text  # random bytes: the hard case (partial and invalid UTF-8) really happened


def test_stream_decoder_never_splits_a_character(byte_tok):
    text = "héllo wörld 5 € 😀!"
    dec = StreamDecoder(byte_tok)
    pieces = [dec.push(i) for i in byte_tok.encode(text)]
    pieces.append(dec.flush())
    assert "".join(pieces) == text
    assert not any("\ufffd" in p for p in pieces)
    # each character comes out as soon as its last byte arrives
    euro = text.index("€")
    n_before = len(text[:euro].encode())
    assert pieces[n_before : n_before + 3] == ["", "", "€"]
    # and with a BPE that has merges (multi-byte tokens), after a prompt
    bpe = BPETokenizer.train([text * 5, TEXT], vocab_size=300)
    dec = StreamDecoder(bpe, bpe.encode("start: "))
    pieces = [dec.push(i) for i in bpe.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text and not any("\ufffd" in p for p in pieces)


def test_stream_text_continues_the_prompt_ids(byte_tok):
    bpe = BPETokenizer.train(["héllo wörld 5 € " * 5, TEXT], vocab_size=300)
    prompt_ids, new_ids = bpe.encode("start: "), bpe.encode("héllo wörld 5 €!")
    pieces = list(stream_text(bpe, iter(new_ids), prompt_ids=prompt_ids))
    assert "".join(pieces) == "héllo wörld 5 €!" and not any("\ufffd" in p for p in pieces)
    assert list(stream_text(bpe, [], prompt="Hi")) == ["Hi"]  # the prompt first, as given


def test_stream_flushes_an_incomplete_character(byte_tok):
    dec = StreamDecoder(byte_tok)
    assert dec.push(ord("a")) == "a"
    assert dec.push(0xE2) == ""  # first byte of a 3-byte character: held back
    assert dec.flush() == "\ufffd"  # generation stopped mid-character


# ----------------------------------------------------------------------------- bad input


def test_empty_prompt_starts_from_endoftext(model, char_tok):
    seen = []
    hook = model.register_forward_pre_hook(lambda m, args: seen.append(args[0][0].tolist()))
    try:
        out = generate(model, "", 5, temperature=0, stop_at_eot=False)
    finally:
        hook.remove()
    assert seen[0] == [char_tok.eot_id]
    assert out == char_tok.decode([char_tok.eot_id] + list(generate_ids(model, [char_tok.eot_id], 5, temperature=0)))[
        len("<|endoftext|>") :
    ]


def test_unknown_characters_are_named(model):
    with pytest.raises(ValueError) as err:
        generate(model, "The café ☕ shows", 5)
    msg = str(err.value)
    assert "'é'" in msg and "'☕'" in msg and "U+00E9" in msg
    assert "'T'" not in msg  # only the culprits are named


def test_long_prompt_is_cropped_with_a_notice(model):
    prompt = "The research shows that a small model, trained well"
    with pytest.warns(UserWarning, match=r"only the last 16 tokens"):
        out = generate(model, prompt, 5, temperature=0)
    assert out.startswith(prompt) and len(out) == len(prompt) + 5
    cropped = generate(model, prompt[-16:], 5, temperature=0)  # exactly 16 tokens: fits, no notice
    assert out[len(prompt) :] == cropped[16:]  # the model saw exactly the last 16 tokens


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(max_new_tokens=-1), r"max_new_tokens must be an integer >= 0"),
        (dict(max_new_tokens=2.5), r"max_new_tokens must be an integer >= 0"),
        (dict(temperature=-0.1), r"temperature must be a number >= 0"),
        (dict(temperature=math.nan), r"temperature must be a number >= 0"),
        (dict(top_k=0), r"top_k must be an integer >= 1"),
        (dict(top_k=2.0), r"top_k must be an integer >= 1"),
        (dict(top_p=0.0), r"top_p must be in \(0, 1\]"),
        (dict(top_p=1.5), r"top_p must be in \(0, 1\]"),
        (dict(top_p=-0.2), r"top_p must be in \(0, 1\]"),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
def test_bad_arguments_raise_value_error_naming_the_range(model, kwargs, match, stream):
    with pytest.raises(ValueError, match=match):
        generate(model, "The", stream=stream, **kwargs)  # raised at the call, even when streaming


def test_model_without_tokenizer(char_tok):
    m = tiny_model(char_tok)
    m.tokenizer = None
    with pytest.raises(ValueError, match="no tokenizer attached"):
        generate(m, "The", 3)
    assert generate(m, "The", 3, temperature=0, tokenizer=char_tok).startswith("The")


def test_generate_ids_checks_its_input(model):
    with pytest.raises(ValueError, match="empty"):
        generate_ids(model, [], 3)
    with pytest.raises(ValueError, match="crop"):
        generate_ids(model, [0] * 17, 3)
    with pytest.raises(ValueError, match="top_p must be in"):
        generate_ids(model, [0], 3, top_p=2.0)  # at the call, before the first next()


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: sample_next(torch.zeros(4), temperature=-1.0), r"temperature must be a number >= 0"),
        (lambda: sample_next(torch.zeros(4), top_k=0), r"top_k must be an integer >= 1"),
        (lambda: sample_next(torch.zeros(4), top_p=1.5), r"top_p must be in \(0, 1\]"),
        (lambda: top_k_filter(torch.zeros(4), 0), r"top_k must be an integer >= 1"),
        (lambda: top_k_filter(torch.zeros(4), True), r"top_k must be an integer >= 1"),
        (lambda: top_p_filter(torch.zeros(4), 0.0), r"top_p must be in \(0, 1\]"),
    ],
)
def test_public_sampling_functions_check_their_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_generate_checks_the_sampling_arguments_once_not_per_token(model, monkeypatch):
    import minigpt_helpers.model.sampling as sampling

    calls = []
    real = sampling.check_sampling_args
    monkeypatch.setattr(sampling, "check_sampling_args", lambda *a: calls.append(a) or real(*a))
    assert generate(model, "The", 20, temperature=1.0, top_k=5, top_p=0.9, seed=0).startswith("The")
    assert calls == [(1.0, 5, 0.9)]  # 20 tokens, one check
    calls.clear()
    assert len(list(generate_ids(model, [0], 20, temperature=1.0, top_k=5, seed=0))) == 20
    assert calls == [(1.0, 5, None)]
