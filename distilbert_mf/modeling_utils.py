"""Framework-neutral rules the three model packages share: input and label checks, dtypes, problem types, constants.

The math lives in each framework's ``modeling.py``; the decisions and error messages live here, once. A framework
describes its tensors through a small :class:`TensorOps` (shape, integer or not, values when they are concrete) and
calls :func:`check_model_inputs` / :func:`check_class_labels` / :func:`check_same_size`: every rule then applies in
every framework, with the same message. Shape rules always run (a dimension that is not a Python ``int`` — symbolic
under ``jax.export`` or ``torch.export``, ``None`` under Keras — is skipped); value rules (token ids in range,
position ids in range, class ids in range) run only where the framework can see the values, never inside a trace.

Empty inputs: a batch of zero rows is valid and gives empty outputs in every framework; a sequence of zero tokens is
refused (a DistilBERT input always holds at least ``[CLS]``, and the classification heads read that first token).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from distilbert_mf.config import DistilBertConfig

IGNORE_INDEX = -100  # label value that contributes no loss (PyTorch's CrossEntropyLoss default)
LAYER_NORM_EPS = 1e-12  # DistilBERT's LayerNorm epsilon (transformers hard-codes it; not a config field)

DTYPE_NAMES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
}
CPU_FLOAT16_WARNING = (
    "float16 was requested on a CPU: CPUs run float16 matrix products about two orders of magnitude slower "
    "than float32; use dtype='bfloat16' on CPUs (it keeps float32's range) or float16 on a GPU"
)


def dtype_name(dtype: Any) -> str | None:
    """Normalise a dtype given as a string or any framework's dtype object to 'float32'/'bfloat16'/'float16'.

    ``None`` and ``"auto"`` return ``None`` (keep the checkpoint's / the default dtype).
    """
    if dtype is None:
        return None
    text = str(getattr(dtype, "name", dtype)) if not isinstance(dtype, str) else dtype
    if text == "auto":
        return None
    text = text.rsplit(".", 1)[-1].replace("'", "").replace(">", "").strip().lower()  # torch.float16, <dtype: 'x'>
    if text.startswith("dtype: "):
        text = text[len("dtype: ") :]
    if text in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[text]
    raise ValueError(f"unsupported dtype {dtype!r}; expected one of {DTYPE_NAMES} (or None/'auto')")


# ---------------------------------------------------------------------------------------------------- tensors


class TensorOps(Protocol):
    """What the checks need to know about a framework's tensor; each framework supplies one."""

    def shape(self, x: Any) -> tuple[Any, ...]:
        """The shape; a dimension unknown now (symbolic, ``None``) is anything but an ``int``."""

    def is_integer(self, x: Any) -> bool:
        """Whether the dtype holds integers (bool does not count)."""

    def value_range(self, x: Any) -> tuple[int, int] | None:
        """``(min, max)`` of a non-empty integer tensor whose values are known now; ``None`` inside a trace."""

    def first_invalid_label(self, labels: Any, num_classes: int, ignore_index: int) -> int | None:
        """The first value outside ``[0, num_classes)`` that is not ``ignore_index``; ``None`` if there is none or
        the values are not known now (inside a trace)."""


class ConcreteValueOps:
    """``value_range`` and ``first_invalid_label`` read from a numpy copy of the values, for frameworks whose
    tensors may be symbolic (Keras, JAX): a subclass gives ``concrete(x)``, the values now or ``None`` in a trace."""

    @staticmethod
    def concrete(x: Any) -> Any:
        raise NotImplementedError

    def value_range(self, x: Any) -> tuple[int, int] | None:
        values = self.concrete(x)
        return None if values is None or values.size == 0 else (int(values.min()), int(values.max()))

    def first_invalid_label(self, labels: Any, num_classes: int, ignore_index: int) -> int | None:
        values = self.concrete(labels)
        if values is None:
            return None
        bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
        return int(bad.flat[0]) if bad.size else None


def _known(dims: Sequence[Any]) -> bool:
    return all(isinstance(d, int) for d in dims)


def _shape_text(shape: Sequence[Any]) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------------- inputs


def reject_unsupported_inputs(token_type_ids: Any = None, head_mask: Any = None) -> None:
    """DistilBERT has no segment embeddings and no head masking: refuse them loudly instead of ignoring them."""
    if token_type_ids is not None:
        raise ValueError(
            "DistilBERT has no segment (token type) embeddings, so token_type_ids cannot be used; drop it "
            "(DistilBERT tokenizers do not return it; for sentence pairs the [SEP] token separates the segments)"
        )
    if head_mask is not None:
        raise ValueError(
            "head_mask is not supported: mask attention heads by pruning or by editing the attention weights; "
            "to mask tokens pass attention_mask"
        )


def check_input_choice(input_ids: Any, inputs_embeds: Any) -> None:
    """Exactly one of ``input_ids`` and ``inputs_embeds`` must be given."""
    if input_ids is None and inputs_embeds is None:
        raise ValueError("pass input_ids (batch, seq) or inputs_embeds (batch, seq, dim); both are None")
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError("pass either input_ids or inputs_embeds, not both")


def check_token_range(min_id: int, max_id: int, vocab_size: int) -> None:
    """Token ids must lie in [0, vocab_size): never clamp or wrap them."""
    if min_id < 0 or max_id >= vocab_size:
        bad = min_id if min_id < 0 else max_id
        raise ValueError(
            f"input_ids contains token id {bad}, outside the vocabulary [0, {vocab_size}); check that the tokenizer "
            "matches the model (config.vocab_size)"
        )


def check_sequence_length(seq_len: int, config: DistilBertConfig) -> None:
    """A sequence needs at least one token and at most ``max_position_embeddings``."""
    if seq_len == 0:
        raise ValueError(
            "the inputs have sequence length 0; a DistilBERT input holds at least one token ([CLS]), so pass "
            "sequences of length >= 1 (an empty *batch* of shape (0, seq) is fine)"
        )
    if seq_len > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_position_embeddings={config.max_position_embeddings}; "
            "truncate the input (tokenizer(..., truncation=True, max_length=...))"
        )


def check_shape(name: str, shape: Sequence[Any], expected_ndim: int, what: str) -> None:
    if len(shape) != expected_ndim:
        raise ValueError(f"{name} must have shape {what} ({expected_ndim} dimensions), got shape {tuple(shape)}")


@dataclass(frozen=True)
class InputShape:
    """The leading dimensions of a call's inputs: ``(batch, seq)``, or ``(batch, num_choices, seq)``."""

    dims: tuple[Any, ...]

    @property
    def seq(self) -> Any:
        return self.dims[-1]


def check_model_inputs(
    config: DistilBertConfig,
    ops: TensorOps,
    *,
    input_ids: Any = None,
    attention_mask: Any = None,
    position_ids: Any = None,
    inputs_embeds: Any = None,
    token_type_ids: Any = None,
    head_mask: Any = None,
    num_choices: bool = False,
) -> InputShape:
    """Every rule on a model call's inputs, once for the three frameworks.

    ``input_ids`` (batch, seq) integers in [0, vocab_size), or ``inputs_embeds`` (batch, seq, dim); ``attention_mask``
    with the inputs' leading shape; ``position_ids`` (seq,) or (batch, seq) in [0, max_position_embeddings); without
    position ids, 1 <= seq <= max_position_embeddings. With ``num_choices`` every input has an extra
    ``num_choices`` axis after the batch. Returns the leading shape.
    """
    reject_unsupported_inputs(token_type_ids, head_mask)
    check_input_choice(input_ids, inputs_embeds)
    lead = 3 if num_choices else 2
    what = "(batch, num_choices, seq" if num_choices else "(batch, seq"
    if input_ids is not None:
        shape = tuple(ops.shape(input_ids))
        check_shape("input_ids", shape, lead, what + ")")
        if not ops.is_integer(input_ids):
            raise TypeError(
                f"input_ids must hold integers (integer token ids), got dtype {getattr(input_ids, 'dtype', '?')}"
            )
    else:
        embeds_shape = tuple(ops.shape(inputs_embeds))
        check_shape("inputs_embeds", embeds_shape, lead + 1, what + ", dim)")
        if isinstance(embeds_shape[-1], int) and embeds_shape[-1] != config.dim:
            raise ValueError(
                f"inputs_embeds must have last dimension dim={config.dim}, got shape {_shape_text(embeds_shape)}"
            )
        shape = embeds_shape[:-1]
    seq = shape[-1]
    if attention_mask is not None:
        mask_shape = tuple(ops.shape(attention_mask))
        comparable = len(mask_shape) == len(shape) and _known(mask_shape) and _known(shape)
        if len(mask_shape) != len(shape) or (comparable and mask_shape != shape):
            raise ValueError(
                f"attention_mask must have the inputs' shape {_shape_text(shape)} {what})"
                f", got {_shape_text(mask_shape)}"
            )
    if isinstance(seq, int) and seq == 0:
        check_sequence_length(0, config)
    if position_ids is None:
        if isinstance(seq, int):
            check_sequence_length(seq, config)
    else:
        positions_shape = tuple(ops.shape(position_ids))
        allowed = (1, 2, 3) if num_choices else (1, 2)
        if len(positions_shape) not in allowed or (
            isinstance(positions_shape[-1], int) and isinstance(seq, int) and positions_shape[-1] != seq
        ):
            raise ValueError(
                f"position_ids must have shape (seq,) or {what}) with seq={seq}, got {_shape_text(positions_shape)}"
            )
        if not ops.is_integer(position_ids):
            raise TypeError(f"position_ids must hold integers, got dtype {getattr(position_ids, 'dtype', '?')}")
        span = ops.value_range(position_ids)
        if span is not None and (span[0] < 0 or span[1] >= config.max_position_embeddings):
            raise ValueError(
                f"position_ids must lie in [0, max_position_embeddings={config.max_position_embeddings}), got values "
                f"from {span[0]} to {span[1]}"
            )
    if input_ids is not None:
        span = ops.value_range(input_ids)
        if span is not None:
            check_token_range(span[0], span[1], config.vocab_size)
    return InputShape(shape)


# ---------------------------------------------------------------------------------------------------- labels


def check_class_labels(
    ops: TensorOps,
    labels: Any,
    num_classes: int,
    predictions: Sequence[Any],
    name: str = "labels",
    ignore_index: int = IGNORE_INDEX,
) -> None:
    """Class-id labels for a cross-entropy: integers, one per prediction (``predictions`` is the logits' shape
    without the class axis), each in ``[0, num_classes)`` or ``ignore_index``."""
    if not ops.is_integer(labels):
        raise TypeError(f"{name} must be integer class ids for this loss, got dtype {getattr(labels, 'dtype', '?')}")
    shape = tuple(ops.shape(labels))
    if _known(shape) and _known(predictions) and math.prod(shape) != math.prod(predictions):
        raise ValueError(
            f"{name} must have shape {_shape_text(predictions)} (one class id per prediction), got {_shape_text(shape)}"
        )
    bad = ops.first_invalid_label(labels, num_classes, ignore_index)
    if bad is not None:
        raise ValueError(
            f"{name} contains class id {bad}, outside [0, {num_classes}) (use {ignore_index} to ignore a position)"
        )


def check_positions(ops: TensorOps, positions: Any, name: str) -> None:
    """Question-answering targets: integer token positions (out-of-range ones are clamped, as transformers)."""
    if not ops.is_integer(positions):
        raise TypeError(f"{name} must be integer token positions, got dtype {getattr(positions, 'dtype', '?')}")


def check_same_size(ops: TensorOps, labels: Any, logits_shape: Sequence[Any], problem: str) -> None:
    """Float targets with one value per logit (regression, multi-label classification)."""
    shape = tuple(ops.shape(labels))
    if _known(shape) and _known(logits_shape) and math.prod(shape) != math.prod(logits_shape):
        raise ValueError(
            f"{problem} labels must have the logits' shape {_shape_text(logits_shape)}, got {_shape_text(shape)}"
        )


def check_both_positions(start_positions: Any, end_positions: Any) -> None:
    if (start_positions is None) != (end_positions is None):
        raise ValueError("pass both start_positions and end_positions to compute the QA loss, or neither")


def problem_type_for(config: DistilBertConfig, labels_are_integers: bool) -> str:
    """The sequence-classification loss to use, decided per call and never written back to the config.

    As transformers: the config's ``problem_type`` if set; else regression for one label, single-label
    classification for integer labels, multi-label classification for float labels.
    """
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if labels_are_integers else "multi_label_classification"


def check_qa_config(config: DistilBertConfig) -> None:
    if config.num_labels != 2:
        raise ValueError(f"question answering needs num_labels=2 (start and end logits), got {config.num_labels}")


# ---------------------------------------------------------------------------------------------------- call options


def resolve_flag(value: bool | None, default: bool) -> bool:
    """A call's ``output_attentions`` / ``output_hidden_states`` / ``return_dict``: the config's default when None."""
    return default if value is None else bool(value)
