"""Batched generation (model/batch.py) and its ragged cache (attention.SlotKVCache): every prompt gets the tokens
it gets alone, whatever the mix of prompt lengths, the number of slots or the model's options."""

from __future__ import annotations

import random
import threading

import pytest
import torch

from minigpt_helpers import GPT, CharTokenizer, GPTConfig, generate, set_seed
from minigpt_helpers.model.batch import BatchEngine, generate_batch, generate_batch_ids
from minigpt_helpers.model.generation import generate_ids

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {
    "gpt2": {},
    "llama": dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=2, bias=False),
    "qwen3": dict(rope_theta=10000.0, norm="rmsnorm", mlp="swiglu", n_kv_head=1, qk_norm=True,
                  tie_embeddings=False, bias=False),
}


def tiny(seed: int = 0, block_size: int = 16, **options) -> GPT:
    set_seed(seed)
    tok = CharTokenizer(list("abcdefgh"))
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=block_size, n_layer=2, n_head=4, n_embd=32,
                          **options))
    model.tokenizer = tok
    return model.eval()


def mixed_prompts(n: int, seed: int = 0, longest: int = 16) -> list[list[int]]:
    rng = random.Random(seed)
    return [[rng.randrange(8) for _ in range(rng.randint(1, longest))] for _ in range(n)]


@pytest.mark.parametrize("option", list(OPTIONS))
@pytest.mark.parametrize("slots", [None, 3, 1])
def test_greedy_batches_equal_one_prompt_at_a_time(option, slots):
    """Mixed prompt lengths (1 .. the whole context), 30 new tokens each: well past the 16-token context."""
    model = tiny(**OPTIONS[option])
    prompts = mixed_prompts(7)
    want = [list(generate_ids(model, p, 30, temperature=0)) for p in prompts]
    assert generate_batch_ids(model, prompts, 30, temperature=0, slots=slots) == want


def test_seeded_sampling_and_stop_ids_match_one_prompt_at_a_time():
    model = tiny()
    prompts = mixed_prompts(6, seed=1)
    want = [list(generate_ids(model, p, 25, temperature=1.0, top_k=5, top_p=0.9, seed=10 + i, stop_ids=[2]))
            for i, p in enumerate(prompts)]
    got = generate_batch_ids(model, prompts, 25, temperature=1.0, top_k=5, top_p=0.9, seed=10, stop_ids=[2], slots=4)
    assert got == want
    assert len({len(g) for g in got}) > 1  # rows really stopped at different steps


def test_generate_batch_is_generate_for_each_prompt():
    model = tiny()
    prompts = ["abc", "", "hgfedcbahgfedcbahg", "a"]  # one longer than the context: cropped, with one warning each
    with pytest.warns(UserWarning, match="sees only the last 16"):
        got = generate_batch(model, prompts, 20, temperature=0)
    with pytest.warns(UserWarning, match="sees only the last 16"):
        want = [generate(model, p, 20, temperature=0) for p in prompts]
    assert got == want
    assert generate_batch(model, ["ab", "c"], 0) == ["ab", "c"]
    with pytest.raises(TypeError, match="list of strings"):
        generate_batch(model, "abc")


def test_continuous_batching_reuses_freed_slots_in_queue_order():
    """Two slots, five requests of different lengths: a slot is taken the step after it frees."""
    model = tiny()
    engine = BatchEngine(model, slots=2)
    events: list[tuple[str, int]] = []
    lengths = [6, 2, 3, 1, 4]
    requests = [engine.submit([1, 2], n, temperature=0, on_finish=lambda r, i=i: events.append(("end", i)))
                for i, n in enumerate(lengths)]
    steps = 0
    while engine.step():
        steps += 1
    assert [len(r.new_ids) for r in requests] == lengths
    assert all(r.finish_reason == "length" for r in requests)
    assert [i for _, i in events] == [1, 2, 3, 0, 4]  # 1 ends first, 2 then takes its slot, ...
    assert steps + 1 < sum(lengths)  # two rows per step: fewer steps than tokens


def test_cancel_frees_the_slot_and_reports_it():
    model = tiny()
    engine = BatchEngine(model, slots=1)
    finished = []
    first = engine.submit([1], 100, temperature=0, on_finish=finished.append)
    second = engine.submit([2], 3, temperature=0, on_finish=finished.append)
    engine.step()
    engine.step()
    engine.cancel(first)
    engine.run()
    # step 1: prefill (token 1) and a decode (token 2); step 2: token 3; then cancelled
    assert first.finish_reason == "cancelled" and len(first.new_ids) == 3
    assert second.finish_reason == "length" and len(second.new_ids) == 3
    assert finished == [first, second] and engine.pending == 0


def test_requests_submitted_from_another_thread_while_stepping():
    model = tiny()
    engine = BatchEngine(model, slots=4)
    prompts = mixed_prompts(8, seed=2)
    done = threading.Event()
    results: dict[int, list[int]] = {}

    def submitter() -> None:
        for i, p in enumerate(prompts):
            engine.submit(p, 10, temperature=0, on_finish=lambda r, i=i: results.__setitem__(i, r.new_ids))
        done.set()

    thread = threading.Thread(target=submitter)
    thread.start()
    while not done.is_set() or engine.pending:
        engine.step()
    thread.join()
    assert [results[i] for i in range(8)] == [list(generate_ids(model, p, 10, temperature=0)) for p in prompts]


def test_bad_arguments_get_clear_errors():
    model = tiny()
    engine = BatchEngine(model, slots=2)
    with pytest.raises(ValueError, match="prompt has 17 tokens but the context is 16"):
        engine.submit([1] * 17, 5)
    with pytest.raises(ValueError, match="prompt is empty"):
        engine.submit([], 5)
    with pytest.raises(ValueError, match="temperature must be a number >= 0"):
        engine.submit([1], 5, temperature=-1)
    with pytest.raises(ValueError, match="slots must be an integer >= 1"):
        BatchEngine(model, slots=0)


def test_slot_cache_takes_one_token_per_row_and_masks_other_rows_keys():
    model = tiny(**OPTIONS["llama"])
    cache = model.new_slot_cache(2)
    with pytest.raises(ValueError, match="one token per selected slot"):
        model(torch.tensor([[1, 2], [3, 4]]), kv_cache=cache)
    short, long_ = [1, 2], [3, 4, 5, 6, 7]
    with torch.no_grad():
        for slot, ids in enumerate((short, long_)):
            one = model.new_kv_cache(1)
            model(torch.tensor([ids[:-1]]), kv_cache=one)
            cache.load(slot, one)
        logits, _ = model(torch.tensor([[short[-1]], [long_[-1]]]), kv_cache=cache)
        alone_short, _ = model(torch.tensor([short]))
        alone_long, _ = model(torch.tensor([long_]))
    torch.testing.assert_close(logits[0, -1], alone_short[0, -1], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(logits[1, -1], alone_long[0, -1], atol=1e-5, rtol=1e-5)
    assert cache.lengths.tolist() == [2, 5]


def test_callbacks_may_ask_the_engine_about_itself():
    """on_token / on_finish run outside the engine's lock: a callback reading engine.pending does not deadlock."""
    engine = BatchEngine(tiny(), slots=1)
    seen = []
    engine.submit([1], 0, on_finish=lambda r: seen.append(("end", engine.pending)))
    engine.submit([1], 2, temperature=0, on_token=lambda r, t: seen.append(("token", engine.pending)),
                  on_finish=lambda r: seen.append(("end", engine.pending)))
    engine.run()
    assert seen == [("end", 1), ("token", 1), ("token", 1), ("end", 0)]
