"""Distillation losses in PyTorch: DistilBERT's triple loss and the task-specific variants.

The formulas and the rules on inputs are in :mod:`distilbert_mf.distillation.losses` (the same in the three
frameworks; the Keras and Flax files mirror this one line for line). Everything is computed in float32 whatever the
models' dtypes (a bfloat16 teacher is fine), and the teacher's tensors are detached: the teacher is a target.

Usage::

    with torch.no_grad():
        teacher_out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    student_out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    losses = distillation_loss(student_out, teacher_out, attention_mask=mask, labels=labels)
    losses["loss"].backward()   # losses: loss, loss_ce, loss_mlm, loss_cos, loss_mse
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from distilbert_mf.distillation import losses as dl
from distilbert_mf.modeling_utils import IGNORE_INDEX
from distilbert_mf.torch.modeling import (
    OPS,
    as_labels,
    as_tensor,
    class_loss,
    cross_entropy,
    question_answering_loss,
)


def as_input(x: Any, name: str) -> torch.Tensor | None:
    """A tensor as it is, a numpy array as a CPU tensor, ``None`` kept."""
    return None if x is None else as_tensor(x, name, torch.device("cpu"))


def as_float(x: Any, like: torch.Tensor | None = None, *, detach: bool = False) -> torch.Tensor:
    """``x`` (a tensor or numpy array) as float32 on ``like``'s device, detached for the teacher's side."""
    x = as_tensor(x, "outputs", torch.device("cpu"))
    x = x.detach() if detach else x
    return x.float() if like is None else x.to(device=like.device, dtype=torch.float32)


def soft_target_loss(student: torch.Tensor, teacher: torch.Tensor, temperature: float) -> torch.Tensor:
    """``KL(softmax(teacher / T) || softmax(student / T))`` over the last axis, per row: (..., classes) -> (...)."""
    log_p_student = F.log_softmax(student / temperature, dim=-1)
    log_p_teacher = F.log_softmax(teacher / temperature, dim=-1)
    return (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1)


def masked_mean(values: torch.Tensor, selected: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` where ``selected`` (same shape); 0.0 when nothing is selected."""
    total = torch.where(selected, values, torch.zeros_like(values)).sum()
    return total / selected.sum().clamp(min=1)


def cosine_distance(student: torch.Tensor, teacher: torch.Tensor) -> torch.Tensor:
    """``1 - cos`` over the last axis: (..., dim) -> (...)."""
    norms = (student.norm(dim=-1) * teacher.norm(dim=-1)).clamp(min=dl.COSINE_EPS)
    return 1.0 - (student * teacher).sum(-1) / norms


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
) -> dict[str, torch.Tensor]:
    """DistilBERT's general-distillation loss on masked-LM outputs (``logits`` (batch, seq, vocab), and the hidden
    states for the cosine term); ``labels`` (batch, seq) are the masked-LM targets, -100 elsewhere.

    Returns ``loss`` and each component computed: ``loss_ce`` and ``loss_mse`` always, ``loss_mlm`` with labels,
    ``loss_cos`` when both sides carry hidden states of one width.
    """
    weights = {"loss_ce": alpha_ce, "loss_mlm": alpha_mlm, "loss_cos": alpha_cos, "loss_mse": alpha_mse}
    attention_mask, labels = as_input(attention_mask, "attention_mask"), as_input(labels, "labels")
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
    teacher = as_float(inputs.teacher_logits, student, detach=True)  # (batch, seq, vocab)
    tokens = attention_mask.to(student.device) != 0  # (batch, seq)
    losses = {}
    if labels is not None:
        labels = as_labels(labels, student)  # (batch, seq)
        losses["loss_mlm"] = cross_entropy(student.reshape(-1, student.shape[-1]), labels.reshape(-1))
    selected = tokens & (labels != IGNORE_INDEX) if restrict_ce_to_mask else tokens  # (batch, seq)
    losses["loss_ce"] = masked_mean(soft_target_loss(student, teacher, temperature), selected) * temperature**2
    losses["loss_mse"] = masked_mean(((student - teacher) ** 2).sum(-1), selected)
    if inputs.student_hidden is not None:
        student_hidden = as_float(inputs.student_hidden)  # (batch, seq, dim)
        teacher_hidden = as_float(inputs.teacher_hidden, student, detach=True)
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
) -> dict[str, torch.Tensor]:
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
    loss_ce = soft_target_loss(student, as_float(teacher, student, detach=True), temperature).mean() * temperature**2
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
) -> dict[str, torch.Tensor]:
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
    mask = as_input(attention_mask, "attention_mask")
    dl.check_tokens(OPS, mask, tuple(student.shape[:2]), "token_classification_distillation_loss")
    per_token = soft_target_loss(student, as_float(teacher, student, detach=True), temperature)  # (batch, seq)
    losses = {"loss_ce": masked_mean(per_token, mask.to(student.device) != 0) * temperature**2}
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
) -> dict[str, torch.Tensor]:
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
    (start, start_teacher), (end, end_teacher) = ((as_float(s), as_float(t, s, detach=True)) for s, t in pairs)
    loss_start = soft_target_loss(start, start_teacher, temperature).mean()
    loss_end = soft_target_loss(end, end_teacher, temperature).mean()
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
