"""Byte-level BPE, written from scratch: the teaching piece of chapter 02.

The recipe (GPT-2/GPT-4 style):

1. Text -> UTF-8 bytes, so ids 0..255 can spell *any* string (no unknown token).
2. Pre-split the text into chunks with the GPT-4 regex (words with their leading
   space, numbers of up to 3 digits, punctuation runs, whitespace runs). Merges
   never cross a chunk boundary, so " dog" and "." stay separate tokens.
3. Repeatedly find the most frequent adjacent pair of ids (counted inside chunks
   only), give it the next id 256, 257, ... and replace it everywhere.
   **Ties go to the smallest ``(left_id, right_id)``** so training is deterministic.

Ids: 0..255 are the bytes, ``256 + k`` is the k-th merge (``merges[k]``), and the
special token ``<|endoftext|>`` comes after all merges: ``eot_id = 256 + len(merges)``,
so ``vocab_size = 256 + len(merges) + 1``.

Why the trainer looks more complicated than the chapter's version: the naive loop
recounts every pair in the whole corpus for every merge, which takes hours on
10 MB. Here we (a) count each *distinct* chunk once, with its frequency, and
(b) keep ``pair -> count`` and ``pair -> chunks containing it`` up to date,
touching only the chunks a merge actually changes. The most frequent pair comes
from a heap with lazy invalidation. Same merges, orders of magnitude faster
(``tests/test_tokenizers.py`` checks it against a naive reference merge for merge).
"""

from __future__ import annotations

import heapq
import re
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, repeat
from pathlib import Path
from typing import Any

import regex

from ..progress import ProgressBar
from .base import EOT, Tokenizer, iter_texts

#: The GPT-4 (cl100k) pre-tokenization pattern, as in tiktoken / minbpe.
GPT4_SPLIT_PATTERN = (
    r"""'(?i:[sdmt]|ll|ve|re)|[^\r\n\p{L}\p{N}]?+\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]++[\r\n]*|\s*[\r\n]|\s+(?!\S)|\s+"""
)

Pair = tuple[int, int]

# The same pattern spelled for pure-ASCII text with the standard library's `re`, which is
# about 2x faster than `regex` here. For ASCII input \p{L} = [A-Za-z], \p{N} = [0-9] and
# \s = [\t\n\v\f\r ] (Unicode White_Space restricted to ASCII), so both give identical
# chunks (tests/test_tokenizers.py checks it). Needs Python >= 3.11 for `?+` / `++`.
_WS = r"[\t\n\x0b\x0c\r ]"  # \s
_NWS = r"[^\t\n\x0b\x0c\r ]"  # \S
_GPT4_ASCII = (
    rf"""'(?i:[sdmt]|ll|ve|re)|[^\r\nA-Za-z0-9]?+[A-Za-z]+|[0-9]{{1,3}}| ?[^\t\n\x0b\x0c\r A-Za-z0-9]++[\r\n]*"""
    rf"""|{_WS}*[\r\n]|{_WS}+(?!{_NWS})|{_WS}+"""
)
try:
    _ASCII_PAT: re.Pattern[str] | None = re.compile(_GPT4_ASCII)
except re.error:  # Python 3.10: no possessive quantifiers; always use `regex`
    _ASCII_PAT = None


def splitter(pattern: str = GPT4_SPLIT_PATTERN) -> Callable[[str], list[str]]:
    """``findall`` for ``pattern``, taking the fast standard-library path for ASCII text."""
    slow = regex.compile(pattern).findall
    if pattern != GPT4_SPLIT_PATTERN or _ASCII_PAT is None:
        return slow
    fast = _ASCII_PAT.findall

    def findall(text: str) -> list[str]:
        return fast(text) if text.isascii() else slow(text)

    return findall


def merge_pair(ids: list[int], a: int, b: int, new_id: int) -> list[int]:
    """``ids`` with every non-overlapping ``(a, b)`` replaced by ``new_id``, left to right."""
    if a not in ids:  # C-level scan: most chunks a merge visits are short and many lack the pair
        return ids
    out: list[int] = []
    j, n = 0, len(ids)
    while j < n:
        if ids[j] == a and j + 1 < n and ids[j + 1] == b:
            out.append(new_id)
            j += 2
        else:
            out.append(ids[j])
            j += 1
    return out


def count_chunks(texts: Iterable[str], pattern: str = GPT4_SPLIT_PATTERN) -> Counter[str]:
    """Distinct pre-split chunks of ``texts`` with how often each occurs.

    This is the only pass over the raw text during training; everything after
    works on the (far fewer) distinct chunks.
    """
    findall = splitter(pattern)
    counts: Counter[str] = Counter()
    for text in iter_texts(texts):
        counts.update(findall(text))
    return counts


def learn_merges(chunk_counts: dict[str, int] | Counter[str], num_merges: int,
                 on_merge: Callable[[int, Pair], Any] | None = None) -> list[Pair]:
    """The fast trainer: ``num_merges`` BPE merges from ``{chunk: frequency}``.

    Returns the merges in order; merge k created id ``256 + k``. May return fewer
    if the chunks run out of pairs (every chunk is a single token).
    ``on_merge(k, pair)``, if given, is called after merge k (e.g. to show progress).
    """
    words, freqs = _multi_byte_chunks(chunk_counts)
    counts, where = _index_pairs(words, freqs)

    # Max-heap via negated counts; the tuple order gives the tie-break to the smallest pair.
    # Lazy invalidation: an entry may be stale (its pair's count only ever *decreases*
    # after it was pushed); on pop we re-push it with the current count. Pairs whose
    # count *increases* (only pairs containing the new id) are pushed after each merge.
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    heappop, heappush = heapq.heappop, heapq.heappush

    merges: list[Pair] = []
    while len(merges) < num_merges and heap:
        negc, pair = heappop(heap)
        c = counts.get(pair, 0)
        if c != -negc:
            if c > 0:
                heappush(heap, (-c, pair))
            continue
        merges.append(pair)
        touched = _merge_everywhere(pair, 256 + len(merges) - 1, words, freqs, counts, where)
        del counts[pair]  # every occurrence was merged, and (a, b) can never reappear
        for p in touched:
            heappush(heap, (-counts[p], p))
        if on_merge is not None:
            on_merge(len(merges) - 1, pair)
    return merges


def _multi_byte_chunks(chunk_counts: dict[str, int] | Counter[str]) -> tuple[list[list[int]], list[int]]:
    """The distinct chunks as mutable lists of byte ids, with their frequencies; single-byte chunks have no pairs."""
    words: list[list[int]] = []
    freqs: list[int] = []
    for chunk, f in chunk_counts.items():
        b = chunk.encode("utf-8")
        if len(b) > 1:
            words.append(list(b))
            freqs.append(f)
    return words, freqs


def _index_pairs(words: list[list[int]], freqs: list[int]) -> tuple[dict[Pair, int], dict[Pair, set[int]]]:
    """``pair -> total occurrences`` (weighted by chunk frequency) and ``pair -> indices of chunks that hold it``."""
    counts: dict[Pair, int] = {}
    where: dict[Pair, set[int]] = {}
    for i, (w, f) in enumerate(zip(words, freqs)):
        for p in zip(w, w[1:]):
            counts[p] = counts.get(p, 0) + f
            s = where.get(p)
            if s is None:
                where[p] = {i}
            else:
                s.add(i)
    return counts, where


def _merge_everywhere(pair: Pair, new_id: int, words: list[list[int]], freqs: list[int],
                      counts: dict[Pair, int], where: dict[Pair, set[int]]) -> set[Pair]:
    """Replace ``pair`` by ``new_id`` in every chunk that holds it, keeping ``counts`` and ``where`` up to date.

    Only the chunks listed in ``where[pair]`` are touched. Returns the pairs with the
    new id: the only ones whose count grew, which the caller pushes on its heap.
    """
    a, b = pair
    touched: set[Pair] = set()
    for i in where.pop(pair):
        w = words[i]
        new = merge_pair(w, a, b, new_id)
        if len(new) == len(w):  # stale index: this chunk no longer contains the pair
            continue
        f = freqs[i]
        for p in zip(w, w[1:]):  # remove the chunk's old pairs ...
            counts[p] -= f
        for p in zip(new, new[1:]):  # ... and add its new ones
            counts[p] = counts.get(p, 0) + f
            if p[0] == new_id or p[1] == new_id:
                touched.add(p)
                s = where.get(p)
                if s is None:
                    where[p] = {i}
                else:
                    s.add(i)
        words[i] = new
    return touched


def _count_summary(n_chars: int, chunks: Counter[str], seconds: float) -> str:
    return (f"{n_chars / 1e6:.2f} M characters -> {sum(chunks.values()):,} chunks "
            f"({len(chunks):,} distinct) in {seconds:.1f} s")


_NO_MERGE = 1 << 62  # "rank" of a pair that is not a merge: larger than any real id


class _ChunkCache(dict):
    """chunk -> ids; a missing chunk is encoded on first use (``__missing__`` runs inside dict lookup)."""

    def __init__(self, encode_chunk: Callable[[str], list[int]]) -> None:
        super().__init__()
        self._encode_chunk = encode_chunk

    def __missing__(self, chunk: str) -> list[int]:
        ids = self[chunk] = self._encode_chunk(chunk)
        return ids


class BPETokenizer(Tokenizer):
    """Byte-level BPE with the GPT-4 split pattern (see the module docstring for ids).

    ``merges[k] = (left_id, right_id)`` created id ``256 + k``.
    """

    type_name = "bpe"

    def __init__(self, merges: Sequence[Sequence[int]], pattern: str = GPT4_SPLIT_PATTERN) -> None:
        self.merges: list[Pair] = [(int(a), int(b)) for a, b in merges]
        self.pattern = pattern
        self._findall = splitter(pattern)
        vocab = [bytes([i]) for i in range(256)]
        for k, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + k and 0 <= b < 256 + k):
                raise ValueError(f"merge {k} {(a, b)} uses an id that does not exist yet (ids must be < {256 + k})")
            vocab.append(vocab[a] + vocab[b])
        self._vocab = vocab
        self.ranks: dict[Pair, int] = {p: 256 + k for k, p in enumerate(self.merges)}
        self.eot_id = 256 + len(self.merges)
        self.vocab_size = self.eot_id + 1
        self._never = repeat(_NO_MERGE)
        self._cache = _ChunkCache(self._encode_chunk)

    # -- training ------------------------------------------------------------------------
    @classmethod
    def train(
        cls,
        texts: Iterable[str],
        vocab_size: int = 1024,
        *,
        pattern: str = GPT4_SPLIT_PATTERN,
        verbose: bool = False,
        progress: bool = False,
    ) -> BPETokenizer:
        """Learn ``vocab_size - 257`` merges from ``texts`` (any iterable of strings).

        ``vocab_size`` counts the 256 bytes, the merges and ``<|endoftext|>``.
        Occurrences of ``<|endoftext|>`` in the training text are treated as boundaries.
        ``verbose`` prints one summary line at the end. ``progress`` shows a progress
        bar instead (characters read, then the merges with the token each made; see
        ``progress.ProgressBar``) that ends as that summary line: worth it when the
        text streams from the network.
        """
        if not isinstance(vocab_size, int) or vocab_size < 257:
            raise ValueError(
                f"vocab_size ({vocab_size}) must be at least 257 for byte-level BPE: 256 byte tokens + "
                "<|endoftext|> (+ one per merge); e.g. vocab_size=1024 learns 767 merges"
            )
        bar = ProgressBar(desc="BPETokenizer: reading text", unit=" characters", unit_scale=True) if progress else None
        n_chars = 0
        t0 = time.perf_counter()

        def pieces() -> Iterable[str]:
            nonlocal n_chars
            for t in iter_texts(texts):
                n_chars += len(t)
                if bar is not None:
                    bar.update(len(t))
                yield from t.split(EOT)

        chunks = count_chunks(pieces(), pattern)
        if not chunks:
            raise ValueError("cannot train BPE on empty data: the texts contained no characters")
        t1 = time.perf_counter()
        counted = _count_summary(n_chars, chunks, t1 - t0)
        num_merges = vocab_size - 257
        vocab = [bytes([i]) for i in range(256)]

        def on_merge(k: int, pair: Pair) -> None:  # the progress bar shows each merge and the token it made
            vocab.append(vocab[pair[0]] + vocab[pair[1]])
            bar.set_postfix({"token": repr(vocab[-1].decode("utf-8", "replace"))}, refresh=False)
            bar.update(1)

        if bar is not None:
            bar.reset(num_merges, desc="BPETokenizer: merges", unit=" merges")
        merges = learn_merges(chunks, num_merges, on_merge if bar is not None else None)
        if len(merges) < num_merges:
            warnings.warn(
                f"the training text only supports {len(merges)} merges (asked for {num_merges}): "
                f"vocab_size is {256 + len(merges) + 1}, not {vocab_size}; train on more text",
                stacklevel=2,
            )
        tok = cls(merges, pattern)
        summary = f"BPETokenizer: {counted}, {len(merges)} merges in {time.perf_counter() - t1:.1f} s"
        if bar is not None:
            bar.close(summary)  # the bar gives way to the summary line
        elif verbose:
            print(summary)
        return tok

    # -- encoding ------------------------------------------------------------------------
    def _encode_chunk(self, chunk: str) -> list[int]:
        """Apply merges to one chunk, lowest rank (earliest merge) first, like training did.

        Merging a pair only creates pairs with the *new* id, whose ranks are all
        higher, so "lowest rank present first" replays the training merges in order.
        """
        ids = list(chunk.encode("utf-8"))
        get, merges, never = self.ranks.get, self.merges, self._never
        while len(ids) > 1:
            r = min(map(get, zip(ids, ids[1:]), never))  # C-level scan for the earliest merge present
            if r == _NO_MERGE:
                break
            a, b = merges[r - 256]
            ids = merge_pair(ids, a, b, r)
        return ids

    def _encode_ordinary(self, text: str) -> list[int]:
        """Pre-split, then look each chunk up in a cache (text repeats its words a lot)."""
        cache = self._cache
        if len(cache) > 500_000:  # bound memory on huge, varied inputs
            cache.clear()
        return list(chain.from_iterable(map(cache.__getitem__, self._findall(text))))

    def _decode_ordinary(self, ids: Sequence[int]) -> str:
        vocab = self._vocab
        return b"".join([vocab[i] for i in ids]).decode("utf-8", errors="replace")

    def token_bytes(self, i: int) -> bytes:
        """The bytes token ``i`` stands for (``b"<|endoftext|>"`` for the EOT id)."""
        if i == self.eot_id:
            return b"<|endoftext|>"
        return self._vocab[i]

    def __reduce__(self):  # picklable (e.g. for DataLoader workers): rebuild from merges, cache not copied
        return (type(self), (self.merges, self.pattern))

    # -- persistence ---------------------------------------------------------------------
    def _to_config(self, directory: Path) -> dict[str, Any]:
        return {"pattern": self.pattern, "merges": [list(p) for p in self.merges]}

    @classmethod
    def _from_config(cls, config: dict[str, Any], directory: Path) -> BPETokenizer:
        return cls(config["merges"], config.get("pattern", GPT4_SPLIT_PATTERN))
