"""torch.export ExportedProgram (.pt2): dynamic shapes, plain dict outputs, loaded by torch alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_checkpoints import tiny_checkpoint

from distilbert_mf.export import export

pytestmark = pytest.mark.torch

# a process with torch only: the program loads and checks its shape constraints without distilbert_mf
STANDALONE = """
import sys, torch
module = torch.export.load(sys.argv[1]).module()
choices = sys.argv[2] == "mc"
ids = torch.ones(2, 5, 7, dtype=torch.int64) if choices else torch.ones(3, 11, dtype=torch.int64)
out = module(ids, torch.ones_like(ids))
print(sorted(out), [tuple(v.shape) for v in out.values()])
long = torch.ones((1, 2, 65) if choices else (1, 65), dtype=torch.int64)
try:
    module(long, torch.ones_like(long))
except Exception as err:
    print("too long:", type(err).__name__)
print([m for m in sys.modules if m.startswith("distilbert_mf")])
"""


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        ("question_answering", "['end_logits', 'start_logits'] [(3, 11), (3, 11)]"),
        ("multiple_choice", "['logits'] [(2, 5)]"),
    ],
)
def test_exported_program_runs_with_torch_alone(tmp_path: Path, shared_data: Path, head: str, expected: str) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", head, shared_data)
    result = export(checkpoint, tmp_path / "out", format="exported_program")
    assert result.verification.passed and result.verification.standalone
    assert result.artifact == tmp_path / "out" / "model.pt2"
    argv = [sys.executable, "-I", "-c", STANDALONE, str(result.artifact), "mc" if head == "multiple_choice" else "-"]
    lines = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip().splitlines()
    assert lines[0] == expected
    assert lines[1].startswith("too long:")  # sequence_length <= max_position_embeddings (64) is a guard
    assert lines[-1] == "[]"
    import torch

    graph = str(torch.export.load(str(result.artifact)).graph)
    assert "mkldnn" not in graph and "aten.linear" in graph  # the CPU kernels stepped aside: the plain math


def test_bfloat16_and_options(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "token_classification", shared_data)
    result = export(checkpoint, tmp_path / "out", format="exported_program", dtype="bf16")
    assert result.dtype == "bfloat16" and result.verification.passed and result.verification.atol == 3e-2
    assert json.loads((tmp_path / "out" / "export.json").read_text())["dtype"] == "bfloat16"
    with pytest.raises(ValueError, match="written in float32 or bfloat16, got dtype 'float16'"):
        export(checkpoint, tmp_path / "out16", format="exported_program", dtype="float16")
