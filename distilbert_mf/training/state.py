"""Trainer state and the run folder, laid out as transformers' Trainer writes them.

A run folder (``output_dir``)::

    config.json, model.safetensors, tokenizer files   the final model (written by the framework code)
    trainer_state.json                               TrainerState: global_step, epoch, log_history, best_metric ...
    eval_results.json                                the last evaluation's metrics (``eval_`` prefixed)
    training_curves.png                              loss and evaluation curves from log_history
    run.json                                         this run's fingerprint (model, task, labels, framework ...)
    checkpoint-N/                                    one per save: the framework's files (weights, optimizer,
                                                     RNG) + trainer_state.json + run_state.json

``trainer_state.json`` has exactly the fields of transformers 5.24's ``TrainerState`` (it loads with
``TrainerState.load_from_json``); what transformers has no field for — the data position, the seed, the run
fingerprint — is in ``run_state.json`` (:class:`RunState`).

A checkpoint is written into a hidden temporary folder next to its final place and renamed onto
``checkpoint-N`` only when every file is written, so an interrupted save never leaves a half checkpoint and
:func:`latest_checkpoint` always finds a complete one.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilbert_mf._io import atomic_write_bytes
from distilbert_mf.training.batching import DataPosition

logger = logging.getLogger(__name__)

TRAINER_STATE_NAME = "trainer_state.json"
RUN_STATE_NAME = "run_state.json"
RUN_FINGERPRINT_NAME = "run.json"
EVAL_RESULTS_NAME = "eval_results.json"
PLOT_NAME = "training_curves.png"
CHECKPOINT_PREFIX = "checkpoint"
_CHECKPOINT = re.compile(rf"^{CHECKPOINT_PREFIX}-(\d+)$")
_TEMP_PREFIX = f".{CHECKPOINT_PREFIX}-"
# files that mark a folder as holding a run (of ours or of transformers' Trainer)
_RUN_FILES = (TRAINER_STATE_NAME, RUN_FINGERPRINT_NAME, EVAL_RESULTS_NAME, "all_results.json", "train_results.json")
# config fields that do not change the function a checkpoint computes or how it was trained
_FINGERPRINT_IGNORED_CONFIG = ("architectures", "_name_or_path", "transformers_version", "torch_dtype", "dtype")


def write_json(path: str | os.PathLike[str], data: Any) -> Path:
    """Write ``data`` as indented, key-sorted JSON, atomically (as transformers writes its state)."""
    path = Path(path)
    atomic_write_bytes(path, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return path


def read_json(path: str | os.PathLike[str]) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} line {err.lineno}: not valid JSON ({err.msg})") from None


@dataclass
class TrainerState:
    """transformers' ``TrainerState``, field for field (``trainer_state.json``).

    ``epoch`` is fractional (``epoch + batches done / batches per epoch``); ``log_history`` holds one dict per
    log: training logs ``{"loss", "grad_norm", "learning_rate", "epoch", "step"}``, evaluation logs
    ``{"eval_loss", "eval_<metric>", ..., "epoch", "step"}`` and a final summary ``{"train_runtime", ...}``.
    """

    epoch: float = 0
    global_step: int = 0
    max_steps: int = 0
    logging_steps: int = 500
    eval_steps: int = 500
    save_steps: int = 500
    train_batch_size: int | None = None
    num_train_epochs: int = 0
    num_input_tokens_seen: int = 0
    total_flos: float = 0
    log_history: list[dict[str, float]] = field(default_factory=list)
    best_metric: float | None = None
    best_global_step: int | None = None
    best_model_checkpoint: str | None = None
    is_local_process_zero: bool = True
    is_world_process_zero: bool = True
    is_hyper_param_search: bool = False
    trial_name: str | None = None
    trial_params: dict[str, Any] | None = None
    stateful_callbacks: dict[str, Any] = field(default_factory=dict)

    def log(self, logs: Mapping[str, float]) -> dict[str, float]:
        """Append ``logs`` with the current ``epoch`` and ``step`` to ``log_history`` (as ``Trainer.log``)."""
        entry = {key: _plain(value) for key, value in logs.items()}
        entry["epoch"] = float(self.epoch)
        entry["step"] = int(self.global_step)
        self.log_history.append(entry)
        return entry

    def log_training(
        self, *, loss: float, learning_rate: float, grad_norm: float | None = None, **extra: float
    ) -> dict[str, float]:
        """A training log: the mean loss since the last one, the learning rate of the last update, its gradient
        norm (before clipping)."""
        logs: dict[str, float] = {"loss": float(loss)}
        if grad_norm is not None:
            logs["grad_norm"] = float(grad_norm)
        logs["learning_rate"] = float(learning_rate)
        logs.update(extra)
        return self.log(logs)

    def log_evaluation(self, metrics: Mapping[str, float], *, prefix: str = "eval") -> dict[str, float]:
        """An evaluation log; metric names get ``prefix_`` unless they have it."""
        return self.log(prefixed(metrics, prefix))

    def update_best(self, metrics: Mapping[str, float], metric: str, *, greater_is_better: bool | None = None) -> bool:
        """Track the best ``metric`` (``eval_`` added when missing) as transformers does; True when it improved.

        ``greater_is_better`` None: False for a loss, True otherwise (transformers' default).
        """
        key = metric if metric.startswith("eval_") else f"eval_{metric}"
        if key not in metrics:
            raise KeyError(f"metric_for_best_model {key!r} is not among the evaluation metrics {sorted(metrics)}")
        if greater_is_better is None:
            greater_is_better = not key.endswith("loss")
        value = float(metrics[key])
        best = self.best_metric
        if best is None or (value > best if greater_is_better else value < best):
            self.best_metric = value
            self.best_global_step = int(self.global_step)
            return True
        return False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write ``trainer_state.json`` (a folder gets the file inside it)."""
        path = Path(path)
        return write_json(path / TRAINER_STATE_NAME if path.is_dir() else path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> TrainerState:
        """Read a ``trainer_state.json`` (ours or transformers'); a folder is read at ``folder/trainer_state.json``."""
        path = Path(path)
        if path.is_dir():
            path = path / TRAINER_STATE_NAME
        data = read_json(path)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            logger.warning("%s: ignoring fields this version does not know: %s", path, unknown)
        return cls(**{key: value for key, value in data.items() if key in known})


def _plain(value: Any) -> Any:
    """A JSON-able Python number for numpy / framework scalars."""
    if hasattr(value, "item") and callable(value.item):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return value  # json writes NaN / Infinity, as transformers does
    return value


def prefixed(metrics: Mapping[str, float], prefix: str = "eval") -> dict[str, float]:
    """``{"accuracy": x}`` -> ``{"eval_accuracy": x}`` (names that already carry the prefix are kept)."""
    head = f"{prefix}_"
    return {(k if k.startswith(head) else head + k): _plain(v) for k, v in metrics.items()}


# -- run identity ------------------------------------------------------------------------------------------------


def run_fingerprint(
    *,
    task: str,
    model: str,
    config: Any = None,
    label_names: Any = None,
    framework: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """What identifies a run, compared when resuming: the task, the starting model, the model config (as a
    digest), the label names, the framework, plus ``extra`` (e.g. ``max_seq_length``)."""
    fingerprint: dict[str, Any] = {"task": str(task), "model": str(model)}
    if config is not None:
        data = config.to_dict() if hasattr(config, "to_dict") else dict(config)
        data = {k: v for k, v in data.items() if k not in _FINGERPRINT_IGNORED_CONFIG}
        text = json.dumps(data, sort_keys=True, default=str)
        fingerprint["config_sha256"] = hashlib.sha256(text.encode("utf-8")).hexdigest()
    if label_names is not None:
        fingerprint["label_names"] = [str(n) for n in label_names]
    if framework is not None:
        fingerprint["framework"] = str(framework)
    for key, value in extra.items():
        fingerprint[key] = json.loads(json.dumps(value, default=str))
    return fingerprint


def fingerprint_differences(stored: Mapping[str, Any], current: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
    """``{key: (stored, current)}`` for every key whose value differs (or is missing on one side)."""
    return {
        k: (stored.get(k), current.get(k))
        for k in sorted(set(stored) | set(current))
        if stored.get(k) != current.get(k)
    }


@dataclass
class RunState:
    """What a checkpoint needs beyond transformers' state to resume exactly (``run_state.json``).

    Attributes:
        fingerprint: :func:`run_fingerprint` of the run.
        seed: the run's seed (data order, masking; the framework seeds its own RNG from it).
        position: the data position after the checkpoint's last update.
        global_batch_size: rows per micro-batch over all ranks.
        gradient_accumulation_steps: micro-batches per update.
        num_rows: training rows (windows for question answering).
        world_size: data-parallel ranks.
        extra: anything else the framework code wants back.
    """

    fingerprint: dict[str, Any]
    seed: int
    position: DataPosition
    global_batch_size: int
    gradient_accumulation_steps: int = 1
    num_rows: int = 0
    world_size: int = 1
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["position"] = self.position.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunState:
        try:
            return cls(
                fingerprint=dict(data["fingerprint"]),
                seed=int(data["seed"]),
                position=DataPosition.from_dict(data["position"]),
                global_batch_size=int(data["global_batch_size"]),
                gradient_accumulation_steps=int(data.get("gradient_accumulation_steps", 1)),
                num_rows=int(data.get("num_rows", 0)),
                world_size=int(data.get("world_size", 1)),
                extra=dict(data.get("extra") or {}),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"{RUN_STATE_NAME} is incomplete or malformed ({err!r})") from None

    def save(self, folder: str | os.PathLike[str]) -> Path:
        return write_json(Path(folder) / RUN_STATE_NAME, self.to_dict())

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> RunState:
        return cls.from_dict(read_json(Path(folder) / RUN_STATE_NAME))


# -- checkpoints ---------------------------------------------------------------------------------------------------


def checkpoint_step(path: str | os.PathLike[str]) -> int | None:
    """N of a ``checkpoint-N`` folder name, else None."""
    match = _CHECKPOINT.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete_checkpoint(path: str | os.PathLike[str]) -> bool:
    path = Path(path)
    return path.is_dir() and (path / TRAINER_STATE_NAME).is_file() and (path / RUN_STATE_NAME).is_file()


def sorted_checkpoints(output_dir: str | os.PathLike[str]) -> list[Path]:
    """Complete ``checkpoint-N`` folders of ``output_dir``, oldest (smallest N) first."""
    output_dir = Path(output_dir)
    if not output_dir.is_dir():
        return []
    found = [(checkpoint_step(p), p) for p in output_dir.iterdir() if checkpoint_step(p) is not None]
    return [p for _, p in sorted(found) if is_complete_checkpoint(p)]


def latest_checkpoint(output_dir: str | os.PathLike[str]) -> Path | None:
    """The complete checkpoint with the largest step, or None."""
    checkpoints = sorted_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def rotate_checkpoints(
    output_dir: str | os.PathLike[str], save_total_limit: int | None, *, best_model_checkpoint: str | None = None
) -> list[Path]:
    """Delete the oldest checkpoints beyond ``save_total_limit``, never the newest nor the best one (as
    transformers). Returns the deleted folders."""
    if save_total_limit is None or save_total_limit <= 0:
        return []
    checkpoints = sorted_checkpoints(output_dir)
    protected = {checkpoints[-1]} if checkpoints else set()
    if best_model_checkpoint is not None:
        protected.add(Path(best_model_checkpoint))
    keep = max(save_total_limit, len(protected))
    deleted = []
    for path in checkpoints:
        if len(checkpoints) - len(deleted) <= keep:
            break
        if path not in protected:
            shutil.rmtree(path, ignore_errors=True)
            deleted.append(path)
            logger.info("deleted %s (save_total_limit=%d)", path, save_total_limit)
    return deleted


def _remove_stale_temporaries(output_dir: Path) -> None:
    for path in output_dir.glob(_TEMP_PREFIX + "*"):
        if path.is_dir():
            logger.info("removing %s, left by an interrupted save", path)
            shutil.rmtree(path, ignore_errors=True)


def save_checkpoint(
    output_dir: str | os.PathLike[str],
    *,
    state: TrainerState,
    run_state: RunState,
    write_files: Callable[[Path], None],
    save_total_limit: int | None = None,
) -> Path:
    """Write ``output_dir/checkpoint-{state.global_step}`` atomically and return its path.

    ``write_files(folder)`` is the framework's part: it writes the weights (``save_pretrained``), the
    optimizer state and the RNG state into ``folder`` (a temporary folder; do not keep the path). Then
    ``trainer_state.json`` and ``run_state.json`` are added and the folder is renamed into place. An exception
    (or Ctrl-C) anywhere leaves the previous checkpoints as they were.
    """
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(output_dir)
    final = output_dir / f"{CHECKPOINT_PREFIX}-{int(state.global_step)}"
    temporary = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{state.global_step}.", dir=output_dir))
    try:
        write_files(temporary)
        if state.best_global_step is not None and state.best_global_step == state.global_step:
            state.best_model_checkpoint = str(final)
        state.save(temporary / TRAINER_STATE_NAME)
        run_state.save(temporary)
        os.chmod(temporary, 0o777 & ~_umask())
        if final.exists():  # saving the same step again (after a resume): swap the folders
            previous = Path(tempfile.mkdtemp(prefix=f"{_TEMP_PREFIX}{state.global_step}.old.", dir=output_dir))
            os.replace(final, previous / final.name)
            os.replace(temporary, final)
            shutil.rmtree(previous, ignore_errors=True)
        else:
            os.replace(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    logger.info("saved %s", final)
    rotate_checkpoints(output_dir, save_total_limit, best_model_checkpoint=state.best_model_checkpoint)
    return final


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def load_checkpoint(path: str | os.PathLike[str]) -> tuple[TrainerState, RunState]:
    """The ``TrainerState`` and :class:`RunState` of a complete checkpoint folder (the framework then reads its
    own files from ``path``)."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist or is not a folder")
    if not is_complete_checkpoint(path):
        raise FileNotFoundError(
            f"{path} is not a complete checkpoint: it lacks {TRAINER_STATE_NAME} or {RUN_STATE_NAME}"
        )
    return TrainerState.load(path), RunState.load(path)


def resolve_resume(
    resume_from_checkpoint: str | os.PathLike[str] | bool | None, output_dir: str | os.PathLike[str]
) -> Path | None:
    """The checkpoint to resume from: None for a fresh run, the latest of ``output_dir`` for True (or an
    ``output_dir`` path), or the given ``checkpoint-N`` folder."""
    if resume_from_checkpoint is None or resume_from_checkpoint is False:
        return None
    if resume_from_checkpoint is True:
        latest = latest_checkpoint(output_dir)
        if latest is None:
            raise FileNotFoundError(f"no complete checkpoint-N folder in {output_dir} to resume from")
        return latest
    path = Path(resume_from_checkpoint)
    if path.is_dir() and not is_complete_checkpoint(path):
        latest = latest_checkpoint(path)
        if latest is not None:
            return latest
    load_checkpoint(path)  # raises with a clear message when incomplete
    return path


def check_resume(
    checkpoint: str | os.PathLike[str],
    fingerprint: Mapping[str, Any],
    *,
    seed: int,
    global_batch_size: int,
    gradient_accumulation_steps: int,
    num_rows: int,
) -> tuple[TrainerState, RunState]:
    """Load ``checkpoint`` and refuse it when it comes from another run (model, task, labels, framework) or
    when its data position would not mean the same batches (seed, batch size, accumulation, data size)."""
    state, run_state = load_checkpoint(checkpoint)
    differences = fingerprint_differences(run_state.fingerprint, fingerprint)
    if differences:
        detail = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in differences.items())
        raise ValueError(f"{checkpoint} comes from another run ({detail}); resume it with the same model and task")
    current = {
        "seed": seed,
        "global_batch_size": global_batch_size,
        "gradient_accumulation_steps": gradient_accumulation_steps,
        "num_rows": num_rows,
    }
    stored = {key: getattr(run_state, key) for key in current}
    changed = {k: (stored[k], v) for k, v in current.items() if stored[k] != v}
    if changed:
        detail = "; ".join(f"{k}: checkpoint {a}, this run {b}" for k, (a, b) in changed.items())
        raise ValueError(
            f"cannot resume {checkpoint} exactly: {detail}; its data position would point at other batches"
        )
    return state, run_state


def check_output_dir(
    output_dir: str | os.PathLike[str],
    fingerprint: Mapping[str, Any],
    *,
    overwrite_output_dir: bool = False,
    resuming: bool = False,
) -> None:
    """Refuse an ``output_dir`` that holds a run, unless ``overwrite_output_dir`` (its run files are then
    removed), or it is this run (same fingerprint) being resumed or restarted before its first save.
    Writes ``run.json`` with ``fingerprint``."""
    output_dir = Path(output_dir)
    if output_dir.exists() and not output_dir.is_dir():
        raise NotADirectoryError(f"output_dir {output_dir} is a file; pass a folder")
    held = _run_contents(output_dir)
    if held:
        stored_path = output_dir / RUN_FINGERPRINT_NAME
        stored = read_json(stored_path) if stored_path.is_file() else None
        same_run = stored is not None and not fingerprint_differences(stored, fingerprint)
        if overwrite_output_dir:
            _remove_run_files(output_dir)
        elif same_run and (resuming or held == [RUN_FINGERPRINT_NAME]):
            pass  # resuming this run, or restarting one that stopped before it saved anything
        elif resuming and stored is not None:
            detail = "; ".join(
                f"{k}: folder {a!r}, this run {b!r}"
                for k, (a, b) in fingerprint_differences(stored, fingerprint).items()
            )
            raise FileExistsError(f"output_dir {output_dir} holds another run ({detail}); choose another folder")
        else:
            raise FileExistsError(
                f"output_dir {output_dir} already holds a run ({', '.join(held[:4])}); pass overwrite_output_dir "
                "(--overwrite-output-dir) to start over, or resume_from_checkpoint to continue it"
            )
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json(output_dir / RUN_FINGERPRINT_NAME, dict(fingerprint))


def _run_contents(output_dir: Path) -> list[str]:
    if not output_dir.is_dir():
        return []
    names = [name for name in _RUN_FILES if (output_dir / name).is_file()]
    names += sorted(p.name for p in output_dir.iterdir() if checkpoint_step(p) is not None)
    return names


def _remove_run_files(output_dir: Path) -> None:
    for name in (*_RUN_FILES, PLOT_NAME):
        with contextlib.suppress(FileNotFoundError):
            (output_dir / name).unlink()
    for path in output_dir.iterdir():
        if checkpoint_step(path) is not None or path.name.startswith(_TEMP_PREFIX):
            logger.info("overwrite_output_dir: removing %s", path)
            shutil.rmtree(path, ignore_errors=True)


def write_eval_results(
    output_dir: str | os.PathLike[str], metrics: Mapping[str, float], *, prefix: str = "eval"
) -> Path:
    """Write ``eval_results.json`` (metrics with the ``eval_`` prefix, sorted, as transformers' ``save_metrics``)."""
    return write_json(Path(output_dir) / f"{prefix}_results.json", prefixed(metrics, prefix))
