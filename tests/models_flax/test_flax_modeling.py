"""Flax NNX models: shapes, masking, outputs, losses against numpy, input checks, dtypes, jit == eager."""

from __future__ import annotations

import math

import numpy as np
import pytest

pytest.importorskip("flax")

import jax
import jax.numpy as jnp
from flax import nnx
from flax_helpers import (
    ALL_CLASSES,
    build,
    fit_config,
    log_softmax,
    main_output,
    make_inputs,
    make_labels,
    numpy_cross_entropy,
    tiny,
)

from distilbert_mf.checkpoint import sinusoidal_table
from distilbert_mf.flax import (
    FlaxDistilBertForMaskedLM,
    FlaxDistilBertForMultipleChoice,
    FlaxDistilBertForQuestionAnswering,
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertForTokenClassification,
    FlaxDistilBertModel,
    PositionTable,
)

pytestmark = pytest.mark.flax
CONFIG = tiny()


@pytest.fixture(scope="module")
def models() -> dict:
    """One eval-mode model per class, shared by the read-only tests of this module."""
    return {cls: build(cls, CONFIG) for cls in ALL_CLASSES}


def expected_main_shape(cls, config, input_ids):
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    return {
        FlaxDistilBertModel: (batch, seq, config.dim),
        FlaxDistilBertForMaskedLM: (batch, seq, config.vocab_size),
        FlaxDistilBertForSequenceClassification: (batch, config.num_labels),
        FlaxDistilBertForMultipleChoice: (batch, input_ids.shape[1]),
        FlaxDistilBertForTokenClassification: (batch, seq, config.num_labels),
        FlaxDistilBertForQuestionAnswering: (2, batch, seq),
    }[cls]


# ----------------------------------------------------------------------------------------------- shapes and outputs


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_shapes_hidden_states_and_attentions(cls, models):
    model = models[cls]
    input_ids, attention_mask = make_inputs(cls, CONFIG)
    out = model(input_ids, attention_mask, output_hidden_states=True, output_attentions=True)
    assert main_output(cls, out).shape == expected_main_shape(cls, fit_config(cls, CONFIG), input_ids)
    rows, seq = int(np.prod(input_ids.shape[:-1])), input_ids.shape[-1]
    assert len(out.hidden_states) == CONFIG.n_layers + 1
    assert all(h.shape == (rows, seq, CONFIG.dim) for h in out.hidden_states)
    assert len(out.attentions) == CONFIG.n_layers
    for probs in out.attentions:
        assert probs.shape == (rows, CONFIG.n_heads, seq, seq)
        np.testing.assert_allclose(np.asarray(probs).sum(-1), 1.0, atol=1e-6)
    last = out.last_hidden_state if cls is FlaxDistilBertModel else None
    if last is not None:
        np.testing.assert_array_equal(np.asarray(out.hidden_states[-1]), np.asarray(last))


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_optional_outputs_absent_by_default(cls, models):
    input_ids, _ = make_inputs(cls, CONFIG)
    out = models[cls](input_ids)
    assert "hidden_states" not in out and "attentions" not in out and "loss" not in out


def test_output_reads_by_attribute_key_and_index(models):
    cls = FlaxDistilBertForSequenceClassification
    input_ids, mask = make_inputs(cls, CONFIG)
    out = models[cls](input_ids, mask, labels=np.array([0, 2]))
    assert list(out.keys()) == ["loss", "logits"]
    assert out[0] is out.loss and out[1] is out["logits"] and out.to_tuple()[1] is out.logits
    assert out.loss.shape == ()


def test_outputs_are_jax_pytrees(models):
    cls = FlaxDistilBertForQuestionAnswering
    input_ids, mask = make_inputs(cls, CONFIG)
    out = models[cls](input_ids, mask, output_attentions=True)
    leaves, treedef = jax.tree.flatten(out)
    assert len(leaves) == 2 + CONFIG.n_layers
    rebuilt = jax.tree.unflatten(treedef, leaves)
    assert type(rebuilt) is type(out) and list(rebuilt) == list(out)


# ----------------------------------------------------------------------------------------------- masking


def test_right_padding_matches_unpadded_rows(models):
    model = models[FlaxDistilBertModel]
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    padded = model(input_ids, mask, output_attentions=True)
    alone = model(input_ids[-1:, :4])
    np.testing.assert_allclose(
        np.asarray(padded.last_hidden_state[-1, :4]), np.asarray(alone.last_hidden_state[0]), atol=1e-5
    )
    # padding keys get exactly zero probability
    assert float(np.abs(np.asarray(padded.attentions[0])[-1, :, :, 4:]).max()) == 0.0
    # what sits in padded positions does not matter
    other = input_ids.copy()
    other[-1, 4:] = 1
    changed = model(other, mask)
    np.testing.assert_array_equal(
        np.asarray(changed.last_hidden_state[-1, :4]), np.asarray(padded.last_hidden_state[-1, :4])
    )


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_fully_masked_row_is_finite(dtype):
    model = build(FlaxDistilBertForSequenceClassification, CONFIG, dtype=dtype)
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    mask[0] = 0
    out = model(input_ids, mask, output_attentions=True)
    assert np.isfinite(np.asarray(out.logits, np.float32)).all()
    # a fully padded row attends uniformly: finite, never NaN
    np.testing.assert_allclose(np.asarray(out.attentions[0][0], np.float32), 1.0 / input_ids.shape[1], rtol=1e-2)


def test_boolean_and_float_masks_equal_integer_mask(models):
    model = models[FlaxDistilBertModel]
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    reference = np.asarray(model(input_ids, mask).last_hidden_state)
    for other in (mask.astype(bool), mask.astype(np.float32)):
        np.testing.assert_array_equal(np.asarray(model(input_ids, other).last_hidden_state), reference)


# ----------------------------------------------------------------------------------------------- inputs


def test_inputs_embeds_and_position_ids(models):
    model = models[FlaxDistilBertModel]
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    reference = np.asarray(model(input_ids, mask).last_hidden_state)
    table = np.asarray(model.embeddings.word_embeddings.embedding[...])
    from_embeds = model(attention_mask=mask, inputs_embeds=table[input_ids]).last_hidden_state
    np.testing.assert_allclose(np.asarray(from_embeds), reference, atol=1e-6)
    positions = np.arange(input_ids.shape[1])
    for pos in (positions, positions[None], np.tile(positions, (2, 1))):
        np.testing.assert_array_equal(np.asarray(model(input_ids, mask, position_ids=pos).last_hidden_state), reference)
    shifted = model(input_ids, mask, position_ids=positions + 3).last_hidden_state
    assert not np.allclose(np.asarray(shifted), reference)


def test_numpy_list_and_jax_inputs_agree(models):
    model = models[FlaxDistilBertForTokenClassification]
    input_ids, mask = make_inputs(FlaxDistilBertForTokenClassification, CONFIG)
    reference = np.asarray(model(input_ids, mask).logits)
    np.testing.assert_array_equal(np.asarray(model(jnp.asarray(input_ids), jnp.asarray(mask)).logits), reference)
    np.testing.assert_array_equal(np.asarray(model(input_ids.tolist(), mask.tolist()).logits), reference)
    np.testing.assert_array_equal(np.asarray(model(input_ids.astype(np.int64), mask).logits), reference)


def test_multiple_choice_flattens_choices(models):
    model = models[FlaxDistilBertForMultipleChoice]
    input_ids, mask = make_inputs(FlaxDistilBertForMultipleChoice, CONFIG)
    out = model(input_ids, mask)
    batch, choices, seq = input_ids.shape
    # each (example, choice) row is scored on its own
    row = model(input_ids[1:2, 2:3], mask[1:2, 2:3]).logits
    np.testing.assert_allclose(np.asarray(out.logits[1, 2]), np.asarray(row[0, 0]), atol=1e-5)
    table = np.asarray(model.distilbert.embeddings.word_embeddings.embedding[...])
    from_embeds = model(attention_mask=mask, inputs_embeds=table[input_ids]).logits
    np.testing.assert_allclose(np.asarray(from_embeds), np.asarray(out.logits), atol=1e-6)
    positions = np.broadcast_to(np.arange(seq), (batch, choices, seq))
    np.testing.assert_array_equal(np.asarray(model(input_ids, mask, position_ids=positions).logits), out.logits)


# ----------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_token_type_ids_and_head_mask_are_rejected(cls, models):
    input_ids, mask = make_inputs(cls, CONFIG)
    with pytest.raises(ValueError, match="token_type_ids"):
        models[cls](input_ids, mask, token_type_ids=np.zeros_like(input_ids))
    with pytest.raises(ValueError, match="head_mask"):
        models[cls](input_ids, mask, head_mask=np.ones((CONFIG.n_layers, CONFIG.n_heads)))


@pytest.mark.parametrize("cls", [FlaxDistilBertModel, FlaxDistilBertForMultipleChoice])
@pytest.mark.parametrize("bad", [-1, 99, 1000])
def test_out_of_range_ids_raise(cls, bad, models):
    input_ids, mask = make_inputs(cls, CONFIG)
    input_ids[0, ..., 1] = bad
    with pytest.raises(ValueError, match=f"token id {bad}"):
        models[cls](input_ids, mask)


def test_out_of_range_ids_under_jit_give_nan_never_a_wrapped_row(models):
    model = models[FlaxDistilBertModel]
    input_ids, _ = make_inputs(FlaxDistilBertModel, CONFIG)
    input_ids[0, 1], input_ids[1, 2] = -1, CONFIG.vocab_size
    out = nnx.jit(lambda m, ids: m(ids))(model, input_ids).last_hidden_state
    assert np.isnan(np.asarray(out)).all(axis=-1).any()


def test_input_shape_and_type_errors(models):
    model = models[FlaxDistilBertModel]
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    with pytest.raises(ValueError, match="both are None"):
        model()
    with pytest.raises(ValueError, match="not both"):
        model(input_ids, inputs_embeds=np.zeros((2, 7, CONFIG.dim), np.float32))
    with pytest.raises(TypeError, match="integers"):
        model(input_ids.astype(np.float32))
    with pytest.raises(ValueError, match=r"\(batch, seq\)"):
        model(input_ids[0])
    with pytest.raises(ValueError, match="attention_mask"):
        model(input_ids, mask[:, :5])
    with pytest.raises(ValueError, match="dim=32"):
        model(inputs_embeds=np.zeros((2, 7, 8), np.float32))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(np.ones((1, 65), np.int32))
    with pytest.raises(ValueError, match="position_ids must lie"):
        model(input_ids, position_ids=np.arange(7) + 60)
    with pytest.raises(ValueError, match="position_ids must have shape"):
        model(input_ids, position_ids=np.arange(5))
    with pytest.raises(TypeError, match="unexpected keyword"):
        models[FlaxDistilBertForTokenClassification](input_ids, atention_mask=mask)


def test_multiple_choice_needs_three_dims(models):
    input_ids, mask = make_inputs(FlaxDistilBertModel, CONFIG)
    with pytest.raises(ValueError, match="choices"):
        models[FlaxDistilBertForMultipleChoice](input_ids, mask)
    mc_ids, mc_mask = make_inputs(FlaxDistilBertForMultipleChoice, CONFIG)
    with pytest.raises(ValueError, match="attention_mask"):
        models[FlaxDistilBertForMultipleChoice](mc_ids, mc_mask[:, :2])


def test_constructor_checks():
    with pytest.raises(ValueError, match="num_labels=2"):
        FlaxDistilBertForQuestionAnswering(CONFIG)
    with pytest.raises(TypeError, match="DistilBertConfig"):
        FlaxDistilBertModel({"dim": 32})
    with pytest.raises(TypeError, match=r"nnx\.Rngs"):
        FlaxDistilBertModel(CONFIG, rngs=0)
    with pytest.raises(ValueError, match="unsupported dtype"):
        FlaxDistilBertModel(CONFIG, dtype="int8")


# ----------------------------------------------------------------------------------------------- losses vs numpy


def test_masked_lm_loss_ignores_minus_100(models):
    cls = FlaxDistilBertForMaskedLM
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = make_labels(cls, CONFIG, input_ids)["labels"]
    labels[0, :3] = -100
    out = models[cls](input_ids, mask, labels=labels)
    assert float(out.loss) == pytest.approx(numpy_cross_entropy(out.logits, labels), rel=1e-5)


def test_single_label_loss(models):
    cls = FlaxDistilBertForSequenceClassification
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = np.array([2, -100])
    out = models[cls](input_ids, mask, labels=labels)
    expected = -log_softmax(np.asarray(out.logits)[0])[2]
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)


def test_regression_loss():
    config = CONFIG.replace(num_labels=1)
    model = build(FlaxDistilBertForSequenceClassification, config)
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, config)
    labels = np.array([0.5, -1.25], np.float32)
    out = model(input_ids, mask, labels=labels)
    assert float(out.loss) == pytest.approx(np.mean((np.asarray(out.logits)[:, 0] - labels) ** 2), rel=1e-5)
    assert config.problem_type is None


def test_multi_label_loss_and_problem_type_decided_per_call(models):
    cls = FlaxDistilBertForSequenceClassification
    model = models[cls]
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = np.array([[1, 0, 1], [0, 0, 1]], np.float32)
    out = model(input_ids, mask, labels=labels)
    x = np.asarray(out.logits, np.float64)
    expected = np.mean(np.logaddexp(0, x) - x * labels)
    assert float(out.loss) == pytest.approx(expected, rel=1e-5)
    assert model.config.problem_type is None  # never written back
    int_out = model(input_ids, mask, labels=np.array([1, 0]))  # integer labels next call: single-label
    assert float(int_out.loss) == pytest.approx(numpy_cross_entropy(int_out.logits, np.array([1, 0])), rel=1e-5)
    with pytest.raises(ValueError, match="logits' shape"):
        model(input_ids, mask, labels=np.ones((2, 2), np.float32))


def test_problem_type_from_config_wins():
    config = CONFIG.replace(problem_type="regression")
    model = build(FlaxDistilBertForSequenceClassification, config)
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, config)
    labels = np.arange(6).reshape(2, 3)  # integers, yet regression because the config says so
    out = model(input_ids, mask, labels=labels)
    assert float(out.loss) == pytest.approx(np.mean((np.asarray(out.logits) - labels) ** 2), rel=1e-5)


def test_token_classification_loss(models):
    cls = FlaxDistilBertForTokenClassification
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = make_labels(cls, CONFIG, input_ids)["labels"]
    labels[mask == 0] = -100
    out = models[cls](input_ids, mask, labels=labels)
    assert float(out.loss) == pytest.approx(numpy_cross_entropy(out.logits, labels), rel=1e-5)


def test_multiple_choice_loss(models):
    cls = FlaxDistilBertForMultipleChoice
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = np.array([2, 0])
    out = models[cls](input_ids, mask, labels=labels)
    assert float(out.loss) == pytest.approx(numpy_cross_entropy(out.logits, labels), rel=1e-5)


def test_question_answering_loss_clamps_and_ignores(models):
    cls = FlaxDistilBertForQuestionAnswering
    model = models[cls]
    input_ids, mask = make_inputs(cls, CONFIG)
    seq = input_ids.shape[1]
    start = np.array([[-3], [2]])  # (batch, 1) is squeezed; -3 clamps to 0
    end = np.array([seq + 5, 4])  # seq + 5 clamps to seq: ignored
    out = model(input_ids, mask, start_positions=start, end_positions=end)
    s, e = np.asarray(out.start_logits), np.asarray(out.end_logits)
    start_loss = numpy_cross_entropy(s, np.array([0, 2]))
    end_loss = numpy_cross_entropy(e, np.array([-100, 4]))
    assert float(out.loss) == pytest.approx((start_loss + end_loss) / 2, rel=1e-5)
    with pytest.raises(ValueError, match="both"):
        model(input_ids, mask, start_positions=start)
    with pytest.raises(TypeError, match="start_positions must be integer token positions, got dtype float32"):
        model(input_ids, mask, start_positions=start.astype(np.float32), end_positions=end)


def test_all_ignored_labels_give_zero_loss_not_nan(models):
    """Project decision (docs/parity.md): 0.0 in every framework, where PyTorch's cross_entropy gives NaN."""
    cls = FlaxDistilBertForTokenClassification
    input_ids, mask = make_inputs(cls, CONFIG)
    out = models[cls](input_ids, mask, labels=np.full(input_ids.shape, -100))
    assert float(out.loss) == 0.0


@pytest.mark.parametrize(
    ("cls", "labels", "error", "match"),
    [
        (FlaxDistilBertForSequenceClassification, np.array([0, 3]), ValueError, "class id 3"),
        (FlaxDistilBertForSequenceClassification, np.array([0, 1, 2]), ValueError, "labels must have shape"),
        (FlaxDistilBertForMultipleChoice, np.array([0, 3]), ValueError, "class id 3"),
        (FlaxDistilBertForTokenClassification, np.full((2, 7), -5), ValueError, "class id -5"),
        (FlaxDistilBertForMaskedLM, np.full((2, 7), 0.5), TypeError, "integer class ids"),
    ],
)
def test_bad_labels_raise(cls, labels, error, match, models):
    input_ids, mask = make_inputs(cls, CONFIG)
    with pytest.raises(error, match=match):
        models[cls](input_ids, mask, labels=labels)


# ----------------------------------------------------------------------------------------------- modes, dtypes, jit


def test_dropout_only_in_train_mode():
    model = build(FlaxDistilBertForSequenceClassification, CONFIG, train=True)
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    first, second = model(input_ids, mask).logits, model(input_ids, mask).logits
    assert not np.allclose(np.asarray(first), np.asarray(second))
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(input_ids, mask).logits), np.asarray(model(input_ids, mask).logits))


def test_sinusoidal_table_is_fixed_and_not_a_param():
    config = CONFIG.replace(sinusoidal_pos_embds=True)
    model = build(FlaxDistilBertForMaskedLM, config)
    variable = model.distilbert.embeddings.position_embeddings.embedding
    assert isinstance(variable, PositionTable) and not isinstance(variable, nnx.Param)
    np.testing.assert_array_equal(
        np.asarray(variable[...]), sinusoidal_table(config.max_position_embeddings, config.dim)
    )
    params = nnx.to_flat_state(nnx.state(model, nnx.Param))
    assert all("position_embeddings" not in path for path, _ in params)


def test_untied_projector_has_its_own_kernel():
    config = CONFIG.replace(tie_word_embeddings=False)
    model = build(FlaxDistilBertForMaskedLM, config)
    state = model.canonical_state_dict()
    assert state["vocab_projector.weight"].shape == (config.vocab_size, config.dim)
    assert not np.array_equal(state["vocab_projector.weight"], state["distilbert.embeddings.word_embeddings.weight"])
    input_ids, mask = make_inputs(FlaxDistilBertForMaskedLM, config)
    out = model(input_ids, mask, output_hidden_states=True)
    # logits = LayerNorm(act(vocab_transform(h))) @ W.T + b, computed by hand from the canonical weights
    h = (
        np.asarray(out.hidden_states[-1], np.float64) @ state["vocab_transform.weight"].T
        + state["vocab_transform.bias"]
    )
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-12)
    h = h * state["vocab_layer_norm.weight"] + state["vocab_layer_norm.bias"]
    logits = h @ state["vocab_projector.weight"].T + state["vocab_projector.bias"]
    np.testing.assert_allclose(np.asarray(out.logits), logits, atol=1e-5)


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_bfloat16_compute_with_float32_params(cls, models):
    """bf16 compute stays within bf16 accuracy of the float32 model with the same float32 weights.

    Stated tolerance: bf16 keeps 8 significant bits (unit roundoff 2**-8 = 0.0039); after two post-LayerNorm blocks
    on O(1) activations we allow |delta| <= 0.1 + 0.05 |reference|, i.e. a few dozen roundoffs.
    """
    model = build(cls, CONFIG, dtype="bfloat16")
    model.load_canonical_state_dict(models[cls].canonical_state_dict())
    assert all(v.get_value().dtype == jnp.float32 for _, v in nnx.to_flat_state(nnx.state(model, nnx.Param)))
    input_ids, mask = make_inputs(cls, CONFIG)
    out = model(input_ids, mask, output_attentions=True)
    reference = main_output(cls, models[cls](input_ids, mask))
    value = out.last_hidden_state if cls is FlaxDistilBertModel else out[0]
    assert value.dtype == jnp.bfloat16
    np.testing.assert_allclose(main_output(cls, out), reference, atol=0.1, rtol=0.05)
    np.testing.assert_allclose(np.asarray(out.attentions[0], np.float32).sum(-1), 1.0, atol=2e-2)


def test_bfloat16_params():
    model = build(FlaxDistilBertForSequenceClassification, CONFIG, param_dtype="bfloat16")
    state = model.canonical_state_dict()
    assert {a.dtype.name for a in state.values()} == {"bfloat16"}
    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    assert model(input_ids, mask).logits.dtype == jnp.bfloat16


@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_jit_equals_eager(cls, models):
    model = models[cls]
    input_ids, mask = make_inputs(cls, CONFIG)
    labels = make_labels(cls, CONFIG, input_ids)

    @nnx.jit
    def forward(model, input_ids, mask, labels):
        return model(input_ids, mask, output_hidden_states=True, output_attentions=True, **labels)

    compiled = forward(model, input_ids, mask, labels)
    eager = model(input_ids, mask, output_hidden_states=True, output_attentions=True, **labels)
    assert type(compiled) is type(eager) and list(compiled) == list(eager)
    for a, b in zip(jax.tree.leaves(compiled), jax.tree.leaves(eager)):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-5)


def test_jax_jit_with_the_graph_definition_as_static_argument(models):
    """The config is hashable, so nnx.split's graph definition can be a static jax.jit argument."""
    model = models[FlaxDistilBertForSequenceClassification]
    graphdef, state = nnx.split(model)

    def forward(graphdef, state, input_ids, mask):
        return nnx.merge(graphdef, state)(input_ids, mask).logits

    input_ids, mask = make_inputs(FlaxDistilBertForSequenceClassification, CONFIG)
    compiled = jax.jit(forward, static_argnums=0)(graphdef, state, input_ids, mask)
    np.testing.assert_allclose(np.asarray(compiled), np.asarray(model(input_ids, mask).logits), atol=1e-5)
    assert hash(graphdef) == hash(nnx.split(build(FlaxDistilBertForSequenceClassification, CONFIG, seed=5))[0])
