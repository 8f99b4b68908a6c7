"""PyTorch models under torch.compile (no graph breaks) and torch.export."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch_helpers import build, make_inputs, make_labels  # noqa: E402

from distilbert_mf.torch import (  # noqa: E402
    DistilBertForMaskedLM,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertModel,
)
from distilbert_mf.torch.modeling import padding_bias  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(autouse=True)
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_encoder_compiles_without_graph_breaks(attn, tiny_config):
    # backend="eager" runs Dynamo's capture (fullgraph=True fails on any graph break) without Inductor's codegen
    model = build(DistilBertModel, tiny_config, attn_implementation=attn).eval()
    ids, mask = make_inputs(DistilBertModel, tiny_config)
    x = model.embeddings(ids)
    bias = padding_bias(mask, x.dtype)
    compiled = torch.compile(model.transformer, fullgraph=True, backend="eager")
    with torch.no_grad():
        got = compiled(x, bias, True, True)
        want = model.transformer(x, bias, True, True)
    torch.testing.assert_close(got[0], want[0], rtol=0, atol=1e-6)
    assert len(got[1]) == tiny_config.n_layers + 1 and len(got[2]) == tiny_config.n_layers


@pytest.mark.parametrize(
    "cls",
    [DistilBertModel, DistilBertForSequenceClassification, DistilBertForQuestionAnswering],
    ids=lambda c: c.__name__,
)
def test_whole_model_compiles_without_graph_breaks(cls, tiny_config):
    model = build(cls, tiny_config).eval()
    ids, mask = make_inputs(cls, model.config)
    labels = make_labels(cls, model.config, ids)
    compiled = torch.compile(model, fullgraph=True, backend="eager")
    with torch.no_grad():
        got, want = compiled(ids, mask, **labels), model(ids, mask, **labels)
    assert type(got) is type(want) and list(got) == list(want)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=1e-6)


def test_training_step_compiles_with_gradient_checkpointing(tiny_config):
    model = build(DistilBertForMaskedLM, tiny_config).train()
    model.gradient_checkpointing_enable()
    ids, mask = make_inputs(DistilBertForMaskedLM, tiny_config)
    labels = make_labels(DistilBertForMaskedLM, tiny_config, ids)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    compiled(ids, mask, **labels).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.slow
def test_inductor_compiled_encoder_matches_eager(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    with torch.no_grad():
        want = model(ids, mask).logits
        model.distilbert.transformer.compile(fullgraph=True)  # Inductor, in place
        got = model(ids, mask).logits
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)


def test_export_sequence_classifier(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    exported = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask})
    out = exported.module()(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        want = model(ids, mask)
    assert type(out).__name__ == "SequenceClassifierOutput"
    torch.testing.assert_close(out.logits, want.logits, rtol=0, atol=1e-6)
    # new inputs of the same shape go through the exported graph too
    other = torch.randint(1, tiny_config.vocab_size, ids.shape, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        torch.testing.assert_close(
            exported.module()(input_ids=other, attention_mask=mask).logits, model(other, mask).logits, rtol=0, atol=1e-6
        )


def test_export_with_dynamic_batch_and_sequence(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config, batch=3, seq=9)
    batch, seq = torch.export.Dim("batch", max=64), torch.export.Dim("seq", max=tiny_config.max_position_embeddings)
    shapes = {"input_ids": {0: batch, 1: seq}, "attention_mask": {0: batch, 1: seq}}
    exported = torch.export.export(model, (), {"input_ids": ids, "attention_mask": mask}, dynamic_shapes=shapes)
    small_ids, small_mask = make_inputs(DistilBertForSequenceClassification, tiny_config, batch=2, seq=5, seed=4)
    with torch.no_grad():
        torch.testing.assert_close(
            exported.module()(input_ids=small_ids, attention_mask=small_mask).logits,
            model(small_ids, small_mask).logits,
            rtol=0,
            atol=1e-6,
        )
