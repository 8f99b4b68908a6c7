"""Tiny models and learnable toy data for the fine-tuning tests (every framework's loop can use them).

:func:`make_tiny_model` writes a model folder without any framework (numpy weights through the neutral checkpoint
writer, a word-level vocabulary, our tokenizer files); :func:`toy_data` writes a small, learnable train / validation
pair for each task; :func:`tiny_args` builds :class:`TrainingArguments` for them with dropout off.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf import DistilBertConfig, DistilBertTokenizerFast
from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.checkpoint.names import expected_shapes
from distilbert_mf.training import canonical_task
from distilbert_mf.training.trainer import TrainingArguments

POSITIVE = ("good", "great", "fine", "nice", "happy", "sunny")
NEGATIVE = ("bad", "awful", "sad", "poor", "ugly", "rainy")
NAMES = ("alice", "bob", "carol", "dave")
COLORS = ("red", "blue", "green", "black")
FILLER = (
    "the",
    "a",
    "day",
    "was",
    "is",
    "and",
    "very",
    "it",
    "what",
    "color",
    "of",
    "sky",
    "who",
    "met",
    "right",
    "wrong",
)
SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
VOCAB = (*SPECIALS, *POSITIVE, *NEGATIVE, *NAMES, *COLORS, *FILLER, "?", ".")
TASKS = ("text-classification", "token-classification", "question-answering", "masked-lm", "multiple-choice")
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}


def tiny_config(**overrides: Any) -> DistilBertConfig:
    """Odd sizes, two layers, the toy vocabulary."""
    fields = {
        "vocab_size": len(VOCAB),
        "dim": 32,
        "n_heads": 4,
        "hidden_dim": 37,
        "n_layers": 2,
        "max_position_embeddings": 64,
    }
    return DistilBertConfig(**{**fields, **overrides})


def make_tiny_model(folder: Path, *, head: str = "base", seed: int = 0, **config_overrides: Any) -> Path:
    """A model folder (config.json, model.safetensors of ``head``, tokenizer files) written without a framework."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    config = tiny_config(**config_overrides)
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in expected_shapes(config, head).items():
        if key.endswith("vocab_projector.weight"):
            continue  # tied to the word embeddings
        if key.endswith(".bias"):
            arrays[key] = np.zeros(shape, np.float32)
        elif "layer_norm" in key.lower() and key.endswith(".weight"):
            arrays[key] = np.ones(shape, np.float32)
        else:
            arrays[key] = rng.normal(0.0, 0.05, size=shape).astype(np.float32)
    save_pretrained(folder, config, arrays, head)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    DistilBertTokenizerFast(vocab).save_pretrained(folder)
    return folder


def _text_classification(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        label = i % 2
        words = [rng.choice(POSITIVE if label else NEGATIVE) for _ in range(rng.randint(2, 6))]
        words.insert(rng.randint(0, len(words)), rng.choice(FILLER[:8]))
        rows.append({"sentence": " ".join(words), "label": "pos" if label else "neg"})
    return rows


def _token_classification(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        tokens, tags = [], []
        for _ in range(rng.randint(3, 8)):
            if rng.random() < 0.3:
                tokens.append(rng.choice(NAMES))
                tags.append("B-PER")
            else:
                tokens.append(rng.choice((*FILLER[:8], *POSITIVE)))
                tags.append("O")
        rows.append({"tokens": tokens, "ner_tags": tags})
    return rows


def _question_answering(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for i in range(n):
        color = rng.choice(COLORS)
        before = " ".join(rng.choice(FILLER[:8]) for _ in range(rng.randint(0, 4)))
        context = f"{before} the sky is {color} and the day was {rng.choice(POSITIVE)} .".strip()
        start = context.index(f"is {color}") + 3
        rows.append(
            {
                "id": f"q{i}",
                "question": "what color is the sky ?",
                "context": context,
                "answers": {"text": [color], "answer_start": [start]},
            }
        )
    return rows


def _masked_lm(rng: random.Random, n: int) -> list[dict[str, Any]]:
    return [{"text": " ".join(["the", "day", "was", rng.choice(POSITIVE), "and", "sunny"])} for _ in range(n)]


def _multiple_choice(rng: random.Random, n: int) -> list[dict[str, Any]]:
    rows = []
    for _ in range(n):
        label = rng.randrange(4)
        endings = [("it was right ." if c == label else f"it was {rng.choice(NEGATIVE)} wrong .") for c in range(4)]
        row = {"sent1": f"{rng.choice(NAMES)} met {rng.choice(NAMES)}", "sent2": "and", "label": label}
        row.update({f"ending{c}": endings[c] for c in range(4)})
        rows.append(row)
    return rows


_BUILDERS = {
    "text-classification": _text_classification,
    "token-classification": _token_classification,
    "question-answering": _question_answering,
    "masked-lm": _masked_lm,
    "multiple-choice": _multiple_choice,
}


def toy_data(folder: Path, task: str, *, n_train: int = 48, n_eval: int = 16, seed: int = 0) -> tuple[Path, Path]:
    """``train.jsonl`` and ``dev.jsonl`` of a learnable toy problem for ``task`` in ``folder``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    paths = []
    for name, n in (("train", n_train), ("dev", n_eval)):
        path = folder / f"{task}-{name}.jsonl"
        rows = _BUILDERS[task](rng, n)
        path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
        paths.append(path)
    return paths[0], paths[1]


def tiny_args(
    model: Path, data: tuple[Path, Path | None], output_dir: Path, task: str, **kwargs: Any
) -> TrainingArguments:
    """Arguments for a short run of the toy ``task`` with dropout off (``kwargs`` override)."""
    train_file, validation_file = data
    fields: dict[str, Any] = {
        "output_dir": str(output_dir),
        "task": task,
        "model": str(model),
        "train_file": str(train_file),
        "validation_file": None if validation_file is None else str(validation_file),
        "max_steps": 6,
        "per_device_train_batch_size": 8,
        "per_device_eval_batch_size": 8,
        "learning_rate": 2e-3,
        "logging_steps": 1,
        "save_steps": 3,
        "max_seq_length": 32,
        "config_overrides": dict(NO_DROPOUT),
        "progress": False,
    }
    if canonical_task(task) == "question-answering":
        fields["doc_stride"] = 8
    fields.update(kwargs)
    return TrainingArguments(**fields)


def losses(log_history: list[dict[str, Any]]) -> list[float]:
    """The training losses of ``log_history`` in order."""
    return [entry["loss"] for entry in log_history if "loss" in entry]
