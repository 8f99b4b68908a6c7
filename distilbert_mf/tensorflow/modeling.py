"""DistilBERT in Keras 3 (Sanh et al., 2019, "DistilBERT, a distilled version of BERT", arXiv:1910.01108).

A 6-layer post-LayerNorm BERT encoder without token-type embeddings or pooler, with the numerics of PyTorch
transformers' ``DistilBertModel`` (DESIGN.md §3): LayerNorm eps 1e-12, exact erf GELU, padding positions get the
most negative finite value of the compute dtype added to the scores, softmax and LayerNorm in float32.

Written with ``keras.ops`` only, so the same classes run under ``KERAS_BACKEND=tensorflow`` (the default), ``jax``
or ``torch``. Layer names equal checkpoint names, so variable paths read like the PyTorch keys
(``.../transformer/layer_0/attention/q_lin/kernel`` <-> ``transformer.layer.0.attention.q_lin.weight``); the
mapping, loading, saving, training and serving glue lives in :mod:`distilbert_mf.tensorflow.loading`.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
from keras import layers, ops

from distilbert_mf import modeling_utils
from distilbert_mf.checkpoint.names import sinusoidal_table
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from distilbert_mf.tensorflow.loading import TFDistilBertPreTrainedModel, concrete_value, most_negative, unpack_inputs

ACTIVATIONS = {
    "gelu": lambda x: ops.gelu(x, approximate=False),  # exact erf form
    "relu": ops.relu,
    "gelu_new": lambda x: ops.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: ops.gelu(x, approximate=True),
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


class LayerNorm(layers.Layer):
    """LayerNorm over the last axis computed in float32 (also under mixed precision); eps 1e-12."""

    def __init__(self, dim: int, eps: float = 1e-12, **kwargs: Any) -> None:
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


class Embeddings(layers.Layer):
    """Word + position embeddings, LayerNorm, dropout (no token-type embeddings)."""

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        dtype = self.dtype_policy
        self.pad_token_id = config.pad_token_id
        self.word_embeddings = layers.Embedding(
            config.vocab_size,
            config.dim,
            name="word_embeddings",
            dtype=dtype,
            embeddings_initializer=PaddingRowZero(config.initializer_range, config.pad_token_id),
        )
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
        self.scaling = config.head_dim**-0.5
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

    def call(self, x: Any, attention_mask: Any, training: Any = None) -> tuple[Any, Any]:
        q, k, v = self.split_heads(self.q_lin(x)), self.split_heads(self.k_lin(x)), self.split_heads(self.v_lin(x))
        scores = ops.matmul(q, ops.swapaxes(k, -1, -2)) * self.scaling + attention_mask  # (batch, heads, q, k)
        weights = ops.cast(ops.softmax(ops.cast(scores, "float32"), axis=-1), self.compute_dtype)  # (b, h, q, k)
        context = ops.matmul(self.dropout(weights, training=training), v)  # (batch, heads, q_len, head_dim)
        return self.out_lin(self.merge_heads(context)), weights  # (batch, seq, dim), (batch, heads, q, k)


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

    def call(self, x: Any, attention_mask: Any, training: Any = None) -> tuple[Any, Any]:
        attn, weights = self.attention(x, attention_mask, training=training)
        h = self.sa_layer_norm(attn + x)  # (batch, seq, dim)
        out = self.output_layer_norm(self.ffn(h, training=training) + h)  # (batch, seq, dim)
        return out, weights


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

    def call(self, x, attention_mask, output_attentions=False, output_hidden_states=False, training=None):
        hidden_states, attentions = [x], []
        for block in self.layer:
            x, weights = block(x, attention_mask, training=training)  # (batch, seq, dim), (batch, heads, q, k)
            hidden_states.append(x)
            attentions.append(weights)
        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


# ----------------------------------------------------------------------------------------------- inputs
def is_integer(x: Any) -> bool:
    return "int" in keras.backend.standardize_dtype(x.dtype)


def static_size(x: Any) -> int | None:
    """The number of elements when the whole shape is known (always in eager calls), else None."""
    return int(np.prod(x.shape)) if all(isinstance(d, int) for d in x.shape) else None


def prepare_inputs(config: DistilBertConfig, input_ids, attention_mask, position_ids, inputs_embeds) -> tuple:
    """Check and convert the call's inputs: ids (batch, seq) or embeddings (batch, seq, dim), mask, positions.

    Value checks (token and position ranges) run whenever the values are concrete (eager calls); inside
    ``tf.function`` / XLA / ``jax.jit`` traces only the shape checks run.
    """
    modeling_utils.check_input_choice(input_ids, inputs_embeds)
    if input_ids is not None:
        input_ids = ops.convert_to_tensor(input_ids)
        modeling_utils.check_shape("input_ids", tuple(input_ids.shape), 2, "(batch, seq)")
        if not is_integer(input_ids):
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        ids = concrete_value(input_ids)
        if ids is not None and ids.size:
            modeling_utils.check_token_range(int(ids.min()), int(ids.max()), config.vocab_size)
        shape = tuple(input_ids.shape)
    else:
        inputs_embeds = ops.convert_to_tensor(inputs_embeds)
        modeling_utils.check_shape("inputs_embeds", tuple(inputs_embeds.shape), 3, "(batch, seq, dim)")
        shape = tuple(inputs_embeds.shape)[:-1]
    if isinstance(shape[-1], int):
        modeling_utils.check_sequence_length(shape[-1], config)
    if attention_mask is not None:
        attention_mask = ops.convert_to_tensor(attention_mask)
        if static_size(attention_mask) is not None and None not in shape and tuple(attention_mask.shape) != shape:
            raise ValueError(f"attention_mask has shape {tuple(attention_mask.shape)}, the inputs have {shape}")
    if position_ids is not None:
        position_ids = ops.convert_to_tensor(position_ids)
        positions = concrete_value(position_ids)
        if positions is not None and positions.size:
            low, high = int(positions.min()), int(positions.max())
            if low < 0 or high >= config.max_position_embeddings:
                raise ValueError(
                    f"position_ids must lie in [0, max_position_embeddings={config.max_position_embeddings}), "
                    f"got values in [{low}, {high}]"
                )
    return input_ids, attention_mask, position_ids, inputs_embeds


def additive_mask(attention_mask: Any, shape: Any, dtype: str) -> Any:
    """(batch, seq) 1 = attend, 0 = padding -> (batch, 1, 1, seq): 0 or the most negative finite ``dtype`` value."""
    if attention_mask is None:
        return ops.zeros((shape[0], 1, 1, shape[1]), dtype=dtype)
    keep = ops.not_equal(attention_mask, 0)[:, None, None, :]  # (batch, 1, 1, k_len)
    return ops.where(keep, ops.zeros((), dtype), ops.full((), most_negative(dtype), dtype))


# ----------------------------------------------------------------------------------------------- losses
IGNORE_INDEX = -100  # label value that contributes no loss (PyTorch's CrossEntropyLoss default)


def class_labels(labels: Any, num_classes: int | None, count: int | None, name: str = "labels") -> Any:
    """Class-id labels flattened to (n,): integers, ``count`` of them, each in [0, num_classes) or -100."""
    labels = ops.convert_to_tensor(labels)
    if not is_integer(labels):
        raise TypeError(f"{name} must be integer class ids for this loss, got dtype {labels.dtype}")
    size = static_size(labels)
    if size is not None and isinstance(count, int) and size != count:
        raise ValueError(f"{name} must hold {count} class ids (one per prediction), got shape {tuple(labels.shape)}")
    values = concrete_value(labels)
    if values is not None and num_classes is not None:
        bad = values[(values != IGNORE_INDEX) & ((values < 0) | (values >= num_classes))]
        if bad.size:
            raise ValueError(
                f"{name} contains class id {int(bad.flat[0])}, outside [0, {num_classes}) "
                f"(use {IGNORE_INDEX} to ignore a position)"
            )
    return ops.reshape(labels, (-1,))


def cross_entropy(logits: Any, labels: Any, ignore_index: Any = IGNORE_INDEX) -> Any:
    """Mean cross-entropy over the labels != ``ignore_index`` (PyTorch's ``CrossEntropyLoss``). logits (n, c).

    A batch whose labels are all ignored gives 0.0 (and zero gradients), not PyTorch's NaN."""
    logits, labels = ops.cast(logits, "float32"), ops.cast(labels, "int32")
    valid = ops.not_equal(labels, ignore_index)  # (n,)
    safe = ops.where(valid, labels, ops.zeros_like(labels))  # (n,)
    log_probs = ops.log_softmax(logits, axis=-1)  # (n, c)
    nll = -ops.take_along_axis(log_probs, safe[:, None], axis=-1)[:, 0]  # (n,)
    return ops.sum(ops.where(valid, nll, ops.zeros_like(nll))) / ops.maximum(ops.sum(ops.cast(valid, "float32")), 1.0)


def same_size(labels: Any, logits: Any, problem: str) -> Any:
    """Float targets with one value per logit (regression, multi-label), reshaped like ``logits``."""
    labels = ops.convert_to_tensor(labels)
    size, expected = static_size(labels), static_size(logits)
    if size is not None and expected is not None and size != expected:
        raise ValueError(
            f"{problem} labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    return ops.reshape(labels, ops.shape(logits))


def binary_cross_entropy_with_logits(logits: Any, labels: Any) -> Any:
    """Mean over every element of the numerically stable sigmoid cross-entropy (``BCEWithLogitsLoss``)."""
    x, y = ops.cast(logits, "float32"), ops.cast(labels, "float32")
    return ops.mean(ops.maximum(x, 0.0) - x * y + ops.log1p(ops.exp(-ops.abs(x))))


def mean_squared_error(predictions: Any, targets: Any) -> Any:
    return ops.mean(ops.square(ops.cast(predictions, "float32") - ops.cast(targets, "float32")))


# ----------------------------------------------------------------------------------------------- models
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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        training: Any = None,
        token_type_ids: Any = None,
        head_mask: Any = None,
    ) -> BaseModelOutput:
        modeling_utils.reject_unsupported_inputs(token_type_ids, head_mask)
        input_ids, attention_mask, position_ids, inputs_embeds = prepare_inputs(
            self.config, input_ids, attention_mask, position_ids, inputs_embeds
        )
        x = self.embeddings(input_ids, position_ids, inputs_embeds, training=training)  # (batch, seq, dim)
        mask = additive_mask(attention_mask, ops.shape(x), self.compute_dtype)  # (batch, 1, 1, seq)
        return self.transformer(
            x, mask, output_attentions=output_attentions, output_hidden_states=output_hidden_states, training=training
        )


class TFDistilBertHead(TFDistilBertPreTrainedModel):
    """Shared by the five heads: the encoder lives under ``distilbert`` (checkpoint prefix ``distilbert.``).

    A head's ``call(input_ids, attention_mask, labels, training, **inputs)`` passes ``inputs`` (``position_ids``,
    ``inputs_embeds``, ``output_attentions``, ``output_hidden_states``) on to :class:`TFDistilBertModel`, whose
    explicit signature rejects unknown names.
    """

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        with keras.name_scope(self.name):  # variable paths: <head>/distilbert/...
            self.distilbert = TFDistilBertModel(config, name="distilbert", dtype=self.dtype_policy)


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


class TFDistilBertForMaskedLM(TFDistilBertHead):
    """Masked language modelling: ``logits`` (batch, seq, vocab); ``labels`` (batch, seq), -100 ignored."""

    head = "masked_lm"

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.vocab_transform = dense(config.dim, config, "vocab_transform", self.dtype_policy)
        self.activation = ACTIVATIONS[config.activation]
        self.vocab_layer_norm = LayerNorm(config.dim, name="vocab_layer_norm", dtype=self.dtype_policy)
        self.vocab_projector = VocabProjector(config, name="vocab_projector", dtype=self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, training: Any = None, **inputs: Any
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        h = self.vocab_layer_norm(self.activation(self.vocab_transform(out.last_hidden_state)))  # (batch, seq, dim)
        tied = self.distilbert.embeddings.word_embeddings.embeddings if self.config.tie_word_embeddings else None
        logits = self.vocab_projector(h, word_embeddings=tied)  # (batch, seq, vocab)
        out = MaskedLMOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return out if labels is None else MaskedLMOutput(loss=self.head_loss(out, labels), **out)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch, seq): token ids, -100 for positions without a label."""
        logits = ops.reshape(outputs["logits"], (-1, self.config.vocab_size))  # (batch * seq, vocab)
        return cross_entropy(logits, class_labels(labels, self.config.vocab_size, logits.shape[0]))


class TFDistilBertForSequenceClassification(TFDistilBertHead):
    """Sentence classification or regression on the first token: ``logits`` (batch, num_labels)."""

    head = "sequence_classification"

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.pre_classifier = dense(config.dim, config, "pre_classifier", self.dtype_policy)
        self.dropout = layers.Dropout(config.seq_classif_dropout, dtype=self.dtype_policy)
        self.classifier = dense(config.num_labels, config, "classifier", self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, training: Any = None, **inputs: Any
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        pooled = ops.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch, dim)
        logits = self.classifier(self.dropout(pooled, training=training))  # (batch, num_labels)
        out = SequenceClassifierOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return out if labels is None else SequenceClassifierOutput(loss=self.head_loss(out, labels), **out)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """Regression / single-label / multi-label, the problem type decided per call from ``labels``' dtype."""
        logits, labels = outputs["logits"], ops.convert_to_tensor(labels)  # logits (batch, num_labels)
        problem_type = modeling_utils.problem_type_for(self.config, labels_are_integers=is_integer(labels))
        if problem_type == "regression":
            return mean_squared_error(logits, same_size(labels, logits, "regression"))
        if problem_type == "single_label_classification":
            return cross_entropy(logits, class_labels(labels, self.config.num_labels, logits.shape[0]))
        return binary_cross_entropy_with_logits(logits, same_size(labels, logits, "multi-label classification"))


class TFDistilBertForMultipleChoice(TFDistilBertHead):
    """Scores each choice on its first token: inputs (batch, num_choices, seq) -> ``logits`` (batch, num_choices)."""

    head = "multiple_choice"
    input_ndim = 3

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.pre_classifier = dense(config.dim, config, "pre_classifier", self.dtype_policy)
        self.dropout = layers.Dropout(config.seq_classif_dropout, dtype=self.dtype_policy)
        self.classifier = dense(1, config, "classifier", self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, training: Any = None, **inputs: Any
    ) -> Any:
        num_choices, input_ids, attention_mask, inputs = flatten_choices(input_ids, attention_mask, inputs)
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        pooled = ops.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch * num_choices, dim)
        scores = self.classifier(self.dropout(pooled, training=training))  # (batch * num_choices, 1)
        logits = ops.reshape(scores, (-1, num_choices))  # (batch, num_choices)
        out = MultipleChoiceModelOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return out if labels is None else MultipleChoiceModelOutput(loss=self.head_loss(out, labels), **out)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch,): index of the right choice."""
        logits = outputs["logits"]  # (batch, num_choices)
        return cross_entropy(logits, class_labels(labels, logits.shape[1], logits.shape[0]))


def flatten_choices(input_ids: Any, attention_mask: Any, inputs: dict[str, Any]) -> tuple:
    """(batch, num_choices, seq[, dim]) inputs -> num_choices and the inputs as (batch * num_choices, seq[, dim])."""
    inputs_embeds, position_ids = inputs.get("inputs_embeds"), inputs.get("position_ids")
    modeling_utils.check_input_choice(input_ids, inputs_embeds)
    name, given = ("input_ids", input_ids) if input_ids is not None else ("inputs_embeds", inputs_embeds)
    given = ops.convert_to_tensor(given)
    ndim = 3 if input_ids is not None else 4
    modeling_utils.check_shape(name, tuple(given.shape), ndim, "(batch, num_choices, seq" + ", dim)"[4 - ndim :])
    num_choices, seq = ops.shape(given)[1], ops.shape(given)[2]

    def flat(x: Any, trailing: tuple = ()) -> Any:
        return None if x is None else ops.reshape(ops.convert_to_tensor(x), (-1, seq, *trailing))

    embeds = None if inputs_embeds is None else flat(given, (ops.shape(given)[3],))
    inputs = {**inputs, "inputs_embeds": embeds, "position_ids": flat(position_ids)}
    return num_choices, flat(input_ids), flat(attention_mask), inputs


class TFDistilBertForTokenClassification(TFDistilBertHead):
    """Per-token classification (NER): ``logits`` (batch, seq, num_labels); ``labels`` (batch, seq), -100 ignored."""

    head = "token_classification"

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        super().__init__(config, **kwargs)
        self.dropout = layers.Dropout(config.dropout, dtype=self.dtype_policy)
        self.classifier = dense(config.num_labels, config, "classifier", self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self, input_ids: Any = None, attention_mask: Any = None, labels: Any = None, training: Any = None, **inputs: Any
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        logits = self.classifier(self.dropout(out.last_hidden_state, training=training))  # (batch, seq, num_labels)
        out = TokenClassifierOutput(logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return out if labels is None else TokenClassifierOutput(loss=self.head_loss(out, labels), **out)

    def head_loss(self, outputs: Any, labels: Any) -> Any:
        """``labels`` (batch, seq): class ids, -100 for tokens without a label."""
        logits = ops.reshape(outputs["logits"], (-1, self.config.num_labels))  # (batch * seq, num_labels)
        return cross_entropy(logits, class_labels(labels, self.config.num_labels, logits.shape[0]))


class TFDistilBertForQuestionAnswering(TFDistilBertHead):
    """Extractive QA: ``start_logits``, ``end_logits`` (batch, seq); loss = (start CE + end CE) / 2."""

    head = "question_answering"

    def __init__(self, config: DistilBertConfig, **kwargs: Any) -> None:
        modeling_utils.check_qa_config(config)
        super().__init__(config, **kwargs)
        self.dropout = layers.Dropout(config.qa_dropout, dtype=self.dtype_policy)
        self.qa_outputs = dense(2, config, "qa_outputs", self.dtype_policy)
        self.build()

    @unpack_inputs
    def call(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        start_positions: Any = None,
        end_positions: Any = None,
        training: Any = None,
        **inputs: Any,
    ) -> Any:
        out = self.distilbert(input_ids, attention_mask, training=training, **inputs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state, training=training))  # (batch, seq, 2)
        out = QuestionAnsweringModelOutput(
            start_logits=logits[..., 0],
            end_logits=logits[..., 1],  # (batch, seq)
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions to compute the QA loss, or neither")
        if start_positions is None:
            return out
        return QuestionAnsweringModelOutput(loss=self.head_loss(out, (start_positions, end_positions)), **out)

    def head_loss(self, outputs: Any, targets: tuple[Any, Any]) -> Any:
        """Positions are clamped to [0, seq_len]; seq_len (past the sequence) is ignored."""
        seq_len = ops.shape(outputs["start_logits"])[1]

        def clamp(positions: Any, name: str) -> Any:
            positions = ops.convert_to_tensor(positions)
            if not is_integer(positions):
                raise TypeError(f"{name} must be integer token positions, got dtype {positions.dtype}")
            return ops.clip(ops.cast(ops.reshape(positions, (-1,)), "int32"), 0, seq_len)  # (batch,)

        start, end = targets
        start_loss = cross_entropy(outputs["start_logits"], clamp(start, "start_positions"), ignore_index=seq_len)
        end_loss = cross_entropy(outputs["end_logits"], clamp(end, "end_positions"), ignore_index=seq_len)
        return (start_loss + end_loss) / 2


__all__ = [
    "TFDistilBertForMaskedLM",
    "TFDistilBertForMultipleChoice",
    "TFDistilBertForQuestionAnswering",
    "TFDistilBertForSequenceClassification",
    "TFDistilBertForTokenClassification",
    "TFDistilBertModel",
]
