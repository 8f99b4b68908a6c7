"""DistilBERT tokenizers: pure-Python WordPiece and a ``tokenizers``-backed fast one, with identical outputs.

``DistilBertTokenizer`` needs only the standard library and numpy; ``DistilBertTokenizerFast`` imports
``tokenizers`` when first used; ``AutoTokenizer.from_pretrained`` returns the fast one (``use_fast=False``: the
pure-Python one). Neither imports torch, TensorFlow or JAX (``return_tensors`` imports the one
asked for).
"""

from __future__ import annotations

import importlib
from typing import Any

from distilbert_mf.tokenization.added_tokens import AddedToken
from distilbert_mf.tokenization.auto import AutoTokenizer
from distilbert_mf.tokenization.base import DistilBertTokenizerBase
from distilbert_mf.tokenization.batch import BatchEncoding, CharSpan, TokenSpan
from distilbert_mf.tokenization.encoding import Encoding, TruncationError
from distilbert_mf.tokenization.slow import DistilBertTokenizer

__all__ = [
    "AddedToken",
    "AutoTokenizer",
    "BatchEncoding",
    "CharSpan",
    "DistilBertTokenizer",
    "DistilBertTokenizerBase",
    "DistilBertTokenizerFast",
    "Encoding",
    "TokenSpan",
    "TruncationError",
]


def __getattr__(name: str) -> Any:
    if name == "DistilBertTokenizerFast":
        value = importlib.import_module("distilbert_mf.tokenization.fast").DistilBertTokenizerFast
        globals()[name] = value
        return value
    raise AttributeError(f"module 'distilbert_mf.tokenization' has no attribute {name!r}")
