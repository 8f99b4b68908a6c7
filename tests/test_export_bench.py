"""benchmarks/bench_export.py in its tiny --smoke mode (so the benchmark code cannot rot) and its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_checkpoints import tiny_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.torch
@pytest.mark.slow
def test_bench_export_smoke(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    pytest.importorskip("transformers")  # the torch worker times transformers' model too
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data, num_labels=2)
    labelled = tmp_path / "dev.tsv"
    labelled.write_text("sentence\tlabel\ngood\t1\nbad\t0\nfine\t1\n", encoding="utf-8")
    out = tmp_path / "export.json"
    argv = [sys.executable, "benchmarks/bench_export.py", str(checkpoint), "--smoke", "--json", str(out)]
    argv += ["--accuracy-model", str(checkpoint), "--eval-file", str(labelled)]
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    data = json.loads(out.read_text())
    contenders = {(c["contender"], c["batch"], c["seq"]) for c in data["cases"]}
    for shape in ((1, 16), (4, 32)):
        for name in ("ort-float32", "ort-int8", "ours-torch-bf16", "transformers-torch-sdpa-bf16"):
            assert (name, *shape) in contenders
    assert all(c["median_ms"] > 0 and c["p95_ms"] >= c["min_ms"] for c in data["cases"])
    assert data["export"]["verification"]["passed"] and data["export"]["quantization"]["type"] == "int8"
    assert data["accuracy"]["examples"] == 3 and set(data["ratios"]) >= {"int8_vs_fp32_p95_latency_1x128"}


def test_markdown_table() -> None:
    from benchmarks.bench_export import markdown_table

    def case(name: str, batch: int, ms: float) -> dict:
        return {"contender": name, "batch": batch, "seq": 128, "median_ms": ms, "p95_ms": 1.5 * ms,
                "sequences_per_s": batch / ms * 1e3}  # fmt: skip

    cases = [case("ort-int8", 1, 20.0), case("ort-int8", 32, 500.0), case("ort-float32", 1, 40.0)]
    table = markdown_table({"cases": cases}).splitlines()
    assert table[2] == "| ort-int8 | 20.0 | 30.0 | 500 | 64.0 |"
    assert table[3] == "| ort-float32 | 40.0 | 60.0 | – | – |" and len(table) == 4
