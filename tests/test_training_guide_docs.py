"""docs/training.md: the command and every Python example run, in order, as the page shows them (run folders go to a
temporary folder instead of runs/)."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest

from distilbert_mf import cli

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "training.md"


@pytest.fixture
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models on a busy 2-core machine
    yield
    torch.set_num_threads(before)


def test_training_page_command_and_examples_run(shared_data, monkeypatch, capsys, tmp_path, one_thread):
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    page = PAGE.read_text(encoding="utf-8").replace("runs/", f"{tmp_path}/")
    commands = re.findall(r"```bash\n(.*?)```", page, flags=re.S)
    assert len(commands) == 1
    argv = shlex.split(commands[0].replace("\\\n", " "))
    assert argv[:2] == ["distilbert-mf", "train"]
    assert cli.main(argv[1:]) == cli.EXIT_OK
    summary = json.loads(capsys.readouterr().out)
    assert summary["global_step"] == 12 and summary["output_dir"] == f"{tmp_path}/sst2-cli"
    assert {"train_loss", "eval_loss", "eval_accuracy", "eval_f1"} <= set(summary)

    blocks = re.findall(r"```python\n(.*?)```", page, flags=re.S)
    assert len(blocks) >= 5
    namespace: dict = {}
    for number, block in enumerate(blocks):
        exec(compile(block, f"docs/training.md block {number}", "exec"), namespace)
    printed = capsys.readouterr().out
    for shown in (
        f"12 {tmp_path}/sst2-tiny",
        "'eval_accuracy', 'eval_f1', 'eval_loss', 'eval_matthews_correlation', 'eval_runtime'",
        "[4, 8, 12]",
        "12 12 ['epoch', 'grad_norm', 'learning_rate', 'loss', 'step']",
        "12 True",
    ):
        assert shown in printed, shown
    assert printed.splitlines()[3] == "True"  # the pipeline's label is one of the data's class names


def test_every_option_is_documented():
    from dataclasses import fields

    from distilbert_mf.training.trainer import TrainingArguments

    page = PAGE.read_text(encoding="utf-8")
    missing = [f.name for f in fields(TrainingArguments) if f"`{f.name}`" not in page]
    assert not missing, f"docs/training.md does not mention {missing}"
