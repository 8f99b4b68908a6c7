"""Helpers for the Flax model tests: every class, a builder that fits the config to the head, numpy inputs.

Import after ``pytest.importorskip("flax")``."""

from __future__ import annotations

import numpy as np
from flax import nnx

from distilbert_mf import DistilBertConfig
from distilbert_mf.flax import (
    FlaxDistilBertForMaskedLM,
    FlaxDistilBertForMultipleChoice,
    FlaxDistilBertForQuestionAnswering,
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertForTokenClassification,
    FlaxDistilBertModel,
)

ALL_CLASSES = (
    FlaxDistilBertModel,
    FlaxDistilBertForMaskedLM,
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertForMultipleChoice,
    FlaxDistilBertForTokenClassification,
    FlaxDistilBertForQuestionAnswering,
)
HEAD_CLASSES = ALL_CLASSES[1:]
BY_HEAD = {cls.head: cls for cls in ALL_CLASSES}


def tiny(**changes) -> DistilBertConfig:
    """The tiny odd-sized config of tests/conftest.py (vocab 99, dim 32, 4 heads, hidden 37, 2 layers)."""
    config = DistilBertConfig(
        vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64, num_labels=3
    )
    return config.replace(**changes) if changes else config


def fit_config(cls: type, config: DistilBertConfig) -> DistilBertConfig:
    """Question answering needs num_labels=2; every other head takes the config as is."""
    return config.replace(num_labels=2) if cls is FlaxDistilBertForQuestionAnswering else config


def build(cls: type, config: DistilBertConfig, seed: int = 0, *, train: bool = False, **kwargs):
    """A randomly initialised model, in eval mode unless ``train``."""
    model = cls(fit_config(cls, config), rngs=nnx.Rngs(seed), **kwargs)
    model.train() if train else model.eval()
    return model


def make_inputs(cls: type, config: DistilBertConfig, batch: int = 2, seq: int = 7, choices: int = 3, seed: int = 0):
    """Random numpy ids (no padding id) and an attention mask whose last row is right-padded after 4 tokens."""
    rng = np.random.default_rng(seed)
    shape = (batch, choices, seq) if cls is FlaxDistilBertForMultipleChoice else (batch, seq)
    input_ids = rng.integers(1, config.vocab_size, shape).astype(np.int32)
    attention_mask = np.ones(shape, dtype=np.int32)
    attention_mask[-1, ..., 4:] = 0
    return input_ids, attention_mask


def make_labels(cls: type, config: DistilBertConfig, input_ids: np.ndarray, seed: int = 1) -> dict:
    """Labels for each head's loss (class ids; QA positions), as numpy."""
    rng = np.random.default_rng(seed)
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    if cls is FlaxDistilBertForMaskedLM:
        return {"labels": rng.integers(0, config.vocab_size, (batch, seq)).astype(np.int32)}
    if cls is FlaxDistilBertForSequenceClassification:
        return {"labels": rng.integers(0, config.num_labels, (batch,)).astype(np.int32)}
    if cls is FlaxDistilBertForMultipleChoice:
        return {"labels": rng.integers(0, input_ids.shape[1], (batch,)).astype(np.int32)}
    if cls is FlaxDistilBertForTokenClassification:
        return {"labels": rng.integers(0, config.num_labels, (batch, seq)).astype(np.int32)}
    if cls is FlaxDistilBertForQuestionAnswering:
        return {
            "start_positions": rng.integers(0, seq, (batch,)).astype(np.int32),
            "end_positions": rng.integers(0, seq, (batch,)).astype(np.int32),
        }
    return {}


def main_output(cls: type, out) -> np.ndarray:
    """The head's main output as numpy float32: last_hidden_state, logits, or start/end logits stacked."""
    if cls is FlaxDistilBertModel:
        value = out.last_hidden_state
    elif cls is FlaxDistilBertForQuestionAnswering:
        value = np.stack([np.asarray(out.start_logits, np.float32), np.asarray(out.end_logits, np.float32)])
    else:
        value = out.logits
    return np.asarray(value, dtype=np.float32)


def log_softmax(x: np.ndarray) -> np.ndarray:
    """Row-wise log-softmax in float64 (the numpy hand computation of the losses)."""
    x = np.asarray(x, dtype=np.float64)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def numpy_cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore_index: int = -100) -> float:
    logits = np.asarray(logits, np.float64).reshape(-1, np.shape(logits)[-1])
    labels = np.asarray(labels).reshape(-1)
    keep = labels != ignore_index
    logp = log_softmax(logits[keep])
    return float(-logp[np.arange(keep.sum()), labels[keep]].mean())
