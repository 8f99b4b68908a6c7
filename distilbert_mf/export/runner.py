"""Run an exported artifact with its plain runtime, in a process that never imports distilbert_mf.

The verification of :mod:`distilbert_mf.export` starts this file as a script (``python -I runner.py ...``: no
script folder, no ``PYTHONPATH``, no user site on ``sys.path``), so it imports only the standard library, numpy and
the artifact's runtime (onnxruntime, torch, tensorflow or jax), exactly what a serving process has. It reports the
``distilbert_mf`` modules present in ``sys.modules`` at the end (none, or the verification fails).

    python -I runner.py FORMAT ARTIFACT INPUTS.npz OUTPUTS.npz [--threads N]

``INPUTS.npz`` holds ``{case}/input_ids`` and ``{case}/attention_mask``; ``OUTPUTS.npz`` gets
``{signature}/{case}/{output}`` as float32 (``default`` for the artifact's main entry point; a SavedModel also runs
``serving_int32``). The last line on stdout is a JSON summary.

This file must keep importing nothing but the standard library, numpy and the runtimes.
"""

from __future__ import annotations

import argparse
import json
import sys
from importlib import metadata
from typing import Any

import numpy as np


def _float32(value: Any) -> np.ndarray:
    array = np.asarray(value)
    return array if array.dtype == np.float32 else array.astype(np.float32)


def _cases(inputs: Any) -> list[tuple[str, np.ndarray, np.ndarray]]:
    cases = sorted({key.split("/")[0] for key in inputs.files}, key=int)
    return [(case, inputs[f"{case}/input_ids"], inputs[f"{case}/attention_mask"]) for case in cases]


def run_onnx(path: str, cases: list, threads: int | None) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, sess_options=options, providers=["CPUExecutionProvider"])
    names = [output.name for output in session.get_outputs()]
    out = {}
    for case, ids, mask in cases:
        values = session.run(names, {"input_ids": ids.astype(np.int64), "attention_mask": mask.astype(np.int64)})
        out.update({f"default/{case}/{name}": _float32(v) for name, v in zip(names, values)})
    inputs = {i.name: [d if isinstance(d, int) else str(d) for d in i.shape] for i in session.get_inputs()}
    return out, {"runtime": "onnxruntime", "version": ort.__version__, "inputs": inputs, "outputs": names}


def run_exported_program(path: str, cases: list, threads: int | None) -> tuple[dict[str, np.ndarray], dict]:
    import torch

    if threads:
        torch.set_num_threads(threads)
    module = torch.export.load(path).module()
    out = {}
    with torch.no_grad():
        for case, ids, mask in cases:
            result = module(torch.from_numpy(ids.astype(np.int64)), torch.from_numpy(mask.astype(np.int64)))
            out.update({f"default/{case}/{k}": _float32(v.float().numpy()) for k, v in result.items()})
    return out, {"runtime": "torch", "version": torch.__version__, "outputs": sorted(result)}


def run_saved_model(path: str, cases: list, threads: int | None) -> tuple[dict[str, np.ndarray], dict]:
    import tensorflow as tf

    if threads:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(1)
    loaded = tf.saved_model.load(path)
    out = {}
    signatures = {"default": ("serving_default", tf.int64), "serving_int32": ("serving_int32", tf.int32)}
    for variant, (name, dtype) in signatures.items():
        signature = loaded.signatures[name]
        for case, ids, mask in cases:
            result = signature(input_ids=tf.constant(ids, dtype), attention_mask=tf.constant(mask, dtype))
            out.update({f"{variant}/{case}/{k}": _float32(v.numpy()) for k, v in result.items()})
    info = {"runtime": "tensorflow", "version": tf.__version__, "signatures": sorted(loaded.signatures)}
    return out, {**info, "outputs": sorted(result)}


def run_stablehlo(path: str, cases: list, threads: int | None) -> tuple[dict[str, np.ndarray], dict]:
    import jax

    with open(path, "rb") as handle:
        exported = jax.export.deserialize(bytearray(handle.read()))
    out = {}
    for case, ids, mask in cases:
        result = exported.call(ids.astype(np.int32), mask.astype(np.int32))
        out.update({f"default/{case}/{k}": _float32(v) for k, v in result.items()})
    shapes = [str(aval) for aval in exported.in_avals]
    return out, {"runtime": "jax", "version": jax.__version__, "in_avals": shapes, "outputs": sorted(result)}


RUNNERS = {
    "onnx": run_onnx,
    "exported_program": run_exported_program,
    "saved_model": run_saved_model,
    "stablehlo": run_stablehlo,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="run an exported DistilBERT artifact with its plain runtime")
    parser.add_argument("format", choices=sorted(RUNNERS))
    parser.add_argument("artifact")
    parser.add_argument("inputs")
    parser.add_argument("outputs")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    with np.load(args.inputs) as inputs:
        cases = _cases(inputs)
    outputs, info = RUNNERS[args.format](args.artifact, cases, args.threads)
    np.savez(args.outputs, **outputs)
    info["python"] = sys.version.split()[0]
    info["numpy"] = metadata.version("numpy")
    info["distilbert_mf_modules"] = sorted(name for name in sys.modules if name.split(".")[0] == "distilbert_mf")
    sys.stdout.write(json.dumps(info) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
