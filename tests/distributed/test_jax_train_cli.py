"""``distilbert-mf train --framework flax`` as 2 JAX processes (``jax.distributed`` on 127.0.0.1) = one process.

The tiny text-classification run of ``tests/training_runs.py`` (a new head drawn by the trainer, dropout 0, 6 updates,
weight decay, warm-up, clipping, a checkpoint every 3 updates, evaluation at the end) started through the command
line: one plain process with ``--per-device-train-batch-size 8``, and 2 processes (one CPU device each, the
``JAX_COORDINATOR_ADDRESS`` / ``JAX_NUM_PROCESSES`` / ``JAX_PROCESS_ID`` variables) with 4 each — the same global
batch. Logged losses within 1e-5 relative, the same evaluation, the final folders' weights within 1e-5 of each
tensor's largest entry; the 2-process run's ``checkpoint-3`` (orbax shards) resumed by one plain process continues
the same run. A world size that does not divide the last batch, and a coordinator that never answers: clear errors
on every process, no hang. Every process runs under a timeout and is killed with its process group past it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from dist_common import (
    assert_same_run,
    child_env,
    free_port,
    jax_variables,
    launch_processes,
    run_command,
    train_command,
    train_history,
)
from training_runs import run_arguments

pytestmark = [pytest.mark.flax, pytest.mark.distributed, pytest.mark.slow]

CLI = [sys.executable, "-m", "distilbert_mf.cli"]
EVAL_ROWS = "8"  # one evaluation batch: one shape to compile


def _command(arguments: dict, output_dir: Path, per_device: int, *extra: str) -> list[str]:
    flags = train_command(arguments, output_dir, per_device, "flax", "--max-eval-samples", EVAL_ROWS, *extra)
    return [*CLI, *flags]


def _env(arguments: dict, **extra: str) -> dict[str, str]:
    """The worker environment with JAX's persistent compilation cache in the run's folder (later launches of the
    same programs load them instead of compiling again: the test's time is mostly XLA compilations)."""
    cache = {"JAX_COMPILATION_CACHE_DIR": arguments["cache_dir_jax"], "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return {**cache, **extra}


def _one_process(arguments: dict, output_dir: Path, *extra: str) -> str:
    code, output = run_command(_command(arguments, output_dir, 8, *extra), env=child_env(**_env(arguments)), timeout=90)
    assert code == 0, output[-4000:]
    return output


def _two_processes(arguments: dict, output_dir: Path, *extra: str) -> list[tuple[int, str]]:
    return launch_processes(
        _command(arguments, output_dir, 4, *extra), 2, timeout=90,
        variables=lambda r, n, p: {**jax_variables(r, n, p, 1), **_env(arguments)},
    )  # fmt: skip


@pytest.fixture(scope="module")
def run_setup(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> tuple[dict, Path]:
    folder = tmp_path_factory.mktemp("flax-train-cli")
    arguments = run_arguments(folder, "text-classification", shared_data, "flax")
    arguments["cache_dir_jax"] = str(folder / "jax-cache")
    reference = folder / "one"
    _one_process(arguments, reference)
    return arguments, reference


@pytest.fixture(scope="module")
def two_process_run(tmp_path_factory: pytest.TempPathFactory, run_setup: tuple[dict, Path]) -> Path:
    arguments, _ = run_setup
    folder = tmp_path_factory.mktemp("flax-train-cli-2") / "two"
    results = _two_processes(arguments, folder)
    for rank, (code, output) in enumerate(results):
        assert code == 0, (rank, output[-4000:])
    # process 0 alone prints the summary
    assert [output.count('"global_step": 6') for _, output in results] == [1, 0], results[0][1][-2000:]
    return folder


def test_two_jax_processes_train_as_one(run_setup: tuple[dict, Path], two_process_run: Path) -> None:
    _, reference_folder = run_setup
    reference = train_history(reference_folder)
    history = train_history(two_process_run)
    assert_same_run(history, reference, two_process_run, reference_folder, "2 JAX processes vs one process")
    checkpoint = two_process_run / "checkpoint-3"
    assert (checkpoint / "orbax").is_dir() and (checkpoint / "flax_distributed_state.json").is_file()
    assert not (checkpoint / "flax_training_state.safetensors").exists()  # the sharded state, not the one-process one
    assert sorted(p.name for p in two_process_run.iterdir() if p.name.startswith(".")) == []  # no stray temporaries


def test_two_process_checkpoint_resumes_in_one_process(
    tmp_path: Path, run_setup: tuple[dict, Path], two_process_run: Path
) -> None:
    arguments, reference_folder = run_setup
    resumed = tmp_path / "resumed"
    # a copy of the run folder up to checkpoint-3: the resume writes checkpoint-6 and the final model again
    import shutil

    shutil.copytree(two_process_run / "checkpoint-3", resumed / "checkpoint-3")
    shutil.copy2(two_process_run / "run.json", resumed / "run.json")
    output = _one_process(arguments, resumed, "--resume-from-checkpoint", str(resumed / "checkpoint-3"))
    assert "resuming" in output, output[-3000:]
    assert_same_run(
        train_history(resumed), train_history(reference_folder), resumed, reference_folder,
        "2-process checkpoint-3 resumed by one process",
    )  # fmt: skip


def test_bad_worlds_fail_clearly_on_every_process(tmp_path: Path, run_setup: tuple[dict, Path]) -> None:
    arguments, _ = run_setup
    # 47 rows, global batch 8: the last batch's 7 rows cannot be split over 2 processes
    results = _two_processes(arguments, tmp_path / "odd", "--max-train-samples", "47")
    for rank, (code, output) in enumerate(results):
        assert code == 2, (rank, output[-3000:])
        assert "the last batch has 7 rows" in output and "world_size=2" in output, (rank, output[-3000:])
    assert not (tmp_path / "odd" / "checkpoint-3").exists()
    # process 1 of 2 and no coordinator: DistributedSetupError after the 3 s timeout, not a hang
    env = child_env(**jax_variables(1, 2, free_port(), 1), **_env(arguments, DISTILBERT_MF_DIST_TIMEOUT="3"))
    code, output = run_command(_command(arguments, tmp_path / "alone", 4), env=env, timeout=40)
    assert code != 0 and "DistributedSetupError" in output, output[-3000:]
    assert "did not answer within 3 s" in output, output[-3000:]
