"""``distilbert-mf train``: every TrainingArguments field has its dashed flag, a run prints its summary, errors found
before the first step exit 2 naming the flag, and --resume-from-checkpoint continues a run."""

from __future__ import annotations

import dataclasses
import json

import pytest
from training_helpers import make_tiny_model, toy_data

from distilbert_mf import cli
from distilbert_mf.frameworks import is_available
from distilbert_mf.training.trainer import TrainingArguments

needs_torch = pytest.mark.skipif(not is_available("pt"), reason="the runs use the PyTorch loop")
# TrainingArguments fields set otherwise on the command line
NOT_FLAGS = {"config_overrides": "--config-override"}


def _train_parser():
    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    return sub.choices["train"]


def test_every_training_argument_has_its_dashed_flag():
    flags = {option for action in _train_parser()._actions for option in action.option_strings}
    for f in dataclasses.fields(TrainingArguments):
        flag = NOT_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in flags, f"TrainingArguments.{f.name} has no {flag}"
    for name in ("--per-device-train-batch-size", "--warmup-ratio", "--max-grad-norm", "--bf16", "--no-progress"):
        assert name in flags


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_train")
    model = make_tiny_model(root / "model")
    train_file, dev_file = toy_data(root, "text-classification")
    return root, model, train_file, dev_file


def _argv(files, out, *extra):
    _, model, train_file, dev_file = files
    return [
        "train",
        "--task",
        "text-classification",
        "--model",
        str(model),
        "--train-file",
        str(train_file),
        "--validation-file",
        str(dev_file),
        "--output-dir",
        str(out),
        "--framework",
        "pt",
        "--max-steps",
        "4",
        "--logging-steps",
        "1",
        "--save-steps",
        "2",
        "--learning-rate",
        "5e-3",
        "--max-seq-length",
        "32",
        "--config-override",
        "dropout=0.0",
        "--config-override",
        "attention_dropout=0",
        "--no-progress",
        *extra,
    ]


@needs_torch
def test_train_prints_a_summary_and_writes_the_run_folder(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(files, out, "--warmup-steps", "1", "--label-names", "neg", "pos")) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 4 and summary["output_dir"] == str(out)
    assert {"train_loss", "eval_loss", "eval_accuracy"} <= set(summary)
    config = json.loads((out / "config.json").read_text())
    assert (
        config["dropout"] == 0.0 and config["attention_dropout"] == 0 and config["id2label"] == {"0": "neg", "1": "pos"}
    )
    state = json.loads((out / "trainer_state.json").read_text())
    assert [e["learning_rate"] for e in state["log_history"] if "loss" in e][:2] == [0.0, 5e-3]
    assert sorted(p.name for p in out.glob("checkpoint-*")) == ["checkpoint-2", "checkpoint-4"]


@needs_torch
def test_resume_from_checkpoint_without_a_value_takes_the_latest(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(files, out, "--max-steps", "4")) == 0
    first = json.loads(capsys.readouterr().out)
    (out / "checkpoint-4").rename(out / "gone")  # leave checkpoint-2 as the latest
    assert cli.main(_argv(files, out, "--resume-from-checkpoint")) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["global_step"] == 4 and again["train_loss"] == first["train_loss"]


@needs_torch
@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (("--warmup-ratio", "1.5"), "warmup_ratio must be a number >= 0.0 and <= 1.0, got 1.5"),
        (("--label-column", "stars"), "no column 'stars'; the columns are ['sentence', 'label']"),
        (("--max-seq-length", "100"), "max_seq_length=100 is larger than the model's max_position_embeddings=64"),
        (("--config-override", "dropuot=0.1"), "unknown DistilBertConfig field 'dropuot'"),
        (("--num-labels", "1"), "the data has 2 labels ['neg', 'pos'] but num_labels=1"),
    ],
)
def test_errors_before_the_first_step_exit_2(files, tmp_path, capsys, extra, message):
    out = tmp_path / "out"
    assert cli.main(_argv(files, out, *extra)) == cli.EXIT_ERROR
    err = capsys.readouterr().err
    assert "distilbert-mf train: error:" in err and message in err
    assert not (out / "trainer_state.json").exists()


@needs_torch
def test_a_folder_holding_a_run_needs_overwrite(files, tmp_path, capsys):
    out = tmp_path / "out"
    assert cli.main(_argv(files, out)) == 0
    capsys.readouterr()
    assert cli.main(_argv(files, out)) == cli.EXIT_ERROR
    assert "--overwrite-output-dir" in capsys.readouterr().err
    assert cli.main(_argv(files, out, "--overwrite-output-dir")) == 0


def test_bad_config_override_is_a_usage_error(files, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(_argv(files, tmp_path / "out", "--config-override", "dropout"))
    assert exit_info.value.code == 2
    assert "expected KEY=VALUE (e.g. dropout=0.0), got 'dropout'" in capsys.readouterr().err


def test_distill_has_every_distillation_flag_and_optional_task_and_model():
    from distilbert_mf.distillation.run import DistillationArguments

    parser = cli.build_parser()
    sub = next(a for a in parser._actions if a.dest == "command").choices["distill"]
    actions = {option: action for action in sub._actions for option in action.option_strings}
    for f in dataclasses.fields(DistillationArguments):
        flag = NOT_FLAGS.get(f.name, "--" + f.name.replace("_", "-"))
        assert flag in actions, f"DistillationArguments.{f.name} has no {flag}"
    assert not actions["--task"].required and not actions["--model"].required and actions["--teacher"].required
    assert cli._student_layers(["0", "2", "4"]) == (0, 2, 4) and cli._student_layers(["every_other"]) == "every_other"
    with pytest.raises(cli.CLIError, match=r"--student-layers takes teacher layer numbers .* got 0 x"):
        cli._student_layers(["0", "x"])
