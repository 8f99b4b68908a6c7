"""Which frameworks are installed, their model classes by head, and tensors back to numpy.

Framework-neutral: nothing here imports a framework until a function needs its model classes.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import Any

import numpy as np

from distilbert_mf.checkpoint.names import ARCHITECTURES, check_head

# short name -> (package, class prefix, modules that must be importable)
FRAMEWORKS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "pt": ("distilbert_mf.torch", "", ("torch",)),
    "tf": ("distilbert_mf.tensorflow", "TF", ("tensorflow", "keras")),
    "flax": ("distilbert_mf.flax", "Flax", ("jax", "flax")),
}
EXTRAS = {"pt": "torch", "tf": "tensorflow", "flax": "flax"}
ALIASES = {"torch": "pt", "pytorch": "pt", "tensorflow": "tf", "keras": "tf", "jax": "flax"}


def normalize_framework(name: str) -> str:
    """'pt'/'torch'/'pytorch' -> 'pt', 'tf'/'tensorflow'/'keras' -> 'tf', 'flax'/'jax' -> 'flax'."""
    key = ALIASES.get(str(name).lower(), str(name).lower())
    if key not in FRAMEWORKS:
        raise ValueError(f"unknown framework {name!r}; expected one of {sorted(FRAMEWORKS)} (or torch/tensorflow/jax)")
    return key


def is_available(framework: str) -> bool:
    """True when the framework's modules are installed (checked without importing them)."""
    _, _, modules = FRAMEWORKS[normalize_framework(framework)]
    return all(_importable(module) for module in modules)


def _importable(module: str) -> bool:
    """Installed as a real package: a bare folder of that name on ``sys.path`` (a namespace package) does not count."""
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")


def available_frameworks() -> list[str]:
    """Installed frameworks in preference order pt, tf, flax."""
    return [name for name in FRAMEWORKS if is_available(name)]


def model_class(framework: str, head: str) -> type:
    """The model class of ``head`` in ``framework`` (e.g. ('tf', 'masked_lm') -> TFDistilBertForMaskedLM)."""
    framework = normalize_framework(framework)
    check_head(head)
    package, prefix, _ = FRAMEWORKS[framework]
    if not is_available(framework):
        raise ImportError(f"framework {framework!r} is not installed: pip install 'distilbert-mf[{EXTRAS[framework]}]'")
    module = importlib.import_module(package)
    return getattr(module, prefix + ARCHITECTURES[head])


def framework_of(model: Any) -> str:
    """The framework a model instance belongs to, from its class's module."""
    module = type(model).__module__
    for name, (package, _, _) in FRAMEWORKS.items():
        if module == package or module.startswith(package + "."):
            return name
    raise TypeError(f"{type(model).__name__} is not a distilbert_mf model (module {module})")


def to_numpy(value: Any) -> Any:
    """A framework tensor (or a tuple/list of them) as numpy; bfloat16 tensors become float32."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return type(value)(to_numpy(v) for v in value)
    if hasattr(value, "detach"):  # torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    array = np.asarray(value)
    if array.dtype.name == "bfloat16":
        array = array.astype(np.float32)
    return array
