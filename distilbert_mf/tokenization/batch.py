"""``BatchEncoding``: what a tokenizer call returns (a dict of model inputs plus alignment helpers)."""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np

__all__ = ["ROW_FIELDS", "BatchEncoding", "CharSpan", "TokenSpan", "to_tensor"]

TENSOR_TYPES = ("np", "pt", "tf", "jax")
# BatchEncoding key -> the attribute of a row's encoding (ours or tokenizers') that holds it
ROW_FIELDS = {
    "input_ids": "ids",
    "attention_mask": "attention_mask",
    "special_tokens_mask": "special_tokens_mask",
    "offset_mapping": "offsets",
}


class CharSpan(NamedTuple):
    """A span of characters in the original text: ``text[start:end]``."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """A span of tokens in a row: ``input_ids[start:end]``."""

    start: int
    end: int


def _rectangular(name: str, value: Any) -> None:
    if isinstance(value, list) and value and isinstance(value[0], list):
        lengths = {len(row) for row in value}
        if len(lengths) > 1:
            raise ValueError(
                f"cannot make a tensor of {name!r}: its rows have different lengths {sorted(lengths)}; "
                "pass padding=True (or padding='max_length') to get rows of equal length"
            )


def to_tensor(name: str, value: Any, tensor_type: str) -> Any:
    """``value`` (nested lists of ints) as a ``tensor_type`` tensor: "np", "pt", "tf" or "jax" (imported lazily)."""
    _rectangular(name, value)
    array = np.asarray(value, dtype=np.int64)
    if tensor_type == "np":
        return array
    if tensor_type == "pt":
        torch = importlib.import_module("torch")
        return torch.from_numpy(array)
    if tensor_type == "tf":
        tf = importlib.import_module("tensorflow")
        return tf.constant(array)
    if tensor_type == "jax":
        jnp = importlib.import_module("jax.numpy")
        return jnp.asarray(array)
    raise ValueError(f"return_tensors must be one of {TENSOR_TYPES} or None, got {tensor_type!r}")


def check_tensor_type(tensor_type: Any) -> str | None:
    """Validate ``return_tensors``; accepts transformers' ``TensorType`` enum members too."""
    if tensor_type is None:
        return None
    value = getattr(tensor_type, "value", tensor_type)
    if value not in TENSOR_TYPES:
        raise ValueError(f"return_tensors must be one of {TENSOR_TYPES} or None, got {tensor_type!r}")
    return value


class BatchEncoding(dict):
    """A dict of model inputs (``input_ids``, ``attention_mask``, ...) with per-row alignment helpers.

    Values are lists (or ``(batch, seq_len)`` tensors with ``return_tensors``). ``encodings`` holds one encoding
    per row (``tokenizers.Encoding`` for the fast tokenizer, :class:`~.encoding.Encoding` for the slow one);
    ``batch[i]`` with an int returns row ``i``'s encoding. Keys are also readable as attributes.
    """

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        encodings: Sequence[Any] | None = None,
        tensor_type: str | None = None,
    ) -> None:
        super().__init__(data or {})
        self._encodings = list(encodings) if encodings is not None else None
        self.convert_to_tensors(tensor_type)

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return super().__getitem__(key)
        if isinstance(key, int) and not isinstance(key, bool):
            if self._encodings is None:
                raise KeyError(f"integer indexing needs the encodings, which this BatchEncoding does not hold: {key}")
            return self._encodings[key]
        raise KeyError(f"index a BatchEncoding with a key (str) or a row number (int), got {type(key).__name__}")

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no key or attribute {name!r}; keys: {sorted(self)}") from None

    def __getstate__(self) -> dict[str, Any]:
        return {"data": dict(self), "encodings": self._encodings}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.update(state["data"])
        self._encodings = state["encodings"]

    def __repr__(self) -> str:
        return f"BatchEncoding({dict.__repr__(self)})"

    @property
    def encodings(self) -> list[Any] | None:
        """One encoding per row (None when built from plain dicts)."""
        return self._encodings

    @property
    def is_fast(self) -> bool:
        return self._encodings is not None and type(self._encodings[0]).__module__.startswith("tokenizers")

    def convert_to_tensors(self, tensor_type: str | None) -> BatchEncoding:
        """Turn every value into a ``tensor_type`` tensor in place ("np", "pt", "tf", "jax"; None: no-op)."""
        tensor_type = check_tensor_type(tensor_type)
        if tensor_type is None:
            return self
        for key, value in list(self.items()):
            self[key] = to_tensor(key, value, tensor_type)
        return self

    # -- alignment helpers -------------------------------------------------------------------------------------

    def _encoding(self, batch_index: int) -> Any:
        if self._encodings is None:
            raise ValueError("this BatchEncoding was not produced by a tokenizer call, so it has no alignment data")
        try:
            return self._encodings[batch_index]
        except (IndexError, TypeError):
            raise IndexError(
                f"batch index {batch_index!r} is out of range for a batch of {len(self._encodings)} rows"
            ) from None

    @staticmethod
    def _split_index(first: int, second: int | None) -> tuple[int, int]:
        return (0, first) if second is None else (first, second)

    def tokens(self, batch_index: int = 0) -> list[str]:
        """The token strings of row ``batch_index``."""
        return list(self._encoding(batch_index).tokens)

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of the row, the index of the word it comes from (None for special and pad tokens)."""
        return list(self._encoding(batch_index).word_ids)

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """For each token of the row: 0 (first text), 1 (second text) or None (special and pad tokens)."""
        return list(self._encoding(batch_index).sequence_ids)

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        """Which input sequence (0 or 1) a token belongs to."""
        batch_index, token_index = self._split_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).sequence_ids[token_index]

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        """The index of the word a token belongs to (None for special tokens)."""
        batch_index, token_index = self._split_index(batch_or_token_index, token_index)
        return self._encoding(batch_index).word_ids[token_index]

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """The characters of the original text a token covers (None for special and pad tokens)."""
        batch_index, token_index = self._split_index(batch_or_token_index, token_index)
        encoding = self._encoding(batch_index)
        if encoding.sequence_ids[token_index] is None:
            return None
        return CharSpan(*encoding.offsets[token_index])

    def _sequence_positions(self, encoding: Any, sequence_index: int) -> list[int]:
        return [i for i, s in enumerate(encoding.sequence_ids) if s == sequence_index]

    def word_to_tokens(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> TokenSpan | None:
        """The span of tokens that make up a word of sequence ``sequence_index`` (None if it has no tokens)."""
        batch_index, word_index = self._split_index(batch_or_word_index, word_index)
        encoding = self._encoding(batch_index)
        start = end = None
        words = encoding.word_ids
        for i in self._sequence_positions(encoding, sequence_index):
            word = words[i]
            if word is not None and word > word_index:
                break
            if word == word_index:
                start = i if start is None else start
                end = i + 1
        return None if start is None or end is None else TokenSpan(start, end)

    def word_to_chars(
        self, batch_or_word_index: int, word_index: int | None = None, sequence_index: int = 0
    ) -> CharSpan | None:
        """The characters of the original text a word covers."""
        batch_index, word_index = self._split_index(batch_or_word_index, word_index)
        span = self.word_to_tokens(batch_index, word_index, sequence_index)
        if span is None:
            return None
        offsets = self._encoding(batch_index).offsets
        return CharSpan(offsets[span.start][0], offsets[span.end - 1][1])

    def char_to_token(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        """The token of sequence ``sequence_index`` that covers a character of the original text, if any."""
        batch_index, char_index = self._split_index(batch_or_char_index, char_index)
        encoding = self._encoding(batch_index)
        offsets = encoding.offsets
        for i in self._sequence_positions(encoding, sequence_index):
            start, end = offsets[i]
            if start <= char_index < end:
                return i
        return None

    def char_to_word(
        self, batch_or_char_index: int, char_index: int | None = None, sequence_index: int = 0
    ) -> int | None:
        """The word of sequence ``sequence_index`` that covers a character of the original text, if any."""
        batch_index, char_index = self._split_index(batch_or_char_index, char_index)
        token = self.char_to_token(batch_index, char_index, sequence_index)
        return None if token is None else self._encoding(batch_index).word_ids[token]
