"""``distilbert-mf distill --framework flax`` as 2 JAX processes (``jax.distributed`` on 127.0.0.1) = one process.

General distillation (masked LM: the triple loss plus MSE) of a 2-layer student built from a tiny 4-layer teacher's
layers [0, 2], on toy data: the case where the two processes' halves of a batch hold different numbers of selected
(non-padding) and masked tokens, so a term averaged per process would differ from the global one. On the mesh the
batch is one global array and every term is its mean over the global batch's tokens. Started from the command line
in one plain process with ``--per-device-train-batch-size 8`` and as 2 processes (one CPU device each) with 4:
the logged total loss within 1e-5 relative, every logged component within 1e-5 of the step's total, the same
evaluation, the saved student within 1e-5 of each tensor's largest entry. Every process runs under a timeout.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from dist_common import (
    RTOL,
    assert_same_losses,
    assert_same_weights,
    child_env,
    distill_history,
    jax_variables,
    launch_processes,
    load_weights,
    run_command,
)
from training_helpers import make_tiny_model, toy_data
from training_runs import NO_DROPOUT

pytestmark = [pytest.mark.flax, pytest.mark.distributed, pytest.mark.slow]

COMPONENTS = ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse")


def _command(case: dict, output_dir: Path, per_device: int) -> list[str]:
    flags = ["distill", "--framework", "flax", "--task", "masked-lm", "--teacher", case["teacher"],
             "--student-layers", "0", "2", "--train-file", case["train"], "--validation-file", case["dev"],
             "--output-dir", str(output_dir), "--per-device-train-batch-size", str(per_device),
             "--per-device-eval-batch-size", "8", "--max-steps", "6", "--learning-rate", "1e-3", "--warmup-ratio",
             "0.3", "--max-seq-length", "32", "--pad-to-multiple-of", "32", "--logging-steps", "1", "--save-steps",
             "3", "--seed", "0", "--no-progress", "--alpha-mse", "0.5"]  # fmt: skip
    for key, value in NO_DROPOUT.items():
        flags += ["--config-override", f"{key}={value}"]
    return [sys.executable, "-m", "distilbert_mf.cli", *flags]


@pytest.fixture(scope="module")
def case(tmp_path_factory: pytest.TempPathFactory) -> dict:
    folder = tmp_path_factory.mktemp("flax-distill")
    teacher = make_tiny_model(folder / "teacher", head="masked_lm", n_layers=4, seed=1, **NO_DROPOUT)
    train, dev = toy_data(folder / "data", "masked-lm", n_train=48, n_eval=16)
    spec = {"teacher": str(teacher), "train": str(train), "dev": str(dev)}
    cache = {"JAX_COMPILATION_CACHE_DIR": str(folder / "jax-cache"), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    code, output = run_command(_command(spec, folder / "one", 8), env=child_env(**cache), timeout=120)
    assert code == 0, output[-4000:]
    return {**spec, "reference": folder / "one", "cache": cache}


def test_two_jax_processes_distil_as_one(tmp_path: Path, case: dict) -> None:
    results = launch_processes(
        _command(case, tmp_path / "two", 4), 2, timeout=120,
        variables=lambda r, n, p: {**jax_variables(r, n, p, 1), **case["cache"]},
    )  # fmt: skip
    for rank, (code, output) in enumerate(results):
        assert code == 0, (rank, output[-4000:])
    assert [output.count('"global_step": 6') for _, output in results] == [1, 0]  # process 0 alone prints it
    history, reference = distill_history(tmp_path / "two", COMPONENTS), distill_history(case["reference"], COMPONENTS)
    what = "distill: 2 JAX processes vs one process"
    assert history["steps"] == reference["steps"] == list(range(1, 7)), what
    assert_same_losses(history["loss"], reference["loss"], what)
    total = np.abs(reference["loss"])
    for name in COMPONENTS[1:]:  # within 1e-5 of the step's total loss (or of itself, if larger)
        gap = np.abs(np.asarray(history[name]) - reference[name]) / np.maximum(np.abs(reference[name]), total)
        assert gap.max() <= RTOL, f"{what}: {name} differs by {gap.max():.2e}: {history[name]} vs {reference[name]}"
    assert abs(history["eval_loss"] - reference["eval_loss"]) <= RTOL * abs(reference["eval_loss"]), what
    assert_same_weights(load_weights(tmp_path / "two"), load_weights(case["reference"]), what)
    assert (tmp_path / "two" / "checkpoint-3" / "orbax").is_dir()
