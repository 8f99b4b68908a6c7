"""``torchrun --nproc_per_node 2 distilbert-mf train ...`` (DDP, and FSDP2 with ``--fsdp``) = the one-process run.

The tiny text-classification run of ``tests/training_runs.py`` (a new head drawn by the trainer, dropout 0, 6 updates,
weight decay, warm-up, clipping, a checkpoint every 3 updates, evaluation at the end) started three ways through the
command line: one process with ``--per-device-train-batch-size 8``, and 2 ranks with 4 each (the same global batch).
Logged losses within 1e-5 relative, the final folders' weights within 1e-5 of each tensor's largest entry, the same
evaluation; the FSDP2 run's ``checkpoint-3`` (``dcp/`` shards of 2 ranks) resumed by one plain ``distilbert-mf
train --resume-from-checkpoint`` continues the same run. Every launch has a timeout and is killed with its process group.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from dist_common import (
    ROOT,
    assert_same_losses,
    assert_same_weights,
    child_env,
    free_port,
    load_weights,
    run_command,
)
from training_runs import NO_DROPOUT, run_arguments

pytestmark = [pytest.mark.torch, pytest.mark.distributed, pytest.mark.slow]

FLAGS = (
    "task", "model", "train_file", "validation_file", "max_steps", "learning_rate", "weight_decay", "warmup_steps",
    "max_seq_length", "pad_to_multiple_of", "logging_steps", "save_steps", "seed",
)  # fmt: skip


def _command(arguments: dict, output_dir: Path, per_device: int, *extra: str) -> list[str]:
    flags = ["train", "--framework", "pt", "--output-dir", str(output_dir), "--per-device-train-batch-size",
             str(per_device), "--per-device-eval-batch-size", "8"]  # fmt: skip
    for name in FLAGS:
        flags += [f"--{name.replace('_', '-')}", str(arguments[name])]
    for key, value in NO_DROPOUT.items():
        flags += ["--config-override", f"{key}={value}"]
    return [*flags, *extra]


def _one_process(arguments: dict, output_dir: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "distilbert_mf.cli", *_command(arguments, output_dir, 8, *extra)]
    code, output = run_command(command, env=child_env(), timeout=60)
    assert code == 0, output[-4000:]
    return _history(output_dir)


def _two_ranks(arguments: dict, output_dir: Path, *extra: str) -> tuple[dict, str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
                "-m", "distilbert_mf.cli"]  # fmt: skip
    code, output = run_command([*launcher, *_command(arguments, output_dir, 4, *extra)], env=child_env(), timeout=60)
    assert code == 0, output[-4000:]
    return _history(output_dir), output


def _history(output_dir: Path) -> dict:
    state = json.loads((output_dir / "trainer_state.json").read_text(encoding="utf-8"))
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    evaluation = json.loads((output_dir / "eval_results.json").read_text(encoding="utf-8"))
    return {"losses": losses, "eval_loss": evaluation["eval_loss"], "eval_accuracy": evaluation["eval_accuracy"]}


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("train-cli")
    arguments = run_arguments(folder, "text-classification", shared_data, "pt")
    reference = folder / "one"
    _one_process(arguments, reference)
    return arguments, reference


def _same_run(history: dict, reference: dict, folder: Path, reference_folder: Path, what: str) -> None:
    assert len(history["losses"]) == 6
    assert_same_losses(history["losses"], reference["losses"], what)
    assert abs(history["eval_loss"] - reference["eval_loss"]) <= 1e-5 * abs(reference["eval_loss"]), what
    assert history["eval_accuracy"] == reference["eval_accuracy"], what
    assert_same_weights(load_weights(folder), load_weights(reference_folder), what)


def test_torchrun_ddp_train_equals_one_process(tmp_path: Path, run_setup: tuple[dict, Path]) -> None:
    arguments, reference_folder = run_setup
    reference = _history(reference_folder)
    history, output = _two_ranks(arguments, tmp_path / "ddp")
    _same_run(history, reference, tmp_path / "ddp", reference_folder, "torchrun x2 DDP vs one process")
    assert output.count('"global_step": 6') == 1  # rank 0 alone prints the summary
    assert (tmp_path / "ddp" / "checkpoint-3" / "dcp" / "torch_dcp.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")) == []  # no stray temporaries


def test_torchrun_fsdp_train_equals_one_process_and_resumes_in_one(
    tmp_path: Path, run_setup: tuple[dict, Path]
) -> None:
    arguments, reference_folder = run_setup
    reference = _history(reference_folder)
    history, _ = _two_ranks(arguments, tmp_path / "fsdp", "--fsdp")
    _same_run(history, reference, tmp_path / "fsdp", reference_folder, "torchrun x2 FSDP2 vs one process")
    shards = sorted(p.name for p in (tmp_path / "fsdp" / "checkpoint-3" / "dcp").glob("*.safetensors"))
    assert len(shards) == 2, shards
    # the 2-rank checkpoint, resumed by one process (global batch 8 = 1 x 8): the last 3 updates and the same model
    checkpoint = tmp_path / "fsdp" / "checkpoint-3"
    command = [sys.executable, "-m", "distilbert_mf.cli",
               *_command(arguments, tmp_path / "fsdp", 8, "--resume-from-checkpoint", str(checkpoint))]  # fmt: skip
    code, output = run_command(command, env=child_env(), timeout=60, cwd=ROOT)
    assert code == 0, output[-4000:]
    after = _history(tmp_path / "fsdp")
    _same_run(after, reference, tmp_path / "fsdp", reference_folder, "FSDP2 checkpoint resumed in one process")
