"""Distillation losses across frameworks: the same inputs give the same losses and the same student gradients.

- every loss function and option set, on the same random float32 inputs: each component within 1e-6 between any two
  frameworks (relative to the value past 1: the MSE sums ~100 squared logits per token and reaches ~800, where a
  float32 ulp is 6e-5), and the gradient of the loss with respect to every student input within 1e-5 of that
  tensor's largest gradient;
- end to end with tiny models: a 3-layer teacher and a 2-layer student from ``from_pretrained``, the teacher without
  gradients, the student's parameter gradients by canonical name within 1e-5 of each tensor's largest gradient.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np
import pytest
from distillation_helpers import LOSS_FUNCTIONS, module, random_case, run_loss
from parity_helpers import FRAMEWORKS, make_batch

pytestmark = pytest.mark.parity

LOSS_TOL = 1e-6  # |Δ| <= LOSS_TOL * max(1, |loss|)
GRAD_TOL = 1e-5  # max |Δ| <= GRAD_TOL * max |g| per tensor
OPTIONS = {
    "distillation_loss": [{}, {"restrict_ce_to_mask": True, "alpha_mse": 0.5, "temperature": 1.0}],
    "sequence_classification_distillation_loss": [{}, {"temperature": 3.0, "alpha_task": 0.0}],
    "token_classification_distillation_loss": [{}, {"temperature": 1.0}],
    "question_answering_distillation_loss": [{}, {"temperature": 4.0, "alpha_ce": 1.0}],
}
CASES = [(name, i) for name in LOSS_FUNCTIONS for i in range(len(OPTIONS[name]))]


def assert_grads_close(grads: dict[str, dict[str, np.ndarray]], tol: float = GRAD_TOL) -> None:
    for a, b in itertools.combinations(grads, 2):
        assert grads[a].keys() == grads[b].keys(), (a, b, sorted(grads[a].keys() ^ grads[b].keys()))
        for key in grads[a]:
            scale = np.max(np.abs(grads[b][key]))
            diff = np.max(np.abs(grads[a][key] - grads[b][key]))
            assert diff <= tol * scale, f"{a} vs {b} {key}: max |Δ| {diff:.2e}, max |g| {scale:.2e}"


@pytest.mark.parametrize(("name", "option"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_losses_and_input_gradients_agree(name: str, option: int) -> None:
    student, teacher, kwargs = random_case(name, seed=10 + option, lengths=(13, 9, 5, 2), vocab=99, dim=32)
    results = {fw: run_loss(fw, name, student, teacher, **kwargs, **OPTIONS[name][option]) for fw in FRAMEWORKS}
    for a, b in itertools.combinations(results, 2):
        losses_a, losses_b = results[a][0], results[b][0]
        assert losses_a.keys() == losses_b.keys()
        for key, value in losses_b.items():
            assert abs(losses_a[key] - value) <= LOSS_TOL * max(1.0, abs(value)), (a, b, key, losses_a[key], value)
    grads = {fw: {k: g for k, g in result[1].items() if g.any()} for fw, result in results.items()}
    assert all(grads.values())
    assert_grads_close(grads)


# ---------------------------------------------------------------------------------------------------- end to end


def _distil(framework: str, fn: Any, model: Any, teacher_out: Any, inputs: dict, kwargs: dict) -> Any:
    out = model(**inputs, output_hidden_states=True, **({"training": False} if framework == "tf" else {}))
    return fn(out, teacher_out, **kwargs)["loss"]


def student_gradients(framework: str, student: Any, teacher: Any, name: str, inputs: dict, kwargs: dict):
    """One eval-mode step: the teacher's outputs (no gradients), the loss ``name`` and the student's parameter
    gradients by canonical name (PyTorch layout)."""
    fn = getattr(module(framework), name)
    if framework == "pt":
        import torch

        with torch.no_grad():
            teacher_out = teacher(**inputs, output_hidden_states=True)
        student.zero_grad(set_to_none=True)
        loss = _distil(framework, fn, student, teacher_out, inputs, kwargs)
        loss.backward()
        grads = {k: p.grad.numpy().copy() for k, p in student.named_parameters() if p.grad is not None}
        assert not any(p.grad is not None for p in teacher.parameters())
        student.zero_grad(set_to_none=True)
        return float(loss.detach()), grads
    if framework == "tf":
        import tensorflow as tf

        teacher_out = teacher(**inputs, output_hidden_states=True, training=False)
        variables, seen = {}, set()
        for key, (variable, transposed) in student.canonical_variables().items():
            if variable.trainable and id(variable) not in seen:
                seen.add(id(variable))
                variables[key] = (variable, transposed)
        with tf.GradientTape() as tape:
            loss = _distil(framework, fn, student, teacher_out, inputs, kwargs)
        values = tape.gradient(loss, [v for v, _ in variables.values()])
        grads = {}
        for (key, (_, transposed)), value in zip(variables.items(), values):
            if value is not None:
                array = tf.convert_to_tensor(value).numpy()
                grads[key] = array.T if transposed else array
        return float(loss), grads
    from flax import nnx

    from distilbert_mf.flax.loading import canonical_key

    teacher_out = teacher(**inputs, output_hidden_states=True)
    loss, state = nnx.value_and_grad(lambda m: _distil(framework, fn, m, teacher_out, inputs, kwargs))(student)
    grads = {}
    for path, value in nnx.to_flat_state(state):
        key, transposed = canonical_key(path)
        array = np.asarray(value.get_value() if hasattr(value, "get_value") else value.value)
        grads[key] = array.T if transposed else array
    return float(loss), grads


def _labels(head: str, batch: dict[str, np.ndarray], vocab: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    if head == "masked_lm":
        targets = (batch["attention_mask"] == 1) & (rng.random(batch["input_ids"].shape) < 0.3)
        labels = np.where(targets, rng.integers(0, vocab, targets.shape), -100).astype(np.int64)
        return {"attention_mask": batch["attention_mask"], "labels": labels}
    return {"labels": np.array([2, 0, 1, 1], np.int64)}


@pytest.mark.parametrize(
    ("head", "name"),
    [("masked_lm", "distillation_loss"), ("sequence_classification", "sequence_classification_distillation_loss")],
)
def test_student_gradients_agree(cache, head: str, name: str) -> None:
    config = cache.model(FRAMEWORKS[0], head).config
    batch = make_batch(config, head)
    kwargs = _labels(head, batch, config.vocab_size)
    results = {
        fw: student_gradients(fw, cache.model(fw, head), cache.model(fw, head, n_layers=3), name, batch, kwargs)
        for fw in FRAMEWORKS
    }
    losses = {fw: r[0] for fw, r in results.items()}
    for a, b in itertools.combinations(losses, 2):
        assert abs(losses[a] - losses[b]) <= 1e-5 * max(1.0, abs(losses[b])), losses
    grads = {fw: {k: g for k, g in r[1].items() if k != "vocab_projector.weight"} for fw, r in results.items()}
    # the softmax-shift-invariant key bias gets a gradient of rounding size only: compare the others
    grads = {fw: {k: g for k, g in gs.items() if not k.endswith("attention.k_lin.bias")} for fw, gs in grads.items()}
    assert_grads_close(grads)
