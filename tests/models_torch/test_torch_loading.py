"""PyTorch models: canonical weights, from_pretrained / save_pretrained, tied weights, dtypes, real checkpoint."""

from __future__ import annotations

import json
import logging

import ml_dtypes
import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors import safe_open  # noqa: E402
from torch_helpers import ALL_CLASSES, build, main_output, make_inputs  # noqa: E402

from distilbert_mf import DistilBertConfig  # noqa: E402
from distilbert_mf.checkpoint import ShapeMismatchError, expected_shapes  # noqa: E402
from distilbert_mf.checkpoint.loading import load_pretrained  # noqa: E402
from distilbert_mf.modeling_utils import CPU_FLOAT16_WARNING  # noqa: E402
from distilbert_mf.torch import (  # noqa: E402
    DistilBertForMaskedLM,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
)

pytestmark = pytest.mark.torch


def outputs_equal(cls, a, b, ids, mask, atol=0.0):
    with torch.no_grad():
        torch.testing.assert_close(main_output(cls, a(ids, mask)), main_output(cls, b(ids, mask)), rtol=0, atol=atol)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_canonical_state_dict_has_every_expected_key(cls, tiny_config):
    model = build(cls, tiny_config)
    state = model.canonical_state_dict()
    shapes = expected_shapes(model.config, cls.head)
    assert list(state) == list(shapes)
    for key, array in state.items():
        assert isinstance(array, np.ndarray) and array.shape == shapes[key] and array.dtype == np.float32, key


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_save_then_from_pretrained_round_trip(cls, tiny_config, tmp_path):
    model = build(cls, tiny_config).eval()
    written = model.save_pretrained(tmp_path)
    assert {p.name for p in written} == {"model.safetensors", "config.json"}
    assert json.loads((tmp_path / "config.json").read_text())["architectures"] == [cls.__name__]
    loaded = cls.from_pretrained(tmp_path)
    assert not loaded.training
    assert loaded.config == model.config
    outputs_equal(cls, model, loaded, *make_inputs(cls, model.config))
    for key, array in model.canonical_state_dict().items():
        np.testing.assert_array_equal(loaded.canonical_state_dict()[key], array, err_msg=key)


def test_tied_projector_shares_storage_and_is_saved_once(tiny_config, tmp_path):
    model = build(DistilBertForMaskedLM, tiny_config)
    word = model.distilbert.embeddings.word_embeddings.weight
    assert model.vocab_projector.weight is word
    state = model.canonical_state_dict()
    assert np.shares_memory(state["vocab_projector.weight"], state["distilbert.embeddings.word_embeddings.weight"])
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="np") as f:
        keys = set(f.keys())
    assert "vocab_projector.weight" not in keys and "distilbert.embeddings.word_embeddings.weight" in keys
    loaded = DistilBertForMaskedLM.from_pretrained(tmp_path)
    w = loaded.distilbert.embeddings.word_embeddings.weight
    assert loaded.vocab_projector.weight is w
    assert loaded.vocab_projector.weight.data_ptr() == w.data_ptr()
    # training the embeddings moves the projector with them
    with torch.no_grad():
        w[5].add_(1.0)
    assert torch.equal(loaded.vocab_projector.weight[5], w[5])


def test_untied_projector_is_its_own_parameter(tiny_config, tmp_path):
    model = build(DistilBertForMaskedLM, tiny_config.replace(tie_word_embeddings=False)).eval()
    assert model.vocab_projector.weight is not model.distilbert.embeddings.word_embeddings.weight
    model.save_pretrained(tmp_path)
    with safe_open(tmp_path / "model.safetensors", framework="np") as f:
        assert "vocab_projector.weight" in set(f.keys())
    loaded = DistilBertForMaskedLM.from_pretrained(tmp_path)
    assert loaded.vocab_projector.weight is not loaded.distilbert.embeddings.word_embeddings.weight
    outputs_equal(DistilBertForMaskedLM, model, loaded, *make_inputs(DistilBertForMaskedLM, tiny_config))


def test_real_transformers_checkpoint_loads_without_missing_or_unexpected_keys(shared_data, caplog):
    folder = shared_data / "tiny-random-distilbert"
    _, _, report = load_pretrained(folder, "base")
    assert report.missing == [] and report.unexpected == []
    with caplog.at_level(logging.WARNING):
        model = DistilBertModel.from_pretrained(folder)
    assert not [r for r in caplog.records if "missing" in r.getMessage()]
    assert model.config.n_layers == 5 and model.config.vocab_size == 1124
    ids = torch.tensor([[101, 7, 300, 1000, 102]])
    out = model(ids)
    assert out.last_hidden_state.shape == (1, 5, 32) and torch.isfinite(out.last_hidden_state).all()
    from safetensors.numpy import load_file

    stored = load_file(folder / "model.safetensors")
    for key, array in model.canonical_state_dict().items():
        np.testing.assert_array_equal(array, stored[key], err_msg=key)


def test_base_checkpoint_into_a_head_and_back(tiny_config, tmp_path, caplog):
    base = build(DistilBertModel, tiny_config).eval()
    base.save_pretrained(tmp_path / "base")
    with caplog.at_level(logging.WARNING):
        head = DistilBertForTokenClassification.from_pretrained(tmp_path / "base")
    assert "classifier.weight" in caplog.text  # the new layers are reported as missing
    assert not any(p.is_meta for p in head.parameters())
    classifier = head.classifier.weight.detach()
    assert float(classifier.std()) == pytest.approx(0.02, rel=0.5) and torch.equal(head.classifier.bias, torch.zeros(3))
    ids, mask = make_inputs(DistilBertModel, tiny_config)
    with torch.no_grad():
        torch.testing.assert_close(head.distilbert(ids, mask).last_hidden_state, base(ids, mask).last_hidden_state)
    head.save_pretrained(tmp_path / "head")
    back = DistilBertModel.from_pretrained(tmp_path / "head")
    outputs_equal(DistilBertModel, base, back, ids, mask)


def test_config_overrides_and_unknown_names(tiny_config, tmp_path):
    build(DistilBertModel, tiny_config).save_pretrained(tmp_path)
    model = DistilBertForSequenceClassification.from_pretrained(tmp_path, num_labels=5)
    assert model.classifier.weight.shape == (5, 32) and model.config.num_labels == 5
    with pytest.raises(TypeError, match="num_labelz"):
        DistilBertForSequenceClassification.from_pretrained(tmp_path, num_labelz=5)


def test_from_pretrained_options(tiny_config, tmp_path):
    build(DistilBertForQuestionAnswering, tiny_config).save_pretrained(tmp_path)
    model = DistilBertForQuestionAnswering.from_pretrained(
        tmp_path, attn_implementation="eager", from_tf=True, from_flax=True, from_pt=True, device="cpu"
    )
    assert model.attn_implementation == "eager" and model.device == torch.device("cpu")
    with pytest.raises(ValueError, match="attn_implementation"):
        DistilBertForQuestionAnswering.from_pretrained(tmp_path, attn_implementation="flash")
    with pytest.raises(ValueError, match="disagree"):
        DistilBertForQuestionAnswering.from_pretrained(tmp_path, dtype="float32", torch_dtype="bfloat16")
    with pytest.raises(ValueError, match="meta"):
        DistilBertForQuestionAnswering.from_pretrained(tmp_path, device="meta")


@pytest.mark.parametrize("dtype", ["bfloat16", torch.bfloat16, "bf16"])
def test_from_pretrained_in_bfloat16(dtype, tiny_config, tmp_path):
    model = build(DistilBertForSequenceClassification, tiny_config).eval()
    model.save_pretrained(tmp_path)
    loaded = DistilBertForSequenceClassification.from_pretrained(tmp_path, torch_dtype=dtype)
    assert all(p.dtype == torch.bfloat16 for p in loaded.parameters())
    ids, mask = make_inputs(DistilBertForSequenceClassification, tiny_config)
    logits = loaded(ids, mask).logits
    assert logits.dtype == torch.bfloat16
    torch.testing.assert_close(logits.float(), model(ids, mask).logits, rtol=0, atol=0.05)


def test_bfloat16_save_round_trip_and_auto_dtype(tiny_config, tmp_path):
    model = build(DistilBertForMaskedLM, tiny_config, dtype=torch.bfloat16).eval()
    state = model.canonical_state_dict()
    assert state["vocab_transform.weight"].dtype == ml_dtypes.bfloat16
    model.save_pretrained(tmp_path)
    auto = DistilBertForMaskedLM.from_pretrained(tmp_path, dtype="auto")
    assert auto.dtype == torch.bfloat16
    outputs_equal(DistilBertForMaskedLM, model, auto, *make_inputs(DistilBertForMaskedLM, tiny_config))
    default = DistilBertForMaskedLM.from_pretrained(tmp_path)
    assert default.dtype == torch.float32
    np.testing.assert_array_equal(
        default.canonical_state_dict()["vocab_transform.weight"], state["vocab_transform.weight"].astype(np.float32)
    )


def test_float16_on_cpu_logs_a_warning(tiny_config, tmp_path, caplog):
    build(DistilBertModel, tiny_config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = DistilBertModel.from_pretrained(tmp_path, dtype="float16")
    assert model.dtype == torch.float16
    assert CPU_FLOAT16_WARNING in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        DistilBertModel.from_pretrained(tmp_path, dtype="bfloat16")
    assert CPU_FLOAT16_WARNING not in caplog.text


def test_loaded_parameters_are_writable_and_independent(tiny_config, tmp_path):
    build(DistilBertModel, tiny_config).save_pretrained(tmp_path)
    a = DistilBertModel.from_pretrained(tmp_path)
    b = DistilBertModel.from_pretrained(tmp_path)
    with torch.no_grad():
        a.embeddings.LayerNorm.weight.add_(1.0)
    assert torch.equal(b.embeddings.LayerNorm.weight, torch.ones(32))
    assert all(p.requires_grad for p in a.parameters())


def test_sinusoidal_table_from_checkpoint_is_loaded_as_is(tiny_config, tmp_path):
    config = tiny_config.replace(sinusoidal_pos_embds=True)
    model = build(DistilBertModel, config)
    state = model.canonical_state_dict()
    state["embeddings.position_embeddings.weight"] = state["embeddings.position_embeddings.weight"] * 2
    model.load_canonical_state_dict(state)
    model.save_pretrained(tmp_path)
    loaded = DistilBertModel.from_pretrained(tmp_path)
    np.testing.assert_array_equal(
        loaded.canonical_state_dict()["embeddings.position_embeddings.weight"],
        state["embeddings.position_embeddings.weight"],
    )
    assert not loaded.embeddings.position_embeddings.weight.requires_grad


def test_load_canonical_state_dict_checks(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config)
    state = model.canonical_state_dict()
    with pytest.raises(KeyError, match=r"classifier\.bias"):
        model.load_canonical_state_dict({k: v for k, v in state.items() if k != "classifier.bias"})
    with pytest.raises(KeyError, match=r"extra\.weight"):
        model.load_canonical_state_dict({**state, "extra.weight": np.zeros(3, np.float32)})
    bad = dict(state, **{"classifier.weight": np.zeros((4, 32), np.float32)})
    with pytest.raises(ShapeMismatchError, match=r"classifier.weight.*\(4, 32\).*\(3, 32\)"):
        model.load_canonical_state_dict(bad)
    partial = {"classifier.bias": np.array([1.0, 2.0, 3.0], np.float32)}
    model.load_canonical_state_dict(partial, strict=False)
    assert torch.equal(model.classifier.bias.detach(), torch.tensor([1.0, 2.0, 3.0]))
    np.testing.assert_array_equal(model.canonical_state_dict()["pre_classifier.weight"], state["pre_classifier.weight"])


def test_load_canonical_state_dict_casts_to_the_parameter_dtype(tiny_config):
    source = build(DistilBertModel, tiny_config)
    target = DistilBertModel(tiny_config, dtype="bfloat16")
    target.load_canonical_state_dict(source.canonical_state_dict())
    assert target.dtype == torch.bfloat16
    expected = source.embeddings.word_embeddings.weight.detach().to(torch.bfloat16)
    assert torch.equal(target.embeddings.word_embeddings.weight.detach(), expected)


def test_canonical_state_dict_of_meta_model_is_an_error(tiny_config):
    with pytest.raises(ValueError, match="meta"):
        DistilBertModel(tiny_config, device="meta").canonical_state_dict()


def test_sharded_save_loads_back(tiny_config, tmp_path):
    model = build(DistilBertForMaskedLM, tiny_config).eval()
    try:
        model.save_pretrained(tmp_path, max_shard_size=20_000)
    except NotImplementedError:
        pytest.skip("sharded safetensors writing is not available in checkpoint.io yet")
    loaded = DistilBertForMaskedLM.from_pretrained(tmp_path)
    outputs_equal(DistilBertForMaskedLM, model, loaded, *make_inputs(DistilBertForMaskedLM, tiny_config))


def test_config_from_json_drives_the_model(tmp_path, tiny_config):
    config = DistilBertConfig.from_dict({**tiny_config.to_dict(), "activation": "relu"})
    model = build(DistilBertForTokenClassification, config).eval()
    model.save_pretrained(tmp_path)
    loaded = DistilBertForTokenClassification.from_pretrained(tmp_path)
    assert loaded.config.activation == "relu"
    outputs_equal(
        DistilBertForTokenClassification, model, loaded, *make_inputs(DistilBertForTokenClassification, config)
    )
