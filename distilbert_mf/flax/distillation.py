"""Distillation losses in JAX: DistilBERT's triple loss and the task-specific variants.

Written with ``jax.numpy``, mirroring :mod:`distilbert_mf.torch.distillation` line for line; the formulas and the
rules on inputs are in :mod:`distilbert_mf.distillation.losses`. Everything is computed in float32 whatever the
models' dtypes, and the teacher's arrays pass through ``stop_gradient``: the teacher is a target. The functions are
``jit``-safe (the options are Python numbers; value checks run only on concrete arrays).

Usage::

    teacher_out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)

    def loss_fn(student):
        out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
        return distillation_loss(out, teacher_out, attention_mask=mask, labels=labels)["loss"]

    grads = nnx.grad(loss_fn)(student)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp

from distilbert_mf.distillation import losses as dl
from distilbert_mf.flax.modeling import OPS, class_loss, cross_entropy, question_answering_loss
from distilbert_mf.modeling_utils import IGNORE_INDEX


def as_input(x: Any) -> Any:
    """An array (numpy accepted); ``None`` kept."""
    return None if x is None else jnp.asarray(x)


def as_float(x: Any, *, detach: bool = False) -> Any:
    """``x`` as float32, through ``stop_gradient`` for the teacher's side."""
    x = jnp.asarray(x, jnp.float32)
    return jax.lax.stop_gradient(x) if detach else x


def soft_target_loss(student: Any, teacher: Any, temperature: float) -> Any:
    """``KL(softmax(teacher / T) || softmax(student / T))`` over the last axis, per row: (..., classes) -> (...)."""
    log_p_student = jax.nn.log_softmax(student / temperature, axis=-1)
    log_p_teacher = jax.nn.log_softmax(teacher / temperature, axis=-1)
    return jnp.sum(jnp.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def masked_mean(values: Any, selected: Any) -> Any:
    """Mean of ``values`` where ``selected`` (same shape); 0.0 when nothing is selected."""
    total = jnp.sum(jnp.where(selected, values, 0.0))
    return total / jnp.maximum(jnp.sum(selected), 1)


def cosine_distance(student: Any, teacher: Any) -> Any:
    """``1 - cos`` over the last axis: (..., dim) -> (...)."""
    norms = jnp.maximum(jnp.linalg.norm(student, axis=-1) * jnp.linalg.norm(teacher, axis=-1), dl.COSINE_EPS)
    return 1.0 - jnp.sum(student * teacher, axis=-1) / norms


def distillation_loss(
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    attention_mask: Any,
    labels: Any = None,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
    alpha_mse: float = 0.0,
    restrict_ce_to_mask: bool = False,
) -> dict[str, Any]:
    """DistilBERT's general-distillation loss on masked-LM outputs (``logits`` (batch, seq, vocab), and the hidden
    states for the cosine term); ``labels`` (batch, seq) are the masked-LM targets, -100 elsewhere.

    Returns ``loss`` and each component computed: ``loss_ce`` and ``loss_mse`` always, ``loss_mlm`` with labels,
    ``loss_cos`` when both sides carry hidden states of one width.
    """
    weights = {"loss_ce": alpha_ce, "loss_mlm": alpha_mlm, "loss_cos": alpha_cos, "loss_mse": alpha_mse}
    attention_mask, labels = as_input(attention_mask), as_input(labels)
    inputs = dl.general_inputs(
        OPS,
        student_outputs,
        teacher_outputs,
        attention_mask=attention_mask,
        labels=labels,
        temperature=temperature,
        weights=weights,
        restrict_ce_to_mask=restrict_ce_to_mask,
    )
    student = as_float(inputs.student_logits)  # (batch, seq, vocab)
    teacher = as_float(inputs.teacher_logits, detach=True)  # (batch, seq, vocab)
    tokens = attention_mask != 0  # (batch, seq)
    losses = {}
    if labels is not None:
        losses["loss_mlm"] = cross_entropy(student.reshape(-1, student.shape[-1]), labels.reshape(-1))
    selected = tokens & (labels != IGNORE_INDEX) if restrict_ce_to_mask else tokens  # (batch, seq)
    losses["loss_ce"] = masked_mean(soft_target_loss(student, teacher, temperature), selected) * temperature**2
    losses["loss_mse"] = masked_mean(jnp.sum((student - teacher) ** 2, axis=-1), selected)
    if inputs.student_hidden is not None:
        student_hidden = as_float(inputs.student_hidden)  # (batch, seq, dim)
        teacher_hidden = as_float(inputs.teacher_hidden, detach=True)
        losses["loss_cos"] = masked_mean(cosine_distance(student_hidden, teacher_hidden), tokens)
    return dl.weighted(losses, weights)


def sequence_classification_distillation_loss(
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    labels: Any = None,
    temperature: float = 2.0,
    alpha_ce: float = 0.5,
    alpha_task: float = 0.5,
) -> dict[str, Any]:
    """Soft targets on ``logits`` (batch, classes), averaged over the batch, times ``T**2``; the task loss is the
    cross-entropy on class-id ``labels`` (batch,) (-100 ignored). Returns ``loss``, ``loss_ce`` (, ``loss_task``)."""
    ((student, teacher),) = dl.task_inputs(
        OPS,
        "sequence_classification",
        student_outputs,
        teacher_outputs,
        targets=(labels,),
        temperature=temperature,
        alpha_ce=alpha_ce,
        alpha_task=alpha_task,
    )
    student = as_float(student)  # (batch, classes)
    loss_ce = jnp.mean(soft_target_loss(student, as_float(teacher, detach=True), temperature)) * temperature**2
    losses = {"loss_ce": loss_ce}
    if labels is not None:
        losses["loss_task"] = class_loss(student, labels, student.shape[-1])
    return dl.weighted(losses, {"loss_ce": alpha_ce, "loss_task": alpha_task})


def token_classification_distillation_loss(
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    attention_mask: Any,
    labels: Any = None,
    temperature: float = 2.0,
    alpha_ce: float = 0.5,
    alpha_task: float = 0.5,
) -> dict[str, Any]:
    """Soft targets on ``logits`` (batch, seq, classes), averaged over the non-padding tokens, times ``T**2``; the
    task loss is the cross-entropy on ``labels`` (batch, seq) (-100 ignored)."""
    ((student, teacher),) = dl.task_inputs(
        OPS,
        "token_classification",
        student_outputs,
        teacher_outputs,
        targets=(labels,),
        temperature=temperature,
        alpha_ce=alpha_ce,
        alpha_task=alpha_task,
    )
    student = as_float(student)  # (batch, seq, classes)
    mask = as_input(attention_mask)
    dl.check_tokens(OPS, mask, tuple(student.shape[:2]), "token_classification_distillation_loss")
    per_token = soft_target_loss(student, as_float(teacher, detach=True), temperature)  # (batch, seq)
    losses = {"loss_ce": masked_mean(per_token, mask != 0) * temperature**2}
    if labels is not None:
        losses["loss_task"] = class_loss(student, labels, student.shape[-1])
    return dl.weighted(losses, {"loss_ce": alpha_ce, "loss_task": alpha_task})


def question_answering_distillation_loss(
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    start_positions: Any = None,
    end_positions: Any = None,
    temperature: float = 2.0,
    alpha_ce: float = 0.5,
    alpha_task: float = 0.5,
) -> dict[str, Any]:
    """Soft targets on ``start_logits`` and ``end_logits`` (batch, seq), each averaged over the batch, their mean
    times ``T**2``; the task loss is the QA loss on the true positions (clamped, as the model's own)."""
    pairs = dl.task_inputs(
        OPS,
        "question_answering",
        student_outputs,
        teacher_outputs,
        targets=(start_positions, end_positions),
        temperature=temperature,
        alpha_ce=alpha_ce,
        alpha_task=alpha_task,
    )
    (start, start_teacher), (end, end_teacher) = ((as_float(s), as_float(t, detach=True)) for s, t in pairs)
    loss_start = jnp.mean(soft_target_loss(start, start_teacher, temperature))
    loss_end = jnp.mean(soft_target_loss(end, end_teacher, temperature))
    losses = {"loss_ce": (loss_start + loss_end) / 2 * temperature**2}
    if start_positions is not None:
        losses["loss_task"] = question_answering_loss(start, end, start_positions, end_positions)
    return dl.weighted(losses, {"loss_ce": alpha_ce, "loss_task": alpha_task})


__all__ = [
    "distillation_loss",
    "question_answering_distillation_loss",
    "sequence_classification_distillation_loss",
    "soft_target_loss",
    "token_classification_distillation_loss",
]
