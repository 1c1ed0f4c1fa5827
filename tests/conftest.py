"""Test-session setup and the fixtures that several test modules share.

Chapters hand tokenizers and checkpoints to each other through ``artifacts/``.
Tests must not leave a half-trained model there for a notebook to pick up, so the
whole session (and every subprocess it starts) writes to a temporary folder.

Test modules never import each other (tests/test_structure.py checks it): what two
of them need lives here as a fixture, or in a builder module that is not a test module
(tests/tiny_chat.py, tests/bpe_reference.py). The markers ``slow`` and ``large`` are
registered in pyproject.toml.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["MINIGPT_ARTIFACTS"] = tempfile.mkdtemp(prefix="minigpt-test-artifacts-")

# What the local Hugging Face tokenizer is trained on: a few sentences give it its 300 ids.
HF_TOKENIZER_TEXTS = ["The research shows that small models learn quickly.", "Hello world, the research goes on.",
                      "To be, or not to be, that is the question. Ünïcödé und Straße!"]


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a whole module: tiny models are dominated by per-op overhead, which extra threads
    fighting over a shared CPU only add to. Modules opt in with ``pytestmark = pytest.mark.usefixtures(...)``."""
    import torch

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def local_hf_tokenizer():
    """A small byte-level BPE (300 ids, ``<|endoftext|>`` = 0) trained here with ``tokenizers``, as a
    transformers ``PreTrainedTokenizerFast``: what an open-weight model's folder holds, without the Hub."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    from minigpt_helpers.tokenizers.base import EOT

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=[EOT], show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator(HF_TOKENIZER_TEXTS * 5, trainer)
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token=EOT, bos_token=EOT)


@pytest.fixture(scope="session")
def trained_chat(tmp_path_factory) -> tuple:
    """(the SFT result, its output folder): the tiny chat model of tests/tiny_chat.py, trained once per session
    for test_chat.py and test_chat_cli.py."""
    from tiny_chat import tiny_chat_model

    out: Path = tmp_path_factory.mktemp("chat") / "sft"
    return tiny_chat_model(out), out


def pytest_collection_modifyitems(config, items) -> None:
    """Tests marked ``large`` run only with ``MINIGPT_LARGE_TESTS=1`` (``make bench`` sets it), so that
    ``make test`` stays within its time budget; their asserts are then checked there."""
    if os.environ.get("MINIGPT_LARGE_TESTS") == "1":
        return
    skip = pytest.mark.skip(reason="large: run by `make bench` (or set MINIGPT_LARGE_TESTS=1)")
    for item in items:
        if "large" in item.keywords:
            item.add_marker(skip)
