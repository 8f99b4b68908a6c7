"""Helpers for the Keras model tests: every class by head, a tiny config, numpy inputs and labels.

Import after ``pytest.importorskip("keras")``."""

from __future__ import annotations

import numpy as np

from distilbert_mf import DistilBertConfig
from distilbert_mf.tensorflow import (
    TFDistilBertForMaskedLM,
    TFDistilBertForMultipleChoice,
    TFDistilBertForQuestionAnswering,
    TFDistilBertForSequenceClassification,
    TFDistilBertForTokenClassification,
    TFDistilBertModel,
)

CLASSES = {
    "base": TFDistilBertModel,
    "masked_lm": TFDistilBertForMaskedLM,
    "sequence_classification": TFDistilBertForSequenceClassification,
    "multiple_choice": TFDistilBertForMultipleChoice,
    "token_classification": TFDistilBertForTokenClassification,
    "question_answering": TFDistilBertForQuestionAnswering,
}
HEADS = tuple(CLASSES)
TASK_HEADS = HEADS[1:]


def tiny_config(**changes) -> DistilBertConfig:
    config = DistilBertConfig(
        vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64, num_labels=3
    )
    return config.replace(**changes)


def fit_config(head: str, config: DistilBertConfig) -> DistilBertConfig:
    """Question answering needs num_labels=2; every other head takes the config as is."""
    return config.replace(num_labels=2) if head == "question_answering" else config


def build(head: str, config: DistilBertConfig | None = None, seed: int = 0, **kwargs):
    import keras

    keras.utils.set_random_seed(seed)
    return CLASSES[head](fit_config(head, config or tiny_config()), **kwargs)


def make_inputs(head: str, config: DistilBertConfig, batch: int = 2, seq: int = 7, choices: int = 3, seed: int = 0):
    """Random int32 ids (no padding id) and a mask whose last row is right-padded after 4 tokens."""
    rng = np.random.default_rng(seed)
    shape = (batch, choices, seq) if head == "multiple_choice" else (batch, seq)
    input_ids = rng.integers(1, config.vocab_size, shape).astype(np.int32)
    attention_mask = np.ones(shape, np.int32)
    attention_mask[-1, ..., 4:] = 0
    return input_ids, attention_mask


def make_labels(head: str, config: DistilBertConfig, input_ids: np.ndarray, seed: int = 1) -> dict[str, np.ndarray]:
    """Labels for each head's loss (class ids; QA positions)."""
    rng = np.random.default_rng(seed)
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    if head == "masked_lm":
        return {"labels": rng.integers(0, config.vocab_size, (batch, seq))}
    if head == "sequence_classification":
        return {"labels": rng.integers(0, config.num_labels, (batch,))}
    if head == "multiple_choice":
        return {"labels": rng.integers(0, input_ids.shape[1], (batch,))}
    if head == "token_classification":
        return {"labels": rng.integers(0, config.num_labels, (batch, seq))}
    if head == "question_answering":
        return {"start_positions": rng.integers(0, seq, (batch,)), "end_positions": rng.integers(0, seq, (batch,))}
    return {}


def main_output(head: str, out) -> np.ndarray:
    """The head's main tensor(s) as numpy: last_hidden_state, logits, or start/end logits stacked."""
    if head == "base":
        return np.asarray(out["last_hidden_state"])
    if head == "question_answering":
        return np.stack([np.asarray(out["start_logits"]), np.asarray(out["end_logits"])])
    return np.asarray(out["logits"])
