"""From a checkpoint on disk (any format) to the canonical arrays one head expects, and back.

The framework-neutral half of every ``from_pretrained`` (:mod:`distilbert_mf.checkpoint.pretrained` drives it):
resolve the folder or Hub repo, read the config and the best weights file, adapt base <-> head prefixes, fill the
tied projector and a missing sinusoidal table, check every key, shape and dtype, and report missing / unexpected /
mismatched keys in one log message. The framework half only copies the returned arrays into its variables.

Each rule has one home here: :func:`check_arrays` (keys, shapes, dtypes, the tied projector, mismatched sizes),
:func:`prepare_state_dict` (what a file needs before that: legacy names, prefixes, the sinusoidal table).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
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
    for_head,
    sinusoidal_table,
)
from distilbert_mf.checkpoint.sharding import DEFAULT_MAX_SHARD_SIZE
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

# keys some transformers versions stored that carry no weights
_IGNORED_SUFFIXES = ("embeddings.position_ids",)


@dataclass
class LoadReport:
    """What a load found: keys the model expected but the checkpoint lacked (newly initialised), keys it did not
    use, keys whose shape differed (``ignore_mismatched_sizes=True``: newly initialised), keys filled in here."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = field(default_factory=list)  # key, file, model
    generated: list[str] = field(default_factory=list)  # filled in here: tied projector, sinusoidal table
    source: str = ""

    def log(self, model_name: str) -> None:
        """One warning naming every missing, unexpected and mismatched key (nothing when the load was exact)."""
        if not (self.missing or self.unexpected or self.mismatched):
            return
        parts = []
        if self.missing:
            parts.append(f"{len(self.missing)} missing key(s) (newly initialised): {self.missing}")
        if self.mismatched:
            shapes = [f"{key}: checkpoint {a} -> model {b}" for key, a, b in self.mismatched]
            parts.append(f"{len(self.mismatched)} key(s) of another shape (newly initialised): {shapes}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} unexpected key(s) (ignored): {self.unexpected}")
        logger.warning("Loading %s into %s: %s", self.source, model_name, "; ".join(parts))

    def loading_info(self) -> dict[str, list[Any]]:
        """transformers' ``output_loading_info`` dict."""
        return {
            "missing_keys": list(self.missing),
            "unexpected_keys": list(self.unexpected),
            "mismatched_keys": [(key, a, b) for key, a, b in self.mismatched],
            "error_msgs": [],
        }


class ShapeMismatchError(ValueError):
    """A checkpoint tensor's shape differs from the one the config implies."""


def _legacy_rename(key: str) -> str:
    # very old PyTorch checkpoints named LayerNorm parameters gamma/beta
    if key.endswith(".gamma"):
        return key[: -len(".gamma")] + ".weight"
    if key.endswith(".beta"):
        return key[: -len(".beta")] + ".bias"
    return key


def _is_float(array: np.ndarray) -> bool:
    return array.dtype.kind == "f" or array.dtype.name == "bfloat16"


def check_arrays(
    arrays: Mapping[str, np.ndarray],
    config: DistilBertConfig,
    head: str,
    *,
    source: str,
    from_file: bool = False,
    ignore_mismatched_sizes: bool = False,
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """The arrays among ``arrays`` that fill a variable of ``head`` under ``config``, each checked, and a report.

    Keys, shapes and dtypes (floats) are all checked before anything is returned: a :class:`ShapeMismatchError`
    names the key and both shapes (``ignore_mismatched_sizes``: the key is reported instead and left out, so the
    framework initialises it afresh), a ``TypeError`` names a non-float array. With tied embeddings the projector
    key, if present, is checked and left out (the variable is the word embeddings; a lone projector fills them).
    ``from_file``: ``arrays`` come from a checkpoint file and first get :func:`prepare_state_dict`'s treatment.
    """
    check_head(head)
    expected = expected_shapes(config, head)
    report = LoadReport(source=source)
    state = dict(arrays)
    if from_file:
        state = _prepare(state, config, head, expected, report)
    tied = head == "masked_lm" and config.tie_word_embeddings
    if tied and TIED_KEY in state and TIED_SOURCE not in state:
        state[TIED_SOURCE] = state[TIED_KEY]
    out: dict[str, np.ndarray] = {}
    for key, shape in expected.items():
        if key not in state:
            if not (tied and key == TIED_KEY):
                report.missing.append(key)
            continue
        array = state[key]
        if tuple(array.shape) != tuple(shape):
            if ignore_mismatched_sizes:
                report.mismatched.append((key, tuple(array.shape), tuple(shape)))
                continue
            hint = (
                "; check that the config matches the checkpoint (vocab_size, dim, hidden_dim, num_labels, "
                "max_position_embeddings), or pass ignore_mismatched_sizes=True to initialise it afresh"
                if from_file
                else ""
            )
            raise ShapeMismatchError(
                f"{source}: weight {key!r} has shape {tuple(array.shape)} but {ARCHITECTURES[head]} expects "
                f"{tuple(shape)} from its config{hint}"
            )
        if not _is_float(np.asarray(array)):
            raise TypeError(f"weight {key!r} has dtype {array.dtype}; expected floats (float16/32/64 or bfloat16)")
        if not (tied and key == TIED_KEY):
            out[key] = array
    report.unexpected = [k for k in state if k not in expected]
    return out, report


def _prepare(
    state: dict[str, np.ndarray], config: DistilBertConfig, head: str, expected: Mapping[str, Any], report: LoadReport
) -> dict[str, np.ndarray]:
    state = {_legacy_rename(k): v for k, v in state.items() if not k.endswith(_IGNORED_SUFFIXES)}
    state = for_head(state, head, expected)
    pos_key = ("" if head == "base" else PREFIX) + "embeddings.position_embeddings.weight"
    if config.sinusoidal_pos_embds and pos_key not in state:  # transformers' Flax msgpack never stores the table
        state[pos_key] = sinusoidal_table(config.max_position_embeddings, config.dim)
        report.generated.append(pos_key)
    return state


def prepare_state_dict(
    state: dict[str, np.ndarray],
    config: DistilBertConfig,
    head: str,
    *,
    source: str = "checkpoint",
) -> tuple[dict[str, np.ndarray], LoadReport]:
    """Adapt a checkpoint file's ``state`` (canonical names, any head) to ``head`` under ``config``.

    Returns every key of :func:`expected_shapes` that could be filled (the tied projector included, as the word
    embeddings) and a :class:`LoadReport`, logged when keys are missing or unexpected. Raises
    :class:`ShapeMismatchError` naming the key and both shapes when a tensor does not fit.
    """
    arrays, report = check_arrays(state, config, head, source=source, from_file=True)
    if head == "masked_lm" and config.tie_word_embeddings and TIED_SOURCE in arrays:
        arrays[TIED_KEY] = arrays[TIED_SOURCE]
        if TIED_KEY not in state:
            report.generated.append(TIED_KEY)
    arrays = {key: arrays[key] for key in expected_shapes(config, head) if key in arrays}
    report.log(ARCHITECTURES[head])
    return arrays, report


def read_pretrained(
    name_or_path: str | os.PathLike[str],
    head: str,
    *,
    config: DistilBertConfig | None = None,
    overrides: Mapping[str, Any] | None = None,
    **hub: Any,
) -> tuple[DistilBertConfig, dict[str, np.ndarray], str]:
    """Resolve ``name_or_path`` and read its config (with ``overrides``) and weights as they are on disk.

    Returns ``(config, canonical arrays in the checkpoint's dtype, source description)``; ``hub`` are the file
    resolution options (``revision``, ``cache_dir``, ``local_files_only``, ``token``, ...).
    """
    from distilbert_mf.checkpoint.io import read_weights
    from distilbert_mf.hub import CONFIG_NAME, resolve_checkpoint, resolve_file

    check_head(head)
    overrides = dict(overrides or {})
    hub = {key: value for key, value in hub.items() if value is not None}
    if config is None:  # the config first: another model type is refused before any weights are looked for
        file_options = {key: value for key, value in hub.items() if key != "use_safetensors"}
        config = DistilBertConfig.from_json_file(resolve_file(name_or_path, CONFIG_NAME, **file_options), **overrides)
    elif overrides:
        config = config.replace(**overrides)
    _, fmt, files = resolve_checkpoint(name_or_path, need_config=False, **hub)
    return config, read_weights(files, fmt), f"{name_or_path} ({fmt})"


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
    config, state, source = read_pretrained(
        name_or_path,
        head,
        config=config,
        overrides=config_overrides,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only or None,
        token=token,
    )
    arrays, report = prepare_state_dict(state, config, head, source=source)
    return config, arrays, report


def save_pretrained(
    directory: str | os.PathLike[str],
    config: DistilBertConfig,
    arrays: dict[str, np.ndarray],
    head: str,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    fmt: str = "safetensors",
) -> list[Path]:
    """Write ``config.json`` and the weights (``model.safetensors``, or ``fmt``) for ``head``, sharded past
    ``max_shard_size``.

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
    written = write_weights(directory, state, fmt, head=head, config=config, max_shard_size=max_shard_size)
    written.append(to_save.save_pretrained(directory))
    return written
