"""Added and special tokens, encode_plus / batch_encode_plus: slow = fast = transformers 5.24, saved and reloaded.

The reference tests import transformers with ``pytest.importorskip`` (a test-only dependency); the rest need only
our tokenizers (and ``tokenizers`` for the fast one).
"""

from __future__ import annotations

import json
import pickle
from pathlib import Path
from typing import Any

import pytest

from distilbert_mf.tokenization import AddedToken, DistilBertTokenizer, DistilBertTokenizerFast

HUB = "distilbert-base-uncased-tokenizer"
TEXT = (
    "hello newword NewWord2 xnewwordy <ent> [CLS] <sp1> CAF\u00c9 cafe \u6771\u4eac New York HELLO "
    "un<ent>known [MASK]<e2>"
)
PAIR = "a second NEWWORD text <sp1> here"
# (method, args, kwargs) in order: every row is applied to each tokenizer and must return the same count
OPERATIONS: list[tuple[str, tuple, dict[str, Any]]] = [
    ("add_tokens", (["newword", "hello", "NewWord2", "newword"],), {}),
    ("add_special_tokens", ({"additional_special_tokens": ["<ent>", "[CLS]"]},), {}),
    ("add_tokens", (["<sp1>"],), {"special_tokens": True}),
    ("add_tokens", ("Caf\u00e9",), {}),
    ("add_tokens", (["\u6771", "new york"],), {}),
    ("add_tokens", (["hello"],), {"special_tokens": True}),
    ("add_tokens", (["newword"],), {}),  # already held as it is: 0
    ("add_special_tokens", ({"additional_special_tokens": ["<e2>", "<ent>"]},), {"replace": False}),
    ("add_tokens", ([],), {}),
]
EXPECTED_COUNTS = [3, 1, 1, 1, 2, 1, 0, 1, 0]


@pytest.fixture
def hub_dir(shared_data: Path) -> Path:
    return shared_data / HUB


def _apply(tokenizer: Any, reference: bool = False) -> list[int]:
    counts = []
    for method, args, kwargs in OPERATIONS:
        kwargs = dict(kwargs)
        if "replace" in kwargs:
            name = "replace_extra_special_tokens" if reference else "replace_additional_special_tokens"
            kwargs[name] = kwargs.pop("replace")
        counts.append(getattr(tokenizer, method)(*args, **kwargs))
    return counts


def _outputs(tokenizer: Any, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Everything a call returns, plus the views of the vocabulary a user reads."""
    encoded = tokenizer(*args, **kwargs)
    rows = range(len(encoded["input_ids"]) if isinstance(encoded["input_ids"][0], list) else 1)
    ids = encoded["input_ids"] if len(rows) > 1 else [encoded["input_ids"]]
    return {
        "data": dict(encoded),
        "tokens": [encoded.tokens(i) for i in rows],
        "word_ids": [encoded.word_ids(i) for i in rows],
        "decoded": [tokenizer.decode(row) for row in ids],
        "decoded_skip": [tokenizer.decode(row, skip_special_tokens=True) for row in ids],
        "converted": [tokenizer.convert_ids_to_tokens(row) for row in ids],
        "len": len(tokenizer),
        "all_special_tokens": tokenizer.all_special_tokens,
        "all_special_ids": tokenizer.all_special_ids,
    }


def _both(hub_dir: Path) -> list[Any]:
    return [DistilBertTokenizer.from_pretrained(hub_dir), DistilBertTokenizerFast.from_pretrained(hub_dir)]


# -- slow = fast ----------------------------------------------------------------------------------------------


def test_add_tokens_counts_and_ids_slow_equals_fast(hub_dir: Path) -> None:
    slow, fast = _both(hub_dir)
    assert _apply(slow) == _apply(fast) == EXPECTED_COUNTS
    assert len(slow) == len(fast) == 30522 + 7  # newword NewWord2 <ent> <sp1> Café "new york" <e2>
    assert slow.vocab_size == fast.vocab_size == 30522
    assert slow.added_tokens_decoder == fast.added_tokens_decoder
    assert slow.get_added_vocab() == fast.get_added_vocab()
    assert slow.get_vocab() == fast.get_vocab()
    assert slow.additional_special_tokens == fast.extra_special_tokens == ["<ent>", "[CLS]", "<e2>"]
    library = fast.backend_tokenizer.get_added_tokens_decoder()
    assert {i: t.content for i, t in library.items()} == {i: t.content for i, t in fast.added_tokens_decoder.items()}
    assert all(library[i].__getstate__() == t.to_json() for i, t in fast.added_tokens_decoder.items())


def test_added_tokens_are_never_split(hub_dir: Path) -> None:
    slow, fast = _both(hub_dir)
    _apply(slow), _apply(fast)
    for args in [(TEXT,), (TEXT, PAIR), ([TEXT, PAIR, "newword"],)]:
        kwargs = {"return_offsets_mapping": True, "return_special_tokens_mask": True}
        if isinstance(args[0], list):
            kwargs["padding"] = True
        assert _outputs(slow, *args, **kwargs) == _outputs(fast, *args, **kwargs)
    encoded = fast(TEXT, return_offsets_mapping=True)
    tokens = encoded.tokens()
    # matched inside words, in the normalised text (case-folded, accents stripped) for plain added tokens
    assert tokens[1:8] == ["hello", "newword", "newword2", "x", "newword", "y", "<ent>"]
    assert tokens.count("cafe") == 2 and "new york" in tokens
    assert ["un", "<ent>", "known"] == tokens[tokens.index("un") : tokens.index("un") + 3]
    newword2 = encoded.tokens().index("newword2")
    start, end = encoded["offset_mapping"][newword2]
    assert TEXT[start:end] == "NewWord2"
    assert slow.tokenize("xNEWWORDy <E2> <e2>") == fast.tokenize("xNEWWORDy <E2> <e2>")
    assert fast.tokenize("xNEWWORDy <E2> <e2>") == ["x", "newword", "y", "<", "e", "##2", ">", "<e2>"]
    words = ["NewWord2", "un<ent>known"]
    assert _outputs(slow, words, is_split_into_words=True) == _outputs(fast, words, is_split_into_words=True)


def test_added_tokens_with_options(hub_dir: Path, tmp_path: Path) -> None:
    slow, fast = _both(hub_dir)
    for tok in (slow, fast):
        assert tok.add_tokens([AddedToken("Keep", normalized=False), AddedToken("[X]", special=True)]) == 2
        assert tok.add_special_tokens({"additional_special_tokens": [AddedToken("<y>", normalized=True)]}) == 1
    for text in ["Keep keep KEEP", "a [X] b [x] <Y> <y>"]:
        assert _outputs(slow, text) == _outputs(fast, text)
    assert fast.tokenize("Keep keep") == ["Keep", "keep"]
    assert fast.tokenize("<Y>") == ["<y>"]  # normalized=True kept for an AddedToken object
    assert fast.decode(fast.encode("a [X] b"), skip_special_tokens=True) == "a b"
    # lstrip / rstrip / single_word: the fast tokenizer (the library) only
    assert fast.add_tokens([AddedToken("<m>", lstrip=True, special=True)]) == 1
    assert fast.tokenize("a <m> b") == ["a", " <m>", "b"]  # the stripped space is part of the match
    with pytest.raises(ValueError, match=r"lstrip/rstrip/single_word .* DistilBertTokenizerFast"):
        slow.add_tokens([AddedToken("<m>", lstrip=True, special=True)])
    fast.save_pretrained(tmp_path)
    assert DistilBertTokenizerFast.from_pretrained(tmp_path).tokenize("a <m> b") == ["a", " <m>", "b"]
    with pytest.raises(ValueError, match=r"lstrip/rstrip/single_word"):
        DistilBertTokenizer.from_pretrained(tmp_path)


def test_special_tokens_semantics(hub_dir: Path) -> None:
    slow, fast = _both(hub_dir)
    for tok in (slow, fast):
        assert tok.add_special_tokens({}) == 0 and tok.add_tokens(None) == 0 and tok.add_tokens("") == 0
        assert tok.add_special_tokens({"cls_token": "<cls>", "sep_token": "[SEP]"}) == 1  # [SEP] is held already
        assert tok.cls_token == "<cls>" and tok.cls_token_id == 30522
        assert tok("hi")["input_ids"] == [30522, 7632, 102]  # the template follows the new cls_token at once
        assert tok("hi", "yo")["input_ids"] == [30522, 7632, 102, 10930, 102]
        assert tok.add_special_tokens({"extra_special_tokens": ["<a>", "<b>"]}) == 2
        assert tok.add_special_tokens({"additional_special_tokens": ["<c>", "<a>"]}, False) == 1
        assert tok.additional_special_tokens == ["<a>", "<b>", "<c>"]
        assert tok.add_special_tokens({"additional_special_tokens": ["<d>"]}) == 1  # replaces the list
        assert tok.additional_special_tokens == ["<d>"] and tok.additional_special_tokens_ids == [30526]
        assert tok.all_special_tokens == ["[UNK]", "[SEP]", "[PAD]", "<cls>", "[MASK]", "<d>"]
        assert tok.decode(tok.encode("x <a> <d>"), skip_special_tokens=True) == "x"  # <a> stays special
        assert tok.add_special_tokens({"bos_token": "<s>", "eos_token": "[SEP]"}) == 1
        assert (tok.bos_token, tok.bos_token_id, tok.eos_token_id) == ("<s>", 30527, 102)
        tok.pad_token = "[unused0]"
        assert tok.pad_token_id == 1 and tok(["a", "a b"], padding=True)["input_ids"][0][-1] == 1
        with pytest.raises(ValueError, match=r"add_special_tokens\(\{'mask_token': '<nope>'\}\)"):
            tok.mask_token = "<nope>"
    assert _outputs(slow, TEXT, PAIR) == _outputs(fast, TEXT, PAIR)
    for tok in (slow, fast):  # data loader workers get pickled copies
        assert _outputs(pickle.loads(pickle.dumps(tok)), TEXT, PAIR) == _outputs(tok, TEXT, PAIR)


@pytest.mark.parametrize("cls", [DistilBertTokenizer, DistilBertTokenizerFast], ids=["slow", "fast"])
def test_bad_added_tokens_change_nothing(cls: type, hub_dir: Path) -> None:
    tok = cls.from_pretrained(hub_dir)
    before = (len(tok), tok.added_tokens_decoder, tok.all_special_tokens)
    with pytest.raises(TypeError, match=r"new_tokens\[1\] must be a str or an AddedToken, got int"):
        tok.add_tokens(["ok", 5])
    with pytest.raises(TypeError, match=r"new_tokens\[0\] must be a str or an AddedToken, got bytes"):
        tok.add_tokens(b"x")
    with pytest.raises(TypeError, match=r"new_tokens\[0\] .*NoneType"):
        tok.add_tokens([None])
    with pytest.raises(TypeError, match="special_tokens must be True or False"):
        tok.add_tokens(["x"], special_tokens="yes")
    with pytest.raises(ValueError, match=r"'foo_token' is not a special token name; the keys are \['bos_token'"):
        tok.add_special_tokens({"cls_token": "<c>", "foo_token": "x"})
    with pytest.raises(TypeError, match="cls_token must be a str or an AddedToken, got int"):
        tok.add_special_tokens({"cls_token": 5})
    with pytest.raises(TypeError, match="additional_special_tokens must be a list"):
        tok.add_special_tokens({"additional_special_tokens": "<x>"})
    with pytest.raises(TypeError, match=r"additional_special_tokens\[1\]"):
        tok.add_special_tokens({"additional_special_tokens": ["<x>", 3]})
    with pytest.raises(ValueError, match="not both"):
        tok.add_special_tokens({"additional_special_tokens": ["<x>"], "extra_special_tokens": ["<y>"]})
    with pytest.raises(TypeError, match="special_tokens_dict must be a dict"):
        tok.add_special_tokens(["<x>"])
    with pytest.raises(ValueError, match="normalised away entirely"):
        tok.add_tokens(["ok", "\u200b"])  # the library would match it between every two characters
    with pytest.raises(TypeError, match="AddedToken special must be True or False"):
        AddedToken("x", special="no")  # type: ignore[arg-type]
    assert (len(tok), tok.added_tokens_decoder, tok.all_special_tokens) == before


# -- files ----------------------------------------------------------------------------------------------------


def test_saved_and_reloaded(hub_dir: Path, tmp_path: Path) -> None:
    slow, fast = _both(hub_dir)
    _apply(slow), _apply(fast)
    slow.add_special_tokens({"cls_token": "<cls>"}), fast.add_special_tokens({"cls_token": "<cls>"})
    expected = _outputs(fast, TEXT, PAIR, return_offsets_mapping=True)
    for name, tok in (("slow", slow), ("fast", fast)):
        folder = tmp_path / name
        names = sorted(Path(p).name for p in tok.save_pretrained(folder))
        assert names == [
            "added_tokens.json",
            "special_tokens_map.json",
            "tokenizer.json",
            "tokenizer_config.json",
            "vocab.txt",
        ]
        config = json.loads((folder / "tokenizer_config.json").read_text())
        assert config["additional_special_tokens"] == ["<ent>", "[CLS]", "<e2>"] and config["cls_token"] == "<cls>"
        assert config["added_tokens_decoder"]["30522"] == {
            "content": "newword",
            "lstrip": False,
            "normalized": True,
            "rstrip": False,
            "single_word": False,
            "special": False,
        }
        assert config["added_tokens_decoder"]["30524"]["special"] is True  # <ent>
        added = json.loads((folder / "added_tokens.json").read_text())
        assert added == {t: i for i, t in enumerate(["newword", "NewWord2", "<ent>", "<sp1>", "Caf\u00e9"], 30522)} | {
            "new york": 30527,
            "<e2>": 30528,
            "<cls>": 30529,
        }
        entries = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
        assert {"id": 30523, "content": "NewWord2", "single_word": False, "lstrip": False, "rstrip": False,
                "normalized": True, "special": False} in entries  # fmt: skip
        special = json.loads((folder / "special_tokens_map.json").read_text())
        assert special["additional_special_tokens"] == ["<ent>", "[CLS]", "<e2>"]
        for cls in (DistilBertTokenizer, DistilBertTokenizerFast):
            assert _outputs(cls.from_pretrained(folder), TEXT, PAIR, return_offsets_mapping=True) == expected
    (tmp_path / "slow" / "tokenizer.json").unlink()  # vocab.txt + tokenizer_config.json's added_tokens_decoder
    (tmp_path / "fast" / "tokenizer.json").unlink()
    config = json.loads((tmp_path / "fast" / "tokenizer_config.json").read_text())
    del config["added_tokens_decoder"]  # vocab.txt + added_tokens.json (transformers 4's Python tokenizers)
    (tmp_path / "fast" / "tokenizer_config.json").write_text(json.dumps(config))
    for folder in (tmp_path / "slow", tmp_path / "fast"):
        for cls in (DistilBertTokenizer, DistilBertTokenizerFast):
            again = _outputs(cls.from_pretrained(folder), TEXT, PAIR, return_offsets_mapping=True)
            assert again["data"] == expected["data"] and again["len"] == expected["len"]
            assert again["all_special_tokens"] == expected["all_special_tokens"]


def test_resize_model_to_the_tokenizer(shared_data: Path) -> None:
    torch_models = pytest.importorskip("distilbert_mf.torch")
    tok = DistilBertTokenizerFast.from_pretrained(shared_data / "tiny-random-distilbert")
    model = torch_models.DistilBertForMaskedLM.from_pretrained(shared_data / "tiny-random-distilbert")
    assert tok.add_tokens(["<ent>", "zzqq"]) == 2 and len(tok) == 1126
    model.resize_token_embeddings(len(tok))
    batch = tok(["hello <ent> zzqq"], return_tensors="pt")
    assert batch["input_ids"][0, -3:-1].tolist() == [1124, 1125]  # "hello" is five pieces in this tiny vocabulary
    assert model(**batch).logits.shape == (1, batch["input_ids"].shape[1], 1126)


# -- encode_plus / batch_encode_plus --------------------------------------------------------------------------


@pytest.mark.parametrize("cls", [DistilBertTokenizer, DistilBertTokenizerFast], ids=["slow", "fast"])
def test_encode_plus_and_batch_encode_plus(cls: type, hub_dir: Path) -> None:
    tok = cls.from_pretrained(hub_dir)
    options = {"truncation": True, "max_length": 12, "padding": "max_length", "return_offsets_mapping": True}
    assert dict(tok.encode_plus(TEXT, PAIR, **options)) == dict(tok(TEXT, PAIR, **options))
    assert dict(tok.encode_plus("hello")) == dict(tok("hello"))
    batch = [TEXT, (TEXT, PAIR), "short", ("a", "b")]
    encoded = tok.batch_encode_plus(batch, padding=True, return_tensors="np", return_special_tokens_mask=True)
    for row, item in enumerate(batch):
        alone = tok(*(item if isinstance(item, tuple) else (item,)), return_special_tokens_mask=True)
        n = len(alone["input_ids"])
        assert encoded["input_ids"][row, :n].tolist() == alone["input_ids"]
        assert encoded["special_tokens_mask"][row, :n].tolist() == alone["special_tokens_mask"]
        assert encoded.tokens(row)[:n] == alone.tokens()
    pairs = [(["New", "York"], ["is", "big"]), ["just", "words"]]
    split = tok.batch_encode_plus(pairs, is_split_into_words=True)
    assert split.word_ids(0) == [None, 0, 1, None, 0, 1, None] and split.sequence_ids(1) == [None, 0, 0, None]
    assert dict(tok.encode_plus(["New", "York"], is_split_into_words=True)) == dict(
        tok(["New", "York"], is_split_into_words=True)
    )
    with pytest.raises(TypeError, match=r"text must be a str .*batch_encode_plus for batches"):
        tok.encode_plus(["a", "b"])
    with pytest.raises(TypeError, match="pairs inside the list"):
        tok.batch_encode_plus(["a"], text_pair=["b"])
    with pytest.raises(ValueError, match=r"batch_text_or_text_pairs\[1\] must be a str or a \(text, pair\)"):
        tok.batch_encode_plus(["a", ("b", "c", "d")])
    with pytest.raises(TypeError, match=r"batch_text_or_text_pairs\[0\] must be a str or a \(text, pair\), got int"):
        tok.batch_encode_plus([3])
    with pytest.raises(TypeError, match=r"batch_text_or_text_pairs\[0\]\[1\] must be a str, got int"):
        tok.batch_encode_plus([("a", 3)])
    with pytest.raises(TypeError, match="batch_text_or_text_pairs must be a list"):
        tok.batch_encode_plus("a text")
    assert dict(tok.batch_encode_plus([])) == dict(tok([]))


# -- transformers 5.24 ----------------------------------------------------------------------------------------


@pytest.mark.reference
def test_equal_to_transformers(hub_dir: Path, tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    reference = transformers.DistilBertTokenizerFast.from_pretrained(hub_dir)
    slow, fast = _both(hub_dir)
    assert _apply(slow) == _apply(fast) == _apply(reference, reference=True)
    for args, kwargs in [((TEXT,), {}), ((TEXT, PAIR), {"return_offsets_mapping": True}), (([TEXT, "x"],), {})]:
        theirs = _outputs(reference, *args, **kwargs)
        assert _outputs(slow, *args, **kwargs) == _outputs(fast, *args, **kwargs) == theirs
    batch = [TEXT, (TEXT, PAIR)]
    mine = fast.batch_encode_plus(batch, padding=True)
    alone = [reference(TEXT)["input_ids"], reference(TEXT, PAIR)["input_ids"]]
    assert [row[: len(ids)] for row, ids in zip(mine["input_ids"], alone)] == alone
    assert mine.tokens(1)[: len(alone[1])] == reference(TEXT, PAIR).tokens()
    # files go both ways: theirs into ours, ours into theirs (their template follows cls_token only after a reload)
    for tok in (slow, fast, reference):
        tok.add_special_tokens({"cls_token": "<cls>"})
    reference.save_pretrained(tmp_path / "theirs")
    fast.save_pretrained(tmp_path / "ours")
    expected = _outputs(fast, TEXT, PAIR, return_offsets_mapping=True)
    loaded = [
        DistilBertTokenizer.from_pretrained(tmp_path / "theirs"),
        DistilBertTokenizerFast.from_pretrained(tmp_path / "theirs"),
        transformers.AutoTokenizer.from_pretrained(tmp_path / "ours"),
        transformers.AutoTokenizer.from_pretrained(tmp_path / "theirs"),
    ]
    for tok in loaded:
        assert _outputs(tok, TEXT, PAIR, return_offsets_mapping=True) == expected
