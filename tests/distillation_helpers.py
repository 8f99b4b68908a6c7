"""Distillation-loss test helpers: the formulas of issue 16 written out in float64 numpy, random cases, and one
call of a framework's loss with the gradients of its inputs.

The reference follows Hugging Face's original distiller step by step: select the tokens (boolean indexing), then
KL with ``batchmean`` over the selected rows times T², cross-entropy over the labelled tokens, mean cosine distance
over the non-padding tokens, the MSE summed and divided by the number of selected tokens.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

IGNORE = -100
FRAMEWORK_MODULES = {
    "pt": "distilbert_mf.torch.distillation",
    "tf": "distilbert_mf.tensorflow.distillation",
    "flax": "distilbert_mf.flax.distillation",
}
LOSS_FUNCTIONS = (
    "distillation_loss",
    "sequence_classification_distillation_loss",
    "token_classification_distillation_loss",
    "question_answering_distillation_loss",
)


# ---------------------------------------------------------------------------------------------------- reference


def log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=-1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=-1, keepdims=True))


def kl_batchmean(student: np.ndarray, teacher: np.ndarray, temperature: float) -> float:
    """KL(softmax(t/T) || softmax(s/T)) summed over classes and divided by the rows, (rows, classes)."""
    log_q, log_p = log_softmax(student / temperature), log_softmax(teacher / temperature)
    return float(np.sum(np.exp(log_p) * (log_p - log_q)) / student.shape[0])


def cross_entropy(logits: np.ndarray, labels: np.ndarray, ignore: int = IGNORE) -> float:
    keep = labels != ignore
    if not keep.any():
        return 0.0
    log_p = log_softmax(logits[keep])
    return float(-np.mean(log_p[np.arange(keep.sum()), labels[keep]]))


def reference_general(
    student: dict[str, Any],
    teacher: dict[str, Any],
    *,
    attention_mask: np.ndarray,
    labels: np.ndarray | None = None,
    temperature: float = 2.0,
    alpha_ce: float = 5.0,
    alpha_mlm: float = 2.0,
    alpha_cos: float = 1.0,
    alpha_mse: float = 0.0,
    restrict_ce_to_mask: bool = False,
) -> dict[str, float]:
    s, t = (np.asarray(x["logits"], np.float64) for x in (student, teacher))
    tokens = np.asarray(attention_mask) != 0
    selected = tokens & (labels != IGNORE) if restrict_ce_to_mask else tokens
    s_sel, t_sel = s[selected], t[selected]  # (n, vocab)
    out = {}
    out["loss_ce"] = kl_batchmean(s_sel, t_sel, temperature) * temperature**2 if len(s_sel) else 0.0
    out["loss_mse"] = float(np.sum((s_sel - t_sel) ** 2) / len(s_sel)) if len(s_sel) else 0.0
    if labels is not None:
        out["loss_mlm"] = cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1))
    if "hidden_states" in student:
        hs, ht = (np.asarray(x["hidden_states"][-1], np.float64)[tokens] for x in (student, teacher))
        cos = np.sum(hs * ht, -1) / (np.linalg.norm(hs, axis=-1) * np.linalg.norm(ht, axis=-1))
        out["loss_cos"] = float(np.mean(1.0 - cos))
    weights = {"loss_ce": alpha_ce, "loss_mlm": alpha_mlm, "loss_cos": alpha_cos, "loss_mse": alpha_mse}
    out["loss"] = sum(weights[k] * v for k, v in out.items())
    return out


def _task(loss_ce: float, loss_task: float | None, alpha_ce: float, alpha_task: float) -> dict[str, float]:
    out = {"loss_ce": loss_ce, "loss": alpha_ce * loss_ce}
    if loss_task is not None:
        out["loss_task"] = loss_task
        out["loss"] += alpha_task * loss_task
    return out


def reference_sequence(student, teacher, *, labels=None, temperature=2.0, alpha_ce=0.5, alpha_task=0.5):
    s, t = (np.asarray(x["logits"], np.float64) for x in (student, teacher))
    task = None if labels is None else cross_entropy(s, labels)
    return _task(kl_batchmean(s, t, temperature) * temperature**2, task, alpha_ce, alpha_task)


def reference_token(student, teacher, *, attention_mask, labels=None, temperature=2.0, alpha_ce=0.5, alpha_task=0.5):
    s, t = (np.asarray(x["logits"], np.float64) for x in (student, teacher))
    tokens = attention_mask != 0
    task = None if labels is None else cross_entropy(s.reshape(-1, s.shape[-1]), labels.reshape(-1))
    return _task(kl_batchmean(s[tokens], t[tokens], temperature) * temperature**2, task, alpha_ce, alpha_task)


def reference_qa(
    student, teacher, *, start_positions=None, end_positions=None, temperature=2.0, alpha_ce=0.5, alpha_task=0.5
):
    ce = [
        kl_batchmean(np.asarray(student[k], np.float64), np.asarray(teacher[k], np.float64), temperature)
        for k in ("start_logits", "end_logits")
    ]
    task = None
    if start_positions is not None:
        seq = student["start_logits"].shape[1]
        task = sum(
            cross_entropy(np.asarray(student[k], np.float64), np.clip(p, 0, seq), ignore=seq)
            for k, p in (("start_logits", start_positions), ("end_logits", end_positions))
        )
        task /= 2
    return _task((ce[0] + ce[1]) / 2 * temperature**2, task, alpha_ce, alpha_task)


REFERENCES = {
    "distillation_loss": reference_general,
    "sequence_classification_distillation_loss": reference_sequence,
    "token_classification_distillation_loss": reference_token,
    "question_answering_distillation_loss": reference_qa,
}


# ---------------------------------------------------------------------------------------------------- cases


def padded_mask(lengths: tuple[int, ...], seq: int) -> np.ndarray:
    return (np.arange(seq)[None, :] < np.asarray(lengths)[:, None]).astype(np.int64)


def random_case(name: str, seed: int = 0, *, lengths=(7, 4, 1), vocab: int = 29, dim: int = 12, classes: int = 5):
    """(student, teacher, kwargs) of loss ``name``: float32 arrays at logit scales of a few units, padding rows,
    labels with ignored entries (QA: a start past the sequence and a negative end, both clamped)."""
    rng = np.random.default_rng(seed)
    batch, seq = len(lengths), max(lengths)
    mask = padded_mask(lengths, seq)

    def f32(*shape: int, scale: float = 2.0) -> np.ndarray:
        return (rng.normal(0.0, scale, shape)).astype(np.float32)

    if name == "distillation_loss":
        student = {"logits": f32(batch, seq, vocab), "hidden_states": (f32(batch, seq, dim), f32(batch, seq, dim))}
        teacher = {"logits": f32(batch, seq, vocab), "hidden_states": (f32(batch, seq, dim), f32(batch, seq, dim))}
        teacher["hidden_states"] = (teacher["hidden_states"][0], student["hidden_states"][1] + f32(batch, seq, dim))
        labels = np.where((rng.random((batch, seq)) < 0.4) & (mask == 1), rng.integers(0, vocab, (batch, seq)), IGNORE)
        labels[0, 0] = 3  # at least one target
        return student, teacher, {"attention_mask": mask, "labels": labels.astype(np.int64)}
    if name == "sequence_classification_distillation_loss":
        labels = rng.integers(0, classes, batch).astype(np.int64)
        labels[-1] = IGNORE
        return {"logits": f32(batch, classes)}, {"logits": f32(batch, classes)}, {"labels": labels}
    if name == "token_classification_distillation_loss":
        labels = np.where(mask == 1, rng.integers(0, classes, (batch, seq)), IGNORE).astype(np.int64)
        labels[0, 1] = IGNORE
        student, teacher = {"logits": f32(batch, seq, classes)}, {"logits": f32(batch, seq, classes)}
        return student, teacher, {"attention_mask": mask, "labels": labels}
    student = {"start_logits": f32(batch, seq), "end_logits": f32(batch, seq)}
    teacher = {"start_logits": f32(batch, seq), "end_logits": f32(batch, seq)}
    starts = np.array([2, seq + 3, *([0] * (batch - 2))][:batch], np.int64)
    ends = np.array([3, -2, *([0] * (batch - 2))][:batch], np.int64)
    return student, teacher, {"start_positions": starts, "end_positions": ends}


# ---------------------------------------------------------------------------------------------------- frameworks


def module(framework: str) -> Any:
    return importlib.import_module(FRAMEWORK_MODULES[framework])


def _leaves(outputs: dict[str, Any]) -> dict[str, np.ndarray]:
    """'logits' / 'hidden_states:1' -> array: the differentiable inputs of a case."""
    flat = {}
    for key, value in outputs.items():
        for i, item in enumerate(value) if isinstance(value, tuple) else [(None, value)]:
            flat[key if i is None else f"{key}:{i}"] = item
    return flat


def _rebuild(flat: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in flat.items():
        name, _, index = key.partition(":")
        if index:
            out[name] = (*out.get(name, ()), value)
        else:
            out[name] = value
    return out


def _cast(array: np.ndarray, dtype: str | None) -> np.ndarray:
    if dtype is None:
        return array
    import ml_dtypes

    return array.astype(ml_dtypes.bfloat16)


def run_loss(
    framework: str,
    name: str,
    student: dict[str, Any],
    teacher: dict[str, Any],
    *,
    teacher_dtype: str | None = None,
    **kwargs: Any,
) -> tuple[dict[str, float], dict[str, np.ndarray], dict[str, np.ndarray | None]]:
    """``framework``'s loss ``name`` on numpy inputs converted to its tensors: (losses as float, d loss / d each
    student input (zeros where not connected), d loss / d each teacher input (None: not connected)). ``teacher_dtype="bfloat16"`` hands the
    teacher's tensors over in bfloat16."""
    fn = getattr(module(framework), name)
    s_flat, t_flat = _leaves(student), {k: _cast(v, teacher_dtype) for k, v in _leaves(teacher).items()}
    if framework == "pt":
        import torch

        from distilbert_mf.torch.modeling import numpy_to_tensor

        s_t = {k: torch.tensor(v, requires_grad=True) for k, v in s_flat.items()}
        t_t = {k: numpy_to_tensor(v).clone().requires_grad_(True) for k, v in t_flat.items()}
        losses = fn(_rebuild(s_t), _rebuild(t_t), **kwargs)
        losses["loss"].backward()
        grads = {k: np.zeros_like(s_flat[k]) if v.grad is None else v.grad.numpy() for k, v in s_t.items()}
        teacher_grads = {k: None if v.grad is None else v.grad.float().numpy() for k, v in t_t.items()}
        return {k: float(v.detach()) for k, v in losses.items()}, grads, teacher_grads
    if framework == "tf":
        import tensorflow as tf

        s_t = {k: tf.constant(v) for k, v in s_flat.items()}
        t_t = {k: tf.constant(v) for k, v in t_flat.items()}
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(list(s_t.values()) + list(t_t.values()))
            losses = fn(_rebuild(s_t), _rebuild(t_t), **kwargs)
        grads = {k: tape.gradient(losses["loss"], v) for k, v in s_t.items()}
        grads = {k: np.zeros_like(s_flat[k]) if g is None else g.numpy() for k, g in grads.items()}
        teacher_grads = {k: tape.gradient(losses["loss"], v) for k, v in t_t.items()}
        teacher_grads = {k: None if g is None else np.asarray(g, np.float32) for k, g in teacher_grads.items()}
        return {k: float(v) for k, v in losses.items()}, grads, teacher_grads
    import jax
    import jax.numpy as jnp

    def total(s_arrays, t_arrays):
        losses = fn(_rebuild(s_arrays), _rebuild(t_arrays), **kwargs)
        return losses["loss"], losses

    s_j = {k: jnp.asarray(v) for k, v in s_flat.items()}
    t_j = {k: jnp.asarray(v) for k, v in t_flat.items()}
    (_, losses), (grads, teacher_grads) = jax.value_and_grad(total, argnums=(0, 1), has_aux=True)(s_j, t_j)
    return (
        {k: float(v) for k, v in losses.items()},
        {k: np.asarray(v) for k, v in grads.items()},
        {k: np.asarray(v, np.float32) for k, v in teacher_grads.items()},
    )
