"""Every head x every source format x every installed framework pair.

The same weights are written in each format by our writers (through ``distilbert_mf.convert``), then each framework
loads the folder with its own ``from_pretrained``. Every framework must recover the exact bits of every weight
(``canonical_state_dict``), and the frameworks' outputs (logits, every hidden state and attention map) must agree
pairwise within 1e-5 and be bit-identical to the same framework's run on the safetensors original.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity_helpers import (
    FRAMEWORKS,
    assert_pairwise_close,
    config_for,
    converted_folder,
    load,
    make_batch,
    outputs,
)

from distilbert_mf.checkpoint.io import FORMATS, WEIGHTS_NAMES
from distilbert_mf.checkpoint.names import HEADS

pytestmark = pytest.mark.parity


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("head", HEADS)
def test_every_format_loads_the_same_model_in_every_framework(cache, head: str, fmt: str) -> None:
    folder = converted_folder(cache, head, fmt)
    assert sorted(p.name for p in folder.iterdir()) == sorted(["config.json", WEIGHTS_NAMES[fmt]])
    source = cache.state(head)
    batch = make_batch(config_for(head), head)
    results = {}
    for fw in FRAMEWORKS:
        model = load(fw, head, folder)
        state = model.canonical_state_dict()
        assert state.keys() == source.keys(), fw
        for key, array in source.items():
            assert state[key].dtype == array.dtype and np.array_equal(state[key], array), (fw, key)
        results[fw] = outputs(fw, model, batch)
        reference = outputs(fw, cache.model(fw, head), batch)  # the same framework on the safetensors original
        for key, value in reference.items():
            np.testing.assert_array_equal(results[fw][key], value, err_msg=f"{fw} {key}")
    assert_pairwise_close(results)


@pytest.mark.parametrize("fmt", FORMATS)
def test_sinusoidal_checkpoints_in_every_format(cache, fmt: str) -> None:
    """transformers' Flax msgpack leaves the fixed table out: it is regenerated, bit for bit, on load."""
    folder = converted_folder(cache, "masked_lm", fmt, sinusoidal_pos_embds=True)
    source = cache.state("masked_lm", sinusoidal_pos_embds=True)
    batch = make_batch(config_for("masked_lm"), "masked_lm")
    results = {}
    for fw in FRAMEWORKS:
        model = load(fw, "masked_lm", folder)
        table = model.canonical_state_dict()["distilbert.embeddings.position_embeddings.weight"]
        np.testing.assert_array_equal(table, source["distilbert.embeddings.position_embeddings.weight"])
        results[fw] = outputs(fw, model, batch)
    assert_pairwise_close(results)
