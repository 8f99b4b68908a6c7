"""Cross-framework parity: run one checkpoint in every installed framework and compare every output.

``check_parity("path/or/repo")`` loads the checkpoint with each framework's ``from_pretrained`` (whatever format it
holds), runs the same padded batch, and reports max |Δ| per output (logits, every hidden state, every attention
map) for each framework pair, plus argmax agreement. The ``distilbert-mf parity`` command (:mod:`distilbert_mf.cli`)
runs the same steps through :func:`prepare_parity`, with progress, for CI.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from distilbert_mf.frameworks import available_frameworks, model_class, normalize_framework, to_numpy

logger = logging.getLogger(__name__)

SAMPLE_TEXTS = (
    "The quick brown fox jumps over the lazy dog.",
    "I love this movie!",
    "Paris is the capital of France, and it has been for centuries.",
    "Résumé naïve café — accents, emoji 🙂 and 中文 characters.",
    "no",
    "A much longer sentence that keeps going so that the other rows of the batch need plenty of padding tokens "
    "at their ends, which exercises the attention mask in every framework.",
)
MAX_LENGTH = 64  # tokens per row of the parity batch
LOGIT_KEYS = ("logits", "start_logits", "end_logits")
# outputs held to --atol; every other output (hidden_states[i], attentions[i]) is an intermediate, held to --hidden-atol
FINAL_KEYS = (*LOGIT_KEYS, "last_hidden_state", "loss")
DEFAULT_ATOL = 1e-5
DEFAULT_HIDDEN_ATOL = 1e-4


@dataclass
class PairResult:
    """Differences between two frameworks' outputs.

    ``argmax_mismatches`` counts predictions (rows, or real tokens) whose argmax differs by more than a near-tie:
    where one framework's choice scores within ``atol`` of the other's best, the two agree.
    """

    frameworks: tuple[str, str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # output name -> max |Δ| (NaN: a NaN output)
    argmax_mismatches: int = 0
    argmax_compared: bool = False  # False for the base model: it has no logits
    scale: dict[str, float] = field(default_factory=dict)  # output name -> max |x| over both frameworks

    @property
    def argmax_agree(self) -> bool:
        return self.argmax_mismatches == 0

    @property
    def worst(self) -> float:
        """The largest difference; ``inf`` when an output is NaN or missing in one framework."""
        values = list(self.max_abs_diff.values())
        if any(not math.isfinite(v) for v in values):
            return math.inf
        return max(values, default=0.0)


@dataclass
class ParityReport:
    """The outcome of :func:`check_parity`; ``passed`` is False past ``atol`` or on an argmax disagreement."""

    model: str
    head: str
    frameworks: list[str]
    atol: float
    batch_shape: tuple[int, ...]
    pairs: list[PairResult]
    hidden_atol: float = DEFAULT_HIDDEN_ATOL

    @property
    def worst(self) -> float:
        return max((p.worst for p in self.pairs), default=0.0)

    def bound(self, key: str, scale: float = 1.0) -> float:
        """The largest |Δ| allowed on output ``key`` whose values reach ``scale`` in magnitude.

        Model outputs (logits, last_hidden_state) are held to ``atol``, intermediates (every hidden state and
        attention map) to ``hidden_atol``; both scale with the output's magnitude above 1, since float32 rounding
        error grows with it (on the embedded model, PyTorch's own float32 hidden states are 9e-5 from float64).
        """
        tol = self.atol if key in FINAL_KEYS else self.hidden_atol
        return tol * max(1.0, scale if math.isfinite(scale) else 1.0)

    def within(self, pair: PairResult) -> bool:
        return all(
            math.isfinite(d) and d <= self.bound(k, pair.scale.get(k, 1.0)) for k, d in pair.max_abs_diff.items()
        )

    @property
    def passed(self) -> bool:
        return all(self.within(p) and p.argmax_agree for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: non-finite differences become ``null``."""
        return {
            "model": self.model,
            "head": self.head,
            "frameworks": list(self.frameworks),
            "atol": self.atol,
            "hidden_atol": self.hidden_atol,
            "batch_shape": list(self.batch_shape),
            "passed": self.passed,
            "max_abs_diff": _finite_or_none(self.worst),
            "pairs": [
                {
                    "frameworks": list(p.frameworks),
                    "max_abs_diff": {k: _finite_or_none(v) for k, v in p.max_abs_diff.items()},
                    "bound": {k: self.bound(k, p.scale.get(k, 1.0)) for k in p.max_abs_diff},
                    "within_bounds": self.within(p),
                    "worst": _finite_or_none(p.worst),
                    "argmax_agree": p.argmax_agree,
                    "argmax_mismatches": p.argmax_mismatches,
                    "argmax_compared": p.argmax_compared,
                }
                for p in self.pairs
            ],
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def table(self) -> str:
        """A plain-text table: one row per output, one column per framework pair, then the verdict."""
        names = list(dict.fromkeys(n for p in self.pairs for n in p.max_abs_diff))
        headers = ["output"] + ["-".join(p.frameworks) for p in self.pairs] + ["bound"]
        rows = []
        for n in names:
            scale = max((p.scale.get(n, 1.0) for p in self.pairs), default=1.0)
            cells = [f"{p.max_abs_diff.get(n, math.nan):.2e}" for p in self.pairs]
            rows.append([n, *cells, f"{self.bound(n, scale):.1e}"])
        rows.append(["argmax agrees"] + [_agreement(p) for p in self.pairs] + [""])
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in [headers, *rows]]
        verdict = "PASS" if self.passed else "FAIL"
        title = f"{self.model} ({self.head}), batch {tuple(self.batch_shape)}"
        lines.insert(0, title)
        lines.append(
            f"{verdict}: max |Δ| {self.worst:.2e}; bounds: atol {self.atol:.0e} on outputs, {self.hidden_atol:.0e} on "
            "hidden states and attentions, times max(1, max |x|)"
        )
        return "\n".join(lines)


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _agreement(pair: PairResult) -> str:
    if not pair.argmax_compared:
        return "n/a"
    return "yes" if pair.argmax_agree else f"NO ({pair.argmax_mismatches})"


def _tokenizer(name_or_path: str | os.PathLike[str], hub: dict[str, Any]) -> Any:
    """The checkpoint's tokenizer, or ``None`` when it ships no vocabulary."""
    from distilbert_mf.checkpoint.hub import resolve_file
    from distilbert_mf.tokenization import DistilBertTokenizerFast

    if not any(resolve_file(name_or_path, f, optional=True, **hub) for f in ("tokenizer.json", "vocab.txt")):
        return None
    return DistilBertTokenizerFast.from_pretrained(name_or_path, **hub)


def make_inputs(config: Any, texts: Sequence[str], head: str, tokenizer: Any = None) -> dict[str, np.ndarray]:
    """A padded batch: ``texts`` tokenised when there is a tokenizer, else seeded random ids of varied lengths.

    input_ids / attention_mask (batch, seq); multiple choice: (batch, 2, seq), each row paired with the next one.
    """
    max_len = min(MAX_LENGTH, config.max_position_embeddings)
    if tokenizer is not None:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="np")
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        mask = np.asarray(enc["attention_mask"], dtype=np.int32)
    else:
        rng = np.random.default_rng(0)
        lengths = rng.integers(2, max_len + 1, size=len(texts))
        lengths[0] = max_len  # at least one full row: the batch's length is max_len
        ids = rng.integers(0, config.vocab_size, size=(len(texts), max_len)).astype(np.int32)
        mask = (np.arange(max_len)[None, :] < lengths[:, None]).astype(np.int32)
    pad = config.pad_token_id if config.pad_token_id is not None else 0
    ids = np.where(mask == 1, ids, pad).astype(np.int32)
    if head == "multiple_choice":
        ids = np.stack([ids, np.roll(ids, 1, axis=0)], axis=1)
        mask = np.stack([mask, np.roll(mask, 1, axis=0)], axis=1)
    return {"input_ids": ids, "attention_mask": mask}


def run_framework(framework: str, model: Any, inputs: dict[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    """Run ``model`` in inference mode on numpy ``inputs`` with every hidden state and attention map.

    Returns ``{"logits": ..., "hidden_states[0]": ..., "attentions[0]": ...}`` as float64 numpy arrays (tuples
    flattened into one entry per item; a loss, when labels are passed, under ``"loss"``). ``kwargs`` go to the call.
    """
    kwargs = {"output_hidden_states": True, "output_attentions": True, **kwargs}
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(**inputs, **kwargs)
    elif framework == "tf":
        out = model(**inputs, training=False, **kwargs)
    else:
        out = model(**inputs, **kwargs)
    result: dict[str, np.ndarray] = {}
    for key in out.keys():
        value = to_numpy(out[key])
        if isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                result[f"{key}[{i}]"] = np.asarray(item, dtype=np.float64)
        else:
            result[key] = np.asarray(value, dtype=np.float64)
    return result


def argmax_mismatches(key: str, a: np.ndarray, b: np.ndarray, mask: np.ndarray, atol: float) -> int:
    """How many predictions differ beyond a near-tie, over real (unpadded) tokens only.

    logits (batch, classes) or (batch, seq, classes) with mask (batch, seq); start/end logits (batch, seq): the
    best real position. A prediction disagrees when either framework scores the other's choice more than ``atol``
    below its own best.
    """
    if key != "logits":  # start/end logits: positions are the classes, padding excluded
        a, b = np.where(mask, a, -np.inf), np.where(mask, b, -np.inf)
    ia, ib = np.argmax(a, -1), np.argmax(b, -1)
    best_a, best_b = np.max(a, -1), np.max(b, -1)
    a_at_b = np.take_along_axis(a, ib[..., None], -1)[..., 0]
    b_at_a = np.take_along_axis(b, ia[..., None], -1)[..., 0]
    differs = (ia != ib) & ((a_at_b < best_a - atol) | (b_at_a < best_b - atol))
    if key == "logits" and a.ndim == 3:  # token-level logits: real tokens only
        differs = differs[mask]
    return int(np.sum(differs))


def compare(results: dict[str, dict[str, np.ndarray]], mask: np.ndarray, atol: float) -> list[PairResult]:
    """Every framework pair: max |Δ| per output, argmax mismatches of the logits."""
    pairs = []
    for a, b in itertools.combinations(results, 2):
        pair = PairResult((a, b))
        for key in dict.fromkeys([*results[a], *results[b]]):
            if key not in results[a] or key not in results[b] or results[a][key].shape != results[b][key].shape:
                pair.max_abs_diff[key] = math.inf
                continue
            diff = np.abs(results[a][key] - results[b][key])
            scale = max(
                float(np.max(np.abs(results[a][key]), initial=0.0)), float(np.max(np.abs(results[b][key]), initial=0.0))
            )
            pair.scale[key] = scale
            pair.max_abs_diff[key] = float(np.max(diff, initial=0.0)) if not np.isnan(diff).any() else math.nan
        for key in LOGIT_KEYS:
            if key in results[a] and key in results[b] and math.isfinite(pair.max_abs_diff[key]):
                pair.argmax_compared = True
                pair.argmax_mismatches += argmax_mismatches(key, results[a][key], results[b][key], mask, atol)
        pairs.append(pair)
    return pairs


def check_parity(
    name_or_path: str | os.PathLike[str],
    *,
    frameworks: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    atol: float = DEFAULT_ATOL,
    hidden_atol: float = DEFAULT_HIDDEN_ATOL,
    head: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ParityReport:
    """Run the checkpoint in each framework (default: every installed one) and compare all outputs.

    Args:
        name_or_path: a folder, Hub repo id or built-in name holding any weights format.
        frameworks: two or more of ``pt``, ``tf``, ``flax`` (aliases torch/tensorflow/jax); default: installed ones.
        texts: the inputs, one per batch row (default: :data:`SAMPLE_TEXTS`); tokenised with the checkpoint's
            tokenizer, or replaced by seeded random ids of the same count when it has none.
        atol: the largest max |Δ| allowed on the model's outputs (logits, start/end logits, last_hidden_state),
            times max(1, the output's largest magnitude).
        hidden_atol: the same for the intermediates (every hidden state and attention map); looser by default
            because float32 rounding accumulates through the layers.
        head: the head to run (default: the checkpoint's own, from ``architectures`` or its keys). The checkpoint
            must hold that head's weights: randomly initialised layers would differ between frameworks.

    Raises ``ValueError`` for bad arguments and ``ImportError`` for a framework that is not installed.
    """
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    plan = prepare_parity(
        name_or_path, frameworks=frameworks, texts=texts, atol=atol, hidden_atol=hidden_atol, head=head, hub=hub
    )
    return plan.report({framework: plan.run(framework) for framework in plan.frameworks})


@dataclass
class ParityPlan:
    """A checked parity run, before any framework runs: :func:`check_parity` in steps (the CLI shows progress).

    ``run(framework)`` loads and runs the checkpoint in one framework; ``report(results)`` compares them.
    """

    model: str | os.PathLike[str]
    head: str
    source: str
    frameworks: list[str]
    inputs: dict[str, np.ndarray]
    atol: float
    hidden_atol: float
    hub: dict[str, Any]

    def run(self, framework: str) -> dict[str, np.ndarray]:
        """The outputs of ``framework``'s model (see :func:`run_framework`); the model is freed afterwards."""
        model = model_class(framework, self.head).from_pretrained(self.model, **self.hub)
        try:
            return run_framework(framework, model, self.inputs)
        finally:
            del model

    def report(self, results: dict[str, dict[str, np.ndarray]]) -> ParityReport:
        """Compare the outputs of every framework pair."""
        pairs = compare(results, self.inputs["attention_mask"].astype(bool), self.atol)
        shape = tuple(self.inputs["input_ids"].shape)
        return ParityReport(str(self.model), self.head, list(results), self.atol, shape, pairs, self.hidden_atol)


def prepare_parity(
    name_or_path: str | os.PathLike[str],
    *,
    frameworks: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    atol: float = DEFAULT_ATOL,
    hidden_atol: float = DEFAULT_HIDDEN_ATOL,
    head: str | None = None,
    hub: dict[str, Any] | None = None,
) -> ParityPlan:
    """Check the arguments, read the checkpoint's config and head, and build the input batch (the arguments of
    :func:`check_parity`; ``hub`` holds its revision / cache_dir / local_files_only / token)."""
    from distilbert_mf.checkpoint.loading import load_pretrained
    from distilbert_mf.checkpoint.names import ARCHITECTURES, check_head
    from distilbert_mf.conversion import read_checkpoint

    for name, value in (("atol", atol), ("hidden_atol", hidden_atol)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be a positive finite number, got {value!r}")
    names = list(dict.fromkeys(normalize_framework(f) for f in (frameworks or available_frameworks())))
    installed = available_frameworks()
    missing = [f for f in names if f not in installed]
    if missing:
        raise ImportError(
            f"framework(s) {missing} not installed (installed: {installed}); pip install 'distilbert-mf[all]'"
        )
    if len(names) < 2:
        raise ValueError(
            f"parity needs at least two frameworks, got {names}; install more: pip install 'distilbert-mf[all]'"
        )
    if texts is not None:
        texts = [str(t) for t in texts]
        if not texts:
            raise ValueError("texts is empty: give at least one input text (or None for the built-in samples)")
    hub = dict(hub or {})
    if head is None:
        config, head, fmt, _ = read_checkpoint(name_or_path, **hub)
    else:
        check_head(head)
        config, _, report = load_pretrained(name_or_path, head, **hub)
        if report.missing:
            raise ValueError(
                f"{name_or_path} has no weights for {len(report.missing)} key(s) of {ARCHITECTURES[head]} "
                f"({report.missing[:4]}...): each framework would initialise them differently; pick the head the "
                "checkpoint was saved with"
            )
        fmt = report.source
    inputs = make_inputs(config, texts or SAMPLE_TEXTS, head, _tokenizer(name_or_path, hub))
    logger.info(
        "parity of %s (%s, %s) over %s on a batch of shape %s",
        name_or_path,
        fmt,
        head,
        names,
        inputs["input_ids"].shape,
    )
    return ParityPlan(name_or_path, head, str(fmt), names, inputs, float(atol), float(hidden_atol), hub)
