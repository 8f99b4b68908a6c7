"""Read and write weight files in every format transformers wrote, by canonical name.

``read_weights(files, fmt)`` returns ``{canonical_name: np.ndarray}``; ``write_weights`` writes one format.
Formats: ``safetensors``, ``pytorch_bin``, ``tf_h5``, ``flax_msgpack`` (each with its sharded index), one entry
each in :data:`distilbert_mf.checkpoint.formats.REGISTRY`. Canonical names are transformers' PyTorch state-dict
keys; float32 / float16 / bfloat16 (``ml_dtypes.bfloat16``) arrays pass through every reader and writer
bit-exactly. No ML framework is imported.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from distilbert_mf.checkpoint import sharding
from distilbert_mf.checkpoint.formats import get_format
from distilbert_mf.checkpoint.names import check_head, for_head
from distilbert_mf.checkpoint.safetensors_format import read_safetensors
from distilbert_mf.checkpoint.sharding import DEFAULT_MAX_SHARD_SIZE
from distilbert_mf.hub import FORMATS, INDEX_NAMES, PREFERENCE, WEIGHTS_NAMES, check_format

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)


def read_weights(
    files: Sequence[str | os.PathLike[str]], fmt: str, *, pytorch_reader: str = "restricted"
) -> dict[str, np.ndarray]:
    """Read weight ``files`` (one file, or the shards of an index) of format ``fmt`` into canonical arrays.

    ``pytorch_reader``: ``"restricted"`` (default; no torch, never executes pickle code) or ``"torch"``
    (``torch.load(weights_only=True)``), used for ``pytorch_bin`` only.
    """
    entry = get_format(fmt)
    state: dict[str, np.ndarray] = {}
    for file in files:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"weights file {path} does not exist")
        state.update(entry.read(path, pytorch_reader=pytorch_reader))
    return state


def write_weights(
    directory: str | os.PathLike[str],
    state: dict[str, np.ndarray],
    fmt: str,
    *,
    head: str,
    config: DistilBertConfig,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> list[Path]:
    """Write ``state`` (canonical names) into ``directory`` in format ``fmt``; returns the written files.

    The layout is the one transformers' class for ``head`` writes and loads (PyTorch names for ``safetensors``
    and ``pytorch_bin``, Keras names for ``tf_h5``, the Linen tree for ``flax_msgpack``). Past ``max_shard_size``
    (bytes, or a string such as ``"5GB"`` / ``"100MB"``) the weights are split into numbered shards plus an
    ``*.index.json``. Every file is written to a temporary name and renamed, shards before the index; files of a
    previous save in the same format that the new save does not produce are removed afterwards.
    """
    entry = get_format(fmt)
    check_head(head)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"cannot write weights into {directory}: it is a file, not a folder")
    directory.mkdir(parents=True, exist_ok=True)
    entries, aliases = entry.layout(
        for_head({k: np.asarray(v, order="C") for k, v in state.items()}, head), head, config
    )
    plan = sharding.plan_shards(((name, array.nbytes) for name, array in entries.items()), max_shard_size)
    weights_name = entry.weights_name
    if len(plan) == 1:
        target = directory / weights_name
        entry.write(target, entries, aliases, head=head, shard=False)
        sharding.remove_stale(directory, weights_name, keep=[weights_name])
        return [target]
    names = sharding.shard_file_names(weights_name, len(plan))
    weight_map: dict[str, str] = {}
    written: list[Path] = []
    for file_name, members in zip(names, plan):
        part = {name: entries[name] for name in members}
        part_aliases = {alias: target for alias, target in aliases.items() if target in part}
        entry.write(directory / file_name, part, part_aliases, head=head, shard=True)
        written.append(directory / file_name)
        for name in [*members, *part_aliases]:
            weight_map[entry.index_key(name, head)] = file_name
    total = sum(array.nbytes for array in entries.values())
    written.append(entry.write_index(directory, weight_map, total))
    sharding.remove_stale(directory, weights_name, keep=[*names, entry.index_name])
    return written


__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "FORMATS",
    "INDEX_NAMES",
    "PREFERENCE",
    "WEIGHTS_NAMES",
    "check_format",
    "read_safetensors",
    "read_weights",
    "write_weights",
]
