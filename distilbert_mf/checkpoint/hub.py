"""Resolve ``name_or_path`` (a local folder or a Hugging Face Hub repo id) to local files."""

from __future__ import annotations

import os
from pathlib import Path

from distilbert_mf.checkpoint.io import INDEX_NAMES, PREFERENCE, WEIGHTS_NAMES


def find_weights(folder: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """The best weights in ``folder`` (safetensors first): ``(format, files)``."""
    folder = Path(folder)
    for fmt in PREFERENCE:
        single = folder / WEIGHTS_NAMES[fmt]
        if single.is_file():
            return fmt, [single]
        index = folder / INDEX_NAMES[fmt]
        if index.is_file():
            import json

            with open(index, encoding="utf-8") as handle:
                weight_map = json.load(handle)["weight_map"]
            return fmt, [folder / name for name in dict.fromkeys(weight_map.values())]
    raise FileNotFoundError(
        f"no weights file in {folder}: expected one of {sorted(WEIGHTS_NAMES.values())} or a sharded index"
    )


def resolve_file(
    name_or_path: str | os.PathLike[str],
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> Path:
    from distilbert_mf.models import builtin_path

    path = builtin_path(name_or_path) or Path(name_or_path)
    if path.is_dir():
        if not (path / filename).is_file():
            raise FileNotFoundError(f"{path} has no {filename}")
        return path / filename
    raise NotImplementedError("Hub resolution is not implemented yet")


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    need_config: bool = True,
) -> tuple[Path, str, list[Path]]:
    """``(folder, format, weight_files)`` for a local folder or Hub repo id."""
    from distilbert_mf.models import builtin_path

    path = builtin_path(name_or_path) or Path(name_or_path)
    if path.is_dir():
        if need_config and not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path} has no config.json; pass config= or add the file")
        fmt, files = find_weights(path)
        return path, fmt, files
    raise NotImplementedError("Hub resolution is not implemented yet")
