"""Export for serving: ONNX, TensorFlow SavedModel, StableHLO (jax.export) and torch ExportedProgram, verified.

```python
from distilbert_mf.export import export

result = export("distilbert-mf/minilm-sst2", "serving/minilm-onnx", format="onnx", quantize="int8")
print("\\n".join(result.lines()))
```

Each artifact runs in a process that never imports distilbert_mf (only its runtime: onnxruntime, torch,
tensorflow or jax), and is verified that way against the source model before it is put in place. The
``distilbert-mf export`` command wraps :func:`export`. Importing this package imports no ML framework.
"""

from distilbert_mf.export.api import METADATA_NAME, DestinationExistsError, ExportResult, export
from distilbert_mf.export.formats import FORMATS, ExportFormat, MissingExportDependencyError, get_format
from distilbert_mf.export.quantize import QUANTIZED_NAME
from distilbert_mf.export.tasks import TASKS, ExportTask, resolve_task
from distilbert_mf.export.verify import DEFAULT_ATOL, ExportVerificationError, VerificationReport

__all__ = [
    "DEFAULT_ATOL",
    "FORMATS",
    "METADATA_NAME",
    "QUANTIZED_NAME",
    "TASKS",
    "DestinationExistsError",
    "ExportFormat",
    "ExportResult",
    "ExportTask",
    "ExportVerificationError",
    "MissingExportDependencyError",
    "VerificationReport",
    "export",
    "get_format",
    "resolve_task",
]
