"""feature-extraction: the encoder's hidden states per token, or one pooled (sentence) vector per text."""

from __future__ import annotations

from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, as_text, is_stream

POOLINGS = ("mean", "cls")


class FeatureExtractionPipeline(Pipeline):
    """Token vectors or sentence embeddings from the base model (no head).

    Per input, as transformers: the last hidden states as a nested list of shape (1, seq, dim), or a numpy array
    of that shape with ``return_tensors=True``. With ``pooling="mean"`` (mean over the real tokens, [CLS] and
    [SEP] included, as sentence-transformers) or ``pooling="cls"`` (the [CLS] vector), one vector of shape
    (dim,) per input instead; ``normalize=True`` scales it to unit L2 norm.
    """

    task = "feature-extraction"
    head = "base"
    parameters = {"return_tensors": False, "pooling": None, "normalize": False, "truncation": True, "max_length": None}

    def _validate(self, params: dict[str, Any]) -> None:
        pooling = params.get("pooling")
        if pooling is not None and pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS} or None (token vectors), got {pooling!r}")

    def _check_combination(self, options: dict[str, Any]) -> None:
        if options["normalize"] and options["pooling"] is None:
            raise ValueError("normalize=True normalises sentence embeddings: pass pooling='mean' or pooling='cls' too")

    def __call__(self, inputs: Any, **params: Any) -> Any:
        """Embed ``inputs``: a string, or a list (or generator) of strings."""
        options = self._resolve(params)
        if is_stream(inputs):
            return self._stream(inputs, lambda chunk: self._embed(chunk, options))
        if isinstance(inputs, str):
            return self._embed([inputs], options)[0]
        if isinstance(inputs, (list, tuple)):
            return self._embed(list(inputs), options)
        raise TypeError(f"feature-extraction takes a string or a list of strings, got {type(inputs).__name__}")

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        return self._embed(list(inputs), self._resolve(params))

    def _embed(self, texts: list[Any], options: dict[str, Any]) -> list[Any]:
        texts = [as_text(text, f"input {i}") for i, text in enumerate(texts)]
        kwargs: dict[str, Any] = {"truncation": bool(options["truncation"])}
        if options["truncation"]:
            kwargs["max_length"] = min(options["max_length"] or self.max_length, self.max_length)
        rows = self.tokenizer(texts, **kwargs)["input_ids"]
        pooling, normalize = options["pooling"], options["normalize"]

        def finish(i: int, out: dict[str, np.ndarray]) -> Any:
            hidden = out["last_hidden_state"]  # (seq, dim): real tokens only
            if pooling is None:
                return np.array(hidden[None]) if options["return_tensors"] else hidden[None].tolist()  # (1, seq, dim)
            vector = hidden.mean(axis=0) if pooling == "mean" else hidden[0]  # (dim,)
            if normalize:
                vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
            return vector if options["return_tensors"] else vector.tolist()

        return self.forward(rows, batch_size=options["batch_size"], progress=options["progress"], reduce=finish)
