"""Training speed and memory: one fine-tuning update in every framework against a plain transformers PyTorch loop.

Contenders (``DistilBertForSequenceClassification``, the run's random checkpoint, batch 32 x 128 at full size, one
AdamW update per batch: forward, loss, backward, global-norm clipping at 1.0, AdamW with weight decay 0.01):

- ``transformers-torch`` (the reference): transformers 5.x' ``DistilBertForSequenceClassification`` (sdpa) in a
  plain loop: ``torch.autocast`` for bf16, ``loss.backward()``, ``torch.nn.utils.clip_grad_norm_``,
  ``torch.optim.AdamW`` (decay / no-decay groups), ``zero_grad(set_to_none=True)``.
- ``ours-torch``: :func:`distilbert_mf.torch.training.train_step` (our loop's update: autocast, backward,
  ``apply_update``) with :func:`~distilbert_mf.torch.training.create_optimizer`.
- ``ours-keras``: ``model.train_on_batch`` (the model's ``train_step`` and own loss, what ``fit`` runs per batch)
  with :class:`~distilbert_mf.tensorflow.training.PyTorchAdamW` from its ``create_optimizer``, compiled with
  ``jit_compile="auto"`` as the Keras loop compiles (Keras resolves it to graph mode, no XLA, on a CPU-only machine);
  ``ours-keras-xla``: the same with ``jit_compile=True``. bf16: the ``mixed_bfloat16`` policy.
- ``ours-flax``: the Flax loop's :class:`~distilbert_mf.flax.training.TrainStep` (``nnx.jit`` train step bound with
  ``nnx.cached_partial``) over :func:`~distilbert_mf.flax.training.create_optimizer`. bf16: bfloat16 compute over
  float32 parameters.

The models, optimizers and steps come from each framework's training module through a stand-in of the run they read
(:class:`BenchRun`: the same :class:`~distilbert_mf.training.trainer.TrainingArguments`, schedule, decay rule and
``load_model`` as a real run; only the data layer is replaced by fixed batches). Every contender gets the same
batches: ``warmup + steps`` seeded random (32, 128) token-id batches, all-ones attention mask, random labels; dropout
is on (training mode), as in real fine-tuning.

Each contender runs in its own fresh process, one after the other (the models do not fit in memory side by side on
a small machine): imports and a framework touch, then the peak-RSS counter is reset (``/proc/self/clear_refs``),
then the model is loaded, the optimizer built, ``warmup`` updates run (the first, which includes tracing / XLA
compilation, is reported apart) and ``steps`` updates timed one by one (``perf_counter`` around the update and the
read-back of its loss, and the process' CPU time over the same span: ``cpu_share`` = CPU seconds / (wall seconds x
threads) says how much of its cores the contender got while other work shared the machine). Reported: median
seconds per update, sequences/s, the peak RSS (absolute and its growth over the process before loading), and the
fraction of the GEMM peak: a training update is counted as three forwards of matmul FLOPs
(:func:`benchmarks.common.forward_flops`; the backward is two matmuls per forward matmul), over the best
fp32 / bf16 ``torch.matmul`` rate measured in the same run (n x n, at the start and the end of the part).

**Distillation** (issue 16): per framework, one process holds the teacher (the run's 6-layer checkpoint, frozen),
a student of teacher layers [0, 2, 4] (``distilbert_mf.distillation.student``) and a second copy of that student,
and alternates timed updates of the library's distillation step (teacher forward without gradients + student
forward and backward through the task-distillation loss + ``apply_update``; torch
:func:`~distilbert_mf.torch.distillation.distillation_step`, Keras / Flax ``DistilStep``) with the fine-tuning
update of the student copy (the same framework's step as above; Keras in graph mode, as its ``DistilStep``). The
ratio says what distilling costs over fine-tuning the same student. ``masked-lm`` (general distillation: the triple
loss over the vocabulary, hidden states for the cosine term) is the other task this part can time.

    python benchmarks/bench_training.py --json training.json                # full size (a quiet machine, ~25 min)
    python benchmarks/bench_training.py --quick --json /tmp/training.json   # tiny config, 2 updates: checks the code
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    FULL_CONFIG,
    ROOT,
    SMOKE_CONFIG,
    emit_json,
    forward_flops,
    machine_info,
    median,
    pin_framework_threads,
    pin_threads,
    reset_peak_rss,
    rss_bytes,
    run_script,
)

logger = logging.getLogger("benchmarks.training")

CONTENDERS = {  # name -> worker framework
    "transformers-torch": "torch",
    "ours-torch": "torch",
    "ours-keras": "keras",
    "ours-keras-xla": "keras",
    "ours-flax": "flax",
}
REFERENCE = "transformers-torch"
OURS_TORCH = "ours-torch"
DISTILL_FRAMEWORKS = ("torch", "keras", "flax")
DISTILL_TASKS = ("text-classification", "masked-lm")
FRAMEWORK_NAMES = {"torch": "pt", "keras": "tf", "flax": "flax"}  # TrainingArguments.framework
FRAMEWORK_THREADS = {"torch": "torch", "keras": "tensorflow", "flax": "jax"}  # pin_framework_threads
STUDENT_LAYERS = "every_other"  # teacher layers [0, 2, 4] of 6
LEARNING_RATE, WEIGHT_DECAY, MAX_GRAD_NORM = 5e-5, 0.01, 1.0
MASK_FRACTION = 0.15  # masked-LM batches: targets at 15 % of the tokens, -100 elsewhere
TARGETS = {  # (what, contender, baseline, goal): speed ratio baseline time / contender time >= goal
    "ours PyTorch vs transformers": (OURS_TORCH, REFERENCE, 1.3),
    "Keras XLA vs our PyTorch": ("ours-keras-xla", OURS_TORCH, 0.9),
    "Flax nnx.jit vs our PyTorch": ("ours-flax", OURS_TORCH, 0.9),
}
FULL_SETTINGS: dict[str, Any] = {
    "batch": 32,
    "seq": 128,
    "warmup": 3,
    "steps": 5,
    "distill_warmup": 2,
    "distill_steps": 3,
    "distill_dtypes": None,  # as the training cases
    "gemm_n": 2048,
    "gemm_runs": 2,  # at the start and at the end of the part
}
QUICK_SETTINGS: dict[str, Any] = {
    "batch": 4,
    "seq": 32,
    "warmup": 1,
    "steps": 2,
    "distill_warmup": 1,
    "distill_steps": 2,
    "distill_dtypes": ("float32",),
    "gemm_n": 256,
    "gemm_runs": 1,
}


# ------------------------------------------------------------------------------------------------------ inputs
def fixed_batches(
    vocab_size: int, num_labels: int, batch: int, seq: int, count: int, *, task: str = "text-classification"
) -> list[dict[str, np.ndarray]]:
    """``count`` seeded batches, identical in every process: int64 ids (1..vocab), all-ones mask, labels (class ids,
    or for ``masked-lm`` the token at 15 % of the positions and -100 elsewhere)."""
    out = []
    for index in range(count):
        rng = np.random.default_rng(10_000 + index)
        ids = rng.integers(1, vocab_size, (batch, seq), dtype=np.int64)
        if task == "masked-lm":
            labels = np.where(rng.random((batch, seq)) < MASK_FRACTION, ids, -100).astype(np.int64)
            labels[:, 0] = ids[:, 0]  # at least one target per row
        else:
            labels = rng.integers(0, num_labels, (batch,), dtype=np.int64)
        out.append({"input_ids": ids, "attention_mask": np.ones((batch, seq), np.int64), "labels": labels})
    return out


def masked_lm_forward_flops(config: Any, batch: int, seq: int) -> int:
    """Matmul FLOPs of a masked-LM forward: the layers of :func:`forward_flops` plus ``vocab_transform`` (d^2) and
    ``vocab_projector`` (d x vocab) on every token, instead of the classification head."""
    layers = forward_flops(config, batch, seq, num_labels=0) - 2 * batch * config.dim * config.dim
    return layers + 2 * batch * seq * (config.dim * config.dim + config.dim * config.vocab_size)


def task_forward_flops(config: Any, batch: int, seq: int, task: str) -> int:
    return masked_lm_forward_flops(config, batch, seq) if task == "masked-lm" else forward_flops(config, batch, seq)


# ----------------------------------------------------------------------------------------------- the stand-in run
def _training_run_class() -> type:
    """:class:`BenchRun`, built on first use (importing the trainer module imports no framework)."""
    from distilbert_mf.training.trainer import TrainingRun

    class BenchRun:
        """What the framework training modules read from a ``TrainingRun``, with fixed batches for data: the real
        run's ``head`` / ``task`` / ``model_class`` / ``load_model`` / ``decays`` over a real ``TrainingArguments``
        and ``LinearSchedule``; no data layer, no logging, no checkpoints."""

        head = TrainingRun.head
        task = TrainingRun.task
        model_class = TrainingRun.model_class
        load_model = TrainingRun.load_model
        decays = TrainingRun.decays

        def __init__(self, args: Any, config: Any, total_steps: int) -> None:
            from distilbert_mf.training.schedules import LinearSchedule

            self.args = args
            self.config = config
            self.init_source = args.model
            self.resume_dir = None
            self.new_weights: dict[str, np.ndarray] = {}
            self.schedule = LinearSchedule(float(args.learning_rate), warmup_steps=0, total_steps=total_steps)
            self.train_data = types.SimpleNamespace(task=args.task, pad_token_id=config.pad_token_id)

    return BenchRun


def _arguments(cls: type, framework: str, bf16: bool, **kwargs: Any) -> Any:
    """``TrainingArguments`` / ``DistillationArguments`` with the benchmark's update (lr, decay, clipping, seed)."""
    return cls(
        train_file="(fixed random batches)",
        framework=FRAMEWORK_NAMES[framework],
        learning_rate=LEARNING_RATE,
        weight_decay=WEIGHT_DECAY,
        max_grad_norm=MAX_GRAD_NORM,
        bf16=bf16,
        seed=0,
        **kwargs,
    )


def bench_run(
    model: str, framework: str, *, bf16: bool, total_steps: int, task: str = "text-classification", output_dir: str
) -> Any:
    """A :class:`BenchRun` of ``model`` (a folder) in ``framework`` (torch / keras / flax)."""
    from distilbert_mf import DistilBertConfig
    from distilbert_mf.training.trainer import TrainingArguments

    args = _arguments(TrainingArguments, framework, bf16, output_dir=output_dir, task=task, model=model)
    return _training_run_class()(args, DistilBertConfig.from_pretrained(model), total_steps)


def distillation_run(
    teacher: str, student: str, framework: str, *, bf16: bool, total_steps: int, task: str, output_dir: str
) -> Any:
    """A real :class:`~distilbert_mf.distillation.run.DistillationRun` over the stand-in run of ``student``; the
    teacher in bfloat16 too when ``bf16``."""
    from distilbert_mf import DistilBertConfig
    from distilbert_mf.distillation.run import DistillationArguments, DistillationRun

    args = _arguments(
        DistillationArguments, framework, bf16, output_dir=output_dir, task=task, teacher=teacher, model=student,
        teacher_bf16=bf16,
    )  # fmt: skip
    run = _training_run_class()(args, DistilBertConfig.from_pretrained(student), total_steps)
    return DistillationRun(run, args, DistilBertConfig.from_pretrained(teacher))


# --------------------------------------------------------------------------------------------- the update steps
Update = Callable[[Mapping[str, np.ndarray]], float]  # one synchronised update from a numpy batch -> its loss


def transformers_update(checkpoint: str, bf16: bool) -> tuple[Update, dict[str, Any]]:
    """The reference: a plain transformers PyTorch loop."""
    import torch
    import transformers

    transformers.logging.set_verbosity_error()
    model = transformers.DistilBertForSequenceClassification.from_pretrained(
        checkpoint, dtype=torch.float32, attn_implementation="sdpa"
    )
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    groups = [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},  # weights
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},  # biases, LayerNorm
    ]
    optimizer = torch.optim.AdamW(groups, lr=LEARNING_RATE)
    torch.manual_seed(0)

    def update(batch: Mapping[str, np.ndarray]) -> float:
        tensors = {key: torch.from_numpy(value) for key, value in batch.items()}
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(**tensors).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return update, {"transformers": transformers.__version__, "attn_implementation": "sdpa"}


def torch_update(run: Any) -> tuple[Update, dict[str, Any]]:
    """Our PyTorch loop's update (:func:`distilbert_mf.torch.training.train_step`)."""
    import torch

    from distilbert_mf.torch import training

    device = torch.device("cpu")
    model = training.load_model(run, device)
    optimizer = training.create_optimizer(model, run)
    torch.manual_seed(0)

    def update(batch: Mapping[str, np.ndarray]) -> float:
        loss, _ = training.train_step(
            model,
            optimizer,
            [training.to_device(batch, device)],
            learning_rate=LEARNING_RATE,
            max_grad_norm=MAX_GRAD_NORM,
            bf16=run.args.bf16,
        )
        return loss

    return update, {"attn_implementation": "sdpa (our default)"}


def keras_update(run: Any, jit_compile: bool | str) -> tuple[Update, dict[str, Any]]:
    """Our Keras model's ``train_step`` through ``train_on_batch`` (what ``fit`` runs for each batch)."""
    from distilbert_mf.tensorflow import training

    model = training.load_model(run)
    optimizer = training.create_optimizer(model, run)
    model.compile(optimizer=optimizer, jit_compile=jit_compile)

    def update(batch: Mapping[str, np.ndarray]) -> float:
        return float(model.train_on_batch(dict(batch), return_dict=True)["loss"])

    return update, {"jit_compile_asked": jit_compile, "jit_compile": bool(model.jit_compile)}


def flax_update(run: Any) -> tuple[Update, dict[str, Any]]:
    """Our Flax loop's ``TrainStep`` (``nnx.jit`` train step bound with ``nnx.cached_partial``)."""
    from distilbert_mf.flax import training

    model = training.load_model(run)
    optimizer = training.create_optimizer(model, run)
    step = training.train_step_for(run, model, optimizer)
    return (lambda batch: step([batch])[0]), {}


def distillation_updates(drun: Any, framework: str) -> tuple[Update, Update]:
    """(distillation update of the student, fine-tuning update of a second copy of the student) in ``framework``,
    through the library's distillation and training modules."""
    run, bf16 = drun.run, drun.run.args.bf16
    if framework == "torch":
        import torch

        from distilbert_mf.torch import distillation, training

        device = torch.device("cpu")
        student, teacher = training.load_model(run, device), distillation.load_teacher(drun, device)
        optimizer = training.create_optimizer(student, run)
        loss = distillation.LOSSES[drun.loss_name]
        torch.manual_seed(0)

        def distil(batch: Mapping[str, np.ndarray]) -> float:
            parts = tuple(training.to_device(part, device) for part in drun.split(batch))
            losses, _ = distillation.distillation_step(
                student,
                teacher,
                optimizer,
                [parts],
                loss=loss,
                options=drun.loss_options,
                output_hidden_states=drun.output_hidden_states,
                learning_rate=LEARNING_RATE,
                max_grad_norm=MAX_GRAD_NORM,
                bf16=bf16,
            )
            return losses["loss"]

        fine_tune, _ = torch_update(run)
        return distil, fine_tune
    if framework == "keras":
        from distilbert_mf.tensorflow import distillation, training

        student, teacher = training.load_model(run), distillation.load_teacher(drun)
        keras_step = distillation.DistilStep(drun, student, teacher, training.create_optimizer(student, run))
        fine_tune, _ = keras_update(run, jit_compile=False)  # DistilStep is a tf.function without XLA
        return (lambda batch: keras_step([batch])[0]["loss"]), fine_tune
    if framework == "flax":
        from distilbert_mf.flax import distillation, training

        student, teacher = training.load_model(run), distillation.load_teacher(drun)
        flax_step = distillation.DistilStep(drun, student, teacher, training.create_optimizer(student, run))
        fine_tune, _ = flax_update(run)
        return (lambda batch: flax_step([batch])[0]["loss"]), fine_tune
    raise ValueError(f"unknown framework {framework!r}; expected one of {DISTILL_FRAMEWORKS}")


# ------------------------------------------------------------------------------------------------ worker side
def _import_framework(framework: str, threads: int) -> dict[str, Any]:
    """Import ``framework`` and touch it once (not measured); returns its thread settings."""
    if framework == "keras":
        os.environ.setdefault("KERAS_BACKEND", "tensorflow")
        import keras  # noqa: F401  (before TensorFlow's threads are pinned)
        import tensorflow as tf

        settings = pin_framework_threads("tensorflow", threads)
        tf.constant(1.0) + 1
        return settings
    if framework == "flax":
        import jax.numpy as jnp
        from flax import nnx  # noqa: F401

        (jnp.ones(1) + 1).block_until_ready()
        return pin_framework_threads("jax", threads)
    if framework == "torch":
        import torch

        settings = pin_framework_threads("torch", threads)
        torch.ones(1) + 1
        return settings
    raise ValueError(f"unknown framework {framework!r}; expected torch, keras or flax")


def _timed(update: Update, batch: Mapping[str, np.ndarray]) -> tuple[float, float, float]:
    """(wall seconds, process CPU seconds, loss) of one update."""
    wall, cpu = time.perf_counter(), time.process_time()
    loss = update(batch)
    return time.perf_counter() - wall, time.process_time() - cpu, loss


def _step_summary(wall: Sequence[float], cpu: Sequence[float], batch: int, threads: int) -> dict[str, Any]:
    seconds = median(wall)
    return {
        "median_s": seconds,
        "min_s": min(wall),
        "times_s": list(wall),
        "sequences_per_s": batch / seconds,
        "cpu_share": sum(cpu) / (sum(wall) * threads),
    }


def measure_contender(
    contender: str, checkpoint: str, dtype: str, *, batch: int, seq: int, warmup: int, steps: int, threads: int
) -> dict[str, Any]:
    """In this (fresh) process: build ``contender`` and time its updates; its peak RSS."""
    framework = CONTENDERS[contender]
    thread_settings = _import_framework(framework, threads)
    from distilbert_mf import DistilBertConfig

    config = DistilBertConfig.from_pretrained(checkpoint)
    data = fixed_batches(config.vocab_size, config.num_labels, batch, seq, warmup + steps)
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_training_") as scratch:
        gc.collect()
        before = rss_bytes()
        peak_reset = reset_peak_rss()
        started = time.perf_counter()
        bf16 = dtype == "bfloat16"
        if contender == REFERENCE:
            update, info = transformers_update(checkpoint, bf16)
        else:
            run = bench_run(checkpoint, framework, bf16=bf16, total_steps=warmup + steps, output_dir=scratch)
            if contender == "ours-torch":
                update, info = torch_update(run)
            elif contender == "ours-keras":
                update, info = keras_update(run, jit_compile="auto")  # as distilbert_mf.tensorflow.training.fit
            elif contender == "ours-keras-xla":
                update, info = keras_update(run, jit_compile=True)
            else:
                update, info = flax_update(run)
        build_s = time.perf_counter() - started
        first_s, _, first_loss = _timed(update, data[0])
        losses = [first_loss]
        for index in range(1, warmup):
            losses.append(_timed(update, data[index])[2])
        wall, cpu = [], []
        for index in range(warmup, warmup + steps):
            seconds, cpu_seconds, loss = _timed(update, data[index])
            wall.append(seconds)
            cpu.append(cpu_seconds)
            losses.append(loss)
        peak = rss_bytes("VmHWM")
    return {
        "contender": contender,
        "dtype": dtype,
        "batch": batch,
        "seq": seq,
        "warmup": warmup,
        "steps": steps,
        "build_s": build_s,
        "first_step_s": first_s,
        **_step_summary(wall, cpu, batch, threads),
        "losses": losses,
        "peak_rss_bytes": peak,
        "peak_growth_bytes": peak - before if peak_reset else None,
        "rss_before_bytes": before,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "threads": thread_settings,
        **info,
    }


def measure_distillation(
    framework: str,
    teacher: str,
    student: str,
    dtype: str,
    *,
    task: str,
    batch: int,
    seq: int,
    warmup: int,
    steps: int,
    threads: int,
) -> dict[str, Any]:
    """In this (fresh) process: alternate timed distillation and fine-tuning updates of the student."""
    thread_settings = _import_framework(framework, threads)
    from distilbert_mf import DistilBertConfig

    config = DistilBertConfig.from_pretrained(teacher)
    data = fixed_batches(config.vocab_size, config.num_labels, batch, seq, warmup + steps, task=task)
    load_before = list(os.getloadavg())
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_distil_") as scratch:
        gc.collect()
        before = rss_bytes()
        peak_reset = reset_peak_rss()
        drun = distillation_run(
            teacher, student, framework, bf16=dtype == "bfloat16", total_steps=2 * (warmup + steps), task=task,
            output_dir=scratch,
        )  # fmt: skip
        kinds = dict(zip(("distillation", "fine_tuning"), distillation_updates(drun, framework)))
        first: dict[str, float] = {}
        wall: dict[str, list[float]] = {kind: [] for kind in kinds}
        cpu: dict[str, list[float]] = {kind: [] for kind in kinds}
        losses: dict[str, list[float]] = {kind: [] for kind in kinds}
        for index in range(warmup + steps):
            order = list(kinds) if index % 2 == 0 else list(kinds)[::-1]  # alternate which goes first
            for kind in order:
                seconds, cpu_seconds, loss = _timed(kinds[kind], data[index])
                losses[kind].append(loss)
                if index == 0:
                    first[kind] = seconds
                if index >= warmup:
                    wall[kind].append(seconds)
                    cpu[kind].append(cpu_seconds)
        peak = rss_bytes("VmHWM")
    result: dict[str, Any] = {
        "framework": framework,
        "dtype": dtype,
        "task": task,
        "loss": drun.loss_name,
        "loss_options": dict(drun.loss_options),
        "batch": batch,
        "seq": seq,
        "warmup": warmup,
        "steps": steps,
        "peak_rss_bytes": peak,
        "peak_growth_bytes": peak - before if peak_reset else None,
        "load_average_before": load_before,
        "load_average_after": list(os.getloadavg()),
        "threads": thread_settings,
    }
    for kind in kinds:
        result[kind] = {"first_step_s": first[kind], **_step_summary(wall[kind], cpu[kind], batch, threads)}
        result[kind]["losses"] = losses[kind]
    result["distillation_over_fine_tuning"] = result["distillation"]["median_s"] / result["fine_tuning"]["median_s"]
    return result


def measure_gemm(dtypes: Sequence[str], n: int, threads: int) -> dict[str, dict[str, float]]:
    """The best ``torch.matmul`` / oneDNN GFLOP/s of an n x n x n product per dtype (bench_inference's kernel)."""
    from benchmarks.bench_inference import gemm_peak

    _import_framework("torch", threads)
    return {dtype: gemm_peak(dtype, n, repeats=5) for dtype in dtypes}


# ------------------------------------------------------------------------------------------------ driver side
def _worker(argv: list[str], what: str, timeout: float | None) -> dict[str, Any]:
    out = run_script([sys.executable, "-m", "benchmarks.bench_training", *argv], timeout=timeout)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"training benchmark of {what} failed with exit code {out.returncode}; see its output")
    return json.loads(lines[-1])


def make_teacher(folder: Path, config_kwargs: Mapping[str, Any], task: str) -> Path:
    """A seeded random teacher for ``task`` saved by us (sequence classification or masked LM)."""
    import torch

    from distilbert_mf import DistilBertConfig
    from distilbert_mf.torch import DistilBertForMaskedLM, DistilBertForSequenceClassification

    cls = DistilBertForMaskedLM if task == "masked-lm" else DistilBertForSequenceClassification
    torch.manual_seed(1)
    cls(DistilBertConfig(**config_kwargs)).save_pretrained(folder)
    return folder


def make_student(teacher: str | Path, folder: Path) -> tuple[Path, list[int]]:
    """The student of teacher layers :data:`STUDENT_LAYERS`, saved by the library's student initialisation."""
    from distilbert_mf.distillation.student import init_student_from_pretrained

    student = init_student_from_pretrained(teacher, STUDENT_LAYERS)
    student.save_pretrained(folder)
    return folder, list(student.layers)


def source_state() -> dict[str, Any]:
    """The commit measured and the library files that differed from it (the working tree is what ran)."""
    import subprocess

    def git(*argv: str) -> str:
        done = subprocess.run(["git", *argv], cwd=ROOT, capture_output=True, text=True, check=False)
        return done.stdout.strip() if done.returncode == 0 else ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "distilbert_mf").splitlines()]
    return {"commit": git("rev-parse", "HEAD") or None, "uncommitted_library_files": changed}


def ratio_tables(cases: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Per dtype, every contender's speed over the reference and over our PyTorch (baseline time / its time)."""
    out: dict[str, dict[str, dict[str, float]]] = {"vs_transformers": {}, "vs_ours_torch": {}}
    for dtype in dict.fromkeys(c["dtype"] for c in cases):
        times = {c["contender"]: c["median_s"] for c in cases if c["dtype"] == dtype}
        for key, baseline in (("vs_transformers", REFERENCE), ("vs_ours_torch", OURS_TORCH)):
            if baseline in times:
                out[key][dtype] = {name: times[baseline] / s for name, s in times.items() if name != baseline}
    return out


def cpu_seconds(case: Mapping[str, Any], threads: int) -> float:
    """Mean CPU seconds (all threads) of a case's timed updates: ``cpu_share`` is their sum / (wall sum x threads)."""
    times = case["times_s"]
    return case["cpu_share"] * threads * sum(times) / len(times)


def evaluate_targets(training: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The issue's training targets per dtype: measured ratio (wall time), goal, met (None: not measured); the detail
    gives the same ratio in CPU time and says when the machine was loaded."""
    cases, threads = training.get("cases", []), training.get("threads", 2)
    times = {(c["contender"], c["dtype"]): c["median_s"] for c in cases}
    cpu = {(c["contender"], c["dtype"]): cpu_seconds(c, threads) for c in cases}
    shape = f"{training.get('batch', 32)}×{training.get('seq', 128)}"
    load = (training.get("load_average_start") or [0.0])[0]
    loaded = f"; load average {load:.1f} on {threads} threads: re-measure on a quiet machine" if load > threads else ""
    rows = []
    for dtype in training.get("dtypes", ("float32", "bfloat16")):
        for what, (contender, baseline, goal) in TARGETS.items():
            a, b = times.get((baseline, dtype)), times.get((contender, dtype))
            measured = None if a is None or b is None else a / b
            in_cpu = (
                "" if measured is None else f" (in CPU time {cpu[(baseline, dtype)] / cpu[(contender, dtype)]:.2f})"
            )
            rows.append(
                {
                    "target": f"training {dtype} {shape}: {what}",
                    "measured": measured,
                    "goal": goal,
                    "met": None if measured is None else measured >= goal,
                    "detail": f"{baseline} time per update / {contender} time per update{in_cpu}{loaded}",
                }
            )
    return rows


def run_training(
    checkpoint: str,
    *,
    config_kwargs: Mapping[str, Any],
    contenders: Sequence[str] = tuple(CONTENDERS),
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    distill_frameworks: Sequence[str] = DISTILL_FRAMEWORKS,
    distill_tasks: Sequence[str] = ("text-classification",),
    distill_dtypes: Sequence[str] | None = None,
    batch: int = 32,
    seq: int = 128,
    warmup: int = 3,
    steps: int = 5,
    distill_warmup: int = 2,
    distill_steps: int = 3,
    threads: int = 2,
    gemm_n: int = 2048,
    gemm_runs: int = 2,
    timeout_s: float | None = 1800.0,
) -> dict[str, Any]:
    """Every contender and distillation case, one fresh process each; returns the ``training`` JSON."""
    from distilbert_mf import DistilBertConfig

    unknown = sorted(set(contenders) - set(CONTENDERS)) + sorted(set(distill_frameworks) - set(DISTILL_FRAMEWORKS))
    unknown += sorted(set(distill_tasks) - set(DISTILL_TASKS))
    if unknown:
        raise ValueError(f"unknown contender / framework / task {unknown}; choose from {list(CONTENDERS)}, "
                         f"{list(DISTILL_FRAMEWORKS)}, {list(DISTILL_TASKS)}")  # fmt: skip
    if warmup < 1 or steps < 1 or distill_warmup < 1 or distill_steps < 1:
        raise ValueError(
            f"warm-up and timed updates must be >= 1, got {warmup}/{steps}, {distill_warmup}/{distill_steps}"
        )
    started, load_start = time.perf_counter(), list(os.getloadavg())
    common = ["--threads", str(threads), "--batch", str(batch), "--seq", str(seq)]
    gemm_argv = ["--gemm", "--dtypes", ",".join(dtypes), "--gemm-n", str(gemm_n), "--threads", str(threads)]
    gemm_results = [_worker(gemm_argv, "the GEMM peak", timeout_s)]
    cases = []
    for dtype in dtypes:
        for name in contenders:
            argv = ["--one", name, "--checkpoint", checkpoint, "--dtype", dtype, *common]
            case = _worker([*argv, "--warmup", str(warmup), "--steps", str(steps)], f"{name} {dtype}", timeout_s)
            logger.info("training %s %s: %.2f s/update, %.1f seq/s (CPU share %.2f, peak RSS %.0f MiB)", name,
                        dtype, case["median_s"], case["sequences_per_s"], case["cpu_share"],
                        case["peak_rss_bytes"] / 2**20)  # fmt: skip
            cases.append(case)
    distillation = []
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_students_") as scratch:
        for task in distill_tasks if distill_frameworks else ():
            teacher = (
                Path(checkpoint)
                if task == "text-classification"
                else make_teacher(Path(scratch) / "teacher-mlm", config_kwargs, task)
            )
            student, layers = make_student(teacher, Path(scratch) / f"student-{task}")
            for dtype in distill_dtypes or dtypes:
                for framework in distill_frameworks:
                    argv = ["--distil", framework, "--teacher", str(teacher), "--student", str(student)]
                    argv += ["--task", task, "--dtype", dtype, *common]
                    argv += ["--warmup", str(distill_warmup), "--steps", str(distill_steps)]
                    case = _worker(argv, f"distillation {framework} {task} {dtype}", timeout_s)
                    teacher_config, student_config = (DistilBertConfig.from_pretrained(p) for p in (teacher, student))
                    fine_tune_flops = 3 * task_forward_flops(student_config, batch, seq, task)
                    case["student_layers"] = layers
                    case["teacher_layers"] = teacher_config.n_layers
                    case["flops_ratio"] = (
                        task_forward_flops(teacher_config, batch, seq, task) + fine_tune_flops
                    ) / fine_tune_flops
                    logger.info("distillation %s %s %s: %.2f s vs fine-tuning %.2f s (x%.2f)", framework, task,
                                dtype, case["distillation"]["median_s"], case["fine_tuning"]["median_s"],
                                case["distillation_over_fine_tuning"])  # fmt: skip
                    distillation.append(case)
    gemm_results += [_worker(gemm_argv, "the GEMM peak", timeout_s) for _ in range(gemm_runs - 1)]
    peak = {dtype: max(max(run[dtype].values()) for run in gemm_results) for dtype in dtypes}
    config = DistilBertConfig.from_pretrained(checkpoint)
    flops = 3 * forward_flops(config, batch, seq)
    reference_losses = {c["dtype"]: c["losses"] for c in cases if c["contender"] == REFERENCE}
    for case in cases:
        case["gflops"] = flops / case["median_s"] / 1e9
        case["fraction_of_gemm_peak"] = case["gflops"] / peak[case["dtype"]]
        theirs = reference_losses.get(case["dtype"])  # same weights and batches; dropout draws differ by framework
        case["loss_max_abs_diff_vs_transformers"] = (
            None if theirs is None else float(np.max(np.abs(np.subtract(case["losses"], theirs))))
        )
    result: dict[str, Any] = {
        "model": "DistilBertForSequenceClassification (2 labels), random weights, one safetensors checkpoint",
        "config": {k: getattr(config, k) for k in ("vocab_size", "dim", "n_heads", "hidden_dim", "n_layers")},
        "inputs": f"{warmup + steps} seeded random batches of {batch} x {seq} token ids, all-ones attention mask, "
        "random labels; the same in every process",
        "update": f"AdamW lr {LEARNING_RATE:g}, weight decay {WEIGHT_DECAY:g} (not on biases and LayerNorm), "
        f"global-norm clipping at {MAX_GRAD_NORM:g}; dropout on (training mode)",
        "dtypes": list(dtypes),
        "batch": batch,
        "seq": seq,
        "warmup": warmup,
        "steps": steps,
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default)"),
        "flops_per_update": flops,
        "flops_note": "3 x the matmul FLOPs of a forward (benchmarks.common.forward_flops)",
        "gemm_n": gemm_n,
        "gemm_peak_gflops": peak,
        "gemm_peak_runs_gflops": gemm_results,
        "cases": cases,
        **ratio_tables(cases),
        "distillation": distillation,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "machine": machine_info(),
        "source": source_state(),
        "duration_s": time.perf_counter() - started,
    }
    result["targets"] = evaluate_targets(result)
    result["load_warning"] = load_warning(result)
    return result


def load_warning(training: Mapping[str, Any]) -> str | None:
    """A warning when the 1-minute load average at the start exceeded the threads (None on a quiet machine)."""
    load, threads = (training.get("load_average_start") or [0.0])[0], training.get("threads", 2)
    if load <= threads:
        return None
    return (
        f"load average {load:.1f} on {threads} threads at the start: other work shared the CPU (see each case's "
        "cpu_share and load averages); the contenders ran one after the other, so their ratios are not trustworthy: "
        "re-measure on a quiet machine"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", help="sequence-classification folder (default: a seeded random one)")
    parser.add_argument("--quick", action="store_true", help="tiny config, batch 4 x 32, 2 updates: checks the code")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--distill-frameworks", default=",".join(DISTILL_FRAMEWORKS), help="'' for none")
    parser.add_argument("--distill-tasks", default="text-classification", help=f"subset of {','.join(DISTILL_TASKS)}")
    parser.add_argument("--distill-dtypes", default=None, help="default: --dtypes (--quick: float32)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here (default: stdout)")
    for name in ("batch", "seq", "warmup", "steps", "gemm-n"):  # also the worker's options
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--one", choices=tuple(CONTENDERS), help=argparse.SUPPRESS)  # worker: one contender
    parser.add_argument("--distil", choices=DISTILL_FRAMEWORKS, help=argparse.SUPPRESS)  # worker: distillation
    parser.add_argument("--gemm", action="store_true", help=argparse.SUPPRESS)  # worker: the GEMM peak
    parser.add_argument("--dtype", help=argparse.SUPPRESS)
    parser.add_argument("--teacher", help=argparse.SUPPRESS)
    parser.add_argument("--student", help=argparse.SUPPRESS)
    parser.add_argument("--task", default="text-classification", choices=DISTILL_TASKS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    settings = dict(QUICK_SETTINGS if args.quick else FULL_SETTINGS)
    settings.update({k: v for k, v in (("batch", args.batch), ("seq", args.seq), ("warmup", args.warmup),
                     ("steps", args.steps), ("gemm_n", args.gemm_n)) if v is not None})  # fmt: skip
    if args.distill_dtypes:
        settings["distill_dtypes"] = args.distill_dtypes.split(",")
    if args.one or args.distil or args.gemm:  # a worker: one JSON line on stdout
        logging.basicConfig(level=logging.WARNING)
        shape = {key: settings[key] for key in ("batch", "seq", "warmup", "steps")}
        if args.one:
            result = measure_contender(args.one, args.checkpoint, args.dtype, threads=args.threads, **shape)
        elif args.distil:
            result = measure_distillation(args.distil, args.teacher, args.student, args.dtype, task=args.task,
                                          threads=args.threads, **shape)  # fmt: skip
        else:
            result = measure_gemm(args.dtypes.split(","), settings["gemm_n"], args.threads)
        print(json.dumps(result))
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    config_kwargs = SMOKE_CONFIG if args.quick else FULL_CONFIG
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_training_") as scratch:
        checkpoint = args.checkpoint or str(
            make_teacher(Path(scratch) / "checkpoint", config_kwargs, "text-classification")
        )
        result = run_training(
            checkpoint,
            config_kwargs=config_kwargs,
            contenders=[c for c in args.contenders.split(",") if c],
            dtypes=args.dtypes.split(","),
            distill_frameworks=[f for f in args.distill_frameworks.split(",") if f],
            distill_tasks=[t for t in args.distill_tasks.split(",") if t],
            threads=args.threads,
            **settings,
        )
    emit_json(result, args.json)
    for row in result["targets"]:
        logger.info("%-60s %s (goal >= %g): %s", row["target"], row["measured"], row["goal"], row["met"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
