#!/usr/bin/env python
"""Fine-tune all-MiniLM-L6-v2 on GLUE SST-2 with ``distilbert-mf train``: the recipe of the embedded default model.

This script is one call of the ``distilbert-mf train`` command with the recipe's options. With the defaults it runs::

    distilbert-mf train --task text-classification --model distilbert-mf/all-minilm-l6-v2 \\
        --train-file ../shared/data/glue_sst2/train.tsv --validation-file ../shared/data/glue_sst2/dev.tsv \\
        --label-names NEGATIVE POSITIVE --num-train-epochs 2 --per-device-train-batch-size 32 \\
        --per-device-eval-batch-size 128 --learning-rate 1e-4 --weight-decay 0.01 --warmup-ratio 0.06 \\
        --max-seq-length 64 --seed 42 --logging-steps 50 --save-steps 500 --save-total-limit 2 \\
        --output-dir runs/minilm-sst2 --framework pt

- the base is ``distilbert-mf/all-minilm-l6-v2``, the built-in exact conversion of the BERT
  ``sentence-transformers/all-MiniLM-L6-v2`` (Apache-2.0); ``--base-model`` takes another model, and a BERT folder
  (``model_type: bert``, e.g. ``../shared/data/all-MiniLM-L6-v2``) is first converted exactly into
  ``OUTPUT_DIR/base-distilbert`` with :func:`distilbert_mf.checkpoint.bert.convert_bert`;
- a new head for NEGATIVE / POSITIVE (SST-2's labels 0 / 1), two epochs, AdamW with weight decay 0.01 (not on
  biases and LayerNorm weights), 6 % linear warm-up then linear decay, batches of 32 grouped by length, 64 tokens;
- ``--framework pt|tf|flax`` trains the same recipe with the PyTorch, Keras or Flax loop.

Any other ``distilbert-mf train`` option given here is passed on after the recipe's (the last one given wins):
``--max-steps 20 --max-train-samples 640`` for a smoke run, ``--bf16``, ``--device cuda``,
``--resume-from-checkpoint``, ``--overwrite-output-dir``. After a successful run the script writes
``OUTPUT_DIR/recipe.json`` (the command as run, the framework, library versions); package the folder with
``examples/package_default_model.py``. A full run is 4,210 updates: about 25 minutes per framework on 2 idle CPU
cores.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
BASE_MODEL = "distilbert-mf/all-minilm-l6-v2"
DATA_DIR = SHARED_DATA / "glue_sst2"
OUTPUT_DIR = "runs/minilm-sst2"
LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
RECIPE_NAME = "recipe.json"
FRAMEWORK_PACKAGES = {"pt": ("torch",), "tf": ("tensorflow", "keras"), "flax": ("jax", "flax", "optax")}

# The embedded model's hyper-parameters, as `distilbert-mf train` flags (TrainingArguments names, dashed).
RECIPE: tuple[tuple[str, ...], ...] = (
    ("--task", "text-classification"),
    ("--label-names", *LABELS.values()),
    ("--num-train-epochs", "2"),
    ("--per-device-train-batch-size", "32"),
    ("--per-device-eval-batch-size", "128"),
    ("--learning-rate", "1e-4"),
    ("--weight-decay", "0.01"),
    ("--warmup-ratio", "0.06"),
    ("--max-seq-length", "64"),
    ("--seed", "42"),
    ("--logging-steps", "50"),
    ("--save-steps", "500"),
    ("--save-total-limit", "2"),
)

logger = logging.getLogger("train_sentiment")


def read_tsv(path: str | Path, limit: int | None = None) -> tuple[list[str], np.ndarray]:
    """GLUE SST-2 ``sentence<TAB>label`` (with a header) -> (sentences, labels (n,) int64), through the data layer's
    reader (:func:`distilbert_mf.training.read_records`)."""
    from distilbert_mf.training import DataError, read_records

    records = read_records(path, format="tsv")
    records.require("sentence", "label")
    rows = records.rows if limit is None else records.rows[:limit]
    labels = []
    for row, where in zip(rows, records.locations):
        if row["label"] not in ("0", "1"):
            raise DataError(f"{where}: label must be 0 or 1, got {row['label']!r}")
        labels.append(int(row["label"]))
    return [row["sentence"] for row in rows], np.array(labels, dtype=np.int64)


def prepare_base(base_model: str, output_dir: Path) -> str:
    """The DistilBERT to start from: ``base_model`` itself, or a BERT folder converted into
    ``output_dir/base-distilbert`` (exact: same function, DistilBERT architecture)."""
    from distilbert_mf.checkpoint.bert import convert_bert

    config = Path(base_model) / "config.json"
    if not config.is_file():
        return base_model  # a built-in short name, a Hub repo id or a DistilBERT folder without surprises
    model_type = json.loads(config.read_text(encoding="utf-8")).get("model_type")
    if model_type == "distilbert":
        return base_model
    if model_type != "bert":
        raise ValueError(f"--base-model {base_model}: model_type {model_type!r}; pass a DistilBERT or a BERT folder")
    target = output_dir / "base-distilbert"
    convert_bert(base_model, target, overwrite=True)
    logger.info("converted the BERT %s into %s", base_model, target)
    return str(target)


def train_command(
    *, model: str, data_dir: Path, output_dir: str, framework: str, extra: Sequence[str] = ()
) -> list[str]:
    """The ``distilbert-mf train`` arguments of the recipe (without the program name)."""
    return [
        "train",
        *RECIPE[0],
        "--model",
        model,
        "--train-file",
        str(data_dir / "train.tsv"),
        "--validation-file",
        str(data_dir / "dev.tsv"),
        *(value for flag in RECIPE[1:] for value in flag),
        "--output-dir",
        output_dir,
        "--framework",
        framework,
        *extra,
    ]


def display_command(argv: Sequence[str]) -> str:
    """``distilbert-mf ...`` as a shell line, paths under this checkout's parent shown relative to the repository."""
    shown = []
    for word in argv:
        if word.startswith(str(ROOT) + "/"):
            word = word[len(str(ROOT)) + 1 :]
        elif word.startswith(str(ROOT.parent) + "/"):
            word = "../" + word[len(str(ROOT.parent)) + 1 :]
        shown.append(shlex.quote(word))
    return " ".join(["distilbert-mf", *shown])


def _versions(framework: str) -> dict[str, str]:
    versions = {"python": platform.python_version(), "machine": platform.processor() or platform.machine()}
    for name in ("distilbert-mf", "numpy", *FRAMEWORK_PACKAGES[framework]):
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def parse_args(argv: Sequence[str] | None = None) -> tuple[argparse.Namespace, list[str]]:
    """The script's own options, and the ``distilbert-mf train`` options to pass on."""
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Every other option is a distilbert-mf train option, passed on (distilbert-mf train --help).",
    )
    parser.add_argument(
        "--base-model", default=BASE_MODEL, help=f"short name, Hub id, DistilBERT or BERT folder; default {BASE_MODEL}"
    )
    parser.add_argument(
        "--data-dir", type=Path, default=DATA_DIR, help="holds train.tsv and dev.tsv (sentence<TAB>label)"
    )
    parser.add_argument("--output-dir", default=OUTPUT_DIR, help=f"the run folder (default {OUTPUT_DIR})")
    parser.add_argument(
        "--framework", choices=("pt", "tf", "flax"), default="pt", help="the training loop (default pt)"
    )
    parser.add_argument(
        "--threads", type=int, help="PyTorch only: torch.set_num_threads (1 is faster on a busy machine)"
    )
    args, extra = parser.parse_known_args(argv)
    if args.threads is not None:
        if args.framework != "pt":
            parser.error(f"--threads applies to --framework pt, got --framework {args.framework}")
        if args.threads < 1:
            parser.error(f"--threads must be at least 1, got {args.threads}")
    return args, extra


def main(argv: Sequence[str] | None = None) -> int:
    """Run the recipe; returns the command's exit status."""
    from distilbert_mf import cli
    from distilbert_mf.training.state import write_json

    args, extra = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.threads is not None:
        import torch

        torch.set_num_threads(args.threads)
    output_dir = Path(args.output_dir)
    try:
        model = prepare_base(args.base_model, output_dir)
    except (OSError, ValueError) as err:
        logger.error("%s", err)
        return cli.EXIT_ERROR
    command = train_command(
        model=model, data_dir=args.data_dir, output_dir=args.output_dir, framework=args.framework, extra=extra
    )
    logger.info("running %s", display_command(command))
    status = cli.main(command)
    if status == cli.EXIT_OK:
        recipe: dict[str, Any] = {
            "command": display_command(command),
            "argv": command,
            "base_model": args.base_model,
            "framework": args.framework,
            "threads": args.threads,
            "versions": _versions(args.framework),
        }
        write_json(output_dir / RECIPE_NAME, recipe)
    return status


if __name__ == "__main__":
    sys.exit(main())
