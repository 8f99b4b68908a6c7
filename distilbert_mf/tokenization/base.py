"""The call API shared by both DistilBERT tokenizers, written once.

A subclass only turns a list of inputs into encodings (``_encode_batch``: the pure-Python pipeline or the
``tokenizers`` library) and serialises itself (``_tokenizer_json``). Everything a user touches lives here:
argument checking, padding/truncation strategy resolution (transformers' rules), ``BatchEncoding`` and tensors,
decoding, special tokens, ``save_pretrained`` / ``from_pretrained``.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.tokenization import files as _files
from distilbert_mf.tokenization.batch import BatchEncoding, check_tensor_type

logger = logging.getLogger(__name__)

__all__ = ["DistilBertTokenizerBase", "PaddingSpec", "TruncationSpec"]

LARGE_INTEGER = int(1e20)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
SIDES = ("left", "right")
_DEFAULT_SPECIALS = {
    "unk_token": "[UNK]",
    "sep_token": "[SEP]",
    "pad_token": "[PAD]",
    "cls_token": "[CLS]",
    "mask_token": "[MASK]",
}

# a text, or a pre-split list of words (is_split_into_words=True)
TextInput = str | Sequence[str]


@dataclass(frozen=True)
class TruncationSpec:
    """Truncation for one call; ``max_length`` counts the special tokens."""

    max_length: int
    strategy: str
    stride: int
    direction: str


@dataclass(frozen=True)
class PaddingSpec:
    """Padding for one call: to ``length`` or, when None, to the longest row of the batch."""

    length: int | None
    pad_to_multiple_of: int | None
    direction: str


def _type_error(what: str, value: Any, allowed: str) -> TypeError:
    hint = " (decode bytes to str first, e.g. value.decode('utf-8'))" if isinstance(value, (bytes, bytearray)) else ""
    return TypeError(f"{what} must be {allowed}, got {type(value).__name__}{hint}")


def _check_text(value: Any, what: str, allowed: str = "a str") -> str:
    """``value`` if it is a str of valid Unicode (no lone surrogates), else TypeError / ValueError."""
    if not isinstance(value, str):
        raise _type_error(what, value, allowed)
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as err:
            raise ValueError(
                f"{what} holds a lone surrogate {value[err.start]!r} at index {err.start}, which is not valid "
                "Unicode text (decode the source bytes with errors='replace' to get valid text)"
            ) from None
    return value


def _check_texts(values: Any, what: str, allowed: str) -> list[str]:
    """A list of checked texts from a list or tuple, else TypeError."""
    if not isinstance(values, (list, tuple)):
        raise _type_error(what, values, allowed)
    return [_check_text(item, f"{what}[{i}]") for i, item in enumerate(values)]


def _check_words(value: Any, what: str) -> list[str]:
    return _check_texts(value, what, "a list of str (the words of one text, is_split_into_words=True)")


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        allowed = f"an int >= {minimum}" + (" or None" if allow_none else "")
        raise ValueError(f"{name} must be {allowed}, got {value!r}")


def _as_id_list(token_ids: Any) -> list[int]:
    """Ids from an int, a list, a numpy array or a framework tensor (1-D)."""
    if isinstance(token_ids, (int, np.integer)) and not isinstance(token_ids, bool):
        return [int(token_ids)]
    if hasattr(token_ids, "numpy") and not isinstance(token_ids, np.ndarray):
        token_ids = token_ids.numpy()  # torch / tf tensors (CPU)
    array = np.asarray(token_ids)
    if array.dtype == object or not (array.size == 0 or np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"token ids must be ints, got {type(token_ids).__name__} of {array.dtype}")
    if array.ndim > 1:
        raise ValueError(f"decode takes one sequence of ids (1-D), got shape {array.shape}; use batch_decode")
    return [int(i) for i in array.reshape(-1)]


# transformers' clean_up_tokenization, in order; tokenizers' WordPiece decoder also turns " do not" into " don't"
_CLEANUP = (
    (" .", "."),
    (" ?", "?"),
    (" !", "!"),
    (" ,", ","),
    (" ' ", "'"),
    (" n't", "n't"),
    (" 'm", "'m"),
    (" 's", "'s"),
    (" 've", "'ve"),
    (" 're", "'re"),
)
_DECODER_CLEANUP = (*_CLEANUP[:7], (" do not", " don't"), *_CLEANUP[7:])


def _replace_all(text: str, replacements: tuple[tuple[str, str], ...]) -> str:
    for old, new in replacements:
        text = text.replace(old, new)
    return text


def clean_up_tokenization(text: str) -> str:
    """transformers' ``clean_up_tokenization``: no space before punctuation and English contractions."""
    return _replace_all(text, _CLEANUP)


def _special_id(name: str) -> property:
    """A read-only ``<name>_id`` property: the id of the special token stored in attribute ``name``."""

    def token_id(self: DistilBertTokenizerBase) -> int:
        return self._token_id(getattr(self, name))  # type: ignore[return-value]

    token_id.__doc__ = f"Id of ``{name}``."
    return property(token_id)


class DistilBertTokenizerBase:
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
            raise _type_error("vocab", vocab, "a vocab.txt path or a {token: id} mapping")
        self.vocab: dict[str, int] = dict(vocab)

        def pick(name: str, value: Any, default: Any) -> Any:
            return value if value is not None else from_file.get(name, default)

        self.do_lower_case = bool(pick("do_lower_case", do_lower_case, True))
        self.strip_accents = pick("strip_accents", strip_accents, None)
        self.tokenize_chinese_chars = bool(pick("tokenize_chinese_chars", tokenize_chinese_chars, True))
        self.nfc = bool(pick("nfc", nfc, False))
        self.max_input_chars_per_word = int(pick("max_input_chars_per_word", max_input_chars_per_word, 100))
        self.decoder_cleanup = bool(from_file.get("decoder_cleanup", True))
        specials = {
            "unk_token": pick("unk_token", unk_token, "[UNK]"),  # tokenizer.json names the unknown token
            "sep_token": sep_token,
            "pad_token": pad_token,
            "cls_token": cls_token,
            "mask_token": mask_token,
        }
        for name, value in specials.items():
            value = _DEFAULT_SPECIALS[name] if value is None else value
            if not isinstance(value, str) or not value:
                raise _type_error(name, value, "a non-empty str")
            setattr(self, name, value)
        _check_int("model_max_length", model_max_length, 1)
        self.model_max_length = int(model_max_length)
        for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
            if side not in SIDES:
                raise ValueError(f"{name} must be one of {SIDES}, got {side!r}")
        self.padding_side = padding_side
        self.truncation_side = truncation_side
        self.clean_up_tokenization_spaces = bool(clean_up_tokenization_spaces)
        if isinstance(never_split, str):
            raise _type_error("never_split", never_split, "a list of str (not one str)")
        self.never_split = tuple(never_split or ())

        self.added_tokens = self._collect_added_tokens(from_file.get("added_tokens"))
        self._id_to_token: dict[int, str] = {index: token for token, index in self.vocab.items()}
        self._added_ids: dict[str, int] = {t["content"]: t["id"] for t in self.added_tokens}
        for token in self.added_tokens:
            self._id_to_token.setdefault(token["id"], token["content"])
        missing = [getattr(self, name) for name in _DEFAULT_SPECIALS if self._token_id(getattr(self, name)) is None]
        if missing:
            raise ValueError(f"special tokens {missing} are not in the vocabulary ({len(self.vocab)} tokens)")
        self._warned_long = False
        self._setup_backend()

    # -- subclass hooks ----------------------------------------------------------------------------------------

    def _setup_backend(self) -> None:
        raise NotImplementedError

    def _encode_batch(
        self,
        inputs: list[tuple[Any, Any]],
        *,
        add_special_tokens: bool,
        is_split_into_words: bool,
        truncation: TruncationSpec | None,
        padding: PaddingSpec | None,
    ) -> list[Any]:
        raise NotImplementedError

    def _tokenizer_json(self) -> str:
        raise NotImplementedError

    # -- vocabulary and special tokens -------------------------------------------------------------------------

    def _collect_added_tokens(self, from_file: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
        """Tokens matched whole in the raw text: the special tokens, ``never_split`` and the file's added tokens."""
        tokens: dict[str, dict[str, Any]] = {}
        for entry in from_file or []:
            tokens[entry["content"]] = dict(entry)
        for name in _DEFAULT_SPECIALS:
            content = getattr(self, name)
            if content in tokens:
                tokens[content]["special"] = True
            elif content in self.vocab:
                tokens[content] = {"content": content, "id": self.vocab[content], "special": True, "plain": True}
        for content in self.never_split:
            if not isinstance(content, str) or not content:
                raise _type_error("never_split entries", content, "non-empty str")
            if content in tokens:
                continue
            if content not in self.vocab:
                raise ValueError(f"never_split token {content!r} is not in the vocabulary")
            tokens[content] = {"content": content, "id": self.vocab[content], "special": False, "plain": True}
        return sorted(tokens.values(), key=lambda t: t["id"])

    def _token_id(self, token: str) -> int | None:
        index = self._added_ids.get(token)
        return index if index is not None else self.vocab.get(token)

    @property
    def vocab_size(self) -> int:
        """Size of the base vocabulary (``vocab.txt``)."""
        return len(self.vocab)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included."""
        return len(self._id_to_token)

    def get_vocab(self) -> dict[str, int]:
        """``{token: id}`` for every token, added tokens included."""
        vocab = dict(self.vocab)
        vocab.update(self._added_ids)
        return vocab

    unk_token_id = _special_id("unk_token")
    sep_token_id = _special_id("sep_token")
    pad_token_id = _special_id("pad_token")
    cls_token_id = _special_id("cls_token")
    mask_token_id = _special_id("mask_token")

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """``{"unk_token": "[UNK]", ...}``."""
        return {name: getattr(self, name) for name in _DEFAULT_SPECIALS}

    @property
    def all_special_tokens(self) -> list[str]:
        return [t["content"] for t in self.added_tokens if t["special"]]

    @property
    def all_special_ids(self) -> list[int]:
        return [t["id"] for t in self.added_tokens if t["special"]]

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """Tokens the template adds: 2 for ``[CLS] A [SEP]``, 3 for ``[CLS] A [SEP] B [SEP]``."""
        return 3 if pair else 2

    def build_inputs_with_special_tokens(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None
    ) -> list[int]:
        """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` from lists of ids."""
        out = [self.cls_token_id, *token_ids_0, self.sep_token_id]
        if token_ids_1 is not None:
            out += [*token_ids_1, self.sep_token_id]
        return out

    def get_special_tokens_mask(
        self, token_ids_0: list[int], token_ids_1: list[int] | None = None, already_has_special_tokens: bool = False
    ) -> list[int]:
        """1 for special tokens, 0 for sequence tokens."""
        if already_has_special_tokens:
            if token_ids_1 is not None:
                raise ValueError("token_ids_1 must be None when already_has_special_tokens=True")
            special = set(self.all_special_ids)
            return [1 if i in special else 0 for i in _as_id_list(token_ids_0)]
        mask = [1] + [0] * len(token_ids_0) + [1]
        if token_ids_1 is not None:
            mask += [0] * len(token_ids_1) + [1]
        return mask

    def convert_tokens_to_ids(self, tokens: str | Sequence[str]) -> int | list[int]:
        """Ids of tokens; unknown tokens get ``unk_token_id``."""
        if isinstance(tokens, str):
            index = self._token_id(tokens)
            return self.unk_token_id if index is None else index
        unk = self.unk_token_id
        ids = []
        for token in _check_words(tokens, "tokens"):
            index = self._token_id(token)
            ids.append(unk if index is None else index)
        return ids

    def _id_token(self, index: int) -> str:
        token = self._id_to_token.get(index)
        if token is None:
            raise ValueError(f"token id {index} is out of range: this vocabulary has ids 0..{len(self) - 1}")
        return token

    def convert_ids_to_tokens(self, ids: int | Sequence[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Tokens of ids (an id outside the vocabulary raises ValueError)."""
        if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
            return self._id_token(int(ids))
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._id_token(i) for i in _as_id_list(ids) if i not in skip]

    def convert_tokens_to_string(self, tokens: Sequence[str]) -> str:
        """Join WordPiece tokens back into text (``##`` pieces glued to the previous token)."""
        return self._join_tokens(list(tokens))

    def _join_tokens(self, tokens: list[str]) -> str:
        pieces = []
        for i, token in enumerate(tokens):
            if i:
                token = token[2:] if token.startswith("##") else " " + token
            if self.decoder_cleanup:
                token = _replace_all(token, _DECODER_CLEANUP)
            pieces.append(token)
        return "".join(pieces)

    def decode(
        self, token_ids: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> str:
        """Text of a sequence of ids (list, numpy array or 1-D tensor).

        Tokens are joined as ``tokenizers``' WordPiece decoder does; ``clean_up_tokenization_spaces`` (default:
        the tokenizer's setting) additionally removes spaces before punctuation, as transformers does.
        """
        tokens = self.convert_ids_to_tokens(_as_id_list(token_ids), skip_special_tokens=skip_special_tokens)
        text = self._join_tokens(list(tokens))
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def batch_decode(
        self, sequences: Any, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None
    ) -> list[str]:
        """:meth:`decode` for each row of a batch (list of lists, 2-D array or tensor)."""
        if hasattr(sequences, "numpy") and not isinstance(sequences, np.ndarray):
            sequences = sequences.numpy()
        return [self.decode(row, skip_special_tokens, clean_up_tokenization_spaces) for row in sequences]

    # -- encoding ----------------------------------------------------------------------------------------------

    def _collect_inputs(self, text: Any, text_pair: Any, is_split_into_words: bool) -> tuple[bool, list[tuple]]:
        """``(batched, [(text, pair_or_None), ...])`` after checking types and batch lengths."""
        if is_split_into_words:
            batched = isinstance(text, (list, tuple)) and len(text) > 0 and isinstance(text[0], (list, tuple))
            if not batched:
                texts = [_check_words(text, "text")]
                pairs = [None if text_pair is None else _check_words(text_pair, "text_pair")]
            else:
                texts = [_check_words(words, f"text[{i}]") for i, words in enumerate(text)]
                if text_pair is None:
                    pairs = [None] * len(texts)
                else:
                    if not isinstance(text_pair, (list, tuple)) or (
                        text_pair and not isinstance(text_pair[0], (list, tuple))
                    ):
                        raise _type_error("text_pair", text_pair, "a list of word lists, like text")
                    pairs = [_check_words(words, f"text_pair[{i}]") for i, words in enumerate(text_pair)]
        elif isinstance(text, str):
            batched = False
            texts = [_check_text(text, "text")]
            pairs = [None if text_pair is None else _check_text(text_pair, "text_pair", "a str (like text) or None")]
        elif isinstance(text, (list, tuple)):
            batched = True
            for i, item in enumerate(text):
                _check_text(item, f"text[{i}]", "a str (pass is_split_into_words=True for word lists)")
            texts = list(text)
            if text_pair is None:
                pairs = [None] * len(texts)
            else:
                pairs = _check_texts(text_pair, "text_pair", "a list of str with one entry per text")  # type: ignore[assignment]
        else:
            raise _type_error("text", text, "a str or a list of str (a batch)")
        if len(pairs) != len(texts):
            raise ValueError(
                f"text and text_pair must have the same batch size, got {len(texts)} texts and {len(pairs)} pairs"
            )
        return batched, list(zip(texts, pairs))

    def _resolve_strategies(
        self,
        *,
        padding: Any,
        truncation: Any,
        max_length: int | None,
        stride: int,
        pad_to_multiple_of: int | None,
        padding_side: str | None,
        add_special_tokens: bool,
        has_pair: bool,
        verbose: bool = True,
    ) -> tuple[PaddingSpec | None, TruncationSpec | None]:
        """transformers' ``_get_padding_truncation_strategies``, with errors for impossible settings."""
        _check_int("max_length", max_length, 0, allow_none=True)
        _check_int("stride", stride, 0)
        _check_int("pad_to_multiple_of", pad_to_multiple_of, 1, allow_none=True)
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # transformers: max_length alone activates truncation

        padding_value = getattr(padding, "value", padding)
        if padding_value is True:
            if verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
                logger.warning("max_length is ignored when padding=True without truncation; use padding='max_length'")
            padding_strategy = "longest"
        elif padding_value is False or padding_value is None:
            padding_strategy = "do_not_pad"
        elif padding_value in PADDING_STRATEGIES:
            padding_strategy = padding_value
        else:
            raise ValueError(f"padding must be True, False or one of {PADDING_STRATEGIES}, got {padding!r}")

        truncation_value = getattr(truncation, "value", truncation)
        if truncation_value is True:
            truncation_strategy = "longest_first"
        elif truncation_value is False or truncation_value is None:
            truncation_strategy = "do_not_truncate"
        elif truncation_value in TRUNCATION_STRATEGIES:
            truncation_strategy = truncation_value
        else:
            raise ValueError(f"truncation must be True, False or one of {TRUNCATION_STRATEGIES}, got {truncation!r}")

        if max_length is None:
            if padding_strategy == "max_length":
                if self.model_max_length > LARGE_INTEGER:
                    padding_strategy = "do_not_pad"
                else:
                    max_length = self.model_max_length
            if truncation_strategy != "do_not_truncate":
                if self.model_max_length > LARGE_INTEGER:
                    truncation_strategy = "do_not_truncate"
                else:
                    max_length = self.model_max_length

        if (
            truncation_strategy != "do_not_truncate"
            and padding_strategy != "do_not_pad"
            and pad_to_multiple_of is not None
            and max_length is not None
            and max_length % pad_to_multiple_of != 0
        ):
            raise ValueError(
                f"truncation and padding are both on, but the truncation length max_length={max_length} is not a "
                f"multiple of pad_to_multiple_of={pad_to_multiple_of}"
            )
        side = self.padding_side if padding_side is None else padding_side
        if side not in SIDES:
            raise ValueError(f"padding_side must be one of {SIDES} or None, got {padding_side!r}")

        trunc = None
        if truncation_strategy != "do_not_truncate" and max_length is not None:
            needed = self.num_special_tokens_to_add(pair=has_pair) if add_special_tokens else 0
            if max_length < needed:
                raise ValueError(
                    f"max_length={max_length} is smaller than the {needed} special tokens every "
                    f"{'pair' if has_pair else 'sequence'} gets ([CLS] ... [SEP]); use max_length >= {needed}"
                )
            specials = self.num_special_tokens_to_add(pair=has_pair)
            if stride and stride >= max_length - specials:
                raise ValueError(
                    f"stride={stride} must be smaller than max_length={max_length} minus the {specials} special tokens "
                    f"of a {'pair' if has_pair else 'sequence'}"
                )
            trunc = TruncationSpec(int(max_length), truncation_strategy, int(stride), self.truncation_side)
        pad = None
        if padding_strategy != "do_not_pad":
            length = int(max_length) if padding_strategy == "max_length" and max_length is not None else None
            pad = PaddingSpec(length, pad_to_multiple_of, side)
        return pad, trunc

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
        batched, inputs = self._collect_inputs(text, text_pair, is_split_into_words)
        has_pair = any(pair is not None for _, pair in inputs)
        pad, trunc = self._resolve_strategies(
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            add_special_tokens=add_special_tokens,
            has_pair=has_pair,
            verbose=verbose,
        )
        encodings = (
            self._encode_batch(
                inputs,
                add_special_tokens=bool(add_special_tokens),
                is_split_into_words=bool(is_split_into_words),
                truncation=trunc,
                padding=pad,
            )
            if inputs
            else []
        )
        rows: list[Any] = []
        sample_of_row: list[int] = []
        for index, encoding in enumerate(encodings):
            group = [encoding, *encoding.overflowing] if return_overflowing_tokens else [encoding]
            rows.extend(group)
            sample_of_row.extend([index] * len(group))
        data: dict[str, Any] = {"input_ids": [row.ids for row in rows]}
        if return_attention_mask is not False:
            data["attention_mask"] = [row.attention_mask for row in rows]
        if return_special_tokens_mask:
            data["special_tokens_mask"] = [row.special_tokens_mask for row in rows]
        if return_offsets_mapping:
            data["offset_mapping"] = [row.offsets for row in rows]
        if return_length:
            data["length"] = [len(row.ids) for row in rows]
        if return_overflowing_tokens:
            data["overflow_to_sample_mapping"] = sample_of_row
        if verbose and not self._warned_long and trunc is None:
            longest = max((len(ids) for ids in data["input_ids"]), default=0)
            if longest > self.model_max_length:
                self._warned_long = True
                logger.warning(
                    "Token indices sequence length is longer than the specified maximum sequence length for this "
                    "model (%d > %d). Running this sequence through the model will result in indexing errors",
                    longest,
                    self.model_max_length,
                )
        if not batched and tensor_type is None and not return_overflowing_tokens:
            data = {key: value[0] if value and isinstance(value[0], list) else value for key, value in data.items()}
        return BatchEncoding(data, rows, tensor_type=tensor_type)

    def encode(
        self,
        text: TextInput,
        text_pair: TextInput | None = None,
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
    ) -> Any:
        """The ``input_ids`` of one text (or pair): a list of ints, or a ``(1, seq_len)`` tensor."""
        if not isinstance(text, str) and not is_split_into_words:
            raise _type_error("text", text, "a str (use the tokenizer call for batches)")
        encoded = self(
            text,
            text_pair,
            add_special_tokens=add_special_tokens,
            padding=padding,
            truncation=truncation,
            max_length=max_length,
            stride=stride,
            is_split_into_words=is_split_into_words,
            pad_to_multiple_of=pad_to_multiple_of,
            padding_side=padding_side,
            return_tensors=return_tensors,
        )
        return encoded["input_ids"]

    def tokenize(
        self,
        text: TextInput,
        pair: TextInput | None = None,
        add_special_tokens: bool = False,
        is_split_into_words: bool = False,
    ) -> list[str]:
        """The token strings of a text (or pair), without special tokens unless asked."""
        if not isinstance(text, str) and not is_split_into_words:
            raise _type_error("text", text, "a str (use the tokenizer call for batches)")
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

        ``input_ids`` get ``pad_token_id``, ``attention_mask`` 0 (created when absent), ``special_tokens_mask`` 1;
        other keys are left as they are.
        """
        if isinstance(encoded_inputs, (list, tuple)):
            if not encoded_inputs or not all(isinstance(row, Mapping) for row in encoded_inputs):
                raise _type_error("encoded_inputs", encoded_inputs, "a dict of lists or a non-empty list of dicts")
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
        spec, _ = self._resolve_strategies(
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
            target = spec.length if spec.length is not None else max(len(row) for row in ids)
            if spec.pad_to_multiple_of and target % spec.pad_to_multiple_of:
                target += spec.pad_to_multiple_of - target % spec.pad_to_multiple_of
            fill = {"input_ids": self.pad_token_id, "attention_mask": 0, "special_tokens_mask": 1}
            for key, value in fill.items():
                if key not in data:
                    continue
                rows = []
                for row in data[key]:
                    row = list(row)
                    extra = [value] * max(0, target - len(row))
                    rows.append(extra + row if spec.direction == "left" else row + extra)
                data[key] = rows
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
        """Write ``vocab.txt``, ``tokenizer.json``, ``tokenizer_config.json`` and ``special_tokens_map.json``.

        transformers' ``AutoTokenizer.from_pretrained`` loads the folder as a DistilBERT tokenizer that returns
        the same ids and no ``token_type_ids``. Each file appears atomically. Returns the written paths.
        """
        return _files.write_tokenizer_files(
            save_directory,
            vocab=self.vocab,
            tokenizer_json=self._tokenizer_json(),
            config=self._config(),
            special_tokens=self.special_tokens_map,
            added_tokens=self.added_tokens,
        )

    def _normalizer_json(self) -> dict[str, Any]:
        """The ``tokenizer.json`` normalizer for this tokenizer's settings."""
        return _files.normalizer_spec(
            lowercase=self.do_lower_case,
            strip_accents=self.strip_accents,
            chinese=self.tokenize_chinese_chars,
            nfc=self.nfc,
        )

    def _spec_json(self) -> dict[str, Any]:
        """The ``tokenizer.json`` content that describes this tokenizer (vocabulary, normalizer, template)."""
        return _files.tokenizer_json_spec(
            self.vocab,
            self.added_tokens,
            normalizer=self._normalizer_json(),
            unk_token=self.unk_token,
            cls_token=self.cls_token,
            sep_token=self.sep_token,
            max_input_chars_per_word=self.max_input_chars_per_word,
            decoder_cleanup=self.decoder_cleanup,
        )

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        **kwargs: Any,
    ) -> DistilBertTokenizerBase:
        """Load from a folder, a built-in model name or a Hub repo id.

        Reads ``tokenizer.json`` (vocabulary, normalizer, added tokens) or else ``vocab.txt``, then
        ``special_tokens_map.json`` and ``tokenizer_config.json``; keyword arguments (any constructor setting,
        e.g. ``do_lower_case=False``, ``model_max_length=256``) override the files.
        """
        unknown = sorted(set(kwargs) - set(_files.SETTING_NAMES))
        if unknown:
            raise TypeError(f"unexpected keyword arguments {unknown}; allowed: {sorted(_files.SETTING_NAMES)}")
        found = _files.resolve_tokenizer_files(
            name_or_path, revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token
        )
        settings = _files.settings_from_configs(found)
        settings.update(kwargs)
        if found[_files.TOKENIZER_FILE] is not None:
            return cls(tokenizer_file=found[_files.TOKENIZER_FILE], **settings)
        return cls(found[_files.VOCAB_FILE], **settings)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(vocab_size={self.vocab_size}, do_lower_case={self.do_lower_case}, "
            f"strip_accents={self.strip_accents}, tokenize_chinese_chars={self.tokenize_chinese_chars}, "
            f"nfc={self.nfc}, model_max_length={self.model_max_length}, padding_side={self.padding_side!r}, "
            f"truncation_side={self.truncation_side!r})"
        )
