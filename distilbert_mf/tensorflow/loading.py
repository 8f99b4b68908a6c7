"""Keras glue for the DistilBERT models: canonical weights, from_pretrained / save_pretrained, fit, SavedModel.

The math lives in :mod:`distilbert_mf.tensorflow.modeling`; this file maps canonical (PyTorch-named, PyTorch-layout)
numpy arrays to Keras variables and back, and connects the models to Keras' ``fit`` and to TensorFlow serving.

Canonical name -> Keras variable is attribute access plus one leaf rename (:data:`KERAS_LEAVES`):
``distilbert.transformer.layer.0.attention.q_lin.weight`` is
``model.distilbert.transformer.layer[0].attention.q_lin.kernel``, transposed.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import keras
import ml_dtypes
import numpy as np

from distilbert_mf import checkpoint, modeling_utils
from distilbert_mf.checkpoint import transfer
from distilbert_mf.checkpoint.loading import DEFAULT_MAX_SHARD_SIZE, LoadReport, ShapeMismatchError
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"distilbert_mf.tensorflow needs Keras 3 (pip install 'keras>=3.5'), found keras {keras.__version__}"
    )

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
NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def most_negative(dtype: str) -> float:
    """The most negative finite value of ``dtype`` (the additive attention mask of padding positions)."""
    return float(ml_dtypes.finfo(NUMPY_DTYPES[keras.backend.standardize_dtype(dtype)]).min)


def is_traced(x: Any) -> bool:
    """True while ``x`` is symbolic: inside ``tf.function`` / XLA, ``jax.jit``, or a Keras symbolic call."""
    if keras.backend.is_keras_tensor(x):
        return True
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return not tf.executing_eagerly()
    if backend == "jax":
        import jax

        return isinstance(x, jax.core.Tracer)
    return False


def concrete_value(x: Any) -> np.ndarray | None:
    """``x`` as numpy when its values are known (eager calls), ``None`` while tracing."""
    if isinstance(x, np.ndarray):
        return x
    if is_traced(x):
        return None
    return keras.ops.convert_to_numpy(x)


def unpack_inputs(call: Callable[..., Any]) -> Callable[..., Any]:
    """Let ``call`` take its inputs as one dict, as Keras' ``fit`` passes them: ``model({"input_ids": ..., ...})``."""

    @functools.wraps(call)
    def wrapper(self: Any, input_ids: Any = None, *args: Any, **kwargs: Any) -> Any:
        if not isinstance(input_ids, Mapping):
            return call(self, input_ids, *args, **kwargs)
        if args:
            raise TypeError("with a dict of inputs, pass the other arguments by keyword")
        features = dict(input_ids)
        both = sorted(k for k in features if kwargs.get(k) is not None)
        if both:
            raise TypeError(f"{both} given both in the input dict and as keyword arguments; pass each only once")
        kwargs = {k: v for k, v in kwargs.items() if k not in features}
        return call(self, **features, **kwargs)

    return wrapper


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


def checkpoint_dtype(arrays: Mapping[str, np.ndarray]) -> str | None:
    """The float dtype of a checkpoint's arrays (``dtype='auto'``)."""
    return next((a.dtype.name for a in arrays.values() if a.dtype in NUMPY_DTYPES.values()), None)


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


class TFDistilBertPreTrainedModel(keras.Model):
    """Base of the six Keras models: config, canonical weights, loading, saving, training and serving.

    ``Cls(config, name=None, dtype=None)`` builds a randomly initialised model whose variables exist right away;
    ``dtype`` is a Keras dtype policy ('float32', 'bfloat16', 'mixed_bfloat16', ...; default: the global policy).
    """

    head: ClassVar[str] = "base"
    input_ndim: ClassVar[int] = 2  # (batch, seq); multiple choice: (batch, num_choices, seq)

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        if not isinstance(config, DistilBertConfig):
            raise TypeError(f"{type(self).__name__} needs a DistilBertConfig, got {type(config).__name__}")
        super().__init__(**kwargs)
        self.config = config
        # inputs are converted in call(): keep integer ids and float labels untouched by Keras' autocast
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

    # ------------------------------------------------------------------------------------------- building
    def build(self, input_shape: Any = None) -> None:
        """Create every variable from the config alone, without running the model (each constructor calls this).

        The layers a head adds on top of the encoder all read ``dim``-wide vectors."""
        for layer in self.layers:
            if not layer.built:
                layer.build((None, self.config.dim))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "config": self.config.to_dict(full=True)}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> TFDistilBertPreTrainedModel:
        config = dict(config)
        model_config = DistilBertConfig.from_dict(config.pop("config"))
        if isinstance(config.get("dtype"), dict):
            config["dtype"] = keras.dtype_policies.deserialize(config["dtype"])
        return cls(model_config, **config)

    # ------------------------------------------------------------------------------------- canonical weights
    def canonical_variables(self) -> dict[str, tuple[Any, bool]]:
        """Canonical key -> (Keras variable, stored transposed), for every key of ``expected_shapes``."""
        out: dict[str, tuple[Any, bool]] = {}
        tied = self.head == "masked_lm" and self.config.tie_word_embeddings
        for key in checkpoint.expected_shapes(self.config, self.head):
            *parts, leaf = (TIED_SOURCE if tied and key == TIED_KEY else key).split(".")
            layer: Any = self
            for part in parts:
                layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
            attribute, transposed = KERAS_LEAVES[(type(layer).__name__, leaf)]
            out[key] = (getattr(layer, attribute), transposed)
        return out

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """Every canonical key (tied projector included) as numpy, PyTorch layout, in the variable dtype."""
        state = {}
        for key, (variable, transposed) in self.canonical_variables().items():
            array = keras.ops.convert_to_numpy(variable.value)
            state[key] = np.ascontiguousarray(array.T if transposed else array)
        return state

    def load_canonical_state_dict(self, arrays: Mapping[str, np.ndarray], *, strict: bool = True) -> LoadReport:
        """Copy canonical arrays into the variables (transposed, cast to the variable dtype).

        Every shape is checked (``ShapeMismatchError``). With ``strict`` (default) a missing or unexpected key raises
        ``KeyError``; with ``strict=False`` missing variables keep their values. Returns the missing/unexpected keys.
        """
        checked, report = self._check_canonical(arrays, strict=strict)
        variables = self.canonical_variables()
        for key, array in checked.items():
            assign_canonical(*variables[key], array)
        return report

    def _check_canonical(
        self, arrays: Mapping[str, np.ndarray], *, strict: bool
    ) -> tuple[dict[str, np.ndarray], LoadReport]:
        """The arrays that fill a variable, each checked for shape and dtype before any variable changes."""
        variables = self.canonical_variables()
        tied = self.head == "masked_lm" and self.config.tie_word_embeddings
        arrays = dict(arrays)
        if tied and TIED_KEY in arrays:  # one variable: the word embeddings win, the projector key is accepted
            projector = arrays.pop(TIED_KEY)
            arrays.setdefault(TIED_SOURCE, projector)
        report = LoadReport(source=type(self).__name__)
        report.missing = [k for k in variables if k not in arrays and not (tied and k == TIED_KEY)]
        report.unexpected = [k for k in arrays if k not in variables]
        if strict and (report.missing or report.unexpected):
            raise KeyError(
                f"load_canonical_state_dict into {type(self).__name__}: missing keys {report.missing}, unexpected "
                f"keys {report.unexpected} (pass strict=False to load a subset)"
            )
        expected = checkpoint.expected_shapes(self.config, self.head)
        checked = {}
        for key, array in arrays.items():
            if key not in variables:
                continue
            array = np.asarray(array)
            if tuple(array.shape) != tuple(expected[key]):
                raise ShapeMismatchError(
                    f"weight {key!r} has shape {tuple(array.shape)} but {type(self).__name__} expects "
                    f"{tuple(expected[key])}"
                )
            if array.dtype.kind != "f" and array.dtype != NUMPY_DTYPES["bfloat16"]:
                raise TypeError(f"weight {key!r} has dtype {array.dtype}; expected floats (float16/32/64 or bfloat16)")
            checked[key] = array
        return checked, report

    # ------------------------------------------------------------------------------------ loading and saving
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
        name: str | None = None,
        from_pt: bool = False,
        from_tf: bool = False,
        from_flax: bool = False,
        **config_overrides: Any,
    ) -> TFDistilBertPreTrainedModel:
        """Load any DistilBERT checkpoint (safetensors, pytorch_model.bin, tf_model.h5, flax_model.msgpack; sharded
        or not; base or head) from a folder or the Hub, by weight name. ``dtype``: see :func:`resolve_dtype_policy`;
        'auto' takes the checkpoint's float dtype.
        ``from_pt`` / ``from_tf`` / ``from_flax`` are accepted for compatibility: every format loads without them.
        ``name`` is the Keras model name."""
        del from_pt, from_tf, from_flax  # every format loads; kept for transformers compatibility
        auto = isinstance(dtype, str) and dtype == "auto"
        policy = None if auto else resolve_dtype_policy(dtype)  # fail on a bad dtype before reading any file
        config, arrays, _report = checkpoint.load_pretrained(
            name_or_path,
            cls.head,
            config=config,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            **config_overrides,
        )
        policy = resolve_dtype_policy(checkpoint_dtype(arrays)) if auto else policy
        # Declare the variables without values (no random draws, no forward pass): leaving the scope gives each one
        # its initializer's value, zeros for the weights the checkpoint has, which are then copied in block by block.
        with keras.StatelessScope():
            model = cls(config, name=name, dtype=policy)
            checked, _ = model._check_canonical(arrays, strict=False)
            variables = model.canonical_variables()
            for key in checked:
                defer_to_zeros(variables[key][0])
        del arrays  # the mapped file's pages are given back as they are copied
        for key in list(checked):
            assign_canonical(*variables[key], checked.pop(key), release=True)
        return model

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
    ) -> list[Path]:
        """Write ``config.json`` + ``model.safetensors`` (PyTorch key names, sharded past ``max_shard_size``)."""
        return checkpoint.save_pretrained(
            directory, self.config, self.canonical_state_dict(), self.head, max_shard_size=max_shard_size
        )

    # ------------------------------------------------------------------------------------------- training
    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """``fit`` / ``evaluate``: the model's own loss when the inputs carry labels (or ``y`` is given and no loss
        was compiled); otherwise the compiled loss on the logits."""
        own = y_pred.get("loss") if isinstance(y_pred, Mapping) else None
        if own is None and y is not None and self._compile_loss is None and self.head != "base":
            own = self.head_loss(y_pred, _targets(self.head, y))
        if own is None:
            return super().compute_loss(x, y, keras_prediction(y_pred), sample_weight, training)
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with the model's own loss; compile a Keras loss instead")
        return own

    def compute_metrics(self, x: Any, y: Any, y_pred: Any, sample_weight: Any = None) -> dict[str, Any]:
        return super().compute_metrics(x, y, keras_prediction(y_pred), sample_weight)

    def predict_step(self, *args: Any) -> Any:
        """``predict`` returns a plain dict of numpy arrays ({"logits": ...}), concatenated over batches."""
        result = super().predict_step(*args)
        if keras.backend.backend() == "jax":  # (outputs, non-trainable variables)
            outputs, state = result
            return _per_example(outputs), state
        return _per_example(result)

    def head_loss(self, outputs: Mapping[str, Any], targets: Any) -> Any:
        """The head's loss on its ``outputs`` (labels, or (start_positions, end_positions) for QA)."""
        raise ValueError(f"{type(self).__name__} has no loss of its own; compile a Keras loss or use a head")

    # ------------------------------------------------------------------------------------------- serving
    def serving_signature(self) -> list[Any]:
        """``input_ids`` and ``attention_mask``: int32 tensors of shape [None, None] ([None] * 3 for multiple choice)."""
        import tensorflow as tf

        shape = [None] * self.input_ndim
        return [tf.TensorSpec(shape, tf.int32, name="input_ids"), tf.TensorSpec(shape, tf.int32, name="attention_mask")]

    def serve(self, input_ids: Any, attention_mask: Any) -> dict[str, Any]:
        """The serving computation: the head's outputs (``logits``, ``start_logits``/``end_logits`` or
        ``last_hidden_state``) as a dict, dropout off."""
        outputs = self(input_ids=input_ids, attention_mask=attention_mask, training=False)
        return {key: value for key, value in outputs.items() if key not in ("hidden_states", "attentions")}

    @property
    def _default_save_signature(self) -> Any:
        # what ``tf.saved_model.save(model, path)`` exports as "serving_default" (Keras' default would feed one
        # float tensor of unknown shape, which a token model cannot take)
        if keras.backend.backend() != "tensorflow":
            return None
        import tensorflow as tf

        return tf.function(self.serve, input_signature=self.serving_signature())

    def export_saved_model(self, directory: str | os.PathLike[str]) -> Path:
        """Export a TensorFlow SavedModel whose ``serve`` endpoint (also ``serving_default``) maps ``input_ids``
        and ``attention_mask`` (int32, [None, None]) to a dict of the head's outputs. Reload it with
        ``tf.saved_model.load`` (no distilbert_mf needed)."""
        if keras.backend.backend() != "tensorflow":
            raise ValueError(
                f"export_saved_model needs the TensorFlow Keras backend, got KERAS_BACKEND={keras.backend.backend()!r}"
            )
        archive = keras.export.ExportArchive()
        archive.track(self)
        archive.add_endpoint("serve", self.serve, input_signature=self.serving_signature())
        directory = Path(directory)
        archive.write_out(str(directory), verbose=False)
        return directory


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
    pages are given back after each block, see :mod:`distilbert_mf.checkpoint.transfer`); other Keras backends
    take one whole array."""
    dtype = NUMPY_DTYPES[keras.backend.standardize_dtype(variable.dtype)]
    if keras.backend.backend() != "tensorflow":
        variable.assign(transfer.stored_copy(array, dtype=dtype, transposed=transposed, release=release))
        return
    import tensorflow as tf

    handle, stored = variable.value.handle, transfer.stored_shape(array.shape, transposed)
    for rows, block in transfer.blocks(array, dtype=dtype, transposed=transposed, release=release):
        # written in place: ``variable[rows].assign`` would first read (and so copy) the whole variable
        begin, end = [0] * len(stored), list(stored)
        axis = len(stored) - 1 if transposed else 0
        begin[axis], end[axis] = rows.start, rows.stop
        tf.raw_ops.ResourceStridedSliceAssign(ref=handle, begin=begin, end=end, strides=[1] * len(stored), value=block)


def _per_example(outputs: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in outputs.items() if key != "loss"}  # the loss is per batch, not per row


def keras_prediction(y_pred: Any) -> Any:
    """What a compiled Keras loss or metric sees: the logits (QA: the pair of start and end logits)."""
    if not isinstance(y_pred, Mapping):
        return y_pred
    if "logits" in y_pred:
        return y_pred["logits"]
    if "start_logits" in y_pred:
        return (y_pred["start_logits"], y_pred["end_logits"])
    return y_pred["last_hidden_state"]


def _targets(head: str, y: Any) -> Any:
    """``fit``'s ``y`` as the head's targets: QA takes {start_positions, end_positions} or a pair."""
    if head != "question_answering":
        return y
    if isinstance(y, Mapping):
        return y["start_positions"], y["end_positions"]
    start, end = y
    return start, end


def export_saved_model(model: TFDistilBertPreTrainedModel, directory: str | os.PathLike[str]) -> Path:
    """Function form of :meth:`TFDistilBertPreTrainedModel.export_saved_model`."""
    return model.export_saved_model(directory)
