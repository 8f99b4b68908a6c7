"""Keras models: from_pretrained / save_pretrained through distilbert_mf.checkpoint, every format, dtypes."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_helpers import CLASSES, HEADS, build, main_output, make_inputs, tiny_config  # noqa: E402

from distilbert_mf.checkpoint import ShapeMismatchError  # noqa: E402
from distilbert_mf.checkpoint.io import write_weights  # noqa: E402
from distilbert_mf.tensorflow import (  # noqa: E402
    TFDistilBertForMaskedLM,
    TFDistilBertForSequenceClassification,
    TFDistilBertModel,
)

pytestmark = pytest.mark.tensorflow


def run(model, head):
    ids, mask = make_inputs(head, model.config)
    return main_output(head, model(input_ids=ids, attention_mask=mask))


@pytest.mark.parametrize("head", HEADS)
def test_save_pretrained_round_trip_with_pytorch_names(head, tf_models, tmp_path):
    from safetensors import safe_open

    model = tf_models[head]
    written = model.save_pretrained(tmp_path)
    assert {p.name for p in written} == {"config.json", "model.safetensors"}
    with safe_open(tmp_path / "model.safetensors", "np") as f:
        keys, metadata = set(f.keys()), f.metadata()
    expected = set(model.canonical_state_dict()) - {"vocab_projector.weight"}  # the tied projector is not duplicated
    assert keys == expected and metadata == {"format": "pt"}
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["architectures"] == ["DistilBert" + type(model).__name__.removeprefix("TFDistilBert")]
    loaded = CLASSES[head].from_pretrained(tmp_path)
    np.testing.assert_array_equal(run(loaded, head), run(model, head))
    assert loaded.config == model.config


def test_base_and_head_checkpoints_load_both_ways(tf_models, tmp_path, caplog):
    base = tf_models["base"]
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        head = TFDistilBertForMaskedLM.from_pretrained(tmp_path / "base")
    assert "vocab_transform.weight" in caplog.text  # the head's own layers are reported missing, by name
    encoder = head.distilbert.canonical_state_dict()
    for key, value in base.canonical_state_dict().items():
        np.testing.assert_array_equal(encoder[key], value)

    tf_models["sequence_classification"].save_pretrained(tmp_path / "head")
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        bare = TFDistilBertModel.from_pretrained(tmp_path / "head")
    assert "pre_classifier.weight" in caplog.text  # unexpected keys, by name
    np.testing.assert_array_equal(run(bare, "base"), run(tf_models["sequence_classification"].distilbert, "base"))


def test_from_pretrained_overrides_dtype_and_errors(tf_models, tmp_path, caplog):
    tf_models["sequence_classification"].save_pretrained(tmp_path)
    with pytest.raises(ShapeMismatchError, match=r"classifier\.weight"):
        TFDistilBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    with pytest.raises(TypeError, match="unknown DistilBertConfig field"):
        TFDistilBertForSequenceClassification.from_pretrained(tmp_path, n_layer=3)
    compat = TFDistilBertForSequenceClassification.from_pretrained(tmp_path, from_pt=True)  # accepted, ignored
    np.testing.assert_array_equal(
        run(compat, "sequence_classification"), run(tf_models["sequence_classification"], "sequence_classification")
    )
    bf16 = TFDistilBertForSequenceClassification.from_pretrained(tmp_path, dtype="bf16")
    assert {keras.backend.standardize_dtype(w.dtype) for w in bf16.weights} == {"bfloat16"}
    mixed = TFDistilBertForSequenceClassification.from_pretrained(tmp_path, dtype=keras.DTypePolicy("mixed_bfloat16"))
    assert mixed.dtype_policy.name == "mixed_bfloat16"
    assert {keras.backend.standardize_dtype(w.dtype) for w in mixed.weights} == {"float32"}
    bf16.save_pretrained(tmp_path / "bf16")
    auto = TFDistilBertForSequenceClassification.from_pretrained(tmp_path / "bf16", dtype="auto")
    assert {keras.backend.standardize_dtype(w.dtype) for w in auto.weights} == {"bfloat16"}
    with caplog.at_level(logging.WARNING):
        TFDistilBertForSequenceClassification.from_pretrained(tmp_path, dtype="float16")
    assert "float16 was requested on a CPU" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        TFDistilBertForSequenceClassification.from_pretrained(tmp_path, dtype="mixed_bfloat16")
    assert "float16 was requested" not in caplog.text
    with pytest.raises(FileNotFoundError):
        TFDistilBertModel.from_pretrained(tmp_path / "missing-folder", local_files_only=True)


@pytest.mark.parametrize("fmt", ["safetensors", "pytorch_bin", "tf_h5", "flax_msgpack"])
@pytest.mark.parametrize("head", ["masked_lm", "question_answering"])
def test_every_format_written_by_the_checkpoint_package_loads(fmt, head, tf_models, tmp_path):
    model = tf_models[head]
    write_weights(tmp_path, model.canonical_state_dict(), fmt, head=head, config=model.config)
    model.config.save_pretrained(tmp_path)
    loaded = CLASSES[head].from_pretrained(tmp_path)
    np.testing.assert_array_equal(run(loaded, head), run(model, head))


def test_sharded_save_loads_back(tf_models, tmp_path):
    model = tf_models["token_classification"]
    written = model.save_pretrained(tmp_path, max_shard_size=20_000)
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(written) > 3
    loaded = CLASSES["token_classification"].from_pretrained(tmp_path)
    np.testing.assert_array_equal(run(loaded, "token_classification"), run(model, "token_classification"))


def test_sinusoidal_checkpoint_without_table_gets_it_generated(tmp_path):
    from distilbert_mf.checkpoint import sinusoidal_table

    model = build("base", tiny_config(sinusoidal_pos_embds=True))
    state = model.canonical_state_dict()
    del state["embeddings.position_embeddings.weight"]
    write_weights(tmp_path, state, "safetensors", head="base", config=model.config)
    model.config.save_pretrained(tmp_path)
    loaded = TFDistilBertModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(
        np.asarray(loaded.embeddings.position_embeddings.embeddings), sinusoidal_table(64, 32)
    )


@pytest.mark.torch
@pytest.mark.reference
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_transformers_checkpoint_matches_transformers_pytorch(weights, shared_data, tmp_path):
    """Hugging Face's own tiny checkpoint: our Keras model == transformers' PyTorch DistilBertModel."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    source = shared_data / "tiny-random-distilbert"
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("config.json", weights):
        (folder / name).symlink_to(source / name)
    model = TFDistilBertModel.from_pretrained(folder)
    assert model.config.n_layers == 5 and model.config.vocab_size == 1124
    rng = np.random.default_rng(0)
    ids = rng.integers(1, 1124, (2, 9)).astype(np.int32)
    mask = np.ones_like(ids)
    mask[1, 6:] = 0
    ours = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    reference = transformers.DistilBertModel.from_pretrained(source, attn_implementation="eager").eval()
    with torch.no_grad():
        theirs = reference(
            input_ids=torch.tensor(ids, dtype=torch.long),
            attention_mask=torch.tensor(mask),
            output_hidden_states=True,
            output_attentions=True,
        )
    for a, b in zip(ours.hidden_states, theirs.hidden_states):
        np.testing.assert_allclose(np.asarray(a)[mask == 1], b.numpy()[mask == 1], atol=1e-5)
    for a, b in zip(ours.attentions, theirs.attentions):
        np.testing.assert_allclose(np.asarray(a), b.numpy(), atol=1e-5)


def test_from_pretrained_neither_draws_random_weights_nor_runs_the_model(tf_models, tmp_path, monkeypatch):
    """A complete checkpoint is copied into variables declared without values: no initializer, no forward pass."""
    from distilbert_mf.tensorflow import modeling

    tf_models["sequence_classification"].save_pretrained(tmp_path / "full")
    tf_models["base"].save_pretrained(tmp_path / "base")

    def refuse(*args, **kwargs):
        raise AssertionError("from_pretrained drew random weights or ran the model")

    with monkeypatch.context() as patch:
        patch.setattr(keras.initializers.RandomNormal, "__call__", refuse)
        patch.setattr(modeling.TFDistilBertModel, "call", refuse)
        loaded = TFDistilBertForSequenceClassification.from_pretrained(tmp_path / "full")
    np.testing.assert_array_equal(
        run(loaded, "sequence_classification"), run(tf_models["sequence_classification"], "sequence_classification")
    )
    for variable in loaded.weights:
        assert variable.value is not None

    draws = []
    original = keras.initializers.RandomNormal.__call__
    monkeypatch.setattr(
        keras.initializers.RandomNormal, "__call__", lambda self, *a, **k: draws.append(a) or original(self, *a, **k)
    )
    head = TFDistilBertForSequenceClassification.from_pretrained(tmp_path / "base")  # the head's layers start random
    assert sorted(shape for shape, *_ in draws) == sorted([(32, 32), (32, 3)])  # pre_classifier, classifier kernels
    assert np.std(keras.ops.convert_to_numpy(head.classifier.kernel)) > 0


def test_from_pretrained_does_not_alias_or_change_the_source_arrays(tf_models):
    """load_canonical_state_dict copies: changing the numpy arrays afterwards leaves the model alone."""
    source = tf_models["sequence_classification"]
    state = source.canonical_state_dict()
    model = TFDistilBertForSequenceClassification(source.config)
    model.load_canonical_state_dict(state)
    before = run(model, "sequence_classification")
    for array in state.values():
        array[...] = 0
    np.testing.assert_array_equal(run(model, "sequence_classification"), before)
