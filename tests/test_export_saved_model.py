"""TensorFlow SavedModel: serving_default (int64) and serving_int32, dynamic shapes, run by plain TensorFlow."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_checkpoints import tiny_checkpoint

from distilbert_mf.export import export

pytestmark = pytest.mark.tensorflow

# a process with TensorFlow only: the signatures' inputs and outputs as TF Serving sees them
SIGNATURES = """
import json, sys
import tensorflow as tf
loaded = tf.saved_model.load(sys.argv[1])
out = {}
for name in ("serving_default", "serving_int32"):
    fn = loaded.signatures[name]
    inputs = {k: [v.dtype.name, v.shape.as_list()] for k, v in fn.structured_input_signature[1].items()}
    out[name] = {"inputs": inputs, "outputs": sorted(fn.structured_outputs)}
out["modules"] = [m for m in sys.modules if m.startswith("distilbert_mf")]
print(json.dumps(out))
"""


@pytest.mark.parametrize("head", ["sequence_classification", "multiple_choice"])
def test_saved_model_signatures(tmp_path: Path, shared_data: Path, head: str) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", head, shared_data)
    result = export(checkpoint, tmp_path / "serving" / "tiny" / "1", format="saved_model")
    report = result.verification
    assert report.passed and report.standalone
    assert {case.signature for case in report.cases} == {"default", "serving_int32"}  # both dtypes verified
    assert result.artifact == tmp_path / "serving" / "tiny" / "1"
    assert (result.artifact / "saved_model.pb").is_file() and (result.artifact / "vocab.txt").is_file()
    assert "variables/variables.index" in result.files
    done = subprocess.run(
        [sys.executable, "-I", "-c", SIGNATURES, str(result.artifact)], capture_output=True, text=True, check=True
    )
    signatures = json.loads(done.stdout.strip().splitlines()[-1])
    shape = [None, None, None] if head == "multiple_choice" else [None, None]
    for name, dtype in (("serving_default", "int64"), ("serving_int32", "int32")):
        assert signatures[name] == {
            "inputs": {"attention_mask": [dtype, shape], "input_ids": [dtype, shape]},
            "outputs": ["logits"],
        }
    assert signatures["modules"] == []
    metadata = json.loads((result.artifact / "export.json").read_text())
    assert metadata["writer"]["signatures"] == {"serving_default": "int64", "serving_int32": "int32"}


def test_saved_model_from_a_pytorch_model(tmp_path: Path, shared_data: Path) -> None:
    torch = pytest.importorskip("torch")
    from distilbert_mf.torch import DistilBertForQuestionAnswering

    torch.manual_seed(0)
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "question_answering", shared_data)
    model = DistilBertForQuestionAnswering.from_pretrained(checkpoint)
    result = export(model, tmp_path / "out", format="saved_model", tokenizer=checkpoint)
    assert result.verification.passed and result.verification.tokenized  # against the PyTorch model itself
    assert json.loads((tmp_path / "out" / "export.json").read_text())["source_framework"] == "pt"
    with pytest.raises(ValueError, match="the saved_model format is written in float32"):
        export(checkpoint, tmp_path / "bf16", format="saved_model", dtype="bfloat16")
