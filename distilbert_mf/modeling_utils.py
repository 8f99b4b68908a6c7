"""Framework-neutral rules the three model packages share: argument checks, dtypes, problem types.

The math lives in each framework's ``modeling.py``; the decisions and error messages live here, once.
"""

from __future__ import annotations

from typing import Any

from distilbert_mf.config import DistilBertConfig

DTYPE_NAMES = ("float32", "bfloat16", "float16")
_DTYPE_ALIASES = {
    "float32": "float32",
    "fp32": "float32",
    "float": "float32",
    "f32": "float32",
    "bfloat16": "bfloat16",
    "bf16": "bfloat16",
    "float16": "float16",
    "fp16": "float16",
    "half": "float16",
    "f16": "float16",
}
CPU_FLOAT16_WARNING = (
    "float16 was requested on a CPU: CPUs run float16 matrix products about two orders of magnitude slower "
    "than float32; use dtype='bfloat16' on CPUs (it keeps float32's range) or float16 on a GPU"
)


def dtype_name(dtype: Any) -> str | None:
    """Normalise a dtype given as a string or any framework's dtype object to 'float32'/'bfloat16'/'float16'.

    ``None`` and ``"auto"`` return ``None`` (keep the checkpoint's / the default dtype).
    """
    if dtype is None:
        return None
    text = str(getattr(dtype, "name", dtype)) if not isinstance(dtype, str) else dtype
    if text == "auto":
        return None
    text = text.rsplit(".", 1)[-1].replace("'", "").replace(">", "").strip().lower()  # torch.float16, <dtype: 'x'>
    if text.startswith("dtype: "):
        text = text[len("dtype: ") :]
    if text in _DTYPE_ALIASES:
        return _DTYPE_ALIASES[text]
    raise ValueError(f"unsupported dtype {dtype!r}; expected one of {DTYPE_NAMES} (or None/'auto')")


def reject_unsupported_inputs(token_type_ids: Any = None, head_mask: Any = None) -> None:
    """DistilBERT has no segment embeddings and no head masking: refuse them loudly instead of ignoring them."""
    if token_type_ids is not None:
        raise ValueError(
            "DistilBERT has no segment (token type) embeddings, so token_type_ids cannot be used; drop it "
            "(DistilBERT tokenizers do not return it; for sentence pairs the [SEP] token separates the segments)"
        )
    if head_mask is not None:
        raise ValueError(
            "head_mask is not supported: mask attention heads by pruning or by editing the attention weights; "
            "to mask tokens pass attention_mask"
        )


def check_input_choice(input_ids: Any, inputs_embeds: Any) -> None:
    """Exactly one of ``input_ids`` and ``inputs_embeds`` must be given."""
    if input_ids is None and inputs_embeds is None:
        raise ValueError("pass input_ids (batch, seq) or inputs_embeds (batch, seq, dim); both are None")
    if input_ids is not None and inputs_embeds is not None:
        raise ValueError("pass either input_ids or inputs_embeds, not both")


def check_token_range(min_id: int, max_id: int, vocab_size: int) -> None:
    """Token ids must lie in [0, vocab_size): never clamp or wrap them."""
    if min_id < 0 or max_id >= vocab_size:
        bad = min_id if min_id < 0 else max_id
        raise ValueError(
            f"input_ids contains token id {bad}, outside the vocabulary [0, {vocab_size}); check that the tokenizer "
            "matches the model (config.vocab_size)"
        )


def check_sequence_length(seq_len: int, config: DistilBertConfig) -> None:
    if seq_len > config.max_position_embeddings:
        raise ValueError(
            f"sequence length {seq_len} exceeds max_position_embeddings={config.max_position_embeddings}; "
            "truncate the input (tokenizer(..., truncation=True, max_length=...))"
        )


def check_shape(name: str, shape: tuple[int, ...], expected_ndim: int, what: str) -> None:
    if len(shape) != expected_ndim:
        raise ValueError(f"{name} must have shape {what} ({expected_ndim} dimensions), got shape {tuple(shape)}")


def problem_type_for(config: DistilBertConfig, labels_are_integers: bool) -> str:
    """The sequence-classification loss to use, decided per call and never written back to the config.

    As transformers: the config's ``problem_type`` if set; else regression for one label, single-label
    classification for integer labels, multi-label classification for float labels.
    """
    if config.problem_type is not None:
        return config.problem_type
    if config.num_labels == 1:
        return "regression"
    return "single_label_classification" if labels_are_integers else "multi_label_classification"


def check_qa_config(config: DistilBertConfig) -> None:
    if config.num_labels != 2:
        raise ValueError(f"question answering needs num_labels=2 (start and end logits), got {config.num_labels}")
