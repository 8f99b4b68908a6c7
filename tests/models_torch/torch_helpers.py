"""Helpers for the PyTorch model tests: every class, a builder that fits the config to the head, inputs.

Import after ``pytest.importorskip("torch")``."""

from __future__ import annotations

import torch

from distilbert_mf import DistilBertConfig
from distilbert_mf.torch import (
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
)

ALL_CLASSES = (
    DistilBertModel,
    DistilBertForMaskedLM,
    DistilBertForSequenceClassification,
    DistilBertForMultipleChoice,
    DistilBertForTokenClassification,
    DistilBertForQuestionAnswering,
)
HEAD_CLASSES = ALL_CLASSES[1:]


def fit_config(cls: type, config: DistilBertConfig) -> DistilBertConfig:
    """Question answering needs num_labels=2; every other head takes the config as is."""
    return config.replace(num_labels=2) if cls is DistilBertForQuestionAnswering else config


def build(cls: type, config: DistilBertConfig, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return cls(fit_config(cls, config), **kwargs)


def make_inputs(cls: type, config: DistilBertConfig, batch: int = 2, seq: int = 7, choices: int = 3, seed: int = 0):
    """Random ids (no padding id) and an attention mask whose last row is right-padded after 4 tokens."""
    gen = torch.Generator().manual_seed(seed)
    shape = (batch, choices, seq) if cls is DistilBertForMultipleChoice else (batch, seq)
    input_ids = torch.randint(1, config.vocab_size, shape, generator=gen)
    attention_mask = torch.ones(shape, dtype=torch.long)
    attention_mask[-1, ..., 4:] = 0
    return input_ids, attention_mask


def make_labels(cls: type, config: DistilBertConfig, input_ids, seed: int = 1) -> dict:
    """Labels for each head's loss (class ids; QA positions)."""
    gen = torch.Generator().manual_seed(seed)
    batch, seq = input_ids.shape[0], input_ids.shape[-1]
    if cls is DistilBertForMaskedLM:
        return {"labels": torch.randint(0, config.vocab_size, (batch, seq), generator=gen)}
    if cls is DistilBertForSequenceClassification:
        return {"labels": torch.randint(0, config.num_labels, (batch,), generator=gen)}
    if cls is DistilBertForMultipleChoice:
        return {"labels": torch.randint(0, input_ids.shape[1], (batch,), generator=gen)}
    if cls is DistilBertForTokenClassification:
        return {"labels": torch.randint(0, config.num_labels, (batch, seq), generator=gen)}
    if cls is DistilBertForQuestionAnswering:
        return {
            "start_positions": torch.randint(0, seq, (batch,), generator=gen),
            "end_positions": torch.randint(0, seq, (batch,), generator=gen),
        }
    return {}


def main_output(cls: type, out):
    """The head's main tensor(s): last_hidden_state, logits, or start/end logits stacked."""
    if cls is DistilBertModel:
        return out.last_hidden_state
    if cls is DistilBertForQuestionAnswering:
        return torch.stack([out.start_logits, out.end_logits])
    return out.logits
