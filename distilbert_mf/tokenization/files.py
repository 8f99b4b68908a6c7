"""Tokenizer files: ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``.

Reading resolves the settings both tokenizers share (precedence: defaults < ``tokenizer.json`` <
``special_tokens_map.json`` < ``tokenizer_config.json`` < the caller's keyword arguments); when a folder has a
``tokenizer.json`` both tokenizers take their vocabulary from it, so they always agree. Writing produces the
files transformers writes, so ``transformers.AutoTokenizer`` loads them (``"tokenizer_class":
"DistilBertTokenizer"``, inputs ``input_ids`` and ``attention_mask`` only). ``tokenizer.json`` is plain JSON
built here without the ``tokenizers`` library, so the pure-Python tokenizer writes the same file as the fast one.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilbert_mf._io import atomic_write_bytes

logger = logging.getLogger(__name__)

__all__ = [
    "SETTING_NAMES",
    "SPECIAL_TOKEN_NAMES",
    "added_token_json",
    "normalizer_spec",
    "read_json",
    "read_vocab",
    "resolve_tokenizer_files",
    "settings_from_configs",
    "settings_from_tokenizer_json",
    "tokenizer_json_spec",
    "write_tokenizer_files",
]

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
TOKENIZER_FILES = (CONFIG_FILE, SPECIAL_TOKENS_FILE, VOCAB_FILE, TOKENIZER_FILE)

SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# keyword arguments of both tokenizer constructors (besides vocab / tokenizer_file)
SETTING_NAMES = (
    "do_lower_case",
    "strip_accents",
    "tokenize_chinese_chars",
    "nfc",
    "never_split",
    *SPECIAL_TOKEN_NAMES,
    "model_max_length",
    "padding_side",
    "truncation_side",
    "clean_up_tokenization_spaces",
    "max_input_chars_per_word",
)
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length


def read_vocab(path: str | os.PathLike[str]) -> dict[str, int]:
    """``vocab.txt``: one token per line, the line number is its id."""
    vocab: dict[str, int] = {}
    with open(path, encoding="utf-8") as handle:
        for index, line in enumerate(handle):
            vocab[line.rstrip("\n")] = index
    if not vocab:
        raise ValueError(f"the vocabulary file {path} is empty")
    return vocab


def read_json(path: Path | None) -> dict[str, Any]:
    """A JSON object from ``path`` (an empty dict when ``path`` is None)."""
    if path is None:
        return {}
    with open(path, encoding="utf-8") as handle:
        data = json.load(handle)
    if not isinstance(data, dict):
        raise ValueError(f"{path} must hold a JSON object, found {type(data).__name__}")
    return data


def _token_content(value: Any) -> Any:
    """Special tokens are stored as a string or as a serialised AddedToken ``{"content": ...}``."""
    return value.get("content") if isinstance(value, dict) else value


def bert_normalizer_settings(normalizer: Any) -> dict[str, Any] | None:
    """Settings from a ``tokenizer.json`` normalizer, or None when it is not (NFC +) BertNormalizer."""
    if not isinstance(normalizer, dict):
        return None
    nfc = False
    if normalizer.get("type") == "Sequence":
        parts = normalizer.get("normalizers") or []
        if len(parts) != 2 or parts[0].get("type") != "NFC":
            return None
        nfc, normalizer = True, parts[1]
    if normalizer.get("type") != "BertNormalizer" or not normalizer.get("clean_text", True):
        return None
    return {
        "do_lower_case": bool(normalizer.get("lowercase", True)),
        "strip_accents": normalizer.get("strip_accents"),
        "tokenize_chinese_chars": bool(normalizer.get("handle_chinese_chars", True)),
        "nfc": nfc,
    }


def settings_from_tokenizer_json(data: Mapping[str, Any], path: Any = TOKENIZER_FILE) -> dict[str, Any]:
    """Vocabulary and settings from a parsed ``tokenizer.json`` (a BERT WordPiece tokenizer)."""
    model = data.get("model") or {}
    if model.get("type", "WordPiece") != "WordPiece" or not isinstance(model.get("vocab"), dict):
        raise ValueError(f"{path} does not describe a WordPiece tokenizer (model type {model.get('type')!r})")
    if model.get("continuing_subword_prefix", "##") != "##":
        raise ValueError(f"{path}: continuing_subword_prefix must be '##', got {model['continuing_subword_prefix']!r}")
    settings: dict[str, Any] = {
        "vocab": {str(k): int(v) for k, v in model["vocab"].items()},
        "unk_token": model.get("unk_token", "[UNK]"),
        "max_input_chars_per_word": int(model.get("max_input_chars_per_word", 100)),
    }
    normalizer = bert_normalizer_settings(data.get("normalizer"))
    if normalizer is None:
        logger.warning("%s has a normalizer other than BertNormalizer; using the tokenizer_config.json settings", path)
    else:
        settings.update(normalizer)
    if (data.get("pre_tokenizer") or {}).get("type") not in ("BertPreTokenizer", None):
        logger.warning("%s does not use BertPreTokenizer; the pure-Python tokenizer splits words as BERT does", path)
    decoder = data.get("decoder") or {}
    settings["decoder_cleanup"] = bool(decoder.get("cleanup", True)) if decoder.get("type") == "WordPiece" else True
    added = []
    for entry in data.get("added_tokens") or []:
        added.append(
            {
                "content": entry["content"],
                "id": int(entry["id"]),
                "special": bool(entry.get("special", False)),
                "plain": not any(entry.get(k, False) for k in ("lstrip", "rstrip", "single_word", "normalized")),
            }
        )
    settings["added_tokens"] = added
    return settings


def settings_from_configs(files: Mapping[str, Path | None]) -> dict[str, Any]:
    """Constructor keyword arguments from ``tokenizer_config.json`` and ``special_tokens_map.json`` (if present)."""
    settings: dict[str, Any] = {}
    special = read_json(files.get(SPECIAL_TOKENS_FILE))
    config = read_json(files.get(CONFIG_FILE))
    for source in (special, config):
        for name in SPECIAL_TOKEN_NAMES:
            if source.get(name) is not None:
                settings[name] = _token_content(source[name])
    for name in SETTING_NAMES:
        if name in SPECIAL_TOKEN_NAMES or name not in config:
            continue
        value = config[name]
        if name == "never_split":
            value = tuple(value or ())
        settings[name] = value
    if config.get("do_basic_tokenize") is False:
        logger.warning(
            "%s sets do_basic_tokenize=false, which is not supported; BERT's basic tokenization is used",
            files.get(CONFIG_FILE),
        )
    if settings.get("model_max_length") is None:
        settings.pop("model_max_length", None)
    return settings


def resolve_tokenizer_files(
    name_or_path: str | os.PathLike[str],
    *,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> dict[str, Path | None]:
    """Local paths of the tokenizer files of a folder, built-in model name or Hub repo id (None when absent)."""
    from distilbert_mf.checkpoint import hub

    options = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}
    files: dict[str, Path | None] = {}
    for filename in TOKENIZER_FILES:
        files[filename] = _resolve_optional(hub, name_or_path, filename, options)
    if files[VOCAB_FILE] is None and files[TOKENIZER_FILE] is None:
        raise FileNotFoundError(
            f"no tokenizer found for {str(name_or_path)!r}: expected {VOCAB_FILE} or {TOKENIZER_FILE} "
            "in the folder or Hub repository"
        )
    return files


def _resolve_optional(hub: Any, name_or_path: Any, filename: str, options: dict[str, Any]) -> Path | None:
    """``hub.resolve_file(..., optional=True)``: None when the folder or repo lacks the file.

    A missing folder/repo or an offline cache miss still raises (``FileNotFoundError`` subclasses).
    """
    path = hub.resolve_file(name_or_path, filename, optional=True, **options)
    return None if path is None else Path(path)


def normalizer_spec(*, lowercase: bool, strip_accents: bool | None, chinese: bool, nfc: bool) -> dict[str, Any]:
    """The ``tokenizer.json`` normalizer for these settings."""
    bert = {
        "type": "BertNormalizer",
        "clean_text": True,
        "handle_chinese_chars": chinese,
        "strip_accents": strip_accents,
        "lowercase": lowercase,
    }
    return {"type": "Sequence", "normalizers": [{"type": "NFC"}, bert]} if nfc else bert


def added_token_json(token: Mapping[str, Any]) -> dict[str, Any]:
    """A ``tokenizer.json`` added-token entry: matched as is in the raw text, never normalised or stripped."""
    return {
        "id": token["id"],
        "content": token["content"],
        "single_word": False,
        "lstrip": False,
        "rstrip": False,
        "normalized": False,
        "special": token["special"],
    }


def tokenizer_json_spec(
    vocab: Mapping[str, int],
    added_tokens: list[dict[str, Any]],
    *,
    normalizer: dict[str, Any],
    unk_token: str,
    cls_token: str,
    sep_token: str,
    max_input_chars_per_word: int,
    decoder_cleanup: bool,
) -> dict[str, Any]:
    """A complete ``tokenizer.json`` (as a dict) for a BERT WordPiece tokenizer with ``[CLS] A [SEP] B [SEP]``."""
    ids = {token: vocab[token] if token in vocab else None for token in (cls_token, sep_token)}
    for token in added_tokens:
        if token["content"] in ids and ids[token["content"]] is None:
            ids[token["content"]] = token["id"]
    missing = [token for token, value in ids.items() if value is None]
    if missing:
        raise ValueError(f"special tokens {missing} are not in the vocabulary")
    cls_id, sep_id = ids[cls_token], ids[sep_token]

    def piece(kind: str, name: str, type_id: int) -> dict[str, Any]:
        return {kind: {"id": name, "type_id": type_id}}

    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token_json(token) for token in sorted(added_tokens, key=lambda t: t["id"])],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {
            "type": "TemplateProcessing",
            "single": [
                piece("SpecialToken", cls_token, 0),
                piece("Sequence", "A", 0),
                piece("SpecialToken", sep_token, 0),
            ],
            "pair": [
                piece("SpecialToken", cls_token, 0),
                piece("Sequence", "A", 0),
                piece("SpecialToken", sep_token, 0),
                piece("Sequence", "B", 1),
                piece("SpecialToken", sep_token, 1),
            ],
            "special_tokens": {
                cls_token: {"id": cls_token, "ids": [cls_id], "tokens": [cls_token]},
                sep_token: {"id": sep_token, "ids": [sep_id], "tokens": [sep_token]},
            },
        },
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": decoder_cleanup},
        "model": {
            "type": "WordPiece",
            "unk_token": unk_token,
            "continuing_subword_prefix": "##",
            "max_input_chars_per_word": max_input_chars_per_word,
            "vocab": dict(sorted(vocab.items(), key=lambda item: item[1])),
        },
    }


def _dump(data: Any) -> bytes:
    return (json.dumps(data, indent=2, ensure_ascii=False) + "\n").encode("utf-8")


def write_tokenizer_files(
    directory: str | os.PathLike[str],
    *,
    vocab: Mapping[str, int],
    tokenizer_json: str,
    config: dict[str, Any],
    special_tokens: dict[str, str],
    added_tokens: list[dict[str, Any]],
) -> tuple[str, ...]:
    """Write the four tokenizer files atomically into ``directory``; returns their paths."""
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("the vocabulary ids must be 0..n-1 without gaps to be written as vocab.txt")
    config = {
        **config,
        "added_tokens_decoder": {
            str(token["id"]): {
                "content": token["content"],
                "lstrip": False,
                "normalized": False,
                "rstrip": False,
                "single_word": False,
                "special": token["special"],
            }
            for token in sorted(added_tokens, key=lambda t: t["id"])
        },
        **special_tokens,
        "tokenizer_class": "DistilBertTokenizer",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    paths = {
        VOCAB_FILE: "".join(token + "\n" for token, _ in by_id).encode("utf-8"),
        TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
        CONFIG_FILE: _dump(config),
        SPECIAL_TOKENS_FILE: _dump(special_tokens),
    }
    written = []
    for name, payload in paths.items():
        atomic_write_bytes(directory / name, payload)
        written.append(str(directory / name))
    return tuple(written)
