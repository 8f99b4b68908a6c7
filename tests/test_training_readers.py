"""distilbert_mf.training.readers: every file format into records, and bad files refused with file/line/column."""

from __future__ import annotations

import json

import pytest

from distilbert_mf.training import DataError, Records, read_records
from distilbert_mf.training.data import select_records, split_records
from distilbert_mf.training.readers import infer_format


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_tsv_real_sst2(shared_data):
    records = read_records(shared_data / "glue_sst2" / "dev.tsv")
    assert len(records) == 872
    assert records.columns == ("sentence", "label")
    assert records.rows[0] == {"sentence": "it 's a charming and often affecting journey . ", "label": "1"}
    assert records.locations[0].endswith("dev.tsv line 2")
    assert sum(r["label"] == "1" for r in records.rows) == 444


def test_tsv_keeps_quotes_csv_parses_them(tmp_path):
    tsv = read_records(write(tmp_path, "a.tsv", 'text\tlabel\n"quoted" word\t1\n'))
    assert tsv.rows[0]["text"] == '"quoted" word'
    csv = read_records(write(tmp_path, "a.csv", 'text,label\n"a, b",0\n"multi\nline",1\n'))
    assert [r["text"] for r in csv.rows] == ["a, b", "multi\nline"]
    assert csv.locations == [f"{tmp_path / 'a.csv'} line 2", f"{tmp_path / 'a.csv'} line 4"]


def test_jsonl_and_json_lists(tmp_path):
    jsonl = read_records(write(tmp_path, "a.jsonl", '{"text": "x", "label": [1, 2]}\n\n{"text": "y", "label": []}\n'))
    assert [r["text"] for r in jsonl.rows] == ["x", "y"]
    assert jsonl.locations[1].endswith("line 3")
    listed = read_records(write(tmp_path, "b.json", json.dumps([{"text": "x"}, {"text": "y", "extra": 1}])))
    assert listed.columns == ("text", "extra")
    wrapped = read_records(write(tmp_path, "c.json", json.dumps({"data": [{"text": "x"}]})))
    assert wrapped.rows == [{"text": "x"}]


def test_squad_json_flattened(shared_data):
    records = read_records(shared_data / "squad" / "dev-v1.1-articles-00-39.json")
    assert len(records) == 8981
    first = records.rows[0]
    assert first["id"] == "56be4db0acb8001400a502ec"
    assert first["answers"] == {"text": ["Denver Broncos"] * 3, "answer_start": [177] * 3}
    assert first["context"][177 : 177 + 14] == "Denver Broncos"
    assert first["title"] == "Super_Bowl_50"
    assert "article 0 paragraph 0 question 0" in records.locations[0]


def test_conll_real(shared_data):
    records = read_records(shared_data / "conll2003" / "test-sentences-0000-2699.txt", task="token-classification")
    assert len(records) == 2700
    assert records.columns == ("tokens", "pos_tags", "chunk_tags", "ner_tags")
    assert records.rows[0]["tokens"][:3] == ["SOCCER", "-", "JAPAN"]
    assert records.rows[0]["ner_tags"][:3] == ["O", "O", "B-LOC"]
    assert records.rows[1] == {
        "tokens": ["Nadim", "Ladki"],
        "pos_tags": ["NNP", "NNP"],
        "chunk_tags": ["B-NP", "I-NP"],
        "ner_tags": ["B-PER", "I-PER"],
    }
    assert records.locations[1].endswith("line 14")


def test_conll_docstart_and_two_columns(tmp_path):
    records = read_records(write(tmp_path, "a.conll", "-DOCSTART- O\n\nEU B-ORG\nrejects O\n\n\nPeter B-PER\n"))
    assert records.rows == [
        {"tokens": ["EU", "rejects"], "ner_tags": ["B-ORG", "O"]},
        {"tokens": ["Peter"], "ner_tags": ["B-PER"]},
    ]


def test_text_corpus_and_format_inference(tmp_path):
    records = read_records(write(tmp_path, "c.txt", "first line\n\n  \nsecond line\n"), task="masked-lm")
    assert [r["text"] for r in records.rows] == ["first line", "second line"]
    with pytest.raises(DataError, match=r"format="):
        read_records(tmp_path / "c.txt")
    assert infer_format("x.ndjson") == "jsonl"


def test_in_memory_sources():
    assert read_records([{"a": 1}, {"a": 2}]).columns == ("a",)
    assert read_records({"a": [1, 2], "b": ["x", "y"]}).rows[1] == {"a": 2, "b": "y"}
    with pytest.raises(DataError, match=r"different lengths"):
        read_records({"a": [1, 2], "b": ["x"]})
    with pytest.raises(TypeError, match=r"datasets.Dataset"):
        read_records(42)


class FakeClassLabel:
    def __init__(self, names):
        self.names = names


class FakeSequence:
    def __init__(self, feature):
        self.feature = feature


class FakeDataset:
    """The part of datasets.Dataset the readers use (duck typing; datasets is not installed here)."""

    column_names = ["tokens", "ner_tags", "label"]
    features = {
        "ner_tags": FakeSequence(FakeClassLabel(["O", "B-PER", "I-PER"])),
        "label": FakeClassLabel(["neg", "pos"]),
    }

    def __iter__(self):
        yield {"tokens": ["Ann", "runs"], "ner_tags": [1, 0], "label": 1}
        yield {"tokens": ["Bob"], "ner_tags": [1], "label": 0}


def test_datasets_duck_typed_with_class_names():
    records = read_records(FakeDataset())
    assert records.columns == ("tokens", "ner_tags", "label")
    assert records.label_names_of("ner_tags") == ["O", "B-PER", "I-PER"]
    assert records.label_names_of("label") == ["neg", "pos"]
    assert records.locations[1] == "<datasets.Dataset> row 1"


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.tsv", "", "is empty"),
        ("blank.jsonl", "\n  \n", "is empty"),
        ("header.tsv", "text\tlabel\n", "no rows"),
        ("fields.tsv", "text\tlabel\na\t1\nb\n", r"line 3: 1 fields but the header has 2"),
        ("dup.csv", "a,a\n1,2\n", "name every column once"),
        ("bad.jsonl", '{"a": 1}\n{"a": \n', r"line 2 column \d+: not valid JSON"),
        ("list.jsonl", "[1, 2]\n", "line 1: expected a JSON object"),
        ("bad.json", '{"a": ', r"line 1 column \d+: not valid JSON"),
        ("scalar.json", "3", "top-level int"),
        ("ragged.conll", "EU NNP B-NP B-ORG\nrejects VBZ O\n", r"line 2: 3 columns but the file's lines have 4"),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(DataError, match=message) as info:
        read_records(path, task="token-classification")
    assert name in str(info.value)


def test_non_utf8_names_line_and_column(tmp_path):
    path = write(tmp_path, "latin.tsv", "text\tlabel\ncaf\xe9\t1\n".encode("latin-1"))
    with pytest.raises(DataError, match=r"latin.tsv line 2 column 4: byte 0xe9 is not UTF-8"):
        read_records(path)


def test_bom_is_dropped_and_missing_file(tmp_path):
    path = write(tmp_path, "bom.csv", "\ufefftext,label\nx,1\n")
    assert read_records(path).columns == ("text", "label")
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        read_records(tmp_path / "absent.tsv")


def test_missing_column_lists_the_columns(tmp_path):
    records = read_records(write(tmp_path, "a.tsv", "sentence\tlabel\nx\t1\n"))
    with pytest.raises(DataError, match=r"a.tsv: no column 'text'; the columns are \['sentence', 'label'\]"):
        records.require("text")


def test_split_and_select_keep_locations():
    records = read_records([{"i": i} for i in range(10)])
    train, dev = split_records(records, [0.8, 0.2])
    assert [r["i"] for r in train.rows] == list(range(8)) and [r["i"] for r in dev.rows] == [8, 9]
    assert dev.locations == ["<list> row 8", "<list> row 9"]
    assert isinstance(select_records(records, [3, 1]), Records)
    with pytest.raises(ValueError, match=r"empty block"):
        split_records(records, [0.5, 0.04])
    with pytest.raises(ValueError, match=r"sum to at most 1"):
        split_records(records, [0.8, 0.3])
