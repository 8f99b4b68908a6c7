"""Framework-neutral checkpoints: canonical names, every transformers file format, loading and saving.

Numpy in, numpy out: nothing here imports torch, TensorFlow or JAX. Finding files (names, Hub, cache) is the
layer below, :mod:`distilbert_mf.hub`. The names below are imported on first use, so importing one submodule
(``checkpoint.sharding``, ``checkpoint.names``) does not load the loader or any weight reader.
"""

from __future__ import annotations

import importlib
from typing import Any

# name -> the submodule that defines it
_EXPORTS = {
    "LoadReport": "loading",
    "ShapeMismatchError": "loading",
    "load_pretrained": "loading",
    "prepare_state_dict": "loading",
    "save_pretrained": "loading",
    "ARCHITECTURES": "names",
    "HEADS": "names",
    "PREFIX": "names",
    "TIED_KEY": "names",
    "TIED_SOURCE": "names",
    "base_shapes": "names",
    "check_head": "names",
    "expected_shapes": "names",
    "for_head": "names",
    "head_shapes": "names",
    "sinusoidal_table": "names",
    "DEFAULT_MAX_SHARD_SIZE": "sharding",
    "REGISTRY": "formats",
    "WeightsFormat": "formats",
    "read_weights": "io",
    "write_weights": "io",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
