"""Run every benchmark and write the results: JSON, the markdown tables and the chart of docs/benchmarks.md.

    python -m benchmarks.run                      # the full run (about 12-15 minutes on 2 cores)
    python -m benchmarks.run --parts loading      # one part again; the page is re-rendered from every JSON
    python -m benchmarks.run --smoke              # tiny config, 1 repetition: checks that everything runs

Parts (each in its own processes, all with the same thread pinning, see :mod:`benchmarks.common`):

- ``onnx``: export our PyTorch model with ``torch.onnx`` and verify ONNX Runtime's logits (bench_onnx.py),
- ``inference``: forward speed of every framework and the references, interleaved (bench_inference.py),
- ``loading``: ``from_pretrained`` time and peak RSS, fresh process each (bench_loading.py),
- ``pipelines``: SST-2 dev text-classification vs transformers' pipeline (bench_pipelines.py),
- ``accuracy``: SST-2 dev accuracy and speed of the default model in bfloat16 vs float32 (bench_accuracy.py),
- ``tokenizers``: SST-2 dev, slow and fast tokenizers vs the references (bench_tokenizers.py),
- ``export``: int8 vs float32 ONNX Runtime vs our PyTorch bf16 (1x128 latency, 32x128 throughput), and the int8
  accuracy cost of the default model on SST-2 dev, all through ``distilbert_mf.export`` (bench_export.py),
- ``training`` (opt-in: ``--parts training``, about 25 minutes at full size on 2 quiet cores): fine-tuning updates
  per second and peak RSS of every framework's training step against a plain transformers PyTorch loop, fp32 and
  bf16, and a distillation update's cost against fine-tuning the same student (bench_training.py),
- ``distributed`` (opt-in: ``--parts distributed``, about 5 minutes on 2 cores): each engine's time per update over
  one process, its losses against one process and the memory per rank (DDP, FSDP2, the JAX data / model mesh and
  jax.distributed, Keras DataParallel / ModelParallel), and Ray Data batch inference rows/s per worker
  (bench_distributed.py; a moderate model of its own, not the run's checkpoint).

The full run writes ``benchmarks/results/<part>.json`` and ``machine.json``, the chart ``docs/img/benchmarks.png``
and the generated block of ``docs/benchmarks.md``; ``--smoke`` writes to ``benchmarks/results/tmp/`` (ignored by
git) unless ``--out-dir`` / ``--page`` / ``--chart`` say otherwise.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import bench_distributed, bench_training, report
from benchmarks.common import (
    FULL_CONFIG,
    FULL_TOKENIZER,
    RESULTS,
    ROOT,
    SMOKE_CONFIG,
    SMOKE_TOKENIZER,
    TOKENIZER_FILES,
    machine_info,
    pin_threads,
    run_script,
)

logger = logging.getLogger("benchmarks.run")

PARTS = ("onnx", "inference", "loading", "pipelines", "accuracy", "tokenizers", "export", "training", "distributed")
OPT_IN_PARTS = ("training", "distributed")  # only when asked for (long)
DEFAULT_PARTS = tuple(part for part in PARTS if part not in OPT_IN_PARTS)
DISTRIBUTED_ENGINES = {"torch": ("torch", "ray"), "flax": ("jax",), "keras": ("keras",)}  # worker -> engines
WORKERS = ("torch", "keras", "flax", "onnx")
LOADING_WORKER = {"ours-torch": "torch", "ours-keras": "keras", "ours-flax": "flax", "transformers-torch": "torch"}

# repetitions: enough for stable medians on a quiet machine, small enough for ~15 minutes in all
FULL = {
    "shapes": ((1, 128), (32, 128), (8, 512)),
    "repeats": {(1, 128): 6, (32, 128): 7, (8, 512): 7},  # rounds: one request per contender each
    "inner": {(1, 128): 5},  # back-to-back timed forwards per request (after one untimed)
    "warmup": 2,
    "gemm_n": 2048,
    "quiet_wait_s": 10.0,  # per timed run, waiting for other work on the machine to end
    "quiet_budget_s": 240.0,  # in all, for the inference part (a quarter of it for loading)
    "loading_repeats": 3,
    "pipelines_repeats": 3,
    "pipeline_limit": None,
    "accuracy_repeats": 1,
    "tokenizer_repeats": 10,
    "training": bench_training.FULL_SETTINGS,
    "distributed": "moderate",
}
SMOKE = {
    "shapes": ((1, 16), (4, 32)),
    "repeats": 1,
    "inner": {(1, 16): 2},
    "warmup": 1,
    "gemm_n": 256,
    "quiet_wait_s": 0.0,
    "quiet_budget_s": 0.0,
    "loading_repeats": 1,
    "pipelines_repeats": 1,
    "pipeline_limit": 16,
    "accuracy_repeats": 1,
    "tokenizer_repeats": 1,
    "training": bench_training.QUICK_SETTINGS,
    "distributed": "quick",
}


def make_checkpoint(folder: Path, config_kwargs: dict[str, Any], tokenizer: Path) -> Path:
    """A seeded random ``DistilBertForSequenceClassification`` saved by us, with the tokenizer files beside it."""
    import torch

    from distilbert_mf import DistilBertConfig
    from distilbert_mf.torch import DistilBertForSequenceClassification

    torch.manual_seed(0)
    DistilBertForSequenceClassification(DistilBertConfig(**config_kwargs)).save_pretrained(folder)
    for name in TOKENIZER_FILES:
        if (tokenizer / name).is_file():
            shutil.copy(tokenizer / name, folder / name)
    return folder


def default_model(checkpoint: Path) -> tuple[Path, bool]:
    """The packaged default model when installed (``True``), else the random checkpoint (``False``)."""
    from distilbert_mf.models import DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path

    packaged = builtin_path(DEFAULT_TEXT_CLASSIFICATION_MODEL)
    return (packaged, True) if packaged is not None else (checkpoint, False)


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


def _script_json(argv: list[str], json_path: Path, part: str) -> dict[str, Any]:
    """Run a benchmark script that writes ``json_path``; a failure is recorded, not raised."""
    started = time.perf_counter()
    out = run_script([sys.executable, *argv])
    if not json_path.is_file():
        raise RuntimeError(f"{part} benchmark failed (exit code {out.returncode}); see its output above")
    data = json.loads(json_path.read_text(encoding="utf-8"))
    data["exit_code"] = out.returncode  # bench_pipelines exits 1 when predictions differ from transformers'
    data["duration_s"] = time.perf_counter() - started
    return data


def run_parts(args: argparse.Namespace, settings: dict[str, Any], scratch: Path) -> dict[str, Any]:
    """Measure the requested parts; returns ``{part: json}``."""
    from benchmarks.bench_inference import run_inference
    from benchmarks.bench_loading import run_loading
    from distilbert_mf import DistilBertConfig

    config_kwargs = SMOKE_CONFIG if args.smoke else FULL_CONFIG
    checkpoint = make_checkpoint(
        scratch / "checkpoint", config_kwargs, SMOKE_TOKENIZER if args.smoke else FULL_TOKENIZER
    )
    config = DistilBertConfig.from_pretrained(checkpoint)
    workers = [w for w in args.workers.split(",") if w]
    results: dict[str, Any] = {}
    parts = args.parts.split(",")
    onnx_path = scratch / "onnx" / "model.onnx"
    if "onnx" in parts or ("inference" in parts and "onnx" in workers):
        logger.info("part onnx: export and verify")
        argv = ["benchmarks/bench_onnx.py", str(checkpoint), str(onnx_path.parent), "--threads", str(args.threads)]
        out = run_script([sys.executable, *argv])
        if out.returncode != 0:
            raise RuntimeError(f"ONNX export failed (exit code {out.returncode}); see its output above")
        results["onnx"] = json.loads(out.stdout.strip().splitlines()[-1])
    if "inference" in parts:
        logger.info("part inference: workers %s", workers)
        started = time.perf_counter()
        results["inference"] = run_inference(
            str(checkpoint),
            config,
            onnx_path=str(onnx_path) if "onnx" in workers else None,
            workers=workers,
            dtypes=args.dtypes.split(","),
            shapes=settings["shapes"],
            repeats=settings["repeats"],
            inner=settings["inner"],
            warmup=settings["warmup"],
            threads=args.threads,
            gemm_n=settings["gemm_n"],
            quiet_wait_s=settings["quiet_wait_s"],
            quiet_budget_s=settings["quiet_budget_s"],
        )
        results["inference"]["duration_s"] = time.perf_counter() - started
    if "loading" in parts:
        logger.info("part loading")
        started = time.perf_counter()
        contenders = tuple(name for name, worker in LOADING_WORKER.items() if worker in workers)
        results["loading"] = run_loading(
            str(checkpoint),
            contenders=contenders,
            repeats=settings["loading_repeats"],
            threads=args.threads,
            quiet_budget_s=settings["quiet_budget_s"] / 4,
        )
        results["loading"]["duration_s"] = time.perf_counter() - started
    model, packaged = default_model(checkpoint)
    for part, script, note in (
        ("pipelines", "bench_pipelines.py", "packaged default model" if packaged else "random checkpoint of the run"),
        (
            "accuracy",
            "bench_accuracy.py",
            "distilbert-mf/minilm-sst2 (packaged default model)" if packaged else "random checkpoint (no accuracy)",
        ),
    ):
        if part in parts:
            logger.info("part %s: %s", part, model)
            path = scratch / f"{part}.json"
            argv = [f"benchmarks/{script}", "--model", str(model), "--threads", str(args.threads), "--json", str(path)]
            argv += ["--repeats", str(settings[f"{part}_repeats"])]
            if settings["pipeline_limit"]:
                argv += ["--limit", str(settings["pipeline_limit"])]
            results[part] = _script_json(argv, path, part)
            results[part]["model"] = note
    if "export" in parts:
        from distilbert_mf.models import DEFAULT_TEXT_CLASSIFICATION_MODEL

        logger.info("part export: int8 / float32 ONNX Runtime / PyTorch bf16")
        path = scratch / "export.json"
        argv = ["benchmarks/bench_export.py", str(checkpoint), "--threads", str(args.threads), "--json", str(path)]
        argv += ["--accuracy-model", DEFAULT_TEXT_CLASSIFICATION_MODEL] if packaged else []
        argv += ["--smoke", "--limit", str(settings["pipeline_limit"])] if args.smoke else []
        argv += [] if "torch" in workers else ["--no-torch"]
        results["export"] = _script_json(argv, path, "export")
        results["export"]["accuracy_model"] = "distilbert-mf/minilm-sst2 (packaged default model)" if packaged else None
    if "training" in parts:
        logger.info("part training: workers %s", workers)
        results["training"] = bench_training.run_training(
            str(checkpoint),
            config_kwargs=config_kwargs,
            contenders=[name for name, worker in bench_training.CONTENDERS.items() if worker in workers],
            dtypes=args.dtypes.split(","),
            distill_frameworks=[f for f in bench_training.DISTILL_FRAMEWORKS if f in workers],
            threads=args.threads,
            **settings["training"],
        )
    if "distributed" in parts:
        engines = [e for e in bench_distributed.ENGINES for w in workers if e in DISTRIBUTED_ENGINES.get(w, ())]
        logger.info("part distributed: engines %s", engines)
        size = settings["distributed"]
        results["distributed"] = bench_distributed.run_distributed(
            settings=bench_distributed.SETTINGS[size], engines=engines, threads=args.threads, size=size
        )
        results["distributed"]["command"] = f"python -m benchmarks.run --parts {args.parts} --workers {args.workers}"
    if "tokenizers" in parts:
        logger.info("part tokenizers")
        path = scratch / "tokenizers.json"
        argv = ["benchmarks/bench_tokenizers.py", "--repeats", str(settings["tokenizer_repeats"])]
        results["tokenizers"] = _script_json([*argv, "--output", str(path)], path, "tokenizers")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="tiny config, 1 repetition (seconds): checks the code")
    parser.add_argument(
        "--parts",
        default=",".join(DEFAULT_PARTS),
        help=f"comma-separated subset of {','.join(PARTS)} (default: all but {' and '.join(OPT_IN_PARTS)})",
    )
    parser.add_argument("--workers", default=",".join(WORKERS), help="inference workers (frameworks) to run")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--threads", type=int, default=2, help="threads per framework (pinned alike)")
    parser.add_argument(
        "--omp-wait-policy",
        default=None,
        choices=("passive", "active"),
        help="OMP_WAIT_POLICY of every process (default: the OpenMP runtime's). passive: OpenMP threads sleep at "
        "once instead of spinning, which keeps PyTorch from collapsing when other work shares the cores, at a cost",
    )
    parser.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default: results/)")
    parser.add_argument("--page", type=Path, default=None, help="markdown page whose generated block is rewritten")
    parser.add_argument("--chart", type=Path, default=None, help="the PNG chart")
    parser.add_argument("--render-only", action="store_true", help="only re-render the page from the JSON files")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.parts.split(",")) - set(PARTS))
    if unknown:
        parser.error(f"unknown part(s) {unknown}; choose from {list(PARTS)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    out_dir = args.out_dir or (RESULTS / "tmp" if args.smoke else RESULTS)
    page = args.page or (out_dir / "benchmarks.md" if args.smoke else ROOT / "docs" / "benchmarks.md")
    chart = args.chart or (out_dir / "benchmarks.png" if args.smoke else ROOT / "docs" / "img" / "benchmarks.png")
    if not args.render_only:
        pin_threads(args.threads, args.omp_wait_policy)
        os.environ["RAYON_NUM_THREADS"] = str(args.threads)  # the fast tokenizer's thread pool
        machine = machine_info()
        machine.update(
            {
                "load_average_start": machine.pop("load_average"),
                "threads": args.threads,
                "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY", "unset (OpenMP default)"),
                "command": " ".join(["python -m benchmarks.run", *(argv if argv is not None else sys.argv[1:])]),
                "started_utc": time.strftime("%Y-%m-%d %H:%M", time.gmtime()),
                "smoke": args.smoke,
            }
        )
        if machine["load_average_start"][0] > args.threads:
            logger.warning(
                "load average %.2f > %d threads: other work shares the CPU and will slow every contender",
                machine["load_average_start"][0],
                args.threads,
            )
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="distilbert_mf_bench_") as scratch:
            results = run_parts(args, SMOKE if args.smoke else FULL, Path(scratch))
        machine["duration_s"] = time.perf_counter() - started
        machine["load_average_end"] = list(os.getloadavg())
        machine["parts"] = sorted(results)
        for part, data in results.items():
            write_json(out_dir / f"{part}.json", data)
        write_json(out_dir / "machine.json", machine)
    verdicts = report.render(out_dir, page, chart)
    for row in verdicts:
        if row["met"] is not None:
            logger.info("%-60s %8s  %s %s", row["target"], report._fmt(row["measured"], 3), row["goal"], row["met"])
    logger.info("wrote %s and %s from %s", page, chart, out_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
