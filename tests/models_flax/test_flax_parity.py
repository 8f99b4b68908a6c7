"""Flax vs our PyTorch models on the same weights: every head, every output, within 1e-5 (DESIGN.md §3)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("flax")
torch = pytest.importorskip("torch")

from flax_helpers import ALL_CLASSES, build, make_inputs, make_labels, tiny  # noqa: E402

from distilbert_mf.checkpoint.names import ARCHITECTURES  # noqa: E402

pytestmark = [pytest.mark.flax, pytest.mark.torch, pytest.mark.parity]
TOLERANCE = 1e-5


def torch_twin(flax_model):
    """Our PyTorch model of the same head, holding the Flax model's weights."""
    import distilbert_mf.torch as pt

    model = getattr(pt, ARCHITECTURES[flax_model.head])(flax_model.config)
    model.load_canonical_state_dict(flax_model.canonical_state_dict())
    return model.eval()


def compare(flax_out, torch_out) -> float:
    assert list(flax_out) == list(torch_out)
    worst = 0.0
    for name in flax_out:
        flax_values = flax_out[name] if isinstance(flax_out[name], tuple) else (flax_out[name],)
        torch_values = torch_out[name] if isinstance(torch_out[name], tuple) else (torch_out[name],)
        assert len(flax_values) == len(torch_values), name
        for a, b in zip(flax_values, torch_values):
            a, b = np.asarray(a), b.detach().numpy()
            assert a.shape == b.shape, name
            worst = max(worst, float(np.abs(a - b).max()))
    return worst


@pytest.mark.parametrize(
    "config",
    [tiny(), tiny(sinusoidal_pos_embds=True, activation="gelu_new", tie_word_embeddings=False)],
    ids=["default", "sinusoidal-gelu_new-untied"],
)
@pytest.mark.parametrize("cls", ALL_CLASSES)
def test_same_outputs_as_pytorch(cls, config):
    flax_model = build(cls, config, seed=3)
    torch_model = torch_twin(flax_model)
    input_ids, mask = make_inputs(cls, config)
    labels = make_labels(cls, config, input_ids)
    if "labels" in labels and labels["labels"].ndim == 2:
        labels["labels"][mask.reshape(labels["labels"].shape) == 0] = -100
    kwargs = {"output_hidden_states": True, "output_attentions": True, **labels}
    flax_out = flax_model(input_ids, mask, **kwargs)
    with torch.no_grad():
        torch_out = torch_model(
            torch.from_numpy(input_ids).long(),
            torch.from_numpy(mask),
            **{k: torch.from_numpy(v).long() if isinstance(v, np.ndarray) else v for k, v in kwargs.items()},
        )
    assert compare(flax_out, torch_out) <= TOLERANCE


def test_same_regression_and_multi_label_losses_as_pytorch():
    for config, labels in (
        (tiny(num_labels=1), np.array([0.5, -1.0], np.float32)),
        (tiny(), np.array([[1, 0, 1], [0, 1, 1]], np.float32)),
    ):
        flax_model = build(ALL_CLASSES[2], config, seed=5)
        torch_model = torch_twin(flax_model)
        input_ids, mask = make_inputs(ALL_CLASSES[2], config)
        flax_loss = float(flax_model(input_ids, mask, labels=labels).loss)
        with torch.no_grad():
            torch_loss = float(torch_model(input_ids, mask, labels=torch.from_numpy(labels)).loss)
        assert abs(flax_loss - torch_loss) <= TOLERANCE
