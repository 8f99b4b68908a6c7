"""token-classification (alias ner): a label per token, optionally grouped into entities with char offsets."""

from __future__ import annotations

from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, as_text, is_stream, softmax, tokens_to_string

AGGREGATION_STRATEGIES = ("none", "simple", "first", "average", "max")


class TokenClassificationPipeline(Pipeline):
    """Label each token with a token-classification model, as transformers' NER pipeline.

    ``aggregation_strategy``: "none" gives one ``{"entity", "score", "index", "word", "start", "end"}`` per token;
    "simple" groups adjacent tokens of the same entity (B-/I- prefixes understood) into ``{"entity_group", "score",
    "word", "start", "end"}``; "first", "average" and "max" first force one label per word (the first token's,
    the averaged scores' or the most confident token's). Labels in ``ignore_labels`` (default ``["O"]``) are
    dropped. ``stride``: texts longer than the model are cut into overlapping windows of ``stride`` shared tokens
    and their entities merged (needs an aggregation strategy other than "none"). ``start``/``end`` index the
    original string.
    """

    task = "token-classification"
    head = "token_classification"
    parameters = {"aggregation_strategy": "none", "ignore_labels": None, "stride": None}

    def _validate(self, params: dict[str, Any]) -> None:
        strategy = params.get("aggregation_strategy", "none")
        if not isinstance(strategy, str) or strategy.lower() not in AGGREGATION_STRATEGIES:
            raise ValueError(f"aggregation_strategy must be one of {AGGREGATION_STRATEGIES}, got {strategy!r}")
        labels = params.get("ignore_labels")
        if labels is not None and not (
            isinstance(labels, (list, tuple, set)) and all(isinstance(x, str) for x in labels)
        ):
            raise TypeError(f"ignore_labels must be a list of label names, got {labels!r}")
        stride = params.get("stride")
        if stride is not None and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 0):
            raise ValueError(f"stride must be a non-negative integer (or None), got {stride!r}")

    def _check_combination(self, options: dict[str, Any]) -> None:
        options["aggregation_strategy"] = options["aggregation_strategy"].lower()
        if options["stride"] is not None:
            if options["aggregation_strategy"] == "none":
                raise ValueError(
                    f"stride={options['stride']} processes long texts in overlapping windows, which needs "
                    "aggregation_strategy 'simple', 'first', 'average' or 'max' (got 'none')"
                )
            if options["stride"] >= self.max_length - 2:
                raise ValueError(
                    f"stride={options['stride']} must be smaller than the window ({self.max_length} tokens minus "
                    "[CLS] and [SEP])"
                )

    def __call__(self, inputs: Any, **params: Any) -> Any:
        """Classify the tokens of ``inputs``: a string, or a list (or generator) of strings."""
        options = self._resolve(params)
        if is_stream(inputs):
            return self._stream(inputs, lambda chunk: self._classify(chunk, options))
        if isinstance(inputs, str):
            return self._classify([inputs], options)[0]
        if isinstance(inputs, (list, tuple)) and inputs:
            return self._classify(list(inputs), options)
        raise TypeError(f"token-classification takes a string or a non-empty list of strings, got {inputs!r}")

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        return self._classify(list(inputs), self._resolve(params))

    def _classify(self, texts: list[Any], options: dict[str, Any]) -> list[list[dict[str, Any]]]:
        texts = [as_text(text, f"input {i}") for i, text in enumerate(texts)]
        kwargs: dict[str, Any] = {
            "truncation": True,
            "max_length": self.max_length,
            "return_offsets_mapping": True,
            "return_special_tokens_mask": True,
        }
        if options["stride"] is not None:
            kwargs.update(return_overflowing_tokens=True, stride=options["stride"])
        encoded = self.tokenizer(texts, **kwargs)
        rows = encoded["input_ids"]
        owner = encoded["overflow_to_sample_mapping"] if options["stride"] is not None else range(len(rows))
        scores = self.forward(
            rows,
            batch_size=options["batch_size"],
            progress=options["progress"],
            reduce=lambda i, out: softmax(out["logits"]),  # (seq, labels)
        )
        strategy = options["aggregation_strategy"]
        ignore = set(["O"] if options["ignore_labels"] is None else options["ignore_labels"])
        per_text: list[list[dict[str, Any]]] = [[] for _ in texts]
        windows = [0] * len(texts)
        for window, text_index in enumerate(owner):
            pre = self._pre_entities(
                texts[text_index],
                rows[window],
                scores[window],
                encoded["offset_mapping"][window],
                encoded["special_tokens_mask"][window],
            )
            entities = self._aggregate(pre, strategy)
            per_text[text_index].extend(
                e for e in entities if e.get("entity") not in ignore and e.get("entity_group") not in ignore
            )
            windows[text_index] += 1
        return [_merge_overlaps(entities) if windows[i] > 1 else entities for i, entities in enumerate(per_text)]

    def _pre_entities(
        self, text: str, ids: list[int], scores: np.ndarray, offsets: list[tuple[int, int]], special: list[int]
    ) -> list[dict[str, Any]]:
        """One record per non-special token: its token string, scores, char span and whether it continues a word."""
        tokens = self.tokenizer.convert_ids_to_tokens(list(ids))
        unk_id = getattr(self.tokenizer, "unk_token_id", None)
        records = []
        for index, token_scores in enumerate(scores):
            if special[index]:
                continue
            start, end = (int(x) for x in offsets[index])
            source = text[start:end]
            word = tokens[index]
            # WordPiece continuation pieces carry '##', so they are longer than the text they cover
            is_subword = len(word) != len(source)
            if unk_id is not None and int(ids[index]) == unk_id:
                word, is_subword = source, False
            records.append(
                {
                    "word": word,
                    "scores": token_scores,
                    "start": start,
                    "end": end,
                    "index": index,
                    "is_subword": is_subword,
                }
            )
        return records

    def _aggregate(self, records: list[dict[str, Any]], strategy: str) -> list[dict[str, Any]]:
        id2label = self.config.id2label
        if strategy in ("none", "simple"):
            entities = []
            for record in records:
                best = int(record["scores"].argmax())
                entities.append(
                    {
                        "entity": id2label[best],
                        "score": float(record["scores"][best]),
                        "index": record["index"],
                        "word": record["word"],
                        "start": record["start"],
                        "end": record["end"],
                    }
                )
            if strategy == "none":
                return entities
        else:
            entities = [self._word_entity(word, strategy) for word in _words(records)]
        return self._group(entities)

    def _word_entity(self, pieces: list[dict[str, Any]], strategy: str) -> dict[str, Any]:
        """One label for a whole word, chosen by ``strategy`` ("first", "average" or "max")."""
        if strategy == "first":
            scores = pieces[0]["scores"]
        elif strategy == "max":
            scores = max(pieces, key=lambda piece: piece["scores"].max())["scores"]
        else:
            scores = np.nanmean(np.stack([piece["scores"] for piece in pieces]), axis=0)
        best = int(scores.argmax())
        return {
            "entity": self.config.id2label[best],
            "score": float(scores[best]),
            "word": tokens_to_string(self.tokenizer, [piece["word"] for piece in pieces]),
            "start": pieces[0]["start"],
            "end": pieces[-1]["end"],
        }

    def _group(self, entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Merge runs of adjacent entities with the same tag; a B- tag always starts a new group."""
        groups: list[list[dict[str, Any]]] = []
        for entity in entities:
            prefix, tag = _split_tag(entity["entity"])
            if groups and prefix != "B" and tag == _split_tag(groups[-1][-1]["entity"])[1]:
                groups[-1].append(entity)
            else:
                groups.append([entity])
        return [
            {
                "entity_group": group[0]["entity"].split("-", 1)[-1],
                "score": float(np.nanmean([e["score"] for e in group])),
                "word": tokens_to_string(self.tokenizer, [e["word"] for e in group]),
                "start": group[0]["start"],
                "end": group[-1]["end"],
            }
            for group in groups
        ]


def _words(records: list[dict[str, Any]]) -> list[list[dict[str, Any]]]:
    words: list[list[dict[str, Any]]] = []
    for record in records:
        if words and record["is_subword"]:
            words[-1].append(record)
        else:
            words.append([record])
    return words


def _split_tag(label: str) -> tuple[str, str]:
    """``"B-PER"`` -> ``("B", "PER")``; a label without a B-/I- prefix continues like an I- tag."""
    if label.startswith(("B-", "I-")):
        return label[0], label[2:]
    return "I", label


def _merge_overlaps(entities: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Entities found twice in overlapping windows: keep the longer span (then the higher score)."""
    if not entities:
        return entities
    entities = sorted(entities, key=lambda e: e["start"])
    kept = []
    current = entities[0]
    for entity in entities:
        if current["start"] <= entity["start"] < current["end"]:
            length, current_length = entity["end"] - entity["start"], current["end"] - current["start"]
            if length > current_length or (length == current_length and entity["score"] > current["score"]):
                current = entity
        else:
            kept.append(current)
            current = entity
    kept.append(current)
    return kept
