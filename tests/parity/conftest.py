"""Fixtures of the cross-framework suite: one model cache per session, one PyTorch thread."""

from __future__ import annotations

import pytest
from parity_helpers import ModelCache

from distilbert_mf.frameworks import available_frameworks


@pytest.fixture(scope="session")
def cache(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(tmp_path_factory.mktemp("parity"))


@pytest.fixture(scope="module", autouse=True)
def _single_torch_thread():
    """One PyTorch intra-op thread in this folder: tiny models run 100x faster on a busy 2-core machine without
    thread spin-waits (a thread count changes float rounding at most; every tolerance stays as it is)."""
    if "pt" not in available_frameworks():
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
