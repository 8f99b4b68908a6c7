"""Cross-framework parity helpers: seeded canonical weights, checkpoints written once, models loaded once.

Every model here is loaded from a checkpoint folder with the framework's own ``from_pretrained`` (so the whole
path file -> canonical arrays -> variables is exercised) and cached per session: tests must not train or modify
them. Weights are drawn at realistic scales (activations of order one, non-trivial LayerNorm and biases), not
transformers' tiny initialisation, so that every layer matters.
"""

from __future__ import annotations

import itertools
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes, sinusoidal_table
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.frameworks import available_frameworks, model_class
from distilbert_mf.parity import run_framework

ALL_FRAMEWORKS = ("pt", "tf", "flax")
FRAMEWORKS = tuple(f for f in ALL_FRAMEWORKS if f in available_frameworks())  # the installed ones, in this order
FRAMEWORK_MARKS = {"pt": pytest.mark.torch, "tf": pytest.mark.tensorflow, "flax": pytest.mark.flax}
ATOL = 1e-5  # DESIGN.md §3: tiny float32 configs
GRAD_RTOL = 1e-4  # gradients: max |Δ| <= 1e-4 * max |g| per tensor


# Embedding scale: masked-LM logits (tied projector) of a few units, as a trained model's. With N(0, 1) tables the
# logits reach ~20, where float32 itself is ~1e-5 away from the float64 result in every framework (measured).
EMBEDDING_STD = 0.5


def tiny_config(**changes: Any) -> DistilBertConfig:
    """Odd sizes so shape bugs show: vocab 99, dim 32, 4 heads, hidden_dim 37, 2 layers, 3 labels."""
    base = dict(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64, num_labels=3)
    return DistilBertConfig(**{**base, **changes})


def config_for(head: str, **changes: Any) -> DistilBertConfig:
    """:func:`tiny_config` for ``head`` (question answering needs num_labels=2)."""
    if head == "question_answering":
        changes.setdefault("num_labels", 2)
    return tiny_config(**changes)


def random_state(
    config: DistilBertConfig, head: str, seed: int = 0, embedding_std: float = EMBEDDING_STD
) -> dict[str, np.ndarray]:
    """Canonical float32 arrays for ``head``: Linear weights ~ N(0, 1/in), embeddings ~ N(0, embedding_std), LayerNorm
    scale ~ 1 + N(0, 0.1), biases ~ N(0, 0.1); the sinusoidal table when the config asks for it; tied projector."""
    rng = np.random.default_rng(seed)
    state = {}
    for key, shape in expected_shapes(config, head).items():
        module = key.rsplit(".", 2)[-2]
        if key.endswith("position_embeddings.weight") and config.sinusoidal_pos_embds:
            value = sinusoidal_table(config.max_position_embeddings, config.dim)
        elif "embeddings" in module:
            value = rng.normal(0.0, embedding_std, shape)
        elif key.endswith("weight") and len(shape) == 2:
            value = rng.normal(0.0, shape[1] ** -0.5, shape)
        elif key.endswith("weight"):  # LayerNorm scale
            value = 1.0 + rng.normal(0.0, 0.1, shape)
        else:
            value = rng.normal(0.0, 0.1, shape)
        state[key] = np.asarray(value, dtype=np.float32)
    if head == "masked_lm" and config.tie_word_embeddings:
        state[TIED_KEY] = state[TIED_SOURCE]
    return state


def make_batch(
    config: DistilBertConfig, head: str, *, seed: int = 0, lengths: tuple[int, ...] = (13, 9, 5, 2)
) -> dict[str, np.ndarray]:
    """A right-padded batch (one row per length, seq = max length), ids in [1, vocab) (never the pad id).

    A length of 0 makes a fully masked row. Multiple choice: (batch, 2, seq), each row paired with the next one.
    """
    rng = np.random.default_rng(seed)
    seq = max(lengths)
    mask = (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int32)
    ids = rng.integers(1, config.vocab_size, size=mask.shape).astype(np.int32)
    ids = np.where(mask == 1, ids, config.pad_token_id).astype(np.int32)
    if head == "multiple_choice":
        ids = np.stack([ids, np.roll(ids, 1, axis=0)], axis=1)
        mask = np.stack([mask, np.roll(mask, 1, axis=0)], axis=1)
    return {"input_ids": ids, "attention_mask": mask}


def write_checkpoint(directory: Path, config: DistilBertConfig, state: dict[str, np.ndarray], head: str) -> Path:
    from distilbert_mf.checkpoint.loading import save_pretrained

    save_pretrained(directory, config, state, head)
    return directory


def load(framework: str, head: str, folder: Path, **kwargs: Any) -> Any:
    """``from_pretrained`` of ``head`` in ``framework`` (PyTorch: eager attention unless told otherwise)."""
    if framework == "pt":
        kwargs.setdefault("attn_implementation", "eager")
    return model_class(framework, head).from_pretrained(folder, **kwargs)


def outputs(framework: str, model: Any, inputs: dict[str, Any], **kwargs: Any) -> dict[str, np.ndarray]:
    """Every output of one inference call as float64 numpy: logits, hidden_states[i], attentions[i], loss."""
    return run_framework(framework, model, inputs, **kwargs)


def max_abs_diff(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, float]:
    """Per output: max |Δ|; the two frameworks must produce the same outputs with the same shapes."""
    assert a.keys() == b.keys(), f"different outputs: {sorted(a)} vs {sorted(b)}"
    diffs = {}
    for key in a:
        assert a[key].shape == b[key].shape, f"{key}: shapes {a[key].shape} vs {b[key].shape}"
        assert np.isfinite(a[key]).all() and np.isfinite(b[key]).all(), f"{key}: non-finite values"
        diffs[key] = float(np.max(np.abs(a[key] - b[key]), initial=0.0))
    return diffs


def assert_pairwise_close(results: dict[str, dict[str, np.ndarray]], atol: float = ATOL) -> dict[str, float]:
    """Every framework pair within ``atol`` on every output; returns the worst difference per pair."""
    worst = {}
    for a, b in itertools.combinations(results, 2):
        diffs = max_abs_diff(results[a], results[b])
        bad = {k: v for k, v in diffs.items() if v > atol}
        assert not bad, f"{a} vs {b}: outputs past atol {atol}: {bad}"
        worst[f"{a}-{b}"] = max(diffs.values())
    return worst


class ModelCache:
    """Checkpoint folders and loaded models, built on first use and shared by every test of the session."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.folders: dict[tuple, Path] = {}
        self.models: dict[tuple, Any] = {}
        self.states: dict[tuple, dict[str, np.ndarray]] = {}

    def folder(self, head: str, **config_changes: Any) -> Path:
        """A safetensors checkpoint of ``head`` with seeded random weights under ``tiny_config(**changes)``."""
        key = (head, tuple(sorted(config_changes.items())))
        if key not in self.folders:
            config = config_for(head, **config_changes)
            name = "-".join([head, *(f"{k}={v}" for k, v in key[1])])
            self.states[key] = random_state(config, head, seed=zlib.crc32(name.encode()))
            self.folders[key] = write_checkpoint(self.root / name, config, self.states[key], head)
        return self.folders[key]

    def state(self, head: str, **config_changes: Any) -> dict[str, np.ndarray]:
        self.folder(head, **config_changes)
        return self.states[(head, tuple(sorted(config_changes.items())))]

    def model(self, framework: str, head: str, **config_changes: Any) -> Any:
        key = (framework, head, tuple(sorted(config_changes.items())))
        if key not in self.models:
            self.models[key] = load(framework, head, self.folder(head, **config_changes))
        return self.models[key]


def framework_params(names: tuple[str, ...] = ALL_FRAMEWORKS) -> list[Any]:
    """``pytest.param`` per framework with its marker (skipped where it is not installed)."""
    return [pytest.param(name, marks=FRAMEWORK_MARKS[name], id=name) for name in names]


def converted_folder(cache: ModelCache, head: str, fmt: str, **config_changes: Any) -> Path:
    """``cache.folder(head)`` converted by ``distilbert_mf.convert`` into a folder holding only format ``fmt``."""
    from distilbert_mf.conversion import convert

    source = cache.folder(head, **config_changes)
    target = source.parent / f"{source.name}-{fmt}"
    if not target.is_dir():
        convert(source, target, formats=[fmt])
    return target


def loss_and_grads(framework: str, model: Any, inputs: dict[str, Any]) -> tuple[float, dict[str, np.ndarray]]:
    """One eval-mode (no dropout) forward + backward: the loss and the gradient of every trainable weight, by
    canonical name in PyTorch layout. ``inputs`` carry the labels (QA: start/end positions).

    PyTorch: ``param.grad``; TensorFlow: ``tf.GradientTape`` over the variables of the TF package's canonical table
    (``canonical_variables``); Flax: ``nnx.grad`` state paths through the Flax package's ``canonical_key``.
    """
    if framework == "pt":
        model.zero_grad(set_to_none=True)
        loss = model(**inputs).loss
        loss.backward()
        grads = {k: p.grad.detach().numpy().copy() for k, p in model.named_parameters() if p.requires_grad}
        model.zero_grad(set_to_none=True)
        return float(loss.detach()), grads
    if framework == "tf":
        import tensorflow as tf

        variables, seen = {}, set()
        for key, (variable, transposed) in model.canonical_variables().items():
            if variable.trainable and id(variable) not in seen:  # the tied projector is the word embeddings
                seen.add(id(variable))
                variables[key] = (variable, transposed)
        with tf.GradientTape() as tape:
            loss = model(**inputs, training=False).loss
        values = tape.gradient(loss, [v for v, _ in variables.values()])
        grads = {}
        for (key, (_, transposed)), value in zip(variables.items(), values):
            array = tf.convert_to_tensor(value).numpy()  # IndexedSlices (embedding lookups) -> dense
            grads[key] = array.T if transposed else array
        return float(loss), grads
    from flax import nnx

    from distilbert_mf.flax.loading import canonical_key

    def loss_fn(m: Any) -> Any:
        return m(**inputs).loss

    loss, state = nnx.value_and_grad(loss_fn)(model)
    grads = {}
    for path, value in nnx.to_flat_state(state):
        key, transposed = canonical_key(path)
        array = np.asarray(value.get_value() if hasattr(value, "get_value") else value.value)
        grads[key] = array.T if transposed else array
    return float(loss), grads
