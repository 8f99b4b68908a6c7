"""DistilBERT in PyTorch: the math, top to bottom.

DistilBERT (Sanh et al., 2019, "DistilBERT, a distilled version of BERT") is BERT with half the layers, no
token-type embeddings and no pooler. This file matches transformers' PyTorch DistilBERT number for number:
post-LayerNorm blocks (``h = sa_layer_norm(attn(x) + x)``, ``out = output_layer_norm(ffn(h) + h)``), LayerNorm
eps 1e-12, exact erf GELU, and one masking rule (padding keys get the most negative finite value of the compute
dtype added to their scores; softmax in float32; a fully padded row stays finite).

Module and attribute names equal the checkpoint names, so the canonical state dict *is* ``state_dict()``.
Loading, saving, initialisation and input checks live in :mod:`distilbert_mf.torch.loading`.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from distilbert_mf.config import DistilBertConfig
from distilbert_mf.modeling_utils import check_qa_config, problem_type_for
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)
from distilbert_mf.torch.loading import (
    DistilBertPreTrainedModel,
    as_labels,
    check_class_labels,
    check_same_numel,
    flatten_choices,
    padding_bias,
    prepare_inputs,
)

IGNORE_INDEX = -100  # label value that contributes no loss (CrossEntropyLoss default)


def activation_fn(name: str) -> Any:
    """The feed-forward activation: exact erf GELU, tanh GELU or ReLU."""
    if name == "gelu":
        return F.gelu
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return functools.partial(F.gelu, approximate="tanh")
    if name == "relu":
        return F.relu
    raise ValueError(f"unsupported activation {name!r}; expected gelu, gelu_new, gelu_pytorch_tanh or relu")


# CPU inference (no autograd) runs the linear layers on oneDNN with the bias and activation fused: about 2x the
# default BLAS (MKL) in float32 on AMD Zen CPUs, and 5-10% faster in bfloat16 (docs/benchmarks.md). False: F.linear.
ONEDNN_LINEAR = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
ONEDNN_ACTIVATIONS = {  # activation name -> oneDNN post-op (attribute, algorithm)
    None: ("none", ""),
    "gelu": ("gelu", "none"),  # exact erf
    "gelu_new": ("gelu", "tanh"),
    "gelu_pytorch_tanh": ("gelu", "tanh"),
    "relu": ("relu", ""),
}


def cpu_inference(*tensors: torch.Tensor) -> bool:
    """On the CPU, with no gradient to record for ``tensors``, outside tracing, compilation and export: where the
    inference-only CPU paths below may replace the plain PyTorch ops."""
    return (
        all(t.device.type == "cpu" for t in tensors)
        and not (torch.is_grad_enabled() and any(t.requires_grad for t in tensors))
        and not torch.compiler.is_compiling()
        and not torch.jit.is_tracing()
    )


def use_onednn(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """float32 / bfloat16 CPU inference (:func:`cpu_inference`)."""
    return (
        ONEDNN_LINEAR
        and x.dtype == weight.dtype
        and x.dtype in (torch.float32, torch.bfloat16)
        and x.numel() > 0
        and cpu_inference(x, weight)
    )


class Linear(nn.Linear):
    """``nn.Linear`` (same parameters and state dict) that can apply an activation; fused on oneDNN."""

    def forward(self, x: torch.Tensor, activation: str | None = None) -> torch.Tensor:
        if use_onednn(x, self.weight):
            attr, algorithm = ONEDNN_ACTIVATIONS[activation]
            return torch.ops.mkldnn._linear_pointwise(x, self.weight, self.bias, attr, [], algorithm)  # (..., out)
        y = F.linear(x, self.weight, self.bias)  # (..., out)
        return y if activation is None else activation_fn(activation)(y)


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
        self.LayerNorm = nn.LayerNorm(config.dim, eps=1e-12, **kw)
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

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``x`` (batch, seq, dim), ``bias`` (batch, 1, 1, seq) additive -> (batch, seq, dim), probabilities."""
        batch, seq, dim = x.shape
        q, k, v = self.split_heads(self.q_lin(x)), self.split_heads(self.k_lin(x)), self.split_heads(self.v_lin(x))
        probs = None
        if self.attn_implementation == "sdpa" and not output_attentions:
            p = self.dropout.p if self.training else 0.0
            context = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # (batch, heads, seq, hd)
        elif not output_attentions and blocked_attention(q, self.dropout):
            context = attend_in_blocks(q, k, v, bias, self.scale, HEADS_AT_A_TIME_ON_CPU)  # (batch, heads, seq, hd)
        else:
            context, probs = attend(q, k, v, bias, self.scale, self.dropout)
        context = context.transpose(1, 2).reshape(batch, seq, dim)  # (batch, seq, dim)
        return self.out_lin(context), probs


def attend(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float, dropout: Any = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention: q, k, v (..., seq, head_dim) -> context (..., q_len, head_dim), probs (..., q_len, k_len)."""
    scores = torch.matmul(q, k.transpose(-1, -2)).float() * scale  # (..., q_len, k_len)
    if bias is not None:
        scores = scores + bias
    probs = torch.softmax(scores, dim=-1).to(q.dtype)  # (..., q_len, k_len)
    return torch.matmul(probs if dropout is None else dropout(probs), v), probs  # (..., q_len, head_dim)


# CPU inference computes eager attention a few (batch, head) pairs at a time, so each block of score matrices stays in
# cache instead of one (batch, heads, seq, seq) tensor going through memory. At 8 x 512 the whole forward goes from
# 1792 to 1246 ms in float32 and from 1314 to 528 ms in bfloat16, where eager attention is then faster than PyTorch's
# SDPA kernel (docs/benchmarks.md). The numbers of the batched product: bit for bit in bfloat16, within float32
# rounding in float32. 0: always one batched product.
HEADS_AT_A_TIME_ON_CPU = 4


def blocked_attention(q: torch.Tensor, dropout: nn.Dropout) -> bool:
    """Whether eager attention runs in blocks: CPU inference (:func:`cpu_inference`) without dropout."""
    return HEADS_AT_A_TIME_ON_CPU > 0 and not (dropout.training and dropout.p > 0) and cpu_inference(q)


def attend_in_blocks(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor | None, scale: float, heads: int
) -> torch.Tensor:
    """:func:`attend`'s context, ``heads`` (batch, head) pairs at a time: (batch, heads, seq, head_dim)."""
    batch, n_heads, seq, head_dim = q.shape
    q, k, v = (t.reshape(batch * n_heads, seq, head_dim) for t in (q, k, v))  # (batch * heads, seq, head_dim)
    if bias is not None:
        bias = bias.expand(batch, n_heads, 1, seq).reshape(batch * n_heads, 1, seq)  # (batch * heads, 1, seq)
    context = torch.empty_like(q)  # (batch * heads, seq, head_dim)
    for i in range(0, batch * n_heads, heads):
        block = slice(i, i + heads)
        context[block] = attend(q[block], k[block], v[block], None if bias is None else bias[block], scale)[0]
    return context.view(batch, n_heads, seq, head_dim)


class FFN(nn.Module):
    """Position-wise feed-forward: lin1 -> activation -> lin2 -> dropout."""

    def __init__(self, config: DistilBertConfig, *, device: Any = None, dtype: torch.dtype | None = None) -> None:
        super().__init__()
        self.lin1 = Linear(config.dim, config.hidden_dim, device=device, dtype=dtype)
        self.lin2 = Linear(config.hidden_dim, config.dim, device=device, dtype=dtype)
        activation_fn(config.activation)  # refuse an unsupported activation now
        self.activation = config.activation  # applied by lin1 (fused into its matmul on oneDNN)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.lin2(self.lin1(x, activation=self.activation)))  # (batch, seq, dim)


class TransformerBlock(nn.Module):
    """One post-LayerNorm encoder block."""

    def __init__(self, config: DistilBertConfig, *, attn_implementation: str = "sdpa", **kw: Any) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(config, attn_implementation=attn_implementation, **kw)
        self.sa_layer_norm = nn.LayerNorm(config.dim, eps=1e-12, **kw)
        self.ffn = FFN(config, **kw)
        self.output_layer_norm = nn.LayerNorm(config.dim, eps=1e-12, **kw)

    def forward(
        self, x: torch.Tensor, bias: torch.Tensor | None, output_attentions: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        a, probs = self.attention(x, bias, output_attentions)  # (batch, seq, dim)
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
        bias: torch.Tensor | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None, tuple[torch.Tensor, ...] | None]:
        """``x`` (batch, seq, dim) -> last hidden state, hidden states (n_layers + 1), attentions (n_layers)."""
        hidden_states = (x,) if output_hidden_states else None
        attentions = () if output_attentions else None
        for block in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, probs = checkpoint(block, x, bias, output_attentions, **self.checkpoint_kwargs)
            else:
                x, probs = block(x, bias, output_attentions)  # (batch, seq, dim)
            if hidden_states is not None:
                hidden_states = (*hidden_states, x)
            if attentions is not None:
                attentions = (*attentions, probs)
        return x, hidden_states, attentions


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
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        token_type_ids: Any = None,
        head_mask: Any = None,
    ) -> BaseModelOutput:
        """``input_ids`` (batch, seq) or ``inputs_embeds`` (batch, seq, dim); ``attention_mask`` 1 = token, 0 = pad."""
        input_ids, attention_mask, position_ids, inputs_embeds = prepare_inputs(
            self, input_ids, attention_mask, position_ids, inputs_embeds, token_type_ids, head_mask
        )
        x = self.embeddings(input_ids, position_ids, inputs_embeds)  # (batch, seq, dim)
        bias = padding_bias(attention_mask, x.dtype)  # (batch, 1, 1, seq) or None
        last, hidden_states, attentions = self.transformer(x, bias, output_attentions, output_hidden_states)
        return BaseModelOutput(last_hidden_state=last, hidden_states=hidden_states, attentions=attentions)


class _HeadModel(DistilBertPreTrainedModel):
    """A head over ``self.distilbert``: builds the encoder, then the head's own layers via ``build_head``."""

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


def cross_entropy(logits: torch.Tensor, labels: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy over labels != ``ignore_index``; logits (n, classes), labels (n,) -> ().

    As ``F.cross_entropy``, except that a batch whose labels are all ignored gives 0.0 (and zero gradients), not NaN.
    """
    total = F.cross_entropy(logits, labels, ignore_index=ignore_index, reduction="sum")
    return total / (labels != ignore_index).sum().clamp(min=1)


class DistilBertForMaskedLM(_HeadModel):
    """Masked language modelling: ``logits`` (batch, seq, vocab); ``vocab_projector`` tied to the word embeddings."""

    head = "masked_lm"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        self.activation = activation_fn(config.activation)
        self.vocab_transform = Linear(config.dim, config.dim, **kw)
        self.vocab_layer_norm = nn.LayerNorm(config.dim, eps=1e-12, **kw)
        self.vocab_projector = Linear(config.dim, config.vocab_size, **kw)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        labels: Any = None,
        **inputs: Any,
    ) -> MaskedLMOutput:
        """``labels`` (batch, seq): token ids to predict, -100 where no loss is wanted."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        h = self.activation(self.vocab_transform(out.last_hidden_state))  # (batch, seq, dim)
        logits = self.vocab_projector(self.vocab_layer_norm(h))  # (batch, seq, vocab)
        loss = None
        if labels is not None:
            labels = check_class_labels(as_labels(labels, logits), self.config.vocab_size, logits.shape[:-1])
            loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions)


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
        **inputs: Any,
    ) -> SequenceClassifierOutput:
        """``labels``: (batch,) class ids, (batch, num_labels) floats for multi-label, or floats for regression."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch, dim)
        logits = self.classifier(self.dropout(pooled))  # (batch, num_labels)
        loss = None
        if labels is not None:
            labels = as_labels(labels, logits)
            loss = sequence_classification_loss(self.config, logits, labels)
        return SequenceClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


def sequence_classification_loss(config: DistilBertConfig, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MSE, cross-entropy or binary cross-entropy, chosen per call (the config is never changed)."""
    integer_labels = not labels.is_floating_point() and labels.dtype != torch.bool
    problem_type = problem_type_for(config, integer_labels)
    if problem_type == "regression":
        check_same_numel(labels, logits, "regression")
        return F.mse_loss(logits.reshape(-1), labels.reshape(-1).to(logits.dtype))
    if problem_type == "single_label_classification":
        labels = check_class_labels(labels, config.num_labels, logits.shape[:1])
        return cross_entropy(logits, labels.reshape(-1))
    check_same_numel(labels, logits, "multi-label classification")
    return F.binary_cross_entropy_with_logits(logits, labels.reshape(logits.shape).to(logits.dtype))


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
        **inputs: Any,
    ) -> MultipleChoiceModelOutput:
        """``labels`` (batch,): index of the right choice."""
        num_choices, flat = flatten_choices(self, input_ids, attention_mask, **inputs)
        out = self.distilbert(**flat)  # (batch * choices, seq, dim)
        pooled = F.relu(self.pre_classifier(out.last_hidden_state[:, 0]))  # (batch * choices, dim)
        logits = self.classifier(self.dropout(pooled)).view(-1, num_choices)  # (batch, choices)
        loss = None
        if labels is not None:
            labels = check_class_labels(as_labels(labels, logits), num_choices, logits.shape[:1])
            loss = cross_entropy(logits, labels.reshape(-1))
        return MultipleChoiceModelOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


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
        **inputs: Any,
    ) -> TokenClassifierOutput:
        """``labels`` (batch, seq): class ids, -100 for tokens without a label."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (batch, seq, num_labels)
        loss = None
        if labels is not None:
            labels = check_class_labels(as_labels(labels, logits), self.config.num_labels, logits.shape[:-1])
            loss = cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        return TokenClassifierOutput(
            loss=loss, logits=logits, hidden_states=out.hidden_states, attentions=out.attentions
        )


def token_positions(value: Any, like: torch.Tensor, name: str) -> torch.Tensor:
    """QA positions as a flat int64 tensor; floats are refused (a position is a token index)."""
    positions = as_labels(value, like, name)
    if positions.is_floating_point() or positions.dtype == torch.bool:
        raise TypeError(f"{name} must be integer token positions, got dtype {positions.dtype}")
    return positions.reshape(-1)  # (batch,)


class DistilBertForQuestionAnswering(_HeadModel):
    """Extractive QA: ``start_logits`` and ``end_logits`` (batch, seq)."""

    head = "question_answering"

    def build_head(self, config: DistilBertConfig, **kw: Any) -> None:
        check_qa_config(config)
        self.dropout = nn.Dropout(config.qa_dropout)
        self.qa_outputs = Linear(config.dim, 2, **kw)

    def forward(
        self,
        input_ids: Any = None,
        attention_mask: Any = None,
        *,
        start_positions: Any = None,
        end_positions: Any = None,
        **inputs: Any,
    ) -> QuestionAnsweringModelOutput:
        """``start_positions`` / ``end_positions`` (batch,): clamped to [0, seq]; positions == seq are ignored."""
        out = self.distilbert(input_ids, attention_mask, **inputs)
        logits = self.qa_outputs(self.dropout(out.last_hidden_state))  # (batch, seq, 2)
        start_logits, end_logits = logits[..., 0].contiguous(), logits[..., 1].contiguous()  # (batch, seq) each
        loss = None
        if (start_positions is None) != (end_positions is None):
            raise ValueError("pass both start_positions and end_positions to compute the QA loss, or neither")
        if start_positions is not None:
            seq_len = start_logits.shape[1]
            start = token_positions(start_positions, start_logits, "start_positions").clamp(0, seq_len)  # (batch,)
            end = token_positions(end_positions, end_logits, "end_positions").clamp(0, seq_len)  # (batch,)
            start_loss = cross_entropy(start_logits, start, ignore_index=seq_len)
            end_loss = cross_entropy(end_logits, end, ignore_index=seq_len)
            loss = (start_loss + end_loss) / 2
        return QuestionAnsweringModelOutput(
            loss=loss,
            start_logits=start_logits,
            end_logits=end_logits,
            hidden_states=out.hidden_states,
            attentions=out.attentions,
        )
