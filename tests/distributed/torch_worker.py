"""A tiny PyTorch training run, one process or one rank of a torchrun job (see dist_common.py for the spec).

strategy "single": the one-process loop's own step (distilbert_mf.torch.training.train_step); "ddp" / "fsdp": the
distributed step over this rank's shard of every global batch. Saves a torch.distributed.checkpoint at update
``save_at`` and the final standard folder in ``out/final``; resumes from ``resume`` (a folder save_state wrote).
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from pathlib import Path

import torch
from dist_common import load_spec, make_loader, prepare_data, stand_in_run, write_result

from distilbert_mf.frameworks import model_class
from distilbert_mf.torch import distributed as D
from distilbert_mf.torch import training as T
from distilbert_mf.training.batching import iter_steps
from distilbert_mf.training.data import TASK_HEADS


def main(spec_path: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = load_spec(spec_path)
    torch.manual_seed(0)
    ctx = D.init_distributed(timeout=spec.get("timeout", 45))
    strategy = spec["strategy"]
    config, data = prepare_data(spec)
    loader, plan, schedule = make_loader(spec, data, ctx.world_size, ctx.rank)
    cls = model_class("pt", TASK_HEADS[data.task])
    if strategy == "fsdp":
        model = D.load_sharded(cls, spec["model"], ctx=ctx, config=config)
    else:
        model = cls.from_pretrained(spec["model"], config=config).train()
        model = D.data_parallel(model, ctx) if strategy == "ddp" else model
    optimizer = T.create_optimizer(D.unwrap(model), stand_in_run(schedule))
    start = 0
    if spec.get("resume"):
        D.load_state(spec["resume"], model, optimizer, ctx=ctx)
        start = spec["resume_step"]
    param_bytes = sum(
        (p.to_local() if hasattr(p, "to_local") else p).numel() * p.element_size() for p in D.unwrap(model).parameters()
    )
    losses, norms, seconds = [], [], []
    for step in iter_steps(loader, plan, start=plan.position_of(start), global_step=start):
        batches = [T.to_device(b, ctx.device) for b in step.batches]
        rate = schedule(step.global_step - 1)
        began = time.perf_counter()
        if strategy == "single":
            loss, norm = T.train_step(model, optimizer, batches, learning_rate=rate, max_grad_norm=1.0)
        else:
            loss, norm = D.train_step(model, optimizer, batches, ctx=ctx, learning_rate=rate, max_grad_norm=1.0)
        seconds.append(time.perf_counter() - began)
        losses.append(loss)
        norms.append(norm)
        if step.global_step == spec.get("save_at"):
            D.save_state(Path(spec["out"]) / "checkpoint", model, optimizer, ctx=ctx)
    D.save_pretrained(model, Path(spec["out"]) / "final", ctx)
    every = ctx.broadcast_object(None)  # a collective: every rank got here
    del every
    sizes = [None] * ctx.world_size
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    record = {"param_bytes": param_bytes, "peak_rss": peak}
    if ctx.distributed:
        torch.distributed.all_gather_object(sizes, record)
    else:
        sizes = [record]
    if ctx.is_main:
        write_result(
            spec, losses=losses, grad_norms=norms, world_size=ctx.world_size, ranks=sizes,
            seconds_per_update=sorted(seconds)[len(seconds) // 2] if seconds else None,
        )  # fmt: skip
    D.shutdown(ctx)


if __name__ == "__main__":
    main(sys.argv[1])
