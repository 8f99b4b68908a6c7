"""docs/cli.md, the ``train`` and ``distill`` sections: every console example runs, in order, and prints what the page
shows (``...`` stands for any text); every option of the two subcommands is listed under its argparse group."""

from __future__ import annotations

import argparse
import json
import re
import shlex
from pathlib import Path

import pytest

from distilbert_mf import cli

torch = pytest.importorskip("torch")
from test_training_guide_docs import one_thread  # noqa: E402, F401  (the fixture: torch at one thread)

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "cli.md"
STATUS = '; echo "status $?"'


def _section(name: str) -> str:
    page = PAGE.read_text(encoding="utf-8")
    start = page.index(f"## `distilbert-mf {name}`")
    end = page.index("\n## ", start + 1)
    return page[start:end]


def _examples(section: str) -> list[tuple[str, list[str]]]:
    """(command line, the lines shown after it) for each ``$ `` line of the section's console blocks."""
    examples: list[tuple[str, list[str]]] = []
    for block in re.findall(r"```console\n(.*?)```", section, flags=re.S):
        lines = block.replace("\\\n", " ").splitlines()
        for line in lines:
            if line.startswith("$ "):
                examples.append((line[2:], []))
            else:
                examples[-1][1].append(line)
    return examples


def _matches(shown: str, actual: str) -> bool:
    pattern = ".*".join(re.escape(part) for part in shown.split("..."))
    return re.fullmatch(pattern, actual) is not None


def _run(command: str, tmp_path: Path, capsys) -> tuple[int, str, str]:
    argv = shlex.split(command.removesuffix(STATUS).replace("runs/", f"{tmp_path}/"))
    assert argv[0] == "distilbert-mf"
    code = cli.main(argv[1:])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.torch
@pytest.mark.usefixtures("one_thread")
def test_train_and_distill_examples_print_what_the_page_shows(shared_data, monkeypatch, capsys, tmp_path):
    monkeypatch.chdir(ROOT)  # the page's paths are relative to the repository root
    summaries = []
    examples = _examples(_section("train")) + _examples(_section("distill"))
    assert len(examples) == 6
    for command, shown in examples:
        code, out, err = _run(command, tmp_path, capsys)
        shown = [line.replace("runs/", f"{tmp_path}/") for line in shown]
        if command.endswith(STATUS):  # an error: the message on stderr, then the status
            assert shown[-1] == f"status {code}" and code == cli.EXIT_ERROR, (command, err)
            assert err.strip().splitlines()[-1] == shown[0], command
            assert out == ""
            folder = Path(shlex.split(command.removesuffix(STATUS))[-1].replace("runs/", f"{tmp_path}/"))
            assert not list(folder.glob("checkpoint-*"))  # nothing was trained
        else:
            assert code == cli.EXIT_OK, err
            assert len(shown) == 1 and _matches(shown[0], out.strip()), (shown, out)
            summaries.append(json.loads(out))
    train, resumed, student = summaries
    assert train["global_step"] == resumed["global_step"] == 4
    assert resumed["train_loss"] == train["train_loss"] and resumed["eval_loss"] == train["eval_loss"]
    assert student["global_step"] == 4 and student["output_dir"] == f"{tmp_path}/cli-student"
    assert (tmp_path / "cli-student" / "distillation.json").is_file()
    assert json.loads((tmp_path / "cli-student" / "config.json").read_text())["n_layers"] == 2


def _groups(distill: bool) -> dict[str, list[str]]:
    parser = argparse.ArgumentParser()
    (cli._distill_arguments if distill else cli._train_arguments)(parser)
    groups = {}
    for group in parser._action_groups:
        flags = [flag for action in group._group_actions for flag in action.option_strings if flag.startswith("--")]
        flags = [flag for flag in flags if flag != "--help"]
        if flags:
            groups[group.title] = flags
    return groups


@pytest.mark.parametrize("name", ["train", "distill"])
def test_every_option_is_listed_under_its_group(name):
    section = _section(name)
    groups = _groups(distill=name == "distill")
    if name == "distill":  # the train groups are documented once, under train
        groups = {title: flags for title, flags in groups.items() if title == "distillation"}
        assert "every `train` option" in section
    assert groups
    for title, flags in groups.items():
        heading = f"**{title}**"
        assert heading in section, f"docs/cli.md {name}: no group {heading}"
        body = section.split(heading, 1)[1].split("\n**", 1)[0]
        missing = [flag for flag in flags if not re.search(rf"`{re.escape(flag)}(?![\w-])", body)]
        assert not missing, f"docs/cli.md {name}, group {title}: {missing} not listed"
