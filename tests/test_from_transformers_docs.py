"""docs/from-transformers.md: every test its tables name exists, every row that works names at least one, and the two
rows no other test covered (``label2id`` alone, ``set_input_embeddings``) are tested here."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "docs" / "from-transformers.md"
HEADER = ["transformers", "here", "PyTorch", "Keras", "Flax", "tests"]
TEST_REF = re.compile(r"`(tests/[\w/]+\.py)::(\w+)`")


def tables() -> list[list[list[str]]]:
    """Every table of the page with the standard header: its rows of cells, the header left out."""
    found, current = [], None
    for line in PAGE.read_text(encoding="utf-8").splitlines():
        if not line.startswith("|"):
            current = None
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]
        if current is None:
            current = [] if cells == HEADER else None
            if current is not None:
                found.append(current)
        elif not all(set(c) <= set("-: ") for c in cells):
            current.append(cells)
    return found


@cache
def functions_in(path: str) -> set[str]:
    tree = ast.parse((ROOT / path).read_text(encoding="utf-8"))
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test")}


def test_every_named_test_exists_and_every_working_row_names_one() -> None:
    found = tables()
    assert len(found) >= 7  # Auto classes, from_pretrained, methods, tokenizers, config, pipelines, offline, CLI
    rows = [row for table in found for row in table]
    assert len(rows) > 50
    for row in rows:
        assert len(row) == len(HEADER), row
        statuses, refs = row[2:5], TEST_REF.findall(row[5])
        assert all(s.split(" ")[0].rstrip(":") in ("works", "differs", "refused", "not", "—") for s in statuses), row
        if any(s.startswith(("works", "differs")) for s in statuses):
            assert refs, f"a working row names no test: {row[0]}"
        assert len(refs) == row[5].count("::"), f"a test reference is not `tests/file.py::function`: {row[5]}"
        for path, name in refs:
            assert (ROOT / path).is_file(), f"{row[0]}: {path} does not exist"
            assert name in functions_in(path), f"{row[0]}: {path} has no test function {name}"


def test_label2id_alone_names_the_classes() -> None:
    config = DistilBertConfig(label2id={"neg": 0, "pos": 1, "neutral": 2})
    assert config.id2label == {0: "neg", 1: "pos", 2: "neutral"} and config.num_labels == 3
    assert config.label2id == {"neg": 0, "pos": 1, "neutral": 2}


TINY = DistilBertConfig(vocab_size=40, dim=16, n_layers=2, n_heads=2, hidden_dim=24, max_position_embeddings=24)
IDS = np.array([[1, 5, 7, 9, 2], [1, 6, 2, 0, 0]])


def _new_embeddings(framework: str, table: np.ndarray):
    if framework == "pt":
        import torch

        return torch.nn.Embedding.from_pretrained(torch.from_numpy(table), freeze=False, padding_idx=0)
    if framework == "tf":
        import keras

        layer = keras.layers.Embedding(*table.shape, name="word_embeddings")
        layer.build((None,))
        layer.embeddings.assign(table)
        return layer
    from flax import nnx

    layer = nnx.Embed(*table.shape, rngs=nnx.Rngs(0))
    layer.embedding.set_value(table)
    return layer


def _logits(model) -> np.ndarray:
    logits = model(input_ids=IDS).logits
    return np.asarray(logits.detach() if hasattr(logits, "detach") else logits)


@pytest.mark.parametrize(
    "framework",
    [
        pytest.param("pt", marks=pytest.mark.torch),
        pytest.param("tf", marks=pytest.mark.tensorflow),
        pytest.param("flax", marks=pytest.mark.flax),
    ],
)
def test_set_input_embeddings_keeps_the_projector_tied(framework: str, tmp_path: Path) -> None:
    import importlib

    module, prefix = {"pt": ("torch", ""), "tf": ("tensorflow", "TF"), "flax": ("flax", "Flax")}[framework]
    cls = getattr(importlib.import_module(f"distilbert_mf.{module}"), f"{prefix}DistilBertForMaskedLM")
    model = cls(TINY)
    if framework != "tf":
        model.eval()  # no dropout (Keras calls run in inference mode by default)
    before = _logits(model)
    table = np.random.default_rng(0).standard_normal((40, 16)).astype(np.float32)
    layer = _new_embeddings(framework, table)
    model.set_input_embeddings(layer)
    assert model.get_input_embeddings() is layer
    state = model.canonical_state_dict()
    np.testing.assert_array_equal(state["distilbert.embeddings.word_embeddings.weight"], table)
    np.testing.assert_array_equal(state["vocab_projector.weight"], table)
    after = _logits(model)
    assert not np.allclose(after, before)
    model.save_pretrained(tmp_path)  # a reloaded model is tied by construction: same logits only if still tied
    np.testing.assert_allclose(_logits(cls.from_pretrained(tmp_path)), after, rtol=0, atol=1e-5)
