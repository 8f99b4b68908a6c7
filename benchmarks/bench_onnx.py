"""ONNX export of our PyTorch model (``torch.onnx``, dynamo exporter) and its ONNX Runtime session.

The export is verified before it is timed: ONNX Runtime's logits must match our PyTorch model's on a batch with
padding (max |diff| <= ``atol``), and on a second shape (the batch and sequence axes are dynamic).

    python benchmarks/bench_onnx.py CHECKPOINT_DIR OUT.onnx        # export + verify, prints a JSON summary
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

if __package__ in (None, ""):  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import pin_framework_threads, pin_threads

logger = logging.getLogger("benchmarks.onnx")

OPSET = 18


def session(path: str | Path, threads: int) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation and ``threads`` intra-op threads."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])


def verification_inputs(vocab_size: int, batch: int, seq: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random ids (batch, seq) and a mask whose rows have different amounts of padding."""
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, vocab_size, (batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), np.int64)
    for row in range(1, batch):
        mask[row, seq - row * seq // (2 * batch) :] = 0
    return ids, mask


def export(checkpoint: str | Path, out: str | Path, *, threads: int = 2, atol: float = 1e-4) -> dict[str, Any]:
    """Export ``DistilBertForSequenceClassification`` from ``checkpoint`` to ``out`` and verify its logits."""
    import torch

    from distilbert_mf.torch import DistilBertForSequenceClassification

    pin_framework_threads("torch", threads)
    model = DistilBertForSequenceClassification.from_pretrained(checkpoint, dtype="float32")
    config = model.config
    seq_max = config.max_position_embeddings
    ids, mask = verification_inputs(config.vocab_size, 2, min(16, seq_max), seed=0)
    batch_dim, seq_dim = torch.export.Dim("batch", min=1, max=4096), torch.export.Dim("seq", min=2, max=seq_max)
    start = time.perf_counter()
    torch.onnx.export(
        model,
        (torch.from_numpy(ids), torch.from_numpy(mask)),
        str(out),
        dynamo=True,
        opset_version=OPSET,
        input_names=["input_ids", "attention_mask"],
        output_names=["logits"],
        dynamic_shapes={"input_ids": {0: batch_dim, 1: seq_dim}, "attention_mask": {0: batch_dim, 1: seq_dim}},
        optimize=True,
        verbose=False,
    )
    export_s = time.perf_counter() - start
    ort_session = session(out, threads)
    diffs = []
    for batch, seq, seed in ((3, min(37, seq_max), 1), (5, min(128, seq_max), 2)):
        ids, mask = verification_inputs(config.vocab_size, batch, seq, seed)
        (ort_logits,) = ort_session.run(["logits"], {"input_ids": ids, "attention_mask": mask})
        with torch.inference_mode():
            ours = model(torch.from_numpy(ids), torch.from_numpy(mask)).logits.numpy()
        diffs.append(float(np.abs(ort_logits - ours).max()))
    result = {
        "path": str(out),
        "opset": OPSET,
        "export_seconds": round(export_s, 2),
        "size_bytes": Path(out).stat().st_size,
        "verify_max_abs_diff": max(diffs),
        "verify_atol": atol,
    }
    if max(diffs) > atol:
        raise ValueError(f"ONNX Runtime logits differ from our PyTorch model's by {max(diffs):.3g} > atol {atol}")
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", help="folder with config.json + model.safetensors (sequence classification)")
    parser.add_argument("out", help="the .onnx file to write")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--atol", type=float, default=1e-4, help="largest allowed logits difference")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    pin_threads(args.threads)
    result = export(args.checkpoint, args.out, threads=args.threads, atol=args.atol)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
