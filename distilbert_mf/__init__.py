"""DistilBERT in PyTorch, TensorFlow/Keras 3 and Flax NNX over one framework-neutral core.

``import distilbert_mf`` imports no ML framework: every framework class is imported lazily on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_FRAMEWORK_CLASSES = (
    "DistilBertModel",
    "DistilBertForMaskedLM",
    "DistilBertForSequenceClassification",
    "DistilBertForMultipleChoice",
    "DistilBertForTokenClassification",
    "DistilBertForQuestionAnswering",
)

_LAZY: dict[str, str] = {
    "DistilBertConfig": "distilbert_mf.config",
    "DistilBertTokenizer": "distilbert_mf.tokenization",
    "DistilBertTokenizerFast": "distilbert_mf.tokenization",
    "pipeline": "distilbert_mf.pipelines",
    "convert": "distilbert_mf.conversion",
    "check_parity": "distilbert_mf.parity",
    "AddedToken": "distilbert_mf.tokenization",
    "AutoConfig": "distilbert_mf.auto",
    "AutoTokenizer": "distilbert_mf.auto",
    "UnsupportedModelTypeError": "distilbert_mf.config",
    "CheckpointNotFoundError": "distilbert_mf.hub",
    "HubUnreachableError": "distilbert_mf.hub",
    "NotInCacheError": "distilbert_mf.hub",
}
_AUTO_MODELS = (
    "AutoModel",
    *(
        f"AutoModelFor{head}"
        for head in ("MaskedLM", "SequenceClassification", "MultipleChoice", "TokenClassification", "QuestionAnswering")
    ),
)
_LAZY.update({prefix + name: "distilbert_mf.auto" for prefix in ("", "TF", "Flax") for name in _AUTO_MODELS})
_LAZY.update({name: "distilbert_mf.torch" for name in _FRAMEWORK_CLASSES})
_LAZY.update({"TF" + name: "distilbert_mf.tensorflow" for name in _FRAMEWORK_CLASSES})
_LAZY.update({"Flax" + name: "distilbert_mf.flax" for name in _FRAMEWORK_CLASSES})

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module_name = _LAZY.get(name)
    if module_name is None:
        raise AttributeError(f"module 'distilbert_mf' has no attribute {name!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        extra = {
            "distilbert_mf.torch": "torch",
            "distilbert_mf.tensorflow": "tensorflow",
            "distilbert_mf.flax": "flax",
        }.get(module_name)
        if extra is None:
            raise
        raise ImportError(
            f"distilbert_mf.{name} needs the {extra!r} extra: pip install 'distilbert-mf[{extra}]' ({err})"
        ) from err
    value = getattr(module, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
