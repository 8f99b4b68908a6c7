#!/usr/bin/env python
"""Real distillation results in PyTorch, Keras and Flax (issue: distillation, point 5): two experiments.

``sst2`` -- task-specific distillation. For each framework, with the fine-tuning recipe of
``scripts/real_results.py sst2`` (batch 32, lr 1e-4, weight decay 0.01, 6 % warm-up, 64 tokens, seed 42;
``--num-train-epochs`` as given):

1. **distilled**: ``distilbert-mf distill --task text-classification --teacher distilbert-mf/minilm-sst2
   --student-layers 0 2 4``: the embedded 6-layer SST-2 model teaches a 3-layer student built from its layers
   0, 2 and 4 (embeddings and classifier copied), loss 0.5 x KL(teacher/T || student/T) x T^2 + 0.5 x cross-entropy,
   T = 2;
2. **ablation**: ``distilbert-mf train`` of the same 3-layer starting point (the distillation run's
   ``student-init/`` folder) with the same recipe and no teacher;
3. **the teacher** evaluated on the same dev set;
4. **pipeline speed**: the ``text-classification`` pipeline over the 872 SST-2 dev sentences, teacher and student,
   in that framework (one warm-up pass, then the best of ``--repeats`` timed passes); the pipeline's accuracy too.

``general`` -- general distillation at small scale with a real teacher. all-MiniLM-L6-v2 (the built-in
``distilbert-mf/all-minilm-l6-v2``) is a sentence-embedding model without a masked-LM head, so it first gets one: a
short ``distilbert-mf train --task masked-lm`` run in PyTorch on the SST-2 training sentences (one per line; new
``vocab_transform`` / ``vocab_layer_norm``, the projector tied to the word embeddings) gives the teacher. Then, in each
framework, ``distilbert-mf distill`` (masked LM, DistilBERT's triple loss and optimiser) trains a 3-layer student
from its layers 0, 2 and 4 on the same sentences, and a second, short run with dropout off records the first updates
of each framework, to compare them.

Each writes ``benchmarks/results/distill_<experiment>.json`` (one entry per framework, merged with earlier runs of
the same recipe, so frameworks may run in separate processes) and leaves the run folders in ``--runs-dir``::

    python scripts/distillation_results.py sst2                      # every framework
    python scripts/distillation_results.py sst2 --frameworks pt      # one
    python scripts/distillation_results.py general
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
TEACHER = "distilbert-mf/minilm-sst2"
STUDENT_LAYERS = (0, 2, 4)

logger = logging.getLogger("distillation_results")


def _real_results() -> Any:
    """``scripts/real_results.py`` (the SST-2 recipe and the results file helpers live there, once)."""
    spec = importlib.util.spec_from_file_location("real_results", Path(__file__).with_name("real_results.py"))
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def _sst2_rows(path: Path) -> tuple[list[str], list[int]]:
    """The sentences and 0 / 1 labels of an SST-2 TSV file."""
    from distilbert_mf.training import read_records

    records = read_records(path)
    return [str(row["sentence"]) for row in records.rows], [int(row["label"]) for row in records.rows]


def pipeline_speed(model: str, framework: str, texts: list[str], labels: list[int], repeats: int) -> dict[str, Any]:
    """Sentences per second of the text-classification pipeline over ``texts`` (best of ``repeats`` passes after one
    warm-up pass) and its accuracy against ``labels`` (0 NEGATIVE, 1 POSITIVE)."""
    from distilbert_mf import pipeline

    classify = pipeline("text-classification", model=model, framework=framework)
    predictions = classify(texts)  # the warm-up pass (compiles, caches) gives the predictions
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        classify(texts)
        times.append(time.perf_counter() - start)
    names = {"NEGATIVE": 0, "POSITIVE": 1}
    predicted = [names[p["label"]] for p in predictions]
    return {
        "sentences_per_s": len(texts) / min(times),
        "times_s": times,
        "accuracy": sum(int(p == y) for p, y in zip(predicted, labels, strict=True)) / len(labels),
    }


NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}
CURVE_KEYS = ("loss", "loss_ce", "loss_mlm", "loss_cos", "loss_mse", "grad_norm", "learning_rate")


def run_sst2(args: argparse.Namespace, real: Any) -> dict[str, Any]:
    from distilbert_mf.distillation.run import STUDENT_INIT_DIR, DistillationArguments, distill
    from distilbert_mf.training.trainer import TrainingArguments, train

    runs = args.runs_dir / "sst2"
    runs.mkdir(parents=True, exist_ok=True)
    recipe = {key: value for key, value in real.sst2(runs).items() if key != "model"}
    recipe["num_train_epochs"] = args.num_train_epochs
    record = {"teacher": TEACHER, "student_layers": list(STUDENT_LAYERS), **recipe}
    texts, labels = _sst2_rows(Path(recipe["validation_file"]))
    if args.max_eval_samples:
        texts, labels = texts[: args.max_eval_samples], labels[: args.max_eval_samples]
    out = args.out or RESULTS / "distill_sst2.json"
    results = real.results_header("sst2 task-specific distillation, 6 -> 3 layers", record)
    shorten = {"max_steps": args.max_steps, "max_eval_samples": args.max_eval_samples, "overwrite_output_dir": True}
    for framework in args.frameworks.split(","):
        folder = runs / framework
        entry: dict[str, Any] = {}
        start = time.monotonic()
        distilled = distill(
            DistillationArguments(
                output_dir=str(folder / "distilled"),
                framework=framework,
                task="text-classification",
                teacher=TEACHER,
                student_layers=STUDENT_LAYERS,
                **shorten,
                **{key: value for key, value in recipe.items() if key != "task"},
            )
        )
        entry["distilled"] = real.run_summary(distilled, start)
        start = time.monotonic()
        ablation = train(
            TrainingArguments(
                output_dir=str(folder / "ablation"),
                framework=framework,
                model=str(folder / "distilled" / STUDENT_INIT_DIR),
                **shorten,
                **recipe,
            )
        )
        entry["ablation"] = real.run_summary(ablation, start)
        entry["pipeline"] = {
            "teacher": pipeline_speed(TEACHER, framework, texts, labels, args.repeats),
            "student": pipeline_speed(str(folder / "distilled"), framework, texts, labels, args.repeats),
        }
        pipe = entry["pipeline"]
        entry["student_speedup"] = pipe["student"]["sentences_per_s"] / pipe["teacher"]["sentences_per_s"]
        entry["student_minus_teacher_points"] = 100 * (pipe["student"]["accuracy"] - pipe["teacher"]["accuracy"])
        entry["distillation_minus_ablation_points"] = 100 * (
            distilled.eval_metrics["eval_accuracy"] - ablation.eval_metrics["eval_accuracy"]
        )
        entry["threads"] = {k: os.environ[k] for k in real.THREAD_VARIABLES if k in os.environ}
        results["frameworks"][framework] = entry
        results["frameworks"] = real._merged(out, record, results["frameworks"])
        logger.info("%s: %s", framework, json.dumps(entry, default=str))
        real.write_results(out, results)
    return {
        fw: {
            "teacher": r["pipeline"]["teacher"]["accuracy"],
            "distilled": r["distilled"]["eval"].get("eval_accuracy"),
            "ablation": r["ablation"]["eval"].get("eval_accuracy"),
            "speedup": r["student_speedup"],
        }
        for fw, r in results["frameworks"].items()
    }


def _corpus(path: Path, source: Path, limit: int | None = None) -> Path:
    """The sentences of an SST-2 TSV file, one per line (a text corpus for masked LM)."""
    texts, _ = _sst2_rows(source)
    path.write_text("\n".join(t.strip() for t in texts[:limit]) + "\n", encoding="utf-8")
    return path


def _log_every(steps: int) -> int:
    """Log about 20 points of a run (every update of a short one)."""
    return max(1, steps // 20)


def _curve(output: Any) -> list[dict[str, float]]:
    return [{k: e[k] for k in CURVE_KEYS if k in e} for e in output.log_history if "loss" in e]


def _window_means(curve: list[dict[str, float]], size: int) -> tuple[dict[str, float], dict[str, float]]:
    """Means of each loss over the first and the last ``size`` logged entries."""
    keys = [k for k in curve[0] if k.startswith("loss")]

    def mean(rows: list[dict[str, float]]) -> dict[str, float]:
        return {k: sum(r[k] for r in rows) / len(rows) for k in keys}

    return mean(curve[:size]), mean(curve[-size:])


def agreement(curves: dict[str, list[dict[str, float]]]) -> dict[str, Any]:
    """The largest differences between every pair of frameworks' curves: relative to the value itself, and for the
    loss components relative to the larger of the component and the step's total (the parity suite's rule)."""
    pairs = {}
    names = list(curves)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            worst_self: dict[str, float] = {}
            worst_rule = 0.0
            for x, y in zip(curves[a], curves[b], strict=True):
                for key in x:
                    diff = abs(x[key] - y[key])
                    worst_self[key] = max(worst_self.get(key, 0.0), diff / max(abs(y[key]), 1e-12))
                    scale = max(abs(y[key]), abs(y["loss"])) if key.startswith("loss_") else abs(y[key])
                    worst_rule = max(worst_rule, diff / max(scale, 1e-12))
            pairs[f"{a}-{b}"] = {"max_relative_per_key": worst_self, "max_relative_parity_rule": worst_rule}
    return pairs


def run_general(args: argparse.Namespace, real: Any) -> dict[str, Any]:
    from distilbert_mf.distillation.run import DistillationArguments, distill
    from distilbert_mf.training.trainer import TrainingArguments, train

    runs = args.runs_dir / "general"
    runs.mkdir(parents=True, exist_ok=True)
    sst2 = real.DATA / "glue_sst2"
    corpus = _corpus(runs / "corpus.txt", sst2 / "train.tsv")
    held_out = _corpus(runs / "dev-corpus.txt", sst2 / "dev.tsv", args.max_eval_samples)
    common = {"max_seq_length": 64, "per_device_train_batch_size": 32, "per_device_eval_batch_size": 64, "seed": 42}
    adaptation = {
        "task": "masked-lm",
        "model": real.BASE_MODEL,
        "learning_rate": 2e-4,
        "warmup_ratio": 0.06,
        "weight_decay": 0.01,
        "max_steps": args.adapt_steps,
        "logging_steps": 25,
        **common,
    }
    record = {
        "corpus": "GLUE SST-2 train sentences, one per line; held out: SST-2 dev sentences",
        "teacher_adaptation": {**adaptation, "framework": "pt"},
        "student_layers": list(STUDENT_LAYERS),
        "distillation": {"max_steps": args.steps, "logging_steps": _log_every(args.steps), **common},
        "parity": {"max_steps": args.parity_steps, "config_overrides": NO_DROPOUT},
    }
    out = args.out or RESULTS / "distill_general.json"
    results = real.results_header("general distillation (masked LM, triple loss), 6 -> 3 layers", record)
    teacher = runs / "teacher-mlm"
    start = time.monotonic()
    adapted = train(
        TrainingArguments(
            output_dir=str(teacher),
            framework="pt",
            train_file=str(corpus),
            validation_file=str(held_out),
            overwrite_output_dir=True,
            save_strategy="no",
            **adaptation,
        )
    )
    results["teacher"] = real.run_summary(adapted, start)
    logger.info("teacher adapted: %s", adapted.eval_metrics)
    distill_options = {
        "task": "masked-lm",
        "teacher": str(teacher),
        "student_layers": STUDENT_LAYERS,
        "train_file": str(corpus),
        "overwrite_output_dir": True,
        **common,
    }
    for framework in args.frameworks.split(","):
        start = time.monotonic()
        output = distill(
            DistillationArguments(
                output_dir=str(runs / framework / "student"),
                framework=framework,
                validation_file=str(held_out),
                max_steps=args.steps,
                logging_steps=_log_every(args.steps),
                save_strategy="no",
                **distill_options,
            )
        )
        curve = _curve(output)
        first, last = _window_means(curve, 3)
        entry = {**real.run_summary(output, start), "curve": curve, "first_logs_mean": first, "last_logs_mean": last}
        entry["cosine_alignment"] = {"first": 1 - first["loss_cos"], "last": 1 - last["loss_cos"]}
        start = time.monotonic()
        no_dropout = distill(
            DistillationArguments(
                output_dir=str(runs / framework / "no-dropout"),
                framework=framework,
                max_steps=args.parity_steps,
                logging_steps=1,
                save_strategy="no",
                config_overrides=dict(NO_DROPOUT),
                **distill_options,
            )
        )
        entry["no_dropout"] = {"curve": _curve(no_dropout), "minutes": round((time.monotonic() - start) / 60, 1)}
        results["frameworks"][framework] = entry
        results["frameworks"] = real._merged(out, record, results["frameworks"])
        logger.info("%s: first %s last %s", framework, first, last)
        real.write_results(out, results)
    every = {fw: r["no_dropout"]["curve"] for fw, r in results["frameworks"].items()}
    results["no_dropout_agreement"] = agreement(every) if len(every) > 1 else {}
    real.write_results(out, results)
    return {
        fw: {"first": r["first_logs_mean"], "last": r["last_logs_mean"], "cosine": r["cosine_alignment"]}
        for fw, r in results["frameworks"].items()
    } | {"agreement": results["no_dropout_agreement"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment", choices=("sst2", "general"))
    parser.add_argument("--frameworks", default="pt,tf,flax", help="comma-separated, in order (default pt,tf,flax)")
    parser.add_argument("--runs-dir", type=Path, default=ROOT / "runs" / "distill", help="where the run folders go")
    parser.add_argument("--num-train-epochs", type=float, default=2.0, help="sst2: epochs of both runs (default 2)")
    parser.add_argument("--max-steps", type=int, default=-1, help="sst2: cut both runs short (a smoke run)")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="evaluate on fewer rows (a smoke run)")
    parser.add_argument("--repeats", type=int, default=3, help="sst2: timed pipeline passes (default 3)")
    parser.add_argument("--adapt-steps", type=int, default=400, help="general: the teacher's masked-LM updates")
    parser.add_argument("--steps", type=int, default=200, help="general: distillation updates per framework")
    parser.add_argument("--parity-steps", type=int, default=10, help="general: updates of the dropout-off runs")
    parser.add_argument("--out", type=Path, default=None, help="results JSON (default benchmarks/results/...)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    real = _real_results()
    summary = run_sst2(args, real) if args.experiment == "sst2" else run_general(args, real)
    print(json.dumps(summary, indent=2))  # noqa: T201
    return 0


if __name__ == "__main__":
    sys.exit(main())
