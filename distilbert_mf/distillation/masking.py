"""DistilBERT's masking for distillation: rare tokens are masked more often (numpy, seeded per batch).

The reference method (Sanh et al., 2019, and Hugging Face's original distillation code):

- token counts over the tokenized corpus; the chance of masking a token is proportional to
  ``max(count, 1) ** -0.7`` (``smoothing``); special tokens (``[CLS]``, ``[SEP]``, ``[PAD]``, ``[UNK]``, ``[MASK]``)
  are never masked;
- per batch, ``ceil(0.15 * non-padding tokens of the whole flattened batch)`` positions are drawn without
  replacement with those probabilities (capped at the number of positions that can be masked);
- each drawn position becomes ``[MASK]`` (80 %), stays (10 %) or becomes a token drawn uniformly from the
  vocabulary (10 %); a new draw every step.

:class:`FrequencyMasker` plugs into the training data layer: ``dataset.with_masker(FrequencyMasker(...))`` and the
batch loader masks every batch with a generator seeded by ``(seed, epoch, batch index)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distilbert_mf.training.masking import IGNORE_INDEX, check_probability, replace_targets, special_table


def token_counts(corpus: Any, vocab_size: int) -> np.ndarray:
    """``(vocab_size,)`` int64: how often each id occurs in ``corpus``.

    ``corpus`` is a masked-LM :class:`~distilbert_mf.training.data.TaskDataset` (its rows) or an iterable of id
    sequences. An id outside ``[0, vocab_size)`` is an error.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a positive integer, got {vocab_size!r}")
    rows = getattr(corpus, "input_ids", corpus)
    counts = np.zeros(int(vocab_size), dtype=np.int64)
    for i, ids in enumerate(rows):
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            continue
        if ids.min() < 0 or ids.max() >= vocab_size:
            bad = ids[(ids < 0) | (ids >= vocab_size)][0]
            raise ValueError(f"sequence {i} holds token id {bad}, outside the vocabulary [0, {vocab_size})")
        counts += np.bincount(ids, minlength=int(vocab_size))
    return counts


def masking_probabilities(
    counts: Sequence[int] | np.ndarray, special_ids: Iterable[int], *, smoothing: float = 0.7
) -> np.ndarray:
    """``(vocab_size,)`` float64 summing to 1: ``max(count, 1) ** -smoothing``, 0 for ``special_ids``.

    Raises ValueError when the corpus holds no token that may be masked.
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"counts must be a 1-D array over the vocabulary, got shape {counts.shape}")
    if isinstance(smoothing, bool) or not isinstance(smoothing, (int, float)) or smoothing < 0:
        raise ValueError(f"smoothing must be a number >= 0, got {smoothing!r}")
    special = special_table(counts.size, special_ids)
    if not np.any((counts > 0) & ~special):
        raise ValueError("the corpus has no usable tokens: every token it holds is a special token (or it is empty)")
    weights = np.maximum(counts.astype(np.float64), 1.0) ** -float(smoothing)
    weights[special] = 0.0
    return weights / weights.sum()


def mask_batch(
    input_ids: np.ndarray,
    attention_mask: np.ndarray,
    token_probabilities: np.ndarray,
    rng: np.random.Generator,
    *,
    mask_token_id: int,
    mlm_probability: float = 0.15,
    mask_replace_prob: float = 0.8,
    random_replace_prob: float = 0.1,
) -> tuple[np.ndarray, np.ndarray]:
    """Mask one ``(batch, seq_len)`` batch the distillation way; returns ``(masked_ids, labels)`` int64, labels
    -100 except at the drawn positions. Random replacements are uniform over the vocabulary."""
    ids = np.asarray(input_ids, dtype=np.int64)
    mask = np.asarray(attention_mask) != 0
    if ids.shape != mask.shape or ids.ndim != 2:
        raise ValueError(f"input_ids {ids.shape} and attention_mask {mask.shape} must be the same (batch, seq_len)")
    vocab_size = token_probabilities.size
    if ids.size and (ids.min() < 0 or ids.max() >= vocab_size):
        raise ValueError(f"input_ids hold ids outside the vocabulary [0, {vocab_size}) of the masking probabilities")
    flat = ids.ravel()
    weights = np.where(mask.ravel(), token_probabilities[flat], 0.0)  # (batch * seq_len,)
    wanted = math.ceil(mlm_probability * int(mask.sum()))
    n_targets = min(wanted, int(np.count_nonzero(weights)))
    targets = np.zeros(flat.size, dtype=bool)
    if n_targets:
        chosen = rng.choice(flat.size, size=n_targets, replace=False, p=weights / weights.sum())
        targets[chosen] = True
    return replace_targets(
        ids,
        targets.reshape(ids.shape),
        rng,
        mask_token_id=mask_token_id,
        vocab_size=vocab_size,
        mask_replace_prob=mask_replace_prob,
        random_replace_prob=random_replace_prob,
    )


@dataclass(frozen=True)
class FrequencyMasker:
    """The distillation masker (a :class:`~distilbert_mf.training.masking.Masker`).

    Attributes:
        token_probabilities: ``(vocab_size,)`` from :func:`masking_probabilities`.
        mask_token_id: id of ``[MASK]``.
        mlm_probability / mask_replace_prob / random_replace_prob: 0.15 / 0.8 / 0.1 by default.
    """

    token_probabilities: np.ndarray = field(repr=False)
    mask_token_id: int
    mlm_probability: float = 0.15
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1

    def __post_init__(self) -> None:
        probabilities = np.asarray(self.token_probabilities, dtype=np.float64)
        if probabilities.ndim != 1 or not np.isclose(probabilities.sum(), 1.0) or (probabilities < 0).any():
            raise ValueError(
                "token_probabilities must be a 1-D distribution over the vocabulary (masking_probabilities)"
            )
        object.__setattr__(self, "token_probabilities", probabilities)
        check_probability("mlm_probability", self.mlm_probability, open_low=True)
        check_probability("mask_replace_prob", self.mask_replace_prob)
        check_probability("random_replace_prob", self.random_replace_prob)
        if self.mask_replace_prob + self.random_replace_prob > 1 + 1e-12:
            raise ValueError("mask_replace_prob + random_replace_prob must be at most 1")
        if not 0 <= self.mask_token_id < probabilities.size:
            raise ValueError(f"mask_token_id {self.mask_token_id} is outside the vocabulary ({probabilities.size})")

    @classmethod
    def from_corpus(cls, corpus: Any, tokenizer: Any, *, smoothing: float = 0.7, **options: float) -> FrequencyMasker:
        """Count ``corpus`` (a masked-LM TaskDataset or id sequences) and build the masker for ``tokenizer``."""
        vocab_size = len(tokenizer)
        probabilities = masking_probabilities(
            token_counts(corpus, vocab_size), tokenizer.all_special_ids, smoothing=smoothing
        )
        return cls(probabilities, int(tokenizer.mask_token_id), **options)

    def __call__(
        self, input_ids: np.ndarray, attention_mask: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        return mask_batch(
            input_ids,
            attention_mask,
            self.token_probabilities,
            rng,
            mask_token_id=self.mask_token_id,
            mlm_probability=self.mlm_probability,
            mask_replace_prob=self.mask_replace_prob,
            random_replace_prob=self.random_replace_prob,
        )


__all__ = ["IGNORE_INDEX", "FrequencyMasker", "mask_batch", "masking_probabilities", "token_counts"]
