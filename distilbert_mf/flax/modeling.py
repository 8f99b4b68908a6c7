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
(``sharding.py``). Dropout follows ``model.train()`` / ``model.eval()``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from distilbert_mf import modeling_utils as mu
from distilbert_mf import outputs
from distilbert_mf.checkpoint.names import sinusoidal_table
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.flax.loading import FlaxDistilBertPreTrainedModel, PositionTable, declaring_shapes_only
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
LAYER_NORM_EPS = 1e-12
IGNORE_INDEX = -100
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


# ----------------------------------------------------------------------------------------------------------------------
# Layer construction: one dtype policy, transformers' initialisation, logical axis names as metadata only
# ----------------------------------------------------------------------------------------------------------------------


def _with_axes(init: Callable[..., Array], *axes: str | None) -> Callable[..., Array]:
    """Attach logical axis names to a parameter (``eager_sharding=False``: a no-op until you shard the model).

    While a loader declares shapes only (``loading.shapes_only``) the parameter is a placeholder it fills next."""

    def init_or_placeholder(key: Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> Any:
        return jax.ShapeDtypeStruct(shape, dtype) if declaring_shapes_only() else init(key, shape, dtype)

    return nnx.with_partitioning(init_or_placeholder, axes, eager_sharding=False)


@dataclasses.dataclass(frozen=True)
class LayerFactory:
    """Builds every layer with the same dtypes and transformers' initialisation.

    Weights ~ normal(initializer_range), biases 0, LayerNorm scale 1 / bias 0, the padding token's embedding row 0.
    """

    config: DistilBertConfig
    dtype: jnp.dtype  # compute
    param_dtype: jnp.dtype  # storage
    rngs: nnx.Rngs

    def linear(self, d_in: int, d_out: int, axes: tuple[str | None, str | None]) -> nnx.Linear:
        return nnx.Linear(
            d_in,
            d_out,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            kernel_init=_with_axes(nnx.initializers.normal(self.config.initializer_range), *axes),
            bias_init=_with_axes(nnx.initializers.zeros_init(), axes[1]),
        )

    def layer_norm(self) -> nnx.LayerNorm:
        return nnx.LayerNorm(
            self.config.dim,
            epsilon=LAYER_NORM_EPS,
            use_fast_variance=False,
            dtype=self.dtype,
            param_dtype=self.param_dtype,
            rngs=self.rngs,
            scale_init=_with_axes(nnx.initializers.ones_init(), "embed"),
            bias_init=_with_axes(nnx.initializers.zeros_init(), "embed"),
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
            embedding_init=_with_axes(init, *axes),
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
        self.q_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.k_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.v_lin = make.linear(config.dim, config.dim, ("embed", "heads"))
        self.out_lin = make.linear(config.dim, config.dim, ("heads", "embed"))
        self.dropout = make.dropout(config.attention_dropout)

    def __call__(self, x: Array, mask_bias: Array | None) -> tuple[Array, Array]:
        """x (batch, seq, dim), mask_bias (batch, 1, 1, seq) -> (output (batch, seq, dim), probs (batch, heads, seq, seq))."""
        batch, seq, dim = x.shape

        def split_heads(t: Array) -> Array:  # (batch, seq, dim) -> (batch, heads, seq, head_dim)
            return t.reshape(batch, seq, self.n_heads, dim // self.n_heads).transpose(0, 2, 1, 3)

        q, k, v = split_heads(self.q_lin(x)), split_heads(self.k_lin(x)), split_heads(self.v_lin(x))
        scale = (dim // self.n_heads) ** -0.5
        if (self.dropout.deterministic or self.dropout.rate == 0) and per_head_attention():
            context, probs = jax.lax.map(  # one (batch, head) at a time: its scores stay in the CPU cache
                lambda qkvb: attend(*qkvb, scale), per_head_operands(q, k, v, mask_bias)
            )
            context, probs = context.reshape(q.shape), probs.reshape(batch, self.n_heads, seq, seq)
        else:
            context, probs = attend(q, k, v, mask_bias, scale, self.dropout)
        context = context.transpose(0, 2, 1, 3).reshape(batch, seq, dim)  # (batch, seq, dim)
        return self.out_lin(context), probs


def attend(q: Array, k: Array, v: Array, mask_bias: Array | None, scale: float, dropout: Any = None) -> tuple:
    """Softmax attention: q, k, v (..., seq, head_dim) -> context (..., q_len, head_dim), probs (..., q_len, k_len)."""
    scores = (q @ k.swapaxes(-1, -2)) * scale  # (..., q_len, k_len)
    if mask_bias is not None:
        scores = scores + mask_bias  # (..., q_len, k_len)
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(q.dtype)  # (..., q_len, k_len)
    if dropout is not None:
        probs = dropout(probs)
    return probs @ v, probs


# Inference on the CPU computes attention one (batch, head) pair at a time (``jax.lax.map``): XLA:CPU materialises the
# whole (batch, heads, seq, seq) score tensor otherwise, and at seq 512 that pass through memory costs 2.5x the time
# (docs/benchmarks.md). Same numbers either way; set to False to always use one batched product.
PER_HEAD_ATTENTION_ON_CPU = True


def per_head_attention() -> bool:
    return PER_HEAD_ATTENTION_ON_CPU and jax.default_backend() == "cpu"


def per_head_operands(q: Array, k: Array, v: Array, mask_bias: Array | None) -> tuple[Array, ...]:
    """(batch, heads, seq, head_dim) inputs and a (batch, 1, 1, seq) bias as (batch * heads, ...) stacks."""
    batch, heads, seq, _ = q.shape
    if mask_bias is None:
        mask_bias = jnp.zeros((batch, 1, 1, seq), q.dtype)
    bias = jnp.broadcast_to(mask_bias, (batch, heads, 1, seq)).reshape(batch * heads, 1, seq)
    return (*(t.reshape(batch * heads, seq, -1) for t in (q, k, v)), bias)


class FFN(nnx.Module):
    """Position-wise feed-forward: lin1 -> activation -> lin2 -> dropout."""

    def __init__(self, config: DistilBertConfig, make: LayerFactory):
        self.activation = config.activation
        self.lin1 = make.linear(config.dim, config.hidden_dim, ("embed", "mlp"))
        self.lin2 = make.linear(config.hidden_dim, config.dim, ("mlp", "embed"))
        self.dropout = make.dropout(config.dropout)

    def __call__(self, x: Array) -> Array:
        """(batch, seq, dim) -> (batch, seq, dim)."""
        rows = ffn_rows_at_a_time(x.shape[0] * x.shape[1]) if x.dtype == jnp.float32 else 0
        if rows and (self.dropout.deterministic or self.dropout.rate == 0):
            return map_rows(self.feed_forward, x, rows)  # (batch, seq, dim)
        return self.dropout(self.feed_forward(x))

    def feed_forward(self, x: Array) -> Array:
        """(..., dim) -> (..., dim), without dropout."""
        return self.lin2(ACTIVATIONS[self.activation](self.lin1(x)))  # (..., dim)


# Inference on the CPU runs the feed-forward FFN_ROWS_ON_CPU tokens at a time (``jax.lax.map``), so the
# (tokens, hidden_dim) activation stays in cache between lin1 and lin2 instead of going through memory: the
# feed-forward 24 % faster at 32 x 128, the same float32 numbers. bfloat16 compute keeps one product (XLA:CPU rounds
# its bfloat16 intermediates differently for other block shapes). Set to 0 to always use one product.
FFN_ROWS_ON_CPU = 512


def ffn_rows_at_a_time(tokens: int) -> int:
    """Tokens per block of the CPU feed-forward, or 0 for one product (other backends, few tokens, switched off)."""
    if not FFN_ROWS_ON_CPU or tokens <= FFN_ROWS_ON_CPU or jax.default_backend() != "cpu":
        return 0
    blocks = -(-tokens // FFN_ROWS_ON_CPU)
    return -(-tokens // blocks)  # as even as possible: at most blocks - 1 padding rows in all


def map_rows(fn: Callable[[Array], Array], x: Array, rows: int) -> Array:
    """``fn`` over the (batch * seq) tokens of x (batch, seq, dim), ``rows`` tokens at a time (padded, then cut)."""
    batch, seq, dim = x.shape
    tokens = batch * seq
    blocks = -(-tokens // rows)
    flat = jnp.pad(x.reshape(tokens, dim), ((0, blocks * rows - tokens), (0, 0)))  # (blocks * rows, dim)
    out = jax.lax.map(fn, flat.reshape(blocks, rows, dim))  # (blocks, rows, dim)
    return out.reshape(blocks * rows, -1)[:tokens].reshape(batch, seq, -1)  # (batch, seq, dim)


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
# Input checks (only where values are concrete: inside jit they are tracers)
# ----------------------------------------------------------------------------------------------------------------------


def _concrete(x: Array) -> np.ndarray | None:
    """The values of ``x`` when known now (eager call), ``None`` under a jax transformation."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x)


def _as_int_array(name: str, value: Any, ndim: int, what: str) -> Array:
    array = jnp.asarray(value)
    mu.check_shape(name, array.shape, ndim, what)
    if not jnp.issubdtype(array.dtype, jnp.integer):
        raise TypeError(f"{name} must hold integers, got dtype {array.dtype}")
    return array


def attention_bias(attention_mask: Array, dtype: jnp.dtype) -> Array:
    """attention_mask (batch, seq), 1 = attend, 0 = padding -> additive bias (batch, 1, 1, seq) in ``dtype``."""
    keep = attention_mask[:, None, None, :] != 0  # (batch, 1, 1, seq)
    return jnp.where(keep, jnp.zeros((), dtype), jnp.finfo(dtype).min).astype(dtype)


# ----------------------------------------------------------------------------------------------------------------------
# The base model
# ----------------------------------------------------------------------------------------------------------------------


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
        make = _layer_factory(config, rngs, dtype, param_dtype)
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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        token_type_ids: Any = None,
        head_mask: Any = None,
    ) -> BaseModelOutput:
        """input_ids (batch, seq) or inputs_embeds (batch, seq, dim); attention_mask (batch, seq) 1 = token, 0 = pad;
        position_ids (batch, seq) (default 0..seq-1). Returns last_hidden_state (batch, seq, dim)."""
        mu.reject_unsupported_inputs(token_type_ids, head_mask)
        mu.check_input_choice(input_ids, inputs_embeds)
        config = self.config
        if input_ids is not None:
            input_ids = _as_int_array("input_ids", input_ids, 2, "(batch, seq)")
            values = _concrete(input_ids)
            if values is not None and values.size:
                mu.check_token_range(int(values.min()), int(values.max()), config.vocab_size)
            batch, seq = input_ids.shape
        else:
            inputs_embeds = jnp.asarray(inputs_embeds)
            mu.check_shape("inputs_embeds", inputs_embeds.shape, 3, "(batch, seq, dim)")
            batch, seq, dim = inputs_embeds.shape
            if dim != config.dim:
                raise ValueError(
                    f"inputs_embeds must have last dimension dim={config.dim}, got shape {(batch, seq, dim)}"
                )
        if position_ids is None:
            mu.check_sequence_length(seq, config)
            position_ids = jnp.arange(seq, dtype=jnp.int32)[None, :]  # (1, seq)
        else:
            position_ids = jnp.asarray(position_ids)
            if position_ids.ndim not in (1, 2) or position_ids.shape[-1] != seq:
                raise ValueError(
                    f"position_ids must have shape (seq,) or (batch, seq) with seq={seq}, got {tuple(position_ids.shape)}"
                )
            position_ids = _as_int_array("position_ids", jnp.atleast_2d(position_ids), 2, "(batch, seq)")
            values = _concrete(position_ids)
            if (
                values is not None
                and values.size
                and (values.min() < 0 or values.max() >= config.max_position_embeddings)
            ):
                raise ValueError(
                    f"position_ids must lie in [0, max_position_embeddings={config.max_position_embeddings}), got "
                    f"values from {int(values.min())} to {int(values.max())}"
                )
        mask_bias = None
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
            if attention_mask.shape != (batch, seq):
                raise ValueError(
                    f"attention_mask must have shape (batch, seq) = {(batch, seq)}, got {tuple(attention_mask.shape)}"
                )
            mask_bias = attention_bias(attention_mask, self.dtype)  # (batch, 1, 1, seq)

        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (batch, seq, dim)
        return self.transformer(x, mask_bias, output_attentions, output_hidden_states)


def _layer_factory(config: DistilBertConfig, rngs: nnx.Rngs | None, dtype: Any, param_dtype: Any) -> LayerFactory:
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
    return LayerFactory(config, dtype, param_dtype, rngs)


# ----------------------------------------------------------------------------------------------------------------------
# Losses: PyTorch's, mean reductions, computed in float32
# ----------------------------------------------------------------------------------------------------------------------


def cross_entropy(logits: Array, labels: Any, ignore_index: int = IGNORE_INDEX) -> Array:
    """torch.nn.CrossEntropyLoss: mean over labels != ignore_index. logits (..., classes), labels (...) -> ().

    A batch whose labels are all ignored gives 0.0 (and zero gradients), not PyTorch's NaN."""
    num_classes = logits.shape[-1]
    logits = logits.reshape(-1, num_classes).astype(jnp.float32)  # (n, classes)
    labels = jnp.asarray(labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels must be integer class ids for this loss, got dtype {labels.dtype}")
    if labels.size != logits.shape[0]:
        raise ValueError(
            f"labels must have shape {logits.shape[:-1]} (one class id per prediction), got {labels.shape}"
        )
    labels = labels.reshape(-1)  # (n,)
    values = _concrete(labels)
    if values is not None:
        bad = values[(values != ignore_index) & ((values < 0) | (values >= num_classes))]
        if bad.size:
            raise ValueError(
                f"labels contains class id {int(bad[0])}, outside [0, {num_classes}) (use {ignore_index} to ignore "
                "a position)"
            )
    valid = labels != ignore_index  # (n,)
    log_probs = jax.nn.log_softmax(logits, axis=-1)  # (n, classes)
    nll = -jnp.take_along_axis(log_probs, jnp.where(valid, labels, 0)[:, None], axis=-1)[:, 0]  # (n,)
    return jnp.sum(jnp.where(valid, nll, 0.0)) / jnp.maximum(jnp.sum(valid), 1)


def mse(predictions: Array, targets: Array) -> Array:
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
    problem_type = mu.problem_type_for(config, bool(jnp.issubdtype(labels.dtype, jnp.integer)))
    if problem_type == "single_label_classification":
        return cross_entropy(logits, labels)
    if labels.size != logits.size:
        raise ValueError(f"{problem_type} labels must have the logits' shape {logits.shape}, got {labels.shape}")
    if problem_type == "regression":
        return mse(logits, labels)
    return binary_cross_entropy_with_logits(logits, labels.reshape(logits.shape))


def question_answering_loss(start_logits: Array, end_logits: Array, start_positions: Any, end_positions: Any) -> Array:
    """Mean of start and end cross entropies; positions clamped to [0, seq] and ignored when == seq."""
    seq = start_logits.shape[1]

    def position_loss(logits: Array, positions: Any, name: str) -> Array:
        positions = jnp.asarray(positions)
        if not jnp.issubdtype(positions.dtype, jnp.integer):
            raise TypeError(f"{name} must be integer token positions, got dtype {positions.dtype}")
        if positions.ndim > 1:
            positions = positions.squeeze(-1)
        return cross_entropy(logits, jnp.clip(positions, 0, seq), ignore_index=seq)

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
        make = _layer_factory(config, rngs, dtype, param_dtype)
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
            kernel_init = _with_axes(nnx.initializers.normal(config.initializer_range), "embed", "vocab")
            self.kernel = nnx.data(
                nnx.Param(kernel_init(make.rngs.params(), (config.dim, config.vocab_size), make.param_dtype))
            )
        bias_init = _with_axes(nnx.initializers.zeros_init(), "vocab")
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
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, **kwargs: Any
    ) -> MaskedLMOutput:
        """labels (batch, seq): token ids, -100 where no loss. Returns logits (batch, seq, vocab)."""
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        h = ACTIVATIONS[self.config.activation](self.vocab_transform(out.last_hidden_state))  # (batch, seq, dim)
        logits = self.vocab_projector(self.vocab_layer_norm(h), self.distilbert.embeddings.word_embeddings)
        loss = None if labels is None else cross_entropy(logits, labels)
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


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
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, **kwargs: Any
    ) -> SequenceClassifierOutput:
        """labels (batch,) integers, or (batch, num_labels) floats (multi-label), or floats (regression).
        Other keyword arguments are the base model's. Returns logits (batch, num_labels)."""
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        logits = self.classify(out.last_hidden_state)  # (batch, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


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
        **kwargs: Any,
    ) -> MultipleChoiceModelOutput:
        """input_ids (batch, choices, seq) or inputs_embeds (batch, choices, seq, dim); labels (batch,) -> logits
        (batch, choices). hidden_states and attentions cover the flattened (batch * choices) rows."""
        mu.check_input_choice(input_ids, inputs_embeds)
        if input_ids is not None:
            input_ids = _as_int_array("input_ids", input_ids, 3, "(batch, choices, seq)")
            batch, choices, seq = input_ids.shape
            input_ids = input_ids.reshape(batch * choices, seq)
        else:
            inputs_embeds = jnp.asarray(inputs_embeds)
            mu.check_shape("inputs_embeds", inputs_embeds.shape, 4, "(batch, choices, seq, dim)")
            batch, choices, seq, dim = inputs_embeds.shape
            inputs_embeds = inputs_embeds.reshape(batch * choices, seq, dim)
        flatten = functools.partial(_flatten_choices, shape=(batch, choices, seq))
        out = self.distilbert(
            input_ids,
            flatten("attention_mask", attention_mask),
            position_ids=flatten("position_ids", position_ids),
            inputs_embeds=inputs_embeds,
            **kwargs,
        )
        logits = self.classify(out.last_hidden_state).reshape(batch, choices)  # (batch, choices)
        loss = None if labels is None else cross_entropy(logits, labels)
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


def _flatten_choices(name: str, value: Any, shape: tuple[int, int, int]) -> Array | None:
    """(batch, choices, seq) -> (batch * choices, seq); (seq,) or (1, seq) position ids pass through."""
    if value is None:
        return None
    value = jnp.asarray(value)
    if value.ndim == 3:
        if value.shape != shape:
            raise ValueError(f"{name} must have shape (batch, choices, seq) = {shape}, got {tuple(value.shape)}")
        return value.reshape(shape[0] * shape[1], shape[2])
    if name == "position_ids" and value.ndim in (1, 2):
        return value  # one row of positions for every (example, choice); the encoder checks its length
    raise ValueError(f"{name} must have shape (batch, choices, seq) = {shape}, got {tuple(value.shape)}")


class FlaxDistilBertForTokenClassification(_HeadModel):
    """dropout -> classifier on every token."""

    head = "token_classification"

    def build_head(self, config: DistilBertConfig, make: LayerFactory) -> None:
        self.dropout = make.dropout(config.dropout)
        self.classifier = make.linear(config.dim, config.num_labels, ("embed", None))

    def __call__(
        self, input_ids: Any = None, attention_mask: Any = None, *, labels: Any = None, **kwargs: Any
    ) -> TokenClassifierOutput:
        """labels (batch, seq), -100 where no loss. Returns logits (batch, seq, num_labels)."""
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (batch, seq, num_labels)
        loss = None if labels is None else cross_entropy(logits, labels)
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


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
        **kwargs: Any,
    ) -> QuestionAnsweringModelOutput:
        """start_positions / end_positions (batch,): clamped to [0, seq], ignored when == seq.
        Returns start_logits and end_logits (batch, seq)."""
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions for the loss, or neither")
        out = self.distilbert(input_ids, attention_mask, **kwargs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))  # (batch, seq, 2)
        start_logits, end_logits = logits[..., 0], logits[..., 1]  # (batch, seq) each
        loss = None
        if start_positions is not None:
            loss = question_answering_loss(start_logits, end_logits, start_positions, end_positions)
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
