"""transformers' Linen ``flax_model.msgpack``, read and written with msgpack alone (no flax, no jax).

The file is ``flax.serialization.to_bytes(params)``: a msgpack map of nested maps (``distilbert`` / ``transformer`` /
``layer`` / ``"0"`` / ``attention`` / ``q_lin`` / ``kernel``; the base model has no ``distilbert`` level) whose
leaves are msgpack extension type 1: a msgpack triple ``(shape, dtype name, C-order bytes)``. Arrays larger than
2**30 bytes are split into ``{"__msgpack_chunked_array__": True, "shape": ..., "chunks": ...}`` maps, as flax does.
Sharded: ``flax_model-00001-of-0000N.msgpack`` files, each a tree, and ``flax_model.msgpack.index.json`` whose keys
are ``/``-joined paths.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import msgpack
import numpy as np

from distilbert_mf._io import atomic_write_bytes
from distilbert_mf.checkpoint.layouts import from_flax_path, rename_arrays, to_flax_path
from distilbert_mf.checkpoint.names import without_generated_table, without_tied_projector

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

_NDARRAY, _NATIVE_COMPLEX, _NPSCALAR = 1, 2, 3  # flax.serialization's extension type codes
_CHUNKED = "__msgpack_chunked_array__"
MAX_CHUNK_SIZE = 2**30  # flax splits array leaves above this many bytes
# dtype names a parameter file may hold (anything else, e.g. object arrays, is refused)
_DTYPES = {
    name: np.dtype(name)
    for name in (
        "float16",
        "float32",
        "float64",
        "int8",
        "int16",
        "int32",
        "int64",
        "uint8",
        "uint16",
        "uint32",
        "uint64",
        "bool",
    )
}
_DTYPES["bfloat16"] = np.dtype(ml_dtypes.bfloat16)


class FlaxFileError(ValueError):
    """A ``flax_model.msgpack`` that is corrupt or holds something other than a parameter tree."""


def _array_from_ext(data: bytes, source: str) -> np.ndarray:
    shape, dtype_name, buffer = msgpack.unpackb(data, raw=True)
    name = dtype_name.decode("ascii") if isinstance(dtype_name, bytes) else str(dtype_name)
    if name not in _DTYPES:
        raise FlaxFileError(f"{source}: array of dtype {name!r} is not supported; expected one of {sorted(_DTYPES)}")
    dtype = _DTYPES[name]
    shape = tuple(int(n) for n in shape)
    if len(buffer) != int(np.prod(shape)) * dtype.itemsize:
        raise FlaxFileError(f"{source}: array of shape {shape} and dtype {name} has {len(buffer)} bytes: corrupt file")
    return np.frombuffer(bytearray(buffer), dtype=dtype).reshape(shape)


def _unpack(data: bytes, source: str) -> Any:
    def ext_hook(code: int, payload: bytes) -> Any:
        if code == _NDARRAY:
            return _array_from_ext(payload, source)
        if code == _NPSCALAR:
            return _array_from_ext(payload, source)[()]
        raise FlaxFileError(f"{source}: unsupported msgpack extension type {code} (only flax ndarrays are expected)")

    try:
        return msgpack.unpackb(data, ext_hook=ext_hook, raw=False, strict_map_key=False)
    except FlaxFileError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError) as err:
        raise FlaxFileError(f"{source} is not a readable flax msgpack file: {err}") from err


def _unchunk(node: dict[str, Any]) -> np.ndarray:
    shape = tuple(node["shape"][str(i)] for i in range(len(node["shape"])))
    chunks = [node["chunks"][str(i)] for i in range(len(node["chunks"]))]
    return np.concatenate(chunks).reshape(shape)


def _leaves(tree: Any, path: tuple[str, ...], source: str) -> Iterator[tuple[tuple[str, ...], np.ndarray]]:
    if isinstance(tree, dict):
        if _CHUNKED in tree:
            yield path, _unchunk(tree)
            return
        for key, value in tree.items():
            yield from _leaves(value, (*path, str(key)), source)
    elif isinstance(tree, np.ndarray):
        yield path, tree
    else:
        raise FlaxFileError(f"{source}: unexpected {type(tree).__name__} at {'/'.join(path) or 'the root'}")


def read_flax_msgpack(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``flax_model.msgpack`` (single file or one shard) into canonical ``{name: array}``."""
    path = Path(path)
    tree = _unpack(path.read_bytes(), str(path))
    if not isinstance(tree, dict):
        raise FlaxFileError(f"{path} holds a {type(tree).__name__}, not a parameter tree")
    if set(tree) == {"params"}:  # a {"params": ...} variables dict rather than bare params
        tree = tree["params"]
    return rename_arrays(_leaves(tree, (), str(path)), lambda leaf_path, _: from_flax_path(leaf_path))


def flax_entries(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical state (already prefixed for the head) -> ``{"/"-joined Linen path: array}``."""

    def table(key: str, array: np.ndarray) -> tuple[str, bool]:
        leaf_path, transpose = to_flax_path(key, array.ndim)
        return "/".join(leaf_path), transpose

    return rename_arrays(state.items(), table)


def _ext_pack(obj: Any) -> msgpack.ExtType:
    if isinstance(obj, np.ndarray):
        array = np.asarray(obj, order="C")
        payload = msgpack.packb((array.shape, array.dtype.name, array.tobytes()), use_bin_type=True)
        return msgpack.ExtType(_NDARRAY, payload)
    raise TypeError(f"cannot write {type(obj).__name__} into a flax msgpack file")


def _chunk(array: np.ndarray) -> dict[str, Any] | np.ndarray:
    if array.nbytes <= MAX_CHUNK_SIZE:
        return array
    size = max(1, MAX_CHUNK_SIZE // array.dtype.itemsize)
    flat = np.asarray(array, order="C").reshape(-1)
    chunks = [flat[i : i + size] for i in range(0, flat.size, size)]
    return {
        _CHUNKED: True,
        "shape": {str(i): n for i, n in enumerate(array.shape)},
        "chunks": {str(i): c for i, c in enumerate(chunks)},
    }


def write_flax_msgpack(path: str | os.PathLike[str], entries: dict[str, np.ndarray]) -> Path:
    """Write ``entries`` (from :func:`flax_entries`) atomically as one nested msgpack tree."""
    tree: dict[str, Any] = {}
    for name, array in entries.items():
        node = tree
        *parents, leaf = name.split("/")
        for part in parents:
            node = node.setdefault(part, {})
        if array.dtype not in _DTYPES.values():
            raise TypeError(f"cannot write {name!r} with dtype {array.dtype}; supported: {sorted(_DTYPES)}")
        node[leaf] = _chunk(array)
    data = msgpack.packb(tree, default=_ext_pack, strict_types=True)
    atomic_write_bytes(path, data)
    return Path(path)


# ----------------------------------------------------------------------------------------------- format protocol


def read(path: Path) -> dict[str, np.ndarray]:
    """Canonical arrays of one file or shard (see :mod:`distilbert_mf.checkpoint.formats`)."""
    return read_flax_msgpack(path)


def layout(
    state: dict[str, np.ndarray], head: str, config: DistilBertConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The Linen tree (``/``-joined paths); neither the tied projector nor a generated sinusoidal table is stored."""
    return flax_entries(without_generated_table(without_tied_projector(state, config), config, head)), {}


def write(path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], *, head: str, shard: bool) -> Path:
    """Write one file (or shard) atomically."""
    return write_flax_msgpack(path, entries)
