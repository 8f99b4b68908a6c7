"""fill-mask: the most likely tokens for each ``[MASK]`` of a text."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, as_text, check_top_k, is_stream, softmax

logger = logging.getLogger(__name__)


class FillMaskPipeline(Pipeline):
    """Predict the masked tokens with a masked-LM model.

    Per input: a list of ``top_k`` dicts ``{"score", "token", "token_str", "sequence"}`` (best first), or, when
    the text has several masks, one such list per mask (each mask scored on its own, the other masks kept).
    ``targets`` (a string or list) restricts the candidates; a target that is not one vocabulary token is
    replaced by its first token, with a warning.
    """

    task = "fill-mask"
    head = "masked_lm"
    parameters = {"top_k": 5, "targets": None, "truncation": True, "max_length": None}

    def _validate(self, params: dict[str, Any]) -> None:
        if "top_k" in params:
            check_top_k(params["top_k"])
        targets = params.get("targets")
        if targets is not None and not (
            isinstance(targets, str)
            or (isinstance(targets, (list, tuple)) and all(isinstance(t, str) for t in targets))
        ):
            raise TypeError(f"targets must be a string or a list of strings, got {targets!r}")

    @property
    def mask_token_id(self) -> int:
        mask = getattr(self.tokenizer, "mask_token_id", None)
        if mask is None:
            raise ValueError("fill-mask needs a tokenizer with a mask token; this tokenizer defines none")
        return int(mask)

    def __call__(self, inputs: Any, **params: Any) -> Any:
        """Fill the mask(s) of ``inputs``: a string, or a list (or generator) of strings."""
        options = self._resolve(params)
        if is_stream(inputs):
            return self._stream(inputs, lambda chunk: self._fill(chunk, options))
        if isinstance(inputs, str):
            return self._fill([inputs], options)[0]
        if isinstance(inputs, (list, tuple)):
            results = self._fill(list(inputs), options)
            return results[0] if len(results) == 1 else results  # as transformers: a list of one gives its result
        raise TypeError(f"fill-mask takes a string or a list of strings, got {type(inputs).__name__}")

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        return self._fill(list(inputs), self._resolve(params))

    def _fill(self, texts: list[Any], options: dict[str, Any]) -> list[Any]:
        texts = [as_text(text, f"input {i}") for i, text in enumerate(texts)]
        mask_id = self.mask_token_id
        kwargs: dict[str, Any] = {"truncation": bool(options["truncation"])}
        if options["truncation"]:
            kwargs["max_length"] = min(options["max_length"] or self.max_length, self.max_length)
        rows = self.tokenizer(texts, **kwargs)["input_ids"]
        positions = []
        for i, ids in enumerate(rows):
            where = np.flatnonzero(np.asarray(ids) == mask_id)
            if where.size == 0:
                mask = getattr(self.tokenizer, "mask_token", "[MASK]")
                raise ValueError(
                    f"no mask token ({mask}) found in input {i}: {texts[i]!r}; put {mask} where a word goes"
                )
            positions.append(where)
        target_ids = self._target_ids(options["targets"]) if options["targets"] is not None else None

        def keep_masks(i: int, out: dict[str, np.ndarray]) -> np.ndarray:
            return softmax(out["logits"][positions[i]])  # (masks, vocab)

        probabilities = self.forward(
            rows, batch_size=options["batch_size"], progress=options["progress"], reduce=keep_masks
        )
        return [
            self._postprocess(np.asarray(rows[i]), positions[i], probabilities[i], options["top_k"], target_ids)
            for i in range(len(rows))
        ]

    def _postprocess(
        self, ids: np.ndarray, positions: np.ndarray, probs: np.ndarray, top_k: int, target_ids: np.ndarray | None
    ) -> list[Any]:
        if target_ids is not None:
            probs = probs[:, target_ids]
        top_k = min(top_k, probs.shape[-1])
        single = len(positions) == 1
        decode = self.tokenizer.decode
        per_mask = []
        for mask_index, row in enumerate(probs):
            best = np.argsort(-row, kind="stable")[:top_k]
            proposals = []
            for candidate in best:
                token = int(target_ids[candidate]) if target_ids is not None else int(candidate)
                filled = ids.copy()
                filled[positions[mask_index]] = token
                filled = filled[filled != self.pad_token_id]
                proposals.append(
                    {
                        "score": float(row[candidate]),
                        "token": token,
                        "token_str": decode([token]),
                        # the other masks stay visible, so special tokens are only skipped with one mask
                        "sequence": decode(filled.tolist(), skip_special_tokens=single),
                    }
                )
            per_mask.append(proposals)
        return per_mask[0] if single else per_mask

    def _target_ids(self, targets: str | list[str]) -> np.ndarray:
        if isinstance(targets, str):
            targets = [targets]
        vocab = self.tokenizer.get_vocab()
        ids: list[int] = []
        for target in targets:
            token_id = vocab.get(target)
            if token_id is None:
                pieces = self.tokenizer(target, add_special_tokens=False)["input_ids"]
                if not pieces:
                    logger.warning(
                        "fill-mask target %r is not in the vocabulary and tokenizes to nothing: ignored", target
                    )
                    continue
                token_id = pieces[0]
                logger.warning(
                    "fill-mask target %r is not one vocabulary token: using its first token %r",
                    target,
                    self.tokenizer.convert_ids_to_tokens(token_id),
                )
            if token_id not in ids:
                ids.append(int(token_id))
        if not ids:
            raise ValueError(
                f"none of the targets {targets!r} maps to a vocabulary token; pass at least one valid target"
            )
        return np.asarray(ids, dtype=np.int64)
