"""Our tokenizers against transformers: 5.x's DistilBertTokenizer (over ``tokenizers``) and 4.57's Python one."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import unicodedata
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distilbert_mf.tokenization import DistilBertTokenizer, DistilBertTokenizerFast

pytestmark = pytest.mark.reference

ROOT = Path(__file__).resolve().parents[1]
HUB = "distilbert-base-uncased-tokenizer"
REF457_PYTHON = Path(os.environ.get("DISTILBERT_MF_REF457", ROOT.parent / "ref457")) / "bin" / "python"

LONG = "The quick brown fox, unbelievably, jumped over the lazy dog's enormous kennel again and again!"
CALLS: list[tuple[tuple, dict[str, Any]]] = [
    (("Hello world!",), {}),
    (("Hello world!", "How are you?"), {"return_offsets_mapping": True}),
    (([LONG, "short one", "caf\u00e9 \u4e2d\u6587"],), {"padding": True, "return_special_tokens_mask": True}),
    (([LONG, "short one"],), {"padding": "max_length", "max_length": 16, "truncation": True}),
    (([LONG, "short one"],), {"padding": True, "pad_to_multiple_of": 8, "padding_side": "left"}),
    (([LONG, "x"], ["y", LONG]), {"truncation": "longest_first", "max_length": 12}),
    (([LONG, "x y z"], ["a b", "c"]), {"truncation": "only_first", "max_length": 9}),
    ((["question one?", "two?"], [LONG, LONG]), {"truncation": "only_second", "max_length": 14}),
    (
        (LONG,),
        {
            "truncation": True,
            "max_length": 10,
            "stride": 3,
            "return_overflowing_tokens": True,
            "return_offsets_mapping": True,
        },
    ),
    (
        (["what jumped?", "who?"], [LONG, LONG]),
        {
            "truncation": "only_second",
            "max_length": 16,
            "stride": 4,
            "return_overflowing_tokens": True,
            "padding": True,
            "return_offsets_mapping": True,
        },
    ),
    ((LONG, LONG), {"truncation": True, "max_length": 20, "stride": 2, "return_overflowing_tokens": True}),
    (
        ([["Hello", "wor,ld"], ["x", "y"]],),
        {"is_split_into_words": True, "padding": True, "return_offsets_mapping": True},
    ),
    (("no specials here",), {"add_special_tokens": False}),
]


@pytest.fixture(scope="module")
def transformers_tokenizer(shared_data: Path) -> Any:
    transformers = pytest.importorskip("transformers")
    return transformers.DistilBertTokenizer.from_pretrained(shared_data / HUB)


@pytest.mark.parametrize("cls", [DistilBertTokenizer, DistilBertTokenizerFast], ids=["slow", "fast"])
@pytest.mark.parametrize("call", CALLS, ids=range(len(CALLS)))
def test_calls_match_transformers(cls: type, call: tuple, transformers_tokenizer: Any, shared_data: Path) -> None:
    args, kwargs = call
    ours = cls.from_pretrained(shared_data / HUB)(*args, **kwargs)
    theirs = transformers_tokenizer(*args, **kwargs)
    assert sorted(ours) == sorted(theirs)  # no token_type_ids on either side
    for key in theirs:
        assert ours[key] == theirs[key], key
    for i in range(len(theirs.encodings)):
        assert ours.word_ids(i) == theirs.word_ids(i)
        assert ours.sequence_ids(i) == theirs.sequence_ids(i)


@pytest.mark.parametrize("cls", [DistilBertTokenizer, DistilBertTokenizerFast], ids=["slow", "fast"])
def test_tensors_and_decode_match_transformers(cls: type, transformers_tokenizer: Any, shared_data: Path) -> None:
    ours = cls.from_pretrained(shared_data / HUB)
    texts = [LONG, "It's a [MASK] , isn't it ?"]
    a = ours(texts, padding=True, return_tensors="np")
    b = transformers_tokenizer(texts, padding=True, return_tensors="np")
    np.testing.assert_array_equal(a["input_ids"], b["input_ids"])
    np.testing.assert_array_equal(a["attention_mask"], b["attention_mask"])
    for row in b["input_ids"]:
        for skip in (False, True):
            for clean in (False, True):
                assert ours.decode(row, skip, clean) == transformers_tokenizer.decode(
                    row, skip_special_tokens=skip, clean_up_tokenization_spaces=clean
                )
    assert ours.tokenize(LONG) == transformers_tokenizer.tokenize(LONG)


@pytest.mark.slow
def test_sst2_matches_transformers_4_python_tokenizer(shared_data: Path, tmp_path: Path) -> None:
    """transformers 4.57.6's pure-Python DistilBertTokenizer (run in its own venv) gives the same ids."""
    if not REF457_PYTHON.is_file():
        pytest.skip(f"no transformers 4.57 environment at {REF457_PYTHON}")
    with open(shared_data / "glue_sst2" / "dev.tsv", encoding="utf-8", newline="") as handle:
        sentences = [row[0] for row in list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[1:]]
    texts = [*sentences, "Hello, World! Caf\u00e9 na\u00efve \u4e2d\u6587 [MASK] unwanted", ""]
    (tmp_path / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
    script = (
        "import json, sys\n"
        "from transformers import DistilBertTokenizer\n"
        "tok = DistilBertTokenizer.from_pretrained(sys.argv[1])\n"
        "texts = json.load(open(sys.argv[2], encoding='utf-8'))\n"
        "print(json.dumps(tok(texts)['input_ids']))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    result = subprocess.run(
        [str(REF457_PYTHON), "-c", script, str(shared_data / HUB), str(tmp_path / "texts.json")],
        capture_output=True,
        text=True,
        check=True,
        env={**env, "TRANSFORMERS_VERBOSITY": "error"},
    )
    expected = json.loads(result.stdout.strip().splitlines()[-1])
    assert DistilBertTokenizer.from_pretrained(shared_data / HUB)(texts)["input_ids"] == expected


@pytest.mark.parametrize("cls", [DistilBertTokenizer, DistilBertTokenizerFast], ids=["slow", "fast"])
@pytest.mark.parametrize("cased", [False, True], ids=["uncased", "cased_nfc"])
def test_transformers_autotokenizer_loads_what_we_save(
    cls: type, cased: bool, shared_data: Path, tmp_path: Path
) -> None:
    transformers = pytest.importorskip("transformers")
    if cased:
        ours = cls(shared_data / "vocab" / "bert-base-cased-vocab.txt", do_lower_case=False, nfc=True)
    else:
        ours = cls.from_pretrained(shared_data / HUB)
    ours.save_pretrained(tmp_path)
    theirs = transformers.AutoTokenizer.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "DistilBertTokenizer"
    texts = [LONG, "Cafe\u0301 Stra\u00dfe \u4e2d\u6587 [MASK]", ""]
    if cased:
        # transformers 5 rebuilds the normalizer from tokenizer_config.json and drops the NFC step of
        # tokenizer.json, so it only agrees with nfc=True on text that is already NFC
        texts = [unicodedata.normalize("NFC", text) for text in texts]
    pairs = ["second text", "na\u00efve", "x"]
    expected = ours(texts, pairs, padding=True, return_offsets_mapping=True)
    got = theirs(texts, pairs, padding=True, return_offsets_mapping=True)
    assert "token_type_ids" not in got
    assert dict(got) == dict(expected)
    assert theirs.model_max_length == ours.model_max_length == 512
