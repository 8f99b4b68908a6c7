"""Masked-LM masking in numpy, drawn per batch from a seeded generator.

A masker is any callable ``masker(input_ids, attention_mask, rng) -> (masked_ids, labels)`` on ``(batch, seq_len)``
int64 arrays; labels are the original ids at the selected positions and -100 elsewhere. The batch loader calls it
on each global batch with a generator seeded by ``(seed, epoch, batch index)``, so a batch is masked the same way in
every framework, on every data-parallel rank and after a resume.

:class:`BertMasker` is BERT's recipe as transformers' ``DataCollatorForLanguageModeling`` applies it: each
eligible token (not padding, not a special token) is selected with probability ``mlm_probability`` (0.15); a
selected token becomes ``[MASK]`` with probability 0.8, a random token (uniform over the vocabulary) with 0.1, and
is kept with 0.1. With ``whole_word_mask`` the selection is made per word (a word is a token and the ``##``
pieces that follow it) and every piece of a selected word is a target; the 80/10/10 choice stays per token, as in
Google's original whole-word masking. The distillation masker (token-frequency smoothing) lives in
:mod:`distilbert_mf.distillation.masking`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from distilbert_mf.modeling_utils import IGNORE_INDEX


class Masker(Protocol):
    """``(input_ids, attention_mask, rng) -> (masked_ids, labels)``, all ``(batch, seq_len)`` int64."""

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]: ...


def check_probability(name: str, value: float, *, open_low: bool = False) -> float:
    """``value`` as a float in [0, 1] (or (0, 1] with ``open_low``); else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name} must be a number in [0, 1], got {value!r}")
    value = float(value)
    low_ok = value > 0 if open_low else value >= 0
    if not (low_ok and value <= 1):
        raise ValueError(f"{name} must be in {'(0, 1]' if open_low else '[0, 1]'}, got {value}")
    return value


def special_table(vocab_size: int, special_ids: Iterable[int]) -> np.ndarray:
    """``(vocab_size,)`` bool: True for the ids that are never masking targets."""
    table = np.zeros(vocab_size, dtype=bool)
    for token_id in special_ids:
        if not 0 <= int(token_id) < vocab_size:
            raise ValueError(f"special token id {token_id} is outside the vocabulary (size {vocab_size})")
        table[int(token_id)] = True
    return table


def continuation_table(vocab: Mapping[str, int], vocab_size: int) -> np.ndarray:
    """``(vocab_size,)`` bool: True for WordPiece continuation pieces (``##...``)."""
    table = np.zeros(vocab_size, dtype=bool)
    for token, token_id in vocab.items():
        if token.startswith("##") and 0 <= token_id < vocab_size:
            table[token_id] = True
    return table


def replace_targets(
    input_ids: np.ndarray,
    targets: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    vocab_size: int,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Apply the 80/10/10 rule to the ``targets`` positions of ``input_ids`` ``(batch, seq_len)``.

    Returns ``(masked_ids, labels)``: labels hold the original id at each target and -100 elsewhere. The random
    tokens are uniform over ``[0, vocab_size)``. Draws two uniform arrays and one integer array of the batch's
    shape from ``rng``, in that order.
    """
    ids = np.asarray(input_ids, dtype=np.int64)
    choice = rng.random(ids.shape)  # (batch, seq_len)
    random_ids = rng.integers(0, vocab_size, size=ids.shape, dtype=np.int64)  # (batch, seq_len)
    labels = np.where(targets, ids, IGNORE_INDEX).astype(np.int64)
    masked = ids.copy()
    to_mask = targets & (choice < mask_replace_prob)
    to_random = targets & (choice >= mask_replace_prob) & (choice < mask_replace_prob + random_replace_prob)
    masked[to_mask] = mask_token_id
    masked[to_random] = random_ids[to_random]
    return masked, labels


@dataclass(frozen=True)
class BertMasker:
    """BERT's masking (see the module docstring). Build it with :meth:`from_tokenizer`.

    Attributes:
        mask_token_id: id of ``[MASK]``.
        vocab_size: random replacements are drawn from ``[0, vocab_size)``.
        special: ``(vocab_size,)`` bool, ids never selected (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``).
        mlm_probability: chance that an eligible token (or word) is selected.
        mask_replace_prob / random_replace_prob: the 80 % / 10 % of the rule; the rest is kept.
        continuation: ``(vocab_size,)`` bool of ``##`` pieces; set for whole-word masking.
    """

    mask_token_id: int
    vocab_size: int
    special: np.ndarray = field(repr=False)
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    continuation: np.ndarray | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        check_probability("mlm_probability", self.mlm_probability, open_low=True)
        check_probability("mask_replace_prob", self.mask_replace_prob)
        check_probability("random_replace_prob", self.random_replace_prob)
        if self.mask_replace_prob + self.random_replace_prob > 1 + 1e-12:
            raise ValueError(
                f"mask_replace_prob + random_replace_prob must be at most 1, got {self.mask_replace_prob} + "
                f"{self.random_replace_prob}"
            )
        if not 0 <= self.mask_token_id < self.vocab_size:
            raise ValueError(f"mask_token_id {self.mask_token_id} is outside the vocabulary (size {self.vocab_size})")

    @classmethod
    def from_tokenizer(
        cls,
        tokenizer: object,
        *,
        mlm_probability: float = 0.15,
        whole_word_mask: bool = False,
        mask_replace_prob: float = 0.8,
        random_replace_prob: float = 0.1,
    ) -> BertMasker:
        """A masker for ``tokenizer``'s vocabulary (its ``[MASK]``, its special tokens, its ``##`` pieces)."""
        vocab_size = len(tokenizer)  # type: ignore[arg-type]
        return cls(
            mask_token_id=int(tokenizer.mask_token_id),  # type: ignore[attr-defined]
            vocab_size=vocab_size,
            special=special_table(vocab_size, tokenizer.all_special_ids),  # type: ignore[attr-defined]
            mlm_probability=mlm_probability,
            mask_replace_prob=mask_replace_prob,
            random_replace_prob=random_replace_prob,
            continuation=continuation_table(tokenizer.get_vocab(), vocab_size) if whole_word_mask else None,  # type: ignore[attr-defined]
        )

    @property
    def whole_word_mask(self) -> bool:
        return self.continuation is not None

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Mask one batch: ``(batch, seq_len)`` ids and mask -> ``(masked_ids, labels)``."""
        ids = np.asarray(input_ids, dtype=np.int64)
        eligible = (np.asarray(attention_mask) != 0) & ~self.special[ids]  # (batch, seq_len)
        if self.continuation is None:
            targets = eligible & (rng.random(ids.shape) < self.mlm_probability)
        else:
            # a word starts at an eligible token that is not a ## piece, or right after a non-eligible token
            previous = np.zeros_like(eligible)
            previous[:, 1:] = eligible[:, :-1]
            starts = eligible & (~self.continuation[ids] | ~previous)  # (batch, seq_len)
            word_of_token = np.cumsum(starts.ravel()).reshape(ids.shape) - 1  # (batch, seq_len)
            chosen = rng.random(int(starts.sum())) < self.mlm_probability  # (n_words,)
            targets = eligible & chosen[np.maximum(word_of_token, 0)] if chosen.size else np.zeros_like(eligible)
        return replace_targets(
            ids,
            targets,
            rng,
            mask_token_id=self.mask_token_id,
            vocab_size=self.vocab_size,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
        )
