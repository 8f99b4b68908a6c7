"""Student initialisation: a shallower DistilBERT built from chosen layers of a DistilBERT or BERT teacher.

The student keeps the teacher's width, its embeddings, its head (the masked-LM projector, or a fine-tuned
classifier for task-specific distillation) and the teacher layers ``layers``, renumbered ``0, 1, ...`` in order.
Defaults: DistilBERT's own choice ``[0, 2, 4, 7, 9, 11]`` for a 12-layer teacher (Hugging Face's extraction
script), every other layer ``[0, 2, 4, ...]`` otherwise; ``layers="every_other"`` asks for the latter on any depth
(the BERT conversion's default for deep teachers, the paper's "one layer out of two").

A BERT teacher (keys ``bert.encoder.layer.N...`` or ``encoder.layer.N...``) goes through the exact BERT ->
DistilBERT mapping of :mod:`distilbert_mf.checkpoint.bert` (token type 0 folded into the position table, keys
renamed), which this module reuses rather than restating.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from distilbert_mf.checkpoint import prepare_state_dict, save_pretrained
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.conversion import infer_head

logger = logging.getLogger(__name__)

DISTILBERT_LAYERS = (0, 2, 4, 7, 9, 11)  # Hugging Face's extraction of DistilBERT from bert-base-uncased
LAYER_STRATEGIES = ("distilbert", "every_other")
_LAYER_KEY = re.compile(r"^((?:distilbert\.)?transformer\.layer\.)(\d+)\.(.+)$")


def bert_conversion() -> ModuleType:
    """The BERT -> DistilBERT conversion module (its key mapping, config mapping and checks)."""
    from distilbert_mf.checkpoint import bert

    return bert


def student_layers(n_teacher_layers: int, strategy: str = "distilbert") -> list[int]:
    """The teacher layers a student keeps: ``"distilbert"`` ([0, 2, 4, 7, 9, 11] for 12 layers, every other
    layer for any other depth) or ``"every_other"`` ([0, 2, 4, ...])."""
    if (
        isinstance(n_teacher_layers, bool)
        or not isinstance(n_teacher_layers, (int, np.integer))
        or n_teacher_layers < 1
    ):
        raise ValueError(f"the teacher must have at least one layer, got n_teacher_layers={n_teacher_layers!r}")
    if strategy not in LAYER_STRATEGIES:
        raise ValueError(f"layer strategy must be one of {LAYER_STRATEGIES} or a list of layers, got {strategy!r}")
    if strategy == "distilbert" and n_teacher_layers == len(DISTILBERT_LAYERS) * 2:
        return list(DISTILBERT_LAYERS)
    return list(range(0, int(n_teacher_layers), 2))


def resolve_layers(layers: Sequence[int] | str | None, n_teacher_layers: int) -> list[int]:
    """A checked list of teacher layers: None = ``"distilbert"``, a strategy name, or explicit indices
    (distinct, in ``[0, n_teacher_layers)``)."""
    if layers is None or isinstance(layers, str):
        return student_layers(n_teacher_layers, layers or "distilbert")
    return bert_conversion().check_layers(layers, int(n_teacher_layers))


def is_bert_state(state: Mapping[str, Any]) -> bool:
    """Whether ``state`` has BERT key names (``bert.encoder.layer.N`` / ``encoder.layer.N``)."""
    return any(k.startswith(("bert.", "encoder.layer.", "cls.predictions.")) for k in state)


@dataclass
class Student:
    """A student's weights (canonical names) and config, and the teacher layers it came from.

    Attributes:
        state: canonical arrays for ``head``.
        config: the teacher's config with ``n_layers = len(layers)``.
        head: ``base``, ``masked_lm``, ``sequence_classification``, ...
        layers: the teacher layer behind each student layer.
    """

    state: dict[str, np.ndarray] = field(repr=False)
    config: DistilBertConfig
    head: str
    layers: tuple[int, ...]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> list[Path]:
        """Write ``config.json`` + ``model.safetensors`` (any framework then loads it with ``from_pretrained``)."""
        return save_pretrained(directory, self.config, self.state, self.head)


def _teacher_config(teacher_config: DistilBertConfig | Mapping[str, Any]) -> DistilBertConfig:
    if isinstance(teacher_config, DistilBertConfig):
        return teacher_config
    if isinstance(teacher_config, Mapping):
        return DistilBertConfig.from_dict(teacher_config)
    raise TypeError(f"teacher_config must be a DistilBertConfig or a config dict, got {type(teacher_config).__name__}")


def _pick_layers(state: Mapping[str, np.ndarray], layers: list[int]) -> dict[str, np.ndarray]:
    renumber = {teacher: student for student, teacher in enumerate(layers)}
    out = {}
    for key, value in state.items():
        match = _LAYER_KEY.match(key)
        if match is None:
            out[key] = value
        elif int(match.group(2)) in renumber:
            out[f"{match.group(1)}{renumber[int(match.group(2))]}.{match.group(3)}"] = value
    return out


def init_student(
    teacher_state: Mapping[str, np.ndarray],
    teacher_config: DistilBertConfig | Mapping[str, Any],
    layers: Sequence[int] | str | None = None,
) -> Student:
    """Build a student from a teacher's weights.

    Args:
        teacher_state: canonical DistilBERT arrays (any head, with or without the ``distilbert.`` prefix) or a
            BERT state dict (``BertModel`` / ``BertForMaskedLM`` / ``BertForPreTraining`` keys).
        teacher_config: the teacher's :class:`~distilbert_mf.DistilBertConfig`, or its ``config.json`` dict (a
            BERT one for a BERT teacher).
        layers: teacher layers to keep, a strategy (``"distilbert"``, ``"every_other"``) or None (``"distilbert"``).

    Raises:
        ValueError / TypeError: a layer list that does not fit the teacher (out of range, repeated, empty,
            not integers), or a teacher whose weights do not match its config.
    """
    if is_bert_state(teacher_state):
        if not isinstance(teacher_config, Mapping):
            raise TypeError("a BERT teacher needs its config.json as a dict (model_type 'bert')")
        script = bert_conversion()
        n_teacher = int(teacher_config.get("num_hidden_layers", 0))
        chosen = resolve_layers(layers, n_teacher)
        config = script.bert_to_distilbert_config(dict(teacher_config), len(chosen))
        arrays, head = script.convert_state_dict(dict(teacher_state), config, chosen)
        if head == "masked_lm" and not script._tied_projector(arrays):
            config = config.replace(tie_word_embeddings=False)
    else:
        teacher = _teacher_config(teacher_config)
        chosen = resolve_layers(layers, teacher.n_layers)
        config = teacher.replace(n_layers=len(chosen))
        head = infer_head(teacher, dict(teacher_state))
        arrays = _pick_layers(teacher_state, chosen)
    arrays, report = prepare_state_dict(arrays, config, head, source="teacher")
    if report.missing:
        raise ValueError(f"the teacher lacks weights the student needs: {report.missing}")
    logger.info("student: %d layers from teacher layers %s (%s head)", len(chosen), chosen, head)
    return Student(arrays, config, head, tuple(chosen))


def init_student_from_pretrained(
    name_or_path: str | os.PathLike[str], layers: Sequence[int] | str | None = None, **hub: Any
) -> Student:
    """:func:`init_student` from a teacher folder / Hub id / built-in name (DistilBERT or BERT ``config.json``);
    ``hub`` are the resolution options (``revision``, ``cache_dir``, ``local_files_only``, ``token``)."""
    from distilbert_mf.checkpoint.hub import resolve_checkpoint
    from distilbert_mf.checkpoint.io import read_weights

    folder, fmt, files = resolve_checkpoint(name_or_path, **{k: v for k, v in hub.items() if v is not None})
    config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    state = read_weights(files, fmt)
    if config.get("model_type") == "bert":
        return init_student(state, config, layers)
    return init_student(state, DistilBertConfig.from_json_file(Path(folder) / "config.json"), layers)
