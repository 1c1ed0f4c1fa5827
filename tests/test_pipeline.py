"""The background batch pipeline: same batches as in-process, exact positions, workers that stop."""

from __future__ import annotations

import multiprocessing
import os
import signal

import pytest
import torch

from minigpt_helpers import GPT, GPTConfig, TrainConfig, set_seed, train
from minigpt_helpers.data.batching import train_batches
from minigpt_helpers.data.pipeline import BackgroundBatches
from minigpt_helpers.tokenizers.base import CharTokenizer

DOCS = [f"Scene {i}. " + "To be, or not to be, that is the question. " * (3 + i % 4) for i in range(40)]
TOK = CharTokenizer.train(DOCS)
KW = dict(shuffle_windows=16, seed=3)


def test_same_batches_and_positions_as_in_process():
    plain = train_batches(DOCS, TOK, 16, 4, **KW)
    with BackgroundBatches(DOCS, TOK, 16, 4, **KW) as bg:
        for _ in range(40):  # several chunks and passes over the data
            x0, y0 = next(plain)
            x1, y1 = next(bg)
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
            assert x1.is_contiguous() and y1.is_contiguous() and x1.shape == (4, 16)
            assert bg.position() == plain.position()  # after the batch *consumed*, not produced


def test_resume_from_a_consumed_position_continues_exactly():
    with BackgroundBatches(DOCS, TOK, 16, 4, **KW) as bg:
        seen = [next(bg) for _ in range(7)]  # the worker has produced more than 7 by now (prefetch)
        saved = bg.position()
        rest = [next(bg) for _ in range(10)]
    with BackgroundBatches(DOCS, TOK, 16, 4, position=saved, **KW) as again:
        for x, y in rest:
            x2, y2 = next(again)
            assert torch.equal(x, x2) and torch.equal(y, y2)
    assert len(seen) == 7


def test_ranks_take_disjoint_rows_of_one_global_batch():
    whole = train_batches(DOCS, TOK, 16, 8, **KW)
    with BackgroundBatches(DOCS, TOK, 16, 4, rank=0, world_size=2, **KW) as r0, \
            BackgroundBatches(DOCS, TOK, 16, 4, rank=1, world_size=2, **KW) as r1:
        for _ in range(10):
            x, _ = next(whole)
            assert torch.equal(torch.cat([next(r0)[0], next(r1)[0]]), x)


def test_a_data_error_is_raised_at_the_start_as_itself():
    with pytest.raises(ValueError, match="fewer than block_size"):
        BackgroundBatches(["too short"], TOK, 64, 4)
    assert multiprocessing.active_children() == []


def _model():
    set_seed(0)
    model = GPT(GPTConfig(vocab_size=TOK.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32, bias=False))
    model.tokenizer = TOK
    return model, TrainConfig(batch_size=4, max_steps=40, warmup_steps=2, eval_interval=100, eval_windows=4,
                              shuffle_windows=16, device="cpu")


@pytest.mark.slow
def test_the_worker_ignores_ctrl_c_and_sigterm_and_stops_with_training(tmp_path):
    model, cfg = _model()
    during = []

    def poke(info):
        if info["step"] == 2:  # a terminal's Ctrl-C (Slurm's SIGTERM) reaches every process of the job
            during.extend(multiprocessing.active_children())
            for child in during:
                os.kill(child.pid, signal.SIGINT)
                os.kill(child.pid, signal.SIGTERM)
        if info["step"] == 5:
            os.kill(os.getpid(), signal.SIGINT)  # the training process decides: stop after this step

    r = train(model, DOCS, cfg, out_dir=tmp_path, live="off", callback=poke)
    assert len(during) == 1  # one worker
    assert r.stop_reason == "interrupted" and r.step == 5  # the worker kept serving after its Ctrl-C
    assert multiprocessing.active_children() == []  # and was shut down with training
    assert 0 <= r.data_wait_s <= r.train_time_s


@pytest.mark.parametrize("workers", [1, 2])
def test_the_workers_stop_on_an_error(workers):
    model, cfg = _model()

    def boom(info):
        if info["step"] == 3:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        train(model, DOCS, TrainConfig.from_dict({**cfg.to_dict(), "data_workers": workers}), live="off",
              callback=boom)
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_in_loop_batches_train_identically():
    a, cfg = _model()
    ra = train(a, DOCS, TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6}), live="off")
    b, cfg = _model()
    rb = train(b, DOCS, TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6, "data_workers": 0}), live="off")
    assert ra.history.losses == rb.history.losses


@pytest.mark.parametrize("start", ["fork", "spawn"])
@pytest.mark.slow
def test_a_shuffled_datasets_stream_gives_the_same_batches_in_a_worker(monkeypatch, start):
    # datasets shards and orders a stream differently when it sees a DataLoader worker; and
    # macOS and Windows start workers with "spawn", so the stream must pickle (no lambdas in it)
    import minigpt_helpers.data.pipeline as pipeline
    from minigpt_helpers import stream_documents

    monkeypatch.setattr(pipeline, "_context", lambda: start)
    tok = CharTokenizer.train(DOCS, unk=True)
    docs = stream_documents("shakespeare", shuffle=True, verbose=False)
    plain = train_batches(docs, tok, 16, 4, **KW)
    with BackgroundBatches(stream_documents("shakespeare", shuffle=True, verbose=False), tok, 16, 4, **KW) as bg:
        assert not bg.in_process
        for _ in range(30):
            assert torch.equal(next(bg)[0], next(plain)[0])


# --- several tokenizing workers (TrainConfig(data_workers=n), n >= 2) -----------------------
def _parallel(workers: int):
    import functools

    from minigpt_helpers.data.pipeline import ParallelTokens

    return functools.partial(ParallelTokens, workers=workers)


@pytest.mark.parametrize("workers", [2, 3])
def test_parallel_tokenizers_give_the_same_batches_and_positions(monkeypatch, tmp_path, workers):
    # small groups, so that every worker gets several; .txt pieces ("continues" rows) and plain strings
    import minigpt_helpers.data.pipeline as pipeline
    from minigpt_helpers.data.textfiles import TextFilePieces

    monkeypatch.setattr(pipeline, "GROUP_CHARS", 300)
    (tmp_path / "a.txt").write_text("".join(DOCS[:20]).replace(". ", ".\n\n"), encoding="utf-8")
    (tmp_path / "b.txt").write_text("".join(DOCS[20:]).replace(", ", ",\n"), encoding="utf-8")
    pieces = TextFilePieces([tmp_path / "a.txt", tmp_path / "b.txt"], block_bytes=64)
    assert any(r["continues"] for r in pieces)
    tok = CharTokenizer.train(DOCS + ["\n"])
    for docs in (DOCS, pieces):
        plain = train_batches(docs, tok, 16, 4, **KW)
        par = train_batches(docs, tok, 16, 4, token_source=_parallel(workers), **KW)
        for _ in range(60):  # several chunks and passes
            x0, y0 = next(plain)
            x1, y1 = next(par)
            assert torch.equal(x0, x1) and torch.equal(y0, y1)
            assert par.position() == plain.position()
        saved = par.position()  # a resume mid-pass, with workers, continues exactly
        again = train_batches(docs, tok, 16, 4, token_source=_parallel(workers), position=saved, **KW)
        for _ in range(20):
            assert torch.equal(next(again)[0], next(plain)[0])
        par.close()
        again.close()
    assert multiprocessing.active_children() == []


@pytest.mark.slow
def test_parallel_tokenizers_train_identically_and_stop_with_training(monkeypatch):
    a, cfg = _model()
    ra = train(a, DOCS, TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6, "data_workers": 0}), live="off")
    b, cfg = _model()
    # Which processes tokenized: every DataLoader the pipeline starts, and its workers' pids. (Counting live
    # children from a callback was racy: a worker that has tokenized its share of a pass exits at once, and on
    # a busy machine one of the two can be gone by step 1.)
    started: list[list[int]] = []

    class Spy(torch.utils.data.DataLoader):
        def __iter__(self):
            it = super().__iter__()
            started.append([w.pid for w in getattr(it, "_workers", [])])
            return it

    monkeypatch.setattr(torch.utils.data, "DataLoader", Spy)
    rb = train(b, DOCS, TrainConfig.from_dict({**cfg.to_dict(), "max_steps": 6, "data_workers": 2}), live="off")
    assert ra.history.losses == rb.history.losses
    assert started and all(len(pids) == 2 and os.getpid() not in pids for pids in started)  # two tokenizing processes
    assert multiprocessing.active_children() == []


def test_parallel_tokenizers_raise_a_data_error_as_itself():
    # a row the tokenizer cannot take: the worker's error is raised here, as itself
    with pytest.raises(ValueError, match="not in this CharTokenizer's vocabulary"):
        next(train_batches(DOCS[:3] + ["ünïcode the char tokenizer never saw"] + DOCS[3:], TOK, 16, 4,
                           token_source=_parallel(2), **KW))
    assert multiprocessing.active_children() == []
