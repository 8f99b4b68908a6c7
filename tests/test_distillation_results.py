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
