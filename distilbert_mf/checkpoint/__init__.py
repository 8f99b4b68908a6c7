"""Framework-neutral checkpoints: canonical names, every transformers file format, Hub resolution.

Numpy in, numpy out: nothing here imports torch, TensorFlow or JAX.
"""

from distilbert_mf.checkpoint.loading import (
    LoadReport,
    ShapeMismatchError,
    load_pretrained,
    prepare_state_dict,
    save_pretrained,
)
from distilbert_mf.checkpoint.names import (
    ARCHITECTURES,
    HEADS,
    PREFIX,
    base_shapes,
    expected_shapes,
    head_shapes,
    sinusoidal_table,
)

__all__ = [
    "ARCHITECTURES",
    "HEADS",
    "PREFIX",
    "LoadReport",
    "ShapeMismatchError",
    "base_shapes",
    "expected_shapes",
    "head_shapes",
    "load_pretrained",
    "prepare_state_dict",
    "save_pretrained",
    "sinusoidal_table",
]
