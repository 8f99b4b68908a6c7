"""docs/training-results.md: its CoNLL table is the committed benchmarks/results/finetune_conll.json, and the
script it names splits the shared data as the page says."""

from __future__ import annotations

import importlib.util
import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "training-results.md"
NAMES = {"PyTorch": "pt", "Keras (TensorFlow)": "tf", "Flax NNX": "flax"}


def percent(key: str):
    return lambda run: round(100 * run["eval"][key], 2)


# experiment -> (the heading its table sits under, its columns after the framework, its number of updates)
TABLES = {
    "sst2": (
        "## Sentiment: SST-2",
        [percent("eval_accuracy"), percent("eval_f1"), lambda r: round(r["eval"]["eval_matthews_correlation"], 3)],
        4210,
    ),
    "conll": (
        "## Token classification: CoNLL-2003",
        [percent("eval_f1"), percent("eval_precision"), percent("eval_recall"), percent("eval_accuracy")],
        405,
    ),
    "squad": (
        "## Question answering: SQuAD",
        [lambda r: round(r["eval"]["eval_exact_match"], 2), lambda r: round(r["eval"]["eval_f1"], 2)],
        None,
    ),
}


def section(text: str, heading: str) -> str:
    """The page's text from ``heading`` to the next ``## `` heading."""
    assert heading in text, heading
    rest = text[text.index(heading) + len(heading) :]
    return rest.split("\n## ", 1)[0]


@pytest.mark.parametrize("experiment", list(TABLES))
def test_each_table_matches_its_results_file(experiment: str) -> None:
    """Every number of a results table is the committed ``benchmarks/results/finetune_<experiment>.json``: the
    metrics, then the mean training loss and the minutes; one row per framework, all three there."""
    heading, columns, updates = TABLES[experiment]
    results = json.loads((ROOT / "benchmarks" / "results" / f"finetune_{experiment}.json").read_text())["frameworks"]
    text = section(PAGE.read_text(), heading)
    rows = re.findall(r"^\| (PyTorch|Keras \(TensorFlow\)|Flax NNX) \| ([^\n]+)\|$", text, re.M)
    assert {NAMES[name] for name, _ in rows} == set(results) == {"pt", "tf", "flax"}, (experiment, rows)
    steps = set()
    for name, cells in rows:
        values = [float(c) for c in cells.split("|") if c.strip()]
        run = results[NAMES[name]]
        assert values == [column(run) for column in columns] + [round(run["train_loss"], 4), run["minutes"]], name
        steps.add(run["global_step"])
    assert len(steps) == 1 and (updates is None or steps == {updates}), steps  # one recipe: the same updates


def test_the_splits_are_what_the_page_says(tmp_path: Path, shared_data: Path) -> None:
    spec = importlib.util.spec_from_file_location("real_results", ROOT / "scripts" / "real_results.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    train, evaluation = script._split_conll(tmp_path)
    assert len(train.read_text().splitlines()) == 2160 and len(evaluation.read_text().splitlines()) == 540
    first = json.loads(train.read_text().splitlines()[0])
    assert first["tokens"][:3] == ["SOCCER", "-", "JAPAN"]
    squad_train, squad_eval = script._split_squad(tmp_path)
    assert len(json.loads(squad_train.read_text())["data"]) == 32
    assert len(json.loads(squad_eval.read_text())["data"]) == 8
    with pytest.raises(SystemExit):
        script.main(["nonsense"])
