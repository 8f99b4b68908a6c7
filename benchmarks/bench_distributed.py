"""Training past one process: each engine's step time against one process, its numbers, and memory per rank.

Issue 17's *Measure*: on a small shared machine scaling efficiency means little, so this part reports what does not
depend on it — that N processes / devices compute the one-process numbers, what an update costs each engine over
one process at the same global batch, and the memory each rank holds (FSDP2 and the JAX / Keras model axis must
hold less of the parameters and optimizer state per rank as the world grows). Every case goes through the library's
own engines; nothing here re-implements them:

- **PyTorch** (gloo on 127.0.0.1, ``torchrun``'s launcher ``torch.distributed.run``): one process with the
  one-process loop's :func:`distilbert_mf.torch.training.train_step` against ``world_size`` ranks under DDP
  (:func:`~distilbert_mf.torch.distributed.data_parallel`) and FSDP2 (:func:`~distilbert_mf.torch.distributed.
  load_sharded`: meta device, ``fully_shard`` per block then the root, this rank's shards from the checkpoint),
  each rank with its rows of every global batch, the update :func:`~distilbert_mf.torch.distributed.train_step`.
- **JAX / Flax** (:mod:`distilbert_mf.flax.distributed`): one device with the Flax loop's ``TrainStep`` against
  ``world_size`` CPU devices of one process (``--xla_force_host_platform_device_count``) on a ``data`` mesh and on a
  ``model`` mesh (heads / FFN / vocabulary split), state :func:`~distilbert_mf.flax.distributed.place`-d and the
  update :class:`~distilbert_mf.flax.distributed.ShardedTrainStep`; and ``world_size`` processes of one device each
  joined by ``jax.distributed`` (gloo) on a ``data`` mesh.
- **Keras** on the JAX backend (:mod:`distilbert_mf.tensorflow.distributed`): ``train_on_batch`` with the loop's
  ``PyTorchAdamW`` on one device against ``keras.distribution.DataParallel`` and ``ModelParallel`` (the layout map)
  over ``world_size`` CPU devices.
- **Ray Data** batch inference (:mod:`distilbert_mf.pipelines.distributed`, the optional extra ``distributed``): the
  text-classification pipeline over SST-2 dev sentences with 1 and ``world_size`` workers, rows/s in all and per
  worker, against the same pipeline in one process; skipped (with the reason) when Ray is not installed.

Method. The model is a seeded random ``DistilBertForSequenceClassification`` (2 labels, dropout 0 so that every
engine must compute the same losses) saved once with its tokenizer; every case runs in fresh processes, one after the
other, over the same ``warmup + steps`` seeded random global batches (``bench_training.fixed_batches``), each rank
taking its consecutive rows. The machine's ``threads`` CPUs are shared out alike: one process runs ``threads``
threads, each of N ranks ``threads / N`` threads bound to its own CPUs, so every case computes on the same cores and
the ratio ``N-rank seconds per update / one-process seconds per update`` (``overhead``) is what the engine costs
here (collectives, gathers, a smaller GEMM per rank) — not a scaling efficiency. A step's time is the slowest rank's
(``perf_counter`` around the update and the read-back of its loss, a barrier before each). Per rank: peak RSS
(``VmHWM`` after ``/proc/self/clear_refs``, reset before the model is built) and the bytes of parameters and
optimizer state it holds (local shards: ``DTensor.to_local()`` under FSDP2, ``addressable_shards`` per JAX device).
Correctness: the largest relative difference of each case's losses from its framework's one-process losses.

    python -m benchmarks.bench_distributed --json benchmarks/results/distributed.json   # ~4-5 min on 2 cores
    python -m benchmarks.bench_distributed --quick --engines torch,jax --json /tmp/d.json  # tiny, checks the code
    python -m benchmarks.bench_distributed --full --threads 16 --json d.json     # DistilBERT-base, a bigger machine
    python -m benchmarks.bench_distributed --full --device cuda --json d.json   # GPUs: NCCL, one rank per GPU

``--device cuda`` (NCCL between ranks, ``cuda:LOCAL_RANK``; JAX / Keras on the GPUs) is scripted for a GPU machine
and was not run here (none was available); a case that needs more GPUs than there are is skipped with the reason.
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_training
from benchmarks.common import (
    FULL_CONFIG,
    FULL_TOKENIZER,
    ROOT,
    SHARED,
    SMOKE_TOKENIZER,
    emit_json,
    machine_info,
    median,
    pin_framework_threads,
    pin_threads,
    reset_peak_rss,
    rss_bytes,
)

logger = logging.getLogger("benchmarks.distributed")

ENGINES = ("torch", "jax", "keras", "ray")
TORCH_CASES = ("one-process", "ddp", "fsdp2")
JAX_CASES = ("one-device", "data", "model", "data-processes")
KERAS_CASES = ("one-device", "data-parallel", "model-parallel")
CASES = {"torch": TORCH_CASES, "jax": JAX_CASES, "keras": KERAS_CASES}
BASELINES = {"torch": "one-process", "jax": "one-device", "keras": "one-device"}  # the first case of each
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}
LEARNING_RATE, MAX_GRAD_NORM = bench_training.LEARNING_RATE, bench_training.MAX_GRAD_NORM
SST2_DEV = SHARED / "glue_sst2" / "dev.tsv"
# OpenMP threads sleep at once instead of spinning (unless the caller set OMP_WAIT_POLICY): on a machine other work
# shares, a spinning 2-thread process collapses (docs/benchmarks.md) while 1-thread ranks do not, which would
# flatter every engine over one process
DEFAULT_OMP_WAIT_POLICY = "PASSIVE"
RANK_TIMEOUT_S = 120  # the rendezvous and every collective (DISTILBERT_MF_DIST_TIMEOUT / jax.distributed)

# the default: a moderate model that runs the whole part in about 5 minutes on 2 cores
MODERATE_CONFIG: dict[str, Any] = {
    **FULL_CONFIG,
    "vocab_size": 30522,
    "dim": 256,
    "n_heads": 4,
    "hidden_dim": 1024,
    "n_layers": 4,
    **NO_DROPOUT,
}
# --quick: tiny sizes over the tiny tokenizer's 1124 tokens (every size divides over a model axis of 2)
QUICK_CONFIG: dict[str, Any] = {
    **FULL_CONFIG,
    "vocab_size": 1124,
    "dim": 32,
    "n_heads": 4,
    "hidden_dim": 64,
    "n_layers": 2,
    **NO_DROPOUT,
}
SETTINGS: dict[str, dict[str, Any]] = {
    "moderate": {
        "config": MODERATE_CONFIG,
        "tokenizer": FULL_TOKENIZER,
        "batch": 16,
        "seq": 64,
        "warmup": 2,
        "steps": 8,
        "ray_rows": 512,
        "ray_batch": 32,
    },
    "quick": {
        "config": QUICK_CONFIG,
        "tokenizer": SMOKE_TOKENIZER,
        "batch": 4,
        "seq": 16,
        "warmup": 1,
        "steps": 2,
        "ray_rows": 32,
        "ray_batch": 8,
    },
    "full": {
        "config": {**FULL_CONFIG, **NO_DROPOUT},
        "tokenizer": FULL_TOKENIZER,
        "batch": 32,
        "seq": 128,
        "warmup": 2,
        "steps": 10,
        "ray_rows": 872,
        "ray_batch": 32,
    },
}


# ---------------------------------------------------------------------------------------------------- rank side
def rank_place() -> tuple[int, int]:
    """(rank, world size) from torchrun's or jax.distributed's variables; (0, 1) in a plain process."""
    if "WORLD_SIZE" in os.environ:
        return int(os.environ.get("RANK", "0")), int(os.environ["WORLD_SIZE"])
    if "JAX_NUM_PROCESSES" in os.environ:
        return int(os.environ.get("JAX_PROCESS_ID", "0")), int(os.environ["JAX_NUM_PROCESSES"])
    return 0, 1


def pin_rank(threads: int) -> dict[str, Any]:
    """Give this rank ``threads / world`` threads on CPUs of its own (before any framework is imported)."""
    rank, world = rank_place()
    if threads % world:
        raise ValueError(f"--threads {threads} does not divide over {world} ranks; choose a multiple of {world}")
    per_rank = threads // world
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    pin_threads(per_rank)
    if len(cpus) >= threads and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus[rank * per_rank : (rank + 1) * per_rank])
    return {
        "rank": rank,
        "world_size": world,
        "threads": per_rank,
        "cpus": sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
    }


def local_rows(batch: Mapping[str, np.ndarray], rank: int, world: int) -> dict[str, np.ndarray]:
    """This rank's consecutive rows of a global batch (what ``BatchLoader(world_size=, rank=)`` hands a rank)."""
    rows = len(batch["input_ids"])
    if rows % world:
        raise ValueError(f"a global batch of {rows} rows does not divide over {world} ranks; choose a multiple")
    share = rows // world
    return {key: value[rank * share : (rank + 1) * share] for key, value in batch.items()}


def timed_steps(
    update: Callable[[Mapping[str, np.ndarray]], float],
    batches: Sequence[Mapping[str, np.ndarray]],
    warmup: int,
    barrier: Callable[[], None],
) -> dict[str, Any]:
    """Run every batch's update (``barrier`` before each): the first ``warmup`` untimed, then per update wall and
    CPU seconds; the losses of all."""
    losses, wall, cpu = [], [], []
    first_s = None
    for index, batch in enumerate(batches):
        barrier()
        started, cpu_started = time.perf_counter(), time.process_time()
        losses.append(float(update(batch)))
        seconds = time.perf_counter() - started
        if index == 0:
            first_s = seconds
        if index >= warmup:
            wall.append(seconds)
            cpu.append(time.process_time() - cpu_started)
    return {"losses": losses, "times_s": wall, "cpu_s": cpu, "first_step_s": first_s}


def memory_record(before: int, peak_reset: bool) -> dict[str, Any]:
    peak = rss_bytes("VmHWM")
    return {
        "peak_rss_bytes": peak,
        "rss_before_bytes": before,
        "peak_growth_bytes": peak - before if peak_reset else None,
    }


def start_memory() -> tuple[int, bool]:
    """(RSS now, whether the peak counter was reset): taken after the imports, before the model is built."""
    gc.collect()
    return rss_bytes(), reset_peak_rss()


def _batches(checkpoint: str, settings: Mapping[str, Any]) -> list[dict[str, np.ndarray]]:
    from distilbert_mf import DistilBertConfig

    config = DistilBertConfig.from_pretrained(checkpoint)
    count = settings["warmup"] + settings["steps"]
    return bench_training.fixed_batches(config.vocab_size, config.num_labels, settings["batch"], settings["seq"], count)


def _run_of(checkpoint: str, framework: str, settings: Mapping[str, Any], scratch: str) -> Any:
    total = settings["warmup"] + settings["steps"]
    return bench_training.bench_run(checkpoint, framework, bf16=False, total_steps=total, output_dir=scratch)


def torch_rank(case: str, checkpoint: str, settings: Mapping[str, Any], device: str) -> dict[str, Any]:
    """One rank (or the one process) of a PyTorch case: its update times, losses, memory and held bytes."""
    place = pin_rank(settings["threads"])
    import torch

    from distilbert_mf.torch import distributed as engines
    from distilbert_mf.torch import training

    place["thread_settings"] = pin_framework_threads("torch", place["threads"])
    ctx = engines.init_distributed(timeout=RANK_TIMEOUT_S, device=None if case != "one-process" else device)
    if case != "one-process" and not ctx.distributed:
        raise RuntimeError(f"case {case!r} must run under torchrun with WORLD_SIZE > 1")
    batches = _batches(checkpoint, settings)
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_dist_") as scratch:
        run = _run_of(checkpoint, "torch", settings, scratch)
        before, peak_reset = start_memory()
        started = time.perf_counter()
        if case == "fsdp2":
            model = engines.load_sharded(run.model_class(), checkpoint, ctx=ctx, config=run.config)
        else:
            model = training.load_model(run, ctx.device)
        optimizer = training.create_optimizer(model, run)
        if case == "ddp":
            model = engines.data_parallel(model, ctx)
        build_s = time.perf_counter() - started
        torch.manual_seed(0)

        def update(batch: Mapping[str, np.ndarray]) -> float:
            local = [training.to_device(local_rows(batch, ctx.rank, ctx.world_size), ctx.device)]
            if case == "one-process":
                loss, _ = training.train_step(
                    model, optimizer, local, learning_rate=LEARNING_RATE, max_grad_norm=MAX_GRAD_NORM
                )
            else:
                loss, _ = engines.train_step(
                    model, optimizer, local, ctx=ctx, learning_rate=LEARNING_RATE, max_grad_norm=MAX_GRAD_NORM
                )
            return loss

        steps = timed_steps(update, batches, settings["warmup"], ctx.barrier)
        memory = memory_record(before, peak_reset)

    def local_bytes(tensor: Any) -> int:
        local = tensor.to_local() if hasattr(tensor, "to_local") else tensor
        return int(local.numel() * local.element_size())

    params = sum(local_bytes(p) for p in engines.unwrap(model).parameters())
    state = sum(local_bytes(v) for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    record = {
        **place,
        **steps,
        **memory,
        "build_s": build_s,
        "parameter_bytes": params,
        "optimizer_state_bytes": state,
        "device": str(ctx.device),
        "backend": ctx.backend,
    }
    if ctx.device.type == "cuda":
        record["cuda_peak_allocated_bytes"] = int(torch.cuda.max_memory_allocated(ctx.device))
    engines.shutdown(ctx)
    return record


def _jax_bytes(variables: Any) -> dict[str, int]:
    """Bytes of JAX arrays held on each device (device id -> bytes of the shards it holds)."""
    import jax
    import jax.numpy as jnp

    totals: dict[str, int] = {}
    for value in variables:
        if isinstance(value, jax.Array) and not jnp.issubdtype(value.dtype, jax.dtypes.prng_key):
            for shard in value.addressable_shards:
                key = str(shard.device.id)
                totals[key] = totals.get(key, 0) + int(shard.data.nbytes)
    return totals


def jax_rank(case: str, checkpoint: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """One process of a Flax case: the one-device ``TrainStep``, or ``ShardedTrainStep`` on a data / model mesh."""
    place = pin_rank(settings["threads"])
    from distilbert_mf.flax import distributed as engines

    processes = engines.init_distributed(timeout=RANK_TIMEOUT_S)  # several processes only (jax.distributed)
    import jax

    from distilbert_mf.flax import training

    place["thread_settings"] = pin_framework_threads("jax", place["threads"])
    (jax.numpy.ones(1) + 1).block_until_ready()
    world = settings["world_size"]
    batches = _batches(checkpoint, settings)
    rank, processes_count = processes.process_index, processes.process_count
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_dist_") as scratch:
        run = _run_of(checkpoint, "flax", settings, scratch)
        before, peak_reset = start_memory()
        started = time.perf_counter()
        model = training.load_model(run)
        optimizer = training.create_optimizer(model, run)
        if case == "one-device":
            step = training.train_step_for(run, model, optimizer)
        else:
            mesh = engines.make_mesh(model=world if case == "model" else 1)
            engines.place(model, mesh)
            engines.place(optimizer, mesh)
            step = engines.ShardedTrainStep(model, optimizer, mesh, **training.step_options(run))
        build_s = time.perf_counter() - started

        def barrier() -> None:
            if processes_count > 1:
                from jax.experimental import multihost_utils

                multihost_utils.sync_global_devices("bench_distributed step")

        steps = timed_steps(
            lambda b: step([local_rows(b, rank, processes_count)])[0], batches, settings["warmup"], barrier
        )
        memory = memory_record(before, peak_reset)
    return {
        **place,
        **steps,
        **memory,
        "build_s": build_s,
        "devices": [str(d) for d in jax.local_devices()],
        "mesh": dict(step.mesh.shape) if case != "one-device" else None,
        "parameter_bytes_per_device": engines.parameter_bytes(model),
        "optimizer_state_bytes_per_device": engines.parameter_bytes(optimizer),
    }


def keras_rank(case: str, checkpoint: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The Keras (JAX backend) case: ``train_on_batch`` on one device, or under DataParallel / ModelParallel."""
    place = pin_rank(settings["threads"])
    os.environ["KERAS_BACKEND"] = "jax"
    import keras

    from distilbert_mf import DistilBertConfig
    from distilbert_mf.tensorflow import distributed as engines
    from distilbert_mf.tensorflow import training

    place["thread_settings"] = pin_framework_threads("jax", place["threads"])
    world = settings["world_size"]
    if case == "data-parallel":
        keras.distribution.set_distribution(engines.data_parallel())
    elif case == "model-parallel":
        config = DistilBertConfig.from_pretrained(checkpoint)
        keras.distribution.set_distribution(engines.model_parallel(model=world, config=config))
    batches = _batches(checkpoint, settings)
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_dist_") as scratch:
        run = _run_of(checkpoint, "keras", settings, scratch)
        before, peak_reset = start_memory()
        started = time.perf_counter()
        model = training.load_model(run)
        optimizer = training.create_optimizer(model, run)
        model.compile(optimizer=optimizer, jit_compile=True)  # the JAX backend compiles with XLA either way
        build_s = time.perf_counter() - started

        def update(batch: Mapping[str, np.ndarray]) -> float:
            return float(model.train_on_batch(dict(batch), return_dict=True)["loss"])

        steps = timed_steps(update, batches, settings["warmup"], lambda: None)
        memory = memory_record(before, peak_reset)
    return {
        **place,
        **steps,
        **memory,
        "build_s": build_s,
        "backend": keras.backend.backend(),
        "devices": [str(d) for d in keras.distribution.list_devices()],
        "parameter_bytes_per_device": _jax_bytes(v.value for v in model.variables),
        "optimizer_state_bytes_per_device": _jax_bytes(v.value for v in optimizer.variables),
    }


def sst2_texts(count: int) -> list[str]:
    """The first ``count`` SST-2 dev sentences (cycled when the set has fewer)."""
    if not SST2_DEV.is_file():
        raise FileNotFoundError(f"{SST2_DEV} is missing: the Ray case labels SST-2 dev sentences (shared data)")
    lines = SST2_DEV.read_text(encoding="utf-8").splitlines()[1:]
    texts = [line.rsplit("\t", 1)[0] for line in lines if line.strip()]
    return [texts[i % len(texts)] for i in range(count)]


def ray_case(checkpoint: str, settings: Mapping[str, Any]) -> dict[str, Any]:
    """The pipeline in this process (1 and ``threads`` threads), then the same batches on Ray Data
    (:func:`~distilbert_mf.pipelines.distributed.predict_dataset`, one block per batch as ``predict_texts`` builds
    them, order preserved) with 1 and ``world_size`` workers of one CPU each. Each job starts its own pool and loads
    the model in every worker: job rows/s count all of it (what ``predict_texts`` reports), steady rows/s only the
    rows after the first batch reached this process, over the time since."""
    pin_threads(settings["threads"])
    import pyarrow as pa
    import ray
    import torch

    from distilbert_mf import pipeline
    from distilbert_mf.pipelines.distributed import OUTPUT_COLUMN, jsonable, predict_dataset

    rows, batch_size, world = settings["ray_rows"], settings["ray_batch"], settings["world_size"]
    texts = sst2_texts(rows)
    chunks = [texts[i : i + batch_size] for i in range(0, rows, batch_size)]
    one_process = {}
    expected: list[Any] = []
    for threads in sorted({1, settings["threads"]}):
        torch.set_num_threads(threads)
        started = time.perf_counter()
        pipe = pipeline("text-classification", checkpoint, framework="pt", batch_size=batch_size)
        build_s = time.perf_counter() - started
        pipe(chunks[0])  # warm
        started = time.perf_counter()
        outputs = [jsonable(output) for chunk in chunks for output in pipe(chunk)]
        seconds = time.perf_counter() - started
        one_process[str(threads)] = {
            "threads": threads,
            "build_s": build_s,
            "seconds": seconds,
            "rows_per_s": rows / seconds,
        }
        expected = expected or outputs  # 1 thread, as each Ray worker
    torch.set_num_threads(settings["threads"])
    ray.init(num_cpus=settings["threads"], include_dashboard=False, log_to_driver=False, configure_logging=False)
    ray.data.DataContext.get_current().execution_options.preserve_order = True
    jobs = []
    try:
        for workers in sorted({1, world}):
            blocks = [pa.table({"text": pa.array(chunk, pa.string())}) for chunk in chunks]
            labelled = predict_dataset(
                ray.data.from_arrow(blocks),
                "text-classification",
                checkpoint,
                batch_size=batch_size,
                workers=workers,
                framework="pt",
            )
            started, arrivals, out = time.perf_counter(), [], []
            for batch in labelled.iter_batches(batch_size=None, batch_format="numpy"):
                arrivals.append((time.perf_counter(), len(batch[OUTPUT_COLUMN])))
                out += [json.loads(text) for text in batch[OUTPUT_COLUMN]]
            total_s = arrivals[-1][0] - started
            steady_s = arrivals[-1][0] - arrivals[0][0]
            steady = (rows - arrivals[0][1]) / steady_s if steady_s > 0 else None
            jobs.append(
                {
                    "workers": workers,
                    "cpus_per_worker": 1,
                    "seconds": total_s,
                    "first_batch_s": arrivals[0][0] - started,
                    "job_rows_per_s": rows / total_s,
                    "job_rows_per_s_per_worker": rows / total_s / workers,
                    "steady_rows_per_s": steady,
                    "steady_rows_per_s_per_worker": None if steady is None else steady / workers,
                    "labels_equal_one_process": [o["label"] for o in out] == [o["label"] for o in expected],
                    "score_max_abs_diff_vs_one_process": max(
                        abs(o["score"] - e["score"]) for o, e in zip(out, expected)
                    ),
                }
            )
    finally:
        ray.shutdown()
    return {
        "rows": rows,
        "batch_size": batch_size,
        "one_process": one_process,
        "workers": jobs,
        "ray": ray.__version__,
        "peak_rss_bytes_driver": rss_bytes("VmHWM"),
    }


# -------------------------------------------------------------------------------------------------- driver side
def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(devices: int | None, device: str, **extra: str) -> dict[str, str]:
    """This process's environment without any launcher's variables, ``devices`` JAX CPU devices (``device`` cpu)."""
    drop = (
        "RANK",
        "WORLD_SIZE",
        "LOCAL_RANK",
        "MASTER_ADDR",
        "MASTER_PORT",
        "XLA_FLAGS",
        "JAX_NUM_CPU_DEVICES",
        "JAX_COORDINATOR_ADDRESS",
        "JAX_NUM_PROCESSES",
        "JAX_PROCESS_ID",
    )
    env = {key: value for key, value in os.environ.items() if key not in drop}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["DISTILBERT_MF_DIST_TIMEOUT"] = str(RANK_TIMEOUT_S)
    env.setdefault("OMP_WAIT_POLICY", DEFAULT_OMP_WAIT_POLICY)
    if device == "cpu":
        env["JAX_PLATFORMS"] = "cpu"
        env["CUDA_VISIBLE_DEVICES"] = ""
        if devices is not None:
            env["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"
    elif devices is not None:  # a JAX / Keras process: its first ``devices`` GPUs (torchrun ranks pick LOCAL_RANK)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(str(index) for index in range(devices))
    env.update(extra)
    return env


def _worker_argv(kind: str, case: str, checkpoint: str, settings_path: Path, out: Path) -> list[str]:
    return [
        "-m",
        "benchmarks.bench_distributed",
        f"--{kind}",
        case,
        "--checkpoint",
        checkpoint,
        "--settings",
        str(settings_path),
        "--out",
        str(out),
    ]


def launch(commands: Sequence[tuple[list[str], dict[str, str]]], what: str, timeout: float) -> None:
    """Start every command (each in its own process group, output to this process's stderr) and wait for all; any
    failure or a run past ``timeout`` kills every group and raises ``RuntimeError`` naming ``what``."""
    logger.info("running %s", what)
    processes = [
        subprocess.Popen(argv, env=env, cwd=ROOT, stdout=sys.stderr, stderr=sys.stderr, start_new_session=True)
        for argv, env in commands
    ]
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            code = process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            if code != 0:
                raise RuntimeError(f"{what} failed: a process exited with code {code}; see its output above")
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"{what} ran past {timeout:.0f} s and was killed") from None
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def read_ranks(out: Path, world: int) -> list[dict[str, Any]]:
    ranks = []
    for rank in range(world):
        path = out.with_name(f"{out.stem}.rank{rank}.json")
        if not path.is_file():
            raise RuntimeError(f"rank {rank} wrote no result ({path})")
        ranks.append(json.loads(path.read_text(encoding="utf-8")))
    return ranks


def summarise(
    framework: str,
    case: str,
    ranks: list[dict[str, Any]],
    world: int,
    settings: Mapping[str, Any],
    held: Callable[[dict[str, Any]], tuple[int, int]],
) -> dict[str, Any]:
    """One case's record: the slowest rank's time per update (median), sequences/s, per-rank memory, held bytes
    (``held(rank) -> (parameter bytes, optimizer state bytes)`` of its largest device)."""
    steps = [max(values) for values in zip(*(r["times_s"] for r in ranks))]
    seconds = median(steps)
    per_rank = []
    for r in ranks:
        params, state = held(r)
        per_rank.append(
            {
                "rank": r["rank"],
                "threads": r["threads"],
                "cpus": r["cpus"],
                "median_s": median(r["times_s"]),
                "cpu_share": sum(r["cpu_s"]) / (sum(r["times_s"]) * r["threads"]),
                "peak_rss_bytes": r["peak_rss_bytes"],
                "peak_growth_bytes": r["peak_growth_bytes"],
                "parameter_bytes": params,
                "optimizer_state_bytes": state,
                **{k: r[k] for k in ("cuda_peak_allocated_bytes", "devices", "device") if k in r},
            }
        )
    return {
        "framework": framework,
        "case": case,
        "world_size": world,
        "processes": len(ranks),
        "median_s": seconds,
        "min_s": min(steps),
        "times_s": steps,
        "first_step_s": max(r["first_step_s"] for r in ranks),
        "build_s": max(r["build_s"] for r in ranks),
        "sequences_per_s": settings["batch"] / seconds,
        "losses": ranks[0]["losses"],
        "ranks": per_rank,
        "parameter_bytes_per_rank": max(r["parameter_bytes"] for r in per_rank),
        "optimizer_state_bytes_per_rank": max(r["optimizer_state_bytes"] for r in per_rank),
        "peak_rss_bytes_per_rank": max(r["peak_rss_bytes"] for r in per_rank),
        **({"mesh": ranks[0]["mesh"]} if ranks[0].get("mesh") else {}),
    }


def _device_held(record: dict[str, Any]) -> tuple[int, int]:
    """(parameter bytes, optimizer state bytes) on the device of a JAX / Keras process that holds the most."""
    return max(record["parameter_bytes_per_device"].values()), max(record["optimizer_state_bytes_per_device"].values())


def _torch_held(record: dict[str, Any]) -> tuple[int, int]:
    return record["parameter_bytes"], record["optimizer_state_bytes"]


def add_comparisons(cases: list[dict[str, Any]]) -> None:
    """Per framework, each case's overhead (its time / the one-process time), the largest relative difference of
    its losses from the one-process losses, and its held bytes over the one-process bytes."""
    baseline = {c["framework"]: c for c in cases if c["world_size"] == 1}
    for case in cases:
        one = baseline.get(case["framework"])
        if one is None:
            continue
        ours, theirs = np.asarray(case["losses"]), np.asarray(one["losses"])
        case["overhead_vs_one_process"] = case["median_s"] / one["median_s"]
        case["loss_max_rel_diff_vs_one_process"] = float(np.max(np.abs(ours - theirs) / np.abs(theirs)))
        case["parameter_bytes_vs_one_process"] = case["parameter_bytes_per_rank"] / one["parameter_bytes_per_rank"]
        case["optimizer_state_bytes_vs_one_process"] = (
            case["optimizer_state_bytes_per_rank"] / one["optimizer_state_bytes_per_rank"]
        )


def gpu_count(device: str) -> int | None:
    """How many CUDA GPUs this machine has (None on ``--device cpu``), asked of a fresh process."""
    if device == "cpu":
        return None
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    return int(done.stdout.strip() or 0) if done.returncode == 0 else 0


def select_cases(engines: Sequence[str], only: Sequence[str] | None = None) -> dict[str, list[str]]:
    """{framework: its cases to run} of ``engines``: all of them, or those ``only`` names (``torch:fsdp2``,
    ``jax:model`` ...; the framework's one-process baseline always runs first, every comparison needs it)."""
    unknown = sorted(set(engines) - set(ENGINES))
    if unknown:
        raise ValueError(f"unknown engine(s) {unknown}; choose from {list(ENGINES)}")
    names = [f"{framework}:{case}" for framework, cases in CASES.items() for case in cases]
    wrong = sorted(set(only or ()) - set(names) - {"ray"})
    if wrong:
        raise ValueError(f"unknown case(s) {wrong}; choose from {names} and 'ray'")
    selected = {}
    for framework, cases in CASES.items():
        if framework not in engines or (only is not None and not any(n.startswith(f"{framework}:") for n in only)):
            continue
        selected[framework] = [
            c for c in cases if only is None or c == BASELINES[framework] or f"{framework}:{c}" in only
        ]
    return selected


def launch_plan(framework: str, case: str, world: int) -> tuple[int | None, int, bool]:
    """(JAX devices per process or None, processes, under torchrun) of a case."""
    if framework == "torch":
        return (None, 1, False) if case == BASELINES["torch"] else (None, world, True)
    if case == BASELINES[framework]:
        return 1, 1, False
    if case == "data-processes":
        return 1, world, False
    return world, 1, False


def run_distributed(
    *,
    settings: Mapping[str, Any],
    engines: Sequence[str] = ENGINES,
    threads: int = 2,
    world_size: int = 2,
    device: str = "cpu",
    timeout_s: float = 600.0,
    size: str = "moderate",
    only: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Every requested engine's cases (``only``: just these ``framework:case`` names and ``ray``, see
    :func:`select_cases`), each in fresh processes; returns the ``distributed`` JSON."""
    from benchmarks.run import make_checkpoint  # the run's own seeded checkpoint writer (lazy: run imports us)
    from distilbert_mf import DistilBertConfig

    select_cases(engines, only)  # checks the names before anything starts
    if world_size < 2:
        raise ValueError(f"world_size must be >= 2 (it is compared with one process), got {world_size}")
    if threads % world_size:
        raise ValueError(f"threads={threads} does not divide over world_size={world_size}; choose a multiple")
    if settings["batch"] % world_size:
        raise ValueError(f"batch={settings['batch']} does not divide over world_size={world_size}; choose a multiple")
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    gpus = gpu_count(device)
    started, load_start = time.perf_counter(), list(os.getloadavg())
    started_utc = time.strftime("%Y-%m-%d %H:%M", time.gmtime())
    cases: list[dict[str, Any]] = []
    skipped: dict[str, str] = {}
    ray: dict[str, Any] | None = None
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_dist_") as scratch_dir:
        scratch = Path(scratch_dir)
        checkpoint = str(make_checkpoint(scratch / "checkpoint", settings["config"], settings["tokenizer"]))
        worker = {
            **{k: v for k, v in settings.items() if k not in ("config", "tokenizer")},
            "threads": threads,
            "world_size": world_size,
            "device": device,
        }
        settings_path = scratch / "settings.json"
        settings_path.write_text(json.dumps(worker), encoding="utf-8")

        def one(kind: str, case: str, devices: int | None, processes: int = 1, torchrun: bool = False) -> list[dict]:
            out = scratch / f"{kind}-{case}.json"
            argv = _worker_argv(kind, case, checkpoint, settings_path, out)
            if torchrun:
                launcher = [
                    "-m",
                    "torch.distributed.run",
                    "--nnodes",
                    "1",
                    "--nproc_per_node",
                    str(processes),
                    "--master_addr",
                    "127.0.0.1",
                    "--master_port",
                    str(free_port()),
                    "--max_restarts",
                    "0",
                ]
                commands = [([sys.executable, *launcher, *argv], child_env(devices, device))]
            elif processes > 1:
                port = free_port()
                commands = [
                    (
                        [sys.executable, *argv],
                        child_env(
                            devices,
                            device,
                            JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}",
                            JAX_NUM_PROCESSES=str(processes),
                            JAX_PROCESS_ID=str(rank),
                        ),
                    )
                    for rank in range(processes)
                ]
            else:
                commands = [([sys.executable, *argv], child_env(devices, device))]
            launch(commands, f"{kind} {case}", timeout_s)
            return read_ranks(out, processes)

        for framework, names in select_cases(engines, only).items():
            for case in names:
                devices, processes, torchrun = launch_plan(framework, case, world_size)
                what = f"{framework} {case}"
                if gpus is not None and case == "data-processes":
                    skipped[what] = "runs on CPU only (on GPUs the one-process mesh cases cover it)"
                elif gpus is not None and max(devices or 1, processes) > gpus:
                    skipped[what] = f"needs {max(devices or 1, processes)} GPUs, this machine has {gpus}"
                else:
                    ranks = one(framework, case, devices, processes, torchrun)
                    world = 1 if case == BASELINES[framework] else world_size
                    held = _torch_held if framework == "torch" else _device_held
                    cases.append(summarise(framework, case, ranks, world, settings, held))
        if "ray" in engines and (only is None or "ray" in only):
            found = subprocess.run(
                [sys.executable, "-c", "import ray, ray.data"],
                cwd=ROOT,
                capture_output=True,
                env=child_env(None, device),
                timeout=120,
                check=False,
            )
            if found.returncode != 0:
                skipped["ray"] = (
                    "Ray Data is not installed (the optional extra: pip install 'distilbert-mf[distributed]')"
                )
            else:
                (ray,) = one("ray", "pipeline", None)
        config = DistilBertConfig.from_pretrained(checkpoint)
    add_comparisons(cases)
    result: dict[str, Any] = {
        "size": size,
        "model": "DistilBertForSequenceClassification (2 labels), random weights, dropout 0, one safetensors file",
        "config": {k: getattr(config, k) for k in ("vocab_size", "dim", "n_heads", "hidden_dim", "n_layers")},
        "parameters": None,
        "inputs": f"{settings['warmup'] + settings['steps']} seeded random global batches of {settings['batch']} x "
        f"{settings['seq']} token ids, random labels; each rank takes its consecutive rows",
        "update": f"AdamW lr {LEARNING_RATE:g}, weight decay {bench_training.WEIGHT_DECAY:g} (not on biases and "
        f"LayerNorm), global-norm clipping at {MAX_GRAD_NORM:g}",
        "batch": settings["batch"],
        "seq": settings["seq"],
        "warmup": settings["warmup"],
        "steps": settings["steps"],
        "threads": threads,
        "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", DEFAULT_OMP_WAIT_POLICY),
        "world_size": world_size,
        "device": device,
        "gpus": gpus,
        "cases": cases,
        "ray": ray,
        "skipped": skipped,
        "started_utc": started_utc,
        "load_average_start": load_start,
        "load_average_end": list(os.getloadavg()),
        "machine": machine_info(),
        "source": bench_training.source_state(),
        "duration_s": time.perf_counter() - started,
    }
    one_torch = next((c for c in cases if (c["framework"], c["world_size"]) == ("torch", 1)), None)
    if one_torch is not None:
        result["parameters"] = one_torch["parameter_bytes_per_rank"] // 4  # float32
    result["load_warning"] = bench_training.load_warning(result)
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="tiny config, batch 4 x 16, 2 updates: checks the code")
    size.add_argument("--full", action="store_true", help="DistilBERT-base, batch 32 x 128 (a GPU or bigger machine)")
    parser.add_argument("--engines", default=",".join(ENGINES), help=f"subset of {','.join(ENGINES)}")
    parser.add_argument(
        "--cases", default=None, help="only these framework:case names (torch:fsdp2,jax:model,ray; default: all)"
    )
    parser.add_argument("--threads", type=int, default=2, help="CPUs of the machine shared out among the ranks")
    parser.add_argument("--world-size", type=int, default=2, help="ranks / devices / workers compared with one")
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each case may run before it is killed")
    parser.add_argument("--json", help="write the results here (default: stdout)")
    for name in ("batch", "seq", "warmup", "steps"):
        parser.add_argument(f"--{name}", type=int, default=None)
    parser.add_argument("--torch", metavar="CASE", choices=TORCH_CASES, help=argparse.SUPPRESS)  # worker sides
    parser.add_argument("--jax", metavar="CASE", choices=JAX_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--keras", metavar="CASE", choices=KERAS_CASES, help=argparse.SUPPRESS)
    parser.add_argument("--ray", metavar="CASE", choices=("pipeline",), help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    parser.add_argument("--settings", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    kind = next((k for k in ("torch", "jax", "keras", "ray") if getattr(args, k)), None)
    if kind is not None:  # a worker: this rank's record in <out>.rank<R>.json
        logging.basicConfig(level=logging.WARNING)
        worker = json.loads(Path(args.settings).read_text(encoding="utf-8"))
        case = getattr(args, kind)
        if kind == "torch":
            record = torch_rank(case, args.checkpoint, worker, "cuda" if worker.get("device") == "cuda" else "cpu")
        elif kind == "jax":
            record = jax_rank(case, args.checkpoint, worker)
        elif kind == "keras":
            record = keras_rank(case, args.checkpoint, worker)
        else:
            record = ray_case(args.checkpoint, worker)
        out = Path(args.out)
        rank = record.get("rank", 0)
        out.with_name(f"{out.stem}.rank{rank}.json").write_text(json.dumps(record), encoding="utf-8")
        return 0
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pin_threads(args.threads)  # the driver and every case on the same first ``threads`` CPUs
    name = "quick" if args.quick else "full" if args.full else "moderate"
    settings = dict(SETTINGS[name])
    settings.update({k: getattr(args, k) for k in ("batch", "seq", "warmup", "steps") if getattr(args, k) is not None})
    result = run_distributed(
        settings=settings,
        engines=[e for e in args.engines.split(",") if e],
        threads=args.threads,
        world_size=args.world_size,
        device=args.device,
        timeout_s=args.timeout,
        size=name,
        only=None if args.cases is None else [c for c in args.cases.split(",") if c],
    )
    result["command"] = " ".join(["python -m benchmarks.bench_distributed", *(sys.argv[1:] if argv is None else argv)])
    emit_json(result, args.json)
    for case in result["cases"]:
        logger.info(
            "%-6s %-15s %.3f s/update (x%.2f one process), params/rank %.1f MiB, peak RSS/rank %.0f MiB, "
            "losses within %.1e",
            case["framework"],
            case["case"],
            case["median_s"],
            case.get("overhead_vs_one_process", float("nan")),
            case["parameter_bytes_per_rank"] / 2**20,
            case["peak_rss_bytes_per_rank"] / 2**20,
            case.get("loss_max_rel_diff_vs_one_process", 0.0),
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
