"""PyTorch models: shapes, masking, attention kernels, losses, input checks, initialisation, training."""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_helpers import (  # noqa: E402
    ALL_CLASSES,
    HEAD_CLASSES,
    build,
    fit_config,
    main_output,
    make_inputs,
    make_labels,
)

from distilbert_mf.checkpoint import sinusoidal_table  # noqa: E402
from distilbert_mf.torch import (  # noqa: E402
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
)

pytestmark = pytest.mark.torch


def expected_main_shape(cls, config, input_ids):
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    return {
        DistilBertModel: (batch, seq, config.dim),
        DistilBertForMaskedLM: (batch, seq, config.vocab_size),
        DistilBertForSequenceClassification: (batch, config.num_labels),
        DistilBertForMultipleChoice: (batch, input_ids.shape[1]),
        DistilBertForTokenClassification: (batch, seq, config.num_labels),
        DistilBertForQuestionAnswering: (2, batch, seq),
    }[cls]


# ----------------------------------------------------------------------------------------------- shapes and dtypes


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_shapes_and_dtypes(cls, dtype, tiny_config):
    model = build(cls, tiny_config, dtype=dtype).eval()
    config = model.config
    input_ids, mask = make_inputs(cls, config)
    out = model(input_ids, mask, output_hidden_states=True, output_attentions=True)
    main = main_output(cls, out)
    assert tuple(main.shape) == expected_main_shape(cls, config, input_ids)
    assert main.dtype == dtype
    rows = input_ids.reshape(-1, input_ids.shape[-1]).shape[0]
    seq = input_ids.shape[-1]
    assert len(out.hidden_states) == config.n_layers + 1
    assert len(out.attentions) == config.n_layers
    for h in out.hidden_states:
        assert tuple(h.shape) == (rows, seq, config.dim) and h.dtype == dtype
    for a in out.attentions:
        assert tuple(a.shape) == (rows, config.n_heads, seq, seq) and a.dtype == dtype
    assert all(p.dtype == dtype for p in model.parameters())


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_optional_outputs_absent_by_default(cls, tiny_config):
    model = build(cls, tiny_config).eval()
    out = model(*make_inputs(cls, model.config))
    assert "hidden_states" not in out and "attentions" not in out and "loss" not in out
    assert out[0] is next(iter(out.values()))


def test_output_reads_by_attribute_key_and_index(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    input_ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    out = model(input_ids, mask, labels=torch.tensor([0, 2]))
    assert out[0] is out.loss is out["loss"]
    assert out[1] is out.logits


# ----------------------------------------------------------------------------------------------- masking


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_right_padding_matches_unpadded_rows(attn, tiny_config):
    model = build(DistilBertModel, tiny_config, attn_implementation=attn).eval()
    lengths = [7, 4, 1]
    ids = torch.randint(1, tiny_config.vocab_size, (3, 7), generator=torch.Generator().manual_seed(3))
    mask = torch.tensor([[1] * n + [0] * (7 - n) for n in lengths])
    with torch.no_grad():
        padded = model(ids * mask, mask)  # the sdpa kernel itself (no attentions requested)
        padded_probs = model(ids * mask, mask, output_attentions=True).attentions
        for row, n in enumerate(lengths):
            alone = model(ids[row : row + 1, :n], output_attentions=True)
            torch.testing.assert_close(padded.last_hidden_state[row, :n], alone.last_hidden_state[0], rtol=0, atol=1e-6)
            for a_pad, a_alone in zip(padded_probs, alone.attentions):
                torch.testing.assert_close(a_pad[row, :, :n, :n], a_alone[0], rtol=0, atol=1e-6)
                assert torch.all(a_pad[row, :, :, n:] == 0)  # padded keys get no attention


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fully_masked_row_is_finite(attn, dtype, tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config, attn_implementation=attn, dtype=dtype).eval()
    ids = torch.randint(1, tiny_config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0]])
    out = model(ids, mask, output_hidden_states=True, output_attentions=attn == "eager")
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_eager_equals_sdpa(cls, tiny_config):
    sdpa = build(cls, tiny_config, attn_implementation="sdpa").eval()
    eager = build(cls, tiny_config, attn_implementation="eager").eval()
    eager.load_canonical_state_dict(sdpa.canonical_state_dict())
    input_ids, mask = make_inputs(cls, sdpa.config)
    with torch.no_grad():
        for m in (mask, None):
            a = sdpa(input_ids, m, output_hidden_states=True)
            b = eager(input_ids, m, output_hidden_states=True)
            torch.testing.assert_close(main_output(cls, a), main_output(cls, b), rtol=0, atol=1e-6)
            for x, y in zip(a.hidden_states, b.hidden_states):
                torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
        # asking for attentions under sdpa returns the probabilities and the same outputs
        a = sdpa(input_ids, mask, output_attentions=True)
        b = eager(input_ids, mask, output_attentions=True)
        torch.testing.assert_close(main_output(cls, a), main_output(cls, b), rtol=0, atol=1e-6)
        for x, y in zip(a.attentions, b.attentions):
            torch.testing.assert_close(x, y, rtol=0, atol=1e-6)
            torch.testing.assert_close(x.sum(-1), torch.ones_like(x.sum(-1)), rtol=0, atol=1e-6)


def test_set_attn_implementation(tiny_config):
    model = build(DistilBertForMaskedLM, tiny_config)
    assert model.attn_implementation == "sdpa"
    model.set_attn_implementation("eager")
    assert all(b.attention.attn_implementation == "eager" for b in model.distilbert.transformer.layer)
    with pytest.raises(ValueError, match="flash"):
        model.set_attn_implementation("flash")


def test_position_ids_and_inputs_embeds(tiny_config):
    model = build(DistilBertModel, tiny_config).eval()
    ids, mask = make_inputs(DistilBertModel, tiny_config)
    with torch.no_grad():
        ref = model(ids, mask).last_hidden_state
        pos = torch.arange(ids.shape[1])
        torch.testing.assert_close(model(ids, mask, position_ids=pos).last_hidden_state, ref, rtol=0, atol=0)
        torch.testing.assert_close(
            model(ids, mask, position_ids=pos.expand(2, -1)).last_hidden_state, ref, rtol=0, atol=0
        )
        embeds = model.embeddings.word_embeddings(ids)
        torch.testing.assert_close(
            model(attention_mask=mask, inputs_embeds=embeds).last_hidden_state, ref, rtol=0, atol=0
        )
        shifted = model(ids, mask, position_ids=pos + 3).last_hidden_state
    assert not torch.allclose(shifted, ref)


def test_numpy_inputs_equal_tensor_inputs(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    labels = np.array([1, 0])
    with torch.no_grad():
        a = model(ids.numpy().astype(np.int32), mask.numpy(), labels=labels)
        b = model(ids, mask, labels=torch.from_numpy(labels))
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    torch.testing.assert_close(a.loss, b.loss, rtol=0, atol=0)


def test_multiple_choice_numpy_and_inputs_embeds(tiny_config):
    model = build(DistilBertForMultipleChoice, tiny_config).eval()
    ids, mask = make_inputs(DistilBertForMultipleChoice, tiny_config)
    with torch.no_grad():
        ref = model(ids, mask).logits
        torch.testing.assert_close(model(ids.numpy(), mask.numpy()).logits, ref, rtol=0, atol=0)
        embeds = model.distilbert.embeddings.word_embeddings(ids)  # (batch, choices, seq, dim)
        torch.testing.assert_close(model(attention_mask=mask, inputs_embeds=embeds).logits, ref, rtol=0, atol=0)


def test_dropout_only_in_train_mode(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config)
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    model.train()
    a, b = model(ids, mask).logits, model(ids, mask).logits
    assert not torch.allclose(a, b)
    model.eval()
    torch.testing.assert_close(model(ids, mask).logits, model(ids, mask).logits, rtol=0, atol=0)


# ----------------------------------------------------------------------------------------------- losses


def np_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = -100) -> float:
    logits = logits.astype(np.float64)
    keep = labels != ignore
    shifted = logits - logits.max(-1, keepdims=True)
    log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    picked = log_probs[np.nonzero(keep)[0], labels[keep]]
    return float(-picked.mean())


def loss_and_logits(model, inputs, **labels):
    with torch.no_grad():
        out = model(*inputs, **labels)
    return float(out.loss), out


def test_regression_loss(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config.replace(num_labels=1)).eval()
    inputs = make_inputs(DistilBertForSequenceClassification, model.config)
    labels = torch.tensor([0.5, -1.25])
    loss, out = loss_and_logits(model, inputs, labels=labels)
    expected = np.mean((out.logits.numpy()[:, 0].astype(np.float64) - labels.numpy()) ** 2)
    assert loss == pytest.approx(expected, rel=1e-6)
    assert model.config.problem_type is None


def test_single_label_loss_with_ignore_index(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    inputs = make_inputs(DistilBertForSequenceClassification, model.config, batch=3)
    labels = torch.tensor([2, -100, 0])
    loss, out = loss_and_logits(model, inputs, labels=labels)
    assert loss == pytest.approx(np_cross_entropy(out.logits.numpy(), labels.numpy()), rel=1e-6)
    assert model.config.problem_type is None


def test_multi_label_loss(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    inputs = make_inputs(DistilBertForSequenceClassification, model.config)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    loss, out = loss_and_logits(model, inputs, labels=labels)
    z = out.logits.numpy().astype(np.float64)
    y = labels.numpy()
    sig = 1 / (1 + np.exp(-z))
    expected = -np.mean(y * np.log(sig) + (1 - y) * np.log(1 - sig))
    assert loss == pytest.approx(expected, rel=1e-6)
    assert model.config.problem_type is None


def test_problem_type_from_config_wins_and_is_decided_per_call(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config.replace(problem_type="regression")).eval()
    inputs = make_inputs(DistilBertForSequenceClassification, model.config)
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 2.0, 1.0]])
    loss, out = loss_and_logits(model, inputs, labels=labels)
    assert loss == pytest.approx(np.mean((out.logits.numpy().astype(np.float64) - labels.numpy()) ** 2), rel=1e-6)
    # no problem type in the config: integer labels then float labels on the same model, each decided anew
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    int_loss, out = loss_and_logits(model, inputs, labels=torch.tensor([1, 2]))
    assert int_loss == pytest.approx(np_cross_entropy(out.logits.numpy(), np.array([1, 2])), rel=1e-6)
    float_loss, _ = loss_and_logits(model, inputs, labels=labels.clamp(0, 1))
    assert float_loss != pytest.approx(int_loss)
    assert model.config.problem_type is None


def test_token_classification_loss_ignores_minus_100(tiny_config):
    model = build(DistilBertForTokenClassification, tiny_config).eval()
    inputs = make_inputs(DistilBertForTokenClassification, model.config)
    labels = make_labels(DistilBertForTokenClassification, model.config, inputs[0])["labels"]
    labels[:, 0] = -100
    labels[-1, 4:] = -100
    loss, out = loss_and_logits(model, inputs, labels=labels)
    expected = np_cross_entropy(out.logits.numpy().reshape(-1, 3), labels.numpy().reshape(-1))
    assert loss == pytest.approx(expected, rel=1e-6)


def test_masked_lm_loss(tiny_config):
    model = build(DistilBertForMaskedLM, tiny_config).eval()
    inputs = make_inputs(DistilBertForMaskedLM, model.config)
    labels = torch.full_like(inputs[0], -100)
    labels[0, 2], labels[1, 1], labels[1, 3] = 5, 17, 98
    loss, out = loss_and_logits(model, inputs, labels=labels)
    expected = np_cross_entropy(out.logits.numpy().reshape(-1, 99), labels.numpy().reshape(-1))
    assert loss == pytest.approx(expected, rel=1e-6)


def test_multiple_choice_loss(tiny_config):
    model = build(DistilBertForMultipleChoice, tiny_config).eval()
    inputs = make_inputs(DistilBertForMultipleChoice, model.config)
    labels = torch.tensor([2, 0])
    loss, out = loss_and_logits(model, inputs, labels=labels)
    assert loss == pytest.approx(np_cross_entropy(out.logits.numpy(), labels.numpy()), rel=1e-6)


def test_question_answering_loss_clamps_and_ignores(tiny_config):
    model = build(DistilBertForQuestionAnswering, tiny_config).eval()
    inputs = make_inputs(DistilBertForQuestionAnswering, model.config, batch=3)
    seq = inputs[0].shape[1]
    start = torch.tensor([2, -5, 50])  # -5 clamps to 0; 50 clamps to seq and is ignored
    end = torch.tensor([[4], [seq], [1]])  # (batch, 1) is accepted; seq is ignored
    loss, out = loss_and_logits(model, inputs, start_positions=start, end_positions=end)
    s, e = out.start_logits.numpy(), out.end_logits.numpy()
    start_loss = np_cross_entropy(s, np.array([2, 0, seq]), ignore=seq)
    end_loss = np_cross_entropy(e, np.array([4, seq, 1]), ignore=seq)
    assert loss == pytest.approx((start_loss + end_loss) / 2, rel=1e-6)


def test_question_answering_needs_both_positions(tiny_config):
    model = build(DistilBertForQuestionAnswering, tiny_config).eval()
    inputs = make_inputs(DistilBertForQuestionAnswering, model.config)
    with pytest.raises(ValueError, match="start_positions and end_positions"):
        model(*inputs, start_positions=torch.tensor([0, 1]))


def test_question_answering_refuses_float_positions(tiny_config):
    model = build(DistilBertForQuestionAnswering, tiny_config).eval()
    inputs = make_inputs(DistilBertForQuestionAnswering, model.config)
    with pytest.raises(TypeError, match=r"end_positions must be integer token positions, got dtype torch\.float32"):
        model(*inputs, start_positions=torch.tensor([0, 1]), end_positions=torch.tensor([1.0, 2.0]))


@pytest.mark.parametrize(
    ("cls", "labels", "match"),
    [
        (DistilBertForSequenceClassification, [0, 3], "class id 3"),
        (DistilBertForSequenceClassification, [0, 1, 2], r"shape \(2,\)"),
        (DistilBertForTokenClassification, [[0] * 7, [0] * 6 + [-1]], "class id -1"),
        (DistilBertForMultipleChoice, [0, 3], r"class id 3, outside \[0, 3\)"),
        (DistilBertForMaskedLM, [[99] * 7, [0] * 7], "class id 99"),
    ],
)
def test_bad_labels_raise_value_error(cls, labels, match, tiny_config):
    model = build(cls, tiny_config).eval()
    with pytest.raises(ValueError, match=match):
        model(*make_inputs(cls, model.config), labels=np.array(labels))


def test_multi_label_labels_of_wrong_shape(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    with pytest.raises(ValueError, match="logits' shape"):
        model(*make_inputs(DistilBertForSequenceClassification, tiny_config), labels=torch.ones(2, 4))


# ----------------------------------------------------------------------------------------------- input checks


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_token_type_ids_and_head_mask_are_rejected(cls, tiny_config):
    model = build(cls, tiny_config).eval()
    ids, mask = make_inputs(cls, model.config)
    with pytest.raises(ValueError, match="segment"):
        model(ids, mask, token_type_ids=torch.zeros_like(ids))
    with pytest.raises(ValueError, match="head_mask"):
        model(ids, mask, head_mask=torch.ones(2, 4))


@pytest.mark.parametrize("bad", [99, -1])
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_out_of_range_ids_raise(cls, bad, tiny_config):
    model = build(cls, tiny_config).eval()
    ids, mask = make_inputs(cls, model.config)
    ids.view(-1)[3] = bad
    with pytest.raises(ValueError, match=f"token id {bad}"):
        model(ids, mask)


def test_input_shape_and_type_errors(tiny_config):
    model = build(DistilBertModel, tiny_config).eval()
    ids = torch.randint(1, 99, (2, 7))
    with pytest.raises(ValueError, match=r"input_ids must have shape \(batch, seq\).*got shape \(7,\)"):
        model(ids[0])
    with pytest.raises(ValueError, match=r"attention_mask must have the inputs' shape \(2, 7\).*got \(2, 6\)"):
        model(ids, torch.ones(2, 6))
    with pytest.raises(TypeError, match="input_ids must hold integers"):
        model(ids.float())
    with pytest.raises(TypeError, match=r"torch\.Tensor or a numpy array"):
        model("hello")
    with pytest.raises(ValueError, match="both are None"):
        model()
    with pytest.raises(ValueError, match="not both"):
        model(ids, inputs_embeds=torch.zeros(2, 7, 32))
    with pytest.raises(ValueError, match="last dimension dim=32"):
        model(inputs_embeds=torch.zeros(2, 7, 31))
    with pytest.raises(ValueError, match="max_position_embeddings=64"):
        model(torch.randint(1, 99, (1, 65)))
    with pytest.raises(ValueError, match=r"position_ids must lie in \[0, max_position_embeddings=64\)"):
        model(ids, position_ids=torch.arange(7) + 60)
    with pytest.raises(ValueError, match="position_ids must have shape"):
        model(ids, position_ids=torch.arange(6))
    with pytest.raises(TypeError, match="unexpected keyword"):
        model(ids, input_idz=ids)


def test_multiple_choice_needs_three_dims(tiny_config):
    model = build(DistilBertForMultipleChoice, tiny_config).eval()
    ids = torch.randint(1, 99, (2, 3, 7))
    with pytest.raises(ValueError, match=r"\(batch, num_choices, seq\).*got shape \(2, 7\)"):
        model(ids[:, 0])
    with pytest.raises(ValueError, match=r"attention_mask must have the inputs' shape \(2, 3, 7\)"):
        model(ids, torch.ones(2, 7))
    with pytest.raises(ValueError, match="segment"):
        model(ids, token_type_ids=torch.zeros_like(ids))


def test_constructor_checks(tiny_config):
    with pytest.raises(TypeError, match="DistilBertConfig"):
        DistilBertModel({"dim": 32})
    with pytest.raises(ValueError, match="attn_implementation"):
        DistilBertModel(tiny_config, attn_implementation="flash_attention_2")
    with pytest.raises(ValueError, match="num_labels"):
        DistilBertForQuestionAnswering(tiny_config)  # num_labels=3
    with pytest.raises(ValueError, match="unsupported dtype"):
        DistilBertModel(tiny_config, dtype="int8")


# ----------------------------------------------------------------------------------------------- initialisation


def test_initialisation_matches_transformers_rules(tiny_config):
    config = tiny_config.replace(vocab_size=500, dim=64, n_heads=4, hidden_dim=256, initializer_range=0.05)
    model = build(DistilBertForMaskedLM, config)
    emb = model.distilbert.embeddings
    assert torch.all(emb.word_embeddings.weight.detach()[config.pad_token_id] == 0)
    for name, p in model.state_dict().items():
        if name.endswith(("LayerNorm.weight", "layer_norm.weight")):
            assert torch.equal(p, torch.ones_like(p)), name
        elif name.endswith("bias"):
            assert torch.equal(p, torch.zeros_like(p)), name
        else:
            assert float(p.std()) == pytest.approx(0.05, rel=0.1), name
            assert abs(float(p.mean())) < 0.01, name
    assert len(model.state_dict()) == len(list(model.named_parameters())) + 1  # + the tied projector
    assert model.vocab_projector.weight is emb.word_embeddings.weight


@pytest.mark.parametrize("cls", [DistilBertModel, DistilBertForTokenClassification], ids=lambda c: c.__name__)
def test_sinusoidal_table_is_fixed(cls, tiny_config):
    config = tiny_config.replace(sinusoidal_pos_embds=True)
    model = build(cls, config)
    base = model if cls is DistilBertModel else model.distilbert
    weight = base.embeddings.position_embeddings.weight
    np.testing.assert_array_equal(weight.detach().numpy(), sinusoidal_table(64, 32))
    assert not weight.requires_grad
    assert weight.detach().numpy()[3, 0] == pytest.approx(np.sin(3.0)) and weight.detach().numpy()[
        3, 1
    ] == pytest.approx(np.cos(3.0))


# ----------------------------------------------------------------------------------------------- meta device


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_build_on_meta_then_materialise(cls, tiny_config):
    reference = build(cls, tiny_config).eval()
    model = cls(reference.config, device="meta")
    assert all(p.is_meta for p in model.parameters())
    model.to_empty(device="cpu")
    model.load_canonical_state_dict(reference.canonical_state_dict())
    model.eval()
    ids, mask = make_inputs(cls, reference.config)
    with torch.no_grad():
        torch.testing.assert_close(
            main_output(cls, model(ids, mask)), main_output(cls, reference(ids, mask)), rtol=0, atol=0
        )
    if cls is DistilBertForMaskedLM:
        assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight


def test_load_into_meta_model_without_to_empty(tiny_config):
    reference = build(DistilBertForMaskedLM, tiny_config).eval()
    model = DistilBertForMaskedLM(tiny_config, device="meta")
    model.load_canonical_state_dict(reference.canonical_state_dict())
    assert not any(p.is_meta for p in model.parameters())
    ids, mask = make_inputs(DistilBertForMaskedLM, tiny_config)
    torch.testing.assert_close(model.eval()(ids, mask).logits, reference(ids, mask).logits, rtol=0, atol=0)
    # the copy does not alias the source model's memory
    with torch.no_grad():
        model.distilbert.embeddings.LayerNorm.weight.add_(1.0)
    assert torch.equal(reference.distilbert.embeddings.LayerNorm.weight, torch.ones(32))


# ----------------------------------------------------------------------------------------------- training


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_every_parameter_gets_a_gradient(cls, tiny_config):
    model = build(cls, tiny_config).train()
    ids, mask = make_inputs(cls, model.config)
    model(ids, mask, **make_labels(cls, model.config, ids)).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        if cls is DistilBertForMultipleChoice and name == "classifier.bias":
            # one bias added to every choice's score: softmax is shift-invariant, so its gradient is 0 up to rounding
            assert float(p.grad.abs().max()) < 1e-6
            continue
        assert float(p.grad.abs().max()) > 0, name


@pytest.mark.parametrize("cls", HEAD_CLASSES, ids=lambda c: c.__name__)
def test_one_optimiser_step_lowers_the_loss(cls, tiny_config):
    model = build(cls, tiny_config).eval()  # eval: no dropout, so the two losses are comparable
    ids, mask = make_inputs(cls, model.config)
    labels = make_labels(cls, model.config, ids)
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(ids, mask, **labels).loss
    before.backward()
    optimiser.step()
    with torch.no_grad():
        after = model(ids, mask, **labels).loss
    assert float(after) < float(before.detach())


@pytest.mark.parametrize("cls", [DistilBertForSequenceClassification, DistilBertForMaskedLM], ids=lambda c: c.__name__)
def test_gradient_checkpointing_gives_the_same_gradients(cls, tiny_config):
    config = fit_config(cls, tiny_config.replace(dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0))
    plain, ckpt = build(cls, config).train(), build(cls, config).train()
    ckpt.gradient_checkpointing_enable()
    assert ckpt.is_gradient_checkpointing and not plain.is_gradient_checkpointing
    ids, mask = make_inputs(cls, config)
    labels = make_labels(cls, config, ids)
    for model in (plain, ckpt):
        model(ids, mask, **labels).loss.backward()
    for (name, p), q in zip(plain.named_parameters(), ckpt.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=1e-6, msg=name)
    ckpt.gradient_checkpointing_disable()
    assert not ckpt.is_gradient_checkpointing


def test_sinusoidal_table_stays_fixed_in_training(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config.replace(sinusoidal_pos_embds=True)).train()
    table = model.distilbert.embeddings.position_embeddings.weight.detach().clone()
    optimiser = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids, mask = make_inputs(DistilBertForSequenceClassification, model.config)
    model(ids, mask, labels=torch.tensor([0, 1])).loss.backward()
    optimiser.step()
    assert torch.equal(model.distilbert.embeddings.position_embeddings.weight, table)


def test_no_logging_noise_on_forward(tiny_config, caplog):
    model = build(DistilBertModel, tiny_config).eval()
    with caplog.at_level(logging.DEBUG, logger="distilbert_mf"):
        model(*make_inputs(DistilBertModel, tiny_config))
    assert caplog.records == []


def test_float32_inputs_embeds_into_a_bfloat16_model(tiny_config):
    model = build(DistilBertModel, tiny_config, dtype=torch.bfloat16).eval()
    ids, mask = make_inputs(DistilBertModel, tiny_config)
    embeds = model.embeddings.word_embeddings(ids)
    with torch.no_grad():
        want = model(ids, mask).last_hidden_state
        got = model(attention_mask=mask, inputs_embeds=embeds.float()).last_hidden_state
        from_numpy = model(attention_mask=mask.numpy(), inputs_embeds=embeds.float().numpy()).last_hidden_state
    assert got.dtype == torch.bfloat16
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    torch.testing.assert_close(from_numpy, want, rtol=0, atol=0)
