"""DistilBertConfig: real config.json files round-trip unchanged, aliases, validation, replace, from_pretrained."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from distilbert_mf import DistilBertConfig

REAL_CONFIGS = ["tiny-random-distilbert/config.json", "distilbert-base-uncased-tokenizer/config.json"]


@pytest.mark.parametrize("name", REAL_CONFIGS)
def test_real_config_round_trips_byte_identical(shared_data: Path, tmp_path: Path, name: str) -> None:
    source = shared_data / name
    config = DistilBertConfig.from_pretrained(source)
    written = config.save_pretrained(tmp_path)
    assert written == tmp_path / "config.json"
    assert written.read_bytes() == source.read_bytes()
    again = DistilBertConfig.from_pretrained(tmp_path)
    assert again == config and again.to_dict() == json.loads(source.read_text())


def test_real_config_values_and_unknown_keys(shared_data: Path) -> None:
    config = DistilBertConfig.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")
    assert (config.dim, config.n_heads, config.n_layers, config.vocab_size) == (768, 12, 6, 30522)
    assert config.extra["tie_weights_"] is True and config.extra["architectures"] == ["DistilBertForMaskedLM"]
    tiny = DistilBertConfig.from_pretrained(shared_data / "tiny-random-distilbert")
    assert tiny.extra["hidden_act"] == "gelu" and tiny.extra["transformers_version"] == "4.28.0.dev0"


def test_defaults_match_transformers() -> None:
    config = DistilBertConfig()
    assert (config.vocab_size, config.max_position_embeddings, config.n_layers, config.n_heads) == (30522, 512, 6, 12)
    assert (config.dim, config.hidden_dim, config.activation, config.sinusoidal_pos_embds) == (768, 3072, "gelu", False)
    assert (config.dropout, config.attention_dropout, config.qa_dropout, config.seq_classif_dropout) == (
        0.1,
        0.1,
        0.1,
        0.2,
    )
    assert (config.initializer_range, config.pad_token_id, config.tie_word_embeddings) == (0.02, 0, True)
    assert config.num_labels == 2 and config.id2label == {0: "LABEL_0", 1: "LABEL_1"}
    assert config.label2id == {"LABEL_0": 0, "LABEL_1": 1} and config.problem_type is None


def test_aliases() -> None:
    config = DistilBertConfig.from_dict({"hidden_size": 64, "num_attention_heads": 8, "num_hidden_layers": 3})
    assert (config.dim, config.n_heads, config.n_layers) == (64, 8, 3)
    assert (config.hidden_size, config.num_attention_heads, config.num_hidden_layers) == (64, 8, 3)
    # a file that used the aliases writes them back, not the DistilBERT names
    assert config.to_dict() == {
        "hidden_size": 64,
        "model_type": "distilbert",
        "num_attention_heads": 8,
        "num_hidden_layers": 3,
    }
    assert config.replace(hidden_size=128, n_heads=4).dim == 128
    with pytest.raises(ValueError, match="dim=32 and its alias hidden_size=64"):
        DistilBertConfig.from_dict({"dim": 32, "hidden_size": 64})


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"dim": 30, "n_heads": 4}, "n_heads=4 must divide dim=30"),
        ({"dim": 0}, "dim must be a positive integer, got 0"),
        ({"vocab_size": -5}, "vocab_size must be a positive integer, got -5"),
        ({"hidden_dim": 2.5}, "hidden_dim must be a positive integer, got 2.5"),
        ({"n_layers": True}, "n_layers must be a positive integer, got True"),
        ({"max_position_embeddings": 0}, "max_position_embeddings must be a positive integer"),
        ({"activation": "tanh"}, "activation must be one of .*'gelu'.*got 'tanh'"),
        ({"dropout": 1.0}, r"dropout must be a probability in \[0, 1\), got 1.0"),
        ({"num_labels": 0}, "num_labels must be a positive integer, got 0"),
        ({"num_labels": 3, "id2label": {0: "a", 1: "b"}}, "num_labels=3 is inconsistent with id2label"),
        ({"id2label": {0: "a", 2: "b"}}, "id2label must map exactly the indices 0..1"),
        ({"id2label": {"x": "a"}}, "id2label keys must be integers"),
        ({"label2id": {"a": "first"}}, "label2id values must be integer class indices"),
        ({"problem_type": "ranking"}, "problem_type must be None or one of"),
        ({"pad_token_id": 30522}, r"pad_token_id must be in \[0, vocab_size=30522\), got 30522"),
        ({"pad_token_id": "0"}, "pad_token_id must be in"),
        ({"initializer_range": "small"}, "initializer_range must be a number >= 0, got 'small'"),
        ({"sinusoidal_pos_embds": "yes"}, "sinusoidal_pos_embds must be True or False, got 'yes'"),
    ],
)
def test_validation_errors(changes: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        DistilBertConfig(**changes)


def test_type_errors() -> None:
    with pytest.raises(TypeError, match="id2label must be a dict"):
        DistilBertConfig(id2label=["a", "b"])
    with pytest.raises(TypeError, match="from_dict expects a dict, got list"):
        DistilBertConfig.from_dict([1, 2])
    with pytest.raises(TypeError, match="unknown DistilBertConfig field 'n_head'"):
        DistilBertConfig().replace(n_head=4)
    with pytest.raises(ValueError, match="model_type='bert'"):
        DistilBertConfig.from_dict({"model_type": "bert"})


def test_labels() -> None:
    config = DistilBertConfig(id2label={"0": "NEGATIVE", "1": "POSITIVE", "2": "NEUTRAL"})
    assert config.num_labels == 3 and config.id2label == {0: "NEGATIVE", 1: "POSITIVE", 2: "NEUTRAL"}
    assert config.label2id == {"NEGATIVE": 0, "POSITIVE": 1, "NEUTRAL": 2}
    assert config.to_dict()["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE", "2": "NEUTRAL"}
    assert DistilBertConfig(num_labels=4).id2label == {i: f"LABEL_{i}" for i in range(4)}


def test_replace() -> None:
    base = DistilBertConfig(id2label={0: "neg", 1: "pos"}, dim=64, n_heads=4)
    assert base.replace() is base
    changed = base.replace(dropout=0.0, n_layers=2)
    assert (changed.dropout, changed.n_layers, changed.dim, changed.id2label) == (0.0, 2, 64, {0: "neg", 1: "pos"})
    assert (base.dropout, base.n_layers) == (0.1, 6)  # frozen: the original is unchanged
    relabelled = base.replace(num_labels=3)
    assert relabelled.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    renamed = base.replace(id2label={0: "a", 1: "b", 2: "c"})
    assert renamed.num_labels == 3 and renamed.label2id == {"a": 0, "b": 1, "c": 2}
    with pytest.raises(ValueError, match="n_heads=5 must divide dim=64"):
        base.replace(n_heads=5)
    with pytest.raises(AttributeError):
        base.dim = 3  # type: ignore[misc]


def test_from_pretrained_folder_file_and_overrides(shared_data: Path, tmp_path: Path) -> None:
    folder = shared_data / "tiny-random-distilbert"
    config = DistilBertConfig.from_pretrained(folder, dropout=0.0, num_labels=5)
    assert (config.dropout, config.num_labels, config.dim) == (0.0, 5, 32)
    assert DistilBertConfig.from_pretrained(folder / "config.json") == DistilBertConfig.from_pretrained(folder)
    with pytest.raises(FileNotFoundError, match=r"has no config.json"):
        DistilBertConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{broken")
    with pytest.raises(ValueError, match="not valid JSON"):
        DistilBertConfig.from_pretrained(tmp_path)


def test_new_config_written_in_full_and_read_back(tmp_path: Path) -> None:
    config = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, num_labels=3)
    config.save_pretrained(tmp_path)
    data = json.loads((tmp_path / "config.json").read_text())
    assert data["model_type"] == "distilbert" and data["dim"] == 32 and data["id2label"]["2"] == "LABEL_2"
    assert DistilBertConfig.from_pretrained(tmp_path) == config
    assert hash(DistilBertConfig.from_pretrained(tmp_path)) == hash(config)
