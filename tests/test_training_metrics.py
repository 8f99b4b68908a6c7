"""distilbert_mf.training.metrics against hand-computed values and scipy."""

from __future__ import annotations

import numpy as np
import pytest

from distilbert_mf.training import metrics as M


def test_accuracy_and_binary_f1():
    pred, ref = [1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]
    assert M.accuracy(pred, ref) == pytest.approx(4 / 6)
    # tp 3, fp 1, fn 1 -> precision 3/4, recall 3/4
    assert M.precision_recall_f1(pred, ref) == pytest.approx((0.75, 0.75, 0.75))
    assert M.f1_score([0, 0], [0, 0]) == 0.0  # no positive at all: 0, as scikit-learn's zero_division default
    with pytest.raises(ValueError, match=r"shape"):
        M.accuracy([1, 2], [1])


def test_macro_and_micro_f1_by_hand():
    pred = [0, 1, 2, 2, 1, 0, 2]
    ref = [0, 1, 1, 2, 1, 2, 2]
    # class 0: tp1 fp1 fn0 -> p .5 r 1 f 2/3; class 1: tp2 fp0 fn1 -> p 1 r 2/3 f .8; class 2: tp2 fp1 fn1 -> f 2/3
    assert M.f1_score(pred, ref, average="macro") == pytest.approx((2 / 3 + 0.8 + 2 / 3) / 3)
    assert M.f1_score(pred, ref, average="micro") == pytest.approx(M.accuracy(pred, ref))
    # a class only predicted counts in macro (scikit-learn uses the union of labels)
    assert M.f1_score([0, 1], [0, 0], average="macro") == pytest.approx((2 / 3 + 0) / 2)
    multi_pred = np.array([[1, 0, 1], [0, 1, 1]])
    multi_ref = np.array([[1, 0, 0], [0, 1, 1]])
    # columns: (tp1) f1 1; (tp1) 1; (tp1 fp1) 2/3 -> macro 8/9; micro tp3 fp1 -> 6/7
    assert M.f1_score(multi_pred, multi_ref, average="macro") == pytest.approx(8 / 9)
    assert M.f1_score(multi_pred, multi_ref, average="micro") == pytest.approx(6 / 7)
    assert M.accuracy(multi_pred, multi_ref) == 0.5
    with pytest.raises(ValueError, match=r"average must be one of"):
        M.f1_score(pred, ref, average="weighted")


def test_matthews_by_hand():
    # binary: tp 3 tn 1 fp 1 fn 1 -> (3*1 - 1*1) / sqrt(4*4*2*2) = 2/8
    assert M.matthews_corrcoef([1, 0, 1, 1, 0, 1], [1, 0, 0, 1, 1, 1]) == pytest.approx(0.25)
    assert M.matthews_corrcoef([1, 1, 1], [1, 0, 1]) == 0.0  # constant prediction
    assert M.matthews_corrcoef([0, 1, 2], [0, 1, 2]) == pytest.approx(1.0)
    # multi-class R_K: confusion [[1,0,0],[0,2,1],[1,0,2]] -> c=5 s=7 t=(1,3,3) p=(2,2,3)
    c, s, t, p = 5, 7, np.array([1, 3, 3]), np.array([2, 2, 3])
    expected = (c * s - t @ p) / np.sqrt((s * s - p @ p) * (s * s - t @ t))
    assert M.matthews_corrcoef([0, 1, 2, 2, 1, 0, 2], [0, 1, 1, 2, 1, 2, 2]) == pytest.approx(expected)


def test_pearson_spearman_like_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    x = rng.normal(size=50)
    y = 0.3 * x + rng.normal(size=50)
    assert M.pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert M.spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)
    ties_x = [1, 2, 2, 3, 3, 3, 5, 0, 2]
    ties_y = [2.0, 2.0, 1.0, 4.0, 4.0, 0.5, 5.0, 1.0, 3.0]
    assert M.spearman(ties_x, ties_y) == pytest.approx(stats.spearmanr(ties_x, ties_y)[0], abs=1e-12)
    np.testing.assert_allclose(M.rankdata(ties_x), stats.rankdata(ties_x))
    assert np.isnan(M.pearson([1, 1, 1], [1, 2, 3]))
    with pytest.raises(ValueError, match=r"at least 2"):
        M.pearson([1.0], [2.0])


def test_entities_seqeval_reading():
    tags = ["B-PER", "I-PER", "O", "I-LOC", "I-LOC", "B-LOC", "I-ORG", "O", "B-MISC", "B-MISC"]
    assert M.get_entities(tags) == [
        ("PER", 0, 1),
        ("LOC", 3, 4),
        ("LOC", 5, 5),
        ("ORG", 6, 6),
        ("MISC", 8, 8),
        ("MISC", 9, 9),
    ]
    assert M.get_entities(["O", "O"]) == []
    assert M.get_entities(["I-PER"]) == [("PER", 0, 0)]


def test_entity_scores_by_hand():
    ref = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    pred = [["B-PER", "I-PER", "O", "O"], ["B-ORG", "B-MISC"]]
    # true {PER 0-1, LOC 3, ORG 0}; predicted {PER 0-1, ORG 0, MISC 1}: 2 hits
    scores = M.entity_scores(ref, pred)
    assert scores["precision"] == pytest.approx(2 / 3) and scores["recall"] == pytest.approx(2 / 3)
    assert scores["f1"] == pytest.approx(2 / 3)
    assert scores["accuracy"] == pytest.approx(4 / 6)
    # a boundary error is a miss, not partial credit
    assert M.entity_scores([["B-PER", "I-PER"]], [["B-PER", "O"]])["f1"] == 0.0
    with pytest.raises(ValueError, match=r"sentence 0: 2 reference tags but 1 predicted"):
        M.entity_scores([["O", "O"]], [["O"]])


def test_squad_normalisation_and_scores():
    assert M.normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert M.normalize_answer("an apple, a pear") == "apple pear"
    assert M.squad_exact_match("Denver Broncos.", "the denver broncos")
    # prediction "denver broncos team" vs gold "denver broncos": p 2/3 r 1 -> f1 0.8
    assert M.squad_f1("Denver Broncos team", "Denver Broncos") == pytest.approx(0.8)
    assert M.squad_f1("", "") == 1.0 and M.squad_f1("x", "") == 0.0
    scores = M.squad_scores(
        {"a": "Denver Broncos", "b": "Carolina", "c": "nothing"},
        {"a": ["Denver Broncos", "Broncos"], "b": ["Carolina Panthers"], "c": ["Santa Clara"]},
    )
    assert scores["exact_match"] == pytest.approx(100 / 3)
    assert scores["f1"] == pytest.approx(100 * (1 + 2 / 3 + 0) / 3)
    assert M.squad_scores({"u": ""}, {"u": []}) == {"exact_match": 100.0, "f1": 100.0}
    with pytest.raises(KeyError, match=r"no prediction for 1 questions"):
        M.squad_scores({}, {"a": ["x"]})
