"""Flax NNX weights adapter: canonical numpy arrays <-> the variables of :mod:`distilbert_mf.flax.modeling`.

The neutral :class:`distilbert_mf.checkpoint.pretrained.PreTrainedModel` does everything that is not Flax; this
module declares a model by parameter shapes only, turns checkpoint arrays into its variables, reads them back and
swaps the vocabulary tables. NNX state paths equal the canonical (PyTorch) names, so the whole mapping is one
table of leaf renames (:data:`distilbert_mf.checkpoint.layouts.FLAX_LEAVES_BACK`, shared with the Linen msgpack
format):

===============  ==============  =============================================
NNX leaf         canonical leaf  layout
===============  ==============  =============================================
``kernel``       ``weight``      transposed: Flax ``(in, out)``, PyTorch ``(out, in)``
``embedding``    ``weight``      as is ``(rows, dim)``
``scale``        ``weight``      as is (LayerNorm)
``bias``         ``bias``        as is
===============  ==============  =============================================

e.g. ``('distilbert', 'transformer', 'layer', 0, 'ffn', 'lin1', 'kernel')`` <->
``distilbert.transformer.layer.0.ffn.lin1.weight``. The tied masked-LM projector has no variable of its own: its
canonical ``vocab_projector.weight`` is the word-embedding matrix.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distilbert_mf.checkpoint import transfer
from distilbert_mf.checkpoint.layouts import FLAX_LEAVES_BACK as LEAF_NAMES
from distilbert_mf.checkpoint.names import TIED_KEY, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.flax.modeling import (
    FlaxDistilBertPreTrainedModel,
    PositionTable,
    VocabProjector,
    declaring_shapes_only,
    layer_factory,
    shapes_only,
)
from distilbert_mf.modeling_utils import dtype_name

__all__ = ["canonical_key", "declaring_shapes_only", "shapes_only", "weight_variables"]

WEIGHT_TYPES = (nnx.Param, PositionTable)


def canonical_key(path: tuple[Any, ...]) -> tuple[str, bool]:
    """NNX state path -> (canonical key, whether the array is transposed)."""
    *modules, leaf = path
    if leaf not in LEAF_NAMES:
        raise KeyError(f"no canonical name for the NNX variable {path}; known leaves: {sorted(LEAF_NAMES)}")
    name, transposed = LEAF_NAMES[leaf]
    return ".".join(str(p) for p in (*modules, name)), transposed


def weight_variables(model: nnx.Module) -> Iterator[tuple[str, bool, nnx.Variable]]:
    """(canonical key, transposed, variable) for every weight of ``model``, in graph order."""
    for path, node in nnx.iter_graph(model):
        if isinstance(node, WEIGHT_TYPES):
            key, transposed = canonical_key(path)
            yield key, transposed, node


# ----------------------------------------------------------------------------------------------- the adapter


def check_options(cls: type, dtype: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``dtype`` (compute; ``"auto"``: the checkpoint's, for parameters too unless ``param_dtype`` is given),
    ``param_dtype`` (storage; default float32), ``rngs`` (seeds dropout and weights the checkpoint lacks)."""
    rngs = options["rngs"]
    if rngs is not None and not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")
    for value in (dtype, options["param_dtype"]):
        dtype_name(value)  # a bad dtype fails now, before any file is read ("auto" passes)
    options["auto"] = isinstance(dtype, str) and dtype == "auto"
    return dtype, options


def declare(
    cls: type[FlaxDistilBertPreTrainedModel],
    config: DistilBertConfig,
    dtype: Any,
    options: dict[str, Any],
    fill: set[str],
) -> FlaxDistilBertPreTrainedModel:
    """The model in eval mode; when the checkpoint fills every weight its parameters are declared by shape only
    (nothing random drawn, no memory taken) and only dropout draws from the caller's ``rngs``."""
    param_dtype = options["param_dtype"]
    if isinstance(param_dtype, str) and param_dtype == "auto":
        param_dtype = dtype if options["auto"] else None
    if param_dtype is None:
        param_dtype = dtype if options["auto"] else jnp.float32
    rngs = options["rngs"]
    complete = fill >= set(expected_shapes(config, cls.head)) - _tied_key(cls, config)
    if complete:  # only dropout needs randomness: the caller's stream seeds it, whatever other streams it has
        rngs = nnx.Rngs(params=0, dropout=rngs.dropout() if rngs is not None else 0)
    with shapes_only(complete):
        model = cls(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
    model.eval()
    return model


def _tied_key(cls: type, config: DistilBertConfig) -> set[str]:
    return {TIED_KEY} if cls.head == "masked_lm" and config.tie_word_embeddings else set()


def assign(
    model: FlaxDistilBertPreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    *,
    owned: bool,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Copy checked canonical arrays into the variables: cast to each variable's dtype, placed with its sharding,
    as fresh aligned host copies that JAX on the CPU adopts without another copy (``owned``: the memory-mapped
    file's pages are given back as they are copied)."""
    for key, transposed, variable in weight_variables(model):
        if key not in arrays:
            continue
        old = variable.get_value()  # a jax.Array, or a placeholder declared under shapes_only()
        value = transfer.stored_copy(arrays[key], dtype=old.dtype, transposed=transposed, release=owned)
        variable.set_value(jax.device_put(value, getattr(old, "sharding", None)))


def read(model: FlaxDistilBertPreTrainedModel) -> dict[str, np.ndarray]:
    """Every weight as a canonical array, PyTorch layout, in the parameter dtype (the tied projector left out)."""
    state: dict[str, np.ndarray] = {}
    for key, transposed, variable in weight_variables(model):
        array = np.asarray(variable.get_value())
        state[key] = np.ascontiguousarray(array.T) if transposed else array
    return state


def frozen_keys(model: FlaxDistilBertPreTrainedModel) -> set[str]:
    """Weights that are not ``nnx.Param`` (the sinusoidal table): an optimizer over ``nnx.Param`` leaves them."""
    return {key for key, _, variable in weight_variables(model) if not isinstance(variable, nnx.Param)}


def replace_vocabulary(
    model: FlaxDistilBertPreTrainedModel, config: DistilBertConfig, arrays: Mapping[str, np.ndarray]
) -> None:
    """New word embeddings (and masked-LM projector) of ``config.vocab_size`` rows holding ``arrays``."""
    embeddings = model.base_model.embeddings
    old = embeddings.word_embeddings
    with shapes_only():  # declared by shape, filled from ``arrays`` below
        make = layer_factory(config, nnx.Rngs(0), old.dtype, old.param_dtype)
        embeddings.word_embeddings = make.embed(config.vocab_size, ("vocab", "embed"), zero_row=config.pad_token_id)
        if model.head == "masked_lm":
            model.vocab_projector = VocabProjector(config, make)
    embeddings.vocab_size = config.vocab_size
    model.config = config
    model.base_model.config = config
    assign(
        model,
        {k: v for k, v in arrays.items() if "word_embeddings" in k or k.startswith("vocab_projector.")},
        owned=False,
    )
