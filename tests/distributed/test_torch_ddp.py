"""PyTorch DDP and FSDP2 under torchrun (2 gloo processes on 127.0.0.1) give the numbers of one process.

One recipe (``masked_lm_run``: a tiny masked LM with its tied projector, global batch 8, 20 AdamW updates with weight
decay, warm-up and clipping, dropout 0) run three ways by ``torch_worker.py``:

- one process, the one-process loop's ``train_step`` over the whole batches;
- ``torchrun --nproc_per_node 2`` with DDP, each rank 4 rows of every batch (the data layer's shard);
- the same with FSDP2 (meta-device model, ``fully_shard`` per block then the root, shards filled from the checkpoint),
  which also writes a ``torch.distributed.checkpoint`` after update 10; that checkpoint is resumed in *one* process.

Masked LM on purpose: the ranks hold different numbers of masked tokens, so the per-rank loss weighting is needed for
the numbers to agree. Losses within 1e-5 relative, final weights within 1e-5 of each tensor's largest entry (but the
key biases, whose exact gradient is 0: see dist_common.OUTPUT_INVARIANT; the final models' logits are compared).
Every subprocess runs under a timeout and is killed with its process group when it passes it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from dist_common import (
    HERE,
    RTOL,
    assert_same_losses,
    assert_same_weights,
    child_env,
    launch_ranks,
    load_weights,
    read_result,
    run_command,
    torchrun,
    write_spec,
)

pytestmark = [pytest.mark.torch, pytest.mark.distributed, pytest.mark.slow]

WORKER = HERE / "torch_worker.py"


def _single(folder: Path, timeout: float = 60.0, **spec: object) -> dict:
    path = write_spec(folder, **spec)
    code, output = run_command([sys.executable, str(WORKER), str(path)], env=child_env(), timeout=timeout)
    assert code == 0, output[-4000:]
    return read_result(folder)


def _torchrun(folder: Path, **spec: object) -> dict:
    code, output = torchrun(WORKER, write_spec(folder, **spec), 2, timeout=60.0)
    assert code == 0, output[-4000:]
    return read_result(folder)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, masked_lm_run: dict) -> Path:
    folder = tmp_path_factory.mktemp("torch-single")
    _single(folder, strategy="single", **masked_lm_run)
    return folder


def _logits(folder: Path) -> np.ndarray:
    import torch

    from distilbert_mf.torch import DistilBertForMaskedLM

    model = DistilBertForMaskedLM.from_pretrained(folder).eval()
    ids = torch.arange(3, 3 + 2 * 13).reshape(2, 13)
    with torch.no_grad():
        return model(input_ids=ids).logits.numpy()


def _same_model(folder: Path, reference: Path, what: str) -> None:
    worst = assert_same_weights(load_weights(folder / "final"), load_weights(reference / "final"), what)
    a, b = _logits(folder / "final"), _logits(reference / "final")
    logit_diff = float(np.max(np.abs(a - b)) / np.max(np.abs(b)))
    assert logit_diff <= RTOL, f"{what}: the final models' logits differ by {logit_diff:.2e} of the largest"
    assert worst <= RTOL


def test_ddp_two_processes_match_one(tmp_path: Path, one_process: Path, masked_lm_run: dict) -> None:
    single = read_result(one_process)
    ddp = _torchrun(tmp_path / "ddp", strategy="ddp", **masked_lm_run)
    assert ddp["world_size"] == 2 and len(ddp["losses"]) == 20
    assert_same_losses(ddp["losses"], single["losses"], "DDP x2 vs one process")
    np.testing.assert_allclose(ddp["grad_norms"], single["grad_norms"], rtol=RTOL)
    _same_model(tmp_path / "ddp", one_process, "DDP x2 vs one process")
    # DDP replicates: every rank holds all the parameters
    assert [r["param_bytes"] for r in ddp["ranks"]] == [single["ranks"][0]["param_bytes"]] * 2


def test_fsdp_two_processes_match_one_and_resume_in_one(tmp_path: Path, one_process: Path, masked_lm_run: dict) -> None:
    single = read_result(one_process)
    fsdp = _torchrun(tmp_path / "fsdp", strategy="fsdp", save_at=10, **masked_lm_run)
    assert_same_losses(fsdp["losses"], single["losses"], "FSDP2 x2 vs one process")
    np.testing.assert_allclose(fsdp["grad_norms"], single["grad_norms"], rtol=RTOL)
    _same_model(tmp_path / "fsdp", one_process, "FSDP2 x2 vs one process")
    # each rank holds about half of the parameters (dim-0 shards; the tied projector is one parameter)
    whole = single["ranks"][0]["param_bytes"]
    shards = [r["param_bytes"] for r in fsdp["ranks"]]
    assert sum(shards) == whole and max(shards) < 0.51 * whole, (shards, whole)
    checkpoint = tmp_path / "fsdp" / "checkpoint"
    assert sorted(p.name for p in (checkpoint / "dcp").iterdir()) == [
        "shard-00001-model-00001-of-00001.safetensors",
        "shard-00002-model-00001-of-00001.safetensors",
        "torch_dcp.json",
    ]
    # written by 2 ranks, resumed by 1: the same last 10 updates and the same model
    resumed = _single(tmp_path / "resume", strategy="single", resume=str(checkpoint), resume_step=10, **masked_lm_run)
    assert_same_losses(resumed["losses"], single["losses"][10:], "resumed in one process vs uninterrupted")
    _same_model(tmp_path / "resume", one_process, "resumed in one process vs uninterrupted")


def test_bad_setups_fail_on_every_rank(tmp_path: Path, masked_lm_run: dict, shared_data: Path) -> None:
    # a global batch the world size does not divide
    results = launch_ranks(
        WORKER, write_spec(tmp_path / "odd", strategy="ddp", **{**masked_lm_run, "global_batch": 5}), 2
    )
    for rank, (code, output) in enumerate(results):
        assert code != 0 and "batch_size=5 (the global batch) is not divisible by world_size=2" in output, (
            rank,
            output,
        )
    # a rendezvous that never completes: rank 0 of 2 alone, a 3 s timeout
    spec = write_spec(tmp_path / "alone", strategy="ddp", timeout=3, **masked_lm_run)
    env = child_env(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1", MASTER_PORT="1")
    code, output = run_command([sys.executable, str(WORKER), str(spec)], env=env, timeout=40)
    assert code != 0 and "DistributedSetupError: rank 0 of 2 could not join the process group at 127.0.0.1:1" in output
    # resuming the checkpoint of another model (hidden_dim 41, not 38): the same error on both ranks, no hang
    from export_checkpoints import tiny_checkpoint

    other = tiny_checkpoint(tmp_path / "other-model", "masked_lm", shared_data, hidden_dim=41)
    _single(tmp_path / "other", strategy="single", **{**masked_lm_run, "model": str(other), "steps": 1, "save_at": 1})
    checkpoint = str(tmp_path / "other" / "checkpoint")
    spec = write_spec(tmp_path / "wrong", strategy="fsdp", resume=checkpoint, resume_step=1, **masked_lm_run)
    for rank, (code, output) in enumerate(launch_ranks(WORKER, spec, 2)):
        assert code != 0, (rank, output[-3000:])
        assert "does not fit this model and optimizer" in output and "stored (41, 32), model (38, 32)" in output, (
            rank,
            output[-3000:],
        )
