"""PyTorch distillation runs (distilbert_mf.distillation.run + distilbert_mf.torch.distillation.distil) on tiny models.

- general distillation: the student built from the teacher's layers, DistilBERT's optimiser, the frequency masker
  redrawn every step, the loss components in log_history, the fine-tuning run's folder and checkpoints;
- the update: the teacher in eval mode, frozen and unchanged; the logged loss is the weighted sum of its parts;
- resume: a run resumed from its middle checkpoint (student dropout on) logs exactly what the uninterrupted run did;
- task-specific distillation of a classifier;
- every bad input is a clear error before the first step (no checkpoint written).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from training_helpers import NO_DROPOUT, VOCAB, make_tiny_model, toy_data  # noqa: E402

from distilbert_mf.distillation import FrequencyMasker  # noqa: E402
from distilbert_mf.distillation.run import (  # noqa: E402
    DISTILBERT_OPTIMIZER,
    DistillationArguments,
    distill,
    prepare_distillation,
)
from distilbert_mf.torch import DistilBertForMaskedLM  # noqa: E402
from distilbert_mf.torch import distillation as pt_distillation  # noqa: E402
from distilbert_mf.torch import training as pt_training  # noqa: E402

pytestmark = pytest.mark.torch


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("torch_distillation")


@pytest.fixture(scope="module")
def teacher(root):
    """A 4-layer masked-LM teacher with weights large enough to give a peaked distribution."""
    return make_tiny_model(root / "teacher", head="masked_lm", n_layers=4, seed=1)


@pytest.fixture(scope="module")
def corpus(root):
    return toy_data(root / "data", "masked-lm")


def general_args(output_dir: Path, teacher: Path, corpus, **kwargs) -> DistillationArguments:
    fields = {
        "output_dir": str(output_dir),
        "teacher": str(teacher),
        "train_file": str(corpus[0]),
        "validation_file": str(corpus[1]),
        "student_layers": (0, 2),
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "logging_steps": 2,
        "save_steps": 3,
        "max_seq_length": 32,
        "config_overrides": dict(NO_DROPOUT),
        "progress": False,
    }
    fields.update(kwargs)
    return DistillationArguments(**fields)


@pytest.fixture(scope="module")
def general_run(root, teacher, corpus):
    args = general_args(root / "general", teacher, corpus, alpha_mse=0.5, learning_rate=5e-3)
    return args, distill(args)


def test_optimiser_defaults_by_recipe(tmp_path, teacher, corpus):
    args = general_args(tmp_path / "a", teacher, corpus)
    for name, value in DISTILBERT_OPTIMIZER.items():
        assert getattr(args, name) == value, name
    assert (args.temperature, args.alpha_ce, args.alpha_mlm, args.alpha_cos, args.alpha_mse) == (
        2.0,
        5.0,
        2.0,
        1.0,
        0.0,
    )
    task = DistillationArguments(
        output_dir=str(tmp_path / "b"), task="text-classification", teacher=str(teacher), train_file="x.tsv"
    )
    assert (task.learning_rate, task.adam_beta2, task.adam_epsilon, task.warmup_ratio, task.max_grad_norm) == (
        5e-5,
        0.999,
        1e-8,
        0.0,
        1.0,
    )
    assert (task.alpha_ce, task.alpha_task, task.temperature) == (0.5, 0.5, 2.0)
    kept = general_args(tmp_path / "c", teacher, corpus, learning_rate=1e-4, max_grad_norm=None, adam_beta2=0.9)
    assert (kept.learning_rate, kept.max_grad_norm, kept.adam_beta2) == (1e-4, None, 0.9)
    assert args.model == str(tmp_path / "a" / "student-init")


def test_general_distillation_run(general_run):
    args, out = general_run
    folder = Path(args.output_dir)
    logs = [e for e in out.log_history if "loss" in e]
    assert [e["step"] for e in logs] == [2, 4, 6]
    for entry in logs:  # the logged loss is the weighted sum of the component means since the last log
        total = 5 * entry["loss_ce"] + 2 * entry["loss_mlm"] + 1 * entry["loss_cos"] + 0.5 * entry["loss_mse"]
        assert entry["loss"] == pytest.approx(total, rel=1e-6)
        assert all(np.isfinite(entry[k]) for k in ("loss_ce", "loss_mlm", "loss_cos", "loss_mse", "grad_norm"))
    assert "eval_loss" in out.eval_metrics and "eval_accuracy" in out.eval_metrics
    # the run folder: the student (2 layers), the fine-tuning run's files, the distillation record
    config = json.loads((folder / "config.json").read_text())
    assert config["n_layers"] == 2
    for name in ("trainer_state.json", "eval_results.json", "training_curves.png", "checkpoint-3", "checkpoint-6"):
        assert (folder / name).exists(), name
    record = json.loads((folder / "distillation.json").read_text())
    assert record["teacher"] == args.teacher and record["student_layers"] == [0, 2] and record["alpha_mse"] == 0.5
    assert json.loads((folder / "student-init" / "student_layers.json").read_text())["layers"] == [0, 2]
    state = json.loads((folder / "checkpoint-3" / "trainer_state.json").read_text())
    assert "loss_ce" in next(e for e in state["log_history"] if e.get("step") == 2)
    # DistilBERT's AdamW: betas (0.9, 0.98), eps 1e-6, no weight decay
    groups = json.loads((folder / "checkpoint-6" / "torch_training_state.json").read_text())["param_groups"]
    assert {(tuple(g["betas"]), g["eps"], g["weight_decay"]) for g in groups} == {((0.9, 0.98), 1e-6, 0.0)}
    student = DistilBertForMaskedLM.from_pretrained(folder)
    assert student.config.n_layers == 2


def test_masking_is_by_frequency_and_redrawn_every_step(tmp_path, teacher, corpus):
    drun = prepare_distillation(general_args(tmp_path / "m", teacher, corpus))
    loader = drun.run.loader
    assert isinstance(loader.dataset.masker, FrequencyMasker)
    rows = loader.batch_rows(0)[0]
    first, again = loader.make_batch(0, 0, rows), loader.make_batch(0, 0, rows)
    other = loader.make_batch(0, 1, rows)  # the same rows at another step
    assert np.array_equal(first["labels"], again["labels"])  # seeded: a resume masks the same way
    assert not np.array_equal(first["labels"], other["labels"])  # redrawn every step
    targets = first["labels"] != -100
    assert targets.sum() == int(np.ceil(0.15 * first["attention_mask"].sum()))  # 15 % of the batch's real tokens
    special_ids = [VOCAB.index(t) for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")]
    assert not np.isin(first["labels"][targets], special_ids).any()  # special tokens are never targets
    inputs, loss_targets = drun.split(first)
    assert set(inputs) == {"input_ids", "attention_mask"} and set(loss_targets) == {"attention_mask", "labels"}


def test_update_keeps_the_teacher_frozen_in_eval_mode(tmp_path, teacher, corpus):
    drun = prepare_distillation(general_args(tmp_path / "u", teacher, corpus, learning_rate=1e-2))
    device = torch.device("cpu")
    student = pt_training.load_model(drun.run, device)
    teacher_model = pt_distillation.load_teacher(drun, device)
    before = {k: v.clone() for k, v in teacher_model.state_dict().items()}
    student_before = {k: v.clone() for k, v in student.state_dict().items()}
    optimizer = pt_training.create_optimizer(student, drun.run)
    step = next(iter(drun.run.steps()))
    batches = [tuple(pt_training.to_device(p, device) for p in drun.split(b)) for b in step.batches]
    losses, grad_norm = pt_distillation.distillation_step(
        student,
        teacher_model,
        optimizer,
        batches,
        loss=pt_distillation.distillation_loss,
        options=drun.loss_options,
        output_hidden_states=True,
        learning_rate=1e-2,
        max_grad_norm=5.0,
    )
    assert set(losses) == {"loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse"} and grad_norm > 0
    assert not teacher_model.training and student.training
    assert all(not p.requires_grad and p.grad is None for p in teacher_model.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher_model.state_dict().items())
    assert any(not torch.equal(student_before[k], v) for k, v in student.state_dict().items())


def test_resume_gives_the_uninterrupted_run(tmp_path, teacher, corpus):
    """Logs every 2 updates, checkpoint 3: update 3's components are pending in the checkpoint, logged at 4."""
    args = general_args(tmp_path / "r", teacher, corpus, config_overrides={})  # dropout on
    full = distill(args)
    resumed = distill(dataclasses.replace(args, resume_from_checkpoint=str(tmp_path / "r" / "checkpoint-3")))
    train_logs = [[e for e in out.log_history if "loss" in e] for out in (full, resumed)]
    assert train_logs[0] == train_logs[1]
    with pytest.raises(ValueError, match=r"belongs to another distillation \(alpha_cos: checkpoint 1.0, this run 0.5"):
        distill(dataclasses.replace(args, resume_from_checkpoint=True, alpha_cos=0.5))


TASK_HEADS = {
    "token-classification": ("token_classification", "eval_f1"),
    "question-answering": ("question_answering", "eval_exact_match"),
}


@pytest.mark.parametrize("task", list(TASK_HEADS))
def test_task_distillation_of_tagger_and_reader(tmp_path, task):
    head, metric = TASK_HEADS[task]
    data = toy_data(tmp_path / "data", task)
    labels = {"num_labels": 2} if task == "question-answering" else {"num_labels": 2, "id2label": {0: "B-PER", 1: "O"}}
    teacher = make_tiny_model(tmp_path / "teacher", head=head, n_layers=3, **labels)
    args = DistillationArguments(
        output_dir=str(tmp_path / "run"),
        task=task,
        teacher=str(teacher),
        train_file=str(data[0]),
        validation_file=str(data[1]),
        student_layers=(0, 2),
        max_steps=2,
        logging_steps=1,
        save_steps=2,
        max_seq_length=32,
        doc_stride=8,
        config_overrides=dict(NO_DROPOUT),
        progress=False,
        teacher_bf16=True,
    )
    out = distill(args)
    for entry in (e for e in out.log_history if "loss" in e):
        assert entry["loss"] == pytest.approx(0.5 * entry["loss_ce"] + 0.5 * entry["loss_task"], rel=1e-6)
    assert metric in out.eval_metrics


def test_teacher_in_bfloat16(tmp_path, teacher, corpus):
    drun = prepare_distillation(general_args(tmp_path / "bf16", teacher, corpus, teacher_bf16=True))
    teacher_model = pt_distillation.load_teacher(drun, torch.device("cpu"))
    assert {p.dtype for p in teacher_model.parameters()} == {torch.bfloat16}
    student = pt_training.load_model(drun.run, torch.device("cpu"))
    assert {p.dtype for p in student.parameters()} == {torch.float32}  # the student keeps float32


def test_task_distillation_of_a_classifier(tmp_path):
    data = toy_data(tmp_path / "data", "text-classification")
    teacher = make_tiny_model(tmp_path / "cls-teacher", head="sequence_classification", n_layers=4, num_labels=2)
    args = DistillationArguments(
        output_dir=str(tmp_path / "task"),
        task="text-classification",
        teacher=str(teacher),
        train_file=str(data[0]),
        validation_file=str(data[1]),
        student_layers=(1, 3),
        max_steps=4,
        logging_steps=2,
        save_steps=4,
        max_seq_length=32,
        config_overrides=dict(NO_DROPOUT),
        progress=False,
        learning_rate=5e-3,
    )
    out = distill(args)
    logs = [e for e in out.log_history if "loss" in e]
    for entry in logs:
        assert entry["loss"] == pytest.approx(0.5 * entry["loss_ce"] + 0.5 * entry["loss_task"], rel=1e-6)
    assert "eval_accuracy" in out.eval_metrics
    assert json.loads((tmp_path / "task" / "config.json").read_text())["n_layers"] == 2


def test_bad_inputs_fail_before_the_first_step(tmp_path, teacher, corpus):
    runs = itertools.count()

    def refused(error, match, **kwargs):
        output_dir = tmp_path / f"bad{next(runs)}"
        with pytest.raises(error, match=match):
            distill(general_args(output_dir, kwargs.pop("teacher", teacher), corpus, **kwargs))
        assert not list(output_dir.glob("checkpoint-*"))

    other_vocab = make_tiny_model(tmp_path / "vocab-teacher", head="masked_lm", vocab_size=len(VOCAB) + 3)
    student = make_tiny_model(tmp_path / "student", head="masked_lm")
    refused(
        ValueError,
        rf"teacher's vocabulary has {len(VOCAB) + 3} tokens but the student's {len(VOCAB)}",
        teacher=other_vocab,
        model=str(student),
        student_layers=None,
    )
    base_teacher = make_tiny_model(tmp_path / "base-teacher", head="base", n_layers=4)
    refused(ValueError, r"has no masked-LM head", teacher=base_teacher)
    refused(ValueError, r"layers \[9\] are outside the teacher.s layers 0..3", student_layers=(0, 9))
    refused(ValueError, r"temperature must be a finite number > 0, got 0", temperature=0.0)
    refused(ValueError, r"every loss weight is zero", alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    refused(ValueError, r"whole_word_mask is BERT's masking", whole_word_mask=True)
    narrow = make_tiny_model(tmp_path / "narrow", head="masked_lm", dim=16, n_heads=2)
    refused(ValueError, r"teacher's width is 32 and the student's 16", model=str(narrow), student_layers=None)
    refused(ValueError, r"student_layers builds the student from the teacher, but model names", model=str(narrow))
    specials = tmp_path / "specials.txt"
    specials.write_text("[UNK] [UNK]\n[MASK]\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"no usable tokens"):
        distill(general_args(tmp_path / "bad-corpus", teacher, (specials, None)))
    cls_teacher = make_tiny_model(tmp_path / "three", head="sequence_classification", num_labels=3)
    data = toy_data(tmp_path / "cls", "text-classification")
    with pytest.raises(ValueError, match=r"predicts 3 labels but the data has 2"):
        distill(
            DistillationArguments(
                output_dir=str(tmp_path / "bad-cls"),
                task="text-classification",
                teacher=str(cls_teacher),
                train_file=str(data[0]),
                max_steps=2,
                progress=False,
            )
        )
    with pytest.raises(ValueError, match=r"task must be one of .* for distillation, got 'multiple-choice'"):
        DistillationArguments(
            output_dir=str(tmp_path / "mc"), task="multiple-choice", teacher=str(teacher), train_file="x"
        )
    with pytest.raises(ValueError, match=r"teacher must be a model folder"):
        DistillationArguments(output_dir=str(tmp_path / "none"), train_file="x")
