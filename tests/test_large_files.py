"""Training on a text file of hundreds of MB keeps memory flat. Marked ``large``: run by ``make bench``.

The file is generated in a temporary folder with the benchmark's generator
(``benchmarks/bench_data.py``), and a few steps of ``train()`` run in a fresh
process on it and on a 5 MB file: the peak RSS (of the training process or of
its data worker, whichever is larger) must stay within 1.5x.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))

LARGE_MB = 300


@pytest.mark.large
@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux (bytes on macOS)")
def test_training_on_a_large_txt_keeps_memory_flat(tmp_path):
    import bench_data

    pool = bench_data._text_pool()
    large, small = tmp_path / "large.txt", tmp_path / "small.txt"
    bench_data._write_txt(large, LARGE_MB * 10**6, pool)
    bench_data._write_txt(small, 5 * 10**6, pool)
    big, little = bench_data._train_peak_rss(large), bench_data._train_peak_rss(small)
    assert big["step"] == little["step"] == 5  # it trained
    assert big["peak_mib"] <= 1.5 * little["peak_mib"], (big, little)
    # whole, the text alone would take the file's size again as a str: train() grows far less than that
    grew_mib = (big["self_kib"] - big["before_kib"]) / 1024
    assert grew_mib < LARGE_MB / 4, big
