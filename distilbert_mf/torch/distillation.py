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

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from distilbert_mf.distillation import losses as dl
from distilbert_mf.modeling_utils import IGNORE_INDEX
from distilbert_mf.torch.distributed import global_shares, gradient_sync
from distilbert_mf.torch.modeling import (
    OPS,
    DistilBertPreTrainedModel,
    as_labels,
    as_tensor,
    class_loss,
    cross_entropy,
    question_answering_loss,
)
from distilbert_mf.torch.training import (
    apply_update,
    autocast,
    engine_for,
    predict,
    resolve_device,
    rng_state,
    to_device,
)
from distilbert_mf.training.trainer import World, hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.distillation.run import DistillationRun
    from distilbert_mf.training.trainer import TrainOutput

logger = logging.getLogger(__name__)


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


LOSSES = {  # DistillationRun.loss_name -> the function
    "distillation_loss": distillation_loss,
    "sequence_classification_distillation_loss": sequence_classification_distillation_loss,
    "token_classification_distillation_loss": token_classification_distillation_loss,
    "question_answering_distillation_loss": question_answering_distillation_loss,
}


# ----------------------------------------------------------------------------------------------------------------------
# The distillation loop (the update, the optimizer, checkpoints and resume are the fine-tuning loop's)
# ----------------------------------------------------------------------------------------------------------------------


def load_teacher(drun: DistillationRun, device: torch.device) -> DistilBertPreTrainedModel:
    """The teacher on ``device``, in eval mode (no dropout), every parameter frozen."""
    teacher = drun.load_teacher(device=device)
    teacher.eval()
    teacher.requires_grad_(False)
    return teacher


def distillation_step(
    student: nn.Module,
    teacher: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[tuple[Mapping[str, torch.Tensor], Mapping[str, torch.Tensor]]],
    *,
    loss: Callable[..., dict[str, torch.Tensor]],
    options: Mapping[str, Any],
    output_hidden_states: bool,
    learning_rate: float,
    max_grad_norm: float | None,
    bf16: bool = False,
    world: World | None = None,
    counts: Sequence[Mapping[str, int]] | None = None,
) -> tuple[dict[str, float], float]:
    """One update from ``batches`` ((model inputs, loss targets) per micro-batch): the teacher's forward without
    gradients, the student's forward and backward through ``loss(**options)``, then the fine-tuning loop's
    ``apply_update`` (clipping, learning rate, AdamW step) ->
    (the mean micro-batch losses by name, the gradient norm before clipping).

    Under torchrun (``world`` of several ranks, ``student`` wrapped by DDP or FSDP2) each rank holds its share of the
    global batch: ``counts`` (per micro-batch, :func:`~distilbert_mf.distillation.losses.averaged_over`) weight
    every loss component by this rank's share of its global count, so the update and the reported losses are the
    ones one process computes on the whole batch."""
    if not batches:
        raise ValueError("an update needs at least one micro-batch, got none")
    device = next(student.parameters()).device
    count = len(batches)
    shares = None
    if world is not None and world.world_size > 1:
        if counts is None or len(counts) != count:
            raise ValueError("over several processes, distillation_step needs the counts of every micro-batch")
        shares = global_shares(counts, world)
    sums: dict[str, torch.Tensor] = {}
    for index, (inputs, targets) in enumerate(batches):
        with torch.no_grad(), autocast(device, bf16):
            teacher_out = teacher(**inputs, output_hidden_states=output_hidden_states)
        with gradient_sync(student, index == count - 1), autocast(device, bf16):
            student_out = student(**inputs, output_hidden_states=output_hidden_states)
            losses = loss(student_out, teacher_out, **targets, **options)
        if shares is not None:  # this rank's part of each global mean
            losses = {name: value * shares[index][name] for name, value in losses.items() if name != "loss"}
            losses = dl.weighted(losses, {name: options[dl.alpha_of(name)] for name in losses})
        (losses["loss"] / count if count > 1 else losses["loss"]).backward()
        for name, value in losses.items():
            sums[name] = sums.get(name, 0.0) + value.detach().float()
    grad_norm = apply_update(student, optimizer, learning_rate=learning_rate, max_grad_norm=max_grad_norm)
    means = {name: float(total) / count for name, total in sums.items()}
    if shares is not None:  # the sum over ranks of world_size x each rank's part is world_size x the global mean
        totals = world.all_sum(list(means.values()))
        means = {name: total / world.world_size for name, total in zip(means, totals)}
    return means, grad_norm


def distil(drun: DistillationRun) -> TrainOutput:
    """Distil with PyTorch: :func:`distilbert_mf.torch.training.fit`'s loop with the teacher and the distillation
    loss; logging, evaluation (the student's), checkpoints, resume and Ctrl-C through the run. Under torchrun the
    student is placed as in fine-tuning (DDP, or FSDP2 with ``fsdp``); every rank holds the whole frozen teacher."""
    run, args = drun.run, drun.args
    context = run.world.context
    teacher = load_teacher(drun, context.device if context is not None else resolve_device(args.device))
    engine = engine_for(run)
    student, device = engine.model, engine.device
    rng_after_update = rng_state(device)
    max_grad_norm = args.max_grad_norm if args.max_grad_norm else None
    loss = LOSSES[drun.loss_name]

    def save(folder: Path) -> None:
        engine.save_state(folder, rng_after_update)

    def run_predict(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return predict(student, batch, bf16=args.bf16)

    try:
        for step in run.steps():
            learning_rate = run.schedule(step.global_step - 1)
            parts = [drun.split(batch) for batch in step.batches]
            with hold_interrupts():
                losses, grad_norm = distillation_step(
                    student,
                    teacher,
                    optimizer=engine.optimizer,
                    batches=[tuple(to_device(part, device) for part in pair) for pair in parts],
                    loss=loss,
                    options=drun.loss_options,
                    output_hidden_states=drun.output_hidden_states,
                    learning_rate=learning_rate,
                    max_grad_norm=max_grad_norm,
                    bf16=args.bf16,
                    world=run.world,
                    counts=[dl.averaged_over(drun.loss_name, *pair, drun.loss_options) for pair in parts]
                    if run.world.world_size > 1
                    else None,
                )
                rng_after_update = rng_state(device)
                drun.end_step(
                    step,
                    losses=losses,
                    grad_norm=grad_norm,
                    learning_rate=learning_rate,
                    save=save,
                    predict=run_predict,
                )
    except KeyboardInterrupt:
        drun.interrupted(save)
        raise
    return drun.finish(save_model=engine.save_model, predict=run_predict)


__all__ = [
    "distil",
    "distillation_loss",
    "distillation_step",
    "load_teacher",
    "question_answering_distillation_loss",
    "sequence_classification_distillation_loss",
    "soft_target_loss",
    "token_classification_distillation_loss",
]
