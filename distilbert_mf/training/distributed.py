"""Framework-neutral parts of the sharded checkpoints (PyTorch DCP, orbax, Keras): the check that a checkpoint's
arrays fit the model and optimizer that are about to receive them, before any collective starts, so every process
raises the same error."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

__all__ = ["check_stored_shapes"]


def check_stored_shapes(
    folder: str | os.PathLike[str],
    stored: Mapping[str, tuple[int, ...]],
    wanted: Mapping[str, tuple[int, ...]],
    *,
    ignore: Callable[[str], bool] = lambda name: False,
) -> None:
    """Raise ``ValueError`` naming up to four missing, unexpected and mis-shaped arrays when ``stored`` (name ->
    global shape in the checkpoint at ``folder``) does not fit ``wanted`` (what the model and optimizer hold);
    stored names for which ``ignore(name)`` holds may be absent from ``wanted``."""
    missing = sorted(name for name in wanted if name not in stored)
    unexpected = sorted(name for name in stored if name not in wanted and not ignore(name))
    wrong = sorted(name for name in wanted if name in stored and tuple(stored[name]) != tuple(wanted[name]))
    if not (missing or unexpected or wrong):
        return
    parts = [
        f"missing {missing[:4]}" if missing else "",
        f"unexpected {unexpected[:4]}" if unexpected else "",
        ", ".join(f"{name}: stored {tuple(stored[name])}, model {tuple(wanted[name])}" for name in wrong[:4]),
    ]
    raise ValueError(f"{folder} does not fit this model and optimizer: {'; '.join(p for p in parts if p)}")
