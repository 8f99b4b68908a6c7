"""distilbert_mf.export without a heavy run: tasks, formats, argument checks, destinations, comparison rules."""

from __future__ import annotations

import ast
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from export_checkpoints import tiny_checkpoint

import distilbert_mf.export.api as api
from distilbert_mf.export import (
    FORMATS,
    TASKS,
    DestinationExistsError,
    ExportVerificationError,
    MissingExportDependencyError,
    export,
    get_format,
    resolve_task,
)
from distilbert_mf.export import formats as formats_module
from distilbert_mf.export.verify import (
    RUNNER,
    VerificationReport,
    compare,
    verification_inputs,
)


def test_import_loads_no_framework() -> None:
    code = (
        "import sys, distilbert_mf.export; "
        "print([m for m in ('torch', 'tensorflow', 'jax', 'keras', 'onnx', 'onnxruntime') if m in sys.modules])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_runner_imports_only_runtimes() -> None:
    """The standalone runner must never import distilbert_mf (it is what proves the artifact stands alone)."""
    tree = ast.parse(RUNNER.read_text(encoding="utf-8"))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module.split(".")[0])
    assert modules <= {"__future__", "argparse", "json", "sys", "importlib", "typing", "numpy"} | {
        "onnxruntime",
        "torch",
        "tensorflow",
        "jax",
    }, modules


def test_tasks_follow_optimum_names() -> None:
    assert {t.name: t.output_names for t in TASKS.values()} == {
        "feature-extraction": ("last_hidden_state",),
        "fill-mask": ("logits",),
        "text-classification": ("logits",),
        "multiple-choice": ("logits",),
        "token-classification": ("logits",),
        "question-answering": ("start_logits", "end_logits"),
    }
    assert resolve_task("multiple-choice").input_axes == ("batch_size", "num_choices", "sequence_length")
    assert resolve_task("sentiment-analysis").head == "sequence_classification"
    assert resolve_task("question_answering").name == "question-answering"  # head names work too
    assert resolve_task("Token_Classification").name == "token-classification"
    assert resolve_task("base").name == "feature-extraction"


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ("summarization", "unknown export task 'summarization'; choose one of feature-extraction"),
        ("zero-shot-classification", "not an export task: its model is a text-classification"),
    ],
)
def test_unknown_task(task: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resolve_task(task)


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown export format 'tflite'; choose one of onnx, exported_program"):
        get_format("tflite")
    assert get_format("Exported-Program").name == "exported_program"
    assert set(FORMATS) == {"onnx", "saved_model", "stablehlo", "exported_program"}


def test_missing_runtime_names_the_extra(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(formats_module, "_installed", lambda module: module != "onnxruntime")
    with pytest.raises(
        MissingExportDependencyError, match=r"needs onnxruntime .*pip install 'distilbert-mf\[export,torch\]'"
    ):
        export(tmp_path / "unused", tmp_path / "out", format="onnx")
    export_dir = tmp_path / "out"
    assert not export_dir.exists()
    monkeypatch.setattr(formats_module, "_installed", lambda module: module not in ("jax", "flax"))
    with pytest.raises(ImportError, match=r"stablehlo export needs jax, flax .*distilbert-mf\[flax\]"):
        export(tmp_path / "unused", tmp_path / "out", format="stablehlo", verify=False)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"format": "saved_model", "quantize": "int8"}, ValueError, "applies to the onnx format only"),
        ({"quantize": "int4"}, ValueError, r"quantize must be None or one of \('int8',\), got 'int4'"),
        ({"format": "stablehlo", "opset": 18}, ValueError, "an opset applies to the onnx format only, got opset 18"),
        ({"dtype": "bfloat16"}, ValueError, "the onnx format is written in float32 or float16, got dtype 'bfloat16'"),
        ({"dtype": "int8"}, ValueError, "unsupported dtype 'int8'"),
        ({"quantize": "int8", "dtype": "float16"}, ValueError, "starts from the float32 model"),
        ({"eval_file": "dev.tsv"}, ValueError, "an eval file measures the accuracy cost of int8 quantisation"),
        ({"atol": -1.0}, ValueError, "atol must be a positive finite number, got -1.0"),
        ({"quantize": "int8", "max_accuracy_drop": -2}, ValueError, "max_accuracy_drop must be"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path: Path, kwargs: dict, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        export(tmp_path / "no-such-model", tmp_path / "out", **kwargs)
    assert list(tmp_path.iterdir()) == []  # nothing written, not even a temporary folder


def test_existing_destination(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(formats_module, "_installed", lambda module: True)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(DestinationExistsError, match="already exists; pass overwrite=True") as info:
        export(tmp_path / "model", dst, format="onnx")
    assert "--overwrite" in info.value.cli_message
    with pytest.raises(FileExistsError, match="not an export of distilbert_mf, so overwrite will not delete it"):
        export(tmp_path / "model", dst, format="onnx", overwrite=True)
    afile = tmp_path / "file.onnx"
    afile.write_text("x")
    with pytest.raises(NotADirectoryError, match="is not a folder"):
        export(tmp_path / "model", afile, format="onnx", overwrite=True)
    assert (dst / "keep.txt").read_text() == "mine"


def test_failed_export_leaves_nothing(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A failure at any step (here: the writer, after the tokenizer was copied) removes the staging folder; an
    existing export being overwritten stays as it was."""
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / api.METADATA_NAME).write_text(json.dumps({"format": "onnx"}))

    def broken_writer(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(formats_module, "_installed", lambda module: True)
    monkeypatch.setattr(formats_module.ExportFormat, "load_writer", lambda self: broken_writer)
    monkeypatch.setattr(api, "load_source", _fake_source)
    with pytest.raises(OSError, match="disk full"):
        export(checkpoint, dst, format="onnx", overwrite=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt", "out"]
    assert json.loads((dst / api.METADATA_NAME).read_text()) == {"format": "onnx"}


def _fake_source(model_or_path: object, fmt: object, task: object, dtype: str, folder: Path, **kwargs: object):
    (folder / "vocab.txt").write_text("[PAD]\n")
    return api.Source(None, None, "pt", resolve_task("text-classification"), "fake", ["vocab.txt"])


def test_compare_bounds_scale_with_magnitude() -> None:
    ref = [{"logits": np.array([[10.0, -2.0]], np.float32)}]
    batches = [{"input_ids": np.zeros((1, 4), np.int64)}]
    ok = compare(ref, {"default": [{"logits": ref[0]["logits"] + 9e-5}]}, batches, 1e-5)
    assert ok[0].passed and math.isclose(ok[0].bound["logits"], 1e-4)
    bad = compare(ref, {"default": [{"logits": ref[0]["logits"] + 2e-4}]}, batches, 1e-5)
    assert not bad[0].passed
    nan = compare(ref, {"default": [{"logits": np.full((1, 2), np.nan, np.float32)}]}, batches, 1e-5)
    assert nan[0].max_abs_diff["logits"] == math.inf and not nan[0].passed
    wrong_shape = compare(ref, {"default": [{"logits": np.zeros((2, 2), np.float32)}]}, batches, 1e-5)
    assert not wrong_shape[0].passed
    missing = compare(ref, {"default": [{}]}, batches, 1e-5)
    assert not missing[0].passed


def test_report_fails_when_the_runtime_process_imported_us() -> None:
    cases = compare(
        [{"logits": np.ones((1, 2))}],
        {"default": [{"logits": np.ones((1, 2))}]},
        [{"input_ids": np.ones((1, 3))}],
        1e-5,
    )
    report = VerificationReport("m.onnx", "onnx", "float32", 1e-5, "onnxruntime", cases, ["distilbert_mf"], True)
    assert not report.passed and "imported ['distilbert_mf']" in "\n".join(report.lines())
    assert VerificationReport("m.onnx", "onnx", "float32", 1e-5, "ort", cases, [], True).passed
    assert not VerificationReport("m.onnx", "onnx", "float32", 1e-5, "ort", [], [], True).passed  # nothing compared
    with pytest.raises(ValueError):  # the CLI's exit 1 is this exception
        raise ExportVerificationError("x", report)


def test_verification_inputs_are_tokenized_batches(shared_data: Path) -> None:
    from distilbert_mf import DistilBertConfig, DistilBertTokenizerFast

    tokenizer = DistilBertTokenizerFast.from_pretrained(shared_data / "tiny-random-distilbert")
    config = DistilBertConfig(vocab_size=1124, max_position_embeddings=512)
    batches = verification_inputs(config, resolve_task("text-classification"), tokenizer)
    shapes = [b["input_ids"].shape for b in batches]
    assert [s[0] for s in shapes] == [1, 3, 8] and shapes[-1][1] == 128 and len({s[1] for s in shapes}) == 3
    for batch in batches:
        assert batch["input_ids"].dtype == np.int64 and (batch["input_ids"][:, 0] == tokenizer.cls_token_id).all()
        assert (batch["attention_mask"].sum(1) < batch["attention_mask"].shape[1]).any() or len(batch["input_ids"]) == 1
    choices = verification_inputs(config, resolve_task("multiple-choice"), tokenizer)
    assert [b["input_ids"].shape[:2] for b in choices] == [(1, 2), (2, 4)]
    short = verification_inputs(
        DistilBertConfig(vocab_size=1124, max_position_embeddings=20), resolve_task("fill-mask")
    )
    assert max(b["input_ids"].shape[1] for b in short) == 20 and all(b["input_ids"].max() < 1124 for b in short)


def test_extras_named_by_the_formats_provide_their_packages() -> None:
    """The extra a missing-dependency message names installs what the format needs; none of it is a core
    dependency (``pip install distilbert-mf`` pulls no exporter or runtime)."""
    import re

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    project = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]
    extras = project["optional-dependencies"]

    def names(requirements: list[str]) -> set[str]:
        return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].lower() for r in requirements}

    core = names(project["dependencies"])
    for fmt in FORMATS.values():
        provided = set().union(*(names(extras[extra]) for extra in fmt.extras.split(",")))
        needed = {package for _, package in fmt.exporter + fmt.runtime}
        assert needed <= provided, (fmt.name, needed - provided)
        assert not needed & core, (fmt.name, needed & core)
    # CI's test install runs the ONNX tests: the test extra pulls in the export extra (with others, in any order)
    self_extras = set()
    for requirement in extras["test"]:
        match = re.fullmatch(r"distilbert-mf\[([a-z0-9_,\- ]+)\]", requirement.strip())
        if match:
            self_extras |= {name.strip() for name in match.group(1).split(",")}
    assert "export" in self_extras, extras["test"]
