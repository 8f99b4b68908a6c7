"""question-answering: extractive answers, with overlapping windows over long contexts.

The algorithm of transformers' (v4) question-answering pipeline, written in numpy:

1. Tokenize ``[CLS] question [SEP] context [SEP]``; a context longer than ``max_seq_len`` is cut into windows
   that share ``doc_stride`` tokens. Questions are first cut to ``max_question_len`` tokens.
2. Per window, only context tokens (and [CLS]) may be part of an answer: the others get logit -10000. Softmax
   the start and end logits separately; the [CLS] product start[0] * end[0] is the "no answer" score.
3. Score every span start <= end < start + ``max_answer_len`` as start_prob * end_prob, keep the best, map
   token spans back to characters of the context (whole words with ``align_to_words``), and merge spans with
   the same (case-insensitive) text by adding their scores, across windows.
4. With ``handle_impossible_answer``, add ``{"answer": "", "start": 0, "end": 0}`` scored by the lowest "no
   answer" score over the windows. Return the ``top_k`` best.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from distilbert_mf.pipelines.base import Pipeline, check_top_k, softmax

_EXCLUDED_LOGIT = -10000.0


class QuestionAnsweringPipeline(Pipeline):
    """Answer questions from a context with a question-answering model.

    Call with ``question=..., context=...`` (strings, or lists of equal length, or a list of questions on one
    context), with a ``{"question", "context"}`` dict or a list of them, or with two positional strings. Each
    answer is ``{"score", "start", "end", "answer"}`` where ``context[start:end] == answer``; ``top_k > 1`` gives
    a list per question (fewer when the context has fewer candidate spans).
    """

    task = "question-answering"
    head = "question_answering"
    parameters = {
        "top_k": 1,
        "doc_stride": None,
        "max_answer_len": 15,
        "max_seq_len": None,
        "max_question_len": 64,
        "handle_impossible_answer": False,
        "align_to_words": True,
    }

    def _validate(self, params: dict[str, Any]) -> None:
        if "top_k" in params:
            check_top_k(params["top_k"])
        for name, low in (("max_answer_len", 1), ("max_question_len", 1), ("doc_stride", 0), ("max_seq_len", 4)):
            value = params.get(name)
            if value is None and name in ("doc_stride", "max_seq_len"):
                continue
            if name in params and (isinstance(value, bool) or not isinstance(value, int) or value < low):
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")

    def __call__(self, *args: Any, question: Any = None, context: Any = None, **params: Any) -> Any:
        """Answer one or several questions; see the class docstring for the accepted inputs."""
        options = self._resolve(params)
        examples, single = _examples(args, question, context)
        results = self._answer(examples, options)
        return results[0] if single else results

    def each(self, inputs: Any, **params: Any) -> list[Any]:
        """One answer (or ``top_k`` list) per ``{"question", "context"}`` dict of ``inputs``."""
        return self._answer([_example(x, i) for i, x in enumerate(inputs)], self._resolve(params))

    def _answer(self, examples: list[tuple[str, str]], options: dict[str, Any]) -> list[Any]:
        max_seq_len = options["max_seq_len"] or min(self.max_length, 384)
        if max_seq_len > self.max_length:
            raise ValueError(f"max_seq_len={max_seq_len} exceeds the model's limit of {self.max_length} tokens")
        doc_stride = options["doc_stride"]
        if doc_stride is None:
            doc_stride = min(max_seq_len // 2, 128)
        if doc_stride > max_seq_len:
            raise ValueError(f"doc_stride={doc_stride} is larger than max_seq_len={max_seq_len}")
        questions = self._cut_questions([q for q, _ in examples], options["max_question_len"])
        contexts = [c for _, c in examples]
        self._check_room(questions, contexts, max_seq_len, doc_stride)
        encoded = self.tokenizer(
            questions,
            contexts,
            truncation="only_second",
            max_length=max_seq_len,
            stride=doc_stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        rows = encoded["input_ids"]
        owner = encoded["overflow_to_sample_mapping"]
        outputs = self.forward(rows, batch_size=options["batch_size"], progress=options["progress"])
        answers: list[list[dict[str, Any]]] = [[] for _ in examples]
        null_scores = [1_000_000.0] * len(examples)
        for window, example in enumerate(owner):
            sequence_ids = np.array([-1 if s is None else s for s in encoded.sequence_ids(window)])
            word_ids = encoded.word_ids(window)
            allowed = sequence_ids == 1  # context tokens
            allowed[np.asarray(rows[window]) == self._cls_id] = True
            null_scores[example] = self._window_answers(
                answers[example],
                contexts[example],
                outputs[window],
                allowed,
                encoded["offset_mapping"][window],
                word_ids,
                sequence_ids,
                null_scores[example],
                options,
            )
        results = []
        for found, null in zip(answers, null_scores):
            if options["handle_impossible_answer"]:
                found.append({"score": null, "start": 0, "end": 0, "answer": ""})
            best = sorted(found, key=lambda answer: answer["score"], reverse=True)[: options["top_k"]]
            results.append(best[0] if len(best) == 1 else best)
        return results

    @property
    def _cls_id(self) -> int:
        cls = getattr(self.tokenizer, "cls_token_id", None)
        return -1 if cls is None else int(cls)

    def _window_answers(
        self,
        answers: list[dict[str, Any]],
        context: str,
        out: dict[str, np.ndarray],
        allowed: np.ndarray,
        offsets: list[tuple[int, int]],
        word_ids: list[int | None],
        sequence_ids: np.ndarray,
        null_score: float,
        options: dict[str, Any],
    ) -> float:
        """Add this window's candidate answers to ``answers``; returns the updated "no answer" score."""
        start = softmax(np.where(allowed, out["start_logits"], _EXCLUDED_LOGIT))  # (seq,)
        end = softmax(np.where(allowed, out["end_logits"], _EXCLUDED_LOGIT))  # (seq,)
        if options["handle_impossible_answer"]:
            null_score = min(null_score, float(start[0] * end[0]))
        start[0] = end[0] = 0.0
        keep = options["top_k"] * 2 + 10 if options["align_to_words"] else options["top_k"]
        for s, e, score in _best_spans(start, end, keep, options["max_answer_len"], allowed):
            first, last = _char_span(s, e, offsets, word_ids, sequence_ids, options["align_to_words"])
            text = context[first:last]
            same = next((a for a in answers if a["answer"].lower() == text.lower()), None)
            if same is not None:
                same["score"] += score
            else:
                answers.append({"score": score, "start": first, "end": last, "answer": text})
        return null_score

    def _cut_questions(self, questions: list[str], max_question_len: int) -> list[str]:
        """Cut each question after its ``max_question_len``-th token (at that token's last character)."""
        encoded = self.tokenizer(questions, add_special_tokens=False, return_offsets_mapping=True)
        cut = []
        for question, ids, offsets in zip(questions, encoded["input_ids"], encoded["offset_mapping"]):
            cut.append(question[: int(offsets[max_question_len - 1][1])] if len(ids) > max_question_len else question)
        return cut

    def _check_room(self, questions: list[str], contexts: list[str], max_seq_len: int, doc_stride: int) -> None:
        """Each window must hold the question, 3 special tokens and more than ``doc_stride`` context tokens."""
        question_ids = self.tokenizer(questions, add_special_tokens=False)["input_ids"]
        context_ids = self.tokenizer(contexts, add_special_tokens=False)["input_ids"]
        for i, (q, c) in enumerate(zip(question_ids, context_ids)):
            room = max_seq_len - len(q) - 3
            if len(c) > room and room <= doc_stride:
                raise ValueError(
                    f"example {i}: the question takes {len(q)} tokens, leaving {room} of max_seq_len={max_seq_len} "
                    f"for the context, which must exceed doc_stride={doc_stride}; raise max_seq_len, or lower "
                    "doc_stride or max_question_len"
                )


def _examples(args: tuple[Any, ...], question: Any, context: Any) -> tuple[list[tuple[str, str]], bool]:
    """Normalise the accepted call forms to ``[(question, context), ...]`` and whether one example was given."""
    if args and (question is not None or context is not None):
        raise TypeError("pass the examples either positionally or as question=/context=, not both")
    if len(args) == 2 and all(isinstance(a, str) for a in args):
        question, context = args
    elif len(args) == 1:
        item = args[0]
        if isinstance(item, dict):
            return [_example(item, 0)], True
        if isinstance(item, (list, tuple)) and item:
            return [_example(x, i) for i, x in enumerate(item)], False
        raise TypeError(f"expected a {{'question', 'context'}} dict or a non-empty list of them, got {item!r}")
    elif args:
        raise TypeError(f"expected question=..., context=... or one dict/list of dicts, got {len(args)} arguments")
    if question is None or context is None:
        raise TypeError("question-answering needs both question=... and context=...")
    if isinstance(question, str) and isinstance(context, str):
        return [_example({"question": question, "context": context}, 0)], True
    if isinstance(question, (list, tuple)) and isinstance(context, str):
        return [_example({"question": q, "context": context}, i) for i, q in enumerate(question)], False
    if isinstance(question, (list, tuple)) and isinstance(context, (list, tuple)):
        if len(question) != len(context):
            raise ValueError(
                f"got {len(question)} questions but {len(context)} contexts; pass one context per question"
            )
        return [_example({"question": q, "context": c}, i) for i, (q, c) in enumerate(zip(question, context))], False
    raise TypeError(
        f"question and context must be strings or lists of strings, got {type(question).__name__} and "
        f"{type(context).__name__}"
    )


def _example(item: Any, position: int) -> tuple[str, str]:
    if not isinstance(item, dict):
        raise TypeError(f"example {position}: expected a {{'question', 'context'}} dict, got {type(item).__name__}")
    for key in ("question", "context"):
        if key not in item:
            raise KeyError(
                f"example {position}: missing key {key!r}; an example is {{'question': ..., 'context': ...}}"
            )
        if not isinstance(item[key], str):
            raise TypeError(f"example {position}: {key} must be a string, got {type(item[key]).__name__}")
        if not item[key].strip():
            raise ValueError(f"example {position}: {key} is empty")
    return item["question"], item["context"]


def _best_spans(
    start: np.ndarray, end: np.ndarray, keep: int, max_answer_len: int, allowed: np.ndarray
) -> list[tuple[int, int, float]]:
    """The ``keep`` best spans ``(start, end, start_prob * end_prob)`` with start <= end < start + max_answer_len,
    dropping those that begin or end outside ``allowed`` tokens."""
    scores = np.outer(start, end)  # (seq, seq)
    scores = np.tril(np.triu(scores), max_answer_len - 1)
    flat = scores.ravel()
    if keep == 1:
        best = np.array([int(np.argmax(flat))])
    elif flat.size <= keep:
        best = np.argsort(-flat, kind="stable")
    else:
        best = np.argpartition(-flat, keep)[:keep]
        best = best[np.argsort(-flat[best], kind="stable")]
    starts, ends = np.unravel_index(best, scores.shape)
    return [(int(s), int(e), float(scores[s, e])) for s, e in zip(starts, ends) if allowed[s] and allowed[e]]


def _char_span(
    s: int,
    e: int,
    offsets: list[tuple[int, int]],
    word_ids: list[int | None],
    sequence_ids: np.ndarray,
    align_to_words: bool,
) -> tuple[int, int]:
    """Characters of the context covered by tokens ``s..e``; whole words with ``align_to_words``."""
    if align_to_words and word_ids[s] is not None and word_ids[e] is not None:
        context = sequence_ids == 1
        first_word = [i for i, w in enumerate(word_ids) if w == word_ids[s] and context[i]]
        last_word = [i for i, w in enumerate(word_ids) if w == word_ids[e] and context[i]]
        if first_word and last_word:
            return int(offsets[first_word[0]][0]), int(offsets[last_word[-1]][1])
    return int(offsets[s][0]), int(offsets[e][1])
