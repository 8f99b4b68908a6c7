"""scripts/distillation_results.py: how it compares the frameworks' curves, and (once committed) that the docs'
numbers are those of its results files."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("distillation_results", ROOT / "scripts" / "distillation_results.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_agreement_reports_the_worst_pair_difference(script) -> None:
    a = [{"loss": 2.0, "loss_ce": 1.0, "grad_norm": 4.0}, {"loss": 1.0, "loss_ce": 0.01, "grad_norm": 2.0}]
    b = [{"loss": 2.0002, "loss_ce": 1.0, "grad_norm": 4.0}, {"loss": 1.0, "loss_ce": 0.0101, "grad_norm": 2.0}]
    pair = script.agreement({"pt": a, "tf": b})["pt-tf"]
    assert pair["max_relative_per_key"]["loss"] == pytest.approx(1e-4, rel=1e-3)
    assert pair["max_relative_per_key"]["loss_ce"] == pytest.approx(1e-4 / 0.0101, rel=1e-3)  # 1 % of itself
    assert pair["max_relative_per_key"]["grad_norm"] == 0.0
    assert pair["max_relative_parity_rule"] == pytest.approx(1e-4, rel=1e-3)  # loss_ce: 1e-4 of the total 1.0
    with pytest.raises(ValueError):  # curves of different lengths are not compared silently
        script.agreement({"pt": a, "tf": b[:1]})


def test_window_means_of_the_losses_only(script) -> None:
    curve = [{"loss": float(i), "loss_cos": 1.0 / (i + 1), "grad_norm": 9.0} for i in range(6)]
    first, last = script._window_means(curve, 2)
    assert first == {"loss": 0.5, "loss_cos": 0.75} and last == {"loss": 4.5, "loss_cos": (1 / 5 + 1 / 6) / 2}
    assert script._log_every(200) == 10 and script._log_every(7) == 1


NAMES = {"PyTorch": "pt", "Keras (TensorFlow)": "tf", "Flax NNX": "flax"}
PAGE = ROOT / "docs" / "distillation.md"


def table(heading: str) -> dict[str, list[str]]:
    """The rows (framework -> cells) of the first table under ``heading`` in docs/distillation.md."""
    text = PAGE.read_text(encoding="utf-8")
    assert heading in text, heading
    section = text[text.index(heading) :].split("\n### ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells and cells[0] in NAMES:
            rows[NAMES[cells[0]]] = cells[1:]
    return rows


def test_general_distillation_table_is_the_results_file() -> None:
    import json

    results = json.loads((ROOT / "benchmarks" / "results" / "distill_general.json").read_text())
    rows = table("### General distillation at small scale")
    assert set(rows) == set(results["frameworks"]) == {"pt", "tf", "flax"}
    for framework, cells in rows.items():
        run = results["frameworks"][framework]
        first, last, cosine = run["first_logs_mean"], run["last_logs_mean"], run["cosine_alignment"]
        assert cells == [
            f"{first['loss_ce']:.4f} → {last['loss_ce']:.4f}",
            f"{first['loss_mlm']:.3f} → {last['loss_mlm']:.3f}",
            f"{cosine['first']:.3f} → {cosine['last']:.3f}",
            f"{run['eval']['eval_loss']:.3f}",
            str(run["minutes"]),
        ], framework
        assert last["loss_ce"] < first["loss_ce"] and cosine["last"] > cosine["first"]  # what the page says
    teacher = results["teacher"]["eval"]
    assert f"masked-LM loss of {teacher['eval_loss']:.2f}" in PAGE.read_text(encoding="utf-8")
    agreement = results["no_dropout_agreement"]
    assert max(p["max_relative_per_key"]["loss"] for p in agreement.values()) < 1e-4


def test_sst2_distillation_table_is_the_results_file() -> None:
    import json

    results = json.loads((ROOT / "benchmarks" / "results" / "distill_sst2.json").read_text())
    assert (
        results["recipe"]["student_layers"] == [0, 2, 4] and results["recipe"]["teacher"] == "distilbert-mf/minilm-sst2"
    )
    rows = table("### Task-specific distillation on SST-2")
    assert rows and set(rows) == set(results["frameworks"])
    for framework, cells in rows.items():
        run = results["frameworks"][framework]
        pipe = run["pipeline"]
        assert cells == [
            f"{100 * pipe['teacher']['accuracy']:.2f}",
            f"{100 * run['distilled']['eval']['eval_accuracy']:.2f}",
            f"{100 * run['ablation']['eval']['eval_accuracy']:.2f}",
            f"{pipe['teacher']['sentences_per_s']:.0f}",
            f"{pipe['student']['sentences_per_s']:.0f}",
            f"{run['student_speedup']:.2f}",
            str(run["distilled"]["minutes"]),
            str(run["ablation"]["minutes"]),
        ], framework
        # the pipeline and the run's own evaluation agree on the student's accuracy (same model, same dev set)
        assert abs(pipe["student"]["accuracy"] - run["distilled"]["eval"]["eval_accuracy"]) < 2 / 872
        assert run["distilled"]["global_step"] == run["ablation"]["global_step"]  # one recipe for both
