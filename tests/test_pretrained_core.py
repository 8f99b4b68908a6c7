"""The shared pretrained core in every framework: the from_pretrained arguments transformers users pass, the model
methods (num_parameters, embeddings accessors, resize_token_embeddings, save formats, return_dict=False), the Auto
classes, and one behaviour for empty batches and zero-length sequences."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import numpy as np
import pytest

import distilbert_mf
from distilbert_mf import DistilBertConfig
from distilbert_mf.auto import AUTO_MODELS, HEAD_CLASSES, AutoConfig
from distilbert_mf.checkpoint.resize import resized_vocabulary, target_size
from distilbert_mf.config import UnsupportedModelTypeError

FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.torch),
    pytest.param("tf", marks=pytest.mark.tensorflow),
    pytest.param("flax", marks=pytest.mark.flax),
]
MODULES = {
    "pt": ("distilbert_mf.torch", ""),
    "tf": ("distilbert_mf.tensorflow", "TF"),
    "flax": ("distilbert_mf.flax", "Flax"),
}
TINY = DistilBertConfig(
    vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=24, num_labels=2
)


def head_class(framework: str, head: str) -> type:
    module, prefix = MODULES[framework]
    return getattr(importlib.import_module(module), prefix + HEAD_CLASSES[head])


def numpy(value) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach()
    return np.asarray(value)


@pytest.fixture(scope="module")
def mlm_folder(tmp_path_factory) -> Path:
    """A tiny masked-LM checkpoint written by our PyTorch model (the pretrained body every test starts from)."""
    pytest.importorskip("torch")
    folder = tmp_path_factory.mktemp("mlm")
    head_class("pt", "masked_lm")(TINY).save_pretrained(folder)
    return folder


IDS = np.array([[1, 5, 7, 9, 2], [1, 6, 2, 0, 0]])
MASK = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_new_head_with_ignore_mismatched_sizes(framework, mlm_folder, tmp_path) -> None:
    cls = head_class(framework, "sequence_classification")
    two = cls.from_pretrained(mlm_folder)  # a new head on the pretrained body: missing keys, reported
    two.save_pretrained(tmp_path / "two")
    with pytest.raises(ValueError, match=r"ignore_mismatched_sizes=True") as err:
        cls.from_pretrained(tmp_path / "two", num_labels=3)
    assert "classifier.weight" in str(err.value) and "(2, 16)" in str(err.value) and "(3, 16)" in str(err.value)
    model, info = cls.from_pretrained(
        tmp_path / "two", num_labels=3, ignore_mismatched_sizes=True, output_loading_info=True
    )
    assert model.config.num_labels == 3 and model.config.id2label == {0: "LABEL_0", 1: "LABEL_1", 2: "LABEL_2"}
    mismatched = {key: shapes for key, *shapes in info["mismatched_keys"]}
    assert set(mismatched) == {"classifier.weight", "classifier.bias"}
    assert tuple(mismatched["classifier.weight"][0]) == (2, 16) and tuple(mismatched["classifier.weight"][1]) == (3, 16)
    assert numpy(model(input_ids=IDS, attention_mask=MASK).logits).shape == (2, 3)
    kept = two.canonical_state_dict()
    for key, value in model.canonical_state_dict().items():
        if key not in mismatched:
            np.testing.assert_array_equal(value, kept[key])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_transformers_arguments_and_unknown_ones(framework, mlm_folder) -> None:
    cls = head_class(framework, "sequence_classification")
    model = cls.from_pretrained(
        mlm_folder,
        id2label={0: "neg", 1: "pos", 2: "neutral"},
        output_attentions=True,
        output_hidden_states=True,
        low_cpu_mem_usage=True,
        trust_remote_code=False,
        from_pt=True,
        problem_type="single_label_classification",
    )
    assert model.config.num_labels == 3 and model.config.label2id == {"neg": 0, "pos": 1, "neutral": 2}
    out = model(input_ids=IDS, attention_mask=MASK)
    assert len(out.attentions) == 2 and len(out.hidden_states) == 3  # config defaults, as transformers
    assert model(input_ids=IDS, output_attentions=False).attentions is None  # the call overrides the default
    with pytest.raises(ValueError, match="trust_remote_code=True is not supported"):
        cls.from_pretrained(mlm_folder, trust_remote_code=True)
    with pytest.raises(TypeError, match=r"unknown DistilBertConfig field 'bogus'.*ignore_mismatched_sizes"):
        cls.from_pretrained(mlm_folder, bogus=1)
    assert cls.from_pretrained(mlm_folder, dtype="auto").canonical_state_dict()["classifier.weight"].dtype == np.float32


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_return_dict_false_gives_transformers_tuple_order(framework, mlm_folder) -> None:
    model = head_class(framework, "question_answering").from_pretrained(mlm_folder)
    out = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True)
    plain = model(input_ids=IDS, attention_mask=MASK, output_hidden_states=True, return_dict=False)
    assert isinstance(plain, tuple) and len(plain) == 3  # start_logits, end_logits, hidden_states
    np.testing.assert_array_equal(numpy(plain[0]), numpy(out.start_logits))
    np.testing.assert_array_equal(numpy(plain[1]), numpy(out.end_logits))
    labelled = model(input_ids=IDS, start_positions=np.array([1, 2]), end_positions=np.array([2, 2]), return_dict=False)
    assert len(labelled) == 3 and numpy(labelled[0]).shape == ()  # the loss first, as transformers
    quiet = head_class(framework, "base").from_pretrained(mlm_folder, return_dict=False)
    assert isinstance(quiet(input_ids=IDS), tuple)  # the config default


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_num_parameters_and_embedding_accessors(framework, mlm_folder) -> None:
    model = head_class(framework, "masked_lm").from_pretrained(mlm_folder)
    arrays = model.canonical_state_dict()
    total = sum(a.size for k, a in arrays.items() if k != "vocab_projector.weight")  # the tied projector once
    assert model.num_parameters() == total
    embeddings = (40 + 24) * 16
    assert model.num_parameters(exclude_embeddings=True) == total - embeddings
    assert model.num_parameters(only_trainable=True) == total
    assert model.get_output_embeddings() is not None
    assert head_class(framework, "base").from_pretrained(mlm_folder).get_output_embeddings() is None
    table = model.get_input_embeddings()
    assert table is model.base_model.embeddings.word_embeddings


def test_num_parameters_equal_transformers(mlm_folder) -> None:
    transformers = pytest.importorskip("transformers")
    ours = head_class("pt", "masked_lm").from_pretrained(mlm_folder)
    theirs = transformers.DistilBertForMaskedLM.from_pretrained(mlm_folder)
    for kw in ({}, {"exclude_embeddings": True}, {"only_trainable": True}):
        assert ours.num_parameters(**kw) == theirs.num_parameters(**kw), kw


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_resize_token_embeddings_keeps_rows_ties_projector_and_saves(framework, mlm_folder, tmp_path) -> None:
    model = head_class(framework, "masked_lm").from_pretrained(mlm_folder)
    before = model.canonical_state_dict()
    layer = model.resize_token_embeddings(45, pad_to_multiple_of=8)
    assert layer is model.get_input_embeddings() and model.config.vocab_size == 48
    after = model.canonical_state_dict()
    table = after["distilbert.embeddings.word_embeddings.weight"]
    assert table.shape == (48, 16) and after["vocab_projector.bias"].shape == (48,)
    np.testing.assert_array_equal(table[:40], before["distilbert.embeddings.word_embeddings.weight"])
    np.testing.assert_array_equal(after["vocab_projector.weight"], table)  # still tied
    mean = before["distilbert.embeddings.word_embeddings.weight"].mean(axis=0)
    np.testing.assert_allclose(table[40:], np.broadcast_to(mean, (8, 16)), atol=1e-4)
    np.testing.assert_allclose(after["vocab_projector.bias"][40:], before["vocab_projector.bias"].mean(), atol=1e-6)
    logits = numpy(model(input_ids=np.array([[1, 47, 2]])).logits)
    assert logits.shape == (1, 3, 48) and np.isfinite(logits).all()
    model.save_pretrained(tmp_path / "resized")
    assert json.loads((tmp_path / "resized" / "config.json").read_text())["vocab_size"] == 48
    back = type(model).from_pretrained(tmp_path / "resized")
    np.testing.assert_array_equal(back.canonical_state_dict()["vocab_projector.bias"], after["vocab_projector.bias"])
    model.resize_token_embeddings(30)  # shrinking keeps the first rows
    np.testing.assert_array_equal(
        model.canonical_state_dict()["distilbert.embeddings.word_embeddings.weight"], table[:30]
    )


def test_resize_matches_transformers_rule(mlm_folder) -> None:
    transformers = pytest.importorskip("transformers")
    theirs = transformers.DistilBertForMaskedLM.from_pretrained(mlm_folder)
    theirs.resize_token_embeddings(45, pad_to_multiple_of=8)
    ours = head_class("pt", "masked_lm").from_pretrained(mlm_folder)
    ours.resize_token_embeddings(45, pad_to_multiple_of=8)
    assert ours.config.vocab_size == theirs.config.vocab_size == 48
    t = theirs.state_dict()
    o = ours.canonical_state_dict()
    # the new rows are random draws around the same mean with 1e-9 of the covariance: equal within that spread
    np.testing.assert_allclose(
        o["distilbert.embeddings.word_embeddings.weight"],
        t["distilbert.embeddings.word_embeddings.weight"].numpy(),
        atol=1e-4,
    )
    np.testing.assert_allclose(o["vocab_projector.bias"], t["vocab_projector.bias"].numpy(), atol=1e-6)


def test_resize_rules() -> None:
    assert target_size(40, None, 8) == 40 and target_size(40, 41, 8) == 48 and target_size(40, 30, None) == 30
    for bad in (0, -1, 2.5, True):
        with pytest.raises(ValueError, match="new_num_tokens must be a positive int"):
            target_size(40, bad, None)
    with pytest.raises(ValueError, match="pad_to_multiple_of must be a positive int"):
        target_size(40, 41, 0)
    arrays = {"embeddings.word_embeddings.weight": np.zeros((40, 4), np.float32)}
    with pytest.raises(ValueError, match="pad_token_id 5 would fall outside"):
        resized_vocabulary(arrays, DistilBertConfig(vocab_size=40, dim=4, n_heads=1, pad_token_id=5), "base", 3)
    # a degenerate table (all rows equal) has no positive-definite covariance: new rows are the mean
    config, out = resized_vocabulary(arrays, DistilBertConfig(vocab_size=40, dim=4, n_heads=1), "base", 42)
    assert config.vocab_size == 42 and not out["embeddings.word_embeddings.weight"].any()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_safe_serialization_false_writes_pytorch_bin(framework, mlm_folder, tmp_path) -> None:
    model = head_class(framework, "masked_lm").from_pretrained(mlm_folder)
    written = model.save_pretrained(tmp_path / "bin", safe_serialization=False)
    assert sorted(p.name for p in written) == ["config.json", "pytorch_model.bin"]
    back = type(model).from_pretrained(tmp_path / "bin")
    for key, value in model.canonical_state_dict().items():
        np.testing.assert_array_equal(back.canonical_state_dict()[key], value)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_empty_batch_and_zero_length_agree(framework, mlm_folder) -> None:
    model = head_class(framework, "sequence_classification").from_pretrained(mlm_folder)
    out = model(input_ids=np.zeros((0, 5), np.int64), attention_mask=np.zeros((0, 5), np.int64))
    assert numpy(out.logits).shape == (0, 2)  # an empty batch is a correct empty output
    with pytest.raises(ValueError, match="sequence length 0"):
        model(input_ids=np.zeros((2, 0), np.int64))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_auto_classes_load_every_head(framework, mlm_folder) -> None:
    prefix = MODULES[framework][1]
    module = importlib.import_module(MODULES[framework][0])
    for head, name in HEAD_CLASSES.items():
        auto_name = prefix + "AutoModel" + name.removeprefix("DistilBertModel").removeprefix("DistilBert")
        auto = getattr(module, auto_name)
        assert auto is getattr(distilbert_mf, auto_name) is AUTO_MODELS[auto_name]
        model = auto.from_pretrained(mlm_folder)
        assert type(model) is head_class(framework, head)
        assert type(auto.from_config(TINY)) is head_class(framework, head)
    with pytest.raises(TypeError, match="is not instantiated"):
        getattr(module, prefix + "AutoModel")()
    with pytest.raises(TypeError, match="expects a DistilBertConfig"):
        getattr(module, prefix + "AutoModel").from_config({"dim": 16})


def test_auto_config_and_other_model_types(mlm_folder, tmp_path) -> None:
    config = AutoConfig.from_pretrained(mlm_folder, num_labels=4)
    assert config.num_labels == 4 and AutoConfig.for_model(dim=32, n_heads=4).dim == 32
    assert AutoConfig.from_pretrained(mlm_folder, return_unused_kwargs=True)[1] == {}
    bert = tmp_path / "bert"
    bert.mkdir()
    (bert / "config.json").write_text(json.dumps({"model_type": "bert", "hidden_size": 16}))
    with pytest.raises(UnsupportedModelTypeError, match=r"model_type='bert'.*conversion/bert_to_distilbert\.py"):
        distilbert_mf.AutoModelForSequenceClassification.from_pretrained(bert)
    (bert / "config.json").write_text(json.dumps({"model_type": "roberta"}))
    with pytest.raises(UnsupportedModelTypeError, match=r"model_type='roberta'.*Use transformers"):
        AutoConfig.from_pretrained(bert)


def test_assigning_a_config_field_says_what_to_do(mlm_folder) -> None:
    import dataclasses

    config = AutoConfig.from_pretrained(mlm_folder)
    with pytest.raises(dataclasses.FrozenInstanceError, match=r"replace\(num_labels=3\)"):
        config.num_labels = 3


@pytest.mark.torch
def test_torch_device_map(mlm_folder) -> None:
    import torch

    cls = head_class("pt", "base")
    for choice in ("cpu", "auto", torch.device("cpu"), {"": "cpu"}):
        assert next(cls.from_pretrained(mlm_folder, device_map=choice).parameters()).device.type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"'cuda' asks for a CUDA GPU, but this PyTorch sees none"):
            cls.from_pretrained(mlm_folder, device_map="cuda")
    with pytest.raises(ValueError, match="would split the model across devices"):
        cls.from_pretrained(mlm_folder, device_map={"transformer": "cpu", "embeddings": "cpu"})
    with pytest.raises(ValueError, match="unknown device 'nonsense'"):
        cls.from_pretrained(mlm_folder, device_map="nonsense")
