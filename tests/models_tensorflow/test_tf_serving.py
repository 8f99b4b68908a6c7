"""SavedModel export: a serving signature (input_ids, attention_mask: int32 [None, None]) that reloads without our code."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from tf_helpers import main_output, make_inputs  # noqa: E402

from distilbert_mf.tensorflow import export_saved_model  # noqa: E402

pytestmark = pytest.mark.tensorflow


@pytest.mark.parametrize("head", ["sequence_classification", "question_answering", "multiple_choice"])
def test_saved_model_round_trip(head, tf_models, tmp_path):
    model = tf_models[head]
    path = export_saved_model(model, tmp_path / "saved")
    assert (path / "saved_model.pb").is_file()
    reloaded = tf.saved_model.load(str(path))
    serving = reloaded.signatures["serving_default"]
    specs = serving.structured_input_signature[1]
    assert set(specs) == {"input_ids", "attention_mask"}
    rank = 3 if head == "multiple_choice" else 2
    assert all(s.dtype == tf.int32 and s.shape.as_list() == [None] * rank for s in specs.values())
    for batch, seq in ((2, 7), (3, 11)):  # any batch and length through one signature
        ids, mask = make_inputs(head, model.config, batch=batch, seq=seq)
        expected = main_output(head, model(input_ids=ids, attention_mask=mask))
        served = serving(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
        np.testing.assert_allclose(main_output(head, served), expected, atol=1e-5)
        by_endpoint = reloaded.serve(tf.constant(ids), tf.constant(mask))
        np.testing.assert_allclose(main_output(head, by_endpoint), expected, atol=1e-5)


def test_saved_model_of_the_base_model_serves_hidden_states(tf_models, tmp_path):
    model = tf_models["base"]
    reloaded = tf.saved_model.load(str(model.export_saved_model(tmp_path / "base")))
    ids, mask = make_inputs("base", model.config)
    out = reloaded.signatures["serving_default"](input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
    assert set(out) == {"last_hidden_state"}
    np.testing.assert_allclose(
        np.asarray(out["last_hidden_state"]),
        np.asarray(model(input_ids=ids, attention_mask=mask).last_hidden_state),
        atol=1e-5,
    )


def test_tf_saved_model_save_uses_the_token_signature(tf_models, tmp_path):
    """Plain ``tf.saved_model.save(model, path)`` exports the same int32 serving signature by default."""
    model = tf_models["token_classification"]
    tf.saved_model.save(model, str(tmp_path / "plain"))
    serving = tf.saved_model.load(str(tmp_path / "plain")).signatures["serving_default"]
    ids, mask = make_inputs("token_classification", model.config)
    out = serving(input_ids=tf.constant(ids), attention_mask=tf.constant(mask))
    np.testing.assert_allclose(
        np.asarray(out["logits"]), np.asarray(model(input_ids=ids, attention_mask=mask).logits), atol=1e-5
    )
