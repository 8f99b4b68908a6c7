"""Load files written by distilbert_mf's writers with transformers 4.57.6's PyTorch, TF and Flax classes.

For every head, every format (single file and sharded) and float32 / float16 / bfloat16, this writes the weights of
a random transformers PyTorch model with :func:`distilbert_mf.checkpoint.io.write_weights` (plus our
``config.json``), loads the folder with the transformers class that reads that format, and checks that

- no weight is missing or unexpected and every loaded parameter equals the source bit for bit, and
- the loaded model's outputs equal the source model's (same framework: exactly; TF / Flax: max |diff| <= 1e-5).

Run with the reference environment (it needs transformers 4.57 with TF and Flax; distilbert_mf needs no install):

    PYTHONPATH=. /work/ref457/bin/python scripts/check_transformers457.py

Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import logging
import os
import sys
import tempfile

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import ml_dtypes
import numpy as np
import torch
import transformers

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint.io import write_weights
from distilbert_mf.checkpoint.names import ARCHITECTURES as CLASSES  # head -> PyTorch class name

SIZES = dict(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64)
LOADER = {"safetensors": "", "pytorch_bin": "", "tf_h5": "TF", "flax_msgpack": "Flax"}
TOLERANCE = 1e-5  # across frameworks
# Within PyTorch the weights are checked bit for bit; outputs may still differ by float rounding because torch
# memory-maps safetensors tensors at 8-byte (not 64-byte) aligned addresses, which changes the BLAS kernels'
# summation order (measured 6e-8 on multiple_choice; cloning the parameters gives exactly 0).
SAME_FRAMEWORK_TOLERANCE = 1e-6
log = logging.getLogger("check_transformers457")


def source_model(head: str, seed: int, **extra) -> tuple[torch.nn.Module, DistilBertConfig]:
    torch.manual_seed(seed)
    labels = 2 if head == "question_answering" else 3
    model = getattr(transformers, CLASSES[head])(transformers.DistilBertConfig(**SIZES, num_labels=labels, **extra))
    with torch.no_grad():
        for name, param in model.named_parameters():
            if not (extra.get("sinusoidal_pos_embds") and "position_embeddings" in name):
                param.normal_(std=0.2)
    config = DistilBertConfig(**SIZES, num_labels=labels, **extra)
    return model.eval(), config


def numpy_state(model: torch.nn.Module, dtype: str) -> dict[str, np.ndarray]:
    out = {}
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach().to(getattr(torch, dtype)).contiguous()
        if tensor.dtype == torch.bfloat16:
            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = tensor.numpy()
    return out


def inputs(head: str) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shape = (2, 3, 7) if head == "multiple_choice" else (2, 7)
    ids = rng.integers(1, SIZES["vocab_size"], size=shape)
    mask = np.ones(shape, dtype=np.int64)
    mask[..., -2:] = 0
    return {"input_ids": ids, "attention_mask": mask}


def outputs(model, prefix: str, head: str) -> list[np.ndarray]:
    feed = inputs(head)
    if prefix == "":
        with torch.no_grad():
            out = model(**{k: torch.from_numpy(v) for k, v in feed.items()})
    elif prefix == "TF":
        out = model(feed, training=False)
    else:
        out = model(**feed)
    return [np.asarray(v, dtype=np.float32) if prefix else v.float().numpy() for v in out.to_tuple()]


def loaded_params(model, prefix: str) -> dict[str, np.ndarray]:
    """The loaded model's parameters as canonical (PyTorch-layout) arrays, to compare bit for bit."""
    from distilbert_mf.checkpoint.layouts import from_flax_path, from_tf_name

    if prefix == "":
        return numpy_state(model, str(next(model.parameters()).dtype).split(".")[-1])
    out = {}
    if prefix == "TF":
        for weight in model.weights:
            key, transpose = from_tf_name(weight.name.split("/", 1)[1])
            value = weight.numpy()
            out[key] = value.T if transpose else value
        return out
    flat = {}

    def walk(tree, path=()):
        for k, v in tree.items():
            walk(v, (*path, k)) if isinstance(v, dict) else flat.__setitem__((*path, k), np.asarray(v))

    walk(model.params)
    for path, value in flat.items():
        key, transpose = from_flax_path(path)
        out[key] = value.T if transpose else value
    return out


def same_bits(a: np.ndarray, b: np.ndarray) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
    )


def check(head: str, fmt: str, dtype: str, shard: str, seed: int, **extra) -> list[str]:
    model, config = source_model(head, seed, **extra)
    state = numpy_state(model, dtype)
    problems: list[str] = []
    label = f"{head:24s} {fmt:13s} {dtype:9s} {'sharded' if shard != '5GB' else 'single':7s}"
    with tempfile.TemporaryDirectory() as folder:
        config.save_pretrained(folder)
        write_weights(folder, state, fmt, head=head, config=config, max_shard_size=shard)
        prefix = LOADER[fmt]
        cls = getattr(transformers, prefix + CLASSES[head])
        kwargs = {"dtype": getattr(torch, dtype)} if prefix == "" else {}
        if prefix == "Flax":
            loaded = cls.from_pretrained(folder)
        else:
            loaded, info = cls.from_pretrained(folder, output_loading_info=True, **kwargs)
            missing = [k for k in info["missing_keys"] if "dropout" not in k]
            if missing or info["unexpected_keys"] or info.get("mismatched_keys"):
                problems.append(f"{label}: missing {missing} unexpected {info['unexpected_keys']}")
        got = loaded_params(loaded, prefix)
        for key, value in state.items():
            key = key if prefix != "TF" or key.startswith("distilbert.") or head != "base" else "distilbert." + key
            if key not in got:
                tied = key == "vocab_projector.weight" and prefix  # TF / Flax keep no tied copy
                generated = "position_embeddings" in key and prefix == "Flax" and extra.get("sinusoidal_pos_embds")
                if not (tied or generated):
                    problems.append(f"{label}: {key} not in the loaded model")
                continue
            if not same_bits(np.ascontiguousarray(got[key]), np.ascontiguousarray(value)):
                problems.append(f"{label}: {key} differs after loading")
        if dtype == "float32":
            want = outputs(model, "", head)
            have = outputs(loaded, prefix, head)
            diff = max(float(np.max(np.abs(w - h))) for w, h in zip(want, have))
            limit = SAME_FRAMEWORK_TOLERANCE if prefix == "" else TOLERANCE
            if diff > limit:
                problems.append(f"{label}: outputs differ by {diff:.3g} (allowed {limit})")
            log.info("%s ok, max |diff| %.2e", label, diff)
        else:
            log.info("%s ok (weights bit-exact)", label)
    return problems


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("transformers", "absl", "tensorflow", "jax"):
        logging.getLogger(name).setLevel(logging.ERROR)
    transformers.logging.set_verbosity_error()
    if not transformers.__version__.startswith("4.57"):
        log.error("needs transformers 4.57.x with TF and Flax, found %s", transformers.__version__)
        return 1
    problems: list[str] = []
    seed = 0
    for head in CLASSES:
        for fmt in LOADER:
            for dtype in ("float32", "float16", "bfloat16"):
                if fmt == "tf_h5" and dtype != "float32":
                    continue  # transformers' TF classes build float32 variables whatever the file holds
                for shard in ("5GB", "8KB"):
                    seed += 1
                    problems += check(head, fmt, dtype, shard, seed)
    for fmt in LOADER:  # sinusoidal table: Flax files must omit it, the others keep it
        seed += 1
        problems += check("base", fmt, "float32", "5GB", seed, sinusoidal_pos_embds=True)
    for line in problems:
        log.error("FAIL %s", line)
    log.info("%s: %d problem(s)", "FAILED" if problems else "PASSED", len(problems))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
