"""``from_pretrained`` time and peak memory: ours in each framework vs transformers 5.x, each in a fresh process.

For each contender and round a new Python process imports its framework and model class and touches the framework
once (none of this is timed), resets its peak-RSS counter (Linux ``/proc/self/clear_refs``), then times
``from_pretrained(checkpoint)`` (float32) and reads the peak resident memory (``VmHWM``) it reached. After the
load it runs one tiny forward (1 x 8 tokens) and reads the resident memory again: a zero-copy loader maps the file
and reads weights only when they are first used, so the memory after a forward is the honest steady state.
The checkpoint is read from the page cache (it was just written), the same for everyone.

    python benchmarks/bench_loading.py CHECKPOINT_DIR --repeats 3 --json out.json
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    ROOT,
    emit_json,
    median,
    pin_framework_threads,
    pin_threads,
    reset_peak_rss,
    rotate,
    rss_bytes,
    wait_for_quiet,
)

logger = logging.getLogger("benchmarks.loading")

CONTENDERS = ("ours-torch", "ours-keras", "ours-flax", "transformers-torch")


def _prepare(contender: str) -> tuple[Any, Any]:
    """Import the model class and touch the framework once: returns (load(path) -> model, forward(model))."""
    import numpy as np

    ids, mask = np.arange(1, 9, dtype=np.int64)[None, :], np.ones((1, 8), np.int64)
    if contender in ("ours-torch", "transformers-torch"):
        import torch

        pin_framework_threads("torch", 2)
        if contender == "ours-torch":
            from distilbert_mf.torch import DistilBertForSequenceClassification as cls
        else:
            import transformers
            from transformers import DistilBertForSequenceClassification as cls

            transformers.logging.set_verbosity_error()
            transformers.logging.disable_progress_bar()
        torch.ones(1) + 1

        def forward(model: Any) -> Any:
            with torch.inference_mode():
                return model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).logits

        return cls.from_pretrained, forward
    if contender == "ours-keras":
        import tensorflow as tf

        from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification as cls

        tf.constant(1.0) + 1
        return cls.from_pretrained, lambda model: model(input_ids=ids, attention_mask=mask, training=False).logits
    if contender == "ours-flax":
        import jax.numpy as jnp

        from distilbert_mf.flax import FlaxDistilBertForSequenceClassification as cls

        (jnp.ones(1) + 1).block_until_ready()
        return cls.from_pretrained, lambda model: model(ids, mask).logits.block_until_ready()
    raise ValueError(f"unknown contender {contender!r}; expected one of {CONTENDERS}")


def measure_one(contender: str, checkpoint: str) -> dict[str, Any]:
    """In this (fresh) process: time ``from_pretrained`` and read the memory it took."""
    start = time.perf_counter()
    load, forward = _prepare(contender)
    import_s = time.perf_counter() - start
    gc.collect()
    before = rss_bytes()
    peak_reset = reset_peak_rss()
    start = time.perf_counter()
    model = load(checkpoint)
    load_s = time.perf_counter() - start
    peak = rss_bytes("VmHWM")
    after_load = rss_bytes()
    forward(model)
    after_forward = rss_bytes()
    return {
        "import_s": import_s,
        "load_s": load_s,
        "rss_before_bytes": before,
        "peak_rss_bytes": peak,
        "peak_growth_bytes": peak - before if peak_reset else None,
        "rss_after_load_growth_bytes": after_load - before,
        "rss_after_forward_growth_bytes": after_forward - before,
        "rss_after_forward_bytes": after_forward,
    }


def run_loading(
    checkpoint: str,
    *,
    contenders: tuple[str, ...] = CONTENDERS,
    repeats: int = 3,
    threads: int = 2,
    quiet_budget_s: float = 60.0,
) -> dict[str, Any]:
    """Every contender ``repeats`` times, each run in a fresh process, rotating the order; medians.

    Before each run it waits (at most 10 s, ``quiet_budget_s`` in all) until nothing else runs on the machine."""
    weights = sum(p.stat().st_size for p in Path(checkpoint).glob("*.safetensors"))
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in contenders}
    waited_total = 0.0
    for round_index in range(repeats):
        for name in rotate(list(contenders), round_index):
            waited, quiet = wait_for_quiet(min(10.0, max(quiet_budget_s - waited_total, 0.0)))
            waited_total += waited
            argv = [sys.executable, "-m", "benchmarks.bench_loading", checkpoint, "--one", name]
            out = subprocess.run(
                [*argv, "--threads", str(threads)], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=False
            )
            if out.returncode != 0:
                raise RuntimeError(f"loading benchmark of {name} failed with exit code {out.returncode}")
            runs[name].append({**json.loads(out.stdout.strip().splitlines()[-1]), "quiet_start": quiet})
    summary: dict[str, Any] = {"weights_bytes": weights, "repeats": repeats, "dtype": "float32", "contenders": {}}
    for name, results in runs.items():
        numeric = [k for k, v in results[0].items() if isinstance(v, (int, float)) and not isinstance(v, bool)]
        entry: dict[str, Any] = {key: median([r[key] for r in results]) for key in numeric}
        entry["quiet_runs"] = sum(r["quiet_start"] for r in results)
        entry["peak_growth_over_weights"] = entry.get("peak_growth_bytes", float("nan")) / weights
        entry["runs"] = results
        summary["contenders"][name] = entry
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="folder with config.json + model.safetensors (sequence classification)")
    parser.add_argument("--one", choices=CONTENDERS, help="measure one contender in this process (internal)")
    parser.add_argument("--contenders", default=",".join(CONTENDERS))
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", help="write the results here")
    args = parser.parse_args(argv)
    pin_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    if args.one:
        print(json.dumps(measure_one(args.one, args.checkpoint)))
        return 0
    result = run_loading(
        args.checkpoint, contenders=tuple(args.contenders.split(",")), repeats=args.repeats, threads=args.threads
    )
    emit_json(result, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
