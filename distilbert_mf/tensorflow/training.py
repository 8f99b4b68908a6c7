"""Fine-tuning the Keras models: ``model.fit`` with the model's own loss, PyTorch's AdamW rule, the run's callbacks.

The optimizer, :class:`PyTorchAdamW`, is a ``keras.optimizers.AdamW`` whose update is ``torch.optim.AdamW`` after
``torch.nn.utils.clip_grad_norm_`` (what transformers' Trainer runs), for every variable of step ``t`` (from 1):

1. clip: ``g *= min(max_norm / (norm + 1e-6), 1)``, ``norm`` the global L2 norm of all gradients (reported);
2. decoupled decay first: ``p *= 1 - lr * weight_decay`` (not for the variables excluded from decay);
3. ``m = m + (g - m) * (1 - beta_1)``, ``v = v * beta_2 + g * g * (1 - beta_2)``;
4. ``p -= lr / (1 - beta_1^t) * m / (sqrt(v) / sqrt(1 - beta_2^t) + eps)``.

Keras' own ``AdamW`` adds epsilon to ``sqrt(v)`` before the bias correction ("epsilon hat"): with eps 1e-8 that is
a different optimizer (1.5e-3 apart in the loss after 50 steps of a tiny model), and its ``global_clipnorm``
scales by ``max_norm / norm`` without PyTorch's 1e-6. Here ``1 - beta^t`` is ``-expm1(t * log(beta))`` in float32
(PyTorch computes it in float64 on the host; the plain float32 power is 5e-5 off at ``t = 1`` for 0.999).

- The decay mask comes from canonical checkpoint names: :func:`create_optimizer` maps every trainable Keras
  variable to its name with :func:`distilbert_mf.tensorflow.loading.canonical_variables` and excludes those for
  which ``run.decays(name)`` is False (every bias and LayerNorm weight), through Keras' ``exclude_from_weight_decay``.
- The learning rate is :class:`LinearWarmupDecay`, a ``LearningRateSchedule`` of the update count (0-based),
  equal to ``run.schedule``.
- Gradient accumulation: Keras 3's ``gradient_accumulation_steps=N`` averages the gradients of N consecutive
  ``fit`` batches, which for N micro-batches is PyTorch's ``(loss / N).backward()`` per micro-batch; but it always
  waits for N batches (the run's last step of an epoch may have fewer) and calls a learning-rate schedule with the
  *micro-batch* count (N times too fast for a schedule written in updates). This optimizer takes the same argument
  and accumulates itself: each micro-batch adds ``g / k`` to the accumulators, ``k`` the micro-batches of the
  current update (:meth:`PyTorchAdamW.set_micro_batches`, N unless set), and the k-th applies the update; the
  schedule, the bias correction and :attr:`~PyTorchAdamW.iterations` count updates. The update is computed on
  every micro-batch and kept only on the k-th (``where``), the way Keras' JAX optimizer avoids ``cond``, so the
  same code runs under every Keras backend and inside XLA.

bf16 (``args.bf16``): the Keras ``mixed_bfloat16`` policy — bfloat16 compute over float32 variables; the models
keep softmax, LayerNorm and the losses in float32, and gradients and optimizer state are float32.

The loop, :func:`fit`, is one ``model.fit`` epoch over the run's micro-batches with the model's own loss (the batches
carry their labels):

- :class:`StepFeed` yields the micro-batches of ``run.steps()`` in the data layer's order (a ``tf.data`` generator
  whose every axis may vary, or a Python generator under other backends) and queues the ``Step`` they belong to;
- :class:`RunCallback` tells the optimizer each update's micro-batch count before its first micro-batch, resets
  Keras' metrics before every batch (its logged ``loss`` is then that batch's loss, not the epoch's running mean),
  and after the update's last micro-batch calls ``run.end_step`` with the mean micro-batch loss, the gradient norm
  and the learning rate — logging, evaluation through :class:`Predictor` and checkpoints happen there;
- an update and its ``end_step`` run under :func:`~distilbert_mf.training.trainer.hold_interrupts`: Ctrl-C is
  raised after the update is recorded, and :func:`fit` saves a checkpoint of it (``run.interrupted``);
- checkpoints (:func:`save_training_state`, no pickle): ``save_pretrained``, then one safetensors file with the
  moments under PyTorch's names and layout (``optimizer/<canonical name>/exp_avg``), the update and micro-batch
  counters, and the state of every dropout layer's ``SeedGenerator`` (``rng/<layer path>``), plus a JSON file of the
  hyper-parameters and decay mask; resuming (:func:`load_training_state`) gives the uninterrupted trajectory bit for
  bit. The dropout seed generators are seeded through ``keras.utils.set_random_seed(args.seed)``.
- XLA follows Keras' ``jit_compile="auto"`` (on with an accelerator); under XLA the batch widths are rounded up to
  multiples of :data:`WIDTH_MULTIPLE` (pad tokens, mask 0, labels -100: the same numbers), so the step compiles for
  a few widths only.

The optimizer and the loop run under ``KERAS_BACKEND=tensorflow`` (the default) and ``jax``, and past one device
under a ``keras.distribution`` (JAX backend) or inside a ``tf.distribute`` strategy's scope (TensorFlow backend:
``with strategy.scope(): train(args)``). There each replica's loss is weighted by its share of the batch's targets
(the model's ``compute_loss``), the optimizer sums the replicas' gradients before it clips them, and the model is
loaded into every replica's copy of its variables — the update of one device (docs/scaling.md).
"""

from __future__ import annotations

import collections
import contextlib
import itertools
import logging
import math
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import keras
import numpy as np
from keras import ops

from distilbert_mf._io import atomic_path
from distilbert_mf.tensorflow.distributed import replicas_in_sync, sum_over_replicas
from distilbert_mf.tensorflow.loading import canonical_variables
from distilbert_mf.tensorflow.modeling import NUMPY_DTYPES, TFDistilBertPreTrainedModel
from distilbert_mf.training.batching import TOKEN_LEVEL_TASKS, Step, widen_batch
from distilbert_mf.training.schedules import LinearSchedule
from distilbert_mf.training.state import read_json, write_json
from distilbert_mf.training.trainer import hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.training.trainer import TrainingRun, TrainOutput

__all__ = [
    "STATE_FILE",
    "STATE_META_FILE",
    "WIDTH_MULTIPLE",
    "LinearWarmupDecay",
    "Predictor",
    "PyTorchAdamW",
    "RunCallback",
    "StepFeed",
    "check_replicas",
    "create_optimizer",
    "fit",
    "load_model",
    "load_training_state",
    "save_training_state",
    "seed_generators",
    "update_sizes",
    "variable_names",
]

logger = logging.getLogger(__name__)

CLIP_EPSILON = 1e-6  # torch.nn.utils.clip_grad_norm_: max_norm / (total_norm + 1e-6)
STATE_FILE = "keras_training_state.safetensors"  # optimizer moments (PyTorch layout) + counters + dropout RNG
STATE_META_FILE = "keras_training_state.json"  # format, hyper-parameters, update count, the decay mask
STATE_FORMAT = 1
WIDTH_MULTIPLE = 8  # under XLA, batch widths are rounded up to this when the run does not choose
OUTPUT_NAMES = ("loss", "logits", "start_logits", "end_logits")


# ----------------------------------------------------------------------------------------------------------------------
# The learning-rate schedule
# ----------------------------------------------------------------------------------------------------------------------


@keras.saving.register_keras_serializable(package="distilbert_mf")
class LinearWarmupDecay(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up from 0 to ``learning_rate`` over ``warmup_steps`` updates, then linear decay to 0 at
    ``total_steps`` (never negative): :class:`distilbert_mf.training.schedules.LinearSchedule` as a Keras schedule
    of the update count (0-based; :class:`PyTorchAdamW` calls it with the number of updates already applied)."""

    def __init__(self, learning_rate: float, warmup_steps: int, total_steps: int) -> None:
        schedule = LinearSchedule(learning_rate, warmup_steps=warmup_steps, total_steps=total_steps)  # checks values
        self.learning_rate = float(schedule.learning_rate)
        self.warmup_steps = int(schedule.warmup_steps)
        self.total_steps = int(schedule.total_steps)

    @classmethod
    def from_schedule(cls, schedule: LinearSchedule) -> LinearWarmupDecay:
        if not isinstance(schedule, LinearSchedule):
            raise TypeError(f"schedule must be a LinearSchedule (TrainingPlan.schedule), got {type(schedule).__name__}")
        return cls(schedule.learning_rate, schedule.warmup_steps, schedule.total_steps)

    def __call__(self, step: Any) -> Any:
        step = ops.cast(step, "float32")
        rising = step / max(1, self.warmup_steps)
        falling = ops.maximum(0.0, (self.total_steps - step) / max(1, self.total_steps - self.warmup_steps))
        return self.learning_rate * ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self) -> dict[str, Any]:
        return {"learning_rate": self.learning_rate, "warmup_steps": self.warmup_steps, "total_steps": self.total_steps}


# ----------------------------------------------------------------------------------------------------------------------
# The optimizer
# ----------------------------------------------------------------------------------------------------------------------


def _dense(gradient: Any) -> Any:
    """A gradient as a dense tensor. TensorFlow gives an embedding lookup's gradient as ``tf.IndexedSlices``, one
    row per looked-up token (repeats included); Keras ops square such a gradient row by row, so a norm computed on
    it without summing the repeats first is wrong (Keras' own ``global_clipnorm`` computes it that way)."""
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        if isinstance(gradient, tf.IndexedSlices):
            return tf.convert_to_tensor(gradient)
    return ops.convert_to_tensor(gradient)


def _one_minus_power(beta: float, step: Any) -> Any:
    """``1 - beta**step`` to float32 precision (``-expm1(step * log(beta))``)."""
    return -ops.expm1(step * math.log(beta))


@keras.saving.register_keras_serializable(package="distilbert_mf")
class PyTorchAdamW(keras.optimizers.AdamW):
    """``keras.optimizers.AdamW`` with ``torch.optim.AdamW``'s update and ``clip_grad_norm_``'s clipping.

    Args:
        learning_rate: a float, a ``LearningRateSchedule`` (called with the update count) or a callable.
        weight_decay / beta_1 / beta_2 / epsilon: PyTorch's defaults (0.01, 0.9, 0.999, 1e-8). Exclude variables
            from decay with ``exclude_from_weight_decay`` before the optimizer is built.
        global_clipnorm: clip the global gradient norm to this, as ``clip_grad_norm_`` does (None: no clipping).
            The norm before clipping is :attr:`grad_norm` after every update either way.
        gradient_accumulation_steps: micro-batches per update (None or 1: every batch is an update); see the
            module docstring for how this differs from Keras' own argument of that name.
        **kwargs: the other ``keras.optimizers.Optimizer`` arguments (``name``, ``loss_scale_factor``, ...).

    Raises:
        ValueError: ``amsgrad``, ``use_ema``, ``clipnorm`` or ``clipvalue`` (not PyTorch's AdamW), or a bad value.
    """

    def __init__(
        self,
        learning_rate: float | keras.optimizers.schedules.LearningRateSchedule = 1e-3,
        weight_decay: float = 0.01,
        beta_1: float = 0.9,
        beta_2: float = 0.999,
        epsilon: float = 1e-8,
        global_clipnorm: float | None = None,
        gradient_accumulation_steps: int | None = None,
        name: str = "pytorch_adamw",
        **kwargs: Any,
    ) -> None:
        for option in ("amsgrad", "use_ema", "clipnorm", "clipvalue"):
            if kwargs.get(option):
                raise ValueError(
                    f"PyTorchAdamW does not support {option}={kwargs[option]!r}; it applies torch.optim.AdamW's "
                    "rule with global-norm clipping (global_clipnorm)"
                )
        for label, value, low, high in (("beta_1", beta_1, 0.0, 1.0), ("beta_2", beta_2, 0.0, 1.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not low < value < high:
                raise ValueError(f"{label} must be a number in (0, 1), got {value!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon >= 0:
            raise ValueError(f"epsilon must be a number >= 0, got {epsilon!r}")
        if isinstance(weight_decay, bool) or not isinstance(weight_decay, (int, float)) or not weight_decay >= 0:
            raise ValueError(f"weight_decay must be a number >= 0, got {weight_decay!r}")
        if global_clipnorm is not None and (
            isinstance(global_clipnorm, bool) or not isinstance(global_clipnorm, (int, float)) or global_clipnorm <= 0
        ):
            raise ValueError(f"global_clipnorm must be a number > 0 or None (no clipping), got {global_clipnorm!r}")
        steps = gradient_accumulation_steps
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1):
            raise ValueError(f"gradient_accumulation_steps must be an integer >= 1 or None, got {steps!r}")
        super().__init__(
            learning_rate=learning_rate,
            weight_decay=float(weight_decay),
            beta_1=float(beta_1),
            beta_2=float(beta_2),
            epsilon=float(epsilon),
            global_clipnorm=None if global_clipnorm is None else float(global_clipnorm),
            name=name,
            **kwargs,
        )
        self.accumulation_steps = int(steps) if steps and steps > 1 else None
        self._micro_batches = self.accumulation_steps or 1  # mirrors the target variable (no read back)
        self._apply_now: Any = None  # while an update is traced: keep its new values (None: always)
        self._updates = self.add_variable((), dtype="int", name="update_step")  # updates applied
        self._grad_norm = self.add_variable((), dtype="float32", name="grad_norm")  # of the last update

    @property
    def iterations(self) -> Any:
        """Updates applied (with accumulation, not micro-batches): the schedule and the bias correction use it."""
        return self._updates

    @property
    def grad_norm(self) -> Any:
        """The global gradient norm of the last update, before clipping (``clip_grad_norm_``'s return value)."""
        return self._grad_norm

    def build(self, var_list: Sequence[Any]) -> None:
        if self.built:
            return
        super().build(var_list)
        if self.accumulation_steps:
            self._accumulators = self.add_optimizer_variables(var_list, "gradient_sum")
            self._micro = self.add_variable((), dtype="int", name="micro_batches_done")
            # the initial value as the initializer: Keras may build the optimizer where an assign would not stick
            self._target = self.add_variable(
                (),
                initializer=keras.initializers.Constant(self.accumulation_steps),
                dtype="int",
                name="micro_batches_per_update",
            )

    @property
    def micro_batches(self) -> int:
        """Micro-batches of the update being accumulated (1 without accumulation)."""
        return self._micro_batches

    def set_micro_batches(self, count: int) -> None:
        """The number of micro-batches of the update being accumulated (1..``gradient_accumulation_steps``): the
        run's last update of an epoch may have fewer. Call before that update's first micro-batch."""
        if not self.accumulation_steps:
            if count != 1:
                raise ValueError(
                    f"this optimizer applies every batch (no gradient accumulation), got {count} micro-batches"
                )
            return
        if (
            isinstance(count, bool)
            or not isinstance(count, (int, np.integer))
            or not 1 <= count <= self.accumulation_steps
        ):
            raise ValueError(f"micro-batches per update must be in [1, {self.accumulation_steps}], got {count!r}")
        if not self.built:
            raise ValueError("build the optimizer (optimizer.build(variables)) before setting its micro-batches")
        if int(count) != self._micro_batches:
            self._target.assign(int(count))
            self._micro_batches = int(count)

    def reset_accumulation(self) -> None:
        """Forget the micro-batches of an unfinished update (after an interruption, or when restoring a state);
        the next update has ``gradient_accumulation_steps`` micro-batches unless :meth:`set_micro_batches` says
        otherwise."""
        if self.accumulation_steps and self.built:
            for accumulator in self._accumulators:
                accumulator.assign(ops.zeros(accumulator.shape, accumulator.dtype))
            self._micro.assign(0)
            self._target.assign(self.accumulation_steps)
            self._micro_batches = self.accumulation_steps

    def _get_current_learning_rate(self) -> Any:
        if isinstance(self._learning_rate, keras.optimizers.schedules.LearningRateSchedule):
            return self._learning_rate(self._updates)
        return super()._get_current_learning_rate()

    def _apply_weight_decay(self, variables: Any) -> None:
        """Decay is part of :meth:`update_step` (PyTorch's ``p *= 1 - lr * wd`` before the Adam step)."""

    def _keep(self, new: Any, old: Any) -> Any:
        return new if self._apply_now is None else ops.where(self._apply_now, new, old)

    def _backend_apply_gradients(self, grads: Sequence[Any], trainable_variables: Sequence[Any]) -> None:
        # under tf.distribute the replicas' gradients are summed first (Keras' TensorFlow optimizer would sum them
        # only in its update step, after this clipping): clipping, accumulation and the update see the global ones
        grads = sum_over_replicas([_dense(g) for g in grads])
        if not self.accumulation_steps:
            self._update(grads, trainable_variables)
            return
        accumulators = [self._accumulators[self._get_variable_index(v)] for v in trainable_variables]
        target = self._target.value
        done = self._micro.value + 1
        last = ops.greater_equal(done, target)
        scale = 1.0 / ops.cast(target, "float32")
        sums = [acc.value + ops.cast(g, acc.dtype) * ops.cast(scale, acc.dtype) for acc, g in zip(accumulators, grads)]
        self._apply_now = last
        try:
            self._update(sums, trainable_variables)
        finally:
            self._apply_now = None
        for acc, total in zip(accumulators, sums):
            acc.assign(ops.where(last, ops.zeros_like(total), total))
        self._micro.assign(ops.where(last, ops.zeros_like(done), done))

    def _update(self, grads: list[Any], trainable_variables: Sequence[Any]) -> None:
        """Clip (PyTorch's formula), then :meth:`update_step` every variable, then count the update."""
        norm = ops.sqrt(ops.sum(ops.stack([ops.sum(ops.square(ops.cast(g, "float32"))) for g in grads])))
        if self.global_clipnorm:
            factor = ops.minimum(self.global_clipnorm / (norm + CLIP_EPSILON), 1.0)
            grads = [g * ops.cast(factor, g.dtype) for g in grads]
        self._backend_update_step(grads, trainable_variables, self.learning_rate)
        self._grad_norm.assign(self._keep(norm, ops.convert_to_tensor(self._grad_norm)))
        updates = ops.convert_to_tensor(self._updates)
        self._updates.assign(self._keep(updates + 1, updates))

    def _backend_update_step(
        self, grads: Sequence[Any], trainable_variables: Sequence[Any], learning_rate: Any
    ) -> None:
        """:meth:`update_step` of every variable. Under a ``tf.distribute`` strategy of several replicas the
        gradients arrive summed over the replicas (:meth:`_backend_apply_gradients`) and every replica computes the
        same update: each applies it to its own copy of the variables (Keras' variables are mirrored with
        aggregation ``"none"``), without the TensorFlow optimizer's all-reduce, which would sum them again."""
        if replicas_in_sync() == 1:
            super()._backend_update_step(grads, trainable_variables, learning_rate)
            return
        for gradient, variable in zip(grads, trainable_variables):
            self.update_step(gradient, variable, learning_rate)

    def update_step(self, gradient: Any, variable: Any, learning_rate: Any) -> None:
        """PyTorch's AdamW step of one variable (decay, moments, bias-corrected step)."""
        dtype = variable.dtype
        lr = ops.cast(learning_rate, dtype)
        g = ops.cast(gradient, dtype)
        t = ops.cast(self._updates + 1, "float32")
        index = self._get_variable_index(variable)
        m_slot, v_slot = self._momentums[index], self._velocities[index]
        m, v, p0 = (ops.convert_to_tensor(x) for x in (m_slot, v_slot, variable))  # values (JAX: no Variables)
        p = p0
        if self.weight_decay and self._use_weight_decay(variable):
            p = p * (1.0 - lr * ops.cast(self.weight_decay, dtype))
        new_m = m + (g - m) * (1.0 - self.beta_1)
        new_v = v * self.beta_2 + g * g * (1.0 - self.beta_2)
        bias1 = ops.cast(_one_minus_power(self.beta_1, t), dtype)
        bias2 = ops.cast(_one_minus_power(self.beta_2, t), dtype)
        denom = ops.sqrt(new_v) / ops.sqrt(bias2) + ops.cast(self.epsilon, dtype)
        new_p = p - (lr / bias1) * (new_m / denom)
        self.assign(m_slot, self._keep(new_m, m))
        self.assign(v_slot, self._keep(new_v, v))
        self.assign(variable, self._keep(new_p, p0))

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for unused in ("amsgrad", "use_ema", "ema_momentum", "ema_overwrite_frequency", "clipnorm", "clipvalue"):
            config.pop(unused, None)
        config["gradient_accumulation_steps"] = self.accumulation_steps
        return config


# ----------------------------------------------------------------------------------------------------------------------
# The run's optimizer
# ----------------------------------------------------------------------------------------------------------------------


def variable_names(model: TFDistilBertPreTrainedModel) -> dict[int, str]:
    """``id(variable)`` -> canonical checkpoint name for every trainable variable of ``model``.

    Raises:
        ValueError: a trainable variable has no checkpoint name (a layer added outside the model classes).
    """
    if not isinstance(model, TFDistilBertPreTrainedModel):
        raise TypeError(f"model must be a distilbert_mf Keras model, got {type(model).__name__}")
    names: dict[int, str] = {}
    for name, (variable, _) in canonical_variables(model).items():
        names.setdefault(id(variable), name)  # a tied weight keeps its first name (the word embeddings)
    unnamed = [v.path for v in model.trainable_variables if id(v) not in names]
    if unnamed:
        raise ValueError(f"trainable variables without a checkpoint name: {unnamed[:5]}; train only the model's own")
    return names


def create_optimizer(model: TFDistilBertPreTrainedModel, run: TrainingRun) -> PyTorchAdamW:
    """:class:`PyTorchAdamW` for ``model`` with the run's hyper-parameters, built on its trainable variables.

    Reads ``run.args`` (``adam_beta1``, ``adam_beta2``, ``adam_epsilon``, ``weight_decay``, ``max_grad_norm`` —
    None or <= 0 turns clipping off — and ``gradient_accumulation_steps``), ``run.schedule`` and ``run.decays``."""
    names = variable_names(model)
    args = run.args
    max_norm = args.max_grad_norm
    optimizer = PyTorchAdamW(
        learning_rate=LinearWarmupDecay.from_schedule(run.schedule),
        weight_decay=float(args.weight_decay),
        beta_1=float(args.adam_beta1),
        beta_2=float(args.adam_beta2),
        epsilon=float(args.adam_epsilon),
        global_clipnorm=float(max_norm) if max_norm is not None and max_norm > 0 else None,
        gradient_accumulation_steps=int(getattr(args, "gradient_accumulation_steps", 1) or 1),
    )
    trainable = list(model.trainable_variables)
    optimizer.exclude_from_weight_decay(var_list=[v for v in trainable if not run.decays(names[id(v)])])
    optimizer.build(trainable)
    return optimizer


# ----------------------------------------------------------------------------------------------------------------------
# Training state: optimizer + dropout RNG as safetensors + JSON (no pickle)
# ----------------------------------------------------------------------------------------------------------------------


def seed_generators(model: keras.layers.Layer) -> dict[str, Any]:
    """Attribute path -> ``keras.random.SeedGenerator`` of every random layer of ``model`` (the dropout layers:
    ``distilbert.transformer.layer.0.attention.dropout.seed_generator`` ...), in a fixed order.

    Raises:
        RuntimeError: ``model`` holds a seed generator this walk does not reach (its state would not be saved)."""
    found: dict[str, Any] = {}
    seen: set[int] = set()

    def visit(value: Any, path: str) -> None:
        if id(value) in seen:
            return
        if isinstance(value, keras.random.SeedGenerator):
            seen.add(id(value))
            found[path] = value
        elif isinstance(value, keras.layers.Layer):
            seen.add(id(value))
            for name, item in vars(value).items():
                if not name.startswith("_"):
                    visit(item, f"{path}.{name}" if path else name)
        elif isinstance(value, (list, tuple)):
            for index, item in enumerate(value):
                visit(item, f"{path}.{index}")

    visit(model, "")
    reached = {id(generator.state) for generator in found.values()}
    missed = [v.path for v in model.non_trainable_variables if "seed_generator" in v.path and id(v) not in reached]
    if missed:
        raise RuntimeError(f"seed generators outside the model's layer attributes: {missed[:5]}")
    return found


def _to_numpy(value: Any) -> np.ndarray:
    return np.asarray(ops.convert_to_numpy(value))


def _moment_slots(model: TFDistilBertPreTrainedModel, optimizer: PyTorchAdamW) -> dict[str, tuple[Any, Any, bool]]:
    """Canonical name -> (first moment, second moment, stored transposed) for every variable the optimizer trains."""
    if not optimizer.built:
        raise ValueError("the optimizer is not built; make it with create_optimizer(model, run)")
    transposed = {id(variable): flag for variable, flag in canonical_variables(model).values()}
    names = variable_names(model)
    slots = {}
    for variable in optimizer._trainable_variables:
        if id(variable) not in names:
            raise ValueError(f"the optimizer trains {variable.path}, which is not a variable of this model")
        index = optimizer._get_variable_index(variable)
        slots[names[id(variable)]] = (
            optimizer._momentums[index],
            optimizer._velocities[index],
            transposed[id(variable)],
        )
    return slots


def _excluded_from_decay(model: TFDistilBertPreTrainedModel, optimizer: PyTorchAdamW) -> list[str]:
    names = variable_names(model)
    return sorted(names[id(v)] for v in optimizer._trainable_variables if not optimizer._use_weight_decay(v))


def save_training_state(
    folder: str | os.PathLike[str],
    model: TFDistilBertPreTrainedModel,
    optimizer: PyTorchAdamW,
    rng: Mapping[str, np.ndarray] | None = None,
) -> None:
    """Write ``model`` (``save_pretrained``), the optimizer state and the dropout RNG state into ``folder``.

    :data:`STATE_FILE` holds ``optimizer/<canonical name>/exp_avg`` and ``.../exp_avg_sq`` in PyTorch's layout (the
    names and layout of :mod:`distilbert_mf.torch.training`'s file), ``optimizer/update_step`` and
    ``optimizer/iterations``, and ``rng/<layer path>`` for every seed generator (``rng``: those states, default the
    model's current ones); :data:`STATE_META_FILE` the hyper-parameters and the decay mask. A checkpoint is taken
    between updates, so the accumulators of gradient accumulation are not part of it. Files appear atomically."""
    from safetensors.numpy import save_file

    if not isinstance(optimizer, PyTorchAdamW):
        raise TypeError(f"optimizer must be a PyTorchAdamW (create_optimizer), got {type(optimizer).__name__}")
    folder = Path(folder)
    model.save_pretrained(folder)
    arrays: dict[str, np.ndarray] = {}
    for name, (m, v, transposed) in _moment_slots(model, optimizer).items():
        for key, slot in (("exp_avg", m), ("exp_avg_sq", v)):
            value = _to_numpy(slot)
            arrays[f"optimizer/{name}/{key}"] = np.ascontiguousarray(value.T if transposed else value)
    arrays["optimizer/update_step"] = np.asarray(_to_numpy(optimizer.iterations), dtype=np.int64)
    arrays["optimizer/iterations"] = np.asarray(_to_numpy(optimizer._iterations), dtype=np.int64)
    states = rng if rng is not None else {path: _to_numpy(g.state) for path, g in seed_generators(model).items()}
    for path, value in states.items():
        arrays[f"rng/{path}"] = np.array(value, order="C")
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(arrays, str(tmp), metadata={"format": "distilbert_mf.tensorflow.training"})
    config = optimizer.get_config()
    meta = {
        "format": STATE_FORMAT,
        "framework": "tf",
        "optimizer": type(optimizer).__name__,
        "keras_version": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "update_step": int(arrays["optimizer/update_step"]),
        "hyper_parameters": {
            key: config[key]
            for key in ("weight_decay", "beta_1", "beta_2", "epsilon", "global_clipnorm", "gradient_accumulation_steps")
        },
        "learning_rate": keras.saving.serialize_keras_object(optimizer._learning_rate)
        if isinstance(optimizer._learning_rate, keras.optimizers.schedules.LearningRateSchedule)
        else float(_to_numpy(optimizer.learning_rate)),
        "excluded_from_weight_decay": _excluded_from_decay(model, optimizer),
    }
    write_json(folder / STATE_META_FILE, meta)


def load_training_state(
    folder: str | os.PathLike[str], model: TFDistilBertPreTrainedModel, optimizer: PyTorchAdamW
) -> dict[str, np.ndarray]:
    """Restore what :func:`save_training_state` wrote: the optimizer's moments and counters (``optimizer`` built
    for ``model`` by :func:`create_optimizer`) and the model's dropout seed generators; returns those RNG states.
    The weights come with ``from_pretrained(folder)``.

    Raises:
        FileNotFoundError: ``folder`` lacks the files. KeyError / ValueError: they belong to another model, head,
        optimizer or decay mask (names, shapes or dtypes differ).
    """
    from safetensors.numpy import load_file

    folder = Path(folder)
    for name in (STATE_FILE, STATE_META_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} holds no Keras training state ({name} is missing)")
    meta = read_json(folder / STATE_META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("framework") != "tf":
        raise ValueError(f"{folder / STATE_META_FILE}: not a Keras training state of format {STATE_FORMAT}")
    if meta.get("optimizer") != type(optimizer).__name__:
        raise ValueError(f"{folder} holds {meta.get('optimizer')} state, not {type(optimizer).__name__} state")
    arrays = load_file(folder / STATE_FILE)
    slots = _moment_slots(model, optimizer)
    expected = {f"optimizer/{name}/{key}" for name in slots for key in ("exp_avg", "exp_avg_sq")}
    stored = {key for key in arrays if key.startswith("optimizer/") and key.count("/") >= 2}
    missing, unexpected = sorted(expected - stored), sorted(stored - expected)
    if missing or unexpected:
        raise KeyError(
            f"{folder}: the optimizer state does not fit this model: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    excluded = _excluded_from_decay(model, optimizer)
    if meta.get("excluded_from_weight_decay") != excluded:
        raise ValueError(f"{folder}: the state was saved with another weight-decay mask than this optimizer's")
    generators = seed_generators(model)
    rng = {key[len("rng/") :]: value for key, value in arrays.items() if key.startswith("rng/")}
    if set(rng) != set(generators):
        raise KeyError(
            f"{folder}: the RNG state does not fit this model: missing {sorted(set(generators) - set(rng))[:5]}, "
            f"unexpected {sorted(set(rng) - set(generators))[:5]}"
        )
    for name, (m, v, transposed) in slots.items():
        for key, slot in (("exp_avg", m), ("exp_avg_sq", v)):
            value = arrays[f"optimizer/{name}/{key}"]
            value = value.T if transposed else value
            if tuple(value.shape) != tuple(slot.shape):
                raise ValueError(
                    f"{folder}: optimizer/{name}/{key} has shape {list(value.T.shape if transposed else value.shape)} "
                    f"but this model's {name} has {list(slot.shape[::-1] if transposed else slot.shape)}"
                )
            slot.assign(value.astype(NUMPY_DTYPES[keras.backend.standardize_dtype(slot.dtype)]))
    for path, generator in generators.items():
        value = rng[path]
        dtype = keras.backend.standardize_dtype(generator.state.dtype)
        if tuple(value.shape) != tuple(generator.state.shape) or str(value.dtype) != dtype:
            raise ValueError(
                f"{folder}: rng/{path} is {value.dtype}{list(value.shape)} but this model's seed generator holds "
                f"{dtype}{list(generator.state.shape)} (saved under another Keras backend?)"
            )
        generator.state.assign(value)
    optimizer.iterations.assign(int(arrays["optimizer/update_step"]))
    optimizer._iterations.assign(int(arrays["optimizer/iterations"]))
    optimizer.reset_accumulation()
    return rng


# ----------------------------------------------------------------------------------------------------------------------
# The data: micro-batches of run.steps() for model.fit, widened to a few widths for XLA
# ----------------------------------------------------------------------------------------------------------------------


def update_sizes(run: TrainingRun) -> list[int]:
    """The micro-batches of every update the run has left, in order (``gradient_accumulation_steps``, fewer for
    the last update of an epoch): what ``run.steps()`` will yield, known before its batches are made."""
    plan = run.plan
    per_epoch, accumulation = plan.batches_per_epoch, plan.gradient_accumulation_steps
    index = run.start.batch_index
    sizes = []
    for _ in range(plan.max_steps - run.state.global_step):
        count = min(accumulation, per_epoch - index)
        sizes.append(count)
        index = (index + count) % per_epoch
    return sizes


def _model_batch(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """int64 ids and labels as they are; float targets as float32."""
    out = {}
    for key, value in batch.items():
        array = np.asarray(value)
        out[key] = array.astype(np.float32) if array.dtype.kind == "f" else array
    return out


class StepFeed:
    """The micro-batches of ``run.steps()`` in order, for ``model.fit``; the :class:`Step` objects they came from
    queue up in :attr:`steps` (the generator may run ahead of training: tf.data prefetches).

    Each micro-batch is made once, by its index, and kept until :meth:`trained` says it was trained; iterating the
    feed again starts over from micro-batch 0 and ends an older iterator: Keras under ``tf.distribute`` reads the
    first batch of a fresh iterator (to build the model) before it starts the epoch on another one.

    Args:
        run: the run (its steps, sizes, data).
        width_multiple: round every batch's width up to a multiple of this (None: as the data layer made them).
    """

    def __init__(self, run: TrainingRun, *, width_multiple: int | None = None) -> None:
        self.run = run
        self.sizes = update_sizes(run)
        self.width_multiple = width_multiple
        self.steps: collections.deque[Step] = collections.deque()
        self._iterator = iter(run.steps())
        self._first: Step | None = next(self._iterator, None)
        if self._first is None or not self.sizes:
            raise ValueError(f"the run has no update left ({run.state.global_step} of {run.plan.max_steps} done)")
        self._source = self._micro_batches(self._first)
        self._made: dict[int, dict[str, np.ndarray]] = {}  # index -> micro-batch, until trained
        self._count = 0  # micro-batches made
        self._reads = 0  # iterators started (only the newest yields)
        self._lock = threading.Lock()  # tf.data calls the generator from its own threads

    def __len__(self) -> int:
        """Micro-batches still to come from the start (the ``steps_per_epoch`` of the one ``fit`` epoch)."""
        return sum(self.sizes)

    def widen(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return widen_batch(
            batch,
            self.width_multiple,
            pad_token_id=self.run.train_data.pad_token_id,
            token_level_labels=self.run.train_data.task in TOKEN_LEVEL_TASKS,
            max_width=self.run.config.max_position_embeddings,
        )

    def _micro_batches(self, first: Step) -> Iterator[dict[str, np.ndarray]]:
        for step in itertools.chain([first], self._iterator):
            self.steps.append(step)
            for batch in step.batches:
                yield _model_batch(self.widen(batch))

    def batch(self, index: int) -> dict[str, np.ndarray]:
        """Micro-batch ``index`` (0: the first of the run's remaining updates), made when first asked for."""
        with self._lock:
            while self._count <= index:
                self._made[self._count] = next(self._source)
                self._count += 1
            if index not in self._made:
                raise RuntimeError(f"micro-batch {index} was trained already; a StepFeed does not go back")
            return self._made[index]

    def trained(self, index: int) -> None:
        """Forget the micro-batches up to ``index``: they were trained."""
        with self._lock:
            for done in [i for i in self._made if i <= index]:
                del self._made[done]

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        with self._lock:
            self._reads += 1
            read = self._reads
        for index in range(len(self)):
            if read != self._reads:
                return  # a newer iterator took over
            yield self.batch(index)

    def dataset(self) -> Any:
        """What ``model.fit`` takes: under TensorFlow a ``tf.data.Dataset`` whose every axis may vary (Keras would
        fix the axes its first two batches share), elsewhere the generator itself."""
        if keras.backend.backend() != "tensorflow":
            return ((batch,) for batch in self)  # Keras takes a generator of (inputs,) tuples
        import tensorflow as tf

        sample = _model_batch(self._first.batches[0])  # type: ignore[union-attr]
        signature = {}
        for key, value in sample.items():
            shape = [None] * value.ndim
            if value.ndim == 3:  # multiple choice (batch, choices, width): every example has the same choices
                shape[1] = value.shape[1]
            signature[key] = tf.TensorSpec(shape, tf.as_dtype(value.dtype))
        data = tf.data.Dataset.from_generator(lambda: iter(self), output_signature=signature)
        return data.apply(tf.data.experimental.assert_cardinality(len(self))).prefetch(2)


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation forward, the run's callback, fit
# ----------------------------------------------------------------------------------------------------------------------


class Predictor:
    """``predict(batch)`` for ``run.end_step`` / ``run.finish``: a numpy batch -> the model's outputs (``loss``,
    ``logits`` / ``start_logits`` + ``end_logits``) as float32 numpy at the batch's own width, dropout off.

    Under TensorFlow the forward is a ``tf.function`` (XLA with ``jit_compile``); widened like the training batches."""

    def __init__(
        self, model: TFDistilBertPreTrainedModel, *, widen: Callable[[Any], dict[str, np.ndarray]], jit_compile: bool
    ) -> None:
        self.model = model
        self.widen = widen

        def forward(batch: Mapping[str, Any]) -> dict[str, Any]:
            out = model(batch, training=False)
            return {name: out[name] for name in OUTPUT_NAMES if out.get(name) is not None}

        if keras.backend.backend() == "tensorflow":
            import tensorflow as tf

            self._forward = tf.function(forward, jit_compile=jit_compile, reduce_retracing=True)
        else:
            self._forward = forward

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        width = np.asarray(batch["input_ids"]).shape[-1]
        out = self._forward(_model_batch(self.widen(batch)))
        result = {}
        for name, value in out.items():
            array = _to_numpy(ops.cast(value, "float32"))
            per_token = name in ("start_logits", "end_logits") or (name == "logits" and array.ndim == 3)
            if per_token and array.shape[1] != width:
                array = array[:, :width]  # (batch, width[, labels]): the widened tail dropped
            result[name] = array
        return result


class RunCallback(keras.callbacks.Callback):
    """Connects ``model.fit`` to the run: before an update's first micro-batch it tells the optimizer how many
    micro-batches the update has and holds Ctrl-C (:func:`~distilbert_mf.training.trainer.hold_interrupts`); after
    its last one it reports the update to ``run.end_step`` (the mean micro-batch loss, the gradient norm, the
    learning rate) and lets a held Ctrl-C through. The loss of every micro-batch alone is read from ``fit``'s logs
    (the metrics are reset before each batch; Keras would report the running mean of the epoch)."""

    def __init__(
        self,
        run: TrainingRun,
        feed: StepFeed,
        optimizer: PyTorchAdamW,
        *,
        save: Callable[[Path], None],
        predict: Callable[[Mapping[str, np.ndarray]], dict[str, np.ndarray]],
    ) -> None:
        super().__init__()
        self.run = run
        self.feed = feed
        self.optimizer = optimizer
        self.save = save
        self.predict = predict
        self._slots = [(update, index) for update, size in enumerate(feed.sizes) for index in range(size)]
        self._losses: list[float] = []
        self._held: contextlib.AbstractContextManager[None] | None = None
        self.reported = 0  # updates reported to the run by this callback

    def _sync(self) -> None:
        """Under JAX, ``fit`` holds the variables' values outside the variables between its steps: write them back,
        so that this callback reads and sets the live ones (the next step reads them again)."""
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()

    def on_train_batch_begin(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        self._sync()
        update, index = self._slots[batch]
        if index == 0:
            self._held = hold_interrupts()
            self._held.__enter__()
            if self.optimizer.accumulation_steps:
                self.optimizer.set_micro_batches(self.feed.sizes[update])
            self._losses = []
        self.model.reset_metrics()

    def on_train_batch_end(self, batch: int, logs: Mapping[str, Any] | None = None) -> None:
        update, index = self._slots[batch]
        self._losses.append(float(np.asarray((logs or {})["loss"])))
        self.feed.trained(batch)
        if index + 1 < self.feed.sizes[update]:
            return
        self._sync()
        step = self.feed.steps.popleft()
        if len(step.batches) != len(self._losses):
            raise RuntimeError(
                f"update {step.global_step} has {len(step.batches)} micro-batches but fit ran {len(self._losses)}"
            )
        held, self._held = self._held, None
        try:
            self.run.end_step(
                step,
                loss=float(np.mean(self._losses)) if len(self._losses) > 1 else self._losses[0],
                grad_norm=float(_to_numpy(self.optimizer.grad_norm)),
                learning_rate=self.run.schedule(step.global_step - 1),
                save=self.save,
                predict=self.predict,
            )
            self.reported += 1
        finally:
            if held is not None:
                held.__exit__(None, None, None)  # raises KeyboardInterrupt if Ctrl-C came during the update

    def release(self) -> None:
        """Give Ctrl-C back (after ``fit`` stopped in the middle of an update)."""
        held, self._held = self._held, None
        if held is not None:
            with contextlib.suppress(KeyboardInterrupt):
                held.__exit__(None, None, None)


def load_model(run: TrainingRun) -> TFDistilBertPreTrainedModel:
    """The run's model (head class, config, starting weights), its dropout seeded with ``args.seed``; under the
    ``mixed_bfloat16`` policy when ``args.bf16``."""
    keras.utils.set_random_seed(run.args.seed)  # the seed generators of the dropout layers draw from it
    return run.load_model(dtype="mixed_bfloat16" if run.args.bf16 else None)


def check_replicas(run: TrainingRun, replicas: int) -> None:
    """``ValueError`` when the run's batches do not split evenly over ``replicas`` ``tf.distribute`` replicas: the
    batch of every ``fit`` step (``per_device_train_batch_size`` rows, as with ``keras.distribution``), and a kept
    last batch of an epoch."""
    batch, rows = run.global_batch_size, len(run.train_data)
    if batch % replicas:
        raise ValueError(
            f"per_device_train_batch_size={batch} is the global batch of every step, which the tf.distribute "
            f"strategy splits over its {replicas} replicas; {replicas} does not divide it: use a multiple of "
            f"{replicas}"
        )
    remainder = rows % batch
    if run.loader.last_batch == "keep" and remainder % replicas:
        raise ValueError(
            f"the last batch of an epoch has {remainder} rows ({rows} rows, per_device_train_batch_size={batch}), "
            f"which do not split evenly over the strategy's {replicas} replicas: set dataloader_drop_last=True "
            "(--dataloader-drop-last) or max_train_samples to a multiple of the batch"
        )


def fit(run: TrainingRun, *, jit_compile: bool | str = "auto") -> TrainOutput:
    """Train ``run`` with the Keras model: one ``model.fit`` epoch over the run's micro-batches, the model's own
    loss, :class:`PyTorchAdamW`; logging, evaluation and checkpoints through ``run.end_step`` (:class:`RunCallback`);
    Ctrl-C saves a checkpoint of the last completed update (``run.interrupted``).

    ``jit_compile``: XLA for the train and evaluation steps, as ``model.compile`` takes it (``"auto"``, Keras'
    default: XLA where there is an accelerator, not on a CPU-only machine, where compiling costs more than it saves
    on short runs). Under XLA the batch widths are rounded up to multiples of :data:`WIDTH_MULTIPLE` (unless the run
    pads to a multiple itself), which bounds the compilations.

    Called in a ``tf.distribute`` strategy's scope (``with strategy.scope(): train(args)``, TensorFlow backend),
    the model and optimizer are built in it and every batch is split over its replicas (:func:`check_replicas`
    first); the losses, gradient norms and weights are those of one device (docs/scaling.md)."""
    replicas = replicas_in_sync()
    if replicas > 1:
        check_replicas(run, replicas)
        logger.info("training over the %d replicas of the tf.distribute strategy", replicas)
    model = load_model(run)
    optimizer = create_optimizer(model, run)
    if run.resume_dir is not None:
        load_training_state(run.resume_dir, model, optimizer)
        logger.info("resumed the optimizer and RNG state from %s", run.resume_dir)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    jit = bool(model.jit_compile)
    feed = StepFeed(run, width_multiple=WIDTH_MULTIPLE if jit and not run.args.pad_to_multiple_of else None)
    predict = Predictor(model, widen=feed.widen, jit_compile=jit)

    def save(folder: Path) -> None:
        save_training_state(folder, model, optimizer)

    callback = RunCallback(run, feed, optimizer, save=save, predict=predict)
    try:
        model.fit(feed.dataset(), epochs=1, steps_per_epoch=len(feed), callbacks=[callback], verbose=0, shuffle=False)
    except KeyboardInterrupt:
        callback.release()
        if keras.backend.backend() == "jax":
            model.jax_state_sync()
        optimizer.reset_accumulation()
        applied = int(_to_numpy(optimizer.iterations))
        if applied == run.state.global_step:
            run.interrupted(save)
        else:  # a second Ctrl-C stopped an update the run has not recorded: the weights are ahead of its state
            logger.warning(
                "interrupted after update %d was applied but before it was recorded: not saving; the last "
                "checkpoint in %s is complete",
                applied,
                run.output_dir,
            )
        raise
    finally:
        callback.release()  # any other error in the middle of an update: Ctrl-C works again
    return run.finish(save_model=model.save_pretrained, predict=predict)
