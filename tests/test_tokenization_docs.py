"""The python examples of docs/tokenizers.md run, in order, as one script, and the values their comments show are
the values the code gives (a trailing ``# <literal>`` after an expression is checked)."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest

DOC = Path(__file__).resolve().parents[1] / "docs" / "tokenizers.md"


def _shown(comment: str) -> tuple[bool, Any]:
    """``(True, value)`` when a comment starts with a Python literal (``# [1, 2]``, ``# 2: two new tokens``)."""
    for text in (comment, comment.split(": ", 1)[0]):
        try:
            return True, ast.literal_eval(text.strip())
        except (ValueError, SyntaxError):
            continue
    return False, None


def test_doc_examples_run_and_show_true_values(
    shared_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 10
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, Any] = {}
    checked = 0
    for block in blocks:
        source = block.replace(
            '"distilbert-base-uncased"', repr(str(shared_data / "distilbert-base-uncased-tokenizer"))
        )
        lines = source.splitlines()
        for statement in ast.parse(source).body:
            code = compile(ast.Module([statement], []), str(DOC), "exec")
            end_line = lines[statement.end_lineno - 1]
            comment = end_line.split("  # ", 1)[1] if "  # " in end_line else ""
            is_literal, value = _shown(comment)
            if isinstance(statement, ast.Expr) and is_literal:
                got = eval(compile(ast.Expression(statement.value), str(DOC), "eval"), namespace)
                assert got == value, f"{DOC.name}: {end_line.strip()} gives {got!r}"
                checked += 1
            else:
                exec(code, namespace)
    assert checked >= 15
