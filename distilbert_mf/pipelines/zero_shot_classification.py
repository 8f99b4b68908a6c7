"""zero-shot-classification: score any labels with a natural-language-inference (NLI) model.

Each (sequence, label) becomes the NLI pair premise=sequence, hypothesis=``hypothesis_template.format(label)``.
Single-label: softmax of the entailment logits over the labels. ``multi_label=True`` (or one label): per label,
softmax of (contradiction, entailment) and keep entailment.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, as_text, is_stream, softmax

DEFAULT_TEMPLATE = "This example is {}."


class ZeroShotClassificationPipeline(Pipeline):
    """Classify sequences into ``candidate_labels`` chosen at call time, with a sequence-classification NLI model.

    The entailment and contradiction classes are found in ``config.label2id`` by names starting with "entail" and
    "contra" (case-insensitive). Returns ``{"sequence", "labels", "scores"}`` per sequence, labels sorted by score.
    """

    task = "zero-shot-classification"
    head = "sequence_classification"
    parameters = {"candidate_labels": None, "hypothesis_template": DEFAULT_TEMPLATE, "multi_label": False}

    def _validate(self, params: dict[str, Any]) -> None:
        template = params.get("hypothesis_template", DEFAULT_TEMPLATE)
        try:
            usable = isinstance(template, str) and template.format("\x00") != template
        except (IndexError, KeyError, ValueError):
            usable = False
        if not usable:
            raise ValueError(
                f"hypothesis_template must be a string with one {{}} where the label goes, got {template!r}"
            )
        if "candidate_labels" in params and params["candidate_labels"] is not None:
            _labels(params["candidate_labels"])

    def _check_combination(self, options: dict[str, Any]) -> None:
        if options["candidate_labels"] is None:
            raise TypeError("zero-shot-classification needs candidate_labels=[...] (a list, or comma-separated string)")
        options["candidate_labels"] = _labels(options["candidate_labels"])

    def __call__(self, sequences: Any, *args: Any, **params: Any) -> Any:
        """Classify ``sequences`` (a string, or a list or generator of strings) into ``candidate_labels``."""
        if len(args) == 1 and "candidate_labels" not in params:
            params["candidate_labels"] = args[0]
        elif args:
            raise TypeError(
                f"zero-shot-classification takes sequences and candidate_labels, got extra arguments {args!r}"
            )
        options = self._resolve(params)
        labels = options["candidate_labels"]
        if is_stream(sequences):
            return self._stream(sequences, lambda chunk: self._classify(chunk, labels, options))
        if isinstance(sequences, str):
            return self._classify([sequences], labels, options)[0]
        if isinstance(sequences, (list, tuple)) and sequences:
            return self._classify(list(sequences), labels, options)
        raise TypeError(f"zero-shot-classification takes a string or a non-empty list of strings, got {sequences!r}")

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        """One result per input; an input that is a list of sequences gives a list of results."""
        options = self._resolve(params)
        flat = [s for item in inputs for s in ([item] if isinstance(item, str) else item)]
        results = iter(self._classify(flat, options["candidate_labels"], options))
        return [next(results) if isinstance(item, str) else [next(results) for _ in item] for item in inputs]

    def _label_id(self, prefix: str) -> int:
        for name, index in self.config.label2id.items():
            if name.lower().startswith(prefix):
                return int(index)
        raise ValueError(
            f"zero-shot-classification needs an NLI model whose config.label2id names a label starting with "
            f"{prefix!r} (e.g. entailment/neutral/contradiction); this model's labels are {sorted(self.config.label2id)}"
        )

    def _classify(self, sequences: list[Any], labels: list[str], options: dict[str, Any]) -> list[dict[str, Any]]:
        sequences = [as_text(text, f"sequence {i}") for i, text in enumerate(sequences)]
        entail = self._label_id("entail")
        independent = options["multi_label"] or len(labels) == 1
        contra = self._label_id("contra") if independent else None
        hypotheses = [options["hypothesis_template"].format(label) for label in labels]
        premises = [sequence for sequence in sequences for _ in labels]
        encoded = self.tokenizer(
            premises, hypotheses * len(sequences), truncation="only_first", max_length=self.max_length
        )
        logits = self.forward(
            encoded["input_ids"],
            batch_size=options["batch_size"],
            progress=options["progress"],
            reduce=lambda i, out: out["logits"],
        )
        logits = np.stack(logits).reshape(len(sequences), len(labels), -1)  # (sequences, labels, classes)
        if independent:
            scores = softmax(logits[..., [contra, entail]])[..., 1]  # (sequences, labels)
        else:
            scores = softmax(logits[..., entail])  # (sequences, labels)
        results = []
        for sequence, row in zip(sequences, scores):
            order = np.argsort(-row, kind="stable")
            results.append(
                {"sequence": sequence, "labels": [labels[i] for i in order], "scores": [float(row[i]) for i in order]}
            )
        return results


def _labels(candidate_labels: Any) -> list[str]:
    if isinstance(candidate_labels, str):
        labels = [label.strip() for label in candidate_labels.split(",") if label.strip()]
    elif isinstance(candidate_labels, (list, tuple)) and all(isinstance(x, str) for x in candidate_labels):
        labels = list(candidate_labels)
    else:
        raise TypeError(
            f"candidate_labels must be a list of strings or a comma-separated string, got {candidate_labels!r}"
        )
    if not labels:
        raise ValueError("candidate_labels is empty: pass at least one label")
    return labels
