"""Read and write weight files in every format transformers wrote, by canonical name.

``read_weights(files, fmt)`` returns ``{canonical_name: np.ndarray}``; ``write_weights`` writes one format.
Formats: ``safetensors``, ``pytorch_bin``, ``tf_h5``, ``flax_msgpack`` (each with its sharded index).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.config import DistilBertConfig

FORMATS = ("safetensors", "pytorch_bin", "tf_h5", "flax_msgpack")
WEIGHTS_NAMES = {
    "safetensors": "model.safetensors",
    "pytorch_bin": "pytorch_model.bin",
    "tf_h5": "tf_model.h5",
    "flax_msgpack": "flax_model.msgpack",
}
INDEX_NAMES = {fmt: name + ".index.json" for fmt, name in WEIGHTS_NAMES.items()}
# which format to prefer when a folder holds several
PREFERENCE = ("safetensors", "pytorch_bin", "tf_h5", "flax_msgpack")


def check_format(fmt: str) -> str:
    if fmt not in FORMATS:
        raise ValueError(f"unknown weights format {fmt!r}; expected one of {FORMATS}")
    return fmt


def read_weights(files: Sequence[str | os.PathLike[str]], fmt: str) -> dict[str, np.ndarray]:
    """Read weight ``files`` (one file, or the shards of an index) of format ``fmt`` into canonical arrays."""
    check_format(fmt)
    state: dict[str, np.ndarray] = {}
    for file in files:
        if fmt == "safetensors":
            from safetensors.numpy import load_file

            part = load_file(str(file))
        else:
            raise NotImplementedError(f"reading {fmt} is not implemented yet")
        state.update(part)
    return state


def write_weights(
    directory: str | os.PathLike[str],
    state: dict[str, np.ndarray],
    fmt: str,
    *,
    head: str,
    config: DistilBertConfig,
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Write ``state`` (canonical names) into ``directory`` in format ``fmt``; returns the written files."""
    check_format(fmt)
    directory = Path(directory)
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        target = directory / WEIGHTS_NAMES[fmt]
        with atomic_path(target) as tmp:
            save_file({k: np.ascontiguousarray(v) for k, v in state.items()}, str(tmp), metadata={"format": "pt"})
        return [target]
    raise NotImplementedError(f"writing {fmt} is not implemented yet")
