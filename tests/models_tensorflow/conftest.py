"""Keras model tests: one tiny model per head, built once per session (TensorFlow is slow to build and trace)."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tf_models():
    """head -> a tiny random model (do not train or reload these: tests share them)."""
    pytest.importorskip("keras")
    from tf_helpers import HEADS, build

    return {head: build(head, seed=i) for i, head in enumerate(HEADS)}
