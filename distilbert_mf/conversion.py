"""Lossless conversion between checkpoint formats: ``convert(src, dst, formats=[...])``.

Any format in (a folder, Hub repo id or built-in short name holding safetensors, pytorch_model.bin, tf_model.h5 or
flax_model.msgpack), any set of formats out, each in the layout transformers itself reads. Tensors are copied
bit for bit unless ``dtype`` asks for a cast. ``config.json`` and the tokenizer files are copied unchanged.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.checkpoint.names import ARCHITECTURES, HEAD_OF_ARCHITECTURE, PREFIX
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


def parse_formats(formats: str | Iterable[str]) -> list[str]:
    """``"safetensors,tf_h5"`` or a list -> validated list without duplicates, in the given order."""
    from distilbert_mf.checkpoint.io import FORMATS

    items = formats.split(",") if isinstance(formats, str) else list(formats)
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


def infer_head(config: DistilBertConfig, state: dict[str, np.ndarray]) -> str:
    """Which head a checkpoint holds: from ``architectures`` in its config, else from its keys."""
    for arch in config.extra.get("architectures") or ():
        name = str(arch).removeprefix("TF").removeprefix("Flax")
        if name in HEAD_OF_ARCHITECTURE:
            return HEAD_OF_ARCHITECTURE[name]
    if not any(key.startswith(PREFIX) for key in state):
        return "base"
    if any(key.startswith("vocab_") for key in state):
        return "masked_lm"
    if "qa_outputs.weight" in state:
        return "question_answering"
    if "pre_classifier.weight" in state:
        return "sequence_classification"
    if "classifier.weight" in state:
        return "token_classification"
    return "base"


def cast_state(state: dict[str, np.ndarray], dtype: str | None) -> dict[str, np.ndarray]:
    """Cast floating tensors to ``dtype`` ('float32', 'bfloat16', 'float16'); ``None`` keeps them as they are."""
    if dtype is None:
        return state
    import ml_dtypes

    target = {"float32": np.float32, "float16": np.float16, "bfloat16": ml_dtypes.bfloat16}[dtype]
    out = {}
    for key, value in state.items():
        floating = np.issubdtype(value.dtype, np.floating) or value.dtype == ml_dtypes.bfloat16
        out[key] = value.astype(target) if floating and value.dtype != target else value
    return out


def convert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    formats: str | Iterable[str] = ("safetensors",),
    dtype: str | None = None,
    *,
    overwrite: bool = False,
    max_shard_size: int | str = "5GB",
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> list[Path]:
    """Convert the checkpoint at ``src`` into folder ``dst`` holding every format in ``formats``.

    Args:
        src: a local folder, a Hub repo id or a built-in short name.
        dst: the output folder; it must be absent or empty unless ``overwrite=True``.
        formats: any of ``safetensors``, ``pytorch_bin``, ``tf_h5``, ``flax_msgpack`` (list or comma string).
        dtype: ``None`` keeps every tensor bit for bit; ``float32``/``bfloat16``/``float16`` casts floats.
        overwrite: replace the weight files of a non-empty ``dst`` (stale weight files of other formats are
            removed so that no loader can pick them up; other files are kept).

    Returns the paths written. Raises ``FileExistsError`` for a non-empty ``dst`` without ``overwrite``, and
    ``ImportError`` naming the extra to install when a format's library is missing.
    """
    from distilbert_mf.checkpoint.hub import resolve_checkpoint, resolve_file
    from distilbert_mf.checkpoint.io import (
        INDEX_NAMES,
        WEIGHTS_NAMES,
        check_writer_available,
        read_weights,
        write_weights,
    )

    fmt_list = parse_formats(formats)
    dtype = dtype_name(dtype)
    for fmt in fmt_list:
        check_writer_available(fmt)
    dst = Path(dst)
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"destination {dst} exists and is not a folder")
    if dst.is_dir() and any(dst.iterdir()) and not overwrite:
        raise FileExistsError(
            f"destination {dst} is not empty; pass overwrite=True (CLI: --overwrite) to replace its weights"
        )

    folder, src_fmt, files = resolve_checkpoint(
        src, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
    )
    config = DistilBertConfig.from_json_file(Path(folder) / CONFIG_NAME)
    state = read_weights(files, src_fmt)
    head = infer_head(config, state)
    state = cast_state(state, dtype)
    logger.info(
        "converting %s (%s, %s, %d tensors) to %s in %s", src, src_fmt, ARCHITECTURES[head], len(state), fmt_list, dst
    )

    dst.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    # stage everything first: a failure in any writer leaves dst untouched
    with tempfile.TemporaryDirectory(prefix=".convert-", dir=dst) as staging:
        staged: list[Path] = []
        for fmt in fmt_list:
            staged += write_weights(staging, state, fmt, head=head, config=config, max_shard_size=max_shard_size)
        if overwrite:
            stale = set(WEIGHTS_NAMES.values()) | set(INDEX_NAMES.values())
            for old in dst.iterdir():
                is_shard = (
                    old.name.startswith(("model-", "pytorch_model-", "tf_model-", "flax_model-")) and "-of-" in old.name
                )
                if old.is_file() and (old.name in stale or is_shard):
                    old.unlink()
        for path in staged:
            target = dst / path.name
            os.replace(path, target)
            written.append(target)
    for name in (CONFIG_NAME, *TOKENIZER_FILES):
        source = resolve_file(
            src,
            name,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            optional=True,
        )
        if source is None:
            continue
        with atomic_path(dst / name) as tmp:
            shutil.copyfile(source, tmp)
        written.append(dst / name)
    return written
