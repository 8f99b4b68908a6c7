"""The Auto classes transformers users type: ``AutoConfig``, ``AutoTokenizer`` and, per framework, the Auto models.

Every checkpoint this package loads is a DistilBERT, so an Auto class is a name for one head class::

    from distilbert_mf import AutoModelForSequenceClassification, AutoTokenizer   # PyTorch
    from distilbert_mf.tensorflow import TFAutoModelForSequenceClassification      # Keras
    from distilbert_mf.flax import FlaxAutoModelForSequenceClassification          # Flax NNX

    model = AutoModelForSequenceClassification.from_pretrained("distilbert-mf/minilm-sst2")

``from_pretrained`` takes what the head class's ``from_pretrained`` takes; ``from_config(config)`` builds a randomly
initialised model. A checkpoint whose ``config.json`` has another ``model_type`` raises
:class:`~distilbert_mf.config.UnsupportedModelTypeError` naming it (a BERT checkpoint loads after
``conversion/bert_to_distilbert.py``). Importing this module imports no framework; the head class's framework is
imported on the first call.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, ClassVar

from distilbert_mf.checkpoint.names import ARCHITECTURES
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.tokenization.auto import AutoTokenizer

HEAD_CLASSES = ARCHITECTURES  # head -> the class name without framework prefix
FRAMEWORK_MODULES = {"pt": "distilbert_mf.torch", "tf": "distilbert_mf.tensorflow", "flax": "distilbert_mf.flax"}
FRAMEWORK_PREFIXES = {"pt": "", "tf": "TF", "flax": "Flax"}
EXTRAS = {"pt": "torch", "tf": "tensorflow", "flax": "flax"}


class AutoConfig:
    """``AutoConfig.from_pretrained(name_or_path, **kwargs)``: the :class:`DistilBertConfig` of a checkpoint."""

    def __init__(self) -> None:
        raise TypeError("AutoConfig is not instantiated: call AutoConfig.from_pretrained(name_or_path)")

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], **kwargs: Any) -> Any:
        """As :meth:`DistilBertConfig.from_pretrained` (Hub keywords, field overrides, ``return_unused_kwargs``)."""
        return DistilBertConfig.from_pretrained(name_or_path, **kwargs)

    @classmethod
    def for_model(cls, model_type: str = "distilbert", **kwargs: Any) -> DistilBertConfig:
        """A default config with ``kwargs`` as fields; ``model_type`` must be ``"distilbert"``."""
        return DistilBertConfig.from_dict({"model_type": model_type}, **kwargs)


class _AutoModel:
    """A name for one head class of one framework (set by the subclasses below)."""

    framework: ClassVar[str]
    head: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        raise TypeError(
            f"{type(self).__name__} is not instantiated: call {type(self).__name__}.from_pretrained(name_or_path) "
            f"or {type(self).__name__}.from_config(config)"
        )

    @classmethod
    def model_class(cls) -> type:
        """The head class this Auto class stands for (imports its framework)."""
        module_name = FRAMEWORK_MODULES[cls.framework]
        try:
            module = importlib.import_module(module_name)
        except ImportError as err:
            extra = EXTRAS[cls.framework]
            raise ImportError(
                f"{cls.__name__} needs the {extra!r} extra: pip install 'distilbert-mf[{extra}]' ({err})"
            ) from err
        return getattr(module, FRAMEWORK_PREFIXES[cls.framework] + HEAD_CLASSES[cls.head])

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike[str], *args: Any, **kwargs: Any) -> Any:
        """Load ``name_or_path`` into the head class; keywords as the head class's ``from_pretrained``."""
        if args:
            raise TypeError(
                f"{cls.__name__}.from_pretrained takes the model name or path and keywords only, got {len(args)} "
                "more positional argument(s); pass config=... and the rest by name"
            )
        return cls.model_class().from_pretrained(name_or_path, **kwargs)

    @classmethod
    def from_config(cls, config: DistilBertConfig, **kwargs: Any) -> Any:
        """A randomly initialised model of ``config`` (keywords as the head class's constructor)."""
        if not isinstance(config, DistilBertConfig):
            raise TypeError(
                f"{cls.__name__}.from_config expects a DistilBertConfig, got {type(config).__name__}; "
                "read one with AutoConfig.from_pretrained(name_or_path)"
            )
        return cls.model_class()(config, **kwargs)


# PyTorch
class AutoModel(_AutoModel):
    framework, head = "pt", "base"


class AutoModelForMaskedLM(_AutoModel):
    framework, head = "pt", "masked_lm"


class AutoModelForSequenceClassification(_AutoModel):
    framework, head = "pt", "sequence_classification"


class AutoModelForMultipleChoice(_AutoModel):
    framework, head = "pt", "multiple_choice"


class AutoModelForTokenClassification(_AutoModel):
    framework, head = "pt", "token_classification"


class AutoModelForQuestionAnswering(_AutoModel):
    framework, head = "pt", "question_answering"


# Keras 3 (distilbert_mf.tensorflow)
class TFAutoModel(_AutoModel):
    framework, head = "tf", "base"


class TFAutoModelForMaskedLM(_AutoModel):
    framework, head = "tf", "masked_lm"


class TFAutoModelForSequenceClassification(_AutoModel):
    framework, head = "tf", "sequence_classification"


class TFAutoModelForMultipleChoice(_AutoModel):
    framework, head = "tf", "multiple_choice"


class TFAutoModelForTokenClassification(_AutoModel):
    framework, head = "tf", "token_classification"


class TFAutoModelForQuestionAnswering(_AutoModel):
    framework, head = "tf", "question_answering"


# Flax NNX (distilbert_mf.flax)
class FlaxAutoModel(_AutoModel):
    framework, head = "flax", "base"


class FlaxAutoModelForMaskedLM(_AutoModel):
    framework, head = "flax", "masked_lm"


class FlaxAutoModelForSequenceClassification(_AutoModel):
    framework, head = "flax", "sequence_classification"


class FlaxAutoModelForMultipleChoice(_AutoModel):
    framework, head = "flax", "multiple_choice"


class FlaxAutoModelForTokenClassification(_AutoModel):
    framework, head = "flax", "token_classification"


class FlaxAutoModelForQuestionAnswering(_AutoModel):
    framework, head = "flax", "question_answering"


AUTO_MODELS: dict[str, type[_AutoModel]] = {
    cls.__name__: cls for cls in _AutoModel.__subclasses__()
}  # every Auto model class by name

__all__ = ["AUTO_MODELS", "AutoConfig", "AutoTokenizer", *AUTO_MODELS]
