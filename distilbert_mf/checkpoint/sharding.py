"""Sharding shared by every format: size strings, the shard plan, shard file names and ``*.index.json``.

The plan follows transformers: weights are taken in order and a new shard starts when the next weight would
push the current one past ``max_shard_size`` (a weight larger than the limit gets a shard of its own).
The index is ``{"metadata": {"total_size": bytes}, "weight_map": {name: shard file}}``; reading it
(:func:`read_index`, :func:`shard_files`) lives in :mod:`distilbert_mf.hub`, which needs it to find the shards.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

from distilbert_mf._io import atomic_write_bytes
from distilbert_mf.hub import read_index, shard_files

__all__ = [
    "DEFAULT_MAX_SHARD_SIZE",
    "parse_size",
    "plan_shards",
    "read_index",
    "remove_stale",
    "shard_file_names",
    "shard_files",
    "write_index",
]

# every save_pretrained / write_weights / convert shards past this size unless told otherwise (as transformers)
DEFAULT_MAX_SHARD_SIZE = "5GB"

_UNITS = {
    "B": 1,
    "KB": 10**3,
    "MB": 10**6,
    "GB": 10**9,
    "TB": 10**12,
    "KIB": 2**10,
    "MIB": 2**20,
    "GIB": 2**30,
    "TIB": 2**40,
}
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*((?:[KMGT]i?)?B)\s*$", re.IGNORECASE)


def parse_size(size: int | str) -> int:
    """``5_000_000``, ``"5GB"`` (10**9), ``"100MB"``, ``"2GiB"`` (2**30) -> bytes (a positive int)."""
    if isinstance(size, bool):
        raise TypeError(f"max_shard_size must be an int (bytes) or a string like '5GB', got {size!r}")
    if isinstance(size, int):
        value = size
    elif isinstance(size, str):
        match = _SIZE.match(size)
        if match is None:
            raise ValueError(
                f"cannot read max_shard_size={size!r}: expected a number of bytes or a number followed by one of "
                "B, KB, MB, GB, TB (powers of 10) or KiB, MiB, GiB, TiB (powers of 2), e.g. '5GB' or '100MB'"
            )
        value = int(float(match.group(1)) * _UNITS[match.group(2).upper()])
    else:
        raise TypeError(f"max_shard_size must be an int (bytes) or a string like '5GB', got {type(size).__name__}")
    if value <= 0:
        raise ValueError(f"max_shard_size must be positive, got {size!r}")
    return value


def plan_shards(sizes: Iterable[tuple[str, int]], max_shard_size: int | str) -> list[list[str]]:
    """Group names (with their sizes in bytes, in order) into shards of at most ``max_shard_size`` bytes."""
    limit = parse_size(max_shard_size)
    shards: list[list[str]] = [[]]
    current = 0
    for name, size in sizes:
        if shards[-1] and current + size > limit:
            shards.append([])
            current = 0
        shards[-1].append(name)
        current += size
    return shards


def shard_file_names(weights_name: str, count: int) -> list[str]:
    """``model.safetensors``, 3 -> ``model-00001-of-00003.safetensors``, ... (transformers' names)."""
    stem, dot, suffix = weights_name.rpartition(".")
    return [f"{stem}-{i:05d}-of-{count:05d}{dot}{suffix}" for i in range(1, count + 1)]


def write_index(path: str | os.PathLike[str], weight_map: Mapping[str, str], total_size: int) -> Path:
    """Write ``*.index.json`` atomically (sorted keys, two-space indent, as transformers writes it)."""
    content = {"metadata": {"total_size": int(total_size)}, "weight_map": dict(weight_map)}
    atomic_write_bytes(path, (json.dumps(content, indent=2, sort_keys=True) + "\n").encode("utf-8"))
    return Path(path)


def remove_stale(directory: Path, weights_name: str, keep: Iterable[str]) -> None:
    """Delete files of a previous save of this format (single file, shards, index) that ``keep`` does not list."""
    stem, _, suffix = weights_name.rpartition(".")
    pattern = re.compile(rf"^{re.escape(stem)}(-\d{{5}}-of-\d{{5}})?\.{re.escape(suffix)}(\.index\.json)?$")
    kept = set(keep)
    for entry in directory.iterdir():
        if entry.name not in kept and pattern.match(entry.name) and entry.is_file():
            entry.unlink()
