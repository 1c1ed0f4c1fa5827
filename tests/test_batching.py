"""Packing the token stream into windows, shuffling within chunks, resuming, sharding by rank."""

from __future__ import annotations

import pytest
import regex
import torch
from bpe_reference import merge
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from minigpt_helpers.data.batching import (
    PackedStream,
    StreamPosition,
    document_tokens,
    encode_text,
    pack_windows,
    train_batches,
    val_windows,
)
from minigpt_helpers.tokenizers.base import CharTokenizer
from minigpt_helpers.tokenizers.bpe import GPT4_SPLIT_PATTERN, BPETokenizer

DOCS = ["hello world", "abc", "the quick brown fox jumps over the lazy dog " * 3, "x", "Zebra crossing!"]
TOK = CharTokenizer.train(["".join(DOCS) + "qwertyuiopasdfghjklzxcvbnm"])


def _stream(docs):
    return [t for d in docs for t in TOK.encode(d) + [TOK.eot_id]]


@settings(max_examples=40, deadline=None)
@given(docs=st.lists(st.text(alphabet="abcdefgh xyz", min_size=0, max_size=40), min_size=1, max_size=8),
       block=st.integers(1, 12))
def test_pack_loses_and_duplicates_nothing(docs, block):
    windows = list(pack_windows(docs, TOK, block))
    stream = _stream(docs)
    assert all(len(w) == block + 1 for w in windows)
    flat = [t for w in windows for t in w]
    # the windows are the stream, in order, cut every block+1 tokens; only a short tail is dropped
    assert flat == stream[: len(flat)]
    assert len(stream) - len(flat) < block + 1


def test_eot_separates_documents():
    flat = [t for w in pack_windows(DOCS, TOK, 7) for t in w]
    text = TOK.decode(flat)
    assert text.startswith("hello world<|endoftext|>abc<|endoftext|>the quick")
    assert flat.count(TOK.eot_id) == text.count("<|endoftext|>") >= 3


def test_literal_eot_text_is_not_a_separator():
    tok = CharTokenizer.train(["ab<|endoftext|> plain"])
    ids = [t for w in pack_windows(["a<|endoftext|>b"], tok, 3) for t in w]
    assert ids.count(tok.eot_id) <= 1  # only the real separator after the document


QUOTED_EOT = 'He said "<|endoftext|>" twice'


def bpe_by_definition(tok: BPETokenizer, text: str) -> list[int]:
    """Byte-level BPE by its definition: the GPT-4 pre-split chunks, each merged on its own, every merge in order."""
    ids: list[int] = []
    for chunk in regex.findall(GPT4_SPLIT_PATTERN, text):
        piece = tuple(chunk.encode("utf-8"))
        for k, pair in enumerate(tok.merges):
            piece = merge(piece, pair, 256 + k)
        ids += piece
    return ids


def test_a_literal_eot_is_encoded_as_ordinary_bpe_text():
    # trained so that ' "<|' (a quote, then the literal's first characters: one pre-split chunk) is one token
    tok = BPETokenizer.train(['He said "<|x|>" twice, she said "<|y|>" once. ' * 40,
                              "the quick brown fox jumps over the lazy dog while seven wizards quietly hex frogs " * 5],
                             vocab_size=320)
    ids = encode_text(tok, QUOTED_EOT)
    assert ids == bpe_by_definition(tok, QUOTED_EOT)
    assert b' "<|' in [tok.token_bytes(i) for i in ids]  # a token spans the literal's edge, as in ordinary text
    assert tok.eot_id not in ids and tok.decode(ids) == QUOTED_EOT
    assert encode_text(tok, "He said twice") == tok.encode("He said twice")  # no literal: plain encode


def test_a_hugging_face_tokenizer_encodes_the_literal_as_ordinary_text(local_hf_tokenizer):
    from minigpt_helpers.tokenizers.hf import HFTokenizer

    tok = HFTokenizer(local_hf_tokenizer)
    ids = encode_text(tok, QUOTED_EOT)
    backend = local_hf_tokenizer.backend_tokenizer  # its pre-split chunks, each through the BPE model alone
    reference = [t.id for piece, _ in backend.pre_tokenizer.pre_tokenize_str(QUOTED_EOT)
                 for t in backend.model.tokenize(piece)]
    assert ids == reference and tok.eot_id not in ids and tok.decode(ids) == QUOTED_EOT


def test_a_tokenizer_with_only_encode_never_gets_the_end_of_text_id():
    text = "abc<|endoftext|>xyz"
    tok = CharTokenizer.train([text])

    class EncodeOnly:  # a user's own tokenizer: no encode_ordinary
        def encode(self, text: str) -> list[int]:
            return tok.encode(text)

    assert encode_text(EncodeOnly(), text) == [tok.stoi[c] for c in text] == encode_text(tok, text)


@pytest.mark.parametrize("chunk", [1, 3, 5, 1000])
def test_one_pass_is_a_permutation_of_the_windows(chunk):
    windows = list(pack_windows(DOCS, TOK, 4))
    ps = PackedStream(lambda epoch: DOCS, TOK, 4, shuffle_windows=chunk, seed=1)
    seen = [next(ps) for _ in range(len(windows))]
    assert sorted(map(tuple, seen)) == sorted(map(tuple, windows))
    assert ps.position().epoch in (0, 1)
    if chunk > 1:  # shuffled, deterministically
        assert seen != windows
        ps2 = PackedStream(lambda epoch: DOCS, TOK, 4, shuffle_windows=chunk, seed=1)
        assert [next(ps2) for _ in range(len(windows))] == seen


@settings(max_examples=60, deadline=None)
@given(docs=st.lists(st.text(alphabet="abcdefgh xyz", min_size=0, max_size=60), min_size=1, max_size=8),
       block=st.integers(1, 9), chunk=st.integers(1, 7), cut=st.integers(0, 40))
def test_chunks_and_resume_over_random_documents(docs, block, chunk, cut):
    """Windows cut across short and long documents and chunk edges: each pass is a permutation
    of pack_windows' windows, and a stream rebuilt from any position continues identically."""
    windows = list(pack_windows(docs, TOK, block))
    assume(windows)
    make = lambda position=None: PackedStream(lambda epoch: docs, TOK, block, shuffle_windows=chunk,  # noqa: E731
                                              seed=2, position=position)
    a = make()
    for _ in range(2):  # two passes
        one_pass = [next(a) for _ in range(len(windows))]
        assert sorted(map(tuple, one_pass)) == sorted(map(tuple, windows))
    a = make()
    for _ in range(cut):
        next(a)
    pos = a.position()
    expected = [next(a) for _ in range(len(windows) + 5)]
    b = make(pos)
    assert [next(b) for _ in range(len(windows) + 5)] == expected


@pytest.mark.parametrize("n_before", [0, 1, 7, 13, 29, 30, 31, 61])
def test_resume_from_position_continues_exactly(n_before):
    make = lambda: PackedStream(lambda epoch: DOCS, TOK, 4, shuffle_windows=5, seed=3)  # noqa: E731
    a = make()
    for _ in range(n_before):
        next(a)
    pos = a.position()
    expected = [next(a) for _ in range(40)]  # crosses chunk and epoch boundaries
    b = PackedStream(lambda epoch: DOCS, TOK, 4, shuffle_windows=5, seed=3,
                     position=StreamPosition.from_dict(pos.to_dict()))
    assert [next(b) for _ in range(40)] == expected


def test_ranks_get_disjoint_rows_of_the_single_process_batch():
    single = train_batches(DOCS, TOK, 4, batch_size=6, shuffle_windows=8, seed=0)
    ranks = [train_batches(DOCS, TOK, 4, batch_size=3, shuffle_windows=8, seed=0, rank=r, world_size=2)
             for r in range(2)]
    for _ in range(5):
        x, y = next(single)
        parts = [next(b) for b in ranks]
        assert x.shape == (6, 4) and y.shape == (6, 4)
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        assert torch.equal(x[:, 1:], y[:, :-1])  # y is x shifted by one token


def test_datasets_iterable_dataset_and_epochs():
    from datasets import IterableDataset

    ds = IterableDataset.from_generator(lambda: ({"text": d, "source": "t"} for d in DOCS))
    batches = train_batches(ds, TOK, 4, batch_size=4, shuffle_windows=4, seed=0)
    n_windows = len(list(pack_windows(DOCS, TOK, 4)))
    for _ in range(3 * n_windows // 4):  # several passes over the data
        next(batches)
    assert batches.position().epoch >= 2


def test_too_little_data_says_so():
    with pytest.raises(ValueError, match="fewer than block_size"):
        PackedStream(lambda epoch: ["ab"], TOK, 16)


def test_val_windows():
    v = val_windows(DOCS, TOK, 4, max_windows=3)
    assert v.shape == (3, 5)
    assert v.flatten().tolist() == _stream(DOCS)[:15]
    assert val_windows(["ab"], TOK, 16, 10) is None


def test_pieces_of_one_document_get_one_end_of_text():
    # a long .txt file arrives in pieces marked "continues": one document, one EOT at its end
    tok = CharTokenizer.train(["abcdef"])
    rows = [{"text": "ab", "source": "a.txt", "continues": False}, {"text": "cd", "source": "a.txt", "continues": True},
            {"text": "ef", "source": "a.txt", "continues": True}, {"text": "ab", "source": "b.txt", "continues": False},
            "cd"]
    got = list(document_tokens(rows, tok))
    eot = tok.eot_id
    assert [i for i, _ in got] == [0, 1, 2, 3, 4]
    assert [ids[-1] == eot for _, ids in got] == [False, False, True, True, True]
    assert sum((ids for _, ids in got), []) == tok.encode("abcdef") + [eot] + tok.encode("ab") + [eot] + \
        tok.encode("cd") + [eot]
    assert list(document_tokens(rows, tok, start_doc=1))[0] == (1, tok.encode("cd"))  # resume mid-document
    # shuffled: a piece after a piece of *another* file starts a new document
    mixed = [{"text": "ab", "source": "a.txt", "continues": True}, {"text": "cd", "source": "b.txt", "continues": True}]
    assert [ids[-1] == eot for _, ids in document_tokens(mixed, tok)] == [True, True]
