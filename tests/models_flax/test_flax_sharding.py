"""Scaling with no engine code in the model: logical axis names are metadata only; over a 2-device mesh a
batch-sharded forward and a parameter-sharded forward equal the single-device result.

tests/conftest.py sets XLA_FLAGS=--xla_force_host_platform_device_count=2 before jax is imported."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")

import jax
from flax import nnx
from flax_helpers import build, make_inputs, tiny
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from distilbert_mf.flax import (
    TENSOR_PARALLEL_RULES,
    FlaxDistilBertForMaskedLM,
    logical_partition_specs,
    shard_model,
)

pytestmark = pytest.mark.flax
CONFIG = tiny(vocab_size=98, hidden_dim=38)  # even sizes where the tensor-parallel rules split (vocab, mlp)
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def two_devices():
    if jax.device_count() < 2:
        pytest.skip(f"needs 2 devices (XLA_FLAGS=--xla_force_host_platform_device_count=2), have {jax.device_count()}")
    return jax.devices()[:2]


@nnx.jit
def forward(model, input_ids, mask):
    out = model(input_ids, mask, output_hidden_states=True)
    return out.logits, out.hidden_states[-1]


def single_device_result():
    model = build(FlaxDistilBertForMaskedLM, CONFIG, seed=9)
    input_ids, mask = make_inputs(FlaxDistilBertForMaskedLM, CONFIG, batch=4)
    mask[1, 3:] = 0
    return model, input_ids, mask, [np.asarray(x) for x in forward(model, input_ids, mask)]


def test_annotations_are_metadata_only():
    model = build(FlaxDistilBertForMaskedLM, CONFIG)
    lin1 = model.distilbert.transformer.layer[0].ffn.lin1.kernel
    assert lin1.get_metadata()["out_sharding"] == ("embed", "mlp")
    assert len(lin1.get_value().sharding.device_set) == 1  # the default: nothing sharded
    specs = logical_partition_specs(model, TENSOR_PARALLEL_RULES)
    assert specs["distilbert"]["transformer"]["layer"][0]["ffn"]["lin1"]["kernel"].get_value() == P(None, "model")
    assert specs["distilbert"]["embeddings"]["LayerNorm"]["scale"].get_value() == P(None)


def test_batch_sharded_forward_equals_single_device(two_devices):
    model, input_ids, mask, expected = single_device_result()
    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=two_devices)
    shard_model(model, mesh)  # replicated parameters
    batch = NamedSharding(mesh, P("data"))
    logits, hidden = forward(model, jax.device_put(input_ids, batch), jax.device_put(mask, batch))
    assert logits.sharding.spec[0] == "data" and len(logits.sharding.device_set) == 2
    np.testing.assert_allclose(np.asarray(logits), expected[0], atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(hidden), expected[1], atol=TOLERANCE)


def test_parameter_sharded_forward_equals_single_device(two_devices):
    model, input_ids, mask, expected = single_device_result()
    mesh = jax.make_mesh((2,), ("model",), axis_types=(AxisType.Auto,), devices=two_devices)
    shard_model(model, mesh, TENSOR_PARALLEL_RULES)
    kernel = model.distilbert.transformer.layer[0].ffn.lin1.kernel[...]
    assert kernel.sharding.spec == P(None, "model")
    assert kernel.addressable_shards[0].data.shape == (CONFIG.dim, CONFIG.hidden_dim // 2)
    embedding = model.distilbert.embeddings.word_embeddings.embedding[...]
    assert embedding.sharding.spec == P("model", None)
    logits, hidden = forward(model, input_ids, mask)
    np.testing.assert_allclose(np.asarray(logits), expected[0], atol=TOLERANCE)
    np.testing.assert_allclose(np.asarray(hidden), expected[1], atol=TOLERANCE)
    # the sharded model still saves as ordinary canonical arrays
    state = model.canonical_state_dict()
    assert state["distilbert.transformer.layer.0.ffn.lin1.weight"].shape == (CONFIG.hidden_dim, CONFIG.dim)


def test_shard_model_checks(two_devices):
    model = build(FlaxDistilBertForMaskedLM, CONFIG)
    mesh = jax.make_mesh((2,), ("data",), axis_types=(AxisType.Auto,), devices=two_devices)
    with pytest.raises(ValueError, match="mesh lacks"):
        shard_model(model, mesh, TENSOR_PARALLEL_RULES)
    with pytest.raises(TypeError, match="Mesh"):
        shard_model(model, "mesh")


def test_indivisible_dimension_is_a_clear_error(two_devices):
    model = build(FlaxDistilBertForMaskedLM, tiny())  # vocab 99, hidden_dim 37
    mesh = jax.make_mesh((2,), ("model",), axis_types=(AxisType.Auto,), devices=two_devices)
    with pytest.raises(ValueError, match=r"word_embeddings.embedding of shape \(99, 32\).*'vocab'"):
        shard_model(model, mesh, TENSOR_PARALLEL_RULES)
    assert len(model.distilbert.transformer.layer[0].ffn.lin1.kernel[...].sharding.device_set) == 1  # untouched
