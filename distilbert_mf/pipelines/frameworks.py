"""Thin per-framework adapters: load a model class, place it on a device, run one forward pass to numpy.

This is the only framework-specific code of the pipelines. Everything else (tokenization, batching,
post-processing) is numpy, written once, so the three frameworks give the same answers by construction.
Frameworks are imported lazily, only the one a pipeline uses.
"""

from __future__ import annotations

import logging
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distilbert_mf.checkpoint.names import HEADS
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.frameworks import (
    EXTRAS,
    available_frameworks,
    framework_of,
    is_available,
    model_class,
    normalize_framework,
)
from distilbert_mf.frameworks import FRAMEWORKS as FRAMEWORK_TABLE
from distilbert_mf.modeling_utils import CPU_FLOAT16_WARNING, dtype_name

logger = logging.getLogger(__name__)

FRAMEWORKS = tuple(FRAMEWORK_TABLE)  # ("pt", "tf", "flax"), in the order framework=None prefers them
OUTPUT_NAMES = {
    "base": ("last_hidden_state",),
    "masked_lm": ("logits",),
    "sequence_classification": ("logits",),
    "multiple_choice": ("logits",),
    "token_classification": ("logits",),
    "question_answering": ("start_logits", "end_logits"),
}


class FrameworkNotInstalledError(ImportError):
    """The framework asked for is not installed. ``cli_message`` says the same with ``--framework``."""

    def __init__(self, message: str, cli_message: str) -> None:
        super().__init__(message)
        self.cli_message = cli_message


class DeviceNotAvailableError(ValueError):
    """The device asked for is not on this machine. ``cli_message`` says the same with ``--device``."""

    def __init__(self, message: str, cli_message: str) -> None:
        super().__init__(message)
        self.cli_message = cli_message


def resolve_framework(framework: str | None) -> str:
    """Normalise ``framework`` ("pt"/"torch", "tf"/"tensorflow", "flax"/"jax"); ``None`` picks the first installed."""
    if framework is None:
        installed = available_frameworks()
        if not installed:
            raise ImportError(
                "no deep learning framework is installed: pip install 'distilbert-mf[torch]' (or [tensorflow], [flax])"
            )
        return installed[0]
    if not isinstance(framework, str):
        raise TypeError(f"framework must be a string such as 'pt', 'tf' or 'flax', got {type(framework).__name__}")
    name = normalize_framework(framework)
    if not is_available(name):
        needs = (
            f"needs {' and '.join(FRAMEWORK_TABLE[name][2])}: pip install 'distilbert-mf[{EXTRAS[name]}]'; "
            f"installed frameworks: {available_frameworks() or 'none'}"
        )
        raise FrameworkNotInstalledError(f"framework={framework!r} {needs}", f"--framework {framework} {needs}")
    return name


def installed_framework_of(model: Any) -> str | None:
    """The framework of a distilbert_mf model instance, or ``None`` when ``model`` is not one."""
    try:
        return framework_of(model)
    except TypeError:
        return None


# -- devices -----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Device:
    """A device request: ``kind`` is "cpu", "gpu" or "mps"; ``index`` the accelerator number (None: default).

    ``given`` is the request as the caller spelled it (``"cuda"``, ``0``, ``"GPU:1"``): messages echo it.
    """

    kind: str
    index: int | None = None
    given: str | None = field(default=None, compare=False)

    def __str__(self) -> str:
        if self.given is not None:
            return self.given
        return self.kind if self.index is None else f"{self.kind}:{self.index}"


def parse_device(device: Any) -> Device | None:
    """Map transformers-style device arguments to a :class:`Device`.

    ``None`` -> framework default; ``-1``/``"cpu"`` -> CPU; ``0``/``"cuda"``/``"cuda:1"``/``"gpu:0"`` -> a GPU;
    ``"mps"`` -> Apple GPU (PyTorch only); a ``torch.device`` is read by its ``type`` and ``index``.
    """
    if device is None:
        return None
    if isinstance(device, bool):
        raise TypeError(f"device must be an int, a string or a torch.device, got {device!r}")
    if isinstance(device, (int, np.integer)):
        if device == -1:
            return Device("cpu", given="-1")
        if device < -1:
            raise ValueError(f"device must be -1 (CPU) or a GPU index >= 0, got {device}")
        return Device("gpu", int(device), given=str(int(device)))
    if type(device).__name__ == "device" and hasattr(device, "type"):  # torch.device
        kind = "gpu" if device.type == "cuda" else device.type
        if kind not in ("cpu", "gpu", "mps"):
            raise ValueError(f"unsupported torch device {device!r}; expected cpu, cuda or mps")
        return Device(kind, device.index if kind != "cpu" else None, given=str(device))
    if isinstance(device, str):
        text = device.strip().lower()
        kind, _, number = text.partition(":")
        kinds = {"cpu": "cpu", "cuda": "gpu", "gpu": "gpu", "mps": "mps"}
        if kind in kinds and (not number or number.isdigit()):
            if kinds[kind] == "cpu":
                return Device("cpu", given=device.strip())
            return Device(kinds[kind], int(number) if number else None, given=device.strip())
    raise ValueError(
        f"unsupported device {device!r}; expected None, -1 or 'cpu', a GPU index like 0, 'cuda', 'cuda:1', "
        "'gpu:0', 'mps', or a torch.device"
    )


def _unavailable(device: Device, problem: str, python_fix: str = "", cli_fix: str = "") -> DeviceNotAvailableError:
    """The error for a device this machine lacks, echoing the request as the caller spelled it."""
    return DeviceNotAvailableError(
        f"device={str(device)!r} {problem}{python_fix}", f"--device {device} {problem}{cli_fix}"
    )


def _no_gpu(device: Device, framework: str, found: int) -> DeviceNotAvailableError:
    return _unavailable(
        device,
        f"asks for a GPU but {framework} sees {found} GPU(s) on this machine",
        "; pass device='cpu' (or -1), or install a GPU build of the framework",
        "; pass --device cpu (or leave --device out), or install a GPU build of the framework",
    )


# -- adapters --------------------------------------------------------------------------------------------------
class ModelAdapter:
    """One model of one framework behind a numpy forward pass.

    ``forward(input_ids, attention_mask)`` takes int64 arrays (batch, seq) and returns the head's outputs as
    float32 numpy arrays: ``logits``, ``start_logits``/``end_logits`` or ``last_hidden_state``.
    """

    framework: str = ""
    pad_to_multiple_of: int = 1  # padded widths are rounded up to this (bounds recompilation under jit)

    def __init__(self, model: Any) -> None:
        head = getattr(type(model), "head", None)
        if head not in HEADS:
            raise TypeError(f"{type(model).__name__} has no valid 'head' class attribute (expected one of {HEADS})")
        config = getattr(model, "config", None)
        if not isinstance(config, DistilBertConfig):
            raise TypeError(f"{type(model).__name__}.config must be a DistilBertConfig, got {type(config).__name__}")
        self.model = model
        self.head: str = head
        self.config: DistilBertConfig = config
        self.outputs = OUTPUT_NAMES[head]

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        raise NotImplementedError

    @staticmethod
    def _to_numpy(value: Any) -> np.ndarray:
        array = np.asarray(value)
        return array if array.dtype == np.float32 else array.astype(np.float32)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({type(self.model).__name__})"


class TorchAdapter(ModelAdapter):
    framework = "pt"

    def __init__(self, model: Any, device: Device | None = None) -> None:
        import torch

        super().__init__(model)
        if device is not None:
            model.to(_torch_device(device))
        model.eval()
        parameter = next(model.parameters(), None)
        self.device = parameter.device if parameter is not None else torch.device("cpu")

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        import torch

        with torch.inference_mode():
            out = self.model(
                input_ids=torch.from_numpy(input_ids).to(self.device),
                attention_mask=torch.from_numpy(attention_mask).to(self.device),
            )
            return {name: out[name].float().cpu().numpy() for name in self.outputs}


def _torch_device(device: Device) -> Any:
    import torch

    if device.kind == "cpu":
        return torch.device("cpu")
    if device.kind == "mps":
        if not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
            raise _unavailable(device, "asks for Apple's MPS backend but it is not available here")
        return torch.device("mps")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = device.index or 0
    if index >= count:
        raise _no_gpu(device, "PyTorch", count)
    return torch.device("cuda", index)


class TFAdapter(ModelAdapter):
    framework = "tf"

    def __init__(self, model: Any, device: Device | None = None) -> None:
        super().__init__(model)
        self.device_name = _tf_device_name(device)
        self._call = None

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        import tensorflow as tf

        if self._call is None:
            model, names = self.model, self.outputs

            def call(ids: Any, mask: Any) -> dict[str, Any]:
                out = model(input_ids=ids, attention_mask=mask, training=False)
                return {name: out[name] for name in names}

            # one trace for every (batch, seq) shape
            spec = tf.TensorSpec((None, None), tf.int64)
            self._call = tf.function(call, input_signature=(spec, spec), reduce_retracing=True)
        context = tf.device(self.device_name) if self.device_name else nullcontext()
        with context:
            out = self._call(tf.constant(input_ids), tf.constant(attention_mask))
        return {name: self._to_numpy(value.numpy()) for name, value in out.items()}


def _tf_device_name(device: Device | None) -> str | None:
    if device is None:
        return None
    if device.kind == "cpu":
        return "/CPU:0"
    if device.kind == "mps":
        raise _unavailable(device, "is a PyTorch backend; TensorFlow sees Apple GPUs as 'gpu' devices")
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    index = device.index or 0
    if index >= len(gpus):
        raise _no_gpu(device, "TensorFlow", len(gpus))
    return f"/GPU:{index}"


class FlaxAdapter(ModelAdapter):
    framework = "flax"
    pad_to_multiple_of = 16  # jit compiles once per padded shape

    def __init__(self, model: Any, device: Device | None = None) -> None:
        import jax
        from flax import nnx

        super().__init__(model)
        self.device = _jax_device(device)
        if self.device is not None:
            state = nnx.state(model)
            nnx.update(model, jax.device_put(state, self.device))
        model.eval()
        names = self.outputs

        def call(module: Any, ids: Any, mask: Any) -> dict[str, Any]:
            out = module(input_ids=ids, attention_mask=mask)
            return {name: out[name] for name in names}

        # tree mode: the model goes in as a plain pytree and nothing flows back out (inference changes no state);
        # NNX's default graph mode would copy every weight out of each call
        self._call = nnx.jit(call, graph=False)

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        import jax

        ids, mask = input_ids.astype(np.int32), attention_mask.astype(np.int32)
        if self.device is not None:
            ids, mask = jax.device_put(ids, self.device), jax.device_put(mask, self.device)
        # full float32 matrix products on GPUs too (JAX's default there is TF32-like), as PyTorch computes them
        with jax.default_matmul_precision("highest"):
            out = self._call(self.model, ids, mask)
        return {name: self._to_numpy(value) for name, value in out.items()}


def _jax_device(device: Device | None) -> Any:
    if device is None:
        return None
    import jax

    if device.kind == "cpu":
        return jax.devices("cpu")[0]
    if device.kind == "mps":
        raise _unavailable(device, "is a PyTorch backend; JAX has no MPS device")
    try:
        gpus = jax.devices("gpu")
    except RuntimeError:
        gpus = []
    index = device.index or 0
    if index >= len(gpus):
        raise _no_gpu(device, "JAX", len(gpus))
    return gpus[index]


_ADAPTERS: dict[str, type[ModelAdapter]] = {"pt": TorchAdapter, "tf": TFAdapter, "flax": FlaxAdapter}


def wrap_model(model: Any, *, device: Any = None) -> ModelAdapter:
    """Wrap an already-built distilbert_mf model of any framework (the framework is read from its class)."""
    framework = installed_framework_of(model)
    if framework is None:
        raise TypeError(
            f"model must be a folder, a Hub repo id, a short name, or a distilbert_mf model instance "
            f"(distilbert_mf.torch / .tensorflow / .flax), got {type(model).__module__}.{type(model).__name__}"
        )
    return _ADAPTERS[framework](model, parse_device(device))


def load_model(
    framework: str,
    head: str,
    name_or_path: Any,
    *,
    device: Any = None,
    dtype: Any = None,
    **load_kwargs: Any,
) -> ModelAdapter:
    """Load ``name_or_path`` with ``framework``'s class for ``head`` and wrap it in its adapter.

    ``dtype``: None (float32), "auto" (the checkpoint's; PyTorch and TensorFlow), "float32", "bfloat16",
    "float16" or a framework dtype object.
    ``load_kwargs`` go to ``from_pretrained`` (revision, cache_dir, local_files_only, token, config overrides).
    """
    framework = resolve_framework(framework)
    target = parse_device(device)
    name = dtype_name(dtype)  # validates every spelling; None for None and "auto"
    if isinstance(dtype, str) and dtype == "auto" and framework in ("pt", "tf"):
        load_kwargs["dtype"] = "auto"  # the checkpoint's dtype
    elif name is not None:
        load_kwargs["dtype"] = name
    # PyTorch's and TensorFlow's loaders warn about float16 on a CPU themselves
    if name == "float16" and framework == "flax" and not _jax_on_gpu(target):
        logger.warning(CPU_FLOAT16_WARNING)
    cls = model_class(framework, head)
    if framework == "tf":
        import tensorflow as tf

        device_name = _tf_device_name(target)
        with tf.device(device_name) if device_name else nullcontext():
            model = cls.from_pretrained(name_or_path, **load_kwargs)
    elif framework == "flax":
        import jax

        jax_device = _jax_device(target)
        with jax.default_device(jax_device) if jax_device is not None else nullcontext():
            model = cls.from_pretrained(name_or_path, **load_kwargs)
    else:
        if target is not None:
            load_kwargs["device"] = _torch_device(target)  # fails before loading when the device does not exist
        model = cls.from_pretrained(name_or_path, **load_kwargs)
    return _ADAPTERS[framework](model, target)


def _jax_on_gpu(target: Device | None) -> bool:
    """Whether the model lands on a GPU (JAX picks one by default when it has one)."""
    if target is not None:
        return target.kind != "cpu"
    import jax

    return jax.default_backend() != "cpu"
