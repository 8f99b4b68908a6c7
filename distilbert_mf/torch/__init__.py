"""DistilBERT in PyTorch: the six models of the framework contract as ``torch.nn.Module``s.

```python
from distilbert_mf.torch import DistilBertForSequenceClassification

model = DistilBertForSequenceClassification.from_pretrained("path/or/hub-id")
logits = model(input_ids=ids, attention_mask=mask).logits  # (batch, num_labels)
```
"""

from distilbert_mf.torch.loading import DistilBertPreTrainedModel
from distilbert_mf.torch.modeling import (
    DistilBertForMaskedLM,
    DistilBertForMultipleChoice,
    DistilBertForQuestionAnswering,
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
    DistilBertModel,
)

__all__ = [
    "DistilBertForMaskedLM",
    "DistilBertForMultipleChoice",
    "DistilBertForQuestionAnswering",
    "DistilBertForSequenceClassification",
    "DistilBertForTokenClassification",
    "DistilBertModel",
    "DistilBertPreTrainedModel",
]
