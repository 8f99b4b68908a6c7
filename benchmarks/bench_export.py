"""Serving speed and accuracy of the exports: int8 ONNX Runtime vs float32 ONNX Runtime vs our PyTorch in bfloat16.

1. Export the run's checkpoint (distilbert-base-uncased sized, random weights) with the library,
   ``distilbert_mf.export.export(..., format="onnx", quantize="int8")``: float32 ``model.onnx`` (verified against
   our PyTorch model in a fresh process) and ``model_quantized.onnx`` (ONNX Runtime's dynamic int8).
2. Time them, interleaved, in the worker processes of bench_inference.py (the same thread pinning, quiet gate and
   rotation): latency 1 x 128 (p50 and p95 over every timed request) and throughput 32 x 128, against our PyTorch
   model in bfloat16 (eager and SDPA attention; the faster is "ours-torch-bf16") and transformers' in bfloat16.
3. Accuracy: export the packaged default model (distilbert-mf/minilm-sst2) with ``quantize="int8"`` and
   ``eval_file`` = SST-2 dev: accuracy of the source model, the float32 and the int8 ONNX models.

    python benchmarks/bench_export.py CHECKPOINT_DIR --accuracy-model distilbert-mf/minilm-sst2 --json export.json
"""

from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    SHARED,
    WorkerProcess,
    emit_json,
    machine_info,
    median,
    pin_threads,
    rotate,
    wait_for_quiet,
)

logger = logging.getLogger("benchmarks.export")

SST2_DEV = SHARED / "glue_sst2" / "dev.tsv"
LATENCY, THROUGHPUT = (1, 128), (32, 128)
TORCH_BF16 = ("ours-torch-eager", "ours-torch-sdpa")  # "ours-torch-bf16" is the faster of the two


def export_onnx(checkpoint: str, folder: Path, threads: int, eval_file: Path | None = None) -> dict[str, Any]:
    """float32 + int8 ONNX of ``checkpoint`` through the library; the summary of the export."""
    from distilbert_mf.export import export

    started = time.perf_counter()
    result = export(
        checkpoint,
        folder,
        format="onnx",
        task="text-classification",
        quantize="int8",
        eval_file=eval_file,
        threads=threads,
        overwrite=True,
    )
    report = result.verification
    if report is None:  # never: verify=True raises on a failure and reports on success
        raise RuntimeError("the ONNX export was not verified")
    return {
        "float32": str(result.artifact),
        "int8": str(folder / result.quantization["file"]),
        "seconds": round(time.perf_counter() - started, 1),
        "verification": {"max_abs_diff": report.worst, "atol": report.atol, "passed": report.passed},
        "quantization": result.quantization,
    }


def _worker(name: str, argv: list[str]) -> WorkerProcess:
    return WorkerProcess(name, [sys.executable, "-m", "benchmarks.bench_inference", *argv])


def time_contenders(
    checkpoint: str,
    onnx: dict[str, str],
    vocab_size: int,
    *,
    shapes: tuple[tuple[int, int], ...],
    repeats: dict[tuple[int, int], int],
    inner: dict[tuple[int, int], int],
    warmup: int,
    threads: int,
    quiet_wait_s: float,
    quiet_budget_s: float,
    torch: bool = True,
) -> list[dict[str, Any]]:
    """Every contender on every shape, one request at a time in rotating order; per case the median, p95, min."""
    common = ["--threads", str(threads)]
    workers = {f"ort-{kind}": _worker(kind, ["--worker", "onnx", checkpoint, "--onnx", path, *common])
               for kind, path in onnx.items()}  # fmt: skip
    if torch:
        workers["torch"] = _worker("torch", ["--worker", "torch", checkpoint, *common])
    cases, waited_total = [], 0.0
    try:
        for batch, seq in shapes:
            contenders: list[tuple[WorkerProcess, str, str]] = []  # (worker, its contender, our name)
            for key, worker in workers.items():
                dtype = "bfloat16" if key == "torch" else "float32"
                setup = worker.request(cmd="setup", dtype=dtype, batch=batch, seq=seq, vocab_size=vocab_size,
                                       warmup=warmup)  # fmt: skip
                for name in setup["contenders"]:
                    contenders.append((worker, name, key if name == "onnxruntime" else f"{name}-bf16"))
            n = inner.get((batch, seq), 1)
            times: dict[str, list[float]] = {label: [] for *_, label in contenders}
            for round_index in range(repeats[(batch, seq)]):
                for worker, name, label in rotate(contenders, round_index):
                    budget = max(quiet_budget_s - waited_total, 0.0)
                    waited, _ = wait_for_quiet(min(quiet_wait_s, budget), min_wait_s=0.05)
                    waited_total += waited
                    times[label] += worker.request(cmd="time", name=name, n=n, rewarm=1 if n > 1 else 0)["seconds"]
            for label, values in times.items():
                cases.append(
                    {
                        "contender": label,
                        "batch": batch,
                        "seq": seq,
                        "runs": len(values),
                        "median_ms": 1e3 * median(values),
                        "p95_ms": 1e3 * float(np.percentile(values, 95)),
                        "min_ms": 1e3 * min(values),
                        "sequences_per_s": batch / median(values),
                    }
                )
            logger.info("export %dx%d: %s", batch, seq, {k: round(1e3 * median(v), 1) for k, v in times.items()})
    finally:
        for worker in workers.values():
            worker.close()
    return cases


def fastest_torch(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Add "ours-torch-bf16": per shape, the faster of our two PyTorch attention paths."""
    out = list(cases)
    for shape in {(c["batch"], c["seq"]) for c in cases}:
        ours = [
            c for c in cases if (c["batch"], c["seq"]) == shape and c["contender"] in {f"{n}-bf16" for n in TORCH_BF16}
        ]
        if ours:
            best = min(ours, key=lambda c: c["median_ms"])
            out.append({**best, "contender": "ours-torch-bf16", "path": best["contender"]})
    return out


def _case(cases: list[dict[str, Any]], contender: str, shape: tuple[int, int]) -> dict[str, Any] | None:
    return next((c for c in cases if c["contender"] == contender and (c["batch"], c["seq"]) == shape), None)


def ratios(cases: list[dict[str, Any]]) -> dict[str, float | None]:
    """int8 against float32 ONNX Runtime and against our PyTorch bf16: p50 / p95 latency at 1 x 128, throughput
    at 32 x 128 (> 1: int8 is faster)."""

    def ratio(slow: str, fast: str, shape: tuple[int, int], key: str) -> float | None:
        a, b = _case(cases, slow, shape), _case(cases, fast, shape)
        return None if a is None or b is None else a[key] / b[key]

    return {
        "int8_vs_fp32_p50_latency_1x128": ratio("ort-float32", "ort-int8", LATENCY, "median_ms"),
        "int8_vs_fp32_p95_latency_1x128": ratio("ort-float32", "ort-int8", LATENCY, "p95_ms"),
        "int8_vs_fp32_throughput_32x128": ratio("ort-float32", "ort-int8", THROUGHPUT, "median_ms"),
        "int8_vs_torch_bf16_p50_latency_1x128": ratio("ours-torch-bf16", "ort-int8", LATENCY, "median_ms"),
        "int8_vs_torch_bf16_throughput_32x128": ratio("ours-torch-bf16", "ort-int8", THROUGHPUT, "median_ms"),
    }


def markdown_table(data: dict[str, Any]) -> str:
    """The serving table of docs/serving.md."""
    rows = ["| contender | 1×128 p50 ms | 1×128 p95 ms | 32×128 ms | 32×128 sequences/s |", "|---|---|---|---|---|"]
    names = ("ort-int8", "ort-float32", "ours-torch-bf16", "transformers-torch-sdpa-bf16")
    for name in names:
        lat, thr = _case(data["cases"], name, LATENCY), _case(data["cases"], name, THROUGHPUT)
        if lat is None and thr is None:
            continue
        cells = [
            f"{lat['median_ms']:.1f}" if lat else "–",
            f"{lat['p95_ms']:.1f}" if lat else "–",
            f"{thr['median_ms']:.0f}" if thr else "–",
            f"{thr['sequences_per_s']:.1f}" if thr else "–",
        ]
        rows.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def run_export(
    checkpoint: str,
    *,
    accuracy_model: str | None,
    eval_file: Path,
    limit: int | None,
    threads: int,
    shapes: tuple[tuple[int, int], ...] = (LATENCY, THROUGHPUT),
    repeats: dict[tuple[int, int], int] | None = None,
    inner: dict[tuple[int, int], int] | None = None,
    warmup: int = 2,
    quiet_wait_s: float = 10.0,
    quiet_budget_s: float = 120.0,
    torch: bool = True,
) -> dict[str, Any]:
    """The ``export`` part's JSON."""
    from distilbert_mf import DistilBertConfig

    config = DistilBertConfig.from_pretrained(checkpoint)
    data: dict[str, Any] = {"threads": threads, "checkpoint_config": {k: getattr(config, k) for k in
                            ("vocab_size", "dim", "n_heads", "hidden_dim", "n_layers")}}  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_export_") as scratch:
        onnx = export_onnx(checkpoint, Path(scratch) / "speed", threads)
        data["export"] = onnx
        data["cases"] = fastest_torch(
            time_contenders(
                checkpoint,
                {"float32": onnx["float32"], "int8": onnx["int8"]},
                config.vocab_size,
                shapes=shapes,
                repeats=repeats or {LATENCY: 10, THROUGHPUT: 5},
                inner=inner or {LATENCY: 5},
                warmup=warmup,
                threads=threads,
                quiet_wait_s=quiet_wait_s,
                quiet_budget_s=quiet_budget_s,
                torch=torch,
            )
        )
        if accuracy_model is not None:
            labelled = eval_file
            if limit:
                labelled = Path(scratch) / "eval.tsv"
                lines = eval_file.read_text(encoding="utf-8").splitlines()
                labelled.write_text("\n".join(lines[: limit + 1]) + "\n", encoding="utf-8")
            accuracy = export_onnx(accuracy_model, Path(scratch) / "accuracy", threads, eval_file=labelled)
            data["accuracy"] = {"model": accuracy_model, **accuracy["quantization"]["accuracy"]}
            data["accuracy"]["file"] = str(eval_file) + (f" (first {limit} rows)" if limit else "")
            data["accuracy_model_verification"] = accuracy["verification"]
    data["ratios"] = ratios(data["cases"])
    data["machine"] = machine_info()
    return data


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="sequence-classification checkpoint to time (with tokenizer files)")
    parser.add_argument("--accuracy-model", default=None, help="trained text-classification model (default: none)")
    parser.add_argument("--eval-file", type=Path, default=SST2_DEV, help="labelled TSV (default: SST-2 dev)")
    parser.add_argument("--limit", type=int, default=None, help="only the first N labelled rows")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--smoke", action="store_true", help="shapes 1x16 and 4x32, one round: checks the code")
    parser.add_argument("--no-torch", action="store_true", help="time ONNX Runtime only")
    parser.add_argument("--json", default=None, help="where the JSON goes (default: stdout)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    pin_threads(args.threads)
    options: dict[str, Any] = {}
    if args.smoke:
        shapes = ((1, 16), (4, 32))
        options = {"shapes": shapes, "repeats": dict.fromkeys(shapes, 1), "inner": {}, "warmup": 1,
                   "quiet_wait_s": 0.0, "quiet_budget_s": 0.0}  # fmt: skip
    data = run_export(
        args.checkpoint,
        accuracy_model=args.accuracy_model,
        eval_file=args.eval_file,
        limit=args.limit,
        threads=args.threads,
        torch=not args.no_torch,
        **options,
    )
    emit_json(data, args.json)
    logger.info("serving table:\n%s", markdown_table(data))
    return 0


if __name__ == "__main__":
    sys.exit(main())
