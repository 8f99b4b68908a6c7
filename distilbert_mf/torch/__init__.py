"""DistilBERT in PyTorch: the six models of the framework contract as ``torch.nn.Module``s.

```python
from distilbert_mf.torch import DistilBertForSequenceClassification

model = DistilBertForSequenceClassification.from_pretrained("path/or/hub-id")
logits = model(input_ids=ids, attention_mask=mask).logits  # (batch, num_labels)
```
"""

from distilbert_mf.auto import (  # the Auto names for this framework's head classes
    AutoModel,
    AutoModelForMaskedLM,
    AutoModelForMultipleChoice,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    AutoModelForTokenClassification,
)
from distilbert_mf.torch import loading  # noqa: F401  (the weights adapter the models load through)
from distilbert_mf.torch.modeling import (
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
    DistilBertPreTrainedModel,
)

__all__ = [
    "AutoModel",
    "AutoModelForMaskedLM",
    "AutoModelForMultipleChoice",
    "AutoModelForQuestionAnswering",
    "AutoModelForSequenceClassification",
    "AutoModelForTokenClassification",
    "DistilBertForMaskedLM",
    "DistilBertForMultipleChoice",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "DistilBertPreTrainedModel",
]
