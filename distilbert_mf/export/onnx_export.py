"""ONNX export of a PyTorch DistilBERT through ``torch.onnx`` (the dynamo exporter, opset >= 18).

The graph takes ``input_ids`` and ``attention_mask`` (int64) with dynamic ``batch_size`` / ``sequence_length``
axes (plus ``num_choices`` for multiple choice) and returns the task's outputs under optimum's names. Keras and
Flax models reach this writer through a conversion to PyTorch weights (:mod:`distilbert_mf.export.api`): the only
maintained converter from TensorFlow, tf2onnx, does not follow current TensorFlow / Keras 3 releases, and the
three frameworks compute the same function, so one well-tested exporter serves all of them.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from distilbert_mf.export.tasks import INPUT_NAMES, ExportTask
from distilbert_mf.export.torch_module import dynamic_shapes, example_inputs, prepare

logger = logging.getLogger(__name__)

MIN_OPSET = 18
DEFAULT_OPSET = 18
EXTERNAL_DATA_BYTES = 1_800_000_000  # protobuf's 2 GiB limit: larger weights go to model.onnx.data


def max_opset() -> int:
    """The newest opset the installed onnx package defines."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: Any) -> int:
    """``opset`` (None: :data:`DEFAULT_OPSET`) as an int in [18, the installed onnx's newest]."""
    if opset is None:
        return DEFAULT_OPSET
    if isinstance(opset, bool) or not isinstance(opset, int):
        raise TypeError(f"opset must be an int >= {MIN_OPSET}, got {opset!r}")
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ValueError(f"opset must be between {MIN_OPSET} and {newest} (the installed onnx's newest), got {opset}")
    return opset


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's known, harmless chatter (missing torchvision ops, axis renames) out of the user's log."""
    exporter_logger = logging.getLogger("torch.onnx._internal.exporter._registration")
    level = exporter_logger.level
    exporter_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*axis name.*will not be used.*")
            warnings.filterwarnings("ignore", category=FutureWarning, message=".*LeafSpec.*")
            yield
    finally:
        exporter_logger.setLevel(level)


def write_onnx(
    model: torch.nn.Module, folder: Path, task: ExportTask, *, dtype: str = "float32", opset: int | None = None
) -> dict[str, Any]:
    """Write ``folder/model.onnx`` (and ``model.onnx.data`` past 1.8 GB of weights); returns what was written."""
    opset = check_opset(opset)
    serving = prepare(model, task, dtype, as_dict=False)
    config = model.config
    path = folder / "model.onnx"
    started = time.perf_counter()
    with _quiet_exporter():
        program = torch.onnx.export(
            serving,
            example_inputs(config, task),
            None,
            dynamo=True,
            opset_version=opset,
            input_names=list(INPUT_NAMES),
            output_names=list(task.output_names),
            dynamic_shapes=dynamic_shapes(config, task),
            optimize=True,
            verbose=False,
        )
    weight_bytes = sum(p.numel() * p.element_size() for p in serving.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    program.save(str(path), external_data=external)
    seconds = time.perf_counter() - started
    logger.info("wrote %s (opset %d) in %.1f s", path, opset, seconds)
    files = [path.name] + ([path.name + ".data"] if external else [])
    return {"files": files, "opset": opset, "external_data": external, "export_seconds": round(seconds, 2)}


def ort_session(path: str | Path, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session with every graph optimisation (``threads`` intra-op threads, sequential)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
