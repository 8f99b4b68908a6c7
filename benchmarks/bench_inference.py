"""Inference speed across frameworks: same weights, same inputs, one process per framework, runs interleaved.

Contenders (``DistilBertForSequenceClassification`` forward, logits out, no gradients):

- ``torch worker``: ours ``attn_implementation="eager"`` and ``"sdpa"``, transformers 5.x ``sdpa`` (the reference);
  it also measures the machine's GEMM peak (two n x n matrices, fp32 and bf16; ``torch.matmul`` and oneDNN).
- ``keras worker``: ours in eager mode and under ``tf.function(jit_compile=True)`` (XLA).
- ``flax worker``: ours under ``nnx.jit(graph=False)`` (tree mode) and under the default graph-mode ``nnx.jit``
  (through ``nnx.cached_partial``, as Flax advises for hot loops), which copies the state out of every call.
- ``onnx worker``: ONNX Runtime (CPU, all graph optimisations) on the ONNX export of our PyTorch model (float32).

The driver starts the workers, asks each to load the model and warm up on a case (dtype, batch, seq), then
requests one timed forward at a time, rotating the order every round, so every contender runs on the same cores
under the same background load, one at a time. Before each request it pauses (the previous contender's thread pool
stops spinning) and waits, within a budget, until nothing else runs on the machine; each case records how many of
its runs started on a quiet machine (niced work is ignored). Short forwards (``inner``) are timed several times
back to back per request, after one untimed forward. Each worker times its own forward (``perf_counter`` around the call
and the synchronisation: ``block_until_ready`` for JAX); medians are reported. Inputs: seeded random ids, all-ones
attention mask (no padding).

    python benchmarks/bench_inference.py CHECKPOINT_DIR --onnx model.onnx --json out.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    WorkerChannel,
    WorkerProcess,
    emit_json,
    forward_flops,
    median,
    pin_framework_threads,
    pin_threads,
    rotate,
    wait_for_quiet,
)

logger = logging.getLogger("benchmarks.inference")

WORKERS = ("torch", "keras", "flax", "onnx")
REFERENCE = "transformers-torch-sdpa"
OURS_TORCH = "ours-torch-sdpa"
Forward = Callable[[], Any]  # one synchronised forward pass
Contender = Callable[[np.ndarray, np.ndarray], tuple[Forward, Callable[[Any], np.ndarray]]]


def case_inputs(vocab_size: int, batch: int, seq: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded random token ids (batch, seq) int64 and an all-ones mask: identical in every worker."""
    rng = np.random.default_rng(1000 * batch + seq)
    return rng.integers(1, vocab_size, (batch, seq), dtype=np.int64), np.ones((batch, seq), np.int64)


# ------------------------------------------------------------------------------------------------ contenders
def torch_contenders(checkpoint: str, dtype: str, threads: int) -> dict[str, Contender]:
    import torch
    import transformers

    from distilbert_mf.torch import DistilBertForSequenceClassification

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    transformers.logging.set_verbosity_error()
    models = {
        f"ours-torch-{impl}": DistilBertForSequenceClassification.from_pretrained(
            checkpoint, dtype=dtype, attn_implementation=impl
        )
        for impl in ("eager", "sdpa")
    }
    models[REFERENCE] = transformers.AutoModelForSequenceClassification.from_pretrained(
        checkpoint, dtype=torch_dtype, attn_implementation="sdpa"
    ).eval()

    def contender(model: Any) -> Contender:
        def bind(ids: np.ndarray, mask: np.ndarray) -> tuple[Forward, Callable[[Any], np.ndarray]]:
            ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)

            def forward() -> Any:
                with torch.inference_mode():
                    return model(input_ids=ids_t, attention_mask=mask_t).logits

            return forward, lambda out: out.float().numpy()

        return bind

    return {name: contender(model) for name, model in models.items()}


def keras_contenders(checkpoint: str, dtype: str, threads: int) -> dict[str, Contender]:
    import tensorflow as tf

    from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification

    model = TFDistilBertForSequenceClassification.from_pretrained(checkpoint, dtype=dtype)

    def call(ids: Any, mask: Any) -> Any:
        return model(input_ids=ids, attention_mask=mask, training=False).logits

    xla_call = tf.function(call, jit_compile=True)

    def contender(fn: Callable[[Any, Any], Any]) -> Contender:
        def bind(ids: np.ndarray, mask: np.ndarray) -> tuple[Forward, Callable[[Any], np.ndarray]]:
            ids_t, mask_t = tf.constant(ids.astype(np.int32)), tf.constant(mask.astype(np.int32))
            return (lambda: fn(ids_t, mask_t)), lambda out: np.asarray(out.numpy(), dtype=np.float32)

        return bind

    return {"ours-keras-eager": contender(call), "ours-keras-xla": contender(xla_call)}


def flax_contenders(checkpoint: str, dtype: str, threads: int) -> dict[str, Contender]:
    import jax.numpy as jnp
    from flax import nnx

    from distilbert_mf.flax import FlaxDistilBertForSequenceClassification

    model = FlaxDistilBertForSequenceClassification.from_pretrained(checkpoint, dtype=dtype, param_dtype=dtype)

    def forward(model: Any, ids: Any, mask: Any) -> Any:
        return model(ids, mask).logits

    # tree mode (graph=False): the model is a plain pytree argument, nothing flows back out of the call
    tree = nnx.jit(forward, graph=False)
    # NNX's default graph mode propagates the model's state out of every call, which copies every weight each
    # time; cached_partial keeps at least the graph traversal out of the loop (Flax's advice for hot loops)
    graph = nnx.cached_partial(nnx.jit(forward), model)

    def contender(fn: Callable[[Any, Any], Any]) -> Contender:
        def bind(ids: np.ndarray, mask: np.ndarray) -> tuple[Forward, Callable[[Any], np.ndarray]]:
            ids_j, mask_j = jnp.asarray(ids, jnp.int32), jnp.asarray(mask, jnp.int32)
            return (lambda: fn(ids_j, mask_j).block_until_ready()), lambda out: np.asarray(out, np.float32)

        return bind

    return {
        "ours-flax-jit": contender(lambda ids, mask: tree(model, ids, mask)),
        "ours-flax-jit-graph": contender(graph),
    }


def onnx_contenders(onnx_path: str, dtype: str, threads: int) -> dict[str, Contender]:
    if dtype != "float32":  # ONNX Runtime's CPU provider has no bfloat16 MatMul / attention kernels
        return {}
    from benchmarks.bench_onnx import session

    ort_session = session(onnx_path, threads)

    def bind(ids: np.ndarray, mask: np.ndarray) -> tuple[Forward, Callable[[Any], np.ndarray]]:
        feeds = {"input_ids": ids, "attention_mask": mask}
        return (lambda: ort_session.run(["logits"], feeds)[0]), lambda out: np.asarray(out, np.float32)

    return {"onnxruntime": bind}


def gemm_peak(dtype: str, n: int, repeats: int) -> dict[str, float]:
    """Best GFLOP/s of an (n, n) x (n, n) product in ``dtype``: ``torch.matmul`` (PyTorch's BLAS: MKL for float32)
    and, where this PyTorch and CPU have it, oneDNN's linear kernel (what our PyTorch model uses)."""
    import torch

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    generator = torch.Generator().manual_seed(0)
    a = torch.randn(n, n, generator=generator).to(torch_dtype)
    b = torch.randn(n, n, generator=generator).to(torch_dtype)
    from distilbert_mf.torch import cpu_kernels

    kernels = {"torch.matmul": lambda: torch.matmul(a, b)}
    if cpu_kernels.ONEDNN_LINEAR and (dtype == "float32" or cpu_kernels.ONEDNN_BF16):  # not bf16 on AVX2-only CPUs
        kernels["onednn_linear"] = lambda: torch.ops.mkldnn._linear_pointwise(a, b, None, "none", [], "")
    result = {}
    for name, kernel in kernels.items():
        kernel()
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            kernel()
            best = min(best, time.perf_counter() - start)
        result[name] = 2 * n**3 / best / 1e9
    return result


# ---------------------------------------------------------------------------------------------------- worker
FRAMEWORK_OF_WORKER = {"torch": "torch", "keras": "tensorflow", "flax": "jax", "onnx": "onnxruntime"}


def worker_main(worker: str, checkpoint: str, onnx_path: str | None, threads: int) -> int:
    """Serve the driver's requests (see :class:`benchmarks.common.WorkerChannel`) until ``quit``."""
    pin_threads(threads)
    channel = WorkerChannel()
    logging.basicConfig(level=logging.WARNING)
    if worker == "keras":
        import keras  # noqa: F401  (imported before pinning TensorFlow's threads)
    thread_settings = pin_framework_threads(FRAMEWORK_OF_WORKER[worker], threads)
    build = {
        "torch": lambda dtype: torch_contenders(checkpoint, dtype, threads),
        "keras": lambda dtype: keras_contenders(checkpoint, dtype, threads),
        "flax": lambda dtype: flax_contenders(checkpoint, dtype, threads),
        "onnx": lambda dtype: onnx_contenders(onnx_path or "", dtype, threads),
    }[worker]
    loaded: dict[str, dict[str, Contender]] = {}
    bound: dict[str, Forward] = {}
    for request in channel.requests():
        try:
            command = request["cmd"]
            if command == "hello":
                channel.reply({"threads": thread_settings})
            elif command == "setup":
                dtype = request["dtype"]
                if dtype not in loaded:
                    loaded.clear()  # one dtype's models at a time
                    bound.clear()
                    loaded[dtype] = build(dtype)
                ids, mask = case_inputs(request["vocab_size"], request["batch"], request["seq"])
                bound.clear()
                first_call, logits = {}, {}
                for name, contender in loaded[dtype].items():
                    forward, to_numpy = contender(ids, mask)
                    start = time.perf_counter()
                    out = forward()
                    first_call[name] = time.perf_counter() - start
                    logits[name] = to_numpy(out).tolist()
                    for _ in range(request["warmup"] - 1):
                        forward()
                    bound[name] = forward
                channel.reply({"contenders": list(bound), "first_call_s": first_call, "logits": logits})
            elif command == "time":
                forward = bound[request["name"]]
                for _ in range(request.get("rewarm", 0)):  # untimed: threads and caches back up after the pause
                    forward()
                seconds = []
                for _ in range(request.get("n", 1)):
                    start = time.perf_counter()
                    forward()
                    seconds.append(time.perf_counter() - start)
                channel.reply({"seconds": seconds})
            elif command == "gemm":
                channel.reply({"gflops": gemm_peak(request["dtype"], request["n"], request["repeats"])})
            elif command == "quit":
                channel.reply({"ok": True})
                break
            else:
                raise ValueError(f"unknown command {command!r}")
        except Exception as error:  # report to the driver, keep serving
            traceback.print_exc()
            channel.reply({"error": f"{type(error).__name__}: {error}"})
    return 0


# ---------------------------------------------------------------------------------------------------- driver
def start_workers(workers: Sequence[str], checkpoint: str, onnx_path: str | None, threads: int) -> dict:
    started = {}
    for worker in workers:
        argv = [sys.executable, "-m", "benchmarks.bench_inference", "--worker", worker, checkpoint]
        argv += ["--threads", str(threads)] + (["--onnx", onnx_path] if onnx_path else [])
        started[worker] = WorkerProcess(worker, argv)
    return started


def run_inference(
    checkpoint: str,
    config: Any,
    *,
    onnx_path: str | None,
    workers: Sequence[str] = WORKERS,
    dtypes: Sequence[str] = ("float32", "bfloat16"),
    shapes: Sequence[tuple[int, int]] = ((1, 128), (32, 128), (8, 512)),
    repeats: dict[tuple[int, int], int] | int = 5,
    inner: dict[tuple[int, int], int] | None = None,
    warmup: int = 2,
    threads: int = 2,
    gemm_n: int = 2048,
    pause_s: float = 0.05,
    quiet_wait_s: float = 10.0,
    quiet_budget_s: float = 240.0,
) -> dict[str, Any]:
    """Time every contender on every (dtype, shape), interleaved; returns the ``inference`` JSON section."""
    if "onnx" in workers and not onnx_path:
        raise ValueError("the onnx worker needs onnx_path (export one with benchmarks/bench_onnx.py)")
    running = start_workers(workers, checkpoint, onnx_path, threads)
    try:
        thread_settings = {name: worker.request(cmd="hello")["threads"] for name, worker in running.items()}
        peaks: dict[str, list[dict[str, float]]] = {dtype: [] for dtype in dtypes}

        def measure_peaks() -> None:
            if "torch" in running:
                for dtype in dtypes:
                    peaks[dtype].append(
                        running["torch"].request(cmd="gemm", dtype=dtype, n=gemm_n, repeats=5)["gflops"]
                    )

        measure_peaks()
        cases, reference_logits, waited_total = [], {}, 0.0
        for dtype in dtypes:
            for batch, seq in shapes:
                reps = repeats if isinstance(repeats, int) else repeats[(batch, seq)]
                n = (inner or {}).get((batch, seq), 1)  # back-to-back timed forwards per request
                contenders: list[tuple[WorkerProcess, str]] = []
                first_call: dict[str, float] = {}
                logits: dict[str, np.ndarray] = {}
                for worker in running.values():
                    setup = worker.request(
                        cmd="setup", dtype=dtype, batch=batch, seq=seq, vocab_size=config.vocab_size, warmup=warmup
                    )
                    contenders += [(worker, name) for name in setup["contenders"]]
                    first_call.update(setup["first_call_s"])
                    logits.update({name: np.asarray(v, np.float32) for name, v in setup["logits"].items()})
                if dtype == "float32" and OURS_TORCH in logits:
                    reference_logits[(batch, seq)] = logits[OURS_TORCH]
                times: dict[str, list[float]] = {name: [] for _, name in contenders}
                quiet: dict[str, list[bool]] = {name: [] for _, name in contenders}
                for round_index in range(reps):
                    for worker, name in rotate(contenders, round_index):
                        # the previous contender's threads stop spinning; other people's work on the machine ends
                        budget = max(quiet_budget_s - waited_total, 0.0)
                        waited, was_quiet = wait_for_quiet(min(quiet_wait_s, budget), min_wait_s=pause_s)
                        waited_total += waited - pause_s
                        quiet[name] += [was_quiet] * n
                        reply = worker.request(cmd="time", name=name, n=n, rewarm=1 if n > 1 else 0)
                        times[name] += reply["seconds"]
                flops = forward_flops(config, batch, seq)
                truth = reference_logits.get((batch, seq))
                for name, values in times.items():
                    seconds = median(values)
                    cases.append(
                        {
                            "contender": name,
                            "dtype": dtype,
                            "batch": batch,
                            "seq": seq,
                            "repeats": len(values),
                            "rounds": reps,
                            "median_ms": 1e3 * seconds,
                            "min_ms": 1e3 * min(values),
                            "times_ms": [1e3 * t for t in values],
                            "first_call_ms": 1e3 * first_call[name],
                            "quiet_runs": sum(quiet[name]),
                            "sequences_per_s": batch / seconds,
                            "tokens_per_s": batch * seq / seconds,
                            "gflops": flops / seconds / 1e9,
                            "max_abs_logits_diff_vs_ours_torch_fp32": (
                                None if truth is None else float(np.abs(logits[name] - truth).max())
                            ),
                        }
                    )
                logger.info(
                    "inference %s %dx%d: %s",
                    dtype,
                    batch,
                    seq,
                    {n: round(median(v) * 1e3, 1) for n, v in times.items()},
                )
        measure_peaks()
    finally:
        for worker in running.values():
            worker.close()
    peak = {dtype: max(max(run.values()) for run in runs) for dtype, runs in peaks.items() if runs}
    for case in cases:
        case["fraction_of_gemm_peak"] = case["gflops"] / peak[case["dtype"]] if case["dtype"] in peak else None
    return {
        "model": "DistilBertForSequenceClassification (2 labels), random weights, one safetensors checkpoint",
        "config": {k: getattr(config, k) for k in ("vocab_size", "dim", "n_heads", "hidden_dim", "n_layers")},
        "inputs": "seeded random token ids, all-ones attention mask",
        "threads": thread_settings,
        "warmup": warmup,
        "pause_between_runs_s": pause_s,
        "quiet_gate": f"before each run: wait for a 100 ms window in which normal-priority processes used no CPU "
        f"(/proc/stat; niced work ignored), at most {quiet_wait_s} s, {quiet_budget_s} s in all",
        "quiet_gate_waited_s": waited_total,
        "gemm_n": gemm_n,
        "gemm_peak_gflops": peak,  # the best kernel, best run
        "gemm_peak_runs_gflops": peaks,  # per kernel, at the start and at the end of the part
        "cases": cases,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="folder with config.json + model.safetensors (sequence classification)")
    parser.add_argument("--worker", choices=WORKERS, help=argparse.SUPPRESS)  # internal: serve one framework
    parser.add_argument("--onnx", help="the ONNX export to time with ONNX Runtime (skipped when absent)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--workers", default=",".join(WORKERS))
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--shapes", default="1x128,32x128,8x512", help="batch x seq, comma separated")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (timed requests per contender)")
    parser.add_argument("--inner", type=int, default=1, help="back-to-back timed forwards per request")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    if args.worker:
        return worker_main(args.worker, args.checkpoint, args.onnx, args.threads)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    from distilbert_mf import DistilBertConfig

    workers = [w for w in args.workers.split(",") if w != "onnx" or args.onnx]
    shapes = [tuple(int(n) for n in shape.split("x")) for shape in args.shapes.split(",")]
    result = run_inference(
        args.checkpoint,
        DistilBertConfig.from_pretrained(args.checkpoint),
        onnx_path=args.onnx,
        workers=workers,
        dtypes=args.dtypes.split(","),
        shapes=shapes,
        repeats=args.repeats,
        inner=dict.fromkeys(shapes, args.inner),
        warmup=args.warmup,
        threads=args.threads,
    )
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
