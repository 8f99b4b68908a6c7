"""``pytorch_model.bin`` without torch: a restricted reader that never runs pickle code, and a writer.

A ``.bin`` file is what ``torch.save(state_dict)`` writes: a zip archive holding ``data.pkl`` (a pickle whose
tensors are ``torch._utils._rebuild_tensor_v2(storage, offset, size, stride, ...)`` calls on persistent storage
ids) and one raw little-endian record ``data/<key>`` per storage. Files from torch < 1.6 use the legacy layout:
several pickles back to back followed by the raw storages.

Reading: :func:`read_pytorch_bin` parses the pickle with an ``Unpickler`` whose ``find_class`` hands out only
harmless stand-ins for the handful of globals a tensor state dict needs and refuses every other global with
:class:`UnsafePickleError` naming it — so a file crafted to run code (``os.system``, ``builtins.exec``, ...)
is refused before anything runs. Storages are memory-mapped copy-on-write, so nothing is read until used.
``reader="torch"`` uses ``torch.load(weights_only=True, mmap=True)`` instead (needs torch).

Writing: :func:`write_pytorch_bin` emits the pickle opcodes directly and the zip records 64-byte aligned, as
``torch.save`` does; ``torch.load(weights_only=True)`` and transformers read the result. torch is not needed.
"""

from __future__ import annotations

import collections
import io
import logging
import os
import pickle
import struct
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, same_bits

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

# torch storage class -> numpy dtype (the dtypes a state dict can hold)
STORAGE_DTYPES: dict[str, np.dtype] = {
    "FloatStorage": np.dtype(np.float32),
    "DoubleStorage": np.dtype(np.float64),
    "HalfStorage": np.dtype(np.float16),
    "BFloat16Storage": np.dtype(ml_dtypes.bfloat16),
    "LongStorage": np.dtype(np.int64),
    "IntStorage": np.dtype(np.int32),
    "ShortStorage": np.dtype(np.int16),
    "CharStorage": np.dtype(np.int8),
    "ByteStorage": np.dtype(np.uint8),
    "BoolStorage": np.dtype(np.bool_),
}
_STORAGE_OF_DTYPE = {dtype: name for name, dtype in STORAGE_DTYPES.items()}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_ALIGNMENT = 64  # torch.save aligns every storage record to 64 bytes
READERS = ("restricted", "torch")


class UnsafePickleError(ValueError):
    """A ``pytorch_model.bin`` pickle references a global outside the tensor-storage allow-list."""


class CorruptCheckpointError(ValueError):
    """A ``pytorch_model.bin`` is truncated or is not a torch checkpoint."""


# ----------------------------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class _StorageType:
    """Stand-in for ``torch.FloatStorage`` etc.: only carries the dtype (not callable)."""

    name: str
    dtype: np.dtype


@dataclass(frozen=True)
class _StorageRef:
    key: str
    dtype: np.dtype
    numel: int
    view_offset: int = 0  # legacy format: a storage may be a view (in elements) of another


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    size: tuple[int, ...]
    stride: tuple[int, ...]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    if not isinstance(value, tuple) or not all(isinstance(v, int) and not isinstance(v, bool) for v in value):
        raise CorruptCheckpointError(f"tensor {what} must be a tuple of ints, got {value!r}")
    return value


def _rebuild_tensor(storage: Any, storage_offset: Any, size: Any, stride: Any, *_ignored: Any) -> _TensorRef:
    """Stand-in for ``torch._utils._rebuild_tensor(_v2)``: records where the tensor lives, reads nothing."""
    if not isinstance(storage, _StorageRef):
        raise CorruptCheckpointError(
            f"a tensor's storage must be a persistent storage id, got {type(storage).__name__}"
        )
    if not isinstance(storage_offset, int) or storage_offset < 0:
        raise CorruptCheckpointError(f"tensor storage offset must be a non-negative int, got {storage_offset!r}")
    size, stride = _ints(size, "size"), _ints(stride, "stride")
    if len(size) != len(stride) or any(s < 0 for s in (*size, *stride)):
        raise CorruptCheckpointError(f"tensor size {size} and stride {stride} do not describe a tensor")
    return _TensorRef(storage, storage_offset, size, stride)


def _rebuild_parameter(data: Any, *_ignored: Any) -> Any:
    """Stand-in for ``torch._utils._rebuild_parameter(_with_state)``: a Parameter is its tensor."""
    return data


_ALLOWED_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("collections", "OrderedDict"): collections.OrderedDict,
}
ALLOWED_GLOBALS = tuple(sorted(f"{m}.{n}" for m, n in _ALLOWED_FUNCTIONS) + [f"torch.{n}" for n in STORAGE_DTYPES])


class _RestrictedUnpickler(pickle.Unpickler):
    """Builds only dicts, tuples, numbers, strings and the stand-ins above; refuses every other global."""

    def __init__(self, file: io.BufferedIOBase, source: str, legacy: bool = False) -> None:
        super().__init__(file)
        self.source = source
        self.legacy = legacy
        self.storages: dict[str, _StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED_FUNCTIONS:
            return _ALLOWED_FUNCTIONS[(module, name)]
        if module == "torch" and name in STORAGE_DTYPES:
            return _StorageType(name, STORAGE_DTYPES[name])
        raise UnsafePickleError(
            f"{self.source}: refusing to load: its pickle references the global '{module}.{name}', which a weights "
            f"file never needs (it could run code when unpickled). Only tensor storage is allowed: "
            f"{', '.join(ALLOWED_GLOBALS)}. Nothing from the file was executed. Load weights from a trusted source, "
            "preferably model.safetensors."
        )

    def persistent_load(self, pid: Any) -> Any:
        if not isinstance(pid, tuple) or not pid:
            raise CorruptCheckpointError(f"{self.source}: unexpected persistent id {pid!r}")
        kind = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if kind != "storage":
            raise UnsafePickleError(
                f"{self.source}: refusing persistent object of kind {kind!r}; only 'storage' records are allowed"
            )
        if len(pid) == 5:  # zip format: ('storage', type, key, location, numel)
            _, storage_type, key, _location, numel = pid
            view = None
        elif len(pid) == 6:  # legacy format adds view metadata (view_key, offset, view_numel) or None
            _, storage_type, key, _location, numel, view = pid
        else:
            raise CorruptCheckpointError(f"{self.source}: unexpected storage record {pid!r}")
        if not isinstance(storage_type, _StorageType) or not isinstance(numel, int) or numel < 0:
            raise CorruptCheckpointError(f"{self.source}: unexpected storage record {pid!r}")
        key = str(key)
        root = self.storages.setdefault(key, _StorageRef(key, storage_type.dtype, numel))
        if view is None:
            return root
        _view_key, offset, view_numel = view
        return _StorageRef(root.key, root.dtype, int(view_numel), view_offset=int(offset))


def _unpickle(file: io.BufferedIOBase, source: str, legacy: bool = False) -> tuple[Any, dict[str, _StorageRef]]:
    unpickler = _RestrictedUnpickler(file, source, legacy)
    try:
        result = unpickler.load()
    except (UnsafePickleError, CorruptCheckpointError):
        raise
    except (pickle.UnpicklingError, EOFError, TypeError, AttributeError, IndexError, KeyError, ValueError) as err:
        raise CorruptCheckpointError(
            f"{source} is not a readable torch checkpoint: {type(err).__name__}: {err}"
        ) from err
    return result, unpickler.storages


def _local_data_offset(handle: io.BufferedIOBase, info: zipfile.ZipInfo) -> int:
    """Byte offset of a stored zip member's data (after its local header, whose extra field may differ)."""
    handle.seek(info.header_offset)
    header = handle.read(30)
    if len(header) != 30 or header[:4] != b"PK\x03\x04":
        raise CorruptCheckpointError(f"bad zip local header for {info.filename}")
    name_len, extra_len = struct.unpack("<HH", header[26:30])
    return info.header_offset + 30 + name_len + extra_len


def _storage_array(path: Path, offset: int, nbytes: int) -> np.ndarray:
    """``nbytes`` raw bytes at ``offset``, memory-mapped copy-on-write (writable, never written back)."""
    if nbytes == 0:
        return np.zeros(0, dtype=np.uint8)
    return np.asarray(np.memmap(path, dtype=np.uint8, mode="c", offset=offset, shape=(nbytes,)))


def _materialise(result: Any, raw: dict[str, np.ndarray], big_endian: bool, source: str) -> dict[str, np.ndarray]:
    if not isinstance(result, dict):
        raise CorruptCheckpointError(
            f"{source} holds a pickled {type(result).__name__}, not a state dict (a dict of name -> tensor)"
        )
    out: dict[str, np.ndarray] = {}
    for key, value in result.items():
        if not isinstance(value, _TensorRef):
            logger.warning("%s: skipping non-tensor entry %r (%s)", source, key, type(value).__name__)
            continue
        ref = value.storage
        dtype = ref.dtype
        data = raw[ref.key]
        storage = data[: (data.size // dtype.itemsize) * dtype.itemsize].view(dtype)
        if big_endian:
            storage = storage.view(dtype.newbyteorder(">")).astype(dtype)
        storage = storage[ref.view_offset : ref.view_offset + ref.numel]
        out[str(key)] = _tensor_from_storage(storage, value, f"{source}: tensor {key!r}")
    return out


def _tensor_from_storage(storage: np.ndarray, ref: _TensorRef, what: str) -> np.ndarray:
    size, stride, offset = ref.size, ref.stride, ref.offset
    if 0 in size:
        return np.zeros(size, dtype=storage.dtype)
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if last >= storage.size:
        raise CorruptCheckpointError(
            f"{what} needs element {last} but its storage holds {storage.size}: the file is truncated or corrupt"
        )
    count = int(np.prod(size))
    contiguous = tuple(int(np.prod(size[i + 1 :])) for i in range(len(size)))
    if all(n == 1 or s == c for n, s, c in zip(size, stride, contiguous)):
        return storage[offset : offset + count].reshape(size)
    item = storage.itemsize
    view = np.lib.stride_tricks.as_strided(
        storage[offset:], shape=size, strides=tuple(s * item for s in stride), writeable=False
    )
    return np.ascontiguousarray(view)


def _read_zip(path: Path) -> dict[str, np.ndarray]:
    source = str(path)
    with open(path, "rb") as handle, zipfile.ZipFile(handle) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("data.pkl") and n.count("/") <= 1]
        if not pkl:
            raise CorruptCheckpointError(f"{source} is a zip archive without data.pkl: not a torch checkpoint")
        prefix = pkl[0][: -len("data.pkl")]
        byteorder = b"little"
        if prefix + "byteorder" in names:
            byteorder = archive.read(prefix + "byteorder").strip()
        result, storages = _unpickle(io.BytesIO(archive.read(pkl[0])), source)
        raw: dict[str, np.ndarray] = {}
        for key, ref in storages.items():
            name = f"{prefix}data/{key}"
            try:
                info = archive.getinfo(name)
            except KeyError:
                raise CorruptCheckpointError(f"{source}: storage record {name!r} is missing") from None
            if info.file_size < ref.numel * ref.dtype.itemsize:
                raise CorruptCheckpointError(
                    f"{source}: storage {name!r} has {info.file_size} bytes, needs {ref.numel * ref.dtype.itemsize}"
                )
            if info.compress_type == zipfile.ZIP_STORED:
                raw[key] = _storage_array(path, _local_data_offset(handle, info), info.file_size)
            else:
                raw[key] = np.frombuffer(bytearray(archive.read(name)), dtype=np.uint8)
    return _materialise(result, raw, byteorder == b"big", source)


def _read_legacy(path: Path) -> dict[str, np.ndarray]:
    source = str(path)
    with open(path, "rb") as handle:
        magic, _ = _unpickle(handle, source)
        if magic != _LEGACY_MAGIC:
            raise CorruptCheckpointError(f"{source} is neither a zip nor a legacy torch checkpoint (bad magic number)")
        protocol, _ = _unpickle(handle, source)
        if protocol != _LEGACY_PROTOCOL:
            raise CorruptCheckpointError(f"{source}: unsupported legacy torch protocol {protocol!r}")
        sys_info, _ = _unpickle(handle, source)
        little = sys_info.get("little_endian", True) if isinstance(sys_info, dict) else True
        result, storages = _unpickle(handle, source, legacy=True)
        keys, _ = _unpickle(handle, source)
        if not isinstance(keys, list):
            raise CorruptCheckpointError(f"{source}: legacy storage key list is missing")
        raw: dict[str, np.ndarray] = {}
        offset = handle.tell()
        file_size = os.fstat(handle.fileno()).st_size
        for key in map(str, keys):
            if key not in storages:
                raise CorruptCheckpointError(f"{source}: storage {key!r} is listed but never used")
            dtype = storages[key].dtype
            handle.seek(offset)
            header = handle.read(8)
            if len(header) != 8:
                raise CorruptCheckpointError(f"{source} is truncated (storage {key!r})")
            numel = struct.unpack("<q" if little else ">q", header)[0]
            nbytes = numel * dtype.itemsize
            if numel < 0 or offset + 8 + nbytes > file_size:
                raise CorruptCheckpointError(f"{source} is truncated (storage {key!r} needs {nbytes} bytes)")
            raw[key] = _storage_array(path, offset + 8, nbytes)
            offset += 8 + nbytes
    return _materialise(result, raw, not little, source)


def _read_with_torch(path: Path) -> dict[str, np.ndarray]:
    try:
        import torch
    except ImportError as err:
        raise ImportError(
            "reader='torch' needs PyTorch: pip install 'distilbert-mf[torch]' (or use the default restricted reader, "
            "which needs no torch)"
        ) from err
    try:
        try:
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            state = torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) files cannot mmap
    except pickle.UnpicklingError as err:
        raise UnsafePickleError(
            f"{path}: torch.load(weights_only=True) refused the file; nothing from it was executed: {err}"
        ) from err
    except RuntimeError as err:
        raise CorruptCheckpointError(f"{path} is not a readable torch checkpoint: {err}") from err
    if not isinstance(state, dict):
        raise CorruptCheckpointError(f"{path} holds a pickled {type(state).__name__}, not a state dict")
    out: dict[str, np.ndarray] = {}
    for key, tensor in state.items():
        if not isinstance(tensor, torch.Tensor):
            logger.warning("%s: skipping non-tensor entry %r (%s)", path, key, type(tensor).__name__)
            continue
        tensor = tensor.detach().contiguous()
        if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: reinterpret the bits, never round-trip float32
            out[key] = tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        else:
            out[key] = tensor.numpy()
    return out


def read_pytorch_bin(path: str | os.PathLike[str], *, reader: str = "restricted") -> dict[str, np.ndarray]:
    """Read a ``pytorch_model.bin`` into ``{name: array}`` (bfloat16 as ``ml_dtypes.bfloat16``), bit-exactly.

    ``reader="restricted"`` (default) needs no torch and never executes pickle code; ``reader="torch"`` uses
    ``torch.load(weights_only=True)``. Both raise :class:`UnsafePickleError` for a file that references any
    global beyond tensor storage, and :class:`CorruptCheckpointError` for a truncated or foreign file.
    """
    if reader not in READERS:
        raise ValueError(f"unknown pytorch_model.bin reader {reader!r}; expected one of {READERS}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no such weights file: {path}")
    if reader == "torch":
        return _read_with_torch(path)
    if zipfile.is_zipfile(path):
        return _read_zip(path)
    with open(path, "rb") as handle:
        start = handle.read(263)
    if len(start) > 262 and start[257:262] == b"ustar":
        raise CorruptCheckpointError(
            f"{path} uses torch's pre-1.0 tar checkpoint layout, which is not supported: load it once with "
            "torch.load(weights_only=True) and save it again (safetensors preferred)"
        )
    return _read_legacy(path)


# ----------------------------------------------------------------------------------------------- writing


def _op_int(value: int) -> bytes:
    if 0 <= value < 256:
        return b"K" + bytes([value])
    if 0 <= value < 65536:
        return b"M" + struct.pack("<H", value)
    if -(2**31) <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    body = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(body)]) + body


def _op_str(text: str) -> bytes:
    data = text.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def _op_global(module: str, name: str) -> bytes:
    return b"c" + module.encode("ascii") + b"\n" + name.encode("ascii") + b"\n"


def _op_tuple(values: tuple[int, ...]) -> bytes:
    body = b"".join(_op_int(v) for v in values)
    return {0: b")", 1: body + b"\x85", 2: body + b"\x86", 3: body + b"\x87"}.get(len(values), b"(" + body + b"t")


def _state_dict_pickle(entries: list[tuple[str, str, np.ndarray]]) -> bytes:
    """Protocol-2 pickle of ``{name: _rebuild_tensor_v2(storage, 0, shape, stride, False, OrderedDict())}``.

    ``entries`` are ``(name, storage key, contiguous array)``; names sharing a storage key share the tensor data.
    """
    out = [b"\x80\x02", b"}"]
    for start in range(0, len(entries), 1000):  # SETITEMS in batches of 1000, as pickle does
        out.append(b"(")
        for name, key, array in entries[start : start + 1000]:
            shape = tuple(int(n) for n in array.shape)
            stride = tuple(int(np.prod(shape[i + 1 :])) for i in range(len(shape)))
            storage = _op_global("torch", _STORAGE_OF_DTYPE[array.dtype])
            pid = b"(" + _op_str("storage") + storage + _op_str(key) + _op_str("cpu") + _op_int(array.size) + b"t"
            hooks = _op_global("collections", "OrderedDict") + b")R"
            args = b"(" + pid + b"Q" + _op_int(0) + _op_tuple(shape) + _op_tuple(stride) + b"\x89" + hooks + b"t"
            out.append(_op_str(name) + _op_global("torch._utils", "_rebuild_tensor_v2") + args + b"R")
        out.append(b"u")
    out.append(b".")
    return b"".join(out)


def _write_record(archive: zipfile.ZipFile, handle: io.BufferedIOBase, name: str, data: bytes | memoryview) -> None:
    """One stored (uncompressed) zip member whose data starts on a 64-byte boundary, as torch.save writes."""
    info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
    info.compress_type = zipfile.ZIP_STORED
    info.file_size = len(data)
    zip64 = info.file_size * 1.05 > zipfile.ZIP64_LIMIT
    header_end = handle.tell() + 30 + len(name.encode("utf-8")) + 4 + (20 if zip64 else 0)
    pad = -header_end % _ALIGNMENT
    info.extra = struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # padding field id "FB", like torch
    with archive.open(info, "w", force_zip64=zip64) as member:
        member.write(data)


def check_dtype(array: np.ndarray, name: str) -> np.dtype:
    if array.dtype not in _STORAGE_OF_DTYPE:
        raise TypeError(
            f"cannot write {name!r} with dtype {array.dtype} to pytorch_model.bin; supported: "
            f"{sorted(str(d) for d in _STORAGE_OF_DTYPE)}"
        )
    return array.dtype


def write_pytorch_bin(
    path: str | os.PathLike[str], state: dict[str, np.ndarray], *, aliases: dict[str, str] | None = None
) -> Path:
    """Write ``state`` as a torch zip checkpoint at ``path`` atomically, without torch.

    ``aliases`` maps an extra name to a name in ``state`` whose storage it shares (transformers' ``.bin`` stores
    the tied ``vocab_projector.weight`` this way). Readable by ``torch.load(weights_only=True, mmap=True)``.
    """
    path = Path(path)
    aliases = dict(aliases or {})
    for alias, target in aliases.items():
        if target not in state:
            raise KeyError(f"alias {alias!r} points to {target!r}, which is not in the state dict")
    arrays = {name: np.asarray(array, order="C") for name, array in state.items()}
    for name, array in arrays.items():
        check_dtype(array, name)
    keys = {name: str(i) for i, name in enumerate(arrays)}
    entries = [(name, keys[name], arrays[name]) for name in arrays]
    entries += [(alias, keys[target], arrays[target]) for alias, target in aliases.items()]
    archive_name = path.name.split(".")[0]
    records: list[tuple[str, bytes | memoryview]] = [
        ("data.pkl", _state_dict_pickle(entries)),
        (".format_version", b"1"),
        (".storage_alignment", str(_ALIGNMENT).encode()),
        ("byteorder", sys.byteorder.encode()),
    ]
    records += [(f"data/{keys[name]}", memoryview(array.reshape(-1).view(np.uint8))) for name, array in arrays.items()]
    records.append(("version", b"3\n"))
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        with zipfile.ZipFile(handle, "w") as archive:
            for name, data in records:
                _write_record(archive, handle, f"{archive_name}/{name}", data)
        handle.flush()
        os.fsync(handle.fileno())
    return path


# ----------------------------------------------------------------------------------------------- format protocol


def read(path: Path, *, pytorch_reader: str = "restricted") -> dict[str, np.ndarray]:
    """Canonical arrays of one file (see :mod:`distilbert_mf.checkpoint.formats`); ``pytorch_reader`` as
    :func:`read_pytorch_bin`'s ``reader``."""
    return read_pytorch_bin(path, reader=pytorch_reader)


def layout(
    state: dict[str, np.ndarray], head: str, config: DistilBertConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """PyTorch names; the tied projector becomes a second reference to the embedding storage, as transformers'
    ``.bin`` stores it."""
    if head != "masked_lm" or not config.tie_word_embeddings or TIED_SOURCE not in state:
        return state, {}
    if TIED_KEY in state and not same_bits(state[TIED_KEY], state[TIED_SOURCE]):
        return state, {}
    return {k: v for k, v in state.items() if k != TIED_KEY}, {TIED_KEY: TIED_SOURCE}


def write(path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], *, head: str, shard: bool) -> Path:
    """Write one file (or shard) atomically."""
    return write_pytorch_bin(path, entries, aliases=aliases)
