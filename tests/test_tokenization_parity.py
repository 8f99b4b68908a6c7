"""The pure-Python tokenizer against the fast one and against the ``tokenizers`` library itself.

Identical ids, offsets, masks, word/sequence ids and overflow windows on real data (every SST-2 dev sentence,
uncased and cased vocabularies), on hand-written hard cases and under hypothesis over random Unicode.
"""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from distilbert_mf.tokenization import DistilBertTokenizer, DistilBertTokenizerFast
from distilbert_mf.tokenization import _unicode_tables as tables

HUB = "distilbert-base-uncased-tokenizer"

# (name, DistilBertTokenizer/-Fast keyword arguments; "cased" selects the cased vocabulary)
MODES = {
    "uncased": {},
    "cased": {"cased": True, "do_lower_case": False},
    "cased_nfc": {"cased": True, "do_lower_case": False, "nfc": True},
    "uncased_keep_accents": {"strip_accents": False},
    "cased_strip_accents": {"cased": True, "do_lower_case": False, "strip_accents": True},
    "uncased_no_chinese_nfc": {"tokenize_chinese_chars": False, "nfc": True},
}

HARD_CASES = [
    "",
    " ",
    "   \t\n\r  ",
    "\u3000\u2028\u00a0",
    "Hello, world!",
    "UNwant\u00e9d,running",
    "caf\u00e9 cafe\u0301 CAFE\u0301 na\u00efve r\u00e9sum\u00e9 \u00c5ngstr\u00f6m \u212bngstr\u00f6m",
    "e\u0301\u0302\u0323 o\u0308\u0304 s\u0323\u0307 \u1e69 \u0131 \u0130stanbul \u00df \u1e9e SS",
    "\u4e2d\u6587\u5b57\u7b26ab\u535a\u63a8zz \u8c48\uf900 \U00020000x \u3042\u304b\u3099",
    "\U0001f600\U0001f44d\U0001f3fd family:\U0001f468\u200d\U0001f469\u200d\U0001f467 flags \U0001f1eb\U0001f1f7",
    "zero\u200bwidth\u200cnon\u200djoiner\ufeffbom soft\u00adhyphen",
    "ctrl\x00\x01\x07\x1b\x7f\x85 bell \ufffd replacement \ue000 private",
    "a\u0300\u0317\u0301b \U0001d165\U0001d16d\U0001d165 \u0f71\u0f72\u0f80",
    "\u1100\u1161\u11a8 \uac00\u11a8 \u1112\u1161\u11ab\u1100\u1173\u11af",
    "x" * 101,
    "supercalifragilisticexpialidocious" * 4,
    "a" * 100 + " " + "b" * 100,
    "\u0645\u0631\u062d\u0628\u0627 \u05e9\u05dc\u05d5\u05dd \u0928\u092e\u0938\u094d\u0924\u0947 \u0e2a\u0e27\u0e31\u0e2a\u0e14\u0e35",
    "\u039f\u0394\u03a5\u03a3\u03a3\u0395\u03a5\u03a3 \u03a3\u03a3 \u0391\u03a3",
    "[CLS] [SEP][MASK]x[UNK]y[PAD] [mask] [ MASK ]",
    "don't stop, it's 3.14 -- ok?! (yes) [no] {maybe} <html> $5 @user #tag",
    "\u00bfQu\u00e9? \u00a1S\u00ed! \u201cquoted\u201d \u2018single\u2019 \u2014 \u2026 \u00ab\u00bb \u3001\u3002",
    "\u2160\u2161 \u2460 \u00bd \u00b2 \ufb01 \uff21\uff22\uff43 \u2126 \u212a",
    "\u0345\u0399 \u1fb3 \u1f80",
    "tab\tsep\nnew\rline\x0bvt\x0cff",
]

PAIRS = ["", "the second one, with words", "\u00e9\u00e8 \u4e2d", "x" * 120]


def _outputs(tokenizer: Any, *args: Any, **kwargs: Any) -> Any:
    """Everything a call returns (or the exception type), as plain Python values."""
    try:
        encoded = tokenizer(*args, **kwargs)
    except (ValueError, TypeError) as err:
        return type(err).__name__
    rows = range(len(encoded.encodings))
    return (
        {key: value for key, value in encoded.items()},
        [encoded.tokens(i) for i in rows],
        [encoded.word_ids(i) for i in rows],
        [encoded.sequence_ids(i) for i in rows],
    )


@cache
def _pair_for(mode: str, data: str) -> tuple[DistilBertTokenizer, DistilBertTokenizerFast]:
    kwargs = dict(MODES[mode])
    root = Path(data)
    if kwargs.pop("cased", False):
        vocab = root / "vocab" / "bert-base-cased-vocab.txt"
        return DistilBertTokenizer(vocab, **kwargs), DistilBertTokenizerFast(vocab, **kwargs)
    folder = root / HUB
    return DistilBertTokenizer.from_pretrained(folder, **kwargs), DistilBertTokenizerFast.from_pretrained(
        folder, **kwargs
    )


@pytest.fixture(params=sorted(MODES))
def tokenizers_pair(request: pytest.FixtureRequest, shared_data: Path) -> tuple[Any, Any]:
    return _pair_for(request.param, str(shared_data))


def _sst2(shared_data: Path) -> list[str]:
    with open(shared_data / "glue_sst2" / "dev.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    assert rows[0] == ["sentence", "label"]
    return [row[0] for row in rows[1:]]


# -- against the tokenizers library ---------------------------------------------------------------------------


def test_sst2_uncased_matches_hub_tokenizer_json(shared_data: Path) -> None:
    from tokenizers import Tokenizer

    sentences = _sst2(shared_data)
    assert len(sentences) == 872
    reference = Tokenizer.from_file(str(shared_data / HUB / "tokenizer.json")).encode_batch(sentences)
    slow, fast = _pair_for("uncased", str(shared_data))
    for tokenizer in (slow, fast):
        encoded = tokenizer(sentences, return_offsets_mapping=True)
        assert encoded["input_ids"] == [e.ids for e in reference]
        assert encoded["offset_mapping"] == [e.offsets for e in reference]
        assert encoded["attention_mask"] == [e.attention_mask for e in reference]


def test_sst2_cased_matches_bert_wordpiece_tokenizer(shared_data: Path) -> None:
    from tokenizers import BertWordPieceTokenizer

    sentences = _sst2(shared_data)
    # SST-2 is lower-cased; capitalise words so the cased vocabulary sees upper case too
    sentences += [s.title() for s in sentences]
    vocab = shared_data / "vocab" / "bert-base-cased-vocab.txt"
    reference = BertWordPieceTokenizer(str(vocab), lowercase=False).encode_batch(sentences)
    slow, fast = _pair_for("cased", str(shared_data))
    for tokenizer in (slow, fast):
        encoded = tokenizer(sentences, return_offsets_mapping=True)
        assert encoded["input_ids"] == [e.ids for e in reference]
        assert encoded["offset_mapping"] == [e.offsets for e in reference]


def test_hard_cases_match_tokenizers_library(shared_data: Path) -> None:
    from tokenizers import BertWordPieceTokenizer, Tokenizer

    hub = Tokenizer.from_file(str(shared_data / HUB / "tokenizer.json"))
    cased = BertWordPieceTokenizer(str(shared_data / "vocab" / "bert-base-cased-vocab.txt"), lowercase=False)
    for mode, reference in (("uncased", hub), ("cased", cased)):
        slow, _ = _pair_for(mode, str(shared_data))
        expected = reference.encode_batch(HARD_CASES)
        encoded = slow(HARD_CASES, return_offsets_mapping=True)
        assert encoded["input_ids"] == [e.ids for e in expected], mode
        assert encoded["offset_mapping"] == [e.offsets for e in expected], mode
        assert [encoded.word_ids(i) for i in range(len(HARD_CASES))] == [e.word_ids for e in expected], mode


# -- slow == fast ---------------------------------------------------------------------------------------------

CALLS = [
    {},
    {"return_offsets_mapping": True, "return_special_tokens_mask": True, "return_length": True},
    {"padding": True, "return_offsets_mapping": True},
    {"padding": "max_length", "max_length": 24, "truncation": True, "padding_side": "left"},
    {"truncation": True, "max_length": 9, "stride": 3, "return_overflowing_tokens": True, "padding": True},
    {"truncation": "only_first", "max_length": 12, "stride": 2, "return_overflowing_tokens": True},
    {"truncation": "only_second", "max_length": 12, "return_overflowing_tokens": True},
    {"truncation": True, "max_length": 3, "return_overflowing_tokens": True, "return_offsets_mapping": True},
    {"add_special_tokens": False, "truncation": True, "max_length": 5, "stride": 1, "return_overflowing_tokens": True},
    {"padding": "longest", "pad_to_multiple_of": 8},
]


@pytest.mark.parametrize("call", CALLS, ids=range(len(CALLS)))
def test_hard_cases_slow_equals_fast(tokenizers_pair: tuple[Any, Any], call: dict[str, Any]) -> None:
    slow, fast = tokenizers_pair
    assert _outputs(slow, HARD_CASES, **call) == _outputs(fast, HARD_CASES, **call)
    for pair in PAIRS:
        batch_pairs = [pair] * len(HARD_CASES)
        assert _outputs(slow, HARD_CASES, batch_pairs, **call) == _outputs(fast, HARD_CASES, batch_pairs, **call)


def test_hard_cases_split_into_words(tokenizers_pair: tuple[Any, Any]) -> None:
    slow, fast = tokenizers_pair
    words = [case.split(" ") for case in HARD_CASES]
    for call in CALLS[:5]:
        assert _outputs(slow, words, is_split_into_words=True, **call) == _outputs(
            fast, words, is_split_into_words=True, **call
        )
    assert _outputs(slow, words[5], words[7], is_split_into_words=True, return_offsets_mapping=True) == _outputs(
        fast, words[5], words[7], is_split_into_words=True, return_offsets_mapping=True
    )


def test_truncation_side_left_slow_equals_fast(shared_data: Path) -> None:
    folder = shared_data / HUB
    slow = DistilBertTokenizer.from_pretrained(folder, truncation_side="left")
    fast = DistilBertTokenizerFast.from_pretrained(folder, truncation_side="left")
    for call in CALLS[3:9]:
        assert _outputs(slow, HARD_CASES, [PAIRS[1]] * len(HARD_CASES), **call) == _outputs(
            fast, HARD_CASES, [PAIRS[1]] * len(HARD_CASES), **call
        )


# random Unicode (any code point but surrogates), and a mix rich in combining marks, decompositions and Hangul
_MARKS = [chr(cp) for cp in list(tables.COMBINING_CLASS)[::7]]
_DECOMPOSABLE = [chr(entry[0]) for entry in tables.DECOMPOSITION[::9]]
_MIXED = st.lists(
    st.one_of(
        st.sampled_from(_MARKS + _DECOMPOSABLE + list("aeoAEs \u1100\u1161\u11a8\uac00\u4e00,.!")),
        st.characters(codec="utf-8"),
    ),
    max_size=30,
).map("".join)
_WORDS = st.lists(
    st.sampled_from(["the", "movie", "unwanted", "running", "Caf\u00e9", "!", ",", "[MASK]", "\u4e2d", "it's", " "]),
    max_size=25,
).map(" ".join)
_TEXT = st.one_of(st.text(max_size=40), _MIXED, _WORDS)
_OPTIONS = st.fixed_dictionaries(
    {
        "truncation": st.sampled_from([None, True, "only_first", "only_second"]),
        "max_length": st.integers(min_value=1, max_value=24),
        "stride": st.integers(min_value=0, max_value=4),
        "padding": st.sampled_from([False, True, "max_length"]),
        "padding_side": st.sampled_from(["left", "right"]),
        "add_special_tokens": st.booleans(),
    }
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(texts=st.lists(_TEXT, min_size=1, max_size=3), mode=st.sampled_from(sorted(MODES)), options=_OPTIONS)
def test_random_unicode_slow_equals_fast(shared_data: Path, texts: list[str], mode: str, options: dict) -> None:
    slow, fast = _pair_for(mode, str(shared_data))
    call = {"return_offsets_mapping": True, "return_special_tokens_mask": True, "return_overflowing_tokens": True}
    if options["truncation"] is None:
        options = {**options, "max_length": None if options["padding"] != "max_length" else options["max_length"]}
    assert _outputs(slow, texts, **call, **options) == _outputs(fast, texts, **call, **options)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    pairs=st.lists(st.tuples(_TEXT, _TEXT), min_size=1, max_size=3),
    mode=st.sampled_from(sorted(MODES)),
    options=_OPTIONS,
)
def test_random_unicode_pairs_slow_equals_fast(shared_data: Path, pairs: list, mode: str, options: dict) -> None:
    slow, fast = _pair_for(mode, str(shared_data))
    first, second = [a for a, _ in pairs], [b for _, b in pairs]
    call = {"return_offsets_mapping": True, "return_overflowing_tokens": True}
    assert _outputs(slow, first, second, **call, **options) == _outputs(fast, first, second, **call, **options)
