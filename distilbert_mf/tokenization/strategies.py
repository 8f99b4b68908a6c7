"""Padding and truncation strategies: transformers' rules turned into one plan per call.

:func:`resolve_strategies` reads the call's ``padding`` / ``truncation`` / ``max_length`` / ``stride`` /
``pad_to_multiple_of`` / ``padding_side`` as transformers' ``_get_padding_truncation_strategies`` does and returns
a :class:`PaddingSpec` and a :class:`TruncationSpec` (``None`` for "do not"), with a clear error for every
setting that cannot be done. The backends receive the result as one :class:`EncodeOptions`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Protocol

from distilbert_mf.tokenization.checks import check_int

logger = logging.getLogger(__name__)

__all__ = [
    "LARGE_INTEGER",
    "PADDING_STRATEGIES",
    "SIDES",
    "TRUNCATION_STRATEGIES",
    "EncodeOptions",
    "PaddingSpec",
    "TruncationSpec",
    "resolve_strategies",
]

LARGE_INTEGER = int(1e20)  # a model_max_length above this means "no limit" (transformers' convention)
PADDING_STRATEGIES = ("longest", "max_length", "do_not_pad")
TRUNCATION_STRATEGIES = ("longest_first", "only_first", "only_second", "do_not_truncate")
SIDES = ("left", "right")


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


@dataclass(frozen=True)
class EncodeOptions:
    """What a backend's ``_encode_batch`` is asked to do with a batch of inputs."""

    add_special_tokens: bool
    is_split_into_words: bool
    truncation: TruncationSpec | None
    padding: PaddingSpec | None


class _Limits(Protocol):
    model_max_length: int
    padding_side: str
    truncation_side: str

    def num_special_tokens_to_add(self, pair: bool = False) -> int: ...


def _strategy(given: Any, name: str, allowed: tuple[str, ...], on: str, off: str) -> str:
    value = getattr(given, "value", given)  # transformers' PaddingStrategy / TruncationStrategy enums
    if value is True:
        return on
    if value is False or value is None:
        return off
    if value in allowed:
        return value
    raise ValueError(f"{name} must be True, False or one of {allowed}, got {given!r}")


def resolve_strategies(
    limits: _Limits,
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
    """transformers' ``_get_padding_truncation_strategies`` for a tokenizer's ``limits``, with errors for
    impossible settings."""
    check_int("max_length", max_length, 0, allow_none=True)
    check_int("stride", stride, 0)
    check_int("pad_to_multiple_of", pad_to_multiple_of, 1, allow_none=True)
    if max_length is not None and padding is False and truncation is None:
        truncation = "longest_first"  # transformers: max_length alone activates truncation

    padding_value = getattr(padding, "value", padding)
    if padding_value is True and verbose and max_length is not None and truncation in (None, False, "do_not_truncate"):
        logger.warning("max_length is ignored when padding=True without truncation; use padding='max_length'")
    padding_strategy = _strategy(padding, "padding", PADDING_STRATEGIES, "longest", "do_not_pad")
    truncation_strategy = _strategy(truncation, "truncation", TRUNCATION_STRATEGIES, "longest_first", "do_not_truncate")

    unlimited = limits.model_max_length > LARGE_INTEGER
    if max_length is None:
        if padding_strategy == "max_length":
            if unlimited:
                padding_strategy = "do_not_pad"
            else:
                max_length = limits.model_max_length
        if truncation_strategy != "do_not_truncate":
            if unlimited:
                truncation_strategy = "do_not_truncate"
            else:
                max_length = limits.model_max_length

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
    side = limits.padding_side if padding_side is None else padding_side
    if side not in SIDES:
        raise ValueError(f"padding_side must be one of {SIDES} or None, got {padding_side!r}")

    trunc = None
    if truncation_strategy != "do_not_truncate" and max_length is not None:
        kind = "pair" if has_pair else "sequence"
        specials = limits.num_special_tokens_to_add(pair=has_pair)
        needed = specials if add_special_tokens else 0
        if max_length < needed:
            raise ValueError(
                f"max_length={max_length} is smaller than the {needed} special tokens every {kind} gets "
                f"([CLS] ... [SEP]); use max_length >= {needed}"
            )
        if stride and stride >= max_length - specials:
            raise ValueError(
                f"stride={stride} must be smaller than max_length={max_length} minus the {specials} special tokens "
                f"of a {kind}"
            )
        trunc = TruncationSpec(int(max_length), truncation_strategy, int(stride), limits.truncation_side)
    pad = None
    if padding_strategy != "do_not_pad":
        length = int(max_length) if padding_strategy == "max_length" and max_length is not None else None
        pad = PaddingSpec(length, pad_to_multiple_of, side)
    return pad, trunc
