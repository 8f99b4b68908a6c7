"""PyTorch past one device: torchrun's process group, DDP or FSDP2, sharded checkpoints, rank-0 model folders.

The model code holds no engine calls; this module wraps it with PyTorch's own engines::

    ctx = init_distributed()                                  # RANK / WORLD_SIZE / MASTER_ADDR ... from torchrun
    model = load_sharded(DistilBertForSequenceClassification, "path", ctx=ctx)   # meta -> FSDP2 -> checkpoint
    # or: model = data_parallel(DistilBertForSequenceClassification.from_pretrained("path"), ctx)
    optimizer = torch.optim.AdamW(unwrap(model).parameters())
    loss, grad_norm = train_step(model, optimizer, local_batches, ctx=ctx, learning_rate=..., max_grad_norm=1.0)
    save_state(folder, model, optimizer)                       # torch.distributed.checkpoint, one file per rank
    save_pretrained(model, "out")                              # config.json + model.safetensors, written by rank 0

- **Process group**: :func:`init_distributed` reads torchrun's variables (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
  ``MASTER_ADDR``, ``MASTER_PORT``); gloo on CPU, NCCL when CUDA is there (``cuda:LOCAL_RANK``). A rendezvous that
  does not complete within ``timeout`` is a :class:`DistributedSetupError` naming the address, the world size and
  the rank, on every rank that waits, never a hang. Without torchrun's variables it is one process, no group.
- **DDP** (:func:`data_parallel`): every rank holds the model; gradients are all-reduced (averaged) in backward.
- **FSDP2** (:func:`fully_shard_model`): ``fully_shard`` on every ``TransformerBlock``, then on the root, whose unit
  holds the embeddings, the head and the masked-LM projector tied to the word embeddings (one parameter, in one
  unit). :func:`load_sharded` builds the model on the meta device, shards it, allocates only this rank's shards
  (``to_empty``) and copies each shard from the memory-mapped checkpoint: no rank holds a full model, random or not.
- **Same numbers as one process** (:func:`train_step`): the global batch is split across ranks by the data layer
  (``BatchLoader(world_size=, rank=)``); each rank's loss is weighted by its share of the global batch's targets
  (non-ignored labels), so after the engine's gradient average the update is that of the global mean loss, for
  token-level tasks too, where ranks hold different numbers of targets. The loss returned is the global one.
- **Checkpoints** (:func:`save_state` / :func:`load_state`): ``torch.distributed.checkpoint`` with its Hugging Face
  storage (one safetensors file of this rank's shards per rank, the shard offsets in the header; no pickle) and a
  JSON file with the optimizer's groups and hyper-parameters. Loading reshards: a checkpoint written by N ranks, with
  DDP or FSDP2, loads on M ranks or in one process. :func:`save_pretrained` gathers the full weights once and rank
  0 writes the standard folder every framework loads.
"""

from __future__ import annotations

import atexit
import datetime
import logging
import os
import shutil
import uuid
from collections.abc import Mapping, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE
from distilbert_mf.training.distributed import check_stored_shapes
from distilbert_mf.training.masking import IGNORE_INDEX
from distilbert_mf.training.state import read_json, write_json

__all__ = [
    "DCP_FOLDER",
    "DCP_META_FILE",
    "DistributedContext",
    "DistributedSetupError",
    "data_parallel",
    "empty_sharded",
    "engine",
    "fill_from_arrays",
    "fully_shard_model",
    "gather_arrays",
    "global_shares",
    "gradient_sync",
    "init_distributed",
    "is_distributed_checkpoint",
    "launch_environment",
    "load_sharded",
    "load_state",
    "save_pretrained",
    "save_state",
    "shutdown",
    "target_count",
    "train_step",
    "unwrap",
    "world",
]

logger = logging.getLogger(__name__)

DCP_FOLDER = "dcp"  # checkpoint-N/dcp/: one safetensors file per rank that saved (torch.distributed.checkpoint)
DCP_META_FILE = "torch_dcp.json"  # checkpoint-N/dcp/torch_dcp.json: groups, hyper-parameters, world size
DCP_FORMAT = 1
TIMEOUT_ENV = "DISTILBERT_MF_DIST_TIMEOUT"  # seconds for the rendezvous and every collective
DEFAULT_TIMEOUT_S = 600.0
_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
STRATEGIES = ("ddp", "fsdp")


class DistributedSetupError(RuntimeError):
    """The process group could not be formed (bad or missing launcher variables, a rendezvous that timed out)."""


# ----------------------------------------------------------------------------------------------------------------------
# The process group
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DistributedContext:
    """This process's place in the job: ``rank`` of ``world_size`` (``local_rank`` on its machine), the
    collective ``backend`` (None: one process, no group) and the ``device`` its model lives on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that writes the model folder and the run files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """A process group is formed (``world_size > 1``)."""
        return self.backend is not None

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def broadcast_object(self, value: Any, src: int = 0) -> Any:
        """``value`` of rank ``src`` on every rank (a small JSON-able object: a path, a list of names)."""
        if not self.distributed:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=src)
        return box[0]


def _int_variable(name: str, value: str, low: int) -> int:
    try:
        number = int(value)
    except ValueError:
        number = low - 1
    if number < low:
        raise DistributedSetupError(f"environment variable {name}={value!r} must be an integer >= {low}")
    return number


def launch_environment(environ: Mapping[str, str] | None = None) -> dict[str, Any] | None:
    """torchrun's variables, checked: ``{"rank", "world_size", "local_rank", "master_addr", "master_port"}``, or
    None when the process was not started by a launcher (no ``WORLD_SIZE`` / ``RANK``).

    Raises:
        DistributedSetupError: a variable is missing or not an integer in range.
    """
    env = os.environ if environ is None else environ
    if "WORLD_SIZE" not in env and "RANK" not in env:
        return None
    missing = [name for name in _TORCHRUN_VARIABLES if not env.get(name)]
    if "LOCAL_RANK" in missing and env.get("WORLD_SIZE") == "1":
        missing.remove("LOCAL_RANK")
    if missing:
        raise DistributedSetupError(
            f"the launcher variables {missing} are not set (found {sorted(n for n in _TORCHRUN_VARIABLES if n in env)}"
            "); start the job with torchrun --nproc_per_node N ..., or set all of "
            f"{list(_TORCHRUN_VARIABLES)}"
        )
    world_size = _int_variable("WORLD_SIZE", env["WORLD_SIZE"], 1)
    rank = _int_variable("RANK", env["RANK"], 0)
    local_rank = _int_variable("LOCAL_RANK", env.get("LOCAL_RANK", "0"), 0)
    port = _int_variable("MASTER_PORT", env["MASTER_PORT"], 1)
    if rank >= world_size:
        raise DistributedSetupError(f"RANK={rank} is not below WORLD_SIZE={world_size}")
    return {
        "rank": rank,
        "world_size": world_size,
        "local_rank": local_rank,
        "master_addr": env["MASTER_ADDR"],
        "master_port": port,
    }


def _timeout(timeout: float | None) -> float:
    if timeout is None:
        raw = os.environ.get(TIMEOUT_ENV)
        if raw is None:
            return DEFAULT_TIMEOUT_S
        try:
            timeout = float(raw)
        except ValueError:
            raise DistributedSetupError(f"{TIMEOUT_ENV}={raw!r} must be a number of seconds > 0") from None
    if not timeout > 0:
        raise DistributedSetupError(f"timeout must be a number of seconds > 0, got {timeout!r}")
    return float(timeout)


def init_distributed(
    backend: str | None = None, *, timeout: float | None = None, device: str | torch.device | None = None
) -> DistributedContext:
    """Form the process group torchrun describes, or return the one-process context when not launched by it.

    Args:
        backend: ``"gloo"`` (CPU), ``"nccl"`` (CUDA GPUs); None: NCCL when CUDA is available, else gloo.
        timeout: seconds the rendezvous and each collective may wait (default ``$DISTILBERT_MF_DIST_TIMEOUT`` or
            600); a peer that never comes is an error after it, not a hang.
        device: this rank's device (default ``cuda:LOCAL_RANK`` with NCCL, else CPU).

    Raises:
        DistributedSetupError: bad launcher variables, an unknown or unavailable backend, a rendezvous that did not
            complete (the message names ``MASTER_ADDR:MASTER_PORT``, the world size, this rank and the timeout).
    """
    seconds = _timeout(timeout)
    env = launch_environment()
    if env is None or env["world_size"] == 1:
        target = torch.device(device) if device is not None else torch.device("cpu")
        return DistributedContext(device=target)
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise DistributedSetupError(f"backend must be 'gloo' (CPU) or 'nccl' (CUDA GPUs), got {backend!r}")
    if not dist.is_available() or not dist.is_backend_available(backend):
        raise DistributedSetupError(f"this PyTorch build has no {backend!r} backend; use 'gloo' on CPU")
    if backend == "nccl" and not torch.cuda.is_available():
        raise DistributedSetupError("backend 'nccl' needs CUDA GPUs, and this PyTorch sees none; use 'gloo' on CPU")
    if device is not None:
        target = torch.device(device)
    elif backend == "nccl":
        target = torch.device("cuda", env["local_rank"])
    else:
        target = torch.device("cpu")
    if target.type == "cuda":
        torch.cuda.set_device(target)
    where = f"{env['master_addr']}:{env['master_port']}"
    if dist.is_initialized():
        if dist.get_world_size() != env["world_size"] or dist.get_rank() != env["rank"]:
            raise DistributedSetupError(
                f"a process group of rank {dist.get_rank()} / world {dist.get_world_size()} is formed already, but "
                f"the launcher says rank {env['rank']} / world {env['world_size']}"
            )
    else:
        try:
            dist.init_process_group(
                backend,
                rank=env["rank"],
                world_size=env["world_size"],
                timeout=datetime.timedelta(seconds=seconds),
                device_id=target if target.type == "cuda" else None,
            )
        except (RuntimeError, ValueError) as err:  # DistStoreError / DistNetworkError are RuntimeErrors
            raise DistributedSetupError(
                f"rank {env['rank']} of {env['world_size']} could not join the process group at {where} within "
                f"{seconds:g} s ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); check that "
                "every rank was started (torchrun --nnodes/--nproc_per_node), that MASTER_ADDR/MASTER_PORT are "
                f"reachable from every machine, or raise {TIMEOUT_ENV}"
            ) from err
    logger.info(
        "rank %d of %d joined the %s group at %s (device %s)", env["rank"], env["world_size"], backend, where, target
    )
    return DistributedContext(env["rank"], env["world_size"], env["local_rank"], backend, target)


def shutdown(ctx: DistributedContext | None = None) -> None:
    """Leave the process group, if one is formed, after a barrier (a rank that left while a peer still finished
    the last collective would break that peer's connection)."""
    if dist.is_available() and dist.is_initialized() and (ctx is None or ctx.distributed):
        dist.barrier()
        dist.destroy_process_group()


# ----------------------------------------------------------------------------------------------------------------------
# Wrapping the model
# ----------------------------------------------------------------------------------------------------------------------


def unwrap(model: nn.Module) -> nn.Module:
    """The DistilBERT model inside a DDP wrapper (an FSDP2 model is its own module)."""
    from torch.nn.parallel import DistributedDataParallel

    return model.module if isinstance(model, DistributedDataParallel) else model


def data_parallel(model: nn.Module, ctx: DistributedContext, **ddp_options: Any) -> nn.Module:
    """``model`` (on ``ctx.device``) under ``DistributedDataParallel``; in one process, ``model`` itself.

    Every rank must pass the same weights (``from_pretrained`` of the same checkpoint); DDP also broadcasts rank
    0's at construction. ``ddp_options`` go to DDP (``find_unused_parameters`` ...)."""
    from torch.nn.parallel import DistributedDataParallel

    if not ctx.distributed:
        return model
    model = model.to(ctx.device)
    if ctx.device.type == "cuda":
        ddp_options.setdefault("device_ids", [ctx.device.index])
    return DistributedDataParallel(model, **ddp_options)


def fully_shard_model(
    model: nn.Module,
    *,
    mesh: Any = None,
    reshard_after_forward: bool = True,
    mp_policy: Any = None,
) -> nn.Module:
    """FSDP2 in place: ``fully_shard`` each ``TransformerBlock``, then the root (embeddings, head and the tied
    masked-LM projector: one parameter, in the root unit). Works on a meta-device model (:func:`load_sharded`).
    ``mesh``: a 1-d ``DeviceMesh`` (default: the whole world); ``mp_policy``: an FSDP2 ``MixedPrecisionPolicy``."""
    from torch.distributed.fsdp import fully_shard

    from distilbert_mf.torch.modeling import DistilBertPreTrainedModel

    if not isinstance(model, DistilBertPreTrainedModel):
        raise TypeError(f"model must be a distilbert_mf PyTorch model, got {type(model).__name__}")
    if not dist.is_initialized():
        raise DistributedSetupError("FSDP needs a process group: call init_distributed() under torchrun first")
    options: dict[str, Any] = {"mesh": mesh, "reshard_after_forward": reshard_after_forward}
    if mp_policy is not None:
        options["mp_policy"] = mp_policy
    for block in model.base_model.transformer.layer:
        fully_shard(block, **options)
    fully_shard(model, **options)
    return model


@torch.no_grad()
def fill_from_arrays(model: nn.Module, arrays: Mapping[str, np.ndarray]) -> None:
    """Copy canonical full-size ``arrays`` into the parameters; an FSDP2 parameter gets only this rank's shard
    (sliced from the array, so a memory-mapped checkpoint is read only where this rank's rows lie).

    Raises:
        KeyError: a parameter has no array (every parameter must be filled: ``to_empty`` left them undefined).
        ValueError: an array's shape differs from its parameter's.
    """
    from torch.distributed.tensor import DTensor, distribute_tensor

    params = dict(unwrap(model).named_parameters())  # a tied parameter once, under its first name
    missing = sorted(set(params) - set(arrays))
    if missing:
        raise KeyError(f"no weights for {missing[:5]}{' ...' if len(missing) > 5 else ''}: every parameter needs one")
    for name, param in params.items():
        array = arrays[name]
        if tuple(array.shape) != tuple(param.shape):
            raise ValueError(f"weight {name!r} has shape {tuple(array.shape)} but the model needs {tuple(param.shape)}")
        full = (
            torch.from_numpy(np.ascontiguousarray(array)) if isinstance(array, np.ndarray) else torch.as_tensor(array)
        )
        if isinstance(param, DTensor):
            shard = distribute_tensor(full, param.device_mesh, param.placements, src_data_rank=None)
            param.to_local().copy_(shard.to_local().to(param.dtype))
        else:
            param.copy_(full.to(param.dtype))


def load_sharded(
    cls: type,
    source: str | os.PathLike[str],
    *,
    ctx: DistributedContext,
    config: Any = None,
    new_weights: Mapping[str, np.ndarray] | None = None,
    dtype: Any = None,
    mesh: Any = None,
    reshard_after_forward: bool = True,
    mp_policy: Any = None,
    **hub: Any,
) -> nn.Module:
    """``cls`` (a PyTorch DistilBERT class) from ``source`` under FSDP2, never materialised whole on any rank.

    The model is declared on the meta device, sharded by :func:`fully_shard_model`, given storage for this rank's
    shards only (``to_empty(device=ctx.device)``) and filled from the checkpoint's (memory-mapped) arrays;
    ``new_weights`` (canonical arrays, e.g. a new head drawn by the trainer) fill what the checkpoint lacks or
    holds at another size. ``source`` None-like is not allowed: every parameter must come from somewhere.
    Returns the model in training mode."""
    from distilbert_mf.checkpoint.loading import check_arrays, read_pretrained

    hub = {key: value for key, value in hub.items() if value is not None}
    config, state, where = read_pretrained(source, cls.head, config=config, **hub)
    arrays, report = check_arrays(
        state, config, cls.head, source=where, from_file=True, ignore_mismatched_sizes=bool(new_weights)
    )
    del state
    arrays = {**arrays, **dict(new_weights or {})}
    model = empty_sharded(
        cls, config, ctx=ctx, dtype=dtype, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy
    )
    fill_from_arrays(model, arrays)
    report.log(type(model).__name__)
    return model.train()


def empty_sharded(
    cls: type,
    config: Any,
    *,
    ctx: DistributedContext,
    dtype: Any = None,
    mesh: Any = None,
    reshard_after_forward: bool = True,
    mp_policy: Any = None,
) -> nn.Module:
    """``cls(config)`` declared on the meta device, sharded by :func:`fully_shard_model` and given storage for this
    rank's shards only, its values undefined: fill them (:func:`fill_from_arrays`, :func:`load_state`)."""
    from distilbert_mf.torch.modeling import torch_dtype

    model = cls(config, device="meta", dtype=torch_dtype(dtype) or torch.float32)
    fully_shard_model(model, mesh=mesh, reshard_after_forward=reshard_after_forward, mp_policy=mp_policy)
    return model.to_empty(device=ctx.device)


# ----------------------------------------------------------------------------------------------------------------------
# The update
# ----------------------------------------------------------------------------------------------------------------------


def target_count(batch: Mapping[str, np.ndarray | torch.Tensor]) -> int:
    """The loss's targets in a (local) batch: ``labels`` entries that are not -100 for integer labels (tokens of
    token classification / masked LM, rows of classification), else its rows (float labels, question answering)."""
    labels = batch.get("labels")
    if labels is None:
        return int(batch["input_ids"].shape[0])
    if isinstance(labels, torch.Tensor):
        if labels.is_floating_point():
            return int(labels.shape[0])
        return int((labels != IGNORE_INDEX).sum())
    labels = np.asarray(labels)
    return int(np.count_nonzero(labels != IGNORE_INDEX)) if labels.dtype.kind in "iu" else int(labels.shape[0])


def _global_counts(counts: Sequence[int], ctx: DistributedContext) -> list[int]:
    local = torch.tensor(list(counts), dtype=torch.float64, device=ctx.device)
    if ctx.distributed:
        dist.all_reduce(local)
    return [int(v) for v in local.tolist()]


def gradient_sync(model: nn.Module, last: bool) -> Any:
    """Skip the gradient reduction of every micro-batch but an update's last (DDP ``no_sync``; FSDP2
    ``set_requires_gradient_sync``); the numbers do not change, only the traffic. A context for the micro-batch's
    forward and backward."""
    if hasattr(model, "set_requires_gradient_sync"):
        model.set_requires_gradient_sync(last)
    if last or not hasattr(model, "no_sync"):
        return nullcontext()
    return model.no_sync()


def global_shares(counts: Sequence[Mapping[str, int]], world: Any) -> list[dict[str, float]]:
    """Per micro-batch, ``world_size * n / N`` for each named count (``n`` this rank's, ``N`` the sum over ranks, one
    all-reduce for all): the factor that turns a local mean over ``n`` items into this rank's part of the global
    mean, under an engine that averages gradients over ranks. 0 where no rank has an item (the local mean is 0)."""
    names = [sorted(c) for c in counts]
    flat = [float(c[name]) for c, keys in zip(counts, names) for name in keys]
    totals = iter(world.all_sum(flat))
    shares = []
    for c, keys in zip(counts, names):
        shares.append({name: world.world_size * c[name] / total if (total := next(totals)) else 0.0 for name in keys})
    return shares


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    ctx: DistributedContext,
    learning_rate: float,
    max_grad_norm: float | None,
    bf16: bool = False,
) -> tuple[float, float]:
    """One update from this rank's share of the step's micro-batches -> (global mean micro-batch loss, global
    gradient norm before clipping), the numbers one process would get from the whole batches.

    Micro-batch ``i``'s local loss (a mean over its ``n_i`` local targets) is scaled by
    ``world_size * n_i / N_i`` (``N_i`` the global count, one all-reduce per update), so the engine's gradient
    average is the gradient of the global mean; then :func:`distilbert_mf.torch.training.apply_update` clips
    (over the sharded gradients, a global norm), sets the rate and steps."""
    from distilbert_mf.torch.training import apply_update, autocast

    if not batches:
        raise ValueError("an update needs at least one micro-batch, got none")
    counts = [target_count(batch) for batch in batches]
    totals = _global_counts(counts, ctx)
    weighted_sum = torch.zeros((), dtype=torch.float64, device=ctx.device)
    for index, batch in enumerate(batches):
        share = counts[index] / totals[index] if totals[index] else 0.0
        with gradient_sync(model, index == len(batches) - 1), autocast(ctx.device, bf16):
            loss = model(**batch).loss
        scale = ctx.world_size * share / len(batches)
        (loss * scale).backward()
        weighted_sum += loss.detach().double() * share
    if ctx.distributed:
        dist.all_reduce(weighted_sum)
    grad_norm = apply_update(model, optimizer, learning_rate=learning_rate, max_grad_norm=max_grad_norm)
    return float(weighted_sum) / len(batches), grad_norm


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints: torch.distributed.checkpoint (sharded, reshardable) and the standard folder
# ----------------------------------------------------------------------------------------------------------------------


def _tied_alias(model: nn.Module) -> str | None:
    inner = unwrap(model)
    return TIED_KEY if getattr(inner, "_tied", lambda: False)() else None


def _flat_state(model: nn.Module, optimizer: torch.optim.Optimizer | None) -> dict[str, torch.Tensor]:
    """``model/<name>``, ``optimizer/<name>/<exp_avg|exp_avg_sq|step>`` tensors (DTensors under FSDP2), canonical
    names, the tied projector once; what DCP saves and loads in place."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_state_dict

    alias = _tied_alias(model)
    if optimizer is None:
        model_state, optim_state = get_model_state_dict(model), {"state": {}}
    else:
        model_state, optim_state = get_state_dict(model, optimizer)
    flat = {f"model/{name}": value for name, value in model_state.items() if name != alias}
    for name, values in optim_state["state"].items():
        if name == alias:
            continue
        for key, value in values.items():
            if not isinstance(value, torch.Tensor):
                raise TypeError(f"optimizer state {name}/{key} is a {type(value).__name__}, not a tensor")
            flat[f"optimizer/{name}/{key}"] = value
    return flat


def _group_entries(model: nn.Module, optimizer: torch.optim.Optimizer) -> list[dict[str, Any]]:
    from torch.distributed.checkpoint.state_dict import get_state_dict

    _, optim_state = get_state_dict(model, optimizer)
    groups = []
    for group in optim_state["param_groups"]:
        entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k not in ("params", "names")}
        entry["params"] = list(group["params"])
        groups.append(entry)
    return groups


def _rng_tensors(ctx: DistributedContext) -> dict[str, torch.Tensor]:
    from distilbert_mf.torch.training import rng_state

    return {f"rng/rank{ctx.rank}/{key}": value for key, value in rng_state(ctx.device).items()}


def save_state(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    ctx: DistributedContext,
    rng: Mapping[str, torch.Tensor] | None = None,
) -> Path:
    """Write the model's and optimizer's shards with ``torch.distributed.checkpoint`` into ``folder/dcp/`` (every
    rank calls it; each writes one safetensors file) with :data:`DCP_META_FILE` beside them (rank 0). ``rng``: this rank's torch
    RNG state to store (default: the current one). The ``dcp`` folder appears whole: written under a temporary
    name, renamed by rank 0 after every rank finished. Returns ``folder``."""
    import torch.distributed.checkpoint as dcp

    folder = Path(folder)
    temporary = ctx.broadcast_object(f".{DCP_FOLDER}-{uuid.uuid4().hex}.tmp")
    staging = folder / temporary
    if ctx.is_main:
        folder.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    state = _flat_state(model, optimizer)
    rng_state = {f"rng/rank{ctx.rank}/{k}": v for k, v in rng.items()} if rng is not None else _rng_tensors(ctx)
    state.update({k: v.detach().cpu().contiguous() for k, v in rng_state.items()})
    groups = _group_entries(model, optimizer)
    try:
        dcp.save(state, storage_writer=dcp.HuggingFaceStorageWriter(str(staging), save_distributed=True))
        ctx.barrier()
        if ctx.is_main:
            write_json(
                staging / DCP_META_FILE,
                {
                    "format": DCP_FORMAT,
                    "framework": "pt",
                    "world_size": ctx.world_size,
                    "optimizer": type(optimizer).__name__,
                    "param_groups": groups,
                },
            )
            final = folder / DCP_FOLDER
            if final.exists():
                shutil.rmtree(final)
            os.replace(staging, final)
    except BaseException:
        if ctx.is_main:
            shutil.rmtree(staging, ignore_errors=True)
        raise
    ctx.barrier()
    return folder


def is_distributed_checkpoint(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds what :func:`save_state` writes."""
    return (Path(folder) / DCP_FOLDER / DCP_META_FILE).is_file()


def _stored_shapes(folder: Path) -> dict[str, tuple[int, ...]]:
    import torch.distributed.checkpoint as dcp

    metadata = dcp.HuggingFaceStorageReader(str(folder / DCP_FOLDER)).read_metadata()
    return {key: tuple(entry.size) for key, entry in metadata.state_dict_metadata.items()}


def load_state(
    folder: str | os.PathLike[str],
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    *,
    ctx: DistributedContext,
) -> dict[str, torch.Tensor] | None:
    """Load what :func:`save_state` wrote, with any world size and either engine (or none), into ``model`` and
    ``optimizer`` (None: the weights only), in place; restores this rank's RNG state when the checkpoint has one
    for it and returns it (None otherwise: a run resumed on more ranks than saved draws new dropout masks).

    Every rank checks the stored names and shapes against the model first and raises the same ``ValueError``
    (another model, head or optimizer grouping), before any collective.
    """
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import set_state_dict

    from distilbert_mf.torch.training import set_rng_state

    folder = Path(folder)
    meta_path = folder / DCP_FOLDER / DCP_META_FILE
    if not meta_path.is_file():
        raise FileNotFoundError(
            f"{folder} holds no distributed PyTorch checkpoint ({DCP_FOLDER}/{DCP_META_FILE} is missing)"
        )
    meta = read_json(meta_path)
    if not isinstance(meta, dict) or meta.get("format") != DCP_FORMAT or meta.get("framework") != "pt":
        raise ValueError(f"{meta_path}: not a distributed PyTorch checkpoint of format {DCP_FORMAT}")
    state = _flat_state(model, optimizer)
    stored = _stored_shapes(folder)
    wanted = {key: tuple(value.shape) for key, value in state.items()}
    check_stored_shapes(
        folder,
        stored,
        wanted,
        ignore=lambda name: name.startswith("rng/") or (optimizer is None and name.startswith("optimizer/")),
    )
    if optimizer is not None:
        if meta.get("optimizer") != type(optimizer).__name__:
            raise ValueError(f"{folder} holds {meta.get('optimizer')} state, not {type(optimizer).__name__} state")
        current = _group_entries(model, optimizer)
        if [g["params"] for g in current] != [g["params"] for g in meta["param_groups"]]:
            raise ValueError(
                f"{folder}: the optimizer's parameter groups (decay / no decay) differ from the stored ones"
            )
    rng_keys = {k: v for k, v in _rng_tensors(ctx).items() if k in stored}
    state.update({k: torch.empty_like(v) for k, v in rng_keys.items()})
    dcp.load(state, storage_reader=dcp.HuggingFaceStorageReader(str(folder / DCP_FOLDER)))
    alias = _tied_alias(model)
    model_state = {key[len("model/") :]: value for key, value in state.items() if key.startswith("model/")}
    if optimizer is None:
        from torch.distributed.checkpoint.state_dict import set_model_state_dict

        set_model_state_dict(model, model_state, options=_strict_tied(alias))
    else:
        optim_state: dict[str, Any] = {"state": {}, "param_groups": []}
        for key, value in state.items():
            if key.startswith("optimizer/"):
                name, _, item = key[len("optimizer/") :].rpartition("/")
                optim_state["state"].setdefault(name, {})[item] = value
        for group in meta["param_groups"]:
            optim_state["param_groups"].append({k: (tuple(v) if k == "betas" else v) for k, v in group.items()})
        set_state_dict(
            model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state, options=_strict_tied(alias)
        )
    if not rng_keys:
        logger.warning(
            "%s was saved by %d rank(s) and has no RNG state for rank %d: its dropout draws start afresh",
            folder,
            meta.get("world_size"),
            ctx.rank,
        )
        return None
    prefix = f"rng/rank{ctx.rank}/"
    rng = {key[len(prefix) :]: state[key] for key in rng_keys}
    set_rng_state(rng)
    return rng


def _strict_tied(alias: str | None) -> Any:
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(strict=alias is None)


def gather_arrays(model: nn.Module, ctx: DistributedContext) -> dict[str, np.ndarray]:
    """The full canonical weights as float numpy on rank 0 (an empty dict on the other ranks); every rank must call
    it (FSDP2 gathers each parameter once, to the CPU)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from distilbert_mf.checkpoint.names import expected_shapes
    from distilbert_mf.torch.loading import tensor_to_numpy

    inner = unwrap(model)
    if ctx.distributed:
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(model, options=options)
    else:
        state = inner.state_dict()
    if not ctx.is_main:
        return {}
    arrays = {key: tensor_to_numpy(value) for key, value in state.items()}
    expected = expected_shapes(inner.config, inner.head)
    alias = _tied_alias(model)
    if alias is not None and alias not in arrays:
        arrays[alias] = arrays[TIED_SOURCE]
    return {key: arrays[key] for key in expected}


def save_pretrained(model: nn.Module, directory: str | os.PathLike[str], ctx: DistributedContext) -> list[Path]:
    """The standard folder (``config.json`` + ``model.safetensors``) of a DDP / FSDP2 / plain model: the weights
    are gathered (every rank calls this) and rank 0 writes them; returns the written paths (empty on other ranks)."""
    from distilbert_mf.checkpoint.loading import save_pretrained as write

    arrays = gather_arrays(model, ctx)
    written: list[Path] = []
    if ctx.is_main:
        inner = unwrap(model)
        written = write(directory, inner.config, arrays, inner.head)
    ctx.barrier()
    return written


# ----------------------------------------------------------------------------------------------------------------------
# The fine-tuning loop's side (distilbert_mf.torch.training.fit)
# ----------------------------------------------------------------------------------------------------------------------


def world(*, device: torch.device | None = None, backend: str | None = None, timeout: float | None = None) -> Any:
    """Form the process group (:func:`init_distributed`) and describe it as the trainer's
    :class:`~distilbert_mf.training.trainer.World` (its barrier, broadcast and sum are this group's). The other
    ranks' ``distilbert_mf`` log lines are lowered to warnings: rank 0 speaks for the run."""
    from distilbert_mf.training.trainer import World

    ctx = init_distributed(backend, timeout=timeout, device=device)
    if ctx.distributed:  # joined threads before the interpreter ends (gloo's, left running, can abort the exit)
        atexit.register(_leave_group)
    if not ctx.is_main:
        names = [name for name in logging.root.manager.loggerDict if name.startswith("distilbert_mf.")]
        for name in ("distilbert_mf", *names):  # those a command line set to INFO too
            logging.getLogger(name).setLevel(logging.WARNING)

    def all_sum(values: Sequence[float]) -> list[float]:
        total = torch.tensor([float(v) for v in values], dtype=torch.float64, device=ctx.device)
        if ctx.distributed:
            dist.all_reduce(total)
        return total.tolist()

    return World(
        rank=ctx.rank,
        world_size=ctx.world_size,
        barrier=ctx.barrier,
        broadcast=ctx.broadcast_object,
        all_sum=all_sum,
        context=ctx,
    )


def _leave_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def engine(run: Any) -> Any:
    """The loop's :class:`~distilbert_mf.torch.training.Engine` for a run under torchrun (``run.world.context``),
    or for one process resuming a checkpoint torchrun wrote.

    DDP (default): every rank loads the model (``run.load_model``: the checkpoint, memory-mapped, and the new head
    the trainer drew) and DDP wraps it. ``run.args.fsdp``: :func:`load_sharded` (meta device, FSDP2, this rank's
    shards from the checkpoint and the new head). Resuming a ``dcp/`` checkpoint: the model is declared empty
    (sharded or not) and :func:`load_state` fills the weights, the optimizer and this rank's RNG state; a
    one-process checkpoint resumes under DDP (every rank reads it) but not under FSDP2."""
    from distilbert_mf.torch.training import Engine, create_optimizer, load_model, load_training_state, resolve_device

    args = run.args
    ctx = run.world.context
    if ctx is None:
        ctx = DistributedContext(device=resolve_device(args.device))
    resume = run.resume_dir
    sharded_resume = resume is not None and is_distributed_checkpoint(resume)
    cls = run.model_class()
    if args.fsdp:
        if resume is not None and not sharded_resume:
            raise ValueError(
                f"{resume} was written by one process (model.safetensors + optimizer files), which an FSDP2 run "
                "cannot shard on resume; resume it without --fsdp (DDP), or resume a checkpoint an FSDP2 / DDP run "
                f"wrote ({DCP_FOLDER}/)"
            )
        if sharded_resume:
            model = empty_sharded(cls, run.config, ctx=ctx)
        else:
            model = load_sharded(cls, run.init_source, ctx=ctx, config=run.config, new_weights=run.new_weights,
                                 **args.hub_options())  # fmt: skip
    elif sharded_resume:
        model = cls(run.config, device="meta").to_empty(device=ctx.device)
    else:
        model = load_model(run, ctx.device)
    optimizer = create_optimizer(model, run)
    if sharded_resume:
        load_state(resume, model, optimizer, ctx=ctx)
        logger.info("resumed the weights, optimizer and RNG state from %s (%s)", resume, DCP_FOLDER)
    elif resume is not None:
        load_training_state(resume, model, optimizer)
        logger.info("resumed the optimizer and RNG state from %s", resume)
    else:
        torch.manual_seed(args.seed)
    model.train()
    wrapped = model if args.fsdp else data_parallel(model, ctx)
    logger.info(
        "%s over %d process(es), global batch %d (%d per rank)",
        "FSDP2" if args.fsdp else "DDP" if ctx.distributed else "one process",
        ctx.world_size,
        run.loader.batch_size,
        run.loader.local_batch_size,
    )

    def step(batches: Sequence[Mapping[str, torch.Tensor]], **options: Any) -> tuple[float, float]:
        return train_step(wrapped, optimizer, batches, ctx=ctx, **options)

    return Engine(
        wrapped,
        optimizer,
        ctx.device,
        step=step,
        save_state=lambda folder, rng: save_state(folder, wrapped, optimizer, ctx=ctx, rng=rng),
        save_model=lambda folder: save_pretrained(wrapped, folder, ctx),
    )
