"""The examples of docs/flax.md run, in order, as one session (blocks marked "needs network" are skipped)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

pytest.importorskip("flax")
pytest.importorskip("optax")

pytestmark = pytest.mark.flax
PAGE = Path(__file__).resolve().parents[2] / "docs" / "flax.md"


def test_flax_page_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), flags=re.DOTALL)
    runnable = [block for block in blocks if not block.startswith("# needs network")]
    assert len(runnable) >= 5
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in runnable:
        exec(compile(block, str(PAGE), "exec"), namespace)
    printed = capsys.readouterr().out
    assert "(2, 2)" in printed and "True 3" in printed and "(64, 32)" in printed
