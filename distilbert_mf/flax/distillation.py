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

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from distilbert_mf.distillation import losses as dl
from distilbert_mf.flax.modeling import (
    OPS,
    FlaxDistilBertPreTrainedModel,
    class_loss,
    cross_entropy,
    question_answering_loss,
)
from distilbert_mf.flax.training import TrainStep, apply_step, one_device, train_step_for
from distilbert_mf.modeling_utils import IGNORE_INDEX
from distilbert_mf.training.trainer import hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.distillation.run import DistillationRun
    from distilbert_mf.training.trainer import TrainOutput

logger = logging.getLogger(__name__)


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


LOSSES = {  # DistillationRun.loss_name -> the function
    "distillation_loss": distillation_loss,
    "sequence_classification_distillation_loss": sequence_classification_distillation_loss,
    "token_classification_distillation_loss": token_classification_distillation_loss,
    "question_answering_distillation_loss": question_answering_distillation_loss,
}


# ----------------------------------------------------------------------------------------------------------------------
# The distillation loop (the optimizer, batches, checkpoints and resume are the fine-tuning loop's)
# ----------------------------------------------------------------------------------------------------------------------


def load_teacher(drun: DistillationRun) -> FlaxDistilBertPreTrainedModel:
    """The teacher in eval mode (no dropout); bfloat16 weights and compute with ``teacher_bf16``."""
    dtype = jnp.bfloat16 if drun.teacher_dtype is not None else None
    teacher = drun.load_teacher(dtype=dtype, param_dtype=dtype)
    teacher.eval()
    return teacher


class DistilStep:
    """Runs distillation updates of ``student`` against ``teacher`` from numpy micro-batches.

    Two ``nnx.jit`` functions bound with ``nnx.cached_partial``: the update of one micro-batch (teacher forward,
    student forward and gradient, optimizer update) and the accumulation of a micro-batch's gradient (applied with
    :func:`distilbert_mf.flax.training.apply_step`). Gradients are taken with respect to the student's parameters
    only, and the loss stops gradients at the teacher's outputs. Batches, the evaluation forward and the snapshots
    are the fine-tuning :class:`~distilbert_mf.flax.training.TrainStep`'s (``self.base``)."""

    def __init__(
        self,
        drun: DistillationRun,
        student: FlaxDistilBertPreTrainedModel,
        teacher: FlaxDistilBertPreTrainedModel,
        optimizer: nnx.Optimizer,
        base: TrainStep | None = None,
    ) -> None:
        self.drun = drun
        # the student's TrainStep (a ShardedTrainStep on a mesh); it leaves the student in training mode
        self.base = base if base is not None else train_step_for(drun.run, student, optimizer)
        loss, options, hidden = LOSSES[drun.loss_name], dict(drun.loss_options), drun.output_hidden_states

        def objective(student: Any, teacher_out: Any, inputs: Any, targets: Any, scale: jax.Array) -> tuple:
            losses = loss(student(**inputs, output_hidden_states=hidden), teacher_out, **targets, **options)
            return losses["loss"] * scale, losses

        @nnx.jit
        def update(student: Any, teacher: Any, optimizer: Any, inputs: Any, targets: Any) -> tuple:
            teacher_out = teacher(**inputs, output_hidden_states=hidden)
            grad_fn = nnx.value_and_grad(objective, has_aux=True)
            (_, losses), grads = grad_fn(student, teacher_out, inputs, targets, jnp.float32(1.0))
            grad_norm = optax.tree.norm(grads)
            optimizer.update(student, grads)
            return losses, grad_norm

        @nnx.jit
        def accumulate(student: Any, teacher: Any, inputs: Any, targets: Any, grads: Any, scale: jax.Array) -> tuple:
            teacher_out = teacher(**inputs, output_hidden_states=hidden)
            (_, losses), micro = nnx.value_and_grad(objective, has_aux=True)(
                student, teacher_out, inputs, targets, scale
            )
            return losses, jax.tree.map(jnp.add, grads, micro)

        teacher.eval()
        self._update = nnx.cached_partial(update, student, teacher, optimizer)
        self._accumulate = nnx.cached_partial(accumulate, student, teacher)
        self._apply = nnx.cached_partial(apply_step, student, optimizer)
        self._zeros = jax.tree.map(jnp.zeros_like, nnx.state(student, nnx.Param))  # the accumulators' start

    def __call__(self, batches: list[Mapping[str, np.ndarray]]) -> tuple[dict[str, float], float]:
        """One update from one step's micro-batches -> (the mean micro-batch losses by name, grad norm)."""
        if not batches:
            raise ValueError("an update needs at least one micro-batch, got none")
        parts = [self.drun.split(self.base.device_batch(batch)) for batch in batches]
        if len(parts) == 1:
            losses, grad_norm = self._update(*parts[0])
            return {name: float(value) for name, value in losses.items()}, float(grad_norm)
        scale = jnp.float32(1.0 / len(parts))
        grads, sums = self._zeros, {}
        for inputs, targets in parts:
            losses, grads = self._accumulate(inputs, targets, grads, scale)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        grad_norm = self._apply(grads)
        return {name: total / len(parts) for name, total in sums.items()}, float(grad_norm)


def distil(drun: DistillationRun) -> TrainOutput:
    """Distil with Flax: :func:`distilbert_mf.flax.training.fit`'s loop with the teacher and the distillation loss;
    logging, evaluation (the student's), checkpoints, resume and Ctrl-C through the run.

    Over several JAX processes the student trains on :func:`~distilbert_mf.flax.distributed.engine`'s mesh and the
    teacher is placed on the same mesh (replicated); the batch is one global array, so every loss term is its mean
    over the *global* batch's selected tokens (or rows), as one process computes it, with no weighting by hand."""
    from distilbert_mf.flax import distributed

    run = drun.run
    on_mesh = distributed.spans_mesh(run)
    engine = distributed.engine(run) if on_mesh else one_device(run)
    teacher = load_teacher(drun)
    if on_mesh:
        distributed.place(teacher, engine.step.mesh)
    step_fn = DistilStep(drun, engine.model, teacher, engine.optimizer, base=engine.step)
    save = engine.save_state
    completed = step_fn.base.snapshot()
    try:
        for step in run.steps():
            learning_rate = run.schedule(step.global_step - 1)
            with hold_interrupts():
                losses, grad_norm = step_fn(step.batches)
                completed = step_fn.base.snapshot()
                drun.end_step(
                    step,
                    losses=losses,
                    grad_norm=grad_norm,
                    learning_rate=learning_rate,
                    save=save,
                    predict=step_fn.base.predict,
                )
    except KeyboardInterrupt:
        step_fn.base.restore(completed)
        drun.interrupted(save)
        raise
    return drun.finish(save_model=engine.save_model, predict=step_fn.base.predict)


__all__ = [
    "DistilStep",
    "distil",
    "distillation_loss",
    "load_teacher",
    "question_answering_distillation_loss",
    "sequence_classification_distillation_loss",
    "soft_target_loss",
    "token_classification_distillation_loss",
]
