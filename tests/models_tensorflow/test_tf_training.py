"""Keras training and compilation: fit on tf.data dicts for every head, (x, y) tuples, Keras losses, XLA == eager."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tf_helpers import HEADS, TASK_HEADS, build, main_output, make_inputs, make_labels  # noqa: E402

pytestmark = pytest.mark.tensorflow


def dataset(head, config, n=8, batch=4, with_labels=True):
    ids, mask = make_inputs(head, config, batch=n, seq=6, choices=2)
    features = {"input_ids": ids, "attention_mask": mask}
    if with_labels:
        features.update(make_labels(head, config, ids))
    return tf.data.Dataset.from_tensor_slices(features).batch(batch), features


@pytest.mark.parametrize("head", TASK_HEADS)
def test_fit_on_dict_dataset_lowers_the_loss(head):
    model = build(head, seed=3)
    data, features = dataset(head, model.config)
    before = float(model(**features).loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = model.fit(data, epochs=8, verbose=0, shuffle=False).history["loss"]
    assert all(np.isfinite(losses))
    after = float(model(**features).loss)  # eval mode: no dropout
    assert after < 0.8 * before, (before, after, losses)
    if head == "sequence_classification":  # evaluate() reports the model's own loss too (equal batches: same mean)
        assert model.evaluate(data, verbose=0) == pytest.approx(after, rel=1e-4)


def test_fit_with_features_and_labels_tuple_uses_the_head_loss():
    model = build("sequence_classification", seed=4)
    data, features = dataset("sequence_classification", model.config)
    pairs = data.map(lambda f: ({k: f[k] for k in ("input_ids", "attention_mask")}, f["labels"]))
    before = float(model(**features).loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(pairs, epochs=8, verbose=0, shuffle=False)
    assert float(model(**features).loss) < 0.8 * before


def test_fit_question_answering_with_positions_as_targets():
    model = build("question_answering", seed=5)
    data, features = dataset("question_answering", model.config)
    pairs = data.map(
        lambda f: (
            {"input_ids": f["input_ids"], "attention_mask": f["attention_mask"]},
            (f["start_positions"], f["end_positions"]),
        )
    )
    before = float(model(**features).loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(pairs, epochs=8, verbose=0, shuffle=False)
    assert float(model(**features).loss) < 0.8 * before


def test_compiled_keras_loss_and_metrics_see_the_logits():
    model = build("sequence_classification", seed=6)
    data, _ = dataset("sequence_classification", model.config)
    pairs = data.map(lambda f: ({k: f[k] for k in ("input_ids", "attention_mask")}, f["labels"]))
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    history = model.fit(pairs, epochs=8, verbose=0, shuffle=False).history
    assert history["loss"][-1] < history["loss"][0]
    assert 0.0 <= history["accuracy"][-1] <= 1.0


def test_fit_with_xla_matches_eager_training():
    """jit_compile=True trains to the same weights as step-by-step eager execution (no dropout: deterministic)."""
    config = build("token_classification").config.replace(dropout=0.0, attention_dropout=0.0)
    data, features = dataset("token_classification", config)
    results = []
    for jit in (False, True):
        model = build("token_classification", config, seed=7)
        model.compile(optimizer=keras.optimizers.SGD(0.1), jit_compile=jit, run_eagerly=not jit)
        model.fit(data, epochs=2, verbose=0, shuffle=False)
        results.append(main_output("token_classification", model(**features)))
    np.testing.assert_allclose(results[1], results[0], atol=1e-5)


@pytest.mark.parametrize("head", HEADS)
def test_xla_forward_equals_eager(head, tf_models):
    model = tf_models[head]
    ids, mask = make_inputs(head, model.config)
    labels = make_labels(head, model.config, ids)

    @tf.function(jit_compile=True)
    def forward(input_ids, attention_mask, labels):
        out = model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=True,
            output_attentions=True,
            training=False,
            **labels,
        )
        return dict(out)

    eager = model(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **labels)
    compiled = forward(tf.constant(ids), tf.constant(mask), {k: tf.constant(v) for k, v in labels.items()})
    eager, compiled = flat(eager), flat(compiled)
    assert set(compiled) == set(eager)
    for key, value in eager.items():
        np.testing.assert_allclose(compiled[key], value, atol=1e-5, err_msg=key)


def flat(outputs) -> dict[str, np.ndarray]:
    """{"logits": x, "hidden_states": (a, b)} -> {"logits": x, "hidden_states[0]": a, "hidden_states[1]": b}."""
    items = {}
    for key, value in outputs.items():
        if isinstance(value, (tuple, list)):
            items.update({f"{key}[{i}]": np.asarray(v) for i, v in enumerate(value)})
        else:
            items[key] = np.asarray(value)
    return items


def test_traced_call_with_unknown_shapes():
    """A tf.function over [None, None] inputs traces once and serves any batch and length."""
    model = build("sequence_classification", seed=8)
    spec = tf.TensorSpec([None, None], tf.int32)

    @tf.function(input_signature=[spec, spec])
    def logits(input_ids, attention_mask):
        return model(input_ids=input_ids, attention_mask=attention_mask).logits

    for batch, seq in ((1, 3), (4, 9)):
        ids, mask = make_inputs("sequence_classification", model.config, batch=batch, seq=seq)
        np.testing.assert_allclose(
            np.asarray(logits(ids, mask)), np.asarray(model(input_ids=ids, attention_mask=mask).logits), atol=1e-6
        )
    assert logits.experimental_get_tracing_count() == 1


def test_predict_returns_concatenated_outputs(tf_models):
    model = tf_models["question_answering"]
    ids, mask = make_inputs("question_answering", model.config, batch=5)
    predicted = model.predict({"input_ids": ids, "attention_mask": mask}, batch_size=2, verbose=0)
    assert set(predicted) == {"start_logits", "end_logits"}
    np.testing.assert_allclose(
        np.stack([predicted["start_logits"], predicted["end_logits"]]),
        main_output("question_answering", model(input_ids=ids, attention_mask=mask)),
        atol=1e-5,
    )


def test_fit_under_mixed_bfloat16_policy():
    """bf16 compute, float32 variables and loss: training still lowers the loss."""
    model = build("token_classification", seed=9, dtype="mixed_bfloat16")
    data, features = dataset("token_classification", model.config)
    before = float(model(**features).loss)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    model.fit(data, epochs=8, verbose=0, shuffle=False)
    assert {keras.backend.standardize_dtype(w.dtype) for w in model.trainable_weights} == {"float32"}
    assert float(model(**features).loss) < 0.8 * before
