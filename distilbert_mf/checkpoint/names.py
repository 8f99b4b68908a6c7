"""Canonical weight names: transformers' PyTorch state-dict keys, with their shapes, for each head.

Every framework package maps these names to its own variables with a flat table of transposes; every file
format is read into and written from these names. Linear weights are ``(out_features, in_features)``.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, TypeVar

import numpy as np

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)
Value = TypeVar("Value")

PREFIX = "distilbert."
HEADS = (
    "base",
    "masked_lm",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)
# head -> architecture name written in config.json (PyTorch class names, as transformers writes them)
ARCHITECTURES = {
    "base": "DistilBertModel",
    "masked_lm": "DistilBertForMaskedLM",
    "sequence_classification": "DistilBertForSequenceClassification",
    "multiple_choice": "DistilBertForMultipleChoice",
    "token_classification": "DistilBertForTokenClassification",
    "question_answering": "DistilBertForQuestionAnswering",
}
HEAD_OF_ARCHITECTURE = {v: k for k, v in ARCHITECTURES.items()}
TIED_KEY = "vocab_projector.weight"  # shares storage with distilbert.embeddings.word_embeddings.weight
TIED_SOURCE = PREFIX + "embeddings.word_embeddings.weight"
ENCODER_PREFIXES = ("embeddings.", "transformer.")  # the first component of every key of DistilBertModel


def check_head(head: str) -> str:
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {HEADS}")
    return head


def base_shapes(config: DistilBertConfig) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of ``DistilBertModel`` (no prefix)."""
    d, h = config.dim, config.hidden_dim
    shapes: dict[str, tuple[int, ...]] = {
        "embeddings.word_embeddings.weight": (config.vocab_size, d),
        "embeddings.position_embeddings.weight": (config.max_position_embeddings, d),
        "embeddings.LayerNorm.weight": (d,),
        "embeddings.LayerNorm.bias": (d,),
    }
    for i in range(config.n_layers):
        p = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            shapes[p + f"attention.{lin}.weight"] = (d, d)
            shapes[p + f"attention.{lin}.bias"] = (d,)
        shapes[p + "sa_layer_norm.weight"] = (d,)
        shapes[p + "sa_layer_norm.bias"] = (d,)
        shapes[p + "ffn.lin1.weight"] = (h, d)
        shapes[p + "ffn.lin1.bias"] = (h,)
        shapes[p + "ffn.lin2.weight"] = (d, h)
        shapes[p + "ffn.lin2.bias"] = (d,)
        shapes[p + "output_layer_norm.weight"] = (d,)
        shapes[p + "output_layer_norm.bias"] = (d,)
    return shapes


def head_shapes(config: DistilBertConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Keys and shapes of the head's own layers (outside ``distilbert.``)."""
    d, n = config.dim, config.num_labels
    check_head(head)
    if head == "base":
        return {}
    if head == "masked_lm":
        return {
            "vocab_transform.weight": (d, d),
            "vocab_transform.bias": (d,),
            "vocab_layer_norm.weight": (d,),
            "vocab_layer_norm.bias": (d,),
            TIED_KEY: (config.vocab_size, d),
            "vocab_projector.bias": (config.vocab_size,),
        }
    if head in ("sequence_classification", "multiple_choice"):
        out = 1 if head == "multiple_choice" else n
        return {
            "pre_classifier.weight": (d, d),
            "pre_classifier.bias": (d,),
            "classifier.weight": (out, d),
            "classifier.bias": (out,),
        }
    if head == "token_classification":
        return {"classifier.weight": (n, d), "classifier.bias": (n,)}
    if n != 2:
        raise ValueError(f"question answering predicts a start and an end logit, so num_labels must be 2, got {n}")
    return {"qa_outputs.weight": (2, d), "qa_outputs.bias": (2,)}


def expected_shapes(config: DistilBertConfig, head: str) -> dict[str, tuple[int, ...]]:
    """Every canonical key of ``head`` with its shape, in state-dict order."""
    check_head(head)
    base = base_shapes(config)
    if head == "base":
        return base
    shapes = {PREFIX + k: v for k, v in base.items()}
    shapes.update(head_shapes(config, head))
    return shapes


def sinusoidal_table(n_positions: int, dim: int) -> np.ndarray:
    """The interleaved sin/cos position table of DistilBERT: even columns sin, odd columns cos. (n_positions, dim)"""
    positions = np.arange(n_positions, dtype=np.float64)[:, None]  # (n_positions, 1)
    pair = np.arange(dim) // 2  # column j uses frequency index j // 2
    angles = positions / np.power(10000.0, 2.0 * pair / dim)[None, :]  # (n_positions, dim)
    table = np.empty((n_positions, dim), dtype=np.float64)
    table[:, 0::2] = np.sin(angles[:, 0::2])
    table[:, 1::2] = np.cos(angles[:, 1::2])
    return table.astype(np.float32)


def for_head(state: Mapping[str, Value], head: str, expected_keys: Collection[str] | None = None) -> dict[str, Value]:
    """``state`` renamed so its encoder keys carry the ``distilbert.`` prefix exactly when ``head`` is not the base.

    - a head checkpoint into the base model (``head="base"``, prefixed keys): the prefix is dropped; the head's own
      layers (``classifier.weight``, ...) keep their names, so they are not keys of the base model (unexpected);
    - a base checkpoint into a head (no prefixed key): the encoder keys (``embeddings.`` / ``transformer.``) get the
      prefix;
    - anything else is returned unchanged (a copy).

    ``expected_keys`` (the keys of the model being loaded): a renamed key that is not among them keeps the name it
    has in ``state``, so unexpected keys are reported as the file spells them.
    """
    check_head(head)
    has_prefix = any(key.startswith(PREFIX) for key in state)
    if head == "base" and has_prefix:
        rename = {key: key[len(PREFIX) :] for key in state if key.startswith(PREFIX)}
    elif head != "base" and not has_prefix:
        rename = {key: PREFIX + key for key in state if key.startswith(ENCODER_PREFIXES)}
    else:
        return dict(state)
    if expected_keys is not None:
        rename = {old: new for old, new in rename.items() if new in expected_keys}
    return {rename.get(key, key): value for key, value in state.items()}


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    """Same dtype, shape and bytes (NaNs compare by their bits)."""
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return bool(np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8)))


def without_tied_projector(state: dict[str, np.ndarray], config: DistilBertConfig) -> dict[str, np.ndarray]:
    """``state`` without ``vocab_projector.weight`` when it is the tied word embedding (re-tied on load)."""
    if TIED_KEY not in state or not config.tie_word_embeddings:
        return state
    source = state.get(TIED_SOURCE)
    if source is not None and same_bits(state[TIED_KEY], source):
        return {k: v for k, v in state.items() if k != TIED_KEY}
    logger.warning(
        "config.tie_word_embeddings is True but %s differs from %s; writing it separately", TIED_KEY, TIED_SOURCE
    )
    return state


def without_generated_table(state: dict[str, np.ndarray], config: DistilBertConfig, head: str) -> dict[str, np.ndarray]:
    """``state`` without a sinusoidal position table equal to the generated one (transformers' Flax never stores
    it; the loader generates it)."""
    key = ("" if head == "base" else PREFIX) + "embeddings.position_embeddings.weight"
    if not config.sinusoidal_pos_embds or key not in state:
        return state
    table = np.asarray(state[key])
    generated = sinusoidal_table(config.max_position_embeddings, config.dim).astype(table.dtype)
    if same_bits(table, generated):
        return {k: v for k, v in state.items() if k != key}
    logger.warning("%s differs from the generated sinusoidal table; writing it (transformers' Flax ignores it)", key)
    return state
