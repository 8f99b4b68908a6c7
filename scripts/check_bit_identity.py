"""Check that two distilbert_mf source trees compute the same numbers, bit for bit.

Typical use, comparing the pre-refactor commit with the current tree::

    git worktree add /tmp/before 1014195
    python scripts/check_bit_identity.py --before /tmp/before --after .

The script writes seeded weights once (numpy + safetensors, transformers' PyTorch names) for every head on two tiny
configs with odd sizes (the second with sinusoidal positions, left out of the file so the loader generates them),
then, for each source tree and each framework (PyTorch, Keras, Flax), starts a fresh Python process whose
``PYTHONPATH`` is that tree, loads every head with ``from_pretrained`` and runs fixed inputs through it:

- padded batches (one row fully padded), with ``output_hidden_states`` / ``output_attentions`` and labels (loss);
- the plain inference call (where the CPU kernels take over) and a 3 x 190 batch (570 tokens: Flax's feed-forward
  row blocks);
- per framework: PyTorch ``sdpa`` and ``eager`` attention, bfloat16, gradients, dropout in training mode from a
  fixed seed; Keras float32 / bfloat16, gradients, seeded dropout; Flax eager / ``nnx.jit``, bfloat16 compute,
  gradients, dropout from ``nnx.Rngs(0)``; the base model with ``inputs_embeds`` and explicit ``position_ids``;
- the loaded weights read back (``canonical_state_dict()``).

Every array goes into one ``.npz`` per tree and framework; the two sides are then compared with ``np.array_equal``
(same shape, same dtype, same bits; NaN equal to NaN). Exit status 0 when every array is identical and both sides
have the same arrays, 1 otherwise.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger("check_bit_identity")

FRAMEWORKS = ("pt", "tf", "flax")
# written out here, not imported: the driver must not depend on either source tree it compares
HEADS = (
    "base",
    "masked_lm",
    "sequence_classification",
    "multiple_choice",
    "token_classification",
    "question_answering",
)
CLASS_NAMES = {
    "base": "DistilBertModel",
    "masked_lm": "DistilBertForMaskedLM",
    "sequence_classification": "DistilBertForSequenceClassification",
    "multiple_choice": "DistilBertForMultipleChoice",
    "token_classification": "DistilBertForTokenClassification",
    "question_answering": "DistilBertForQuestionAnswering",
}
CLASS_PREFIX = {"pt": "", "tf": "TF", "flax": "Flax"}

# two tiny configs with odd sizes; max_position_embeddings covers the 190-token input
CONFIGS: dict[str, dict[str, Any]] = {
    "learned": {
        "vocab_size": 99,
        "dim": 32,
        "n_heads": 4,
        "hidden_dim": 37,
        "n_layers": 2,
        "max_position_embeddings": 200,
        "activation": "gelu",
        "sinusoidal_pos_embds": False,
        "num_labels": 3,
    },
    "sinusoidal": {
        "vocab_size": 101,
        "dim": 36,
        "n_heads": 3,
        "hidden_dim": 53,
        "n_layers": 3,
        "max_position_embeddings": 256,
        "activation": "gelu_new",
        "sinusoidal_pos_embds": True,
        "num_labels": 5,
    },
}
LONG_SEQ = 190  # 3 x 190 = 570 tokens: more than Flax's 512-token feed-forward block


# ----------------------------------------------------------------------------------------------- checkpoints


def canonical_shapes(cfg: dict[str, Any], head: str) -> dict[str, tuple[int, ...]]:
    """transformers' PyTorch state-dict names and shapes for ``head`` (tied projector and sinusoidal table left out,
    as transformers writes them)."""
    v, d, h, p = cfg["vocab_size"], cfg["dim"], cfg["hidden_dim"], cfg["max_position_embeddings"]
    body: dict[str, tuple[int, ...]] = {"embeddings.word_embeddings.weight": (v, d)}
    if not cfg["sinusoidal_pos_embds"]:
        body["embeddings.position_embeddings.weight"] = (p, d)
    body["embeddings.LayerNorm.weight"] = (d,)
    body["embeddings.LayerNorm.bias"] = (d,)
    for i in range(cfg["n_layers"]):
        block = f"transformer.layer.{i}."
        for lin in ("q_lin", "k_lin", "v_lin", "out_lin"):
            body[f"{block}attention.{lin}.weight"] = (d, d)
            body[f"{block}attention.{lin}.bias"] = (d,)
        for norm in ("sa_layer_norm", "output_layer_norm"):
            body[f"{block}{norm}.weight"] = (d,)
            body[f"{block}{norm}.bias"] = (d,)
        body[f"{block}ffn.lin1.weight"] = (h, d)
        body[f"{block}ffn.lin1.bias"] = (h,)
        body[f"{block}ffn.lin2.weight"] = (d, h)
        body[f"{block}ffn.lin2.bias"] = (d,)
    if head == "base":
        return body
    shapes = {f"distilbert.{k}": s for k, s in body.items()}
    labels = cfg["num_labels"]
    head_shapes: dict[str, dict[str, tuple[int, ...]]] = {
        "masked_lm": {
            "vocab_transform.weight": (d, d),
            "vocab_transform.bias": (d,),
            "vocab_layer_norm.weight": (d,),
            "vocab_layer_norm.bias": (d,),
            "vocab_projector.bias": (v,),
        },
        "sequence_classification": {
            "pre_classifier.weight": (d, d),
            "pre_classifier.bias": (d,),
            "classifier.weight": (labels, d),
            "classifier.bias": (labels,),
        },
        "multiple_choice": {
            "pre_classifier.weight": (d, d),
            "pre_classifier.bias": (d,),
            "classifier.weight": (1, d),
            "classifier.bias": (1,),
        },
        "token_classification": {"classifier.weight": (labels, d), "classifier.bias": (labels,)},
        "question_answering": {"qa_outputs.weight": (2, d), "qa_outputs.bias": (2,)},
    }
    shapes.update(head_shapes[head])
    return shapes


def seeded_arrays(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Weights ~ N(0, 0.2), LayerNorm scales ~ 1 + N(0, 0.1), biases ~ N(0, 0.05); float32."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in shapes.items():
        noise = rng.standard_normal(shape)
        if "LayerNorm.weight" in key or "layer_norm.weight" in key:
            value = 1.0 + 0.1 * noise
        elif key.endswith(".bias"):
            value = 0.05 * noise
        else:
            value = 0.2 * noise
        arrays[key] = value.astype(np.float32)
    return arrays


def write_checkpoints(root: Path) -> None:
    """``root/<config>/<head>/{config.json,model.safetensors}``; the body weights are the same for every head."""
    from safetensors.numpy import save_file

    for c, (cfg_name, cfg) in enumerate(CONFIGS.items()):
        base = seeded_arrays(canonical_shapes(cfg, "base"), seed=1000 + c)
        for h, head in enumerate(HEADS):
            folder = root / cfg_name / head
            folder.mkdir(parents=True, exist_ok=True)
            shapes = canonical_shapes(cfg, head)
            extra = seeded_arrays(
                {k: s for k, s in shapes.items() if not k.startswith("distilbert.")}, 2000 + 10 * c + h
            )
            arrays = dict(base) if head == "base" else {f"distilbert.{k}": a for k, a in base.items()}
            if head != "base":
                arrays.update(extra)
            save_file(arrays, str(folder / "model.safetensors"), metadata={"format": "pt"})
            labels = 2 if head == "question_answering" else cfg["num_labels"]  # QA: a start and an end logit
            config = {
                "model_type": "distilbert",
                "architectures": [CLASS_NAMES[head]],
                **cfg,
                "id2label": {str(i): f"tag_{i}" for i in range(labels)},
                "label2id": {f"tag_{i}": i for i in range(labels)},
            }
            config.pop("num_labels")
            (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))


# ------------------------------------------------------------------------------------------------- inputs


def padded_batch(rng: np.random.Generator, shape: tuple[int, ...], vocab: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids in [1, vocab) and a mask whose rows have different amounts of right padding, one fully padded."""
    ids = rng.integers(1, vocab, size=shape).astype(np.int64)
    seq = shape[-1]
    mask = np.ones(shape, dtype=np.int64)
    rows = mask.reshape(-1, seq)
    for r in range(rows.shape[0]):
        keep = seq - (r * 3) % max(seq - 1, 1)
        rows[r, keep:] = 0
    if rows.shape[0] > 2:
        rows[2, :] = 0  # a fully padded row stays finite
    ids = np.where(mask == 1, ids, 0)
    return ids, mask


def head_inputs(cfg: dict[str, Any], head: str, size: str) -> dict[str, np.ndarray]:
    """Fixed inputs with labels for ``head``: ``size`` "small" (seq 11) or "long" (seq 190)."""
    rng = np.random.default_rng({"small": 7, "long": 8}[size] + len(head))
    seq = 11 if size == "small" else LONG_SEQ
    if head == "multiple_choice":
        shape: tuple[int, ...] = (2, 3, seq) if size == "small" else (1, 3, seq)
    else:
        shape = (3, seq)
    ids, mask = padded_batch(rng, shape, cfg["vocab_size"])
    inputs: dict[str, np.ndarray] = {"input_ids": ids, "attention_mask": mask}
    batch = shape[0]
    if head == "masked_lm":
        labels = rng.integers(0, cfg["vocab_size"], size=shape).astype(np.int64)
        labels[rng.random(shape) < 0.6] = -100
        inputs["labels"] = labels
    elif head == "sequence_classification":
        inputs["labels"] = rng.integers(0, cfg["num_labels"], size=(batch,)).astype(np.int64)
    elif head == "multiple_choice":
        inputs["labels"] = rng.integers(0, shape[1], size=(batch,)).astype(np.int64)
    elif head == "token_classification":
        labels = rng.integers(0, cfg["num_labels"], size=shape).astype(np.int64)
        labels[mask == 0] = -100
        inputs["labels"] = labels
    elif head == "question_answering":
        inputs["start_positions"] = np.array([1, seq, seq + 5][:batch], dtype=np.int64)  # in range, ignored, clamped
        inputs["end_positions"] = np.array([seq - 2, 3, -1][:batch], dtype=np.int64)
    return inputs


def without_labels(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: v for k, v in inputs.items() if k not in ("labels", "start_positions", "end_positions")}


def calls(cfg: dict[str, Any], head: str) -> Iterator[tuple[str, dict[str, Any], bool]]:
    """(name, keyword arguments as numpy, whether it is an inference-only call) for every eval-mode call."""
    small, long = head_inputs(cfg, head, "small"), head_inputs(cfg, head, "long")
    yield "small_all", {**small, "output_hidden_states": True, "output_attentions": True}, False
    yield "small_plain", without_labels(small), True
    yield "long_labels", long, True
    if head == "sequence_classification":
        rng = np.random.default_rng(11)
        multi = (rng.random((small["input_ids"].shape[0], cfg["num_labels"])) > 0.5).astype(np.float32)
        yield "small_multilabel", {**without_labels(small), "labels": multi}, False
    if head == "base":
        rng = np.random.default_rng(12)
        embeds = (0.3 * rng.standard_normal((*small["input_ids"].shape, cfg["dim"]))).astype(np.float32)
        yield "inputs_embeds", {"inputs_embeds": embeds, "attention_mask": small["attention_mask"]}, True
        positions = np.arange(3, 3 + small["input_ids"].shape[1], dtype=np.int64)[None, :].repeat(3, axis=0)
        yield "position_ids", {**small, "position_ids": positions, "output_hidden_states": True}, True


# ------------------------------------------------------------------------------------------------- workers


class Recorder:
    """Collects named arrays as float-exact numpy (bfloat16 widened to float32, its dtype kept in the name)."""

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}
        self.errors: dict[str, str] = {}

    def add(self, name: str, value: Any) -> None:
        array = np.asarray(value)
        dtype = array.dtype.name
        if dtype == "bfloat16":
            array = array.astype(np.float32)
        self.arrays[f"{name}|{dtype}"] = np.ascontiguousarray(array)

    def output(self, name: str, out: Any, to_numpy: Callable[[Any], Any]) -> None:
        for key in list(out.keys()):
            value = out[key]
            if value is None:
                continue
            if isinstance(value, (tuple, list)):
                for i, item in enumerate(value):
                    self.add(f"{name}/{key}/{i}", to_numpy(item))
            else:
                self.add(f"{name}/{key}", to_numpy(value))

    def attempt(self, name: str, fn: Callable[[], None]) -> None:
        try:
            fn()
        except Exception as err:  # recorded and compared: a call that fails on one side only is a difference
            first_line = str(err).splitlines()[0] if str(err) else ""
            self.errors[name] = f"{type(err).__name__}: {first_line}"
            logger.warning("%s failed: %s", name, self.errors[name])


def first_call_with_labels(cfg: dict[str, Any], head: str) -> dict[str, Any] | None:
    """The first call's keyword arguments when it has labels (a loss to differentiate), else None."""
    _, kwargs, _ = next(calls(cfg, head))
    return kwargs if ("labels" in kwargs or "start_positions" in kwargs) else None


def groups(framework: str, checkpoints: Path, dtypes: tuple[str, ...]) -> Iterator[tuple[str, Any, Path, str, str]]:
    """(config name, model class, checkpoint folder, head, dtype name) for every config, head and dtype."""
    import importlib

    module = importlib.import_module(
        {"pt": "distilbert_mf.torch", "tf": "distilbert_mf.tensorflow"}.get(framework, "distilbert_mf.flax")
    )
    for cfg_name in CONFIGS:
        for head in HEADS:
            cls = getattr(module, CLASS_PREFIX[framework] + CLASS_NAMES[head])
            for dtype_name in dtypes:
                yield cfg_name, cls, checkpoints / cfg_name / head, head, dtype_name


def run_pt(rec: Recorder, cfg_name: str, cls: Any, folder: Path, head: str, dtype_name: str, attn: str) -> None:
    import torch

    def to_numpy(t: Any) -> np.ndarray:
        return t.detach().float().numpy() if t.dtype == torch.bfloat16 else t.detach().numpy()

    dtype = getattr(torch, dtype_name)

    def tensors(kwargs: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in kwargs.items():
            t = torch.from_numpy(v) if isinstance(v, np.ndarray) else v
            out[k] = t.to(dtype) if k == "inputs_embeds" else t
        return out

    cfg, tag = CONFIGS[cfg_name], f"pt/{cfg_name}/{head}/{attn}/{dtype_name}"
    torch.manual_seed(0)
    model = cls.from_pretrained(folder, attn_implementation=attn, dtype=dtype)
    if attn == "sdpa" and dtype_name == "float32":
        for key, array in model.canonical_state_dict().items():
            rec.add(f"pt/{cfg_name}/{head}/weights/{key}", np.array(array))
    for call, kwargs, inference in calls(cfg, head):
        if dtype_name == "bfloat16" and not inference:
            continue
        with torch.no_grad():
            rec.output(f"{tag}/{call}", model(**tensors(kwargs)), to_numpy)
    if dtype_name != "float32":
        return
    kwargs = first_call_with_labels(cfg, head)
    if kwargs is not None:  # gradients of the first call's loss (the autograd path, no CPU kernels)
        model.zero_grad()
        out = model(**tensors(kwargs))
        out.loss.backward()
        rec.output(f"{tag}/grad_forward", out, to_numpy)
        for key, p in model.named_parameters():
            if p.grad is not None:
                rec.add(f"{tag}/grad/{key}", to_numpy(p.grad))
    model.train()  # dropout from a fixed seed
    torch.manual_seed(1234)
    _, kwargs, _ = next(calls(cfg, head))
    rec.output(f"{tag}/train_dropout", model(**tensors(kwargs)), to_numpy)


def worker_pt(checkpoints: Path, rec: Recorder) -> None:
    for cfg_name, cls, folder, head, dtype_name in groups("pt", checkpoints, ("float32", "bfloat16")):
        for attn in ("sdpa", "eager"):
            tag = f"pt/{cfg_name}/{head}/{attn}/{dtype_name}"
            rec.attempt(tag, functools.partial(run_pt, rec, cfg_name, cls, folder, head, dtype_name, attn))


def run_tf(rec: Recorder, cfg_name: str, cls: Any, folder: Path, head: str, dtype_name: str) -> None:
    import keras
    import tensorflow as tf

    to_numpy = keras.ops.convert_to_numpy
    cfg, tag = CONFIGS[cfg_name], f"tf/{cfg_name}/{head}/{dtype_name}"
    keras.utils.set_random_seed(0)
    model = cls.from_pretrained(folder, dtype=dtype_name)
    if dtype_name == "float32":
        for key, array in model.canonical_state_dict().items():
            rec.add(f"tf/{cfg_name}/{head}/weights/{key}", np.array(array))
    for call, kwargs, inference in calls(cfg, head):
        if dtype_name == "bfloat16" and not inference:
            continue
        rec.output(f"{tag}/{call}", model(**kwargs, training=False), to_numpy)
    if dtype_name != "float32":
        return
    kwargs = first_call_with_labels(cfg, head)
    if kwargs is not None:
        with tf.GradientTape() as tape:
            out = model(**kwargs, training=False)
        grads = tape.gradient(out["loss"], model.trainable_variables)
        for variable, grad in zip(model.trainable_variables, grads, strict=True):
            if grad is not None:
                rec.add(f"{tag}/grad/{variable.path}", to_numpy(tf.convert_to_tensor(grad)))
    keras.utils.set_random_seed(1234)
    _, kwargs, _ = next(calls(cfg, head))
    rec.output(f"{tag}/train_dropout", model(**kwargs, training=True), to_numpy)


def worker_tf(checkpoints: Path, rec: Recorder) -> None:
    for cfg_name, cls, folder, head, dtype_name in groups("tf", checkpoints, ("float32", "bfloat16")):
        tag = f"tf/{cfg_name}/{head}/{dtype_name}"
        rec.attempt(tag, functools.partial(run_tf, rec, cfg_name, cls, folder, head, dtype_name))


def run_flax(rec: Recorder, cfg_name: str, cls: Any, folder: Path, head: str, dtype_name: str) -> None:
    import jax
    import jax.numpy as jnp
    from flax import nnx

    to_numpy = np.asarray
    cfg, tag = CONFIGS[cfg_name], f"flax/{cfg_name}/{head}/{dtype_name}"
    dtype = None if dtype_name == "float32" else jnp.dtype(dtype_name)  # compute dtype; parameters stay float32
    model = cls.from_pretrained(folder, dtype=dtype, rngs=nnx.Rngs(0))
    if dtype_name == "float32":
        for key, array in model.canonical_state_dict().items():
            rec.add(f"flax/{cfg_name}/{head}/weights/{key}", np.array(array))

    def split(kwargs: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        arrays = {k: jnp.asarray(v) for k, v in kwargs.items() if isinstance(v, np.ndarray)}
        return arrays, {k: v for k, v in kwargs.items() if not isinstance(v, np.ndarray)}

    for call, kwargs, inference in calls(cfg, head):
        if dtype_name == "bfloat16" and not inference:
            continue
        rec.output(f"{tag}/{call}", model(**kwargs), to_numpy)
        if inference and dtype_name == "float32":
            arrays, flags = split(kwargs)
            jitted = nnx.jit(functools.partial(call_model, **flags))
            rec.output(f"{tag}/{call}/jit", jitted(model, arrays), to_numpy)
    if dtype_name != "float32":
        return
    kwargs = first_call_with_labels(cfg, head)
    if kwargs is not None:
        arrays, flags = split(kwargs)
        grads = nnx.grad(lambda m: m(**arrays, **flags).loss)(model)
        for path, leaf in jax.tree_util.tree_leaves_with_path(grads):
            rec.add(f"{tag}/grad/{jax.tree_util.keystr(path)}", to_numpy(leaf))
    model.train()  # dropout from nnx.Rngs(0)
    _, kwargs, _ = next(calls(cfg, head))
    rec.output(f"{tag}/train_dropout", model(**kwargs), to_numpy)


def call_model(model: Any, arrays: dict[str, Any], **flags: Any) -> Any:
    return model(**arrays, **flags)


def worker_flax(checkpoints: Path, rec: Recorder) -> None:
    for cfg_name, cls, folder, head, dtype_name in groups("flax", checkpoints, ("float32", "bfloat16")):
        tag = f"flax/{cfg_name}/{head}/{dtype_name}"
        rec.attempt(tag, functools.partial(run_flax, rec, cfg_name, cls, folder, head, dtype_name))


WORKERS = {"pt": worker_pt, "tf": worker_tf, "flax": worker_flax}


def run_worker(framework: str, source: Path, checkpoints: Path, output: Path) -> None:
    import distilbert_mf

    loaded_from = Path(distilbert_mf.__file__).resolve()
    if not loaded_from.is_relative_to(source.resolve()):
        raise RuntimeError(f"distilbert_mf was imported from {loaded_from}, not from the source tree {source}")
    rec = Recorder()
    start = time.perf_counter()
    WORKERS[framework](checkpoints, rec)
    np.savez(output, **rec.arrays)
    output.with_suffix(".errors.json").write_text(json.dumps(rec.errors, indent=2, sort_keys=True))
    logger.info(
        "%s from %s: %d arrays, %d failed groups in %.1f s",
        framework,
        source,
        len(rec.arrays),
        len(rec.errors),
        time.perf_counter() - start,
    )


# ---------------------------------------------------------------------------------------------- comparison


def compare(before: Path, after: Path, framework: str) -> dict[str, Any]:
    """Arrays, identical arrays, differing arrays (with max |diff|) and arrays present on one side only."""
    with np.load(before) as b, np.load(after) as a:
        keys_b, keys_a = set(b.files), set(a.files)
        common = sorted(keys_b & keys_a)
        differing = []
        for key in common:
            x, y = b[key], a[key]
            if x.shape == y.shape and np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                continue
            if x.shape != y.shape:
                detail = f"shape {x.shape} vs {y.shape}"
            else:
                diff = np.abs(x.astype(np.float64) - y.astype(np.float64))
                detail = f"max |diff| {np.nanmax(diff):.3g}, {int((diff > 0).sum())} of {diff.size} elements"
            differing.append((key, detail))
    errors_b = json.loads(before.with_suffix(".errors.json").read_text())
    errors_a = json.loads(after.with_suffix(".errors.json").read_text())
    return {
        "framework": framework,
        "arrays_before": len(keys_b),
        "arrays_after": len(keys_a),
        "compared": len(common),
        "identical": len(common) - len(differing),
        "differing": differing,
        "only_before": sorted(keys_b - keys_a),
        "only_after": sorted(keys_a - keys_b),
        "errors_before": errors_b,
        "errors_after": errors_a,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--before", type=Path, help="distilbert_mf source tree to compare with (a git worktree)")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1], help="default: this tree")
    parser.add_argument("--work", type=Path, default=None, help="folder for checkpoints and .npz (default: temp)")
    parser.add_argument("--frameworks", default=",".join(FRAMEWORKS), help="comma-separated subset of pt,tf,flax")
    parser.add_argument("--summary", type=Path, default=None, help="also write the comparison as JSON here")
    parser.add_argument("--worker", choices=FRAMEWORKS, help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--output", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.worker:
        run_worker(args.worker, args.source, args.work, args.output)
        return 0

    if args.before is None:
        parser.error("--before is required: the distilbert_mf source tree to compare with")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()]
    unknown = sorted(set(frameworks) - set(FRAMEWORKS))
    if unknown:
        parser.error(f"--frameworks: unknown {unknown}; choose from {', '.join(FRAMEWORKS)}")
    for side in (args.before, args.after):
        if not (side / "distilbert_mf" / "__init__.py").is_file():
            parser.error(f"{side} holds no distilbert_mf package")
    work = args.work or Path(tempfile.mkdtemp(prefix="bit_identity_"))
    checkpoints = work / "checkpoints"
    write_checkpoints(checkpoints)
    results = []
    for framework in frameworks:
        outputs = {}
        for side_name, source in (("before", args.before), ("after", args.after)):
            output = work / f"{framework}_{side_name}.npz"
            env = dict(os.environ)
            env.update(
                PYTHONPATH=str(source.resolve()),
                TF_CPP_MIN_LOG_LEVEL="3",
                CUDA_VISIBLE_DEVICES="",
                JAX_PLATFORMS="cpu",
                HF_HUB_OFFLINE="1",
                PYTHONHASHSEED="0",
            )
            command = [sys.executable, str(Path(__file__).resolve()), "--worker", framework]
            command += ["--source", str(source), "--work", str(checkpoints), "--output", str(output)]
            subprocess.run(command, env=env, cwd=work, check=True)
            outputs[side_name] = output
        results.append(compare(outputs["before"], outputs["after"], framework))

    same = True
    for r in results:
        ok = not r["differing"] and not r["only_before"] and not r["only_after"]
        ok = ok and not r["errors_before"] and not r["errors_after"]  # every call is valid: none may fail
        same = same and ok
        logger.info(
            "%-4s arrays before %d, after %d, compared %d, identical %d, differing %d, only before %d, only after %d, "
            "failed groups before %d / after %d",
            r["framework"],
            r["arrays_before"],
            r["arrays_after"],
            r["compared"],
            r["identical"],
            len(r["differing"]),
            len(r["only_before"]),
            len(r["only_after"]),
            len(r["errors_before"]),
            len(r["errors_after"]),
        )
        for key, detail in r["differing"][:10]:
            logger.info("     differs: %s (%s)", key, detail)
        for key in r["only_before"][:5]:
            logger.info("     only before: %s", key)
        for key in r["only_after"][:5]:
            logger.info("     only after: %s", key)
        for key in sorted(set(r["errors_before"]) | set(r["errors_after"])):
            logger.info(
                "     failed %s: before %s | after %s", key, r["errors_before"].get(key), r["errors_after"].get(key)
            )
    total = sum(r["compared"] for r in results)
    identical = sum(r["identical"] for r in results)
    logger.info("total: %d arrays compared, %d identical -> %s", total, identical, "SAME" if same else "DIFFERENT")
    if args.summary:
        args.summary.write_text(json.dumps({"same": same, "frameworks": results}, indent=2))
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
