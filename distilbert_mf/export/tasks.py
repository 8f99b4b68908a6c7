"""Export tasks: which head each task exports and how its inputs and outputs are named.

Names follow Hugging Face optimum's ONNX export of DistilBERT, so a serving stack written for optimum's artifacts
reads ours: inputs ``input_ids`` / ``attention_mask`` with axes ``batch_size`` and ``sequence_length`` (plus
``num_choices`` for multiple choice), outputs ``last_hidden_state``, ``logits`` or ``start_logits`` /
``end_logits``.
"""

from __future__ import annotations

from dataclasses import dataclass

from distilbert_mf.checkpoint.names import ARCHITECTURES, HEADS

BATCH, CHOICES, SEQUENCE = "batch_size", "num_choices", "sequence_length"
INPUT_NAMES = ("input_ids", "attention_mask")


@dataclass(frozen=True)
class ExportTask:
    """One task: the head it exports and its outputs with their axes (a name for a dynamic axis, an int for a
    fixed one, ``None`` for a size fixed by the config, such as the number of labels)."""

    name: str
    head: str
    outputs: dict[str, tuple[str | None, ...]]

    @property
    def input_axes(self) -> tuple[str, ...]:
        """(batch_size, sequence_length); multiple choice: (batch_size, num_choices, sequence_length)."""
        return (BATCH, CHOICES, SEQUENCE) if self.head == "multiple_choice" else (BATCH, SEQUENCE)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.outputs)

    @property
    def architecture(self) -> str:
        return ARCHITECTURES[self.head]


TASKS: dict[str, ExportTask] = {
    task.name: task
    for task in (
        ExportTask("feature-extraction", "base", {"last_hidden_state": (BATCH, SEQUENCE, None)}),
        ExportTask("fill-mask", "masked_lm", {"logits": (BATCH, SEQUENCE, None)}),
        ExportTask("text-classification", "sequence_classification", {"logits": (BATCH, None)}),
        ExportTask("multiple-choice", "multiple_choice", {"logits": (BATCH, CHOICES)}),
        ExportTask("token-classification", "token_classification", {"logits": (BATCH, SEQUENCE, None)}),
        ExportTask(
            "question-answering",
            "question_answering",
            {"start_logits": (BATCH, SEQUENCE), "end_logits": (BATCH, SEQUENCE)},
        ),
    )
}
TASK_OF_HEAD = {task.head: task for task in TASKS.values()}
# other spellings users reach for: pipeline aliases and the head names themselves
ALIASES = {
    "sentiment-analysis": "text-classification",
    "sequence-classification": "text-classification",
    "ner": "token-classification",
    "masked-lm": "fill-mask",
    "default": "feature-extraction",
    **{head: TASK_OF_HEAD[head].name for head in HEADS},
}
# pipeline tasks that are pre- and post-processing around another task's model
NOT_EXPORT_TASKS = {
    "zero-shot-classification": "its model is a text-classification (NLI) model: export it with "
    "--task text-classification and apply the candidate labels around the artifact",
}


def resolve_task(task: str) -> ExportTask:
    """``task`` (an optimum task name, a pipeline alias or a head name) -> its :class:`ExportTask`."""
    if not isinstance(task, str):
        raise TypeError(f"task must be a string such as 'text-classification', got {type(task).__name__}")
    key = ALIASES.get(task.strip().lower(), task.strip().lower())  # head names keep their underscores
    key = ALIASES.get(key.replace("_", "-"), key.replace("_", "-"))
    if key in TASKS:
        return TASKS[key]
    if key in NOT_EXPORT_TASKS:
        raise ValueError(f"{task!r} is not an export task: {NOT_EXPORT_TASKS[key]}")
    raise ValueError(f"unknown export task {task!r}; choose one of {', '.join(TASKS)}")


def task_of_head(head: str) -> ExportTask:
    """The task that exports ``head`` (ValueError for a head without one)."""
    task = TASK_OF_HEAD.get(head)
    if task is None:
        raise ValueError(
            f"head {head!r} has no export task; exportable heads: "
            + ", ".join(f"{t.head} ({t.name})" for t in TASKS.values())
        )
    return task


__all__ = ["INPUT_NAMES", "TASKS", "ExportTask", "resolve_task", "task_of_head"]
