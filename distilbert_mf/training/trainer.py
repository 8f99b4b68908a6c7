"""The framework-neutral fine-tuning driver: arguments, run preparation, logging, evaluation, checkpoints.

:func:`train` is the whole run; each framework writes only its loop (``distilbert_mf.<framework>.training.fit``)::

    from distilbert_mf.training.trainer import TrainingArguments, train

    out = train(TrainingArguments(output_dir="out", task="text-classification", model="path/or/hub-id",
                                  train_file="train.tsv", validation_file="dev.tsv", framework="pt"))

:func:`prepare_run` does everything that is the same in every framework and checks every input before the first
step: the config (with ``config_overrides``) and tokenizer of ``model``, the train / evaluation data
(:func:`~distilbert_mf.training.data.prepare_dataset`: a missing column, a label outside ``num_labels`` or unseen in
training, an empty or non-UTF-8 file, ``max_seq_length`` above ``max_position_embeddings``), the head size and label
names from the data, the batches, the plan and the learning-rate schedule, the output folder (a folder holding
another run is refused without ``overwrite_output_dir``), and the checkpoint to resume (one from another model,
task, label set or framework is refused). It returns a :class:`TrainingRun`, which a framework loop drives::

    run = prepare_run(args)
    model = run.load_model(dtype=...)                  # the framework's class, the run's config, the same start
    for step in run.steps():                           # Step: global_step, batches (numpy), position
        loss, grad_norm = ...                          # the framework's update from step.batches
        run.end_step(step, loss=loss, grad_norm=grad_norm, learning_rate=run.schedule(step.global_step - 1),
                     save=write_weights_optimizer_rng, predict=numpy_outputs_of_a_batch)
    return run.finish(save_model=model.save_pretrained, predict=numpy_outputs_of_a_batch)

``run.end_step`` logs into ``state.log_history`` (transformers' layout), draws the progress bar (loss, learning rate,
sequences/s), evaluates every ``eval_steps`` and saves ``checkpoint-N/`` every ``save_steps`` (the framework's
``save(folder)`` writes the weights, optimizer and RNG state; the trainer state, run state and tokenizer are added
here, and the folder appears atomically). On Ctrl-C the loop calls ``run.interrupted(save)``, which saves the last
completed step. ``run.finish`` evaluates, writes the model folder (``config.json``, ``model.safetensors``, the
tokenizer files), ``trainer_state.json``, ``eval_results.json``, ``train_results.json``, ``all_results.json`` and
``training_curves.png``.

Where transformers' Trainer leaves it open, one choice for all frameworks:

- **New head weights are drawn here, in numpy** (``normal(0, initializer_range)``, zero biases, LayerNorm 1 / 0),
  seeded with ``seed``: every framework starts from the same model (:attr:`TrainingRun.new_weights`,
  applied by :meth:`TrainingRun.load_model`).
- **Gradient accumulation** averages the micro-batch losses of an update (each micro-batch's gradient is that of
  ``loss / n``, ``n`` the update's micro-batches); the logged loss is that mean.
- **The logged loss over a resume**: the running sums since the last log are stored in the checkpoint, so a resumed
  run logs the same numbers as an uninterrupted one, and ``train_loss`` is over the whole run.
- A non-finite loss stops the run (:class:`TrainingDivergedError`) instead of training on.
"""

from __future__ import annotations

import builtins
import contextlib
import dataclasses
import importlib
import logging
import math
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.checkpoint.layouts import LAYER_NORMS
from distilbert_mf.checkpoint.names import PREFIX, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.frameworks import EXTRAS, FRAMEWORKS, is_available, model_class, normalize_framework
from distilbert_mf.training.batching import BatchLoader, DataPosition, Step, iter_steps
from distilbert_mf.training.data import (
    TASK_HEADS,
    DataOptions,
    TaskDataset,
    canonical_task,
    prepare_dataset,
    select_records,
)
from distilbert_mf.training.evaluation import Evaluator
from distilbert_mf.training.readers import FORMATS, read_records
from distilbert_mf.training.schedules import LinearSchedule, TrainingPlan, no_weight_decay
from distilbert_mf.training.state import (
    EVAL_RESULTS_NAME,
    PLOT_NAME,
    TRAINER_STATE_NAME,
    RunState,
    TrainerState,
    check_output_dir,
    check_resume,
    resolve_resume,
    run_fingerprint,
    save_checkpoint,
    write_json,
)

logger = logging.getLogger(__name__)

__all__ = [
    "STRATEGIES",
    "TrainOutput",
    "TrainingArguments",
    "TrainingDivergedError",
    "TrainingRun",
    "World",
    "hold_interrupts",
    "prepare_run",
    "train",
]

STRATEGIES = ("no", "steps", "epoch")
TRAIN_RESULTS_NAME = "train_results.json"
ALL_RESULTS_NAME = "all_results.json"
_OUTPUTS = {"question-answering": ("start_logits", "end_logits")}  # every other task: ("logits",)
_INIT_SEED = 0x1E4D  # mixed with the run's seed for the new head weights (a stream of its own)
# TrainingArguments fields that are DataOptions fields of the same name
_DATA_FIELDS = tuple(f.name for f in dataclasses.fields(DataOptions))
_DATA = DataOptions()  # the defaults of those fields


class TrainingDivergedError(ArithmeticError):
    """The training loss became NaN or infinite; the message names the step and the last checkpoint."""


# ----------------------------------------------------------------------------------------------------------------------
# Arguments
# ----------------------------------------------------------------------------------------------------------------------


def _fail(name: str, value: Any, allowed: str) -> ValueError:
    return ValueError(f"{name} must be {allowed}, got {value!r}")


def _is_int(value: Any) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def _int(name: str, value: Any, low: int, *, optional: bool = False) -> None:
    if optional and value is None:
        return
    if not _is_int(value) or value < low:
        raise _fail(name, value, f"an integer >= {low}" + (" or None" if optional else ""))


def _float(name: str, value: Any, low: float, high: float = math.inf, *, open_high: bool = False) -> None:
    ok = _is_number(value) and math.isfinite(value) and low <= value and (value < high if open_high else value <= high)
    if not ok:
        bound = f"< {high}" if open_high else (f"<= {high}" if math.isfinite(high) else "finite")
        raise _fail(name, value, f"a number >= {low} and {bound}")


def _choice(name: str, value: Any, choices: Sequence[Any]) -> None:
    if value not in choices:
        raise _fail(name, value, f"one of {list(choices)}")


def _optional_str(name: str, value: Any) -> None:
    if value is not None and (not isinstance(value, str) or not value):
        raise _fail(name, value, "a non-empty string or None")


@dataclass(frozen=True)
class TrainingArguments:
    """One fine-tuning run. Names are transformers' ``TrainingArguments`` names (the CLI flags are these, dashed).

    Model and data:
        output_dir: the run folder (the model, ``trainer_state.json``, ``checkpoint-N/`` ...).
        task: ``text-classification``, ``token-classification``, ``question-answering``, ``masked-lm``,
            ``multiple-choice`` (or an alias: ``ner``, ``qa``, ``mlm``, ``sentiment-analysis`` ...).
        model: the starting model: a folder, a Hub repo id or a built-in short name (any weights format).
        train_file / validation_file: a TSV, CSV, JSON Lines, SQuAD JSON, CoNLL or text file (or a
            ``datasets.Dataset``, a list of dicts); ``data_format`` when the suffix does not tell.
        framework: ``pt``, ``tf`` or ``flax`` (aliases ``torch``, ``tensorflow``, ``keras``, ``jax``).
        num_labels / label_names: the head size / class names in id order (default: the training data's classes).
        text_column ... line_by_line: the columns and task options of :class:`~distilbert_mf.training.DataOptions`.
        max_train_samples / max_eval_samples: use only the first N examples of each file.
        max_seq_length: tokens per row (None: 384 for question answering, else 128).
        config_overrides: config fields to change, e.g. ``{"dropout": 0.0, "attention_dropout": 0.0}``.
        revision / cache_dir / local_files_only: how ``model`` is fetched from the Hub.

    Optimisation (transformers' defaults):
        num_train_epochs / max_steps: the length (``max_steps > 0`` wins).
        per_device_train_batch_size / per_device_eval_batch_size: rows per micro-batch / evaluation batch.
        gradient_accumulation_steps: micro-batches per update (their losses are averaged).
        learning_rate, weight_decay, adam_beta1, adam_beta2, adam_epsilon: AdamW (PyTorch's rule in every framework;
            no decay on biases and LayerNorm weights).
        warmup_ratio / warmup_steps: linear warm-up (one of them), then linear decay to 0.
        max_grad_norm: global-norm clipping (None or 0: none; the norm is still logged).
        bf16: bfloat16 mixed precision (float32 weights and optimizer state).
        seed: data order, masking, new head weights, dropout.
        group_by_length / dataloader_drop_last / pad_to_multiple_of: batching (length-grouped by default).
        device: PyTorch only: ``cpu``, ``cuda``, ``cuda:1`` ... (None: CUDA when available, else CPU).
        fsdp: PyTorch under torchrun: shard parameters, gradients and optimizer state with FSDP2 instead of
            replicating them with DDP (``docs/scaling.md``).

    Logging, evaluation, checkpoints:
        logging_steps / logging_first_step: a ``log_history`` entry every N updates (and after the first).
        eval_strategy / eval_steps: evaluate ``"no"`` (only at the end), every ``"steps"`` (``eval_steps``, default
            ``logging_steps``) or every ``"epoch"``; None: ``"steps"`` when ``eval_steps`` is given, else ``"no"``.
        save_strategy / save_steps / save_total_limit: ``checkpoint-N/`` every ``save_steps`` updates and at the
            end (``"steps"``), every epoch, or never (``"no"``); keep at most ``save_total_limit``.
        metric_for_best_model / greater_is_better: track ``best_metric`` / ``best_model_checkpoint``.
        max_answer_length / version_2_with_negative: question-answering evaluation.
        resume_from_checkpoint: a ``checkpoint-N`` folder, a run folder or True (the latest in ``output_dir``).
        overwrite_output_dir: start over in an ``output_dir`` that holds a run (its run files are removed).
        progress: the progress bar (None: only when stderr is a terminal).
    """

    output_dir: str
    task: str
    model: str
    train_file: Any
    validation_file: Any = None
    framework: str = "pt"
    # data
    data_format: str | None = None
    num_labels: int | None = None
    label_names: tuple[str, ...] | None = None
    text_column: str | None = _DATA.text_column
    text_pair_column: str | None = _DATA.text_pair_column
    label_column: str = _DATA.label_column
    problem_type: str | None = _DATA.problem_type
    label_separator: str | None = _DATA.label_separator
    tokens_column: str = _DATA.tokens_column
    tags_column: str = _DATA.tags_column
    label_all_tokens: bool = _DATA.label_all_tokens
    question_column: str | None = _DATA.question_column
    context_column: str | None = _DATA.context_column
    answers_column: str = _DATA.answers_column
    id_column: str = _DATA.id_column
    doc_stride: int = _DATA.doc_stride
    choice_columns: tuple[str, ...] = _DATA.choice_columns
    choices_column: str | None = _DATA.choices_column
    mlm_probability: float = _DATA.mlm_probability
    whole_word_mask: bool = _DATA.whole_word_mask
    mask_replace_prob: float = _DATA.mask_replace_prob
    random_replace_prob: float = _DATA.random_replace_prob
    line_by_line: bool = _DATA.line_by_line
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    max_seq_length: int | None = None
    config_overrides: Mapping[str, Any] = field(default_factory=dict)
    revision: str | None = None
    cache_dir: str | None = None
    local_files_only: bool = False
    # optimisation
    num_train_epochs: float = 3.0
    max_steps: int = -1
    per_device_train_batch_size: int = 8
    per_device_eval_batch_size: int = 8
    gradient_accumulation_steps: int = 1
    learning_rate: float = 5e-5
    weight_decay: float = 0.0
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    warmup_ratio: float = 0.0
    warmup_steps: int = 0
    max_grad_norm: float | None = 1.0
    bf16: bool = False
    seed: int = 42
    group_by_length: bool = True
    dataloader_drop_last: bool = False
    pad_to_multiple_of: int | None = None
    device: str | None = None
    fsdp: bool = False
    # logging, evaluation, checkpoints
    logging_steps: int = 50
    logging_first_step: bool = False
    eval_strategy: str | None = None
    eval_steps: int | None = None
    save_strategy: str = "steps"
    save_steps: int = 500
    save_total_limit: int | None = None
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    max_answer_length: int = 30
    version_2_with_negative: bool = False
    resume_from_checkpoint: str | os.PathLike[str] | bool | None = None
    overwrite_output_dir: bool = False
    progress: bool | None = None

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        for name in ("output_dir", "model"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                set_(self, name, os.fspath(value))
            elif not isinstance(value, str) or not value:
                raise _fail(name, value, "a non-empty string or path")
        set_(self, "task", canonical_task(self.task))
        set_(self, "framework", normalize_framework(self.framework))
        for name in ("train_file", "validation_file"):
            value = getattr(self, name)
            if isinstance(value, os.PathLike):
                set_(self, name, os.fspath(value))
        if self.train_file is None or (isinstance(self.train_file, str) and not self.train_file):
            raise _fail("train_file", self.train_file, "a data file (TSV, CSV, JSON Lines, JSON, CoNLL or text)")
        if self.data_format is not None:
            _choice("data_format", self.data_format, FORMATS)
        _int("num_labels", self.num_labels, 1, optional=True)
        if self.label_names is not None:
            names = self.label_names
            if isinstance(names, str) or not all(isinstance(n, str) and n for n in names) or not names:
                raise _fail("label_names", names, "a non-empty list of class names (strings)")
            if len(set(names)) != len(names):
                raise _fail("label_names", list(names), "distinct class names")
            set_(self, "label_names", tuple(names))
            if self.num_labels is not None and self.num_labels != len(names):
                raise ValueError(
                    f"num_labels={self.num_labels} disagrees with the {len(names)} label_names {list(names)}; give "
                    "one of them, or both agreeing"
                )
        if not isinstance(self.choice_columns, str):
            set_(self, "choice_columns", tuple(self.choice_columns))
        self.data_options()  # DataOptions checks its own fields
        _int("max_train_samples", self.max_train_samples, 1, optional=True)
        _int("max_eval_samples", self.max_eval_samples, 1, optional=True)
        _int("max_seq_length", self.max_seq_length, 4, optional=True)
        if not isinstance(self.config_overrides, Mapping) or not all(isinstance(k, str) for k in self.config_overrides):
            raise _fail("config_overrides", self.config_overrides, "a mapping of config field names to values")
        set_(self, "config_overrides", dict(self.config_overrides))
        for name in ("revision", "cache_dir"):
            _optional_str(name, getattr(self, name))
        if self.max_steps is None:
            set_(self, "max_steps", -1)
        if not _is_int(self.max_steps):
            raise _fail("max_steps", self.max_steps, "an integer (> 0: the number of updates; <= 0: num_train_epochs)")
        if self.max_steps <= 0:
            _float("num_train_epochs", self.num_train_epochs, 0.0)
            if not self.num_train_epochs > 0:
                raise _fail("num_train_epochs", self.num_train_epochs, "a positive number when max_steps <= 0")
        for name in ("per_device_train_batch_size", "per_device_eval_batch_size", "gradient_accumulation_steps"):
            _int(name, getattr(self, name), 1)
        _float("learning_rate", self.learning_rate, 0.0)
        _float("weight_decay", self.weight_decay, 0.0)
        _float("adam_beta1", self.adam_beta1, 0.0, 1.0, open_high=True)
        _float("adam_beta2", self.adam_beta2, 0.0, 1.0, open_high=True)
        _float("adam_epsilon", self.adam_epsilon, 0.0)
        if not self.adam_epsilon > 0:
            raise _fail("adam_epsilon", self.adam_epsilon, "a number > 0")
        _float("warmup_ratio", self.warmup_ratio, 0.0, 1.0)
        _int("warmup_steps", self.warmup_steps, 0)
        if self.warmup_ratio and self.warmup_steps:
            raise ValueError(f"give warmup_steps ({self.warmup_steps}) or warmup_ratio ({self.warmup_ratio}), not both")
        if self.max_grad_norm is not None:
            _float("max_grad_norm", self.max_grad_norm, 0.0)
        _int("seed", self.seed, 0)
        _int("pad_to_multiple_of", self.pad_to_multiple_of, 1, optional=True)
        _optional_str("device", self.device)
        if self.device is not None and self.framework != "pt":
            raise ValueError(
                f"device={self.device!r} applies to the PyTorch loop (framework 'pt'); the {self.framework!r} loop "
                "places arrays with its own framework's defaults: leave device unset"
            )
        _int("logging_steps", self.logging_steps, 1)
        if self.eval_strategy is None:
            set_(self, "eval_strategy", "steps" if self.eval_steps is not None else "no")
        _choice("eval_strategy", self.eval_strategy, STRATEGIES)
        _int("eval_steps", self.eval_steps, 1, optional=True)
        _choice("save_strategy", self.save_strategy, STRATEGIES)
        _int("save_steps", self.save_steps, 0)
        _int("save_total_limit", self.save_total_limit, 1, optional=True)
        _optional_str("metric_for_best_model", self.metric_for_best_model)
        _int("max_answer_length", self.max_answer_length, 1)
        if self.eval_strategy != "no" and self.validation_file is None:
            raise ValueError(
                f"eval_strategy={self.eval_strategy!r} needs validation_file (the data to evaluate on); give one, or "
                "leave eval_strategy and eval_steps unset"
            )
        if self.metric_for_best_model is not None and self.validation_file is None:
            raise ValueError("metric_for_best_model needs validation_file: the metric comes from evaluation")
        resume = self.resume_from_checkpoint
        if isinstance(resume, os.PathLike):
            set_(self, "resume_from_checkpoint", os.fspath(resume))
        elif not (resume is None or isinstance(resume, bool) or (isinstance(resume, str) and resume)):
            raise _fail(
                "resume_from_checkpoint", resume, "a checkpoint folder, True (the latest in output_dir) or None"
            )
        if resume not in (None, False) and self.overwrite_output_dir:
            raise ValueError(
                "resume_from_checkpoint and overwrite_output_dir exclude each other: overwriting removes the run's "
                "checkpoints; give one of them"
            )
        for name in (
            "bf16",
            "local_files_only",
            "group_by_length",
            "dataloader_drop_last",
            "logging_first_step",
            "fsdp",
        ):
            if not isinstance(getattr(self, name), bool):
                raise _fail(name, getattr(self, name), "True or False")
        if self.fsdp and self.framework != "pt":
            raise ValueError(
                f"fsdp=True is PyTorch's FSDP2 (framework 'pt'); the {self.framework!r} loop shards through its own "
                "engine (docs/scaling.md): leave fsdp unset"
            )
        if self.progress is not None and not isinstance(self.progress, bool):
            raise _fail("progress", self.progress, "True, False or None (only when stderr is a terminal)")

    def data_options(self) -> DataOptions:
        """The :class:`~distilbert_mf.training.DataOptions` of these arguments."""
        return DataOptions(**{name: getattr(self, name) for name in _DATA_FIELDS})

    def hub_options(self) -> dict[str, Any]:
        """``from_pretrained`` keywords that say how ``model`` is fetched."""
        options: dict[str, Any] = {"revision": self.revision, "cache_dir": self.cache_dir}
        if self.local_files_only:
            options["local_files_only"] = True
        return {k: v for k, v in options.items() if v is not None}

    @property
    def eval_every(self) -> int:
        """Updates between evaluations with ``eval_strategy="steps"`` (``eval_steps``, else ``logging_steps``)."""
        return self.eval_steps if self.eval_steps is not None else self.logging_steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-able arguments (a data source that is not a path is named by its type)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name in ("train_file", "validation_file") and value is not None and not isinstance(value, str):
                value = f"<{type(value).__name__}>"
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out


# ----------------------------------------------------------------------------------------------------------------------
# The processes of a run
# ----------------------------------------------------------------------------------------------------------------------


def _same(value: Any) -> Any:
    return value


def _nothing() -> None:
    return None


@dataclass(frozen=True)
class World:
    """The processes one data-parallel run spans: this one is ``rank`` of ``world_size``. One process by default;
    a framework's launcher (``distilbert_mf.<framework>.training.launch_world``) fills in its collectives.

    ``broadcast(value)`` returns rank 0's value on every rank (small picklable objects: a path, a message);
    ``all_sum(values)`` the element-wise sum of a list of numbers over the ranks; ``context`` is the framework's
    own description (PyTorch: a ``DistributedContext``). Every rank builds the same run; rank 0 writes the run
    folder, the others take part in the collective saves."""

    rank: int = 0
    world_size: int = 1
    barrier: Callable[[], None] = _nothing
    broadcast: Callable[[Any], Any] = _same
    all_sum: Callable[[Sequence[float]], Sequence[float]] = _same
    context: Any = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_main(self, action: Callable[[], Any]) -> Any:
        """Run ``action`` on rank 0 only; an exception it raises is raised on every rank (same type when it is a
        built-in one, with the same message), so no rank waits for a rank that failed."""
        if self.world_size == 1:
            return action()
        error: tuple[str, str] | None = None
        result = None
        if self.is_main:
            try:
                result = action()
            except Exception as err:
                error = (type(err).__name__, str(err))
                failure = err
        error = self.broadcast(error)
        if error is not None:
            if self.is_main:
                raise failure
            cls = getattr(builtins, error[0], None)
            cls = cls if isinstance(cls, type) and issubclass(cls, Exception) else RuntimeError
            raise cls(f"rank 0: {error[1]}")
        return result


# ----------------------------------------------------------------------------------------------------------------------
# Outputs, interrupts
# ----------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainOutput:
    """What :func:`train` returns (transformers' ``TrainOutput`` fields, plus the evaluation and the folder).

    Attributes:
        global_step: updates done.
        training_loss: the mean loss of all updates of the run (resumes included).
        metrics: the run summary (``train_runtime``, ``train_samples_per_second``, ``train_loss`` ...).
        eval_metrics: the final evaluation (``eval_`` prefixed; empty without evaluation data).
        output_dir: the run folder (the model loads from it in every framework and in transformers).
        log_history: the run's ``log_history``.
    """

    global_step: int
    training_loss: float
    metrics: dict[str, float]
    eval_metrics: dict[str, float]
    output_dir: Path
    log_history: list[dict[str, float]] = field(repr=False)


@contextlib.contextmanager
def hold_interrupts() -> Iterator[None]:
    """Hold Ctrl-C (SIGINT) until the block ends, then raise ``KeyboardInterrupt``: an optimizer update and its
    bookkeeping are never cut in half. A second Ctrl-C inside the block raises at once. Outside the main thread
    (where signals cannot be handled) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        if received:
            raise KeyboardInterrupt
        received.append(signum)
        logger.warning("interrupted: finishing this update, then saving a checkpoint (Ctrl-C again to stop at once)")

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous if previous is not None else signal.default_int_handler)
    if received:
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


@dataclass
class _Tally:
    """Running sums the logs need; stored in each checkpoint so a resumed run logs what an uninterrupted one does.

    ``extra`` holds, per name, the sum and count of values passed as ``end_step(extra=...)`` since the last log."""

    loss_since_log: float = 0.0
    steps_since_log: int = 0
    loss_total: float = 0.0
    steps_total: int = 0
    extra: dict[str, list[float]] = field(default_factory=dict)  # name -> [sum, count]

    def add(self, loss: float, extra: Mapping[str, float] | None = None) -> None:
        self.loss_since_log += loss
        self.steps_since_log += 1
        self.loss_total += loss
        self.steps_total += 1
        for name, value in (extra or {}).items():
            total = self.extra.setdefault(str(name), [0.0, 0])
            total[0] += float(value)
            total[1] += 1

    def take_log(self) -> tuple[float, dict[str, float]]:
        """(mean loss, {name: mean extra value}) since the last log; the sums start again."""
        mean = self.loss_since_log / self.steps_since_log
        extra = {name: total / count for name, (total, count) in self.extra.items() if count}
        self.loss_since_log, self.steps_since_log, self.extra = 0.0, 0, {}
        return mean, extra

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> _Tally:
        data = data or {}
        return cls(
            loss_since_log=float(data.get("loss_since_log", 0.0)),
            steps_since_log=int(data.get("steps_since_log", 0)),
            loss_total=float(data.get("loss_total", 0.0)),
            steps_total=int(data.get("steps_total", 0)),
            extra={str(k): [float(v[0]), int(v[1])] for k, v in dict(data.get("extra") or {}).items()},
        )


class TrainingRun:
    """Everything framework-neutral about one run, built by :func:`prepare_run`; a framework's ``fit`` drives it.

    Attributes:
        args: the :class:`TrainingArguments`.
        config: the model config with ``config_overrides`` and the data's head (``num_labels``, ``id2label``,
            ``label2id``, ``problem_type``).
        tokenizer: the model's tokenizer.
        train_data / eval_data: the prepared datasets (``eval_data`` None without ``validation_file``).
        loader: the training :class:`~distilbert_mf.training.BatchLoader`.
        plan / schedule: the run's length and learning rate (``schedule(s)``: the rate of update ``s``, 0-based).
        state: the :class:`~distilbert_mf.training.TrainerState` (restored when resuming).
        start: the data position the run starts from.
        resume_dir: the checkpoint being resumed, or None.
        init_source: what the framework loads the weights from (``args.model``, or ``resume_dir``).
        new_weights: canonical arrays for the head weights the starting checkpoint lacks (or has at another
            size), drawn here with the run's seed so every framework starts from the same model; empty on resume.
        fingerprint: what identifies the run (compared when resuming).
        world: the processes the run spans (:class:`World`; one by default). ``loader`` yields this rank's share of
            every global batch of ``per_device_train_batch_size * world_size`` rows.
    """

    def __init__(
        self,
        *,
        args: TrainingArguments,
        config: DistilBertConfig,
        tokenizer: Any,
        train_data: TaskDataset,
        eval_data: TaskDataset | None,
        loader: BatchLoader,
        plan: TrainingPlan,
        schedule: LinearSchedule,
        state: TrainerState,
        start: DataPosition,
        resume_dir: Path | None,
        new_weights: dict[str, np.ndarray],
        fingerprint: dict[str, Any],
        tally: _Tally,
        world: World | None = None,
    ) -> None:
        self.args = args
        self.world = world if world is not None else World()
        self.config = config
        self.tokenizer = tokenizer
        self.train_data = train_data
        self.eval_data = eval_data
        self.loader = loader
        self.plan = plan
        self.schedule = schedule
        self.state = state
        self.start = start
        self.resume_dir = resume_dir
        self.init_source: str | Path = resume_dir if resume_dir is not None else args.model
        self.new_weights = new_weights
        self.fingerprint = fingerprint
        self.output_dir = Path(args.output_dir)
        self._tally = tally
        self._initial_step = state.global_step
        self._position = start
        self._saved_step: int | None = state.global_step if resume_dir is not None else None
        self._last_eval: tuple[int, dict[str, float]] | None = None
        self._bar: Any = None
        self._train_seconds = 0.0
        self._rows_done = 0
        self._mark: float | None = None
        self._started: float | None = None
        self._flops_per_token = 6 * _non_embedding_parameters(config, self.head)

    # -- what the framework needs ------------------------------------------------------------------------------------
    @property
    def head(self) -> str:
        """The model head this run trains (``sequence_classification``, ...)."""
        return TASK_HEADS[self.train_data.task]

    @property
    def task(self) -> str:
        return self.train_data.task

    def model_class(self) -> type:
        """The run's model class in its framework (imports the framework)."""
        return model_class(self.args.framework, self.head)

    def load_model(self, cls: type | None = None, **kwargs: Any) -> Any:
        """``cls.from_pretrained(init_source, config=config, ...)`` with the run's new head weights loaded over it.

        ``cls`` defaults to :meth:`model_class`; ``kwargs`` are the framework's own ``from_pretrained`` keywords
        (``dtype``, ``device``, ``rngs`` ...). The model is returned as ``from_pretrained`` leaves it (eval mode)."""
        cls = cls if cls is not None else self.model_class()
        hub = self.args.hub_options() if self.resume_dir is None else {}
        model = cls.from_pretrained(
            self.init_source, config=self.config, ignore_mismatched_sizes=bool(self.new_weights), **hub, **kwargs
        )
        if self.new_weights:
            model.load_canonical_state_dict(self.new_weights, strict=False)
        return model

    def with_masker(self, masker: Callable[..., Any]) -> None:
        """Mask the training batches with ``masker`` (masked LM; e.g. distillation's frequency masker) from now on:
        ``train_data`` and the loader's dataset are replaced by ``train_data.with_masker(masker)``."""
        self.train_data = self.train_data.with_masker(masker)
        self.loader.dataset = self.train_data

    def decays(self, canonical_name: str) -> bool:
        """Whether weight decay applies to a parameter (transformers' rule: not to biases and LayerNorm weights)."""
        return not no_weight_decay(canonical_name)

    @property
    def global_batch_size(self) -> int:
        return self.loader.batch_size

    # -- the loop ------------------------------------------------------------------------------------------------------
    def steps(self) -> Iterator[Step]:
        """The run's update steps from its start position (all of them, or what a resumed run has left)."""
        from distilbert_mf.cli import Progress

        remaining = self.plan.max_steps - self.state.global_step
        if self.resume_dir is not None:
            logger.info(
                "resuming %s at update %d of %d (epoch %d, batch %d)",
                self.resume_dir,
                self.state.global_step,
                self.plan.max_steps,
                self.start.epoch,
                self.start.batch_index,
            )
        logger.info(
            "training %d updates: %d rows, %d micro-batches of %d per epoch, %d per update, %d warm-up updates",
            remaining,
            len(self.train_data),
            len(self.loader),
            self.loader.batch_size,
            self.plan.gradient_accumulation_steps,
            self.schedule.warmup_steps,
        )
        enabled = self.args.progress if self.world.is_main else False
        self._bar = Progress(self.plan.max_steps, "train", "step", delay=0.0, enabled=enabled, leave=True)
        self._bar.update(self.state.global_step)
        self._started = self._mark = time.perf_counter()
        try:
            yield from iter_steps(self.loader, self.plan, start=self.start, global_step=self.state.global_step)
        finally:  # the loop ended, raised or was left: the bar goes (finish and interrupted close it too)
            self._close_bar()

    def end_step(
        self,
        step: Step,
        *,
        loss: float,
        grad_norm: float | None,
        learning_rate: float,
        save: Callable[[Path], None],
        predict: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
        extra: Mapping[str, float] | None = None,
    ) -> None:
        """Record update ``step`` (its mean micro-batch ``loss``, the gradient norm before clipping, the learning
        rate it used); log, evaluate and save a checkpoint when due.

        ``save(folder)`` writes the framework's files (weights, optimizer, RNG state) into ``folder``;
        ``predict(batch)`` returns a numpy batch's outputs as numpy (``logits`` / ``start_logits`` +
        ``end_logits``, and ``loss`` when the batch has labels), in evaluation mode. ``extra`` (e.g. the loss
        components of distillation) is averaged since the last log like ``loss`` and logged beside it."""
        now = time.perf_counter()
        if self._mark is not None:
            self._train_seconds += now - self._mark
        loss = float(loss)
        grad_norm = None if grad_norm is None else float(grad_norm)
        state = self.state
        state.global_step, state.epoch = step.global_step, step.epoch_progress
        self._position = step.position
        rows = sum(int(np.asarray(b["input_ids"]).shape[0]) for b in step.batches)
        tokens = sum(int(np.asarray(b["attention_mask"]).sum()) for b in step.batches)
        if self.world.world_size > 1:  # this rank's share: the whole batch is the sum
            rows, tokens = (int(v) for v in self.world.all_sum([rows, tokens]))
        self._rows_done += rows
        state.num_input_tokens_seen += tokens
        state.total_flos += float(self._flops_per_token * tokens)
        if not math.isfinite(loss):
            raise TrainingDivergedError(self._diverged(step.global_step, loss))
        self._tally.add(loss, extra)
        self._update_bar(loss, learning_rate)
        args = self.args
        last = step.global_step >= self.plan.max_steps
        epoch_end = step.position.batch_index == 0 and step.position.epoch > step.epoch
        if step.global_step % args.logging_steps == 0 or (step.global_step == 1 and args.logging_first_step):
            mean, extra_means = self._tally.take_log()
            entry = state.log_training(
                loss=mean, learning_rate=float(learning_rate), grad_norm=grad_norm, **extra_means
            )
            logger.info("%s", entry)
        if self.eval_data is not None and (
            (args.eval_strategy == "steps" and (step.global_step % args.eval_every == 0 or last))
            or (args.eval_strategy == "epoch" and epoch_end)
        ):
            self.evaluate(predict)
        if (
            args.save_strategy == "steps"
            and ((args.save_steps > 0 and step.global_step % args.save_steps == 0) or last)
        ) or (args.save_strategy == "epoch" and epoch_end):
            self.save_checkpoint(save)
        self._mark = time.perf_counter()

    def _diverged(self, step: int, loss: float) -> str:
        last = (
            f"the last checkpoint is checkpoint-{self._saved_step}" if self._saved_step else "no checkpoint was saved"
        )
        return (
            f"update {step}: the training loss is {loss}; training diverged ({last}). Lower learning_rate "
            "(--learning-rate), keep max_grad_norm clipping on, or train without bf16"
        )

    def _update_bar(self, loss: float, learning_rate: float) -> None:
        if self._bar is None:
            return
        rate = self._rows_done / self._train_seconds if self._train_seconds > 0 else 0.0
        self._bar.step(f"loss {loss:.4g}, lr {learning_rate:.3g}, {rate:.1f} seq/s")
        self._bar.update(1)

    def evaluate(self, predict: Callable[[dict[str, np.ndarray]], Mapping[str, Any]]) -> dict[str, float]:
        """Evaluate on ``eval_data`` through ``predict``; logs ``eval_*`` into ``log_history`` and returns the
        metrics (``eval_`` prefixed: ``eval_loss``, the task's metrics, ``eval_runtime`` ...)."""
        data = self.eval_data
        if data is None:
            raise ValueError("this run has no evaluation data: pass validation_file (--validation-file)")
        start = time.perf_counter()
        evaluator = Evaluator(
            data,
            max_answer_length=self.args.max_answer_length,
            handle_impossible_answer=self.args.version_2_with_negative,
        )
        loader = BatchLoader(
            data,
            self.args.per_device_eval_batch_size,
            shuffle=False,
            seed=self.args.seed,
            pad_to_multiple_of=self.args.pad_to_multiple_of,
        )
        names = _OUTPUTS.get(data.task, ("logits",))
        loss_sum, loss_rows, batches = 0.0, 0, 0
        for batch in loader:
            outputs = predict(batch)
            missing = [n for n in names if n not in outputs or outputs[n] is None]
            if missing:
                raise KeyError(f"predict(batch) returned {sorted(outputs)}; {data.task} evaluation needs {list(names)}")
            kwargs = {n: np.asarray(outputs[n], dtype=np.float32) for n in names}
            if data.task == "masked-lm":
                kwargs["labels"] = batch["labels"]
            evaluator.add(**kwargs)
            rows = int(np.asarray(batch["input_ids"]).shape[0])
            if outputs.get("loss") is not None:
                loss_sum += float(np.asarray(outputs["loss"], dtype=np.float64)) * rows
                loss_rows += rows
            batches += 1
        metrics: dict[str, float] = {}
        if loss_rows:
            metrics["loss"] = loss_sum / loss_rows
            if data.task == "masked-lm":
                metrics["perplexity"] = math.exp(min(metrics["loss"], 700.0))
        metrics.update(evaluator.compute())
        runtime = time.perf_counter() - start
        metrics["runtime"] = round(runtime, 4)
        metrics["samples_per_second"] = round(len(data) / runtime, 3) if runtime > 0 else 0.0
        metrics["steps_per_second"] = round(batches / runtime, 3) if runtime > 0 else 0.0
        entry = self.state.log_evaluation(metrics)
        logger.info("%s", entry)
        result = {k: v for k, v in entry.items() if k.startswith("eval_")}
        if self.args.metric_for_best_model is not None:
            self.state.update_best(
                result, self.args.metric_for_best_model, greater_is_better=self.args.greater_is_better
            )
        self._last_eval = (self.state.global_step, result)
        return result

    def _run_state(self) -> RunState:
        return RunState(
            self.fingerprint,
            seed=self.args.seed,
            position=self._position,
            global_batch_size=self.loader.batch_size,
            gradient_accumulation_steps=self.plan.gradient_accumulation_steps,
            num_rows=len(self.train_data),
            extra={"tally": self._tally.to_dict(), "framework": self.args.framework},
        )

    def save_checkpoint(self, save: Callable[[Path], None]) -> Path:
        """Write ``output_dir/checkpoint-{global_step}`` (atomically): ``save(folder)``'s files, the tokenizer,
        ``trainer_state.json`` and ``run_state.json``."""

        world = self.world

        def write_files(folder: Path) -> None:
            world.broadcast(str(folder))  # the other ranks write their part of the same folder (a collective save)
            save(folder)
            self.tokenizer.save_pretrained(folder)

        if world.is_main:
            path = save_checkpoint(
                self.output_dir,
                state=self.state,
                run_state=self._run_state(),
                write_files=write_files,
                save_total_limit=self.args.save_total_limit,
            )
            world.broadcast(str(path))
        else:
            save(Path(world.broadcast(None)))
            path = Path(world.broadcast(None))
        self._saved_step = self.state.global_step
        return path

    def interrupted(self, save: Callable[[Path], None]) -> Path | None:
        """Ctrl-C: save a checkpoint of the last completed update (unless it is saved already); returns its path.

        Call it from the loop's ``except KeyboardInterrupt`` before re-raising, with the model, optimizer and RNG
        state as they were after that update."""
        self._close_bar()
        step = self.state.global_step
        if step == self._saved_step:
            if step == self._initial_step and self.resume_dir is not None:
                path: Path | None = self.resume_dir  # nothing done since the resume
            else:
                path = self.output_dir / f"checkpoint-{step}" if step else None
            logger.warning("interrupted at update %d; %s", step, f"{path} holds it" if path else "nothing to save")
            return path
        if step == 0:
            logger.warning("interrupted before the first update: nothing to save")
            return None
        path = self.save_checkpoint(save)
        logger.warning(
            "interrupted: saved %s; continue with resume_from_checkpoint=%s (--resume-from-checkpoint)", path, path
        )
        return path

    def _close_bar(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def finish(
        self,
        *,
        save_model: Callable[[Path], Any],
        predict: Callable[[dict[str, np.ndarray]], Mapping[str, Any]] | None = None,
    ) -> TrainOutput:
        """Evaluate (reusing an evaluation of this very update), write the model folder, the run files and the curves.

        ``save_model(folder)`` writes ``config.json`` and ``model.safetensors`` (the framework's ``save_pretrained``);
        the tokenizer files are added here."""
        self._close_bar()
        state = self.state
        eval_metrics: dict[str, float] = {}
        if self.eval_data is not None:
            if predict is None:
                raise ValueError("finish needs predict= to evaluate on the validation data")
            if self._last_eval is not None and self._last_eval[0] == state.global_step:
                eval_metrics = self._last_eval[1]
            else:
                eval_metrics = self.evaluate(predict)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        save_model(self.output_dir)  # every rank: a sharded model is gathered; rank 0 writes
        main = self.world.is_main
        if main:
            self.tokenizer.save_pretrained(self.output_dir)
        tally = self._tally
        steps_here = state.global_step - self._initial_step
        runtime = (time.perf_counter() - self._started) if self._started is not None else 0.0
        train_loss = tally.loss_total / tally.steps_total if tally.steps_total else 0.0
        summary = {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(self._rows_done / runtime, 3) if runtime > 0 else 0.0,
            "train_steps_per_second": round(steps_here / runtime, 3) if runtime > 0 else 0.0,
            "total_flos": float(state.total_flos),
            "train_loss": float(train_loss),
        }
        state.log(summary)
        train_metrics = {**summary, "epoch": float(state.epoch)}
        if main:
            state.save(self.output_dir / TRAINER_STATE_NAME)
            write_json(self.output_dir / TRAIN_RESULTS_NAME, train_metrics)
            if eval_metrics:  # as transformers' save_metrics: eval_ names, plus the epoch
                write_json(self.output_dir / EVAL_RESULTS_NAME, {**eval_metrics, "epoch": float(state.epoch)})
            write_json(self.output_dir / ALL_RESULTS_NAME, {**train_metrics, **eval_metrics})
            self._plot()
        self.world.barrier()  # the folder is complete when any rank returns
        logger.info(
            "trained %d updates in %.1f s (train_loss %.4f); model and run files in %s",
            steps_here,
            runtime,
            train_loss,
            self.output_dir,
        )
        return TrainOutput(
            global_step=int(state.global_step),
            training_loss=float(train_loss),
            metrics=summary,
            eval_metrics=eval_metrics,
            output_dir=self.output_dir,
            log_history=list(state.log_history),
        )

    def _plot(self) -> None:
        from distilbert_mf.training.plot import plot_history

        try:
            plot_history(self.state.log_history, self.output_dir / PLOT_NAME, title=f"{self.task}: {self.args.model}")
        except ImportError as err:
            logger.warning("no %s: %s", PLOT_NAME, err)
        except ValueError as err:  # nothing logged yet (a run shorter than logging_steps without evaluation)
            logger.info("no %s: %s", PLOT_NAME, err)


# ----------------------------------------------------------------------------------------------------------------------
# Preparing a run
# ----------------------------------------------------------------------------------------------------------------------


def _non_embedding_parameters(config: DistilBertConfig, head: str) -> int:
    """Parameters outside the embeddings (transformers' ``floating_point_ops`` counts ``6 * these * tokens``)."""
    return int(
        sum(math.prod(shape) for key, shape in expected_shapes(config, head).items() if "embeddings." not in key)
    )


def _check_framework(framework: str) -> None:
    if not is_available(framework):
        package = FRAMEWORKS[framework][0]
        raise ImportError(
            f"framework {framework!r} is not installed; {package} needs it: pip install "
            f"'distilbert-mf[{EXTRAS[framework]}]'"
        )


def _apply_config_overrides(config: DistilBertConfig, overrides: Mapping[str, Any]) -> DistilBertConfig:
    if not overrides:
        return config
    head_fields = sorted({"num_labels", "id2label", "label2id"} & set(overrides))
    if head_fields:
        raise ValueError(
            f"config_overrides may not set {head_fields}: the head comes from the data; use num_labels / label_names "
            "(--num-labels / --label-names)"
        )
    try:
        return config.replace(**overrides)
    except TypeError as err:
        raise ValueError(f"config_overrides: {err}") from None


def _limited(source: Any, limit: int | None, args: TrainingArguments) -> Any:
    """The first ``limit`` examples of ``source`` (all of them when None)."""
    if limit is None:
        return source
    records = read_records(source, format=args.data_format, task=args.task)
    return records if len(records) <= limit else select_records(records, range(limit))


def _fresh_weights(
    args: TrainingArguments, config: DistilBertConfig, head: str, hub: Mapping[str, Any]
) -> dict[str, np.ndarray]:
    """Canonical arrays for the weights ``args.model`` lacks or holds at another size (the new head), drawn as
    transformers initialises them, from a generator seeded with ``args.seed``."""
    from distilbert_mf.checkpoint.loading import ShapeMismatchError, check_arrays, read_pretrained

    _, state, source = read_pretrained(args.model, head, config=config, **hub)
    _, report = check_arrays(state, config, head, source=source, from_file=True, ignore_mismatched_sizes=True)
    del state
    encoder = [(k, a, b) for k, a, b in report.mismatched if head == "base" or k.startswith(PREFIX)]
    if encoder:
        key, stored, wanted = encoder[0]
        raise ShapeMismatchError(
            f"{source}: weight {key!r} has shape {stored} but the run's config needs {wanted}; config_overrides may "
            "only change what keeps the encoder's shapes (dropout, ...)"
        )
    if report.mismatched:
        logger.warning(
            "%s: head weights of another size are trained from scratch: %s",
            source,
            [f"{k}: checkpoint {a} -> run {b}" for k, a, b in report.mismatched],
        )
    keys = set(report.missing) | {k for k, _, _ in report.mismatched}
    if not keys:
        return {}
    logger.info("new weights, seeded by seed=%d: %s", args.seed, sorted(keys))
    rng = np.random.default_rng([args.seed, _INIT_SEED])
    arrays = {}
    for key, shape in expected_shapes(config, head).items():  # a fixed order: the same draws everywhere
        if key not in keys:
            continue
        parts = key.split(".")
        if parts[-1] == "bias" or (len(parts) >= 2 and parts[-2] in LAYER_NORMS and parts[-1] == "weight"):
            value = np.ones(shape) if parts[-1] == "weight" else np.zeros(shape)
        else:
            value = rng.normal(0.0, config.initializer_range, size=shape)
            if key.endswith("word_embeddings.weight") and config.pad_token_id is not None:
                value[config.pad_token_id] = 0.0
        arrays[key] = value.astype(np.float32)
    return arrays


def prepare_run(args: TrainingArguments, *, world: World | None = None) -> TrainingRun:
    """Check every input and prepare the run (see the module docstring); nothing is trained yet.

    ``world``: the processes of a data-parallel run (every rank calls this; rank 0 checks and claims the output
    folder, and its error, if any, is raised on every rank); the loader yields this rank's share of each batch.

    Raises (before any step): ``ImportError`` for a framework that is not installed; ``DataError`` / ``ValueError``
    for bad data or options; ``FileExistsError`` for an ``output_dir`` holding another run; ``ValueError`` for a
    checkpoint of another run; ``FileNotFoundError`` for a missing file, model or checkpoint.
    """
    from distilbert_mf.tokenization.auto import AutoTokenizer

    if not isinstance(args, TrainingArguments):
        raise TypeError(f"prepare_run takes TrainingArguments, got {type(args).__name__}")
    _check_framework(args.framework)
    hub = args.hub_options()
    config = DistilBertConfig.from_pretrained(args.model, **hub)
    config = _apply_config_overrides(config, args.config_overrides)
    tokenizer = AutoTokenizer.from_pretrained(args.model, **hub)
    options = args.data_options()
    train_data = prepare_dataset(
        args.task,
        _limited(args.train_file, args.max_train_samples, args),
        tokenizer,
        options=options,
        max_seq_length=args.max_seq_length,
        config=config,
        label_names=args.label_names,
        num_labels=args.num_labels,
        format=args.data_format,
    )
    eval_data = None
    if args.validation_file is not None:
        eval_data = prepare_dataset(
            args.task,
            _limited(args.validation_file, args.max_eval_samples, args),
            tokenizer,
            options=options,
            max_seq_length=train_data.max_seq_length,
            config=config,
            labels_from=train_data,
            format=args.data_format,
        )
    config = config.replace(**train_data.config_overrides())
    world = world if world is not None else World()
    loader = BatchLoader(
        train_data,
        args.per_device_train_batch_size * world.world_size,
        seed=args.seed,
        group_by_length=args.group_by_length,
        pad_to_multiple_of=args.pad_to_multiple_of,
        last_batch="drop" if args.dataloader_drop_last else "keep",
        world_size=world.world_size,
        rank=world.rank,
    )
    plan = loader.plan(
        num_train_epochs=args.num_train_epochs,
        max_steps=args.max_steps,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
    )
    schedule = plan.schedule(args.learning_rate, warmup_ratio=args.warmup_ratio, warmup_steps=args.warmup_steps)
    fingerprint = run_fingerprint(
        task=args.task,
        model=args.model,
        config=config,
        label_names=train_data.label_names,
        framework=args.framework,
        max_seq_length=train_data.max_seq_length,
    )
    resume_dir = resolve_resume(args.resume_from_checkpoint, args.output_dir)
    tally = _Tally()
    if resume_dir is not None:
        state, run_state = check_resume(
            resume_dir,
            fingerprint,
            seed=args.seed,
            global_batch_size=loader.batch_size,
            gradient_accumulation_steps=plan.gradient_accumulation_steps,
            num_rows=len(train_data),
        )
        if state.max_steps != plan.max_steps:
            logger.warning(
                "%s was saved by a run of %d updates; this run has %d: the learning-rate schedule changes",
                resume_dir,
                state.max_steps,
                plan.max_steps,
            )
            state.max_steps = plan.max_steps
        start = run_state.position
        tally = _Tally.from_dict(run_state.extra.get("tally"))
        new_weights: dict[str, np.ndarray] = {}
    else:
        state = TrainerState(
            max_steps=plan.max_steps,
            num_train_epochs=plan.epochs,
            train_batch_size=args.per_device_train_batch_size,
            logging_steps=args.logging_steps,
            eval_steps=args.eval_every,
            save_steps=args.save_steps,
        )
        start = DataPosition(0, 0)
    world.on_main(
        lambda: check_output_dir(
            args.output_dir,
            fingerprint,
            overwrite_output_dir=args.overwrite_output_dir,
            resuming=resume_dir is not None,
        )
    )
    if resume_dir is None:
        new_weights = _fresh_weights(args, config, TASK_HEADS[train_data.task], hub)
    return TrainingRun(
        args=args,
        config=config,
        tokenizer=tokenizer,
        train_data=train_data,
        eval_data=eval_data,
        loader=loader,
        plan=plan,
        schedule=schedule,
        state=state,
        start=start,
        resume_dir=resume_dir,
        new_weights=new_weights,
        fingerprint=fingerprint,
        tally=tally,
        world=world,
    )


def train(args: TrainingArguments) -> TrainOutput:
    """Prepare the run and train it with ``distilbert_mf.<framework>.training.fit`` (see the module docstring)."""
    if not isinstance(args, TrainingArguments):
        raise TypeError(f"train takes TrainingArguments, got {type(args).__name__}")
    _check_framework(args.framework)
    package = FRAMEWORKS[args.framework][0]
    try:
        module = importlib.import_module(f"{package}.training")
    except ImportError as err:
        raise ImportError(
            f"the {args.framework!r} training loop could not be imported ({err}); install it with pip install "
            f"'distilbert-mf[{EXTRAS[args.framework]}]'"
        ) from err
    launch = getattr(module, "launch_world", None)  # several processes (torchrun ...): the framework says
    world = launch(args) if launch is not None else None
    return module.fit(prepare_run(args, world=world))


# the files a finished run writes into output_dir besides the model and tokenizer files
RUN_FILES = (TRAINER_STATE_NAME, EVAL_RESULTS_NAME, TRAIN_RESULTS_NAME, ALL_RESULTS_NAME, PLOT_NAME)
