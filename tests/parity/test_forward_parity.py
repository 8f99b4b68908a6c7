"""Forward parity: every head, every installed framework pair, every intermediate (DESIGN.md §3: 1e-5 in float32).

Each framework loads the same checkpoint with its own ``from_pretrained`` and runs the same padded batch; every
hidden state, every attention map and the head's logits must agree within 1e-5, with the same argmax.
"""

from __future__ import annotations

import numpy as np
import pytest
from parity_helpers import (
    ATOL,
    FRAMEWORKS,
    assert_pairwise_close,
    config_for,
    load,
    make_batch,
    outputs,
)

from distilbert_mf.checkpoint.names import HEADS
from distilbert_mf.parity import argmax_mismatches
from distilbert_mf.pipelines.frameworks import OUTPUT_NAMES  # head -> its outputs besides hidden states

pytestmark = pytest.mark.parity


def _expected_keys(head: str, n_layers: int, attentions: bool = True) -> set[str]:
    keys = set(OUTPUT_NAMES[head]) | {f"hidden_states[{i}]" for i in range(n_layers + 1)}
    return keys | ({f"attentions[{i}]" for i in range(n_layers)} if attentions else set())


def _run_all(cache, head: str, inputs: dict, frameworks=FRAMEWORKS, **config_changes) -> dict:
    return {fw: outputs(fw, cache.model(fw, head, **config_changes), inputs) for fw in frameworks}


@pytest.mark.parametrize("head", HEADS)
def test_every_output_of_every_head_matches(cache, head: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head)
    results = _run_all(cache, head, batch)
    for fw, result in results.items():
        assert set(result) == _expected_keys(head, config.n_layers), fw
    assert_pairwise_close(results)
    mask = batch["attention_mask"].astype(bool)
    for a in results:
        for b in results:
            for key in ("logits", "start_logits", "end_logits"):
                if key in results[a]:
                    # exact argmax agreement (atol 0: no near-tie allowance)
                    assert argmax_mismatches(key, results[a][key], results[b][key], mask, 0.0) == 0, (a, b, key)


@pytest.mark.parametrize("head", ["base", "masked_lm"])
def test_attention_maps_are_probabilities_with_zero_weight_on_padding(cache, head: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head)
    keys_mask = batch["attention_mask"].reshape(-1, batch["attention_mask"].shape[-1]).astype(bool)  # (rows, k)
    for fw, result in _run_all(cache, head, batch).items():
        for i in range(config.n_layers):
            probs = result[f"attentions[{i}]"]  # (rows, heads, q, k)
            np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-6, err_msg=fw)
            assert np.all(probs[~np.broadcast_to(keys_mask[:, None, None, :], probs.shape)] == 0.0), fw


@pytest.mark.torch
@pytest.mark.parametrize("head", HEADS)
def test_pytorch_sdpa_matches_eager_and_the_other_frameworks(cache, head: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head)
    sdpa = load("pt", head, cache.folder(head), attn_implementation="sdpa")
    assert sdpa.attn_implementation == "sdpa"
    fast = outputs("pt", sdpa, batch, output_attentions=False)
    assert set(fast) == _expected_keys(head, config.n_layers, attentions=False)
    for fw, result in _run_all(cache, head, batch).items():
        reference = {k: v for k, v in result.items() if not k.startswith("attentions")}
        assert_pairwise_close({"pt-sdpa": fast, fw: reference})


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("head", ["base", "sequence_classification", "question_answering"])
def test_fully_masked_rows_stay_finite_and_equal(cache, head: str, attn: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head, lengths=(11, 0, 4, 0))
    results = _run_all(cache, head, batch)
    if "pt" in results:
        kwargs = {"output_attentions": False} if attn == "sdpa" else {}
        model = load("pt", head, cache.folder(head), attn_implementation=attn)
        results["pt"] = outputs("pt", model, batch, **kwargs)
        if attn == "sdpa":
            results = {fw: {k: v for k, v in r.items() if not k.startswith("attentions")} for fw, r in results.items()}
    elif attn == "sdpa":
        pytest.skip("sdpa is PyTorch's kernel")
    for fw, result in results.items():
        assert all(np.isfinite(v).all() for v in result.values()), fw
    assert_pairwise_close(results)
    # a fully masked row attends uniformly over its (padding) keys, in every framework
    for result in results.values():
        if "attentions[0]" in result:
            np.testing.assert_allclose(result["attentions[0]"][1], 1.0 / batch["input_ids"].shape[1], atol=1e-7)


@pytest.mark.parametrize("head", ["base", "masked_lm", "sequence_classification"])
def test_sinusoidal_position_embeddings(cache, head: str) -> None:
    config = config_for(head, sinusoidal_pos_embds=True)
    batch = make_batch(config, head)
    results = _run_all(cache, head, batch, sinusoidal_pos_embds=True)
    assert_pairwise_close(results)
    learned = _run_all(cache, head, batch)
    for fw in results:  # the table is used: outputs differ from the learned-position model
        assert not np.allclose(results[fw]["hidden_states[0]"], learned[fw]["hidden_states[0]"])


@pytest.mark.parametrize("head", ["base", "token_classification", "multiple_choice", "question_answering"])
def test_position_ids(cache, head: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head)
    ids = batch["input_ids"]
    seq = ids.shape[-1]
    rows = np.arange(int(np.prod(ids.shape[:-1]))).reshape(ids.shape[:-1])
    position_ids = (np.arange(seq) + 3 * rows[..., None]).astype(np.int32)  # a different offset per row
    assert position_ids.max() < config.max_position_embeddings
    shifted = _run_all(cache, head, {**batch, "position_ids": position_ids})
    assert_pairwise_close(shifted)
    default = _run_all(cache, head, batch)
    for fw in FRAMEWORKS:
        assert not np.allclose(shifted[fw]["hidden_states[0]"], default[fw]["hidden_states[0]"])
        if head != "multiple_choice":  # one row of positions (seq,) for every row = the default positions
            same = outputs(fw, cache.model(fw, head), {**batch, "position_ids": np.arange(seq, dtype=np.int32)})
            np.testing.assert_allclose(same["hidden_states[2]"], default[fw]["hidden_states[2]"], atol=1e-6)


@pytest.mark.parametrize("head", ["base", "sequence_classification", "multiple_choice"])
def test_inputs_embeds(cache, head: str) -> None:
    config = config_for(head)
    batch = make_batch(config, head)
    rng = np.random.default_rng(7)
    embeds = rng.normal(0.0, 1.0, (*batch["input_ids"].shape, config.dim)).astype(np.float32)
    inputs = {"inputs_embeds": embeds, "attention_mask": batch["attention_mask"]}
    results = {fw: outputs(fw, cache.model(fw, head), inputs) for fw in FRAMEWORKS}
    assert_pairwise_close(results)
    # looking the ids up by hand gives what input_ids gives
    table = cache.state(head)[("" if head == "base" else "distilbert.") + "embeddings.word_embeddings.weight"]
    by_hand = {"inputs_embeds": table[batch["input_ids"]], "attention_mask": batch["attention_mask"]}
    from_ids = _run_all(cache, head, batch)
    for fw in FRAMEWORKS:
        got = outputs(fw, cache.model(fw, head), by_hand)
        np.testing.assert_allclose(got["hidden_states[2]"], from_ids[fw]["hidden_states[2]"], atol=ATOL)
