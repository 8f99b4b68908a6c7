"""Tokenizer files: ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json``, ``special_tokens_map.json``,
``added_tokens.json``.

Reading resolves the settings both tokenizers share (precedence: defaults < ``tokenizer.json`` <
``special_tokens_map.json`` < ``tokenizer_config.json`` < the caller's keyword arguments); when a folder has a
``tokenizer.json`` both tokenizers take their vocabulary and added tokens from it, so they always agree (without it:
``added_tokens_decoder`` of ``tokenizer_config.json``, else ``added_tokens.json``). Writing produces the files
transformers writes, so ``transformers.AutoTokenizer`` loads them (``"tokenizer_class": "DistilBertTokenizer"``,
inputs ``input_ids`` and ``attention_mask`` only). ``tokenizer.json`` is plain JSON built here without the
``tokenizers`` library, so the pure-Python tokenizer writes the same file as the fast one.

Every file of a folder, built-in model or Hub repo is found through :func:`distilbert_mf.hub.resolve_files` (one
call for all of them, ``optional=True``): this module has no network logic of its own.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilbert_mf import hub
from distilbert_mf._io import atomic_write_bytes
from distilbert_mf.tokenization.added_tokens import AddedToken

logger = logging.getLogger(__name__)

__all__ = [
    "HUB_OPTIONS",
    "SETTING_NAMES",
    "SPECIAL_TOKEN_NAMES",
    "added_token_json",
    "check_remote_code",
    "find_tokenizer_files",
    "normalizer_spec",
    "post_processor_spec",
    "read_json",
    "read_vocab",
    "require_tokenizer",
    "resolve_tokenizer_files",
    "settings_from_configs",
    "settings_from_tokenizer_json",
    "split_pretrained_kwargs",
    "tokenizer_json_spec",
    "write_tokenizer_files",
]

VOCAB_FILE = "vocab.txt"
TOKENIZER_FILE = "tokenizer.json"
CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
ADDED_TOKENS_FILE = "added_tokens.json"
TOKENIZER_FILES = (CONFIG_FILE, SPECIAL_TOKENS_FILE, VOCAB_FILE, TOKENIZER_FILE)

# named special tokens, in the order the files list them (bos / eos only when set)
SPECIAL_TOKEN_NAMES = ("unk_token", "sep_token", "pad_token", "cls_token", "mask_token", "bos_token", "eos_token")
EXTRA_SPECIALS = "additional_special_tokens"  # transformers 5 reads it as extra_special_tokens
# keyword arguments of both tokenizer constructors (besides vocab / tokenizer_file)
SETTING_NAMES = (
    "do_lower_case",
    "strip_accents",
    "tokenize_chinese_chars",
    "nfc",
    "never_split",
    *SPECIAL_TOKEN_NAMES,
    EXTRA_SPECIALS,
    "extra_special_tokens",
    "added_tokens_decoder",
    "model_max_length",
    "padding_side",
    "truncation_side",
    "clean_up_tokenization_spaces",
    "max_input_chars_per_word",
)
# from_pretrained keywords that say where the files are (handed to distilbert_mf.hub.resolve_files)
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "subfolder", "force_download", "user_agent")
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
    settings["added_tokens"] = [
        (int(entry["id"]), AddedToken.from_json(entry)) for entry in data.get("added_tokens") or []
    ]
    return settings


def _extra_specials(value: Any, source: Any) -> list[Any]:
    """The extra special tokens of a file: a list (transformers 4 and 5), or transformers 5's dict of named
    model-specific tokens (their values)."""
    if isinstance(value, Mapping):
        return [_token_content(item) for item in value.values()]
    if not isinstance(value, (list, tuple)):
        raise ValueError(f"{source}: the extra special tokens must be a list, got {type(value).__name__}")
    return [AddedToken.from_json(item) if isinstance(item, Mapping) else item for item in value]


def _added_tokens(files: Mapping[str, Path | None], config: Mapping[str, Any]) -> dict[int, Any] | None:
    """Added tokens of a folder without ``tokenizer.json``: ``added_tokens_decoder`` of ``tokenizer_config.json``
    (with their options), else ``added_tokens.json`` (``{content: id}``, transformers 4's Python tokenizers)."""
    decoder = config.get("added_tokens_decoder")
    if isinstance(decoder, Mapping) and decoder:
        return {int(index): AddedToken.from_json(entry) for index, entry in decoder.items()}
    added = read_json(files.get(ADDED_TOKENS_FILE))
    return {int(index): content for content, index in added.items()} or None


def settings_from_configs(files: Mapping[str, Path | None]) -> dict[str, Any]:
    """Constructor keyword arguments from ``tokenizer_config.json``, ``special_tokens_map.json`` and, without a
    ``tokenizer.json``, the added tokens (see :func:`_added_tokens`)."""
    settings: dict[str, Any] = {}
    special = read_json(files.get(SPECIAL_TOKENS_FILE))
    config = read_json(files.get(CONFIG_FILE))
    for source, data in ((files.get(SPECIAL_TOKENS_FILE), special), (files.get(CONFIG_FILE), config)):
        for name in SPECIAL_TOKEN_NAMES:
            if data.get(name) is not None:
                settings[name] = _token_content(data[name])
        for name in (EXTRA_SPECIALS, "extra_special_tokens"):
            if data.get(name):
                settings[EXTRA_SPECIALS] = _extra_specials(data[name], source)
    for name in SETTING_NAMES:
        if name in SPECIAL_TOKEN_NAMES or name not in config or name in (EXTRA_SPECIALS, "extra_special_tokens"):
            continue
        if name == "added_tokens_decoder":
            continue
        value = config[name]
        if name == "never_split":
            value = tuple(value or ())
        settings[name] = value
    if files.get(TOKENIZER_FILE) is None:
        added = _added_tokens(files, config)
        if added:
            settings["added_tokens_decoder"] = added
    if config.get("do_basic_tokenize") is False:
        logger.warning(
            "%s sets do_basic_tokenize=false, which is not supported; BERT's basic tokenization is used",
            files.get(CONFIG_FILE),
        )
    if settings.get("model_max_length") is None:
        settings.pop("model_max_length", None)
    return settings


def check_remote_code(trust_remote_code: Any) -> None:
    """``trust_remote_code=False`` is accepted; True is refused: no remote code ever runs."""
    if not isinstance(trust_remote_code, bool):
        raise TypeError(f"trust_remote_code must be True or False, got {trust_remote_code!r}")
    if trust_remote_code:
        raise ValueError(
            "trust_remote_code=True is refused: no remote code ever runs in distilbert_mf, and DistilBERT tokenizers "
            "need none (pass trust_remote_code=False or leave it out)"
        )


def split_pretrained_kwargs(
    kwargs: dict[str, Any], *, caller: str, own: tuple[str, ...] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(hub options, tokenizer settings)`` from ``from_pretrained``'s keyword arguments; an unknown one is a
    ``TypeError`` listing every argument that exists (``own``: the caller's own keywords)."""
    kwargs = dict(kwargs)
    check_remote_code(kwargs.pop("trust_remote_code", False))
    options = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
    unknown = sorted(set(kwargs) - set(SETTING_NAMES))
    if unknown:
        mine = f"{sorted(own)}, " if own else ""
        raise TypeError(
            f"{caller}: unexpected keyword arguments {unknown}; allowed: {mine}"
            f"the settings {sorted(SETTING_NAMES)}, the Hub options {sorted(HUB_OPTIONS)} and trust_remote_code=False"
        )
    return options, kwargs


def find_tokenizer_files(
    name_or_path: str | os.PathLike[str], *, model_config: bool = False, **hub_options: Any
) -> dict[str, Path | None]:
    """Local paths of the tokenizer files of a folder, built-in model name or Hub repo id (None when absent).

    One :func:`distilbert_mf.hub.resolve_files` call for the four tokenizer files (and ``config.json`` with
    ``model_config``), a second for ``added_tokens.json`` only when there is no ``tokenizer.json``. A missing
    folder or repo, or the Hub unreachable with nothing cached, raises that module's error (``FileNotFoundError``
    subclasses) at once, naming every file looked for.
    """
    names = [*TOKENIZER_FILES, hub.CONFIG_NAME] if model_config else list(TOKENIZER_FILES)
    found = hub.resolve_files(name_or_path, names, optional=True, **hub_options)
    if found[TOKENIZER_FILE] is None and found[VOCAB_FILE] is not None:
        found.update(hub.resolve_files(name_or_path, [ADDED_TOKENS_FILE], optional=True, **hub_options))
    return {name: None if path is None else Path(path) for name, path in found.items()}


def require_tokenizer(found: Mapping[str, Path | None], name_or_path: str | os.PathLike[str]) -> None:
    """``FileNotFoundError`` unless ``found`` holds a ``vocab.txt`` or a ``tokenizer.json``."""
    if found[VOCAB_FILE] is None and found[TOKENIZER_FILE] is None:
        raise FileNotFoundError(
            f"no tokenizer found for {str(name_or_path)!r}: expected {VOCAB_FILE} or {TOKENIZER_FILE} "
            "in the folder or Hub repository"
        )


def resolve_tokenizer_files(name_or_path: str | os.PathLike[str], **hub_options: Any) -> dict[str, Path | None]:
    """:func:`find_tokenizer_files`, then :func:`require_tokenizer`."""
    found = find_tokenizer_files(name_or_path, **hub_options)
    require_tokenizer(found, name_or_path)
    return found


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


def added_token_json(index: int, token: AddedToken) -> dict[str, Any]:
    """A ``tokenizer.json`` ``added_tokens`` entry."""
    return {"id": index, **token.to_json()}


def post_processor_spec(cls: tuple[str, int], sep: tuple[str, int]) -> dict[str, Any]:
    """The ``tokenizer.json`` post-processor ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]`` for ``(token, id)``s."""

    def piece(kind: str, name: str, type_id: int) -> dict[str, Any]:
        return {kind: {"id": name, "type_id": type_id}}

    (cls_token, cls_id), (sep_token, sep_id) = cls, sep
    return {
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
    }


def template_tokens(post_processor: Any) -> set[str] | None:
    """The special tokens a ``tokenizer.json`` post-processor inserts (None when it is not a BERT template)."""
    if not isinstance(post_processor, Mapping):
        return None
    if post_processor.get("type") == "TemplateProcessing":
        return set(post_processor.get("special_tokens") or {})
    if post_processor.get("type") == "BertProcessing":
        return {post_processor["cls"][0], post_processor["sep"][0]}
    return None


def tokenizer_json_spec(
    vocab: Mapping[str, int],
    added: Mapping[int, AddedToken],
    *,
    normalizer: dict[str, Any],
    unk_token: str,
    cls: tuple[str, int],
    sep: tuple[str, int],
    max_input_chars_per_word: int,
    decoder_cleanup: bool,
) -> dict[str, Any]:
    """A complete ``tokenizer.json`` (as a dict) for a BERT WordPiece tokenizer with ``[CLS] A [SEP] B [SEP]``."""
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [added_token_json(index, token) for index, token in sorted(added.items())],
        "normalizer": normalizer,
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": post_processor_spec(cls, sep),
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
    additional_special_tokens: list[str],
    added: Mapping[int, AddedToken],
) -> tuple[str, ...]:
    """Write the tokenizer files atomically into ``directory``; returns their paths.

    ``added_tokens.json`` (transformers 4's Python tokenizers) is written only when there are added tokens beyond
    the vocabulary; ``tokenizer.json`` and ``added_tokens_decoder`` always hold every added token with its options.
    """
    directory = Path(directory)
    if directory.exists() and not directory.is_dir():
        raise NotADirectoryError(f"save_pretrained needs a folder, but {directory} is a file")
    directory.mkdir(parents=True, exist_ok=True)
    by_id = sorted(vocab.items(), key=lambda item: item[1])
    if [i for _, i in by_id] != list(range(len(by_id))):
        raise ValueError("the vocabulary ids must be 0..n-1 without gaps to be written as vocab.txt")
    flags = ("lstrip", "normalized", "rstrip", "single_word", "special")
    specials = dict(special_tokens)
    if additional_special_tokens:
        specials[EXTRA_SPECIALS] = list(additional_special_tokens)
    config = {
        **config,
        "added_tokens_decoder": {
            str(index): {"content": token.content, **{flag: getattr(token, flag) for flag in flags}}
            for index, token in sorted(added.items())
        },
        **specials,
        "tokenizer_class": "DistilBertTokenizer",
        "model_input_names": ["input_ids", "attention_mask"],
    }
    payloads = {
        VOCAB_FILE: "".join(token + "\n" for token, _ in by_id).encode("utf-8"),
        TOKENIZER_FILE: tokenizer_json.encode("utf-8"),
        CONFIG_FILE: _dump(config),
        SPECIAL_TOKENS_FILE: _dump(specials),
    }
    beyond = {token.content: index for index, token in sorted(added.items()) if index >= len(vocab)}
    if beyond:
        payloads[ADDED_TOKENS_FILE] = _dump(beyond)
    written = []
    for name, payload in payloads.items():
        atomic_write_bytes(directory / name, payload)
        written.append(str(directory / name))
    return tuple(written)
