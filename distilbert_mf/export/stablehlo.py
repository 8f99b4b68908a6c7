"""StableHLO of a Flax NNX DistilBERT through ``jax.export``, serialised to one file (``model.jax_export``).

The function takes ``(input_ids, attention_mask)`` (int32) of symbolic shape ``(batch_size, sequence_length)``
(``(batch_size, num_choices, sequence_length)`` for multiple choice) with the constraint
``sequence_length <= max_position_embeddings``, and returns a dict of the task's outputs. The weights are
constants of the module, so the one file is the whole model::

    exported = jax.export.deserialize(bytearray(open("model.jax_export", "rb").read()))
    outputs = exported.call(input_ids, attention_mask)   # only jax needed

The module is lowered for CPU, CUDA and TPU at once (the platform is picked when it is called; verification runs
on the CPU). The CPU kernels of the Flax package step aside for symbolic shapes: the module holds the plain math.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distilbert_mf.export.tasks import ExportTask

logger = logging.getLogger(__name__)

ARTIFACT = "model.jax_export"
# lowered for every platform jax serves on (one module, the platform chosen when it is called); verified on the CPU
PLATFORMS = ("cpu", "cuda", "tpu")


def symbolic_inputs(config: Any, task: ExportTask) -> tuple[Any, Any]:
    """Two int32 ``jax.ShapeDtypeStruct`` of the task's symbolic input shape."""
    import jax
    import jax.numpy as jnp

    dims = jax.export.symbolic_shape(
        ", ".join(task.input_axes), constraints=[f"sequence_length <= {config.max_position_embeddings}"]
    )
    spec = jax.ShapeDtypeStruct(dims, jnp.int32)
    return spec, spec


def write_stablehlo(
    model: Any, folder: Path, task: ExportTask, *, dtype: str = "float32", opset: int | None = None
) -> dict[str, Any]:
    """Write ``folder/model.jax_export`` (``jax.export.Exported.serialize()``); returns what was written
    (``opset``: ONNX only, unused)."""
    import jax
    from flax import nnx

    model.eval()
    graphdef, state = nnx.split(model)
    outputs = task.output_names

    def forward(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        result = nnx.merge(graphdef, state)(input_ids=input_ids, attention_mask=attention_mask)
        return {name: result[name] for name in outputs}

    started = time.perf_counter()
    exported = jax.export.export(jax.jit(forward), platforms=PLATFORMS)(*symbolic_inputs(model.config, task))
    path = folder / ARTIFACT
    path.write_bytes(exported.serialize())
    seconds = time.perf_counter() - started
    logger.info("wrote %s (%.1f MB) in %.1f s", path, path.stat().st_size / 1e6, seconds)
    return {
        "files": [ARTIFACT],
        "platforms": list(exported.platforms),
        "in_avals": [str(aval) for aval in exported.in_avals],
        "calling_convention_version": exported.calling_convention_version,
        "export_seconds": round(seconds, 2),
    }
