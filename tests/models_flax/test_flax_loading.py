"""Flax checkpoints: the canonical table, save/load round trips in every direction, dtypes, msgpack, real files."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")

import jax.numpy as jnp
from flax import nnx
from flax_helpers import (
    ALL_CLASSES,
    HEAD_CLASSES,
    build,
    fit_config,
    main_output,
    make_inputs,
    tiny,
)
from safetensors import safe_open

from distilbert_mf.checkpoint import ShapeMismatchError, expected_shapes
from distilbert_mf.checkpoint.io import write_weights
from distilbert_mf.flax import (
    FlaxDistilBertForMaskedLM,
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertModel,
)
from distilbert_mf.flax.loading import canonical_key

pytestmark = pytest.mark.flax
CONFIG = tiny()
ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_canonical_state_dict_has_every_key_in_pytorch_layout(cls):
    model = build(cls, CONFIG)
    config = fit_config(cls, CONFIG)
    state = model.canonical_state_dict()
    expected = expected_shapes(config, cls.head)
    assert list(state) == list(expected)
    assert {k: v.shape for k, v in state.items()} == expected
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in state.values())
    prefix = "" if cls is FlaxDistilBertModel else "distilbert."
    encoder = model if cls is FlaxDistilBertModel else model.distilbert
    q_lin = encoder.transformer.layer[1].attention.q_lin
    np.testing.assert_array_equal(
        state[prefix + "transformer.layer.1.attention.q_lin.weight"], np.asarray(q_lin.kernel[...]).T
    )
    np.testing.assert_array_equal(
        state[prefix + "embeddings.LayerNorm.weight"], np.asarray(encoder.embeddings.LayerNorm.scale[...])
    )


def test_canonical_key_table():
    path = ("distilbert", "transformer", "layer", 0, "attention", "q_lin", "kernel")
    assert canonical_key(path) == ("distilbert.transformer.layer.0.attention.q_lin.weight", True)
    assert canonical_key(("embeddings", "word_embeddings", "embedding")) == ("embeddings.word_embeddings.weight", False)
    assert canonical_key(("vocab_layer_norm", "scale")) == ("vocab_layer_norm.weight", False)
    with pytest.raises(KeyError, match="count"):
        canonical_key(("dropout", "rngs", "count"))


def test_tied_projector_is_the_word_embedding_matrix():
    state = build(FlaxDistilBertForMaskedLM, CONFIG).canonical_state_dict()
    np.testing.assert_array_equal(
        state["vocab_projector.weight"], state["distilbert.embeddings.word_embeddings.weight"]
    )


def test_initialisation_follows_transformers():
    state = build(FlaxDistilBertForSequenceClassification, CONFIG.replace(initializer_range=0.5)).canonical_state_dict()
    assert not state["distilbert.embeddings.word_embeddings.weight"][CONFIG.pad_token_id].any()
    assert np.std(state["distilbert.transformer.layer.0.ffn.lin1.weight"]) == pytest.approx(0.5, rel=0.1)
    assert not state["classifier.bias"].any()
    assert (state["distilbert.transformer.layer.0.sa_layer_norm.weight"] == 1).all()


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_load_canonical_state_dict_round_trip(cls):
    source, target = build(cls, CONFIG, seed=1), build(cls, CONFIG, seed=2)
    input_ids, mask = make_inputs(cls, CONFIG)
    assert not np.allclose(main_output(cls, source(input_ids, mask)), main_output(cls, target(input_ids, mask)))
    report = target.load_canonical_state_dict(source.canonical_state_dict())
    assert report.missing == [] and report.unexpected == []
    np.testing.assert_array_equal(main_output(cls, target(input_ids, mask)), main_output(cls, source(input_ids, mask)))


def test_load_canonical_state_dict_checks():
    model = build(FlaxDistilBertForSequenceClassification, CONFIG)
    state = model.canonical_state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    with pytest.raises(KeyError, match=r"missing keys \['classifier.weight', 'classifier.bias'\]"):
        model.load_canonical_state_dict(partial)
    report = model.load_canonical_state_dict(partial, strict=False)
    assert report.missing == ["classifier.weight", "classifier.bias"]
    with pytest.raises(KeyError, match="unexpected keys"):
        model.load_canonical_state_dict({**state, "extra.weight": np.zeros(3)})
    bad = dict(state, **{"classifier.weight": np.zeros((5, CONFIG.dim), np.float32)})
    with pytest.raises(ShapeMismatchError, match=r"classifier.weight.*\(5, 32\).*\(3, 32\)"):
        model.load_canonical_state_dict(bad)
    assert issubclass(ShapeMismatchError, ValueError)


def test_loading_casts_to_the_parameter_dtype():
    import ml_dtypes

    model = build(FlaxDistilBertModel, CONFIG)
    state = {k: v.astype(ml_dtypes.bfloat16) for k, v in model.canonical_state_dict().items()}
    model.load_canonical_state_dict(state)
    kernel = model.transformer.layer[0].ffn.lin1.kernel[...]
    assert kernel.dtype == jnp.float32
    np.testing.assert_array_equal(np.asarray(kernel).T, state["transformer.layer.0.ffn.lin1.weight"].astype(np.float32))


# ----------------------------------------------------------------------------------------------- save / from_pretrained


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_save_then_from_pretrained(cls, tmp_path):
    model = build(cls, CONFIG, seed=4)
    written = model.save_pretrained(tmp_path)
    assert {p.name for p in written} == {"model.safetensors", "config.json"}
    with safe_open(tmp_path / "model.safetensors", framework="np") as handle:
        assert handle.metadata() == {"format": "pt"}
        keys = set(handle.keys())
    expected = set(expected_shapes(fit_config(cls, CONFIG), cls.head))
    assert keys == expected - ({"vocab_projector.weight"} if cls is FlaxDistilBertForMaskedLM else set())
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls.__name__.removeprefix("Flax")]
    loaded = cls.from_pretrained(tmp_path)
    assert loaded.config == model.config
    input_ids, mask = make_inputs(cls, CONFIG)
    np.testing.assert_array_equal(main_output(cls, loaded(input_ids, mask)), main_output(cls, model(input_ids, mask)))
    # eval mode: two calls agree although dropout is configured
    np.testing.assert_array_equal(main_output(cls, loaded(input_ids, mask)), main_output(cls, loaded(input_ids, mask)))


def test_from_pretrained_can_train_with_dropout(tmp_path):
    build(FlaxDistilBertForSequenceClassification, CONFIG).save_pretrained(tmp_path)
    model = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path, rngs=nnx.Rngs(dropout=7))
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    model.train()
    assert not np.allclose(np.asarray(model(input_ids, mask).logits), np.asarray(model(input_ids, mask).logits))


@pytest.mark.parametrize("cls", HEAD_CLASSES)
def test_base_checkpoint_into_head_and_back(cls, tmp_path, caplog):
    base = build(FlaxDistilBertModel, CONFIG, seed=6)
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        head = cls.from_pretrained(tmp_path / "base", num_labels=fit_config(cls, CONFIG).num_labels)
    assert "missing key" in caplog.text  # the head's own layers, named in one message
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    encoder = head.distilbert(input_ids, mask).last_hidden_state
    np.testing.assert_array_equal(np.asarray(encoder), np.asarray(base(input_ids, mask).last_hidden_state))
    head.save_pretrained(tmp_path / "head")
    again = FlaxDistilBertModel.from_pretrained(tmp_path / "head")
    np.testing.assert_array_equal(np.asarray(again(input_ids, mask).last_hidden_state), np.asarray(encoder))


def test_from_pretrained_dtypes_and_overrides(tmp_path):
    model = build(FlaxDistilBertForSequenceClassification, CONFIG)
    model.save_pretrained(tmp_path)
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    reference = np.asarray(model(input_ids, mask).logits)

    bf16_compute = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path, dtype="bfloat16")
    assert bf16_compute.classifier.kernel[...].dtype == jnp.float32
    logits = bf16_compute(input_ids, mask).logits
    assert logits.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(logits, np.float32), reference, atol=0.1, rtol=0.05)  # bf16 tolerance

    bf16_params = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path, param_dtype=jnp.bfloat16)
    assert bf16_params.classifier.kernel[...].dtype == jnp.bfloat16

    relabelled = FlaxDistilBertForSequenceClassification.from_pretrained(
        tmp_path, id2label={0: "neg", 1: "neu", 2: "pos"}
    )
    assert relabelled.config.id2label[2] == "pos"
    with pytest.raises(TypeError, match="unknown DistilBertConfig field"):
        FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path, n_layer=3)
    with pytest.raises(ShapeMismatchError):
        FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)


def test_sinusoidal_checkpoint_round_trip(tmp_path):
    config = CONFIG.replace(sinusoidal_pos_embds=True)
    model = build(FlaxDistilBertForMaskedLM, config)
    model.save_pretrained(tmp_path)
    loaded = FlaxDistilBertForMaskedLM.from_pretrained(tmp_path)
    input_ids, mask = make_inputs(FlaxDistilBertForMaskedLM, config)
    np.testing.assert_array_equal(np.asarray(loaded(input_ids, mask).logits), np.asarray(model(input_ids, mask).logits))


def test_sharded_safetensors_round_trip(tmp_path):
    model = build(FlaxDistilBertForMaskedLM, CONFIG)
    written = model.save_pretrained(tmp_path, max_shard_size=20_000)
    assert (tmp_path / "model.safetensors.index.json").exists() and len(written) > 3
    loaded = FlaxDistilBertForMaskedLM.from_pretrained(tmp_path)
    input_ids, mask = make_inputs(FlaxDistilBertForMaskedLM, CONFIG)
    np.testing.assert_array_equal(np.asarray(loaded(input_ids, mask).logits), np.asarray(model(input_ids, mask).logits))


# ----------------------------------------------------------------------------------------------- flax_model.msgpack


def _msgpack_folder(model, folder: Path) -> Path:
    """A folder with only config.json + transformers' Linen flax_model.msgpack of ``model``."""
    model.config.replace(extra={"architectures": [type(model).__name__]}).save_pretrained(folder)
    write_weights(folder, model.canonical_state_dict(), "flax_msgpack", head=model.head, config=model.config)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "flax_model.msgpack"]
    return folder


LOAD_WITHOUT_TORCH_OR_TF = textwrap.dedent(
    """
    import sys
    sys.modules["torch"] = None  # importing torch or tensorflow now fails
    sys.modules["tensorflow"] = None
    import numpy as np
    import distilbert_mf.flax as fx
    folder, head_class, out = sys.argv[1], sys.argv[2], sys.argv[3]
    model = getattr(fx, head_class).from_pretrained(folder)
    ids = np.load(out + ".in.npy")
    np.save(out, np.asarray(model(ids).logits))
    """
)


def test_msgpack_round_trip_without_torch_or_tensorflow(tmp_path):
    model = build(FlaxDistilBertForMaskedLM, CONFIG, seed=8)
    folder = _msgpack_folder(model, tmp_path / "msgpack")
    loaded = FlaxDistilBertForMaskedLM.from_pretrained(folder)
    input_ids, _ = make_inputs(FlaxDistilBertForMaskedLM, CONFIG)
    expected = np.asarray(model(input_ids).logits)
    np.testing.assert_array_equal(np.asarray(loaded(input_ids).logits), expected)
    out = tmp_path / "logits.npy"
    np.save(str(out) + ".in.npy", input_ids)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    subprocess.run(
        [sys.executable, "-c", LOAD_WITHOUT_TORCH_OR_TF, str(folder), "FlaxDistilBertForMaskedLM", str(out)],
        check=True,
        env=env,
        timeout=120,
    )
    np.testing.assert_array_equal(np.load(out), expected)


# ----------------------------------------------------------------------------------------------- real files


@pytest.mark.torch
@pytest.mark.reference
def test_transformers_written_checkpoint_matches_transformers(shared_data):
    """Hugging Face's own tiny checkpoint: our Flax model equals transformers' PyTorch DistilBertModel."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = shared_data / "tiny-random-distilbert"
    ours = FlaxDistilBertModel.from_pretrained(folder)
    reference = transformers.DistilBertModel.from_pretrained(folder).eval()
    input_ids = np.random.default_rng(0).integers(1, ours.config.vocab_size, (2, 9)).astype(np.int64)
    mask = np.ones_like(input_ids)
    mask[1, 6:] = 0
    with torch.no_grad():
        expected = reference(torch.from_numpy(input_ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
    got = np.asarray(ours(input_ids, mask).last_hidden_state)
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_from_pretrained_draws_no_random_weights_for_a_complete_checkpoint(tmp_path, monkeypatch):
    import jax

    from distilbert_mf.flax import loading

    source = build(FlaxDistilBertForSequenceClassification, CONFIG)
    source.save_pretrained(tmp_path / "full")
    build(FlaxDistilBertModel, CONFIG).save_pretrained(tmp_path / "base")
    from jax._src import random as jax_random  # what the initialisers call

    calls = []
    original = jax_random.normal
    monkeypatch.setattr(jax_random, "normal", lambda *a, **k: calls.append(a) or original(*a, **k))

    loaded = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path / "full")
    assert calls == []  # parameters were declared by shape only, then filled
    assert not loading.declaring_shapes_only()  # the switch is scoped to the load
    for _, _, variable in loading.weight_variables(loaded):
        assert isinstance(variable.get_value(), jax.Array)
    ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    np.testing.assert_array_equal(np.asarray(loaded(ids, mask).logits), np.asarray(source(ids, mask).logits))

    head = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path / "base")  # the head starts random
    assert calls and np.std(np.asarray(head.classifier.kernel[...])) > 0


def test_loaded_parameters_never_alias_the_callers_arrays():
    """JAX on CPU adopts aligned host buffers without copying; the loader hands it private copies only."""
    source = build(FlaxDistilBertForSequenceClassification, CONFIG)
    state = {key: np.array(value) for key, value in source.canonical_state_dict().items()}  # writable copies
    model = build(FlaxDistilBertForSequenceClassification, CONFIG)
    model.load_canonical_state_dict(state)
    ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    before = np.asarray(model(ids, mask).logits)
    for array in state.values():
        array[...] = 0
    np.testing.assert_array_equal(np.asarray(model(ids, mask).logits), before)


def test_from_pretrained_accepts_the_transformers_format_flags(tmp_path):
    source = build(FlaxDistilBertModel, CONFIG)
    source.save_pretrained(tmp_path)
    loaded = FlaxDistilBertModel.from_pretrained(tmp_path, from_pt=True, from_tf=True, from_flax=True)  # ignored
    np.testing.assert_array_equal(
        loaded.canonical_state_dict()["embeddings.word_embeddings.weight"],
        source.canonical_state_dict()["embeddings.word_embeddings.weight"],
    )
