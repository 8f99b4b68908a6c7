"""Reference: every head against transformers' PyTorch DistilBERT (5.x) on the same weights, loaded both ways."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from torch_helpers import ALL_CLASSES, build, fit_config, make_inputs, make_labels  # noqa: E402

from distilbert_mf.torch import DistilBertModel  # noqa: E402

pytestmark = [pytest.mark.torch, pytest.mark.reference]

ATOL = 1e-5


def theirs_class(cls: type) -> type:
    return getattr(transformers, cls.__name__)


def assert_outputs_close(ours, theirs) -> None:
    """Every field we return (hidden states and attentions included) against the reference's field."""
    for key, value in ours.items():
        other = theirs[key]
        if isinstance(value, tuple):
            assert len(value) == len(other), key
            for i, (a, b) in enumerate(zip(value, other)):
                torch.testing.assert_close(a, b, rtol=0, atol=ATOL, msg=f"{key}[{i}]")
        else:
            torch.testing.assert_close(value, other, rtol=0, atol=ATOL, msg=key)


def run_both(cls, ours, theirs, config) -> None:
    ids, mask = make_inputs(cls, config, seed=7)
    labels = make_labels(cls, config, ids)
    with torch.no_grad():
        a = ours(ids, mask, output_hidden_states=True, output_attentions=True, **labels)
        b = theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True, **labels)
        assert set(a) == {k for k, v in b.items() if v is not None}
        assert_outputs_close(a, b)
        # the default sdpa kernel on our side gives the same main outputs
        ours.set_attn_implementation("sdpa")
        c = ours(ids, mask, **labels)
        for key, value in c.items():
            torch.testing.assert_close(value, b[key], rtol=0, atol=ATOL, msg=key)


CONFIGS = {
    "learned": {},
    "sinusoidal-relu": {"sinusoidal_pos_embds": True, "activation": "relu"},
}


@pytest.mark.parametrize("variant", list(CONFIGS))
@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_our_save_loads_into_transformers(cls, variant, tiny_config, tmp_path):
    ours = build(cls, tiny_config.replace(**CONFIGS[variant]), attn_implementation="eager").eval()
    ours.save_pretrained(tmp_path)
    theirs = theirs_class(cls).from_pretrained(tmp_path, attn_implementation="eager").eval()
    run_both(cls, ours, theirs, ours.config)


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_transformers_save_loads_into_ours(cls, tiny_config, tmp_path):
    config = fit_config(cls, tiny_config)
    theirs_config = transformers.DistilBertConfig(**config.to_dict(full=True), attn_implementation="eager")
    torch.manual_seed(3)
    theirs = theirs_class(cls)(theirs_config).eval()
    theirs.save_pretrained(tmp_path)
    ours = cls.from_pretrained(tmp_path, attn_implementation="eager")
    run_both(cls, ours, theirs.eval(), config)


def test_real_checkpoint_matches_transformers(shared_data):
    folder = shared_data / "tiny-random-distilbert"
    ours = DistilBertModel.from_pretrained(folder, attn_implementation="eager")
    theirs = transformers.DistilBertModel.from_pretrained(folder, attn_implementation="eager").eval()
    ids = torch.tensor([[101, 7, 300, 1000, 102, 0], [101, 55, 1123, 102, 0, 0]])
    mask = (ids != 0).long()
    with torch.no_grad():
        assert_outputs_close(
            ours(ids, mask, output_hidden_states=True, output_attentions=True),
            theirs(input_ids=ids, attention_mask=mask, output_hidden_states=True, output_attentions=True),
        )


def test_random_initialisation_has_the_reference_statistics(tiny_config):
    config = tiny_config.replace(vocab_size=400, dim=64, hidden_dim=128, initializer_range=0.04)
    ours = build(DistilBertModel, config)
    theirs = transformers.DistilBertModel(transformers.DistilBertConfig(**config.to_dict(full=True)))
    ours_state, theirs_state = ours.state_dict(), theirs.state_dict()
    assert set(ours_state) == set(theirs_state)
    for key, value in ours_state.items():
        other = theirs_state[key]
        assert value.shape == other.shape, key
        if key.endswith("bias") or "LayerNorm" in key or "layer_norm" in key:
            torch.testing.assert_close(value, other, rtol=0, atol=0, msg=key)
        else:
            assert float(value.std()) == pytest.approx(float(other.std()), rel=0.15), key
    pad = config.pad_token_id
    assert torch.equal(
        ours_state["embeddings.word_embeddings.weight"][pad], theirs_state["embeddings.word_embeddings.weight"][pad]
    )
