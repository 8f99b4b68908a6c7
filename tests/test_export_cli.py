"""`distilbert-mf export`: the summary, exit statuses 0 / 1 / 2, and no artifact left behind on a failure."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from export_checkpoints import tiny_checkpoint

from distilbert_mf.cli import main
from distilbert_mf.export import formats as formats_module


@pytest.fixture
def checkpoint(tmp_path: Path, shared_data: Path) -> Path:
    return tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.torch
def test_export_onnx_prints_the_verification(tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    dst = tmp_path / "out"
    assert main(["export", str(checkpoint), str(dst), "--format", "onnx", "--quantize", "int8"]) == 0
    out = capsys.readouterr().out
    assert f"exported text-classification (sequence_classification) as onnx (float32) to {dst}" in out
    assert "in a fresh process that imported no distilbert_mf module" in out and ": passed" in out
    assert "int8 model model_quantized.onnx" in out
    assert {"model.onnx", "model_quantized.onnx", "export.json", "tokenizer.json"} <= set(_listing(dst))

    # an existing DST: exit 2, naming --overwrite; with it, replaced, here as JSON and without verification
    assert main(["export", str(checkpoint), str(dst)]) == 2
    assert "already exists; pass --overwrite to replace it" in capsys.readouterr().err
    assert main(["export", str(checkpoint), str(dst), "--overwrite", "--no-verify", "--json"]) == 0
    metadata = json.loads(capsys.readouterr().out)
    assert metadata["verification"] is None and metadata["quantization"] is None
    assert "model_quantized.onnx" not in _listing(dst)  # the folder was replaced as a whole


@pytest.mark.torch
def test_verification_failure_exits_1_and_writes_nothing(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture
) -> None:
    """A bound no float32 runtime meets (1e-12): the per-case numbers on stdout, exit 1, no DST."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--atol", "1e-12"]) == 1
    captured = capsys.readouterr()
    assert "verification of the onnx export failed: max |Δ|" in captured.out and "FAILED" in captured.out
    assert "nothing was written" in captured.err
    assert _listing(tmp_path) == ["ckpt"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "tflite"], "unknown export format 'tflite'; choose one of onnx, exported_program"),
        (["--format", "saved_model", "--quantize", "int8"], "int8 quantisation applies to the onnx format only"),
        (["--task", "summarization"], "unknown export task 'summarization'"),
        (["--task", "zero-shot-classification"], "is not an export task"),
        (["--format", "stablehlo", "--opset", "18"], "an opset applies to the onnx format only"),
        (["--dtype", "auto"], "--dtype auto does not apply to export"),
        (["--eval-file", "dev.tsv"], "give it with quantize='int8' (command line: --quantize int8)"),
    ],
)
def test_bad_input_exits_2(
    tmp_path: Path,
    checkpoint: Path,
    capsys: pytest.CaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    argv: list,
    message: str,
) -> None:
    monkeypatch.setattr(formats_module, "_installed", lambda module: True)
    assert main(["export", str(checkpoint), str(tmp_path / "out"), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("distilbert-mf export: error: ") and message in err
    assert _listing(tmp_path) == ["ckpt"]


def test_missing_runtime_names_the_extra(
    tmp_path: Path, checkpoint: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(formats_module, "_installed", lambda module: module not in ("tensorflow", "keras"))
    assert main(["export", str(checkpoint), str(tmp_path / "out"), "--format", "saved_model"]) == 2
    err = capsys.readouterr().err
    assert "needs tensorflow, keras to write and verify it" in err and "pip install 'distilbert-mf[tensorflow]'" in err
    assert _listing(tmp_path) == ["ckpt"]


@pytest.mark.torch
def test_head_without_weights_exits_2(tmp_path: Path, shared_data: Path, capsys: pytest.CaptureFixture) -> None:
    base = tiny_checkpoint(tmp_path / "base", "base", shared_data)
    argv = ["export", str(base), str(tmp_path / "out"), "--format", "exported_program", "--task", "ner"]
    assert main(argv) == 2
    assert "task 'token-classification' needs a checkpoint with that head" in capsys.readouterr().err
    assert _listing(tmp_path) == ["base"]
