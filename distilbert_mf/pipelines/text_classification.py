"""text-classification (alias sentiment-analysis): one label distribution per text or text pair."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, check_top_k, is_stream, sigmoid, softmax

FUNCTIONS = ("softmax", "sigmoid", "none")


class TextClassificationPipeline(Pipeline):
    """Classify texts (or ``{"text": ..., "text_pair": ...}`` pairs) with a sequence-classification model.

    Returns, as transformers: without ``top_k``, ``{"label", "score"}`` of the best label per input (a single
    string input gives a one-element list); with ``top_k=k`` the ``k`` best labels per input, sorted by score
    (``top_k=None``: every label). ``function_to_apply``: "softmax", "sigmoid" or "none"; by default sigmoid
    for one label or multi-label problems, none for regression, softmax otherwise.

    ``return_all_scores`` (deprecated, as in transformers 4.x): ``True`` gives every label's score in label order
    (not sorted; a single string gives ``[[...]]``), ``False`` the best label; a ``top_k`` given at the same level
    (constructor or call) wins over it. Using it warns once (a ``UserWarning``).
    """

    task = "text-classification"
    head = "sequence_classification"
    parameters = {
        "top_k": 1,
        "function_to_apply": None,
        "truncation": True,
        "max_length": None,
        "return_all_scores": None,
    }

    def _validate(self, params: dict[str, Any]) -> None:
        if "top_k" in params:
            check_top_k(params["top_k"], allow_none=True)
        legacy = params.get("return_all_scores")
        if legacy is not None:
            if not isinstance(legacy, bool):
                raise TypeError(f"return_all_scores must be True, False or None, got {legacy!r}")
            if "top_k" not in params:
                _warn_return_all_scores()
        function = params.get("function_to_apply")
        if function is not None:
            if not isinstance(function, str) or function.lower() not in (*FUNCTIONS, "default"):
                raise ValueError(f"function_to_apply must be one of {FUNCTIONS} (or None), got {function!r}")
        max_length = params.get("max_length")
        if max_length is not None and (not isinstance(max_length, int) or max_length < 2):
            raise ValueError(f"max_length must be an integer >= 2 (or None), got {max_length!r}")

    def _mode(self, params: dict[str, Any]) -> str:
        """How results are shaped: "best" (one label), "ranked" (``top_k`` sorted) or "all" (every label in label
        order, transformers 4.x's ``return_all_scores=True``). The call's parameters win over the constructor's; at
        one level, ``top_k`` wins over ``return_all_scores``."""
        for level in (params, self._defaults):
            if "top_k" in level:
                return "ranked"
            if level.get("return_all_scores") is not None:
                return "all" if level["return_all_scores"] else "best"
        return "best"

    def __call__(self, inputs: Any, **params: Any) -> Any:
        """Classify ``inputs``: a string, a ``{"text", "text_pair"}`` dict, or a list (or generator) of them."""
        options = self._resolve(params)
        mode = self._mode(params)
        ranked = mode == "ranked"
        if is_stream(inputs):
            return self._stream(inputs, lambda chunk: self._classify(chunk, options, mode))
        if isinstance(inputs, (str, dict)):
            result = self._classify([inputs], options, mode)[0]
            # transformers returns a list for one string in the default (unranked) mode
            return [result] if isinstance(inputs, str) and not ranked else result
        if isinstance(inputs, (list, tuple)):
            return self._classify(list(inputs), options, mode)
        raise TypeError(
            f"text-classification takes a string, a {{'text', 'text_pair'}} dict or a list of them, "
            f"got {type(inputs).__name__}"
        )

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        options = self._resolve(params)
        mode = self._mode(params)
        results = self._classify(list(inputs), options, mode)
        return [[r] if isinstance(x, str) and mode != "ranked" else r for x, r in zip(inputs, results)]

    def _classify(self, items: list[Any], options: dict[str, Any], mode: str) -> list[Any]:
        texts, pairs = [], []
        for position, item in enumerate(items):
            text, pair = _split_item(item, position)
            texts.append(text)
            pairs.append(pair)
        rows = self._tokenize(texts, pairs, options)
        outputs = self.forward(rows, batch_size=options["batch_size"], progress=options["progress"])
        function = self._function(options["function_to_apply"])
        id2label = self.config.id2label
        results = []
        for out in outputs:
            scores = _apply(function, out["logits"])
            if mode == "best":
                best = int(scores.argmax())
                results.append({"label": id2label[best], "score": float(scores[best])})
                continue
            order = np.arange(len(scores)) if mode == "all" else np.argsort(-scores, kind="stable")
            if mode == "ranked" and options["top_k"] is not None:
                order = order[: options["top_k"]]
            results.append([{"label": id2label[int(i)], "score": float(scores[i])} for i in order])
        return results

    def _tokenize(self, texts: list[str], pairs: list[str | None], options: dict[str, Any]) -> list[list[int]]:
        kwargs: dict[str, Any] = {"truncation": bool(options["truncation"])}
        if options["truncation"]:
            kwargs["max_length"] = min(options["max_length"] or self.max_length, self.max_length)
        rows: list[list[int]] = [[] for _ in texts]
        singles = [i for i, pair in enumerate(pairs) if pair is None]
        doubles = [i for i, pair in enumerate(pairs) if pair is not None]
        if singles:
            encoded = self.tokenizer([texts[i] for i in singles], **kwargs)["input_ids"]
            for i, ids in zip(singles, encoded):
                rows[i] = ids
        if doubles:
            encoded = self.tokenizer([texts[i] for i in doubles], [pairs[i] for i in doubles], **kwargs)["input_ids"]
            for i, ids in zip(doubles, encoded):
                rows[i] = ids
        return rows

    def _function(self, requested: str | None) -> str:
        if requested is not None and requested.lower() != "default":
            return requested.lower()
        config = self.config
        if config.problem_type == "regression":
            return "none"
        if config.problem_type == "multi_label_classification" or config.num_labels == 1:
            return "sigmoid"
        return "softmax"


def _warn_return_all_scores() -> None:
    # the same category and opening words as transformers 4.x, so filters written for it silence this one too;
    # Python's default filter shows it once per process
    warnings.warn(
        "`return_all_scores` is now deprecated: pass top_k=None instead of return_all_scores=True (every label's "
        "score) or top_k=1 instead of return_all_scores=False; note that top_k sorts the labels by score",
        UserWarning,
        stacklevel=2,
    )


def _split_item(item: Any, position: int) -> tuple[str, str | None]:
    if isinstance(item, str):
        return item, None
    if isinstance(item, dict):
        unknown = set(item) - {"text", "text_pair"}
        if "text" not in item or unknown:
            raise ValueError(
                f"input {position}: a text pair is a dict with keys 'text' and optional 'text_pair', got keys "
                f"{sorted(item)}"
            )
        text, pair = item["text"], item.get("text_pair")
        if not isinstance(text, str) or not (pair is None or isinstance(pair, str)):
            raise TypeError(f"input {position}: 'text' and 'text_pair' must be strings, got {item!r}")
        return text, pair
    if isinstance(item, (list, tuple)) and len(item) == 2 and all(isinstance(x, str) for x in item):
        return item[0], item[1]
    raise TypeError(
        f"input {position}: expected a string or a {{'text': ..., 'text_pair': ...}} dict, "
        f"got {type(item).__name__}: {item!r}"
    )


def _apply(function: str, logits: np.ndarray) -> np.ndarray:
    if function == "softmax":
        return softmax(logits)
    if function == "sigmoid":
        return sigmoid(logits)
    return np.asarray(logits, dtype=np.float32)
