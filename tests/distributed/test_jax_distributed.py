"""Flax over a JAX mesh of 2 processes (``jax.distributed`` on 127.0.0.1, gloo CPU collectives) = one process.

One recipe (``masked_lm_run``: a tiny masked LM with its tied projector, global batch 8, 20 AdamW updates with weight
decay, warm-up and clipping, dropout 0) run by ``jax_worker.py``:

- one process on one device, the one-process ``TrainStep``;
- 2 processes with 2 CPU devices each: a ``data=2 x model=2`` mesh, the parameters and the optimizer's moments laid out
  by the model's logical axes (heads, FFN and vocabulary split on ``model``), each process feeding its rows of every
  batch; an orbax checkpoint after update 10, restored by *one* process on one device (another mesh).

Losses within 1e-5 relative, final weights within 1e-5 of each tensor's largest entry (but the key biases: see
dist_common.OUTPUT_INVARIANT); each device of the mesh holds less of the parameters than the single device. Every
subprocess runs under a timeout and is killed with its process group past it.
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
    jax_variables,
    launch_ranks,
    load_weights,
    read_result,
    run_command,
    write_spec,
)

pytestmark = [pytest.mark.flax, pytest.mark.distributed, pytest.mark.slow]

WORKER = HERE / "jax_worker.py"


def _one_process(folder: Path, **spec: object) -> dict:
    code, output = run_command(
        [sys.executable, str(WORKER), str(write_spec(folder, **spec))], env=child_env(), timeout=60
    )
    assert code == 0, output[-4000:]
    return read_result(folder)


def _two_processes(folder: Path, devices: int = 2, **spec: object) -> dict:
    results = launch_ranks(
        WORKER, write_spec(folder, **spec), 2, timeout=60, variables=lambda r, n, p: jax_variables(r, n, p, devices)
    )
    for rank, (code, output) in enumerate(results):
        assert code == 0, (rank, output[-4000:])
    return read_result(folder)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory: pytest.TempPathFactory, masked_lm_run: dict) -> Path:
    folder = tmp_path_factory.mktemp("jax-single")
    _one_process(folder, strategy="single", **masked_lm_run)
    return folder


@pytest.fixture(scope="module")
def mesh_run(tmp_path_factory: pytest.TempPathFactory, masked_lm_run: dict) -> Path:
    folder = tmp_path_factory.mktemp("jax-mesh")
    _two_processes(folder, strategy="mesh", model_axis=2, save_at=10, **masked_lm_run)
    return folder


def test_mesh_of_two_processes_matches_one(one_process: Path, mesh_run: Path) -> None:
    single, mesh = read_result(one_process), read_result(mesh_run)
    assert mesh["world_size"] == 2 and mesh["devices"] == 4 and len(mesh["losses"]) == 20
    assert_same_losses(mesh["losses"], single["losses"], "data=2 x model=2 mesh vs one device")
    np.testing.assert_allclose(mesh["grad_norms"], single["grad_norms"], rtol=RTOL)
    assert_same_weights(load_weights(mesh_run / "final"), load_weights(one_process / "final"), "mesh vs one device")
    # the model axis splits heads, FFN and vocabulary: every device holds less than the one device does
    whole = single["ranks"][0]
    for rank in mesh["ranks"]:
        assert rank["param_bytes"] < 0.75 * whole["param_bytes"], (rank, whole)
        assert rank["optimizer_bytes"] < 0.75 * whole["optimizer_bytes"], (rank, whole)


def test_mesh_checkpoint_restores_on_one_device(
    tmp_path: Path, one_process: Path, mesh_run: Path, masked_lm_run: dict
) -> None:
    single = read_result(one_process)
    checkpoint = mesh_run / "checkpoint"
    assert (checkpoint / "orbax").is_dir() and (checkpoint / "flax_distributed_state.json").is_file()
    resumed = _one_process(
        tmp_path / "resume", strategy="mesh", model_axis=1, resume=str(checkpoint), resume_step=10, **masked_lm_run
    )
    assert resumed["devices"] == 1
    assert_same_losses(resumed["losses"], single["losses"][10:], "restored on one device vs uninterrupted")
    assert_same_weights(load_weights(tmp_path / "resume" / "final"), load_weights(one_process / "final"), "restored")


def test_bad_setups_fail_clearly(tmp_path: Path, mesh_run: Path, tiny_config) -> None:
    from flax import nnx

    from distilbert_mf.flax import FlaxDistilBertForMaskedLM, distributed
    from distilbert_mf.flax.training import create_optimizer

    # a model axis that does not divide the FFN width (37 over 2 of the test process's 2 devices)
    mesh = distributed.make_mesh(model=2)
    model = FlaxDistilBertForMaskedLM(tiny_config, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"hidden_dim=37 does not divide over mesh axis 'model' of size 2"):
        distributed.place(model, mesh)
    with pytest.raises(ValueError, match=r"a mesh of data=3 x model=1 needs 3 devices, there are 2"):
        distributed.make_mesh(model=1, data=3)
    # restoring the mesh run's checkpoint (FFN 38, vocabulary 1124) into another model: names and shapes
    from dist_common import stand_in_run

    from distilbert_mf.training.schedules import LinearSchedule

    optimizer = create_optimizer(model, stand_in_run(LinearSchedule(1e-3, warmup_steps=0, total_steps=2)))
    with pytest.raises(
        ValueError, match=r"does not fit this model and optimizer: .*stored \(1124, 32\), model \(99, 32\)"
    ):
        distributed.load_state(mesh_run / "checkpoint", model, optimizer)
    # a job that never forms: each process alone, a 3 s timeout; a clear message, no hang
    spec = write_spec(tmp_path / "alone", strategy="mesh", timeout=3, model="unused", train_file="unused", task="masked-lm",
                      global_batch=8, steps=1)  # fmt: skip
    for process_id, expected in ((1, "the coordinator 127.0.0.1:"), (0, "did not form within 3 s")):
        env = child_env(**jax_variables(process_id, 2, _port(), 1))
        code, output = run_command([sys.executable, str(WORKER), str(spec)], env=env, timeout=40)
        assert code != 0 and "DistributedSetupError" in output and expected in output, output[-3000:]


def _port() -> int:
    from dist_common import free_port

    return free_port()
