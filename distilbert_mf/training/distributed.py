"""Framework-neutral parts of sharded training (PyTorch DCP, JAX meshes, Keras layouts): whether a model-parallel
axis divides the sizes it splits, and whether a checkpoint's arrays fit the model and optimizer that are about to
receive them — both checked before any collective starts, so every process raises the same error."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping

__all__ = ["SPLIT_SIZES", "check_model_axis", "check_stored_shapes"]

# the logical axes a model-parallel layout splits -> the config fields each must divide (attention heads are split
# whole: n_heads, and the projections' width dim)
SPLIT_SIZES = {"heads": ("n_heads", "dim"), "mlp": ("hidden_dim",), "vocab": ("vocab_size",)}


def check_model_axis(
    config: object, size: int, axis: str = "model", logical: tuple[str, ...] = tuple(SPLIT_SIZES)
) -> None:
    """``ValueError`` naming the config field, both sizes and a fix when a model-parallel axis of ``size`` devices
    does not divide a size it splits (``logical``: the logical axes laid out on it)."""
    for name in logical:
        for field in SPLIT_SIZES.get(name, ()):
            value = getattr(config, field)
            if value % size:
                raise ValueError(
                    f"{field}={value} does not divide over mesh axis {axis!r} of size {size} (logical axis "
                    f"{name!r}); use a model axis that divides it, or leave {name!r} out of the rules"
                )


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
