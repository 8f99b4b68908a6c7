"""Keras past one device: ``keras.distribution`` (JAX backend) and ``tf.distribute`` (TensorFlow backend).

The model code holds no engine calls; the engines place it:

- **JAX backend** (``KERAS_BACKEND=jax``): :func:`data_parallel` (``keras.distribution.DataParallel``: variables
  replicated, every batch split on the ``"batch"`` axis) or :func:`model_parallel` (``ModelParallel`` with
  :func:`layout_map`: the attention heads, the FFN and the vocabulary split on ``"model"`` by the model's variable
  paths, the same Megatron-style layout as the Flax package's logical axes). Set the distribution *before* the model
  is built (``keras.distribution.set_distribution``); ``model.fit`` then runs one SPMD program over the devices, and
  the loss is the global batch's. Several machines: ``keras.distribution.initialize()`` (``jax.distributed``).
- **TensorFlow backend**: :func:`mirrored_strategy` (``tf.distribute.MirroredStrategy`` over local devices;
  :func:`logical_cpu_devices` splits the CPU in tests) and :func:`multi_worker_strategy`
  (``MultiWorkerMirroredStrategy``, machines described by ``TF_CONFIG``). Build the model and the optimizer under
  ``strategy.scope()`` — ``with strategy.scope(): train(args)`` does, for the whole fine-tuning run (the loop of
  :mod:`distilbert_mf.tensorflow.training`). ``model.fit`` splits each batch across the replicas and the
  replicas' gradients are summed, so each replica's loss is weighted by its share of the global batch's targets
  (:func:`replica_loss`: rows for sequence-level tasks, labelled tokens for token-level ones), which makes the sum
  the gradient of the global mean loss; the optimizer clips and applies that sum (:func:`sum_over_replicas`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from typing import Any

import keras
from keras import ops

from distilbert_mf.modeling_utils import IGNORE_INDEX
from distilbert_mf.training.distributed import check_model_axis

__all__ = [
    "BATCH_AXIS",
    "MODEL_AXIS",
    "TENSOR_PARALLEL_LAYOUT",
    "data_parallel",
    "device_mesh",
    "layout_map",
    "logical_cpu_devices",
    "mirrored_strategy",
    "model_parallel",
    "multi_worker_strategy",
    "replica_loss",
    "replicas_in_sync",
    "sum_over_replicas",
    "target_count",
]

logger = logging.getLogger(__name__)

BATCH_AXIS, MODEL_AXIS = "batch", "model"
# variable path pattern -> layout over (BATCH_AXIS, MODEL_AXIS) names; Keras matches them with re.fullmatch on
# ``variable.path`` (e.g. tf_distil_bert_for_masked_lm/distilbert/transformer/layer_0/ffn/lin1/kernel). Kernels are
# (in, out): column-parallel q/k/v and lin1 split their output, row-parallel out_lin and lin2 their input.
TENSOR_PARALLEL_LAYOUT: tuple[tuple[str, tuple[str | None, ...], str], ...] = (
    (r".*/word_embeddings/embeddings", (MODEL_AXIS, None), "vocab"),
    (r".*/attention/[qkv]_lin/kernel", (None, MODEL_AXIS), "heads"),
    (r".*/attention/[qkv]_lin/bias", (MODEL_AXIS,), "heads"),
    (r".*/attention/out_lin/kernel", (MODEL_AXIS, None), "heads"),
    (r".*/ffn/lin1/kernel", (None, MODEL_AXIS), "mlp"),
    (r".*/ffn/lin1/bias", (MODEL_AXIS,), "mlp"),
    (r".*/ffn/lin2/kernel", (MODEL_AXIS, None), "mlp"),
    (r".*/vocab_projector/bias", (MODEL_AXIS,), "vocab"),
)


def _jax_backend(what: str) -> None:
    if keras.backend.backend() != "jax":
        raise RuntimeError(
            f"{what} is keras.distribution, which runs on the JAX backend (KERAS_BACKEND=jax); this process uses "
            f"{keras.backend.backend()!r}: use mirrored_strategy() on the TensorFlow backend"
        )


def device_mesh(*, model: int = 1, devices: Sequence[Any] | None = None) -> Any:
    """A ``keras.distribution.DeviceMesh`` of shape ``(devices / model, model)`` named ``("batch", "model")`` over
    ``devices`` (default every device, of every process after ``keras.distribution.initialize()``)."""
    _jax_backend("device_mesh")
    devices = list(keras.distribution.list_devices() if devices is None else devices)
    if not isinstance(model, int) or model < 1 or len(devices) % model:
        raise ValueError(f"model={model!r} must be a positive integer dividing the {len(devices)} devices")
    return keras.distribution.DeviceMesh((len(devices) // model, model), (BATCH_AXIS, MODEL_AXIS), devices)


def layout_map(mesh: Any, config: Any = None) -> Any:
    """A ``keras.distribution.LayoutMap`` of :data:`TENSOR_PARALLEL_LAYOUT` on ``mesh`` (every other variable
    replicated). With ``config``, a model axis that does not divide the heads, the FFN or the vocabulary is a
    ``ValueError`` naming the field first."""
    size = int(dict(zip(mesh.axis_names, mesh.shape))[MODEL_AXIS])
    if config is not None:
        check_model_axis(config, size, MODEL_AXIS, tuple(sorted({name for _, _, name in TENSOR_PARALLEL_LAYOUT})))
    layouts = keras.distribution.LayoutMap(mesh)
    for pattern, axes, _ in TENSOR_PARALLEL_LAYOUT:
        layouts[pattern] = axes
    return layouts


def data_parallel(devices: Sequence[Any] | None = None) -> Any:
    """``keras.distribution.DataParallel`` over ``devices`` (default all): set it with
    ``keras.distribution.set_distribution`` before building the model."""
    _jax_backend("data_parallel")
    return keras.distribution.DataParallel(devices=list(devices) if devices is not None else None)


def model_parallel(*, model: int = 2, devices: Sequence[Any] | None = None, config: Any = None) -> Any:
    """``keras.distribution.ModelParallel`` over a ``(batch, model)`` mesh with :func:`layout_map` (data parallel on
    ``"batch"``, tensor parallel on ``"model"``); ``config`` checks the sizes it splits."""
    mesh = device_mesh(model=model, devices=devices)
    return keras.distribution.ModelParallel(layout_map=layout_map(mesh, config), batch_dim_name=BATCH_AXIS)


def logical_cpu_devices(count: int) -> list[str]:
    """Split the CPU into ``count`` logical TensorFlow devices (tests of ``tf.distribute`` on one machine); must run
    before TensorFlow initialises its devices. Returns their names (``/device:CPU:0`` ...)."""
    import tensorflow as tf

    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    cpus = tf.config.list_physical_devices("CPU")
    try:
        tf.config.set_logical_device_configuration(cpus[0], [tf.config.LogicalDeviceConfiguration()] * count)
    except RuntimeError as err:
        current = len(tf.config.list_logical_devices("CPU"))
        if current != count:
            raise RuntimeError(
                f"TensorFlow's devices are initialised already ({current} logical CPU device(s)); call "
                "logical_cpu_devices before anything runs on TensorFlow"
            ) from err
    return [device.name for device in tf.config.list_logical_devices("CPU")]


def mirrored_strategy(devices: Sequence[str] | None = None) -> Any:
    """``tf.distribute.MirroredStrategy`` over ``devices`` (default: every GPU, else the CPU devices) with
    TensorFlow's backend; build the model and optimizer under its ``scope()``."""
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"tf.distribute needs the TensorFlow backend (KERAS_BACKEND=tensorflow); this process uses "
            f"{keras.backend.backend()!r}: use data_parallel() / model_parallel() on the JAX backend"
        )
    import tensorflow as tf

    if devices is None:
        gpus = tf.config.list_logical_devices("GPU")
        devices = [d.name for d in (gpus or tf.config.list_logical_devices("CPU"))]
    return tf.distribute.MirroredStrategy(devices=list(devices))


def multi_worker_strategy() -> Any:
    """``tf.distribute.MultiWorkerMirroredStrategy`` for the machines ``TF_CONFIG`` describes (its ``cluster``
    ``worker`` list and this process's ``task`` index; see docs/scaling.md)."""
    import json

    import tensorflow as tf

    raw = os.environ.get("TF_CONFIG")
    if not raw:
        raise RuntimeError(
            'TF_CONFIG is not set: {"cluster": {"worker": ["host:port", ...]}, "task": {"type": "worker", "index": i}}'
        )
    try:
        config = json.loads(raw)
        workers = config["cluster"]["worker"]
        index = config["task"]["index"]
    except (ValueError, KeyError, TypeError) as err:
        raise RuntimeError(f"TF_CONFIG={raw!r} is not a cluster description ({err})") from None
    if not 0 <= int(index) < len(workers):
        raise RuntimeError(f"TF_CONFIG task index {index} is not one of the {len(workers)} workers")
    return tf.distribute.MultiWorkerMirroredStrategy()


# ----------------------------------------------------------------------------------------------------------------------
# Inside a tf.distribute replica: the loss each replica differentiates, the gradients the optimizer applies
# ----------------------------------------------------------------------------------------------------------------------


def replicas_in_sync() -> int:
    """The replicas of the current ``tf.distribute`` strategy (TensorFlow backend; 1 without a strategy scope and
    under the other backends, whose ``keras.distribution`` runs one SPMD program)."""
    if keras.backend.backend() != "tensorflow":
        return 1
    import tensorflow as tf

    return int(tf.distribute.get_strategy().num_replicas_in_sync)


def _replica_context() -> Any:
    """The ``tf.distribute`` replica context when this code runs in one replica of several, else None."""
    if replicas_in_sync() == 1:
        return None
    import tensorflow as tf

    context = tf.distribute.get_replica_context()  # None in the cross-replica context
    return context if context is not None and context.num_replicas_in_sync > 1 else None


def target_count(labels: Any, rows: Any) -> Any:
    """The targets a loss averages over, as a float32 scalar: the entries of integer ``labels`` that are not -100
    (rows of classification, tokens of token classification and masked LM), else ``rows`` (float labels,
    question answering's positions, no labels) — the rule of :func:`distilbert_mf.torch.distributed.target_count`."""
    if labels is not None and not isinstance(labels, (tuple, list, Mapping)):
        labels = ops.convert_to_tensor(labels)
        if "int" in keras.backend.standardize_dtype(labels.dtype):
            return ops.sum(ops.cast(ops.not_equal(labels, IGNORE_INDEX), "float32"))
    return ops.cast(rows, "float32")


def replica_loss(loss: Any, labels: Any, rows: Any) -> Any:
    """The loss one ``tf.distribute`` replica differentiates: ``loss`` (the mean over this replica's targets) times
    ``n / N``, ``n`` this replica's :func:`target_count` and ``N`` the sum over the replicas (one all-reduce). The
    replicas' gradients are summed, so the update is the gradient of the global batch's mean loss however the
    targets fall (token-level tasks: the replicas hold different numbers of labelled tokens); Keras logs each
    replica's loss times the replicas and averages them, which is that global mean too. Outside a replica of
    several (one device, no strategy, the JAX backend) ``loss`` is returned as it is."""
    context = _replica_context()
    if context is None:
        return loss
    import tensorflow as tf

    count = target_count(labels, rows)
    total = context.all_reduce(tf.distribute.ReduceOp.SUM, count)
    return loss * ops.cast(count / ops.maximum(total, 1.0), loss.dtype)


def sum_over_replicas(gradients: Sequence[Any]) -> list[Any]:
    """``gradients`` summed over the replicas (one all-reduce) inside a ``tf.distribute`` replica of several; as
    they are elsewhere. Every replica then holds the same sums, so clipping sees the global norm and every replica
    applies the same update to its own copy of the variables."""
    context = _replica_context()
    if context is None:
        return list(gradients)
    import tensorflow as tf

    return list(context.all_reduce(tf.distribute.ReduceOp.SUM, list(gradients)))
