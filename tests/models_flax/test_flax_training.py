"""Fine-tuning the Flax models with optax: nnx.Optimizer + nnx.value_and_grad under nnx.jit lowers every loss."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")
optax = pytest.importorskip("optax")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
from flax import nnx  # noqa: E402
from flax_helpers import ALL_CLASSES, build, main_output, make_inputs, make_labels, tiny  # noqa: E402

from distilbert_mf.flax import FlaxDistilBertForMaskedLM, FlaxDistilBertModel  # noqa: E402

pytestmark = pytest.mark.flax
# dropout off so that "the loss went down" is a deterministic statement; dropout itself is tested below
CONFIG = tiny(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0, qa_dropout=0.0)


def loss_of(model, batch):
    if isinstance(model, FlaxDistilBertModel):  # the bare encoder has no loss: pull its states towards a target
        out = model(batch["input_ids"], batch["attention_mask"])
        return jnp.mean((out.last_hidden_state - batch["target"]) ** 2)
    return model(**batch).loss


@nnx.jit
def train_step(model, optimizer, batch):
    loss, grads = nnx.value_and_grad(loss_of)(model, batch)
    optimizer.update(model, grads)
    return loss, grads


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_training_steps_lower_the_loss(cls):
    config = CONFIG.replace(sinusoidal_pos_embds=cls is FlaxDistilBertForMaskedLM)
    model = build(cls, config, train=True)
    input_ids, mask = make_inputs(cls, config)
    batch = {"input_ids": input_ids, "attention_mask": mask, **make_labels(cls, config, input_ids)}
    if cls is FlaxDistilBertModel:
        batch["target"] = np.random.default_rng(0).normal(size=(*input_ids.shape, config.dim)).astype(np.float32)
    optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)
    table_before = (
        model.canonical_state_dict()["distilbert.embeddings.position_embeddings.weight"]
        if (config.sinusoidal_pos_embds)
        else None
    )

    losses = []
    for _ in range(4):
        loss, grads = train_step(model, optimizer, batch)
        losses.append(float(loss))
    assert losses[-1] < losses[0], losses
    # every trainable parameter got a finite gradient
    flat = nnx.to_flat_state(grads)
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert len(flat) == len(params)
    assert all(np.isfinite(np.asarray(g.get_value())).all() for _, g in flat)
    if table_before is not None:  # the fixed sin/cos table is not a Param: the optimiser leaves it alone
        table_after = model.canonical_state_dict()["distilbert.embeddings.position_embeddings.weight"]
        np.testing.assert_array_equal(table_after, table_before)


def test_dropout_streams_advance_under_jit():
    cls = FlaxDistilBertForMaskedLM
    model = build(cls, tiny(), train=True)
    input_ids, mask = make_inputs(cls, tiny())
    forward = nnx.jit(lambda model, ids, mask: model(ids, mask).logits)
    first, second = forward(model, input_ids, mask), forward(model, input_ids, mask)
    assert not np.allclose(np.asarray(first), np.asarray(second))
    model.eval()
    np.testing.assert_allclose(
        np.asarray(forward(model, input_ids, mask)), main_output(cls, model(input_ids, mask)), atol=1e-5
    )


def test_padding_gets_no_gradient_from_real_tokens():
    """Gradients flow through inputs_embeds; padded positions influence no real token's output (exactly zero)."""
    model = build(FlaxDistilBertModel, CONFIG)
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    embeds = jnp.asarray(np.asarray(model.embeddings.word_embeddings.embedding[...])[input_ids])
    weights = np.random.default_rng(0).normal(size=(*input_ids.shape, CONFIG.dim)).astype(np.float32)
    weights[mask == 0] = 0  # the loss reads real tokens only

    def loss(e):
        return (model(attention_mask=mask, inputs_embeds=e).last_hidden_state * weights).sum()

    grad = np.asarray(jax.grad(loss)(embeds))
    assert grad.shape == embeds.shape and np.isfinite(grad).all()
    assert not grad[-1, 4:].any()
    assert np.abs(grad[mask == 1]).sum(axis=-1).all()  # every real token gets a gradient
