#!/usr/bin/env python
"""Training parity at full size: 50 AdamW updates in PyTorch, Keras and Flax (issue: fine-tuning, point 5).

The tests hold a tiny config to 1e-4 over 200 updates (``tests/parity/test_training_parity.py``); this script runs
the same comparison at real sizes, through :func:`distilbert_mf.training.trainer.train` (what ``distilbert-mf
train`` runs) in each framework, on the first SST-2 training sentences, dropout 0, a new 2-label head drawn once by
the neutral side:

- ``--model pretrained`` (default): the converted all-MiniLM-L6-v2 (``distilbert-mf/all-minilm-l6-v2``: a real
  pretrained encoder, 6 layers, dim 384, 22 M parameters), the starting point of the real fine-tuning results —
  fine-tuning as users run it;
- ``--model base``: ``DistilBertConfig()`` (dim 768, 6 layers, hidden 3072, 66 M parameters) with seeded random
  weights and the real distilbert-base-uncased tokenizer.

A *control* run repeats PyTorch from the same weights nudged by one float32 ulp each (seeded random sign): the same
framework and math from a start that differs by rounding alone. Its gap to the PyTorch run is how far this
trajectory amplifies a rounding difference in 50 updates; a gap between frameworks of that size is rounding, not a
difference in the math. Writes
``benchmarks/results/training_parity_full_size_<model>.json``: per-step losses and gradient norms of each run, the
worst relative gap per pair against the 1e-3 bound, the largest final-weight difference per pair.

    python scripts/full_size_parity.py                  # about 15 min on 2 idle CPU cores
    python scripts/full_size_parity.py --model base     # about 40 min
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"
CONTROL = "pt-nudged"
BASE_DESCRIPTION = "DistilBertConfig() seeded (torch.manual_seed(0)) + distilbert-base-uncased tokenizer"
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0}
LOSS_RTOL = 1e-3  # the bound at full size
NOISE_ONLY = ".attention.k_lin.bias"  # zero gradient in exact arithmetic: Adam turns rounding into steps (see tests)

logger = logging.getLogger("full_size_parity")


def starting_model(kind: str, folder: Path) -> str:
    """The run's starting point: the built-in pretrained encoder, or a seeded random DistilBERT-base."""
    return "distilbert-mf/all-minilm-l6-v2" if kind == "pretrained" else str(base_model(folder))


def nudged_copy(model: str, folder: Path) -> str:
    """A copy of ``model``'s folder whose float32 weights are each moved by one ulp, up or down (seeded)."""
    from safetensors.numpy import load_file, save_file

    from distilbert_mf.models import builtin_path

    source = builtin_path(model) or Path(model)
    if not (folder / "model.safetensors").is_file():
        shutil.copytree(source, folder, dirs_exist_ok=True)
        rng = np.random.default_rng(0)
        arrays = load_file(source / "model.safetensors")
        for name, array in arrays.items():
            if array.dtype == np.float32:
                direction = np.where(rng.random(array.shape) < 0.5, -np.inf, np.inf).astype(np.float32)
                arrays[name] = np.nextafter(array, direction)
        save_file(arrays, folder / "model.safetensors", metadata={"format": "pt"})
    return str(folder)


def base_model(folder: Path) -> Path:
    """Full-size seeded DistilBERT-base (no head) with the real uncased tokenizer, in ``folder``."""
    import torch

    from distilbert_mf import DistilBertTokenizerFast
    from distilbert_mf.config import DistilBertConfig
    from distilbert_mf.torch import DistilBertModel

    if not (folder / "model.safetensors").is_file():
        torch.manual_seed(0)
        DistilBertModel(DistilBertConfig()).save_pretrained(folder)
        DistilBertTokenizerFast.from_pretrained(DATA / "distilbert-base-uncased-tokenizer").save_pretrained(folder)
    return folder


def training_files(folder: Path, rows: int) -> tuple[Path, Path]:
    lines = (DATA / "glue_sst2" / "train.tsv").read_text(encoding="utf-8").splitlines()
    train = folder / "train.tsv"
    train.write_text("\n".join(lines[: rows + 1]) + "\n", encoding="utf-8")
    return train, train


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", choices=("pretrained", "base"), default="pretrained")
    parser.add_argument("--frameworks", default="pt,tf,flax")
    parser.add_argument("--no-control", action="store_true", help="skip the control run (PyTorch from nudged weights)")
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="read the runs already finished in --work-dir (same command) instead of rerunning them",
    )
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--work-dir", type=Path, default=None, help="default: runs/full-size-parity-<model>")
    parser.add_argument("--out", type=Path, default=None, help="default: training_parity_full_size_<model>.json")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from safetensors.numpy import load_file

    from distilbert_mf.training.trainer import TrainingArguments, train

    args.work_dir = args.work_dir or ROOT / "runs" / f"full-size-parity-{args.model}"
    args.work_dir.mkdir(parents=True, exist_ok=True)
    out_path = args.out or RESULTS / f"training_parity_full_size_{args.model}.json"
    model = starting_model(args.model, args.work_dir / "base")
    train_file, _ = training_files(args.work_dir, args.steps * args.batch_size)
    recipe: dict[str, Any] = {
        "task": "text-classification",
        "model": model,
        "train_file": str(train_file),
        "text_column": "sentence",
        "label_column": "label",
        "label_names": ("NEGATIVE", "POSITIVE"),
        "max_steps": args.steps,
        "per_device_train_batch_size": args.batch_size,
        "learning_rate": 5e-5,
        "weight_decay": 0.01,
        "warmup_steps": 5,
        "max_grad_norm": 1.0,
        "max_seq_length": 64,
        "pad_to_multiple_of": 64,  # one batch shape: Keras and Flax compile the step once
        "logging_steps": 1,
        "save_strategy": "no",
        "seed": 0,
        "config_overrides": dict(NO_DROPOUT),
    }
    runs: dict[str, dict[str, Any]] = {}
    weights: dict[str, dict[str, np.ndarray]] = {}
    names = args.frameworks.split(",") + ([] if args.no_control else [CONTROL])
    for name in names:
        framework = "pt" if name == CONTROL else name
        start = time.monotonic()
        folder = args.work_dir / name
        reused = args.reuse and (folder / "trainer_state.json").is_file() and (folder / "model.safetensors").is_file()
        if reused:
            history = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))["log_history"]
            logger.info("%s: reusing the finished run in %s", name, folder)
        else:
            start_from = nudged_copy(model, args.work_dir / "nudged") if name == CONTROL else model
            run_args = TrainingArguments(
                output_dir=str(folder),
                framework=framework,
                overwrite_output_dir=True,
                **(recipe | {"model": start_from}),
            )
            history = train(run_args).log_history
        entries = [e for e in history if "loss" in e and "step" in e and "train_loss" not in e]
        runs[name] = {
            "loss": [e["loss"] for e in entries],
            "grad_norm": [e["grad_norm"] for e in entries],
            "learning_rate": [e["learning_rate"] for e in entries],
            "minutes": None if reused else round((time.monotonic() - start) / 60, 2),
        }
        weights[name] = load_file(folder / "model.safetensors")
        logger.info("%s: loss %.5f -> %.5f", name, runs[name]["loss"][0], runs[name]["loss"][-1])

    pairs = {}
    for a, b in itertools.combinations(runs, 2):
        loss_a, loss_b = np.asarray(runs[a]["loss"]), np.asarray(runs[b]["loss"])
        norm_a, norm_b = np.asarray(runs[a]["grad_norm"]), np.asarray(runs[b]["grad_norm"])
        diffs = {k: float(np.abs(weights[a][k] - weights[b][k]).max()) for k in weights[a]}
        signal = {k: v for k, v in diffs.items() if not k.endswith(NOISE_ONLY)}
        worst = max(signal, key=signal.get)
        pairs[f"{a}-{b}"] = {
            "loss_max_relative_gap": float((np.abs(loss_b - loss_a) / np.abs(loss_a)).max()),
            "grad_norm_max_relative_gap": float((np.abs(norm_b - norm_a) / np.abs(norm_a)).max()),
            "learning_rates_equal": runs[a]["learning_rate"] == runs[b]["learning_rate"],
            "final_weights_max_abs_diff": signal[worst],
            "final_weights_worst_array": worst,
            "k_lin_bias_max_abs_diff": max((v for k, v in diffs.items() if k.endswith(NOISE_ONLY)), default=None),
            "within_bound": bool(np.allclose(loss_b, loss_a, rtol=LOSS_RTOL, atol=0)),
            "first_step_over_1e-5": next(
                (i + 1 for i, g in enumerate(np.abs(loss_b - loss_a) / loss_a) if g > 1e-5), None
            ),
        }
        logger.info("%s-%s: %s", a, b, pairs[f"{a}-{b}"])
    result = {
        "what": f"{args.steps} AdamW updates from {model} (new 2-label head), dropout 0; {CONTROL}: PyTorch from the weights nudged by 1 ulp",
        "command": f"python scripts/full_size_parity.py --model {args.model}",
        "bound": {"loss_rtol": LOSS_RTOL},
        "recipe": recipe | ({"model": BASE_DESCRIPTION} if args.model == "base" else {}),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "pairs": pairs,
        "runs": runs,
    }
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    return 0 if all(p["within_bound"] for p in pairs.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
