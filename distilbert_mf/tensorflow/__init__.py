"""DistilBERT in Keras 3: ``TFDistilBertModel`` and the five task heads (TensorFlow backend by default).

The same classes run under ``KERAS_BACKEND=jax`` or ``torch``; SavedModel export needs the TensorFlow backend.
"""

from distilbert_mf.auto import (  # the Auto names for this framework's head classes
    TFAutoModel,
    TFAutoModelForMaskedLM,
    TFAutoModelForMultipleChoice,
    TFAutoModelForQuestionAnswering,
    TFAutoModelForSequenceClassification,
    TFAutoModelForTokenClassification,
)
from distilbert_mf.tensorflow import loading  # noqa: F401  (the weights adapter the models load through)
from distilbert_mf.tensorflow.modeling import (
    TFDistilBertForMaskedLM,
    TFDistilBertForMultipleChoice,
    TFDistilBertForQuestionAnswering,
    TFDistilBertForSequenceClassification,
    TFDistilBertForTokenClassification,
    TFDistilBertModel,
    TFDistilBertPreTrainedModel,
)


def export_saved_model(model: TFDistilBertPreTrainedModel, directory):
    """Function form of :meth:`TFDistilBertPreTrainedModel.export_saved_model`."""
    return model.export_saved_model(directory)


__all__ = [
    "TFAutoModel",
    "TFAutoModelForMaskedLM",
    "TFAutoModelForMultipleChoice",
    "TFAutoModelForQuestionAnswering",
    "TFAutoModelForSequenceClassification",
    "TFAutoModelForTokenClassification",
    "TFDistilBertForMaskedLM",
    "TFDistilBertForMultipleChoice",
    "TFDistilBertForQuestionAnswering",
    "TFDistilBertForSequenceClassification",
    "TFDistilBertForTokenClassification",
    "TFDistilBertModel",
    "TFDistilBertPreTrainedModel",
    "export_saved_model",
]
