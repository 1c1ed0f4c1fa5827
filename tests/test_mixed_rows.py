"""RedPajama's mixed rows resume by seeking each file to a byte offset, not by reading what came before."""

from __future__ import annotations

import io
import json
import random
import shutil
from itertools import islice

import pytest
import torch

import minigpt_helpers.data.mixed_rows as mixed_rows
from minigpt_helpers import GPT, GPTConfig, TrainConfig, find_checkpoint, set_seed, train
from minigpt_helpers.data import sources as data
from minigpt_helpers.tokenizers.base import CharTokenizer

# books and papers far longer than web pages, so the mix takes them at very different rates
DOC_BYTES = {"book": 3_000, "arxiv": 1_200, "github": 400, "wikipedia": 300, "stackexchange": 250, "c4": 100}


@pytest.fixture
def imitation(tmp_path, monkeypatch):
    """The 11 RedPajama files, ~40 documents each; some subsets run out early (their share is larger)."""
    rng = random.Random(1)
    words = "the of and to in is was for on that with as by at é naïve data".split()
    for name, fname in data.REDPAJAMA_FILES.items():
        lines = []
        for j in range(40):
            n = int(DOC_BYTES.get(name, 150) * rng.uniform(0.7, 1.3)) // 5
            text = f"{name} {j}: " + " ".join(rng.choice(words) for _ in range(n))
            lines.append(json.dumps({"text": text, "meta": {"i": j}}, ensure_ascii=False))
        (tmp_path / fname).write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setenv("MINIGPT_REDPAJAMA_BASE", str(tmp_path))
    return tmp_path


def test_the_rows_are_those_of_the_redpajama_stream(imitation):
    rows = list(data.redpajama_rows("train", base=str(imitation)))
    stream = list(data.redpajama("train", base=str(imitation)))
    assert [(r["text"], r["source"]) for r in rows] == [(r["text"], r["source"]) for r in stream]
    assert rows[0]["cursor"] is None and rows[5]["cursor"]["row"] == 5
    json.dumps(rows[-1]["cursor"])  # plain JSON: it goes into trainer.json


def test_iter_from_a_cursor_continues_exactly_reading_only_what_follows(imitation, monkeypatch):
    rows = list(data.redpajama_rows("train", base=str(imitation)))
    total = sum(p.stat().st_size for p in imitation.glob("*.jsonl"))
    read = [0]

    class Counting(io.FileIO):
        def readinto(self, b):
            got = super().readinto(b)
            read[0] += got or 0
            return got

    monkeypatch.setattr(mixed_rows, "_open", lambda url: io.BufferedReader(Counting(url, "r")))
    for n in (1, len(rows) // 2, int(0.9 * len(rows)), len(rows) - 1):
        read[0] = 0
        again = data.redpajama_rows("train", base=str(imitation)).iter_from(n, rows[n]["cursor"])
        assert [r["text"] for r in again] == [r["text"] for r in rows[n:]]
        if n >= 0.9 * len(rows):  # near the end only the tail of each file is read (plus one buffer each)
            assert read[0] < 0.25 * total + 11 * io.DEFAULT_BUFFER_SIZE, (n, read[0], total)
    # without a cursor (an older checkpoint) it reads and skips
    assert [r["text"] for r in data.redpajama_rows("train", base=str(imitation)).iter_from(7)] == \
        [r["text"] for r in rows[7:]]
    with pytest.raises(ValueError, match="cursor is for row 5"):
        next(data.redpajama_rows("train", base=str(imitation)).iter_from(6, rows[5]["cursor"]))


@pytest.mark.slow
def test_training_on_redpajama_resumes_exactly_from_the_saved_cursor(imitation, tmp_path, monkeypatch):
    monkeypatch.setattr(data, "hub_reachable", lambda *a, **k: (False, "offline in this test"))
    texts = [r["text"] for r in data.redpajama_rows("train", base=str(imitation))]
    tok = CharTokenizer.train(texts, unk=True)

    def run(steps, **kw):
        set_seed(0)
        model = GPT(GPTConfig(vocab_size=tok.vocab_size, block_size=16, n_layer=1, n_head=2, n_embd=32))
        model.tokenizer = tok
        cfg = TrainConfig(batch_size=4, max_steps=steps, warmup_steps=2, eval_interval=100, eval_windows=4,
                          shuffle_windows=16, device="cpu", **kw)
        return model, cfg

    model, cfg = run(40)
    straight = train(model, "redpajama", cfg, live="off")
    out = tmp_path / "run"
    m1, cfg1 = run(40)
    first = train(m1, "redpajama", cfg1, out_dir=out, live="off", callback=lambda info: info["step"] == 25)
    saved = json.loads((find_checkpoint(out) / "trainer.json").read_text(encoding="utf-8"))["position"]
    assert first.step == 25 and saved["doc"] > 0 and saved["cursor"]["row"] == saved["doc"]
    shutil.copytree(out, tmp_path / "run2")  # for a second resume, with workers

    opened = []
    real = mixed_rows._open
    monkeypatch.setattr(mixed_rows, "_open", lambda url: opened.append(url) or real(url))
    seeks = []
    real_iter_from = mixed_rows.MixedRows.iter_from
    monkeypatch.setattr(mixed_rows.MixedRows, "iter_from",
                        lambda self, n, cursor=None: (self.split == "train" and seeks.append((n, cursor is not None)))
                        or real_iter_from(self, n, cursor))
    m2, cfg2 = run(40, data_workers=0)  # in this process, so that the seek is seen
    resumed = train(m2, "redpajama", cfg2, out_dir=out, resume=True, live="off")
    assert seeks[0] == (saved["doc"], True)  # started at the saved row, by its cursor
    assert resumed.history.losses == straight.history.losses
    for a, b in zip(model.state_dict().values(), m2.state_dict().values()):
        assert torch.equal(a, b)
    assert opened  # it did read the files (through the seekable reader)
    m3, cfg3 = run(40, data_workers=2)  # the cursor reaches tokenizing workers too
    again = train(m3, "redpajama", cfg3, out_dir=tmp_path / "run2", resume=True, live="off")
    assert again.history.losses == straight.history.losses


def test_a_bad_line_names_the_file_and_the_fix(imitation):
    with open(imitation / data.REDPAJAMA_FILES["c4"], "a", encoding="utf-8") as f:
        f.write('{"no_text": 1}\n')
    with pytest.raises(ValueError, match=r"c4_sample.jsonl, byte \d+: not a JSON object with a \"text\""):
        list(islice(data.redpajama_rows("train", base=str(imitation)), 10**6))
