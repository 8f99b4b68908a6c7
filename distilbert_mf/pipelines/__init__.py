"""Task pipelines over any of the three frameworks: ``pipeline(task, model)`` then call it on text.

Pre- and post-processing are numpy, written once; the framework adapter (``frameworks.py``) only runs the forward
pass, so PyTorch, TensorFlow and Flax give the same answers. Tasks and outputs follow transformers' pipelines.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

from distilbert_mf.checkpoint.names import HEAD_OF_ARCHITECTURE
from distilbert_mf.frameworks import normalize_framework
from distilbert_mf.models import DEFAULT_SENTENCE_EMBEDDING_MODEL, DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path
from distilbert_mf.pipelines.base import DEFAULT_BATCH_SIZE, Pipeline, ProgressShare
from distilbert_mf.pipelines.feature_extraction import FeatureExtractionPipeline
from distilbert_mf.pipelines.fill_mask import FillMaskPipeline
from distilbert_mf.pipelines.frameworks import (
    FRAMEWORKS,
    ModelAdapter,
    available_frameworks,
    installed_framework_of,
    load_model,
    resolve_framework,
    wrap_model,
)
from distilbert_mf.pipelines.question_answering import QuestionAnsweringPipeline
from distilbert_mf.pipelines.text_classification import TextClassificationPipeline
from distilbert_mf.pipelines.token_classification import TokenClassificationPipeline
from distilbert_mf.pipelines.zero_shot_classification import ZeroShotClassificationPipeline

logger = logging.getLogger(__name__)

TASKS: dict[str, type[Pipeline]] = {
    "text-classification": TextClassificationPipeline,
    "fill-mask": FillMaskPipeline,
    "token-classification": TokenClassificationPipeline,
    "question-answering": QuestionAnsweringPipeline,
    "feature-extraction": FeatureExtractionPipeline,
    "zero-shot-classification": ZeroShotClassificationPipeline,
}
TASK_ALIASES = {"sentiment-analysis": "text-classification", "ner": "token-classification"}
# the task a checkpoint's head serves when pipeline() is given a model but no task
TASK_OF_HEAD = {
    "sequence_classification": "text-classification",
    "masked_lm": "fill-mask",
    "token_classification": "token-classification",
    "question_answering": "question-answering",
    "base": "feature-extraction",
}

__all__ = [
    "DEFAULT_MODELS",
    "FRAMEWORKS",
    "TASKS",
    "TASK_ALIASES",
    "FeatureExtractionPipeline",
    "FillMaskPipeline",
    "ModelAdapter",
    "NoDefaultModelError",
    "Pipeline",
    "ProgressShare",
    "QuestionAnsweringPipeline",
    "TextClassificationPipeline",
    "TokenClassificationPipeline",
    "UnknownTaskError",
    "ZeroShotClassificationPipeline",
    "available_frameworks",
    "default_model",
    "pipeline",
    "resolve_task",
]


# the model pipeline(task) loads when it is given none (docs/default-model.md). Where transformers' own default is a
# DistilBERT, the same Hub model; fill-mask: distilbert-base-uncased itself; text-classification: the embedded model
DEFAULT_MODELS: dict[str, str] = {
    "text-classification": DEFAULT_TEXT_CLASSIFICATION_MODEL,
    "fill-mask": "distilbert/distilbert-base-uncased",
    "question-answering": "distilbert/distilbert-base-cased-distilled-squad",
    "feature-extraction": "distilbert/distilbert-base-cased",
}
# feature-extraction asked for sentence embeddings (pooling= given to pipeline()): the embedded sentence model
SENTENCE_EMBEDDING_TASK = "feature-extraction"
# tasks without a default: transformers' default is not a DistilBERT; what the error suggests instead
NO_DEFAULT = {
    "token-classification": (
        "dbmdz/bert-large-cased-finetuned-conll03-english, a BERT-large",
        "dslim/distilbert-NER",
        "a DistilBERT fine-tuned on CoNLL-2003 (PER, ORG, LOC, MISC)",
    ),
    "zero-shot-classification": (
        "facebook/bart-large-mnli, a BART",
        None,
        "a DistilBERT fine-tuned on an NLI data set such as MNLI, whose labels name entailment and contradiction",
    ),
}


class NoDefaultModelError(ValueError):
    """``pipeline(task)`` was given no model and ``task`` has no default here. ``cli_message`` names ``--model``."""

    def __init__(self, message: str, cli_message: str) -> None:
        super().__init__(message)
        self.cli_message = cli_message


class UnknownTaskError(KeyError):
    """``pipeline()`` was given a task name it does not know."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def resolve_task(task: str) -> str:
    """The canonical task name (aliases sentiment-analysis and ner accepted)."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string, got {type(task).__name__}")
    name = TASK_ALIASES.get(task, task)
    if name not in TASKS:
        raise UnknownTaskError(
            f"unknown task {task!r}; available tasks: {sorted(TASKS)} (aliases: {sorted(TASK_ALIASES)})"
        )
    return name


def pipeline(
    task: str | None = None,
    model: Any = None,
    *,
    framework: str | None = None,
    device: Any = None,
    dtype: Any = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    tokenizer: Any = None,
    progress: bool = False,
    revision: str | None = None,
    token: str | bool | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    model_kwargs: dict[str, Any] | None = None,
    **task_defaults: Any,
) -> Pipeline:
    """Build the pipeline for ``task`` (or for the task of ``model``'s head when ``task`` is None).

    Args:
        task: "text-classification" (alias "sentiment-analysis"), "fill-mask", "token-classification" (alias
            "ner"), "question-answering", "feature-extraction" or "zero-shot-classification".
        model: a folder, a Hub repo id, a built-in short name, or a model instance of any framework (the framework
            is then read from it). Omitted: the task's default (:func:`default_model`, :data:`DEFAULT_MODELS`).
        framework: "pt", "tf" or "flax"; None picks the first installed, in that order.
        device: None (framework default), -1/"cpu", a GPU index such as 0, "cuda:1", "gpu:0", "mps" or a
            ``torch.device``. A GPU that is not there is an error, never a silent fallback to the CPU.
        dtype: None (float32), "auto" (the checkpoint's dtype), "float32", "bfloat16", "float16" or a framework
            dtype (also accepted as ``torch_dtype=``). float16 on a CPU logs a warning: use bfloat16 there.
        batch_size: inputs per forward pass; inputs are grouped by length so batches carry little padding.
        tokenizer: a folder/repo id/short name or a tokenizer object; None loads the model's own.
        progress: show a tqdm progress bar over the inputs (a call may pass a :class:`ProgressShare` instead).
        revision: Hub revision, passed to ``from_pretrained`` (so are the next three).
        token: Hub token.
        cache_dir: Hub cache folder.
        local_files_only: never download.
        model_kwargs: config overrides passed to ``from_pretrained``.
        task_defaults: the task's parameters (``top_k``, ``aggregation_strategy``, ``doc_stride``, ...), used as
            defaults by every call. Unknown names raise ``TypeError``.
    """
    if "torch_dtype" in task_defaults:
        if dtype is not None:
            raise TypeError("pass dtype= or torch_dtype= (its alias), not both")
        dtype = task_defaults.pop("torch_dtype")
    if task is None:
        if model is None:
            raise TypeError("pipeline() needs a task, a model, or both")
        task = _task_of(model)
    task = resolve_task(task)
    cls = TASKS[task]
    cls.check_names(task_defaults)  # before any (slow) loading
    if model is None:
        model = default_model(task, pooling=task_defaults.get("pooling"))
        if builtin_path(model) is not None:
            logger.info("no model was given: the %s pipeline uses the embedded %r", task, model)
        else:
            logger.warning(
                "No model was given: the %s pipeline uses its default, %r from the Hugging Face Hub; name a model "
                "to be sure of what runs",
                task,
                model,
            )
    load_kwargs = {"revision": revision, "token": token, "cache_dir": cache_dir, "local_files_only": local_files_only}
    if isinstance(model, (str, os.PathLike)):
        adapter = load_model(
            resolve_framework(framework),
            cls.head,
            model,
            device=device,
            dtype=dtype,
            **{k: v for k, v in load_kwargs.items() if v not in (None, False)},
            **(model_kwargs or {}),
        )
        if tokenizer is None:
            tokenizer = model
    else:
        adapter = _wrap(model, framework, device, dtype, model_kwargs)
        if tokenizer is None:
            tokenizer = _tokenizer_source(model)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = _load_tokenizer(
            tokenizer, revision=revision, token=token, cache_dir=cache_dir, local_files_only=local_files_only
        )
    if adapter.head != cls.head:
        raise ValueError(
            f"the {task} pipeline needs a {cls.head} model (e.g. {_class_hint(adapter.framework, cls.head)}), "
            f"got {type(adapter.model).__name__}"
        )
    return cls(adapter, tokenizer, batch_size=batch_size, progress=progress, **task_defaults)


def default_model(task: str, *, pooling: Any = None) -> str:
    """The model ``pipeline(task)`` loads when given none; raises :class:`NoDefaultModelError` where there is none.

    feature-extraction with ``pooling`` (sentence embeddings) uses the embedded all-MiniLM-L6-v2 conversion, without
    it transformers' default, ``distilbert/distilbert-base-cased``. text-classification uses the embedded SST-2 model.
    """
    task = resolve_task(task)
    if task == SENTENCE_EMBEDDING_TASK and pooling is not None:
        name = DEFAULT_SENTENCE_EMBEDDING_MODEL
    elif task in NO_DEFAULT:
        theirs, example, what = NO_DEFAULT[task]
        text = (
            f"the {task} pipeline has no default model: transformers' default ({theirs}) is not a DistilBERT; "
            f"pass {{flag}}<folder, Hub repo id or short name> of {what}"
        )
        raise NoDefaultModelError(
            text.format(flag="model=") + (f", e.g. model={example!r}" if example else ""),
            text.format(flag="--model ") + (f", e.g. --model {example}" if example else ""),
        )
    else:
        name = DEFAULT_MODELS[task]
    if name in (DEFAULT_TEXT_CLASSIFICATION_MODEL, DEFAULT_SENTENCE_EMBEDDING_MODEL) and builtin_path(name) is None:
        text = (
            f"{task} has no default model in this installation (the packaged {name!r} is missing): pass "
            "{flag}<folder, Hub repo id or short name>"
        )
        example = "distilbert/distilbert-base-uncased-finetuned-sst-2-english"
        raise NoDefaultModelError(
            text.format(flag="model=") + f", e.g. model={example!r}",
            text.format(flag="--model ") + f", e.g. --model {example}",
        )
    return name


def _task_of(model: Any) -> str:
    """The task served by a model instance's head, or by the architecture in a checkpoint's config.json."""
    head = getattr(type(model), "head", None)
    if head is None and isinstance(model, (str, os.PathLike)):
        config_file = (builtin_path(model) or Path(model)) / "config.json"
        if config_file.is_file():
            with open(config_file, encoding="utf-8") as handle:
                architectures = json.load(handle).get("architectures") or []
            head = next(
                (
                    HEAD_OF_ARCHITECTURE[a.removeprefix("TF").removeprefix("Flax")]
                    for a in architectures
                    if a.removeprefix("TF").removeprefix("Flax") in HEAD_OF_ARCHITECTURE
                ),
                None,
            )
    if head not in TASK_OF_HEAD:
        raise ValueError(f"cannot tell which task {model!r} serves; pass task= (one of {sorted(TASKS)})")
    return TASK_OF_HEAD[head]


def _wrap(model: Any, framework: str | None, device: Any, dtype: Any, model_kwargs: Any) -> ModelAdapter:
    if dtype is not None or model_kwargs:
        raise ValueError(
            "dtype and model_kwargs apply when pipeline() loads the model; the model given is already built: cast "
            "or configure it before passing it"
        )
    if isinstance(model, ModelAdapter):
        return model
    found = installed_framework_of(model)
    if found is not None and framework is not None and normalize_framework(framework) != found:
        raise ValueError(f"framework={framework!r} but the model given is a {found} model ({type(model).__name__})")
    return wrap_model(model, device=device)


def _tokenizer_source(model: Any) -> str:
    source = getattr(model, "name_or_path", None) or getattr(getattr(model, "config", None), "extra", {}).get(
        "_name_or_path"
    )
    if source and (Path(str(source)).is_dir()):
        return str(source)
    raise ValueError(
        f"pipeline() cannot tell which tokenizer goes with the {type(model).__name__} instance given: pass "
        "tokenizer=<folder, Hub repo id, short name or tokenizer object>"
    )


def _load_tokenizer(source: str | os.PathLike[str], **kwargs: Any) -> Any:
    from distilbert_mf.tokenization import DistilBertTokenizerFast

    kwargs = {k: v for k, v in kwargs.items() if v not in (None, False)}
    return DistilBertTokenizerFast.from_pretrained(source, **kwargs)


def _class_hint(framework: str, head: str) -> str:
    from distilbert_mf.checkpoint.names import ARCHITECTURES

    return {"tf": "TF", "flax": "Flax"}.get(framework, "") + ARCHITECTURES[head]
