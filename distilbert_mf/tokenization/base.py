"""The call API shared by both DistilBERT tokenizers, written once.

A subclass only turns a list of inputs into encodings (``_encode_batch``: the pure-Python pipeline or the
``tokenizers`` library), normalises a string (``_normalize_str``) and serialises itself (``_tokenizer_json``).
This module holds the settings and what a user calls to encode: ``__call__``, ``encode``, ``encode_plus``,
``batch_encode_plus``, ``tokenize``, ``pad``, and the ``save_pretrained`` / ``from_pretrained`` entry points.
The rest is one job per module: argument checks (:mod:`.checks`), padding and truncation strategies
(:mod:`.strategies`), vocabulary and special/added tokens (:mod:`.vocabulary`, :mod:`.added_tokens`), padding of
rows (:mod:`.encoding`), files (:mod:`.files`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.tokenization import files as _files
from distilbert_mf.tokenization.added_tokens import AddedToken, decoder_tokens
from distilbert_mf.tokenization.batch import ROW_FIELDS, BatchEncoding, check_tensor_type
from distilbert_mf.tokenization.checks import check_int, collect_batch, collect_inputs, single_input, type_error
from distilbert_mf.tokenization.encoding import pad_fill, pad_row, padded_length
from distilbert_mf.tokenization.strategies import SIDES, EncodeOptions, resolve_strategies
from distilbert_mf.tokenization.vocabulary import REQUIRED_SPECIALS, VocabularyMixin

logger = logging.getLogger(__name__)

__all__ = ["DistilBertTokenizerBase"]

# a text, or a pre-split list of words (is_split_into_words=True)
TextInput = str | Sequence[str]
# the keys pad() pads (other keys are left as they are)
PADDED_KEYS = ("input_ids", "attention_mask", "special_tokens_mask")


class DistilBertTokenizerBase(VocabularyMixin):
    """Shared settings and call API of :class:`DistilBertTokenizer` and :class:`DistilBertTokenizerFast`.

    Args:
        vocab: path of a ``vocab.txt`` or a ``{token: id}`` mapping; optional when ``tokenizer_file`` is given.
        tokenizer_file: path of a ``tokenizer.json`` (vocabulary, added tokens and normalizer settings).
        do_lower_case: lower-case the input (default True, or what ``tokenizer_file`` says).
        strip_accents: strip accents; None follows ``do_lower_case`` (BERT's rule).
        tokenize_chinese_chars: put spaces around CJK ideographs (default True).
        nfc: apply Unicode NFC before BERT's normalisation (default False, as the Hub's ``tokenizer.json``;
            transformers' original Python tokenizer did, which only matters for non-NFC text with accents kept).
        never_split: extra vocabulary tokens kept whole wherever they occur in the text (like special tokens).
        unk_token: the unknown-word token (BERT's ``[UNK]`` by default).
        sep_token: the separator token (``[SEP]``).
        pad_token: the padding token (``[PAD]``).
        cls_token: the classification token (``[CLS]``).
        mask_token: the mask token (``[MASK]``).
        bos_token: an optional beginning-of-sequence token (None: DistilBERT has none).
        eos_token: an optional end-of-sequence token (None).
        additional_special_tokens: extra special tokens (added when the vocabulary lacks them); transformers 5
            calls them ``extra_special_tokens``, accepted too.
        added_tokens_decoder: ``{id: AddedToken}`` added tokens (what ``tokenizer_config.json`` stores).
        model_max_length: longest sequence the model accepts (512 for DistilBERT); used when truncating or
            padding to ``max_length`` without an explicit ``max_length``.
        padding_side: "right" (default) or "left".
        truncation_side: "right" (default) or "left".
        clean_up_tokenization_spaces: remove spaces before punctuation in :meth:`decode` (default False).
        max_input_chars_per_word: longer words become ``unk_token`` (default 100).
    """

    model_input_names: tuple[str, ...] = ("input_ids", "attention_mask")
    is_fast: bool = False

    def __init__(
        self,
        vocab: str | os.PathLike[str] | Mapping[str, int] | None = None,
        *,
        tokenizer_file: str | os.PathLike[str] | None = None,
        do_lower_case: bool | None = None,
        strip_accents: bool | None = None,
        tokenize_chinese_chars: bool | None = None,
        nfc: bool | None = None,
        never_split: Iterable[str] | None = None,
        unk_token: str | None = None,
        sep_token: str | None = None,
        pad_token: str | None = None,
        cls_token: str | None = None,
        mask_token: str | None = None,
        bos_token: str | None = None,
        eos_token: str | None = None,
        additional_special_tokens: Sequence[str | AddedToken] | None = None,
        extra_special_tokens: Sequence[str | AddedToken] | None = None,
        added_tokens_decoder: Mapping[int, AddedToken | Mapping[str, Any] | str] | None = None,
        model_max_length: int = 512,
        padding_side: str = "right",
        truncation_side: str = "right",
        clean_up_tokenization_spaces: bool = False,
        max_input_chars_per_word: int | None = None,
    ) -> None:
        from_file: dict[str, Any] = {}
        self._tokenizer_file_data: dict[str, Any] | None = None
        if tokenizer_file is not None:
            self._tokenizer_file_data = _files.read_json(Path(tokenizer_file))
            from_file = _files.settings_from_tokenizer_json(self._tokenizer_file_data, tokenizer_file)
        if vocab is None:
            if "vocab" not in from_file:
                raise TypeError("a tokenizer needs vocab (a vocab.txt path or a {token: id} dict) or tokenizer_file")
            vocab = from_file["vocab"]
        elif isinstance(vocab, (str, os.PathLike)):
            vocab = _files.read_vocab(vocab)
        elif isinstance(vocab, Mapping):
            vocab = {str(token): int(index) for token, index in vocab.items()}
        else:
            raise type_error("vocab", vocab, "a vocab.txt path or a {token: id} mapping")
        self.vocab: dict[str, int] = dict(vocab)

        def pick(name: str, value: Any, default: Any) -> Any:
            return value if value is not None else from_file.get(name, default)

        self.do_lower_case = bool(pick("do_lower_case", do_lower_case, True))
        self.strip_accents = pick("strip_accents", strip_accents, None)
        self.tokenize_chinese_chars = bool(pick("tokenize_chinese_chars", tokenize_chinese_chars, True))
        self.nfc = bool(pick("nfc", nfc, False))
        self.max_input_chars_per_word = int(pick("max_input_chars_per_word", max_input_chars_per_word, 100))
        self.decoder_cleanup = bool(from_file.get("decoder_cleanup", True))
        given = {"unk_token": pick("unk_token", unk_token, None), "sep_token": sep_token, "pad_token": pad_token}
        given.update(cls_token=cls_token, mask_token=mask_token)  # tokenizer.json names the unknown token
        specials: dict[str, str | None] = {
            name: default if given[name] is None else given[name] for name, default in REQUIRED_SPECIALS.items()
        }
        specials.update(bos_token=bos_token, eos_token=eos_token)
        for name, value in specials.items():
            if (name in REQUIRED_SPECIALS or value is not None) and (not isinstance(value, str) or not value):
                raise type_error(name, value, "a non-empty str")
        if additional_special_tokens is not None and extra_special_tokens is not None:
            raise ValueError("pass additional_special_tokens or extra_special_tokens (the same list), not both")
        additional = additional_special_tokens if additional_special_tokens is not None else extra_special_tokens
        check_int("model_max_length", model_max_length, 1)
        self.model_max_length = int(model_max_length)
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in SIDES:
                raise ValueError(f"{name} must be one of {SIDES}, got {side!r}")
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if isinstance(never_split, str):
            raise type_error("never_split", never_split, "a list of str (not one str)")
        self.never_split = tuple(never_split or ())

        file_tokens = list(from_file.get("added_tokens") or [])
        if added_tokens_decoder:
            named = [value for value in specials.values() if value is not None]
            listed = {token.content for _, token in file_tokens}
            decoded = decoder_tokens(added_tokens_decoder, [*named, *map(str, additional or ())])
            file_tokens += [(index, token) for index, token in decoded if token.content not in listed]
        self._init_vocabulary(specials, list(additional or ()), file_tokens)
        self._wordpiece_unk = self.unk_token  # the WordPiece model's unknown token, fixed at construction
        self._warned_long = False
        self._setup_backend()

    # -- subclass hooks ----------------------------------------------------------------------------------------

    def _setup_backend(self) -> None:
        raise NotImplementedError

    def _encode_batch(self, inputs: list[tuple[Any, Any]], options: EncodeOptions) -> list[Any]:
        """One encoding per ``(text, pair_or_None)``, truncated and padded as ``options`` say."""
        raise NotImplementedError

    def _tokenizer_json(self) -> str:
        raise NotImplementedError

    # -- encoding ----------------------------------------------------------------------------------------------

    def __call__(
        self,
        text: TextInput | Sequence[TextInput],
        text_pair: TextInput | Sequence[TextInput] | None = None,
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        stride: int = 0,
        is_split_into_words: bool = False,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_token_type_ids: bool | None = None,
        return_attention_mask: bool | None = None,
        return_overflowing_tokens: bool = False,
        return_special_tokens_mask: bool = False,
        return_offsets_mapping: bool = False,
        return_length: bool = False,
        verbose: bool = True,
    ) -> BatchEncoding:
        """Tokenize a text, a pair, or a batch of either, as transformers' tokenizers do.

        Returns a :class:`BatchEncoding` with ``input_ids`` and ``attention_mask`` (``(batch, seq_len)`` tensors
        with ``return_tensors``), plus ``offset_mapping`` / ``special_tokens_mask`` / ``length`` /
        ``overflow_to_sample_mapping`` when asked. DistilBERT has no ``token_type_ids``.
        """
        if return_token_type_ids:
            raise ValueError("DistilBERT has no segment embeddings, so its tokenizers never return token_type_ids")
        tensor_type = check_tensor_type(return_tensors)
        batched, inputs = collect_inputs(text, text_pair, is_split_into_words)
        pad, trunc = resolve_strategies(
            self,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            add_special_tokens=add_special_tokens,
            has_pair=any(pair is not None for _, pair in inputs),
            verbose=verbose,
        )
        options = EncodeOptions(bool(add_special_tokens), bool(is_split_into_words), trunc, pad)
        encodings = self._encode_batch(inputs, options) if inputs else []
        rows: list[Any] = []
        sample_of_row: list[int] = []
        for index, encoding in enumerate(encodings):
            group = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            rows.extend(group)
            sample_of_row.extend([index] * len(group))
        wanted = {
            "input_ids": True,
            "attention_mask": return_attention_mask is not False,
            "special_tokens_mask": return_special_tokens_mask,
            "offset_mapping": return_offsets_mapping,
        }
        data: dict[str, Any] = {
            key: [getattr(row, ROW_FIELDS[key]) for row in rows] for key, on in wanted.items() if on
        }
        if return_length:
            data["length"] = [len(row.ids) for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row
        if verbose and not self._warned_long and trunc is None:
            self._warn_if_long(data["input_ids"])
        if not batched and tensor_type is None and not return_overflowing_tokens:
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, rows, tensor_type=tensor_type)

    def _warn_if_long(self, ids: list[list[int]]) -> None:
        longest = max((len(row) for row in ids), default=0)
        if longest > self.model_max_length:
            self._warned_long = True
            logger.warning(
                "Token indices sequence length is longer than the specified maximum sequence length for this "
                "model (%d > %d). Running this sequence through the model will result in indexing errors",
                longest,
                self.model_max_length,
            )

    def encode(self, text: TextInput, text_pair: TextInput | None = None, **kwargs: Any) -> Any:
        """The ``input_ids`` of one text (or pair): a list of ints, or a ``(1, seq_len)`` tensor with
        ``return_tensors``. Keyword arguments: those of the call (``truncation``, ``max_length``, ...)."""
        single_input(text, kwargs.get("is_split_into_words", False))
        return self(text, text_pair, **kwargs)["input_ids"]

    def encode_plus(self, text: TextInput, text_pair: TextInput | None = None, **kwargs: Any) -> BatchEncoding:
        """transformers 4's ``encode_plus``: the call on one text (or pair), every keyword of the call accepted."""
        single_input(text, kwargs.get("is_split_into_words", False))
        return self(text, text_pair, **kwargs)

    def batch_encode_plus(self, batch_text_or_text_pairs: Sequence[Any], **kwargs: Any) -> BatchEncoding:
        """transformers 4's ``batch_encode_plus``: a list of texts and/or ``(text, text_pair)`` pairs (with
        ``is_split_into_words``: word lists and pairs of word lists), encoded as one batch by the call."""
        if "text_pair" in kwargs:
            raise TypeError("batch_encode_plus takes the pairs inside the list, as (text, text_pair) tuples")
        batch = collect_batch(batch_text_or_text_pairs, kwargs.get("is_split_into_words", False))
        return self(batch, **kwargs)

    def tokenize(
        self,
        text: TextInput,
        pair: TextInput | None = None,
        add_special_tokens: bool = False,
        is_split_into_words: bool = False,
    ) -> list[str]:
        """The token strings of a text (or pair), without special tokens unless asked."""
        single_input(text, is_split_into_words)
        encoded = self(
            text, pair, add_special_tokens=add_special_tokens, is_split_into_words=is_split_into_words, verbose=False
        )
        return encoded.tokens(0)

    def pad(
        self,
        encoded_inputs: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        padding: bool | str = True,
        max_length: int | None = None,
        pad_to_multiple_of: int | None = None,
        padding_side: str | None = None,
        return_attention_mask: bool | None = None,
        return_tensors: str | None = None,
    ) -> BatchEncoding:
        """Pad already encoded rows (a dict of lists, or a list of dicts as data collators pass them).

        ``input_ids`` get ``pad_token_id``, ``attention_mask`` 0 (created when absent), ``special_tokens_mask`` 1
        (the values the encoders pad with); other keys are left as they are.
        """
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not all(isinstance(row, Mapping) for row in encoded_inputs):
                raise type_error("encoded_inputs", encoded_inputs, "a dict of lists or a non-empty list of dicts")
            keys = encoded_inputs[0].keys()
            encoded_inputs = {key: [row[key] for row in encoded_inputs] for key in keys}
        if not isinstance(encoded_inputs, Mapping) or "input_ids" not in encoded_inputs:
            raise ValueError("pad needs a mapping with an 'input_ids' entry")
        data = {
            key: value.tolist() if isinstance(value, np.ndarray) else value for key, value in encoded_inputs.items()
        }
        single = bool(data["input_ids"]) and not isinstance(data["input_ids"][0], (list, tuple, np.ndarray))
        if single:
            data = {key: [value] for key, value in data.items()}
        spec, _ = resolve_strategies(
            self,
            padding=padding,
            truncation=False,
            max_length=max_length,
            stride=0,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            add_special_tokens=False,
            has_pair=False,
        )
        ids = [list(map(int, row)) for row in data["input_ids"]]
        if return_attention_mask is not False and "attention_mask" not in data:
            data["attention_mask"] = [[1] * len(row) for row in ids]
        data["input_ids"] = ids
        if spec is not None and ids:
            target = padded_length((len(row) for row in ids), spec.length, spec.pad_to_multiple_of)
            fill = pad_fill(self.pad_token_id, self.pad_token)  # type: ignore[arg-type]
            for key in PADDED_KEYS:
                if key in data:
                    value = fill[ROW_FIELDS[key]]
                    data[key] = [pad_row(list(row), target, value, spec.direction) for row in data[key]]
        if return_attention_mask is False:
            data.pop("attention_mask", None)
        if single and return_tensors is None:
            data = {key: value[0] for key, value in data.items()}
        return BatchEncoding(data, None, tensor_type=check_tensor_type(return_tensors))

    # -- files -------------------------------------------------------------------------------------------------

    def _config(self) -> dict[str, Any]:
        config: dict[str, Any] = {
            "do_lower_case": self.do_lower_case,
            "strip_accents": self.strip_accents,
            "tokenize_chinese_chars": self.tokenize_chinese_chars,
            "do_basic_tokenize": True,
            "never_split": list(self.never_split) or None,
            "model_max_length": self.model_max_length,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side,
            "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces,
            "max_input_chars_per_word": self.max_input_chars_per_word,
        }
        if self.nfc:
            config["nfc"] = True
        return config

    def save_pretrained(self, save_directory: str | os.PathLike[str]) -> tuple[str, ...]:
        """Write ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``
        (and ``added_tokens.json`` when tokens were added beyond the vocabulary).

        transformers' ``AutoTokenizer.from_pretrained`` loads the folder as a DistilBERT tokenizer that returns
        the same ids (added tokens included) and no ``token_type_ids``. Each file appears atomically. Returns the
        written paths.
        """
        return _files.write_tokenizer_files(
            save_directory,
            vocab=self.vocab,
            tokenizer_json=self._tokenizer_json(),
            config=self._config(),
            special_tokens=self.special_tokens_map,
            additional_special_tokens=self.additional_special_tokens,
            added=self._added.decoder,
        )

    def _normalizer_json(self) -> dict[str, Any]:
        """The ``tokenizer.json`` normalizer for this tokenizer's settings."""
        return _files.normalizer_spec(
            lowercase=self.do_lower_case,
            strip_accents=self.strip_accents,
            chinese=self.tokenize_chinese_chars,
            nfc=self.nfc,
        )

    def _template(self) -> tuple[tuple[str, int], tuple[str, int]]:
        """``((cls_token, id), (sep_token, id))`` of ``[CLS] A [SEP]``."""
        return (self.cls_token, self.cls_token_id), (self.sep_token, self.sep_token_id)  # type: ignore[return-value]

    def _spec_json(self) -> dict[str, Any]:
        """The ``tokenizer.json`` content that describes this tokenizer (vocabulary, normalizer, template)."""
        cls, sep = self._template()
        return _files.tokenizer_json_spec(
            self.vocab,
            self._added.decoder,
            normalizer=self._normalizer_json(),
            unk_token=self._wordpiece_unk,
            cls=cls,
            sep=sep,
            max_input_chars_per_word=self.max_input_chars_per_word,
            decoder_cleanup=self.decoder_cleanup,
        )

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **kwargs: Any) -> DistilBertTokenizerBase:
        """Load from a folder, a built-in model name or a Hub repo id.

        Reads ``tokenizer.json`` (vocabulary, normalizer, added tokens) or else ``vocab.txt`` (with
        ``added_tokens.json``), then ``special_tokens_map.json`` and ``tokenizer_config.json``. Keyword arguments:
        the Hub options ``revision``, ``cache_dir``, ``local_files_only``, ``token``, ``subfolder``,
        ``force_download``, ``user_agent``; ``trust_remote_code=False`` (True is refused: no remote code ever
        runs); any constructor setting (``do_lower_case=False``, ``model_max_length=256``, ...), which overrides
        the files. Another keyword is a ``TypeError`` listing those that exist.
        """
        hub_options, overrides = _files.split_pretrained_kwargs(kwargs, caller=f"{cls.__name__}.from_pretrained")
        found = _files.resolve_tokenizer_files(name_or_path, **hub_options)
        return cls._from_files(found, overrides)

    @classmethod
    def _from_files(cls, found: Mapping[str, Path | None], overrides: Mapping[str, Any]) -> DistilBertTokenizerBase:
        """The tokenizer of resolved files (:func:`.files.resolve_tokenizer_files`), ``overrides`` winning."""
        settings = _files.settings_from_configs(found)
        overrides = dict(overrides)
        if "extra_special_tokens" in overrides:
            overrides[_files.EXTRA_SPECIALS] = overrides.pop("extra_special_tokens")
        settings.update(overrides)
        if found[_files.TOKENIZER_FILE] is not None:
            return cls(tokenizer_file=found[_files.TOKENIZER_FILE], **settings)
        return cls(found[_files.VOCAB_FILE], **settings)

    def __repr__(self) -> str:
        added = len(self) - self.vocab_size
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars}, "
            f"nfc={self.nfc}, model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"truncation_side={self.truncation_side!r}" + (f", added_tokens={added})" if added else ")")
        )
