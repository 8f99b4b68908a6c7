"""Verification of an exported artifact: its outputs in a fresh process against the source model's.

:func:`verify_artifact` tokenizes a few real sentences (with the tokenizer files copied next to the artifact) into
batches of several sizes and lengths, runs the source model on them here, and runs the artifact in a new Python
process started on :mod:`distilbert_mf.export.runner` with ``python -I``: that process imports only numpy and the
artifact's runtime, and reports that no ``distilbert_mf`` module was imported. Each output is held to
``atol * max(1, max |x|)`` (the bound of ``distilbert-mf parity``: float32 rounding grows with the magnitude).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.export.tasks import ExportTask

logger = logging.getLogger(__name__)

RUNNER = Path(__file__).with_name("runner.py")
# the largest max |Δ| allowed, times max(1, max |x|) of the output: float32 is the contract; 16-bit artifacts are
# compared with the float32 source model, so their bound is a few times their own rounding (8 and 11 significant
# bits: measured 0.8% and 0.05% of the logits' magnitude on the tiny test models)
DEFAULT_ATOL = {"float32": 1e-5, "bfloat16": 3e-2, "float16": 5e-3}
# (batch, max tokens): real sentences, padded to the longest of each batch
CASES = ((1, 16), (3, 48), (8, 128))
# multiple choice: (batch, choices, max tokens)
CHOICE_CASES = ((1, 2, 16), (2, 4, 64))
VERIFY_TEXTS = (
    "A gripping, beautifully shot film.",
    "The plot never quite comes together, and the ending drags on far too long for what it has to say.",
    "Okay.",
    "Where is the nearest train station, and does it have a ticket office open on Sundays?",
    "Marie Curie was the first person to win Nobel Prizes in two different sciences: physics in 1903 and "
    "chemistry in 1911.",
    "I wouldn't recommend it.",
    "The committee postponed its vote until the auditors had reviewed every invoice from the previous quarter.",
    # longer than 128 tokens, so the last case is truncated at its length
    "When the river flooded in the spring, the village council met every evening in the old school hall to decide "
    "which roads to close, which families to move to higher ground, and how to share the sandbags that the "
    "neighbouring towns had sent; the meetings ran late, tempers frayed, and yet by the end of the month every "
    "house had been kept dry except the mill, which had stood in the water for two hundred years and, as the "
    "miller said with a shrug, would probably stand there for two hundred more, whatever the weather did next; and "
    "when the water finally went down, the children counted the fish left stranded in the orchard, the baker "
    "reopened with bread for everyone, and the council, to nobody's surprise, voted to meet again next spring.",
)


class ExportVerificationError(ValueError):
    """The artifact's outputs differ from the source model's past the bound, its process imported distilbert_mf, or
    int8 quantisation costs more accuracy than allowed (``report`` holds the numbers, when there are some)."""

    def __init__(self, message: str, report: VerificationReport | None = None) -> None:
        super().__init__(message)
        self.report = report


@dataclass
class VerificationCase:
    """One input batch: its shape and, per output, max |Δ| and the bound it is held to."""

    signature: str
    shape: tuple[int, ...]
    max_abs_diff: dict[str, float] = field(default_factory=dict)
    bound: dict[str, float] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return all(math.isfinite(d) and d <= self.bound[k] for k, d in self.max_abs_diff.items())


@dataclass
class VerificationReport:
    """The outcome of :func:`verify_artifact`; ``passed`` needs every case within bounds and no distilbert_mf
    module in the artifact's process."""

    artifact: str
    format: str
    dtype: str
    atol: float
    runtime: str
    cases: list[VerificationCase]
    distilbert_mf_modules: list[str]
    tokenized: bool
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def worst(self) -> float:
        values = [d for case in self.cases for d in case.max_abs_diff.values()]
        return max((d if math.isfinite(d) else math.inf for d in values), default=math.inf)

    @property
    def standalone(self) -> bool:
        return not self.distilbert_mf_modules

    @property
    def passed(self) -> bool:
        return bool(self.cases) and self.standalone and all(case.passed for case in self.cases)

    def lines(self) -> list[str]:
        """A human-readable summary, one line per case and output."""
        inputs = "real tokenized sentences" if self.tokenized else "random ids (no tokenizer found)"
        process = (
            "a fresh process that imported no distilbert_mf module"
            if self.standalone
            else f"a process that imported {self.distilbert_mf_modules}"
        )
        out = [f"verified {self.artifact} ({self.format}, {self.dtype}) with {self.runtime} in {process}, on {inputs}:"]
        for case in self.cases:
            shape = "x".join(map(str, case.shape))
            for key, diff in case.max_abs_diff.items():
                verdict = "ok" if math.isfinite(diff) and diff <= case.bound[key] else "FAILED"
                where = "" if case.signature == "default" else f" [{case.signature}]"
                out.append(f"  {shape:>10} {key:<18} max|Δ| {diff:.2e}  bound {case.bound[key]:.1e}  {verdict}{where}")
        verdict = "passed" if self.passed else "FAILED"
        out.append(f"  worst max|Δ| {self.worst:.2e} (atol {self.atol:g} x max(1, max|x|)): {verdict}")
        return out

    def to_dict(self) -> dict[str, Any]:
        def finite(value: float) -> float | None:
            return value if math.isfinite(value) else None

        return {
            "passed": self.passed,
            "artifact": self.artifact,
            "format": self.format,
            "dtype": self.dtype,
            "runtime": self.runtime,
            "atol": self.atol,
            "bound_rule": "atol * max(1, max |x| of the source output)",
            "max_abs_diff": finite(self.worst),
            "inputs": "tokenized sentences" if self.tokenized else "random ids",
            "distilbert_mf_modules_in_runtime_process": self.distilbert_mf_modules,
            "cases": [
                {
                    "signature": case.signature,
                    "shape": list(case.shape),
                    "max_abs_diff": {k: finite(v) for k, v in case.max_abs_diff.items()},
                    "bound": case.bound,
                }
                for case in self.cases
            ],
            **self.details,
        }


# ------------------------------------------------------------------------------------------------------ inputs
def verification_inputs(config: Any, task: ExportTask, tokenizer: Any = None) -> list[dict[str, np.ndarray]]:
    """Batches of several sizes and lengths (int64 ``input_ids`` / ``attention_mask``): :data:`VERIFY_TEXTS`
    tokenized by ``tokenizer`` and padded to the longest row, or seeded random ids with varied padding when there
    is no tokenizer. Multiple choice: (batch, choices, seq)."""
    limit = config.max_position_embeddings
    batches = []
    shapes = CHOICE_CASES if task.head == "multiple_choice" else tuple((b, 1, n) for b, n in CASES)
    for number, (batch, choices, max_tokens) in enumerate(shapes):
        rows = batch * choices
        texts = [VERIFY_TEXTS[(number + 3 * i) % len(VERIFY_TEXTS)] for i in range(rows)]
        if rows > 1:  # the shortest and the longest: the batch reaches max_tokens and has padding
            texts[0], texts[-1] = min(VERIFY_TEXTS, key=len), VERIFY_TEXTS[-1]
        length = min(max_tokens, limit)
        if tokenizer is not None:
            enc = tokenizer(texts, padding=True, truncation=True, max_length=length, return_tensors="np")
            ids, mask = np.asarray(enc["input_ids"], np.int64), np.asarray(enc["attention_mask"], np.int64)
        else:
            ids, mask = _random_inputs(config, rows, length, seed=number)
        if task.head == "multiple_choice":
            ids, mask = ids.reshape(batch, choices, -1), mask.reshape(batch, choices, -1)
        batches.append({"input_ids": ids, "attention_mask": mask})
    return batches


def _random_inputs(config: Any, rows: int, length: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, length + 1, size=rows)
    lengths[-1] = length
    mask = (np.arange(length)[None, :] < lengths[:, None]).astype(np.int64)
    ids = rng.integers(1, config.vocab_size, size=(rows, length)).astype(np.int64)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    return np.where(mask == 1, ids, pad), mask


# ------------------------------------------------------------------------------------------------------ running
def reference_outputs(
    model: Any, framework: str, batches: Sequence[dict[str, np.ndarray]], outputs: Sequence[str]
) -> list[dict[str, np.ndarray]]:
    """The source model's ``outputs`` on each batch, as float32 numpy."""
    from distilbert_mf.parity import run_framework

    results = []
    for batch in batches:
        inputs = {k: v if framework == "pt" else v.astype(np.int32) for k, v in batch.items()}
        out = run_framework(framework, model, inputs, output_hidden_states=False, output_attentions=False)
        results.append({name: np.asarray(out[name], np.float32) for name in outputs})
    return results


def run_standalone(
    fmt: str,
    artifact: str | os.PathLike[str],
    batches: Sequence[dict[str, np.ndarray]],
    *,
    threads: int | None = None,
    timeout: float = 1800.0,
) -> tuple[dict[str, list[dict[str, np.ndarray]]], dict[str, Any]]:
    """Run ``artifact`` on ``batches`` in a fresh ``python -I`` process (:mod:`distilbert_mf.export.runner`).

    Returns ``({signature: [outputs per batch]}, the runner's summary)``; ``RuntimeError`` when the process fails.
    """
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_verify_") as scratch:
        inputs, outputs = Path(scratch) / "inputs.npz", Path(scratch) / "outputs.npz"
        np.savez(inputs, **{f"{i}/{k}": v for i, batch in enumerate(batches) for k, v in batch.items()})
        argv = [sys.executable, "-I", str(RUNNER), fmt, str(artifact), str(inputs), str(outputs)]
        if threads:
            argv += ["--threads", str(threads)]
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")}
        logger.info("running %s in a fresh process: %s", artifact, " ".join(argv))
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env, check=False)
        if done.returncode != 0:
            raise RuntimeError(
                f"the {fmt} artifact {artifact} failed to run in a fresh process (exit code {done.returncode}):\n"
                + done.stderr[-4000:]
            )
        info = json.loads(done.stdout.strip().splitlines()[-1])
        results: dict[str, list[dict[str, np.ndarray]]] = {}
        with np.load(outputs) as data:
            for key in data.files:
                signature, case, name = key.split("/", 2)
                per_batch = results.setdefault(signature, [{} for _ in batches])
                per_batch[int(case)][name] = data[key]
    return results, info


def compare(
    reference: Sequence[dict[str, np.ndarray]],
    runs: dict[str, list[dict[str, np.ndarray]]],
    batches: Sequence[dict[str, np.ndarray]],
    atol: float,
) -> list[VerificationCase]:
    """max |Δ| per signature, batch and output (a missing or mis-shaped output counts as infinite)."""
    cases = []
    for signature, outputs in runs.items():
        for ref, got, batch in zip(reference, outputs, batches):
            case = VerificationCase(signature, tuple(batch["input_ids"].shape))
            for name, expected in ref.items():
                actual = got.get(name)
                scale = float(np.abs(expected).max()) if expected.size else 0.0
                case.bound[name] = atol * max(1.0, scale)
                if actual is None or actual.shape != expected.shape:
                    case.max_abs_diff[name] = math.inf
                else:
                    diff = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
                    case.max_abs_diff[name] = float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0
            cases.append(case)
    return cases


def verify_artifact(
    fmt: str,
    artifact: str | os.PathLike[str],
    model: Any,
    framework: str,
    task: ExportTask,
    *,
    tokenizer: Any = None,
    dtype: str = "float32",
    atol: float | None = None,
    threads: int | None = None,
    label: str | None = None,
) -> VerificationReport:
    """Compare ``artifact`` (run standalone) with the source ``model`` (a ``framework`` model of ``task``'s head)
    on :func:`verification_inputs`; returns the :class:`VerificationReport` (it does not raise on a failure).
    ``label``: the artifact's name in the report (default: its path)."""
    atol = DEFAULT_ATOL[dtype] if atol is None else float(atol)
    batches = verification_inputs(model.config, task, tokenizer)
    reference = reference_outputs(model, framework, batches, task.output_names)
    runs, info = run_standalone(fmt, artifact, batches, threads=threads)
    cases = compare(reference, runs, batches, atol)
    runtime = f"{info.get('runtime')} {info.get('version')}"
    details = {k: v for k, v in info.items() if k not in ("runtime", "version", "distilbert_mf_modules")}
    return VerificationReport(
        artifact=label or str(artifact),
        format=fmt,
        dtype=dtype,
        atol=atol,
        runtime=runtime,
        cases=cases,
        distilbert_mf_modules=list(info.get("distilbert_mf_modules", [])),
        tokenized=tokenizer is not None,
        details={"runtime_process": details},
    )


def check_atol(atol: float | None) -> float | None:
    if atol is None:
        return None
    if isinstance(atol, bool) or not isinstance(atol, (int, float)) or not (atol > 0 and math.isfinite(atol)):
        raise ValueError(f"atol must be a positive finite number, got {atol!r}")
    return float(atol)


__all__ = [
    "DEFAULT_ATOL",
    "ExportVerificationError",
    "VerificationCase",
    "VerificationReport",
    "compare",
    "run_standalone",
    "verification_inputs",
    "verify_artifact",
]
