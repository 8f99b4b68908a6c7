"""docs/scaling.md names only what exists: every ``dist.<name>`` of a code block is a public name of the module that
block imports as ``dist``, every ``--flag`` of the train commands is a flag of ``distilbert-mf train``, and the
shell scripts parse (``bash -n``)."""

from __future__ import annotations

import importlib
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PAGE = (ROOT / "docs" / "scaling.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```(\w+)\n(.*?)```", PAGE, flags=re.S)


@pytest.mark.parametrize("module", ["torch", "flax", "tensorflow"])
def test_named_functions_exist(module: str) -> None:
    pytest.importorskip({"torch": "torch", "flax": "flax", "tensorflow": "keras"}[module])
    target = importlib.import_module(f"distilbert_mf.{module}.distributed")
    blocks = [
        code
        for kind, code in BLOCKS
        if kind == "python" and re.search(rf"from distilbert_mf\.{module} import .*distributed as dist", code)
    ]
    assert blocks, module
    for code in blocks:
        for name in set(re.findall(r"\bdist\.(\w+)", code)):
            assert name in target.__all__, f"docs/scaling.md calls dist.{name}, which {target.__name__} lacks"


def test_train_flags_exist_and_scripts_parse() -> None:
    import argparse

    from distilbert_mf.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    known = {option for action in commands.choices["train"]._actions for option in action.option_strings}
    for kind, code in BLOCKS:
        if kind != "bash":
            continue
        assert subprocess.run(["bash", "-n"], input=code, text=True, capture_output=True).returncode == 0, code
        if "distilbert_mf.cli train" in code:
            command = code.split("distilbert_mf.cli train", 1)[1]
            for flag in re.findall(r"(?<![\w-])(--[a-z][a-z0-9-]*)", command):
                assert flag in known, f"docs/scaling.md: distilbert-mf train has no {flag}"
