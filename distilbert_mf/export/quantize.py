"""Dynamic int8 quantisation of an ONNX export and its accuracy cost on a labelled file.

:func:`quantize_int8` runs ONNX Runtime's own tools: ``quant_pre_process`` (shape inference and graph
optimisation, which the quantiser recommends) and ``quantize_dynamic`` with signed int8 weights, one scale per
tensor; activations are quantised on the fly at run time, so no calibration data is needed. Per-channel weights
were measured too and gave no better accuracy on SST-2, at a slower run time.

:func:`accuracy_cost` measures what the quantisation costs: accuracy of the source model, of the float32 ONNX
model and of the int8 model on a labelled text-classification file (GLUE-style TSV, CSV or JSON lines).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

QUANTIZED_NAME = "model_quantized.onnx"  # optimum's name for a quantised model next to model.onnx
QUANTIZATIONS = ("int8",)
TEXT_COLUMNS = ("sentence", "text", "sentence1", "question")
PAIR_COLUMNS = ("sentence2", "text_pair", "text2")
EVAL_BATCH = 32


def check_quantize(quantize: Any, fmt: str) -> str | None:
    """``quantize`` (None or "int8") for format ``fmt``: only ONNX models are quantised."""
    if quantize is None:
        return None
    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be None or one of {QUANTIZATIONS}, got {quantize!r}")
    if fmt != "onnx":
        raise ValueError(
            f"{quantize} quantisation applies to the onnx format only (ONNX Runtime's int8 kernels), got format {fmt!r}"
        )
    return quantize


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    """ONNX Runtime's quantiser logs a line per tensor on the root logger at INFO: keep them out of the log."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))
    try:
        yield
    finally:
        root.setLevel(level)


def quantize_int8(src: Path, dst: Path) -> dict[str, Any]:
    """Write the dynamic int8 quantisation of ONNX model ``src`` to ``dst`` (same folder); returns its summary."""
    from onnxruntime.quantization import QuantType, quant_pre_process, quantize_dynamic

    prepared = dst.with_name(f".{dst.stem}.pre.onnx")
    try:
        with _quiet_root_logger():
            quant_pre_process(str(src), str(prepared))
            quantize_dynamic(str(prepared), str(dst), weight_type=QuantType.QInt8, per_channel=False)
    finally:
        prepared.unlink(missing_ok=True)
    logger.info("wrote %s (%.1f MB, float32 %.1f MB)", dst, dst.stat().st_size / 1e6, src.stat().st_size / 1e6)
    return {
        "type": "int8",
        "method": "onnxruntime.quantization: quant_pre_process, then quantize_dynamic (QInt8 weights, per tensor; "
        "activations quantised at run time)",
        "file": dst.name,
        "size_bytes": dst.stat().st_size,
        "float32_size_bytes": src.stat().st_size,
    }


# ---------------------------------------------------------------------------------------------- labelled data
def read_labelled(path: str | os.PathLike[str], label2id: dict[str, int]) -> tuple[list[Any], np.ndarray]:
    """``(texts, labels)`` of a labelled file: a TSV / CSV with a header (a text column among
    :data:`TEXT_COLUMNS`, optionally a second one among :data:`PAIR_COLUMNS`, and ``label``), or JSON lines
    ``{"text": ..., "label": ...}``. Labels are class ids or the config's label names; a pair is a tuple."""
    path = Path(path)
    rows, text, pair = check_labelled_file(path)
    texts = [(row[text], row[pair]) if pair else row[text] for row in rows]
    labels = np.array([_label(row["label"], label2id, path, i + 2) for i, row in enumerate(rows)], np.int64)
    return texts, labels


def check_labelled_file(path: str | os.PathLike[str]) -> tuple[list[dict[str, Any]], str, str | None]:
    """The rows of a labelled file and its text / pair column names (errors for a missing file or columns)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"labelled file {path} does not exist")
    if path.suffix in (".jsonl", ".json"):
        with open(path, encoding="utf-8") as handle:
            rows = [json.loads(line) for line in handle if line.strip()]
    else:
        with open(path, encoding="utf-8", newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="," if path.suffix == ".csv" else "\t"))
    if not rows:
        raise ValueError(f"labelled file {path} has no rows")
    columns = set(rows[0])
    text = next((c for c in TEXT_COLUMNS if c in columns), None)
    if text is None or "label" not in columns:
        raise ValueError(
            f"labelled file {path} needs a 'label' column and a text column among {TEXT_COLUMNS}, got {sorted(columns)}"
        )
    return rows, text, next((c for c in PAIR_COLUMNS if c in columns), None)


def _label(value: Any, label2id: dict[str, int], path: Path, line: int) -> int:
    if isinstance(value, int) or (isinstance(value, str) and value.strip().lstrip("-").isdigit()):
        return int(value)
    if str(value) in label2id:
        return int(label2id[str(value)])
    raise ValueError(f"{path} row {line}: label {value!r} is neither a class id nor one of {sorted(label2id)}")


def eval_batches(tokenizer: Any, texts: list[Any], max_length: int) -> tuple[list[dict[str, np.ndarray]], np.ndarray]:
    """``texts`` tokenized in batches of similar length (padded to each batch's longest); returns the batches and
    the order of the rows in them."""
    lengths = [len(ids) for ids in _encode(tokenizer, texts, max_length, padding=False)["input_ids"]]
    order = np.argsort(lengths, kind="stable")
    batches = []
    for start in range(0, len(order), EVAL_BATCH):
        rows = [texts[i] for i in order[start : start + EVAL_BATCH]]
        enc = _encode(tokenizer, rows, max_length, padding=True, return_tensors="np")
        batches.append({k: np.asarray(enc[k], np.int64) for k in ("input_ids", "attention_mask")})
    return batches, order


def _encode(tokenizer: Any, texts: list[Any], max_length: int, **kwargs: Any) -> Any:
    if texts and isinstance(texts[0], tuple):
        first, second = [t[0] for t in texts], [t[1] for t in texts]
        return tokenizer(first, second, truncation=True, max_length=max_length, **kwargs)
    return tokenizer(texts, truncation=True, max_length=max_length, **kwargs)


def accuracy(logits_per_batch: list[np.ndarray], order: np.ndarray, labels: np.ndarray) -> float:
    predictions = np.empty(len(labels), np.int64)
    predictions[order] = np.concatenate([np.argmax(logits, -1) for logits in logits_per_batch])
    return float((predictions == labels).mean())


def accuracy_cost(
    eval_file: str | os.PathLike[str],
    *,
    model: Any,
    framework: str,
    tokenizer: Any,
    float_model: Path,
    quantized_model: Path,
    threads: int | None = None,
) -> dict[str, Any]:
    """Accuracy on ``eval_file`` of the source ``model``, the float32 ONNX model and the int8 model (both run in a
    fresh process by ONNX Runtime); ``drop_points`` = float32 ONNX - int8, in percentage points."""
    from distilbert_mf.export.verify import reference_outputs, run_standalone

    if tokenizer is None:
        raise ValueError("measuring accuracy needs the tokenizer files next to the model (none were found)")
    config = model.config
    texts, labels = read_labelled(eval_file, dict(config.label2id))
    if labels.min() < 0 or labels.max() >= config.num_labels:
        raise ValueError(f"{eval_file}: labels must be class ids in [0, {config.num_labels}), got {labels.max()}")
    batches, order = eval_batches(tokenizer, texts, config.max_position_embeddings)
    source = reference_outputs(model, framework, batches, ("logits",))
    result = {
        "file": str(eval_file),
        "examples": len(labels),
        "source": accuracy([b["logits"] for b in source], order, labels),
    }
    for key, path in (("onnx_float32", float_model), ("onnx_int8", quantized_model)):
        runs, _ = run_standalone("onnx", path, batches, threads=threads)
        result[key] = accuracy([b["logits"] for b in runs["default"]], order, labels)
    result["drop_points"] = round(100 * (result["onnx_float32"] - result["onnx_int8"]), 4)
    logger.info(
        "accuracy on %s (%d examples): source %.4f, onnx float32 %.4f, int8 %.4f (drop %.2f points)",
        eval_file,
        len(labels),
        result["source"],
        result["onnx_float32"],
        result["onnx_int8"],
        result["drop_points"],
    )
    return result


def quantized_agreement(
    reference: list[dict[str, np.ndarray]], runs: list[dict[str, np.ndarray]], outputs: tuple[str, ...]
) -> dict[str, Any]:
    """How far the int8 model is from the source model on the verification batches: max |Δ| per output and the
    share of argmax predictions (over the last axis) that agree."""
    out: dict[str, Any] = {"max_abs_diff": {}, "argmax_agreement": {}}
    for name in outputs:
        diffs, same, total = [], 0, 0
        for ref, got in zip(reference, runs):
            diffs.append(float(np.abs(ref[name].astype(np.float64) - got[name]).max()))
            same += int((ref[name].argmax(-1) == got[name].argmax(-1)).sum())
            total += ref[name].argmax(-1).size
        out["max_abs_diff"][name] = max(diffs)
        out["argmax_agreement"][name] = same / max(total, 1)
    return out
