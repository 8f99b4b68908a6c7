"""Layering of the checkpoint code: the file-name / Hub layer at the bottom, the format registry, one prefix rule."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf import hub
from distilbert_mf.checkpoint import formats, io, names, sharding
from distilbert_mf.checkpoint.names import PREFIX, expected_shapes, for_head

READERS = (
    "distilbert_mf.checkpoint.pytorch_bin",
    "distilbert_mf.checkpoint.tf_h5",
    "distilbert_mf.checkpoint.flax_msgpack",
)


def loaded_after(statement: str) -> set[str]:
    """The modules a fresh interpreter holds after ``statement``."""
    code = f"import sys, json\n{statement}\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def test_config_imports_only_the_bottom_layer() -> None:
    modules = loaded_after("import distilbert_mf.config")
    ours = {m for m in modules if m.startswith("distilbert_mf")}
    assert ours == {"distilbert_mf", "distilbert_mf.config", "distilbert_mf.hub"}
    assert not {"huggingface_hub", "numpy"} & modules


def test_the_resolver_loads_no_reader_and_no_config() -> None:
    modules = loaded_after("import distilbert_mf.hub")
    assert {m for m in modules if m.startswith("distilbert_mf")} == {"distilbert_mf", "distilbert_mf.hub"}
    assert not {"huggingface_hub", "numpy", "h5py", "msgpack", "safetensors"} & modules
    # the old import path still works and stays as light
    modules = loaded_after("from distilbert_mf.checkpoint.hub import resolve_checkpoint, NotInCacheError")
    assert not {"distilbert_mf.config", "distilbert_mf.checkpoint.io", "distilbert_mf.checkpoint.loading"} & modules
    assert not {"numpy", *READERS} & modules


def test_reading_safetensors_loads_no_other_reader(shared_data: Path) -> None:
    folder = shared_data / "tiny-random-distilbert"
    modules = loaded_after(
        "from distilbert_mf.checkpoint.io import read_weights\n"
        f"state = read_weights([{str(folder / 'model.safetensors')!r}], 'safetensors')\n"
        "assert len(state) > 10"
    )
    assert not {*READERS, "h5py", "msgpack", "torch"} & modules


def test_checkpoint_package_is_lazy() -> None:
    modules = loaded_after("import distilbert_mf.checkpoint.sharding")
    assert not {"distilbert_mf.checkpoint.loading", "distilbert_mf.checkpoint.io", "distilbert_mf.config"} & modules
    from distilbert_mf import checkpoint

    assert checkpoint.expected_shapes is names.expected_shapes and checkpoint.for_head is for_head
    assert "read_weights" in dir(checkpoint) and "load_pretrained" in checkpoint.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        checkpoint.nope  # noqa: B018


def test_registry_matches_the_file_names() -> None:
    assert tuple(formats.REGISTRY) == hub.FORMATS == hub.PREFERENCE == io.FORMATS
    for name, entry in formats.REGISTRY.items():
        assert entry.weights_name == hub.WEIGHTS_NAMES[name] == io.WEIGHTS_NAMES[name]
        assert entry.index_name == hub.INDEX_NAMES[name] == entry.weights_name + ".index.json"
        module = entry.implementation()
        assert callable(module.read) and callable(module.layout) and callable(module.write)
    assert hub.weights_candidates()[:3] == ["model.safetensors", "model.safetensors.index.json", "pytorch_model.bin"]
    assert hub.weights_candidates(True) == ["model.safetensors", "model.safetensors.index.json"]
    assert "model.safetensors" not in hub.weights_candidates(False) and len(hub.weights_candidates(False)) == 6
    with pytest.raises(ValueError, match=r"unknown weights format 'onnx'; expected one of \('safetensors'"):
        formats.get_format("onnx")
    with pytest.raises(TypeError, match="use_safetensors must be True, False or None, got 'yes'"):
        hub.weights_formats("yes")


@pytest.mark.parametrize("fmt", hub.FORMATS)
def test_registry_entry_reads_and_writes(tmp_path: Path, tiny_config, fmt: str) -> None:
    entry = formats.get_format(fmt)
    rng = np.random.default_rng(1)
    state = {k: rng.standard_normal(s).astype(np.float32) for k, s in expected_shapes(tiny_config, "masked_lm").items()}
    state["vocab_projector.weight"] = state["distilbert.embeddings.word_embeddings.weight"]
    entries, aliases = entry.layout(dict(state), "masked_lm", tiny_config)
    written = entry.write(tmp_path / entry.weights_name, entries, aliases, head="masked_lm", shard=False)
    got = entry.read(written, pytorch_reader="restricted")  # options a format does not take are left out
    assert sorted(got) == sorted(k for k in state if fmt == "pytorch_bin" or k != "vocab_projector.weight")
    assert all(np.array_equal(got[k], state[k]) for k in got)
    assert entry.index_key("distilbert/embeddings/word_embeddings/weight", "masked_lm") == (
        "tf_distil_bert_for_masked_lm/distilbert/embeddings/word_embeddings/weight:0"
        if fmt == "tf_h5"
        else "distilbert/embeddings/word_embeddings/weight"
    )


def test_one_default_shard_size() -> None:
    from distilbert_mf import checkpoint

    assert sharding.DEFAULT_MAX_SHARD_SIZE == "5GB" == io.DEFAULT_MAX_SHARD_SIZE == checkpoint.DEFAULT_MAX_SHARD_SIZE
    assert sharding.parse_size(sharding.DEFAULT_MAX_SHARD_SIZE) == 5 * 10**9
    assert sharding.read_index is hub.read_index and sharding.shard_files is hub.shard_files


# ------------------------------------------------------------------ the base <-> head prefix rule


def test_base_checkpoint_into_a_head_gets_the_prefix(tiny_config) -> None:
    base = dict.fromkeys(expected_shapes(tiny_config, "base"), 0)
    renamed = for_head(base, "sequence_classification")
    assert sorted(renamed) == sorted(PREFIX + k for k in base)
    extra = {**base, "transformer.layer.7.ffn.lin1.weight": 1, "pooler.weight": 2}
    expected = expected_shapes(tiny_config, "sequence_classification")
    # without expected keys every encoder key moves; with them, an unexpected one keeps the file's name
    assert "distilbert.transformer.layer.7.ffn.lin1.weight" in for_head(extra, "sequence_classification")
    kept = for_head(extra, "sequence_classification", expected)
    assert "transformer.layer.7.ffn.lin1.weight" in kept and "pooler.weight" in kept
    assert set(kept) - set(expected) == {"transformer.layer.7.ffn.lin1.weight", "pooler.weight"}


def test_head_checkpoint_into_the_base_drops_the_prefix(tiny_config) -> None:
    head = dict.fromkeys(expected_shapes(tiny_config, "masked_lm"), 0)
    renamed = for_head(head, "base", expected_shapes(tiny_config, "base"))
    assert set(expected_shapes(tiny_config, "base")) <= set(renamed)
    unexpected = set(renamed) - set(expected_shapes(tiny_config, "base"))
    assert unexpected == {k for k in head if not k.startswith(PREFIX)}  # the head's layers, under their own names
    assert "vocab_projector.weight" in unexpected


def test_matching_prefixes_are_left_alone(tiny_config) -> None:
    base = dict.fromkeys(expected_shapes(tiny_config, "base"), 0)
    head = dict.fromkeys(expected_shapes(tiny_config, "token_classification"), 0)
    assert for_head(base, "base") == base and for_head(head, "question_answering") == head
    assert for_head(base, "base") is not base  # a copy: the caller may change it
    with pytest.raises(ValueError, match="unknown head 'decoder'"):
        for_head(base, "decoder")


def test_doc_examples_run(tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The python examples of docs/checkpoints.md run, in order, as one script (the printed values are checked)."""
    import re

    doc = Path(__file__).resolve().parents[1] / "docs" / "checkpoints.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    assert len(blocks) >= 8
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    namespace: dict = {}
    for block in blocks:
        exec(compile(block.replace("../shared/data", str(shared_data)), str(doc), "exec"), namespace)
    assert namespace["fmt"] == "safetensors" and namespace["maybe"] is None
    assert namespace["both"]["added_tokens.json"] is None and namespace["both"]["vocab.txt"].name == "vocab.txt"
