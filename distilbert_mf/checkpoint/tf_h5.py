"""transformers' ``tf_model.h5`` (Keras 2 ``save_weights`` layout), read and written by weight name with h5py.

Single file: the root attribute ``layer_names`` lists the Keras layers (``distilbert``, ``pre_classifier``, ...);
each layer group's ``weight_names`` attribute lists full weight names such as
``tf_distil_bert_for_sequence_classification/distilbert/transformer/layer_._0/attention/q_lin/kernel:0``, stored as
datasets under the group. transformers drops the first component (the Keras model name) when it matches names.
Sharded (``tf_model-00001-of-0000N.h5`` + ``tf_model.h5.index.json``): each shard's ``layer_names`` lists the weight
names without the model name, stored as datasets at exactly those paths.

HDF5 has no bfloat16: bfloat16 arrays are stored as 2-byte opaque data with the attribute ``dtype="bfloat16"``
(read back bit-exactly here; transformers' TF classes refuse them instead of reading garbage).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ml_dtypes
import numpy as np

from distilbert_mf._io import atomic_path
from distilbert_mf.checkpoint.layouts import TF_LAYER_ORDER, TF_MODEL_NAMES, from_tf_name, rename_arrays, to_tf_name
from distilbert_mf.checkpoint.names import PREFIX, without_tied_projector

if TYPE_CHECKING:
    from distilbert_mf.config import DistilBertConfig

_HDF5_OBJECT_HEADER_LIMIT = 64512  # bytes an attribute may hold; longer name lists are split like Keras does
_BF16 = np.dtype(ml_dtypes.bfloat16)
KERAS_VERSION = "2.21.0"  # written as transformers' tf-keras does; transformers does not read it


def _names_attr(group: Any, name: str) -> list[str]:
    """A (possibly chunked: ``name0``, ``name1``, ...) list-of-strings attribute."""
    if name in group.attrs:
        values = list(group.attrs[name])
    else:
        values, chunk = [], 0
        while f"{name}{chunk}" in group.attrs:
            values.extend(group.attrs[f"{name}{chunk}"])
            chunk += 1
    return [v.decode("utf-8") if isinstance(v, bytes) else str(v) for v in values]


def _set_names_attr(group: Any, name: str, values: list[str]) -> None:
    data = np.array([v.encode("utf-8") for v in values], dtype=np.bytes_) if values else np.array([], dtype="S1")
    chunks = 1
    while data.nbytes / chunks > _HDF5_OBJECT_HEADER_LIMIT:
        chunks += 1
    if chunks == 1:
        group.attrs[name] = data
    else:
        for i, part in enumerate(np.array_split(data, chunks)):
            group.attrs[f"{name}{i}"] = part


def _dataset_array(dataset: Any) -> np.ndarray:
    array = dataset[()]
    if dataset.attrs.get("dtype") in ("bfloat16", b"bfloat16"):
        return np.asarray(array).view(_BF16)
    return np.asarray(array)


def read_tf_h5(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Read a ``tf_model.h5`` (single file or one shard) into canonical ``{name: array}``."""
    import h5py

    path = Path(path)
    try:
        handle = h5py.File(path, "r")
    except OSError as err:
        raise ValueError(f"{path} is not a readable HDF5 file ({err})") from err
    found: list[tuple[str, np.ndarray]] = []
    with handle:
        layers = _names_attr(handle, "layer_names")
        if not layers and "layer_names" not in handle.attrs:
            raise ValueError(f"{path} has no 'layer_names' attribute: it is not a Keras / transformers weights file")
        for layer in layers:
            obj = handle.get(layer)
            if obj is None:
                raise ValueError(f"{path} lists layer {layer!r} in 'layer_names' but does not contain it")
            if isinstance(obj, h5py.Dataset):  # sharded layout: the dataset path is the weight name
                found.append((layer, _dataset_array(obj)))
                continue
            for weight_name in _names_attr(obj, "weight_names"):
                if weight_name not in obj:
                    raise ValueError(f"{path}: layer {layer!r} lists weight {weight_name!r} but does not contain it")
                found.append((weight_name.split("/", 1)[-1], _dataset_array(obj[weight_name])))
    # the MLM head's vocab_projector group lists the embedding weights again: the first name wins
    return rename_arrays(found, lambda name, _: from_tf_name(name))


def tf_entries(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Canonical ``distilbert.``-prefixed state -> ``{TF weight name without model name and ':0': array}``."""
    return rename_arrays(state.items(), lambda key, array: to_tf_name(key, array.ndim))


def _create(group: Any, name: str, array: np.ndarray) -> None:
    if array.dtype == _BF16:
        dataset = group.create_dataset(name, data=np.ascontiguousarray(array).view(np.dtype("V2")))
        dataset.attrs["dtype"] = "bfloat16"
    else:
        group.create_dataset(name, data=array)


def _layer_groups(names: list[str], head: str) -> Iterator[tuple[str, list[str]]]:
    groups: dict[str, list[str]] = {layer: [] for layer in TF_LAYER_ORDER[head]}
    for name in names:
        groups.setdefault(name.split("/", 1)[0], []).append(name)
    yield from ((layer, members) for layer, members in groups.items() if members)


def write_tf_h5(path: str | os.PathLike[str], entries: dict[str, np.ndarray], head: str, *, shard: bool) -> Path:
    """Write ``entries`` (from :func:`tf_entries`) atomically as a single ``tf_model.h5`` or as one shard."""
    import h5py

    path = Path(path)
    model = TF_MODEL_NAMES[head]
    with atomic_path(path) as tmp:
        with h5py.File(tmp, "w") as handle:
            if shard:
                names = sorted(f"{name}:0" for name in entries)
                for name in names:
                    _create(handle, name, entries[name[:-2]])
                _set_names_attr(handle, "layer_names", names)
            else:
                handle.attrs["backend"] = "tensorflow"
                handle.attrs["keras_version"] = KERAS_VERSION
                layers = []
                for layer, members in _layer_groups(list(entries), head):
                    group = handle.create_group(layer)
                    full = [f"{model}/{name}:0" for name in members]
                    for name, full_name in zip(members, full):
                        _create(group, full_name, entries[name])
                    if layer == "vocab_projector":
                        # Keras lists the tied embedding layer's weights under the projector too: hard links to the
                        # same datasets (no copy), so transformers finds every weight it expects in this group
                        for name in (n for n in entries if n.startswith("distilbert/embeddings/")):
                            group[f"{model}/{name}:0"] = handle["distilbert"][f"{model}/{name}:0"]
                            full.append(f"{model}/{name}:0")
                    _set_names_attr(group, "weight_names", full)
                    layers.append(layer)
                _set_names_attr(handle, "layer_names", layers)
    return path


def index_key(name: str, head: str) -> str:
    """The ``tf_model.h5.index.json`` key of a weight: the full Keras name."""
    return f"{TF_MODEL_NAMES[head]}/{name}:0"


# ----------------------------------------------------------------------------------------------- format protocol


def read(path: Path) -> dict[str, np.ndarray]:
    """Canonical arrays of one file or shard (see :mod:`distilbert_mf.checkpoint.formats`)."""
    return read_tf_h5(path)


def layout(
    state: dict[str, np.ndarray], head: str, config: DistilBertConfig
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Keras weight names; the encoder always nests under ``distilbert/`` (TF's main layer has that name, even in
    the base model); the tied projector is not stored (Keras reuses the embedding layer)."""
    state = without_tied_projector(state, config)
    return tf_entries({(PREFIX + k if head == "base" else k): v for k, v in state.items()}), {}


def write(path: Path, entries: dict[str, np.ndarray], aliases: dict[str, str], *, head: str, shard: bool) -> Path:
    """Write one file, or one shard, atomically."""
    return write_tf_h5(path, entries, head, shard=shard)
