"""Models shipped inside the package, loadable offline by a short name.

``BUILTIN`` maps a short name to the folder (package data) that holds its ``config.json``, weights and
tokenizer files. Every ``from_pretrained`` looks short names up here before trying the Hub.
"""

from __future__ import annotations

import os
from pathlib import Path

_HERE = Path(__file__).resolve().parent

DEFAULT_TEXT_CLASSIFICATION_MODEL = "distilbert-mf/minilm-sst2"
DEFAULT_SENTENCE_EMBEDDING_MODEL = "distilbert-mf/all-minilm-l6-v2"
# short name -> folder inside this package
BUILTIN: dict[str, Path] = {
    # all-MiniLM-L6-v2 (Apache-2.0) converted to DistilBERT and fine-tuned on GLUE SST-2 (see its README.md);
    # written by examples/train_sentiment.py + examples/package_default_model.py
    DEFAULT_TEXT_CLASSIFICATION_MODEL: _HERE / "minilm-sst2",
    # all-MiniLM-L6-v2 (Apache-2.0) converted exactly to DistilBERT, float32: sentence embeddings equal to
    # sentence-transformers' with pooling="mean", normalize=True (see its README.md); written by
    # examples/package_sentence_model.py
    DEFAULT_SENTENCE_EMBEDDING_MODEL: _HERE / "all-minilm-l6-v2",
}


def builtin_path(name: str | os.PathLike[str]) -> Path | None:
    """The packaged folder for a short name, or ``None`` when ``name`` is not a built-in model."""
    folder = BUILTIN.get(str(name))
    if folder is not None and folder.is_dir():
        return folder
    return None
