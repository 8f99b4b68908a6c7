"""A tiny Flax training run: one process, or one process of a jax.distributed job (see dist_common.py).

strategy "single": the one-process TrainStep of distilbert_mf.flax.training on one device; "mesh": the job's devices
as a (data, model) mesh (spec "model": the model axis size), state placed by its logical axes, ShardedTrainStep over
this process's rows. Saves an orbax checkpoint at update ``save_at`` and the final standard folder in ``out/final``;
resumes from ``resume``.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

from dist_common import load_spec, make_loader, prepare_data, stand_in_run, write_result

from distilbert_mf.flax import distributed as D
from distilbert_mf.flax import training as T
from distilbert_mf.frameworks import model_class
from distilbert_mf.training.batching import iter_steps
from distilbert_mf.training.data import TASK_HEADS


def main(spec_path: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = load_spec(spec_path)
    processes = D.init_distributed(timeout=spec.get("timeout", 45))
    import jax
    from flax import nnx

    config, data = prepare_data(spec)
    loader, plan, schedule = make_loader(spec, data, processes.process_count, processes.process_index)
    model = model_class("flax", TASK_HEADS[data.task]).from_pretrained(spec["model"], config=config, rngs=nnx.Rngs(0))
    model.train()
    optimizer = T.create_optimizer(model, stand_in_run(schedule))
    if spec["strategy"] == "single":
        step_fn = T.TrainStep(model, optimizer)
    else:
        mesh = D.make_mesh(model=spec.get("model_axis", 1))
        D.place(model, mesh)
        D.place(optimizer, mesh)
        step_fn = D.ShardedTrainStep(model, optimizer, mesh)
    start = 0
    if spec.get("resume"):
        D.load_state(spec["resume"], model, optimizer)
        start = spec["resume_step"]
    param_bytes = max(D.parameter_bytes(model).values())  # the most any one device of this process holds
    optimizer_bytes = max(D.parameter_bytes(optimizer).values())
    losses, norms, seconds = [], [], []
    for step in iter_steps(loader, plan, start=plan.position_of(start), global_step=start):
        began = time.perf_counter()
        loss, norm = step_fn(step.batches)
        seconds.append(time.perf_counter() - began)
        losses.append(loss)
        norms.append(norm)
        if step.global_step == spec.get("save_at"):
            D.save_state(Path(spec["out"]) / "checkpoint", model, optimizer)
    logits = step_fn.predict(next(iter(loader.epoch(0))))["logits"]
    D.save_pretrained(model, Path(spec["out"]) / "final")
    from jax.experimental import multihost_utils

    ranks = multihost_utils.process_allgather(jax.numpy.asarray([param_bytes, optimizer_bytes]))
    if processes.is_main:
        write_result(
            spec, losses=losses, grad_norms=norms, world_size=processes.process_count, devices=jax.device_count(),
            ranks=[{"param_bytes": int(p), "optimizer_bytes": int(o)} for p, o in ranks.reshape(-1, 2).tolist()],
            seconds_per_update=sorted(seconds)[len(seconds) // 2], logits_shape=list(logits.shape),
        )  # fmt: skip


if __name__ == "__main__":
    main(sys.argv[1])
