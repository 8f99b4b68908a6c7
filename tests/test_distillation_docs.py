"""docs/distillation.md: the command and every Python example run, in order; each example prints exactly the output
block that follows it (run folders go to a temporary folder instead of runs/)."""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
from pathlib import Path

import pytest

from distilbert_mf import cli
from distilbert_mf.frameworks import available_frameworks

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "distillation.md"


@pytest.mark.slow
def test_distillation_page_command_and_examples_run(shared_data, monkeypatch, capsys, tmp_path):
    if set(available_frameworks()) != {"pt", "tf", "flax"}:
        pytest.skip("the page runs the losses in all three frameworks")
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    page = PAGE.read_text(encoding="utf-8").replace("runs/", f"{tmp_path}/")
    (command,) = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    argv = shlex.split(command.replace("\\\n", " "))
    assert argv[:2] == ["distilbert-mf", "distill"]
    assert cli.main(argv[1:]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 4 and summary["output_dir"] == f"{tmp_path}/sst2-student-cli"
    assert json.loads(Path(summary["output_dir"], "config.json").read_text())["n_layers"] == 3

    pairs = re.findall(r"```python\n(.*?)```\n\n```text\n(.*?)```", page, flags=re.S)
    assert len(pairs) == len(re.findall(r"```python\n", page)) >= 6  # every example shows its output
    namespace: dict = {}
    for number, (code, shown) in enumerate(pairs):
        exec(compile(code, f"docs/distillation.md example {number}", "exec"), namespace)
        assert capsys.readouterr().out == shown, f"example {number}"


def test_every_distillation_option_is_documented():
    from distilbert_mf.distillation.run import DistillationArguments
    from distilbert_mf.training.trainer import TrainingArguments

    page = PAGE.read_text(encoding="utf-8")
    training = {f.name for f in dataclasses.fields(TrainingArguments)}
    own = [f.name for f in dataclasses.fields(DistillationArguments) if f.name not in training]
    assert own and not [name for name in own if f"`{name}`" not in page]
