#!/usr/bin/env python
"""Package a run of ``examples/train_sentiment.py`` (``distilbert-mf train``) as the embedded default model.

Writes ``--dest`` (default ``distilbert_mf/models/minilm-sst2/``, the folder behind the short name
``distilbert-mf/minilm-sst2``): ``config.json`` (id2label NEGATIVE/POSITIVE), ``model.safetensors`` in bfloat16, the
tokenizer files and a ``README.md`` model card that records the training command. The card's dev accuracies are
measured here, on the packaged folder, with the text-classification pipeline in every installed framework (float32
compute, and the checkpoint's bfloat16). The run folder is the trainer's: ``config.json``, ``model.safetensors``, the
tokenizer files, ``trainer_state.json``, ``eval_results.json``, and the script's ``recipe.json``.

Usage::

    python examples/package_default_model.py runs/minilm-sst2 [--dest DIR] [--overwrite] [--frameworks pt,tf]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "distilbert_mf" / "models" / "minilm-sst2"
SHORT_NAME = "distilbert-mf/minilm-sst2"
EXAMPLE = "I love using Hugging Face Transformers!"
FRAMEWORK_NAMES = {"pt": "PyTorch", "tf": "TensorFlow (Keras 3)", "flax": "Flax NNX"}
PATH_FLAGS = ("--train-file", "--validation-file", "--output-dir")  # machine-specific: left out of the table
# optimiser and batching fields the recipe leaves at the TrainingArguments defaults, listed in the card too
DEFAULTS_SHOWN = ("adam_beta1", "adam_beta2", "adam_epsilon", "max_grad_norm", "group_by_length", "bf16")

logger = logging.getLogger("package_default_model")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_sentiment import DATA_DIR, LABELS, RECIPE_NAME, read_tsv  # noqa: E402  (the recipe's data, labels, record)


def dev_accuracy(
    folder: Path, framework: str, dtype: str | None, data_dir: Path, limit: int | None = None
) -> dict[str, Any]:
    """The text-classification pipeline on the dev sentences (the first ``limit``): accuracy and the labels."""
    from distilbert_mf import pipeline

    sentences, labels = read_tsv(data_dir / "dev.tsv", limit)
    classifier = pipeline("text-classification", model=str(folder), framework=framework, dtype=dtype, batch_size=64)
    started = time.perf_counter()
    predicted = [result[0]["label"] for result in classifier.each(sentences)]
    seconds = time.perf_counter() - started
    correct = sum(p == LABELS[int(y)] for p, y in zip(predicted, labels))
    example = classifier(EXAMPLE)[0]
    return {
        "framework": framework,
        "dtype": dtype,
        "accuracy": correct / len(labels),
        "correct": correct,
        "total": len(labels),
        "seconds": round(seconds, 1),
        "predictions": predicted,
        "example": example,
    }


def flag_values(argv: Sequence[str]) -> dict[str, list[str]]:
    """``["train", "--seed", "42", "--label-names", "A", "B", "--bf16"]`` -> ``{"--seed": ["42"], "--label-names":
    ["A", "B"], "--bf16": []}``; a flag given twice keeps its last values, as argparse does."""
    values: dict[str, list[str]] = {}
    current: list[str] | None = None
    for word in argv:
        if word.startswith("--"):
            flag, sep, value = word.partition("=")
            values.pop(flag, None)  # the last occurrence wins, and keeps its place at the end
            current = values.setdefault(flag, [])
            if sep:
                current.append(value)
        elif current is not None:
            current.append(word)
    return values


def hyperparameters(recipe: dict[str, Any]) -> list[tuple[str, str]]:
    """(TrainingArguments name, value) of every option of the recorded command, and of the defaults it relies on."""
    from distilbert_mf.training.trainer import TrainingArguments

    flags = flag_values(recipe["argv"])
    rows = [("framework", recipe["framework"]), ("model", str(recipe["base_model"]))]
    for flag, values in flags.items():
        if flag in (*PATH_FLAGS, "--model", "--framework"):
            continue
        rows.append((flag[2:].replace("-", "_"), " ".join(values) if values else "True"))
    given = {name for name, _ in rows}
    defaults = {f.name: f.default for f in dataclasses.fields(TrainingArguments)}
    rows += [(name, str(defaults[name])) for name in DEFAULTS_SHOWN if name not in given]
    return rows


def training_rows(recipe: dict[str, Any]) -> int:
    """The number of training sentences the recorded command used (its train file, cut by --max-train-samples)."""
    flags = flag_values(recipe["argv"])
    limit = flags.get("--max-train-samples")
    sentences, _ = read_tsv(flags["--train-file"][0], int(limit[0]) if limit else None)
    return len(sentences)


def model_card(run: dict[str, Any], evaluations: list[dict[str, Any]]) -> str:
    """The README.md of the packaged folder, filled from the run's files and the measurements."""
    recipe, state, eval_results = run["recipe"], run["trainer_state"], run["eval_results"]
    rows = "\n".join(
        f"| {FRAMEWORK_NAMES[e['framework']]} | {e['dtype']} | {100 * e['accuracy']:.2f}% ({e['correct']}/{e['total']}) |"
        for e in evaluations
    )
    agree: dict[str, list[list[str]]] = {e["dtype"]: [] for e in evaluations}
    for e in evaluations:
        agree[e["dtype"]].append(e["predictions"])
    identical = ", ".join(
        f"{dtype}: {'identical' if all(p == preds[0] for p in preds) else 'NOT identical'} across {len(preds)} framework(s)"
        for dtype, preds in agree.items()
    )
    table = "\n".join(f"| `{name}` | `{value}` |" for name, value in hyperparameters(recipe))
    example = evaluations[0]["example"]
    example = f"[{{'label': '{example['label']}', 'score': {example['score']:.4f}}}]"
    summary = next((e for e in reversed(state["log_history"]) if "train_runtime" in e), {})
    minutes = summary.get("train_runtime", 0.0) / 60
    command, framework = recipe["command"], recipe["framework"]
    versions = recipe["versions"]
    stack = ", ".join(f"{k} {v}" for k, v in versions.items() if k not in ("machine", "distilbert-mf"))
    threads = f", {recipe['threads']} thread(s)" if recipe.get("threads") else ""
    train_rows = training_rows(recipe)
    dev_total = evaluations[0]["total"]
    dev_note = f"the first {dev_total} of its 872 sentences" if dev_total != 872 else "872 sentences"
    return f"""---
language: en
license: apache-2.0
library_name: distilbert_mf
base_model: sentence-transformers/all-MiniLM-L6-v2
datasets:
- glue
pipeline_tag: text-classification
metrics:
- accuracy
---

# {SHORT_NAME}

A small English sentiment classifier (NEGATIVE / POSITIVE) shipped inside `distilbert_mf`, so that
`pipeline("text-classification")` and `distilbert-mf run --task text-classification` work offline out of the box.
DistilBERT architecture: 6 layers, hidden size 384, 12 heads, feed-forward 1536, 22.7M parameters, stored in
bfloat16 (about 45 MB).

```python
from distilbert_mf import pipeline

classifier = pipeline("text-classification")  # this model; or model="{SHORT_NAME}"
classifier("{EXAMPLE}")
# {example}
```

## Origin and license

- Base model: [sentence-transformers/all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2)
  (Apache-2.0), itself from `nreimers/MiniLM-L6-H384-uncased` (Microsoft MiniLM). It is a BERT; it was converted
  exactly into the DistilBERT architecture (`distilbert-mf/all-minilm-l6-v2`: token type embedding 0 folded into the
  position embeddings, pooler dropped), then fine-tuned with a new classification head.
- Fine-tuning data: GLUE SST-2 (Stanford Sentiment Treebank, binary), {train_rows:,} sentences of `train.tsv`.
- This model is released under Apache-2.0, as its base model.

## Training

`{command}`

(`examples/train_sentiment.py` in this repository runs it), then
`python examples/package_default_model.py RUN_DIR`: the {FRAMEWORK_NAMES[framework]} loop of `distilbert-mf train`,
AdamW, linear warm-up then linear decay, length-grouped batches, seeded (the same machine, thread count and
library versions give the same weights). {state["global_step"]} updates in {minutes:.1f} minutes on
{versions["machine"]}{threads} ({stack}); dev accuracy at the end of training
{100 * eval_results["eval_accuracy"]:.2f}% (float32 weights); the weights were then cast to bfloat16.

| hyperparameter | value |
| --- | --- |
{table}

## Evaluation

GLUE SST-2 dev set (`dev.tsv`, {dev_note}), measured on this packaged folder with the text-classification
pipeline in each framework; predictions {identical}.

| framework | compute dtype | dev accuracy |
| --- | --- | --- |
{rows}

For reference, `distilbert-base-uncased-finetuned-sst-2-english` (66M parameters, 3x larger) scores 91.06%
(794/872) on the full dev file.

## Intended use and limits

- Intended for demonstrations, smoke tests and offline defaults: binary sentiment of short English texts
  (movie-review style sentences, product opinions, social media posts).
- Only two labels: neutral or mixed texts are forced into NEGATIVE or POSITIVE, often with a high score; the score
  is a softmax, not a calibrated probability.
- Trained on movie reviews only; expect lower accuracy on other domains, on sarcasm, on negation-heavy or very long
  texts (inputs were at most 64 tokens in training; the model reads up to 512) and on other languages (uncased
  English WordPiece vocabulary).
- It inherits the biases of its pretraining data (see the base model's card) and of SST-2; do not use it for
  decisions about people.
"""


def read_run(run_dir: Path) -> dict[str, Any]:
    """The files of a finished run that the card needs (each missing one named)."""
    files = {"recipe": RECIPE_NAME, "trainer_state": "trainer_state.json", "eval_results": "eval_results.json"}
    run = {}
    for key, name in files.items():
        path = run_dir / name
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: pass the --output-dir of a finished examples/train_sentiment.py run"
            )
        run[key] = json.loads(path.read_text(encoding="utf-8"))
    return run


def package(
    run_dir: Path,
    dest: Path,
    data_dir: Path,
    *,
    overwrite: bool,
    frameworks: Sequence[str] | None = None,
    dev_limit: int | None = None,
) -> dict[str, Any]:
    """Cast, copy, evaluate in ``frameworks`` (default: every installed one), write the card; ``dest`` appears in
    one rename."""
    from distilbert_mf import convert
    from distilbert_mf.frameworks import available_frameworks

    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass --overwrite to replace it")
    run = read_run(run_dir)
    staging = dest.parent / f".{dest.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    convert(run_dir, staging, formats=["safetensors"], dtype="bfloat16")
    config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    if config.get("id2label") != {str(k): v for k, v in LABELS.items()}:
        raise ValueError(f"the trained model's id2label is {config.get('id2label')}, expected {LABELS}")
    # the classifier reads what its positions allow (512); the base's 256 is sentence-transformers' embedding cut
    tokenizer_config = staging / "tokenizer_config.json"
    settings = json.loads(tokenizer_config.read_text(encoding="utf-8"))
    settings["model_max_length"] = config["max_position_embeddings"]
    tokenizer_config.write_text(json.dumps(settings, indent=2) + "\n", encoding="utf-8")

    evaluations = []
    for framework in frameworks or available_frameworks():
        for dtype in ("float32", "bfloat16"):
            result = dev_accuracy(staging, framework, dtype, data_dir, dev_limit)
            logger.info(
                "%s %s: dev accuracy %.4f (%d/%d) in %.1f s; %r -> %s",
                framework,
                result["dtype"],
                result["accuracy"],
                result["correct"],
                result["total"],
                result["seconds"],
                EXAMPLE,
                result["example"],
            )
            evaluations.append(result)
    (staging / "README.md").write_text(model_card(run, evaluations), encoding="utf-8")
    for path in staging.iterdir():
        path.chmod(0o644)  # package data: readable by everyone
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    summary = {f"{e['framework']}/{e['dtype']}": e["accuracy"] for e in evaluations}
    (run_dir / "package_metrics.json").write_text(
        json.dumps([{k: v for k, v in e.items() if k != "predictions"} for e in evaluations], indent=2) + "\n"
    )
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="--output-dir of train_sentiment.py (the trainer's run folder)")
    parser.add_argument("--dest", type=Path, default=DEST, help=f"default: {DEST}")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help=f"holds dev.tsv (default {DATA_DIR})")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    parser.add_argument("--frameworks", help="comma-separated frameworks to measure (default: every installed one)")
    parser.add_argument("--dev-limit", type=int, help="measure on the first N dev sentences only (a smoke run)")
    args = parser.parse_args(argv)
    if args.dev_limit is not None and args.dev_limit < 1:
        parser.error(f"--dev-limit must be at least 1, got {args.dev_limit}")
    frameworks = args.frameworks.split(",") if args.frameworks else None
    unknown = sorted(set(frameworks or ()) - set(FRAMEWORK_NAMES))
    if unknown:
        parser.error(f"--frameworks takes {', '.join(FRAMEWORK_NAMES)}; got {', '.join(unknown)}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = package(
        args.run_dir,
        args.dest,
        args.data_dir,
        overwrite=args.overwrite,
        frameworks=frameworks,
        dev_limit=args.dev_limit,
    )
    logger.info("packaged %s: %s", args.dest, json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
