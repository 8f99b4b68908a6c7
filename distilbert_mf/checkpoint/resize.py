"""Resizing the vocabulary of a model's canonical arrays (numpy): the rule behind ``resize_token_embeddings``.

Kept rows are unchanged; rows beyond the old vocabulary are drawn, as transformers does, from a normal distribution
with the old rows' mean and ``1e-9`` times their covariance (so they sit at the mean of the known embeddings, which
keeps the first predictions of a masked-LM head sensible); when that covariance is not positive definite the new
rows are the mean itself. The masked-LM projector is tied to the embeddings and follows them; its new bias entries
are the mean of the old bias (with ``1e-9`` of its spread). Shrinking keeps the first rows.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from distilbert_mf.checkpoint.names import PREFIX, TIED_KEY
from distilbert_mf.config import DistilBertConfig

WORD_EMBEDDINGS_KEY = "embeddings.word_embeddings.weight"
PROJECTOR_BIAS_KEY = "vocab_projector.bias"
NEW_ROWS_SCALE = 1e-9  # the covariance (and bias spread) scale of new rows


def target_size(current: int, new_num_tokens: int | None, pad_to_multiple_of: int | None) -> int:
    """The vocabulary size asked for: ``new_num_tokens`` (default: the current size) rounded up to
    ``pad_to_multiple_of``."""
    if new_num_tokens is not None and (
        isinstance(new_num_tokens, bool) or not isinstance(new_num_tokens, (int, np.integer)) or new_num_tokens < 1
    ):
        raise ValueError(f"new_num_tokens must be a positive int or None, got {new_num_tokens!r}")
    if pad_to_multiple_of is not None and (
        isinstance(pad_to_multiple_of, bool)
        or not isinstance(pad_to_multiple_of, (int, np.integer))
        or pad_to_multiple_of < 1
    ):
        raise ValueError(f"pad_to_multiple_of must be a positive int or None, got {pad_to_multiple_of!r}")
    size = current if new_num_tokens is None else int(new_num_tokens)
    if pad_to_multiple_of is not None:
        size = -(-size // int(pad_to_multiple_of)) * int(pad_to_multiple_of)
    return size


def new_embedding_rows(old: np.ndarray, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``count`` rows drawn from N(mean(old), 1e-9 · cov(old)) in float32 arithmetic, cast to ``old.dtype``."""
    table = old.astype(np.float64)
    mean = table.mean(axis=0)  # (dim,)
    centered = table - mean  # (vocab, dim)
    covariance = NEW_ROWS_SCALE * (centered.T @ centered) / table.shape[0]  # (dim, dim)
    try:
        factor = np.linalg.cholesky(covariance)  # raises when not positive definite
    except np.linalg.LinAlgError:
        return np.repeat(mean[None, :], count, axis=0).astype(old.dtype)
    rng = rng or np.random.default_rng()
    noise = rng.standard_normal((count, table.shape[1]))  # (count, dim)
    return (mean + noise @ factor.T).astype(old.dtype)


def new_bias_entries(old: np.ndarray, count: int, rng: np.random.Generator | None = None) -> np.ndarray:
    """``count`` bias entries from N(mean(old), (1e-9 · std(old))²)."""
    values = old.astype(np.float64)
    spread = NEW_ROWS_SCALE * (values.std(ddof=1) if values.size > 1 else 0.0)
    rng = rng or np.random.default_rng()
    return (values.mean() + spread * rng.standard_normal(count)).astype(old.dtype)


def resized_vocabulary(
    arrays: Mapping[str, np.ndarray],
    config: DistilBertConfig,
    head: str,
    new_num_tokens: int | None,
    pad_to_multiple_of: int | None = None,
    *,
    rng: np.random.Generator | None = None,
) -> tuple[DistilBertConfig, dict[str, np.ndarray]]:
    """The config with the new ``vocab_size`` and the arrays whose first dimension is the vocabulary, resized
    (the word embeddings; for the masked-LM head also the tied projector and its bias). Other arrays are not
    returned: they do not change."""
    size = target_size(config.vocab_size, new_num_tokens, pad_to_multiple_of)
    if config.pad_token_id is not None and config.pad_token_id >= size:
        raise ValueError(
            f"cannot resize the vocabulary to {size} tokens: pad_token_id {config.pad_token_id} would fall outside "
            f"it; keep at least {config.pad_token_id + 1} tokens"
        )
    prefix = "" if head == "base" else PREFIX
    embeddings = np.asarray(arrays[prefix + WORD_EMBEDDINGS_KEY])
    old = embeddings.shape[0]
    if size <= old:
        table = embeddings[:size].copy()
    else:
        table = np.concatenate([embeddings, new_embedding_rows(embeddings, size - old, rng)])
    out = {prefix + WORD_EMBEDDINGS_KEY: table}
    if head == "masked_lm":
        out[TIED_KEY] = table
        bias = np.asarray(arrays[PROJECTOR_BIAS_KEY])
        out[PROJECTOR_BIAS_KEY] = (
            bias[:size].copy() if size <= old else np.concatenate([bias, new_bias_entries(bias, size - old, rng)])
        )
    return config.replace(vocab_size=size), out


__all__ = ["new_bias_entries", "new_embedding_rows", "resized_vocabulary", "target_size"]
