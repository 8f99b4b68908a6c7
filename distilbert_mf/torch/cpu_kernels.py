"""CPU inference kernels for the PyTorch DistilBERT: faster paths beside the plain math of ``modeling.py``.

Each kernel takes over only for inference on the CPU (no gradient to record, outside ``torch.compile``,
``torch.export`` and tracing), through one dispatch line in ``modeling.py``; everywhere else the plain PyTorch
ops run. Switches (process-wide module flags): ``ONEDNN_LINEAR``, ``HEADS_AT_A_TIME_ON_CPU``. Measurements:
docs/benchmarks.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

# The linear layers run on oneDNN with the bias and activation fused: about 2x the default BLAS (MKL) in float32 on
# AMD Zen CPUs, and 5-10% faster in bfloat16. False: always F.linear.
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
# oneDNN has no bfloat16 inner product on CPUs without AVX-512 (BF16) or AMX (an AVX2-only EPYC, say): there the
# bfloat16 linear layers stay on F.linear
ONEDNN_BF16 = ONEDNN_LINEAR and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
ONEDNN_ACTIVATIONS = {  # activation name -> oneDNN post-op (attribute, algorithm)
    None: ("none", ""),
    "gelu": ("gelu", "none"),  # exact erf
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "relu": ("relu", ""),
}

# Eager attention a few (batch, head) pairs at a time, so each block of score matrices stays in cache instead of one
# (batch, heads, seq, seq) tensor going through memory. At 8 x 512 the whole forward goes from 1792 to 1246 ms in
# float32 and from 1314 to 528 ms in bfloat16, where eager attention is then faster than PyTorch's SDPA kernel. The
# numbers of the batched product: bit for bit in bfloat16, within float32 rounding in float32. 0: one batched product.
HEADS_AT_A_TIME_ON_CPU = 4


def cpu_inference(*tensors: torch.Tensor) -> bool:
    """On the CPU, with no gradient to record for ``tensors``, outside tracing, compilation and export: where the
    kernels below may replace the plain PyTorch ops."""
    return (
        all(t.device.type == "cpu" for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """float32 / bfloat16 (where oneDNN supports it: :data:`ONEDNN_BF16`) CPU inference (:func:`cpu_inference`) of a
    non-empty input."""
    return (
        ONEDNN_LINEAR
        and x.dtype == weight.dtype
        and (x.dtype == torch.float32 or (x.dtype == torch.bfloat16 and ONEDNN_BF16))
        and x.numel() > 0
        and cpu_inference(x, weight)
    )


def linear(x: torch.Tensor, layer: nn.Linear, activation: str | None = None) -> torch.Tensor:
    """``activation(layer(x))`` as one oneDNN product with the bias and activation fused: (..., in) -> (..., out)."""
    attr, algorithm = ONEDNN_ACTIVATIONS[activation]
    return torch.ops.mkldnn._linear_pointwise(x, layer.weight, layer.bias, attr, [], algorithm)


def feed_forward(x: torch.Tensor, lin1: nn.Linear, lin2: nn.Linear, activation: str) -> torch.Tensor:
    """lin1 -> activation -> lin2 with the activation fused into lin1's product: (..., dim) -> (..., dim)."""
    return linear(linear(x, lin1, activation), lin2)


def blocked_attention(q: torch.Tensor, dropout: nn.Dropout) -> bool:
    """Whether eager attention runs in blocks: CPU inference without dropout, on a non-empty input."""
    return (
        HEADS_AT_A_TIME_ON_CPU > 0 and q.numel() > 0 and not (dropout.training and dropout.p > 0) and cpu_inference(q)
    )


def attend_in_blocks(
    attend: Callable[..., tuple[torch.Tensor, Any]],
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_bias: torch.Tensor | None,
    scale: float,
    heads: int | None = None,
) -> torch.Tensor:
    """``attend``'s context, ``heads`` (batch, head) pairs at a time: q, k, v (batch, heads, seq, head_dim) ->
    (batch, heads, seq, head_dim)."""
    heads = HEADS_AT_A_TIME_ON_CPU if heads is None else heads
    batch, n_heads, seq, head_dim = q.shape
    q, k, v = (t.reshape(batch * n_heads, seq, head_dim) for t in (q, k, v))  # (batch * heads, seq, head_dim)
    if mask_bias is not None:
        mask_bias = mask_bias.expand(batch, n_heads, 1, seq).reshape(batch * n_heads, 1, seq)  # (batch * heads, 1, k)
    context = torch.empty_like(q)  # (batch * heads, seq, head_dim)
    for i in range(0, batch * n_heads, heads):
        block = slice(i, i + heads)
        bias = None if mask_bias is None else mask_bias[block]
        context[block] = attend(q[block], k[block], v[block], bias, scale)[0]
    return context.view(batch, n_heads, seq, head_dim)


__all__ = [
    "HEADS_AT_A_TIME_ON_CPU",
    "ONEDNN_LINEAR",
    "attend_in_blocks",
    "blocked_attention",
    "cpu_inference",
    "feed_forward",
    "linear",
    "use_onednn",
]
