"""What the two PyTorch exporters (ONNX, ExportedProgram) share: the serving wrapper, example inputs and the
dynamic dimensions of ``torch.export``."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from distilbert_mf.export.tasks import BATCH, CHOICES, SEQUENCE, ExportTask

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class ServingModule(torch.nn.Module):
    """``model`` called as a server calls it: ``(input_ids, attention_mask)`` -> the task's outputs, as a tuple in
    ``task.output_names`` order or, with ``as_dict``, as a dict of tensors (no distilbert_mf output class, so the
    artifact needs no distilbert_mf to load)."""

    def __init__(self, model: torch.nn.Module, task: ExportTask, *, as_dict: bool = False) -> None:
        super().__init__()
        self.model = model
        self.output_names = task.output_names
        self.as_dict = as_dict

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> Any:
        out = self.model(input_ids=input_ids, attention_mask=attention_mask, return_dict=True)
        values = tuple(out[name] for name in self.output_names)
        return dict(zip(self.output_names, values)) if self.as_dict else values


def prepare(model: torch.nn.Module, task: ExportTask, dtype: str, *, as_dict: bool) -> ServingModule:
    """The eval-mode serving wrapper of ``model`` on the CPU in ``dtype``."""
    model = model.to(device="cpu", dtype=TORCH_DTYPES[dtype]).eval()
    return ServingModule(model, task, as_dict=as_dict).eval()


def example_inputs(config: Any, task: ExportTask) -> tuple[torch.Tensor, torch.Tensor]:
    """A traced example: int64 ids (2, [3,] seq) with padding in the second row (the mask path is traced)."""
    seq = min(16, config.max_position_embeddings)
    shape = (2, 3, seq) if task.head == "multiple_choice" else (2, seq)
    rng = np.random.default_rng(0)
    ids = torch.from_numpy(rng.integers(1, config.vocab_size, shape, dtype=np.int64))
    mask = torch.ones(shape, dtype=torch.int64)
    mask[1, ..., seq // 2 :] = 0
    return ids, mask


def dynamic_shapes(config: Any, task: ExportTask) -> dict[str, dict[int, Any]]:
    """``torch.export`` dimensions named as the ONNX axes: batch and choices unbounded, the sequence at most
    ``max_position_embeddings`` (the position table's length)."""
    dims = {
        BATCH: torch.export.Dim(BATCH, min=1),
        CHOICES: torch.export.Dim(CHOICES, min=1),
        SEQUENCE: torch.export.Dim(SEQUENCE, min=1, max=config.max_position_embeddings),
    }
    axes = {i: dims[name] for i, name in enumerate(task.input_axes)}
    return {"input_ids": axes, "attention_mask": dict(axes)}
