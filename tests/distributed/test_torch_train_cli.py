"""``torchrun --nproc_per_node 2 distilbert-mf train ...`` (DDP, and FSDP2 with ``--fsdp``) = the one-process run.

The tiny text-classification run of ``tests/training_runs.py`` (a new head drawn by the trainer, dropout 0, 6 updates,
weight decay, warm-up, clipping, a checkpoint every 3 updates, evaluation at the end) started three ways through the
command line: one process with ``--per-device-train-batch-size 8``, and 2 ranks with 4 each (the same global batch).
Logged losses within 1e-5 relative, the final folders' weights within 1e-5 of each tensor's largest entry, the same
evaluation; the FSDP2 run's ``checkpoint-3`` (``dcp/`` shards of 2 ranks) resumed by one plain ``distilbert-mf
train --resume-from-checkpoint`` continues the same run. Every launch has a timeout and is killed with its process group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dist_common import (
    ROOT,
    assert_same_run,
    child_env,
    free_port,
    run_command,
    train_command,
    train_history,
)
from training_runs import run_arguments

pytestmark = [pytest.mark.torch, pytest.mark.distributed, pytest.mark.slow]


def _command(arguments: dict, output_dir: Path, per_device: int, *extra: str) -> list[str]:
    return train_command(arguments, output_dir, per_device, "pt", *extra)


def _one_process(arguments: dict, output_dir: Path, *extra: str) -> dict:
    command = [sys.executable, "-m", "distilbert_mf.cli", *_command(arguments, output_dir, 8, *extra)]
    code, output = run_command(command, env=child_env(), timeout=60)
    assert code == 0, output[-4000:]
    return train_history(output_dir)


def _two_ranks(arguments: dict, output_dir: Path, *extra: str) -> tuple[dict, str]:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
                "-m", "distilbert_mf.cli"]  # fmt: skip
    code, output = run_command([*launcher, *_command(arguments, output_dir, 4, *extra)], env=child_env(), timeout=60)
    assert code == 0, output[-4000:]
    return train_history(output_dir), output


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("train-cli")
    arguments = run_arguments(folder, "text-classification", shared_data, "pt")
    reference = folder / "one"
    _one_process(arguments, reference)
    return arguments, reference


def test_torchrun_ddp_train_equals_one_process(tmp_path: Path, run_setup: tuple[dict, Path]) -> None:
    arguments, reference_folder = run_setup
    reference = train_history(reference_folder)
    history, output = _two_ranks(arguments, tmp_path / "ddp")
    assert_same_run(history, reference, tmp_path / "ddp", reference_folder, "torchrun x2 DDP vs one process")
    assert output.count('"global_step": 6') == 1  # rank 0 alone prints the summary
    assert (tmp_path / "ddp" / "checkpoint-3" / "dcp" / "torch_dcp.json").is_file()
    assert sorted(p.name for p in (tmp_path / "ddp").iterdir() if p.name.startswith(".")) == []  # no stray temporaries


def test_torchrun_fsdp_train_equals_one_process_and_resumes_in_one(
    tmp_path: Path, run_setup: tuple[dict, Path]
) -> None:
    arguments, reference_folder = run_setup
    reference = train_history(reference_folder)
    history, _ = _two_ranks(arguments, tmp_path / "fsdp", "--fsdp")
    assert_same_run(history, reference, tmp_path / "fsdp", reference_folder, "torchrun x2 FSDP2 vs one process")
    shards = sorted(p.name for p in (tmp_path / "fsdp" / "checkpoint-3" / "dcp").glob("*.safetensors"))
    assert len(shards) == 2, shards
    # the 2-rank checkpoint, resumed by one process (global batch 8 = 1 x 8): the last 3 updates and the same model
    checkpoint = tmp_path / "fsdp" / "checkpoint-3"
    command = [sys.executable, "-m", "distilbert_mf.cli",
               *_command(arguments, tmp_path / "fsdp", 8, "--resume-from-checkpoint", str(checkpoint))]  # fmt: skip
    code, output = run_command(command, env=child_env(), timeout=60, cwd=ROOT)
    assert code == 0, output[-4000:]
    after = train_history(tmp_path / "fsdp")
    assert_same_run(after, reference, tmp_path / "fsdp", reference_folder, "FSDP2 checkpoint resumed in one process")
