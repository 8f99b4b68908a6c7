"""Flax past one device and one machine: ``jax.distributed``, a (data, model) mesh, sharded state and checkpoints.

The model declares logical axis names on its parameters (``flax/sharding.py``); this module maps them onto a
``jax.sharding.Mesh`` with a ``"data"`` and a ``"model"`` axis and keeps every array global::

    processes = init_distributed()                 # jax.distributed.initialize (gloo collectives on CPU)
    mesh = make_mesh(model=2)                      # (data, model) over every device of every process
    model = FlaxDistilBertForMaskedLM.from_pretrained("path", rngs=nnx.Rngs(0))
    optimizer = create_optimizer(model, run)       # distilbert_mf.flax.training
    place(model, mesh); place(optimizer, mesh)     # heads / FFN / vocabulary split on "model", the rest replicated
    step = ShardedTrainStep(model, optimizer, mesh)
    loss, grad_norm = step([local_rows])           # this process's rows of the global batch
    save_state(folder, model, optimizer)           # orbax: every process writes its shards
    save_pretrained(model, "out")                  # gathered; process 0 writes the standard folder

- **Processes**: :func:`init_distributed` calls ``jax.distributed.initialize`` with the coordinator address and the
  process count / index given or read from ``JAX_COORDINATOR_ADDRESS``, ``JAX_NUM_PROCESSES``, ``JAX_PROCESS_ID``
  (``cluster=True``: JAX's own detection, SLURM / Open MPI / Kubernetes). On CPU the cross-process collectives are
  gloo (``jax_cpu_collectives_implementation="gloo"``). A coordinator that never answers is a
  :class:`DistributedSetupError` after ``timeout`` seconds, on every process that waits.
- **Mesh** (:func:`make_mesh`): ``"data"`` x ``"model"`` over all devices; :func:`check_mesh` refuses a model axis
  that does not divide the heads, the FFN width or the vocabulary, naming the config field.
- **Sharding** (:func:`place`): each variable becomes a global array laid out by its logical axes and the rules
  (:data:`~distilbert_mf.flax.sharding.TENSOR_PARALLEL_RULES` by default: Megatron-style heads / FFN / vocabulary on
  ``"model"``); the optimizer's moments carry their parameter's axes, so they are sharded alike. Arrays are built
  from this process's host copy (``jax.make_array_from_callback``): each device receives only its shard.
- **Same numbers as one process**: the batch is one global array sharded on ``"data"``
  (``jax.make_array_from_process_local_data`` over the data layer's per-process rows), and the ``nnx.jit`` step of
  :mod:`distilbert_mf.flax.training` computes the global batch's mean loss; XLA inserts the collectives.
- **Checkpoints** (:func:`save_state` / :func:`load_state`): orbax's ``StandardCheckpointer`` (installed with
  flax; tensorstore arrays + JSON metadata, no pickle): every process writes the shards it holds, in parallel, and
  restoring lays the arrays out for the *current* mesh, whatever mesh wrote them (another process count, another
  data / model split, one device). :func:`save_pretrained` writes the standard folder from process 0.
"""

from __future__ import annotations

import logging
import math
import os
import pickle
import socket
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE
from distilbert_mf.flax.sharding import TENSOR_PARALLEL_RULES, logical_partition_specs
from distilbert_mf.flax.training import TrainStep
from distilbert_mf.training.distributed import check_model_axis, check_stored_shapes
from distilbert_mf.training.state import read_json, write_json

__all__ = [
    "DATA_AXIS",
    "JOB_VARIABLES",
    "MODEL_AXIS",
    "ORBAX_FOLDER",
    "STATE_META_FILE",
    "TIMEOUT_ENV",
    "DistributedSetupError",
    "JaxProcesses",
    "ShardedTrainStep",
    "all_sum",
    "barrier",
    "broadcast_object",
    "check_mesh",
    "check_rows",
    "engine",
    "gather_arrays",
    "global_batch",
    "init_distributed",
    "is_distributed_checkpoint",
    "load_state",
    "make_mesh",
    "parameter_bytes",
    "place",
    "save_pretrained",
    "save_state",
    "spans_mesh",
    "world",
]

logger = logging.getLogger(__name__)

DATA_AXIS, MODEL_AXIS = "data", "model"
ORBAX_FOLDER = "orbax"  # checkpoint-N/orbax/: orbax's StandardCheckpointer folder (every process's shards)
STATE_META_FILE = "flax_distributed_state.json"  # checkpoint-N/: format, mesh that wrote it, PRNG implementations
STATE_FORMAT = 1
JOB_VARIABLES = ("JAX_COORDINATOR_ADDRESS", "JAX_NUM_PROCESSES", "JAX_PROCESS_ID")  # any set: a JAX job
TIMEOUT_ENV = "DISTILBERT_MF_DIST_TIMEOUT"  # seconds the job may take to form (the torchrun runs' variable too)
DEFAULT_TIMEOUT_S = 300


class DistributedSetupError(RuntimeError):
    """The processes could not form the job (bad process count / index, a coordinator that never answered)."""


@dataclass(frozen=True)
class JaxProcesses:
    """This process's place in the job: ``process_index`` of ``process_count`` (JAX's numbering)."""

    process_index: int = 0
    process_count: int = 1
    coordinator: str | None = None

    @property
    def is_main(self) -> bool:
        return self.process_index == 0

    @property
    def distributed(self) -> bool:
        return self.process_count > 1


def _env_int(name: str) -> int | None:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise DistributedSetupError(f"environment variable {name}={raw!r} must be an integer") from None


def init_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    timeout: int = 300,
    local_device_ids: Any = None,
    cluster: bool = False,
) -> JaxProcesses:
    """Join the job (``jax.distributed.initialize``), or describe the single process when nothing names one.

    Args:
        coordinator_address: ``host:port`` of process 0 (default ``$JAX_COORDINATOR_ADDRESS``).
        num_processes / process_id: the job's size and this process's index (default ``$JAX_NUM_PROCESSES`` /
            ``$JAX_PROCESS_ID``).
        timeout: seconds to wait for every process to reach the coordinator.
        local_device_ids: the accelerators this process drives (one process per GPU, e.g. ``[local_rank]``).
        cluster: let JAX detect the job from the scheduler (SLURM, Open MPI, Kubernetes) when the values are unset.

    Must run before anything touches a JAX device. Raises :class:`DistributedSetupError` naming the coordinator,
    the process and the timeout when the job does not form.
    """
    address = coordinator_address or os.environ.get("JAX_COORDINATOR_ADDRESS")
    count = num_processes if num_processes is not None else _env_int("JAX_NUM_PROCESSES")
    index = process_id if process_id is not None else _env_int("JAX_PROCESS_ID")
    if jax.distributed.is_initialized():
        return JaxProcesses(jax.process_index(), jax.process_count(), address)
    if not cluster and (address is None or count is None or count == 1):
        if count not in (None, 1) or index not in (None, 0):
            raise DistributedSetupError(
                f"JAX_NUM_PROCESSES={count} / JAX_PROCESS_ID={index} need JAX_COORDINATOR_ADDRESS (host:port of "
                "process 0) as well"
            )
        return JaxProcesses()
    if not cluster and (index is None or not 0 <= index < count):
        raise DistributedSetupError(f"process_id must be an integer in [0, {count}), got {index!r}")
    if not isinstance(timeout, int) or timeout <= 0:
        raise DistributedSetupError(f"timeout must be a whole number of seconds > 0, got {timeout!r}")
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # cross-process collectives on CPU
    advice = (
        "check that every process was started with the same coordinator address and process count, and that the "
        "address is reachable from every machine"
    )
    if not cluster and index != 0:
        _wait_for_coordinator(address, timeout, f"process {index} of {count}: {advice}")
    # JAX ends the process itself (a fatal DEADLINE_EXCEEDED) when the job does not form in time: say why first
    notice = threading.Timer(
        max(timeout - 0.5, 0.1),
        _say,
        (f"process {index} of {count}: the JAX job at {address} did not form within {timeout} s (not every process "
         f"reached the coordinator); JAX ends this process now. {advice}",),
    )  # fmt: skip
    notice.daemon = True
    notice.start()
    try:
        jax.distributed.initialize(
            address,
            count,
            index,
            local_device_ids=local_device_ids,
            initialization_timeout=timeout,
            cluster_detection_method=None if cluster else "deactivate",
        )
    except (RuntimeError, ValueError) as err:  # XlaRuntimeError is a RuntimeError
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DistributedSetupError(
            f"process {index} of {count} could not join the JAX job at {address} within {timeout} s ({first}); {advice}"
        ) from err
    finally:
        notice.cancel()
    logger.info("process %d of %d joined %s", jax.process_index(), jax.process_count(), address)
    return JaxProcesses(jax.process_index(), jax.process_count(), address)


def _say(message: str) -> None:
    logger.error("%s", message)
    sys.stderr.write(f"DistributedSetupError: {message}\n")
    sys.stderr.flush()


def _wait_for_coordinator(address: str, timeout: int, advice: str) -> None:
    """Connect to ``address`` (host:port) until it answers; :class:`DistributedSetupError` after ``timeout`` s."""
    host, _, port = address.rpartition(":")
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=1.0):
                return
        except (OSError, ValueError) as err:
            if time.monotonic() >= deadline:
                raise DistributedSetupError(
                    f"the coordinator {address} did not answer within {timeout} s ({type(err).__name__}: {err}); "
                    f"is process 0 running? {advice}"
                ) from None
            time.sleep(0.2)


# ----------------------------------------------------------------------------------------------------------------------
# The mesh
# ----------------------------------------------------------------------------------------------------------------------


def make_mesh(*, model: int = 1, data: int | None = None, devices: Any = None) -> Mesh:
    """A ``("data", "model")`` mesh over ``devices`` (default every device of every process); ``data`` defaults to
    the device count divided by ``model``. Each process's devices are kept together on the data axis, so a
    process holds whole rows of the batch (those the data layer gives it)."""
    devices = list(jax.devices() if devices is None else devices)
    if not isinstance(model, int) or model < 1:
        raise ValueError(f"model must be a positive integer (the model-parallel axis size), got {model!r}")
    if data is None:
        if len(devices) % model:
            raise ValueError(f"model={model} does not divide the {len(devices)} devices; choose a divisor")
        data = len(devices) // model
    if data * model != len(devices):
        raise ValueError(
            f"a mesh of data={data} x model={model} needs {data * model} devices, there are {len(devices)}"
        )
    devices = sorted(devices, key=lambda d: (d.process_index, d.id))
    grid = np.asarray(devices, dtype=object).reshape(data, model)
    return Mesh(grid, (DATA_AXIS, MODEL_AXIS), axis_types=(AxisType.Auto, AxisType.Auto))


def check_mesh(config: Any, mesh: Mesh, rules: Iterable[tuple[str, str | None]] = TENSOR_PARALLEL_RULES) -> None:
    """Every config size a rule splits must divide over its mesh axis (heads over ``n_heads`` and ``dim``, FFN
    over ``hidden_dim``, vocabulary over ``vocab_size``); a ``ValueError`` names the field, both sizes and a fix."""
    for logical, axis in rules:
        if axis is None:
            continue
        names = (axis,) if isinstance(axis, str) else tuple(axis)
        unknown = [name for name in names if name not in mesh.shape]
        if unknown:
            raise ValueError(f"the rules name mesh axes {unknown}; the mesh has {list(mesh.axis_names)}")
        size = int(np.prod([mesh.shape[name] for name in names]))
        check_model_axis(config, size, axis if isinstance(axis, str) else str(axis), (logical,))


# ----------------------------------------------------------------------------------------------------------------------
# Global arrays
# ----------------------------------------------------------------------------------------------------------------------


def _host(value: jax.Array) -> np.ndarray:
    """A host copy of a variable's value (process-local arrays only: the start of :func:`place`)."""
    if isinstance(value, jax.Array) and not value.is_fully_addressable:
        return np.asarray(_gathered(value))
    return np.asarray(value)


def _gathered(value: jax.Array) -> jax.Array:
    from jax.experimental import multihost_utils

    return multihost_utils.process_allgather(value, tiled=True)


def _global(host: np.ndarray, sharding: NamedSharding) -> jax.Array:
    return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def place(node: Any, mesh: Mesh, rules: Iterable[tuple[str, str | None]] = TENSOR_PARALLEL_RULES) -> Any:
    """Make every variable of ``node`` (a model, an optimizer) a global array on ``mesh``, laid out by its logical
    axes and ``rules`` (no rule or no axis names: replicated; PRNG keys replicated). In place; returns ``node``.
    Every process must call it with the same values (the same checkpoint, seed and steps)."""
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh must be a jax.sharding.Mesh (make_mesh(...)), got {mesh!r}")
    rules = tuple(rules)
    if hasattr(node, "config"):
        check_mesh(node.config, mesh, rules)
    specs = dict(nnx.to_flat_state(logical_partition_specs(node, rules)))
    for path, variable in nnx.to_flat_state(nnx.state(node)):
        value = variable.get_value()
        if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            impl = jax.random.key_impl(value)
            data = _global(_host(jax.random.key_data(value)), NamedSharding(mesh, PartitionSpec()))
            variable.set_value(jax.random.wrap_key_data(data, impl=impl))
            continue
        spec = specs[path].get_value()
        variable.set_value(_global(_host(value), NamedSharding(mesh, spec)))
    return node


def global_batch(batch: Mapping[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """This process's rows of a batch -> global arrays sharded on ``"data"`` (the rows of every process, in
    process order: what the data layer's ``BatchLoader(world_size=process_count, rank=process_index)`` yields)."""
    sharding = NamedSharding(mesh, PartitionSpec(DATA_AXIS))
    return {key: jax.make_array_from_process_local_data(sharding, np.asarray(value)) for key, value in batch.items()}


def parameter_bytes(node: Any) -> dict[int, int]:
    """Bytes of ``node``'s arrays on each of this process's devices (device id -> bytes of the shards it holds)."""
    totals: dict[int, int] = {}
    for _, variable in nnx.to_flat_state(nnx.state(node)):
        value = variable.get_value()
        if isinstance(value, jax.Array) and not jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            for shard in value.addressable_shards:
                totals[shard.device.id] = totals.get(shard.device.id, 0) + int(shard.data.nbytes)
    return totals


class ShardedTrainStep(TrainStep):
    """:class:`~distilbert_mf.flax.training.TrainStep` over a mesh: each call takes this process's rows of the
    step's micro-batches, makes them global arrays sharded on ``"data"`` and runs the same ``nnx.jit`` update (the
    loss is the global batch's); evaluation batches are whole on every process (replicated) and outputs come back
    whole (gathered)."""

    def __init__(self, model: Any, optimizer: Any, mesh: Mesh, **options: Any) -> None:
        self.mesh = mesh
        super().__init__(model, optimizer, **options)

    def device_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        local = super().device_batch(batch)
        return global_batch({key: np.asarray(value) for key, value in local.items()}, self.mesh)

    def eval_batch(self, batch: Mapping[str, np.ndarray]) -> dict[str, jax.Array]:
        """A whole evaluation batch (the same on every process) as global arrays: its rows split on ``"data"``
        when the data axis divides them (each row computed once), else replicated (the last, smaller batch)."""
        local = TrainStep.device_batch(self, batch)
        rows = int(local["input_ids"].shape[0])
        spec = PartitionSpec(DATA_AXIS) if rows % self.mesh.shape[DATA_AXIS] == 0 else PartitionSpec()
        sharding = NamedSharding(self.mesh, spec)
        return {key: _global(np.asarray(value), sharding) for key, value in local.items()}

    def to_host(self, value: jax.Array) -> np.ndarray:
        """An output as numpy, whole on every process (gathered when other processes hold parts of it)."""
        return np.asarray(value if value.is_fully_addressable else _gathered(value))


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: orbax (sharded, restored onto any mesh) and the standard folder
# ----------------------------------------------------------------------------------------------------------------------


def _flat_key(path: tuple[Any, ...]) -> str:
    return "/".join(str(part) for part in path)


def _tree(model: Any, optimizer: Any) -> tuple[dict[str, dict[str, Any]], dict[str, Any], dict[str, str]]:
    """({"model": {key: array}, "optimizer": ..., "rng": ...}, {flat key: variable}, {rng key: PRNG impl})."""
    tree: dict[str, dict[str, Any]] = {"model": {}, "optimizer": {}, "rng": {}}
    variables: dict[str, Any] = {}
    impls: dict[str, str] = {}
    parts = [("model", nnx.state(model, nnx.Param)), ("rng", nnx.state(model, nnx.RngState))]
    if optimizer is not None:
        parts.append(("optimizer", nnx.state(optimizer, nnx.OptState)))
    frozen = nnx.state(model, nnx.Not(nnx.Any(nnx.Param, nnx.RngState)))
    parts.append(("model", frozen))  # the sinusoidal table, when there is one
    for group, state in parts:
        for path, variable in nnx.to_flat_state(state):
            key = _flat_key(path)
            value = variable.get_value()
            if jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
                impls[f"{group}/{key}"] = str(jax.random.key_impl(value))
                value = jax.random.key_data(value)
            tree[group][key] = value
            variables[f"{group}/{key}"] = variable
    return tree, variables, impls


def save_state(folder: str | os.PathLike[str], model: Any, optimizer: Any) -> Path:
    """Write the model's weights and RNG streams and the optimizer state with orbax into ``folder/orbax/`` (every
    process calls it and writes its own shards; orbax renames the folder into place when all are done) and
    :data:`STATE_META_FILE` (process 0). Returns ``folder``."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    tree, _, impls = _tree(model, optimizer)
    checkpointer = ocp.StandardCheckpointer()
    checkpointer.save(folder / ORBAX_FOLDER, tree, force=True)
    checkpointer.wait_until_finished()
    if jax.process_index() == 0:
        mesh = next(
            (
                v.sharding.mesh
                for v in tree["model"].values()
                if isinstance(getattr(v, "sharding", None), NamedSharding)
            ),
            None,
        )
        write_json(
            folder / STATE_META_FILE,
            {
                "format": STATE_FORMAT,
                "framework": "flax",
                "process_count": jax.process_count(),
                "mesh": dict(mesh.shape) if mesh is not None else None,
                "prng_impls": impls,
            },
        )
    _sync("distilbert_mf.flax.distributed.save_state")
    return folder


def _sync(name: str) -> None:
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def is_distributed_checkpoint(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds what :func:`save_state` writes."""
    return (Path(folder) / STATE_META_FILE).is_file() and (Path(folder) / ORBAX_FOLDER).is_dir()


def load_state(folder: str | os.PathLike[str], model: Any, optimizer: Any) -> None:
    """Restore what :func:`save_state` wrote into ``model`` and ``optimizer`` (None: weights and RNG only), each
    array laid out as the variable it replaces is now (:func:`place` them on the new mesh first); the mesh and the
    process count that wrote it do not matter. Names and shapes are checked first (``ValueError`` naming them, the
    same on every process)."""
    import orbax.checkpoint as ocp

    folder = Path(folder).absolute()
    if not is_distributed_checkpoint(folder):
        raise FileNotFoundError(f"{folder} holds no sharded Flax checkpoint ({STATE_META_FILE} and {ORBAX_FOLDER}/)")
    meta = read_json(folder / STATE_META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("framework") != "flax":
        raise ValueError(f"{folder / STATE_META_FILE}: not a sharded Flax checkpoint of format {STATE_FORMAT}")
    tree, variables, impls = _tree(model, optimizer)
    checkpointer = ocp.StandardCheckpointer()
    stored = checkpointer.metadata(folder / ORBAX_FOLDER)
    stored_tree = getattr(stored, "item_metadata", stored)
    stored_shapes = {
        f"{group}/{key}": tuple(entry.shape)
        for group, entries in dict(stored_tree).items()
        for key, entry in entries.items()
    }
    wanted = {f"{group}/{key}": tuple(value.shape) for group, entries in tree.items() for key, value in entries.items()}
    check_stored_shapes(
        folder, stored_shapes, wanted, ignore=lambda name: optimizer is None and name.startswith("optimizer/")
    )
    target = {
        group: {
            key: jax.ShapeDtypeStruct(value.shape, value.dtype, sharding=value.sharding)
            for key, value in entries.items()
        }
        for group, entries in tree.items()
    }
    if optimizer is None:
        target["optimizer"] = {}
    restored = checkpointer.restore(folder / ORBAX_FOLDER, target, strict=optimizer is not None)
    for group, entries in restored.items():
        for key, value in entries.items():
            name = f"{group}/{key}"
            if name not in variables:
                continue
            if name in impls:
                value = jax.random.wrap_key_data(value, impl=meta.get("prng_impls", {}).get(name, impls[name]))
            variables[name].set_value(value)


def gather_arrays(model: Any) -> dict[str, np.ndarray]:
    """The full canonical weights (PyTorch layout, the tied projector included) as numpy on every process (each
    sharded array gathered once; every process must call it)."""
    from distilbert_mf.checkpoint.names import expected_shapes
    from distilbert_mf.flax.loading import weight_variables

    arrays: dict[str, np.ndarray] = {}
    for key, transposed, variable in weight_variables(model):
        value = variable.get_value()
        array = np.asarray(value if value.is_fully_addressable else _gathered(value))
        arrays[key] = np.ascontiguousarray(array.T) if transposed else array
    if model.head == "masked_lm" and model.config.tie_word_embeddings and TIED_KEY not in arrays:
        arrays[TIED_KEY] = arrays[TIED_SOURCE]
    return {key: arrays[key] for key in expected_shapes(model.config, model.head)}


def save_pretrained(model: Any, directory: str | os.PathLike[str]) -> list[Path]:
    """The standard folder (``config.json`` + ``model.safetensors``) of a sharded model: gathered on every process,
    written by process 0 (the written paths there, an empty list elsewhere)."""
    from distilbert_mf.checkpoint.loading import save_pretrained as write

    arrays = gather_arrays(model)
    written: list[Path] = []
    if jax.process_index() == 0:
        written = write(directory, model.config, arrays, model.head)
    _sync("distilbert_mf.flax.distributed.save_pretrained")
    return written


# ----------------------------------------------------------------------------------------------------------------------
# The fine-tuning loop's side (distilbert_mf.flax.training.fit, distilbert-mf train --framework flax)
# ----------------------------------------------------------------------------------------------------------------------


def _timeout() -> int:
    """Seconds the job may take to form: ``$DISTILBERT_MF_DIST_TIMEOUT`` (rounded up), else 300."""
    raw = os.environ.get(TIMEOUT_ENV)
    if raw is None or raw == "":
        return DEFAULT_TIMEOUT_S
    try:
        seconds = float(raw)
    except ValueError:
        seconds = math.nan
    if not seconds > 0 or not math.isfinite(seconds):
        raise DistributedSetupError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds > 0")
    return math.ceil(seconds)


def barrier() -> None:
    """Wait until every process of the job gets here (``multihost_utils.sync_global_devices``)."""
    _sync("distilbert_mf.flax.distributed.barrier")


def broadcast_object(value: Any) -> Any:
    """Process 0's ``value`` (a small picklable object: a path, a message) on every process; every process calls
    it. The pickled bytes travel as a ``uint8`` array (``multihost_utils.broadcast_one_to_all``), their length
    first."""
    if jax.process_count() == 1:
        return value
    from jax.experimental import multihost_utils

    payload = pickle.dumps(value) if jax.process_index() == 0 else b""
    size = int(multihost_utils.broadcast_one_to_all(np.asarray(len(payload), np.int32)))
    data = np.zeros(size, np.uint8)
    if payload:
        data[:] = np.frombuffer(payload, np.uint8)
    return pickle.loads(np.asarray(multihost_utils.broadcast_one_to_all(data)).tobytes())


def all_sum(values: Sequence[float]) -> list[float]:
    """The element-wise sum of ``values`` over the processes, in float64 (every process calls it with as many
    values): each process's float64 bits are gathered as ``uint32`` pairs (JAX keeps 32-bit arrays) and summed on
    the host in a fixed order, so every process gets the same numbers."""
    local = np.asarray([float(v) for v in values], np.float64)
    if jax.process_count() == 1:
        return local.tolist()
    from jax.experimental import multihost_utils

    gathered = np.asarray(multihost_utils.process_allgather(local.view(np.uint32)))  # (processes, 2 * n)
    return np.ascontiguousarray(gathered).view(np.float64).sum(axis=0).tolist()


def world(*, timeout: int | None = None) -> Any:
    """Join the job (:func:`init_distributed` from ``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID``, within ``timeout`` seconds, default ``$DISTILBERT_MF_DIST_TIMEOUT`` or 300) and describe it
    as the trainer's :class:`~distilbert_mf.training.trainer.World`: rank = ``jax.process_index()``, barrier,
    broadcast and sum over JAX collectives, ``context`` the :class:`JaxProcesses`. The other processes'
    ``distilbert_mf`` log lines are lowered to warnings: process 0 speaks for the run."""
    from distilbert_mf.training.trainer import World

    processes = init_distributed(timeout=_timeout() if timeout is None else timeout)
    if not processes.is_main:
        names = [name for name in logging.root.manager.loggerDict if name.startswith("distilbert_mf.")]
        for name in ("distilbert_mf", *names):  # those a command line set to INFO too
            logging.getLogger(name).setLevel(logging.WARNING)
    return World(
        rank=processes.process_index,
        world_size=processes.process_count,
        barrier=barrier,
        broadcast=broadcast_object,
        all_sum=all_sum,
        context=processes,
    )


def spans_mesh(run: Any) -> bool:
    """Whether ``run`` trains on a mesh: it spans several JAX processes, or resumes a checkpoint a mesh run wrote."""
    resume = run.resume_dir
    return run.world.world_size > 1 or (resume is not None and is_distributed_checkpoint(resume))


def check_rows(loader: Any, mesh: Mesh) -> None:
    """Every batch's rows on this process must split evenly over its devices on the ``"data"`` axis (the full
    batch's ``per_device_train_batch_size`` and a kept last batch's share); a ``ValueError`` naming the sizes and
    a fix otherwise, the same on every process, before anything moves."""
    shards = mesh.shape[DATA_AXIS] // max(jax.process_count(), 1)
    sizes = {loader.local_batch_size: "a batch"}
    remainder = len(loader.dataset) % loader.batch_size
    if remainder and loader.last_batch == "keep":
        sizes.setdefault(remainder // loader.world_size, f"the last batch of an epoch ({remainder} rows)")
    for rows, what in sizes.items():
        if rows % shards:
            raise ValueError(
                f"{what} gives each process {rows} rows, which its {shards} devices on the mesh's {DATA_AXIS!r} axis "
                f"cannot split evenly; use a per_device_train_batch_size that {shards} divides (the global batch is "
                f"it times {loader.world_size} processes), a training set whose last batch it divides, or "
                "dataloader_drop_last"
            )


def engine(run: Any) -> Any:
    """The loop's :class:`~distilbert_mf.flax.training.Engine` on a ``("data", "model")`` mesh of every device
    of every process (``data`` = all of them): the run's model and optimizer placed as global arrays, a
    :class:`ShardedTrainStep` fed with this process's rows (``run.loader``'s share), checkpoints as orbax sharded
    state (:func:`save_state`: ``checkpoint-N/orbax/``, resumable on any number of processes), the final folder
    gathered and written by process 0 (:func:`save_pretrained`).

    Resuming a mesh checkpoint: the model is built from the run's config, placed, and :func:`load_state` fills the
    weights, the optimizer and the RNG streams; a one-process checkpoint (safetensors) is read by every process
    before placing."""
    from distilbert_mf.flax.training import (
        Engine,
        create_optimizer,
        load_model,
        load_training_state,
        step_options,
    )

    mesh = make_mesh()
    check_rows(run.loader, mesh)
    resume = run.resume_dir
    sharded = resume is not None and is_distributed_checkpoint(resume)
    model = load_model(run, pretrained=not sharded)
    optimizer = create_optimizer(model, run)
    if resume is not None and not sharded:
        load_training_state(resume, model, optimizer)
    place(model, mesh)
    place(optimizer, mesh)
    if sharded:
        load_state(resume, model, optimizer)
    if resume is not None:
        logger.info("resumed the weights, optimizer and RNG state from %s", resume)
    logger.info(
        "a mesh of %d device(s) over %d process(es) (%s), global batch %d (%d rows per process)",
        mesh.size,
        jax.process_count(),
        dict(mesh.shape),
        run.loader.batch_size,
        run.loader.local_batch_size,
    )
    return Engine(
        model,
        optimizer,
        ShardedTrainStep(model, optimizer, mesh, **step_options(run)),
        save_state=lambda folder: save_state(folder, model, optimizer),
        save_model=lambda folder: save_pretrained(model, folder),
    )
