"""``torch.export`` of a PyTorch DistilBERT to an ExportedProgram file (``model.pt2``) with dynamic shapes.

The program takes ``(input_ids, attention_mask)`` (int64, dynamic batch / sequence, plus choices for multiple
choice) and returns a plain dict of tensors, so ``torch.export.load("model.pt2").module()`` runs it in a process
that has only torch. The CPU kernels of :mod:`distilbert_mf.torch.cpu_kernels` step aside under export: the
program holds the plain math.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from distilbert_mf.export.tasks import ExportTask
from distilbert_mf.export.torch_module import dynamic_shapes, example_inputs, prepare

logger = logging.getLogger(__name__)


def write_exported_program(
    model: torch.nn.Module, folder: Path, task: ExportTask, *, dtype: str = "float32", opset: int | None = None
) -> dict[str, Any]:
    """Write ``folder/model.pt2``; returns what was written (``opset``: ONNX only, unused)."""
    serving = prepare(model, task, dtype, as_dict=True)
    config = model.config
    path = folder / "model.pt2"
    started = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(
            serving, example_inputs(config, task), dynamic_shapes=dynamic_shapes(config, task)
        )
    torch.export.save(program, str(path))
    seconds = time.perf_counter() - started
    logger.info("wrote %s in %.1f s", path, seconds)
    return {"files": [path.name], "export_seconds": round(seconds, 2)}
