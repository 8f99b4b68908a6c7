"""Keras weights adapter: canonical numpy arrays <-> the variables of :mod:`distilbert_mf.tensorflow.modeling`.

The neutral :class:`distilbert_mf.checkpoint.pretrained.PreTrainedModel` does everything that is not Keras; this
module declares a model's variables without drawing random values (a ``keras.StatelessScope``), copies checkpoint
arrays into them block by block, reads them back and swaps the vocabulary tables.

Canonical name -> Keras variable is attribute access plus one leaf rename (:data:`KERAS_LEAVES`):
``distilbert.transformer.layer.0.attention.q_lin.weight`` is
``model.distilbert.transformer.layer[0].attention.q_lin.kernel``, transposed.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Mapping
from typing import Any

import keras
import numpy as np

from distilbert_mf import modeling_utils
from distilbert_mf.checkpoint import transfer
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.tensorflow.modeling import (
    NUMPY_DTYPES,
    TFDistilBertPreTrainedModel,
    VocabProjector,
    word_embeddings,
)

logger = logging.getLogger(__name__)

# (Keras layer class, canonical leaf) -> (Keras variable attribute, stored transposed)
KERAS_LEAVES: dict[tuple[str, str], tuple[str, bool]] = {
    ("Dense", "weight"): ("kernel", True),  # Linear (out, in) <-> Dense kernel (in, out)
    ("Dense", "bias"): ("bias", False),
    ("Embedding", "weight"): ("embeddings", False),
    ("LayerNorm", "weight"): ("gamma", False),
    ("LayerNorm", "bias"): ("beta", False),
    ("VocabProjector", "weight"): ("kernel", True),  # only when not tied to the word embeddings
    ("VocabProjector", "bias"): ("bias", False),
}


def resolve_dtype_policy(dtype: Any) -> Any:
    """``from_pretrained``'s ``dtype`` as a Keras dtype policy: None (Keras' global policy), a dtype (float32 /
    bfloat16 / float16 in any spelling), or a Keras policy ('mixed_bfloat16', 'mixed_float16', or an object)."""
    if dtype is None or isinstance(dtype, keras.DTypePolicy):
        return dtype
    if isinstance(dtype, str) and dtype.startswith("mixed_"):
        if dtype not in ("mixed_bfloat16", "mixed_float16"):
            raise ValueError(f"unsupported dtype policy {dtype!r}; expected 'mixed_bfloat16' or 'mixed_float16'")
        name = dtype
    else:
        name = modeling_utils.dtype_name(dtype)
    if name in ("float16", "mixed_float16") and _on_cpu():
        logger.warning(modeling_utils.CPU_FLOAT16_WARNING)
    return name


def _on_cpu() -> bool:
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.config.list_physical_devices("GPU")
    if backend == "jax":
        import jax

        return jax.default_backend() == "cpu"
    if backend == "torch":
        import torch

        return not torch.cuda.is_available()
    return True


def canonical_variables(model: TFDistilBertPreTrainedModel) -> dict[str, tuple[Any, bool]]:
    """Canonical key -> (Keras variable, stored transposed), for every key of ``expected_shapes`` (the tied
    projector maps to the word embeddings)."""
    out: dict[str, tuple[Any, bool]] = {}
    tied = model._tied()
    for key in expected_shapes(model.config, model.head):
        *parts, leaf = (TIED_SOURCE if tied and key == TIED_KEY else key).split(".")
        layer: Any = model
        for part in parts:
            layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
        attribute, transposed = KERAS_LEAVES[(type(layer).__name__, leaf)]
        out[key] = (getattr(layer, attribute), transposed)
    return out


def defer_to_zeros(variable: Any) -> None:
    """Inside a ``keras.StatelessScope``: make a declared variable start as zeros instead of its random initializer.

    Keras keeps the initializer of a variable declared in a stateless scope in ``_initializer`` and calls it when
    the scope ends; there is no public way to change it."""
    if getattr(variable, "_initializer", None) is None:
        raise RuntimeError(
            f"variable {variable.path} has no deferred initializer; declare it in a keras.StatelessScope"
        )
    variable._initializer = keras.initializers.Zeros()


def assign_canonical(variable: Any, transposed: bool, array: np.ndarray, *, release: bool = False) -> None:
    """Copy a canonical array into ``variable``: cast to its dtype, transposed for kernels.

    With TensorFlow the copy goes block by block into the variable's own memory (``release``: the checkpoint file's
    pages are given back after each block, see :mod:`distilbert_mf.checkpoint.transfer`), into every copy of a
    variable mirrored by a ``tf.distribute`` strategy (one per local replica); other Keras backends take one whole
    array."""
    dtype = NUMPY_DTYPES[keras.backend.standardize_dtype(variable.dtype)]
    if keras.backend.backend() != "tensorflow":
        variable.assign(transfer.stored_copy(array, dtype=dtype, transposed=transposed, release=release))
        return
    import tensorflow as tf

    value = variable.value  # a MirroredVariable's handle is one replica's copy: write each local one
    mirrored = isinstance(value, tf.distribute.DistributedValues)
    handles = [c.handle for c in (value.distribute_strategy.experimental_local_results(value) if mirrored else [value])]
    stored = transfer.stored_shape(array.shape, transposed)
    for rows, block in transfer.blocks(array, dtype=dtype, transposed=transposed, release=release):
        # written in place: ``variable[rows].assign`` would first read (and so copy) the whole variable
        begin, end = [0] * len(stored), list(stored)
        axis = len(stored) - 1 if transposed else 0
        begin[axis], end[axis] = rows.start, rows.stop
        for handle in handles:
            tf.raw_ops.ResourceStridedSliceAssign(
                ref=handle, begin=begin, end=end, strides=[1] * len(stored), value=block
            )


# ----------------------------------------------------------------------------------------------- the adapter


def check_options(cls: type, dtype: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``dtype`` as a Keras dtype policy (``"auto"`` kept for the core), ``name`` the Keras model name."""
    if not (isinstance(dtype, str) and dtype == "auto"):
        dtype = resolve_dtype_policy(dtype)  # a bad dtype fails now, before any file is read
    return dtype, options


def declare(
    cls: type[TFDistilBertPreTrainedModel],
    config: DistilBertConfig,
    dtype: Any,
    options: dict[str, Any],
    fill: set[str],
) -> TFDistilBertPreTrainedModel:
    """The model with every variable declared (no forward pass): those in ``fill`` start as zeros for
    :func:`assign` to overwrite, the others get their initializer's values when the stateless scope ends."""
    policy = resolve_dtype_policy(dtype)
    with keras.StatelessScope():
        model = cls(config, name=options["name"], dtype=policy)
        variables = canonical_variables(model)
        for key in fill:
            defer_to_zeros(variables[key][0])
    return model


def assign(
    model: TFDistilBertPreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    *,
    owned: bool,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Copy checked canonical arrays into the variables (transposed, cast); ``owned``: give the memory-mapped file's
    pages back as they are copied."""
    variables = canonical_variables(model)
    for key, array in arrays.items():
        assign_canonical(*variables[key], array, release=owned)


def read(model: TFDistilBertPreTrainedModel) -> dict[str, np.ndarray]:
    """Every canonical key as numpy, PyTorch layout, in the variable dtype."""
    state = {}
    for key, (variable, transposed) in canonical_variables(model).items():
        array = keras.ops.convert_to_numpy(variable.value)
        state[key] = np.ascontiguousarray(array.T if transposed else array)
    return state


def frozen_keys(model: TFDistilBertPreTrainedModel) -> set[str]:
    return {key for key, (variable, _) in canonical_variables(model).items() if not variable.trainable}


@contextlib.contextmanager
def _unlocked(layer: keras.layers.Layer) -> Iterator[None]:
    """Let a built layer take a new sub-layer (Keras locks the state of built layers; it unlocks the same way
    when it untracks a variable)."""
    locked = layer._tracker.locked
    layer._tracker.unlock()
    try:
        yield
    finally:
        if locked:
            layer._tracker.lock()


def set_sublayer(layer: keras.layers.Layer, name: str, value: keras.layers.Layer) -> None:
    """``layer.<name> = value`` on a built layer (the old sub-layer untracked first)."""
    with _unlocked(layer):
        delattr(layer, name)
        setattr(layer, name, value)


def replace_vocabulary(
    model: TFDistilBertPreTrainedModel, config: DistilBertConfig, arrays: Mapping[str, np.ndarray]
) -> None:
    """New word embeddings (and masked-LM projector) of ``config.vocab_size`` rows holding ``arrays``."""
    embeddings = model.base_model.embeddings
    trainable = embeddings.word_embeddings.trainable
    with _unlocked(embeddings):
        del embeddings.word_embeddings  # untracks the old layer and its variable
        embeddings.word_embeddings = word_embeddings(config, embeddings.dtype_policy)
    embeddings.word_embeddings.build()
    embeddings.word_embeddings.trainable = trainable
    if model.head == "masked_lm":
        with _unlocked(model):
            del model.vocab_projector
            model.vocab_projector = VocabProjector(config, name="vocab_projector", dtype=model.dtype_policy)
        model.vocab_projector.build()
    model.config = config
    model.base_model.config = config
    assign(
        model,
        {k: v for k, v in arrays.items() if "word_embeddings" in k or k.startswith("vocab_projector.")},
        owned=False,
    )
