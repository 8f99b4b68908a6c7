"""From a checkpoint on disk (any format) to the canonical arrays one head expects, and back.

``load_pretrained`` is the framework-neutral half of every ``from_pretrained``: it resolves the folder or Hub
repo, reads the config and the best weights file, adapts base <-> head prefixes, fills the tied projector and a
missing sinusoidal table, checks every shape, and reports missing / unexpected keys in one log message.
The framework half only copies the returned arrays into its variables.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.checkpoint.names import (
    ARCHITECTURES,
    PREFIX,
    TIED_KEY,
    TIED_SOURCE,
    check_head,
    expected_shapes,
    sinusoidal_table,
)
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

# keys some transformers versions stored that carry no weights
_IGNORED_SUFFIXES = ("embeddings.position_ids",)
DEFAULT_MAX_SHARD_SIZE = "5GB"


@dataclass
class LoadReport:
    """What a load found: keys the model expected but the checkpoint lacked, and keys it did not use."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    generated: list[str] = field(default_factory=list)  # filled in here: tied projector, sinusoidal table
    source: str = ""


class ShapeMismatchError(ValueError):
    """A checkpoint tensor's shape differs from the one the config implies."""


def _legacy_rename(key: str) -> str:
    # very old PyTorch checkpoints named LayerNorm parameters gamma/beta
    if key.endswith(".gamma"):
        return key[: -len(".gamma")] + ".weight"
    if key.endswith(".beta"):
        return key[: -len(".beta")] + ".bias"
    return key


def prepare_state_dict(
    state: dict[str, np.ndarray],
    config: DistilBertConfig,
    head: str,
    *,
    source: str = "checkpoint",
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Adapt ``state`` (canonical names, any head) to ``head`` under ``config``.

    Returns the arrays for the keys of :func:`expected_shapes` that could be filled and a :class:`LoadReport`.
    Raises :class:`ShapeMismatchError` naming the key and both shapes when a tensor does not fit.
    """
    check_head(head)
    expected = expected_shapes(config, head)
    state = {_legacy_rename(k): v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    has_prefix = any(k.startswith(PREFIX) for k in state)
    if head == "base" and has_prefix:
        # a head checkpoint into the base model: keep the encoder, the head's own layers are unexpected
        state = {(k[len(PREFIX) :] if k.startswith(PREFIX) else k): v for k, v in state.items()}
    elif head != "base" and not has_prefix:
        # a base checkpoint into a head: the encoder lives under distilbert.
        base_keys = {k[len(PREFIX) :] for k in expected if k.startswith(PREFIX)}
        state = {(PREFIX + k if k in base_keys else k): v for k, v in state.items()}

    report = LoadReport(source=source)
    pos_key = ("" if head == "base" else PREFIX) + "embeddings.position_embeddings.weight"
    if config.sinusoidal_pos_embds and pos_key not in state:
        state[pos_key] = sinusoidal_table(config.max_position_embeddings, config.dim)
        report.generated.append(pos_key)
    if head == "masked_lm" and TIED_KEY not in state and config.tie_word_embeddings and TIED_SOURCE in state:
        state[TIED_KEY] = state[TIED_SOURCE]
        report.generated.append(TIED_KEY)

    out: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        if key not in state:
            report.missing.append(key)
            continue
        array = state[key]
        if tuple(array.shape) != tuple(shape):
            raise ShapeMismatchError(
                f"{source}: weight {key!r} has shape {tuple(array.shape)} but the config implies {tuple(shape)}; "
                "check that the config matches the checkpoint (vocab_size, dim, hidden_dim, num_labels, "
                "max_position_embeddings)"
            )
        out[key] = array
    report.unexpected = [k for k in state if k not in expected]
    if report.missing or report.unexpected:
        logger.warning(
            "Loading %s into %s: %d missing key(s) (newly initialised): %s; %d unexpected key(s) (ignored): %s",
            source,
            ARCHITECTURES[head],
            len(report.missing),
            report.missing,
            len(report.unexpected),
            report.unexpected,
        )
    return out, report


def load_pretrained(
    name_or_path: str | os.PathLike[str],
    head: str,
    *,
    config: DistilBertConfig | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    **config_overrides: Any,
) -> tuple[DistilBertConfig, dict[str, np.ndarray], LoadReport]:
    """Resolve ``name_or_path``, read its config and weights, and prepare them for ``head``.

    Returns ``(config, arrays, report)``; arrays keep the checkpoint's dtype (the framework casts).
    """
    from distilbert_mf.checkpoint.hub import resolve_checkpoint
    from distilbert_mf.checkpoint.io import read_weights

    check_head(head)
    folder, fmt, files = resolve_checkpoint(
        name_or_path,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        need_config=config is None,
    )
    if config is None:
        config = DistilBertConfig.from_json_file(Path(folder) / "config.json", **config_overrides)
    elif config_overrides:
        config = config.replace(**config_overrides)
    state = read_weights(files, fmt)
    arrays, report = prepare_state_dict(state, config, head, source=f"{name_or_path} ({fmt})")
    return config, arrays, report


def save_pretrained(
    directory: str | os.PathLike[str],
    config: DistilBertConfig,
    arrays: dict[str, np.ndarray],
    head: str,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> list[Path]:
    """Write ``config.json`` and ``model.safetensors`` (sharded past ``max_shard_size``) for ``head``.

    The tied projector is not written twice when ``config.tie_word_embeddings``. Every file appears atomically.
    Returns the written paths.
    """
    from distilbert_mf.checkpoint.io import write_weights

    check_head(head)
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)
    extra = dict(config.extra)
    extra["architectures"] = [ARCHITECTURES[head]]
    to_save = config.replace(extra=extra)
    state = dict(arrays)
    if head == "masked_lm" and config.tie_word_embeddings:
        state.pop(TIED_KEY, None)
    written = write_weights(directory, state, "safetensors", head=head, config=config, max_shard_size=max_shard_size)
    written.append(to_save.save_pretrained(directory))
    return written
