#!/usr/bin/env python
"""Package a model trained by ``examples/train_sentiment.py`` as the embedded default model.

Writes ``distilbert_mf/models/minilm-sst2/`` (the folder behind the short name ``distilbert-mf/minilm-sst2``):
``config.json`` (id2label NEGATIVE/POSITIVE), ``model.safetensors`` in bfloat16, the tokenizer files and a
``README.md`` model card. The card's dev accuracies are measured here, on the packaged folder, with the text-
classification pipeline in every installed framework (float32 compute, and the checkpoint's bfloat16).

Usage::

    python examples/package_default_model.py runs/minilm-sst2 [--dest distilbert_mf/models/minilm-sst2] [--overwrite]
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
PATH_ARGS = ("base_model", "data_dir", "output_dir")  # machine-specific, left out of the card's command
FRAMEWORK_NAMES = {"pt": "PyTorch", "tf": "TensorFlow (Keras 3)", "flax": "Flax NNX"}

logger = logging.getLogger("package_default_model")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_sentiment import LABELS, TrainingArgs, read_tsv  # noqa: E402  (the recipe's own reader and labels)


def dev_accuracy(folder: Path, framework: str, dtype: str | None, data_dir: Path) -> dict[str, Any]:
    """The text-classification pipeline on every dev sentence: accuracy and the predicted labels."""
    from distilbert_mf import pipeline

    sentences, labels = read_tsv(data_dir / "dev.tsv")
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


def _flag(item: tuple[str, Any]) -> str:
    """``("bf16", True)`` -> ``--bf16``; ``("threads", 1)`` -> ``--threads 1``."""
    name, value = item[0].replace("_", "-"), item[1]
    if isinstance(value, bool):
        return f"--{name}" if value else f"--no-{name}"
    return f"--{name} {value}"


def model_card(training_args: dict[str, Any], metrics: dict[str, Any], evaluations: list[dict[str, Any]]) -> str:
    """The README.md of the packaged folder, filled from the run's files and the measurements."""
    rows = "\n".join(
        f"| {FRAMEWORK_NAMES[e['framework']]} | {e['dtype']} | {100 * e['accuracy']:.2f}% ({e['correct']}/{e['total']}) |"
        for e in evaluations
    )
    agree = {e["dtype"]: [] for e in evaluations}
    for e in evaluations:
        agree[e["dtype"]].append(e["predictions"])
    identical = ", ".join(
        f"{dtype}: {'identical' if all(p == preds[0] for p in preds) else 'NOT identical'} across {len(preds)} framework(s)"
        for dtype, preds in agree.items()
    )
    shown = {k: (Path(v).name if k in ("base_model", "data_dir") else v) for k, v in training_args.items()}
    args = "\n".join(f"| `{k}` | `{v}` |" for k, v in shown.items() if k not in ("output_dir", "log_every"))
    example = evaluations[0]["example"]
    example = f"[{{'label': '{example['label']}', 'score': {example['score']:.4f}}}]"
    minutes = metrics["train_seconds"] / 60
    where = f"{training_args['threads']} CPU thread(s)" if training_args["device"] == "cpu" else training_args["device"]
    defaults = dataclasses.asdict(TrainingArgs())
    changed = {k: v for k, v in training_args.items() if defaults.get(k) != v and k not in PATH_ARGS}
    command = " ".join(
        ["python examples/train_sentiment.py --output-dir runs/minilm-sst2", *map(_flag, changed.items())]
    )
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
  exactly into the DistilBERT architecture with `conversion/bert_to_distilbert.py` (token type embedding 0 folded into
  the position embeddings, pooler dropped), then fine-tuned with a new classification head.
- Fine-tuning data: GLUE SST-2 (Stanford Sentiment Treebank, binary), the 67,349 training sentences of `train.tsv`.
- This model is released under Apache-2.0, as its base model.

## Training

`{command}` (this repository), then `python examples/package_default_model.py RUN_DIR`:
{training_args["epochs"]} epoch(s), AdamW, linear warmup then linear decay, length-grouped batches, seeded (the same
machine, thread count and library versions give the same weights). {metrics["train_steps"]} steps in {minutes:.1f}
minutes on {where} (torch {metrics["torch"]}, Python {metrics["python"]}); dev accuracy at the end of training
{100 * metrics["dev_accuracy"]:.2f}% ({metrics["dev_correct"]}/{metrics["dev_total"]}, float32 weights); the weights
were then cast to bfloat16.

| hyperparameter | value |
| --- | --- |
{args}

## Evaluation

GLUE SST-2 dev set (`dev.tsv`, 872 sentences), measured on this packaged folder with the text-classification
pipeline in each framework; predictions {identical}.

| framework | compute dtype | dev accuracy |
| --- | --- | --- |
{rows}

For reference, `distilbert-base-uncased-finetuned-sst-2-english` (66M parameters, 3x larger) scores 91.06%
(794/872) on the same file.

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


def package(run_dir: Path, dest: Path, data_dir: Path, *, overwrite: bool) -> dict[str, Any]:
    """Cast, copy, evaluate in every installed framework, write the card; ``dest`` appears in one rename."""
    from distilbert_mf import convert
    from distilbert_mf.frameworks import available_frameworks

    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass --overwrite to replace it")
    training_args = json.loads((run_dir / "training_args.json").read_text(encoding="utf-8"))
    metrics = json.loads((run_dir / "metrics.json").read_text(encoding="utf-8"))
    staging = dest.parent / f".{dest.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    convert(run_dir / "model", staging, formats=["safetensors"], dtype="bfloat16")
    config = json.loads((staging / "config.json").read_text(encoding="utf-8"))
    if config.get("id2label") != {str(k): v for k, v in LABELS.items()}:
        raise ValueError(f"the trained model's id2label is {config.get('id2label')}, expected {LABELS}")

    evaluations = []
    for framework in available_frameworks():
        for dtype in ("float32", "bfloat16"):
            result = dev_accuracy(staging, framework, dtype, data_dir)
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
    (staging / "README.md").write_text(model_card(training_args, metrics, evaluations), encoding="utf-8")
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
    parser.add_argument("run_dir", type=Path, help="--output-dir of train_sentiment.py (holds model/, *.json)")
    parser.add_argument("--dest", type=Path, default=DEST, help=f"default: {DEST}")
    parser.add_argument("--data-dir", type=Path, default=ROOT.parent / "shared" / "data" / "glue_sst2")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    summary = package(args.run_dir, args.dest, args.data_dir, overwrite=args.overwrite)
    logger.info("packaged %s: %s", args.dest, json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
