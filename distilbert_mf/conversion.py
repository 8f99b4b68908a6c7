"""Lossless conversion between checkpoint formats: ``convert(src, dst, formats=[...])``.

Any format in (a folder, Hub repo id or built-in short name holding safetensors, pytorch_model.bin, tf_model.h5 or
flax_model.msgpack, sharded or not), any set of formats out, each in the layout transformers itself reads. Tensors
are copied bit for bit unless ``dtype`` asks for a cast. ``config.json`` and the tokenizer files are copied
unchanged (with ``dtype``, the config's ``torch_dtype`` is updated to match). No ML framework is imported. The
``distilbert-mf convert`` command (:mod:`distilbert_mf.cli`) wraps :func:`convert`.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import ml_dtypes
import numpy as np

from distilbert_mf._io import atomic_path, atomic_write_bytes
from distilbert_mf.checkpoint.loading import prepare_state_dict
from distilbert_mf.checkpoint.names import (
    ARCHITECTURES,
    HEAD_OF_ARCHITECTURE,
    PREFIX,
    TIED_KEY,
    expected_shapes,
    sinusoidal_table,
)
from distilbert_mf.checkpoint.sharding import DEFAULT_MAX_SHARD_SIZE
from distilbert_mf.config import CONFIG_NAME, DistilBertConfig
from distilbert_mf.modeling_utils import dtype_name

logger = logging.getLogger(__name__)

TOKENIZER_FILES = (
    "vocab.txt",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
)
NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float16": np.dtype(np.float16),
}


class DestinationNotEmptyError(FileExistsError):
    """:func:`convert` was given a non-empty destination without ``overwrite``; ``cli_message`` names ``--overwrite``."""

    def __init__(self, dst: Path) -> None:
        super().__init__(
            f"destination {dst} is not empty; pass overwrite=True (CLI: --overwrite) to replace its weights"
        )
        self.cli_message = f"destination {dst} is not empty; pass --overwrite to replace its weights"


def check_writer_available(fmt: str) -> None:
    """Raise ``ImportError`` naming what to install when the library that reads/writes ``fmt`` is missing."""
    from distilbert_mf.checkpoint.formats import get_format

    entry = get_format(fmt)
    module, requirement = entry.library, entry.requirement
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ImportError(
            f"the {fmt} format needs the {requirement!r} package, which is not installed ({err}); it is a core "
            f"dependency of distilbert-mf: pip install {requirement} (or reinstall: pip install 'distilbert-mf')"
        ) from err


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"safetensors,tf_h5"`` or a list -> validated list without duplicates, in the given order."""
    from distilbert_mf.checkpoint.io import FORMATS

    if isinstance(formats, str):
        items = formats.split(",")
    elif isinstance(formats, Iterable):
        items = list(formats)
    else:
        raise TypeError(f"formats must be a comma-separated string or a list of names, got {type(formats).__name__}")
    out: list[str] = []
    for item in items:
        name = str(item).strip()
        if not name:
            continue
        if name not in FORMATS:
            raise ValueError(f"unknown output format {name!r}; choose from {', '.join(FORMATS)}")
        if name not in out:
            out.append(name)
    if not out:
        raise ValueError(f"no output format given; choose one or more of {', '.join(FORMATS)}")
    return out


def _head_keys(config: DistilBertConfig, head: str) -> set[str]:
    """The keys only ``head`` has (not the encoder's, not the tied projector)."""
    return {k for k in expected_shapes(config, head) if not k.startswith(PREFIX) and k != TIED_KEY} - set(
        expected_shapes(config, "base")
    )


def infer_head(config: DistilBertConfig, state: dict[str, np.ndarray]) -> str:
    """Which head a checkpoint holds: its config's ``architectures`` when the weights have that head's layers,
    else the head whose layers the weights hold (``base`` when none)."""
    for arch in config.extra.get("architectures") or ():
        head = HEAD_OF_ARCHITECTURE.get(str(arch).removeprefix("TF").removeprefix("Flax"))
        try:
            if head is not None and _head_keys(config, head) <= set(state):
                return head
        except ValueError:  # the config cannot hold that head (question answering needs num_labels=2)
            continue
    if "vocab_transform.weight" in state:
        return "masked_lm"
    if "qa_outputs.weight" in state:
        return "question_answering"
    if "pre_classifier.weight" in state:
        rows = np.shape(state.get("classifier.weight", ()))[:1]
        return "multiple_choice" if rows == (1,) and config.num_labels != 1 else "sequence_classification"
    if "classifier.weight" in state:
        return "token_classification"
    return "base"


def cast_state(state: dict[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """Cast floating tensors to ``dtype`` ('float32', 'bfloat16', 'float16'); ``None`` keeps them as they are."""
    name = dtype_name(dtype)
    if name is None:
        return state
    target = NUMPY_DTYPES[name]
    out = {}
    for key, value in state.items():
        floating = value.dtype in NUMPY_DTYPES.values() or np.issubdtype(value.dtype, np.floating)
        out[key] = value.astype(target) if floating and value.dtype != target else value
    return out


def _with_sinusoidal_table(state: dict[str, np.ndarray], config: DistilBertConfig) -> dict[str, np.ndarray]:
    """Add the sin/cos table a file left out (transformers' Flax never stores it), in the checkpoint's dtype."""
    if not config.sinusoidal_pos_embds:
        return state
    prefix = PREFIX if any(k.startswith(PREFIX) for k in state) else ""
    key = prefix + "embeddings.position_embeddings.weight"
    if key in state:
        return state
    words = state.get(prefix + "embeddings.word_embeddings.weight")
    dtype = words.dtype if words is not None else np.dtype(np.float32)
    table = sinusoidal_table(config.max_position_embeddings, config.dim).astype(dtype)
    return {**state, key: table}


def read_checkpoint(
    src: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> tuple[DistilBertConfig, str, str, dict[str, np.ndarray]]:
    """``(config, head, source format, canonical arrays)`` of the checkpoint at ``src``, exactly as stored.

    Legacy names are normalised, a left-out sinusoidal table is generated (in the checkpoint's dtype) and the tied
    projector filled in; keys no head uses are dropped with a warning. Raises ``ValueError`` when the weights
    lack keys of their head (a conversion never invents weights).
    """
    from distilbert_mf.checkpoint.hub import resolve_checkpoint
    from distilbert_mf.checkpoint.io import read_weights

    folder, src_fmt, files = resolve_checkpoint(
        src, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    check_writer_available(src_fmt)
    config = DistilBertConfig.from_json_file(Path(folder) / CONFIG_NAME)
    state = _with_sinusoidal_table(read_weights(files, src_fmt), config)
    head = infer_head(config, state)
    arrays, report = prepare_state_dict(state, config, head, source=f"{src} ({src_fmt})")
    if report.missing:
        raise ValueError(
            f"{src} ({src_fmt}) lacks {len(report.missing)} weight(s) of {ARCHITECTURES[head]}: {report.missing}; "
            "a conversion copies weights and never initialises missing ones"
        )
    return config, head, src_fmt, arrays


def _check_destination(src: str | os.PathLike[str], dst: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"destination {dst} exists and is not a folder")
    if Path(src).expanduser().is_dir() and dst.is_dir() and Path(src).expanduser().resolve() == dst.resolve():
        raise ValueError(f"source and destination are the same folder ({dst}); convert into a new folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise DestinationNotEmptyError(dst)


def _remove_stale_weights(dst: Path) -> None:
    """Delete every weights file (any format, sharded or not) so no loader picks up an old one."""
    from distilbert_mf.checkpoint import sharding
    from distilbert_mf.checkpoint.io import WEIGHTS_NAMES

    for name in WEIGHTS_NAMES.values():
        sharding.remove_stale(dst, name, keep=())


def _copy_config(source: Path, target: Path, dtype: str | None) -> None:
    """Copy ``config.json`` byte for byte, or with ``torch_dtype`` (and ``dtype``, if present) set to ``dtype``."""
    if dtype is None:
        with atomic_path(target) as tmp:
            shutil.copyfile(source, tmp)
        return
    data = json.loads(source.read_text(encoding="utf-8"))
    data["torch_dtype"] = dtype
    if "dtype" in data:
        data["dtype"] = dtype
    atomic_write_bytes(target, (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8"))


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    formats: str | Iterable[str] = ("safetensors",),
    dtype: str | None = None,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> list[Path]:
    """Convert the checkpoint at ``src`` into folder ``dst`` holding every format in ``formats``.

    Args:
        src: a local folder, a Hub repo id or a built-in short name (any weights format, sharded or not).
        dst: the output folder; it must be absent or empty unless ``overwrite=True``.
        formats: any of ``safetensors``, ``pytorch_bin``, ``tf_h5``, ``flax_msgpack`` (list or comma string).
        dtype: ``None`` keeps every tensor bit for bit; ``float32``/``bfloat16``/``float16`` casts floats.
        overwrite: allow a non-empty ``dst``: its weight files of every format are replaced or removed (so that
            no loader picks up a stale one); other files are kept.
        max_shard_size: shard each output past this size (bytes, or ``"5GB"``/``"100MB"``), as transformers.

    Returns the paths written. Raises ``FileExistsError`` for a non-empty ``dst`` without ``overwrite``, and
    ``ImportError`` naming the package to install when a format's library is missing.
    """
    from distilbert_mf.checkpoint.hub import resolve_file
    from distilbert_mf.checkpoint.io import write_weights

    fmt_list = parse_formats(formats)
    dtype = dtype_name(dtype)
    for fmt in fmt_list:
        check_writer_available(fmt)
    dst = Path(dst).expanduser()
    _check_destination(src, dst, overwrite)
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    config, head, src_fmt, state = read_checkpoint(src, **hub)
    state = cast_state(state, dtype)
    logger.info(
        "converting %s (%s, %s, %d tensors) to %s in %s", src, src_fmt, ARCHITECTURES[head], len(state), fmt_list, dst
    )

    created = not dst.exists()
    dst.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    try:
        # stage every weights file first: a failing writer leaves dst as it was
        with tempfile.TemporaryDirectory(prefix=".convert-", dir=dst) as staging:
            staged: list[Path] = []
            for fmt in fmt_list:
                staged += write_weights(staging, state, fmt, head=head, config=config, max_shard_size=max_shard_size)
            _remove_stale_weights(dst)
            for path in staged:
                target = dst / path.name
                os.replace(path, target)
                written.append(target)
        for name in (CONFIG_NAME, *TOKENIZER_FILES):
            source = resolve_file(src, name, optional=True, **hub)
            if source is None:
                continue
            if name == CONFIG_NAME:
                _copy_config(Path(source), dst / name, dtype)
            else:
                with atomic_path(dst / name) as tmp:
                    shutil.copyfile(source, tmp)
            written.append(dst / name)
    except BaseException:
        if created:
            with contextlib.suppress(OSError):
                shutil.rmtree(dst)
        raise
    return written
