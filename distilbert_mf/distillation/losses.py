"""The rules of the distillation losses, once for the three frameworks (no framework imported here).

Each framework's ``distillation.py`` writes the math (``distilbert_mf.torch.distillation``,
``distilbert_mf.tensorflow.distillation``, ``distilbert_mf.flax.distillation``); this module reads the model
outputs and checks them, their shapes and the loss options with the same messages everywhere. It describes tensors
through the framework's :class:`~distilbert_mf.modeling_utils.TensorOps`: shape rules always run, value rules (an
all-padding batch, labels in range) only where the values are concrete, never inside ``jit`` / ``tf.function``.
Traced, an all-padding batch gives a loss of 0 (every mean divides by ``max(count, 1)``), never NaN.

The formulas (DistilBERT's triple loss, Sanh et al. 2019, as Hugging Face's original distillation code computes it):

- ``loss_ce``: ``KL(softmax(teacher / T) || softmax(student / T))`` summed over the vocabulary, averaged over the
  selected tokens (non-padding, or with ``restrict_ce_to_mask`` the masked-LM targets), times ``T**2``;
- ``loss_mlm``: the student's masked-LM cross-entropy, labels ``-100`` ignored;
- ``loss_cos``: the mean over non-padding tokens of ``1 - cos(student, teacher)`` on the last hidden states;
- ``loss_mse``: ``sum((student - teacher)**2)`` over the selected tokens' logits divided by their number;
- ``loss = alpha_ce * loss_ce + alpha_mlm * loss_mlm + alpha_cos * loss_cos + alpha_mse * loss_mse``.

Task-specific distillation: ``loss = alpha_ce * loss_ce + alpha_task * loss_task``, ``loss_ce`` the soft-target
term on the classification logits (per sequence, per non-padding token, or the mean of the start and end terms for
question answering) and ``loss_task`` the head's own loss on the true labels.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from distilbert_mf import modeling_utils as mu
from distilbert_mf.distillation.options import check_weights

# distillation_loss's components -> the weight of each (the option names)
ALPHA_OF = {"loss_ce": "alpha_ce", "loss_mlm": "alpha_mlm", "loss_cos": "alpha_cos", "loss_mse": "alpha_mse"}
COSINE_EPS = 1e-8  # cos = s.t / max(|s| |t|, eps): a zero hidden state gives cos 0, not NaN


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


def _known(shape: Sequence[Any]) -> bool:
    return all(isinstance(d, int) for d in shape)


def output_field(outputs: Any, key: str, side: str) -> Any:
    """``outputs[key]`` of a model output (or any mapping); a clear error when it is not there."""
    if not isinstance(outputs, Mapping):
        raise TypeError(
            f"{side}_outputs must be a model output or a dict of tensors (with {key!r}), got {type(outputs).__name__}"
        )
    value = outputs.get(key)
    if value is None:
        raise ValueError(f"{side}_outputs has no {key!r} (it holds {sorted(outputs)}); pass the outputs of the model")
    return value


def last_hidden_state(outputs: Mapping[str, Any]) -> Any | None:
    """The last hidden states (batch, seq, dim): ``last_hidden_state`` or the last of ``hidden_states``."""
    if outputs.get("last_hidden_state") is not None:
        return outputs["last_hidden_state"]
    states = outputs.get("hidden_states")
    return states[-1] if states else None


def check_flag(owner: str, name: str, value: Any) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{owner}: {name} must be True or False, got {value!r}")


def check_pair(name: str, student: Sequence[Any], teacher: Sequence[Any], what: str) -> None:
    """Student and teacher ``name`` of the same shape ``what`` (its number of axes is ``what``'s)."""
    ndim = what.count(",") + 1
    for side, shape in (("student", student), ("teacher", teacher)):
        if len(shape) != ndim:
            raise ValueError(f"the {side}'s {name} must have shape {what}, got {_shape_text(shape)}")
    if _known(student) and _known(teacher) and tuple(student) != tuple(teacher):
        detail = ""
        if tuple(student[:-1]) == tuple(teacher[:-1]) and name == "logits":
            detail = (
                f": the teacher predicts {teacher[-1]} classes and the student {student[-1]}; distillation compares "
                "them class by class, so both need the same vocabulary / labels"
            )
        raise ValueError(
            f"the student's {name} {_shape_text(student)} and the teacher's {_shape_text(teacher)} differ{detail}"
        )


def check_tokens(ops: mu.TensorOps, attention_mask: Any, leading: Sequence[Any], owner: str) -> None:
    """``attention_mask`` of the logits' (batch, seq), holding at least one token (where its values are known)."""
    shape = tuple(ops.shape(attention_mask))
    if len(shape) != len(leading) or (_known(shape) and _known(leading) and shape != tuple(leading)):
        raise ValueError(
            f"{owner}: attention_mask must have the logits' shape {_shape_text(leading)} (batch, seq), got "
            f"{_shape_text(shape)}"
        )
    if _known(shape) and math.prod(shape) == 0:
        raise ValueError(f"{owner}: the batch holds no tokens (attention_mask has shape {_shape_text(shape)})")
    span = ops.value_range(attention_mask)
    if span is not None and span[1] == 0:
        raise ValueError(
            f"{owner}: every position of the batch is padding (attention_mask is all 0), so there is no token to "
            "average the losses over; drop empty rows before batching"
        )


@dataclass(frozen=True)
class GeneralInputs:
    """What :func:`general_inputs` read from the outputs: the tensors the framework's loss works on."""

    student_logits: Any  # (batch, seq, vocab)
    teacher_logits: Any  # (batch, seq, vocab)
    student_hidden: Any | None  # (batch, seq, dim), None when the cosine term is not computed
    teacher_hidden: Any | None


def general_inputs(
    ops: mu.TensorOps,
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    attention_mask: Any,
    labels: Any,
    temperature: float,
    weights: Mapping[str, float],
    restrict_ce_to_mask: bool,
) -> GeneralInputs:
    """Every rule of ``distillation_loss``: options (``weights``: component -> weight), the outputs' fields and
    shapes, mask, labels, hidden sizes.

    The cosine term is computed whenever both sides carry hidden states of the same width (``output_hidden_states``
    or a ``last_hidden_state``); with ``alpha_cos > 0`` they are required, and widths that differ are refused (the
    loss never projects: a student narrower than its teacher projects its states with a layer of its own first).
    """
    owner = "distillation_loss"
    alphas = {ALPHA_OF[name]: value for name, value in weights.items()}
    check_weights(owner, temperature, alphas)
    check_flag(owner, "restrict_ce_to_mask", restrict_ce_to_mask)
    student_logits = output_field(student_outputs, "logits", "student")
    teacher_logits = output_field(teacher_outputs, "logits", "teacher")
    shape = tuple(ops.shape(student_logits))
    check_pair("logits", shape, tuple(ops.shape(teacher_logits)), "(batch, seq, vocab)")
    if attention_mask is None:
        raise ValueError(f"{owner}: attention_mask is required (1 = token, 0 = padding): the losses skip padding")
    check_tokens(ops, attention_mask, shape[:2], owner)
    if labels is None and (alphas["alpha_mlm"] > 0 or restrict_ce_to_mask):
        need = "alpha_mlm > 0" if alphas["alpha_mlm"] > 0 else "restrict_ce_to_mask"
        raise ValueError(f"{owner}: {need} needs labels (the masked-LM targets, -100 elsewhere); got labels=None")
    if labels is not None:
        mu.check_class_labels(ops, labels, shape[-1], shape[:2])
    student_hidden, teacher_hidden = last_hidden_state(student_outputs), last_hidden_state(teacher_outputs)
    if student_hidden is None or teacher_hidden is None:
        if alphas["alpha_cos"] > 0:
            missing = " and ".join(
                s for s, h in (("student", student_hidden), ("teacher", teacher_hidden)) if h is None
            )
            raise ValueError(
                f"{owner}: alpha_cos > 0 compares the last hidden states, but the {missing} outputs hold none; call "
                "the model with output_hidden_states=True (or set alpha_cos=0)"
            )
        return GeneralInputs(student_logits, teacher_logits, None, None)
    student_dims, teacher_dims = tuple(ops.shape(student_hidden)), tuple(ops.shape(teacher_hidden))
    for side, dims in (("student", student_dims), ("teacher", teacher_dims)):
        if len(dims) != 3 or (_known(dims[:2]) and _known(shape[:2]) and dims[:2] != shape[:2]):
            raise ValueError(
                f"the {side}'s last hidden states must have shape (batch, seq, dim) with the logits' (batch, seq) "
                f"{_shape_text(shape[:2])}, got {_shape_text(dims)}"
            )
    if _known(student_dims) and _known(teacher_dims) and student_dims[-1] != teacher_dims[-1]:
        if alphas["alpha_cos"] > 0:
            raise ValueError(
                f"the cosine loss compares hidden states, but the teacher's width is {teacher_dims[-1]} and the "
                f"student's {student_dims[-1]}; set alpha_cos=0 or project the student's states to the teacher's "
                "width before the loss (a trained linear layer of the student)"
            )
        return GeneralInputs(student_logits, teacher_logits, None, None)
    return GeneralInputs(student_logits, teacher_logits, student_hidden, teacher_hidden)


TASKS = {  # task -> (the logits compared, their shape)
    "sequence_classification": (("logits",), "(batch, classes)"),
    "token_classification": (("logits",), "(batch, seq, classes)"),
    "question_answering": (("start_logits", "end_logits"), "(batch, seq)"),
}


def task_inputs(
    ops: mu.TensorOps,
    task: str,
    student_outputs: Any,
    teacher_outputs: Any,
    *,
    targets: Sequence[Any],
    temperature: float,
    alpha_ce: float,
    alpha_task: float,
) -> list[tuple[Any, Any]]:
    """The rules of ``<task>_distillation_loss``: options, targets (all or none of ``targets``: labels, or the start
    and end positions), then the (student, teacher) pair of each compared logits, of one shape."""
    owner = f"{task}_distillation_loss"
    check_weights(owner, temperature, {"alpha_ce": alpha_ce, "alpha_task": alpha_task})
    given = [t is not None for t in targets]
    if any(given) and not all(given):
        raise ValueError(f"{owner}: pass both start_positions and end_positions, or neither")
    if alpha_task > 0 and not all(given):
        raise ValueError(f"{owner}: alpha_task > 0 needs the true labels (or set alpha_task=0 to distil without them)")
    keys, what = TASKS[task]
    pairs = []
    for key in keys:
        student, teacher = output_field(student_outputs, key, "student"), output_field(teacher_outputs, key, "teacher")
        check_pair(key, tuple(ops.shape(student)), tuple(ops.shape(teacher)), what)
        classes = ops.shape(student)[-1]
        if isinstance(classes, int) and classes < 2:
            raise ValueError(
                f"{owner}: soft targets need at least 2 classes, got {key} with {classes} (a regression head has "
                "no distribution to match)"
            )
        pairs.append((student, teacher))
    return pairs


def alpha_of(component: str) -> str:
    """The weight option of a loss component: ``loss_ce`` -> ``alpha_ce``, ``loss_task`` -> ``alpha_task``."""
    return "alpha_" + component.removeprefix("loss_")


def averaged_over(
    loss_name: str, inputs: Mapping[str, Any], targets: Mapping[str, Any], options: Mapping[str, Any]
) -> dict[str, int]:
    """How many items each component of ``loss_name`` averages over in one micro-batch (numpy ``inputs`` and
    ``targets`` as :meth:`~distilbert_mf.distillation.run.DistillationRun.split` gives them): non-padding tokens,
    selected tokens, labelled tokens or rows. Over several processes each one weights its component by its share of
    the global count, so their sum is the whole batch's mean, as one process computes it."""
    rows = int(np.shape(inputs["input_ids"])[0])
    tokens = np.asarray(inputs["attention_mask"]) != 0  # (batch, seq)
    labels = targets.get("labels")
    labels = None if labels is None else np.asarray(labels)
    labelled = None if labels is None or labels.dtype.kind == "f" else labels != mu.IGNORE_INDEX
    if loss_name == "distillation_loss":
        selected = tokens & labelled if options.get("restrict_ce_to_mask") and labelled is not None else tokens
        counts = {"loss_ce": selected.sum(), "loss_mse": selected.sum(), "loss_cos": tokens.sum()}
        if labelled is not None:
            counts["loss_mlm"] = labelled.sum()
    elif loss_name == "token_classification_distillation_loss":
        counts = {"loss_ce": tokens.sum(), "loss_task": labelled.sum() if labelled is not None else 0}
    elif loss_name == "sequence_classification_distillation_loss":
        counts = {"loss_ce": rows, "loss_task": labelled.sum() if labelled is not None else rows}
    elif loss_name == "question_answering_distillation_loss":
        seq = int(np.shape(inputs["input_ids"])[1])
        outside = [k for k in ("start_positions", "end_positions") if k in targets and (targets[k] >= seq).any()]
        if outside:  # the loss ignores them (start and end apart): no single count weights the mean of the two
            raise ValueError(
                f"{' and '.join(outside)} hold positions >= the sequence length {seq}, which the question-answering "
                "loss ignores; over several processes every position must lie inside its window (the data layer's "
                "do: an answer outside the window is position 0)"
            )
        counts = {"loss_ce": rows, "loss_task": rows}
    else:
        raise ValueError(f"unknown distillation loss {loss_name!r}")
    return {name: int(count) for name, count in counts.items()}


def weighted(losses: Mapping[str, Any], weights: Mapping[str, float]) -> dict[str, Any]:
    """``{"loss": sum(weights[name] * losses[name]), **losses}``, components in the order of ``weights``; works on
    any framework's scalars."""
    total = sum(weights[name] * value for name, value in losses.items())
    return {"loss": total, **{name: losses[name] for name in weights if name in losses}}


__all__ = [
    "ALPHA_OF",
    "COSINE_EPS",
    "TASKS",
    "GeneralInputs",
    "alpha_of",
    "averaged_over",
    "check_pair",
    "check_tokens",
    "general_inputs",
    "last_hidden_state",
    "output_field",
    "task_inputs",
    "weighted",
]
