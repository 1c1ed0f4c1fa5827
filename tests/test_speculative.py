"""Speculative decoding (model/speculative.py): the acceptance rule keeps the target's distribution, greedy
speculative decoding is the target's own greedy output for every model option, the caches roll back."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from minigpt_helpers import GPT, CharTokenizer, GPTConfig, generate, set_seed
from minigpt_helpers.model.generation import generate_ids
from minigpt_helpers.model.speculative import SpeculativeStats, accept_draft, speculative_ids

pytestmark = pytest.mark.usefixtures("one_thread")

CHARS = list("abcdefgh")
OPTIONS = {
    "gpt2": {},
    "llama": dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False),
    "qwen3": dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True,
                  tie_embeddings=False, bias=False),
    "relu2_softcap": dict(mlp="relu2", logit_softcap=15.0, zero_init_proj=False),
}


def tiny(seed: int, block_size: int = 16, n_layer: int = 2, chars: list[str] = CHARS, sharp: float = 0.0,
         **options) -> GPT:
    """An untrained GPT over ``chars``; ``sharp`` > 0 scales an untied head so its distributions are peaked."""
    set_seed(seed)
    tok = CharTokenizer(chars)
    if sharp:
        options = {**options, "tie_embeddings": False}
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=n_layer, n_head=4, n_embd=32,
                          **options))
    if sharp:
        with torch.no_grad():
            model.lm_head.weight.normal_(0.0, sharp)
    model.tokenizer = tok
    return model.eval()


# ----------------------------------------------------------------------------- the acceptance rule


def test_the_rule_gives_exactly_p_in_closed_form():
    """P(out = x) = q(x) min(1, p/q) + P(reject) * residual(x) = min(p, q) + max(0, p - q) = p(x)."""
    torch.manual_seed(0)
    p, q = torch.softmax(torch.randn(6) * 2, 0), torch.softmax(torch.randn(6) * 2, 0)
    accepted = torch.minimum(p, q)
    residual = (p - q).clamp(min=0)
    out = accepted + (1 - accepted.sum()) * residual / residual.sum()
    torch.testing.assert_close(out, p)


def _first_tokens(p: torch.Tensor, q: torch.Tensor, n: int, seed: int, naive: bool = False) -> torch.Tensor:
    """Counts of the first token out of ``n`` rounds of one drafted token (drawn from q) checked against p."""
    g = torch.Generator().manual_seed(seed)
    counts = torch.zeros(p.size(-1))
    for _ in range(n):
        x = int(torch.multinomial(q[0], 1, generator=g))
        kept, nxt = accept_draft(p, q, [x], g)
        counts[x if (kept == 1 or naive) else nxt] += 1
    return counts


def test_accept_draft_samples_the_target_distribution_and_a_naive_rule_does_not():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(2, 5) * 1.5, -1)  # target at the drafted position and the bonus position
    q = torch.softmax(torch.randn(1, 5) * 1.5, -1)
    n = 6000
    counts = _first_tokens(p, q, n, seed=0)
    assert chisquare(counts.numpy(), (p[0] * n).numpy()).pvalue > 1e-3
    naive = _first_tokens(p, q, n, seed=0, naive=True)  # keep every drafted token: that is q, not p
    assert chisquare(naive.numpy(), (p[0] * n).numpy()).pvalue < 1e-6


def test_accept_draft_keeps_all_when_the_draft_is_the_target():
    p = torch.softmax(torch.randn(4, 7), -1)
    kept, nxt = accept_draft(p, p[:3], [1, 2, 3], torch.Generator().manual_seed(0))
    assert kept == 3 and 0 <= nxt < 7  # p/q = 1: always kept; the bonus comes from p[3]


def test_greedy_distributions_accept_exactly_the_argmax():
    p = torch.nn.functional.one_hot(torch.tensor([2, 4, 1]), 5).float()
    q = torch.nn.functional.one_hot(torch.tensor([2, 3]), 5).float()
    assert accept_draft(p, q, [2, 3]) == (1, 4)  # the first agrees, the second is replaced by the target's argmax


# ----------------------------------------------------------------------------- whole runs


def _marginals(target: GPT, prompt: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's exact distributions of the first and second new token (temperature 1)."""
    vocab = target.tokenizer.vocab_size
    with torch.no_grad():
        p1 = torch.softmax(target(torch.tensor([prompt]))[0][0, -1, :vocab], -1)
        seqs = torch.tensor([prompt + [x] for x in range(vocab)])
        p2_given = torch.softmax(target(seqs)[0][:, -1, :vocab], -1)  # (V, V): row x1
    return p1, p1 @ p2_given


def test_speculative_sampling_keeps_the_targets_first_and_second_token_distributions():
    chars = list("abc")  # 4 ids with <|endoftext|>
    target, draft = tiny(0, chars=chars, sharp=0.6), tiny(1, chars=chars, sharp=0.6, n_layer=1)
    prompt = [0, 1, 2]
    p1, p2 = _marginals(target, prompt)
    q1, _ = _marginals(draft, prompt)
    assert (p1 - q1).abs().sum() > 0.3  # the draft really differs, so the rule has work to do
    n, vocab = 1500, len(p1)
    first, second = torch.zeros(vocab), torch.zeros(vocab)
    stats = SpeculativeStats()
    for seed in range(n):
        out = list(speculative_ids(target, draft, prompt, 3, lookahead=2, temperature=1.0, seed=seed, stats=stats))
        first[out[0]] += 1
        second[out[1]] += 1
    assert 0.05 < stats.acceptance_rate < 0.95  # both branches of the rule were taken
    assert chisquare(first.numpy(), (p1 * n).numpy()).pvalue > 1e-3
    assert chisquare(second.numpy(), (p2 * n).numpy()).pvalue > 1e-3
    draft_only = torch.zeros(vocab)  # the same test tells the draft's own samples apart
    for seed in range(n):
        draft_only[next(iter(generate_ids(draft, prompt, 1, temperature=1.0, seed=seed)))] += 1
    assert chisquare(draft_only.numpy(), (p1 * n).numpy()).pvalue < 1e-6


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("lookahead", [1, 3, 8])
def test_greedy_speculative_decoding_is_the_targets_greedy_output(option, lookahead):
    """Every model option, several lookaheads, prompts up to the context and output well past it."""
    target = tiny(0, **OPTIONS[option])
    draft = tiny(1, block_size=12, n_layer=1, **OPTIONS[option])  # its own, shorter window
    for prompt in ([3], [1, 2, 3, 4, 5, 6, 7], [i % 8 for i in range(16)]):
        want = list(generate_ids(target, prompt, 40, temperature=0))
        stats = SpeculativeStats()
        got = list(speculative_ids(target, draft, prompt, 40, lookahead=lookahead, temperature=0, stats=stats))
        assert got == want
        assert stats.tokens == 40 and stats.accepted <= stats.proposed and stats.rounds < 40 + 1
        assert list(speculative_ids(target, target, prompt, 40, lookahead=lookahead, temperature=0)) == want


def test_a_self_draft_accepts_everything_and_needs_fewer_target_passes():
    target = tiny(0)
    stats = SpeculativeStats()
    out = list(speculative_ids(target, target, [1, 2], 12, lookahead=3, temperature=0, stats=stats))
    assert len(out) == 12 and stats.acceptance_rate == 1.0
    assert stats.rounds == 3 and stats.tokens_per_round == 4.0  # 3 accepted + 1 bonus per pass


def test_generate_with_a_draft_gives_the_same_text_and_streams():
    target, draft = tiny(0), tiny(1, n_layer=1)
    long_prompt = "abcdefgh" * 3  # longer than the 16-token context: cropped with a warning, as without a draft
    with pytest.warns(UserWarning, match="sees only the last 16"):
        want = generate(target, long_prompt, 30, temperature=0, stop_at_eot=False)
    with pytest.warns(UserWarning, match="sees only the last 16"):
        assert generate(target, long_prompt, 30, temperature=0, stop_at_eot=False, draft=draft, lookahead=4) == want
    pieces = generate(target, "abc", 20, temperature=0, draft=draft, stream=True)
    assert "".join(pieces) == generate(target, "abc", 20, temperature=0)


def test_sampling_with_a_seed_is_reproducible_and_stops_at_a_stop_id():
    target, draft = tiny(0, sharp=0.5), tiny(1, sharp=0.5, n_layer=1)
    a = list(speculative_ids(target, draft, [1], 30, 3, temperature=0.9, top_k=4, top_p=0.9, seed=7))
    assert a == list(speculative_ids(target, draft, [1], 30, 3, temperature=0.9, top_k=4, top_p=0.9, seed=7))
    stop = a[5]
    cut = list(speculative_ids(target, draft, [1], 30, 3, temperature=0.9, top_k=4, top_p=0.9, seed=7,
                               stop_ids=[stop]))
    assert cut == a[: a.index(stop) + 1]


def test_bad_drafts_and_arguments_get_errors_that_name_the_fix():
    target = tiny(0)
    other = tiny(1, chars=list("abcdefgi"))  # same size, different characters
    with pytest.raises(ValueError, match=r"tokenizer differs.*decode to different text.*share one tokenizer"):
        generate(target, "abc", 5, draft=other)
    smaller = tiny(1, chars=list("abcd"))
    with pytest.raises(ValueError, match="5 ids against the target's 9"):
        generate(target, "abc", 5, draft=smaller)
    with pytest.raises(ValueError, match="lookahead must be an integer >= 1"):
        generate(target, "abc", 5, draft=tiny(1), lookahead=0)
    with pytest.raises(ValueError, match="needs use_cache=True"):
        generate(target, "abc", 5, draft=tiny(1), use_cache=False)


def test_kv_cache_truncate_rolls_back_to_a_prefix():
    model = tiny(0, **OPTIONS["qwen3"])
    ids = torch.tensor([[1, 2, 3, 4, 5, 6]])
    cache = model.new_kv_cache(1)
    with torch.no_grad():
        model(ids, kv_cache=cache)
        cache.truncate(3)  # forget 4, 5, 6
        rolled, _ = model(torch.tensor([[7, 8]]), kv_cache=cache)
        fresh, _ = model(torch.tensor([[1, 2, 3, 7, 8]]))
    torch.testing.assert_close(rolled[0], fresh[0, 3:], atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="0 <= n <= pos"):
        cache.truncate(6)
