"""Resolve ``name_or_path`` (a built-in short name, a local folder or a Hugging Face Hub repo id) to local files.

Order: a built-in packaged model (:mod:`distilbert_mf.models`), then an existing local folder, then a Hub repo id
downloaded into the huggingface_hub cache with ``hf_hub_download`` (``revision``, ``cache_dir``, ``token``,
``local_files_only`` and ``HF_HUB_OFFLINE`` honoured; ``HF_ENDPOINT`` is read at call time). Weights are picked in
the order ``model.safetensors``, its sharded index, ``pytorch_model.bin`` (+ index), ``tf_model.h5`` (+ index),
``flax_model.msgpack`` (+ index). When downloads are disabled (offline, or the Hub cannot be reached) only the cache
is used, and a miss is a :class:`NotInCacheError` that says what was looked for, where, and how to fix it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from distilbert_mf.checkpoint.io import INDEX_NAMES, PREFERENCE, WEIGHTS_NAMES
from distilbert_mf.checkpoint.sharding import shard_files

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# seconds to wait for the Hub's metadata answer before falling back to the cache (HF_HUB_ETAG_TIMEOUT overrides)
ETAG_TIMEOUT = 10.0
_TRUE = {"1", "ON", "YES", "TRUE"}


class CheckpointNotFoundError(FileNotFoundError):
    """``name_or_path`` does not lead to the requested file (no such folder, repo, revision or file)."""


class NoWeightsFoundError(CheckpointNotFoundError):
    """The folder or repo exists but holds none of the weights files distilbert_mf reads."""


class NotInCacheError(CheckpointNotFoundError):
    """Downloads are disabled (offline or unreachable Hub) and the file is not in the local cache."""


def _weights_candidates() -> list[str]:
    return [name for fmt in PREFERENCE for name in (WEIGHTS_NAMES[fmt], INDEX_NAMES[fmt])]


def find_weights(folder: str | os.PathLike[str]) -> tuple[str, list[Path]]:
    """The best weights in ``folder`` (safetensors first): ``(format, files)``; shards listed by their index."""
    folder = Path(folder)
    for fmt in PREFERENCE:
        single = folder / WEIGHTS_NAMES[fmt]
        if single.is_file():
            return fmt, [single]
        index = folder / INDEX_NAMES[fmt]
        if index.is_file():
            files = shard_files(index)
            missing = [f.name for f in files if not f.is_file()]
            if missing:
                raise CheckpointNotFoundError(f"{index} lists shard(s) {missing} that are not in {folder}")
            return fmt, files
    raise NoWeightsFoundError(f"no weights file in {folder}: expected one of {', '.join(_weights_candidates())}")


def _local_folder(name_or_path: str | os.PathLike[str]) -> Path | None:
    from distilbert_mf.models import builtin_path

    builtin = builtin_path(name_or_path)
    if builtin is not None:
        return builtin
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    if path.is_file():
        raise NotADirectoryError(f"{path} is a file; pass the folder that holds config.json and the weights")
    return None


def _offline_reason(local_files_only: bool) -> str | None:
    """Why downloads are disabled, or ``None`` when they are allowed."""
    from huggingface_hub import constants

    if local_files_only:
        return "local_files_only=True"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            return f"{var}={os.environ[var]}"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE was set when huggingface_hub was imported"
    return None


class _HubRepo:
    """Downloads single files of one repo/revision, falling back to cache-only after a network failure."""

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        local_files_only: bool,
        token: str | bool | None,
    ) -> None:
        from huggingface_hub import constants
        from huggingface_hub.utils import HFValidationError, validate_repo_id

        self.repo_id = str(name_or_path)
        try:
            validate_repo_id(self.repo_id)
        except HFValidationError as err:
            raise CheckpointNotFoundError(
                f"{self.repo_id!r} is not a local folder (no such directory) and not a valid Hugging Face Hub repo "
                f"id ('name' or 'org/name'): {err}"
            ) from None
        self.revision = revision
        self.cache_dir = cache_dir
        self.token = token
        self.offline_reason = _offline_reason(local_files_only)
        self.endpoint = os.environ.get("HF_ENDPOINT") or None
        self.cache_location = str(Path(cache_dir).expanduser() if cache_dir is not None else constants.HF_HUB_CACHE)

    @property
    def where(self) -> str:
        return f"{self.repo_id!r} (revision {self.revision or 'main'})"

    def download(self, filename: str) -> Path | None:
        """Local path of ``filename``, or ``None`` when the repo lacks it (or, offline, the cache lacks it)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        from distilbert_mf import __version__

        try:
            path = hf_hub_download(
                self.repo_id,
                filename,
                revision=self.revision,
                cache_dir=self.cache_dir,
                token=self.token,
                local_files_only=self.offline_reason is not None,
                etag_timeout=ETAG_TIMEOUT,
                endpoint=self.endpoint,
                library_name="distilbert_mf",
                library_version=__version__,
            )
        except LocalEntryNotFoundError as err:  # not cached, and offline or the Hub unreachable
            if self.offline_reason is None:
                cause = err.__cause__ or err
                self.offline_reason = f"the Hub could not be reached ({type(cause).__name__}: {cause})"
                logger.warning("%s; using only the local cache for %s", self.offline_reason, self.where)
            return None
        except EntryNotFoundError:  # the repo exists but has no such file
            return None
        except RevisionNotFoundError as err:
            raise CheckpointNotFoundError(
                f"revision {self.revision!r} does not exist in Hub repo {self.repo_id!r}; pass an existing branch, "
                "tag or commit hash"
            ) from err
        except RepositoryNotFoundError as err:  # includes gated repos
            raise CheckpointNotFoundError(
                f"{self.repo_id!r} is neither a local folder nor a Hub repo we can access: the Hub answered "
                f"'{type(err).__name__}'. Check the spelling; for a private or gated repo pass token= or run "
                "`hf auth login`."
            ) from err
        except HfHubHTTPError as err:
            raise OSError(f"the Hub failed while fetching {filename} of {self.where}: {err}") from err
        return Path(path)

    def missing(self, looked_for: list[str]) -> CheckpointNotFoundError:
        """The error for files the repo (or, offline, the cache) does not have."""
        files = ", ".join(looked_for)
        if self.offline_reason is not None:
            return NotInCacheError(
                f"{self.where} is not a local folder, downloads are disabled ({self.offline_reason}), and the "
                f"Hugging Face cache at {self.cache_location} has none of: {files}. To fix: download it once online "
                "(unset HF_HUB_OFFLINE, pass local_files_only=False), point cache_dir= at a cache that holds it, or "
                "pass the path of a local folder with config.json and the weights."
            )
        if looked_for == _weights_candidates():
            return NoWeightsFoundError(
                f"Hub repo {self.where} has no weights distilbert_mf can read: looked for {files}"
            )
        return CheckpointNotFoundError(f"Hub repo {self.where} has no {files}")


def resolve_file(
    name_or_path: str | os.PathLike[str],
    filename: str,
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    optional: bool = False,
) -> Path | None:
    """Local path of ``filename`` in a built-in model, a local folder or a Hub repo (downloaded and cached).

    A missing file raises :class:`CheckpointNotFoundError` (:class:`NotInCacheError` when offline), unless
    ``optional=True``, which returns ``None`` instead (for tokenizer files a model may or may not have).
    """
    folder = _local_folder(name_or_path)
    if folder is not None:
        path = folder / filename
        if path.is_file():
            return path
        if optional:
            return None
        raise CheckpointNotFoundError(f"{folder} has no {filename}")
    repo = _HubRepo(name_or_path, revision, cache_dir, local_files_only, token)
    path = repo.download(filename)
    if path is None and not optional:
        raise repo.missing([filename])
    return path


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    need_config: bool = True,
) -> tuple[Path, str, list[Path]]:
    """``(folder, format, weight_files)`` for a built-in name, a local folder or a Hub repo id.

    ``folder`` holds ``config.json`` (checked when ``need_config``); ``weight_files`` is one file or the shards
    of an index, of the best format present (safetensors first).
    """
    folder = _local_folder(name_or_path)
    if folder is not None:
        if need_config and not (folder / CONFIG_NAME).is_file():
            raise CheckpointNotFoundError(f"{folder} has no {CONFIG_NAME}; pass config= or add the file")
        fmt, files = find_weights(folder)
        return folder, fmt, files
    repo = _HubRepo(name_or_path, revision, cache_dir, local_files_only, token)
    config_path = None
    if need_config:
        config_path = repo.download(CONFIG_NAME)
        if config_path is None:
            raise repo.missing([CONFIG_NAME])
    for fmt in PREFERENCE:
        single = repo.download(WEIGHTS_NAMES[fmt])
        if single is not None:
            return (config_path or single).parent, fmt, [single]
        index = repo.download(INDEX_NAMES[fmt])
        if index is None:
            continue
        files = []
        for shard in shard_files(index):
            path = repo.download(shard.name)
            if path is None:
                raise repo.missing([shard.name])
            files.append(path)
        logger.info("resolved %s to %d %s shard(s)", repo.where, len(files), fmt)
        return (config_path or index).parent, fmt, files
    raise repo.missing(_weights_candidates())
