"""Evaluation metrics in numpy, written once for every framework.

Definitions followed (checked in the tests against hand-computed cases and scipy):

- :func:`accuracy`, :func:`f1_score` (``binary`` on ``pos_label``, ``macro`` over the labels present in the true or
  predicted labels, ``micro``), :func:`matthews_corrcoef` (the multi-class form) — as scikit-learn defines them,
  0 where a ratio would divide by zero.
- :func:`pearson` and :func:`spearman` — scipy's ``pearsonr`` / ``spearmanr``: Spearman is Pearson on ranks,
  tied values sharing their average rank.
- :func:`get_entities` / :func:`entity_scores` — seqeval's default (non-strict, conlleval-compatible) reading of
  IOB2 tags: an ``I-X`` that does not continue an ``X`` chunk starts a new one; an entity is correct when its type,
  start and end all match; precision / recall / F1 are micro-averaged over entities.
- :func:`squad_scores` — the official SQuAD v1.1 evaluation: answers lower-cased, punctuation and the articles
  a / an / the removed, whitespace collapsed; exact match and token F1 take the best gold answer; both reported
  in percent. A question without gold answers counts as unanswerable (gold ``""``; two empty answers score 1, as
  in the v2.0 script).
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

F1_AVERAGES = ("binary", "macro", "micro")


def _pair(predictions: Sequence, references: Sequence) -> tuple[np.ndarray, np.ndarray]:
    pred, ref = np.asarray(predictions), np.asarray(references)
    if pred.shape != ref.shape:
        raise ValueError(f"predictions have shape {pred.shape} but references {ref.shape}; they must match")
    if pred.size == 0:
        raise ValueError("metrics need at least one prediction")
    return pred, ref


def _ratio(num: float, den: float) -> float:
    return float(num) / float(den) if den else 0.0


def accuracy(predictions: Sequence, references: Sequence) -> float:
    """Fraction of predictions equal to their reference (rows of a 2-D array must match entirely)."""
    pred, ref = _pair(predictions, references)
    if pred.ndim > 1:
        return float(np.mean(np.all(pred == ref, axis=tuple(range(1, pred.ndim)))))
    return float(np.mean(pred == ref))


def precision_recall_f1(
    predictions: Sequence, references: Sequence, *, average: str = "binary", pos_label: int = 1
) -> tuple[float, float, float]:
    """``(precision, recall, f1)`` for class labels ``(n,)`` (or multi-hot ``(n, classes)`` for macro / micro)."""
    if average not in F1_AVERAGES:
        raise ValueError(f"average must be one of {F1_AVERAGES}, got {average!r}")
    pred, ref = _pair(predictions, references)
    if pred.ndim == 2:  # multi-label: one binary problem per column
        if average == "binary":
            raise ValueError("multi-label predictions need average='macro' or 'micro'")
        tp = np.sum((pred == 1) & (ref == 1), axis=0)
        fp = np.sum((pred == 1) & (ref != 1), axis=0)
        fn = np.sum((pred != 1) & (ref == 1), axis=0)
    else:
        classes = [pos_label] if average == "binary" else sorted(set(pred.tolist()) | set(ref.tolist()))
        tp = np.array([np.sum((pred == c) & (ref == c)) for c in classes])
        fp = np.array([np.sum((pred == c) & (ref != c)) for c in classes])
        fn = np.array([np.sum((pred != c) & (ref == c)) for c in classes])
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    precision = np.array([_ratio(t, t + f) for t, f in zip(tp, fp)])
    recall = np.array([_ratio(t, t + f) for t, f in zip(tp, fn)])
    f1 = np.array([_ratio(2 * p * r, p + r) for p, r in zip(precision, recall)])
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def f1_score(predictions: Sequence, references: Sequence, *, average: str = "binary", pos_label: int = 1) -> float:
    """F1 (``binary`` on ``pos_label``, ``macro`` or ``micro``), 0 where undefined."""
    return precision_recall_f1(predictions, references, average=average, pos_label=pos_label)[2]


def matthews_corrcoef(predictions: Sequence, references: Sequence) -> float:
    """Matthews correlation of class labels (the multi-class R_K form; 0 when undefined)."""
    pred, ref = _pair(predictions, references)
    classes = sorted(set(pred.tolist()) | set(ref.tolist()))
    index = {c: i for i, c in enumerate(classes)}
    confusion = np.zeros((len(classes), len(classes)), dtype=np.float64)  # (true, predicted)
    np.add.at(confusion, ([index[v] for v in ref.tolist()], [index[v] for v in pred.tolist()]), 1.0)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    c, s = np.trace(confusion), confusion.sum()
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation (float64; NaN when one side is constant, as scipy)."""
    a, b = _pair(x, y)
    if a.ndim != 1 or a.size < 2:
        raise ValueError(f"correlation needs two 1-D sequences of at least 2 values, got shape {a.shape}")
    a, b = a.astype(np.float64) - a.mean(dtype=np.float64), b.astype(np.float64) - b.mean(dtype=np.float64)
    denominator = np.sqrt((a @ a) * (b @ b))
    return float(np.clip((a @ b) / denominator, -1.0, 1.0)) if denominator else float("nan")


def rankdata(values: Sequence[float]) -> np.ndarray:
    """1-based ranks, ties given their average rank (scipy's ``rankdata(method="average")``)."""
    data = np.asarray(values, dtype=np.float64)
    order = np.argsort(data, kind="mergesort")
    sorted_values = data[order]
    starts = np.flatnonzero(np.r_[True, sorted_values[1:] != sorted_values[:-1]])
    ends = np.r_[starts[1:], data.size]
    ranks = np.empty(data.size, dtype=np.float64)
    for lo, hi in zip(starts, ends):
        ranks[order[lo:hi]] = (lo + 1 + hi) / 2.0  # average of ranks lo+1 .. hi
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman rank correlation: Pearson on average ranks."""
    a, b = _pair(x, y)
    return pearson(rankdata(a), rankdata(b))


# -- entities (IOB2) ------------------------------------------------------------------------------------------


def _split_tag(tag: str) -> tuple[str, str]:
    if tag in ("O", ""):
        return "O", ""
    if len(tag) > 2 and tag[1] in "-_" and tag[0] in "BIESU":
        return tag[0], tag[2:]
    return "I", tag  # a bare type, as seqeval reads it


def get_entities(tags: Sequence[str]) -> list[tuple[str, int, int]]:
    """``(type, first, last)`` chunks of one IOB2 tag sequence (seqeval's default, lenient reading)."""
    entities = []
    previous_prefix, previous_type, begin = "O", "", 0
    for i, tag in enumerate([*tags, "O"]):
        if not isinstance(tag, str):
            raise TypeError(f"tags must be strings such as 'B-PER', got {tag!r} at position {i}")
        prefix, kind = _split_tag(tag)
        ends = previous_prefix != "O" and (
            prefix in ("B", "S", "O") or kind != previous_type or previous_prefix in ("E", "S")
        )
        if ends:
            entities.append((previous_type, begin, i - 1))
        starts = prefix != "O" and (ends or previous_prefix == "O" or prefix in ("B", "S"))
        if starts:
            begin = i
        previous_prefix, previous_type = prefix, kind
    return entities


def entity_scores(references: Sequence[Sequence[str]], predictions: Sequence[Sequence[str]]) -> dict[str, float]:
    """Entity-level ``precision``, ``recall``, ``f1`` (micro over entities) and token ``accuracy``."""
    if len(references) != len(predictions):
        raise ValueError(f"got {len(references)} reference sentences but {len(predictions)} predicted ones")
    true_set, pred_set = set(), set()
    correct_tokens = total_tokens = 0
    for i, (ref, pred) in enumerate(zip(references, predictions)):
        if len(ref) != len(pred):
            raise ValueError(f"sentence {i}: {len(ref)} reference tags but {len(pred)} predicted tags")
        true_set.update((i, *e) for e in get_entities(ref))
        pred_set.update((i, *e) for e in get_entities(pred))
        correct_tokens += sum(r == p for r, p in zip(ref, pred))
        total_tokens += len(ref)
    hits = len(true_set & pred_set)
    precision, recall = _ratio(hits, len(pred_set)), _ratio(hits, len(true_set))
    return {
        "precision": precision,
        "recall": recall,
        "f1": _ratio(2 * precision * recall, precision + recall),
        "accuracy": _ratio(correct_tokens, total_tokens),
    }


# -- SQuAD ----------------------------------------------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """The official SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def squad_exact_match(prediction: str, gold: str) -> float:
    return float(normalize_answer(prediction) == normalize_answer(gold))


def squad_f1(prediction: str, gold: str) -> float:
    """Token F1 between normalised answers (1 when both are empty, 0 when one is)."""
    pred_tokens, gold_tokens = normalize_answer(prediction).split(), normalize_answer(gold).split()
    if not pred_tokens or not gold_tokens:
        return float(pred_tokens == gold_tokens)
    same = sum((Counter(pred_tokens) & Counter(gold_tokens)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def squad_scores(predictions: Mapping[str, str], references: Mapping[str, Iterable[str]]) -> dict[str, float]:
    """``{"exact_match", "f1"}`` in percent over the questions of ``references`` (``{id: gold answers}``);
    a question without a prediction is an error."""
    if not references:
        raise ValueError("squad_scores needs at least one reference question")
    missing = [qid for qid in references if qid not in predictions]
    if missing:
        raise KeyError(f"no prediction for {len(missing)} questions, e.g. {missing[:3]}")
    exact = f1 = 0.0
    for qid, golds in references.items():
        golds = list(golds) or [""]
        prediction = predictions[qid]
        exact += max(squad_exact_match(prediction, g) for g in golds)
        f1 += max(squad_f1(prediction, g) for g in golds)
    return {"exact_match": 100.0 * exact / len(references), "f1": 100.0 * f1 / len(references)}
