"""DistilBERT in PyTorch: the math, top to bottom.

DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT") is BERT with half the layers, no
token-type embeddings and no pooler. This file matches transformers' PyTorch DistilBERT number for number:
post-LayerNorm blocks (``h = sa_layer_norm(attn(x) + x)``, ``out = output_layer_norm(ffn(h) + h)``), LayerNorm
eps 1e-12, exact erf GELU, and one masking rule (padding keys get the most negative finite value of the compute
dtype added to their scores; softmax in float32; a fully padded row stays finite).

Module and attribute names equal the checkpoint names, so the canonical state dict *is* ``state_dict()``.
CPU inference kernels live in :mod:`distilbert_mf.torch.cpu_kernels` (one dispatch line each below); loading and
saving in :mod:`distilbert_mf.torch.loading` over the neutral :mod:`distilbert_mf.checkpoint.pretrained`; input
and label rules in :mod:`distilbert_mf.modeling_utils`.
"""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
import torch.utils._pytree as pytree
from torch import nn
from torch.utils.checkpoint import checkpoint

from distilbert_mf import modeling_utils as mu
from distilbert_mf.checkpoint.names import sinusoidal_table
from distilbert_mf.checkpoint.pretrained import PreTrainedModel
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.modeling_utils import IGNORE_INDEX, LAYER_NORM_EPS
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from distilbert_mf.torch import cpu_kernels

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def activation_fn(name: str) -> Any:
    """The feed-forward activation: exact erf GELU, tanh GELU or ReLU."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return functools.partial(F.gelu, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}; expected gelu, gelu_new, gelu_pytorch_tanh or relu")


def torch_dtype(dtype: Any) -> torch.dtype | None:
    """``'bf16'``, ``torch.bfloat16``, ``np.float32``... -> the torch dtype (``None`` stays ``None``)."""
    name = mu.dtype_name(dtype)
    return None if name is None else TORCH_DTYPES[name]


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict); CPU inference runs the product on oneDNN."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_kernels.use_onednn(x, self.weight):  # CPU inference kernel
            return cpu_kernels.linear(x, self)
        return F.linear(x, self.weight, self.bias)  # (..., out)


# ----------------------------------------------------------------------------------------------------- the encoder


class Embeddings(nn.Module):
    """Word + position embeddings, LayerNorm, dropout (no token types)."""

    def __init__(self, config: DistilBertConfig, *, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        # the tables start empty and init_weights or a checkpoint fills them (no wasted init, cheap on meta)
        vocab = torch.empty(config.vocab_size, config.dim, **kw)
        positions = torch.empty(config.max_position_embeddings, config.dim, **kw)
        self.word_embeddings = nn.Embedding(config.vocab_size, config.dim, config.pad_token_id, _weight=vocab)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, config.dim, _weight=positions)
        self.position_embeddings.weight.requires_grad_(not config.sinusoidal_pos_embds)  # fixed sin/cos table
        self.LayerNorm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS, **kw)
        self.dropout = nn.Dropout(config.dropout)

    def forward(
        self,
        input_ids: torch.Tensor | None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if inputs_embeds is None:
            inputs_embeds = self.word_embeddings(input_ids)  # (batch, seq, dim)
        if position_ids is None:
            position_ids = torch.arange(inputs_embeds.shape[1], device=inputs_embeds.device)  # (seq,)
        x = inputs_embeds + self.position_embeddings(position_ids)  # (batch, seq, dim)
        return self.dropout(self.LayerNorm(x))


class MultiHeadSelfAttention(nn.Module):
    """Scaled dot-product self-attention over ``n_heads`` heads; ``"sdpa"`` or ``"eager"`` kernels."""

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        attn_implementation: str = "sdpa",
        device: Any = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        kw = {"device": device, "dtype": dtype}
        self.n_heads = config.n_heads
        self.head_dim = config.dim // config.n_heads
        self.scale = self.head_dim**-0.5
        self.attn_implementation = attn_implementation
        self.q_lin = Linear(config.dim, config.dim, **kw)
        self.k_lin = Linear(config.dim, config.dim, **kw)
        self.v_lin = Linear(config.dim, config.dim, **kw)
        self.out_lin = Linear(config.dim, config.dim, **kw)
        self.dropout = nn.Dropout(config.attention_dropout)

    def split_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = x.shape
        return x.view(batch, seq, self.n_heads, self.head_dim).transpose(1, 2)  # (batch, heads, seq, head_dim)

    def merge_heads(self, x: torch.Tensor) -> torch.Tensor:
        batch, _, seq, _ = x.shape
        return x.transpose(1, 2).reshape(batch, seq, self.n_heads * self.head_dim)  # (batch, seq, dim)

    def forward(
        self, x: torch.Tensor, mask_bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (batch, seq, dim), ``mask_bias`` (batch, 1, 1, seq) additive -> (batch, seq, dim), probabilities."""
        q, k, v = self.split_heads(self.q_lin(x)), self.split_heads(self.k_lin(x)), self.split_heads(self.v_lin(x))
        if self.attn_implementation == "sdpa" and not output_attentions:
            p = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_bias, dropout_p=p)  # (b, h, seq, hd)
            probs = None
        elif not output_attentions and cpu_kernels.blocked_attention(q, self.dropout):  # CPU inference kernel
            context, probs = cpu_kernels.attend_in_blocks(attend, q, k, v, mask_bias, self.scale), None
        else:
            context, probs = attend(q, k, v, mask_bias, self.scale, self.dropout)
        return self.out_lin(self.merge_heads(context)), probs


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    mask_bias: torch.Tensor | None,
    scale: float,
    dropout: nn.Module | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention: q, k, v (..., seq, head_dim) -> context (..., q_len, head_dim), probs (..., q_len, k_len)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # (..., q_len, k_len)
    if mask_bias is not None:
        scores = scores + mask_bias
    probs = torch.softmax(scores, dim=-1).to(q.dtype)  # (..., q_len, k_len)
    return torch.matmul(probs if dropout is None else dropout(probs), v), probs  # (..., q_len, head_dim)


class FFN(nn.Module):
    """Position-wise feed-forward: lin1 -> activation -> lin2 -> dropout."""

    def __init__(self, config: DistilBertConfig, *, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.lin1 = Linear(config.dim, config.hidden_dim, device=device, dtype=dtype)
        self.lin2 = Linear(config.hidden_dim, config.dim, device=device, dtype=dtype)
        self.activation = activation_fn(config.activation)
        self.activation_name = config.activation
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if cpu_kernels.use_onednn(x, self.lin1.weight):  # CPU inference kernel: the activation fused into lin1
            return self.dropout(cpu_kernels.feed_forward(x, self.lin1, self.lin2, self.activation_name))
        return self.dropout(self.lin2(self.activation(self.lin1(x))))  # (batch, seq, dim)


class TransformerBlock(nn.Module):
    """One post-LayerNorm encoder block."""

    def __init__(self, config: DistilBertConfig, *, attn_implementation: str = "sdpa", **kw: Any) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config, attn_implementation=attn_implementation, **kw)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS, **kw)
        self.ffn = FFN(config, **kw)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS, **kw)

    def forward(
        self, x: torch.Tensor, mask_bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, probs = self.attention(x, mask_bias, output_attentions)  # (batch, seq, dim)
        h = self.sa_layer_norm(a + x)
        out = self.output_layer_norm(self.ffn(h) + h)
        return out, probs


class Transformer(nn.Module):
    """``n_layers`` blocks; returns plain tuples so it compiles with ``fullgraph=True``."""

    def __init__(self, config: DistilBertConfig, *, attn_implementation: str = "sdpa", **kw: Any) -> None:
        super().__init__()
        self.layer = nn.ModuleList(
            TransformerBlock(config, attn_implementation=attn_implementation, **kw) for _ in range(config.n_layers)
        )
        self.gradient_checkpointing = False
        self.checkpoint_kwargs: dict[str, Any] = {"use_reentrant": False}

    def forward(
        self,
        x: torch.Tensor,
        mask_bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """``x`` (batch, seq, dim) -> last hidden state, hidden states (n_layers + 1), attentions (n_layers)."""
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for block in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, probs = checkpoint(block, x, mask_bias, output_attentions, **self.checkpoint_kwargs)
            else:
                x, probs = block(x, mask_bias, output_attentions)  # (batch, seq, dim)
            if hidden_states is not None:
                hidden_states = (*hidden_states, x)
            if attentions is not None:
                attentions = (*attentions, probs)
        return x, hidden_states, attentions


# ----------------------------------------------------------------------------------------------------- inputs


class TorchOps:
    """:class:`distilbert_mf.modeling_utils.TensorOps` for torch tensors (values are read outside compilation)."""

    @staticmethod
    def shape(x: torch.Tensor) -> tuple[Any, ...]:
        return tuple(x.shape)

    @staticmethod
    def is_integer(x: torch.Tensor) -> bool:
        return not (x.is_floating_point() or x.is_complex() or x.dtype == torch.bool)

    @staticmethod
    def value_range(x: torch.Tensor) -> tuple[int, int] | None:
        if torch.compiler.is_compiling() or x.numel() == 0:
            return None
        return int(x.min()), int(x.max())

    @staticmethod
    def first_invalid_label(labels: torch.Tensor, num_classes: int, ignore_index: int) -> int | None:
        if torch.compiler.is_compiling() or labels.numel() == 0:
            return None
        bad = labels[(labels != ignore_index) & ((labels < 0) | (labels >= num_classes))]
        return int(bad.reshape(-1)[0]) if bad.numel() else None


OPS = TorchOps()


def numpy_to_tensor(array: Any) -> torch.Tensor:
    """A CPU tensor over ``array``'s memory where possible (bfloat16 via ``ml_dtypes``; read-only arrays copied)."""
    a = np.ascontiguousarray(array)
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype.name == "bfloat16":
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return torch.from_numpy(a)


def as_tensor(value: Any, name: str, device: torch.device) -> torch.Tensor:
    """A tensor, numpy array or nested list as a tensor on ``device`` (numpy memory shared where possible)."""
    if isinstance(value, torch.Tensor):
        return value
    if not isinstance(value, (np.ndarray, list, tuple, np.generic)):
        raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(value).__name__}")
    return numpy_to_tensor(np.asarray(value)).to(device)


def as_ids(x: torch.Tensor | None) -> torch.Tensor | None:
    """Integer ids as int64 (int32 kept)."""
    return x if x is None or x.dtype in (torch.int64, torch.int32) else x.long()


def padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(batch, seq) mask, nonzero = attend -> additive (batch, 1, 1, seq): 0 or the most negative finite value.

    ``None`` without a mask; an all-ones mask also gives ``None`` (no bias: the fast kernel) outside of compilation.
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()
    if not torch.compiler.is_compiling() and bool(keep.all()):
        return None
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
    return bias[:, None, None, :]  # (batch, 1, 1, seq)


def as_labels(value: Any, like: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """Labels as a tensor on ``like``'s device (numpy accepted); integer labels become int64."""
    tensor = as_tensor(value, name, like.device)
    return tensor.long() if OPS.is_integer(tensor) else tensor


# ----------------------------------------------------------------------------------------------------- base class


class DistilBertPreTrainedModel(nn.Module, PreTrainedModel):
    """What every PyTorch DistilBERT model shares: config, initialisation, input preparation, and (from
    :class:`~distilbert_mf.checkpoint.pretrained.PreTrainedModel`) loading and saving."""

    framework: ClassVar[str] = "pt"
    weights_io: ClassVar[str] = "distilbert_mf.torch.loading"
    load_options: ClassVar[dict[str, Any]] = {
        "device": None,
        "device_map": None,
        "attn_implementation": "sdpa",
        "torch_dtype": None,
    }

    def __init__(self, config: DistilBertConfig, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        if not isinstance(config, DistilBertConfig):
            raise TypeError(
                f"config must be a distilbert_mf.DistilBertConfig, got {type(config).__name__} "
                "(read a config.json with DistilBertConfig.from_pretrained)"
            )
        check_attn_implementation(attn_implementation)
        self.config = config

    @staticmethod
    def factory_kwargs(device: Any, dtype: Any) -> dict[str, Any]:
        """``device=`` / ``dtype=`` for the submodules (dtype given as a string or torch dtype)."""
        return {"device": device, "dtype": torch_dtype(dtype)}

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    @property
    def attn_implementation(self) -> str:
        return self.base_model.transformer.layer[0].attention.attn_implementation

    def set_attn_implementation(self, attn_implementation: str) -> None:
        """Switch every attention layer to ``"sdpa"`` or ``"eager"``."""
        check_attn_implementation(attn_implementation)
        for block in self.base_model.transformer.layer:
            block.attention.attn_implementation = attn_implementation

    # -- inputs -------------------------------------------------------------------------------------------------

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
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
        """Numpy inputs as tensors on the model's device, checked by :func:`modeling_utils.check_model_inputs`."""
        device = self.device
        input_ids, attention_mask, position_ids, inputs_embeds = (
            None if value is None else as_tensor(value, name, device)
            for value, name in (
                (input_ids, "input_ids"),
                (attention_mask, "attention_mask"),
                (position_ids, "position_ids"),
                (inputs_embeds, "inputs_embeds"),
            )
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
        if inputs_embeds is not None:
            inputs_embeds = inputs_embeds.to(self.dtype)
        return as_ids(input_ids), attention_mask, as_ids(position_ids), inputs_embeds

    # -- initialisation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, *, skip_prefix: str | None = None) -> None:
        """Re-initialise as transformers: normal(0, initializer_range), zero biases and padding row, LayerNorm 1/0,
        the sinusoidal table when ``config.sinusoidal_pos_embds``. Modules under ``skip_prefix`` are left alone."""
        modules = [m for name, m in self.named_modules() if not (skip_prefix and f"{name}.".startswith(skip_prefix))]
        self.init_modules(modules)

    @torch.no_grad()
    def init_modules(self, modules: list[nn.Module]) -> None:
        """Initialise ``modules`` (those whose parameters are materialised) as :meth:`init_weights` does."""
        modules = [m for m in modules if not any(p.is_meta for p in m.parameters(recurse=False))]  # nothing to fill
        std = self.config.initializer_range
        for m in modules:
            if isinstance(m, (nn.Linear, nn.Embedding)):
                m.weight.normal_(0.0, std)
            if isinstance(m, nn.Linear) and m.bias is not None:
                m.bias.zero_()
            if isinstance(m, nn.LayerNorm):
                m.weight.fill_(1.0)
                m.bias.zero_()
        for m in modules:
            if isinstance(m, nn.Embedding) and m.padding_idx is not None:
                m.weight[m.padding_idx].zero_()
        position = self.base_model.embeddings.position_embeddings
        if self.config.sinusoidal_pos_embds and any(m is position for m in modules):
            table = sinusoidal_table(self.config.max_position_embeddings, self.config.dim)
            position.weight.copy_(torch.from_numpy(table))

    def tie_weights(self) -> None:
        """Masked LM: make ``vocab_projector.weight`` the word-embedding parameter itself (shared storage)."""
        if self._tied():
            self.vocab_projector.weight = self.distilbert.embeddings.word_embeddings.weight

    def to_empty(self, *, device: Any, recurse: bool = True) -> DistilBertPreTrainedModel:
        """As ``nn.Module.to_empty``, keeping the tied projector tied."""
        super().to_empty(device=device, recurse=recurse)
        self.tie_weights()
        return self

    # -- training -------------------------------------------------------------------------------------------------

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any] | None = None) -> None:
        """Recompute each block's activations in the backward pass (``torch.utils.checkpoint``, non-reentrant)."""
        transformer = self.base_model.transformer
        transformer.checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}
        transformer.gradient_checkpointing = True

    def gradient_checkpointing_disable(self) -> None:
        self.base_model.transformer.gradient_checkpointing = False

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.base_model.transformer.gradient_checkpointing


def check_attn_implementation(name: str) -> None:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")


# ----------------------------------------------------------------------------------------------------- the model


class DistilBertModel(DistilBertPreTrainedModel):
    """The bare encoder: ``last_hidden_state`` (batch, seq, dim)."""

    head = "base"

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        attn_implementation: str = "sdpa",
        device: Any = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        kw = self.factory_kwargs(device, dtype)
        self.embeddings = Embeddings(config, **kw)
        self.transformer = Transformer(config, attn_implementation=attn_implementation, **kw)
        self.init_weights()

    def forward(
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
        """``input_ids`` (batch, seq) or ``inputs_embeds`` (batch, seq, dim); ``attention_mask`` 1 = token, 0 = pad."""
        input_ids, attention_mask, position_ids, inputs_embeds = self.prepare_inputs(
            input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids, head_mask
        )
        output_attentions = mu.resolve_flag(output_attentions, self.config.output_attentions)
        output_hidden_states = mu.resolve_flag(output_hidden_states, self.config.output_hidden_states)
        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (batch, seq, dim)
        mask_bias = padding_bias(attention_mask, x.dtype)  # (batch, 1, 1, seq) or None
        last, hidden_states, attentions = self.transformer(x, mask_bias, output_attentions, output_hidden_states)
        out = BaseModelOutput(last_hidden_state=last, hidden_states=hidden_states, attentions=attentions)
        return self._output(out, return_dict)


# ----------------------------------------------------------------------------------------------------- losses


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over labels != ``ignore_index``; logits (n, classes), labels (n,) -> ().

    As ``F.cross_entropy``, except that a batch whose labels are all ignored gives 0.0 (and zero gradients), not NaN.
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


def class_loss(logits: torch.Tensor, labels: Any, num_classes: int) -> torch.Tensor:
    """Cross-entropy of class-id ``labels`` (checked: one per prediction, in range or -100) against ``logits``
    (..., num_classes)."""
    labels = as_labels(labels, logits)
    mu.check_class_labels(OPS, labels, num_classes, tuple(logits.shape[:-1]))
    return cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))


def sequence_classification_loss(config: DistilBertConfig, logits: torch.Tensor, labels: Any) -> torch.Tensor:
    """MSE, cross-entropy or binary cross-entropy, chosen per call (the config is never changed)."""
    labels = as_labels(labels, logits)
    problem_type = mu.problem_type_for(config, OPS.is_integer(labels))
    if problem_type == "single_label_classification":
        return class_loss(logits, labels, config.num_labels)
    problem = "regression" if problem_type == "regression" else "multi-label classification"
    mu.check_same_size(OPS, labels, tuple(logits.shape), problem)
    if problem_type == "regression":
        return F.mse_loss(logits.reshape(-1), labels.reshape(-1).to(logits.dtype))
    return F.binary_cross_entropy_with_logits(logits, labels.reshape(logits.shape).to(logits.dtype))


def question_answering_loss(
    start_logits: torch.Tensor, end_logits: torch.Tensor, start_positions: Any, end_positions: Any
) -> torch.Tensor:
    """Mean of the start and end cross-entropies; positions clamped to [0, seq], and == seq ignored."""
    seq = start_logits.shape[1]

    def position_loss(logits: torch.Tensor, positions: Any, name: str) -> torch.Tensor:
        positions = as_labels(positions, logits, name)
        mu.check_positions(OPS, positions, name)
        return cross_entropy(logits, positions.reshape(-1).clamp(0, seq), ignore_index=seq)

    start_loss = position_loss(start_logits, start_positions, "start_positions")
    return (start_loss + position_loss(end_logits, end_positions, "end_positions")) / 2


# ----------------------------------------------------------------------------------------------------- heads


class _HeadModel(DistilBertPreTrainedModel):
    """A head over ``self.distilbert``: builds the encoder, then the head's own layers in ``build_head``."""

    def __init__(
        self,
        config: DistilBertConfig,
        *,
        attn_implementation: str = "sdpa",
        device: Any = None,
        dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__(config, attn_implementation=attn_implementation)
        kw = self.factory_kwargs(device, dtype)
        self.distilbert = DistilBertModel(config, attn_implementation=attn_implementation, **kw)
        self.build_head(config, **kw)
        self.init_weights(skip_prefix="distilbert.")  # the encoder initialised itself
        self.tie_weights()

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        raise NotImplementedError(f"{type(self).__name__} must define build_head")


class DistilBertForMaskedLM(_HeadModel):
    """Masked language modelling: ``logits`` (batch, seq, vocab); ``vocab_projector`` tied to the word embeddings."""

    head = "masked_lm"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        self.activation = activation_fn(config.activation)
        self.vocab_transform = Linear(config.dim, config.dim, **kw)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=LAYER_NORM_EPS, **kw)
        self.vocab_projector = Linear(config.dim, config.vocab_size, **kw)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        return_dict: Any = None,
        **inputs,
    ) -> MaskedLMOutput:
        """``labels`` (batch, seq): token ids to predict, -100 where no loss is wanted."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        h = self.activation(self.vocab_transform(out.last_hidden_state))  # (batch, seq, dim)
        logits = self.vocab_projector(self.vocab_layer_norm(h))  # (batch, seq, vocab)
        loss = None if labels is None else class_loss(logits, labels, self.config.vocab_size)
        out = MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)
        return self._output(out, return_dict)


class DistilBertForSequenceClassification(_HeadModel):
    """Sentence classification / regression on the first token: ``logits`` (batch, num_labels)."""

    head = "sequence_classification"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        self.pre_classifier = Linear(config.dim, config.dim, **kw)
        self.classifier = Linear(config.dim, config.num_labels, **kw)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        return_dict: Any = None,
        **inputs,
    ) -> SequenceClassifierOutput:
        """``labels``: (batch,) class ids, (batch, num_labels) floats for multi-label, or floats for regression."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch, dim)
        logits = self.classifier(self.dropout(pooled))  # (batch, num_labels)
        loss = None if labels is None else sequence_classification_loss(self.config, logits, labels)
        out = SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


def flatten_choices(
    model: DistilBertPreTrainedModel, input_ids: Any, attention_mask: Any, position_ids: Any, inputs_embeds: Any
) -> tuple[int, dict[str, Any]]:
    """(batch, num_choices, seq[, dim]) inputs -> ``num_choices`` and the encoder's inputs (batch * choices, ...)."""
    input_ids, attention_mask, position_ids, inputs_embeds = model.prepare_inputs(
        input_ids, attention_mask, position_ids, inputs_embeds, num_choices=True
    )
    batch, num_choices, seq = (input_ids if input_ids is not None else inputs_embeds).shape[:3]

    def flat(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.reshape(batch * num_choices, seq, *x.shape[3:])

    positions = flat(position_ids) if position_ids is not None and position_ids.dim() == 3 else position_ids
    inputs = {
        "input_ids": flat(input_ids),
        "attention_mask": flat(attention_mask),
        "inputs_embeds": flat(inputs_embeds),
    }
    return num_choices, {**inputs, "position_ids": positions}


class DistilBertForMultipleChoice(_HeadModel):
    """Scores ``num_choices`` candidates per example: inputs (batch, choices, seq) -> ``logits`` (batch, choices)."""

    head = "multiple_choice"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        self.pre_classifier = Linear(config.dim, config.dim, **kw)
        self.classifier = Linear(config.dim, 1, **kw)
        self.dropout = nn.Dropout(config.seq_classif_dropout)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        position_ids: Any = None,
        inputs_embeds: Any = None,
        return_dict: Any = None,
        **inputs: Any,
    ) -> MultipleChoiceModelOutput:
        """``labels`` (batch,): index of the right choice."""
        num_choices, flat = flatten_choices(self, input_ids, attention_mask, position_ids, inputs_embeds)
        out = self.distilbert(**flat, **inputs)  # (batch * choices, seq, dim)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch * choices, dim)
        logits = self.classifier(self.dropout(pooled)).view(-1, num_choices)  # (batch, choices)
        loss = None if labels is None else class_loss(logits, labels, num_choices)
        out = MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


class DistilBertForTokenClassification(_HeadModel):
    """Per-token classification (NER): ``logits`` (batch, seq, num_labels)."""

    head = "token_classification"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        self.dropout = nn.Dropout(config.dropout)
        self.classifier = Linear(config.dim, config.num_labels, **kw)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        return_dict: Any = None,
        **inputs,
    ) -> TokenClassifierOutput:
        """``labels`` (batch, seq): class ids, -100 for tokens without a label."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (batch, seq, num_labels)
        loss = None if labels is None else class_loss(logits, labels, self.config.num_labels)
        out = TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )
        return self._output(out, return_dict)


class DistilBertForQuestionAnswering(_HeadModel):
    """Extractive QA: ``start_logits`` and ``end_logits`` (batch, seq)."""

    head = "question_answering"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        mu.check_qa_config(config)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.qa_outputs = Linear(config.dim, 2, **kw)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        start_positions: Any = None,
        end_positions: Any = None,
        return_dict: Any = None,
        **inputs: Any,
    ) -> QuestionAnsweringModelOutput:
        """``start_positions`` / ``end_positions`` (batch,): clamped to [0, seq]; positions == seq are ignored."""
        mu.check_both_positions(start_positions, end_positions)
        out = self.distilbert(input_ids, attention_mask, **inputs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))  # (batch, seq, 2)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (batch, seq) each
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


# ----------------------------------------------------------------------------------------------------- outputs


def _register_output_pytrees() -> None:
    """Let ``torch.export`` / ``torch.compile`` / ``torch.utils._pytree`` see through the output classes."""
    for cls in ModelOutput.__subclasses__():
        if cls in pytree.SUPPORTED_NODES:
            continue

        def unflatten(values: Any, keys: list[str], cls: type[ModelOutput] = cls) -> ModelOutput:
            return cls(zip(keys, values))

        pytree.register_pytree_node(
            cls,
            lambda out: (list(out.values()), list(out.keys())),
            unflatten,
            serialized_type_name=f"distilbert_mf.outputs.{cls.__name__}",
            flatten_with_keys_fn=lambda out: ([(pytree.MappingKey(k), v) for k, v in out.items()], list(out.keys())),
        )


_register_output_pytrees()
