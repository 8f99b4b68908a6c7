"""checkpoint.transfer: block-wise copies into the stored layout, and giving a memory map's pages back."""

from __future__ import annotations

import sys

import ml_dtypes
import numpy as np
import pytest

from distilbert_mf.checkpoint import transfer
from distilbert_mf.checkpoint.io import read_safetensors


def resident_bytes(array: np.ndarray) -> int:
    """Bytes of ``array``'s pages resident in this process (from /proc/self/smaps of its mapping)."""
    start = array.ctypes.data
    with open("/proc/self/smaps") as handle:
        lines = handle.read().splitlines()
    for i, line in enumerate(lines):
        head = line.split()[0]
        if "-" in head and all(c in "0123456789abcdef-" for c in head):
            low, high = (int(x, 16) for x in head.split("-"))
            if low <= start < high:
                rss = next(li for li in lines[i + 1 :] if li.startswith("Rss:"))
                return int(rss.split()[1]) * 1024
    raise AssertionError("mapping not found")


@pytest.mark.parametrize("transposed", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float16, ml_dtypes.bfloat16])
def test_stored_copy_and_blocks_equal_the_plain_layout(transposed, dtype):
    rng = np.random.default_rng(0)
    array = rng.standard_normal((37, 11)).astype(np.float32)
    expected = np.ascontiguousarray(array.T if transposed else array, dtype=dtype)
    copy = transfer.stored_copy(array, dtype=dtype, transposed=transposed, block_bytes=100)  # many blocks
    assert copy.dtype == np.dtype(dtype) and copy.flags.c_contiguous
    assert copy.ctypes.data % transfer.ALIGNMENT == 0
    np.testing.assert_array_equal(copy.view(np.uint8), expected.view(np.uint8))

    stored = np.zeros(transfer.stored_shape(array.shape, transposed), dtype)
    seen = 0
    for rows, block in transfer.blocks(array, dtype=dtype, transposed=transposed, block_bytes=100):
        assert block.flags.c_contiguous and block.dtype == np.dtype(dtype)
        if transposed:
            stored[:, rows] = block
        else:
            stored[rows] = block
        seen += rows.stop - rows.start
    assert seen == 37
    np.testing.assert_array_equal(stored.view(np.uint8), expected.view(np.uint8))


def test_stored_copy_is_never_a_view_and_handles_vectors():
    vector = np.arange(5, dtype=np.float32)
    copy = transfer.stored_copy(vector, dtype=np.float32, transposed=False)
    assert not np.shares_memory(copy, vector)
    vector[0] = 99
    assert copy[0] == 0
    assert transfer.stored_copy(np.float32(2.5), dtype=np.float32, transposed=False) == 2.5
    assert transfer.release_pages(vector) is False  # not a memory map: nothing to give back


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")
def test_release_pages_gives_back_a_mapped_tensor_and_keeps_its_values(tmp_path):
    from safetensors.numpy import save_file

    big = np.random.default_rng(1).standard_normal((2048, 1024)).astype(np.float32)  # 8 MiB
    save_file({"a": np.ones(3, np.float32), "big": big}, str(tmp_path / "w.safetensors"))
    arrays = read_safetensors(tmp_path / "w.safetensors")
    mapped = arrays["big"]
    assert float(mapped.sum()) == pytest.approx(float(big.sum()), rel=1e-5)  # every page resident now
    before = resident_bytes(mapped)
    assert before >= big.nbytes - 2 * 4096
    copy = transfer.stored_copy(mapped, dtype=np.float32, transposed=True, release=True)
    after = resident_bytes(mapped)
    assert after <= before - big.nbytes + 2 * 4096  # all but the two pages shared with neighbours
    np.testing.assert_array_equal(copy, big.T)
    np.testing.assert_array_equal(mapped, big)  # read back from the file, unchanged
    assert transfer.release_pages(arrays["a"]) is False  # 12 bytes: no whole page inside


def test_public_loading_never_releases_pages_somebody_modified(tmp_path):
    """``load_canonical_state_dict`` takes arrays it does not own: a copy-on-write map changed in place (a PyTorch
    model loaded zero-copy and then trained) must keep its change."""
    from safetensors.numpy import save_file

    save_file({"big": np.zeros((1024, 1024), np.float32)}, str(tmp_path / "w.safetensors"))
    mapped = read_safetensors(tmp_path / "w.safetensors")["big"]
    mapped[:] = 7.0  # private pages now
    list(transfer.blocks(mapped, dtype=np.float32, transposed=False))  # release defaults to False
    transfer.stored_copy(mapped, dtype=np.float32, transposed=True)
    assert np.all(mapped == 7.0)
