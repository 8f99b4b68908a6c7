"""Keras models: variable names, shapes, padding, losses against numpy, input checks, canonical weights, dtypes."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_helpers import (  # noqa: E402
    HEADS,
    TASK_HEADS,
    build,
    main_output,
    make_inputs,
    make_labels,
    tiny_config,
)

from distilbert_mf.checkpoint import ShapeMismatchError, expected_shapes, sinusoidal_table  # noqa: E402
from distilbert_mf.tensorflow import (  # noqa: E402
    TFDistilBertForMaskedLM,
    TFDistilBertForQuestionAnswering,
    TFDistilBertForSequenceClassification,
    TFDistilBertModel,
)

pytestmark = pytest.mark.tensorflow


def np_log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore_index: int = -100) -> float:
    logits, labels = logits.reshape(-1, logits.shape[-1]), labels.reshape(-1)
    keep = labels != ignore_index
    picked = np_log_softmax(logits[keep])[np.arange(keep.sum()), labels[keep]]
    return float(-picked.mean())


def expected_main_shape(head, config, input_ids):
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    return {
        "base": (batch, seq, config.dim),
        "masked_lm": (batch, seq, config.vocab_size),
        "sequence_classification": (batch, config.num_labels),
        "multiple_choice": (batch, input_ids.shape[1]),
        "token_classification": (batch, seq, config.num_labels),
        "question_answering": (2, batch, seq),
    }[head]


# ----------------------------------------------------------------------------------------------- structure


@pytest.mark.parametrize("head", HEADS)
def test_variables_exist_after_construction_with_checkpoint_paths(head, tf_models):
    model = tf_models[head]
    variables = model.canonical_variables()
    assert set(variables) == set(expected_shapes(model.config, head))
    assert len({id(v) for v, _ in variables.values()}) == len(model.weights)  # every weight has a canonical name
    prefix = "" if head == "base" else "distilbert/"
    paths = {v.path.split("/", 1)[1] for v in model.weights}  # drop the model's own name
    assert prefix + "transformer/layer_0/attention/q_lin/kernel" in paths
    assert prefix + "transformer/layer_1/ffn/lin2/bias" in paths
    assert prefix + "embeddings/LayerNorm/gamma" in paths
    for key, (variable, transposed) in variables.items():
        if key == "vocab_projector.weight":  # tied: the word embedding matrix itself
            assert variable is model.distilbert.embeddings.word_embeddings.embeddings
            continue
        shape = tuple(variable.shape)[::-1] if transposed else tuple(variable.shape)
        assert shape == expected_shapes(model.config, head)[key]
        dotted = variable.path.split("/", 1)[1].replace("/", ".")
        for i in range(model.config.n_layers):
            dotted = dotted.replace(f"layer_{i}.", f"layer.{i}.")
        assert dotted.rsplit(".", 1)[0] == key.rsplit(".", 1)[0], (key, variable.path)


@pytest.mark.parametrize("head", HEADS)
def test_shapes_hidden_states_and_attentions(head, tf_models):
    model = tf_models[head]
    config = model.config
    input_ids, mask = make_inputs(head, config)
    out = model(input_ids=input_ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    main = main_output(head, out)
    assert main.shape == expected_main_shape(head, config, input_ids)
    assert main.dtype == np.float32
    rows, seq = int(np.prod(input_ids.shape[:-1])), input_ids.shape[-1]
    assert len(out["hidden_states"]) == config.n_layers + 1
    assert all(tuple(h.shape) == (rows, seq, config.dim) for h in out["hidden_states"])
    assert len(out["attentions"]) == config.n_layers
    for probs in out["attentions"]:
        probs = np.asarray(probs)
        assert probs.shape == (rows, config.n_heads, seq, seq)
        np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6)
    plain = model(input_ids=input_ids, attention_mask=mask)
    assert "hidden_states" not in plain and "attentions" not in plain and "loss" not in plain


def test_last_hidden_state_is_last_hidden_states_entry(tf_models):
    input_ids, mask = make_inputs("base", tf_models["base"].config)
    out = tf_models["base"](input_ids=input_ids, attention_mask=mask, output_hidden_states=True)
    np.testing.assert_array_equal(np.asarray(out.hidden_states[-1]), np.asarray(out.last_hidden_state))
    assert out[0] is out.last_hidden_state  # index access like transformers' ModelOutput


def test_dict_inputs_positional_and_keyword_calls_agree(tf_models):
    model = tf_models["sequence_classification"]
    input_ids, mask = make_inputs("sequence_classification", model.config)
    by_keyword = np.asarray(model(input_ids=input_ids, attention_mask=mask).logits)
    np.testing.assert_array_equal(
        np.asarray(model({"input_ids": input_ids, "attention_mask": mask}).logits), by_keyword
    )
    np.testing.assert_array_equal(np.asarray(model(input_ids, mask).logits), by_keyword)
    import tensorflow as tf

    np.testing.assert_array_equal(np.asarray(model(tf.constant(input_ids), tf.constant(mask)).logits), by_keyword)
    with pytest.raises(TypeError, match="attention_mask"):
        model({"input_ids": input_ids, "attention_mask": mask}, attention_mask=mask)


# ----------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("head", HEADS)
def test_right_padding_matches_unpadded(head, tf_models):
    model = tf_models[head]
    ids, _ = make_inputs(head, model.config, batch=1, seq=5, choices=2)
    pad = np.zeros((*ids.shape[:-1], 3), np.int32)
    padded = np.concatenate([ids, pad], axis=-1)
    mask = np.concatenate([np.ones_like(ids), pad], axis=-1)
    short = main_output(head, model(input_ids=ids))
    long = main_output(head, model(input_ids=padded, attention_mask=mask))
    if head in ("base", "masked_lm", "token_classification"):
        long = long[:, :5]
    elif head == "question_answering":
        long = long[..., :5]
    np.testing.assert_allclose(long, short, atol=1e-5)


@pytest.mark.parametrize("head", ["base", "sequence_classification", "question_answering"])
def test_fully_masked_row_is_finite(head, tf_models):
    model = tf_models[head]
    ids, mask = make_inputs(head, model.config)
    mask[0] = 0
    out = model(input_ids=ids, attention_mask=mask, output_attentions=True)
    assert np.isfinite(main_output(head, out)).all()
    np.testing.assert_allclose(np.asarray(out.attentions[0])[0], 1.0 / ids.shape[-1], rtol=1e-5)  # uniform


def test_inputs_embeds_and_position_ids(tf_models):
    model = tf_models["base"]
    ids, mask = make_inputs("base", model.config)
    reference = np.asarray(model(input_ids=ids, attention_mask=mask).last_hidden_state)
    table = np.asarray(model.embeddings.word_embeddings.embeddings)
    from_embeds = model(inputs_embeds=table[ids], attention_mask=mask).last_hidden_state
    np.testing.assert_allclose(np.asarray(from_embeds), reference, atol=1e-6)
    positions = np.broadcast_to(np.arange(ids.shape[1]), ids.shape)
    np.testing.assert_allclose(
        np.asarray(model(input_ids=ids, attention_mask=mask, position_ids=positions).last_hidden_state),
        reference,
        atol=1e-6,
    )
    shifted = model(input_ids=ids, attention_mask=mask, position_ids=positions + 1).last_hidden_state
    assert np.abs(np.asarray(shifted) - reference).max() > 1e-3


def test_dropout_only_with_training_true(tf_models):
    model = tf_models["sequence_classification"]
    ids, mask = make_inputs("sequence_classification", model.config)
    first = np.asarray(model(input_ids=ids, attention_mask=mask).logits)
    np.testing.assert_array_equal(np.asarray(model(input_ids=ids, attention_mask=mask, training=False).logits), first)
    trained = np.asarray(model(input_ids=ids, attention_mask=mask, training=True).logits)
    assert np.abs(trained - first).max() > 1e-4


# ----------------------------------------------------------------------------------------------- losses


def test_masked_lm_loss_matches_numpy(tf_models):
    model = tf_models["masked_lm"]
    ids, mask = make_inputs("masked_lm", model.config)
    labels = make_labels("masked_lm", model.config, ids)["labels"]
    labels[0, :3] = -100
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    assert out[0] is out.loss  # loss first, like transformers
    np.testing.assert_allclose(float(out.loss), np_cross_entropy(np.asarray(out.logits), labels), rtol=1e-5)


def test_sequence_classification_single_and_multi_label_losses(tf_models):
    model = tf_models["sequence_classification"]
    ids, mask = make_inputs("sequence_classification", model.config, batch=3)
    single = np.array([2, -100, 0])
    out = model(input_ids=ids, attention_mask=mask, labels=single)
    logits = np.asarray(out.logits, np.float64)
    np.testing.assert_allclose(float(out.loss), np_cross_entropy(logits, single), rtol=1e-5)
    multi = np.array([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0], [1.0, 1.0, 0.0]], np.float32)
    out = model(input_ids=ids, attention_mask=mask, labels=multi)
    expected = np.mean(np.log1p(np.exp(-logits)) + (1 - multi) * logits)  # -y log σ(x) - (1-y) log(1-σ(x))
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)
    assert model.config.problem_type is None  # decided per call, never written back


@pytest.mark.parametrize("num_labels", [1, 3])
def test_regression_loss(num_labels):
    config = tiny_config(num_labels=num_labels, problem_type=None if num_labels == 1 else "regression")
    model = build("sequence_classification", config)
    ids, mask = make_inputs("sequence_classification", config, batch=3)
    targets = np.random.default_rng(0).normal(size=(3, num_labels)).astype(np.float32)
    labels = targets[:, 0] if num_labels == 1 else targets
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(float(out.loss), np.mean((np.asarray(out.logits) - targets) ** 2), rtol=1e-5)
    with pytest.raises(ValueError, match="regression labels"):
        model(input_ids=ids, attention_mask=mask, labels=np.zeros((4, num_labels), np.float32))


def test_token_classification_and_multiple_choice_losses(tf_models):
    model = tf_models["token_classification"]
    ids, mask = make_inputs("token_classification", model.config)
    labels = np.where(mask == 1, make_labels("token_classification", model.config, ids)["labels"], -100)
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(float(out.loss), np_cross_entropy(np.asarray(out.logits), labels), rtol=1e-5)

    model = tf_models["multiple_choice"]
    ids, mask = make_inputs("multiple_choice", model.config)
    labels = np.array([2, 0])
    out = model(input_ids=ids, attention_mask=mask, labels=labels)
    np.testing.assert_allclose(float(out.loss), np_cross_entropy(np.asarray(out.logits), labels), rtol=1e-5)


def test_question_answering_loss_clamps_positions(tf_models):
    model = tf_models["question_answering"]
    ids, mask = make_inputs("question_answering", model.config, batch=3, seq=6)
    start, end = np.array([1, 40, -5]), np.array([3, 2, 6])  # 40 -> 6 (ignored), -5 -> 0, 6 == seq (ignored)
    out = model(input_ids=ids, attention_mask=mask, start_positions=start, end_positions=end)
    s, e = np.asarray(out.start_logits), np.asarray(out.end_logits)
    clamp = np.clip
    expected = (np_cross_entropy(s, clamp(start, 0, 6), 6) + np_cross_entropy(e, clamp(end, 0, 6), 6)) / 2
    np.testing.assert_allclose(float(out.loss), expected, rtol=1e-5)
    np.testing.assert_allclose(  # (batch, 1) positions are accepted too
        float(
            model(input_ids=ids, attention_mask=mask, start_positions=start[:, None], end_positions=end[:, None]).loss
        ),
        expected,
        rtol=1e-5,
    )
    with pytest.raises(ValueError, match="both start_positions and end_positions"):
        model(input_ids=ids, start_positions=start)


@pytest.mark.parametrize("head", TASK_HEADS)
def test_loss_is_finite_scalar_for_every_head(head, tf_models):
    model = tf_models[head]
    ids, mask = make_inputs(head, model.config)
    out = model(input_ids=ids, attention_mask=mask, **make_labels(head, model.config, ids))
    assert tuple(out.loss.shape) == () and np.isfinite(float(out.loss))


# ----------------------------------------------------------------------------------------------- errors


def test_rejected_inputs(tf_models):
    model = tf_models["sequence_classification"]
    ids, mask = make_inputs("sequence_classification", model.config)
    with pytest.raises(ValueError, match="token_type_ids"):
        model(input_ids=ids, token_type_ids=np.zeros_like(ids))
    with pytest.raises(ValueError, match="head_mask"):
        model(input_ids=ids, head_mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match="token id 99"):
        model(input_ids=np.where(ids == ids.max(), 99, ids))
    with pytest.raises(ValueError, match="token id -1"):
        model(input_ids=np.where(ids == ids.max(), -1, ids))
    with pytest.raises(TypeError, match="integer token ids"):
        model(input_ids=ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(input_ids=ids[0])
    with pytest.raises(ValueError, match="either input_ids or inputs_embeds"):
        model(input_ids=ids, inputs_embeds=np.zeros((2, 7, 32), np.float32))
    with pytest.raises(ValueError, match="both are None"):
        model(attention_mask=mask)
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(input_ids=np.ones((1, 65), np.int32))
    with pytest.raises(ValueError, match="attention_mask must have the inputs' shape"):
        model(input_ids=ids, attention_mask=mask[:, :3])
    with pytest.raises(ValueError, match="position_ids"):
        model(input_ids=ids, position_ids=np.full(ids.shape, 64))
    with pytest.raises(ValueError, match="class id 3"):
        model(input_ids=ids, labels=np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class ids"):
        tf_models["token_classification"](input_ids=ids, labels=np.zeros(ids.shape, np.float32))
    with pytest.raises(ValueError, match="num_choices, seq"):
        tf_models["multiple_choice"](input_ids=ids)


def test_constructor_errors():
    with pytest.raises(ValueError, match="num_labels=2"):
        TFDistilBertForQuestionAnswering(tiny_config(num_labels=3))
    with pytest.raises(TypeError, match="DistilBertConfig"):
        TFDistilBertModel({"dim": 32})
    with pytest.raises(ValueError, match="unsupported dtype"):
        TFDistilBertModel.from_pretrained("unused", dtype="int8")


# ----------------------------------------------------------------------------------------------- canonical weights


@pytest.mark.parametrize("head", HEADS)
def test_canonical_state_dict_round_trip(head, tf_models):
    source = tf_models[head]
    state = source.canonical_state_dict()
    shapes = expected_shapes(source.config, head)
    assert list(state) == list(shapes)
    assert all(state[k].shape == shapes[k] and state[k].dtype == np.float32 for k in state)
    target = build(head, source.config, seed=99)
    ids, mask = make_inputs(head, source.config)
    before = main_output(head, target(input_ids=ids, attention_mask=mask))
    report = target.load_canonical_state_dict(state)
    assert report.missing == [] and report.unexpected == []
    after = main_output(head, target(input_ids=ids, attention_mask=mask))
    np.testing.assert_array_equal(after, main_output(head, source(input_ids=ids, attention_mask=mask)))
    assert np.abs(after - before).max() > 1e-4


def test_load_canonical_state_dict_checks_keys_and_shapes(tf_models):
    model = build("sequence_classification")
    state = tf_models["sequence_classification"].canonical_state_dict()
    partial = {k: v for k, v in state.items() if not k.startswith("classifier")}
    with pytest.raises(KeyError, match=r"classifier\.weight"):
        model.load_canonical_state_dict(partial)
    kept = np.asarray(model.classifier.kernel).copy()
    report = model.load_canonical_state_dict({**partial, "extra.weight": np.zeros(1, np.float32)}, strict=False)
    assert report.missing == ["classifier.weight", "classifier.bias"] and report.unexpected == ["extra.weight"]
    np.testing.assert_array_equal(np.asarray(model.classifier.kernel), kept)
    np.testing.assert_array_equal(np.asarray(model.pre_classifier.kernel), state["pre_classifier.weight"].T)
    with pytest.raises(KeyError, match=r"extra\.weight"):
        model.load_canonical_state_dict({**state, "extra.weight": np.zeros(1, np.float32)})
    before = model.canonical_state_dict()
    bad = {**state, "classifier.weight": np.zeros((4, 32), np.float32)}
    with pytest.raises(ShapeMismatchError, match=r"classifier.weight.*\(4, 32\).*\(3, 32\)"):
        model.load_canonical_state_dict(bad)
    with pytest.raises(TypeError, match="int64"):
        model.load_canonical_state_dict({**state, "classifier.bias": np.zeros(3, np.int64)})
    after = model.canonical_state_dict()  # a refused load changes nothing
    assert all(np.array_equal(before[k], after[k]) for k in before)
    model.load_canonical_state_dict({k: v.astype(np.float64) for k, v in state.items()})  # cast to float32
    np.testing.assert_array_equal(model.canonical_state_dict()["classifier.weight"], state["classifier.weight"])


def test_tied_and_untied_projector(tf_models):
    tied = tf_models["masked_lm"]
    state = tied.canonical_state_dict()
    np.testing.assert_array_equal(
        state["vocab_projector.weight"], state["distilbert.embeddings.word_embeddings.weight"]
    )
    assert not hasattr(tied.vocab_projector, "kernel")
    untied = build("masked_lm", tiny_config(tie_word_embeddings=False))
    assert len(untied.weights) == len(tied.weights) + 1
    state["vocab_projector.weight"] = np.random.default_rng(0).normal(size=(99, 32)).astype(np.float32)
    untied.load_canonical_state_dict(state)
    np.testing.assert_array_equal(
        untied.canonical_state_dict()["vocab_projector.weight"], state["vocab_projector.weight"]
    )
    ids, mask = make_inputs("masked_lm", untied.config)
    hidden = untied.vocab_layer_norm(
        untied.activation(
            untied.vocab_transform(untied.distilbert(input_ids=ids, attention_mask=mask).last_hidden_state)
        )
    )
    expected = np.asarray(hidden) @ state["vocab_projector.weight"].T + state["vocab_projector.bias"]
    np.testing.assert_allclose(np.asarray(untied(input_ids=ids, attention_mask=mask).logits), expected, atol=1e-5)


def test_initialisation_padding_row_and_sinusoidal_table():
    model = build("base", tiny_config(sinusoidal_pos_embds=True, pad_token_id=5))
    words = np.asarray(model.embeddings.word_embeddings.embeddings)
    assert np.all(words[5] == 0) and np.abs(words[4]).max() > 0
    np.testing.assert_allclose(words.std(), 0.02, rtol=0.2)
    table = model.embeddings.position_embeddings.embeddings
    assert not table.trainable and all(w is not table for w in model.trainable_weights)
    np.testing.assert_array_equal(np.asarray(table), sinusoidal_table(64, 32))
    state = model.canonical_state_dict()
    state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"] * 2
    model.load_canonical_state_dict(state)  # a checkpoint's table is loaded as is, never regenerated
    np.testing.assert_array_equal(np.asarray(table), sinusoidal_table(64, 32) * 2)


def test_keras_config_round_trip(tf_models):
    model = tf_models["question_answering"]
    clone = TFDistilBertForQuestionAnswering.from_config(model.get_config())
    assert clone.config == model.config
    clone.load_canonical_state_dict(model.canonical_state_dict())
    ids, mask = make_inputs("question_answering", model.config)
    np.testing.assert_array_equal(
        main_output("question_answering", clone(input_ids=ids, attention_mask=mask)),
        main_output("question_answering", model(input_ids=ids, attention_mask=mask)),
    )


# ----------------------------------------------------------------------------------------------- dtypes


def test_bfloat16_and_mixed_bfloat16_policies(tf_models):
    reference = tf_models["sequence_classification"]
    state = reference.canonical_state_dict()
    ids, mask = make_inputs("sequence_classification", reference.config)
    expected = np.asarray(reference(input_ids=ids, attention_mask=mask, output_attentions=True).logits)

    mixed = build("sequence_classification", dtype="mixed_bfloat16")
    mixed.load_canonical_state_dict(state)
    assert {keras.backend.standardize_dtype(w.dtype) for w in mixed.weights} == {"float32"}
    assert mixed.distilbert.transformer.layer[0].attention.q_lin.compute_dtype == "bfloat16"
    out = mixed(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True)
    assert keras.backend.standardize_dtype(out.logits.dtype) == "bfloat16"
    assert keras.backend.standardize_dtype(out.attentions[0].dtype) == "bfloat16"
    logits = np.asarray(keras.ops.cast(out.logits, "float32"))
    # bf16 keeps 8 significant bits (relative step 2^-8 = 0.4%); two tiny layers stay within a few steps
    np.testing.assert_allclose(logits, expected, atol=3e-2, rtol=3e-2)
    np.testing.assert_array_equal(np.argmax(logits, -1), np.argmax(expected, -1))
    # the canonical weights of a mixed model are its float32 variables, bit for bit
    np.testing.assert_array_equal(mixed.canonical_state_dict()["classifier.weight"], state["classifier.weight"])

    pure = build("sequence_classification", dtype="bfloat16")
    pure.load_canonical_state_dict(state)
    assert {keras.backend.standardize_dtype(w.dtype) for w in pure.weights} == {"bfloat16"}
    assert pure.canonical_state_dict()["classifier.weight"].dtype.name == "bfloat16"
    logits = np.asarray(keras.ops.cast(pure(input_ids=ids, attention_mask=mask).logits, "float32"))
    np.testing.assert_allclose(logits, expected, atol=5e-2, rtol=5e-2)


def test_layer_norm_runs_in_float32_under_mixed_precision():
    model = build("base", dtype="mixed_bfloat16")
    norm = model.embeddings.LayerNorm
    gamma = np.linspace(0.5, 1.5, 32, dtype=np.float32) + np.float32(1e-4)  # not representable in bf16
    norm.gamma.assign(gamma)
    x = np.random.default_rng(0).normal(size=(2, 3, 32)).astype(np.float32)
    x_bf16 = np.asarray(keras.ops.cast(keras.ops.cast(x, "bfloat16"), "float32"), np.float64)
    mean, var = x_bf16.mean(-1, keepdims=True), x_bf16.var(-1, keepdims=True)
    expected = (x_bf16 - mean) / np.sqrt(var + 1e-12) * gamma
    out = norm(keras.ops.cast(x, "bfloat16"))
    assert keras.backend.standardize_dtype(out.dtype) == "bfloat16"
    # within one bf16 rounding of the float32 result (gamma is not rounded to bf16 first)
    np.testing.assert_allclose(np.asarray(keras.ops.cast(out, "float32")), expected, rtol=2**-8, atol=1e-6)


def test_models_are_built_on_construction():
    model = TFDistilBertForSequenceClassification(tiny_config())  # no data, no Input layer
    assert model.built and len(model.trainable_weights) == len(model.weights) == 40
    assert TFDistilBertForMaskedLM(tiny_config()).built


def test_multiple_choice_loss_traces_with_every_axis_free() -> None:
    """A tf.function whose signature leaves batch, choices and length free (as tf.data pipelines do) computes the
    same loss as the eager call."""
    import tensorflow as tf

    from distilbert_mf import DistilBertConfig
    from distilbert_mf.tensorflow import TFDistilBertForMultipleChoice

    config = DistilBertConfig(vocab_size=30, dim=8, n_layers=1, n_heads=2, hidden_dim=16, max_position_embeddings=16)
    model = TFDistilBertForMultipleChoice(config)
    ids = np.array([[[1, 4, 5, 2], [1, 6, 2, 0]], [[1, 7, 2, 0], [1, 8, 9, 2]]], dtype=np.int32)
    labels = np.array([1, 0], dtype=np.int32)
    eager = float(model(input_ids=ids, labels=labels).loss)
    spec = tf.TensorSpec([None, None, None], tf.int32)

    @tf.function(input_signature=[spec, tf.TensorSpec([None], tf.int32)])
    def loss(input_ids, y):
        return model(input_ids=input_ids, labels=y).loss

    assert float(loss(ids, labels)) == pytest.approx(eager, rel=1e-6)
