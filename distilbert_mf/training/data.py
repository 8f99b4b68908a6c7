"""The framework-neutral data layer: files -> tokenized task datasets -> seeded numpy batches.

:func:`prepare_dataset` reads a file (or a ``datasets.Dataset``, see :mod:`distilbert_mf.training.readers`),
tokenizes it with our tokenizer for one task and returns a :class:`TaskDataset`; :class:`BatchLoader`
(:mod:`distilbert_mf.training.batching`) turns that into batches.

Tasks (``task=``; the pipeline names, with aliases):

======================  =====================================================================================
``text-classification``  one text or a pair; labels are class names / ids (single label), floats (regression)
                         or lists (multi-label); batch ``labels`` is int64 ``(batch,)``, float32 ``(batch,)``
                         or float32 ``(batch, num_labels)``
``token-classification`` words + one tag per word; the first piece of each word carries the tag, the others
                         -100 (or the tag, ``B-`` turned to ``I-``, with ``label_all_tokens``); ``labels``
                         int64 ``(batch, seq_len)``
``question-answering``   SQuAD records; contexts cut into windows of ``max_seq_length`` sharing
                         ``doc_stride`` tokens; ``start_positions`` / ``end_positions`` int64 ``(batch,)``, 0
                         (``[CLS]``) when the window does not hold the whole answer or there is none
``masked-lm``            one document per line (``line_by_line``; long lines split) or all text cut into blocks;
                         masked per batch by a seeded masker: ``labels`` int64 ``(batch, seq_len)``, -100 where
                         no prediction is asked
``multiple-choice``      a context + N endings (SWAG's columns by default); ``input_ids`` ``(batch, N, seq_len)``
======================  =====================================================================================

Every error about the data (a missing column, a label never seen in training, an answer outside its context,
``max_seq_length`` above the model's ``max_position_embeddings``) is raised here, before any training step, and
names the file, line and column.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distilbert_mf.config import DistilBertConfig
from distilbert_mf.training.masking import IGNORE_INDEX, BertMasker, Masker
from distilbert_mf.training.readers import DataError, Records, iter_chunks, read_records

logger = logging.getLogger(__name__)

TASKS = ("text-classification", "token-classification", "question-answering", "masked-lm", "multiple-choice")
TASK_ALIASES = {
    "sequence-classification": "text-classification",
    "sentiment-analysis": "text-classification",
    "ner": "token-classification",
    "qa": "question-answering",
    "fill-mask": "masked-lm",
    "mlm": "masked-lm",
}
# task -> the model head (distilbert_mf.checkpoint.names.HEADS) it trains
TASK_HEADS = {
    "text-classification": "sequence_classification",
    "token-classification": "token_classification",
    "question-answering": "question_answering",
    "masked-lm": "masked_lm",
    "multiple-choice": "multiple_choice",
}
DEFAULT_MAX_SEQ_LENGTH = {"question-answering": 384}  # every other task: 128 (transformers' example scripts)
PROBLEM_TYPES = ("single_label_classification", "regression", "multi_label_classification")
_TEXT_COLUMNS = ("text", "sentence", "sentence1")
_TOKENIZE_CHUNK = 1000
_INT = re.compile(r"^[+-]?\d+$")


def canonical_task(task: str) -> str:
    """The task name for ``task`` or one of its aliases; ValueError listing the tasks otherwise."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a str, got {type(task).__name__}")
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise ValueError(f"unknown task {task!r}; expected one of {TASKS} (or an alias: {sorted(TASK_ALIASES)})")
    return name


@dataclass(frozen=True)
class DataOptions:
    """Which columns hold what, and the task options. Unused fields are ignored by the other tasks.

    Attributes:
        text_column: text (text classification, masked LM). None: ``text``, ``sentence`` or ``sentence1``.
        text_pair_column: second text of a pair. None: ``sentence2`` when the text column is ``sentence1``.
        label_column: label of text classification and multiple choice.
        problem_type: ``single_label_classification``, ``regression`` or ``multi_label_classification``;
            None: inferred from the labels (floats: regression, lists: multi-label, else single label).
        label_separator: separator of the labels in one TSV/CSV field for multi-label data (``"a,b"``).
        tokens_column / tags_column: words and their tags (token classification; CoNLL files give
            ``tokens`` / ``ner_tags``).
        label_all_tokens: give every piece of a word its tag (``B-X`` becomes ``I-X`` after the first piece).
        question_column / context_column: question answering (None: ``question`` / ``context``), and the
            context and the optional prefix of each ending for multiple choice (None: ``sent1`` / ``sent2``).
        answers_column / id_column: SQuAD ``answers`` (``{"text": [...], "answer_start": [...]}``) and ``id``.
        doc_stride: tokens two consecutive question-answering windows share.
        choice_columns / choices_column: the endings of multiple choice, one column each (SWAG's
            ``ending0..3``), or one column holding a list (``choices_column`` wins when set).
        mlm_probability / whole_word_mask / mask_replace_prob / random_replace_prob: masked-LM masking.
        line_by_line: masked LM: one sequence per line (long lines split into several), else all lines
            concatenated and cut into blocks of ``max_seq_length`` (transformers' ``run_mlm`` default).
    """

    text_column: str | None = None
    text_pair_column: str | None = None
    label_column: str = "label"
    problem_type: str | None = None
    label_separator: str | None = None
    tokens_column: str = "tokens"
    tags_column: str = "ner_tags"
    label_all_tokens: bool = False
    question_column: str | None = None
    context_column: str | None = None
    answers_column: str = "answers"
    id_column: str = "id"
    doc_stride: int = 128
    choice_columns: tuple[str, ...] = ("ending0", "ending1", "ending2", "ending3")
    choices_column: str | None = None
    mlm_probability: float = 0.15
    whole_word_mask: bool = False
    mask_replace_prob: float = 0.8
    random_replace_prob: float = 0.1
    line_by_line: bool = True

    def __post_init__(self) -> None:
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be one of {PROBLEM_TYPES} or None, got {self.problem_type!r}")
        if isinstance(self.doc_stride, bool) or not isinstance(self.doc_stride, int) or self.doc_stride < 0:
            raise ValueError(f"doc_stride must be an integer >= 0, got {self.doc_stride!r}")
        if isinstance(self.choice_columns, str):
            raise TypeError(f"choice_columns must be a list of column names, got the string {self.choice_columns!r}")


@dataclass
class QuestionAnsweringFeatures:
    """What evaluation needs to turn window logits into answers (one entry per example or per window).

    Attributes:
        example_ids: the SQuAD ``id`` of each example.
        contexts: the context of each example.
        answers: the gold answer texts of each example (empty: unanswerable).
        example_of_row: ``(rows,)`` the example each window belongs to.
        offsets: per window, the ``(start, end)`` characters of each token in its context.
        sequence_ids: per window, ``(seq_len,)`` 0 question, 1 context, -1 special tokens.
        word_ids: per window, the word index of each token (None for special tokens).
    """

    example_ids: list[str]
    contexts: list[str]
    answers: list[list[str]]
    example_of_row: np.ndarray
    offsets: list[list[tuple[int, int]]] = field(repr=False)
    sequence_ids: list[np.ndarray] = field(repr=False)
    word_ids: list[list[int | None]] = field(repr=False)


@dataclass
class TaskDataset:
    """Tokenized rows of one task, ready for :class:`~distilbert_mf.training.batching.BatchLoader`.

    Attributes:
        task: one of :data:`TASKS`.
        input_ids: per row, the token ids ``(length,)`` int32 (multiple choice: ``(num_choices, length)``
            padded with ``pad_token_id``).
        lengths: ``(rows,)`` the length of each row (multiple choice: of its longest choice).
        choice_lengths: multiple choice only, per row ``(num_choices,)``.
        labels: per task (see the module docstring); per row ``(length,)`` int64 for token classification.
        start_positions / end_positions: ``(rows,)`` int64, question answering.
        label_names: class names in id order (text / token classification).
        problem_type: text classification's problem type.
        pad_token_id: padding id.
        max_seq_length: the length rows were cut to.
        max_positions: the model's ``max_position_embeddings`` (a padded batch never exceeds it).
        source: where the data came from.
        num_examples: examples read (question answering: questions; rows are windows).
        masker: masked LM: ``masker(input_ids, attention_mask, rng) -> (masked_ids, labels)``.
        first_piece: token classification, per row ``(length,)`` bool: the first piece of each word.
        qa: question answering: :class:`QuestionAnsweringFeatures`.
    """

    task: str
    input_ids: list[np.ndarray] = field(repr=False)
    lengths: np.ndarray = field(repr=False)
    pad_token_id: int
    max_seq_length: int
    max_positions: int
    source: str
    num_examples: int
    labels: Any = field(default=None, repr=False)
    start_positions: np.ndarray | None = field(default=None, repr=False)
    end_positions: np.ndarray | None = field(default=None, repr=False)
    choice_lengths: list[np.ndarray] | None = field(default=None, repr=False)
    label_names: tuple[str, ...] | None = None
    problem_type: str | None = None
    masker: Masker | None = field(default=None, repr=False)
    first_piece: list[np.ndarray] | None = field(default=None, repr=False)
    qa: QuestionAnsweringFeatures | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def head(self) -> str:
        """The model head this task trains (``sequence_classification``, ...)."""
        return TASK_HEADS[self.task]

    @property
    def num_labels(self) -> int | None:
        """Output size of the head: classes, 1 for regression, 2 for question answering; None for masked LM."""
        if self.task == "question-answering":
            return 2
        if self.problem_type == "regression":
            return 1
        return None if self.label_names is None else len(self.label_names)

    @property
    def id2label(self) -> dict[int, str] | None:
        return None if self.label_names is None else dict(enumerate(self.label_names))

    @property
    def label2id(self) -> dict[str, int] | None:
        return None if self.label_names is None else {name: i for i, name in enumerate(self.label_names)}

    def config_overrides(self) -> dict[str, Any]:
        """The config fields the model needs for this data: ``num_labels``, ``id2label``, ``label2id``,
        ``problem_type`` (text / token classification), ``num_labels=2`` (question answering)."""
        if self.task == "question-answering":
            return {"num_labels": 2}
        if self.task not in ("text-classification", "token-classification"):
            return {}
        out: dict[str, Any] = {"num_labels": self.num_labels}
        if self.problem_type == "regression":
            out["id2label"] = {0: "LABEL_0"}
            out["label2id"] = {"LABEL_0": 0}
        else:
            out["id2label"] = self.id2label
            out["label2id"] = self.label2id
        if self.task == "text-classification":
            out["problem_type"] = self.problem_type
        return out

    def with_masker(self, masker: Masker) -> TaskDataset:
        """A copy that masks its batches with ``masker`` (masked LM; e.g. the distillation masker)."""
        if self.task != "masked-lm":
            raise ValueError(f"a masker applies to masked-lm data, not {self.task!r}")
        if not callable(masker):
            raise TypeError(f"masker must be callable (input_ids, attention_mask, rng), got {type(masker).__name__}")
        return dataclasses.replace(self, masker=masker)

    def padded_width(self, rows: np.ndarray, pad_to_multiple_of: int | None = None) -> int:
        """Width of the batch of ``rows``: its longest row, rounded up to ``pad_to_multiple_of`` unless that
        would pass the model's ``max_position_embeddings``."""
        width = int(self.lengths[rows].max())
        if pad_to_multiple_of:
            rounded = -(-width // pad_to_multiple_of) * pad_to_multiple_of
            width = rounded if rounded <= self.max_positions else max(width, self.max_positions)
        return width

    def collate(
        self,
        rows: Sequence[int] | np.ndarray,
        *,
        pad_to_multiple_of: int | None = None,
        rng: np.random.Generator | None = None,
    ) -> dict[str, np.ndarray]:
        """The padded batch of ``rows``: ``input_ids`` / ``attention_mask`` int64 ``(batch, width)`` plus the
        task's targets. Masked LM needs ``rng`` (the loader passes one seeded per batch)."""
        rows = np.asarray(rows, dtype=np.int64)
        if rows.size == 0:
            raise ValueError("cannot collate an empty batch")
        width = self.padded_width(rows, pad_to_multiple_of)
        if self.task == "multiple-choice":
            return self._collate_choices(rows, width)
        ids = np.full((rows.size, width), self.pad_token_id, dtype=np.int64)  # (batch, width)
        for i, row in enumerate(rows):
            ids[i, : self.lengths[row]] = self.input_ids[row]
        mask = (np.arange(width)[None, :] < self.lengths[rows][:, None]).astype(np.int64)  # (batch, width)
        batch = {"input_ids": ids, "attention_mask": mask}
        if self.task == "text-classification":
            batch["labels"] = np.asarray(self.labels[rows])
        elif self.task == "token-classification":
            labels = np.full((rows.size, width), IGNORE_INDEX, dtype=np.int64)  # (batch, width)
            for i, row in enumerate(rows):
                labels[i, : self.lengths[row]] = self.labels[row]
            batch["labels"] = labels
        elif self.task == "question-answering":
            batch["start_positions"] = self.start_positions[rows]
            batch["end_positions"] = self.end_positions[rows]
        elif self.task == "masked-lm":
            if rng is None:
                raise ValueError("masked-lm batches are masked at random: pass rng= (a numpy Generator)")
            batch["input_ids"], batch["labels"] = self.masker(ids, mask, rng)
        return batch

    def _collate_choices(self, rows: np.ndarray, width: int) -> dict[str, np.ndarray]:
        n_choices = self.input_ids[rows[0]].shape[0]
        ids = np.full((rows.size, n_choices, width), self.pad_token_id, dtype=np.int64)  # (batch, choices, width)
        lengths = np.stack([self.choice_lengths[row] for row in rows])  # (batch, choices)
        for i, row in enumerate(rows):
            row_ids = self.input_ids[row]
            ids[i, :, : row_ids.shape[1]] = row_ids
        mask = (np.arange(width)[None, None, :] < lengths[:, :, None]).astype(np.int64)  # (batch, choices, width)
        return {"input_ids": ids, "attention_mask": mask, "labels": np.asarray(self.labels[rows])}


# -- preparation ---------------------------------------------------------------------------------------------


def resolve_max_seq_length(
    task: str, max_seq_length: int | None, config: DistilBertConfig | None, tokenizer: Any = None
) -> tuple[int, int]:
    """``(max_seq_length, max_positions)``: the task default when None; above the config's
    ``max_position_embeddings`` is an error."""
    max_positions = int(config.max_position_embeddings) if config is not None else 512
    if max_seq_length is None:
        max_seq_length = min(DEFAULT_MAX_SEQ_LENGTH.get(task, 128), max_positions)
    if isinstance(max_seq_length, bool) or not isinstance(max_seq_length, (int, np.integer)) or max_seq_length < 4:
        raise ValueError(f"max_seq_length must be an integer >= 4, got {max_seq_length!r}")
    if max_seq_length > max_positions:
        raise ValueError(
            f"max_seq_length={max_seq_length} is larger than the model's max_position_embeddings={max_positions}; "
            f"use at most {max_positions}"
        )
    tokenizer_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tokenizer_max, int) and max_seq_length > tokenizer_max:
        logger.warning(
            "max_seq_length=%d is larger than the tokenizer's model_max_length=%d", max_seq_length, tokenizer_max
        )
    return int(max_seq_length), max_positions


def prepare_dataset(
    task: str,
    source: Any,
    tokenizer: Any,
    *,
    options: DataOptions | None = None,
    max_seq_length: int | None = None,
    config: DistilBertConfig | None = None,
    labels_from: TaskDataset | None = None,
    label_names: Sequence[str] | None = None,
    num_labels: int | None = None,
    format: str | None = None,
) -> TaskDataset:
    """Read ``source`` and tokenize it for ``task``.

    Args:
        task: one of :data:`TASKS` (or an alias).
        source: a file path, :class:`~distilbert_mf.training.readers.Records`, a ``datasets.Dataset``, a list
            of dicts or a dict of columns.
        tokenizer: a :class:`~distilbert_mf.DistilBertTokenizerFast` or :class:`~distilbert_mf.DistilBertTokenizer`.
        options: column names and task options (:class:`DataOptions`).
        max_seq_length: tokens per row (default 384 for question answering, else 128).
        config: the model's config: ``max_seq_length`` may not exceed its ``max_position_embeddings``.
        labels_from: the training dataset: an evaluation set uses its label names and problem type, and a label
            it never saw is an error.
        label_names: the class names in id order (``--label-names``); labels may then be names or ids.
        num_labels: the head's size (``--num-labels``); more classes in the data is an error.
        format: the file format when the suffix does not tell (see :mod:`distilbert_mf.training.readers`).

    Raises:
        DataError: bad data, naming the file, line and column.
        ValueError: bad options (``max_seq_length`` above ``max_position_embeddings``, ...).
    """
    task = canonical_task(task)
    options = options or DataOptions()
    if not isinstance(options, DataOptions):
        raise TypeError(f"options must be a DataOptions, got {type(options).__name__}")
    if labels_from is not None and labels_from.task != task:
        raise ValueError(f"labels_from is a {labels_from.task!r} dataset, but this is {task!r}")
    if num_labels is not None and (isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1):
        raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
    length, max_positions = resolve_max_seq_length(task, max_seq_length, config, tokenizer)
    _check_tokenizer_fits(tokenizer, config)
    records = read_records(source, format=format, task=task)
    common = {
        "pad_token_id": int(tokenizer.pad_token_id),
        "max_seq_length": length,
        "max_positions": max_positions,
        "source": records.source,
    }
    labels = _LabelSpec(labels_from, label_names, num_labels)
    builders = {
        "text-classification": _prepare_text_classification,
        "token-classification": _prepare_token_classification,
        "question-answering": _prepare_question_answering,
        "masked-lm": _prepare_masked_lm,
        "multiple-choice": _prepare_multiple_choice,
    }
    dataset = builders[task](records, tokenizer, options, length, labels, common)
    logger.info("%s: %d %s rows from %d examples", records.source, len(dataset), task, dataset.num_examples)
    return dataset


def _check_tokenizer_fits(tokenizer: Any, config: DistilBertConfig | None) -> None:
    if config is None:
        return
    size = len(tokenizer)
    if size > config.vocab_size:
        raise ValueError(
            f"the tokenizer has {size} tokens but the model's vocab_size is {config.vocab_size}: ids past "
            f"{config.vocab_size - 1} would be out of range; use the model's own tokenizer"
        )


def _text(records: Records, index: int, column: str) -> str:
    value = records.value(index, column)
    if not isinstance(value, str):
        raise DataError(
            f"{records.locations[index]}: column {column!r} must hold text, got {type(value).__name__} {value!r}"
        )
    return value


def _tokenize_in_chunks(tokenizer: Any, first: list[Any], second: list[Any] | None = None, **kwargs: Any) -> list:
    """Token ids per input (lists), tokenized ``_TOKENIZE_CHUNK`` at a time."""
    out: list[list[int]] = []
    for start, chunk in iter_chunks(first, _TOKENIZE_CHUNK):
        pair = None if second is None else second[start : start + len(chunk)]
        out.extend(tokenizer(list(chunk), pair, **kwargs)["input_ids"])
    return out


def _arrays(id_lists: list[list[int]]) -> tuple[list[np.ndarray], np.ndarray]:
    rows = [np.asarray(ids, dtype=np.int32) for ids in id_lists]
    return rows, np.asarray([len(r) for r in rows], dtype=np.int64)


# -- labels --------------------------------------------------------------------------------------------------


@dataclass
class _LabelSpec:
    labels_from: TaskDataset | None
    label_names: Sequence[str] | None
    num_labels: int | None

    def names(self, declared: list[str] | None) -> tuple[tuple[str, ...] | None, str]:
        """Known class names and what they are called in messages."""
        if self.labels_from is not None:
            return self.labels_from.label_names, "the labels seen in training"
        if self.label_names is not None:
            names = tuple(str(n) for n in self.label_names)
            if len(set(names)) != len(names) or not names:
                raise ValueError(f"label_names must be distinct and non-empty, got {list(self.label_names)}")
            return names, "label_names"
        if declared:
            return tuple(declared), "the dataset's class names"
        return None, ""


def _as_int(value: Any) -> int | None:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        return int(value)
    if isinstance(value, str) and _INT.match(value.strip()):
        return int(value.strip())
    return None


def _is_float(value: Any) -> bool:
    if isinstance(value, (float, np.floating)):
        return True
    if isinstance(value, str):
        try:
            float(value)
        except ValueError:
            return False
        return _as_int(value) is None
    return False


def _infer_names(values: list[Any]) -> tuple[str, ...]:
    keys = {v.strip() if isinstance(v, str) else v for v in values}
    ints = [_as_int(v) for v in keys]
    if all(i is not None for i in ints):
        return tuple(str(i) for i in sorted(set(ints)))  # type: ignore[type-var]
    return tuple(sorted(str(v) for v in keys))


def _label_ids(
    values: list[Any], where: list[str], spec: _LabelSpec, declared: list[str] | None, what: str
) -> tuple[list[int], tuple[str, ...]]:
    """Map ``values`` (names or ids) to ids and return the class names."""
    names, origin = spec.names(declared)
    if names is None:
        names = _infer_names(values)
        origin = "the training labels"
        if spec.num_labels is not None:
            ints = [_as_int(n) for n in names]
            if all(i is not None for i in ints):  # integer ids: they index the head directly
                bad = [i for i in ints if not 0 <= i < spec.num_labels]  # type: ignore[operator]
                if bad:
                    position = next(k for k, v in enumerate(values) if _as_int(v) == bad[0])
                    raise DataError(
                        f"{where[position]}: {what} {bad[0]} is outside num_labels={spec.num_labels} "
                        f"(allowed 0..{spec.num_labels - 1})"
                    )
                names = tuple(str(i) for i in range(spec.num_labels))
            elif len(names) > spec.num_labels:
                raise DataError(
                    f"{what}: the data has {len(names)} labels {list(names)} but num_labels={spec.num_labels}"
                )
            else:
                names = names + tuple(f"LABEL_{i}" for i in range(len(names), spec.num_labels))
    elif spec.num_labels is not None and spec.num_labels != len(names):
        raise ValueError(f"num_labels={spec.num_labels} but {origin} name {len(names)} classes: {list(names)}")
    index = {name: i for i, name in enumerate(names)}
    ids = []
    for position, value in enumerate(values):
        key = value.strip() if isinstance(value, str) else value
        label = index.get(str(key)) if isinstance(key, (str, int, np.integer)) else None
        if label is None:
            as_int = _as_int(key)
            if as_int is not None and 0 <= as_int < len(names):
                label = as_int
        if label is None:
            raise DataError(
                f"{where[position]}: {what} {value!r} is not among {origin} {list(names)}"
                + (f" (ids 0..{len(names) - 1})" if names else "")
            )
        ids.append(label)
    return ids, names


# -- text classification --------------------------------------------------------------------------------------


def _text_columns(records: Records, options: DataOptions) -> tuple[str, str | None]:
    text = options.text_column
    if text is None:
        text = next((c for c in _TEXT_COLUMNS if c in records.columns), None)
        if text is None:
            raise DataError(
                f"{records.source}: no text column among {list(_TEXT_COLUMNS)}; the columns are "
                f"{list(records.columns)} (set text_column / --text-column)"
            )
    pair = options.text_pair_column
    if pair is None and text == "sentence1" and "sentence2" in records.columns:
        pair = "sentence2"
    records.require(text, *([pair] if pair else []))
    return text, pair


def _problem_type(values: list[Any], options: DataOptions, spec: _LabelSpec) -> str:
    if options.problem_type is not None:
        return options.problem_type
    if spec.labels_from is not None:
        return spec.labels_from.problem_type or "single_label_classification"
    if any(isinstance(v, (list, tuple)) for v in values) or options.label_separator is not None:
        return "multi_label_classification"
    if (
        spec.label_names is None
        and spec.num_labels in (None, 1)
        and values
        and all(_is_float(v) or _as_int(v) is not None for v in values)
        and any(_is_float(v) for v in values)
    ):
        return "regression"
    return "single_label_classification"


def _prepare_text_classification(
    records: Records, tokenizer: Any, options: DataOptions, length: int, spec: _LabelSpec, common: dict
) -> TaskDataset:
    text_column, pair_column = _text_columns(records, options)
    records.require(options.label_column)
    n = len(records)
    texts = [_text(records, i, text_column) for i in range(n)]
    pairs = [_text(records, i, pair_column) for i in range(n)] if pair_column else None
    values = [records.value(i, options.label_column) for i in range(n)]
    problem = _problem_type(values, options, spec)
    what = f"label (column {options.label_column!r})"
    names: tuple[str, ...] | None
    if problem == "regression":
        if spec.num_labels not in (None, 1):
            raise ValueError(f"regression predicts one value, so num_labels must be 1, got {spec.num_labels}")
        labels = np.empty(n, dtype=np.float32)
        for i, value in enumerate(values):
            try:
                labels[i] = float(value)
            except (TypeError, ValueError):
                raise DataError(f"{records.locations[i]}: regression {what} must be a number, got {value!r}") from None
        names = None
    elif problem == "multi_label_classification":
        lists = [
            _label_list(value, options.label_separator, records.locations[i], what) for i, value in enumerate(values)
        ]
        flat = [v for labels_of_row in lists for v in labels_of_row]
        flat_where = [records.locations[i] for i, labels_of_row in enumerate(lists) for _ in labels_of_row]
        declared = records.label_names_of(options.label_column)
        ids, names = _label_ids(flat, flat_where, spec, declared, what)
        labels = np.zeros((n, len(names)), dtype=np.float32)
        rows_of_flat = [i for i, labels_of_row in enumerate(lists) for _ in labels_of_row]
        labels[rows_of_flat, ids] = 1.0
    else:
        declared = records.label_names_of(options.label_column)
        ids, names = _label_ids(values, records.locations, spec, declared, what)
        labels = np.asarray(ids, dtype=np.int64)
    id_lists = _tokenize_in_chunks(tokenizer, texts, pairs, truncation=True, max_length=length)
    input_ids, lengths = _arrays(id_lists)
    return TaskDataset(
        task="text-classification",
        input_ids=input_ids,
        lengths=lengths,
        labels=labels,
        label_names=names,
        problem_type=problem,
        num_examples=n,
        **common,
    )


def _label_list(value: Any, separator: str | None, where: str, what: str) -> list[Any]:
    if isinstance(value, (list, tuple)):
        return list(value)
    if isinstance(value, str) and separator is not None:
        return [part.strip() for part in value.split(separator) if part.strip()]
    raise DataError(
        f"{where}: a multi-label {what} must be a list (JSON) or a string split by label_separator, got {value!r}"
        + ("" if separator else " (set label_separator / --label-separator for TSV/CSV files)")
    )


# -- token classification --------------------------------------------------------------------------------------


def _inside_of(names: tuple[str, ...]) -> np.ndarray:
    """``(num_labels,)``: the id of ``I-X`` for each ``B-X`` (itself for every other tag)."""
    index = {name: i for i, name in enumerate(names)}
    out = np.arange(len(names))
    for i, name in enumerate(names):
        if name.startswith("B-") and "I-" + name[2:] in index:
            out[i] = index["I-" + name[2:]]
    return out


def _prepare_token_classification(
    records: Records, tokenizer: Any, options: DataOptions, length: int, spec: _LabelSpec, common: dict
) -> TaskDataset:
    records.require(options.tokens_column, options.tags_column)
    words, tags, tag_where = [], [], []
    for i in range(len(records)):
        row_words = records.value(i, options.tokens_column)
        row_tags = records.value(i, options.tags_column)
        if not isinstance(row_words, (list, tuple)) or not row_words or not all(isinstance(w, str) for w in row_words):
            raise DataError(
                f"{records.locations[i]}: column {options.tokens_column!r} must be a non-empty list of words, "
                f"got {row_words!r}"
            )
        if not isinstance(row_tags, (list, tuple)) or len(row_tags) != len(row_words):
            raise DataError(
                f"{records.locations[i]}: column {options.tags_column!r} must hold one tag per word "
                f"({len(row_words)} words), got {row_tags!r}"
            )
        words.append(list(row_words))
        tags.extend(row_tags)
        tag_where.extend([records.locations[i]] * len(row_tags))
    declared = records.label_names_of(options.tags_column)
    flat_ids, names = _label_ids(tags, tag_where, spec, declared, f"tag (column {options.tags_column!r})")
    inside = _inside_of(names)
    input_ids, labels, first_pieces = [], [], []
    truncated = 0
    cursor = 0
    for _, chunk in iter_chunks(words, _TOKENIZE_CHUNK):
        encoded = tokenizer(list(chunk), is_split_into_words=True, truncation=True, max_length=length)
        for j, sentence in enumerate(chunk):
            word_ids = encoded.word_ids(j)
            tag_ids = flat_ids[cursor : cursor + len(sentence)]
            cursor += len(sentence)
            row_labels = np.full(len(word_ids), IGNORE_INDEX, dtype=np.int64)
            first = np.zeros(len(word_ids), dtype=bool)
            previous = None
            for position, word in enumerate(word_ids):
                if word is not None and word != previous:
                    row_labels[position] = tag_ids[word]
                    first[position] = True
                elif word is not None and options.label_all_tokens:
                    row_labels[position] = inside[tag_ids[word]]
                previous = word
            seen = [w for w in word_ids if w is not None]
            if (max(seen) + 1 if seen else 0) < len(sentence):
                truncated += 1
            input_ids.append(np.asarray(encoded["input_ids"][j], dtype=np.int32))
            labels.append(row_labels)
            first_pieces.append(first)
    if truncated:
        logger.warning(
            "%s: %d of %d sentences are longer than max_seq_length=%d tokens; their last words are cut (not trained "
            "on, not scored)",
            records.source,
            truncated,
            len(words),
            length,
        )
    return TaskDataset(
        task="token-classification",
        input_ids=input_ids,
        lengths=np.asarray([len(r) for r in input_ids], dtype=np.int64),
        labels=labels,
        label_names=names,
        first_piece=first_pieces,
        num_examples=len(words),
        **common,
    )


# -- question answering ----------------------------------------------------------------------------------------


def _answers(records: Records, i: int, column: str, context: str) -> tuple[list[str], list[int]]:
    value = records.value(i, column)
    where = records.locations[i]
    if isinstance(value, dict):
        texts, starts = value.get("text"), value.get("answer_start")
    elif isinstance(value, list):
        try:
            texts = [a["text"] for a in value]
            starts = [a["answer_start"] for a in value]
        except (KeyError, TypeError):
            texts = starts = None
    else:
        texts = starts = None
    if not isinstance(texts, (list, tuple)) or not isinstance(starts, (list, tuple)) or len(texts) != len(starts):
        raise DataError(
            f"{where}: column {column!r} must be {{'text': [...], 'answer_start': [...]}} (or a list of "
            f"{{'text', 'answer_start'}}), got {value!r}"
        )
    out_starts = []
    for text, start in zip(texts, starts):
        start_int = _as_int(start)
        if not isinstance(text, str) or start_int is None or not 0 <= start_int <= len(context) - len(text):
            raise DataError(
                f"{where}: answer {text!r} at answer_start={start!r} does not fit in its context of "
                f"{len(context)} characters"
            )
        if context[start_int : start_int + len(text)] != text:
            logger.debug("%s: answer %r differs from the context at %d", where, text, start_int)
        out_starts.append(start_int)
    return [str(t) for t in texts], out_starts


def _check_room(
    tokenizer: Any, records: Records, questions: list[str], contexts: list[str], length: int, stride: int
) -> None:
    """Each window holds the question, 3 special tokens and more than ``doc_stride`` context tokens."""
    question_lengths = [len(ids) for ids in _tokenize_in_chunks(tokenizer, questions, add_special_tokens=False)]
    unique = list(dict.fromkeys(contexts))
    context_length = dict(
        zip(unique, (len(ids) for ids in _tokenize_in_chunks(tokenizer, unique, add_special_tokens=False)))
    )
    for i, (q_len, context) in enumerate(zip(question_lengths, contexts)):
        room = length - q_len - 3
        if room < 1 or (context_length[context] > room and room <= stride):
            raise DataError(
                f"{records.locations[i]}: the question takes {q_len} tokens, leaving {room} of max_seq_length="
                f"{length} for the context, which must exceed doc_stride={stride}; raise max_seq_length or lower "
                "doc_stride"
            )


def _window_positions(
    offsets: list[tuple[int, int]], sequence_ids: np.ndarray, answer: tuple[int, int] | None
) -> tuple[int, int]:
    """Token start/end of the answer's characters ``[start, end)`` in one window; (0, 0) when not inside."""
    if answer is None:
        return 0, 0
    start_char, end_char = answer
    context = np.flatnonzero(sequence_ids == 1)
    if context.size == 0:
        return 0, 0
    first, last = int(context[0]), int(context[-1])
    if offsets[first][0] > start_char or offsets[last][1] < end_char:
        return 0, 0
    starts = np.array([offsets[t][0] for t in range(first, last + 1)])
    ends = np.array([offsets[t][1] for t in range(first, last + 1)])
    token_start = first + int(np.flatnonzero(starts <= start_char)[-1])
    token_end = first + int(np.flatnonzero(ends >= end_char)[0])
    return token_start, max(token_end, token_start)


def _prepare_question_answering(
    records: Records, tokenizer: Any, options: DataOptions, length: int, spec: _LabelSpec, common: dict
) -> TaskDataset:
    question_column = options.question_column or "question"
    context_column = options.context_column or "context"
    records.require(question_column, context_column, options.answers_column)
    stride = options.doc_stride
    if stride >= length:
        raise ValueError(f"doc_stride={stride} must be smaller than max_seq_length={length}")
    n = len(records)
    questions = [_text(records, i, question_column).lstrip() for i in range(n)]
    contexts = [_text(records, i, context_column) for i in range(n)]
    for i, (q, c) in enumerate(zip(questions, contexts)):
        if not q.strip() or not c.strip():
            raise DataError(f"{records.locations[i]}: the {'question' if not q.strip() else 'context'} is empty")
    ids = [
        str(records.rows[i].get(options.id_column, i)) if options.id_column in records.columns else str(i)
        for i in range(n)
    ]
    answers = [_answers(records, i, options.answers_column, contexts[i]) for i in range(n)]
    _check_room(tokenizer, records, questions, contexts, length, stride)
    input_ids, starts, ends, owners, offsets, sequence_ids, word_ids = [], [], [], [], [], [], []
    for chunk_start, chunk in iter_chunks(list(range(n)), _TOKENIZE_CHUNK):
        encoded = tokenizer(
            [questions[i] for i in chunk],
            [contexts[i] for i in chunk],
            truncation="only_second",
            max_length=length,
            stride=stride,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
        )
        for window, local in enumerate(encoded["overflow_to_sample_mapping"]):
            example = chunk_start + int(local)
            seq = np.array([-1 if s is None else s for s in encoded.sequence_ids(window)], dtype=np.int8)
            window_offsets = [tuple(map(int, o)) for o in encoded["offset_mapping"][window]]
            texts, answer_starts = answers[example]
            span = (answer_starts[0], answer_starts[0] + len(texts[0])) if texts else None
            s, e = _window_positions(window_offsets, seq, span)
            input_ids.append(np.asarray(encoded["input_ids"][window], dtype=np.int32))
            starts.append(s)
            ends.append(e)
            owners.append(example)
            offsets.append(window_offsets)
            sequence_ids.append(seq)
            word_ids.append(encoded.word_ids(window))
    features = QuestionAnsweringFeatures(
        example_ids=ids,
        contexts=contexts,
        answers=[texts for texts, _ in answers],
        example_of_row=np.asarray(owners, dtype=np.int64),
        offsets=offsets,
        sequence_ids=sequence_ids,
        word_ids=word_ids,
    )
    return TaskDataset(
        task="question-answering",
        input_ids=input_ids,
        lengths=np.asarray([len(r) for r in input_ids], dtype=np.int64),
        start_positions=np.asarray(starts, dtype=np.int64),
        end_positions=np.asarray(ends, dtype=np.int64),
        num_examples=n,
        qa=features,
        **common,
    )


# -- masked LM -------------------------------------------------------------------------------------------------


def _prepare_masked_lm(
    records: Records, tokenizer: Any, options: DataOptions, length: int, spec: _LabelSpec, common: dict
) -> TaskDataset:
    column = options.text_column or "text"
    records.require(column)
    texts = [_text(records, i, column) for i in range(len(records))]
    cls, sep = int(tokenizer.cls_token_id), int(tokenizer.sep_token_id)
    rows: list[list[int]] = []
    if options.line_by_line:
        body = length - 2
        for ids in _tokenize_in_chunks(tokenizer, texts, add_special_tokens=False):
            for start in range(0, len(ids), body):
                rows.append([cls, *ids[start : start + body], sep])
    else:
        stream = [token for ids in _tokenize_in_chunks(tokenizer, texts) for token in ids]
        rows = [stream[start : start + length] for start in range(0, len(stream), length)]
    special = set(tokenizer.all_special_ids)
    usable = [r for r in rows if not set(r) <= special]
    if not usable:
        raise DataError(f"{records.source}: the corpus has no usable tokens (nothing but special tokens)")
    if len(usable) < len(rows):
        logger.info("%s: %d rows of special tokens only left out", records.source, len(rows) - len(usable))
    masker = BertMasker.from_tokenizer(
        tokenizer,
        mlm_probability=options.mlm_probability,
        whole_word_mask=options.whole_word_mask,
        mask_replace_prob=options.mask_replace_prob,
        random_replace_prob=options.random_replace_prob,
    )
    input_ids, lengths = _arrays(usable)
    return TaskDataset(
        task="masked-lm",
        input_ids=input_ids,
        lengths=lengths,
        masker=masker,
        num_examples=len(records),
        **common,
    )


# -- multiple choice ------------------------------------------------------------------------------------------


def _prepare_multiple_choice(
    records: Records, tokenizer: Any, options: DataOptions, length: int, spec: _LabelSpec, common: dict
) -> TaskDataset:
    context_column = options.context_column or "sent1"
    question_column = options.question_column or ("sent2" if "sent2" in records.columns else None)
    records.require(context_column, options.label_column)
    if question_column:
        records.require(question_column)
    if options.choices_column:
        records.require(options.choices_column)
    else:
        records.require(*options.choice_columns)
    firsts, seconds, n_choices = [], [], None
    for i in range(len(records)):
        if options.choices_column:
            endings = records.value(i, options.choices_column)
            if not isinstance(endings, (list, tuple)) or not endings:
                raise DataError(
                    f"{records.locations[i]}: column {options.choices_column!r} must be a list of endings, got "
                    f"{endings!r}"
                )
        else:
            endings = [records.value(i, c) for c in options.choice_columns]
        if n_choices is None:
            n_choices = len(endings)
        if len(endings) != n_choices:
            raise DataError(f"{records.locations[i]}: {len(endings)} choices but the first example has {n_choices}")
        context = _text(records, i, context_column)
        prefix = _text(records, i, question_column) if question_column else ""
        for ending in endings:
            if not isinstance(ending, str):
                raise DataError(f"{records.locations[i]}: each ending must be text, got {ending!r}")
            firsts.append(context)
            seconds.append(f"{prefix} {ending}".strip())
    n_choices = int(n_choices or 0)
    label_values = [records.value(i, options.label_column) for i in range(len(records))]
    labels = []
    for i, value in enumerate(label_values):
        label = _as_int(value)
        if label is None or not 0 <= label < n_choices:
            raise DataError(
                f"{records.locations[i]}: label {value!r} (column {options.label_column!r}) must be the index of the "
                f"right choice, 0..{n_choices - 1}"
            )
        labels.append(label)
    id_lists = _tokenize_in_chunks(tokenizer, firsts, seconds, truncation=True, max_length=length)
    pad = common["pad_token_id"]
    input_ids, choice_lengths = [], []
    for start in range(0, len(id_lists), n_choices):
        group = id_lists[start : start + n_choices]
        widths = np.asarray([len(g) for g in group], dtype=np.int64)
        block = np.full((n_choices, int(widths.max())), pad, dtype=np.int32)
        for c, ids in enumerate(group):
            block[c, : len(ids)] = ids
        input_ids.append(block)
        choice_lengths.append(widths)
    return TaskDataset(
        task="multiple-choice",
        input_ids=input_ids,
        lengths=np.asarray([int(w.max()) for w in choice_lengths], dtype=np.int64),
        choice_lengths=choice_lengths,
        labels=np.asarray(labels, dtype=np.int64),
        num_examples=len(records),
        **common,
    )


def split_records(records: Records, fractions: Sequence[float]) -> list[Records]:
    """Cut ``records`` into contiguous blocks of the given fractions, in order; when the fractions sum to 1 the
    last block takes the rounding remainder (e.g. CoNLL sentences split into train / evaluation blocks)."""
    if not fractions or any(not 0 < f <= 1 for f in fractions) or sum(fractions) > 1 + 1e-9:
        raise ValueError(f"fractions must be in (0, 1] and sum to at most 1, got {list(fractions)}")
    counts = [math.floor(f * len(records)) for f in fractions]
    if math.isclose(sum(fractions), 1.0):
        counts[-1] = len(records) - sum(counts[:-1])
    if min(counts) == 0:
        raise ValueError(f"{len(records)} records split by {list(fractions)} leaves an empty block: {counts}")
    bounds = np.cumsum([0, *counts]).tolist()
    return [select_records(records, range(a, b)) for a, b in itertools.pairwise(bounds)]


def select_records(records: Records, indices: Sequence[int] | range) -> Records:
    """The records at ``indices`` (in that order), keeping their locations."""
    indices = list(indices)
    if not indices:
        raise ValueError("select_records needs at least one index")
    return Records(
        [records.rows[i] for i in indices],
        [records.locations[i] for i in indices],
        records.source,
        records.columns,
        records.features,
    )
