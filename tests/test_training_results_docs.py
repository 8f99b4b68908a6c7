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


def test_conll_table_matches_the_results_file() -> None:
    results = json.loads((ROOT / "benchmarks" / "results" / "finetune_conll.json").read_text())["frameworks"]
    rows = re.findall(r"^\| (PyTorch|Keras \(TensorFlow\)|Flax NNX) \| ([^\n]+)\|$", PAGE.read_text(), re.M)
    assert {NAMES[name] for name, _ in rows} == set(results) == {"pt", "tf", "flax"}
    for name, cells in rows:
        f1, precision, recall, accuracy, loss, minutes = (float(c) for c in cells.split("|") if c.strip())
        run = results[NAMES[name]]
        assert f1 == round(100 * run["eval"]["eval_f1"], 2)
        assert precision == round(100 * run["eval"]["eval_precision"], 2)
        assert recall == round(100 * run["eval"]["eval_recall"], 2)
        assert accuracy == round(100 * run["eval"]["eval_accuracy"], 2)
        assert loss == round(run["train_loss"], 4) and minutes == run["minutes"]
        assert run["global_step"] == 405


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
