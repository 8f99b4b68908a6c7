"""bfloat16 vs float32: SST-2 dev accuracy and speed of our text-classification pipeline on the default model.

Runs ``pipeline("text-classification", model, framework=..., dtype=D)`` for D in float32 and bfloat16 over every
SST-2 dev sentence (one warm-up call on a few sentences first), in rotating order for ``--repeats`` rounds: the
accuracy against the gold labels, the agreement of the two dtypes' predicted labels, and the median wall time.
Gold label 1 is the label named POSITIVE (or the model's label id 1 when the names are not NEGATIVE/POSITIVE).

    python benchmarks/bench_accuracy.py                     # the packaged default model, PyTorch
    python benchmarks/bench_accuracy.py --model FOLDER --framework flax --json out.json
"""

from __future__ import annotations

import argparse
import csv
import logging
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import SHARED, emit_json, median, pin_threads, rotate

logger = logging.getLogger("benchmarks.accuracy")

DTYPES = ("float32", "bfloat16")


def sst2_dev(path: Path, limit: int | None = None) -> tuple[list[str], list[int]]:
    """Sentences and gold labels (0 negative, 1 positive) of an SST-2 tsv file."""
    with open(path, encoding="utf-8", newline="") as handle:
        rows = list(csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))[:limit]
    return [row["sentence"] for row in rows], [int(row["label"]) for row in rows]


def gold_names(id2label: dict[int, str]) -> dict[int, str]:
    """Gold label id -> the model's label name."""
    names = {name.upper(): name for name in id2label.values()}
    if "NEGATIVE" in names and "POSITIVE" in names:
        return {0: names["NEGATIVE"], 1: names["POSITIVE"]}
    return {0: id2label[0], 1: id2label[1]}


def run_accuracy(
    model: str, *, framework: str = "pt", repeats: int = 1, limit: int | None = None, batch_size: int = 32
) -> dict[str, Any]:
    """Accuracy, label agreement and median seconds of the pipeline in float32 and bfloat16."""
    from distilbert_mf import pipeline

    sentences, gold = sst2_dev(SHARED / "glue_sst2" / "dev.tsv", limit)
    pipes = {
        dtype: pipeline("text-classification", model, framework=framework, dtype=dtype, batch_size=batch_size)
        for dtype in DTYPES
    }
    for pipe in pipes.values():
        pipe(sentences[:8])  # warm-up: lazy initialisation, jit compilation of the first shapes
    predictions: dict[str, list[str]] = {}
    seconds: dict[str, list[float]] = {dtype: [] for dtype in DTYPES}
    for round_index in range(repeats):
        for dtype in rotate(list(DTYPES), round_index):
            start = time.perf_counter()
            outputs = pipes[dtype](sentences)
            seconds[dtype].append(time.perf_counter() - start)
            predictions[dtype] = [out["label"] for out in outputs]
    id2label = {int(k): v for k, v in pipes["float32"].config.id2label.items()}
    names = gold_names(id2label)
    result: dict[str, Any] = {
        "model": str(model),
        "framework": framework,
        "sentences": len(sentences),
        "batch_size": batch_size,
        "repeats": repeats,
    }
    for dtype in DTYPES:
        correct = sum(p == names[g] for p, g in zip(predictions[dtype], gold))
        result[dtype] = {
            "accuracy": correct / len(gold),
            "correct": correct,
            "median_seconds": median(seconds[dtype]),
            "seconds": seconds[dtype],
            "sentences_per_second": len(sentences) / median(seconds[dtype]),
        }
    result["accuracy_drop_points"] = 100 * (result["float32"]["accuracy"] - result["bfloat16"]["accuracy"])
    result["label_agreement"] = sum(a == b for a, b in zip(predictions["float32"], predictions["bfloat16"])) / len(gold)
    result["bf16_speedup"] = result["float32"]["median_seconds"] / result["bfloat16"]["median_seconds"]
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=None, help="checkpoint folder or short name (default: the packaged model)")
    parser.add_argument("--framework", default="pt", choices=("pt", "tf", "flax"))
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--limit", type=int, default=None, help="only the first N sentences")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.framework == "pt":
        import torch

        torch.set_num_threads(args.threads)
    from distilbert_mf.models import DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path

    model = args.model or DEFAULT_TEXT_CLASSIFICATION_MODEL
    if args.model is None and builtin_path(model) is None:
        raise FileNotFoundError(f"the packaged default model {model} is not installed; pass --model FOLDER")
    result = run_accuracy(model, framework=args.framework, repeats=args.repeats, limit=args.limit)
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
