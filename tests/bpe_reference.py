"""A slow, obviously correct byte-level BPE trainer: the reference the fast one must match.

Every merge recounts every pair from scratch (over the distinct pre-split
chunks, weighted by how often each occurs) and picks the most frequent pair,
ties going to the smallest ``(left_id, right_id)``. No incremental bookkeeping,
nothing clever: if the fast trainer disagrees with this, the fast one is wrong.
"""

from __future__ import annotations

from collections import Counter

import regex

from minigpt_helpers.tokenizers.bpe import GPT4_SPLIT_PATTERN


def get_stats(chunks: dict[tuple[int, ...], int]) -> dict[tuple[int, int], int]:
    stats: dict[tuple[int, int], int] = {}
    for ids, freq in chunks.items():
        for pair in zip(ids, ids[1:]):
            stats[pair] = stats.get(pair, 0) + freq
    return stats


def merge(ids: tuple[int, ...], pair: tuple[int, int], new_id: int) -> tuple[int, ...]:
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return tuple(out)


def reference_merges(texts: list[str], num_merges: int) -> list[tuple[int, int]]:
    counts = Counter(c for t in texts for c in regex.findall(GPT4_SPLIT_PATTERN, t))
    chunks: dict[tuple[int, ...], int] = Counter()
    for c, f in counts.items():
        chunks[tuple(c.encode("utf-8"))] += f
    merges = []
    for k in range(num_merges):
        stats = get_stats(chunks)
        if not stats:
            break
        best = max(stats.values())
        pair = min(p for p, c in stats.items() if c == best)  # tie -> smallest pair
        merges.append(pair)
        new_chunks: dict[tuple[int, ...], int] = Counter()
        for ids, f in chunks.items():
            new_chunks[merge(ids, pair, 256 + k) if pair[0] in ids else ids] += f
        chunks = new_chunks
    return merges
