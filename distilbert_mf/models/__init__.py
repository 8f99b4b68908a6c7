"""Models shipped inside the package, loadable offline by a short name.

``BUILTIN`` maps a short name to the folder (package data) that holds its ``config.json``, weights and
tokenizer files. Every ``from_pretrained`` looks short names up here before trying the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent

# short name -> folder inside this package
BUILTIN: dict[str, Path] = {}
DEFAULT_TEXT_CLASSIFICATION_MODEL = "distilbert-mf/minilm-sst2"


def builtin_path(name: str | os.PathLike[str]) -> Path | None:
    """The packaged folder for a short name, or ``None`` when ``name`` is not a built-in model."""
    folder = BUILTIN.get(str(name))
    if folder is not None and folder.is_dir():
        return folder
    return None
