"""Uploading a saved folder to the Hugging Face Hub (``push_to_hub``), through ``huggingface_hub``'s ``HfApi``.

``HF_ENDPOINT`` selects the server (tests run a local fake one on 127.0.0.1); ``token`` defaults to the one
``huggingface_hub`` finds (``HF_TOKEN`` or ``hf auth login``). Nothing is uploaded from a folder that does not hold
a ``config.json``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

logger = logging.getLogger(__name__)


class HubUploadError(RuntimeError):
    """The Hub refused or could not take the upload; the message says what it answered and what to do."""


def upload_folder(
    folder: str | os.PathLike[str],
    repo_id: str,
    *,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | bool | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Create the model repo ``repo_id`` if needed and commit every file of ``folder`` to it; returns the commit
    URL (the pull-request URL with ``create_pr=True``)."""
    from huggingface_hub import HfApi
    from huggingface_hub.errors import HfHubHTTPError
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"{folder} holds no config.json: save the model there first (save_pretrained)")
    try:
        validate_repo_id(repo_id)
    except HFValidationError as err:
        raise ValueError(f"repo_id {repo_id!r} is not a Hub repo id ('user/name' or 'name'): {err}") from None
    from huggingface_hub import constants

    endpoint = (os.environ.get("HF_ENDPOINT") or constants.ENDPOINT).rstrip("/")
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        info = api.upload_folder(
            repo_id=repo_id,
            folder_path=folder,
            commit_message=commit_message or "Upload DistilBERT model",
            revision=revision,
            create_pr=create_pr,
            repo_type="model",
        )
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        hint = (
            "log in with `hf auth login` or pass token=..."
            if status in (401, 403)
            else "check the repo id, the revision and your rights on it"
        )
        raise HubUploadError(f"the Hub at {endpoint} refused the upload to {repo_id!r} ({status}): {hint}") from err
    url = str(getattr(info, "pr_url", None) or getattr(info, "commit_url", info))
    logger.info("uploaded %s to %s: %s", folder, repo_id, url)
    return url


__all__ = ["HubUploadError", "upload_folder"]
