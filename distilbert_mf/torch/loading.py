"""PyTorch weights adapter: canonical numpy arrays <-> the parameters of :mod:`distilbert_mf.torch.modeling`.

The neutral :class:`distilbert_mf.checkpoint.pretrained.PreTrainedModel` does everything that is not PyTorch
(resolution, config, key/shape/dtype checks, the load report); this module only declares a model on the meta
device, turns checkpoint arrays into its parameters (sharing the memory-mapped file's pages when dtype and device
allow), reads parameters back and swaps the vocabulary tables. The canonical names are the ``state_dict()`` keys,
so the mapping is the identity.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import ml_dtypes
import numpy as np
import torch
from torch import nn

from distilbert_mf.checkpoint.names import TIED_KEY, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.modeling_utils import CPU_FLOAT16_WARNING, dtype_name
from distilbert_mf.torch.modeling import (
    DistilBertPreTrainedModel,
    Linear,
    check_attn_implementation,
    numpy_to_tensor,
    torch_dtype,
)

logger = logging.getLogger(__name__)

__all__ = ["numpy_to_tensor", "tensor_to_numpy"]


def tensor_to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A numpy array in the tensor's dtype (bfloat16 as ``ml_dtypes.bfloat16``); shares memory on CPU."""
    if tensor.is_meta:
        raise ValueError("the model is on the meta device: call model.to_empty(device=...) and load weights first")
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()


def resolve_device(device: Any, device_map: Any) -> torch.device:
    """``device=`` or transformers' ``device_map=`` ("cpu", "cuda", "auto", a device, an index, or ``{"": d}``)."""
    if device is not None and device_map is not None:
        raise ValueError(f"pass device= or device_map=, not both (got device={device!r}, device_map={device_map!r})")
    choice = device if device is not None else device_map
    if isinstance(choice, Mapping):
        if set(choice) != {""}:
            raise ValueError(
                f"device_map={dict(choice)!r} would split the model across devices, which distilbert_mf does not do; "
                'pass one device (device_map="cuda" or {"": "cuda:0"}), or shard with FSDP (docs/scaling.md)'
            )
        choice = choice[""]
    if choice is None:
        target = torch.get_default_device()
    elif choice == "auto":
        target = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            target = torch.device(choice)
        except (RuntimeError, TypeError) as err:
            raise ValueError(
                f"unknown device {choice!r}; expected 'cpu', 'cuda', 'cuda:N', 'auto' or an index"
            ) from err
    if target.type == "meta":
        raise ValueError(
            "from_pretrained loads weights, so device='meta' is not allowed; build Cls(config, device='meta')"
        )
    if target.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device {choice!r} asks for a CUDA GPU, but this PyTorch sees none (torch.cuda.is_available() is "
            "False); pass 'cpu', or 'auto' to take a GPU only when there is one"
        )
    return target


# ----------------------------------------------------------------------------------------------- the adapter


def check_options(cls: type, dtype: Any, options: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """``dtype`` / ``torch_dtype`` (aliases), ``attn_implementation``, ``device`` / ``device_map``, checked."""
    check_attn_implementation(options["attn_implementation"])
    alias = options.pop("torch_dtype")
    if dtype is not None and alias is not None and dtype_name(dtype) != dtype_name(alias):
        raise ValueError(f"dtype={dtype!r} and torch_dtype={alias!r} disagree; pass only dtype")
    dtype = dtype if dtype is not None else alias
    if not (isinstance(dtype, str) and dtype == "auto"):
        torch_dtype(dtype)  # a bad dtype fails now, before any file is read
    options["device"] = resolve_device(options["device"], options.pop("device_map"))
    return dtype, options


def declare(
    cls: type[DistilBertPreTrainedModel], config: DistilBertConfig, dtype: Any, options: dict[str, Any], fill: set[str]
) -> DistilBertPreTrainedModel:
    """The model on the meta device (no memory, nothing drawn), in eval mode; :func:`assign` materialises it."""
    target_dtype = torch_dtype(dtype) or torch.float32
    if target_dtype == torch.float16 and options["device"].type == "cpu":
        logger.warning(CPU_FLOAT16_WARNING)
    model = cls(config, attn_implementation=options["attn_implementation"], device="meta", dtype=target_dtype)
    return model.eval()


@torch.no_grad()
def assign(
    model: DistilBertPreTrainedModel,
    arrays: Mapping[str, np.ndarray],
    *,
    owned: bool,
    options: Mapping[str, Any] | None = None,
) -> None:
    """Copy checked canonical arrays into the parameters (cast to their dtype).

    A parameter still on the meta device becomes the array itself when dtype and device allow (``owned``: the
    loader's copy-on-write memory map, so loading costs no copy), else a converted copy; parameters the arrays do
    not cover and that are still on meta are created and initialised as :meth:`init_weights` does.
    """
    device = (options or {}).get("device")
    if device is None:
        device = next((p.device for p in model.parameters() if not p.is_meta), torch.get_default_device())
    params = dict(model.named_parameters(remove_duplicate=False))
    for key, array in arrays.items():
        param, tensor = params[key], numpy_to_tensor(array)
        if param.is_meta:
            new = tensor.to(device=device, dtype=param.dtype, copy=not owned)
            module_name, _, leaf = key.rpartition(".")
            model.get_submodule(module_name)._parameters[leaf] = nn.Parameter(new, param.requires_grad)
        else:
            param.copy_(tensor)
    model.tie_weights()
    leftover = [m for m in model.modules() if any(p.is_meta for p in m.parameters(recurse=False))]
    for m in leftover:
        m.to_empty(device=device, recurse=False)
    model.init_modules(leftover)
    model.tie_weights()


def read(model: DistilBertPreTrainedModel) -> dict[str, np.ndarray]:
    """Every canonical key as numpy (PyTorch layout: the state dict); shares memory with CPU parameters."""
    state = model.state_dict()
    return {key: tensor_to_numpy(state[key]) for key in expected_shapes(model.config, model.head)}


def frozen_keys(model: DistilBertPreTrainedModel) -> set[str]:
    return {name for name, p in model.named_parameters() if not p.requires_grad}


@torch.no_grad()
def replace_vocabulary(
    model: DistilBertPreTrainedModel, config: DistilBertConfig, arrays: Mapping[str, np.ndarray]
) -> None:
    """New word embeddings (and masked-LM projector) of ``config.vocab_size`` rows holding ``arrays``."""
    old = model.base_model.embeddings.word_embeddings
    kw = {"device": old.weight.device, "dtype": old.weight.dtype}
    new = nn.Embedding(config.vocab_size, config.dim, config.pad_token_id, **kw)
    prefix = "" if model.head == "base" else "distilbert."
    new.weight.copy_(numpy_to_tensor(arrays[prefix + "embeddings.word_embeddings.weight"]))
    new.weight.requires_grad_(old.weight.requires_grad)
    model.base_model.embeddings.word_embeddings = new
    if model.head == "masked_lm":
        projector = Linear(config.dim, config.vocab_size, **kw)
        projector.weight.copy_(numpy_to_tensor(arrays[TIED_KEY]))
        projector.bias.copy_(numpy_to_tensor(arrays["vocab_projector.bias"]))
        model.vocab_projector = projector
    model.config = config
    model.base_model.config = config
    model.tie_weights()
