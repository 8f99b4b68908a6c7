"""What every pipeline shares: parameter checking, length-grouped batching and the numpy forward loop.

A task pipeline tokenizes its inputs into rows of token ids, hands them to :meth:`Pipeline.forward`, and
post-processes the numpy outputs. ``forward`` sorts the rows by length, pads each batch only to its own
longest row, runs the framework adapter (the only framework-specific step) and returns one output per row, in
the caller's order, with padding removed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, ClassVar

import numpy as np

from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 32
# rows handled per step when a pipeline is given a generator: results are yielded as each chunk finishes
STREAM_CHUNK = 1024

# outputs with one row per token (everything else has one row per sequence)
TOKEN_LEVEL_OUTPUTS = {
    "base": ("last_hidden_state",),
    "masked_lm": ("logits",),
    "token_classification": ("logits",),
    "question_answering": ("start_logits", "end_logits"),
    "sequence_classification": (),
    "multiple_choice": (),
}

_UNSET = object()


def check_batch_size(batch_size: Any) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    return int(batch_size)


def check_top_k(top_k: Any, *, allow_none: bool = False) -> int | None:
    if top_k is None and allow_none:
        return None
    if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)) or top_k < 1:
        allowed = "a positive integer" + (" or None (all)" if allow_none else "")
        raise ValueError(f"top_k must be {allowed}, got {top_k!r}")
    return int(top_k)


def softmax(logits: np.ndarray, axis: int = -1) -> np.ndarray:
    """Numerically stable softmax in float32 (float64 inputs stay float64)."""
    logits = np.asarray(logits)
    if logits.dtype not in (np.float32, np.float64):
        logits = logits.astype(np.float32)
    shifted = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return shifted / shifted.sum(axis=axis, keepdims=True)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(logits, dtype=np.float32)))


def is_stream(inputs: Any) -> bool:
    """True for generators and other one-shot iterators (not lists, tuples, strings or dicts)."""
    return isinstance(inputs, Iterator)


class Pipeline:
    """Base class of the task pipelines: call it with one input or a list of inputs.

    Subclasses set ``task``, ``head`` and ``parameters`` (every keyword the task accepts, with its default),
    and implement ``__call__``. Task parameters given to the constructor become defaults for every call; a
    call's keywords override them for that call only.
    """

    task: ClassVar[str] = ""
    head: ClassVar[str] = ""
    parameters: ClassVar[dict[str, Any]] = {}
    _common: ClassVar[dict[str, Any]] = {"batch_size": _UNSET, "progress": _UNSET}

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        batch_size: int = DEFAULT_BATCH_SIZE,
        progress: bool = False,
        **task_defaults: Any,
    ) -> None:
        from distilbert_mf.pipelines.frameworks import ModelAdapter

        if not isinstance(model, ModelAdapter):
            raise TypeError(f"{type(self).__name__} needs a ModelAdapter, got {type(model).__name__}; use pipeline()")
        if model.head != self.head:
            raise ValueError(f"the {self.task} pipeline needs a {self.head} model, got a {model.head} model")
        self.adapter = model
        self.tokenizer = tokenizer
        self.batch_size = check_batch_size(batch_size)
        self.progress = bool(progress)
        self._defaults = self._check_parameters(task_defaults)

    # -- parameters --------------------------------------------------------------------------------------
    @property
    def model(self) -> Any:
        """The framework model object (torch ``nn.Module``, Keras model or NNX module)."""
        return self.adapter.model

    @property
    def config(self) -> DistilBertConfig:
        return self.adapter.config

    @property
    def framework(self) -> str:
        """``"pt"``, ``"tf"`` or ``"flax"``."""
        return self.adapter.framework

    @classmethod
    def check_names(cls, params: dict[str, Any]) -> None:
        """Raise ``TypeError`` naming every keyword the task does not accept."""
        unknown = sorted(set(params) - set(cls.parameters) - set(cls._common))
        if unknown:
            raise TypeError(
                f"{cls.task} pipeline got unexpected keyword argument(s) {unknown}; it accepts "
                f"{sorted(set(cls.parameters) | set(cls._common))}"
            )

    def _check_parameters(self, params: dict[str, Any]) -> dict[str, Any]:
        self.check_names(params)
        checked = dict(params)
        if "batch_size" in checked:
            checked["batch_size"] = check_batch_size(checked["batch_size"])
        self._validate(checked)
        return checked

    def _validate(self, params: dict[str, Any]) -> None:
        """Check the values of task parameters (subclasses raise ValueError/TypeError naming the value)."""

    def _resolve(self, call_params: dict[str, Any]) -> dict[str, Any]:
        """Defaults < constructor parameters < call parameters."""
        merged = {**self.parameters, **self._defaults, **self._check_parameters(call_params)}
        merged.setdefault("batch_size", self.batch_size)
        merged.setdefault("progress", self.progress)
        self._check_combination(merged)
        return merged

    def _check_combination(self, options: dict[str, Any]) -> None:
        """Check (and normalise in place) the merged options of one call, where parameters interact."""

    def _explicit(self, name: str, call_params: dict[str, Any]) -> bool:
        """Whether parameter ``name`` was given to this call or to the constructor."""
        return name in call_params or name in self._defaults

    # -- tokens --------------------------------------------------------------------------------------------
    @property
    def max_length(self) -> int:
        """The longest row the model takes: the tokenizer's and the position table's limits."""
        limit = self.config.max_position_embeddings
        tokenizer_limit = getattr(self.tokenizer, "model_max_length", None)
        if isinstance(tokenizer_limit, (int, np.integer)) and 0 < tokenizer_limit < limit:
            limit = int(tokenizer_limit)
        return limit

    @property
    def pad_token_id(self) -> int:
        pad = getattr(self.tokenizer, "pad_token_id", None)
        if pad is None:
            pad = self.config.pad_token_id or 0
        return int(pad)

    # -- the forward loop ------------------------------------------------------------------------------------
    def forward(
        self,
        rows: Sequence[Sequence[int]],
        *,
        batch_size: int,
        progress: bool | ProgressShare = False,
        reduce: Callable[[int, dict[str, np.ndarray]], Any] | None = None,
    ) -> list[Any]:
        """Run the model on ``rows`` of token ids; returns one output dict per row, in the order given.

        Rows are sorted by length (longest first) and cut into batches of ``batch_size``; each batch is padded
        to its longest row only (rounded up to the adapter's ``pad_to_multiple_of``). Per-token outputs are
        trimmed back to the row's length: ``logits`` (seq, labels) / (seq, vocab), ``start_logits`` (seq,),
        ``last_hidden_state`` (seq, dim); per-sequence outputs are ``logits`` (labels,).
        ``reduce(index, outputs)``, when given, replaces each row's outputs (e.g. to keep only what the
        post-processing needs) before the next batch runs.
        """
        count = len(rows)
        if count == 0:
            return []
        lengths = np.fromiter((len(row) for row in rows), dtype=np.int64, count=count)
        if lengths.min() == 0:
            raise ValueError("a tokenized input is empty (0 tokens); the tokenizer must add [CLS] and [SEP]")
        order = np.argsort(-lengths, kind="stable")
        token_level = TOKEN_LEVEL_OUTPUTS[self.head]
        multiple = max(1, int(self.adapter.pad_to_multiple_of))
        results: list[Any] = [None] * count
        bar = _progress_bar(progress, count, self.task)
        try:
            for begin in range(0, count, batch_size):
                index = order[begin : begin + batch_size]
                width = int(lengths[index[0]])
                width = min(-(-width // multiple) * multiple, max(width, self.config.max_position_embeddings))
                input_ids = np.full((len(index), width), self.pad_token_id, dtype=np.int64)
                attention_mask = np.zeros((len(index), width), dtype=np.int64)
                for row, i in enumerate(index):
                    input_ids[row, : lengths[i]] = rows[i]
                    attention_mask[row, : lengths[i]] = 1
                outputs = self.adapter.forward(input_ids, attention_mask)  # (batch, width, ...) / (batch, ...)
                for row, i in enumerate(index):
                    one = {
                        name: (value[row, : lengths[i]] if name in token_level else value[row])
                        for name, value in outputs.items()
                    }
                    results[i] = reduce(int(i), one) if reduce is not None else one
                bar.update(len(index))
        finally:
            bar.close()
        return results

    def each(self, inputs: Sequence[Any], **params: Any) -> list[Any]:
        """One result per input, each exactly what calling the pipeline on that input alone returns; the inputs
        still share length-grouped batches. (Calling with a list can shape results differently, as transformers.)"""
        raise NotImplementedError

    def _stream(self, inputs: Iterable[Any], call: Callable[[list[Any]], list[Any]]) -> Iterator[Any]:
        """Consume a generator in chunks of ``STREAM_CHUNK`` inputs, yielding one result per input in order."""
        chunk: list[Any] = []
        for item in inputs:
            chunk.append(item)
            if len(chunk) == STREAM_CHUNK:
                yield from call(chunk)
                chunk = []
        if chunk:
            yield from call(chunk)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(task={self.task!r}, framework={self.framework!r}, "
            f"model={type(self.model).__name__}, batch_size={self.batch_size})"
        )


class ProgressShare:
    """A share of a progress bar the caller owns: one pipeline call advances ``bar`` by ``amount`` in all.

    Pass it as ``progress=`` to a call to show one bar over many calls (the command line's ``run --progress``
    counts input lines this way). The call spreads ``amount`` over the model rows it runs, however many rows an
    input takes (question-answering windows, zero-shot label pairs), and never closes ``bar``. ``bar`` is anything
    with ``update(n)``, such as a ``tqdm`` instance.
    """

    def __init__(self, bar: Any, amount: int) -> None:
        if isinstance(amount, bool) or not isinstance(amount, (int, np.integer)) or amount < 0:
            raise ValueError(f"amount must be a non-negative integer, got {amount!r}")
        self.bar = bar
        self.amount = int(amount)
        self._rows = 0
        self._done = 0
        self._given = 0

    def start(self, rows: int) -> ProgressShare:
        """Called by the pipeline with the number of model rows the call runs."""
        self._rows, self._done = int(rows), 0
        return self

    def update(self, rows: int) -> None:
        """``rows`` more rows are done: advance the bar by their share of ``amount`` (whole steps only)."""
        self._done += int(rows)
        target = self.amount if self._done >= self._rows else self.amount * self._done // max(self._rows, 1)
        if target > self._given:
            self.bar.update(target - self._given)
            self._given = target

    def finish(self) -> None:
        """The call is over: advance the bar to the whole ``amount`` (a call that ran no rows advanced nothing)."""
        if self.amount > self._given:
            self.bar.update(self.amount - self._given)
            self._given = self.amount

    def close(self) -> None:
        """The caller's bar stays open."""


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress_bar(progress: Any, total: int, task: str) -> Any:
    """``progress``: False (no bar), True (a tqdm bar of ``total`` rows on stderr) or a :class:`ProgressShare`."""
    if isinstance(progress, ProgressShare):
        return progress.start(total)
    if not progress:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=task, unit="seq")


def tokens_to_string(tokenizer: Any, tokens: Sequence[str]) -> str:
    """Join WordPiece tokens into text (``##`` pieces glued to the previous token), as the tokenizer does."""
    join = getattr(tokenizer, "convert_tokens_to_string", None)
    if join is not None:
        return join(list(tokens))
    return " ".join(tokens).replace(" ##", "").strip()


def as_text(value: Any, what: str) -> str:
    if not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}: {value!r}")
    return value
