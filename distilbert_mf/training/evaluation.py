"""Predictions -> metrics for each task, in numpy.

Feed :class:`Evaluator` the model outputs batch by batch (numpy arrays, padded as the batches were) and call
:meth:`Evaluator.compute`:

======================  =========================================================================================
text-classification      single label: ``accuracy``, ``f1`` (binary for 2 classes, else macro),
                         ``matthews_correlation``; regression: ``pearson``, ``spearmanr``, ``mse``; multi-label
                         (logit > 0): ``accuracy`` (every label right), ``f1_micro``, ``f1_macro``
token-classification     entity ``precision``, ``recall``, ``f1`` (seqeval's definition) and token ``accuracy``,
                         on the first piece of each word
question-answering       ``exact_match`` and ``f1`` in percent (the official SQuAD script), answers picked by the
                         question-answering pipeline's own post-processing
masked-lm                ``accuracy`` of the masked-token predictions (pass the batch ``labels``)
multiple-choice          ``accuracy``
======================  =========================================================================================
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from distilbert_mf.pipelines.question_answering import QuestionAnsweringPipeline
from distilbert_mf.training import metrics
from distilbert_mf.training.data import TaskDataset
from distilbert_mf.training.masking import IGNORE_INDEX

# the pipeline's per-window answer search (softmax over allowed tokens, best spans, whole-word character spans,
# merging equal answers); /work/notes/requests.md asks for it as a module-level function: it uses no pipeline state
_window_answers = QuestionAnsweringPipeline._window_answers

_OUTPUTS = {
    "text-classification": ("logits",),
    "token-classification": ("logits",),
    "question-answering": ("start_logits", "end_logits"),
    "masked-lm": ("logits",),
    "multiple-choice": ("logits",),
}


def question_answering_predictions(
    dataset: TaskDataset,
    start_logits: Sequence[np.ndarray],
    end_logits: Sequence[np.ndarray],
    *,
    max_answer_length: int = 30,
    handle_impossible_answer: bool = False,
    align_to_words: bool = True,
) -> dict[str, str]:
    """``{example id: answer text}`` from per-window ``(seq_len,)`` logits (one entry per row of ``dataset``).

    The windows of an example are searched as the question-answering pipeline does (same functions); the best
    answer over all its windows wins. With ``handle_impossible_answer`` the empty answer competes, scored by the
    lowest "no answer" probability over the windows.
    """
    qa = dataset.qa
    if qa is None:
        raise ValueError(f"question-answering predictions need a question-answering dataset, got {dataset.task!r}")
    if len(start_logits) != len(dataset) or len(end_logits) != len(dataset):
        raise ValueError(f"got {len(start_logits)} start / {len(end_logits)} end logit rows for {len(dataset)} windows")
    options = {
        "top_k": 1,
        "max_answer_len": int(max_answer_length),
        "handle_impossible_answer": bool(handle_impossible_answer),
        "align_to_words": bool(align_to_words),
    }
    found: list[list[dict[str, Any]]] = [[] for _ in qa.example_ids]
    null_scores = [1_000_000.0] * len(qa.example_ids)
    for row, example in enumerate(qa.example_of_row.tolist()):
        length = int(dataset.lengths[row])
        sequence_ids = qa.sequence_ids[row].astype(np.int64)
        allowed = sequence_ids == 1
        allowed[0] = True  # [CLS], as in the pipeline
        out = {
            "start_logits": np.asarray(start_logits[row], dtype=np.float32)[:length],
            "end_logits": np.asarray(end_logits[row], dtype=np.float32)[:length],
        }
        null_scores[example] = _window_answers(
            None,
            found[example],
            qa.contexts[example],
            out,
            allowed,
            qa.offsets[row],
            qa.word_ids[row],
            sequence_ids,
            null_scores[example],
            options,
        )
    predictions = {}
    for example, answers in enumerate(found):
        if handle_impossible_answer:
            answers = [*answers, {"score": null_scores[example], "answer": ""}]
        best = max(answers, key=lambda a: a["score"], default={"answer": ""})
        predictions[qa.example_ids[example]] = best["answer"]
    return predictions


class Evaluator:
    """Collects model outputs for the rows of ``dataset`` and turns them into metrics.

    Args:
        dataset: the evaluation :class:`~distilbert_mf.training.data.TaskDataset`.
        max_answer_length / handle_impossible_answer: question answering (see
            :func:`question_answering_predictions`).

    Call :meth:`add` once per batch with the outputs (``logits=``, or ``start_logits=`` / ``end_logits=``) and,
    when the batches are not in dataset order, the ``rows`` they hold (``BatchLoader.epoch_with_rows``).
    """

    def __init__(
        self, dataset: TaskDataset, *, max_answer_length: int = 30, handle_impossible_answer: bool = False
    ) -> None:
        if not isinstance(dataset, TaskDataset):
            raise TypeError(f"dataset must be a TaskDataset, got {type(dataset).__name__}")
        self.dataset = dataset
        self.max_answer_length = max_answer_length
        self.handle_impossible_answer = handle_impossible_answer
        self.reset()

    def reset(self) -> None:
        self._rows: dict[int, dict[str, np.ndarray]] = {}
        self._next = 0

    def __len__(self) -> int:
        return len(self._rows)

    def add(self, rows: Sequence[int] | np.ndarray | None = None, **outputs: Any) -> None:
        """Store one batch's outputs (numpy, or anything ``np.asarray`` reads), one entry per row.

        ``labels=`` (masked LM) gives the targets the batch was masked with.
        """
        needed = _OUTPUTS[self.dataset.task]
        unknown = sorted(set(outputs) - {*needed, "labels"})
        missing = [name for name in needed if name not in outputs]
        if unknown or missing:
            raise TypeError(
                f"{self.dataset.task} evaluation takes {list(needed)} (and labels= for masked-lm); "
                f"got {sorted(outputs)}"
            )
        arrays = {name: np.asarray(value) for name, value in outputs.items()}
        size = len(arrays[needed[0]])
        if any(len(a) != size for a in arrays.values()):
            raise ValueError(f"the outputs have different batch sizes: { {k: len(v) for k, v in arrays.items()} }")
        if rows is None:
            rows = np.arange(self._next, self._next + size)
        rows = np.asarray(rows, dtype=np.int64)
        if len(rows) != size:
            raise ValueError(f"got {len(rows)} rows for outputs of batch size {size}")
        if self.dataset.task in ("token-classification", "masked-lm", "multiple-choice", "text-classification"):
            if self.dataset.problem_type not in ("regression", "multi_label_classification"):
                arrays["logits"] = np.argmax(arrays["logits"], axis=-1)  # keep predictions, not logits
        for i, row in enumerate(rows.tolist()):
            if not 0 <= row < len(self.dataset):
                raise ValueError(f"row {row} is outside the dataset's {len(self.dataset)} rows")
            self._rows[row] = {name: value[i] for name, value in arrays.items()}
        self._next = int(rows.max()) + 1

    def _gather(self, name: str) -> list[np.ndarray]:
        if len(self._rows) != len(self.dataset):
            missing = len(self.dataset) - len(self._rows)
            raise ValueError(f"outputs for {missing} of the dataset's {len(self.dataset)} rows are missing")
        return [self._rows[row][name] for row in range(len(self.dataset))]

    def predictions(self) -> Any:
        """The task's predictions: class ids / values, per-row tag ids, or ``{id: answer}`` for QA."""
        ds = self.dataset
        if ds.task == "question-answering":
            return question_answering_predictions(
                ds,
                self._gather("start_logits"),
                self._gather("end_logits"),
                max_answer_length=self.max_answer_length,
                handle_impossible_answer=self.handle_impossible_answer,
            )
        return self._gather("logits")

    def compute(self) -> dict[str, float]:
        """The task's metrics (see the module docstring); names without the ``eval_`` prefix."""
        ds = self.dataset
        if ds.task == "question-answering":
            references = dict(zip(ds.qa.example_ids, ds.qa.answers))
            return metrics.squad_scores(self.predictions(), references)
        predicted = self.predictions()
        if ds.task == "token-classification":
            return self._entity_metrics(predicted)
        if ds.task == "masked-lm":
            labels = self._gather("labels") if all("labels" in r for r in self._rows.values()) else None
            if labels is None:
                raise ValueError(
                    "masked-lm evaluation needs the batches' labels: add(logits=..., labels=batch['labels'])"
                )
            flat_pred = np.concatenate([np.ravel(p) for p in predicted])
            flat_true = np.concatenate([np.ravel(t)[: np.size(p)] for p, t in zip(predicted, labels)])
            keep = flat_true != IGNORE_INDEX
            if not keep.any():
                raise ValueError("no masked token among the evaluation batches")
            return {"accuracy": metrics.accuracy(flat_pred[keep], flat_true[keep])}
        predicted = np.stack(predicted)
        if ds.task == "multiple-choice":
            return {"accuracy": metrics.accuracy(predicted, ds.labels)}
        if ds.problem_type == "regression":
            values = predicted.reshape(len(ds), -1)[:, 0].astype(np.float64)
            truth = ds.labels.astype(np.float64)
            return {
                "pearson": metrics.pearson(values, truth),
                "spearmanr": metrics.spearman(values, truth),
                "mse": float(np.mean((values - truth) ** 2)),
            }
        if ds.problem_type == "multi_label_classification":
            chosen = (predicted > 0).astype(np.int64)
            truth = ds.labels.astype(np.int64)
            return {
                "accuracy": metrics.accuracy(chosen, truth),
                "f1_micro": metrics.f1_score(chosen, truth, average="micro"),
                "f1_macro": metrics.f1_score(chosen, truth, average="macro"),
            }
        average = "binary" if ds.num_labels == 2 else "macro"
        return {
            "accuracy": metrics.accuracy(predicted, ds.labels),
            "f1": metrics.f1_score(predicted, ds.labels, average=average),
            "matthews_correlation": metrics.matthews_corrcoef(predicted, ds.labels),
        }

    def _entity_metrics(self, predicted: list[np.ndarray]) -> dict[str, float]:
        ds = self.dataset
        names = ds.label_names
        references, predictions = [], []
        for row, tags in enumerate(predicted):
            first = ds.first_piece[row]
            length = int(ds.lengths[row])
            tags = np.asarray(tags)[:length]
            references.append([names[t] for t in ds.labels[row][first]])
            predictions.append([names[t] for t in tags[first]])
        return metrics.entity_scores(references, predictions)
