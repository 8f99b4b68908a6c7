"""Cross-framework parity: run one checkpoint in every installed framework and compare every output.

``check_parity("path/or/repo")`` loads the checkpoint with each framework's ``from_pretrained`` (whatever format it
holds), runs the same padded batch, and reports max |Δ| per output (logits, every hidden state, every attention
map) for each framework pair, plus argmax agreement. The ``distilbert-mf parity`` command wraps it for CI.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
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


@dataclass
class PairResult:
    """Differences between two frameworks' outputs."""

    frameworks: tuple[str, str]
    max_abs_diff: dict[str, float] = field(default_factory=dict)  # output name -> max |Δ|
    argmax_agree: bool = True

    @property
    def worst(self) -> float:
        return max(self.max_abs_diff.values(), default=0.0)


@dataclass
class ParityReport:
    """The outcome of :func:`check_parity`; ``passed`` is False past ``atol`` or on an argmax disagreement."""

    model: str
    head: str
    frameworks: list[str]
    atol: float
    batch_shape: tuple[int, ...]
    pairs: list[PairResult]

    @property
    def passed(self) -> bool:
        return all(p.worst <= self.atol and p.argmax_agree for p in self.pairs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["passed"] = self.passed
        return data

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def table(self) -> str:
        """A plain-text table: one row per output, one column per framework pair."""
        names = list(dict.fromkeys(n for p in self.pairs for n in p.max_abs_diff))
        headers = ["output"] + ["-".join(p.frameworks) for p in self.pairs]
        rows = [[n] + [f"{p.max_abs_diff.get(n, float('nan')):.2e}" for p in self.pairs] for n in names]
        rows.append(["argmax agrees"] + [("yes" if p.argmax_agree else "NO") for p in self.pairs])
        widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in [headers, *rows]]
        verdict = "PASS" if self.passed else "FAIL"
        lines.append(f"{verdict}: max |Δ| {max((p.worst for p in self.pairs), default=0.0):.2e} (atol {self.atol:.0e})")
        return "\n".join(lines)


def _inputs(folder: Path | None, config: Any, texts: Sequence[str], head: str) -> dict[str, np.ndarray]:
    """A padded batch: tokenised ``texts`` when the checkpoint has a tokenizer, else seeded random ids."""
    tokenizer = None
    if folder is not None and ((folder / "vocab.txt").is_file() or (folder / "tokenizer.json").is_file()):
        from distilbert_mf.tokenization import DistilBertTokenizerFast

        tokenizer = DistilBertTokenizerFast.from_pretrained(folder)
    max_len = min(64, config.max_position_embeddings)
    if tokenizer is not None:
        enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_len, return_tensors="np")
        ids = np.asarray(enc["input_ids"], dtype=np.int32)
        mask = np.asarray(enc["attention_mask"], dtype=np.int32)
    else:
        rng = np.random.default_rng(0)
        lengths = rng.integers(2, max_len + 1, size=len(texts))
        ids = rng.integers(0, config.vocab_size, size=(len(texts), int(lengths.max()))).astype(np.int32)
        mask = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int32)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    if head == "multiple_choice":  # two choices per example: each row paired with the next one
        ids = np.stack([ids, np.roll(ids, 1, axis=0)], axis=1)
        mask = np.stack([mask, np.roll(mask, 1, axis=0)], axis=1)
    return {"input_ids": ids, "attention_mask": mask}


def _run(framework: str, name_or_path: str, head: str, inputs: dict[str, np.ndarray], load_kwargs: dict[str, Any]):
    cls = model_class(framework, head)
    model = cls.from_pretrained(name_or_path, **load_kwargs)
    kwargs = dict(output_hidden_states=True, output_attentions=True)
    if framework == "pt":
        import torch

        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v.astype(np.int64)) for k, v in inputs.items()}, **kwargs)
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


def _argmax_agree(key: str, a: np.ndarray, b: np.ndarray, mask: np.ndarray) -> bool:
    """Same predicted class / position, looking at real (unpadded) tokens only."""
    if key != "logits":  # start/end logits (batch, seq): the best real position
        a, b = np.where(mask, a, -np.inf), np.where(mask, b, -np.inf)
        return bool(np.all(np.argmax(a, -1) == np.argmax(b, -1)))
    same = np.argmax(a, -1) == np.argmax(b, -1)
    if a.ndim == 3:  # token-level logits (batch, seq, classes)
        same = same[mask]
    return bool(np.all(same))


def check_parity(
    name_or_path: str | os.PathLike[str],
    *,
    frameworks: Sequence[str] | None = None,
    texts: Sequence[str] | None = None,
    atol: float = 1e-5,
    head: str | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ParityReport:
    """Run the checkpoint in each framework (default: every installed one) and compare all outputs.

    ``head`` defaults to the checkpoint's own (from ``architectures`` or its keys). Needs two frameworks.
    """
    from distilbert_mf.checkpoint.hub import resolve_checkpoint
    from distilbert_mf.checkpoint.io import read_weights
    from distilbert_mf.config import DistilBertConfig
    from distilbert_mf.conversion import infer_head

    names = [normalize_framework(f) for f in (frameworks or available_frameworks())]
    names = list(dict.fromkeys(names))
    missing = [f for f in names if f not in available_frameworks()]
    if missing:
        raise ImportError(f"framework(s) {missing} not installed; installed: {available_frameworks()}")
    if len(names) < 2:
        raise ValueError(
            f"parity needs at least two frameworks, got {names}; install more: pip install 'distilbert-mf[all]'"
        )
    if not atol > 0:
        raise ValueError(f"atol must be positive, got {atol}")
    hub = dict(revision=revision, cache_dir=cache_dir, local_files_only=local_files_only, token=token)
    folder, fmt, files = resolve_checkpoint(name_or_path, **hub)
    config = DistilBertConfig.from_json_file(Path(folder) / "config.json")
    if head is None:
        head = infer_head(config, read_weights(files, fmt))
    texts = list(texts) if texts else list(SAMPLE_TEXTS)
    if not texts:
        raise ValueError("no input texts")
    inputs = _inputs(Path(folder), config, texts, head)
    logger.info(
        "parity of %s (%s, %s) over %s on a batch of shape %s",
        name_or_path,
        fmt,
        head,
        names,
        inputs["input_ids"].shape,
    )
    results = {f: _run(f, str(name_or_path), head, inputs, hub) for f in names}
    mask = inputs["attention_mask"].astype(bool)
    pairs = []
    for a, b in itertools.combinations(names, 2):
        pair = PairResult((a, b))
        for key in results[a]:
            if key not in results[b]:
                pair.max_abs_diff[key] = float("inf")
                continue
            pair.max_abs_diff[key] = float(np.max(np.abs(results[a][key] - results[b][key]), initial=0.0))
        for key in ("logits", "start_logits", "end_logits"):
            if key in results[a] and key in results[b]:
                agree = _argmax_agree(key, results[a][key], results[b][key], mask)
                pair.argmax_agree = pair.argmax_agree and agree
        pairs.append(pair)
    return ParityReport(str(name_or_path), head, names, atol, tuple(inputs["input_ids"].shape), pairs)
