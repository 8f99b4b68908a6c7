"""``distilbert_mf.convert`` and ``distilbert-mf convert``: lossless, any format in, any set out, safe on disk."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import ml_dtypes
import numpy as np
import pytest

from distilbert_mf.checkpoint.hub import find_weights
from distilbert_mf.checkpoint.io import FORMATS, WEIGHTS_NAMES, read_weights
from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.checkpoint.names import (
    ARCHITECTURES,
    HEADS,
    TIED_KEY,
    TIED_SOURCE,
    expected_shapes,
    sinusoidal_table,
)
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.conversion import cast_state, convert, infer_head, parse_formats, read_checkpoint
from distilbert_mf.frameworks import available_frameworks

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests" / "fixtures" / "transformers457"
REF457 = Path(os.environ.get("DISTILBERT_MF_REF457", ROOT.parent / "ref457")) / "bin" / "python"
CHAIN = ("tf_h5", "flax_msgpack", "pytorch_bin", "safetensors")  # after a safetensors start


def _config(head: str = "base", **changes) -> DistilBertConfig:
    sizes = dict(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64)
    sizes["num_labels"] = 2 if head == "question_answering" else 3
    return DistilBertConfig(**{**sizes, **changes})


def _state(config: DistilBertConfig, head: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    # matrices ~ N(0, 1/columns): outputs of order one, where float32 frameworks agree to 1e-5
    shapes = expected_shapes(config, head).items()
    state = {
        k: rng.normal(0, shape[-1] ** -0.5 if len(shape) == 2 else 0.5, shape).astype(np.float32) for k, shape in shapes
    }
    if config.sinusoidal_pos_embds:
        key = ("" if head == "base" else "distilbert.") + "embeddings.position_embeddings.weight"
        state[key] = sinusoidal_table(config.max_position_embeddings, config.dim)
    if head == "masked_lm":
        state[TIED_KEY] = state[TIED_SOURCE]
    return state


def _checkpoint(folder: Path, head: str, seed: int = 0, **changes) -> tuple[Path, dict[str, np.ndarray]]:
    config = _config(head, **changes)
    state = _state(config, head, seed)
    save_pretrained(folder, config, state, head)
    return folder, state


def _same_bits(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].shape == b[key].shape, key
        assert np.ascontiguousarray(a[key]).tobytes() == np.ascontiguousarray(b[key]).tobytes(), key


def _tensors(folder: Path) -> dict[str, np.ndarray]:
    return read_checkpoint(folder)[3]


# ----------------------------------------------------------------------------------------------- API helpers


def test_parse_formats() -> None:
    assert parse_formats("tf_h5, safetensors,tf_h5") == ["tf_h5", "safetensors"]
    assert parse_formats(["flax_msgpack"]) == ["flax_msgpack"]
    with pytest.raises(ValueError, match="unknown output format 'onnx'"):
        parse_formats("safetensors,onnx")
    with pytest.raises(ValueError, match="no output format"):
        parse_formats(" , ")
    with pytest.raises(TypeError, match="comma-separated string or a list"):
        parse_formats(3)


def test_cast_state_only_touches_floats() -> None:
    state = {"a": np.ones(3, np.float32), "b": np.arange(3, dtype=np.int64)}
    assert cast_state(state, None) is state
    cast = cast_state(state, "bf16")
    assert cast["a"].dtype == ml_dtypes.bfloat16 and cast["b"].dtype == np.int64
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        cast_state(state, "int8")


@pytest.mark.parametrize("head", HEADS)
def test_infer_head_from_keys_and_architectures(head: str) -> None:
    config = _config(head)
    state = _state(config, head)
    assert infer_head(config, state) == head
    for prefix in ("", "TF", "Flax"):
        named = config.replace(extra={"architectures": [prefix + ARCHITECTURES[head]]})
        assert infer_head(named, state) == head
    # an architecture whose layers the weights lack is not believed
    wrong = config.replace(extra={"architectures": ["DistilBertForQuestionAnswering"]})
    if head != "question_answering":
        assert infer_head(wrong, state) == head


# ----------------------------------------------------------------------------------------------- lossless


@pytest.mark.parametrize("dtype", [None, "bfloat16", "float16"])
@pytest.mark.parametrize("head", HEADS)
def test_chain_through_every_format_is_byte_identical(tmp_path: Path, head: str, dtype: str | None) -> None:
    """safetensors -> tf_h5 -> flax_msgpack -> pytorch_bin -> safetensors: the same bits, the same file."""
    source, _ = _checkpoint(tmp_path / "src", head)
    if dtype is not None:
        source = convert(source, tmp_path / "start", dtype=dtype)[0].parent
    start = _tensors(source)
    if dtype is not None:
        assert {str(a.dtype) for a in start.values()} == {dtype}
    folder = source
    for fmt in CHAIN:
        target = tmp_path / f"hop-{fmt}"
        written = convert(folder, target, formats=[fmt])
        assert [p.name for p in written] == [WEIGHTS_NAMES[fmt], "config.json"]
        assert find_weights(target)[0] == fmt
        _same_bits(_tensors(target), start)
        folder = target
    assert (folder / "model.safetensors").read_bytes() == (source / "model.safetensors").read_bytes()


def test_sinusoidal_table_survives_the_flax_format(tmp_path: Path) -> None:
    """transformers' Flax msgpack leaves the fixed table out; converting back regenerates it bit for bit."""
    source, _ = _checkpoint(tmp_path / "src", "masked_lm", sinusoidal_pos_embds=True)
    convert(source, tmp_path / "flax", formats=["flax_msgpack"], dtype="bfloat16")
    stored = read_weights([tmp_path / "flax" / "flax_model.msgpack"], "flax_msgpack")
    assert "distilbert.embeddings.position_embeddings.weight" not in stored
    convert(tmp_path / "flax", tmp_path / "back", formats=["safetensors"])
    _same_bits(_tensors(tmp_path / "back"), cast_state(_tensors(source), "bfloat16"))


def test_all_formats_at_once_and_sharded(tmp_path: Path) -> None:
    source, _ = _checkpoint(tmp_path / "src", "token_classification")
    written = convert(source, tmp_path / "all", formats=",".join(FORMATS), max_shard_size="20KB")
    names = {p.name for p in written}
    for fmt in FORMATS:
        assert WEIGHTS_NAMES[fmt] + ".index.json" in names, fmt
        assert any(n.startswith(WEIGHTS_NAMES[fmt].split(".")[0] + "-00001-of-") for n in names), fmt
    assert not [p for p in (tmp_path / "all").iterdir() if p.name.startswith(".")]  # no staging left behind
    convert(tmp_path / "all", tmp_path / "one", formats="safetensors")
    _same_bits(_tensors(tmp_path / "one"), _tensors(source))


CASES = sorted(p.name for p in FIXTURES.iterdir() if (p / "config.json").is_file())


@pytest.mark.parametrize("case", CASES)
def test_any_format_transformers_wrote_converts_exactly(tmp_path: Path, case: str) -> None:
    """Every file transformers 4.57.6 wrote (PyTorch .bin, TF .h5, Flax .msgpack, sharded or not) converts to the
    exact tensors of its PyTorch state dict."""
    from safetensors.numpy import load_file

    folder = FIXTURES / case
    expected = load_file(folder / "expected.safetensors")
    config = DistilBertConfig.from_json_file(folder / "config.json")
    tested = 0
    for fmt, name in WEIGHTS_NAMES.items():
        files = [p for p in folder.iterdir() if p.name.startswith(name.split(".")[0]) and fmt_suffix(p, name)]
        if not files:
            continue
        only = tmp_path / fmt
        only.mkdir()
        shutil.copy(folder / "config.json", only)
        for file in files:
            shutil.copy(file, only)
        assert find_weights(only)[0] == fmt
        convert(only, tmp_path / f"{fmt}-out", formats=["safetensors"])
        got = _tensors(tmp_path / f"{fmt}-out")
        head = infer_head(config, got)
        want = {k: v for k, v in expected.items() if k in expected_shapes(config, head)}
        _same_bits(got, want)
        tested += 1
    assert tested >= 2


def fmt_suffix(path: Path, weights_name: str) -> bool:
    suffix = weights_name.rsplit(".", 1)[1]
    return path.name.endswith((f".{suffix}", f".{suffix}.index.json"))


def test_config_and_tokenizer_files_are_copied(tmp_path: Path, shared_data: Path) -> None:
    source = shared_data / "tiny-random-distilbert"
    written = convert(source, tmp_path / "out", formats=["tf_h5"])
    names = {p.name for p in written}
    for name in ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert name in names
        assert (tmp_path / "out" / name).read_bytes() == (source / name).read_bytes(), name
    _same_bits(_tensors(tmp_path / "out"), _tensors(source))
    convert(source, tmp_path / "bf16", formats=["safetensors"], dtype="bf16")
    config = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert config["torch_dtype"] == "bfloat16"
    assert config["vocab_size"] == 1124


# ----------------------------------------------------------------------------------------------- safety


def test_refuses_a_non_empty_destination_unless_overwrite(tmp_path: Path) -> None:
    source, _ = _checkpoint(tmp_path / "src", "base")
    dst = tmp_path / "dst"
    dst.mkdir()
    (dst / "notes.txt").write_text("keep me")
    (dst / "pytorch_model.bin").write_bytes(b"stale")
    (dst / "tf_model-00001-of-00002.h5").write_bytes(b"stale shard")
    with pytest.raises(FileExistsError, match="not empty; pass overwrite=True"):
        convert(source, dst, formats=["safetensors"])
    assert (dst / "pytorch_model.bin").read_bytes() == b"stale"
    convert(source, dst, formats=["safetensors"], overwrite=True)
    assert sorted(p.name for p in dst.iterdir()) == ["config.json", "model.safetensors", "notes.txt"]
    with pytest.raises(ValueError, match="same folder"):
        convert(source, source, formats=["tf_h5"], overwrite=True)
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        convert(source, tmp_path / "file")


def test_missing_library_names_what_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source, _ = _checkpoint(tmp_path / "src", "base")
    monkeypatch.setitem(sys.modules, "h5py", None)  # import h5py now raises ImportError
    with pytest.raises(ImportError, match=r"tf_h5 format needs the 'h5py' package.*pip install h5py"):
        convert(source, tmp_path / "dst", formats=["safetensors", "tf_h5"])
    assert not (tmp_path / "dst").exists()


def test_a_failing_writer_leaves_no_trace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import distilbert_mf.checkpoint.io as io

    source, _ = _checkpoint(tmp_path / "src", "base")
    real = io.write_weights

    def failing(directory, state, fmt, **kwargs):
        if fmt == "flax_msgpack":
            raise OSError("disk full")
        return real(directory, state, fmt, **kwargs)

    monkeypatch.setattr(io, "write_weights", failing)
    with pytest.raises(OSError, match="disk full"):
        convert(source, tmp_path / "new", formats=["safetensors", "flax_msgpack"])
    assert not (tmp_path / "new").exists()
    existing = tmp_path / "existing"
    existing.mkdir()
    (existing / "model.safetensors").write_bytes(b"old")
    with pytest.raises(OSError, match="disk full"):
        convert(source, existing, formats=["safetensors", "flax_msgpack"], overwrite=True)
    assert sorted(p.name for p in existing.iterdir()) == ["model.safetensors"]
    assert (existing / "model.safetensors").read_bytes() == b"old"


def test_weights_missing_for_the_head_are_an_error(tmp_path: Path) -> None:
    config = _config("sequence_classification", extra={"architectures": ["DistilBertForSequenceClassification"]})
    state = _state(config, "sequence_classification")
    del state["distilbert.transformer.layer.1.ffn.lin2.bias"]
    from distilbert_mf.checkpoint.io import write_weights

    write_weights(tmp_path / "src", state, "safetensors", head="sequence_classification", config=config)
    config.save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match=r"lacks 1 weight.*layer.1.ffn.lin2.bias.*never initialises"):
        convert(tmp_path / "src", tmp_path / "dst")


# ----------------------------------------------------------------------------------------------- command line


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distilbert_mf.cli", *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )


def test_cli_convert(tmp_path: Path) -> None:
    source, _ = _checkpoint(tmp_path / "src", "question_answering")
    result = _cli("convert", str(source), str(tmp_path / "out"), "--to", "tf_h5,flax_msgpack", "--dtype", "float16")
    assert result.returncode == 0, result.stderr
    assert [Path(line).name for line in result.stdout.splitlines()] == [
        "tf_model.h5",
        "flax_model.msgpack",
        "config.json",
    ]
    assert {str(a.dtype) for a in _tensors(tmp_path / "out").values()} == {"float16"}
    again = _cli("convert", str(source), str(tmp_path / "out"), "--to", "safetensors")
    assert again.returncode == 2  # docs/cli.md: one exit-status policy for every subcommand
    assert again.stderr.strip().endswith("not empty; pass --overwrite to replace its weights")
    assert _cli("convert", str(source), str(tmp_path / "out"), "--to", "safetensors", "--overwrite").returncode == 0
    assert find_weights(tmp_path / "out")[0] == "safetensors"
    assert not (tmp_path / "out" / "tf_model.h5").exists()
    bad = _cli("convert", str(source), str(tmp_path / "x"), "--to", "onnx")
    assert bad.returncode == 2 and "unknown output format 'onnx'" in bad.stderr
    assert _cli("convert", str(source), str(tmp_path / "y"), "--dtype", "int8").returncode == 2


# ----------------------------------------------------------------------------------------------- transformers reads it

REFERENCE_SCRIPT = r"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import transformers
root, ids, mask = sys.argv[1], np.array(json.loads(sys.argv[2])), np.array(json.loads(sys.argv[3]))
out = {}
for head, cls in (("masked_lm", "DistilBertForMaskedLM"), ("sequence_classification", "DistilBertForSequenceClassification")):
    for fmt, prefix in (("safetensors", ""), ("pytorch_bin", ""), ("tf_h5", "TF"), ("flax_msgpack", "Flax")):
        model = getattr(transformers, prefix + cls).from_pretrained(os.path.join(root, head, fmt))
        if prefix == "":
            import torch
            with torch.no_grad():
                logits = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask)).logits.numpy()
        else:
            logits = np.asarray(model(input_ids=ids, attention_mask=mask).logits)
        out[f"{head}/{fmt}"] = logits.tolist()
print(json.dumps(out))
"""


@pytest.mark.slow
@pytest.mark.reference
@pytest.mark.torch
def test_transformers_4_57_reads_every_converted_format(tmp_path: Path) -> None:
    """Our output loads with transformers 4.57.6 in PyTorch, TensorFlow and Flax, with the same logits."""
    if not REF457.is_file():
        pytest.skip(f"no transformers 4.57.6 environment at {REF457}")
    from distilbert_mf.torch import DistilBertForMaskedLM, DistilBertForSequenceClassification

    ids = np.array([[5, 17, 42, 8, 0, 0], [9, 3, 77, 61, 12, 4]])
    mask = (ids != 0).astype(np.int64)
    expected = {}
    for head, cls in (
        ("masked_lm", DistilBertForMaskedLM),
        ("sequence_classification", DistilBertForSequenceClassification),
    ):
        source, _ = _checkpoint(tmp_path / "src" / head, head, seed=4)
        for fmt in FORMATS:
            convert(source, tmp_path / head / fmt, formats=[fmt])
        model = cls.from_pretrained(source, attn_implementation="eager")
        expected[head] = model(input_ids=ids, attention_mask=mask).logits.detach().numpy()
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(REF457), "-c", REFERENCE_SCRIPT, str(tmp_path), json.dumps(ids.tolist()), json.dumps(mask.tolist())],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    for key, logits in got.items():
        head = key.split("/")[0]
        np.testing.assert_allclose(np.array(logits), expected[head], atol=1e-5, err_msg=key)
    assert len(got) == 8


def test_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The python examples of docs/conversion.md run, in order, as one script."""
    import re

    doc = ROOT / "docs" / "conversion.md"
    blocks = re.findall(r"```python\n(.*?)```", doc.read_text(encoding="utf-8"), flags=re.S)
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for block in blocks:
        if "distilbert_mf.torch" in block and "pt" not in available_frameworks():
            continue
        exec(compile(block, str(doc), "exec"), namespace)
    assert [p.name for p in namespace["written"]][:4] == [WEIGHTS_NAMES[f] for f in FORMATS]
    assert {str(a.dtype) for a in _tensors(tmp_path / "my-model-bf16").values()} == {"bfloat16"}
