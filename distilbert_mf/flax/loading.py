"""Canonical weights <-> Flax NNX variables, and ``from_pretrained`` / ``save_pretrained`` over ``checkpoint``.

NNX state paths equal the canonical (PyTorch) names, so the whole mapping is one table of leaf renames:

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

import contextlib
import contextvars
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distilbert_mf.checkpoint import transfer
from distilbert_mf.checkpoint.loading import (
    DEFAULT_MAX_SHARD_SIZE,
    LoadReport,
    ShapeMismatchError,
    load_pretrained,
)
from distilbert_mf.checkpoint.loading import save_pretrained as save_checkpoint
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

# NNX leaf name -> (canonical leaf name, transposed)
LEAF_NAMES: dict[str, tuple[str, bool]] = {
    "kernel": ("weight", True),
    "embedding": ("weight", False),
    "scale": ("weight", False),
    "bias": ("bias", False),
}


class PositionTable(nnx.Variable):
    """The fixed sinusoidal position table: not an ``nnx.Param``, so ``nnx.Optimizer(..., wrt=nnx.Param)`` and
    ``nnx.state(model, nnx.Param)`` leave it alone. Saved and loaded like any weight."""


WEIGHT_TYPES = (nnx.Param, PositionTable)
_SHAPES_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("distilbert_mf_flax_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only(enabled: bool = True) -> Iterator[None]:
    """Models built inside get ``jax.ShapeDtypeStruct`` placeholders instead of initialised parameters.

    For loaders that fill every parameter right after: nothing random is drawn and no memory is taken. Cheaper than
    ``nnx.eval_shape``, which traces every initialiser. A model with placeholders left cannot run."""
    token = _SHAPES_ONLY.set(enabled)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def declaring_shapes_only() -> bool:
    """True inside :func:`shapes_only`: parameter initialisers return placeholders."""
    return _SHAPES_ONLY.get()


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


class FlaxDistilBertPreTrainedModel(nnx.Module):
    """What the six Flax models share: canonical state dicts, ``from_pretrained`` and ``save_pretrained``."""

    head: ClassVar[str]
    config: DistilBertConfig

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        config: DistilBertConfig | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: Any = None,
        param_dtype: Any = None,
        rngs: nnx.Rngs | None = None,
        from_pt: bool = False,
        from_tf: bool = False,
        from_flax: bool = False,
        **config_overrides: Any,
    ) -> FlaxDistilBertPreTrainedModel:
        """Load a folder or Hub repo holding any weights format, in eval mode.

        ``dtype`` is the compute dtype (default: ``param_dtype``); ``param_dtype`` the parameter dtype (default
        float32, whatever the checkpoint stores). ``rngs`` seeds dropout and any weights the checkpoint lacks.
        ``from_pt`` / ``from_tf`` / ``from_flax`` are accepted for compatibility and not needed: the format is detected.
        """
        del from_pt, from_tf, from_flax  # every format is read without them
        config, arrays, _ = load_pretrained(
            name_or_path,
            cls.head,
            config=config,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            **config_overrides,
        )
        param_dtype = param_dtype or jnp.float32
        # when the checkpoint fills every weight, declare the parameters by shape only: no random draws to discard
        complete = all(key in arrays for key in expected_shapes(config, cls.head))
        if complete:  # only dropout needs randomness: the caller's stream seeds it, whatever other streams it has
            rngs = nnx.Rngs(params=0, dropout=rngs.dropout() if rngs is not None else 0)
        with shapes_only(complete):
            model = cls(config, rngs=rngs, dtype=dtype, param_dtype=param_dtype)
        model._load_arrays(arrays, strict=False, release=True)  # the mapped file's pages are given back as copied
        model.eval()
        return model

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
    ) -> list[Path]:
        """Write ``config.json`` + ``model.safetensors`` (PyTorch names and layout); returns the written paths."""
        return save_checkpoint(
            directory, self.config, self.canonical_state_dict(), self.head, max_shard_size=max_shard_size
        )

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """Every canonical key of this head (tied projector included), PyTorch layout, in the parameter dtype."""
        state: dict[str, np.ndarray] = {}
        for key, transposed, variable in weight_variables(self):
            array = np.asarray(variable.get_value())
            state[key] = np.ascontiguousarray(array.T) if transposed else array
        if TIED_KEY not in state and self.head == "masked_lm":
            state[TIED_KEY] = state[TIED_SOURCE]
        expected = expected_shapes(self.config, self.head)
        if set(state) != set(expected):  # a broken model definition, not a user error
            raise RuntimeError(f"state/canonical key mismatch: {sorted(set(state) ^ set(expected))}")
        return {key: state[key] for key in expected}

    def load_canonical_state_dict(self, arrays: Mapping[str, Any], *, strict: bool = True) -> LoadReport:
        """Copy canonical arrays (PyTorch names and layout, any dtype) into the variables, checking every shape.

        With ``strict`` (default) a missing or unexpected key raises ``KeyError``; otherwise missing weights keep
        their current values and the returned :class:`LoadReport` lists them. Arrays are cast to each
        variable's dtype and placed with its sharding. With tied embeddings ``vocab_projector.weight`` is only
        shape-checked: the projector reads the word embeddings.
        """
        return self._load_arrays(arrays, strict=strict, release=False)

    def _load_arrays(self, arrays: Mapping[str, Any], *, strict: bool, release: bool) -> LoadReport:
        """:meth:`load_canonical_state_dict`; ``release``: the arrays are the loader's own memory map of a file, whose
        pages may be given back once copied (see :mod:`distilbert_mf.checkpoint.transfer`)."""
        expected = expected_shapes(self.config, self.head)
        for key, array in arrays.items():
            if key in expected and tuple(np.shape(array)) != tuple(expected[key]):
                raise ShapeMismatchError(
                    f"weight {key!r} has shape {tuple(np.shape(array))} but the model expects {tuple(expected[key])}"
                )
        report = LoadReport(source="load_canonical_state_dict")
        report.unexpected = [key for key in arrays if key not in expected]
        for key, transposed, variable in weight_variables(self):
            if key not in arrays:
                report.missing.append(key)
                continue
            old = variable.get_value()  # a jax.Array, or a placeholder declared under shapes_only()
            # a fresh aligned host array that JAX on CPU adopts without another copy
            value = transfer.stored_copy(arrays[key], dtype=old.dtype, transposed=transposed, release=release)
            variable.set_value(jax.device_put(value, getattr(old, "sharding", None)))
        order = {key: i for i, key in enumerate(expected)}
        report.missing.sort(key=order.__getitem__)  # state-dict order, not the graph's alphabetical order
        if strict and (report.missing or report.unexpected):
            raise KeyError(
                f"load_canonical_state_dict(strict=True) into {type(self).__name__}: missing keys {report.missing}, "
                f"unexpected keys {report.unexpected}; pass strict=False to load a subset"
            )
        return report
