"""Read and write weight files in every format transformers wrote, by canonical name.

``read_weights(files, fmt)`` returns ``{canonical_name: np.ndarray}``; ``write_weights`` writes one format.
Formats: ``safetensors``, ``pytorch_bin``, ``tf_h5``, ``flax_msgpack`` (each with its sharded index). Canonical names
are transformers' PyTorch state-dict keys; float32 / float16 / bfloat16 (``ml_dtypes.bfloat16``) arrays pass through
every reader and writer bit-exactly. No ML framework is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.checkpoint import sharding
from distilbert_mf.checkpoint.layouts import for_head, from_flax_path, from_tf_name, rename_arrays
from distilbert_mf.checkpoint.names import PREFIX, TIED_KEY, TIED_SOURCE, check_head, sinusoidal_table
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

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


# ----------------------------------------------------------------------------------------------- reading


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
    import json
    import struct

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


def _reader(fmt: str, pytorch_reader: str) -> Callable[[Path], dict[str, np.ndarray]]:
    if fmt == "safetensors":
        return read_safetensors
    if fmt == "pytorch_bin":
        from distilbert_mf.checkpoint.pytorch_bin import read_pytorch_bin

        return lambda path: read_pytorch_bin(path, reader=pytorch_reader)
    if fmt == "tf_h5":
        from distilbert_mf.checkpoint.tf_h5 import read_tf_h5

        return read_tf_h5
    from distilbert_mf.checkpoint.flax_msgpack import read_flax_msgpack

    return read_flax_msgpack


def read_weights(
    files: Sequence[str | os.PathLike[str]], fmt: str, *, pytorch_reader: str = "restricted"
) -> dict[str, np.ndarray]:
    """Read weight ``files`` (one file, or the shards of an index) of format ``fmt`` into canonical arrays.

    ``pytorch_reader``: ``"restricted"`` (default; no torch, never executes pickle code) or ``"torch"``
    (``torch.load(weights_only=True)``), used for ``pytorch_bin`` only.
    """
    check_format(fmt)
    read = _reader(fmt, pytorch_reader)
    state: dict[str, np.ndarray] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        state.update(read(path))
    return state


# ----------------------------------------------------------------------------------------------- writing


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)))


def _drop_tied_projector(state: dict[str, np.ndarray], config: DistilBertConfig) -> dict[str, np.ndarray]:
    """Drop ``vocab_projector.weight`` when it is the tied word embedding (it is re-tied on load)."""
    if TIED_KEY not in state or not config.tie_word_embeddings:
        return state
    source = state.get(TIED_SOURCE)
    if source is not None and _same(np.ascontiguousarray(state[TIED_KEY]), np.ascontiguousarray(source)):
        return {k: v for k, v in state.items() if k != TIED_KEY}
    logger.warning(
        "config.tie_word_embeddings is True but %s differs from %s; writing it separately", TIED_KEY, TIED_SOURCE
    )
    return state


def _drop_generated_table(state: dict[str, np.ndarray], config: DistilBertConfig, head: str) -> dict[str, np.ndarray]:
    """Drop a sinusoidal position table that equals the generated one (transformers' Flax never stores it)."""
    key = ("" if head == "base" else PREFIX) + "embeddings.position_embeddings.weight"
    if not config.sinusoidal_pos_embds or key not in state:
        return state
    table = np.asarray(state[key])
    generated = sinusoidal_table(config.max_position_embeddings, config.dim).astype(table.dtype)
    if _same(np.ascontiguousarray(table), generated):
        return {k: v for k, v in state.items() if k != key}
    logger.warning("%s differs from the generated sinusoidal table; writing it (transformers' Flax ignores it)", key)
    return state


def _file_entries(
    state: dict[str, np.ndarray], fmt: str, head: str, config: DistilBertConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """``({name in the file: array}, {alias: name it shares storage with})`` for format ``fmt``."""
    state = for_head({k: np.asarray(v, order="C") for k, v in state.items()}, head)
    if fmt == "pytorch_bin":
        # transformers' .bin stores the tied projector as a second reference to the embedding storage
        aliases: dict[str, str] = {}
        if head == "masked_lm" and config.tie_word_embeddings and TIED_SOURCE in state:
            if TIED_KEY not in state or _same(state[TIED_KEY], state[TIED_SOURCE]):
                state.pop(TIED_KEY, None)
                aliases[TIED_KEY] = TIED_SOURCE
        return state, aliases
    state = _drop_tied_projector(state, config)
    if fmt == "safetensors":
        return state, {}
    if fmt == "tf_h5":
        from distilbert_mf.checkpoint.tf_h5 import tf_entries

        prefixed = {(PREFIX + k if head == "base" else k): v for k, v in state.items()}  # TF always nests
        return tf_entries(prefixed), {}
    from distilbert_mf.checkpoint.flax_msgpack import flax_entries

    return flax_entries(_drop_generated_table(state, config, head)), {}


def _write_file(
    path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], fmt: str, head: str, shard: bool
) -> None:
    if fmt == "safetensors":
        from safetensors.numpy import save_file

        with atomic_path(path) as tmp:
            save_file(entries, str(tmp), metadata={"format": "pt"})
    elif fmt == "pytorch_bin":
        from distilbert_mf.checkpoint.pytorch_bin import write_pytorch_bin

        write_pytorch_bin(path, entries, aliases=aliases)
    elif fmt == "tf_h5":
        from distilbert_mf.checkpoint.tf_h5 import write_tf_h5

        write_tf_h5(path, entries, head, shard=shard)
    else:
        from distilbert_mf.checkpoint.flax_msgpack import write_flax_msgpack

        write_flax_msgpack(path, entries)


def write_weights(
    directory: str | os.PathLike[str],
    state: dict[str, np.ndarray],
    fmt: str,
    *,
    head: str,
    config: DistilBertConfig,
    max_shard_size: int | str = "5GB",
) -> list[Path]:
    """Write ``state`` (canonical names) into ``directory`` in format ``fmt``; returns the written files.

    The layout is the one transformers' class for ``head`` writes and loads (PyTorch names for ``safetensors``
    and ``pytorch_bin``, Keras names for ``tf_h5``, the Linen tree for ``flax_msgpack``). Past ``max_shard_size``
    (bytes, or a string such as ``"5GB"`` / ``"100MB"``) the weights are split into numbered shards plus an
    ``*.index.json``. Every file is written to a temporary name and renamed, shards before the index; files of a
    previous save in the same format that the new save does not produce are removed afterwards.
    """
    check_format(fmt)
    check_head(head)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot write weights into {directory}: it is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    entries, aliases = _file_entries(state, fmt, head, config)
    plan = sharding.plan_shards(((name, array.nbytes) for name, array in entries.items()), max_shard_size)
    weights_name = WEIGHTS_NAMES[fmt]
    if len(plan) == 1:
        target = directory / weights_name
        _write_file(target, entries, aliases, fmt, head, shard=False)
        sharding.remove_stale(directory, weights_name, keep=[weights_name])
        return [target]
    names = sharding.shard_file_names(weights_name, len(plan))
    weight_map: dict[str, str] = {}
    written: list[Path] = []
    for file_name, members in zip(names, plan):
        part = {name: entries[name] for name in members}
        part_aliases = {alias: target for alias, target in aliases.items() if target in part}
        _write_file(directory / file_name, part, part_aliases, fmt, head, shard=True)
        written.append(directory / file_name)
        for name in [*members, *part_aliases]:
            weight_map[_index_key(name, fmt, head)] = file_name
    total = sum(array.nbytes for array in entries.values())
    written.append(sharding.write_index(directory / INDEX_NAMES[fmt], weight_map, total))
    sharding.remove_stale(directory, weights_name, keep=[*names, INDEX_NAMES[fmt]])
    return written


def _index_key(name: str, fmt: str, head: str) -> str:
    if fmt == "tf_h5":
        from distilbert_mf.checkpoint.tf_h5 import index_key

        return index_key(name, head)
    return name
