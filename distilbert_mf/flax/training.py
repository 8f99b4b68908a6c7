"""Fine-tuning the Flax NNX models: ``nnx.Optimizer`` over optax, an ``nnx.jit`` train step, the run loop.

The update rule is PyTorch's ``torch.optim.AdamW`` after ``clip_grad_norm_`` (what transformers' Trainer runs), as
an optax chain — ``optax.adamw``'s own composition with one part replaced::

    optax.chain(
        optax.clip_by_global_norm(max_grad_norm),
        scale_by_adam(b1, b2, eps),                    # optax.scale_by_adam with PyTorch's bias correction
        optax.add_decayed_weights(weight_decay, mask),
        optax.scale_by_learning_rate(schedule),
    )

- Adam as PyTorch has it: epsilon added to ``sqrt(v_hat)`` after the bias correction, and decoupled weight decay
  ``p -= lr * wd * p`` scaled by the same scheduled learning rate.
- **the bias correction** ``1 - b**t``: ``optax.scale_by_adam`` computes it in float32 from ``b`` rounded to float32
  (0.999 becomes 0.99900001), which is 1.3e-5 to 2e-5 relative off for ``b2 = 0.999`` at every step — a systematic
  bias of the step size that PyTorch, computing it in Python floats, does not have. Over 200 updates of the tiny
  parity run it moved the per-step losses 1.2e-4 relative away from PyTorch's (beyond the 1e-4 the parity test
  allows); :func:`scale_by_adam` computes ``-expm1(t * log(b))`` with ``log(b)`` in double precision on the host
  (1e-7 relative), and the trajectories agree to 8e-6.
- the decay mask is ``run.decays(canonical name)`` for every ``nnx.Param`` (the NNX path mapped to the checkpoint
  name with :func:`distilbert_mf.flax.loading.canonical_key`): biases and LayerNorm weights are not decayed.
- the schedule is ``run.schedule`` per update: optax counts updates from 0, as :class:`LinearSchedule` does.
- clipping: ``g * max_norm / norm`` when ``norm > max_norm``; PyTorch divides by ``norm + 1e-6`` instead (a
  relative difference of ``1e-6 / norm`` in the clipped gradient, which Adam's ``m / sqrt(v)`` all but cancels:
  measured 2e-6 on the 200-update parity losses). The reported ``grad_norm`` is the global norm before clipping, as
  ``clip_grad_norm_`` returns it.

Gradient accumulation mirrors PyTorch's ``(loss / n).backward()`` per micro-batch: each micro-batch's gradient is
that of ``loss / n`` (``n`` = the step's micro-batches, fewer at the end of an epoch) and they are summed, so the
update sees their mean; the logged loss is the mean of the micro-batch losses.

bf16 (``args.bf16``): the model computes in bfloat16 (``dtype``) over float32 parameters (``param_dtype``); the
losses, softmax and LayerNorm statistics are float32 in the model itself, gradients and optimizer state float32.

Dropout draws from the model's own ``nnx.Rngs`` streams (seeded with ``args.seed``); those streams (key + count of
every ``nnx.Dropout``) are part of the training state, so a resumed run draws the same masks.

XLA compiles the step once per batch shape. Batches are padded to their longest row, so when the run does not set
``pad_to_multiple_of`` this loop rounds every batch's width up to a multiple of :data:`WIDTH_MULTIPLE` (padding
tokens, attention 0, labels -100: the same loss up to float rounding), which bounds the compilations to
``max_seq_length / 8`` widths times two batch sizes (full and last).

**Several processes** (``JAX_COORDINATOR_ADDRESS=host:port JAX_NUM_PROCESSES=N JAX_PROCESS_ID=i distilbert-mf train
--framework flax ...`` on each): :func:`launch_world` forms the ``jax.distributed`` job and :func:`fit` trains on a
mesh of every device (:func:`distilbert_mf.flax.distributed.engine`): global arrays, each process feeding its rows of
the global batch of ``per_device_train_batch_size x N``, orbax checkpoints (``checkpoint-N/orbax/``, resumable on any
number of processes, one included), the final folder gathered and written by process 0.

Checkpoints (no pickle): the model through ``save_pretrained``; the optimizer state and the RNG streams as one
safetensors file of the flattened NNX state (keys are the state paths joined by ``/``, RNG keys stored as their
raw ``uint32`` data) plus a JSON file naming the key implementations and the update count. Loading rebuilds the
optimizer for the model and fills every leaf, checking names and shapes; any safetensors reader can open the file.
"""

from __future__ import annotations

import functools
import logging
import math
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from distilbert_mf._io import atomic_path
from distilbert_mf.flax.loading import canonical_key
from distilbert_mf.flax.modeling import FlaxDistilBertPreTrainedModel
from distilbert_mf.training.batching import TOKEN_LEVEL_TASKS, widen_batch
from distilbert_mf.training.schedules import LinearSchedule
from distilbert_mf.training.state import read_json, write_json
from distilbert_mf.training.trainer import hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.training.trainer import TrainingRun, TrainOutput

__all__ = [
    "STATE_FILE",
    "STATE_META_FILE",
    "WIDTH_MULTIPLE",
    "Engine",
    "TrainStep",
    "bias_correction",
    "create_optimizer",
    "decay_mask",
    "fit",
    "launch_world",
    "learning_rate_schedule",
    "load_model",
    "load_training_state",
    "one_device",
    "save_training_state",
    "scale_by_adam",
    "step_options",
    "train_step_for",
]

logger = logging.getLogger(__name__)

STATE_FILE = "flax_training_state.safetensors"  # optimizer state + RNG streams, flattened
STATE_META_FILE = "flax_training_state.json"  # what the arrays are: format version, key implementations, step
STATE_FORMAT = 1
WIDTH_MULTIPLE = 8  # batch widths are rounded up to this when the run does not choose (bounds XLA compilations)


# ----------------------------------------------------------------------------------------------------------------------
# The optimizer: PyTorch's AdamW rule in optax, the decay mask on canonical names, the run's schedule
# ----------------------------------------------------------------------------------------------------------------------


def _state_path(path: Iterable[Any]) -> tuple[Any, ...]:
    """A JAX tree path of an ``nnx.State`` (``DictKey`` entries, then ``.value`` for a Variable) -> the NNX path."""
    return tuple(entry.key for entry in path if isinstance(entry, jax.tree_util.DictKey))


def decay_mask(decays: Callable[[str], bool]) -> Callable[[Any], Any]:
    """optax's ``mask=`` for ``nnx.state(model, nnx.Param)``: True where ``decays(canonical name)``.

    The mask is a function so that it fits both trees optax hands it (``Variable`` leaves at ``init``, plain arrays
    in ``update``)."""

    def mask(params: Any) -> Any:
        return jax.tree_util.tree_map_with_path(
            lambda path, _: bool(decays(canonical_key(_state_path(path))[0])), params
        )

    return mask


def learning_rate_schedule(schedule: LinearSchedule) -> optax.Schedule:
    """``schedule`` as an optax schedule of the update count (0-based): linear warm-up, then linear decay to 0."""
    if not isinstance(schedule, LinearSchedule):
        raise TypeError(f"schedule must be a LinearSchedule (TrainingPlan.schedule), got {type(schedule).__name__}")
    base, warmup, total = float(schedule.learning_rate), int(schedule.warmup_steps), int(schedule.total_steps)

    def learning_rate(count: jax.Array) -> jax.Array:
        step = jnp.asarray(count, jnp.float32)
        rising = step / max(1, warmup)
        falling = jnp.maximum(0.0, (total - step) / max(1, total - warmup))
        return base * jnp.where(step < warmup, rising, falling)

    return learning_rate


def bias_correction(decay: float, count: jax.Array) -> jax.Array:
    """``1 - decay ** count`` in float32 to 1e-7 relative: ``-expm1(count * log(decay))`` with ``log(decay)`` taken
    in double precision (``1 - float32(decay) ** count`` is 2e-5 off for ``decay = 0.999``)."""
    if decay == 0.0:
        return jnp.ones((), jnp.float32)
    return -jnp.expm1(count.astype(jnp.float32) * jnp.float32(math.log(decay)))


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> optax.GradientTransformation:
    """``optax.scale_by_adam`` (same state, same moments, ``m_hat / (sqrt(v_hat) + eps)``) with PyTorch's bias
    correction: exact to float32 rounding (:func:`bias_correction`)."""

    def init(params: Any) -> optax.ScaleByAdamState:
        return optax.ScaleByAdamState(
            count=jnp.zeros([], jnp.int32), mu=optax.tree.zeros_like(params), nu=optax.tree.zeros_like(params)
        )

    def update(updates: Any, state: optax.ScaleByAdamState, params: Any = None) -> tuple:
        del params
        mu = optax.tree.update_moment(updates, state.mu, b1, 1)
        nu = optax.tree.update_moment_per_elem_norm(updates, state.nu, b2, 2)
        count = optax.safe_increment(state.count)
        correction1, correction2 = bias_correction(b1, count), bias_correction(b2, count)
        scaled = jax.tree.map(lambda m, v: (m / correction1) / (jnp.sqrt(v / correction2) + eps), mu, nu)
        return scaled, optax.ScaleByAdamState(count=count, mu=mu, nu=nu)

    return optax.GradientTransformation(init, update)


@functools.lru_cache(maxsize=8)
def adamw_transformation(
    schedule: LinearSchedule,
    b1: float,
    b2: float,
    eps: float,
    weight_decay: float,
    max_grad_norm: float | None,
    decayed: frozenset[str],
) -> optax.GradientTransformation:
    """The optax chain (memoised: the optimizer's graph holds it, so equal settings reuse compiled steps)."""
    clip = optax.clip_by_global_norm(max_grad_norm) if max_grad_norm is not None else optax.identity()
    return optax.chain(
        clip,
        scale_by_adam(b1, b2, eps),
        optax.add_decayed_weights(weight_decay, mask=decay_mask(decayed.__contains__)),
        optax.scale_by_learning_rate(learning_rate_schedule(schedule)),
    )


def create_optimizer(model: FlaxDistilBertPreTrainedModel, run: TrainingRun) -> nnx.Optimizer:
    """``nnx.Optimizer`` over every ``nnx.Param`` of ``model`` with the run's AdamW, clipping and schedule.

    Reads ``run.args`` (``adam_beta1``, ``adam_beta2``, ``adam_epsilon``, ``weight_decay``, ``max_grad_norm``;
    ``max_grad_norm`` None or <= 0 turns clipping off), ``run.schedule`` and ``run.decays``."""
    if not isinstance(model, FlaxDistilBertPreTrainedModel):
        raise TypeError(f"model must be a distilbert_mf Flax model, got {type(model).__name__}")
    args = run.args
    names = [canonical_key(path)[0] for path, _ in nnx.to_flat_state(nnx.state(model, nnx.Param))]
    max_norm = args.max_grad_norm
    tx = adamw_transformation(
        run.schedule,
        float(args.adam_beta1),
        float(args.adam_beta2),
        float(args.adam_epsilon),
        float(args.weight_decay),
        float(max_norm) if max_norm is not None and max_norm > 0 else None,
        frozenset(name for name in names if run.decays(name)),
    )
    return nnx.Optimizer(model, tx, wrt=nnx.Param)


# ----------------------------------------------------------------------------------------------------------------------
# The step: nnx.jit functions of (model, optimizer, batch)
# ----------------------------------------------------------------------------------------------------------------------


def _loss(model: FlaxDistilBertPreTrainedModel, batch: Mapping[str, jax.Array], scale: jax.Array) -> tuple:
    loss = model(**batch).loss
    return loss * scale, loss


@nnx.jit
def train_step(
    model: FlaxDistilBertPreTrainedModel, optimizer: nnx.Optimizer, batch: Mapping[str, jax.Array]
) -> tuple[jax.Array, jax.Array]:
    """One update from one batch -> (loss, global gradient norm before clipping)."""
    (loss, _), grads = nnx.value_and_grad(_loss, has_aux=True)(model, batch, jnp.float32(1.0))
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    return loss, grad_norm


@nnx.jit
def accumulate_step(
    model: FlaxDistilBertPreTrainedModel, batch: Mapping[str, jax.Array], grads: nnx.State, scale: jax.Array
) -> tuple[jax.Array, nnx.State]:
    """``grads + d(loss * scale)/dparams`` for one micro-batch -> (its unscaled loss, the new sum)."""
    (_, loss), micro = nnx.value_and_grad(_loss, has_aux=True)(model, batch, scale)
    return loss, jax.tree.map(jnp.add, grads, micro)


@nnx.jit
def apply_step(model: FlaxDistilBertPreTrainedModel, optimizer: nnx.Optimizer, grads: nnx.State) -> jax.Array:
    """Apply accumulated gradients -> their global norm before clipping."""
    grad_norm = optax.tree.norm(grads)
    optimizer.update(model, grads)
    return grad_norm


@nnx.jit
def forward(model: FlaxDistilBertPreTrainedModel, batch: Mapping[str, jax.Array]) -> Any:
    """The model's output for ``batch`` (loss included when the batch has labels)."""
    return model(**batch)


class TrainStep:
    """Runs updates of ``model`` with ``optimizer`` from numpy micro-batches, and evaluation forwards.

    The ``nnx.jit`` functions are bound to the model and optimizer with ``nnx.cached_partial`` (the graph is
    traversed once, not per call: 1.5 ms instead of 5.9 ms of Python per step on the tiny test model). The bound
    copies share the model's variables; the training copy is in training mode and the evaluation copy in
    evaluation mode for good, so ``model.train()`` / ``model.eval()`` on ``model`` itself change neither.

    Args:
        model / optimizer: as :func:`create_optimizer` made them (``model`` is left in training mode).
        pad_token_id: the id that pads ``input_ids`` when a batch is widened.
        width_multiple: round every batch's width up to a multiple of this (None: use the batches as they are).
        token_level_labels: ``labels`` are per token (token classification, masked LM) and are widened with -100.
        max_width: never widen past this (the model's ``max_position_embeddings``).
    """

    def __init__(
        self,
        model: FlaxDistilBertPreTrainedModel,
        optimizer: nnx.Optimizer,
        *,
        pad_token_id: int = 0,
        width_multiple: int | None = None,
        token_level_labels: bool = False,
        max_width: int | None = None,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.pad_token_id = int(pad_token_id)
        self.width_multiple = width_multiple
        self.token_level_labels = token_level_labels
        self.max_width = max_width
        self.shapes: set[tuple[int, ...]] = set()  # micro-batch input shapes the train step was compiled for
        # every variable of the model and optimizer: the steps set new arrays into these same objects
        self._variables = [variable for _, variable in nnx.to_flat_state(nnx.state((model, optimizer)))]
        for variable in self._variables:  # see _committed
            variable.set_value(_committed(variable.get_value()))
        model.train()
        self._train = nnx.cached_partial(train_step, model, optimizer)
        self._accumulate = nnx.cached_partial(accumulate_step, model)
        self._apply = nnx.cached_partial(apply_step, model, optimizer)
        model.eval()
        self._forward = nnx.cached_partial(forward, model)
        model.train()
        # the accumulators' start, laid out as the gradients the step returns
        self._zeros = jax.tree.map(lambda x: _committed(jnp.zeros_like(x), x.sharding), nnx.state(model, nnx.Param))

    def snapshot(self) -> list[jax.Array]:
        """The arrays of every model and optimizer variable now (references: JAX arrays never change in place)."""
        return [variable.get_value() for variable in self._variables]

    def restore(self, arrays: list[jax.Array]) -> None:
        """Put back what :meth:`snapshot` returned (weights, optimizer state and dropout streams)."""
        if len(arrays) != len(self._variables):
            raise ValueError(f"a snapshot of {len(self._variables)} variables is needed, got {len(arrays)} arrays")
        for variable, array in zip(self._variables, arrays):
            variable.set_value(array)

    def device_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """Numpy batch -> JAX arrays (int32 ids, float32 targets), widened to the width bucket."""
        batch = widen_batch(
            batch,
            self.width_multiple,
            pad_token_id=self.pad_token_id,
            token_level_labels=self.token_level_labels,
            max_width=self.max_width,
        )
        out = {}
        for key, value in batch.items():
            value = np.asarray(value)
            if value.dtype.kind in "iu":
                value = value.astype(np.int32)
            elif value.dtype.kind == "f":
                value = value.astype(np.float32)
            out[key] = jnp.asarray(value)
        return out

    def __call__(self, batches: list[Mapping[str, np.ndarray]]) -> tuple[float, float]:
        """One update from ``batches`` (one step's micro-batches) -> (mean micro-batch loss, grad norm)."""
        if not batches:
            raise ValueError("an update needs at least one micro-batch, got none")
        device_batches = [self.device_batch(batch) for batch in batches]
        self.shapes.update(tuple(batch["input_ids"].shape) for batch in device_batches)
        if len(device_batches) == 1:
            loss, grad_norm = self._train(device_batches[0])
            return float(loss), float(grad_norm)
        scale = jnp.float32(1.0 / len(device_batches))
        grads, losses = self._zeros, []
        for batch in device_batches:
            loss, grads = self._accumulate(batch, grads, scale)
            losses.append(loss)
        grad_norm = self._apply(grads)
        return float(np.mean([float(loss) for loss in losses])), float(grad_norm)

    def eval_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """An evaluation batch (whole on every process) as the forward's input: :meth:`device_batch`."""
        return self.device_batch(batch)

    def to_host(self, value: jax.Array) -> np.ndarray:
        """An output of the forward as numpy (the whole array)."""
        return np.asarray(value)

    def predict(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Evaluation forward (dropout off) of a numpy batch -> its outputs as numpy, at the batch's own width."""
        width = np.asarray(batch["input_ids"]).shape[-1]
        out = self._forward(self.eval_batch(batch))
        result = {}
        for key, value in out.items():
            if value is None:
                continue
            array = self.to_host(value.astype(jnp.float32) if jnp.issubdtype(value.dtype, jnp.floating) else value)
            if _is_sequence_output(key, array) and array.shape[1] != width:
                array = array[:, :width]
            result[key] = array
        return result


def _committed(value: jax.Array, sharding: Any = None) -> jax.Array:
    """``value`` committed to ``sharding`` (default: its own device) when it is not committed yet. A fresh model's
    arrays are uncommitted, and the arrays a jitted step returns are committed: a step first called with the
    former would be compiled a second time for the latter (measured: twice the compile time of a short run)."""
    if not isinstance(value, jax.Array) or value.committed:
        return value
    return jax.device_put(value, sharding if sharding is not None else value.sharding)


def _is_sequence_output(key: str, array: np.ndarray) -> bool:
    """Outputs with a width axis at position 1 (start/end logits (batch, width); token logits (batch, width, n))."""
    return key in ("start_logits", "end_logits") or (key == "logits" and array.ndim == 3)


# ----------------------------------------------------------------------------------------------------------------------
# Training state: optimizer + RNG streams as safetensors + JSON (no pickle)
# ----------------------------------------------------------------------------------------------------------------------


def _flat_key(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


def _state_arrays(tree: Any, prefix: str) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Flattened ``nnx.State`` -> ({key: array}, {key: PRNG implementation} for key arrays)."""
    arrays, impls = {}, {}
    for path, variable in nnx.to_flat_state(tree):
        key = f"{prefix}/{_flat_key(path)}"
        value = variable.get_value()
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            impls[key] = str(jax.random.key_impl(value))
            value = jax.random.key_data(value)
        arrays[key] = np.array(value, order="C")  # (ascontiguousarray would make scalars 1-d)
    return arrays, impls


def save_training_state(
    folder: str | os.PathLike[str],
    model: FlaxDistilBertPreTrainedModel,
    optimizer: nnx.Optimizer,
    rng: nnx.State | None = None,
) -> None:
    """Write ``model`` (``save_pretrained``), the optimizer state and the RNG state into ``folder``.

    ``rng`` defaults to the model's ``nnx.RngState`` (the dropout streams); files are written atomically."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    model.save_pretrained(folder)
    optimizer_arrays, _ = _state_arrays(nnx.state(optimizer, nnx.OptState), "optimizer")
    rng_arrays, impls = _state_arrays(rng if rng is not None else nnx.state(model, nnx.RngState), "rng")
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file({**optimizer_arrays, **rng_arrays}, str(tmp), metadata={"format": "distilbert_mf.flax.training"})
    meta = {
        "format": STATE_FORMAT,
        "framework": "flax",
        "optimizer_step": int(np.asarray(optimizer.step.get_value())),
        "prng_impls": impls,
    }
    write_json(folder / STATE_META_FILE, meta)


def _fill(tree: Any, prefix: str, arrays: Mapping[str, np.ndarray], impls: Mapping[str, str], source: Path) -> None:
    expected = {}
    for path, variable in nnx.to_flat_state(tree):
        expected[f"{prefix}/{_flat_key(path)}"] = variable
    stored = {key for key in arrays if key.startswith(f"{prefix}/")}
    missing, unexpected = sorted(set(expected) - stored), sorted(stored - set(expected))
    if missing or unexpected:
        raise KeyError(
            f"{source}: the {prefix} state does not fit this model and optimizer: missing {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}"
        )
    for key, variable in expected.items():
        old = variable.get_value()
        value = np.asarray(arrays[key])
        if key in impls:
            value = jax.random.wrap_key_data(jnp.asarray(value), impl=impls[key])
        if tuple(value.shape) != tuple(old.shape) or value.dtype != old.dtype:
            raise ValueError(
                f"{source}: {key} is {value.dtype}{list(value.shape)} but this optimizer holds {old.dtype}{list(old.shape)}"
            )
        # placed as the fresh leaf is: committed to its sharding, or uncommitted (a committed copy of an
        # uncommitted leaf would change the step's cache key and compile it again)
        value = jax.device_put(value, old.sharding) if old.committed else jnp.asarray(value)
        variable.set_value(value)


def load_training_state(
    folder: str | os.PathLike[str], model: FlaxDistilBertPreTrainedModel, optimizer: nnx.Optimizer
) -> nnx.State:
    """Restore the optimizer state and the model's RNG streams written by :func:`save_training_state` (the
    weights come with ``from_pretrained(folder)``). Returns the model's restored ``nnx.RngState``.

    Raises:
        FileNotFoundError: ``folder`` lacks the files. KeyError / ValueError: they belong to another model,
        task or optimizer (names or shapes differ).
    """
    folder = Path(folder)
    for name in (STATE_FILE, STATE_META_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} holds no Flax training state ({name} is missing)")
    meta = read_json(folder / STATE_META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("framework") != "flax":
        raise ValueError(f"{folder / STATE_META_FILE}: not a Flax training state of format {STATE_FORMAT}")
    from safetensors.numpy import load_file

    arrays = load_file(folder / STATE_FILE)
    impls = meta.get("prng_impls", {})
    _fill(nnx.state(optimizer, nnx.OptState), "optimizer", arrays, impls, folder)
    rng = nnx.state(model, nnx.RngState)
    _fill(rng, "rng", arrays, impls, folder)
    return rng


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def load_model(run: TrainingRun, *, pretrained: bool = True) -> FlaxDistilBertPreTrainedModel:
    """The run's model (its head class, config and starting weights, new head weights included) in training mode;
    bfloat16 compute over float32 parameters when ``args.bf16``; dropout streams seeded with ``args.seed``.
    ``pretrained=False``: the class built from the run's config alone (a sharded checkpoint fills it)."""
    options = {"dtype": jnp.bfloat16 if run.args.bf16 else None, "param_dtype": jnp.float32}
    rngs = nnx.Rngs(run.args.seed)
    model = run.load_model(rngs=rngs, **options) if pretrained else run.model_class()(run.config, rngs=rngs, **options)
    model.train()
    return model


def step_options(run: TrainingRun) -> dict[str, Any]:
    """The :class:`TrainStep` keywords of ``run``: its padding id, per-token labels for token classification and
    masked LM, widths rounded up to :data:`WIDTH_MULTIPLE` unless the run sets ``pad_to_multiple_of``."""
    return {
        "pad_token_id": run.train_data.pad_token_id,
        "width_multiple": None if run.args.pad_to_multiple_of else WIDTH_MULTIPLE,
        "token_level_labels": run.task in TOKEN_LEVEL_TASKS,
        "max_width": run.config.max_position_embeddings,
    }


def train_step_for(run: TrainingRun, model: FlaxDistilBertPreTrainedModel, optimizer: nnx.Optimizer) -> TrainStep:
    """The :class:`TrainStep` of ``run`` (:func:`step_options`)."""
    return TrainStep(model, optimizer, **step_options(run))


@dataclass
class Engine:
    """Where the loop's model lives: one device (:func:`one_device`), or a mesh over every device of every
    process (:func:`distilbert_mf.flax.distributed.engine`). The loop in :func:`fit` is the same for both."""

    model: FlaxDistilBertPreTrainedModel
    optimizer: nnx.Optimizer
    step: TrainStep  # updates from this process's rows, and the evaluation forward
    save_state: Callable[[Path], Any]  # a checkpoint folder: weights, optimizer and RNG state
    save_model: Callable[[Path], Any]  # the final folder (config.json + model.safetensors)


def one_device(run: TrainingRun) -> Engine:
    """The model on JAX's default device, its optimizer, resumed from ``run.resume_dir`` when there is one."""
    model = load_model(run)
    optimizer = create_optimizer(model, run)
    if run.resume_dir is not None:
        load_training_state(run.resume_dir, model, optimizer)
        logger.info("resumed the optimizer and RNG state from %s", run.resume_dir)
    return Engine(
        model,
        optimizer,
        train_step_for(run, model, optimizer),
        save_state=lambda folder: save_training_state(folder, model, optimizer),
        save_model=model.save_pretrained,
    )


def launch_world(args: Any) -> Any:
    """The :class:`~distilbert_mf.training.trainer.World` of a run started as one process of a JAX job (None for
    one process): when ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES`` or ``JAX_PROCESS_ID`` is set, the job is
    formed here (``jax.distributed.initialize``), before anything touches a device; see
    :func:`distilbert_mf.flax.distributed.world`."""
    from distilbert_mf.flax import distributed

    if not any(os.environ.get(name) for name in distributed.JOB_VARIABLES):
        return None
    return distributed.world()


def fit(run: TrainingRun) -> TrainOutput:
    """Train ``run`` with the Flax model: the loop over ``run.steps()``; logging, evaluation and checkpoints through
    ``run.end_step``; Ctrl-C saves a checkpoint of the last completed update (``run.interrupted``).

    A run over several JAX processes (``run.world``), or one resuming a checkpoint such a run wrote, trains on a
    mesh of every device (:func:`distilbert_mf.flax.distributed.engine`: global arrays, orbax checkpoints);
    otherwise on one device (:func:`one_device`).

    Each update and its bookkeeping run under :func:`~distilbert_mf.training.trainer.hold_interrupts`. JAX arrays
    are immutable, so the loop keeps the arrays of the last completed update (a list of references, no copy) and
    puts them back before an interrupt's checkpoint: even a second Ctrl-C in the middle of an update (some
    micro-batches' dropout draws done, the optimizer not yet applied) saves a consistent update."""
    from distilbert_mf.flax import distributed

    engine = distributed.engine(run) if distributed.spans_mesh(run) else one_device(run)
    step_fn = engine.step
    completed = step_fn.snapshot()
    try:
        for step in run.steps():
            learning_rate = run.schedule(step.global_step - 1)
            with hold_interrupts():
                loss, grad_norm = step_fn(step.batches)
                completed = step_fn.snapshot()
                run.end_step(
                    step,
                    loss=loss,
                    grad_norm=grad_norm,
                    learning_rate=learning_rate,
                    save=engine.save_state,
                    predict=step_fn.predict,
                )
    except KeyboardInterrupt:
        step_fn.restore(completed)
        run.interrupted(engine.save_state)
        raise
    logger.info(
        "compiled the Flax train step for %d micro-batch shapes: %s", len(step_fn.shapes), sorted(step_fn.shapes)
    )
    return run.finish(save_model=engine.save_model, predict=step_fn.predict)
