"""``model.safetensors``: a memory-mapped reader written here (numpy only) and the ``safetensors`` package's writer.

The file is an 8-byte little-endian header length, a JSON header ``{name: {"dtype", "shape", "data_offsets"}}``
(plus ``__metadata__``) and the raw tensor bytes. Every array read is a copy-on-write view of the file. Files
transformers' TF or Flax classes wrote (metadata ``format`` ``"tf"`` / ``"flax"``) are renamed to canonical names.
Written files carry PyTorch names and metadata ``{"format": "pt"}``, as transformers' PyTorch classes write them.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.checkpoint.layouts import from_flax_path, from_tf_name, rename_arrays
from distilbert_mf.checkpoint.names import without_tied_projector

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

_SAFETENSORS_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


def _safetensors_dtype(code: str, path: object, key: str) -> np.dtype:
    name = _SAFETENSORS_DTYPES.get(code)
    if name is None:
        raise ValueError(f"{path}: tensor {key!r} has dtype {code!r}; supported: {sorted(_SAFETENSORS_DTYPES)}")
    if name == "bfloat16":
        import ml_dtypes

        return np.dtype(ml_dtypes.bfloat16)
    return np.dtype(name)


def read_safetensors(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read ``model.safetensors`` memory-mapped into canonical arrays, without copying.

    Each array is a copy-on-write view of the file (``np.memmap`` mode ``"c"``): pages are read when first used,
    the file is never written, and a model that trains its weights gets private copies of the pages it changes.
    Files transformers' TF or Flax classes wrote (metadata ``format`` ``"tf"`` / ``"flax"``) are renamed and
    transposed to canonical names; ``"pt"``, ``"mlx"`` or no metadata mean the names are already canonical.
    """
    size = os.path.getsize(path)
    with open(path, "rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise ValueError(f"{path} is not a readable safetensors file: {size} bytes, too short for a header")
        (header_len,) = struct.unpack("<Q", head)
        if header_len > min(size - 8, 100_000_000):
            raise ValueError(f"{path} is not a readable safetensors file: header length {header_len} > file size")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable safetensors file: bad JSON header ({err})") from err
    if not isinstance(header, dict):
        raise ValueError(f"{path} is not a readable safetensors file: the header is not a JSON object")
    fmt = (header.pop("__metadata__", None) or {}).get("format", "pt")
    start = 8 + header_len
    data = np.memmap(path, dtype=np.uint8, mode="c") if size > start else np.zeros(0, np.uint8)
    raw: dict[str, np.ndarray] = {}
    for key, info in header.items():
        try:
            dtype = _safetensors_dtype(info["dtype"], path, key)
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(x) for x in info["data_offsets"])
        except (KeyError, TypeError, ValueError) as err:
            if isinstance(err, ValueError) and "supported:" in str(err):
                raise
            raise ValueError(f"{path} is not a readable safetensors file: bad entry for {key!r} ({err})") from err
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        if end - begin != nbytes or begin < 0 or start + end > size:
            raise ValueError(
                f"{path} is not a readable safetensors file: tensor {key!r} of shape {shape} ({info['dtype']}) "
                f"claims bytes [{begin}, {end}) of a {size - start}-byte data section"
            )
        raw[key] = data[start + begin : start + end].view(dtype).reshape(shape)
    if fmt == "tf":
        return rename_arrays(raw.items(), lambda name, _: from_tf_name(name))
    if fmt == "flax":
        return rename_arrays(raw.items(), lambda name, _: from_flax_path(tuple(name.split("."))))
    return raw


# ----------------------------------------------------------------------------------------------- format protocol


def read(path: Path) -> dict[str, np.ndarray]:
    """Canonical arrays of one file (see :mod:`distilbert_mf.checkpoint.formats`)."""
    return read_safetensors(path)


def layout(
    state: dict[str, np.ndarray], head: str, config: DistilBertConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """PyTorch names as they are, the tied projector stored once."""
    return without_tied_projector(state, config), {}


def write(path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], *, head: str, shard: bool) -> Path:
    """Write one file (or shard) atomically with metadata ``{"format": "pt"}``."""
    from safetensors.numpy import save_file

    with atomic_path(path) as tmp:
        save_file(entries, str(tmp), metadata={"format": "pt"})
    return path
