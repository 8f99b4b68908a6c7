"""DistilBERT tokenizers: BERT's documented behaviours, the call API, bad input, files, decoding, tensors."""

from __future__ import annotations

import json
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distilbert_mf.tokenization import (
    BatchEncoding,
    DistilBertTokenizer,
    DistilBertTokenizerFast,
    TruncationError,
)

ROOT = Path(__file__).resolve().parents[1]
HUB = "distilbert-base-uncased-tokenizer"
SMALL_VOCAB = [
    "[PAD]",
    "[UNK]",
    "[CLS]",
    "[SEP]",
    "[MASK]",
    "want",
    "##want",
    "##ed",
    "wa",
    "un",
    "runn",
    "##ing",
    ",",
    "low",
    "lowest",
    "hello",
    "!",
    "how",
    "are",
    "you",
    "?",
    "\u535a",
    "\u63a8",
    "ah",
    "zz",
]
CLASSES = [DistilBertTokenizer, DistilBertTokenizerFast]


@pytest.fixture(params=CLASSES, ids=["slow", "fast"])
def cls(request: pytest.FixtureRequest) -> type:
    return request.param


@pytest.fixture
def small(cls: type) -> Any:
    return cls({token: i for i, token in enumerate(SMALL_VOCAB)})


@cache
def _hub(cls: type, folder: str) -> Any:
    return cls.from_pretrained(folder)


@pytest.fixture
def hub(cls: type, shared_data: Path) -> Any:
    """The Hub's distilbert-base-uncased tokenizer (shared: tests must not change it)."""
    return _hub(cls, str(shared_data / HUB))


# -- BERT's documented behaviours (the examples of BERT's and transformers' tokenizer tests) -------------------


def test_wordpiece_example(small: Any) -> None:
    assert small.tokenize("UNwant\u00e9d,running") == ["un", "##want", "##ed", ",", "runn", "##ing"]
    assert small.convert_tokens_to_ids(small.tokenize("UNwant\u00e9d,running")) == [9, 6, 7, 12, 10, 11]
    assert small.tokenize("unwanted running") == ["un", "##want", "##ed", "runn", "##ing"]
    assert small.tokenize("unwantedX running") == ["[UNK]", "runn", "##ing"]
    assert small.tokenize("") == []


def test_basic_tokenization_rules(cls: type) -> None:
    vocab = {t: i for i, t in enumerate(SMALL_VOCAB)}
    lower = cls(vocab)
    assert lower.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["hello", "!", "how", "are", "you", "?"]
    assert lower.tokenize("ah\u535a\u63a8zz") == ["ah", "\u535a", "\u63a8", "zz"]
    assert lower.tokenize("H\u00e9llo") == ["hello"]
    words = {
        "h\u00e4llo": len(vocab),
        "HeLLo": len(vocab) + 1,
        "Are": len(vocab) + 2,
        "yoU": len(vocab) + 3,
        "hallo": len(vocab) + 4,
    }
    keep = cls({**vocab, **words}, strip_accents=False)
    assert keep.tokenize(" \tH\u00e4LLo!how  \n Are yoU?  ") == ["h\u00e4llo", "!", "how", "are", "you", "?"]
    strip = cls({**vocab, **words}, strip_accents=True)
    assert strip.tokenize(" \tH\u00e4LLo!how  \n Are yoU?  ") == ["hallo", "!", "how", "are", "you", "?"]
    cased = cls({**vocab, **words}, do_lower_case=False)
    assert cased.tokenize(" \tHeLLo!how  \n Are yoU?  ") == ["HeLLo", "!", "how", "Are", "yoU", "?"]
    no_chinese = cls(vocab, tokenize_chinese_chars=False)
    assert no_chinese.tokenize("ah\u535a\u63a8zz") == ["[UNK]"]


def test_special_and_never_split_tokens_kept_whole(cls: type) -> None:
    vocab = {t: i for i, t in enumerate([*SMALL_VOCAB, "[X]"])}
    tok = cls(vocab, never_split=["[X]"])
    assert tok.tokenize(" \tHeLLo!how  \n Are yoU? [UNK]") == ["hello", "!", "how", "are", "you", "?", "[UNK]"]
    assert tok.tokenize("hello[MASK]how[X]") == ["hello", "[MASK]", "how", "[X]"]
    assert tok.tokenize("[mask] [x]") == ["[UNK]", "[UNK]", "[UNK]", "[UNK]", "[UNK]", "[UNK]"]  # case-sensitive
    encoded = tok("hello [MASK]", return_special_tokens_mask=True, return_offsets_mapping=True)
    assert encoded["input_ids"] == [2, 15, 4, 3]
    assert encoded["offset_mapping"] == [(0, 0), (0, 5), (6, 12), (0, 0)]
    assert encoded["special_tokens_mask"] == [1, 0, 0, 1]  # only the template's tokens, as tokenizers does
    with pytest.raises(ValueError, match="not in the vocabulary"):
        cls(vocab, never_split=["[Y]"])


def test_long_words_become_unknown(small: Any) -> None:
    word = "un" + "want" * 24 + "ed"  # exactly 100 chars: still split
    assert small.tokenize(word) == ["un", *["##want"] * 24, "##ed"]
    assert small.tokenize(word + "ed") == ["[UNK]"]
    encoded = small("hello " + "u" * 150, return_offsets_mapping=True)
    assert encoded["offset_mapping"][2] == (6, 156)


def test_offsets_with_special_characters(cls: type, shared_data: Path) -> None:
    text = "A, na\u00efve [MASK] AllenNLP sentence."
    cased = cls(shared_data / "vocab" / "bert-base-cased-vocab.txt", do_lower_case=False)
    encoded = cased(text, return_offsets_mapping=True)
    assert list(zip(encoded["offset_mapping"], encoded.tokens())) == [
        ((0, 0), "[CLS]"),
        ((0, 1), "A"),
        ((1, 2), ","),
        ((3, 5), "na"),
        ((5, 6), "##\u00ef"),
        ((6, 8), "##ve"),
        ((9, 15), "[MASK]"),
        ((16, 21), "Allen"),
        ((21, 23), "##NL"),
        ((23, 24), "##P"),
        ((25, 33), "sentence"),
        ((33, 34), "."),
        ((0, 0), "[SEP]"),
    ]
    uncased = cls(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    encoded = uncased(text, return_offsets_mapping=True)
    assert list(zip(encoded["offset_mapping"], encoded.tokens())) == [
        ((0, 0), "[CLS]"),
        ((0, 1), "a"),
        ((1, 2), ","),
        ((3, 8), "naive"),
        ((9, 15), "[MASK]"),
        ((16, 21), "allen"),
        ((21, 23), "##nl"),
        ((23, 24), "##p"),
        ((25, 33), "sentence"),
        ((33, 34), "."),
        ((0, 0), "[SEP]"),
    ]


def test_offsets_point_into_the_original_text(hub: Any) -> None:
    text = "Cafe\u0301 \u00c5ngstr\u00f6m\u200b \u4e2d\u6587 \u0130stanbul\x00!"
    encoded = hub(text, return_offsets_mapping=True, add_special_tokens=False)
    pieces = [text[start:end] for start, end in encoded["offset_mapping"]]
    assert pieces[0] == "Cafe"  # the combining accent is stripped, so the token ends before it
    assert "\u4e2d" in pieces and "\u6587" in pieces
    assert pieces[-1] == "!"
    assert all(0 <= s <= e <= len(text) for s, e in encoded["offset_mapping"])


def test_nfc_composes_before_lookup(cls: type, shared_data: Path) -> None:
    vocab = shared_data / "vocab" / "bert-base-cased-vocab.txt"
    plain, nfc = cls(vocab, do_lower_case=False), cls(vocab, do_lower_case=False, nfc=True)
    decomposed = "Cafe\u0301"
    assert nfc(decomposed)["input_ids"] == nfc("Caf\u00e9")["input_ids"] == plain("Caf\u00e9")["input_ids"]
    assert plain(decomposed)["input_ids"] != plain("Caf\u00e9")["input_ids"]  # tokenizers' default: no NFC
    assert nfc(decomposed, return_offsets_mapping=True)["offset_mapping"][1:-1] == [(0, 4)]


# -- call API -------------------------------------------------------------------------------------------------


def test_single_pair_and_batch_shapes(hub: Any) -> None:
    single = hub("Hello world!")
    assert single["input_ids"] == [101, 7592, 2088, 999, 102]
    assert single["attention_mask"] == [1] * 5
    assert "token_type_ids" not in single
    pair = hub("Hello", "world")
    assert pair["input_ids"] == [101, 7592, 102, 2088, 102]
    assert pair.sequence_ids() == [None, 0, None, 1, None]
    batch = hub(["a b", "c"], padding=True)
    assert batch["input_ids"] == [[101, 1037, 1038, 102], [101, 1039, 102, 0]]
    assert batch["attention_mask"] == [[1, 1, 1, 1], [1, 1, 1, 0]]
    assert isinstance(batch, BatchEncoding) and batch.input_ids == batch["input_ids"]
    assert hub("") == {"input_ids": [101, 102], "attention_mask": [1, 1]}
    assert hub.encode("Hello world!") == [101, 7592, 2088, 999, 102]


def test_padding_options(hub: Any) -> None:
    texts = ["a b c", "d"]
    assert hub(texts, padding="max_length", max_length=7)["input_ids"][1] == [101, 1040, 102, 0, 0, 0, 0]
    assert hub(texts, padding=True, pad_to_multiple_of=4)["input_ids"][1] == [101, 1040, 102, 0, 0, 0, 0, 0]
    left = hub(texts, padding=True, padding_side="left")
    assert left["input_ids"][1] == [0, 0, 101, 1040, 102] and left["attention_mask"][1] == [0, 0, 1, 1, 1]
    assert left.word_ids(1) == [None, None, None, 0, None]
    assert hub(texts, padding="max_length")["input_ids"][0][-1] == 0
    assert len(hub(texts, padding="max_length")["input_ids"][0]) == 512  # model_max_length
    assert hub(texts, padding=False)["input_ids"] == [[101, 1037, 1038, 1039, 102], [101, 1040, 102]]
    assert hub(texts, padding="longest", return_length=True)["length"] == [5, 5]


def test_truncation_and_overflow(hub: Any) -> None:
    text = "one two three four five six seven"
    out = hub(text, truncation=True, max_length=6, stride=1, return_overflowing_tokens=True)
    assert out["overflow_to_sample_mapping"] == [0, 0]
    assert [hub.decode(ids, skip_special_tokens=True) for ids in out["input_ids"]] == [
        "one two three four",
        "four five six seven",
    ]
    assert hub(text, max_length=4)["input_ids"] == [101, 2028, 2048, 102]  # max_length alone truncates
    assert len(hub(text * 200, truncation=True)["input_ids"]) == 512
    only_second = hub("short", text, truncation="only_second", max_length=7)
    assert hub.decode(only_second["input_ids"]) == "[CLS] short [SEP] one two three [SEP]"
    batch = hub(
        [text, "a"],
        ["b", text],
        truncation=True,
        max_length=8,
        return_overflowing_tokens=True,
        padding=True,
        return_tensors="np",
    )
    assert batch["input_ids"].shape[1] == 8
    assert batch["overflow_to_sample_mapping"].tolist() == [0, 0, 1, 1]  # 7 words keep 4 + 3 (stride 0)


def test_alignment_helpers(hub: Any) -> None:
    text = "Unwanted running!"
    encoded = hub(text, "second part")
    assert encoded.tokens() == ["[CLS]", "unwanted", "running", "!", "[SEP]", "second", "part", "[SEP]"]
    assert encoded.word_ids() == [None, 0, 1, 2, None, 0, 1, None]
    assert encoded.word_to_tokens(1) == (2, 3)
    assert encoded.word_to_tokens(0, sequence_index=1) == (5, 6)
    assert encoded.char_to_token(10) == 2
    assert encoded.char_to_token(0, sequence_index=1) == 5
    assert encoded.char_to_word(16) == 2
    assert encoded.token_to_chars(2) == (9, 16)
    assert encoded.token_to_chars(0) is None
    assert encoded.word_to_chars(0) == (0, 8)
    assert encoded.token_to_sequence(6) == 1 and encoded.token_to_word(6) == 1
    assert len(encoded[0].ids) == 8  # an int index returns the row's encoding


def test_is_split_into_words(hub: Any) -> None:
    encoded = hub(["Hello", "wor,ld", "  ", "x"], is_split_into_words=True, return_offsets_mapping=True)
    assert encoded.tokens() == ["[CLS]", "hello", "wo", "##r", ",", "ld", "x", "[SEP]"]
    assert encoded.word_ids() == [None, 0, 1, 1, 1, 1, 3, None]
    assert encoded["offset_mapping"][6] == (0, 1)  # offsets are relative to each word
    batch = hub([["a", "b"], ["c"]], is_split_into_words=True, padding=True)
    assert batch["input_ids"] == [[101, 1037, 1038, 102], [101, 1039, 102, 0]]


def test_model_max_length_warning(hub: Any, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        hub("word " * 600)
    assert "longer than the specified maximum sequence length" in caplog.text


# -- bad input ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [None, b"bytes", 3, 2.5, {"a": 1}])
def test_non_string_input_raises_type_error(hub: Any, value: Any) -> None:
    with pytest.raises(TypeError, match=type(value).__name__):
        hub(value)
    with pytest.raises(TypeError, match=type(value).__name__):
        hub(["ok", value])
    with pytest.raises(TypeError, match="text_pair must be a str"):
        hub("ok", value if value is not None else 1)
    with pytest.raises(TypeError, match=r"text\[1\]\[0\]"):
        hub([["ok"], [value]], is_split_into_words=True)


def test_lone_surrogates_raise_value_error(hub: Any) -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        hub("a\ud800b")
    with pytest.raises(ValueError, match=r"text_pair\[0\]"):
        hub(["ok"], ["\udfff"])


def test_bad_arguments_raise_value_errors(hub: Any) -> None:
    with pytest.raises(ValueError, match="batch size"):
        hub(["a", "b"], ["c"])
    with pytest.raises(TypeError, match="text_pair"):
        hub(["a", "b"], "c")
    with pytest.raises(ValueError, match="max_length=1 is smaller than the 2 special tokens"):
        hub("hello", truncation=True, max_length=1)
    with pytest.raises(ValueError, match="3 special tokens"):
        hub("hello", "world", truncation=True, max_length=2)
    with pytest.raises(ValueError, match="stride=5"):
        hub("hello", truncation=True, max_length=6, stride=5)
    with pytest.raises(ValueError, match="padding must be"):
        hub("hello", padding="longest_first")
    with pytest.raises(ValueError, match="truncation must be"):
        hub("hello", truncation="shortest")
    with pytest.raises(ValueError, match="max_length must be"):
        hub("hello", max_length=-1)
    with pytest.raises(ValueError, match="padding_side"):
        hub("hello", padding=True, padding_side="middle")
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        hub("hello", padding=True, truncation=True, max_length=10, pad_to_multiple_of=4)
    with pytest.raises(ValueError, match="token_type_ids"):
        hub("hello", return_token_type_ids=True)
    with pytest.raises(ValueError, match="return_tensors"):
        hub("hello", return_tensors="numpy")
    with pytest.raises(ValueError, match="padding=True"):
        hub(["a", "b c"], return_tensors="np")
    with pytest.raises(ValueError, match="out of range"):
        hub.decode([5, 30522])
    with pytest.raises(TruncationError):
        hub("one two three four five", "x", truncation="only_second", max_length=6)
    with pytest.raises(TruncationError, match="only_second"):
        hub("one two three four five", truncation="only_second", max_length=4)


def test_constructor_errors(cls: type, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not in the vocabulary"):
        cls({"[UNK]": 0, "a": 1})
    with pytest.raises(TypeError, match="vocab"):
        cls()
    with pytest.raises(TypeError, match="vocab"):
        cls(12)
    with pytest.raises(ValueError, match="padding_side"):
        cls({t: i for i, t in enumerate(SMALL_VOCAB)}, padding_side="up")
    with pytest.raises(FileNotFoundError, match=r"vocab\.txt or tokenizer\.json"):
        cls.from_pretrained(tmp_path)
    with pytest.raises(TypeError, match="do_lowercase"):
        cls.from_pretrained(tmp_path, do_lowercase=True)
    (tmp_path / "vocab.txt").write_text("", encoding="utf-8")
    with pytest.raises(ValueError, match="empty"):
        cls.from_pretrained(tmp_path)


# -- tensors --------------------------------------------------------------------------------------------------


def test_numpy_tensors(hub: Any) -> None:
    encoded = hub(["a b", "c"], padding=True, return_tensors="np", return_offsets_mapping=True)
    assert encoded["input_ids"].dtype == np.int64 and encoded["input_ids"].shape == (2, 4)
    assert encoded["offset_mapping"].shape == (2, 4, 2)
    single = hub("a b", return_tensors="np")
    assert single["input_ids"].shape == (1, 4)
    assert hub.encode("a b", return_tensors="np").shape == (1, 4)


@pytest.mark.torch
def test_torch_tensors(hub: Any) -> None:
    import torch

    encoded = hub(["a b", "c"], padding=True, return_tensors="pt")
    assert isinstance(encoded["input_ids"], torch.Tensor) and encoded["input_ids"].dtype == torch.int64
    assert hub.decode(encoded["input_ids"][0]) == "[CLS] a b [SEP]"
    assert hub.batch_decode(encoded["input_ids"], skip_special_tokens=True) == ["a b", "c"]


@pytest.mark.tensorflow
def test_tensorflow_tensors(hub: Any) -> None:
    import tensorflow as tf

    encoded = hub(["a b", "c"], padding=True, return_tensors="tf")
    assert isinstance(encoded["input_ids"], tf.Tensor) and encoded["input_ids"].shape == (2, 4)


@pytest.mark.flax
def test_jax_tensors(hub: Any) -> None:
    import jax

    encoded = hub(["a b", "c"], padding=True, return_tensors="jax")
    assert isinstance(encoded["input_ids"], jax.Array) and encoded["input_ids"].shape == (2, 4)


def test_importing_tokenizers_imports_no_framework(shared_data: Path) -> None:
    code = (
        "import sys\n"
        "from distilbert_mf.tokenization import DistilBertTokenizer\n"
        f"tok = DistilBertTokenizer.from_pretrained({str(shared_data / HUB)!r})\n"
        "tok(['a', 'b c'], padding=True, return_tensors='np')\n"
        "bad = [m for m in ('torch', 'tensorflow', 'jax', 'flax', 'tokenizers', 'transformers') if m in sys.modules]\n"
        "print(bad)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert result.stdout.strip() == "[]"


# -- decoding -------------------------------------------------------------------------------------------------


def test_decode(hub: Any) -> None:
    ids = hub("Hello , world ! I don't know.")["input_ids"]
    # the decoder glues punctuation token by token; the whole-text clean-up also joins "don ' t"
    assert hub.decode(ids) == "[CLS] hello, world! i don ' t know. [SEP]"
    assert hub.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=True) == "hello, world! i don't know."
    assert hub.decode(np.array(ids)) == hub.decode(ids)
    assert hub.decode(hub("unwanted playing")["input_ids"][1:-1]) == "unwanted playing"
    assert hub.convert_tokens_to_string(["un", "##want", "##ed"]) == "unwanted"
    assert hub.decode(hub.convert_tokens_to_ids(["it", "'", "s"]), clean_up_tokenization_spaces=True) == "it's"
    assert hub.batch_decode([[101, 7592, 102], [7592]], skip_special_tokens=True) == ["hello", "hello"]
    assert hub.convert_ids_to_tokens(7592) == "hello"
    with pytest.raises(ValueError, match="1-D"):
        hub.decode([[1, 2]])


def test_fast_decode_matches_library(shared_data: Path) -> None:
    fast = DistilBertTokenizerFast.from_pretrained(shared_data / HUB)
    for text in ["Hello , world ! I don't know.", "it ' s a do not 're test ?", "\u00e9\u4e2d [MASK] x"]:
        ids = fast(text)["input_ids"]
        for skip in (False, True):
            assert fast.decode(ids, skip_special_tokens=skip) == fast.backend_tokenizer.decode(ids, skip)


# -- vocabulary and special tokens ----------------------------------------------------------------------------


def test_vocabulary_api(hub: Any) -> None:
    assert hub.vocab_size == len(hub) == 30522
    assert (hub.pad_token_id, hub.unk_token_id, hub.cls_token_id, hub.sep_token_id, hub.mask_token_id) == (
        0,
        100,
        101,
        102,
        103,
    )
    assert sorted(hub.all_special_ids) == [0, 100, 101, 102, 103]
    assert hub.special_tokens_map["mask_token"] == "[MASK]"
    assert hub.convert_tokens_to_ids(["hello", "notawordxx"]) == [7592, 100]
    assert hub.get_vocab()["hello"] == 7592
    assert hub.num_special_tokens_to_add() == 2 and hub.num_special_tokens_to_add(pair=True) == 3
    assert hub.build_inputs_with_special_tokens([7], [8]) == [101, 7, 102, 8, 102]
    assert hub.get_special_tokens_mask([7], [8]) == [1, 0, 1, 0, 1]
    assert hub.get_special_tokens_mask([101, 7, 102], already_has_special_tokens=True) == [1, 0, 1]


def test_pad(hub: Any) -> None:
    features = [{"input_ids": [101, 7, 102]}, {"input_ids": [101, 102]}]
    padded = hub.pad(features, return_tensors="np")
    assert padded["input_ids"].tolist() == [[101, 7, 102], [101, 102, 0]]
    assert padded["attention_mask"].tolist() == [[1, 1, 1], [1, 1, 0]]
    left = hub.pad({"input_ids": [[1], [1, 2, 3]]}, padding_side="left", pad_to_multiple_of=4)
    assert left["input_ids"] == [[0, 0, 0, 1], [0, 1, 2, 3]]
    assert hub.pad({"input_ids": [5, 6]}, padding="max_length", max_length=4)["input_ids"] == [5, 6, 0, 0]


# -- files ----------------------------------------------------------------------------------------------------


def test_save_and_reload(cls: type, hub: Any, tmp_path: Path) -> None:
    written = hub.save_pretrained(tmp_path)
    names = sorted(Path(p).name for p in written)
    assert names == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names  # nothing left behind by the atomic writes
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["tokenizer_class"] == "DistilBertTokenizer"
    assert config["do_lower_case"] is True and config["model_max_length"] == 512
    assert config["model_input_names"] == ["input_ids", "attention_mask"]
    assert json.loads((tmp_path / "special_tokens_map.json").read_text())["cls_token"] == "[CLS]"
    assert (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()[7592] == "hello"
    text = ["Caf\u00e9 [MASK] unwanted", "\u4e2d\u6587!"]
    for other in CLASSES:
        again = other.from_pretrained(tmp_path)
        assert dict(again(text, return_offsets_mapping=True)) == dict(hub(text, return_offsets_mapping=True))
    (tmp_path / "tokenizer.json").unlink()  # vocab.txt + configs alone
    assert dict(cls.from_pretrained(tmp_path)(text)) == dict(hub(text))


def test_saved_tokenizer_json_is_what_the_library_loads(cls: type, shared_data: Path, tmp_path: Path) -> None:
    from tokenizers import Tokenizer

    tok = cls(shared_data / "vocab" / "bert-base-cased-vocab.txt", do_lower_case=False, nfc=True)
    tok.save_pretrained(tmp_path)
    library = Tokenizer.from_file(str(tmp_path / "tokenizer.json"))
    text = "Cafe\u0301 Stra\u00dfe [MASK] \u4e2d"
    assert library.encode(text).ids == tok(text)["input_ids"]
    assert library.encode(text).offsets == tok(text, return_offsets_mapping=True)["offset_mapping"]


def test_from_pretrained_hub_repo_from_local_cache(cls: type, shared_data: Path, tmp_path: Path) -> None:
    """A Hub repo id resolves through huggingface_hub's cache (offline: no network in tests)."""
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = tmp_path / "models--someone--tiny-tokenizer"
    DistilBertTokenizer.from_pretrained(shared_data / "tiny-random-distilbert").save_pretrained(
        repo / "snapshots" / commit
    )
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit, encoding="utf-8")
    tok = cls.from_pretrained("someone/tiny-tokenizer", cache_dir=tmp_path, local_files_only=True)
    assert tok.vocab_size == 1124 and tok("hello")["input_ids"] == [2, 50, 795, 797, 797, 790, 3]


def test_from_pretrained_overrides_and_tiny_checkpoint(cls: type, shared_data: Path) -> None:
    tiny = cls.from_pretrained(shared_data / "tiny-random-distilbert")
    assert tiny.vocab_size == 1124 and tiny.cls_token_id == 2
    assert tiny("hello")["input_ids"][0] == 2
    short = cls.from_pretrained(shared_data / HUB, model_max_length=8, padding_side="left")
    assert len(short("a " * 20, truncation=True)["input_ids"]) == 8
    assert short(["a", "b c"], padding=True)["input_ids"][0][0] == 0
    cased = cls.from_pretrained(shared_data / HUB, do_lower_case=False)
    assert cased.tokenize("Hello") != ["hello"]


def test_pickle_round_trip(hub: Any) -> None:
    """Tokenizers and their outputs survive pickling (multiprocessing data loaders rely on it)."""
    import pickle

    text = "Caf\u00e9 \u4e2d x [MASK]"
    again = pickle.loads(pickle.dumps(hub))
    assert dict(again(text, return_offsets_mapping=True)) == dict(hub(text, return_offsets_mapping=True))
    encoded = pickle.loads(pickle.dumps(hub([text, "b"], padding=True)))
    assert encoded.word_ids(1) == [None, 0, None, None, None, None]
