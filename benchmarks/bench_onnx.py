"""ONNX export of our PyTorch model through the library (:func:`distilbert_mf.export.export`) for the benchmarks.

The export is verified before it is timed, by the library: ONNX Runtime, in a fresh process that never imports
distilbert_mf, must match our PyTorch model on tokenized batches of several sizes and lengths within
``atol`` x max(1, max |logits|).

    python benchmarks/bench_onnx.py CHECKPOINT_DIR OUT_DIR        # export + verify, prints a JSON summary
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import pin_framework_threads, pin_threads
from distilbert_mf.export.onnx_export import ort_session

logger = logging.getLogger("benchmarks.onnx")


def session(path: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation and ``threads`` intra-op threads."""
    return ort_session(path, threads)


def export(checkpoint: str | Path, out: str | Path, *, threads: int = 2, atol: float = 1e-5) -> dict[str, Any]:
    """Export ``DistilBertForSequenceClassification`` from ``checkpoint`` to ``out/model.onnx``, verified."""
    from distilbert_mf.export import export as export_model

    pin_framework_threads("torch", threads)
    result = export_model(
        checkpoint, out, format="onnx", task="text-classification", atol=atol, threads=threads, overwrite=True
    )
    report = result.verification
    if report is None:  # never: verify=True raises on a failure and reports on success
        raise RuntimeError("the ONNX export was not verified")
    return {
        "path": str(result.artifact),
        "opset": result.opset,
        "export_seconds": result.metadata["writer"]["export_seconds"],
        "size_bytes": result.artifact.stat().st_size,
        "verify_max_abs_diff": report.worst,
        "verify_atol": report.atol,
        "verify_cases": [list(case.shape) for case in report.cases],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="folder with config.json + model.safetensors (sequence classification)")
    parser.add_argument("out", help="the folder to write (model.onnx, the tokenizer files, export.json)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--atol", type=float, default=1e-5, help="bound on max |Δ| of the logits, x max(1, |x|)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pin_threads(args.threads)
    result = export(args.checkpoint, args.out, threads=args.threads, atol=args.atol)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
