"""docs/distillation.md: every Python example runs, in order, and prints exactly the output block that follows it."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from distilbert_mf.frameworks import available_frameworks

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_distillation_page_examples_run(shared_data, monkeypatch, capsys):
    if set(available_frameworks()) != {"pt", "tf", "flax"}:
        pytest.skip("the page runs the losses in all three frameworks")
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    page = (ROOT / "docs" / "distillation.md").read_text(encoding="utf-8")
    pairs = re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", page, flags=re.S)
    assert len(pairs) == len(re.findall(r"```python\n", page)) >= 6  # every example shows its output
    namespace: dict = {}
    for number, (code, shown) in enumerate(pairs):
        exec(compile(code, f"docs/distillation.md example {number}", "exec"), namespace)
        assert capsys.readouterr().out == shown, f"example {number}"
