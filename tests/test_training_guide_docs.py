"""docs/training.md: the command and every Python example run, in order, as the page shows them (run folders go to a
temporary folder instead of runs/). A block that starts with ``# from <path>`` is an excerpt of that source file and
must appear in it verbatim; a Keras or Flax example runs where that framework is installed."""

from __future__ import annotations

import importlib.util
import json
import re
import shlex
from pathlib import Path

import pytest

from distilbert_mf import cli

torch = pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "training.md"
EXCERPT = re.compile(r"# from (\S+\.py)\n")
# a block that names a framework's modules runs only where that framework's packages are installed
NEEDS = {
    "flax": (re.compile(r"^\s*(from|import) (flax|optax|jax)\b|distilbert_mf\.flax\b", re.M), ("jax", "flax", "optax")),
    "tf": (
        re.compile(r"^\s*(from|import) (keras|tensorflow)\b|distilbert_mf\.tensorflow\b", re.M),
        ("tensorflow", "keras"),
    ),
}


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
    ran: set[str] = set()
    for number, block in enumerate(blocks):
        excerpt = EXCERPT.match(block)
        if excerpt:
            source = (ROOT / excerpt.group(1)).read_text(encoding="utf-8")
            assert block[excerpt.end() :] in source, f"block {number} is not an excerpt of {excerpt.group(1)}"
            continue
        needs = {name for name, (pattern, _) in NEEDS.items() if pattern.search(block)}
        if any(importlib.util.find_spec(module) is None for name in needs for module in NEEDS[name][1]):
            continue  # the framework is not installed: its blocks are skipped together
        exec(compile(block, f"docs/training.md block {number}", "exec"), namespace)
        ran |= needs
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
    if "flax" in ran:  # the Flax loop over the same batches follows the PyTorch run
        assert "flax True" in printed.splitlines()
    if "tf" in ran:  # a plain model.fit with PyTorchAdamW counts updates, not micro-batches
        assert "keras 2" in printed.splitlines()


def test_every_option_is_documented():
    from dataclasses import fields

    from distilbert_mf.training.trainer import TrainingArguments

    page = PAGE.read_text(encoding="utf-8")
    missing = [f.name for f in fields(TrainingArguments) if f"`{f.name}`" not in page]
    assert not missing, f"docs/training.md does not mention {missing}"
