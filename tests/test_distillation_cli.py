"""``distilbert-mf distill`` end to end (PyTorch): a general-distillation run from the command line, its JSON summary
and run folder; bad options and inputs exit 2 before the first step."""

from __future__ import annotations

import io
import json
import sys

import pytest
from training_helpers import make_tiny_model, toy_data

from distilbert_mf import cli

pytestmark = pytest.mark.torch


def call(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    code = cli.main(args)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("distill_cli")
    teacher = make_tiny_model(root / "teacher", head="masked_lm", n_layers=4, seed=1)
    base = make_tiny_model(root / "base", head="base", n_layers=2)
    return root, teacher, base, toy_data(root / "data", "masked-lm")


def test_distill_command(inputs, capsys, monkeypatch):
    root, teacher, _, (train, dev) = inputs
    out_dir = root / "out"
    common = ["--teacher", str(teacher), "--train-file", str(train), "--output-dir", str(out_dir)]
    options = ["--validation-file", str(dev), "--student-layers", "0", "2", "--max-steps", "4", "--logging-steps", "2"]
    options += [
        "--max-seq-length",
        "32",
        "--framework",
        "pt",
        "--alpha-mse",
        "0.5",
        "--temperature",
        "3",
        "--no-progress",
    ]
    code, out, err = call(["distill", *common, *options], capsys, monkeypatch)
    assert code == 0, err
    summary = json.loads(out)
    assert summary["global_step"] == 4 and "eval_loss" in summary and summary["output_dir"] == str(out_dir)
    record = json.loads((out_dir / "distillation.json").read_text())
    assert (record["student_layers"], record["temperature"], record["alpha_mse"]) == ([0, 2], 3.0, 0.5)
    state = json.loads((out_dir / "trainer_state.json").read_text())
    entry = next(e for e in state["log_history"] if "loss" in e)
    assert {"loss_ce", "loss_mlm", "loss_cos", "loss_mse"} <= set(entry) and entry["learning_rate"] <= 5e-4
    assert json.loads((out_dir / "config.json").read_text())["n_layers"] == 2


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--temperature", "0"], "temperature must be a finite number > 0, got 0.0"),
        (["--alpha-ce", "0", "--alpha-mlm", "0", "--alpha-cos", "0"], "every loss weight is zero"),
        (["--student-layers", "0", "7"], "layers [7] are outside the teacher's layers 0..3"),
        (["--task", "multiple-choice"], "for distillation, got 'multiple-choice'"),
    ],
)
def test_bad_options_exit_2(inputs, capsys, monkeypatch, extra, message):
    root, teacher, _, (train, _) = inputs
    out_dir = root / f"bad-{len(extra)}-{extra[0]}"
    args = ["distill", "--teacher", str(teacher), "--train-file", str(train), "--output-dir", str(out_dir)]
    code, out, err = call([*args, "--max-steps", "2", "--framework", "pt", *extra], capsys, monkeypatch)
    assert code == 2 and out == "" and message in err, err
    assert not list(out_dir.glob("checkpoint-*"))


def test_teacher_without_masked_lm_head_exits_2(inputs, capsys, monkeypatch):
    root, _, base, (train, _) = inputs
    args = ["distill", "--teacher", str(base), "--train-file", str(train), "--output-dir", str(root / "no-head")]
    code, _, err = call([*args, "--max-steps", "2", "--framework", "pt"], capsys, monkeypatch)
    assert code == 2 and "has no masked-LM head" in err
