"""The examples of docs/pytorch.md run, in order, as one script."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("torch")

pytestmark = pytest.mark.torch

DOC = Path(__file__).resolve().parents[2] / "docs" / "pytorch.md"


def test_pytorch_doc_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    runnable = [b for b in blocks if "needs network" not in b]
    assert len(runnable) >= 6
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, str(DOC), "exec"), namespace)
    assert (tmp_path / "tiny-classifier" / "model.safetensors").is_file()
    assert namespace["model"].config.problem_type is None
