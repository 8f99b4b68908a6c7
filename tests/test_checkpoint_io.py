"""Atomic writes, the core-only guarantee, and interoperability of our files with torch itself."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from distilbert_mf.checkpoint import expected_shapes, flax_msgpack, pytorch_bin, tf_h5
from distilbert_mf.checkpoint.io import FORMATS, WEIGHTS_NAMES, read_weights, write_weights

FIXTURES = Path(__file__).parent / "fixtures" / "transformers457"


def state_for(config, head: str = "sequence_classification", seed: int = 0, dtype=np.float32) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(config, head).items()}


class Interrupted(KeyboardInterrupt):
    """Stands in for Ctrl-C (a BaseException) arriving in the middle of a write."""


def interrupt_after(monkeypatch: pytest.MonkeyPatch, module, name: str, calls: int) -> None:
    original = getattr(module, name)
    count = {"n": 0}

    def wrapper(*args, **kwargs):
        count["n"] += 1
        if count["n"] > calls:
            raise Interrupted(f"interrupted in {name}")
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, wrapper)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# where each writer can be interrupted with part of the file already written (safetensors: see the test)
INTERRUPTIONS = {
    "pytorch_bin": (pytorch_bin, "_write_record", 3),
    "tf_h5": (tf_h5, "_create", 5),
    "flax_msgpack": (os, "fsync", 0),
}


@pytest.mark.parametrize("fmt", FORMATS)
def test_interrupted_write_leaves_previous_file_intact(tmp_path: Path, tiny_config, monkeypatch, fmt: str) -> None:
    write_weights(tmp_path, state_for(tiny_config, seed=1), fmt, head="sequence_classification", config=tiny_config)
    before = snapshot(tmp_path)
    if fmt == "safetensors":
        import safetensors.numpy

        real_save = safetensors.numpy.save_file

        def partial_save(tensors, filename, metadata=None):
            real_save(dict(list(tensors.items())[:3]), filename, metadata=metadata)  # a partial file on disk...
            raise Interrupted("interrupted mid-write")  # ...then the interruption

        monkeypatch.setattr(safetensors.numpy, "save_file", partial_save)
    else:
        module, name, calls = INTERRUPTIONS[fmt]
        interrupt_after(monkeypatch, module, name, calls)
    with pytest.raises(Interrupted):
        write_weights(tmp_path, state_for(tiny_config, seed=2), fmt, head="sequence_classification", config=tiny_config)
    assert snapshot(tmp_path) == before  # same files, same bytes, no temporary left behind


def test_interrupted_sharded_write_keeps_the_single_file(tmp_path: Path, tiny_config, monkeypatch) -> None:
    state = state_for(tiny_config)
    write_weights(tmp_path, state, "pytorch_bin", head="sequence_classification", config=tiny_config)
    before = snapshot(tmp_path)
    interrupt_after(monkeypatch, pytorch_bin, "write_pytorch_bin", 2)  # the third shard fails
    with pytest.raises(Interrupted):
        write_weights(
            tmp_path, state, "pytorch_bin", head="sequence_classification", config=tiny_config, max_shard_size="4KB"
        )
    after = snapshot(tmp_path)
    assert after["pytorch_model.bin"] == before["pytorch_model.bin"]
    assert "pytorch_model.bin.index.json" not in after  # the index is written last: no half-sharded checkpoint
    assert read_weights([tmp_path / "pytorch_model.bin"], "pytorch_bin").keys() == state.keys()


def test_no_temporary_files_after_success(tmp_path: Path, tiny_config) -> None:
    for fmt in FORMATS:
        write_weights(
            tmp_path,
            state_for(tiny_config),
            fmt,
            head="sequence_classification",
            config=tiny_config,
            max_shard_size="8KB",
        )
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_core_only_load_imports_no_framework(shared_data: Path) -> None:
    """The tiny-random checkpoint (and every format) loads into numpy without torch / tensorflow / jax."""
    code = f"""
import sys
from pathlib import Path
from distilbert_mf.checkpoint import load_pretrained
from distilbert_mf.checkpoint.io import read_weights
config, arrays, report = load_pretrained({str(shared_data / "tiny-random-distilbert")!r}, "masked_lm")
assert arrays["vocab_projector.weight"].shape == (1124, 32), arrays["vocab_projector.weight"].shape
fixtures = Path({str(FIXTURES)!r})
for fmt, name in {dict(WEIGHTS_NAMES)!r}.items():
    if (fixtures / "masked_lm" / name).is_file():
        assert read_weights([fixtures / "masked_lm" / name], fmt)
loaded = {{m.split(".")[0] for m in sys.modules}}
print(sorted(loaded & {{"torch", "tensorflow", "jax", "jaxlib", "flax", "keras", "transformers"}}))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stderr


@pytest.mark.torch
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16], ids=["f32", "f16", "bf16"])
def test_torch_loads_our_bin_files(tmp_path: Path, tiny_config, dtype) -> None:
    import torch

    state = state_for(tiny_config, "masked_lm", dtype=dtype)
    state["vocab_projector.weight"] = state["distilbert.embeddings.word_embeddings.weight"]
    write_weights(tmp_path, state, "pytorch_bin", head="masked_lm", config=tiny_config)
    for mmap in (False, True):
        loaded = torch.load(tmp_path / "pytorch_model.bin", weights_only=True, mmap=mmap)
        assert loaded.keys() == state.keys()
        for key, tensor in loaded.items():
            raw = tensor.view(torch.int16).numpy() if tensor.dtype == torch.bfloat16 else tensor.numpy()
            assert raw.tobytes() == state[key].tobytes() and tuple(tensor.shape) == state[key].shape, key
        tied = loaded["vocab_projector.weight"]
        assert tied.data_ptr() == loaded["distilbert.embeddings.word_embeddings.weight"].data_ptr()


@pytest.mark.torch
def test_restricted_and_torch_readers_agree_on_torch_files(tmp_path: Path) -> None:
    import torch

    state = {
        "transposed": torch.randn(3, 5).t(),  # a non-contiguous view
        "offset": torch.arange(10, dtype=torch.int64)[3:],  # a view at a storage offset
        "bf16": torch.randn(4, dtype=torch.bfloat16),
        "scalar": torch.tensor(2.5),
        "param": torch.nn.Parameter(torch.randn(2, 2)),
    }
    for legacy in (False, True):
        path = tmp_path / f"legacy{legacy}.bin"
        torch.save(state, path, _use_new_zipfile_serialization=not legacy)
        ours = pytorch_bin.read_pytorch_bin(path)
        theirs = pytorch_bin.read_pytorch_bin(path, reader="torch")
        assert ours.keys() == theirs.keys() == state.keys()
        for key in state:
            assert ours[key].dtype == theirs[key].dtype and ours[key].shape == theirs[key].shape
            assert ours[key].tobytes() == theirs[key].tobytes(), key


def test_flax_msgpack_chunked_arrays_are_read(tmp_path: Path, monkeypatch) -> None:
    """flax splits arrays above 2**30 bytes into chunk maps; shrink the limit to exercise that path."""
    monkeypatch.setattr(flax_msgpack, "MAX_CHUNK_SIZE", 64)
    weight = np.random.default_rng(0).standard_normal((12, 7)).astype(np.float32)
    flax_msgpack.write_flax_msgpack(tmp_path / "f.msgpack", {"classifier/kernel": weight})
    raw = (tmp_path / "f.msgpack").read_bytes()
    assert b"__msgpack_chunked_array__" in raw
    got = flax_msgpack.read_flax_msgpack(tmp_path / "f.msgpack")
    np.testing.assert_array_equal(got["classifier.weight"], weight.T)


def test_written_files_get_ordinary_permissions(tmp_path: Path, tiny_config) -> None:
    """Temporary files are private; the renamed result gets what a plain open() would give (0o666 & ~umask)."""
    umask = os.umask(0)
    os.umask(umask)
    for fmt in FORMATS:
        for path in write_weights(tmp_path / fmt, state_for(tiny_config), fmt, head="base", config=tiny_config):
            assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path
