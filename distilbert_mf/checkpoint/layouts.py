"""Name tables between canonical keys (transformers' PyTorch names) and the TF / Flax names in files.

Canonical ``distilbert.transformer.layer.0.attention.q_lin.weight`` (``(out, in)``) is written

- in transformers' ``tf_model.h5`` as ``distilbert/transformer/layer_._0/attention/q_lin/kernel:0`` (``(in, out)``),
  LayerNorm ``gamma`` / ``beta``, word embeddings ``weight``, position embeddings ``embeddings``;
- in transformers' Linen ``flax_model.msgpack`` as the tree path
  ``("distilbert", "transformer", "layer", "0", "attention", "q_lin", "kernel")`` (``(in, out)``),
  LayerNorm ``scale`` / ``bias``, embeddings ``embedding``.

A conversion is only these leaf renames plus a transpose of 2-D ``kernel`` leaves. Nothing here imports a framework.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import numpy as np

from distilbert_mf.checkpoint.names import for_head  # noqa: F401 - kept importable from here

# module names whose ``weight`` / ``bias`` are LayerNorm parameters
LAYER_NORMS = ("LayerNorm", "sa_layer_norm", "output_layer_norm", "vocab_layer_norm")
EMBEDDINGS = ("word_embeddings", "position_embeddings")

# (module kind, canonical leaf) -> (file leaf, transpose)
TF_LEAVES = {
    ("dense", "weight"): ("kernel", True),
    ("dense", "bias"): ("bias", False),
    ("norm", "weight"): ("gamma", False),
    ("norm", "bias"): ("beta", False),
    ("word_embeddings", "weight"): ("weight", False),
    ("position_embeddings", "weight"): ("embeddings", False),
}
FLAX_LEAVES = {
    ("dense", "weight"): ("kernel", True),
    ("dense", "bias"): ("bias", False),
    ("norm", "weight"): ("scale", False),
    ("norm", "bias"): ("bias", False),
    ("word_embeddings", "weight"): ("embedding", False),
    ("position_embeddings", "weight"): ("embedding", False),
}
# file leaf -> (canonical leaf, transpose); ``weight`` is how TF names the word embeddings
TF_LEAVES_BACK = {
    "kernel": ("weight", True),
    "bias": ("bias", False),
    "gamma": ("weight", False),
    "beta": ("bias", False),
    "weight": ("weight", False),
    "embeddings": ("weight", False),
}
FLAX_LEAVES_BACK = {
    "kernel": ("weight", True),
    "bias": ("bias", False),
    "scale": ("weight", False),
    "embedding": ("weight", False),
}

# Keras model name transformers' TF classes write as the first component of every weight name
TF_MODEL_NAMES = {
    "base": "tf_distil_bert_model",
    "masked_lm": "tf_distil_bert_for_masked_lm",
    "sequence_classification": "tf_distil_bert_for_sequence_classification",
    "multiple_choice": "tf_distil_bert_for_multiple_choice",
    "token_classification": "tf_distil_bert_for_token_classification",
    "question_answering": "tf_distil_bert_for_question_answering",
}
TF_LAYER_ORDER = {
    "base": ("distilbert",),
    "masked_lm": ("distilbert", "vocab_transform", "vocab_layer_norm", "vocab_projector"),
    "sequence_classification": ("distilbert", "pre_classifier", "classifier"),
    "multiple_choice": ("distilbert", "pre_classifier", "classifier"),
    "token_classification": ("distilbert", "classifier"),
    "question_answering": ("distilbert", "qa_outputs"),
}


def _module_kind(module: str) -> str:
    if module in LAYER_NORMS:
        return "norm"
    if module in EMBEDDINGS:
        return module
    return "dense"


def _split(key: str) -> tuple[list[str], str, str]:
    """``"a.b.q_lin.weight"`` -> (["a", "b", "q_lin"], "q_lin", "weight")."""
    parts = key.split(".")
    if len(parts) < 2:
        raise ValueError(f"canonical weight name {key!r} has no module: expected 'module.weight' or 'module.bias'")
    return parts[:-1], parts[-2], parts[-1]


def _file_leaf(table: dict[tuple[str, str], tuple[str, bool]], key: str, ndim: int) -> tuple[list[str], str, bool]:
    modules, module, leaf = _split(key)
    kind = _module_kind(module)
    if kind == "dense" and leaf == "weight" and ndim != 2:
        raise ValueError(f"weight {key!r} has {ndim} dimensions; a Linear weight has 2")
    if (kind, leaf) not in table:
        raise ValueError(f"no TF/Flax name for canonical weight {key!r}: leaf {leaf!r} of a {kind} module")
    file_leaf, transpose = table[(kind, leaf)]
    return modules, file_leaf, transpose


def to_tf_name(key: str, ndim: int) -> tuple[str, bool]:
    """Canonical key -> (TF weight name without model name and ``:0``, transpose?)."""
    modules, leaf, transpose = _file_leaf(TF_LEAVES, key, ndim)
    path = "/".join(modules).replace("transformer/layer/", "transformer/layer_._")
    return f"{path}/{leaf}", transpose


def from_tf_name(name: str) -> tuple[str, bool]:
    """TF weight name (model name already stripped, ``:0`` optional) -> (canonical key, transpose?)."""
    if name.endswith(":0"):
        name = name[:-2]
    parts = name.split("/")
    leaf = parts[-1]
    if leaf not in TF_LEAVES_BACK or len(parts) < 2:
        raise ValueError(f"unrecognised TF weight name {name!r}: expected '<layer path>/<{'|'.join(TF_LEAVES_BACK)}>'")
    canonical_leaf, transpose = TF_LEAVES_BACK[leaf]
    modules = [p.replace("layer_._", "layer.") if p.startswith("layer_._") else p for p in parts[:-1]]
    return ".".join([*modules, canonical_leaf]), transpose


def to_flax_path(key: str, ndim: int) -> tuple[tuple[str, ...], bool]:
    """Canonical key -> (Linen tree path, transpose?). Layer indices stay string keys ``"0"``, ``"1"``."""
    modules, leaf, transpose = _file_leaf(FLAX_LEAVES, key, ndim)
    return (*modules, leaf), transpose


def from_flax_path(path: tuple[str, ...]) -> tuple[str, bool]:
    """Linen tree path -> (canonical key, transpose?)."""
    leaf = path[-1]
    if leaf not in FLAX_LEAVES_BACK or len(path) < 2:
        raise ValueError(
            f"unrecognised Flax parameter path {'/'.join(path)!r}: expected a leaf among {sorted(FLAX_LEAVES_BACK)}"
        )
    canonical_leaf, transpose = FLAX_LEAVES_BACK[leaf]
    return ".".join([*path[:-1], canonical_leaf]), transpose


def rename_arrays(
    items: Iterable[tuple[Any, np.ndarray]], table: Callable[[Any, np.ndarray], tuple[str, bool]]
) -> dict[str, np.ndarray]:
    """Rename ``(name, array)`` pairs with ``table(name, array) -> (new name, transpose?)``; the first of a name wins."""
    out: dict[str, np.ndarray] = {}
    for name, array in items:
        new_name, transpose = table(name, np.asarray(array))
        if new_name not in out:
            out[new_name] = np.ascontiguousarray(array.T) if transpose else np.asarray(array)
    return out
