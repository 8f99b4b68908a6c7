"""PyTorch glue around the math in :mod:`distilbert_mf.torch.modeling`.

``DistilBertPreTrainedModel`` holds what every model shares: initialisation as transformers' PyTorch
DistilBERT, the canonical state dict (canonical names = ``state_dict()`` keys, so the mapping is the identity),
``from_pretrained`` / ``save_pretrained`` over :mod:`distilbert_mf.checkpoint`, gradient checkpointing and the
attention kernel switch. The input helpers below convert numpy inputs and check shapes, ids and labels once,
outside the encoder, and step aside under ``torch.compile`` / ``torch.export`` (no graph breaks).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import ml_dtypes
import numpy as np
import torch
import torch.utils._pytree as pytree
from torch import nn

from distilbert_mf.checkpoint.loading import DEFAULT_MAX_SHARD_SIZE, ShapeMismatchError, load_pretrained
from distilbert_mf.checkpoint.loading import save_pretrained as save_checkpoint
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes, sinusoidal_table
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.modeling_utils import (
    CPU_FLOAT16_WARNING,
    check_input_choice,
    check_sequence_length,
    check_shape,
    check_token_range,
    dtype_name,
    reject_unsupported_inputs,
)
from distilbert_mf.outputs import (
    BaseModelOutput,
    MaskedLMOutput,
    ModelOutput,
    MultipleChoiceModelOutput,
    QuestionAnsweringModelOutput,
    SequenceClassifierOutput,
    TokenClassifierOutput,
)

logger = logging.getLogger(__name__)

ATTN_IMPLEMENTATIONS = ("sdpa", "eager")
TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
_INT_DTYPES = (torch.int64, torch.int32)
Model = TypeVar("Model", bound="DistilBertPreTrainedModel")


def torch_dtype(dtype: Any) -> torch.dtype | None:
    """``'bf16'``, ``torch.bfloat16``, ``np.float32``... -> the torch dtype (``None`` stays ``None``)."""
    name = dtype_name(dtype)
    return None if name is None else TORCH_DTYPES[name]


def _compiling() -> bool:
    return torch.compiler.is_compiling()


# ----------------------------------------------------------------------------------------------- conversions


def numpy_to_tensor(array: Any) -> torch.Tensor:
    """A CPU tensor over ``array``'s memory where possible (bfloat16 via ``ml_dtypes``)."""
    if isinstance(array, torch.Tensor):
        return array
    a = np.ascontiguousarray(array)
    if not a.flags.writeable:
        a = a.copy()
    if a.dtype == ml_dtypes.bfloat16:
        return torch.from_numpy(a.view(np.int16)).view(torch.bfloat16)
    if not a.dtype.isnative:
        a = a.astype(a.dtype.newbyteorder("="))
    return torch.from_numpy(a)


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy array in the tensor's dtype (bfloat16 as ``ml_dtypes.bfloat16``); shares memory on CPU."""
    if tensor.is_meta:
        raise ValueError("the model is on the meta device: call model.to_empty(device=...) and load weights first")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def _to_tensor(value: Any, name: str, device: torch.device, *, integer: bool) -> torch.Tensor:
    """Accept a tensor, numpy array or nested list; integer inputs become int64 (int32 tensors are kept)."""
    if not isinstance(value, torch.Tensor):
        if not isinstance(value, (np.ndarray, list, tuple, np.generic)):
            raise TypeError(f"{name} must be a torch.Tensor or a numpy array, got {type(value).__name__}")
        value = numpy_to_tensor(np.asarray(value)).to(device)
    if integer:
        if value.is_floating_point() or value.is_complex() or value.dtype == torch.bool:
            raise TypeError(f"{name} must hold integers, got dtype {value.dtype}")
        if value.dtype not in _INT_DTYPES:
            value = value.long()
    return value


# ----------------------------------------------------------------------------------------------- input checks


def prepare_inputs(
    model: DistilBertPreTrainedModel,
    input_ids: Any,
    attention_mask: Any,
    position_ids: Any,
    inputs_embeds: Any,
    token_type_ids: Any = None,
    head_mask: Any = None,
) -> tuple[torch.Tensor | None, torch.Tensor | None, torch.Tensor | None, torch.Tensor | None]:
    """Convert numpy inputs to tensors and check shapes; value checks (ids in range) are skipped under compile."""
    reject_unsupported_inputs(token_type_ids, head_mask)
    check_input_choice(input_ids, inputs_embeds)
    config, device = model.config, model.device
    if input_ids is not None:
        input_ids = _to_tensor(input_ids, "input_ids", device, integer=True)
        check_shape("input_ids", tuple(input_ids.shape), 2, "(batch, seq)")
        shape = tuple(input_ids.shape)
    else:
        inputs_embeds = _to_tensor(inputs_embeds, "inputs_embeds", device, integer=False).to(model.dtype)
        check_shape("inputs_embeds", tuple(inputs_embeds.shape), 3, "(batch, seq, dim)")
        if inputs_embeds.shape[-1] != config.dim:
            raise ValueError(
                f"inputs_embeds must have last dimension dim={config.dim}, got {tuple(inputs_embeds.shape)}"
            )
        shape = tuple(inputs_embeds.shape[:2])
    if attention_mask is not None:
        attention_mask = _to_tensor(attention_mask, "attention_mask", device, integer=False)
        if tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"attention_mask must have the inputs' shape {shape} (batch, seq), got {tuple(attention_mask.shape)}"
            )
    if position_ids is not None:
        position_ids = _to_tensor(position_ids, "position_ids", device, integer=True)
        if position_ids.dim() not in (1, 2) or position_ids.shape[-1] != shape[1]:
            raise ValueError(
                f"position_ids must have shape (seq,) or (batch, seq) with seq={shape[1]}, got {tuple(position_ids.shape)}"
            )
    if position_ids is None:
        check_sequence_length(shape[1], config)
    if not _compiling():  # value checks read the tensors: skipped while tracing
        if input_ids is not None and input_ids.numel() > 0:
            check_token_range(int(input_ids.min()), int(input_ids.max()), config.vocab_size)
        if (
            position_ids is not None
            and position_ids.numel() > 0
            and (int(position_ids.min()) < 0 or int(position_ids.max()) >= config.max_position_embeddings)
        ):
            raise ValueError(
                f"position_ids must lie in [0, max_position_embeddings={config.max_position_embeddings}), got values "
                f"from {int(position_ids.min())} to {int(position_ids.max())}"
            )
    return input_ids, attention_mask, position_ids, inputs_embeds


def padding_bias(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """(batch, seq) mask, nonzero = attend -> additive (batch, 1, 1, seq): 0 or the most negative finite value.

    An all-ones mask gives ``None`` (no bias, the fast kernel) outside of compilation.
    """
    if attention_mask is None:
        return None
    keep = attention_mask.bool()
    if not _compiling() and bool(keep.all()):
        return None
    bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device).masked_fill(~keep, torch.finfo(dtype).min)
    return bias[:, None, None, :]  # (batch, 1, 1, seq)


def flatten_choices(
    model: DistilBertPreTrainedModel, input_ids: Any, attention_mask: Any, **inputs: Any
) -> tuple[int, dict[str, Any]]:
    """(batch, choices, seq[, dim]) inputs -> ``num_choices`` and the encoder's inputs (batch * choices, seq[, dim])."""
    reject_unsupported_inputs(inputs.get("token_type_ids"), inputs.get("head_mask"))
    check_input_choice(input_ids, inputs.get("inputs_embeds"))
    device = model.device
    if input_ids is not None:
        input_ids = _to_tensor(input_ids, "input_ids", device, integer=True)
        check_shape("input_ids", tuple(input_ids.shape), 3, "(batch, num_choices, seq)")
        shape = tuple(input_ids.shape)
        input_ids = input_ids.reshape(-1, shape[2])  # (batch * choices, seq)
    else:
        embeds = _to_tensor(inputs["inputs_embeds"], "inputs_embeds", device, integer=False)
        check_shape("inputs_embeds", tuple(embeds.shape), 4, "(batch, num_choices, seq, dim)")
        shape = tuple(embeds.shape[:3])
        inputs["inputs_embeds"] = embeds.reshape(-1, *embeds.shape[2:])  # (batch * choices, seq, dim)
    if attention_mask is not None:
        attention_mask = _to_tensor(attention_mask, "attention_mask", device, integer=False)
        if tuple(attention_mask.shape) != shape:
            raise ValueError(
                f"attention_mask must have the inputs' shape {shape} (batch, num_choices, seq), "
                f"got {tuple(attention_mask.shape)}"
            )
        attention_mask = attention_mask.reshape(-1, shape[2])
    position_ids = inputs.get("position_ids")
    if position_ids is not None:
        position_ids = _to_tensor(position_ids, "position_ids", device, integer=True)
        inputs["position_ids"] = position_ids.reshape(-1, shape[2]) if position_ids.dim() == 3 else position_ids
    return shape[1], {"input_ids": input_ids, "attention_mask": attention_mask, **inputs}


def as_labels(value: Any, like: torch.Tensor, name: str = "labels") -> torch.Tensor:
    """Labels as a tensor on ``like``'s device (numpy accepted); integer labels become int64."""
    if isinstance(value, torch.Tensor):
        tensor = value
    else:
        tensor = _to_tensor(value, name, like.device, integer=False)
    if not tensor.is_floating_point() and tensor.dtype != torch.bool:
        tensor = tensor.long()
    return tensor


def check_class_labels(labels: torch.Tensor, num_classes: int, shape: tuple[int, ...] | torch.Size) -> torch.Tensor:
    """Class-id labels: ``shape`` elements, each in [0, num_classes) or -100 (ignored)."""
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise TypeError(f"labels must be integer class ids for this loss, got dtype {labels.dtype}")
    if labels.numel() != math.prod(shape):
        raise ValueError(f"labels must have shape {tuple(shape)}, got {tuple(labels.shape)}")
    if not _compiling() and labels.numel() > 0:
        bad = labels[(labels != -100) & ((labels < 0) | (labels >= num_classes))]
        if bad.numel() > 0:
            raise ValueError(
                f"labels contains class id {int(bad[0])}, outside [0, {num_classes}) (use -100 to ignore a position)"
            )
    return labels


def check_same_numel(labels: torch.Tensor, logits: torch.Tensor, problem: str) -> None:
    if labels.numel() != logits.numel():
        raise ValueError(
            f"{problem} labels must have the logits' shape {tuple(logits.shape)}, got {tuple(labels.shape)}"
        )


# ----------------------------------------------------------------------------------------------- outputs as pytrees


def _register_output_pytrees() -> None:
    """Let ``torch.export`` / ``torch.compile`` / ``torch.utils._pytree`` see through the output classes."""
    for cls in (
        BaseModelOutput,
        MaskedLMOutput,
        SequenceClassifierOutput,
        MultipleChoiceModelOutput,
        TokenClassifierOutput,
        QuestionAnsweringModelOutput,
    ):
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


# ----------------------------------------------------------------------------------------------- the base class


class DistilBertPreTrainedModel(nn.Module):
    """What every DistilBERT model shares: config, init, canonical weights, from/save_pretrained."""

    head: ClassVar[str] = "base"

    def __init__(self, config: DistilBertConfig, *, attn_implementation: str = "sdpa") -> None:
        super().__init__()
        if not isinstance(config, DistilBertConfig):
            raise TypeError(
                f"config must be a distilbert_mf.DistilBertConfig, got {type(config).__name__} "
                "(read a config.json with DistilBertConfig.from_pretrained)"
            )
        _check_attn_implementation(attn_implementation)
        self.config = config

    @staticmethod
    def factory_kwargs(device: Any, dtype: Any) -> dict[str, Any]:
        """``device=`` / ``dtype=`` for the submodules (dtype given as a string or torch dtype)."""
        return {"device": device, "dtype": torch_dtype(dtype)}

    # -- properties ---------------------------------------------------------------------------------------------

    @property
    def base_model(self) -> nn.Module:
        """The encoder: ``self`` for ``DistilBertModel``, ``self.distilbert`` for the heads."""
        return self if self.head == "base" else self.distilbert

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
        _check_attn_implementation(attn_implementation)
        for block in self.base_model.transformer.layer:
            block.attention.attn_implementation = attn_implementation

    # -- initialisation -----------------------------------------------------------------------------------------

    @torch.no_grad()
    def init_weights(self, *, skip_prefix: str | None = None) -> None:
        """Re-initialise as transformers: normal(0, initializer_range), zero biases and padding row, LayerNorm 1/0,
        the sinusoidal table when ``config.sinusoidal_pos_embds``. Modules under ``skip_prefix`` are left alone."""
        modules = [m for name, m in self.named_modules() if not (skip_prefix and f"{name}.".startswith(skip_prefix))]
        self._init_modules(modules)

    @torch.no_grad()
    def _init_modules(self, modules: list[nn.Module]) -> None:
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

    def _tied(self) -> bool:
        return self.head == "masked_lm" and self.config.tie_word_embeddings

    def tie_weights(self) -> None:
        """Masked LM: make ``vocab_projector.weight`` the word-embedding parameter itself (shared storage)."""
        if self._tied():
            self.vocab_projector.weight = self.distilbert.embeddings.word_embeddings.weight

    def to_empty(self: Model, *, device: Any, recurse: bool = True) -> Model:
        """As ``nn.Module.to_empty``, keeping the tied projector tied."""
        super().to_empty(device=device, recurse=recurse)
        self.tie_weights()
        return self

    # -- canonical weights --------------------------------------------------------------------------------------

    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """Every canonical key of this head (tied projector included) as numpy arrays in the parameter dtype.

        PyTorch layout; on CPU the arrays share memory with the parameters, as ``state_dict()`` does.
        """
        state = self.state_dict()
        return {key: tensor_to_numpy(state[key]) for key in expected_shapes(self.config, self.head)}

    def load_canonical_state_dict(self, arrays: Mapping[str, Any], *, strict: bool = True) -> None:
        """Copy canonical ``arrays`` (numpy or tensors, PyTorch layout) into the parameters, checking every shape.

        Missing or unexpected keys raise ``KeyError`` unless ``strict=False``. Parameters still on the meta
        device are materialised on the default device.
        """
        self._load_arrays(arrays, strict=strict, device=None, share_memory=False)

    @torch.no_grad()
    def _load_arrays(
        self, arrays: Mapping[str, Any], *, strict: bool, device: torch.device | None, share_memory: bool
    ) -> None:
        expected = expected_shapes(self.config, self.head)
        skip = {TIED_KEY} if self._tied() else set()
        missing = [k for k in expected if k not in arrays and k not in skip]
        unexpected = [k for k in arrays if k not in expected]
        if strict and (missing or unexpected):
            raise KeyError(
                f"{type(self).__name__}.load_canonical_state_dict: missing keys {missing}, unexpected keys "
                f"{unexpected} (pass strict=False to load a subset)"
            )
        for key in expected:
            if key in arrays and tuple(arrays[key].shape) != tuple(expected[key]):
                raise ShapeMismatchError(
                    f"weight {key!r} has shape {tuple(arrays[key].shape)} but {type(self).__name__} expects "
                    f"{tuple(expected[key])}"
                )
        if device is None:
            device = next((p.device for p in self.parameters() if not p.is_meta), torch.get_default_device())
        params = dict(self.named_parameters(remove_duplicate=False))
        for key in expected:
            if key not in arrays or key in skip:
                continue
            param, tensor = params[key], numpy_to_tensor(arrays[key])
            if param.is_meta:
                new = tensor.to(device=device, dtype=param.dtype, copy=not share_memory)
                module_name, _, leaf = key.rpartition(".")
                self.get_submodule(module_name)._parameters[leaf] = nn.Parameter(new, param.requires_grad)
            else:
                param.copy_(tensor)
        self.tie_weights()
        leftover = [m for m in self.modules() if any(p.is_meta for p in m.parameters(recurse=False))]
        for m in leftover:
            m.to_empty(device=device, recurse=False)
        self._init_modules(leftover)
        self.tie_weights()

    # -- from / save pretrained -----------------------------------------------------------------------------------

    @classmethod
    def from_pretrained(
        cls: type[Model],
        name_or_path: str | os.PathLike[str],
        *,
        config: DistilBertConfig | None = None,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        dtype: Any = None,
        torch_dtype: Any = None,
        device: str | torch.device | None = None,
        attn_implementation: str = "sdpa",
        from_pt: bool = False,
        from_tf: bool = False,
        from_flax: bool = False,
        **config_overrides: Any,
    ) -> Model:
        """Load a folder or Hub repo (any weights format) into this head, in eval mode.

        ``dtype`` (alias ``torch_dtype``): float32 / bfloat16 / float16, ``None`` for float32, ``"auto"`` for the
        checkpoint's dtype. ``device``: where the parameters live (default: torch's default device). The model is
        built on the meta device and the checkpoint arrays become its parameters, so loading costs one copy at most.
        ``from_pt`` / ``from_tf`` / ``from_flax`` are accepted for compatibility: every format loads without them.
        """
        del from_pt, from_tf, from_flax  # every format loads; kept for transformers compatibility
        _check_attn_implementation(attn_implementation)
        if dtype is not None and torch_dtype is not None and dtype_name(dtype) != dtype_name(torch_dtype):
            raise ValueError(f"dtype={dtype!r} and torch_dtype={torch_dtype!r} disagree; pass only dtype")
        requested = dtype if dtype is not None else torch_dtype
        target_device = torch.device(device) if device is not None else torch.get_default_device()
        if target_device.type == "meta":
            raise ValueError(
                "from_pretrained loads weights, so device='meta' is not allowed; build Cls(config, device='meta')"
            )
        config, arrays, _ = load_pretrained(
            name_or_path,
            cls.head,
            config=config,
            revision=revision,
            cache_dir=cache_dir,
            local_files_only=local_files_only,
            token=token,
            **config_overrides,
        )
        target_dtype = _resolve_dtype(requested, arrays)
        if target_dtype == torch.float16 and target_device.type == "cpu":
            logger.warning(CPU_FLOAT16_WARNING)
        model = cls(config, attn_implementation=attn_implementation, device="meta", dtype=target_dtype)
        model._load_arrays(arrays, strict=False, device=target_device, share_memory=True)
        return model.eval()

    def save_pretrained(
        self, directory: str | os.PathLike[str], *, max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE
    ) -> list[Path]:
        """Write ``config.json`` + ``model.safetensors`` (tied projector stored once); returns the written files."""
        return save_checkpoint(
            directory, self.config, self.canonical_state_dict(), self.head, max_shard_size=max_shard_size
        )

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


def _check_attn_implementation(name: str) -> None:
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")


def _resolve_dtype(requested: Any, arrays: Mapping[str, np.ndarray]) -> torch.dtype:
    """``None`` -> float32; ``"auto"`` -> the checkpoint's float dtype (word embeddings); else the named dtype."""
    if isinstance(requested, str) and requested == "auto":
        stored = arrays.get(TIED_SOURCE, arrays.get(TIED_SOURCE.removeprefix("distilbert.")))
        name = str(stored.dtype) if stored is not None else "float32"
        return TORCH_DTYPES.get(name, torch.float32)
    return torch_dtype(requested) or torch.float32
