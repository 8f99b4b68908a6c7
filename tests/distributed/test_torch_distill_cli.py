"""``torchrun --nproc_per_node 2 distilbert-mf distill ...`` (DDP, and FSDP2 with ``--fsdp``) = the one-process run.

Each distillation loss component is a mean over its own items (the KL and MSE terms over the selected tokens, the
cosine term over the non-padding tokens, the masked-LM term over the masked tokens, a tagger's task loss over the
labelled tokens), so two ranks holding halves of a batch hold different counts of each: every rank weights every
component by its share of the global count. Tested on the two cases where the counts differ between ranks — general
distillation (masked LM, the triple loss plus MSE) and task distillation of a tagger — started from the command
line in one process with ``--per-device-train-batch-size 8`` and over 2 ranks with 4 each: the logged total loss and
every logged component within 1e-5 relative, the same evaluation, the final weights within 1e-5 of each tensor's
largest entry; the FSDP2 run's ``checkpoint-3`` resumed by one plain process continues the same run. Every launch
has a timeout and is killed with its process group.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from dist_common import (
    ROOT,
    RTOL,
    assert_same_losses,
    assert_same_weights,
    child_env,
    distill_history,
    free_port,
    load_weights,
    run_command,
)
from training_helpers import make_tiny_model, toy_data
from training_runs import NO_DROPOUT

pytestmark = [pytest.mark.torch, pytest.mark.distributed, pytest.mark.slow]

COMPONENTS = {
    "masked-lm": ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse"),
    "token-classification": ("loss", "loss_ce", "loss_task"),
}


def _command(case: dict, output_dir: Path, per_device: int, *extra: str) -> list[str]:
    flags = ["distill", "--framework", "pt", "--task", case["task"], "--teacher", str(case["teacher"]),
             "--student-layers", "0", "2", "--train-file", str(case["train"]), "--validation-file",
             str(case["dev"]), "--output-dir", str(output_dir), "--per-device-train-batch-size", str(per_device),
             "--per-device-eval-batch-size", "8", "--max-steps", "6", "--learning-rate", "1e-3",
             "--warmup-ratio", "0.3", "--max-seq-length", "32", "--logging-steps", "1", "--save-steps", "3",
             "--seed", "0", "--no-progress"]  # fmt: skip
    for key, value in NO_DROPOUT.items():
        flags += ["--config-override", f"{key}={value}"]
    return [*flags, *case["options"], *extra]


def _launch(case: dict, output_dir: Path, ranks: int, *extra: str) -> str:
    if ranks == 1:
        launcher = [sys.executable, "-m", "distilbert_mf.cli"]
    else:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(ranks),
                    "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
                    "-m", "distilbert_mf.cli"]  # fmt: skip
    command = [*launcher, *_command(case, output_dir, 8 // ranks, *extra)]
    code, output = run_command(command, env=child_env(), timeout=90, cwd=ROOT)
    assert code == 0, output[-4000:]
    return output


def _history(output_dir: Path, task: str) -> dict:
    return distill_history(output_dir, COMPONENTS[task])


@pytest.fixture(scope="module", params=list(COMPONENTS))
def case(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny 4-layer teacher of the task, toy data, and the one-process distillation run (the reference)."""
    task = request.param
    folder = tmp_path_factory.mktemp(f"distill-{task}")
    if task == "masked-lm":
        teacher = make_tiny_model(folder / "teacher", head="masked_lm", n_layers=4, seed=1, **NO_DROPOUT)
        options = ["--alpha-mse", "0.5"]  # every term of the general loss
    else:
        labels = {"num_labels": 2, "id2label": {0: "B-PER", 1: "O"}}
        teacher = make_tiny_model(folder / "teacher", head="token_classification", n_layers=4, seed=1, **labels)
        options = []
    train, dev = toy_data(folder / "data", task, n_train=48, n_eval=16)
    spec = {"task": task, "teacher": teacher, "train": train, "dev": dev, "options": options}
    _launch(spec, folder / "one", 1)
    return {**spec, "reference": folder / "one"}


def _same_run(folder: Path, case: dict, what: str) -> None:
    history, reference = _history(folder, case["task"]), _history(case["reference"], case["task"])
    assert history["steps"] == reference["steps"] == list(range(1, 7)), what
    assert_same_losses(history["loss"], reference["loss"], what)
    total = np.abs(reference["loss"])
    for name in COMPONENTS[case["task"]][1:]:  # within 1e-5 of the step's total loss (or of itself, if larger):
        # the soft-target term of two near-identical tiny models is ~1e-4 of the total, a difference of two float32
        # log-probabilities of order 1 per token, so rounding alone moves it by 1e-5 of itself after a few updates
        gap = np.abs(np.asarray(history[name]) - reference[name]) / np.maximum(np.abs(reference[name]), total)
        assert gap.max() <= RTOL, f"{what}: {name} differs by {gap.max():.2e}: {history[name]} vs {reference[name]}"
    assert abs(history["eval_loss"] - reference["eval_loss"]) <= 1e-5 * abs(reference["eval_loss"]), what
    assert_same_weights(load_weights(folder), load_weights(case["reference"]), what)


def test_torchrun_ddp_distill_equals_one_process(tmp_path: Path, case: dict) -> None:
    output = _launch(case, tmp_path / "ddp", 2)
    _same_run(tmp_path / "ddp", case, f"{case['task']}: torchrun x2 DDP vs one process")
    assert output.count('"global_step": 6') == 1  # rank 0 alone prints the summary
    assert (tmp_path / "ddp" / "checkpoint-3" / "dcp" / "torch_dcp.json").is_file()


@pytest.mark.parametrize("case", ["masked-lm"], indirect=True)  # the tied projector shares the word embeddings
def test_torchrun_fsdp_distill_resumes_in_one_process(tmp_path: Path, case: dict) -> None:
    _launch(case, tmp_path / "fsdp", 2, "--fsdp")
    _same_run(tmp_path / "fsdp", case, "torchrun x2 FSDP2 vs one process")
    checkpoint = tmp_path / "fsdp" / "checkpoint-3"
    assert len(list((checkpoint / "dcp").glob("*.safetensors"))) == 2
    _launch(case, tmp_path / "fsdp", 1, "--resume-from-checkpoint", str(checkpoint))
    _same_run(tmp_path / "fsdp", case, "FSDP2 distillation checkpoint resumed in one process")
