"""Keras == our PyTorch models on the same weights: every head, every output (hidden states and attentions too)."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_helpers import CLASSES, HEADS, main_output, make_inputs, make_labels  # noqa: E402

pytestmark = [pytest.mark.tensorflow, pytest.mark.torch, pytest.mark.parity]

TORCH_CLASSES = {head: "DistilBert" + cls.__name__.removeprefix("TFDistilBert") for head, cls in CLASSES.items()}


@pytest.fixture(scope="module")
def torch_package():
    pytest.importorskip("torch")
    return pytest.importorskip("distilbert_mf.torch")


def run_torch(model, inputs):
    import torch

    tensors = {k: torch.from_numpy(np.asarray(v, np.int64)) for k, v in inputs.items()}
    with torch.no_grad():
        out = model(**tensors, output_hidden_states=True, output_attentions=True)
    return {k: (tuple(t.numpy() for t in v) if isinstance(v, tuple) else v.numpy()) for k, v in out.items()}


@pytest.mark.parametrize("head", HEADS)
def test_same_weights_same_outputs(head, tf_models, torch_package):
    tf_model = tf_models[head]
    torch_model = getattr(torch_package, TORCH_CLASSES[head])(tf_model.config).eval()
    torch_model.load_canonical_state_dict(tf_model.canonical_state_dict())
    ids, mask = make_inputs(head, tf_model.config)
    inputs = {"input_ids": ids, "attention_mask": mask, **make_labels(head, tf_model.config, ids)}
    ours = tf_model(**inputs, output_hidden_states=True, output_attentions=True)
    theirs = run_torch(torch_model, inputs)
    assert list(ours) == list(theirs)  # same fields, same order
    for key, value in theirs.items():
        if isinstance(value, tuple):
            assert len(ours[key]) == len(value)
            for i, (a, b) in enumerate(zip(ours[key], value)):
                np.testing.assert_allclose(np.asarray(a), b, atol=1e-5, err_msg=f"{key}[{i}]")
        else:
            np.testing.assert_allclose(np.asarray(ours[key]), value, atol=1e-5, err_msg=key)


@pytest.mark.parametrize("head", ["masked_lm", "multiple_choice"])
def test_checkpoints_cross_between_frameworks(head, tf_models, torch_package, tmp_path):
    """A folder saved by the Keras model loads in PyTorch, and a PyTorch-saved folder loads in Keras."""
    tf_model = tf_models[head]
    tf_model.save_pretrained(tmp_path / "from_tf")
    torch_cls = getattr(torch_package, TORCH_CLASSES[head])
    torch_model = torch_cls.from_pretrained(tmp_path / "from_tf")
    ids, mask = make_inputs(head, tf_model.config)
    inputs = {"input_ids": ids, "attention_mask": mask}
    expected = main_output(head, tf_model(**inputs))
    np.testing.assert_allclose(main_output(head, run_torch(torch_model, inputs)), expected, atol=1e-5)
    torch_model.save_pretrained(tmp_path / "from_torch")
    back = CLASSES[head].from_pretrained(tmp_path / "from_torch")
    np.testing.assert_array_equal(main_output(head, back(**inputs)), expected)
