"""Distillation loss weights and the checks run before training starts (framework-neutral).

The loss weights of DistilBERT's triple loss (Sanh et al., 2019): ``total = alpha_ce * CE + alpha_mlm * MLM +
alpha_cos * cos (+ alpha_mse * MSE)``, the soft-target term at ``temperature`` 2.0 and times ``temperature**2``;
the weights 5.0 / 2.0 / 1.0 / 0.0 are DistilBERT's. Task-specific distillation (Hugging Face's SQuAD script) mixes
the soft-target term and the task loss 0.5 / 0.5 at temperature 2.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from distilbert_mf.config import DistilBertConfig


def check_weights(owner: str, temperature: float, alphas: Mapping[str, float]) -> None:
    """``temperature`` a finite number > 0, every weight a finite number >= 0 and at least one > 0; the errors
    name ``owner`` (the class or loss function that was given them)."""
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)):
        raise TypeError(f"{owner}: temperature must be a number, got {temperature!r}")
    if not (temperature > 0 and math.isfinite(temperature)):
        raise ValueError(f"{owner}: temperature must be a finite number > 0, got {temperature}")
    for name, value in alphas.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: {name} must be a number, got {value!r}")
        if not (value >= 0 and math.isfinite(value)):
            raise ValueError(f"{owner}: {name} must be a finite number >= 0, got {value}")
    if not any(alphas.values()):
        raise ValueError(f"{owner}: every loss weight is zero ({dict(alphas)}); at least one must be > 0")


@dataclass(frozen=True)
class DistillationWeights:
    """Weights of the general-distillation loss; pass ``**weights.as_kwargs()`` to ``distillation_loss``.

    Attributes:
        temperature: softmax temperature of the soft-target term (> 0).
        alpha_ce: soft-target KL term, times ``temperature**2``.
        alpha_mlm: masked-LM cross-entropy on the true tokens.
        alpha_cos: cosine distance between the last hidden states.
        alpha_mse: MSE between the logits.
        restrict_ce_to_mask: soft-target (and MSE) terms on the masked-LM targets only, not every non-padding token.
    """

    temperature: float = 2.0
    alpha_ce: float = 5.0
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    restrict_ce_to_mask: bool = False

    def __post_init__(self) -> None:
        check_weights("DistillationWeights", self.temperature, self.alphas())
        if not isinstance(self.restrict_ce_to_mask, bool):
            raise TypeError(f"restrict_ce_to_mask must be a bool, got {self.restrict_ce_to_mask!r}")

    def alphas(self) -> dict[str, float]:
        return {
            "alpha_ce": self.alpha_ce,
            "alpha_mlm": self.alpha_mlm,
            "alpha_cos": self.alpha_cos,
            "alpha_mse": self.alpha_mse,
        }

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class TaskDistillationWeights:
    """Weights of task-specific distillation: ``alpha_ce * T**2 * KL(teacher || student) + alpha_task * task loss``."""

    temperature: float = 2.0
    alpha_ce: float = 0.5
    alpha_task: float = 0.5

    def __post_init__(self) -> None:
        check_weights(
            "TaskDistillationWeights", self.temperature, {"alpha_ce": self.alpha_ce, "alpha_task": self.alpha_task}
        )

    def as_kwargs(self) -> dict[str, Any]:
        return asdict(self)


def _vocab_of(side: Any) -> tuple[int, dict[str, int] | None]:
    if isinstance(side, DistilBertConfig):
        return side.vocab_size, None
    if isinstance(side, Mapping):
        if "vocab_size" in side and not all(isinstance(v, int) for v in side.values()):
            return int(side["vocab_size"]), None  # a config.json dict
        return len(side), {str(k): int(v) for k, v in side.items()}
    if hasattr(side, "get_vocab"):
        vocab = side.get_vocab()
        return len(side), vocab
    raise TypeError(f"expected a tokenizer, a {{token: id}} vocabulary or a config, got {type(side).__name__}")


def check_vocabularies(teacher: Any, student: Any) -> None:
    """Refuse a teacher and student whose vocabularies differ (size, or any token's id).

    Each side is a tokenizer, a ``{token: id}`` vocabulary, a :class:`~distilbert_mf.DistilBertConfig` or a
    ``config.json`` dict (sizes only).
    """
    teacher_size, teacher_vocab = _vocab_of(teacher)
    student_size, student_vocab = _vocab_of(student)
    if teacher_size != student_size:
        raise ValueError(
            f"the teacher's vocabulary has {teacher_size} tokens but the student's {student_size}: distillation "
            "compares their predictions token by token, so both must use the same vocabulary"
        )
    if teacher_vocab is not None and student_vocab is not None and teacher_vocab != student_vocab:
        differing = sorted(
            t for t in set(teacher_vocab) | set(student_vocab) if teacher_vocab.get(t) != student_vocab.get(t)
        )
        examples = ", ".join(
            f"{t!r}: teacher {teacher_vocab.get(t)} / student {student_vocab.get(t)}" for t in differing[:5]
        )
        raise ValueError(
            f"the teacher and student vocabularies differ in {len(differing)} tokens ({examples}); use the same tokenizer"
        )


def check_masked_lm_teacher(keys: Iterable[str], *, source: str = "the teacher") -> None:
    """General distillation needs the teacher's masked-LM head (DistilBERT ``vocab_*`` or BERT ``cls.predictions``)."""
    keys = list(keys)
    if not any(k.startswith(("vocab_transform.", "vocab_projector.", "cls.predictions.")) for k in keys):
        raise ValueError(
            f"{source} has no masked-LM head (no vocab_transform / vocab_projector weights): general distillation "
            "compares vocabulary predictions; use a DistilBertForMaskedLM / BertForMaskedLM checkpoint"
        )


def check_hidden_sizes(
    teacher: DistilBertConfig, student: DistilBertConfig, *, alpha_cos: float, projection: bool = False
) -> None:
    """The cosine loss compares hidden states: teacher and student of different widths need a projection."""
    if alpha_cos and teacher.dim != student.dim and not projection:
        raise ValueError(
            f"the cosine loss compares hidden states, but the teacher's width is {teacher.dim} and the student's "
            f"{student.dim}; set alpha_cos=0 or ask for a projection of the student's states"
        )
