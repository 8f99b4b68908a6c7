"""``AutoTokenizer``: the entry point transformers users type, for the tokenizers this package has.

``AutoTokenizer.from_pretrained(name_or_path)`` returns a :class:`~.fast.DistilBertTokenizerFast` (``use_fast=False``:
the pure-Python :class:`~.slow.DistilBertTokenizer`). It loads DistilBERT tokenizers and BERT's WordPiece tokenizers,
which DistilBERT shares (``model_type`` ``"bert"``, ``tokenizer_class`` ``BertTokenizer``): the ids are BERT's,
without ``token_type_ids`` (what a BERT model converted with ``conversion/bert_to_distilbert.py`` reads). A folder
or repo of another model type is refused with one ``ValueError`` naming it, before its vocabulary is read.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from collections.abc import Mapping
from typing import Any

from distilbert_mf import hub
from distilbert_mf.tokenization import files as _files
from distilbert_mf.tokenization.base import DistilBertTokenizerBase

logger = logging.getLogger(__name__)

__all__ = ["MODEL_TYPES", "TOKENIZER_CLASSES", "AutoTokenizer"]

# config.json model types whose tokenizer is DistilBERT's WordPiece tokenizer
MODEL_TYPES = ("distilbert", "bert")
# tokenizer_config.json classes that are that tokenizer
TOKENIZER_CLASSES = ("DistilBertTokenizer", "DistilBertTokenizerFast", "BertTokenizer", "BertTokenizerFast")


def _refuse(name_or_path: Any, what: str) -> ValueError:
    return ValueError(
        f"{str(name_or_path)!r} holds {what}; distilbert_mf loads DistilBERT and BERT only: their WordPiece "
        "tokenizers directly (AutoTokenizer, DistilBertTokenizer(Fast)), BERT models after conversion with "
        "conversion/bert_to_distilbert.py. Use transformers for other model types."
    )


def _model_type(config: Any) -> Any:
    if isinstance(config, Mapping):
        return config.get("model_type")
    return getattr(config, "model_type", None)


def check_model_kind(name_or_path: Any, model_type: Any, tokenizer_class: Any) -> None:
    """``ValueError`` unless the model type (``config.json``) and the tokenizer class (``tokenizer_config.json``)
    are DistilBERT's or BERT's (None: not stated, accepted)."""
    if model_type is not None and model_type not in MODEL_TYPES:
        raise _refuse(name_or_path, f"a {model_type!r} model (config.json model_type)")
    if tokenizer_class is not None and tokenizer_class not in TOKENIZER_CLASSES:
        raise _refuse(name_or_path, f"a {tokenizer_class!r} tokenizer (tokenizer_config.json tokenizer_class)")


class AutoTokenizer:
    """``AutoTokenizer.from_pretrained(name_or_path, use_fast=True, **kwargs)``, as in transformers."""

    def __init__(self) -> None:
        raise TypeError("AutoTokenizer is not instantiated: call AutoTokenizer.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        use_fast: bool = True,
        config: Any = None,
        tokenizer_type: str | None = None,
        **kwargs: Any,
    ) -> DistilBertTokenizerBase:
        """The tokenizer of a folder, a built-in model name or a Hub repo id.

        Args:
            name_or_path: what :meth:`DistilBertTokenizerBase.from_pretrained` takes.
            use_fast: :class:`DistilBertTokenizerFast` (default; the pure-Python tokenizer, with a warning, when
                the ``tokenizers`` package is missing) or, with False, :class:`DistilBertTokenizer`.
            config: a model config (or dict) whose ``model_type`` is checked instead of ``config.json``'s.
            tokenizer_type: ``"distilbert"`` or ``"bert"`` (transformers' override; both give the same tokenizer).
            kwargs: the Hub options (``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``subfolder``,
                ``force_download``, ``user_agent``), ``trust_remote_code=False`` and the tokenizer settings, as
                :meth:`DistilBertTokenizerBase.from_pretrained`; another keyword is a ``TypeError`` listing them.
        """
        if not isinstance(use_fast, bool):
            raise TypeError(f"use_fast must be True or False, got {use_fast!r}")
        if tokenizer_type is not None and tokenizer_type not in MODEL_TYPES:
            raise _refuse(name_or_path, f"tokenizer_type={tokenizer_type!r}")
        hub_options, overrides = _files.split_pretrained_kwargs(
            kwargs, caller="AutoTokenizer.from_pretrained", own=("use_fast", "config", "tokenizer_type")
        )
        found = _files.find_tokenizer_files(name_or_path, model_config=config is None, **hub_options)
        if config is None:
            model_type = _files.read_json(found.get(hub.CONFIG_NAME)).get("model_type")
        else:
            model_type = _model_type(config)
        tokenizer_class = _files.read_json(found.get(_files.CONFIG_FILE)).get("tokenizer_class")
        check_model_kind(name_or_path, model_type, tokenizer_class)
        _files.require_tokenizer(found, name_or_path)
        return _tokenizer_class(use_fast)._from_files(found, overrides)


def _tokenizer_class(use_fast: bool) -> type[DistilBertTokenizerBase]:
    if use_fast and importlib.util.find_spec("tokenizers") is not None:
        from distilbert_mf.tokenization.fast import DistilBertTokenizerFast

        return DistilBertTokenizerFast
    if use_fast:
        logger.warning("the 'tokenizers' package is not installed; AutoTokenizer returns the pure-Python tokenizer")
    from distilbert_mf.tokenization.slow import DistilBertTokenizer

    return DistilBertTokenizer
