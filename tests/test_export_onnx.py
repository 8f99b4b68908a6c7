"""ONNX export (torch.onnx dynamo) of every head, verified in a fresh process; int8 quantisation; conversions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from export_checkpoints import tiny_checkpoint

from distilbert_mf.export import QUANTIZED_NAME, ExportVerificationError, export, resolve_task

pytestmark = pytest.mark.torch
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

HEAD_AXES = {
    "base": ({"last_hidden_state": ["batch_size", "sequence_length", 32]}, ["batch_size", "sequence_length"]),
    "masked_lm": ({"logits": ["batch_size", "sequence_length", 1124]}, ["batch_size", "sequence_length"]),
    "sequence_classification": ({"logits": ["batch_size", 3]}, ["batch_size", "sequence_length"]),
    "multiple_choice": ({"logits": ["batch_size", "num_choices"]}, ["batch_size", "num_choices", "sequence_length"]),
    "token_classification": ({"logits": ["batch_size", "sequence_length", 3]}, ["batch_size", "sequence_length"]),
    "question_answering": (
        {"start_logits": ["batch_size", "sequence_length"], "end_logits": ["batch_size", "sequence_length"]},
        ["batch_size", "sequence_length"],
    ),
}


def _dims(value: object) -> list[object]:
    return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]  # type: ignore[attr-defined]


@pytest.mark.parametrize("head", list(HEAD_AXES))
def test_every_head_exports_and_verifies(tmp_path: Path, shared_data: Path, head: str) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", head, shared_data, seed=len(head))
    opset = 20 if head == "token_classification" else None
    result = export(checkpoint, tmp_path / "out", format="onnx", opset=opset)

    report = result.verification
    assert report is not None and report.passed and report.standalone and report.tokenized
    assert len(report.cases) >= 2 and len({case.shape for case in report.cases}) == len(report.cases)
    assert 0 < report.worst <= 1e-5  # ONNX Runtime rounds differently from PyTorch; under 1e-5 even unscaled
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    outputs, input_axes = HEAD_AXES[head]
    assert {i.name: _dims(i) for i in model.graph.input} == {"input_ids": input_axes, "attention_mask": input_axes}
    assert {o.name: _dims(o) for o in model.graph.output} == outputs
    assert all(i.type.tensor_type.elem_type == onnx.TensorProto.INT64 for i in model.graph.input)
    assert next(o.version for o in model.opset_import if o.domain == "") == (opset or 18)

    metadata = json.loads((tmp_path / "out" / "export.json").read_text())
    assert metadata["task"] == resolve_task(head).name and metadata["verification"]["passed"] is True
    assert metadata["outputs"].keys() == outputs.keys() and metadata["inputs"]["input_ids"]["dtype"] == "int64"
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == sorted(["model.onnx", "config.json", "export.json", "vocab.txt", "tokenizer.json",
                            "tokenizer_config.json", "special_tokens_map.json"])  # fmt: skip
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]  # no staging folder left


def test_task_needs_the_head_weights(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "base", shared_data)
    with pytest.raises(
        ValueError, match=r"no weights for 2 key\(s\) of DistilBertForTokenClassification .*exports as 'feature-"
    ):
        export(checkpoint, tmp_path / "out", format="onnx", task="token-classification")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]


def test_encoder_of_a_head_checkpoint_and_float16(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    result = export(checkpoint, tmp_path / "out", format="onnx", task="feature-extraction", dtype="float16")
    assert result.task == "feature-extraction" and result.verification.passed
    assert result.verification.atol == 5e-3  # float16 held to its own rounding, against the float32 model
    model = onnx.load(str(tmp_path / "out" / "model.onnx"))
    assert model.graph.output[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_tampered_artifact_fails_verification(tmp_path: Path, shared_data: Path) -> None:
    """The comparison can fail: the word embeddings changed by 1e-3 in the ONNX file are caught."""
    from distilbert_mf.export.verify import verify_artifact
    from distilbert_mf.torch import DistilBertForSequenceClassification

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    result = export(checkpoint, tmp_path / "out", format="onnx", verify=False)
    assert result.verification is None
    path = tmp_path / "out" / "model.onnx"
    model = onnx.load(str(path))
    init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
    values = onnx.numpy_helper.to_array(init).copy()
    values += np.random.default_rng(0).normal(0.0, 1e-3, values.shape).astype(values.dtype)  # 0.5% of the weights
    init.CopyFrom(onnx.numpy_helper.from_array(values, init.name))
    onnx.save(model, str(path))
    source = DistilBertForSequenceClassification.from_pretrained(checkpoint)
    report = verify_artifact("onnx", path, source, "pt", resolve_task("text-classification"), tokenizer=None)
    assert not report.passed and report.standalone and not report.tokenized
    assert "FAILED" in "\n".join(report.lines())


def _labelled_file(path: Path) -> Path:
    rows = ["sentence\tlabel", "a fine film\t0", "dull and long\t1", "okay\t2", "I loved every minute of it\tLABEL_1"]
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def test_int8_quantisation_with_accuracy(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    labelled = _labelled_file(tmp_path / "dev.tsv")
    result = export(checkpoint, tmp_path / "out", quantize="int8", eval_file=labelled, max_accuracy_drop=100)
    quantized = tmp_path / "out" / QUANTIZED_NAME
    assert QUANTIZED_NAME in result.files and quantized.is_file()
    ops = {node.op_type for node in onnx.load(str(quantized)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    q = result.quantization
    assert q["size_bytes"] < q["float32_size_bytes"] / 2
    assert 0 < q["vs_source"]["max_abs_diff"]["logits"] < 1.0 and 0 <= q["vs_source"]["argmax_agreement"]["logits"] <= 1
    accuracy = q["accuracy"]
    assert accuracy["examples"] == 4 and accuracy["source"] == accuracy["onnx_float32"]  # float32 ONNX = the model
    assert accuracy["drop_points"] == pytest.approx(100 * (accuracy["onnx_float32"] - accuracy["onnx_int8"]))
    assert json.loads((tmp_path / "out" / "export.json").read_text())["quantization"]["accuracy"] == accuracy
    assert any("accuracy on" in line for line in result.lines())


def test_accuracy_drop_past_the_limit_writes_nothing(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import distilbert_mf.export.quantize as quantize

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    drop = {"file": "dev.tsv", "examples": 4, "source": 0.9, "onnx_float32": 0.9, "onnx_int8": 0.85, "drop_points": 5.0}
    monkeypatch.setattr(quantize, "accuracy_cost", lambda *args, **kwargs: dict(drop))
    with pytest.raises(ExportVerificationError, match=r"costs 5.00 accuracy points .* more than the 1 allowed"):
        export(checkpoint, tmp_path / "out", quantize="int8", eval_file=_labelled_file(tmp_path / "dev.tsv"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "dev.tsv"]


def test_bad_labelled_file(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    bad = tmp_path / "bad.tsv"
    bad.write_text("review\tstars\nfine\t5\n", encoding="utf-8")
    with pytest.raises(ValueError, match="needs a 'label' column and a text column"):
        export(checkpoint, tmp_path / "out", quantize="int8", eval_file=bad, verify=False)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        export(checkpoint, tmp_path / "out", quantize="int8", eval_file=tmp_path / "none.tsv", verify=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.tsv", "ckpt"]


@pytest.mark.tensorflow
def test_keras_model_exports_through_pytorch_weights(tmp_path: Path, shared_data: Path) -> None:
    from distilbert_mf.tensorflow import TFDistilBertForQuestionAnswering

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "question_answering", shared_data)
    model = TFDistilBertForQuestionAnswering.from_pretrained(checkpoint)
    result = export(model, tmp_path / "out", format="onnx", tokenizer=checkpoint)
    assert result.task == "question-answering" and result.verification.passed and result.verification.tokenized
    assert json.loads((tmp_path / "out" / "export.json").read_text())["source_framework"] == "tf"


@pytest.mark.flax
def test_flax_model_exports_through_pytorch_weights(tmp_path: Path, shared_data: Path) -> None:
    from distilbert_mf import DistilBertTokenizerFast
    from distilbert_mf.flax import FlaxDistilBertForMultipleChoice

    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "multiple_choice", shared_data)
    model = FlaxDistilBertForMultipleChoice.from_pretrained(checkpoint)
    tokenizer = DistilBertTokenizerFast.from_pretrained(checkpoint)
    result = export(model, tmp_path / "out", format="onnx", tokenizer=tokenizer)
    assert result.verification.passed and result.verification.tokenized
    assert [case.shape for case in result.verification.cases] == [(1, 2, 16), (2, 4, 64)]
    with pytest.raises(ValueError, match="is a multiple_choice model; task 'fill-mask' needs a DistilBertForMaskedLM"):
        export(model, tmp_path / "out2", format="onnx", task="fill-mask")
