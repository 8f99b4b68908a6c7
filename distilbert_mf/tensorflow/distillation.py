"""Distillation losses in Keras 3: DistilBERT's triple loss and the task-specific variants.

Written with ``keras.ops`` only (any Keras backend), mirroring :mod:`distilbert_mf.torch.distillation` line for
line; the formulas and the rules on inputs are in :mod:`distilbert_mf.distillation.losses`. Everything is computed
in float32 whatever the models' dtypes, and the teacher's tensors pass through ``stop_gradient``: the teacher is a
target.

Usage::

    teacher_out = teacher(input_ids=ids, attention_mask=mask, output_hidden_states=True, training=False)
    with tf.GradientTape() as tape:
        student_out = student(input_ids=ids, attention_mask=mask, output_hidden_states=True, training=True)
        losses = distillation_loss(student_out, teacher_out, attention_mask=mask, labels=labels)
    grads = tape.gradient(losses["loss"], student.trainable_variables)
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from distilbert_mf.distillation import losses as dl
from distilbert_mf.modeling_utils import IGNORE_INDEX
from distilbert_mf.tensorflow.distributed import replicas_in_sync
from distilbert_mf.tensorflow.modeling import (
    OPS,
    TFDistilBertPreTrainedModel,
    class_loss,
    cross_entropy,
    question_answering_loss,
)
from distilbert_mf.tensorflow.training import (
    Predictor,
    PyTorchAdamW,
    check_replicas,
    create_optimizer,
    load_model,
    load_training_state,
    save_training_state,
)
from distilbert_mf.training.trainer import hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.distillation.run import DistillationRun
    from distilbert_mf.training.trainer import TrainOutput

logger = logging.getLogger(__name__)


def as_input(x: Any) -> Any:
    """A tensor (numpy accepted); ``None`` kept."""
    return None if x is None else ops.convert_to_tensor(x)


def as_float(x: Any, *, detach: bool = False) -> Any:
    """``x`` as float32, through ``stop_gradient`` for the teacher's side."""
    x = ops.cast(ops.convert_to_tensor(x), "float32")
    return ops.stop_gradient(x) if detach else x


def soft_target_loss(student: Any, teacher: Any, temperature: float) -> Any:
    """``KL(softmax(teacher / T) || softmax(student / T))`` over the last axis, per row: (..., classes) -> (...)."""
    log_p_student = ops.log_softmax(student / temperature, axis=-1)
    log_p_teacher = ops.log_softmax(teacher / temperature, axis=-1)
    return ops.sum(ops.exp(log_p_teacher) * (log_p_teacher - log_p_student), axis=-1)


def masked_mean(values: Any, selected: Any) -> Any:
    """Mean of ``values`` where ``selected`` (same shape); 0.0 when nothing is selected."""
    total = ops.sum(ops.where(selected, values, ops.zeros_like(values)))
    return total / ops.maximum(ops.sum(ops.cast(selected, "float32")), 1.0)


def cosine_distance(student: Any, teacher: Any) -> Any:
    """``1 - cos`` over the last axis: (..., dim) -> (...)."""
    norms = ops.maximum(ops.norm(student, axis=-1) * ops.norm(teacher, axis=-1), dl.COSINE_EPS)
    return 1.0 - ops.sum(student * teacher, axis=-1) / norms


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
    tokens = ops.not_equal(attention_mask, 0)  # (batch, seq)
    losses = {}
    if labels is not None:
        losses["loss_mlm"] = cross_entropy(ops.reshape(student, (-1, student.shape[-1])), ops.reshape(labels, (-1,)))
    selected = tokens  # (batch, seq)
    if restrict_ce_to_mask:
        selected = ops.logical_and(tokens, ops.not_equal(labels, IGNORE_INDEX))
    losses["loss_ce"] = masked_mean(soft_target_loss(student, teacher, temperature), selected) * temperature**2
    losses["loss_mse"] = masked_mean(ops.sum(ops.square(student - teacher), axis=-1), selected)
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
    loss_ce = ops.mean(soft_target_loss(student, as_float(teacher, detach=True), temperature)) * temperature**2
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
    losses = {"loss_ce": masked_mean(per_token, ops.not_equal(mask, 0)) * temperature**2}
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
    loss_start = ops.mean(soft_target_loss(start, start_teacher, temperature))
    loss_end = ops.mean(soft_target_loss(end, end_teacher, temperature))
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
# The distillation loop (the optimizer, checkpoints and resume are the fine-tuning loop's)
# ----------------------------------------------------------------------------------------------------------------------


def load_teacher(drun: DistillationRun) -> TFDistilBertPreTrainedModel:
    """The teacher, frozen (``trainable = False``; called with ``training=False``: no dropout); in bfloat16 with
    ``teacher_bf16``."""
    teacher = drun.load_teacher(dtype="bfloat16" if drun.teacher_dtype is not None else None)
    teacher.trainable = False
    return teacher


class DistilStep:
    """Runs distillation updates of ``student`` against ``teacher`` from numpy micro-batches (TensorFlow backend).

    One ``tf.function`` per micro-batch: the teacher's forward, the student's forward under a ``GradientTape``
    (gradients of the student's trainable variables only), then :class:`~distilbert_mf.tensorflow.training.PyTorchAdamW`
    ``apply``, which accumulates the micro-batches of an update and applies PyTorch's AdamW rule on the last one.

    Inside a ``tf.distribute`` strategy of several replicas (models and optimizer built in its scope) every
    micro-batch is split into one equal block of rows per replica; each replica weights each loss component by its
    block's share of the component's items (:func:`~distilbert_mf.distillation.losses.averaged_over`, counted on
    the host), the optimizer sums the replicas' gradients before clipping, and the reported losses are the sums of
    the replicas' parts: one device's numbers."""

    def __init__(
        self,
        drun: DistillationRun,
        student: TFDistilBertPreTrainedModel,
        teacher: TFDistilBertPreTrainedModel,
        optimizer: PyTorchAdamW,
    ) -> None:
        if keras.backend.backend() != "tensorflow":
            raise NotImplementedError(
                f"the Keras distillation loop runs under KERAS_BACKEND=tensorflow, not {keras.backend.backend()!r} "
                "(the losses themselves run under every backend)"
            )
        import tensorflow as tf

        self.drun, self.optimizer = drun, optimizer
        self.strategy = tf.distribute.get_strategy() if replicas_in_sync() > 1 else None
        loss, options, hidden = LOSSES[drun.loss_name], dict(drun.loss_options), drun.output_hidden_states
        variables = list(student.trainable_variables)

        def micro_step(inputs: Mapping[str, Any], targets: Mapping[str, Any], shares: Any = None) -> dict[str, Any]:
            teacher_out = teacher(inputs, output_hidden_states=hidden, training=False)
            with tf.GradientTape() as tape:
                out = student(inputs, output_hidden_states=hidden, training=True)
                losses = loss(out, teacher_out, **targets, **options)
                if shares is not None:  # this replica's part of each global mean
                    parts = {name: value * shares[name] for name, value in losses.items() if name != "loss"}
                    losses = dl.weighted(parts, {name: options[dl.alpha_of(name)] for name in parts})
            grads = tape.gradient(losses["loss"], variables)
            pairs = [(g, v) for g, v in zip(grads, variables) if g is not None]
            optimizer.apply([g for g, _ in pairs], [v for _, v in pairs])
            return losses

        if self.strategy is None:
            self._step = tf.function(micro_step, reduce_retracing=True)
        else:
            strategy = self.strategy

            def replicated(inputs: Any, targets: Any, shares: Any) -> dict[str, Any]:
                parts = strategy.run(micro_step, args=(inputs, targets, shares))
                return {name: strategy.reduce(tf.distribute.ReduceOp.SUM, v, axis=None) for name, v in parts.items()}

            self._step = tf.function(replicated, reduce_retracing=True)

    def _replicated_args(self, batch: Mapping[str, np.ndarray]) -> tuple[Any, ...]:
        """``batch`` as the strategy's per-replica values: each replica's block of rows and its component shares."""
        replicas = self.strategy.num_replicas_in_sync
        inputs, targets = self.drun.split(batch)
        rows = len(inputs["input_ids"]) // replicas
        blocks = [
            tuple({k: v[r * rows : (r + 1) * rows] for k, v in part.items()} for part in (inputs, targets))
            for r in range(replicas)
        ]
        counts = [dl.averaged_over(self.drun.loss_name, *block, self.drun.loss_options) for block in blocks]
        totals = {name: sum(c[name] for c in counts) for name in counts[0]}
        shares = [{name: np.float32(c[name] / totals[name] if totals[name] else 0.0) for name in c} for c in counts]
        per_replica = [(*block, share) for block, share in zip(blocks, shares)]
        return tuple(
            self.strategy.experimental_distribute_values_from_function(
                lambda context, i=i: per_replica[context.replica_id_in_sync_group][i]
            )
            for i in range(3)
        )

    def __call__(self, batches: list[Mapping[str, np.ndarray]]) -> tuple[dict[str, float], float]:
        """One update from one step's micro-batches -> (the mean micro-batch losses by name, grad norm)."""
        if not batches:
            raise ValueError("an update needs at least one micro-batch, got none")
        self.optimizer.set_micro_batches(len(batches))
        sums: dict[str, float] = {}
        for batch in batches:
            args = self.drun.split(batch) if self.strategy is None else self._replicated_args(batch)
            losses = self._step(*args)
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value)
        grad_norm = float(np.asarray(ops.convert_to_numpy(self.optimizer.grad_norm)))
        return {name: total / len(batches) for name, total in sums.items()}, grad_norm


def distil(drun: DistillationRun) -> TrainOutput:
    """Distil with Keras (TensorFlow backend): the fine-tuning loop's optimizer, state and predictor with the
    teacher and the distillation loss; logging, evaluation (the student's), checkpoints, resume and Ctrl-C through
    the run."""
    replicas = replicas_in_sync()
    if replicas > 1:
        check_replicas(drun.run, replicas)
        logger.info("distilling over the %d replicas of the tf.distribute strategy", replicas)
    run = drun.run
    student = load_model(run)
    teacher = load_teacher(drun)
    optimizer = create_optimizer(student, run)
    if run.resume_dir is not None:
        load_training_state(run.resume_dir, student, optimizer)
        logger.info("resumed the optimizer and RNG state from %s", run.resume_dir)
    step_fn = DistilStep(drun, student, teacher, optimizer)
    predict = Predictor(student, widen=dict, jit_compile=False)

    def save(folder: Path) -> None:
        save_training_state(folder, student, optimizer)

    try:
        for step in run.steps():
            learning_rate = run.schedule(step.global_step - 1)
            with hold_interrupts():
                losses, grad_norm = step_fn(step.batches)
                drun.end_step(
                    step,
                    losses=losses,
                    grad_norm=grad_norm,
                    learning_rate=learning_rate,
                    save=save,
                    predict=predict,
                )
    except KeyboardInterrupt:
        optimizer.reset_accumulation()
        drun.interrupted(save)
        raise
    return drun.finish(save_model=student.save_pretrained, predict=predict)


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
