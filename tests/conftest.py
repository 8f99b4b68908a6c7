"""Shared test fixtures: framework markers that skip cleanly, tiny odd-sized configs, the shared real data."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

# before any framework import: quiet TensorFlow, two host devices for JAX sharding tests
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))

_FRAMEWORK_MODULES = {"torch": ("torch",), "tensorflow": ("tensorflow", "keras"), "flax": ("jax", "flax")}


def _importable(module: str) -> bool:
    spec = importlib.util.find_spec(module)
    return spec is not None and spec.origin not in (None, "namespace")  # a bare folder is not the framework


def framework_available(name: str) -> bool:
    return all(_importable(mod) for mod in _FRAMEWORK_MODULES[name])


def installed_frameworks() -> list[str]:
    return [name for name in _FRAMEWORK_MODULES if framework_available(name)]


# test folders whose modules import their framework at the top: not collected when it is missing (reported below)
_FRAMEWORK_DIRS = {"models_torch": "torch", "models_flax": "flax", "models_tensorflow": "tensorflow"}


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    for folder, name in _FRAMEWORK_DIRS.items():
        if collection_path.is_relative_to(ROOT / "tests" / folder) and not framework_available(name):
            return True
    return None


def pytest_report_header(config: pytest.Config) -> list[str]:
    missing = [name for name in _FRAMEWORK_MODULES if not framework_available(name)]
    if not missing:
        return ["frameworks: torch, tensorflow and flax installed: every test runs"]
    return [f"skipped: tests/models_{name}/ and tests marked {name!r} ({name} is not installed)" for name in missing]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    for name in _FRAMEWORK_MODULES:
        if not framework_available(name):
            terminalreporter.write_line(f"SKIPPED tests/models_{name}/: {name} is not installed")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for name in _FRAMEWORK_MODULES:
            if item.get_closest_marker(name) is not None and not framework_available(name):
                item.add_marker(pytest.mark.skip(reason=f"{name} is not installed"))
        if item.get_closest_marker("parity") is not None and len(installed_frameworks()) < 2:
            item.add_marker(pytest.mark.skip(reason="parity needs at least two installed frameworks"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` (real vocabularies, a transformers-written checkpoint, SST-2); skip when absent."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


@pytest.fixture
def tiny_config():
    """A tiny config with odd sizes so shape bugs show."""
    from distilbert_mf import DistilBertConfig

    return DistilBertConfig(
        vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64, num_labels=3
    )
