"""File names and file resolution: the bottom layer under ``config``, ``checkpoint`` and ``tokenization``.

This module holds what every layer above needs to *find* a file, and nothing that reads one:

- the file names: :data:`CONFIG_NAME`, the weights file of each format (:data:`WEIGHTS_NAMES`), its sharded index
  (:data:`INDEX_NAMES`) and the order in which formats are preferred (:data:`PREFERENCE`);
- :func:`resolve_file` / :func:`resolve_files` / :func:`resolve_checkpoint`: ``name_or_path`` (a built-in short name,
  a local folder or a Hugging Face Hub repo id) to local paths, downloading into the huggingface_hub cache;
- the errors they raise, all ``FileNotFoundError`` (so ``OSError``).

It imports neither :mod:`distilbert_mf.config` nor any weight reader, and huggingface_hub only when a Hub repo is
resolved, so ``import distilbert_mf.config`` stays light and free of cycles.

Offline in seconds: before the first download from an endpoint, one metadata request with a short deadline
(:data:`PROBE_TIMEOUT`, ``DISTILBERT_MF_HUB_TIMEOUT`` overrides) tells whether the Hub answers. If it does not, the
verdict is kept for the rest of the process (per endpoint): every later file is looked up in the cache only, and a
miss raises :class:`HubUnreachableError` at once instead of huggingface_hub's retries (about 23 s per file).
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

logger = logging.getLogger(__name__)

CONFIG_NAME = "config.json"
# weights formats, in the order they are preferred when a folder or repo holds several
FORMATS = ("safetensors", "pytorch_bin", "tf_h5", "flax_msgpack")
PREFERENCE = FORMATS
WEIGHTS_NAMES = {
    "safetensors": "model.safetensors",
    "pytorch_bin": "pytorch_model.bin",
    "tf_h5": "tf_model.h5",
    "flax_msgpack": "flax_model.msgpack",
}
INDEX_NAMES = {fmt: name + ".index.json" for fmt, name in WEIGHTS_NAMES.items()}

# seconds huggingface_hub waits for a metadata answer once the Hub is known to answer (HF_HUB_ETAG_TIMEOUT overrides)
ETAG_TIMEOUT = 10.0
# seconds the first request to an endpoint may take before the Hub counts as unreachable
PROBE_TIMEOUT = 3.0
TIMEOUT_ENV = "DISTILBERT_MF_HUB_TIMEOUT"
# seconds a "the Hub answered" verdict is trusted before the next resolution asks again
REACHABLE_FOR = 60.0
_TRUE = {"1", "ON", "YES", "TRUE"}
_COMMIT = re.compile(r"[0-9a-f]{40}")
# statuses a proxy or a failing server gives instead of the Hub's answer
_NOT_AN_ANSWER = (407, 408, 500, 502, 503, 504)


def check_format(fmt: str) -> str:
    """``fmt`` if it is one of :data:`FORMATS`, else a ``ValueError`` naming the formats."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown weights format {fmt!r}; expected one of {FORMATS}")
    return fmt


def weights_formats(use_safetensors: bool | None = None) -> tuple[str, ...]:
    """The formats looked for, best first: all (``None``), only safetensors (``True``), all but it (``False``)."""
    if use_safetensors is None:
        return PREFERENCE
    if not isinstance(use_safetensors, bool):
        raise TypeError(f"use_safetensors must be True, False or None, got {use_safetensors!r}")
    if use_safetensors:
        return ("safetensors",)
    return tuple(fmt for fmt in PREFERENCE if fmt != "safetensors")


def weights_candidates(use_safetensors: bool | None = None) -> list[str]:
    """Every weights file name looked for, in order: each format's single file, then its index."""
    return [name for fmt in weights_formats(use_safetensors) for name in (WEIGHTS_NAMES[fmt], INDEX_NAMES[fmt])]


# ----------------------------------------------------------------------------------------------- errors


class CheckpointNotFoundError(FileNotFoundError):
    """``name_or_path`` does not lead to the requested file (no such folder, repo, revision or file)."""


class NoWeightsFoundError(CheckpointNotFoundError):
    """The folder or repo exists but holds none of the weights files distilbert_mf reads."""


@dataclass(frozen=True)
class HubLookup:
    """The facts of a Hub lookup that could not be answered from the cache (what the messages are built from).

    ``offline_setting`` is the setting that turned downloads off (``"HF_HUB_OFFLINE=1"``, ``"local_files_only=True"``,
    ...) or ``None`` when the Hub could not be reached; ``reason`` says why in either case.
    """

    repo_id: str
    revision: str
    files: tuple[str, ...]
    cache_dir: str
    endpoint: str
    reason: str
    offline_setting: str | None = None
    subfolder: str | None = None
    force_download: bool = False

    @property
    def where(self) -> str:
        inside = f", subfolder {self.subfolder!r}" if self.subfolder else ""
        return f"{self.repo_id!r} (revision {self.revision}{inside})"


class NotInCacheError(CheckpointNotFoundError):
    """Downloads are off and the cache lacks the file: ``HF_HUB_OFFLINE`` / ``local_files_only`` is set
    (this class), or the Hub could not be reached (:class:`HubUnreachableError`).

    Attributes:
        lookup: the :class:`HubLookup` (repo, revision, files, cache folder, endpoint, reason), or ``None``.
        cli_message: the same message with command-line flags (``--cache-dir``, ``--local-files-only``) in place of
            Python keywords, for a CLI to print.
    """

    def __init__(self, message: str | HubLookup, lookup: HubLookup | None = None) -> None:
        if isinstance(message, HubLookup):
            message, lookup = _message(message, cli=False), message
        super().__init__(message)
        self.lookup = lookup

    @property
    def cli_message(self) -> str:
        return str(self) if self.lookup is None else _message(self.lookup, cli=True)

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (str(self), self.lookup)


class HubUnreachableError(NotInCacheError):
    """The Hugging Face Hub could not be reached (no network, DNS, refused or unanswered connection, proxy or server
    error) and the cache lacks the file. ``lookup.reason`` says what failed; ``cli_message`` names CLI flags."""


def _message(lookup: HubLookup, *, cli: bool) -> str:
    cache_option = "--cache-dir DIR (or HF_HOME=DIR)" if cli else "cache_dir= (or HF_HOME)"
    writer = "distilbert-mf convert" if cli else "save_pretrained"
    files = ", ".join(lookup.files)
    if lookup.offline_setting is None:
        first = f"could not reach the Hugging Face Hub at {lookup.endpoint} ({lookup.reason})"
    else:
        setting = "--local-files-only" if cli and lookup.offline_setting == "local_files_only=True" else None
        first = f"downloads are disabled ({setting or lookup.reason})"
    if lookup.force_download:
        first += f", so {lookup.where} cannot be downloaded again as force_download asks (looked for {files})"
    else:
        first += f", and the Hugging Face cache at {lookup.cache_dir} does not hold {lookup.where}: looked for {files}"
    if lookup.offline_setting is None:
        third = "HF_HUB_OFFLINE=1: work from the cache alone, so that cached models load without trying the network"
        second = f"download it once where the Hub is reachable, or point {cache_option} at a cache that holds it"
    else:
        third = f"allow downloads: {_enable_downloads(lookup.offline_setting, cli)}, while online, to fill the cache"
        second = f"point {cache_option} at a cache that holds it"
    if lookup.force_download:
        second = "leave out force_download to use the cached copy, or " + second
    return (
        f"{first}. Fix it one of three ways:\n"
        f"  - a local folder: pass the path of a folder that holds these files ({writer} writes one) "
        f"instead of {lookup.repo_id!r};\n"
        f"  - a filled cache: {second};\n"
        f"  - {third}."
    )


def _enable_downloads(setting: str, cli: bool) -> str:
    if setting == "local_files_only=True":
        return "leave out --local-files-only" if cli else "pass local_files_only=False"
    name = setting.split("=", 1)[0]
    if " " in name:  # set when huggingface_hub was imported
        return "unset HF_HUB_OFFLINE and TRANSFORMERS_OFFLINE and start again"
    return f"unset {name}"


# ----------------------------------------------------------------------------------------------- sharded indexes


def read_index(path: str | os.PathLike[str]) -> dict[str, str]:
    """The ``weight_map`` of an ``*.index.json`` file; a ``ValueError`` when the file is not a valid index."""
    try:
        with open(path, encoding="utf-8") as handle:
            content = json.load(handle)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not a valid sharded-checkpoint index (invalid JSON: {err})") from err
    weight_map = content.get("weight_map") if isinstance(content, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise ValueError(f"{path} is not a valid sharded-checkpoint index: expected a 'weight_map' of name -> file")
    return weight_map


def shard_files(index_path: str | os.PathLike[str]) -> list[Path]:
    """The distinct shard files an index names (sorted, as transformers loads them), next to the index."""
    folder = Path(index_path).parent
    names = sorted(set(read_index(index_path).values()))
    for name in names:
        if Path(name).name != name:
            raise ValueError(f"{index_path} names shard {name!r}; shards must be plain file names next to the index")
    return [folder / name for name in names]


# ----------------------------------------------------------------------------------------------- local folders


def find_weights(folder: str | os.PathLike[str], *, use_safetensors: bool | None = None) -> tuple[str, list[Path]]:
    """The best weights in ``folder`` (safetensors first): ``(format, files)``; shards listed by their index.

    ``use_safetensors``: ``True`` accepts only safetensors, ``False`` skips it, ``None`` (default) takes the best.
    """
    folder = Path(folder)
    for fmt in weights_formats(use_safetensors):
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
    raise NoWeightsFoundError(
        f"no weights file in {folder}: expected one of {', '.join(weights_candidates(use_safetensors))}"
        + _safetensors_note(use_safetensors)
    )


def _safetensors_note(use_safetensors: bool | None) -> str:
    if use_safetensors is None:
        return ""
    return f" (use_safetensors={use_safetensors}; pass use_safetensors=None to take any format)"


def _check_subfolder(subfolder: str | os.PathLike[str] | None) -> str | None:
    if subfolder is None or str(subfolder) in ("", "."):
        return None
    if not isinstance(subfolder, (str, os.PathLike)):
        raise TypeError(f"subfolder must be a relative path string, got {type(subfolder).__name__}")
    path = PurePosixPath(str(subfolder).replace("\\", "/"))
    if path.is_absolute() or ".." in path.parts:
        raise ValueError(f"subfolder must be a relative path inside the checkpoint, without '..', got {subfolder!r}")
    return path.as_posix()


def _local_folder(name_or_path: str | os.PathLike[str], subfolder: str | None) -> Path | None:
    from distilbert_mf.models import builtin_path

    folder = builtin_path(name_or_path)
    if folder is None:
        path = Path(name_or_path).expanduser()
        if path.is_file():
            raise NotADirectoryError(f"{path} is a file; pass the folder that holds config.json and the weights")
        if not path.is_dir():
            return None
        folder = path
    if subfolder is None:
        return folder
    inner = folder / subfolder
    if not inner.is_dir():
        raise CheckpointNotFoundError(f"{folder} has no subfolder {subfolder!r}")
    return inner


# ----------------------------------------------------------------------------------------------- the Hub


def probe_timeout() -> float:
    """Seconds the first request to an endpoint may take: ``DISTILBERT_MF_HUB_TIMEOUT``, else an
    ``HF_HUB_ETAG_TIMEOUT`` set in the environment, else :data:`PROBE_TIMEOUT`."""
    value = os.environ.get(TIMEOUT_ENV, "").strip()
    if value:
        try:
            seconds = float(value)
        except ValueError:
            seconds = -1.0
        if not seconds > 0:
            raise ValueError(f"{TIMEOUT_ENV}={value!r} is not a positive number of seconds")
        return seconds
    try:
        seconds = float(os.environ.get("HF_HUB_ETAG_TIMEOUT", ""))
    except ValueError:
        return PROBE_TIMEOUT
    return seconds if seconds > 0 else PROBE_TIMEOUT


# endpoint -> (monotonic time of the verdict, None when the Hub answered, else why it could not be reached)
_REACHABILITY: dict[str, tuple[float, str | None]] = {}
_REACHABILITY_LOCK = threading.Lock()


def reset_hub_state() -> None:
    """Forget every endpoint's reachability verdict (the next resolution asks the Hub again)."""
    with _REACHABILITY_LOCK:
        _REACHABILITY.clear()


def _remember(endpoint: str, why: str | None) -> None:
    with _REACHABILITY_LOCK:
        _REACHABILITY[endpoint] = (time.monotonic(), why)


def _known_verdict(endpoint: str) -> tuple[bool, str | None]:
    """``(known, why)``: an unreachable verdict lasts for the process, a reachable one :data:`REACHABLE_FOR` s."""
    with _REACHABILITY_LOCK:
        verdict = _REACHABILITY.get(endpoint)
    if verdict is None:
        return False, None
    checked_at, why = verdict
    if why is not None or time.monotonic() - checked_at < REACHABLE_FOR:
        return True, why
    return False, None


def _probe(
    endpoint: str, repo_id: str, revision: str, token: str | bool | None, user_agent: Any, timeout: float
) -> str | None:
    """``None`` when the server at ``endpoint`` answers within ``timeout`` seconds (any answer but a proxy, gateway
    or server error: a 404 is an answer), else why it could not be reached.

    The question is ``GET /api/models/{repo_id}/revision/{revision}`` through huggingface_hub's session (its proxy
    and TLS settings), closed after the status line: never a retry, never a file. It runs in a daemon thread so
    that a name lookup the socket timeout does not cover cannot hang the caller.
    """
    from urllib.parse import quote

    from huggingface_hub.utils import build_hf_headers, get_session

    from distilbert_mf import __version__

    url = f"{endpoint}/api/models/{repo_id}/revision/{quote(revision, safe='')}"
    outcome: list[str | None] = []

    def ask() -> None:
        try:
            headers = build_hf_headers(
                token=token, library_name="distilbert_mf", library_version=__version__, user_agent=user_agent
            )
            outcome.append(_status_problem(get_session(), url, headers, timeout, endpoint))
        except _transport_errors() as err:
            outcome.append(f"{type(err).__name__}: {err}" if str(err) else type(err).__name__)
        except Exception as err:  # anything else is for hf_hub_download to report
            logger.debug("Hub probe %s failed with %r; leaving it to hf_hub_download", url, err)
            outcome.append(None)

    thread = threading.Thread(target=ask, name="distilbert_mf-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout + 0.5)
    if not outcome:
        return f"no answer within {timeout:g} s; {TIMEOUT_ENV} sets how long to wait"
    why = outcome[0]
    if why is not None and "timed out" in why.lower():
        why += f" after {timeout:g} s; {TIMEOUT_ENV} sets how long to wait"
    return why


def _status_problem(session: Any, url: str, headers: dict[str, str], timeout: float, endpoint: str) -> str | None:
    """GET ``url`` with huggingface_hub's session (httpx2 / httpx in huggingface_hub 1.x and 2.x, requests in 0.x),
    closed after the status line: ``None`` for an answer, else the status that is none."""
    if hasattr(session, "stream"):  # an httpx-style client
        with session.stream("GET", url, headers=headers, timeout=timeout, follow_redirects=False) as answer:
            status = answer.status_code
    else:  # a requests.Session
        with session.get(url, headers=headers, timeout=timeout, allow_redirects=False, stream=True) as answer:
            status = answer.status_code
    return f"HTTP {status} from {endpoint}" if status in _NOT_AN_ANSWER else None


def _transport_errors() -> tuple[type[BaseException], ...]:
    """The exceptions of a request that never got an answer, for the HTTP library huggingface_hub uses
    (requests' are ``OSError`` subclasses already)."""
    errors: list[type[BaseException]] = [OSError]
    for module in ("httpx2", "httpx"):
        error = getattr(sys.modules.get(module), "TransportError", None)
        if isinstance(error, type):
            errors.append(error)
    return tuple(errors)


def _offline_setting(local_files_only: bool) -> str | None:
    """The setting that disables downloads, or ``None`` when they are allowed."""
    from huggingface_hub import constants

    if local_files_only:
        return "local_files_only=True"
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        if os.environ.get(var, "").upper() in _TRUE:
            return f"{var}={os.environ[var]}"
    if constants.HF_HUB_OFFLINE:
        return "HF_HUB_OFFLINE set when huggingface_hub was imported"
    return None


class _HubRepo:
    """Downloads single files of one repo/revision; cache-only when offline or once the Hub proves unreachable."""

    def __init__(
        self,
        name_or_path: str | os.PathLike[str],
        revision: str | None,
        cache_dir: str | os.PathLike[str] | None,
        local_files_only: bool,
        token: str | bool | None,
        subfolder: str | None,
        force_download: bool,
        user_agent: dict[str, Any] | str | None,
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
        if not isinstance(force_download, bool):
            raise TypeError(f"force_download must be True or False, got {force_download!r}")
        self.revision = revision
        self.cache_dir = cache_dir
        self.token = token
        self.subfolder = subfolder
        self.force_download = force_download
        self.user_agent = user_agent
        self.offline_setting = _offline_setting(local_files_only)
        self.unreachable: str | None = None  # why the Hub could not be reached
        self.endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
        self.cache_location = str(Path(cache_dir).expanduser() if cache_dir is not None else constants.HF_HUB_CACHE)

    @property
    def where(self) -> str:
        return self._lookup(()).where

    @property
    def cache_only(self) -> bool:
        return self.offline_setting is not None or self.unreachable is not None

    def _relative(self, filename: str) -> str:
        return filename if self.subfolder is None else f"{self.subfolder}/{filename}"

    def _check_reachable(self) -> None:
        if self.cache_only:
            return
        known, why = _known_verdict(self.endpoint)
        if not known:
            why = _probe(
                self.endpoint, self.repo_id, self.revision or "main", self.token, self.user_agent, probe_timeout()
            )
            _remember(self.endpoint, why)
            if why is not None:
                logger.warning(
                    "the Hugging Face Hub at %s could not be reached (%s); using only the local cache "
                    "for the rest of this process",
                    self.endpoint,
                    why,
                )
        self.unreachable = why

    def download(self, filename: str) -> Path | None:
        """Local path of ``filename``, or ``None`` when the repo lacks it (cache-only: when the cache lacks it)."""
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            EntryNotFoundError,
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
            RevisionNotFoundError,
        )

        from distilbert_mf import __version__

        self._check_reachable()
        if self.cache_only and self.force_download:
            raise self.error([filename])
        try:
            path = hf_hub_download(
                self.repo_id,
                filename,
                subfolder=self.subfolder,
                revision=self.revision,
                cache_dir=self.cache_dir,
                token=self.token,
                local_files_only=self.cache_only,
                force_download=self.force_download,
                etag_timeout=ETAG_TIMEOUT,
                endpoint=self.endpoint,
                user_agent=self.user_agent,
                library_name="distilbert_mf",
                library_version=__version__,
            )
        except LocalEntryNotFoundError as err:  # not cached, and offline or the Hub failed after all
            if not self.cache_only:
                cause = err.__cause__ or err
                self.unreachable = f"{type(cause).__name__}: {cause}"
                _remember(self.endpoint, self.unreachable)
                logger.warning("%s; using only the local cache for %s", self.unreachable, self.where)
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

    def cached_snapshot(self) -> Path | None:
        """The cached snapshot folder of this revision, or ``None`` when nothing of it was ever downloaded."""
        from huggingface_hub.file_download import repo_folder_name

        storage = Path(self.cache_location) / repo_folder_name(repo_id=self.repo_id, repo_type="model")
        commit = self.revision or "main"
        if not _COMMIT.fullmatch(commit):
            ref = storage / "refs" / commit
            if not ref.is_file():
                return None
            commit = ref.read_text(encoding="utf-8").strip()
        snapshot = storage / "snapshots" / commit
        return snapshot if snapshot.is_dir() else None

    def _lookup(self, looked_for: Sequence[str]) -> HubLookup:
        return HubLookup(
            repo_id=self.repo_id,
            revision=self.revision or "main",
            files=tuple(looked_for),
            cache_dir=self.cache_location,
            endpoint=self.endpoint,
            reason=self.offline_setting or self.unreachable or "",
            offline_setting=self.offline_setting,
            subfolder=self.subfolder,
            force_download=self.force_download,
        )

    def error(self, looked_for: Sequence[str], *, weights: bool = False) -> CheckpointNotFoundError:
        """The error for files the repo (cache-only: the cache) does not have."""
        if self.cache_only:
            lookup = self._lookup(looked_for)
            return NotInCacheError(lookup) if self.offline_setting else HubUnreachableError(lookup)
        files = ", ".join(looked_for)
        if weights:
            return NoWeightsFoundError(
                f"Hub repo {self.where} has no weights distilbert_mf can read: looked for {files}"
            )
        return CheckpointNotFoundError(f"Hub repo {self.where} has no {files}")


def resolve_files(
    name_or_path: str | os.PathLike[str],
    filenames: Iterable[str],
    *,
    optional: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str | None = None,
    force_download: bool = False,
    user_agent: dict[str, Any] | str | None = None,
) -> dict[str, Path | None]:
    """``{filename: local path}`` for several files of one built-in model, local folder or Hub repo.

    A missing file raises :class:`CheckpointNotFoundError`, unless ``optional=True``, which maps it to ``None``
    (tokenizer files a model may or may not have). When downloads are off or the Hub cannot be reached and nothing
    of the repo is cached, even optional files raise (:class:`NotInCacheError` / :class:`HubUnreachableError`),
    naming every file asked for. Hub keywords as :func:`resolve_checkpoint`.
    """
    filenames = list(filenames)
    subfolder = _check_subfolder(subfolder)
    folder = _local_folder(name_or_path, subfolder)
    found: dict[str, Path | None] = {}
    if folder is not None:
        for filename in filenames:
            path = folder / filename
            if not path.is_file() and not optional:
                raise CheckpointNotFoundError(f"{folder} has no {filename}")
            found[filename] = path if path.is_file() else None
        return found
    repo = _HubRepo(name_or_path, revision, cache_dir, local_files_only, token, subfolder, force_download, user_agent)
    for filename in filenames:
        path = repo.download(filename)
        if path is None and (not optional or (repo.cache_only and repo.cached_snapshot() is None)):
            raise repo.error(filenames if optional else [filename])
        found[filename] = path
    return found


def resolve_file(
    name_or_path: str | os.PathLike[str],
    filename: str,
    *,
    optional: bool = False,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    subfolder: str | None = None,
    force_download: bool = False,
    user_agent: dict[str, Any] | str | None = None,
) -> Path | None:
    """Local path of ``filename`` in a built-in model, a local folder or a Hub repo (downloaded and cached).

    A missing file raises :class:`CheckpointNotFoundError` (:class:`NotInCacheError` when downloads are off,
    :class:`HubUnreachableError` when the Hub cannot be reached), unless ``optional=True``, which returns ``None``
    when the folder or repo lacks the file. Hub keywords as :func:`resolve_checkpoint`.
    """
    return resolve_files(
        name_or_path,
        [filename],
        optional=optional,
        revision=revision,
        cache_dir=cache_dir,
        local_files_only=local_files_only,
        token=token,
        subfolder=subfolder,
        force_download=force_download,
        user_agent=user_agent,
    )[filename]


def resolve_checkpoint(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
    need_config: bool = True,
    subfolder: str | None = None,
    use_safetensors: bool | None = None,
    force_download: bool = False,
    user_agent: dict[str, Any] | str | None = None,
) -> tuple[Path, str, list[Path]]:
    """``(folder, format, weight_files)`` for a built-in name, a local folder or a Hub repo id.

    ``folder`` holds ``config.json`` (checked when ``need_config``); ``weight_files`` is one file or the shards
    of an index, of the best format present (order :data:`PREFERENCE`). Keywords:

    - ``revision``: Hub branch, tag or commit hash (default ``"main"``); ``cache_dir``: the huggingface_hub cache
      (default ``HF_HOME/hub``); ``token``: for private or gated repos; ``user_agent``: extra user-agent fields;
    - ``local_files_only``: never download (as ``HF_HUB_OFFLINE=1``); ``force_download``: download again even when
      cached (Hub repos only);
    - ``subfolder``: the checkpoint lies in this folder of the repo or local folder;
    - ``use_safetensors``: ``True`` only safetensors (an error when absent), ``False`` every other format,
      ``None`` (default) the best present.
    """
    formats = weights_formats(use_safetensors)
    subfolder = _check_subfolder(subfolder)
    folder = _local_folder(name_or_path, subfolder)
    if folder is not None:
        if need_config and not (folder / CONFIG_NAME).is_file():
            raise CheckpointNotFoundError(f"{folder} has no {CONFIG_NAME}; pass config= or add the file")
        fmt, files = find_weights(folder, use_safetensors=use_safetensors)
        return folder, fmt, files
    repo = _HubRepo(name_or_path, revision, cache_dir, local_files_only, token, subfolder, force_download, user_agent)
    config_path = None
    if need_config:
        config_path = repo.download(CONFIG_NAME)
        if config_path is None:
            raise repo.error([CONFIG_NAME])
    for fmt in formats:
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
                raise repo.error([shard.name])
            files.append(path)
        logger.info("resolved %s to %d %s shard(s)", repo.where, len(files), fmt)
        return (config_path or index).parent, fmt, files
    error = repo.error(weights_candidates(use_safetensors), weights=True)
    if use_safetensors is not None and not isinstance(error, NotInCacheError):
        error = NoWeightsFoundError(str(error) + _safetensors_note(use_safetensors))
    raise error


__all__ = [
    "CONFIG_NAME",
    "FORMATS",
    "INDEX_NAMES",
    "PREFERENCE",
    "WEIGHTS_NAMES",
    "CheckpointNotFoundError",
    "HubLookup",
    "HubUnreachableError",
    "NoWeightsFoundError",
    "NotInCacheError",
    "check_format",
    "find_weights",
    "read_index",
    "reset_hub_state",
    "resolve_checkpoint",
    "resolve_file",
    "resolve_files",
    "shard_files",
    "weights_candidates",
    "weights_formats",
]
