"""Concept diagrams: each draws, is legible (>= 9 pt, no overlapping labels, nothing cut off),
and shows what the course's code computes."""

from __future__ import annotations

import re
import warnings

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
from figure_checks import drawn_texts, legibility_problems  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from minigpt_helpers import diagrams  # noqa: E402
from minigpt_helpers.training.config import TrainConfig, lr_at  # noqa: E402


def texts_of(fig: Figure) -> str:
    return "\n".join(t.get_text() for t in drawn_texts(fig))


def _draw(name: str, **kwargs) -> Figure:
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # matplotlib's complaints while building the figure
        return diagrams.DIAGRAMS[name](**kwargs)


@pytest.mark.parametrize("name", sorted(diagrams.DIAGRAMS))
def test_every_diagram_draws_legibly(name: str) -> None:
    fig = _draw(name)
    try:
        assert isinstance(fig, Figure)
        assert fig.number not in plt.get_fignums(), "detached from pyplot, so a notebook shows it once"
        assert len(drawn_texts(fig)) >= 8, "a diagram explains itself with labels"
        shapes = sum(len(ax.patches) + len(ax.lines) for ax in fig.axes)
        assert shapes + len(drawn_texts(fig)) >= 20
        assert legibility_problems(fig) == []
    finally:
        plt.close(fig)


def test_the_registry_the_docstring_and_the_chapters_agree() -> None:
    listed = re.findall(r"^    (\w+)\s+ch\d\d\s", diagrams.__doc__, flags=re.M)
    assert listed == list(diagrams.DIAGRAMS)
    assert set(diagrams.CHAPTER) == set(diagrams.DIAGRAMS)
    for name, draw in diagrams.DIAGRAMS.items():
        assert getattr(diagrams, name) is draw and draw.__doc__, name


def test_the_legibility_check_catches_what_it_looks_for() -> None:
    fig, ax = plt.subplots(figsize=(3, 2))
    ax.set_axis_off()
    ax.text(0.1, 0.5, "tiny", fontsize=6)
    ax.text(0.5, 0.5, "one label", fontsize=10)
    ax.text(0.52, 0.5, "another", fontsize=10)
    ax.text(1.4, 0.5, "off the edge", fontsize=10)
    problems = "\n".join(legibility_problems(fig))
    assert "'tiny' is 6 pt" in problems and "overlaps" in problems and "cut off" in problems
    ax.text(0.1, 0.1, "\u4e2d", fontsize=10)  # DejaVu Sans has no CJK: it would draw an empty box
    with pytest.raises(UserWarning, match="missing from font"):
        legibility_problems(fig)
    plt.close(fig)


# ------------------------------------------------------------------------------ they show the code's numbers
def test_packing_windows_are_pack_windows() -> None:
    fig = _draw("packing_windows", docs=["ab", "cde"], block_size=2)
    text = texts_of(fig)
    plt.close(fig)
    # stream a b EOT c d e EOT: two windows of 3 tokens, and a one-token tail
    assert "window 0" in text and "window 1" in text and "window 2" not in text and "tail: dropped" in text
    with pytest.raises(ValueError, match="block_size"):
        diagrams.packing_windows(block_size=0)


def test_bpe_merges_are_the_trainers() -> None:
    fig = _draw("bpe_merges", text="low lower lowest", steps=2)
    text = texts_of(fig)
    plt.close(fig)
    assert "id 256 = 'lo'" in text and "id 257 = 'low'" in text  # l+o and o+w tie at 3: the smaller pair wins
    assert "l+o: 3" in text
    with pytest.raises(ValueError, match="no pair"):
        diagrams.bpe_merges("x")


def test_causal_attention_masks_the_future() -> None:
    fig = _draw("causal_attention", tokens=("a", "b", "c", "d"), query=1)
    ax = fig.axes[0]
    masked = [p for p in ax.patches if p.get_hatch() == "///"]
    weights = [float(t.get_text()) for t in ax.texts if re.fullmatch(r"\d\.\d\d", t.get_text())]
    plt.close(fig)
    assert len(masked) == 4 * 3 // 2 + 1  # the upper triangle, plus the legend's swatch
    assert len(weights) == 4 * 5 // 2 and weights[0] == 1.0  # the first query sees only itself


@pytest.mark.parametrize("tokens, seed", [(("The", "cat", "sat", "on", "the", "mat"), 0), (tuple("abcdefghij"), 1),
                                          (tuple("abcdefghij"), 2)])
def test_causal_attention_rows_show_numbers_adding_up_to_one(tokens: tuple[str, ...], seed: int) -> None:
    fig = _draw("causal_attention", tokens=tokens, query=1, seed=seed)
    shown = [round(100 * float(t.get_text())) for t in fig.axes[0].texts if re.fullmatch(r"\d\.\d\d", t.get_text())]
    plt.close(fig)
    rows = [shown[i * (i + 1) // 2:(i + 1) * (i + 2) // 2] for i in range(len(tokens))]  # row i shows i + 1 weights
    assert [len(r) for r in rows] == list(range(1, len(tokens) + 1))
    assert [sum(r) for r in rows] == [100] * len(tokens)  # in hundredths: exactly 1.00 as printed


def test_lr_schedule_is_lr_at() -> None:
    cfg = TrainConfig(max_steps=200, warmup_steps=20, lr=6e-4, min_lr=6e-5)
    fig = _draw("lr_schedule", cfg=cfg)
    line = fig.axes[0].lines[0]
    ys = line.get_ydata()
    plt.close(fig)
    scale = 1e-4
    assert len(ys) == 200
    assert all(abs(y * scale - lr_at(s, cfg)) < 1e-12 for s, y in zip(range(200), ys))
    with pytest.raises(ValueError, match="max_steps"):
        diagrams.lr_schedule(TrainConfig(max_steps=None, time_budget_s=10))


def test_kv_cache_counts_the_work() -> None:
    fig = _draw("kv_cache", prompt=("a", "b"), generated=("c", "d", "e", "f"))
    text = texts_of(fig)
    plt.close(fig)
    assert "2 + 3 + 4 + 5 = 14" in text  # without a cache: every position, every call
    assert "2 + 1 + 1 + 1 = 5" in text  # with one: the prompt once, then one position per call


def test_sampling_filters_remove_what_the_filters_remove() -> None:
    fig = _draw("sampling_filters", top_k=3, top_p=0.5)
    removed = [sum(1 for p in ax.patches if p.get_hatch() == "///") for ax in fig.axes]
    plt.close(fig)
    assert removed == [0, 0, 10 - 3, 10 - 2]  # top-p 0.5: ' be' (0.41) + ' die' (0.19) reach it
    with pytest.raises(ValueError, match="one logit per token"):
        diagrams.sampling_filters(logits=[1.0, 2.0], tokens=["a"])


def test_the_parameters_change_the_picture() -> None:
    for name, kwargs in [("head_split", dict(n_embd=16, n_head=4)), ("gqa", dict(n_head=6, n_kv_head=3)),
                         ("lora", dict(d_in=128, d_out=384, r=4)), ("training_step", dict(grad_accum=4)),
                         ("gpt_architecture", dict(n_layer=6))]:
        fig = _draw(name, **kwargs)
        try:
            assert legibility_problems(fig) == [], name
            text = texts_of(fig)
            assert {"head_split": "head 3", "gqa": "3 K/V heads", "lora": "2,048",
                    "training_step": "x 4 micro-batches", "gpt_architecture": "\u00d7 6"}[name] in text
        finally:
            plt.close(fig)
    for bad in (lambda: diagrams.head_split(n_embd=10, n_head=3), lambda: diagrams.gqa(8, 3),
                lambda: diagrams.lora(r=0), lambda: diagrams.chat_mask([("robot", "hi")])):
        with pytest.raises(ValueError):
            bad()


def test_save_all_writes_one_png_per_diagram(tmp_path, monkeypatch) -> None:
    drawn = []
    for name in diagrams.DIAGRAMS:  # cheap stand-ins: the real ones are drawn above
        def draw(name=name):
            drawn.append(name)
            fig = plt.figure(figsize=(1, 1))
            fig.add_subplot().plot([0, 1])
            return fig
        monkeypatch.setitem(diagrams.DIAGRAMS, name, draw)
    paths = diagrams.save_all(tmp_path)
    assert drawn == list(diagrams.DIAGRAMS)
    assert [p.name for p in paths] == [f"{n}.png" for n in diagrams.DIAGRAMS]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in paths)


# ------------------------------------------------------------------------------ chapter 09
def test_choice_scoring_shows_the_models_log_likelihoods_and_its_answer() -> None:
    import torch

    from minigpt_helpers import GPT, CharTokenizer, GPTConfig, set_seed
    from minigpt_helpers.evaluation.choices import score_choices

    context, choices = "to be or not", [" to be", " a bee", " two"]
    tok = CharTokenizer.train([context + "".join(choices)])
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=16))
    with torch.no_grad():
        model.lm_head.weight.mul_(20)  # a sharper random model: the three sums differ clearly
    model.tokenizer = tok
    fig = _draw("choice_scoring", context=context, choices=choices, label_index=1, model=model)
    try:
        assert legibility_problems(fig) == []
        texts = [t.get_text() for t in drawn_texts(fig)]
        shown = [float(t) for t in texts if re.fullmatch(r"-?\d+\.\d\d", t)]
        sums = [s.loglik for s in score_choices(model, context, choices)]
        assert len(shown) == sum(len(c) + 1 for c in choices)  # a character tokenizer: one token per character
        ends = [sum(len(c) + 1 for c in choices[:j + 1]) for j in range(len(choices))]
        rows = [shown[end - len(c) - 1:end] for c, end in zip(choices, ends)]  # per row: each token's log p, the sum
        assert [row[-1] for row in rows] == [round(s, 2) for s in sums]  # the sums are score_choices'
        assert [sum(row[:-1]) for row in rows] == pytest.approx(sums, abs=0.01 * max(map(len, choices)))
        picked = max(range(len(sums)), key=sums.__getitem__)
        assert any(t.startswith("argmax") for t in texts) and "true line" in "\n".join(texts)
        assert ("(right)" if picked == 1 else "(wrong)") in "\n".join(texts)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="pass model="):
        diagrams.choice_scoring(choices=(" a", " b"))


def test_isoflop_profiles_mark_chinchillas_optimum() -> None:
    from minigpt_helpers.evaluation.scaling import PUBLISHED, chinchilla_optimum

    budgets = (1e19, 1e20, 1e21)
    fig = _draw("isoflop_profiles", budgets=budgets)
    try:
        n_opt, d_opt, l_opt = chinchilla_optimum(PUBLISHED["chinchilla"], list(budgets))
        profiles, trend = fig.axes
        dots = [line for line in profiles.lines if line.get_marker() == "o"]
        assert [float(d.get_xdata()[0]) for d in dots] == pytest.approx(list(n_opt))
        assert [float(d.get_ydata()[0]) for d in dots] == pytest.approx(list(l_opt))
        for line in profiles.lines:  # every curve's lowest point is no lower than its budget's optimum
            if line.get_marker() != "o":
                assert min(line.get_ydata()) >= min(l_opt) - 1e-9
        assert list(trend.lines[0].get_ydata()) == pytest.approx(list(n_opt))
        assert list(trend.lines[1].get_ydata()) == pytest.approx(list(d_opt))
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="two or more"):
        diagrams.isoflop_profiles(budgets=(1e18,))


# ------------------------------------------------------------------------------ chapter 11
LENGTHS = [12, 7, 6, 5, 4, 8, 7, 5]  # the default requests of continuous_batching: prefill + decode steps


def test_slot_schedule_on_a_worked_example() -> None:
    assert diagrams.slot_schedule(LENGTHS, 4) == [
        (0, 0, 0, 12), (1, 1, 0, 7), (2, 2, 0, 6), (3, 3, 0, 5),
        (4, 3, 5, 9),  # slot 4 frees first (D is done after 5 steps): E takes it at once
        (5, 2, 6, 14), (6, 1, 7, 14), (7, 3, 9, 14)]
    assert diagrams.slot_schedule(LENGTHS, 4, static=True) == [
        (0, 0, 0, 12), (1, 1, 0, 7), (2, 2, 0, 6), (3, 3, 0, 5),
        (4, 0, 12, 16), (5, 1, 12, 20), (6, 2, 12, 19), (7, 3, 12, 17)]  # the second batch waits for A's 12
    for bad in (lambda: diagrams.slot_schedule([3, 0], 2), lambda: diagrams.slot_schedule([3], 0)):
        with pytest.raises(ValueError):
            bad()


@pytest.mark.parametrize("seed", range(20))
def test_slot_schedule_keeps_its_promises(seed: int) -> None:
    import random

    rng = random.Random(seed)
    lengths = [rng.randint(1, 12) for _ in range(rng.randint(1, 15))]
    slots = rng.randint(1, 5)
    ends = {}
    for static in (False, True):
        plan = diagrams.slot_schedule(lengths, slots, static=static)
        assert [r for r, *_ in plan] == list(range(len(lengths)))
        assert all(end - start == lengths[r] and 0 <= s < slots and start >= 0 for r, s, start, end in plan)
        assert [start for _, _, start, _ in plan] == sorted(start for _, _, start, _ in plan)  # in queue order
        for slot in range(slots):
            runs = sorted((start, end) for _, s, start, end in plan if s == slot)
            assert all(a[1] <= b[0] for a, b in zip(runs, runs[1:])), "two requests in one slot at once"
            if not static:  # a freed slot is refilled at once: no gap before a slot's last request
                assert all(a[1] == b[0] for a, b in zip(runs, runs[1:])) and (not runs or runs[0][0] == 0)
        if static:  # a batch starts together, when the previous batch's longest member is done
            for b in range(slots, len(lengths), slots):
                assert {start for r, _, start, _ in plan[b:b + slots]} == {max(e for *_, e in plan[b - slots:b])}
        ends[static] = max(end for *_, end in plan)
    assert max(lengths) <= ends[False] <= ends[True]
    assert ends[False] >= -(-sum(lengths) // slots)  # no schedule beats perfectly packed slots


def test_continuous_batching_draws_slot_schedule() -> None:
    fig = _draw("continuous_batching")
    try:
        text = texts_of(fig)
        cont = max(e for *_, e in diagrams.slot_schedule(LENGTHS, 4))
        stat = max(e for *_, e in diagrams.slot_schedule(LENGTHS, 4, static=True))
        assert (cont, stat) == (14, 20)
        assert "continuous: 14 steps, static: 20 steps" in text
        assert "54 of 56 slot-steps busy" in text and "54 of 80 slot-steps busy" in text
        assert [text.split("\n").count(letter) for letter in "ABCDEFGH"] == [2] * 8  # once per panel
        prefills = [p for p in fig.axes[0].patches if p.get_hatch() == "///"]
        assert len(prefills) == 2 * 8 + 1  # one per request per panel, and the legend's swatch
    finally:
        plt.close(fig)
    fig = _draw("continuous_batching", requests=[(1, 2), (2, 1)], slots=2)
    text = texts_of(fig)
    plt.close(fig)
    assert "continuous: 3 steps, static: 3 steps" in text and "Continuous and static batching" in text
    with pytest.raises(ValueError, match="fewer or shorter"):
        diagrams.continuous_batching(slots=1)


@pytest.mark.parametrize("accepted", range(5))
def test_speculative_decoding_marks_what_it_accepts(accepted: int) -> None:
    proposed = ("the", "king", "is", "dead")
    fig = _draw("speculative_decoding", proposed=proposed, accepted=accepted, correction="was", bonus="!")
    try:
        texts = [t.get_text() for t in drawn_texts(fig)]
        k = len(proposed)
        assert texts.count("\u2713") == accepted and texts.count("\u2717") == (1 if accepted < k else 0)
        assert ("discarded" in texts) == (accepted + 1 < k)
        new = "was" if accepted < k else "!"
        assert texts.count(new) == 1 and texts.count("!" if accepted < k else "was") == 0
        assert any(t.startswith(f"+{accepted + 1} token") for t in texts)
        dropped = [p for p in fig.axes[0].patches if p.get_hatch() == "///"]
        assert len(dropped) == k - accepted  # the cache entries past the last accepted guess
        assert ("roll back to the last accepted position" in texts_of(fig)) == (accepted < k)
    finally:
        plt.close(fig)
    with pytest.raises(ValueError, match="accepted"):
        diagrams.speculative_decoding(proposed, accepted=5)


def test_prefill_vs_decode_counts_flops_per_weight_read() -> None:
    fig = _draw("prefill_vs_decode", prompt_len=8)
    texts = [t.get_text() for t in drawn_texts(fig)]
    plt.close(fig)
    assert sum(t.startswith("= 16 FLOPs per weight read") for t in texts) == 1  # 2 T for the prefill
    assert sum(t.startswith("= 2 FLOPs per weight read") for t in texts) == 1  # 2 for one decoded token
    assert texts.count("prompt 8") == 1 and "prompt 9" not in texts
    assert texts.count("compute-bound") == 1 and texts.count("memory-bound") == 1
    with pytest.raises(ValueError, match="prompt_len"):
        diagrams.prefill_vs_decode(prompt_len=1)
