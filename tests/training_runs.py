"""Tiny fine-tuning runs for the training-loop tests of every framework and the training parity test.

A base checkpoint of the odd-sized tiny config (random weights at trained-model scales, the real 1124-token
tokenizer of transformers' tiny random DistilBERT; ``tests/export_checkpoints.py``), and small train / validation
files for each task, cut from the shared real data (SST-2, CoNLL-2003, SQuAD v1.1 dev) — so every task head is
new and drawn once by the neutral side. ``run_arguments`` gives the keyword arguments of a short run.

For the update-rule tests, without a whole run: :func:`stand_in_run` (what ``create_optimizer`` reads from a
``TrainingRun``), :func:`realistic_weights`, :func:`random_batch` and :func:`torch_trajectory` (the reference:
``torch.optim.AdamW`` + ``clip_grad_norm_`` on our PyTorch model).
"""

from __future__ import annotations

import json
import types
from pathlib import Path
from typing import Any

import numpy as np
from export_checkpoints import tiny_checkpoint

from distilbert_mf.checkpoint.names import expected_shapes
from distilbert_mf.training import read_records, select_records
from distilbert_mf.training.schedules import LinearSchedule, no_weight_decay

TASKS = ("text-classification", "token-classification", "question-answering", "masked-lm", "multiple-choice")
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}
MAX_SEQ_LENGTH = 32  # question answering: 64 (the tiny position table), windows with a stride of 8


def base_model(folder: Path, shared_data: Path, **config: Any) -> Path:
    """The tiny base checkpoint (no head) with its tokenizer, in ``folder``."""
    if not (folder / "config.json").is_file():
        tiny_checkpoint(folder, "base", shared_data, **config)
    return folder


def _sst2(shared_data: Path, name: str, count: int) -> list[tuple[str, str]]:
    lines = (shared_data / "glue_sst2" / name).read_text(encoding="utf-8").splitlines()[1 : count + 1]
    return [tuple(line.rsplit("\t", 1)) for line in lines]


def _conll_blocks(shared_data: Path, start: int, count: int) -> str:
    text = (shared_data / "conll2003" / "test-sentences-0000-2699.txt").read_text(encoding="utf-8")
    blocks = [block for block in text.split("\n\n") if block.strip()]
    return "\n\n".join(blocks[start : start + count]) + "\n"


def _write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def task_files(folder: Path, task: str, shared_data: Path, *, train_rows: int = 48, eval_rows: int = 12) -> dict:
    """``train_file`` / ``validation_file`` (and the task's options) of a tiny ``task`` run, written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if task == "text-classification":
        for name, rows, count in (("train.tsv", "train.tsv", train_rows), ("dev.tsv", "dev.tsv", eval_rows)):
            lines = ["sentence\tlabel", *(f"{s}\t{label}" for s, label in _sst2(shared_data, rows, count))]
            (folder / name).write_text("\n".join(lines) + "\n", encoding="utf-8")
        return {"train_file": str(folder / "train.tsv"), "validation_file": str(folder / "dev.tsv")}
    if task == "token-classification":
        (folder / "train.txt").write_text(_conll_blocks(shared_data, 0, train_rows), encoding="utf-8")
        (folder / "dev.txt").write_text(_conll_blocks(shared_data, train_rows, eval_rows), encoding="utf-8")
        return {"train_file": str(folder / "train.txt"), "validation_file": str(folder / "dev.txt")}
    if task == "question-answering":
        from distilbert_mf import DistilBertTokenizerFast

        tokenizer = DistilBertTokenizerFast.from_pretrained(shared_data / "tiny-random-distilbert")
        records = read_records(shared_data / "squad" / "dev-v1.1-articles-00-39.json")
        wanted = train_rows // 4 + eval_rows // 4  # examples: each gives several windows
        short = [i for i, row in enumerate(records.rows) if len(tokenizer(row["question"])["input_ids"]) <= 30]
        rows = list(select_records(records, short[:wanted]).rows)
        split = train_rows // 4
        _write_jsonl(folder / "train.jsonl", rows[:split])
        _write_jsonl(folder / "dev.jsonl", rows[split:])
        return {
            "train_file": str(folder / "train.jsonl"),
            "validation_file": str(folder / "dev.jsonl"),
            "doc_stride": 8,
            "max_seq_length": 64,  # the whole position table: questions of this tokenizer take up to ~45 pieces
            "pad_to_multiple_of": 64,
        }
    if task == "masked-lm":
        for name, rows, count in (("train.txt", "train.tsv", train_rows), ("dev.txt", "dev.tsv", eval_rows)):
            text = "\n".join(s.strip() for s, _ in _sst2(shared_data, rows, count)) + "\n"
            (folder / name).write_text(text, encoding="utf-8")
        return {"train_file": str(folder / "train.txt"), "validation_file": str(folder / "dev.txt")}
    if task == "multiple-choice":
        endings = ("it is good .", "it is bad .", "it is long .")
        for name, rows, count in (("train.jsonl", "train.tsv", train_rows), ("dev.jsonl", "dev.tsv", eval_rows)):
            data = [
                {"sent1": s.strip(), "sent2": "so", **{f"ending{i}": e for i, e in enumerate(endings)}, "label": int(y)}
                for s, y in _sst2(shared_data, rows, count)
            ]
            _write_jsonl(folder / name, data)
        return {
            "train_file": str(folder / "train.jsonl"),
            "validation_file": str(folder / "dev.jsonl"),
            "choice_columns": ("ending0", "ending1", "ending2"),
        }
    raise ValueError(f"task must be one of {TASKS}, got {task!r}")


def run_arguments(
    tmp_path: Path, task: str, shared_data: Path, framework: str, *, dropout: bool = False, **changes: Any
) -> dict[str, Any]:
    """``TrainingArguments`` keywords of a short tiny run of ``task`` in ``framework`` (output in
    ``tmp_path/<framework>-<task>``); ``changes`` override them."""
    model = base_model(tmp_path / "model", shared_data)
    data = task_files(tmp_path / f"data-{task}", task, shared_data)
    arguments = {
        "output_dir": str(tmp_path / f"{framework}-{task}"),
        "task": task,
        "model": str(model),
        "framework": framework,
        "max_steps": 6,
        "per_device_train_batch_size": 4,
        "per_device_eval_batch_size": 8,
        "learning_rate": 1e-3,
        "weight_decay": 0.01,
        "warmup_steps": 2,
        "max_seq_length": MAX_SEQ_LENGTH,
        "pad_to_multiple_of": MAX_SEQ_LENGTH,  # one batch width: XLA (Keras, Flax) compiles the step once
        "logging_steps": 1,
        "save_steps": 3,
        "seed": 0,
        "progress": False,
        "config_overrides": {} if dropout else dict(NO_DROPOUT),
        **data,
    }
    arguments.update(changes)
    return arguments


# ---------------------------------------------------------------------------------------------------------------------
# The update rule without a run
# ---------------------------------------------------------------------------------------------------------------------


def stand_in_run(
    *,
    learning_rate: float = 1e-3,
    weight_decay: float = 0.01,
    max_grad_norm: float | None = 2.0,
    warmup_steps: int = 5,
    total_steps: int = 50,
    gradient_accumulation_steps: int = 1,
) -> types.SimpleNamespace:
    """What create_optimizer reads from a TrainingRun: args (TrainingArguments' names), schedule, decays."""
    args = types.SimpleNamespace(
        adam_beta1=0.9,
        adam_beta2=0.999,
        adam_epsilon=1e-8,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        gradient_accumulation_steps=gradient_accumulation_steps,
    )
    schedule = LinearSchedule(learning_rate, warmup_steps=warmup_steps, total_steps=total_steps)
    return types.SimpleNamespace(args=args, schedule=schedule, decays=lambda name: not no_weight_decay(name))


def realistic_weights(config, head, seed=0):
    """Canonical float32 weights at trained-model scales (so the loss moves and gradients need clipping)."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in expected_shapes(config, head).items():
        if "embeddings" in key:
            value = rng.normal(0.0, 0.5, shape)
        elif key.endswith("weight") and len(shape) == 2:
            value = rng.normal(0.0, shape[1] ** -0.5, shape)
        elif key.endswith("weight"):
            value = 1.0 + rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        state[key] = value.astype(np.float32)
    return state


def random_batch(rng, config, *, rows=4, widths=(8, 16), token_labels=False):
    """Right-padded int64 numpy batch (the data layer's layout); the first row is the longest."""
    width = int(rng.choice(widths))
    lengths = rng.integers(2, width + 1, rows)
    lengths[0] = width
    mask = (np.arange(width)[None, :] < lengths[:, None]).astype(np.int64)
    ids = np.where(mask == 1, rng.integers(1, config.vocab_size, (rows, width)), config.pad_token_id)
    if token_labels:
        labels = np.where(mask == 1, rng.integers(0, config.num_labels, (rows, width)), -100)
    else:
        labels = rng.integers(0, config.num_labels, rows)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def torch_trajectory(config, weights, steps, run):
    """The reference: our PyTorch model under torch.optim.AdamW (decay / no-decay groups) + clip_grad_norm_,
    ``(loss / n).backward()`` per micro-batch."""
    import torch

    from distilbert_mf.torch import DistilBertForSequenceClassification

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: no thread spin-waits on a busy machine (rounding is the same rule)
    try:
        return _torch_trajectory(torch, DistilBertForSequenceClassification, config, weights, steps, run)
    finally:
        torch.set_num_threads(threads)


def _torch_trajectory(torch, cls, config, weights, steps, run):

    model = cls(config)
    model.load_canonical_state_dict(weights)
    model.train()
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if run.decays(n)], "weight_decay": run.args.weight_decay},
        {"params": [p for n, p in named if not run.decays(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=run.schedule(0), betas=(0.9, 0.999), eps=1e-8)
    losses, norms = [], []
    for s, batches in enumerate(steps):
        for group in optimizer.param_groups:
            group["lr"] = run.schedule(s)
        optimizer.zero_grad()
        total = 0.0
        for batch in batches:
            loss = model(**{k: torch.as_tensor(v) for k, v in batch.items()}).loss
            (loss / len(batches)).backward()
            total += loss.item()
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), run.args.max_grad_norm)))
        optimizer.step()
        losses.append(total / len(batches))
    state = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    return np.asarray(losses), np.asarray(norms), state
