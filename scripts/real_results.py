#!/usr/bin/env python
"""Real fine-tuning results in PyTorch, Keras and Flax with one recipe each (issue: fine-tuning, point 6).

Each experiment trains the same starting model with the same ``TrainingArguments`` in every framework through
:func:`distilbert_mf.training.trainer.train` (what ``distilbert-mf train`` runs) and writes
``benchmarks/results/finetune_<experiment>.json``: the metrics per framework, the arguments, the machine and the
time taken. The trained model folders land in ``--runs-dir`` (each loads in every framework and in transformers).

- ``sst2``: the converted all-MiniLM-L6-v2 (``distilbert-mf/all-minilm-l6-v2``, built in) on GLUE SST-2 train, dev
  accuracy (the recipe of the embedded ``distilbert-mf/minilm-sst2``: 2 epochs, batch 32, lr 1e-4, max length 64).
- ``conll``: token classification on ``../shared/data/conll2003`` — 2,700 sentences of the CoNLL-2003 *test* set,
  split into contiguous blocks: the first 80 % to train on, the last 20 % to evaluate (entity-level F1, seqeval's
  definition). These are parts of an evaluation set, not the CoNLL-2003 benchmark protocol.
- ``squad``: question answering on ``../shared/data/squad`` — 40 articles of the SQuAD v1.1 *dev* set, split by
  article: the first 32 to train on, the last 8 to evaluate (exact match / F1). Again part of an evaluation set.
  One epoch of 192-token windows (stride 64): 17 to 28 minutes per framework on 2 shared CPU cores (two epochs of
  256-token windows, 1,034 updates, took 3 s per update there, too long for three frameworks).

One command each (about 25 min per framework for sst2 on 2 idle CPU cores; pass ``--frameworks`` to run fewer)::

    python scripts/real_results.py sst2
    python scripts/real_results.py conll
    python scripts/real_results.py squad
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
BASE_MODEL = "distilbert-mf/all-minilm-l6-v2"

logger = logging.getLogger("real_results")


def sst2(runs: Path) -> dict[str, Any]:
    return {
        "task": "text-classification",
        "model": BASE_MODEL,
        "train_file": str(DATA / "glue_sst2" / "train.tsv"),
        "validation_file": str(DATA / "glue_sst2" / "dev.tsv"),
        "text_column": "sentence",
        "label_column": "label",
        "label_names": ("NEGATIVE", "POSITIVE"),
        "num_train_epochs": 2.0,
        "per_device_train_batch_size": 32,
        "per_device_eval_batch_size": 64,
        "learning_rate": 1e-4,
        "weight_decay": 0.01,
        "warmup_ratio": 0.06,
        "max_seq_length": 64,
        "logging_steps": 50,
        "save_steps": 1000,
        "save_total_limit": 1,
    }


def _split_conll(folder: Path) -> tuple[Path, Path]:
    """The CoNLL file cut by sentences (blank-line separated) into its first 80 % and last 20 %."""
    from distilbert_mf.training import read_records, split_records

    source = DATA / "conll2003" / "test-sentences-0000-2699.txt"
    records = read_records(source, format="conll")
    train, evaluation = split_records(records, [0.8, 0.2])
    paths = []
    for name, block in (("train.jsonl", train), ("eval.jsonl", evaluation)):
        path = folder / name
        with path.open("w", encoding="utf-8") as out:
            for row in block.rows:
                out.write(json.dumps({"tokens": row["tokens"], "ner_tags": row["ner_tags"]}) + "\n")
        paths.append(path)
    logger.info("CoNLL split: %d training and %d evaluation sentences", len(train), len(evaluation))
    return paths[0], paths[1]


def conll(runs: Path) -> dict[str, Any]:
    train_file, eval_file = _split_conll(runs)
    return {
        "task": "token-classification",
        "model": BASE_MODEL,
        "train_file": str(train_file),
        "validation_file": str(eval_file),
        "tags_column": "ner_tags",
        "num_train_epochs": 3.0,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 64,
        "learning_rate": 1e-4,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "max_seq_length": 128,
        "logging_steps": 20,
        "save_steps": 1000,
        "save_total_limit": 1,
    }


def _split_squad(folder: Path) -> tuple[Path, Path]:
    """The 40 SQuAD articles: the first 32 for training, the last 8 for evaluation (SQuAD JSON each)."""
    data = json.loads((DATA / "squad" / "dev-v1.1-articles-00-39.json").read_text(encoding="utf-8"))
    articles = data["data"]
    paths = []
    for name, block in (("train.json", articles[:32]), ("eval.json", articles[32:])):
        path = folder / name
        path.write_text(json.dumps({"version": data.get("version", "1.1"), "data": block}), encoding="utf-8")
        paths.append(path)
    logger.info("SQuAD split: %d training and %d evaluation articles", 32, len(articles) - 32)
    return paths[0], paths[1]


def squad(runs: Path) -> dict[str, Any]:
    train_file, eval_file = _split_squad(runs)
    return {
        "task": "question-answering",
        "model": BASE_MODEL,
        "train_file": str(train_file),
        "validation_file": str(eval_file),
        "num_train_epochs": 1.0,
        "per_device_train_batch_size": 16,
        "per_device_eval_batch_size": 32,
        "learning_rate": 1e-4,
        "weight_decay": 0.01,
        "warmup_ratio": 0.1,
        "max_seq_length": 192,
        "doc_stride": 64,
        "logging_steps": 20,
        "save_steps": 1000,
        "save_total_limit": 1,
    }


EXPERIMENTS = {"sst2": sst2, "conll": conll, "squad": squad}
THREAD_VARIABLES = ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "XLA_FLAGS")


def results_header(experiment: str, recipe: dict[str, Any]) -> dict[str, Any]:
    """The top of a results file: the experiment, its recipe, the machine; ``frameworks`` filled per run."""
    return {
        "experiment": experiment,
        "recipe": recipe,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "frameworks": {},
    }


def run_summary(output: Any, start: float) -> dict[str, Any]:
    """One run's entry: its final evaluation, mean training loss, updates and wall minutes since ``start``."""
    return {
        "eval": output.eval_metrics,
        "train_loss": output.training_loss,
        "global_step": output.global_step,
        "minutes": round((time.monotonic() - start) / 60, 1),
    }


def write_results(out: Path, results: dict[str, Any]) -> None:
    """Write ``results`` to ``out`` atomically (after each framework, so a stopped run keeps the earlier ones)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_suffix(".json.partial")
    partial.write_text(json.dumps(results, indent=2, default=str) + "\n", encoding="utf-8")
    partial.replace(out)


def _merged(out: Path, recipe: dict[str, Any], frameworks: dict[str, Any]) -> dict[str, Any]:
    """``frameworks`` over those already in ``out`` from a run of the same recipe (one process per framework may
    run at the same time; each adds its own)."""
    if not out.is_file():
        return frameworks
    earlier = json.loads(out.read_text(encoding="utf-8"))
    if json.dumps(earlier.get("recipe"), default=str) != json.dumps(recipe, default=str):
        return frameworks
    return {**earlier.get("frameworks", {}), **frameworks}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=sorted(EXPERIMENTS))
    parser.add_argument("--frameworks", default="pt,tf,flax", help="comma-separated, in order (default pt,tf,flax)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "real", help="where the run folders go")
    parser.add_argument("--max-steps", type=int, default=-1, help="cut every run short (a smoke run)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on fewer rows (a smoke run)")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from distilbert_mf.training.trainer import TrainingArguments, train

    runs = args.runs_dir / args.experiment
    runs.mkdir(parents=True, exist_ok=True)
    recipe = EXPERIMENTS[args.experiment](runs)
    results = results_header(args.experiment, recipe)
    out = args.out or RESULTS / f"finetune_{args.experiment}.json"
    for framework in args.frameworks.split(","):
        start = time.monotonic()
        output = train(
            TrainingArguments(
                output_dir=str(runs / framework),
                framework=framework,
                max_steps=args.max_steps,
                max_eval_samples=args.max_eval_samples,
                overwrite_output_dir=True,
                **recipe,
            )
        )
        results["frameworks"][framework] = {
            **run_summary(output, start),
            "threads": {k: os.environ[k] for k in THREAD_VARIABLES if k in os.environ},
        }
        results["frameworks"] = _merged(out, recipe, results["frameworks"])
        logger.info("%s %s: %s", args.experiment, framework, output.eval_metrics)
        write_results(out, results)
    print(json.dumps({fw: r["eval"] for fw, r in results["frameworks"].items()}, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
