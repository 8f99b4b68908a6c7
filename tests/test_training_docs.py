"""docs/training-data.md: every Python example runs, in order, as the page shows it."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_training_data_page_examples_run(shared_data, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    page = (ROOT / "docs" / "training-data.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 10
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/training-data.md block {number}", "exec"), namespace)
    printed = capsys.readouterr().out
    assert "872 ('sentence', 'label')" in printed
    for shown in ("872 ('0', '1') single_label_classification", "200 298", "14 7", "2 0.0 5e-05 0.0", "checkpoint-4 5"):
        assert shown in printed
