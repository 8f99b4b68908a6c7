"""Our documented examples trigger no warning: the Keras ``fit`` example of docs/tensorflow.md runs clean."""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
@pytest.mark.tensorflow
def test_keras_fit_example_warns_nothing():
    import numpy as np

    from distilbert_mf import DistilBertConfig
    from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification

    doc = (ROOT / "docs" / "tensorflow.md").read_text(encoding="utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", doc, flags=re.S) if "model.fit(" in b]
    config = DistilBertConfig(vocab_size=100, dim=32, n_heads=4, hidden_dim=37, n_layers=2)
    namespace = {"np": np, "model": TFDistilBertForSequenceClassification(config)}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        exec(compile(block, "docs/tensorflow.md", "exec"), namespace)
    ours = [w for w in caught if "keras" in w.filename or "distilbert_mf" in w.filename or "docs/" in w.filename]
    assert not ours, [f"{w.filename}:{w.lineno}: {w.message}" for w in ours]
