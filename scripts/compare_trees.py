#!/usr/bin/env python
"""Time the same forward and the same load in two source trees, paired and alternating (issue: architecture).

``benchmarks/run.py`` reports ratios against a reference run beside ours; between two of its runs the machine's
speed drifts by ±10 % on 2 cores, more than the 3 % a refactor may cost. This script takes the drift out: two
long-lived workers, one per tree (``PYTHONPATH=<tree>``), hold the same full-size weights (one folder both load)
and are asked for one measurement each in turn, the order alternating pair by pair. Each measurement is the
fastest of ``--calls`` back-to-back forwards. The result per case is the median over pairs of the ratio
after / before (below 1: the after tree is faster) with its quartiles; the logits of both trees are compared.
Loading is timed the same way in fresh processes (imports excluded, the first ``from_pretrained`` of the process).

    git worktree add /tmp/before 1014195
    python scripts/compare_trees.py --before /tmp/before --after . --json out.json

Run it on an idle machine: it checks the load average first and records it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("compare_trees")

FRAMEWORKS = ("pt", "tf", "flax")
CASES = {"1x128": (1, 128), "32x128": (32, 128), "8x512": (8, 512)}


# ----------------------------------------------------------------------------------------------- workers
def build_forward(framework: str, checkpoint: str) -> Any:
    """The benchmark's contender in this tree: PyTorch eager module, Keras under XLA, Flax under nnx.jit."""
    if framework == "pt":
        import torch

        from distilbert_mf.torch import DistilBertForSequenceClassification

        model = DistilBertForSequenceClassification.from_pretrained(checkpoint).eval()

        def forward(ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
            with torch.inference_mode():
                return model(torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits.numpy()

        return forward
    if framework == "tf":
        import tensorflow as tf

        from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification

        model = TFDistilBertForSequenceClassification.from_pretrained(checkpoint)
        xla = tf.function(lambda ids, mask: model(ids, attention_mask=mask, training=False).logits, jit_compile=True)
        return lambda ids, mask: xla(tf.constant(ids), tf.constant(mask)).numpy()
    from flax import nnx

    from distilbert_mf.flax import FlaxDistilBertForSequenceClassification

    model = FlaxDistilBertForSequenceClassification.from_pretrained(checkpoint)
    tree = nnx.jit(lambda m, ids, mask: m(ids, attention_mask=mask).logits, graph=False)
    return lambda ids, mask: np.asarray(tree(model, ids, mask))


def case_inputs(case: str, vocab_size: int) -> tuple[np.ndarray, np.ndarray]:
    batch, seq = CASES[case]
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, vocab_size, size=(batch, seq)).astype(np.int64)
    mask = np.ones_like(ids)
    mask[0, seq * 3 // 4 :] = 0  # one padded row, so the mask path runs
    return ids, mask


def worker(framework: str, checkpoint: str) -> int:
    """Answer one JSON request per stdin line: {"case", "calls"} → {"ms", "checksum"}; "load" times a load."""
    import distilbert_mf

    sys.stdout.write(json.dumps({"file": distilbert_mf.__file__}) + "\n")
    sys.stdout.flush()
    forward = build_forward(framework, checkpoint)
    vocab_size = json.loads((Path(checkpoint) / "config.json").read_text())["vocab_size"]
    for line in sys.stdin:
        request = json.loads(line)
        ids, mask = case_inputs(request["case"], vocab_size)
        best = float("inf")
        for _ in range(request["calls"]):
            start = time.perf_counter()
            logits = forward(ids, mask)
            best = min(best, time.perf_counter() - start)
        reply = {"ms": best * 1e3, "checksum": float(np.abs(logits).sum()), "first": logits.ravel()[:4].tolist()}
        sys.stdout.write(json.dumps(reply) + "\n")
        sys.stdout.flush()
    return 0


def load_once(framework: str, checkpoint: str) -> int:
    """In a fresh process: import the framework package, then time its first from_pretrained."""
    if framework == "pt":
        from distilbert_mf.torch import DistilBertForSequenceClassification as cls
    elif framework == "tf":
        from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification as cls
    else:
        from distilbert_mf.flax import FlaxDistilBertForSequenceClassification as cls
    start = time.perf_counter()
    cls.from_pretrained(checkpoint)
    first = time.perf_counter() - start
    start = time.perf_counter()
    cls.from_pretrained(checkpoint)
    sys.stdout.write(json.dumps({"first_s": first, "second_s": time.perf_counter() - start}) + "\n")
    return 0


# ----------------------------------------------------------------------------------------------- driver
class Worker:
    def __init__(self, tree: Path, framework: str, checkpoint: str, threads: int) -> None:
        env = tree_env(tree, threads)
        argv = [sys.executable, __file__, "--worker", framework, "--checkpoint", checkpoint]
        self.process = subprocess.Popen(argv, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self.file = json.loads(self.process.stdout.readline())["file"]  # type: ignore[union-attr]
        if not self.file.startswith(str(tree)):
            raise RuntimeError(f"the worker for {tree} imported distilbert_mf from {self.file}")

    def ask(self, case: str, calls: int) -> dict[str, Any]:
        self.process.stdin.write(json.dumps({"case": case, "calls": calls}) + "\n")  # type: ignore[union-attr]
        self.process.stdin.flush()  # type: ignore[union-attr]
        line = self.process.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"worker {self.file} exited with {self.process.wait()}")
        return json.loads(line)

    def close(self) -> None:
        self.process.stdin.close()  # type: ignore[union-attr]
        self.process.wait(timeout=60)


def tree_env(tree: Path, threads: int) -> dict[str, str]:
    env = dict(os.environ, PYTHONPATH=str(tree), OMP_NUM_THREADS=str(threads), TF_CPP_MIN_LOG_LEVEL="3")
    env["OMP_WAIT_POLICY"] = "PASSIVE"  # an idle worker must not spin on the cores the other one is timing on
    env["XLA_FLAGS"] = f"--xla_cpu_multi_thread_eigen={'true' if threads > 1 else 'false'}"
    return env


def quartiles(values: list[float]) -> list[float]:
    q = statistics.quantiles(values, n=4) if len(values) > 1 else values * 3
    return [round(v, 4) for v in q]


def compare_forward(
    trees: dict[str, Path], framework: str, checkpoint: str, plan: dict[str, tuple[int, int]], threads: int
) -> list[dict[str, Any]]:
    workers = {side: Worker(tree, framework, checkpoint, threads) for side, tree in trees.items()}
    results = []
    try:
        for case, (pairs, calls) in plan.items():
            for side in workers:  # warm-up: compile and first-touch
                workers[side].ask(case, 2)
            times: dict[str, list[float]] = {"before": [], "after": []}
            ratios, same = [], True
            for pair in range(pairs):
                order = ("before", "after") if pair % 2 == 0 else ("after", "before")
                replies = {side: workers[side].ask(case, calls) for side in order}
                for side in order:
                    times[side].append(replies[side]["ms"])
                ratios.append(replies["after"]["ms"] / replies["before"]["ms"])
                same &= bool(np.allclose(replies["after"]["first"], replies["before"]["first"], rtol=0, atol=1e-5))
            result = {
                "framework": framework,
                "case": case,
                "pairs": pairs,
                "calls_per_request": calls,
                "before_median_ms": round(statistics.median(times["before"]), 2),
                "after_median_ms": round(statistics.median(times["after"]), 2),
                "after_over_before": round(statistics.median(ratios), 4),
                "ratio_quartiles": quartiles(ratios),
                "same_logits": same,
            }
            logger.info(
                "%s %s: after/before %.3f (quartiles %s), logits equal %s",
                framework,
                case,
                result["after_over_before"],
                result["ratio_quartiles"],
                same,
            )
            results.append(result)
    finally:
        for w in workers.values():
            w.close()
    return results


def compare_loading(
    trees: dict[str, Path], framework: str, checkpoint: str, rounds: int, threads: int
) -> dict[str, Any]:
    runs: dict[str, list[dict[str, float]]] = {"before": [], "after": []}
    ratios = []
    for pair in range(rounds):
        order = ("before", "after") if pair % 2 == 0 else ("after", "before")
        for side in order:
            argv = [sys.executable, __file__, "--load-once", framework, "--checkpoint", checkpoint]
            out = subprocess.run(
                argv, env=tree_env(trees[side], threads), capture_output=True, text=True, check=True, timeout=600
            ).stdout
            runs[side].append(json.loads(out.strip().splitlines()[-1]))
        ratios.append(runs["after"][-1]["first_s"] / runs["before"][-1]["first_s"])
    result = {
        "framework": framework,
        "rounds": rounds,
        "before_first_load_median_s": round(statistics.median(r["first_s"] for r in runs["before"]), 4),
        "after_first_load_median_s": round(statistics.median(r["first_s"] for r in runs["after"]), 4),
        "before_second_load_median_s": round(statistics.median(r["second_s"] for r in runs["before"]), 4),
        "after_second_load_median_s": round(statistics.median(r["second_s"] for r in runs["after"]), 4),
        "first_load_after_over_before": round(statistics.median(ratios), 4),
        "ratio_quartiles": quartiles(ratios),
    }
    logger.info(
        "%s load: after/before %.3f (quartiles %s)",
        framework,
        result["first_load_after_over_before"],
        result["ratio_quartiles"],
    )
    return result


def write_checkpoint(folder: Path) -> str:
    """Full-size seeded weights, written by the after tree (both trees read the same safetensors file)."""
    import torch

    from distilbert_mf.config import DistilBertConfig
    from distilbert_mf.torch import DistilBertForSequenceClassification

    torch.manual_seed(0)
    DistilBertForSequenceClassification(DistilBertConfig()).save_pretrained(folder)
    return str(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--before", type=Path, help="source tree before the change (a git worktree)")
    parser.add_argument("--after", type=Path, default=Path("."), help="source tree after the change")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS))
    parser.add_argument("--pairs", type=int, default=40, help="pairs for 1x128 (the larger cases take a quarter)")
    parser.add_argument("--load-rounds", type=int, default=6)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--load-once", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--checkpoint", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker or args.load_once:
        # an editable install's import hook outranks PYTHONPATH: drop it so this process imports its own tree
        sys.meta_path[:] = [f for f in sys.meta_path if not type(f).__module__.startswith("__editable__")]
    if args.worker:
        return worker(args.worker, args.checkpoint)
    if args.load_once:
        return load_once(args.load_once, args.checkpoint)
    if args.before is None:
        parser.error("--before is required (a source tree, for example `git worktree add /tmp/before <commit>`)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    plan = {"1x128": (args.pairs, 3), "32x128": (max(args.pairs // 4, 4), 2), "8x512": (max(args.pairs // 4, 4), 2)}
    started, load_start = time.time(), os.getloadavg()
    report: dict[str, Any] = {
        "trees": {k: str(v) for k, v in trees.items()},
        "threads": args.threads,
        "load_average_start": load_start,
        "forward": [],
        "loading": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint = write_checkpoint(Path(tmp) / "full-size")
        for framework in args.frameworks.split(","):
            report["forward"] += compare_forward(trees, framework, checkpoint, plan, args.threads)
            report["loading"].append(compare_loading(trees, framework, checkpoint, args.load_rounds, args.threads))
    report["load_average_end"] = os.getloadavg()
    report["duration_s"] = round(time.time() - started, 1)
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
