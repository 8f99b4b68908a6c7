"""docs/serving.md: its Python examples run, in order, as one script (the embedded model, every format), and its
measured numbers are those of benchmarks/results/export.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "serving.md"
RESULTS = ROOT / "benchmarks" / "results" / "export.json"


def test_speed_table_and_accuracy_are_the_committed_results() -> None:
    """Each row of the speed table holds the numbers bench_export's own table gives for its contender, the
    accuracy table the measured SST-2 accuracies, and the machine named is the one the JSON records."""
    from benchmarks.bench_export import markdown_table

    text = DOC.read_text(encoding="utf-8")
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    expected = {
        row.split(" | ")[0].strip("| "): row.split(" | ", 1)[1] for row in markdown_table(results).splitlines()[2:]
    }
    rows = re.findall(r"^\| [^|]*\(`([a-z0-9-]+)`[^|]*\| (.*)$", text, flags=re.M)
    assert {name: cells for name, cells in rows if name in expected} == expected
    accuracy = results["accuracy"]
    for key in ("source", "onnx_float32", "onnx_int8"):
        assert f"{100 * accuracy[key]:.2f} %" in text
    assert f"**−{accuracy['drop_points']:.2f} points**" in text and accuracy["examples"] == 872
    assert results["machine"]["cpu"].replace("(R)", "").rsplit(" Processor", 1)[0] in text  # "Intel Xeon"
    assert f"with {results['machine']['cpu_count']} cores" in text


@pytest.mark.torch
@pytest.mark.tensorflow
@pytest.mark.flax
@pytest.mark.slow
def test_serving_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in ("onnxruntime", "onnxscript", "tokenizers"):
        pytest.importorskip(module)
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) == 8
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert namespace["logits"].argmax(-1).tolist() == [1, 0]  # ONNX Runtime, int8: POSITIVE, NEGATIVE
    assert namespace["out"]["logits"].argmax(-1).tolist() == [1]  # the last example: the ExportedProgram
    assert '"instances": [{"input_ids": [101, 1037, 13940' in namespace["body"]
    assert "stablehlo" in namespace["stablehlo_text"]
    for folder in ("minilm-onnx", "minilm/1", "minilm-jax", "minilm-pt2"):
        assert (tmp_path / "serving" / folder / "export.json").is_file()
