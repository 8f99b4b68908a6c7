"""CPU inference kernels for the Flax DistilBERT: faster paths beside the plain math of ``modeling.py``.

XLA:CPU materialises large intermediates (the (batch, heads, seq, seq) scores, the (tokens, hidden_dim) feed-forward
activation) and pays a pass through memory for each; these kernels compute the same numbers in cache-sized pieces
with ``jax.lax.map``. Each takes over through one dispatch line in ``modeling.py``, only on the CPU backend, without
dropout, for non-empty inputs of known (non-symbolic) shape — under ``jax.export`` with symbolic dimensions the plain
math runs. Switches (process-wide module flags): ``PER_HEAD_ATTENTION_ON_CPU``, ``FFN_ROWS_ON_CPU``. Measurements:
docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

Array = jax.Array

# Attention one (batch, head) pair at a time: at seq 512 the pass of the whole score tensor through memory costs 2.5x
# the time. Same numbers either way; False: always one batched product.
PER_HEAD_ATTENTION_ON_CPU = True

# The feed-forward FFN_ROWS_ON_CPU tokens at a time, so the (tokens, hidden_dim) activation stays in cache between
# lin1 and lin2: the feed-forward 24 % faster at 32 x 128, the same float32 numbers on AVX-512 CPUs (within 1-2 ulps
# on AVX2 ones, whose XLA:CPU matmul tiles by rows and may sum a row in another order). bfloat16 compute keeps one
# product (XLA:CPU rounds its bfloat16 intermediates differently for other block shapes). 0: always one product.
FFN_ROWS_ON_CPU = 512


def _static(shape: tuple[Any, ...]) -> bool:
    return all(isinstance(d, int) for d in shape)


def _no_dropout(dropout: Any) -> bool:
    return dropout.deterministic or dropout.rate == 0


def per_head_attention() -> bool:
    """The per-head switch is on and JAX runs on the CPU."""
    return PER_HEAD_ATTENTION_ON_CPU and jax.default_backend() == "cpu"


def per_head_applies(q: Array, dropout: Any) -> bool:
    """Whether attention runs one (batch, head) pair at a time: CPU, no dropout, a non-empty q of static shape."""
    return per_head_attention() and _no_dropout(dropout) and _static(q.shape) and q.size > 0


def per_head_operands(q: Array, k: Array, v: Array, mask_bias: Array | None) -> tuple[Array, ...]:
    """(batch, heads, seq, head_dim) inputs and a (batch, 1, 1, seq) bias as (batch * heads, ...) stacks."""
    batch, heads, seq, _ = q.shape
    if mask_bias is None:
        mask_bias = jnp.zeros((batch, 1, 1, seq), q.dtype)
    bias = jnp.broadcast_to(mask_bias, (batch, heads, 1, seq)).reshape(batch * heads, 1, seq)
    return (*(t.reshape(batch * heads, seq, -1) for t in (q, k, v)), bias)


def attend_per_head(
    attend: Callable[..., tuple[Array, Array]], q: Array, k: Array, v: Array, mask_bias: Array | None, scale: float
) -> tuple[Array, Array]:
    """``attend`` one (batch, head) pair at a time: -> context (batch, heads, seq, head_dim), probs (b, h, q, k)."""
    batch, heads, seq, _ = q.shape
    context, probs = jax.lax.map(lambda qkvb: attend(*qkvb, scale), per_head_operands(q, k, v, mask_bias))
    return context.reshape(q.shape), probs.reshape(batch, heads, seq, seq)


def ffn_rows_at_a_time(tokens: int) -> int:
    """Tokens per block of the CPU feed-forward, or 0 for one product (other backends, few tokens, switched off)."""
    if not FFN_ROWS_ON_CPU or tokens <= FFN_ROWS_ON_CPU or jax.default_backend() != "cpu":
        return 0
    blocks = -(-tokens // FFN_ROWS_ON_CPU)
    return -(-tokens // blocks)  # as even as possible: at most blocks - 1 padding rows in all


def ffn_rows(x: Array, dropout: Any) -> int:
    """Tokens per block for the feed-forward of ``x`` (batch, seq, dim): float32 CPU inference of a static shape;
    0 for one product."""
    if x.dtype != jnp.float32 or not _static(x.shape) or not _no_dropout(dropout):
        return 0
    return ffn_rows_at_a_time(x.shape[0] * x.shape[1])


def map_rows(fn: Callable[[Array], Array], x: Array, rows: int) -> Array:
    """``fn`` over the (batch * seq) tokens of x (batch, seq, dim), ``rows`` tokens at a time (padded, then cut)."""
    batch, seq, dim = x.shape
    tokens = batch * seq
    blocks = -(-tokens // rows)
    flat = jnp.pad(x.reshape(tokens, dim), ((0, blocks * rows - tokens), (0, 0)))  # (blocks * rows, dim)
    out = jax.lax.map(fn, flat.reshape(blocks, rows, dim))  # (blocks, rows, dim)
    return out.reshape(blocks * rows, -1)[:tokens].reshape(batch, seq, -1)  # (batch, seq, dim)


__all__ = [
    "FFN_ROWS_ON_CPU",
    "PER_HEAD_ATTENTION_ON_CPU",
    "attend_per_head",
    "ffn_rows",
    "ffn_rows_at_a_time",
    "map_rows",
    "per_head_applies",
    "per_head_attention",
    "per_head_operands",
]
