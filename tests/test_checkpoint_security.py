"""A ``pytorch_model.bin`` is a pickle: loading one must never run code the file carries."""

from __future__ import annotations

import builtins
import os
import pickle
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf.checkpoint.io import read_weights
from distilbert_mf.checkpoint.pytorch_bin import CorruptCheckpointError, UnsafePickleError, read_pytorch_bin

LEGACY_MAGIC = 0x1950A86A20F9469CFC6C


class _System:
    """Pickles as ``os.system(command)`` (GLOBAL 'posix system' on Linux)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _Exec:
    """Pickles as ``builtins.exec(source)``."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __reduce__(self):
        return (builtins.exec, (self.source,))


def payloads(marker: Path) -> dict[str, bytes]:
    return {
        "os.system": pickle.dumps({"weight": _System(f"touch {marker}")}, protocol=2),
        "builtins.exec": pickle.dumps({"weight": _Exec(f"open({str(marker)!r}, 'w').close()")}, protocol=2),
    }


def zip_checkpoint(path: Path, data_pkl: bytes) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", data_pkl)
        archive.writestr("archive/byteorder", "little")
        archive.writestr("archive/version", "3\n")
    return path


def legacy_checkpoint(path: Path, main_pickle: bytes) -> Path:
    head = b"".join(pickle.dumps(v, protocol=2) for v in (LEGACY_MAGIC, 1001, {"little_endian": True}))
    path.write_bytes(head + main_pickle + pickle.dumps([], protocol=2))
    return path


@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_payload_is_live(tmp_path: Path, payload: str) -> None:
    """The crafted pickles really run code under a plain unpickler (so the refusals below mean something)."""
    marker = tmp_path / "ran"
    data = payloads(marker)[payload]
    subprocess.run(
        [sys.executable, "-c", "import pickle, sys; pickle.loads(sys.stdin.buffer.read())"], input=data, check=True
    )
    assert marker.exists()


@pytest.mark.parametrize("reader", ["restricted", pytest.param("torch", marks=pytest.mark.torch)])
@pytest.mark.parametrize("layout", ["zip", "legacy"])
@pytest.mark.parametrize("payload", ["os.system", "builtins.exec"])
def test_malicious_pickle_is_refused(tmp_path: Path, reader: str, layout: str, payload: str) -> None:
    marker = tmp_path / "pwned"
    data = payloads(marker)[payload]
    path = tmp_path / "pytorch_model.bin"
    zip_checkpoint(path, data) if layout == "zip" else legacy_checkpoint(path, data)
    if reader == "restricted":
        global_name = "posix.system" if payload == "os.system" else "__builtin__.exec"  # protocol 2 names
        message = rf"refusing to load.*'{global_name}'.*Nothing from the file was executed"
    else:
        message = "torch.load\\(weights_only=True\\) refused the file; nothing from it was executed"
    with pytest.raises(UnsafePickleError, match=message):
        read_pytorch_bin(path, reader=reader)
    with pytest.raises(UnsafePickleError):
        read_weights([path], "pytorch_bin", pytorch_reader=reader)
    assert not marker.exists()


def test_other_globals_are_refused(tmp_path: Path) -> None:
    """Even harmless-looking globals outside the allow-list are refused, by name."""
    for module, name in [
        ("numpy", "array"),
        ("torch", "load"),
        ("torch._utils", "_rebuild_qtensor"),
        ("collections", "defaultdict"),
        ("__builtin__", "eval"),
    ]:
        data = b"\x80\x02c" + f"{module}\n{name}\n".encode() + b")R."
        path = zip_checkpoint(tmp_path / f"{name}.bin", data)
        with pytest.raises(UnsafePickleError, match=f"'{module}.{name}'"):
            read_pytorch_bin(path)


def test_not_a_state_dict_and_corrupt_files(tmp_path: Path) -> None:
    path = zip_checkpoint(tmp_path / "list.bin", pickle.dumps([1, 2, 3], protocol=2))
    with pytest.raises(CorruptCheckpointError, match="not a state dict"):
        read_pytorch_bin(path)
    path = zip_checkpoint(tmp_path / "trunc.bin", pickle.dumps({"a": 1}, protocol=2)[:-3])
    with pytest.raises(CorruptCheckpointError, match="not a readable torch checkpoint"):
        read_pytorch_bin(path)
    with zipfile.ZipFile(tmp_path / "nopkl.bin", "w") as archive:
        archive.writestr("archive/version", "3\n")
    with pytest.raises(CorruptCheckpointError, match=r"without data.pkl"):
        read_pytorch_bin(tmp_path / "nopkl.bin")
    with pytest.raises(ValueError, match=r"unknown pytorch_model.bin reader 'pickle'"):
        read_pytorch_bin(path, reader="pickle")


def test_truncated_storage_is_an_error(tmp_path: Path) -> None:
    from distilbert_mf.checkpoint.pytorch_bin import write_pytorch_bin

    good = write_pytorch_bin(tmp_path / "good.bin", {"w": np.arange(64, dtype=np.float32)})
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(tmp_path / "bad.bin", "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            dst.writestr(info.filename, data[:100] if "/data/" in info.filename else data)
    with pytest.raises(CorruptCheckpointError, match="has 100 bytes, needs 256"):
        read_pytorch_bin(tmp_path / "bad.bin")


def test_reader_needs_no_torch_and_runs_nothing(tmp_path: Path) -> None:
    """In a fresh interpreter: reading a real .bin imports no framework."""
    from distilbert_mf.checkpoint.pytorch_bin import write_pytorch_bin

    path = write_pytorch_bin(tmp_path / "w.bin", {"a": np.ones((2, 3), np.float32)})
    code = (
        "import sys; from distilbert_mf.checkpoint.pytorch_bin import read_pytorch_bin; "
        f"s = read_pytorch_bin({str(path)!r}); assert s['a'].shape == (2, 3); "
        "print(sorted({'torch', 'tensorflow', 'jax'} & {m.split('.')[0] for m in sys.modules}))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_pickle_memo_and_parameters_are_supported(tmp_path: Path) -> None:
    """Real files memoise globals and may wrap tensors in _rebuild_parameter; both are allowed."""
    pid = b"(X\x07\x00\x00\x00storagectorch\nFloatStorage\nq\x00X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x02tQ"
    hooks = b"ccollections\nOrderedDict\nq\x01)R"  # memoised (BINPUT 1) and reused below (BINGET 1)
    tensor = b"ctorch._utils\n_rebuild_tensor_v2\n(" + pid + b"K\x00K\x02\x85K\x01\x85\x89" + hooks + b"tR"
    param = b"ctorch._utils\n_rebuild_parameter\n(" + tensor + b"\x88h\x01)RtR"
    pickle_bytes = b"\x80\x02}(X\x01\x00\x00\x00p" + param + b"u."
    path = tmp_path / "param.bin"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickle_bytes)
        archive.writestr("archive/data/0", np.array([1.5, -2.0], dtype=np.float32).tobytes())
    state = read_pytorch_bin(path)
    np.testing.assert_array_equal(state["p"], np.array([1.5, -2.0], dtype=np.float32))
