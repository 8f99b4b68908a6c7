"""DistilBERT in Flax NNX: ``FlaxDistilBertModel`` and the five task heads (see ``modeling.py``).

Requires the ``flax`` extra (jax, flax, optax): ``pip install 'distilbert-mf[flax]'``.
"""

from distilbert_mf.auto import (  # the Auto names for this framework's head classes
    FlaxAutoModel,
    FlaxAutoModelForMaskedLM,
    FlaxAutoModelForMultipleChoice,
    FlaxAutoModelForQuestionAnswering,
    FlaxAutoModelForSequenceClassification,
    FlaxAutoModelForTokenClassification,
)
from distilbert_mf.flax import loading  # noqa: F401  (the weights adapter the models load through)
from distilbert_mf.flax.modeling import (
    FlaxDistilBertForMaskedLM,
    FlaxDistilBertForMultipleChoice,
    FlaxDistilBertForQuestionAnswering,
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertForTokenClassification,
    FlaxDistilBertModel,
    FlaxDistilBertPreTrainedModel,
    PositionTable,
)
from distilbert_mf.flax.sharding import TENSOR_PARALLEL_RULES, logical_partition_specs, shard_model

__all__ = [
    "TENSOR_PARALLEL_RULES",
    "FlaxAutoModel",
    "FlaxAutoModelForMaskedLM",
    "FlaxAutoModelForMultipleChoice",
    "FlaxAutoModelForQuestionAnswering",
    "FlaxAutoModelForSequenceClassification",
    "FlaxAutoModelForTokenClassification",
    "FlaxDistilBertForMaskedLM",
    "FlaxDistilBertForMultipleChoice",
    "FlaxDistilBertForQuestionAnswering",
    "FlaxDistilBertForSequenceClassification",
    "FlaxDistilBertForTokenClassification",
    "FlaxDistilBertModel",
    "FlaxDistilBertPreTrainedModel",
    "PositionTable",
    "logical_partition_specs",
    "shard_model",
]
