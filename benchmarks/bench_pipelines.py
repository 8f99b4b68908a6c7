"""text-classification throughput on SST-2 dev (872 sentences): distilbert_mf's pipeline vs transformers'.

Same checkpoint, same inputs, float32, on the CPU unless ``--device`` says otherwise. Three contenders, run
``--repeats`` rounds in rotating order. The CPU may be shared with other work, so each round's ratios (two runs close
in time saw about the same load) are reported, and their medians, in wall time and in process CPU time:

- transformers 5.x ``pipeline("text-classification")`` with its defaults (batch_size=1),
- the same with ``batch_size=32``,
- ``distilbert_mf.pipeline("text-classification")`` with its defaults (batch_size=32, inputs grouped by length).

Predictions must agree (same label on every sentence, scores within ``--atol``). The model is the packaged default
model when it is installed, else ``--model``, else a random DistilBERT of the chosen size with the bert-base-uncased
vocabulary (saved once with transformers' PyTorch classes, so both libraries load the same weights).

    python benchmarks/bench_pipelines.py                       # default model or random distilbert-base size
    python benchmarks/bench_pipelines.py --size minilm --repeats 5 --json results.json
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
SIZES = {
    "base": {"dim": 768, "n_heads": 12, "hidden_dim": 3072, "n_layers": 6},  # distilbert-base-uncased
    "minilm": {"dim": 384, "n_heads": 12, "hidden_dim": 1536, "n_layers": 6},  # all-MiniLM-L6-v2 shape
}


def load_sentences(path: Path) -> list[str]:
    with open(path, encoding="utf-8", newline="") as handle:
        reader = csv.DictReader(handle, delimiter="\t", quoting=csv.QUOTE_NONE)
        return [row["sentence"] for row in reader]


def random_checkpoint(size: str, folder: Path) -> Path:
    """A seeded random DistilBertForSequenceClassification (2 labels) with the uncased vocab, saved by transformers."""
    import torch
    from transformers import DistilBertConfig, DistilBertForSequenceClassification

    torch.manual_seed(0)
    config = DistilBertConfig(
        vocab_size=30522,
        **SIZES[size],
        id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1},
    )
    DistilBertForSequenceClassification(config).eval().save_pretrained(folder)
    tokenizer_folder = SHARED / "distilbert-base-uncased-tokenizer"
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json"):
        shutil.copy(tokenizer_folder / name, folder / name)
    return folder


def choose_model(args: argparse.Namespace, scratch: Path) -> tuple[Path, str]:
    if args.model:
        return Path(args.model), f"given: {args.model}"
    from distilbert_mf.models import DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path

    packaged = builtin_path(DEFAULT_TEXT_CLASSIFICATION_MODEL)
    if packaged is not None and not args.random:
        return packaged, f"packaged default model {DEFAULT_TEXT_CLASSIFICATION_MODEL}"
    return random_checkpoint(args.size, scratch / "model"), f"random DistilBERT, size {args.size} ({SIZES[args.size]})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="checkpoint folder (default: packaged model, else a random one)")
    parser.add_argument("--random", action="store_true", help="use a random checkpoint even if a packaged model exists")
    parser.add_argument("--size", choices=sorted(SIZES), default="base", help="size of the random checkpoint")
    parser.add_argument("--framework", default="pt", help="distilbert_mf framework: pt, tf or flax")
    parser.add_argument("--repeats", type=int, default=5, help="rounds (medians of per-round ratios reported)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N sentences")
    parser.add_argument("--device", default="cpu", help="device for both pipelines: cpu, or a GPU such as cuda:0")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed score difference")
    parser.add_argument("--json", help="also write the results to this JSON file")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    import transformers
    from transformers import pipeline as reference_pipeline
    from transformers.utils import logging as transformers_logging

    import distilbert_mf
    from distilbert_mf import pipeline

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    if args.threads:
        torch.set_num_threads(args.threads)
    sentences = load_sentences(SHARED / "glue_sst2" / "dev.tsv")[: args.limit]
    with tempfile.TemporaryDirectory() as scratch:
        model_path, model_note = choose_model(args, Path(scratch))
        ours = pipeline(
            "text-classification", str(model_path), framework=args.framework, dtype="float32", device=args.device
        )
        theirs = reference_pipeline(
            "text-classification", model=str(model_path), dtype=torch.float32, device=args.device
        )
        contenders = {
            "transformers (batch_size=1, default)": lambda: theirs(sentences),
            "transformers (batch_size=32)": lambda: theirs(sentences, batch_size=32),
            f"distilbert_mf {args.framework} (default, batch_size={ours.batch_size})": lambda: ours(sentences),
        }
        # warm-up (lazy initialisation, jit compilation) and the prediction check
        outputs = {name: run() for name, run in contenders.items()}
        names = list(contenders)
        wall: dict[str, list[float]] = {name: [] for name in names}
        cpu: dict[str, list[float]] = {name: [] for name in names}
        for round_index in range(args.repeats):
            # rotate the order each round so no contender always runs first or last
            for name in names[round_index % 3 :] + names[: round_index % 3]:
                wall_start, cpu_start = time.perf_counter(), time.process_time()
                contenders[name]()
                wall[name].append(time.perf_counter() - wall_start)
                cpu[name].append(time.process_time() - cpu_start)

    reference, ours_name = outputs[names[0]], names[2]
    label_mismatches = sum(a["label"] != b["label"] for a, b in zip(outputs[ours_name], reference))
    score_diff = max(abs(a["score"] - b["score"]) for a, b in zip(outputs[ours_name], reference))

    def speedups(times: dict[str, list[float]], baseline: str) -> list[float]:
        """Per-round ratios: the two runs of a round are close in time, so they saw about the same CPU load."""
        return [b / o for b, o in zip(times[baseline], times[ours_name])]

    ratios = {
        "vs_transformers_default": {"wall": speedups(wall, names[0]), "cpu": speedups(cpu, names[0])},
        "vs_transformers_batch32": {"wall": speedups(wall, names[1]), "cpu": speedups(cpu, names[1])},
    }
    medians = {name: statistics.median(values) for name, values in wall.items()}
    result = {
        "model": model_note,
        "sentences": len(sentences),
        "torch_threads": torch.get_num_threads(),
        "device": args.device,
        "versions": {
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "distilbert_mf": distilbert_mf.__version__,
        },
        "wall_seconds": wall,
        "cpu_seconds": cpu,
        "median_wall_seconds": medians,
        "sentences_per_second": {name: len(sentences) / t for name, t in medians.items()},
        "speedups": ratios,
        "median_speedups": {k: {m: statistics.median(v) for m, v in d.items()} for k, d in ratios.items()},
        "label_mismatches": label_mismatches,
        "max_score_difference": score_diff,
    }
    print(
        f"model: {model_note}; {len(sentences)} sentences; device {args.device}; "
        f"torch threads {torch.get_num_threads()}"
    )
    for name in names:
        print(
            f"  {name:<48} median {medians[name]:7.2f} s  {len(sentences) / medians[name]:8.1f} sentences/s  "
            f"wall {np.round(wall[name], 2).tolist()}  cpu {np.round(cpu[name], 2).tolist()}"
        )
    for key, target in (("vs_transformers_default", 3.0), ("vs_transformers_batch32", 1.5)):
        summary = result["median_speedups"][key]
        print(
            f"  speed-up {key}: median of per-round ratios {summary['wall']:.2f}x wall, {summary['cpu']:.2f}x CPU "
            f"time (target >= {target}); rounds {np.round(ratios[key]['wall'], 2).tolist()}"
        )
    print(f"  predictions: {label_mismatches} label mismatches, max |score difference| {score_diff:.2e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if label_mismatches or score_diff > args.atol:
        print("FAIL: predictions differ from transformers'", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
