"""Hub and folder resolution, kept importable from its old place: the code lives in :mod:`distilbert_mf.hub`.

New code imports :mod:`distilbert_mf.hub` directly (it loads no weight reader and no checkpoint module).
"""

from distilbert_mf.hub import (
    CONFIG_NAME,
    ETAG_TIMEOUT,
    CheckpointNotFoundError,
    HubLookup,
    HubUnreachableError,
    NotInCacheError,
    NoWeightsFoundError,
    find_weights,
    reset_hub_state,
    resolve_checkpoint,
    resolve_file,
    resolve_files,
)

__all__ = [
    "CONFIG_NAME",
    "ETAG_TIMEOUT",
    "CheckpointNotFoundError",
    "HubLookup",
    "HubUnreachableError",
    "NoWeightsFoundError",
    "NotInCacheError",
    "find_weights",
    "reset_hub_state",
    "resolve_checkpoint",
    "resolve_file",
    "resolve_files",
]
