"""The weights-format registry: one :class:`WeightsFormat` entry per file format transformers writes.

An entry names the format's files (single file and sharded index, from :mod:`distilbert_mf.hub`, where the
resolver finds them without loading any reader), the third-party package it needs and the module that implements
it. The module is imported on first use, so reading safetensors never imports h5py or msgpack. Each format module
provides

========================================================  ===================================================
``read(path, **options) -> {canonical name: array}``      one file or shard, canonical (PyTorch) names and layout
``layout(state, head, config) -> (entries, aliases)``     canonical arrays (already prefixed for ``head``) to
                                                          the names the file uses, plus names that share another
                                                          entry's storage
``write(path, entries, aliases, *, head, shard)``         one file, or one shard, written atomically
``index_key(name, head) -> str`` (optional)               the ``*.index.json`` key of an entry (default: its name)
========================================================  ===================================================

The sharded index itself (``{"metadata": {"total_size"}, "weight_map"}``) is the same for every format:
:func:`WeightsFormat.write_index` / :func:`WeightsFormat.shard_files`. To add a format: a module with those
functions, its file names in :data:`distilbert_mf.hub.WEIGHTS_NAMES` (and its place in ``PREFERENCE``), one
entry in :data:`REGISTRY`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from distilbert_mf.checkpoint import sharding
from distilbert_mf.hub import FORMATS, INDEX_NAMES, WEIGHTS_NAMES, check_format

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig


@dataclass(frozen=True)
class WeightsFormat:
    """One weights file format: its files, what it needs installed, and the module that reads and writes it."""

    name: str
    module: str  # implements read / layout / write (/ index_key)
    library: str  # the import name of the package it needs ("zipfile": nothing beyond Python)
    requirement: str  # what to install when ``library`` is missing
    read_options: tuple[str, ...] = field(default=())  # keywords of read_weights its reader accepts

    @property
    def weights_name(self) -> str:
        """``model.safetensors``, ``pytorch_model.bin``, ..."""
        return WEIGHTS_NAMES[self.name]

    @property
    def index_name(self) -> str:
        """``model.safetensors.index.json``, ..."""
        return INDEX_NAMES[self.name]

    def implementation(self) -> ModuleType:
        return importlib.import_module(self.module)

    def read(self, path: str | os.PathLike[str], **options: Any) -> dict[str, np.ndarray]:
        """Canonical arrays of one file or shard; ``options`` this format does not take are left out."""
        own = {key: value for key, value in options.items() if key in self.read_options}
        return self.implementation().read(Path(path), **own)

    def layout(
        self, state: dict[str, np.ndarray], head: str, config: DistilBertConfig
    ) -> tuple[dict[str, np.ndarray], dict[str, str]]:
        """``(entries by the names in the file, {alias: entry it shares storage with})``."""
        return self.implementation().layout(state, head, config)

    def write(
        self, path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], *, head: str, shard: bool
    ) -> Path:
        return self.implementation().write(path, entries, aliases, head=head, shard=shard)

    def index_key(self, name: str, head: str) -> str:
        """The key of entry ``name`` in this format's ``*.index.json``."""
        key = getattr(self.implementation(), "index_key", None)
        return name if key is None else key(name, head)

    def write_index(self, directory: Path, weight_map: Mapping[str, str], total_size: int) -> Path:
        return sharding.write_index(directory / self.index_name, weight_map, total_size)

    def shard_files(self, index_path: str | os.PathLike[str]) -> list[Path]:
        return sharding.shard_files(index_path)


REGISTRY: dict[str, WeightsFormat] = {
    entry.name: entry
    for entry in (
        WeightsFormat("safetensors", "distilbert_mf.checkpoint.safetensors_format", "safetensors", "safetensors"),
        WeightsFormat(
            "pytorch_bin",
            "distilbert_mf.checkpoint.pytorch_bin",
            "zipfile",  # our own reader and writer: no torch needed
            "python's zipfile",
            read_options=("pytorch_reader",),
        ),
        WeightsFormat("tf_h5", "distilbert_mf.checkpoint.tf_h5", "h5py", "h5py"),
        WeightsFormat("flax_msgpack", "distilbert_mf.checkpoint.flax_msgpack", "msgpack", "msgpack"),
    )
}
if tuple(REGISTRY) != FORMATS:  # pragma: no cover - a contributor added a format in one place only
    raise ImportError(f"the format registry {tuple(REGISTRY)} and distilbert_mf.hub.FORMATS {FORMATS} differ")


def get_format(fmt: str) -> WeightsFormat:
    """The registry entry of ``fmt``; a ``ValueError`` naming the formats when there is none."""
    return REGISTRY[check_format(fmt)]
