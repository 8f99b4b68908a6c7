"""DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT") in Flax NNX.

The six models of transformers' PyTorch DistilBERT, with the same arguments, output classes, losses and errors,
and the numerics of DESIGN.md §3:

- post-LayerNorm blocks: ``h = sa_layer_norm(attn(x) + x)``, ``out = output_layer_norm(ffn(h) + h)``;
- LayerNorm eps 1e-12 with float32 statistics (two-pass variance, as PyTorch); exact erf GELU;
- padding positions get the most negative finite value of the compute dtype added to the attention scores, and the
  softmax runs in float32, so a fully padded row stays finite;
- classification heads read ``hidden[:, 0]`` through ``pre_classifier`` -> ReLU -> dropout -> ``classifier``;
  losses are PyTorch's (mean reductions, ignore index -100, question-answering positions clamped).

Attribute names equal checkpoint names, so the NNX state path
``('distilbert', 'transformer', 'layer', 0, 'attention', 'q_lin', 'kernel')`` is the canonical key
``distilbert.transformer.layer.0.attention.q_lin.weight`` transposed (``loading.py`` holds that table).
``dtype`` is the compute dtype, ``param_dtype`` the storage dtype. Every parameter carries logical axis names
(``"vocab"``, ``"embed"``, ``"heads"``, ``"mlp"``) as metadata only: nothing is sharded unless you ask
(``sharding.py``). Dropout follows ``model.train()`` / ``model.eval()``. CPU inference kernels live in
:mod:`distilbert_mf.flax.cpu_kernels` (one dispatch line each below); loading and saving in
:mod:`distilbert_mf.flax.loading` over the neutral :mod:`distilbert_mf.checkpoint.pretrained`; input and label
rules in :mod:`distilbert_mf.modeling_utils`.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distilbert_mf import modeling_utils as mu
from distilbert_mf import outputs
from distilbert_mf.checkpoint.names import sinusoidal_table
from distilbert_mf.checkpoint.pretrained import PreTrainedModel
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.flax import cpu_kernels
from distilbert_mf.modeling_utils import IGNORE_INDEX, LAYER_NORM_EPS
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

logger = logging.getLogger(__name__)

Array = jax.Array
ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "gelu": functools.partial(jax.nn.gelu, approximate=False),  # exact erf form
    "relu": jax.nn.relu,
    "gelu_new": functools.partial(jax.nn.gelu, approximate=True),
    "gelu_pytorch_tanh": functools.partial(jax.nn.gelu, approximate=True),
}


def _register_output_pytrees() -> None:
    """Make the shared output classes JAX pytrees, so ``nnx.jit`` / ``jax.jit`` can return them."""
    for cls in outputs.ModelOutput.__subclasses__():
        try:
            jax.tree_util.register_pytree_node(
                cls,
                lambda out: (tuple(out.values()), tuple(out.keys())),
                lambda keys, values, cls=cls: cls(dict(zip(keys, values))),
            )
        except ValueError:  # already registered
            pass


_register_output_pytrees()


class PositionTable(nnx.Variable):
    """The fixed sinusoidal position table: not an ``nnx.Param``, so ``nnx.Optimizer(..., wrt=nnx.Param)`` and
    ``nnx.state(model, nnx.Param)`` leave it alone. Saved and loaded like any weight."""


# ----------------------------------------------------------------------------------------------------------------------
# Layer construction: one dtype policy, transformers' initialisation, logical axis names as metadata only
# ----------------------------------------------------------------------------------------------------------------------

_SHAPES_ONLY: contextvars.ContextVar[bool] = contextvars.ContextVar("distilbert_mf_flax_shapes_only", default=False)


@contextlib.contextmanager
def shapes_only(enabled: bool = True) -> Iterator[None]:
    """Models built inside get ``jax.ShapeDtypeStruct`` placeholders instead of initialised parameters — Flax's
    counterpart of PyTorch's meta device, for a loader that fills every parameter right after: nothing random is
    drawn and no memory is taken (cheaper than ``nnx.eval_shape``, which traces every initialiser). A model with
    placeholders left cannot run."""
    token = _SHAPES_ONLY.set(enabled)
    try:
        yield
    finally:
        _SHAPES_ONLY.reset(token)


def declaring_shapes_only() -> bool:
    """True inside :func:`shapes_only`."""
    return _SHAPES_ONLY.get()


@dataclasses.dataclass(frozen=True)
class LayerFactory:
    """Builds every layer with the same dtypes and transformers' initialisation.

    Weights ~ normal(initializer_range), biases 0, LayerNorm scale 1 / bias 0, the padding token's embedding row 0.
    ``placeholders``: parameters are declared by shape only (see :func:`shapes_only`).
    """

    config: DistilBertConfig
    dtype: jnp.dtype  # compute
    param_dtype: jnp.dtype  # storage
    rngs: nnx.Rngs
    placeholders: bool = False

    def init(self, init: Callable[..., Array], *axes: str | None) -> Callable[..., Any]:
        """``init`` with logical axis names attached (``eager_sharding=False``: a no-op until you shard)."""

        def init_or_placeholder(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
            return jax.ShapeDtypeStruct(shape, dtype) if self.placeholders else init(key, shape, dtype)

        return nnx.with_partitioning(init_or_placeholder, axes, eager_sharding=False)

    def linear(self, d_in: int, d_out: int, axes: tuple[str | None, str | None]) -> nnx.Linear:
        return nnx.Linear(
            d_in,
            d_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            kernel_init=self.init(nnx.initializers.normal(self.config.initializer_range), *axes),
            bias_init=self.init(nnx.initializers.zeros_init(), axes[1]),
        )

    def layer_norm(self) -> nnx.LayerNorm:
        return nnx.LayerNorm(
            self.config.dim,
            epsilon=LAYER_NORM_EPS,
            use_fast_variance=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            scale_init=self.init(nnx.initializers.ones_init(), "embed"),
            bias_init=self.init(nnx.initializers.zeros_init(), "embed"),
        )

    def embed(self, rows: int, axes: tuple[str | None, str], zero_row: int | None = None) -> nnx.Embed:
        normal = nnx.initializers.normal(self.config.initializer_range)

        def init(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Array:
            table = normal(key, shape, dtype)
            return table if zero_row is None else table.at[zero_row].set(0)

        return nnx.Embed(
            rows,
            self.config.dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            embedding_init=self.init(init, *axes),
        )

    def sinusoidal_embed(self) -> nnx.Embed:
        """An Embed whose table is the fixed sin/cos table, held in a non-trainable ``PositionTable``."""
        config = self.config
        embed = nnx.Embed(
            config.max_position_embeddings,
            config.dim,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            embedding_init=nnx.initializers.zeros_init(),
        )
        table = sinusoidal_table(config.max_position_embeddings, config.dim)  # (max_positions, dim)
        embed.embedding = PositionTable(
            jnp.asarray(table, self.param_dtype), out_sharding=(None, "embed"), eager_sharding=False
        )
        return embed

    def dropout(self, rate: float) -> nnx.Dropout:
        return nnx.Dropout(rate, rngs=self.rngs)


def _dtype(value: Any, default: Any) -> jnp.dtype:
    name = mu.dtype_name(value)
    return jnp.dtype(name) if name is not None else jnp.dtype(default)


def layer_factory(config: DistilBertConfig, rngs: nnx.Rngs | None, dtype: Any, param_dtype: Any) -> LayerFactory:
    if not isinstance(config, DistilBertConfig):
        raise TypeError(f"config must be a DistilBertConfig, got {type(config).__name__}")
    param_dtype = _dtype(param_dtype, jnp.float32)
    dtype = _dtype(dtype, param_dtype)
    if jnp.dtype(jnp.float16) in (dtype, param_dtype) and jax.default_backend() == "cpu":
        logger.warning(mu.CPU_FLOAT16_WARNING)
    if rngs is None:
        rngs = nnx.Rngs(0)
    elif not isinstance(rngs, nnx.Rngs):
        raise TypeError(f"rngs must be an nnx.Rngs (e.g. nnx.Rngs(0)), got {type(rngs).__name__}")
    return LayerFactory(config, dtype, param_dtype, rngs, placeholders=declaring_shapes_only())


# ----------------------------------------------------------------------------------------------------------------------
# The encoder: Embeddings -> MultiHeadSelfAttention -> FFN -> TransformerBlock -> Transformer
# ----------------------------------------------------------------------------------------------------------------------


class Embeddings(nnx.Module):
    """Word embeddings + position embeddings (learned, or the fixed sin/cos table) -> LayerNorm -> dropout."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.vocab_size = config.vocab_size
        self.pad_token_id = config.pad_token_id
        self.dtype = make.dtype
        self.word_embeddings = make.embed(config.vocab_size, ("vocab", "embed"), zero_row=config.pad_token_id)
        if config.sinusoidal_pos_embds:
            self.position_embeddings = make.sinusoidal_embed()
        else:
            self.position_embeddings = make.embed(config.max_position_embeddings, (None, "embed"))
        self.LayerNorm = make.layer_norm()
        self.dropout = make.dropout(config.dropout)

    def __call__(self, input_ids: Array | None, position_ids: Array, inputs_embeds: Array | None = None) -> Array:
        """input_ids (batch, seq) or inputs_embeds (batch, seq, dim); position_ids (batch or 1, seq) -> (batch, seq, dim)."""
        if inputs_embeds is None:
            # out-of-range ids (refused with a ValueError outside jit) read NaN rows here: never clamped or wrapped
            input_ids = jnp.where(input_ids < 0, self.vocab_size, input_ids)
            inputs_embeds = self.word_embeddings(input_ids)  # (batch, seq, dim)
            if self.pad_token_id is not None:  # as PyTorch's padding_idx: the padding row receives no gradient
                is_pad = (input_ids == self.pad_token_id)[..., None]  # (batch, seq, 1)
                inputs_embeds = jnp.where(is_pad, jax.lax.stop_gradient(inputs_embeds), inputs_embeds)
        x = inputs_embeds.astype(self.dtype) + self.position_embeddings(position_ids)  # (batch, seq, dim)
        return self.dropout(self.LayerNorm(x))


class MultiHeadSelfAttention(nnx.Module):
    """Scaled dot-product self-attention over ``n_heads`` heads; softmax in float32."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.n_heads = config.n_heads
        self.head_dim = config.head_dim
        self.scale = config.head_dim**-0.5
        self.q_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.k_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.v_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.out_lin = make.linear(config.dim, config.dim, ("heads", "embed"))
        self.dropout = make.dropout(config.attention_dropout)

    def split_heads(self, x: Array) -> Array:
        batch, seq, _ = x.shape
        return x.reshape(batch, seq, self.n_heads, self.head_dim).transpose(0, 2, 1, 3)  # (batch, heads, seq, hd)

    def merge_heads(self, x: Array) -> Array:
        batch, _, seq, _ = x.shape
        return x.transpose(0, 2, 1, 3).reshape(batch, seq, self.n_heads * self.head_dim)  # (batch, seq, dim)

    def __call__(self, x: Array, mask_bias: Array | None) -> tuple[Array, Array]:
        """x (batch, seq, dim), mask_bias (batch, 1, 1, seq) -> (output (batch, seq, dim), probs (batch, heads, seq, seq))."""
        q, k, v = self.split_heads(self.q_lin(x)), self.split_heads(self.k_lin(x)), self.split_heads(self.v_lin(x))
        if cpu_kernels.per_head_applies(q, self.dropout):  # CPU inference kernel: one (batch, head) at a time
            context, probs = cpu_kernels.attend_per_head(attend, q, k, v, mask_bias, self.scale)
        else:
            context, probs = attend(q, k, v, mask_bias, self.scale, self.dropout)
        return self.out_lin(self.merge_heads(context)), probs


def attend(q: Array, k: Array, v: Array, mask_bias: Array | None, scale: float, dropout: Any = None) -> tuple:
    """Softmax attention: q, k, v (..., seq, head_dim) -> context (..., q_len, head_dim), probs (..., q_len, k_len)."""
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (..., q_len, k_len)
    if mask_bias is not None:
        scores = scores + mask_bias  # (..., q_len, k_len)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)  # (..., q_len, k_len)
    if dropout is not None:
        probs = dropout(probs)
    return probs @ v, probs


class FFN(nnx.Module):
    """Position-wise feed-forward: lin1 -> activation -> lin2 -> dropout."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.activation = ACTIVATIONS[config.activation]
        self.lin1 = make.linear(config.dim, config.hidden_dim, ("embed", "mlp"))
        self.lin2 = make.linear(config.hidden_dim, config.dim, ("mlp", "embed"))
        self.dropout = make.dropout(config.dropout)

    def __call__(self, x: Array) -> Array:
        """(batch, seq, dim) -> (batch, seq, dim)."""
        if rows := cpu_kernels.ffn_rows(x, self.dropout):  # CPU inference kernel: the FFN in blocks of tokens
            return cpu_kernels.map_rows(self.feed_forward, x, rows)
        return self.dropout(self.feed_forward(x))

    def feed_forward(self, x: Array) -> Array:
        """(..., dim) -> (..., dim), without dropout."""
        return self.lin2(self.activation(self.lin1(x)))  # (..., dim)


class TransformerBlock(nnx.Module):
    """Post-LayerNorm block: ``h = sa_layer_norm(attn(x) + x)``; ``out = output_layer_norm(ffn(h) + h)``."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.attention = MultiHeadSelfAttention(config, make)
        self.sa_layer_norm = make.layer_norm()
        self.ffn = FFN(config, make)
        self.output_layer_norm = make.layer_norm()

    def __call__(self, x: Array, mask_bias: Array | None) -> tuple[Array, Array]:
        """x (batch, seq, dim) -> (out (batch, seq, dim), attention probs (batch, heads, seq, seq))."""
        attn, probs = self.attention(x, mask_bias)
        h = self.sa_layer_norm(attn + x)  # (batch, seq, dim)
        return self.output_layer_norm(self.ffn(h) + h), probs


class Transformer(nnx.Module):
    """``n_layers`` blocks in ``transformer.layer[i]``."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.layer = nnx.List([TransformerBlock(config, make) for _ in range(config.n_layers)])

    def __call__(
        self, x: Array, mask_bias: Array | None, output_attentions: bool, output_hidden_states: bool
    ) -> BaseModelOutput:
        """x (batch, seq, dim) -> last_hidden_state (batch, seq, dim), n_layers + 1 hidden states, n_layers probs."""
        hidden_states, attentions = [x], []
        for block in self.layer:
            x, probs = block(x, mask_bias)
            hidden_states.append(x)
            attentions.append(probs)
        return BaseModelOutput(
            last_hidden_state=x,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )


# ----------------------------------------------------------------------------------------------------------------------
# Inputs (values are checked only where they are concrete: inside jit they are tracers)
# ----------------------------------------------------------------------------------------------------------------------


def _concrete(x: Array) -> np.ndarray | None:
    """The values of ``x`` when known now (eager call), ``None`` under a jax transformation."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


class FlaxOps(mu.ConcreteValueOps):
    """:class:`distilbert_mf.modeling_utils.TensorOps` for JAX arrays."""

    @staticmethod
    def shape(x: Array) -> tuple[Any, ...]:
        return tuple(x.shape)

    @staticmethod
    def is_integer(x: Array) -> bool:
        return bool(jnp.issubdtype(x.dtype, jnp.integer))

    concrete = staticmethod(_concrete)


OPS = FlaxOps()


def padding_bias(attention_mask: Array | None, dtype: jnp.dtype) -> Array | None:
    """(batch, seq) mask, nonzero = attend -> additive (batch, 1, 1, seq): 0 or the most negative finite value of
    ``dtype``; ``None`` without a mask."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :] != 0  # (batch, 1, 1, seq)
    return jnp.where(keep, jnp.zeros((), dtype), jnp.finfo(dtype).min).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The base class and the base model
# ----------------------------------------------------------------------------------------------------------------------


class FlaxDistilBertPreTrainedModel(nnx.Module, PreTrainedModel):
    """What the six Flax models share: config, input preparation, and (from
    :class:`~distilbert_mf.checkpoint.pretrained.PreTrainedModel`) loading and saving."""

    framework: ClassVar[str] = "flax"
    weights_io: ClassVar[str] = "distilbert_mf.flax.loading"
    load_options: ClassVar[dict[str, Any]] = {"param_dtype": None, "rngs": None}
    config: DistilBertConfig

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
    ) -> tuple[Array | None, Array | None, Array | None, Array | None]:
        """The call's inputs as JAX arrays, checked by :func:`modeling_utils.check_model_inputs`."""
        input_ids, attention_mask, position_ids, inputs_embeds = (
            None if x is None else jnp.asarray(x) for x in (input_ids, attention_mask, position_ids, inputs_embeds)
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


class FlaxDistilBertModel(FlaxDistilBertPreTrainedModel):
    """The DistilBERT encoder: embeddings -> transformer; returns :class:`BaseModelOutput`."""

    head = "base"

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ):
        """``rngs`` seeds the initialisation and dropout (default ``nnx.Rngs(0)``); ``dtype`` is the compute dtype
        (default: ``param_dtype``), ``param_dtype`` the parameter dtype."""
        make = layer_factory(config, rngs, dtype, param_dtype)
        self.config = config
        self.dtype = make.dtype
        self.embeddings = Embeddings(config, make)
        self.transformer = Transformer(config, make)

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        output_attentions: bool | None = None,
        output_hidden_states: bool | None = None,
        return_dict: bool | None = None,
        token_type_ids: Any = None,
        head_mask: Any = None,
    ) -> BaseModelOutput:
        """input_ids (batch, seq) or inputs_embeds (batch, seq, dim); attention_mask (batch, seq) 1 = token, 0 = pad;
        position_ids (batch, seq) (default 0..seq-1). Returns last_hidden_state (batch, seq, dim)."""
        input_ids, attention_mask, position_ids, inputs_embeds = self.prepare_inputs(
            input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids, head_mask
        )
        output_attentions = mu.resolve_flag(output_attentions, self.config.output_attentions)
        output_hidden_states = mu.resolve_flag(output_hidden_states, self.config.output_hidden_states)
        seq = (input_ids if input_ids is not None else inputs_embeds).shape[1]
        if position_ids is None:
            position_ids = jnp.arange(seq, dtype=jnp.int32)[None, :]  # (1, seq)
        x = self.embeddings(input_ids, jnp.atleast_2d(position_ids), inputs_embeds)  # (batch, seq, dim)
        mask_bias = padding_bias(attention_mask, self.dtype)  # (batch, 1, 1, seq) or None
        out = self.transformer(x, mask_bias, output_attentions, output_hidden_states)
        return self._output(out, return_dict)


# ----------------------------------------------------------------------------------------------------------------------
# Losses: PyTorch's, mean reductions, computed in float32
# ----------------------------------------------------------------------------------------------------------------------


def cross_entropy(logits: Array, labels: Array, ignore_index: int = IGNORE_INDEX) -> Array:
    """torch.nn.CrossEntropyLoss: mean over labels != ignore_index. logits (n, classes), labels (n,) -> ().

    A batch whose labels are all ignored gives 0.0 (and zero gradients), not PyTorch's NaN."""
    logits = logits.astype(jnp.float32)  # (n, classes)
    valid = labels != ignore_index  # (n,)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # (n, classes)
    nll = -jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]  # (n,)
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def class_loss(logits: Array, labels: Any, num_classes: int) -> Array:
    """Cross-entropy of class-id ``labels`` (checked: one per prediction, in range or -100) against ``logits``
    (..., num_classes)."""
    labels = jnp.asarray(labels)
    mu.check_class_labels(OPS, labels, num_classes, tuple(logits.shape[:-1]))
    return cross_entropy(logits.reshape(-1, num_classes), labels.reshape(-1))


def mean_squared_error(predictions: Array, targets: Array) -> Array:
    """torch.nn.MSELoss (mean) over the flattened values."""
    return jnp.mean((predictions.reshape(-1).astype(jnp.float32) - targets.reshape(-1).astype(jnp.float32)) ** 2)


def binary_cross_entropy_with_logits(logits: Array, targets: Array) -> Array:
    """torch.nn.BCEWithLogitsLoss (mean), in the overflow-free form."""
    x, y = logits.astype(jnp.float32), targets.astype(jnp.float32)
    return jnp.mean(jnp.maximum(x, 0) - x * y + jnp.log1p(jnp.exp(-jnp.abs(x))))


def sequence_classification_loss(config: DistilBertConfig, logits: Array, labels: Any) -> Array:
    """Regression (MSE), single-label (cross entropy) or multi-label (BCE) as ``problem_type_for`` decides per call.

    logits (batch, num_labels); labels (batch,) class ids, or as many floats as logits (regression, multi-label).
    """
    labels = jnp.asarray(labels)
    problem_type = mu.problem_type_for(config, OPS.is_integer(labels))
    if problem_type == "single_label_classification":
        return class_loss(logits, labels, config.num_labels)
    problem = "regression" if problem_type == "regression" else "multi-label classification"
    mu.check_same_size(OPS, labels, tuple(logits.shape), problem)
    if problem_type == "regression":
        return mean_squared_error(logits, labels)
    return binary_cross_entropy_with_logits(logits, labels.reshape(logits.shape))


def question_answering_loss(start_logits: Array, end_logits: Array, start_positions: Any, end_positions: Any) -> Array:
    """Mean of the start and end cross-entropies; positions clamped to [0, seq], and == seq ignored."""
    seq = start_logits.shape[1]

    def position_loss(logits: Array, positions: Any, name: str) -> Array:
        positions = jnp.asarray(positions)
        mu.check_positions(OPS, positions, name)
        return cross_entropy(logits, jnp.clip(positions.reshape(-1), 0, seq), ignore_index=seq)

    start_loss = position_loss(start_logits, start_positions, "start_positions")
    return (start_loss + position_loss(end_logits, end_positions, "end_positions")) / 2


# ----------------------------------------------------------------------------------------------------------------------
# Heads
# ----------------------------------------------------------------------------------------------------------------------


class _HeadModel(FlaxDistilBertPreTrainedModel):
    """A head over ``self.distilbert``: builds the encoder, then the head's own layers in ``build_head``."""

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        rngs: nnx.Rngs | None = None,
        dtype: Any = None,
        param_dtype: Any = jnp.float32,
    ):
        """Arguments as :class:`FlaxDistilBertModel`."""
        make = layer_factory(config, rngs, dtype, param_dtype)
        self.config = config
        self.distilbert = FlaxDistilBertModel(config, rngs=make.rngs, dtype=make.dtype, param_dtype=make.param_dtype)
        self.build_head(config, make)

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define build_head")


class VocabProjector(nnx.Module):
    """``vocab_projector``: logits = x @ W.T + b, with W the word-embedding matrix when the weights are tied."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.dtype = make.dtype
        self.kernel: nnx.Param | None = None  # tied: the word embeddings serve as the kernel
        if not config.tie_word_embeddings:
            kernel_init = make.init(nnx.initializers.normal(config.initializer_range), "embed", "vocab")
            self.kernel = nnx.data(
                nnx.Param(kernel_init(make.rngs.params(), (config.dim, config.vocab_size), make.param_dtype))
            )
        bias_init = make.init(nnx.initializers.zeros_init(), "vocab")
        self.bias = nnx.Param(bias_init(make.rngs.params(), (config.vocab_size,), make.param_dtype))

    def __call__(self, x: Array, word_embeddings: nnx.Embed) -> Array:
        """(batch, seq, dim) -> (batch, seq, vocab)."""
        weight = word_embeddings.embedding[...].T if self.kernel is None else self.kernel[...]  # (dim, vocab)
        return x @ weight.astype(self.dtype) + self.bias[...].astype(self.dtype)


class FlaxDistilBertForMaskedLM(_HeadModel):
    """vocab_transform -> activation -> vocab_layer_norm -> vocab_projector (tied to the word embeddings)."""

    head = "masked_lm"

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        self.vocab_transform = make.linear(config.dim, config.dim, ("embed", None))
        self.vocab_layer_norm = make.layer_norm()
        self.vocab_projector = VocabProjector(config, make)

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, return_dict: Any = None, **kw
    ) -> MaskedLMOutput:
        """labels (batch, seq): token ids, -100 where no loss. Returns logits (batch, seq, vocab)."""
        out = self.distilbert(input_ids, attention_mask, **kw)
        h = ACTIVATIONS[self.config.activation](self.vocab_transform(out.last_hidden_state))  # (batch, seq, dim)
        logits = self.vocab_projector(self.vocab_layer_norm(h), self.distilbert.embeddings.word_embeddings)
        loss = None if labels is None else class_loss(logits, labels, self.config.vocab_size)
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self._output(out, return_dict)


class _FirstTokenClassifier(_HeadModel):
    """hidden[:, 0] -> pre_classifier -> ReLU -> dropout -> classifier: shared by sequence classification and
    multiple choice (one output per row there)."""

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        self.pre_classifier = make.linear(config.dim, config.dim, ("embed", None))
        self.classifier = make.linear(
            config.dim, 1 if self.head == "multiple_choice" else config.num_labels, ("embed", None)
        )
        self.dropout = make.dropout(config.seq_classif_dropout)

    def classify(self, hidden: Array) -> Array:
        """hidden (batch, seq, dim) -> logits (batch, outputs) from the first token."""
        pooled = self.dropout(jax.nn.relu(self.pre_classifier(hidden[:, 0])))  # (batch, dim)
        return self.classifier(pooled)  # (batch, outputs)


class FlaxDistilBertForSequenceClassification(_FirstTokenClassifier):
    """hidden[:, 0] -> pre_classifier -> ReLU -> dropout -> classifier (num_labels)."""

    head = "sequence_classification"

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, return_dict: Any = None, **kw
    ) -> SequenceClassifierOutput:
        """labels (batch,) integers, or (batch, num_labels) floats (multi-label), or floats (regression).
        Other keyword arguments are the base model's. Returns logits (batch, num_labels)."""
        out = self.distilbert(input_ids, attention_mask, **kw)
        logits = self.classify(out.last_hidden_state)  # (batch, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        out = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


def flatten_choices(
    model: FlaxDistilBertPreTrainedModel, input_ids: Any, attention_mask: Any, position_ids: Any, inputs_embeds: Any
) -> tuple[int, dict[str, Any]]:
    """(batch, num_choices, seq[, dim]) inputs -> ``num_choices`` and the encoder's inputs (batch * choices, ...)."""
    input_ids, attention_mask, position_ids, inputs_embeds = model.prepare_inputs(
        input_ids, attention_mask, position_ids, inputs_embeds, num_choices=True
    )
    batch, num_choices, seq = (input_ids if input_ids is not None else inputs_embeds).shape[:3]

    def flat(x: Array | None) -> Array | None:
        return None if x is None else x.reshape(batch * num_choices, seq, *x.shape[3:])

    positions = flat(position_ids) if position_ids is not None and position_ids.ndim == 3 else position_ids
    inputs = {
        "input_ids": flat(input_ids),
        "attention_mask": flat(attention_mask),
        "inputs_embeds": flat(inputs_embeds),
    }
    return num_choices, {**inputs, "position_ids": positions}


class FlaxDistilBertForMultipleChoice(_FirstTokenClassifier):
    """Each (prompt, choice) row scored by the first-token classifier with one output; softmax over the choices."""

    head = "multiple_choice"

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        return_dict: Any = None,
        **kw: Any,
    ) -> MultipleChoiceModelOutput:
        """input_ids (batch, choices, seq) or inputs_embeds (batch, choices, seq, dim); labels (batch,) -> logits
        (batch, choices). hidden_states and attentions cover the flattened (batch * choices) rows."""
        num_choices, flat = flatten_choices(self, input_ids, attention_mask, position_ids, inputs_embeds)
        out = self.distilbert(**flat, **kw)
        logits = self.classify(out.last_hidden_state).reshape(-1, num_choices)  # (batch, choices)
        loss = None if labels is None else class_loss(logits, labels, num_choices)
        out = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


class FlaxDistilBertForTokenClassification(_HeadModel):
    """dropout -> classifier on every token."""

    head = "token_classification"

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        self.dropout = make.dropout(config.dropout)
        self.classifier = make.linear(config.dim, config.num_labels, ("embed", None))

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, return_dict: Any = None, **kw
    ) -> TokenClassifierOutput:
        """labels (batch, seq), -100 where no loss. Returns logits (batch, seq, num_labels)."""
        out = self.distilbert(input_ids, attention_mask, **kw)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (batch, seq, num_labels)
        loss = None if labels is None else class_loss(logits, labels, self.config.num_labels)
        out = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


class FlaxDistilBertForQuestionAnswering(_HeadModel):
    """dropout -> qa_outputs: a start and an end logit per token."""

    head = "question_answering"

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        mu.check_qa_config(config)
        self.dropout = make.dropout(config.qa_dropout)
        self.qa_outputs = make.linear(config.dim, 2, ("embed", None))

    def __call__(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        start_positions: Any = None,
        end_positions: Any = None,
        return_dict: Any = None,
        **kw: Any,
    ) -> QuestionAnsweringModelOutput:
        """start_positions / end_positions (batch,): clamped to [0, seq], ignored when == seq.
        Returns start_logits and end_logits (batch, seq)."""
        mu.check_both_positions(start_positions, end_positions)
        out = self.distilbert(input_ids, attention_mask, **kw)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))  # (batch, seq, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]  # (batch, seq) each
        loss = None
        if start_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        out = QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
        return self._output(out, return_dict)
