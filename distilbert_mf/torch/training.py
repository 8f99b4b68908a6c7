"""Fine-tuning the PyTorch models: a plain loop over ``torch.optim.AdamW``, what transformers' Trainer runs.

One update (:func:`train_step`)::

    for batch in step.batches:                               # gradient_accumulation_steps micro-batches
        with torch.autocast(device.type, torch.bfloat16, enabled=bf16):
            loss = model(**batch).loss
        (loss / len(step.batches)).backward()                # the update sees the mean micro-batch gradient
    grad_norm = clip_grad_norm_(params, max_grad_norm)       # the norm before clipping is logged
    for group in optimizer.param_groups:
        group["lr"] = run.schedule(step.global_step - 1)     # linear warm-up, linear decay (0-based update)
    optimizer.step(); optimizer.zero_grad(set_to_none=True)

- **AdamW**: ``torch.optim.AdamW`` with two parameter groups, weight decay for the names ``run.decays`` accepts and
  0 for biases and LayerNorm weights (transformers' Trainer rule); betas / eps / weight decay from the arguments.
  The learning rate of update ``s`` is set as ``LambdaLR`` would set it (``base * multiplier(s)``), so the numbers
  are transformers' (``tests/models_torch/test_torch_training.py`` compares per-step losses with its Trainer).
- **Gradient accumulation**: each micro-batch's loss is divided by the update's number of micro-batches (fewer at
  the end of an epoch), the same rule in the Keras and Flax loops. (transformers 5.24's Trainer, for a model whose
  ``forward`` takes ``**kwargs`` such as its DistilBERT, neither divides nor passes the item count to the loss, so
  its accumulated gradient is the *sum* of the micro-batch gradients; with one micro-batch per update the two agree.)
- **bf16**: ``torch.autocast`` (bfloat16 matmuls, float32 weights, gradients and optimizer state), on CPU too.
- **Seeded**: the new head weights come from the neutral side (numpy, seeded); dropout draws from
  ``torch.manual_seed(seed)``; the data order is the data layer's.
- **Checkpoints without pickle**: the weights through ``save_pretrained``; the optimizer state as a safetensors file
  keyed by canonical parameter names (``optimizer/<name>/exp_avg`` ...) plus a JSON file (the parameter groups and
  hyper-parameters); the torch RNG state (CPU, and CUDA where used) in the same safetensors file. The RNG state
  saved is the one right after the update, so a checkpoint taken on Ctrl-C in the middle of the next update still
  resumes exactly.
- **Ctrl-C**: the update and its bookkeeping run under :func:`~distilbert_mf.training.trainer.hold_interrupts`;
  the interrupt then saves a checkpoint of the last completed update (``run.interrupted``) and is re-raised.

**Several processes** (``torchrun --nproc_per_node N distilbert-mf train ...``): :func:`launch_world` forms the
process group from torchrun's variables and every rank gets its share of each global batch
(``per_device_train_batch_size * N`` rows); the model is wrapped by DDP, or with ``fsdp=True`` (``--fsdp``) sharded by
FSDP2 from a meta-device model (:mod:`distilbert_mf.torch.distributed`); the step weights each rank's loss by its
share of the targets, so the run is the one-process run; checkpoints are ``torch.distributed.checkpoint`` shards
(``checkpoint-N/dcp/``, resumable on any number of processes, one included) and rank 0 writes the final folder.

No ``accelerate``: on one device this loop is four calls accelerate would wrap (autocast, backward, clipping,
step), its device placement is one ``.to(device)``, and the multi-device engines are torchrun's DDP / FSDP2
(DESIGN §8), which wrap the model without changing this loop. Adding it would add a dependency and hide the
update rule the parity tests pin down, for nothing this loop needs.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from distilbert_mf._io import atomic_path
from distilbert_mf.torch.modeling import DistilBertPreTrainedModel
from distilbert_mf.training.state import read_json, write_json
from distilbert_mf.training.trainer import hold_interrupts

if TYPE_CHECKING:
    from distilbert_mf.training.trainer import TrainingRun, TrainOutput

__all__ = [
    "STATE_FILE",
    "STATE_META_FILE",
    "Engine",
    "apply_update",
    "autocast",
    "create_optimizer",
    "engine_for",
    "fit",
    "launch_world",
    "load_model",
    "load_training_state",
    "one_process",
    "parameter_groups",
    "predict",
    "resolve_device",
    "rng_state",
    "save_training_state",
    "set_rng_state",
    "to_device",
    "train_step",
]

logger = logging.getLogger(__name__)

STATE_FILE = "torch_training_state.safetensors"  # optimizer tensors + RNG state
STATE_META_FILE = "torch_training_state.json"  # parameter groups, hyper-parameters, format
STATE_FORMAT = 1
OUTPUT_NAMES = ("loss", "logits", "start_logits", "end_logits")


# ----------------------------------------------------------------------------------------------------------------------
# Devices, batches, precision
# ----------------------------------------------------------------------------------------------------------------------


def resolve_device(device: Any) -> torch.device:
    """The training device: None -> CUDA when available, else CPU; otherwise any spelling of the shared ``--device``
    option (``cpu``, ``-1``, ``cuda``, ``cuda:1``, ``0``, ``gpu:0``, ``mps``, a ``torch.device``)."""
    from distilbert_mf.pipelines.frameworks import parse_device
    from distilbert_mf.torch.loading import resolve_device as resolve

    parsed = parse_device(device)
    if parsed is None:
        return resolve("auto", None)
    if parsed.kind == "cpu":
        return resolve("cpu", None)
    name = "cuda" if parsed.kind == "gpu" else parsed.kind
    target = resolve(name if parsed.index is None else f"{name}:{parsed.index}", None)
    if target.type == "cuda" and target.index is not None and target.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return target


def to_device(batch: Mapping[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    """A numpy batch as tensors on ``device`` (int64 ids and labels, float32 float targets)."""
    out = {}
    for key, value in batch.items():
        array = np.asarray(value)
        if array.dtype.kind == "f" and array.dtype != np.float32:
            array = array.astype(np.float32)
        out[key] = torch.from_numpy(np.ascontiguousarray(array)).to(device, non_blocking=True)
    return out


def autocast(device: torch.device, bf16: bool) -> AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` when ``bf16``, else nothing."""
    return torch.autocast(device.type, dtype=torch.bfloat16) if bf16 else nullcontext()


# ----------------------------------------------------------------------------------------------------------------------
# The optimizer
# ----------------------------------------------------------------------------------------------------------------------


def parameter_groups(model: nn.Module, run: TrainingRun) -> list[dict[str, Any]]:
    """Two AdamW groups over the trainable parameters: ``run.decays(name)`` with ``weight_decay``, the rest
    (biases, LayerNorm weights) with 0. Each group carries the canonical ``names`` of its ``params``; a tied
    weight appears once (under its first name)."""
    decay: list[tuple[str, nn.Parameter]] = []
    no_decay: list[tuple[str, nn.Parameter]] = []
    for name, param in model.named_parameters():
        if param.requires_grad:
            (decay if run.decays(name) else no_decay).append((name, param))
    groups = []
    for members, weight_decay in ((decay, float(run.args.weight_decay)), (no_decay, 0.0)):
        if members:
            groups.append(
                {"params": [p for _, p in members], "names": [n for n, _ in members], "weight_decay": weight_decay}
            )
    return groups


def create_optimizer(model: nn.Module, run: TrainingRun) -> torch.optim.AdamW:
    """``torch.optim.AdamW`` over :func:`parameter_groups` with the run's betas and eps, at the learning rate of
    update 0 (the loop sets each update's rate)."""
    if not isinstance(model, DistilBertPreTrainedModel):
        raise TypeError(f"model must be a distilbert_mf PyTorch model, got {type(model).__name__}")
    args = run.args
    return torch.optim.AdamW(
        parameter_groups(model, run),
        lr=float(run.schedule(0)),
        betas=(float(args.adam_beta1), float(args.adam_beta2)),
        eps=float(args.adam_epsilon),
    )


def _trainable(optimizer: torch.optim.Optimizer) -> list[torch.Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def train_step(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    batches: Sequence[Mapping[str, torch.Tensor]],
    *,
    learning_rate: float,
    max_grad_norm: float | None,
    bf16: bool = False,
) -> tuple[float, float]:
    """One update from ``batches`` (the step's micro-batches, on the model's device) -> (mean micro-batch loss,
    global gradient norm before clipping). ``max_grad_norm`` None or 0: no clipping."""
    if not batches:
        raise ValueError("an update needs at least one micro-batch, got none")
    device = next(model.parameters()).device
    count = len(batches)
    losses = []
    for batch in batches:
        with autocast(device, bf16):
            loss = model(**batch).loss
        (loss / count if count > 1 else loss).backward()
        losses.append(loss.detach())
    grad_norm = apply_update(model, optimizer, learning_rate=learning_rate, max_grad_norm=max_grad_norm)
    mean = losses[0] if count == 1 else torch.stack(losses).float().mean()
    return float(mean), grad_norm


def apply_update(
    model: nn.Module, optimizer: torch.optim.Optimizer, *, learning_rate: float, max_grad_norm: float | None
) -> float:
    """The end of an update once the gradients are in: clip to ``max_grad_norm`` (None or 0: no clipping), set the
    learning rate, ``optimizer.step()``, clear the gradients. Returns the global gradient norm before clipping.

    The norm is taken over ``model.parameters()`` in the model's order, as the Trainer clips (the sum of squares is
    rounded in that order)."""
    params = [p for p in model.parameters() if p.grad is not None]
    if max_grad_norm:
        grad_norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
    else:
        grad_norm = torch.nn.utils.get_total_norm([p.grad for p in params])
    for group in optimizer.param_groups:
        group["lr"] = learning_rate
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return float(grad_norm)


@torch.no_grad()
def predict(model: nn.Module, batch: Mapping[str, np.ndarray], *, bf16: bool = False) -> dict[str, np.ndarray]:
    """Evaluation forward (dropout off) of a numpy batch -> its outputs (``loss``, ``logits`` / ``start_logits`` +
    ``end_logits``) as float32 numpy. The model's train / eval mode is restored afterwards."""
    device = next(model.parameters()).device
    training = model.training
    model.eval()
    try:
        with autocast(device, bf16):
            out = model(**to_device(batch, device))
    finally:
        model.train(training)
    result = {}
    for name in OUTPUT_NAMES:
        value = getattr(out, name, None)
        if value is not None:
            result[name] = value.detach().float().cpu().numpy()
    return result


# ----------------------------------------------------------------------------------------------------------------------
# Training state: optimizer + RNG as safetensors + JSON (no pickle)
# ----------------------------------------------------------------------------------------------------------------------


def rng_state(device: torch.device | None = None) -> dict[str, torch.Tensor]:
    """The torch RNG state: ``cpu`` and, when CUDA is initialised, ``cuda:N`` per device (uint8 tensors)."""
    states = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for index, state in enumerate(torch.cuda.get_rng_state_all()):
            states[f"cuda:{index}"] = state
    return states


def set_rng_state(states: Mapping[str, torch.Tensor]) -> None:
    """Restore what :func:`rng_state` returned (CUDA states only where CUDA is available)."""
    if "cpu" in states:
        torch.set_rng_state(states["cpu"].cpu())
    cuda = sorted((k for k in states if k.startswith("cuda:")), key=lambda k: int(k.split(":")[1]))
    if cuda:
        if torch.cuda.is_available():
            count = torch.cuda.device_count()
            for key in cuda:
                index = int(key.split(":")[1])
                if index < count:
                    torch.cuda.set_rng_state(states[key].cpu(), index)
        else:
            logger.warning("the checkpoint holds CUDA RNG states but CUDA is not available: dropout draws differ")


def _group_names(optimizer: torch.optim.Optimizer) -> list[list[str]]:
    names = []
    for index, group in enumerate(optimizer.param_groups):
        if "names" not in group or len(group["names"]) != len(group["params"]):
            raise ValueError(
                f"optimizer parameter group {index} has no 'names' list matching its params; build the optimizer "
                "with create_optimizer (or groups from parameter_groups)"
            )
        names.append(list(group["names"]))
    return names


def save_training_state(
    folder: str | os.PathLike[str],
    model: DistilBertPreTrainedModel,
    optimizer: torch.optim.Optimizer,
    rng: Mapping[str, torch.Tensor] | None = None,
) -> None:
    """Write ``model`` (``save_pretrained``), the optimizer state and the RNG state (``rng``, default the current
    :func:`rng_state`) into ``folder``: ``model.safetensors``, :data:`STATE_FILE`, :data:`STATE_META_FILE`.
    Nothing is pickled; every file appears atomically."""
    from safetensors.torch import save_file

    folder = Path(folder)
    model.save_pretrained(folder)
    state = optimizer.state_dict()
    names = _group_names(optimizer)
    flat_names = [name for group in names for name in group]
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, values in state["state"].items():
        name = flat_names[index]
        for key, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{name}/{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(name, {})[key] = value
    for key, value in (rng if rng is not None else rng_state()).items():
        tensors[f"rng/{key}"] = value.detach().cpu().contiguous()
    groups = []
    for group, group_names in zip(state["param_groups"], names):
        entry = {k: (list(v) if isinstance(v, tuple) else v) for k, v in group.items() if k not in ("params",)}
        entry["names"] = group_names
        groups.append(entry)
    with atomic_path(folder / STATE_FILE) as tmp:
        save_file(tensors, str(tmp), metadata={"format": "distilbert_mf.torch.training"})
    meta = {
        "format": STATE_FORMAT,
        "framework": "pt",
        "optimizer": type(optimizer).__name__,
        "param_groups": groups,
        "scalars": scalars,
    }
    write_json(folder / STATE_META_FILE, meta)


def load_training_state(
    folder: str | os.PathLike[str], model: DistilBertPreTrainedModel, optimizer: torch.optim.Optimizer
) -> dict[str, torch.Tensor]:
    """Restore the optimizer state written by :func:`save_training_state` into ``optimizer`` (built for ``model``
    by :func:`create_optimizer`) and the torch RNG state; returns the RNG state. The weights come with
    ``from_pretrained(folder)``.

    Raises:
        FileNotFoundError: ``folder`` lacks the files. KeyError / ValueError: they belong to another model, head or
        optimizer (parameter names, groups or shapes differ).
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    for name in (STATE_FILE, STATE_META_FILE):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder} holds no PyTorch training state ({name} is missing)")
    meta = read_json(folder / STATE_META_FILE)
    if not isinstance(meta, dict) or meta.get("format") != STATE_FORMAT or meta.get("framework") != "pt":
        raise ValueError(f"{folder / STATE_META_FILE}: not a PyTorch training state of format {STATE_FORMAT}")
    if meta.get("optimizer") != type(optimizer).__name__:
        raise ValueError(f"{folder} holds {meta.get('optimizer')} state, not {type(optimizer).__name__} state")
    tensors = load_file(folder / STATE_FILE)
    names = _group_names(optimizer)
    stored_groups = meta["param_groups"]
    stored_names = [g["names"] for g in stored_groups]
    if stored_names != names:
        missing = sorted({n for g in names for n in g} - {n for g in stored_names for n in g})
        unexpected = sorted({n for g in stored_names for n in g} - {n for g in names for n in g})
        raise KeyError(
            f"{folder}: the optimizer state does not fit this model: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]} (or the decay / no-decay groups differ)"
        )
    flat_names = [name for group in names for name in group]
    params = _trainable(optimizer)
    state: dict[int, dict[str, Any]] = {}
    for index, name in enumerate(flat_names):
        prefix = f"optimizer/{name}/"
        entry: dict[str, Any] = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
        if not entry:
            continue  # no update touched it yet
        entry.update(meta.get("scalars", {}).get(name, {}))
        for key, value in entry.items():
            if key != "step" and isinstance(value, torch.Tensor) and tuple(value.shape) != tuple(params[index].shape):
                raise ValueError(
                    f"{folder}: {prefix}{key} has shape {tuple(value.shape)} but the parameter has "
                    f"{tuple(params[index].shape)}"
                )
        state[index] = entry
    groups = []
    offset = 0
    for stored in stored_groups:
        group = {k: (tuple(v) if k == "betas" else v) for k, v in stored.items()}
        count = len(group["names"])
        group["params"] = list(range(offset, offset + count))
        offset += count
        groups.append(group)
    optimizer.load_state_dict({"state": state, "param_groups": groups})
    rng = {k[len("rng/") :]: v for k, v in tensors.items() if k.startswith("rng/")}
    set_rng_state(rng)
    return rng


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


def load_model(run: TrainingRun, device: torch.device | None = None) -> DistilBertPreTrainedModel:
    """The run's model (its head class, config and starting weights) on ``device``, in training mode."""
    device = device if device is not None else resolve_device(run.args.device)
    model = run.load_model(device=device)
    model.train()
    return model


def _batches_on(batches: Iterable[Mapping[str, np.ndarray]], device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [to_device(batch, device) for batch in batches]


def launch_world(args: Any) -> Any:
    """The :class:`~distilbert_mf.training.trainer.World` of a run started by torchrun (None otherwise): the
    process group is formed here, before the run is prepared (see :mod:`distilbert_mf.torch.distributed`)."""
    from distilbert_mf.torch.distributed import launch_environment, world

    if launch_environment() is None:
        if args.fsdp:
            raise ValueError("fsdp=True (--fsdp) shards over several processes: start the run with torchrun")
        return None
    device = resolve_device(args.device) if args.device is not None else None
    return world(device=device)


@dataclass
class Engine:
    """How the loop's model is placed: one process (:func:`one_process`), or DDP / FSDP2 over torchrun's processes
    (:func:`distilbert_mf.torch.distributed.engine`). The loop in :func:`fit` is the same for both."""

    model: nn.Module  # what the loop calls (a DDP wrapper, an FSDP2 model or the model itself)
    optimizer: torch.optim.Optimizer
    device: torch.device
    step: Callable[..., tuple[float, float]]  # (batches, *, learning_rate, max_grad_norm, bf16) -> (loss, norm)
    save_state: Callable[[Path, Mapping[str, torch.Tensor]], None]  # (checkpoint folder, RNG state after the update)
    save_model: Callable[[Path], Any]  # the final folder


def one_process(run: TrainingRun) -> Engine:
    """The model on ``run.args.device``, its optimizer, resumed from ``run.resume_dir`` or seeded."""
    device = resolve_device(run.args.device)
    model = load_model(run, device)
    optimizer = create_optimizer(model, run)
    if run.resume_dir is not None:
        load_training_state(run.resume_dir, model, optimizer)
        logger.info("resumed the optimizer and RNG state from %s", run.resume_dir)
    else:
        torch.manual_seed(run.args.seed)
    return Engine(
        model,
        optimizer,
        device,
        step=functools.partial(train_step, model, optimizer),
        save_state=lambda folder, rng: save_training_state(folder, model, optimizer, rng),
        save_model=model.save_pretrained,
    )


def engine_for(run: TrainingRun) -> Engine:
    """:func:`one_process`, or :func:`distilbert_mf.torch.distributed.engine` under torchrun (``run.world``) and when
    resuming a checkpoint torchrun wrote."""
    from distilbert_mf.torch import distributed

    sharded = run.resume_dir is not None and distributed.is_distributed_checkpoint(run.resume_dir)
    return distributed.engine(run) if run.world.context is not None or sharded else one_process(run)


def fit(run: TrainingRun) -> TrainOutput:
    """Train ``run`` with the PyTorch model: the loop over ``run.steps()``; logging, evaluation and checkpoints
    through ``run.end_step``; Ctrl-C saves a checkpoint of the last completed update (``run.interrupted``).
    Under torchrun (``run.world``), or resuming a checkpoint torchrun wrote, the model is placed by
    :func:`distilbert_mf.torch.distributed.engine`."""
    args = run.args
    engine = engine_for(run)
    model, device = engine.model, engine.device
    rng_after_update = rng_state(device)
    max_grad_norm = args.max_grad_norm if args.max_grad_norm else None

    def save(folder: Path) -> None:
        engine.save_state(folder, rng_after_update)

    def run_predict(batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        return predict(model, batch, bf16=args.bf16)

    try:
        for step in run.steps():
            learning_rate = run.schedule(step.global_step - 1)
            batches = _batches_on(step.batches, device)
            with hold_interrupts():
                loss, grad_norm = engine.step(
                    batches, learning_rate=learning_rate, max_grad_norm=max_grad_norm, bf16=args.bf16
                )
                rng_after_update = rng_state(device)
                run.end_step(
                    step,
                    loss=loss,
                    grad_norm=grad_norm,
                    learning_rate=learning_rate,
                    save=save,
                    predict=run_predict,
                )
    except KeyboardInterrupt:
        run.interrupted(save)
        raise
    return run.finish(save_model=engine.save_model, predict=run_predict)
