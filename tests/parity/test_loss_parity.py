"""Losses and gradients across frameworks: every problem type, ignored labels, clamped QA positions.

The same batch with the same labels gives the same loss (1e-5) and the same parameter gradients (max |Δ| within
1e-4 of the tensor's largest gradient), mapped through the canonical names. A batch whose labels are all ignored
gives a loss of exactly 0.0 and zero gradients in every framework (PyTorch's ``cross_entropy`` would give NaN).
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from parity_helpers import ATOL, FRAMEWORKS, GRAD_RTOL, config_for, loss_and_grads, make_batch, outputs

pytestmark = pytest.mark.parity


def _labels(case: str, batch: dict[str, np.ndarray], seed: int = 3) -> dict[str, np.ndarray]:
    """Labels for each loss, with ignored (-100) entries and out-of-range QA positions where the loss allows."""
    rng = np.random.default_rng(seed)
    mask = batch["attention_mask"]
    rows, seq = mask.shape[0], mask.shape[-1]
    if case in ("masked_lm", "token_classification"):
        classes = 99 if case == "masked_lm" else 3
        labels = rng.integers(0, classes, size=mask.shape)
        keep = (mask == 1) & (rng.random(mask.shape) < (0.4 if case == "masked_lm" else 0.9))
        return {"labels": np.where(keep, labels, -100).astype(np.int64)}
    if case == "single_label":
        return {"labels": np.array([2, -100, 0, 1], dtype=np.int64)}
    if case == "multi_label":
        return {"labels": (rng.random((rows, 3)) < 0.5).astype(np.float32)}
    if case == "regression":
        return {"labels": rng.normal(0.0, 1.0, rows).astype(np.float32)}
    if case == "multiple_choice":
        return {"labels": np.array([1, 0, 1, 0], dtype=np.int64)}
    # question answering: row 1's start is past the sequence (clamped to seq: ignored), row 2's end is negative
    # (clamped to 0)
    return {
        "start_positions": np.array([3, seq + 4, 1, 0], dtype=np.int64),
        "end_positions": np.array([7, 2, -3, 1], dtype=np.int64),
    }


# case -> (head, config changes)
CASES = {
    "masked_lm": ("masked_lm", {}),
    "single_label": ("sequence_classification", {}),
    "multi_label": ("sequence_classification", {}),
    "regression": ("sequence_classification", {"num_labels": 1}),
    "multiple_choice": ("multiple_choice", {}),
    "token_classification": ("token_classification", {}),
    "question_answering": ("question_answering", {}),
}


def _inputs(case: str) -> tuple[str, dict, dict[str, np.ndarray]]:
    head, changes = CASES[case]
    batch = make_batch(config_for(head, **changes), head)
    return head, changes, {**batch, **_labels(case, batch)}


@pytest.mark.parametrize("case", list(CASES))
def test_losses_match(cache, case: str) -> None:
    head, changes, inputs = _inputs(case)
    losses = {fw: outputs(fw, cache.model(fw, head, **changes), inputs)["loss"] for fw in FRAMEWORKS}
    for fw, loss in losses.items():
        assert loss.shape == () and np.isfinite(loss) and loss > 0, (fw, loss)
    for a, b in itertools.combinations(losses, 2):
        assert abs(losses[a] - losses[b]) <= ATOL, (a, b, losses)


def _zero_gradient(head: str, key: str, n_layers: int) -> bool:
    """Weights whose gradient is 0 up to rounding, as a softmax ignores a constant added to all its inputs:
    the key bias (same shift of every key's score), the multiple-choice classifier bias (same shift of every
    choice), and for QA the start/end bias and the last LayerNorm bias (same shift of every position's logit)."""
    if key.endswith("attention.k_lin.bias"):
        return True
    if head == "multiple_choice":
        return key == "classifier.bias"
    if head == "question_answering":
        return key in ("qa_outputs.bias", f"distilbert.transformer.layer.{n_layers - 1}.output_layer_norm.bias")
    return False


@pytest.mark.parametrize("case", list(CASES))
def test_loss_gradients_match(cache, case: str) -> None:
    head, changes, inputs = _inputs(case)
    results = {fw: loss_and_grads(fw, cache.model(fw, head, **changes), inputs) for fw in FRAMEWORKS}
    trainable = {k for k, v in cache.state(head, **changes).items()} - {"vocab_projector.weight"}
    for fw, (_, grads) in results.items():
        assert set(grads) == trainable, (fw, sorted(set(grads) ^ trainable))
    for a, b in itertools.combinations(results, 2):
        (loss_a, grads_a), (loss_b, grads_b) = results[a], results[b]
        assert abs(loss_a - loss_b) <= GRAD_RTOL * abs(loss_b), (a, b, loss_a, loss_b)
        largest = max(np.max(np.abs(g)) for g in grads_b.values())
        for key in trainable:
            if _zero_gradient(head, key, config_for(head, **changes).n_layers):
                assert np.max(np.abs(grads_a[key])) <= 1e-6 * largest, (a, key)
                continue
            scale = np.max(np.abs(grads_b[key]))
            assert scale > 0, (b, key)  # every weight takes part in the loss
            diff = np.max(np.abs(grads_a[key] - grads_b[key]))
            assert diff <= GRAD_RTOL * scale, f"{a} vs {b} {key}: max |Δ| {diff:.2e}, max |g| {scale:.2e}"


ALL_IGNORED = {
    "masked_lm": lambda batch: {"labels": np.full(batch["input_ids"].shape, -100, np.int64)},
    "token_classification": lambda batch: {"labels": np.full(batch["input_ids"].shape, -100, np.int64)},
    "sequence_classification": lambda batch: {"labels": np.full(batch["input_ids"].shape[:1], -100, np.int64)},
    "multiple_choice": lambda batch: {"labels": np.full(batch["input_ids"].shape[:1], -100, np.int64)},
    "question_answering": lambda batch: {
        "start_positions": np.full(batch["input_ids"].shape[:1], batch["input_ids"].shape[1], np.int64),
        "end_positions": np.full(batch["input_ids"].shape[:1], batch["input_ids"].shape[1] + 7, np.int64),
    },
}


@pytest.mark.parametrize("head", list(ALL_IGNORED))
def test_all_ignored_labels_give_zero_loss_and_zero_gradients(cache, head: str) -> None:
    batch = make_batch(config_for(head), head)
    inputs = {**batch, **ALL_IGNORED[head](batch)}
    for fw in FRAMEWORKS:
        loss, grads = loss_and_grads(fw, cache.model(fw, head), inputs)
        assert loss == 0.0, (fw, loss)
        nonzero = [k for k, g in grads.items() if not np.all(g == 0.0)]
        assert not nonzero, (fw, nonzero)


def test_padding_row_gets_no_gradient_in_any_framework(cache) -> None:
    """PyTorch's ``nn.Embedding(padding_idx=pad)`` never updates the padding row; TF and Flax match it (here the
    pad id also sits at real, attended positions, so the row does reach the loss)."""
    head = "sequence_classification"
    config = config_for(head)
    batch = make_batch(config, head)
    batch["input_ids"][:, 1] = config.pad_token_id  # attended [PAD] tokens
    inputs = {**batch, "labels": np.array([0, 1, 2, 1], dtype=np.int64)}
    results = {fw: loss_and_grads(fw, cache.model(fw, head), inputs) for fw in FRAMEWORKS}
    key = "distilbert.embeddings.word_embeddings.weight"
    for fw, (_, grads) in results.items():
        rows = grads[key]
        assert np.all(rows[config.pad_token_id] == 0.0), fw
        assert np.any(rows[batch["input_ids"][0, 2]] != 0.0), fw
    for a, b in itertools.combinations(results, 2):
        scale = np.max(np.abs(results[b][1][key]))
        assert np.max(np.abs(results[a][1][key] - results[b][1][key])) <= GRAD_RTOL * scale, (a, b)
