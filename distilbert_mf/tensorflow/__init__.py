"""DistilBERT in Keras 3: ``TFDistilBertModel`` and the five task heads (TensorFlow backend by default).

The same classes run under ``KERAS_BACKEND=jax`` or ``torch``; SavedModel export needs the TensorFlow backend.
"""

from distilbert_mf.tensorflow.loading import TFDistilBertPreTrainedModel, export_saved_model
from distilbert_mf.tensorflow.modeling import (
    TFDistilBertForMaskedLM,
    TFDistilBertForMultipleChoice,
    TFDistilBertForQuestionAnswering,
    TFDistilBertForSequenceClassification,
    TFDistilBertForTokenClassification,
    TFDistilBertModel,
)

__all__ = [
    "TFDistilBertForMaskedLM",
    "TFDistilBertForMultipleChoice",
    "TFDistilBertForQuestionAnswering",
    "TFDistilBertForSequenceClassification",
    "TFDistilBertForTokenClassification",
    "TFDistilBertModel",
    "TFDistilBertPreTrainedModel",
    "export_saved_model",
]
