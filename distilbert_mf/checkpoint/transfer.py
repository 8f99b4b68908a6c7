"""Copy checkpoint arrays into the layout a framework stores, with little memory beyond the weights themselves.

TensorFlow and JAX keep weights in memory they own, so loading copies every tensor once. Done naively (convert the
whole memory-mapped tensor, transpose it, cast it, hand it over) the file's pages, a transposed temporary and the
framework's copy are all resident at once: about twice the weights at the peak. Here each tensor is copied in row
blocks into one fresh buffer (or straight into the framework's variable, block by block), and the pages of the
memory-mapped checkpoint behind each block are given back to the operating system once copied, so the peak stays
near the weights' size plus one block.

Both functions are numpy only; giving pages back is opt-in (``release=True``) and meant for arrays that the loader
itself just mapped from a file: a memory map that somebody modified in place (a PyTorch model loaded zero-copy and
then trained) would lose those changes.
"""

from __future__ import annotations

import mmap
from collections.abc import Iterator
from typing import Any

import numpy as np

BLOCK_BYTES = 4 * 2**20  # rows copied at a time: the peak memory beyond the weights
ALIGNMENT = 64  # bytes: what XLA's CPU client needs to use a host buffer without copying it


def stored_shape(shape: tuple[int, ...], transposed: bool) -> tuple[int, ...]:
    """The shape a framework stores for a canonical ``shape``: reversed for kernels (``(out, in)`` -> ``(in, out)``)."""
    return tuple(reversed(shape)) if transposed else tuple(shape)


def aligned_empty(shape: tuple[int, ...], dtype: Any) -> np.ndarray:
    """An uninitialised C-contiguous array whose data starts on a 64-byte boundary."""
    dtype = np.dtype(dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start : start + nbytes].view(dtype).reshape(shape)


def row_blocks(array: np.ndarray, block_bytes: int = BLOCK_BYTES) -> Iterator[slice]:
    """Consecutive slices of ``array``'s first axis, each about ``block_bytes`` (at least one row)."""
    rows = array.shape[0] if array.ndim else 1
    row_bytes = max(array.nbytes // max(rows, 1), 1)
    step = max(block_bytes // row_bytes, 1)
    for start in range(0, rows, step):
        yield slice(start, min(start + step, rows))


def blocks(
    array: np.ndarray, *, dtype: Any, transposed: bool, release: bool = False, block_bytes: int = BLOCK_BYTES
) -> Iterator[tuple[slice, np.ndarray]]:
    """``(rows, block)`` pairs covering ``array``: ``rows`` slices the canonical first axis, ``block`` is
    ``array[rows]`` cast to ``dtype`` and laid out as stored (``array[rows].T`` for kernels), a fresh contiguous array.

    Store each block at ``stored[rows]`` (``stored[:, rows]`` when transposed). With ``release``, the file pages behind
    a block are given back after the consumer has taken it (when the generator resumes).
    """
    array = np.asarray(array)
    if array.ndim == 0:
        yield slice(None), np.array(array, dtype=dtype)
        return
    for rows in row_blocks(array, block_bytes):
        part = array[rows]
        if transposed:
            block = np.empty(stored_shape(part.shape, True), dtype)
            _transpose_into(block, part)
        else:
            block = np.array(part, dtype=dtype)
        yield rows, block
        if release:
            release_pages(part)


def stored_copy(
    array: np.ndarray, *, dtype: Any, transposed: bool, release: bool = False, block_bytes: int = BLOCK_BYTES
) -> np.ndarray:
    """A fresh, 64-byte-aligned array holding ``array`` as stored: cast to ``dtype``, transposed for kernels.

    Never a view of ``array`` (the result may be handed to a framework that then owns it). With ``release`` the file
    pages behind ``array`` are given back block by block while copying.
    """
    array = np.asarray(array)
    out = aligned_empty(stored_shape(array.shape, transposed), dtype)
    if array.ndim == 0:
        out[...] = array
        return out
    for rows in row_blocks(array, block_bytes):
        part = array[rows]
        if transposed:
            _transpose_into(out[:, rows], part)
        else:
            out[rows] = part
        if release:
            release_pages(part)
    return out


def _transpose_into(out: np.ndarray, part: np.ndarray, tile_rows: int = 64) -> None:
    """``out[...] = part.T`` (cast as needed), a few rows of ``part`` at a time: the rows being read and the columns
    being written stay in cache, about twice as fast as one strided copy of a large matrix."""
    for start in range(0, part.shape[0], tile_rows):
        out[..., start : start + tile_rows] = part[start : start + tile_rows].T


def _file_map(array: np.ndarray) -> mmap.mmap | None:
    """The ``mmap`` object behind ``array`` when it is a view of an ``np.memmap``, else None."""
    base: Any = array
    while base is not None:
        if isinstance(base, np.memmap) and isinstance(getattr(base, "_mmap", None), mmap.mmap):
            return base._mmap
        base = getattr(base, "base", None)
    return None


def release_pages(array: np.ndarray) -> bool:
    """Give back the resident pages of the memory-mapped file that lie wholly inside ``array``'s bytes.

    The next read of those bytes maps them in again from the file (unchanged). Pages shared with a neighbouring
    tensor are kept. Returns False (and does nothing) when ``array`` is not a contiguous view of a file map, or the
    platform has no ``madvise``. Only for maps nobody wrote to: private changes to the pages are dropped.
    """
    file_map = _file_map(array)
    if file_map is None or not array.flags.c_contiguous or not hasattr(mmap, "MADV_DONTNEED"):
        return False  # (Windows has no madvise)
    base = np.frombuffer(file_map, np.uint8).ctypes.data  # where the map starts in memory
    begin = array.ctypes.data - base
    end = begin + array.nbytes
    page = mmap.PAGESIZE
    first, last = -(-begin // page) * page, end // page * page  # whole pages inside [begin, end)
    if last <= first:
        return False
    file_map.madvise(mmap.MADV_DONTNEED, first, last - first)
    return True
