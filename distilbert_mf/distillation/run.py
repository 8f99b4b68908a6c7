"""The framework-neutral distillation driver: ``distill(DistillationArguments(...))``, on top of the fine-tuning run.

A distillation run, in PyTorch, Keras (TensorFlow backend) or Flax, is a fine-tuning run of the student (:func:`~distilbert_mf.training.trainer.prepare_run`: the
same data layer, options, progress bar, ``log_history``, checkpoints, resume, Ctrl-C and run folder), plus a
teacher and a loss. Each framework writes its loop (``distilbert_mf.<framework>.distillation.distil(drun)``): the
teacher's forward pass without gradients, the student's forward and backward through the framework's
``distillation_loss`` (or task variant), the optimizer update of its training module::

    from distilbert_mf.distillation.run import DistillationArguments, distill

    # general distillation: masked LM on a text corpus (one document per line), student from teacher layers
    distill(DistillationArguments(output_dir="out", teacher="teacher-folder", train_file="corpus.txt",
                                  student_layers=(0, 2, 4, 7, 9, 11), max_steps=1000))
    # task-specific distillation with a fine-tuned teacher
    distill(DistillationArguments(output_dir="out", task="text-classification", teacher="sst2-teacher",
                                  train_file="train.tsv", validation_file="dev.tsv", student_layers=(0, 2, 4)))

What it adds to the fine-tuning run:

- **The student**: ``model`` (a checkpoint), or, when ``model`` is None, the teacher's ``student_layers`` written
  once into ``output_dir/student-init`` (:func:`~distilbert_mf.distillation.init_student_from_pretrained`, with
  the teacher's tokenizer) and trained from there.
- **The masking** (general distillation): :class:`~distilbert_mf.distillation.FrequencyMasker` over the training
  corpus' token counts (``max(count, 1) ** -mlm_smoothing``), redrawn every step from the batch loader's seeded
  generator (so a resume masks exactly as an uninterrupted run). Evaluation data keep BERT's masking (a fixed draw),
  so ``eval_loss`` / perplexity are the student's masked-LM numbers.
- **The optimiser defaults** (where the argument is left at None): general distillation takes DistilBERT's
  (:data:`DISTILBERT_OPTIMIZER`: AdamW lr 5e-4, betas (0.9, 0.98), eps 1e-6, no weight decay, 5 % warm-up then
  linear decay, clipping at 5.0); task-specific distillation takes the fine-tuning defaults (transformers', as
  Hugging Face's SQuAD distillation script).
- **The loss components** (``loss_ce``, ``loss_mlm``, ``loss_cos``, ``loss_mse`` / ``loss_task``) averaged since
  the last log, in every training entry of ``log_history`` beside ``loss`` (the run's ``end_step(extra=...)``: kept
  in each checkpoint, so a resumed run logs what an uninterrupted one does).
- **``distillation.json``** in ``output_dir``: the teacher and the loss options; resuming with another teacher or
  other options is refused.
- **Checks before the first step**: a teacher whose vocabulary differs from the student's, a general-distillation
  teacher without a masked-LM head, a task teacher with other labels, a cosine term between hidden states of
  different widths, temperature <= 0, every weight zero, a corpus without usable tokens, a layer list that does
  not fit the teacher.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.config import DistilBertConfig
from distilbert_mf.distillation.masking import FrequencyMasker
from distilbert_mf.distillation.options import (
    DistillationWeights,
    TaskDistillationWeights,
    check_hidden_sizes,
    check_masked_lm_teacher,
    check_vocabularies,
)
from distilbert_mf.training.batching import Step
from distilbert_mf.training.data import canonical_task
from distilbert_mf.training.state import read_json, write_json
from distilbert_mf.training.trainer import TrainingArguments, TrainingRun, TrainOutput, World, prepare_run

logger = logging.getLogger(__name__)

__all__ = [
    "DISTILBERT_OPTIMIZER",
    "DISTILLATION_LOSSES",
    "DistillationArguments",
    "DistillationRun",
    "distill",
    "prepare_distillation",
]

# task -> the framework loss function (distilbert_mf.<framework>.distillation)
DISTILLATION_LOSSES = {
    "masked-lm": "distillation_loss",
    "text-classification": "sequence_classification_distillation_loss",
    "token-classification": "token_classification_distillation_loss",
    "question-answering": "question_answering_distillation_loss",
}
# DistilBERT's optimiser (Sanh et al. 2019; Hugging Face's distillation training script)
DISTILBERT_OPTIMIZER = {
    "learning_rate": 5e-4,
    "adam_beta1": 0.9,
    "adam_beta2": 0.98,
    "adam_epsilon": 1e-6,
    "weight_decay": 0.0,
    "warmup_ratio": 0.05,
    "max_grad_norm": 5.0,
}
_FINE_TUNING = {f.name: f.default for f in dataclasses.fields(TrainingArguments) if f.name in DISTILBERT_OPTIMIZER}
RECIPE_GRAD_NORM = -1.0  # max_grad_norm's default: the recipe's (None and 0 keep meaning "no clipping")
STUDENT_INIT_DIR = "student-init"
DISTILLATION_FILE = "distillation.json"  # in output_dir: the teacher and the loss options
_TARGETS = {  # task -> batch keys the loss takes (beside the model inputs)
    "masked-lm": ("attention_mask", "labels"),
    "text-classification": ("labels",),
    "token-classification": ("attention_mask", "labels"),
    "question-answering": ("start_positions", "end_positions"),
}


@dataclass(frozen=True)
class DistillationArguments(TrainingArguments):
    """A distillation run: every :class:`~distilbert_mf.training.trainer.TrainingArguments` option (the student's
    run), plus the teacher and the loss. The CLI flags are these names, dashed.

    Changed from the fine-tuning arguments:
        task: ``masked-lm`` (general distillation, the default), ``text-classification``,
            ``token-classification`` or ``question-answering`` (task-specific, with a fine-tuned teacher).
        model: the student's starting checkpoint; None (default): built from the teacher's ``student_layers``.
        learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay, warmup_ratio, max_grad_norm: None takes
            DistilBERT's values for general distillation (:data:`DISTILBERT_OPTIMIZER`), the fine-tuning defaults
            for task-specific distillation.

    Distillation:
        teacher: the teacher: a folder, Hub repo id or built-in name (DistilBERT layout, any weights format).
        student_layers: teacher layers the student keeps (``model`` None): a list, ``"distilbert"`` (default:
            [0, 2, 4, 7, 9, 11] of 12) or ``"every_other"``.
        temperature: the soft-target temperature (2.0).
        alpha_ce: the soft-target weight (None: 5.0 general, 0.5 task-specific).
        alpha_mlm / alpha_cos / alpha_mse: general distillation (2.0 / 1.0 / 0.0).
        alpha_task: task-specific distillation: the weight of the true-label loss (0.5).
        restrict_ce_to_mask: general: the soft-target term on the masked tokens only (default: every real token).
        mlm_smoothing: general: masking probability ``max(count, 1) ** -mlm_smoothing`` (0.7).
        teacher_bf16: run the teacher in bfloat16 (the student keeps its own precision, ``bf16``).
    """

    task: str = "masked-lm"
    model: str | None = None
    train_file: Any = None
    learning_rate: float | None = None
    adam_beta1: float | None = None
    adam_beta2: float | None = None
    adam_epsilon: float | None = None
    weight_decay: float | None = None
    warmup_ratio: float | None = None
    max_grad_norm: float | None = RECIPE_GRAD_NORM
    teacher: str | None = None
    student_layers: Sequence[int] | str | None = None
    temperature: float = 2.0
    alpha_ce: float | None = None
    alpha_mlm: float = 2.0
    alpha_cos: float = 1.0
    alpha_mse: float = 0.0
    alpha_task: float = 0.5
    restrict_ce_to_mask: bool = False
    mlm_smoothing: float = 0.7
    teacher_bf16: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        if isinstance(self.teacher, os.PathLike):
            set_(self, "teacher", os.fspath(self.teacher))
        if not isinstance(self.teacher, str) or not self.teacher:
            raise ValueError(f"teacher must be a model folder, Hub repo id or built-in name, got {self.teacher!r}")
        student_init = str(Path(os.fspath(self.output_dir)) / STUDENT_INIT_DIR)
        if self.model is None:
            set_(self, "model", student_init)
        elif self.student_layers is not None and os.fspath(self.model) != student_init:
            raise ValueError(
                "student_layers builds the student from the teacher, but model names a student checkpoint; give one "
                "of them"
            )
        task = canonical_task(self.task)
        if task not in DISTILLATION_LOSSES:
            raise ValueError(f"task must be one of {sorted(DISTILLATION_LOSSES)} for distillation, got {self.task!r}")
        defaults = DISTILBERT_OPTIMIZER if task == "masked-lm" else _FINE_TUNING
        for name, value in defaults.items():
            value_now = getattr(self, name)
            if (value_now is None and name != "max_grad_norm") or (
                name == "max_grad_norm" and value_now == RECIPE_GRAD_NORM
            ):
                set_(self, name, value)
        if self.alpha_ce is None:
            set_(self, "alpha_ce", 5.0 if task == "masked-lm" else 0.5)
        if isinstance(self.student_layers, (list, tuple)):
            set_(self, "student_layers", tuple(self.student_layers))
        super().__post_init__()
        self.weights()  # the loss options are checked here
        if task == "masked-lm" and self.whole_word_mask:
            raise ValueError(
                "whole_word_mask is BERT's masking; distillation masks single tokens by frequency (mlm_smoothing)"
            )
        smoothing = self.mlm_smoothing
        if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or not 0 <= smoothing < math.inf:
            raise ValueError(f"mlm_smoothing must be a number >= 0, got {self.mlm_smoothing!r}")
        if not isinstance(self.teacher_bf16, bool):
            raise ValueError(f"teacher_bf16 must be True or False, got {self.teacher_bf16!r}")

    @property
    def general(self) -> bool:
        """General distillation (masked LM) rather than task-specific."""
        return self.task == "masked-lm"

    @property
    def builds_student(self) -> bool:
        """The student is built from the teacher's layers (no ``model`` was given)."""
        return Path(str(self.model)) == Path(os.fspath(self.output_dir)) / STUDENT_INIT_DIR

    def weights(self) -> DistillationWeights | TaskDistillationWeights:
        """The loss weights (checked)."""
        if self.general:
            return DistillationWeights(
                temperature=self.temperature,
                alpha_ce=self.alpha_ce,
                alpha_mlm=self.alpha_mlm,
                alpha_cos=self.alpha_cos,
                alpha_mse=self.alpha_mse,
                restrict_ce_to_mask=self.restrict_ce_to_mask,
            )
        return TaskDistillationWeights(temperature=self.temperature, alpha_ce=self.alpha_ce, alpha_task=self.alpha_task)

    def record(self) -> dict[str, Any]:
        """What ``distillation.json`` holds: the teacher, the student source and the loss options."""
        layers = self.student_layers
        return {
            "teacher": self.teacher,
            "student": self.model,
            "student_layers": list(layers) if isinstance(layers, tuple) else layers,
            "task": self.task,
            "loss": DISTILLATION_LOSSES[self.task],
            **self.weights().as_kwargs(),
            "mlm_smoothing": float(self.mlm_smoothing) if self.general else None,
            "teacher_bf16": self.teacher_bf16,
        }


# ----------------------------------------------------------------------------------------------------------------------
# The run
# ----------------------------------------------------------------------------------------------------------------------


class DistillationRun:
    """A :class:`~distilbert_mf.training.trainer.TrainingRun` of the student plus the teacher and the loss; built by
    :func:`prepare_distillation`, driven by a framework's ``distil``.

    Attributes:
        run: the student's training run (data, plan, schedule, state, checkpoints ...).
        args: the :class:`DistillationArguments`.
        teacher_config: the teacher's config.
        loss_name: the framework loss to call (``distillation_loss`` or a task variant).
        loss_options: its keyword options (temperature and weights).
        output_hidden_states: whether the models must return hidden states (the cosine term).
        teacher_dtype: ``"bfloat16"`` or None (the checkpoint's).
    """

    def __init__(self, run: TrainingRun, args: DistillationArguments, teacher_config: DistilBertConfig) -> None:
        self.run = run
        self.args = args
        self.teacher_config = teacher_config
        self.loss_name = DISTILLATION_LOSSES[args.task]
        self.loss_options = args.weights().as_kwargs()
        self.output_hidden_states = args.general and args.alpha_cos > 0
        self.teacher_dtype = "bfloat16" if args.teacher_bf16 else None

    def load_teacher(self, cls: type | None = None, **kwargs: Any) -> Any:
        """The teacher: ``cls.from_pretrained(teacher, dtype=teacher_dtype, ...)`` (default: the run's head class in
        its framework), as ``from_pretrained`` leaves it (eval mode)."""
        cls = cls if cls is not None else self.run.model_class()
        if self.teacher_dtype is not None:
            kwargs.setdefault("dtype", self.teacher_dtype)
        return cls.from_pretrained(self.args.teacher, **self.args.hub_options(), **kwargs)

    def split(self, batch: Mapping[str, np.ndarray]) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """A training batch -> (the models' inputs, the loss's targets): the models never see the labels (the
        distillation loss computes the student's own loss term)."""
        inputs = {k: v for k, v in batch.items() if k in ("input_ids", "attention_mask")}
        targets = {k: batch[k] for k in _TARGETS[self.args.task] if k in batch}
        return inputs, targets

    def end_step(
        self,
        step: Step,
        *,
        losses: Mapping[str, float],
        grad_norm: float | None,
        learning_rate: float,
        save: Callable[[Path], None],
        predict: Callable[[dict[str, np.ndarray]], Mapping[str, Any]],
    ) -> None:
        """:meth:`TrainingRun.end_step` with the update's mean ``losses``: ``loss``, and its components as the
        ``extra`` values averaged into each log entry (kept across a resume by the run)."""
        self.run.end_step(
            step,
            loss=float(losses["loss"]),
            grad_norm=grad_norm,
            learning_rate=learning_rate,
            save=save,
            predict=predict,
            extra={name: float(value) for name, value in losses.items() if name != "loss"},
        )

    def interrupted(self, save: Callable[[Path], None]) -> Path | None:
        return self.run.interrupted(save)

    def finish(self, *, save_model: Callable[[Path], Any], predict: Callable[..., Mapping[str, Any]]) -> TrainOutput:
        return self.run.finish(save_model=save_model, predict=predict)


# ----------------------------------------------------------------------------------------------------------------------
# Preparing a run
# ----------------------------------------------------------------------------------------------------------------------


def _build_student(args: DistillationArguments) -> None:
    """Write the student from the teacher's layers into ``output_dir/student-init`` (once; atomically)."""
    from distilbert_mf.distillation.student import init_student_from_pretrained
    from distilbert_mf.tokenization.auto import AutoTokenizer

    target = Path(str(args.model))
    if target.is_dir() and not args.overwrite_output_dir:
        logger.info("student: %s (built earlier from the teacher's layers)", target)
        return
    student = init_student_from_pretrained(args.teacher, args.student_layers, **args.hub_options())
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        student.save_pretrained(staging)
        AutoTokenizer.from_pretrained(args.teacher, **args.hub_options()).save_pretrained(staging)
        write_json(staging / "student_layers.json", {"teacher": args.teacher, "layers": list(student.layers)})
        if target.exists():
            shutil.rmtree(target)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    logger.info("student: teacher layers %s -> %s", list(student.layers), target)


def _teacher_keys(args: DistillationArguments) -> list[str]:
    from distilbert_mf.checkpoint.hub import resolve_checkpoint
    from distilbert_mf.checkpoint.io import read_weights

    _, fmt, files = resolve_checkpoint(args.teacher, **args.hub_options())
    return list(read_weights(files, fmt))


def _check_teacher(args: DistillationArguments, run: TrainingRun, teacher_config: DistilBertConfig) -> None:
    from distilbert_mf.tokenization.auto import AutoTokenizer

    try:
        teacher_vocab: Any = AutoTokenizer.from_pretrained(args.teacher, **args.hub_options())
    except (OSError, ValueError):
        teacher_vocab = teacher_config  # a teacher folder without tokenizer files: compare the sizes
    check_vocabularies(teacher_vocab, run.tokenizer)
    check_vocabularies(teacher_config, run.config)
    if args.general:
        check_masked_lm_teacher(_teacher_keys(args), source=f"the teacher {args.teacher}")
        check_hidden_sizes(teacher_config, run.config, alpha_cos=args.alpha_cos)
        return
    if teacher_config.num_labels != run.config.num_labels:
        raise ValueError(
            f"the teacher {args.teacher} predicts {teacher_config.num_labels} labels but the data has "
            f"{run.config.num_labels} ({list(run.train_data.label_names or [])}); task-specific distillation needs a "
            "teacher fine-tuned on the same labels"
        )
    names = tuple(run.train_data.label_names or ())  # none for question answering (start / end positions)
    teacher_names = [teacher_config.id2label.get(i, teacher_config.id2label.get(str(i))) for i in range(len(names))]
    unnamed = ([f"LABEL_{i}" for i in range(len(names))], [str(i) for i in range(len(names))])
    if names and list(names) not in unnamed and teacher_names not in unnamed and teacher_names != list(names):
        raise ValueError(
            f"the teacher's labels {teacher_names} differ from the data's {list(names)} (in id order); task-specific "
            "distillation compares predictions label by label"
        )


def _check_record(args: DistillationArguments, run: TrainingRun) -> None:
    """``distillation.json``: written on a fresh run, compared on a resume."""
    path = Path(args.output_dir) / DISTILLATION_FILE
    record = args.record()
    if run.resume_dir is not None and path.is_file():
        stored = read_json(path)
        differences = {k: (stored.get(k), v) for k, v in record.items() if stored.get(k) != v}
        if differences:
            detail = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in differences.items())
            raise ValueError(f"{run.resume_dir} belongs to another distillation ({detail})")
    write_json(path, record)


def prepare_distillation(args: DistillationArguments, *, world: World | None = None) -> DistillationRun:
    """Check every input (see the module docstring), build the student when asked, prepare the student's run with
    the frequency masker; nothing is trained yet. ``world``: the processes of a torchrun launch (rank 0 builds the
    student and writes the run record; an error there is raised on every rank)."""
    if not isinstance(args, DistillationArguments):
        raise TypeError(f"prepare_distillation takes DistillationArguments, got {type(args).__name__}")
    world = world if world is not None else World()
    teacher_config = DistilBertConfig.from_pretrained(args.teacher, **args.hub_options())
    if args.builds_student and args.resume_from_checkpoint in (None, False):
        world.on_main(lambda: _build_student(args))
        world.barrier()
    run = prepare_run(args, world=world)
    _check_teacher(args, run, teacher_config)
    if args.general:
        masker = FrequencyMasker.from_corpus(
            run.train_data,
            run.tokenizer,
            smoothing=float(args.mlm_smoothing),
            mlm_probability=args.mlm_probability,
            mask_replace_prob=args.mask_replace_prob,
            random_replace_prob=args.random_replace_prob,
        )
        run.with_masker(masker)
    world.on_main(lambda: _check_record(args, run))
    logger.info(
        "distilling %s (%d layers) into %s (%d layers): %s %s",
        args.teacher,
        teacher_config.n_layers,
        args.model,
        run.config.n_layers,
        DISTILLATION_LOSSES[args.task],
        args.weights().as_kwargs(),
    )
    return DistillationRun(run, args, teacher_config)


def distill(args: DistillationArguments) -> TrainOutput:
    """Prepare the run and distil with ``distilbert_mf.<framework>.distillation.distil``."""
    from distilbert_mf.frameworks import EXTRAS, FRAMEWORKS, is_available

    if not isinstance(args, DistillationArguments):
        raise TypeError(f"distill takes DistillationArguments, got {type(args).__name__}")
    if not is_available(args.framework):
        raise ImportError(
            f"framework {args.framework!r} is not installed: pip install 'distilbert-mf[{EXTRAS[args.framework]}]'"
        )
    package = FRAMEWORKS[args.framework][0]
    launch = getattr(importlib.import_module(f"{package}.training"), "launch_world", None)  # torchrun ...
    drun = prepare_distillation(args, world=launch(args) if launch is not None else None)
    return importlib.import_module(f"{package}.distillation").distil(drun)
