"""DistilBERT in Keras 3 (Sanh et al., 2019, "DistilBERT, a distilled version of BERT", arXiv:1910.01108).

A 6-layer post-LayerNorm BERT encoder without token-type embeddings or pooler, with the numerics of PyTorch
transformers' ``DistilBertModel`` (DESIGN.md §3): LayerNorm eps 1e-12, exact erf GELU, padding positions get the
most negative finite value of the compute dtype added to the scores, softmax and LayerNorm in float32.

Written with ``keras.ops`` only, so the same classes run under ``KERAS_BACKEND=tensorflow`` (the default), ``jax``
or ``torch``. Layer names equal checkpoint names, so variable paths read like the PyTorch keys
(``.../transformer/layer_0/attention/q_lin/kernel`` <-> ``transformer.layer.0.attention.q_lin.weight``). Loading and
saving live in :mod:`distilbert_mf.tensorflow.loading` over the neutral :mod:`distilbert_mf.checkpoint.pretrained`;
input and label rules in :mod:`distilbert_mf.modeling_utils`. The base class at the end connects the models to
Keras' ``fit`` / ``evaluate`` / ``predict`` and to TensorFlow serving.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import keras
import ml_dtypes
import numpy as np
from keras import layers, ops

from distilbert_mf import modeling_utils as mu
from distilbert_mf.checkpoint.names import sinusoidal_table
from distilbert_mf.checkpoint.pretrained import PreTrainedModel
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.modeling_utils import IGNORE_INDEX, LAYER_NORM_EPS
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from distilbert_mf.tensorflow.distributed import replica_loss

if int(keras.__version__.split(".")[0]) < 3:
    raise ImportError(
        f"distilbert_mf.tensorflow needs Keras 3 (pip install 'keras>=3.5'), found keras {keras.__version__}"
    )

ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),  # exact erf form
    "relu": ops.relu,
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
}
NUMPY_DTYPES = {
    "float32": np.dtype(np.float32),
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
}


def dense(units: int, config: DistilBertConfig, name: str, dtype: Any) -> layers.Dense:
    """A linear layer initialised like transformers: kernel ~ N(0, initializer_range), bias 0."""
    init = keras.initializers.RandomNormal(stddev=config.initializer_range)
    return layers.Dense(units, kernel_initializer=init, name=name, dtype=dtype)


class PaddingRowZero(keras.initializers.RandomNormal):
    """N(0, stddev) with the padding token's row set to zero, as transformers initialises word embeddings."""

    def __init__(self, stddev: float, pad_token_id: int | None, seed: Any = None) -> None:
        super().__init__(stddev=stddev, seed=seed)
        self.pad_token_id = pad_token_id

    def __call__(self, shape: tuple[int, ...], dtype: Any = None) -> Any:
        values = super().__call__(shape, dtype=dtype)  # (vocab, dim)
        if self.pad_token_id is None:
            return values
        is_pad = ops.arange(shape[0])[:, None] == self.pad_token_id  # (vocab, 1)
        return ops.where(is_pad, ops.zeros_like(values), values)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "pad_token_id": self.pad_token_id}


def word_embeddings(config: DistilBertConfig, dtype: Any) -> layers.Embedding:
    return layers.Embedding(
        config.vocab_size,
        config.dim,
        name="word_embeddings",
        dtype=dtype,
        embeddings_initializer=PaddingRowZero(config.initializer_range, config.pad_token_id),
    )


class LayerNorm(layers.Layer):
    """LayerNorm over the last axis computed in float32 (also under mixed precision); eps 1e-12."""

    def __init__(self, dim: int, eps: float = LAYER_NORM_EPS, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.eps = dim, eps

    def build(self, input_shape: Any = None) -> None:
        # autocast=False: read in the variable dtype (float32 under mixed_bfloat16), never rounded to bf16
        self.gamma = self.add_weight(shape=(self.dim,), initializer="ones", name="gamma", autocast=False)
        self.beta = self.add_weight(shape=(self.dim,), initializer="zeros", name="beta", autocast=False)

    def call(self, x: Any) -> Any:
        x = ops.cast(x, "float32")  # (batch, seq, dim)
        mean = ops.mean(x, axis=-1, keepdims=True)  # (batch, seq, 1)
        var = ops.mean(ops.square(x - mean), axis=-1, keepdims=True)  # (batch, seq, 1)
        y = (x - mean) * ops.rsqrt(var + self.eps) * ops.cast(self.gamma, "float32") + ops.cast(self.beta, "float32")
        return ops.cast(y, self.compute_dtype)  # (batch, seq, dim)


# ----------------------------------------------------------------------------------------------------- the encoder


class Embeddings(layers.Layer):
    """Word + position embeddings, LayerNorm, dropout (no token-type embeddings)."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = word_embeddings(config, dtype)
        if config.sinusoidal_pos_embds:  # a fixed, non-trainable sin/cos table
            position_init = keras.initializers.Constant(sinusoidal_table(config.max_position_embeddings, config.dim))
        else:
            position_init = keras.initializers.RandomNormal(stddev=config.initializer_range)
        self.position_embeddings = layers.Embedding(
            config.max_position_embeddings,
            config.dim,
            embeddings_initializer=position_init,
            trainable=not config.sinusoidal_pos_embds,
            name="position_embeddings",
            dtype=dtype,
        )
        self.LayerNorm = LayerNorm(config.dim, name="LayerNorm", dtype=dtype)
        self.dropout = layers.Dropout(config.dropout, dtype=dtype)

    def build(self, input_shape: Any = None) -> None:
        self.word_embeddings.build()
        self.position_embeddings.build()
        self.LayerNorm.build()

    def call(self, input_ids: Any = None, position_ids: Any = None, inputs_embeds: Any = None, training: Any = None):
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (batch, seq, dim)
            if self.pad_token_id is not None:  # as PyTorch's padding_idx: the padding row receives no gradient
                is_pad = ops.expand_dims(ops.equal(input_ids, self.pad_token_id), -1)  # (batch, seq, 1)
                inputs_embeds = ops.where(is_pad, ops.stop_gradient(inputs_embeds), inputs_embeds)
        if position_ids is None:
            position_ids = ops.arange(ops.shape(inputs_embeds)[1])[None, :]  # (1, seq)
        x = ops.cast(inputs_embeds, self.compute_dtype) + self.position_embeddings(position_ids)  # (batch, seq, dim)
        return self.dropout(self.LayerNorm(x), training=training)  # (batch, seq, dim)


class MultiHeadSelfAttention(layers.Layer):
    """Scaled dot-product self-attention over ``n_heads`` heads; returns the output and the probabilities."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.dim, self.n_heads, self.head_dim = config.dim, config.n_heads, config.head_dim
        self.scale = config.head_dim**-0.5
        self.q_lin = dense(config.dim, config, "q_lin", dtype)
        self.k_lin = dense(config.dim, config, "k_lin", dtype)
        self.v_lin = dense(config.dim, config, "v_lin", dtype)
        self.out_lin = dense(config.dim, config, "out_lin", dtype)
        self.dropout = layers.Dropout(config.attention_dropout, dtype=dtype)

    def build(self, input_shape: Any = None) -> None:
        for linear in (self.q_lin, self.k_lin, self.v_lin, self.out_lin):
            linear.build((None, self.dim))

    def split_heads(self, x: Any) -> Any:
        x = ops.reshape(x, (*ops.shape(x)[:2], self.n_heads, self.head_dim))  # (batch, seq, heads, head_dim)
        return ops.transpose(x, (0, 2, 1, 3))  # (batch, heads, seq, head_dim)

    def merge_heads(self, x: Any) -> Any:
        x = ops.transpose(x, (0, 2, 1, 3))  # (batch, seq, heads, head_dim)
        return ops.reshape(x, (*ops.shape(x)[:2], self.n_heads * self.head_dim))  # (batch, seq, dim)

    def call(self, x: Any, mask_bias: Any, training: Any = None) -> tuple[Any, Any]:
        """x (batch, seq, dim), mask_bias (batch, 1, 1, seq) or None -> (batch, seq, dim), probs (b, h, q, k)."""
        q, k, v = self.split_heads(self.q_lin(x)), self.split_heads(self.k_lin(x)), self.split_heads(self.v_lin(x))
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * self.scale  # (batch, heads, q_len, k_len)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), self.compute_dtype)  # (b, h, q, k)
        context = ops.matmul(self.dropout(probs, training=training), v)  # (batch, heads, q_len, head_dim)
        return self.out_lin(self.merge_heads(context)), probs  # (batch, seq, dim), (batch, heads, q, k)


class FFN(layers.Layer):
    """Position-wise feed-forward: lin1 -> activation -> lin2 -> dropout."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.dim, self.hidden_dim = config.dim, config.hidden_dim
        self.lin1 = dense(config.hidden_dim, config, "lin1", self.dtype_policy)
        self.lin2 = dense(config.dim, config, "lin2", self.dtype_policy)
        self.activation = ACTIVATIONS[config.activation]
        self.dropout = layers.Dropout(config.dropout, dtype=self.dtype_policy)

    def build(self, input_shape: Any = None) -> None:
        self.lin1.build((None, self.dim))
        self.lin2.build((None, self.hidden_dim))

    def call(self, x: Any, training: Any = None) -> Any:
        return self.dropout(self.lin2(self.activation(self.lin1(x))), training=training)  # (batch, seq, dim)


class TransformerBlock(layers.Layer):
    """Post-LayerNorm block: h = sa_layer_norm(attn(x) + x); out = output_layer_norm(ffn(h) + h)."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.attention = MultiHeadSelfAttention(config, name="attention", dtype=dtype)
        self.sa_layer_norm = LayerNorm(config.dim, name="sa_layer_norm", dtype=dtype)
        self.ffn = FFN(config, name="ffn", dtype=dtype)
        self.output_layer_norm = LayerNorm(config.dim, name="output_layer_norm", dtype=dtype)

    def build(self, input_shape: Any = None) -> None:
        for layer in (self.attention, self.sa_layer_norm, self.ffn, self.output_layer_norm):
            layer.build(input_shape)

    def call(self, x: Any, mask_bias: Any, training: Any = None) -> tuple[Any, Any]:
        attn, probs = self.attention(x, mask_bias, training=training)
        h = self.sa_layer_norm(attn + x)  # (batch, seq, dim)
        out = self.output_layer_norm(self.ffn(h, training=training) + h)  # (batch, seq, dim)
        return out, probs


class Transformer(layers.Layer):
    """``n_layers`` blocks; collects every hidden state (embeddings first) and attention map on request."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.layer = [
            TransformerBlock(config, name=f"layer_{i}", dtype=self.dtype_policy) for i in range(config.n_layers)
        ]

    def build(self, input_shape: Any = None) -> None:
        for block in self.layer:
            block.build(input_shape)

    def call(self, x, mask_bias, output_attentions=False, output_hidden_states=False, training=None):
        """x (batch, seq, dim) -> last hidden state, n_layers + 1 hidden states, n_layers attention maps."""
        hidden_states, attentions = [x], []
        for block in self.layer:
            x, probs = block(x, mask_bias, training=training)  # (batch, seq, dim), (batch, heads, q, k)
            hidden_states.append(x)
            attentions.append(probs)
        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


# ----------------------------------------------------------------------------------------------------- inputs


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


class KerasOps(mu.ConcreteValueOps):
    """:class:`distilbert_mf.modeling_utils.TensorOps` for Keras tensors (values are read only in eager calls)."""

    @staticmethod
    def shape(x: Any) -> tuple[Any, ...]:
        return tuple(x.shape)

    @staticmethod
    def is_integer(x: Any) -> bool:
        return "int" in keras.backend.standardize_dtype(x.dtype)

    concrete = staticmethod(concrete_value)


OPS = KerasOps()


def padding_bias(attention_mask: Any, dtype: str) -> Any:
    """(batch, seq) mask, nonzero = attend -> additive (batch, 1, 1, seq): 0 or the most negative finite value of
    ``dtype``; ``None`` without a mask."""
    if attention_mask is None:
        return None
    keep = ops.not_equal(attention_mask, 0)[:, None, None, :]  # (batch, 1, 1, k_len)
    most_negative = float(ml_dtypes.finfo(NUMPY_DTYPES[keras.backend.standardize_dtype(dtype)]).min)
    return ops.where(keep, ops.zeros((), dtype), ops.full((), most_negative, dtype))


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


# ----------------------------------------------------------------------------------------------------- base class


class TFDistilBertPreTrainedModel(keras.Model, PreTrainedModel):
    """Base of the six Keras models: config, building, inputs, ``fit`` / serving glue, and (from
    :class:`~distilbert_mf.checkpoint.pretrained.PreTrainedModel`) loading and saving.

    ``Cls(config, name=None, dtype=None)`` builds a randomly initialised model whose variables exist right away;
    ``dtype`` is a Keras dtype policy ('float32', 'bfloat16', 'mixed_bfloat16', ...; default: the global policy).
    """

    framework: ClassVar[str] = "tf"
    weights_io: ClassVar[str] = "distilbert_mf.tensorflow.loading"
    load_options: ClassVar[dict[str, Any]] = {"name": None}
    input_ndim: ClassVar[int] = 2  # (batch, seq); multiple choice: (batch, num_choices, seq)

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        if not isinstance(config, DistilBertConfig):
            raise TypeError(f"{type(self).__name__} needs a DistilBertConfig, got {type(config).__name__}")
        super().__init__(**kwargs)
        self.config = config
        # inputs are converted in call(): keep integer ids and float labels untouched by Keras' autocast
        self._convert_input_args = False
        self._allow_non_tensor_positional_args = True

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

    def canonical_variables(self) -> dict[str, tuple[Any, bool]]:
        """Canonical key -> (Keras variable, stored transposed), for every key of ``expected_shapes``."""
        from distilbert_mf.tensorflow.loading import canonical_variables

        return canonical_variables(self)

    def prepare_inputs(
        self,
        input_ids: Any,
        attention_mask: Any,
        position_ids: Any,
        inputs_embeds: Any,
        token_type_ids: Any = None,
        head_mask: Any = None,
        *,
        num_choices: bool = False,
    ) -> tuple[Any, Any, Any, Any]:
        """The call's inputs as tensors, checked by :func:`modeling_utils.check_model_inputs` (value checks only in
        eager calls; inside ``tf.function`` / XLA / ``jax.jit`` traces the shape checks alone run)."""
        input_ids, attention_mask, position_ids, inputs_embeds = (
            None if x is None else ops.convert_to_tensor(x)
            for x in (input_ids, attention_mask, position_ids, inputs_embeds)
        )
        mu.check_model_inputs(
            self.config,
            OPS,
            input_ids=input_ids,
            attention_mask=attention_mask,
            position_ids=position_ids,
            inputs_embeds=inputs_embeds,
            token_type_ids=token_type_ids,
            head_mask=head_mask,
            num_choices=num_choices,
        )
        return input_ids, attention_mask, position_ids, inputs_embeds

    # -- fit / evaluate / predict -------------------------------------------------------------------------------

    def compute_loss(
        self, x: Any = None, y: Any = None, y_pred: Any = None, sample_weight: Any = None, training: bool = True
    ) -> Any:
        """``fit`` / ``evaluate``: the model's own loss when the inputs carry labels (or ``y`` is given and no loss
        was compiled); otherwise the compiled loss on the logits.

        Under ``tf.distribute`` the own loss of each replica is weighted by its share of the global batch's targets
        (:func:`distilbert_mf.tensorflow.distributed.replica_loss`), as Keras' compiled losses are scaled for the
        replicas: the summed gradients are then those of the global batch's mean loss."""
        own = y_pred.get("loss") if isinstance(y_pred, Mapping) else None
        if own is None and y is not None and self._compile_loss is None and self.head != "base":
            own = self.head_loss(y_pred, _targets(self.head, y))
        if own is None:
            return super().compute_loss(x, y, keras_prediction(y_pred), sample_weight, training)
        if sample_weight is not None:
            raise ValueError("sample_weight is not supported with the model's own loss; compile a Keras loss instead")
        labels = y if y is not None else (x.get("labels") if isinstance(x, Mapping) else None)
        first = y_pred.get("logits", y_pred.get("start_logits"))
        return replica_loss(own, labels, ops.shape(first)[0])

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

    # -- serving --------------------------------------------------------------------------------------------------

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

    def export_saved_model(self, directory: str | Path) -> Path:
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


# ----------------------------------------------------------------------------------------------------- the model


class TFDistilBertModel(TFDistilBertPreTrainedModel):
    """The bare encoder: ``last_hidden_state`` (batch, seq, dim)."""

    head = "base"

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.embeddings = Embeddings(config, name="embeddings", dtype=self.dtype_policy)
        self.transformer = Transformer(config, name="transformer", dtype=self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        training: Any = None,
        token_type_ids: Any = None,
        head_mask: Any = None,
    ) -> BaseModelOutput:
        """``input_ids`` (batch, seq) or ``inputs_embeds`` (batch, seq, dim); ``attention_mask`` 1 = token, 0 = pad."""
        input_ids, attention_mask, position_ids, inputs_embeds = self.prepare_inputs(
            input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids, head_mask
        )
        output_attentions = mu.resolve_flag(output_attentions, self.config.output_attentions)
        output_hidden_states = mu.resolve_flag(output_hidden_states, self.config.output_hidden_states)
        x = self.embeddings(input_ids, position_ids, inputs_embeds, training=training)  # (batch, seq, dim)
        mask_bias = padding_bias(attention_mask, self.compute_dtype)  # (batch, 1, 1, seq) or None
        out = self.transformer(
            x,
            mask_bias,
            output_attentions=output_attentions,
            output_hidden_states=output_hidden_states,
            training=training,
        )
        return self._output(out, return_dict)


# ----------------------------------------------------------------------------------------------------- losses


def cross_entropy(logits: Any, labels: Any, ignore_index: Any = IGNORE_INDEX) -> Any:
    """Mean cross-entropy over the labels != ``ignore_index`` (PyTorch's ``CrossEntropyLoss``). logits (n, c).

    A batch whose labels are all ignored gives 0.0 (and zero gradients), not PyTorch's NaN."""
    logits, labels = ops.cast(logits, "float32"), ops.cast(labels, "int32")
    valid = ops.not_equal(labels, ignore_index)  # (n,)
    safe = ops.where(valid, labels, ops.zeros_like(labels))  # (n,)
    log_probs = ops.log_softmax(logits, axis=-1)  # (n, c)
    nll = -ops.take_along_axis(log_probs, safe[:, None], axis=-1)[:, 0]  # (n,)
    return ops.sum(ops.where(valid, nll, ops.zeros_like(nll))) / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)


def class_loss(logits: Any, labels: Any, num_classes: int) -> Any:
    """Cross-entropy of class-id ``labels`` (checked: one per prediction, in range or -100) against ``logits``
    (..., num_classes)."""
    labels = ops.convert_to_tensor(labels)
    mu.check_class_labels(OPS, labels, num_classes, tuple(logits.shape[:-1]))
    return cross_entropy(ops.reshape(logits, (-1, num_classes)), ops.reshape(labels, (-1,)))


def binary_cross_entropy_with_logits(logits: Any, labels: Any) -> Any:
    """Mean over every element of the numerically stable sigmoid cross-entropy (``BCEWithLogitsLoss``)."""
    x, y = ops.cast(logits, "float32"), ops.cast(labels, "float32")
    return ops.mean(ops.maximum(x, 0.0) - x * y + ops.log1p(ops.exp(-ops.abs(x))))


def mean_squared_error(predictions: Any, targets: Any) -> Any:
    return ops.mean(ops.square(ops.cast(predictions, "float32") - ops.cast(targets, "float32")))


def sequence_classification_loss(config: DistilBertConfig, logits: Any, labels: Any) -> Any:
    """Regression / single-label / multi-label, the problem type decided per call from ``labels``' dtype."""
    labels = ops.convert_to_tensor(labels)
    problem_type = mu.problem_type_for(config, OPS.is_integer(labels))
    if problem_type == "single_label_classification":
        return class_loss(logits, labels, config.num_labels)
    problem = "regression" if problem_type == "regression" else "multi-label classification"
    mu.check_same_size(OPS, labels, tuple(logits.shape), problem)
    labels = ops.reshape(labels, ops.shape(logits))
    if problem_type == "regression":
        return mean_squared_error(logits, labels)
    return binary_cross_entropy_with_logits(logits, labels)


def question_answering_loss(start_logits: Any, end_logits: Any, start_positions: Any, end_positions: Any) -> Any:
    """Mean of the start and end cross-entropies; positions clamped to [0, seq], and == seq ignored."""
    seq = ops.shape(start_logits)[1]

    def position_loss(logits: Any, positions: Any, name: str) -> Any:
        positions = ops.convert_to_tensor(positions)
        mu.check_positions(OPS, positions, name)
        return cross_entropy(logits, ops.clip(ops.cast(ops.reshape(positions, (-1,)), "int32"), 0, seq), seq)

    start_loss = position_loss(start_logits, start_positions, "start_positions")
    return (start_loss + position_loss(end_logits, end_positions, "end_positions")) / 2


# ----------------------------------------------------------------------------------------------------- heads


class _HeadModel(TFDistilBertPreTrainedModel):
    """A head over ``self.distilbert`` (checkpoint prefix ``distilbert.``): builds the encoder, then the head's own
    layers in ``build_head``, then every variable.

    A head's ``call(input_ids, attention_mask, labels, training, **inputs)`` passes ``inputs`` (``position_ids``,
    ``inputs_embeds``, ``output_attentions``, ``output_hidden_states``) on to :class:`TFDistilBertModel`, whose
    explicit signature rejects unknown names.
    """

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        with keras.name_scope(self.name):  # variable paths: <head>/distilbert/...
            self.distilbert = TFDistilBertModel(config, name="distilbert", dtype=self.dtype_policy)
        self.build_head(config, self.dtype_policy)
        self.build()

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define build_head")


class VocabProjector(layers.Layer):
    """Hidden states -> vocabulary logits; the weight is the word embedding matrix when tied."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.vocab_size, self.dim, self.tied = config.vocab_size, config.dim, config.tie_word_embeddings
        self.initializer_range = config.initializer_range

    def build(self, input_shape: Any = None) -> None:
        if not self.tied:  # stored like a Dense kernel: (dim, vocab) = weight.T
            init = keras.initializers.RandomNormal(stddev=self.initializer_range)
            self.kernel = self.add_weight(shape=(self.dim, self.vocab_size), initializer=init, name="kernel")
        self.bias = self.add_weight(shape=(self.vocab_size,), initializer="zeros", name="bias")

    def call(self, x: Any, word_embeddings: Any = None) -> Any:
        kernel = ops.transpose(ops.cast(word_embeddings, self.compute_dtype)) if self.tied else self.kernel
        return ops.matmul(x, kernel) + self.bias  # (batch, seq, vocab)


class TFDistilBertForMaskedLM(_HeadModel):
    """Masked language modelling: ``logits`` (batch, seq, vocab); ``labels`` (batch, seq), -100 ignored."""

    head = "masked_lm"

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        self.vocab_transform = dense(config.dim, config, "vocab_transform", dtype)
        self.activation = ACTIVATIONS[config.activation]
        self.vocab_layer_norm = LayerNorm(config.dim, name="vocab_layer_norm", dtype=dtype)
        self.vocab_projector = VocabProjector(config, name="vocab_projector", dtype=dtype)

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        labels: Any = None,
        training: Any = None,
        return_dict: bool | None = None,
        **inputs: Any,
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        h = self.vocab_layer_norm(self.activation(self.vocab_transform(out.last_hidden_state)))  # (batch, seq, dim)
        tied = self.distilbert.embeddings.word_embeddings.embeddings if self.config.tie_word_embeddings else None
        logits = self.vocab_projector(h, word_embeddings=tied)  # (batch, seq, vocab)
        out = MaskedLMOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self._output(
            out if labels is None else MaskedLMOutput(loss=self.head_loss(out, labels), **out), return_dict
        )

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch, seq): token ids, -100 for positions without a label."""
        return class_loss(outputs["logits"], labels, self.config.vocab_size)


class TFDistilBertForSequenceClassification(_HeadModel):
    """Sentence classification or regression on the first token: ``logits`` (batch, num_labels)."""

    head = "sequence_classification"

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        self.pre_classifier = dense(config.dim, config, "pre_classifier", dtype)
        self.dropout = layers.Dropout(config.seq_classif_dropout, dtype=dtype)
        self.classifier = dense(config.num_labels, config, "classifier", dtype)

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        labels: Any = None,
        training: Any = None,
        return_dict: bool | None = None,
        **inputs: Any,
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        pooled = ops.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch, dim)
        logits = self.classifier(self.dropout(pooled, training=training))  # (batch, num_labels)
        out = SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        loss = None if labels is None else self.head_loss(out, labels)
        return self._output(SequenceClassifierOutput(loss=loss, **out), return_dict)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """(batch,) class ids, (batch, num_labels) floats for multi-label, or floats for regression."""
        return sequence_classification_loss(self.config, outputs["logits"], labels)


def flatten_choices(
    model: TFDistilBertPreTrainedModel, input_ids: Any, attention_mask: Any, position_ids: Any, inputs_embeds: Any
) -> tuple[Any, dict[str, Any]]:
    """(batch, num_choices, seq[, dim]) inputs -> ``num_choices`` and the encoder's inputs (batch * choices, ...)."""
    input_ids, attention_mask, position_ids, inputs_embeds = model.prepare_inputs(
        input_ids, attention_mask, position_ids, inputs_embeds, num_choices=True
    )
    given = input_ids if input_ids is not None else inputs_embeds
    num_choices, seq = ops.shape(given)[1], ops.shape(given)[2]

    def flat(x: Any) -> Any:
        return None if x is None else ops.reshape(x, (-1, seq, *ops.shape(x)[3:]))

    positions = flat(position_ids) if position_ids is not None and len(position_ids.shape) == 3 else position_ids
    inputs = {
        "input_ids": flat(input_ids),
        "attention_mask": flat(attention_mask),
        "inputs_embeds": flat(inputs_embeds),
    }
    return num_choices, {**inputs, "position_ids": positions}


class TFDistilBertForMultipleChoice(_HeadModel):
    """Scores each choice on its first token: inputs (batch, num_choices, seq) -> ``logits`` (batch, num_choices)."""

    head = "multiple_choice"
    input_ndim = 3

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        self.pre_classifier = dense(config.dim, config, "pre_classifier", dtype)
        self.dropout = layers.Dropout(config.seq_classif_dropout, dtype=dtype)
        self.classifier = dense(1, config, "classifier", dtype)

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        labels: Any = None,
        training: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        return_dict: bool | None = None,
        **inputs: Any,
    ) -> Any:
        num_choices, flat = flatten_choices(self, input_ids, attention_mask, position_ids, inputs_embeds)
        out = self.distilbert(**flat, training=training, **inputs)
        pooled = ops.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch * num_choices, dim)
        scores = self.classifier(self.dropout(pooled, training=training))  # (batch * num_choices, 1)
        logits = ops.reshape(scores, (-1, num_choices))  # (batch, num_choices)
        out = MultipleChoiceModelOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        loss = None if labels is None else self.head_loss(out, labels)
        return self._output(MultipleChoiceModelOutput(loss=loss, **out), return_dict)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch,): index of the right choice."""
        logits = outputs["logits"]  # (batch, num_choices)
        num_choices = logits.shape[1]  # None when traced with the choices axis left free
        return class_loss(logits, labels, ops.shape(logits)[1] if num_choices is None else num_choices)


class TFDistilBertForTokenClassification(_HeadModel):
    """Per-token classification (NER): ``logits`` (batch, seq, num_labels); ``labels`` (batch, seq), -100 ignored."""

    head = "token_classification"

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        self.dropout = layers.Dropout(config.dropout, dtype=dtype)
        self.classifier = dense(config.num_labels, config, "classifier", dtype)

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        labels: Any = None,
        training: Any = None,
        return_dict: bool | None = None,
        **inputs: Any,
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        logits = self.classifier(self.dropout(out.last_hidden_state, training=training))  # (batch, seq, num_labels)
        out = TokenClassifierOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        loss = None if labels is None else self.head_loss(out, labels)
        return self._output(TokenClassifierOutput(loss=loss, **out), return_dict)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch, seq): class ids, -100 for tokens without a label."""
        return class_loss(outputs["logits"], labels, self.config.num_labels)


class TFDistilBertForQuestionAnswering(_HeadModel):
    """Extractive QA: ``start_logits``, ``end_logits`` (batch, seq); loss = (start CE + end CE) / 2."""

    head = "question_answering"

    def build_head(self, config: DistilBertConfig, dtype: Any) -> None:
        mu.check_qa_config(config)
        self.dropout = layers.Dropout(config.qa_dropout, dtype=dtype)
        self.qa_outputs = dense(2, config, "qa_outputs", dtype)

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        start_positions: Any = None,
        end_positions: Any = None,
        training: Any = None,
        return_dict: bool | None = None,
        **inputs: Any,
    ) -> Any:
        mu.check_both_positions(start_positions, end_positions)
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state, training=training))  # (batch, seq, 2)
        out = QuestionAnsweringModelOutput(
            start_logits=logits[..., 0],
            end_logits=logits[..., 1],  # (batch, seq)
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        loss = None if start_positions is None else self.head_loss(out, (start_positions, end_positions))
        return self._output(QuestionAnsweringModelOutput(loss=loss, **out), return_dict)

    def head_loss(self, outputs: Any, targets: tuple[Any, Any]) -> Any:
        """Positions are clamped to [0, seq_len]; seq_len (past the sequence) is ignored."""
        start, end = targets
        return question_answering_loss(outputs["start_logits"], outputs["end_logits"], start, end)


__all__ = [
    "TFDistilBertForMaskedLM",
    "TFDistilBertForMultipleChoice",
    "TFDistilBertForQuestionAnswering",
    "TFDistilBertForSequenceClassification",
    "TFDistilBertForTokenClassification",
    "TFDistilBertModel",
    "TFDistilBertPreTrainedModel",
]
