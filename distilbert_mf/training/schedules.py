"""Training length, the learning-rate schedule and the weight-decay rule, as transformers' Trainer has them.

- :class:`TrainingPlan`: update steps per epoch ``ceil(batches / gradient_accumulation_steps)`` (at least 1),
  ``max_steps`` from ``num_train_epochs`` (``ceil(epochs * steps per epoch)``) unless ``max_steps > 0`` is given,
  and the epochs that takes — transformers 5.24's ``Trainer.set_initial_training_values``.
- :func:`warmup_steps_for`: ``warmup_ratio`` -> ``ceil(total_steps * ratio)``, as transformers 5.24's
  ``TrainingArguments.get_warmup_steps`` (which reads a ``warmup_steps`` below 1 as a ratio).
- :func:`linear_schedule`: the multiplier of the base learning rate at update ``step`` (0-based, the number of
  optimizer steps already taken): ``step / warmup`` during the warm-up, then a linear decay to 0 at
  ``total_steps`` — transformers' ``get_linear_schedule_with_warmup``. Update ``s`` (0-based) uses
  ``base_lr * linear_schedule(s, ...)``; transformers logs that value as ``learning_rate`` with ``step = s + 1``.
- :func:`no_weight_decay`: the parameters the Trainer excludes from weight decay, on canonical names
  (transformers' PyTorch keys): every bias and every LayerNorm weight.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from distilbert_mf.checkpoint.layouts import LAYER_NORMS

if TYPE_CHECKING:
    from distilbert_mf.training.batching import DataPosition

# transformers 5.24's Trainer.get_decay_parameter_names: names matching these (lower-cased) are not decayed,
# nor the parameters of a LayerNorm module (ours: LAYER_NORMS)
_NO_DECAY_PATTERNS = tuple(
    re.compile(p) for p in (r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)")
)


def _int_at_least(name: str, value: object, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass(frozen=True)
class TrainingPlan:
    """How long a run is, in optimizer updates.

    Args:
        batches_per_epoch: micro-batches per epoch (``len(loader)``).
        num_train_epochs: epochs (may be fractional) when ``max_steps <= 0``.
        max_steps: updates to run; > 0 overrides ``num_train_epochs``.
        gradient_accumulation_steps: micro-batches per update (the last update of an epoch may take fewer).
    """

    batches_per_epoch: int
    num_train_epochs: float = 3.0
    max_steps: int = -1
    gradient_accumulation_steps: int = 1

    def __post_init__(self) -> None:
        _int_at_least("batches_per_epoch", self.batches_per_epoch, 1)
        _int_at_least("gradient_accumulation_steps", self.gradient_accumulation_steps, 1)
        if isinstance(self.max_steps, bool) or not isinstance(self.max_steps, (int, np.integer)):
            raise ValueError(f"max_steps must be an integer (<= 0: use num_train_epochs), got {self.max_steps!r}")
        epochs = self.num_train_epochs
        if self.max_steps <= 0 and (
            isinstance(epochs, bool) or not isinstance(epochs, (int, float)) or not epochs > 0 or math.isinf(epochs)
        ):
            raise ValueError(f"num_train_epochs must be a positive number when max_steps <= 0, got {epochs!r}")
        requested = self.max_steps if self.max_steps > 0 else math.ceil(epochs * self.update_steps_per_epoch)
        object.__setattr__(self, "max_steps", int(requested))

    @property
    def update_steps_per_epoch(self) -> int:
        return max(math.ceil(self.batches_per_epoch / self.gradient_accumulation_steps), 1)

    @property
    def epochs(self) -> int:
        """Epochs the loop starts (the last may stop early at ``max_steps``)."""
        return math.ceil(self.max_steps / self.update_steps_per_epoch)

    def position_of(self, global_step: int) -> DataPosition:
        """The data position after ``global_step`` updates."""
        from distilbert_mf.training.batching import DataPosition  # batching imports this module

        _int_at_least("global_step", global_step, 0)
        epoch, in_epoch = divmod(int(global_step), self.update_steps_per_epoch)
        return DataPosition(epoch, in_epoch * self.gradient_accumulation_steps)

    def warmup_steps(self, *, warmup_ratio: float = 0.0, warmup_steps: int = 0) -> int:
        """Warm-up updates of this plan (see :func:`warmup_steps_for`)."""
        return warmup_steps_for(self.max_steps, warmup_ratio=warmup_ratio, warmup_steps=warmup_steps)

    def schedule(self, learning_rate: float, *, warmup_ratio: float = 0.0, warmup_steps: int = 0) -> LinearSchedule:
        """The linear warm-up / decay schedule of this plan."""
        return LinearSchedule(
            learning_rate,
            warmup_steps=self.warmup_steps(warmup_ratio=warmup_ratio, warmup_steps=warmup_steps),
            total_steps=self.max_steps,
        )


def warmup_steps_for(total_steps: int, *, warmup_ratio: float = 0.0, warmup_steps: int = 0) -> int:
    """``warmup_steps`` when given (> 0), else ``ceil(total_steps * warmup_ratio)``; both at once is an error."""
    _int_at_least("total_steps", total_steps, 0)
    if isinstance(warmup_ratio, bool) or not isinstance(warmup_ratio, (int, float)) or not 0 <= warmup_ratio <= 1:
        raise ValueError(f"warmup_ratio must be a number in [0, 1], got {warmup_ratio!r}")
    _int_at_least("warmup_steps", warmup_steps, 0)
    if warmup_steps and warmup_ratio:
        raise ValueError(f"give warmup_steps ({warmup_steps}) or warmup_ratio ({warmup_ratio}), not both")
    return int(warmup_steps) if warmup_steps else math.ceil(total_steps * warmup_ratio)


def linear_schedule(step: int, *, warmup_steps: int, total_steps: int) -> float:
    """Learning-rate multiplier after ``step`` updates: ``step / warmup_steps`` rising, then
    ``(total_steps - step) / (total_steps - warmup_steps)`` falling to 0 (never negative)."""
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))


@dataclass(frozen=True)
class LinearSchedule:
    """Linear warm-up to ``learning_rate`` over ``warmup_steps`` updates, then linear decay to 0 at
    ``total_steps``. ``schedule(step)`` is the learning rate of update ``step`` (0-based)."""

    learning_rate: float
    warmup_steps: int
    total_steps: int

    def __post_init__(self) -> None:
        lr = self.learning_rate
        if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr >= 0 or math.isinf(lr):
            raise ValueError(f"learning_rate must be a finite number >= 0, got {lr!r}")
        _int_at_least("warmup_steps", self.warmup_steps, 0)
        _int_at_least("total_steps", self.total_steps, 0)

    def multiplier(self, step: int) -> float:
        return linear_schedule(step, warmup_steps=self.warmup_steps, total_steps=self.total_steps)

    def __call__(self, step: int) -> float:
        return float(self.learning_rate) * self.multiplier(step)

    def table(self) -> np.ndarray:
        """``(total_steps + 1,)`` float64: the learning rate of every update ``0..total_steps`` (for optax /
        Keras schedules that index a table)."""
        return np.asarray([self(s) for s in range(self.total_steps + 1)], dtype=np.float64)


def no_weight_decay(name: str) -> bool:
    """True for a parameter the Trainer does not decay: every bias and every LayerNorm weight (canonical name,
    e.g. ``distilbert.transformer.layer.0.sa_layer_norm.weight``)."""
    if not isinstance(name, str):
        raise TypeError(f"a parameter name must be a str, got {type(name).__name__}")
    parts = name.split(".")
    if len(parts) >= 2 and parts[-2] in LAYER_NORMS:
        return True
    lowered = name.lower()
    return any(pattern.search(lowered) for pattern in _NO_DECAY_PATTERNS)


def weight_decay_mask(names: Iterable[str]) -> dict[str, bool]:
    """``{name: decayed?}`` for canonical parameter names (optax's ``mask=``, Keras' exclusion list)."""
    return {name: not no_weight_decay(name) for name in names}
