"""TensorFlow SavedModel of a Keras DistilBERT, ready for TF Serving.

The folder is the SavedModel (``saved_model.pb``, ``variables/``) with two signatures over the same weights:
``serving_default`` takes ``input_ids`` / ``attention_mask`` as int64 (what tokenizers return in numpy, and
what TF Serving's REST API feeds JSON integers as), ``serving_int32`` the same as int32; both have dynamic
(batch, sequence) shapes ((batch, choices, sequence) for multiple choice) and return a dict of the task's outputs.
``tf.saved_model.load`` runs it without distilbert_mf or Keras. Written with ``keras.export.ExportArchive`` over
the model's own :meth:`serve` computation.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

from distilbert_mf.export.tasks import INPUT_NAMES, ExportTask

logger = logging.getLogger(__name__)

SIGNATURES = {"serving_default": "int64", "serving_int32": "int32"}


def write_saved_model(
    model: Any, folder: Path, task: ExportTask, *, dtype: str = "float32", opset: int | None = None
) -> dict[str, Any]:
    """Write the SavedModel into ``folder`` (a Keras model on the TensorFlow backend); returns what was written
    (``opset``: ONNX only, unused)."""
    import keras
    import tensorflow as tf

    if keras.backend.backend() != "tensorflow":
        raise ValueError(
            f"the saved_model export needs the TensorFlow Keras backend, got KERAS_BACKEND={keras.backend.backend()!r}"
        )
    outputs = task.output_names
    shape = [None] * len(task.input_axes)

    def serve(input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        result = model.serve(input_ids, attention_mask)
        return {name: result[name] for name in outputs}

    before = set(folder.rglob("*"))  # config.json and the tokenizer files, copied first
    started = time.perf_counter()
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, int_dtype in SIGNATURES.items():
        specs = [tf.TensorSpec(shape, getattr(tf, int_dtype), name=input_name) for input_name in INPUT_NAMES]
        archive.add_endpoint(name, serve, input_signature=specs)
    archive.write_out(str(folder), verbose=False)
    seconds = time.perf_counter() - started
    logger.info("wrote the SavedModel %s in %.1f s", folder, seconds)
    files = sorted(str(p.relative_to(folder)) for p in set(folder.rglob("*")) - before if p.is_file())
    return {"files": files, "signatures": dict(SIGNATURES), "export_seconds": round(seconds, 2)}
