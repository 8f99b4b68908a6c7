"""The encoding of one input (a text or a pair) and the post-processing the pure-Python tokenizer applies to it.

:class:`Encoding` has the attribute names of ``tokenizers.Encoding`` (``ids``, ``tokens``, ``offsets``,
``word_ids``, ``sequence_ids``, ``special_tokens_mask``, ``attention_mask``, ``overflowing``) so the shared call
API treats both tokenizers alike. Truncation with stride, the ``[CLS] A [SEP] B [SEP]`` template and padding
follow ``tokenizers``' rules exactly, including the order in which overflowing windows of a pair are combined.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from distilbert_mf.tokenization.strategies import PaddingSpec

__all__ = [
    "Encoding",
    "TruncationError",
    "pad_encodings",
    "pad_fill",
    "pad_row",
    "padded_length",
    "post_process",
    "truncate_pair",
]


def padded_length(lengths: Iterable[int], length: int | None, pad_to_multiple_of: int | None) -> int:
    """The length every row is padded to: ``length``, or the longest of ``lengths`` when None, rounded up to a
    multiple of ``pad_to_multiple_of``."""
    target = length if length is not None else max(lengths, default=0)
    if pad_to_multiple_of and target % pad_to_multiple_of:
        target += pad_to_multiple_of - target % pad_to_multiple_of
    return target


def pad_row(values: list[Any], length: int, fill: Any, direction: str) -> list[Any]:
    """``values`` with ``fill`` added on the ``direction`` side ("left" / "right") up to ``length`` items."""
    missing = length - len(values)
    if missing <= 0:
        return values
    padding = [fill] * missing
    return padding + values if direction == "left" else values + padding


def pad_fill(pad_id: int, pad_token: str) -> dict[str, Any]:
    """What a pad position holds in each field of an :class:`Encoding`."""
    return {
        "ids": pad_id,
        "tokens": pad_token,
        "offsets": (0, 0),
        "word_ids": None,
        "sequence_ids": None,
        "special_tokens_mask": 1,
        "attention_mask": 0,
    }


class TruncationError(ValueError):
    """The requested truncation cannot be done (too few tokens to remove, stride too large)."""


class Encoding:
    """Token ids and their alignment for one row; ``overflowing`` holds the extra windows of a truncated input."""

    __slots__ = (
        "attention_mask",
        "ids",
        "offsets",
        "overflowing",
        "sequence_ids",
        "special_tokens_mask",
        "tokens",
        "word_ids",
    )

    def __init__(
        self,
        ids: list[int],
        tokens: list[str],
        offsets: list[tuple[int, int]],
        word_ids: list[int | None],
        sequence_ids: list[int | None] | None = None,
        special_tokens_mask: list[int] | None = None,
        attention_mask: list[int] | None = None,
    ) -> None:
        n = len(ids)
        self.ids = ids
        self.tokens = tokens
        self.offsets = offsets
        self.word_ids = word_ids
        self.sequence_ids: list[int | None] = sequence_ids if sequence_ids is not None else [0] * n
        self.special_tokens_mask = special_tokens_mask if special_tokens_mask is not None else [0] * n
        self.attention_mask = attention_mask if attention_mask is not None else [1] * n
        self.overflowing: list[Encoding] = []

    def __len__(self) -> int:
        return len(self.ids)

    def __repr__(self) -> str:
        return f"Encoding(num_tokens={len(self.ids)}, overflowing={len(self.overflowing)})"

    @property
    def n_sequences(self) -> int:
        """How many input sequences (1 or 2) this row holds."""
        return len({s for s in self.sequence_ids if s is not None}) or 1

    def _slice(self, start: int, stop: int) -> Encoding:
        return Encoding(
            self.ids[start:stop],
            self.tokens[start:stop],
            self.offsets[start:stop],
            self.word_ids[start:stop],
            self.sequence_ids[start:stop],
            self.special_tokens_mask[start:stop],
            self.attention_mask[start:stop],
        )

    def set_sequence_id(self, sequence_id: int) -> None:
        """Mark every token (and every overflowing window) as part of input sequence ``sequence_id``."""
        self.sequence_ids = [sequence_id] * len(self.ids)
        for window in self.overflowing:
            window.set_sequence_id(sequence_id)

    def truncate(self, max_len: int, stride: int, direction: str) -> None:
        """Keep ``max_len`` tokens; the rest go to ``overflowing`` as windows overlapping by ``stride`` tokens."""
        n = len(self.ids)
        if max_len >= n:
            return
        if max_len == 0:
            whole = self._slice(0, n)
            self._become(Encoding([], [], [], [], [], [], []))
            self.overflowing = [whole]
            return
        if stride >= max_len:
            raise TruncationError(
                f"stride={stride} must be smaller than the number of tokens each truncated sequence keeps "
                f"({max_len}, after removing the special tokens): lower stride or raise max_length"
            )
        step = max_len - stride
        parts: list[tuple[int, int]] = []
        if direction == "right":
            for start in range(0, n, step):
                stop = min(start + max_len, n)
                parts.append((start, stop))
                if stop == n:
                    break
        else:
            for last in range(n - 1, -1, -step):
                stop = last + 1
                start = max(0, stop - max_len)
                parts.append((start, stop))
                if start == 0:
                    break
        first = self._slice(*parts[0])
        first.overflowing = [self._slice(*part) for part in parts[1:]]
        self._become(first)

    def _become(self, other: Encoding) -> None:
        for name in self.__slots__:
            setattr(self, name, getattr(other, name))

    def copy(self) -> Encoding:
        out = self._slice(0, len(self.ids))
        out.overflowing = list(self.overflowing)
        return out

    def merge_with(self, pair: Encoding) -> None:
        """Append ``pair``; overflowing windows are combined as ``tokenizers`` does (ours x theirs, then theirs)."""
        overflowing: list[Encoding] = []
        for mine in self.overflowing:
            combined = mine._slice(0, len(mine))
            combined._extend(pair)
            overflowing.append(combined)
            for theirs in pair.overflowing:
                combined = mine._slice(0, len(mine))
                combined._extend(theirs)
                overflowing.append(combined)
        for theirs in pair.overflowing:
            combined = self._slice(0, len(self))
            combined._extend(theirs)
            overflowing.append(combined)
        self._extend(pair)
        self.overflowing = overflowing

    def _extend(self, other: Encoding) -> None:
        self.ids = self.ids + other.ids
        self.tokens = self.tokens + other.tokens
        self.offsets = self.offsets + other.offsets
        self.word_ids = self.word_ids + other.word_ids
        self.sequence_ids = self.sequence_ids + other.sequence_ids
        self.special_tokens_mask = self.special_tokens_mask + other.special_tokens_mask
        self.attention_mask = self.attention_mask + other.attention_mask

    def pad(self, length: int, pad_id: int, pad_token: str, direction: str) -> None:
        """Pad this row and its overflowing windows to ``length`` tokens (no-op when already as long)."""
        for window in self.overflowing:
            window.pad(length, pad_id, pad_token, direction)
        if length <= len(self.ids):
            return
        for name, value in pad_fill(pad_id, pad_token).items():
            setattr(self, name, pad_row(getattr(self, name), length, value, direction))


def _special(token_id: int, token: str) -> Encoding:
    return Encoding([token_id], [token], [(0, 0)], [None], [None], [1], [1])


def truncate_pair(
    first: Encoding, second: Encoding | None, max_length: int, strategy: str, stride: int, direction: str
) -> None:
    """Truncate in place so that ``len(first) + len(second) <= max_length`` (special tokens already deducted)."""
    if max_length == 0:
        first.truncate(0, stride, direction)
        if second is not None:
            second.truncate(0, stride, direction)
        return
    total = len(first) + (len(second) if second is not None else 0)
    if total <= max_length:
        return
    to_remove = total - max_length
    if strategy == "longest_first":
        if second is None:
            first.truncate(max_length, stride, direction)
            return
        n1, n2 = len(first), len(second)
        swap = n1 > n2
        if swap:
            n1, n2 = n2, n1
        n2 = n1 if n1 > max_length else max(n1, max_length - n1)
        if n1 + n2 > max_length:
            n1 = max_length // 2
            n2 = n1 + max_length % 2
        if swap:
            n1, n2 = n2, n1
        first.truncate(n1, stride, direction)
        second.truncate(n2, stride, direction)
        return
    if strategy == "only_second" and second is None:
        raise TruncationError("truncation='only_second' needs a pair of sequences, but only one text was given")
    target = second if strategy == "only_second" and second is not None else first
    if len(target) <= to_remove:
        which = "first" if strategy == "only_first" else "second"
        raise TruncationError(
            f"truncation={strategy!r} must remove {to_remove} tokens to fit max_length, but the {which} sequence "
            f"has only {len(target)}: use truncation='longest_first' or a larger max_length"
        )
    target.truncate(len(target) - to_remove, stride, direction)


def post_process(
    first: Encoding,
    second: Encoding | None,
    *,
    add_special_tokens: bool,
    cls: tuple[int, str],
    sep: tuple[int, str],
) -> Encoding:
    """``[CLS] A [SEP]`` or ``[CLS] A [SEP] B [SEP]`` (without the specials when ``add_special_tokens=False``)."""
    first.set_sequence_id(0)
    pieces: list[Encoding] = [first]
    if second is not None:
        second.set_sequence_id(1)
    if add_special_tokens:
        pieces = [_special(*cls), first, _special(*sep)]
        if second is not None:
            pieces += [second, _special(*sep)]
    elif second is not None:
        pieces.append(second)
    out = Encoding([], [], [], [], [], [], [])
    for piece in pieces:
        out.merge_with(piece)
    return out


def pad_encodings(encodings: Sequence[Encoding], spec: PaddingSpec, pad_id: int, pad_token: str) -> None:
    """Pad every row (and its windows) as ``spec`` says: to ``spec.length``, or to the longest row when None."""
    if not encodings:
        return
    target = padded_length((len(e) for e in encodings), spec.length, spec.pad_to_multiple_of)
    for encoding in encodings:
        encoding.pad(target, pad_id, pad_token, spec.direction)
