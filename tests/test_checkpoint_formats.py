"""Readers and writers of every weights format: real files, files transformers 4.57.6 wrote, bit-exact round trips."""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import h5py
import ml_dtypes
import msgpack
import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file, save_file

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint import HEADS, expected_shapes, load_pretrained, sinusoidal_table
from distilbert_mf.checkpoint.hub import find_weights
from distilbert_mf.checkpoint.io import FORMATS, INDEX_NAMES, WEIGHTS_NAMES, read_weights, write_weights
from distilbert_mf.checkpoint.pytorch_bin import read_pytorch_bin
from distilbert_mf.checkpoint.sharding import parse_size, plan_shards, shard_file_names, shard_files

FIXTURES = Path(__file__).parent / "fixtures" / "transformers457"
DTYPES = (np.dtype(np.float32), np.dtype(np.float16), np.dtype(ml_dtypes.bfloat16))
# (case folder, format) for every weights file (or sharded index) transformers 4.57.6 wrote into the fixtures
FIXTURE_FILES = [
    (case.name, fmt)
    for case in sorted(p for p in FIXTURES.iterdir() if p.is_dir())
    for fmt in FORMATS
    if (case / WEIGHTS_NAMES[fmt]).is_file() or (case / INDEX_NAMES[fmt]).is_file()
]


def bits_equal(a: np.ndarray, b: np.ndarray) -> bool:
    a, b = np.ascontiguousarray(a), np.ascontiguousarray(b)
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and np.array_equal(a.reshape(-1).view(np.uint8), b.reshape(-1).view(np.uint8))
    )


def assert_same_state(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert sorted(got) == sorted(want)
    for key in want:
        assert bits_equal(got[key], want[key]), key


def random_state(config: DistilBertConfig, head: str, dtype: np.dtype, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    state = {k: rng.standard_normal(s).astype(dtype) for k, s in expected_shapes(config, head).items()}
    if head == "masked_lm":
        state["vocab_projector.weight"] = state["distilbert.embeddings.word_embeddings.weight"]
    return state


def config_for(head: str, tiny_config: DistilBertConfig) -> DistilBertConfig:
    return tiny_config.replace(num_labels=2) if head == "question_answering" else tiny_config


# ------------------------------------------------------------------ the real transformers-written checkpoint


def test_tiny_random_bin_and_safetensors_identical(shared_data: Path) -> None:
    folder = shared_data / "tiny-random-distilbert"
    from_bin = read_weights([folder / "pytorch_model.bin"], "pytorch_bin")
    from_st = read_weights([folder / "model.safetensors"], "safetensors")
    with safe_open(str(folder / "model.safetensors"), framework="numpy") as handle:
        assert handle.metadata() is None  # this real file has no format metadata
    assert len(from_bin) == 84
    assert_same_state(from_bin, from_st)
    assert from_bin["embeddings.word_embeddings.weight"].shape == (1124, 32)


def test_tiny_random_loads_for_every_head(shared_data: Path) -> None:
    folder = shared_data / "tiny-random-distilbert"
    config, arrays, report = load_pretrained(folder, "base")
    assert config.n_layers == 5 and report.missing == [] and report.unexpected == []
    assert sorted(arrays) == sorted(expected_shapes(config, "base"))
    _, arrays, report = load_pretrained(folder, "sequence_classification")
    assert report.missing == ["pre_classifier.weight", "pre_classifier.bias", "classifier.weight", "classifier.bias"]
    assert bits_equal(
        arrays["distilbert.transformer.layer.4.ffn.lin2.bias"],
        load_file(str(folder / "model.safetensors"))["transformer.layer.4.ffn.lin2.bias"],
    )


# ------------------------------------------------------------------ files written by transformers 4.57.6


def expected_for(case: str, fmt: str) -> dict[str, np.ndarray]:
    """What transformers' file of ``fmt`` holds for the case, as canonical names."""
    want = load_file(str(FIXTURES / case / "expected.safetensors"))
    if fmt in ("tf_h5", "flax_msgpack"):
        want.pop("vocab_projector.weight", None)  # TF / Flax keep only the embedding it is tied to
    if fmt == "flax_msgpack" and "sinusoidal" in case:
        want.pop("embeddings.position_embeddings.weight")  # transformers' Flax never stores the table
    if fmt == "tf_h5" and not any(k.startswith("distilbert.") for k in want):
        want = {"distilbert." + k: v for k, v in want.items()}  # TF's main layer is always named distilbert
    return want


def test_fixtures_cover_every_format() -> None:
    assert len(FIXTURE_FILES) == 30  # 7 cases x 3 formats, bf16 and fp16 (2 each), 4 sharded, 1 legacy .bin
    assert {fmt for case, fmt in FIXTURE_FILES if case == "sharded"} == set(FORMATS)


@pytest.mark.parametrize(("case", "fmt"), FIXTURE_FILES)
def test_reads_exactly_what_transformers_wrote(case: str, fmt: str) -> None:
    folder = FIXTURES / case
    if (folder / WEIGHTS_NAMES[fmt]).is_file():
        files = [folder / WEIGHTS_NAMES[fmt]]
    else:
        files = shard_files(folder / INDEX_NAMES[fmt])
        assert len(files) > 1
    assert_same_state(read_weights(files, fmt), expected_for(case, fmt))


def test_flax_file_without_sinusoidal_table_gets_it_generated() -> None:
    folder = FIXTURES / "base_sinusoidal"
    config = DistilBertConfig.from_pretrained(folder)
    state = read_weights([folder / "flax_model.msgpack"], "flax_msgpack")
    assert "embeddings.position_embeddings.weight" not in state
    want = load_file(str(folder / "expected.safetensors"))["embeddings.position_embeddings.weight"]
    np.testing.assert_array_equal(sinusoidal_table(config.max_position_embeddings, config.dim), want)


# ------------------------------------------------------------------ our writers: layouts transformers loads


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_round_trip_is_bit_exact(tmp_path: Path, tiny_config, head: str, fmt: str, dtype: np.dtype) -> None:
    config = config_for(head, tiny_config)
    state = random_state(config, head, dtype)
    write_weights(tmp_path, state, fmt, head=head, config=config)
    found_fmt, files = find_weights(tmp_path)
    assert (found_fmt, [f.name for f in files]) == (fmt, [WEIGHTS_NAMES[fmt]])
    got = read_weights(files, fmt)
    want = dict(state)
    if fmt != "pytorch_bin" and head == "masked_lm":
        want.pop("vocab_projector.weight")
    if fmt == "tf_h5" and head == "base":
        want = {"distilbert." + k: v for k, v in want.items()}
    assert_same_state(got, want)


def test_safetensors_layout(tmp_path: Path, tiny_config) -> None:
    state = random_state(tiny_config, "masked_lm", np.dtype(np.float32))
    write_weights(tmp_path, state, "safetensors", head="masked_lm", config=tiny_config)
    with safe_open(str(tmp_path / "model.safetensors"), framework="numpy") as handle:
        assert handle.metadata() == {"format": "pt"}
        assert "vocab_projector.weight" not in set(handle.keys())  # tied: not duplicated
    untied = tiny_config.replace(tie_word_embeddings=False)
    write_weights(tmp_path, state, "safetensors", head="masked_lm", config=untied)
    assert "vocab_projector.weight" in load_file(str(tmp_path / "model.safetensors"))


def test_pytorch_bin_layout(tmp_path: Path, tiny_config) -> None:
    state = random_state(tiny_config, "masked_lm", np.dtype(np.float32))
    state.pop("vocab_projector.weight")
    write_weights(tmp_path, state, "pytorch_bin", head="masked_lm", config=tiny_config)
    path = tmp_path / "pytorch_model.bin"
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = [info.filename for info in infos]
        assert names[0] == "pytorch_model/data.pkl" and "pytorch_model/version" in names
        with open(path, "rb") as handle:
            for info in infos:
                assert info.compress_type == zipfile.ZIP_STORED
                if "/data/" in info.filename:  # storages start on 64-byte boundaries, as torch.save writes
                    handle.seek(info.header_offset + 26)
                    name_len, extra_len = struct.unpack("<HH", handle.read(4))
                    assert (info.header_offset + 30 + name_len + extra_len) % 64 == 0
    got = read_pytorch_bin(path)
    # transformers' .bin stores the tied projector as a second reference to the embedding storage
    assert np.shares_memory(got["vocab_projector.weight"], got["distilbert.embeddings.word_embeddings.weight"])


def test_tf_h5_layout(tmp_path: Path, tiny_config) -> None:
    state = random_state(tiny_config, "masked_lm", np.dtype(np.float32))
    write_weights(tmp_path, state, "tf_h5", head="masked_lm", config=tiny_config)
    with h5py.File(tmp_path / "tf_model.h5", "r") as handle:
        layers = [n.decode() for n in handle.attrs["layer_names"]]
        assert layers == ["distilbert", "vocab_transform", "vocab_layer_norm", "vocab_projector"]
        names = [n.decode() for n in handle["distilbert"].attrs["weight_names"]]
        assert names[:4] == [
            "tf_distil_bert_for_masked_lm/distilbert/embeddings/word_embeddings/weight:0",
            "tf_distil_bert_for_masked_lm/distilbert/embeddings/position_embeddings/embeddings:0",
            "tf_distil_bert_for_masked_lm/distilbert/embeddings/LayerNorm/gamma:0",
            "tf_distil_bert_for_masked_lm/distilbert/embeddings/LayerNorm/beta:0",
        ]
        kernel = handle["distilbert"]["tf_distil_bert_for_masked_lm/distilbert/transformer/layer_._1/ffn/lin1/kernel:0"]
        np.testing.assert_array_equal(kernel[()], state["distilbert.transformer.layer.1.ffn.lin1.weight"].T)
        projector = [n.decode() for n in handle["vocab_projector"].attrs["weight_names"]]
        assert projector[0] == "tf_distil_bert_for_masked_lm/vocab_projector/bias:0" and len(projector) == 5


def test_flax_msgpack_layout(tmp_path: Path, tiny_config) -> None:
    config = tiny_config.replace(sinusoidal_pos_embds=True)
    state = random_state(config, "base", np.dtype(np.float32))
    state["embeddings.position_embeddings.weight"] = sinusoidal_table(config.max_position_embeddings, config.dim)
    write_weights(tmp_path, state, "flax_msgpack", head="base", config=config)
    tree = msgpack.unpackb(
        (tmp_path / "flax_model.msgpack").read_bytes(),
        raw=False,
        ext_hook=lambda code, data: msgpack.unpackb(data, raw=False),
    )
    assert sorted(tree) == ["embeddings", "transformer"]  # the base model has no "distilbert" level
    assert sorted(tree["embeddings"]) == ["LayerNorm", "word_embeddings"]  # generated sinusoidal table omitted
    assert sorted(tree["transformer"]["layer"]) == ["0", "1"]  # string layer keys
    shape, dtype, _ = tree["transformer"]["layer"]["1"]["ffn"]["lin1"]["kernel"]
    assert (tuple(shape), dtype) == ((config.dim, config.hidden_dim), "float32")
    assert sorted(tree["embeddings"]["LayerNorm"]) == ["bias", "scale"]


def test_foreign_safetensors_formats_are_renamed(tmp_path: Path) -> None:
    """transformers' TF and Flax classes can write model.safetensors with their own names."""
    rng = np.random.default_rng(1)
    kernel = rng.standard_normal((4, 6)).astype(np.float32)
    gamma = rng.standard_normal(4).astype(np.float32)
    save_file(
        {
            "distilbert/transformer/layer_._0/ffn/lin1/kernel:0": kernel,
            "distilbert/embeddings/LayerNorm/gamma:0": gamma,
        },
        str(tmp_path / "tf.safetensors"),
        metadata={"format": "tf"},
    )
    save_file(
        {"distilbert.transformer.layer.0.ffn.lin1.kernel": kernel, "distilbert.embeddings.LayerNorm.scale": gamma},
        str(tmp_path / "flax.safetensors"),
        metadata={"format": "flax"},
    )
    want = {"distilbert.transformer.layer.0.ffn.lin1.weight": kernel.T, "distilbert.embeddings.LayerNorm.weight": gamma}
    assert_same_state(read_weights([tmp_path / "tf.safetensors"], "safetensors"), want)
    assert_same_state(read_weights([tmp_path / "flax.safetensors"], "safetensors"), want)


# ------------------------------------------------------------------ sharding


def test_parse_size() -> None:
    assert parse_size(123) == 123
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("100MB") == 10**8
    assert parse_size("2GiB") == 2 * 2**30
    assert parse_size("1.5kb") == 1500
    for bad in ("5 parsecs", "GB", "-1MB", 0, -5):
        with pytest.raises(ValueError, match="max_shard_size"):
            parse_size(bad)
    with pytest.raises(TypeError, match="max_shard_size"):
        parse_size(1.5)  # type: ignore[arg-type]


def test_plan_shards() -> None:
    sizes = [("a", 6), ("b", 6), ("c", 2), ("d", 6), ("e", 20), ("f", 1)]
    assert plan_shards(sizes, 10) == [["a"], ["b", "c"], ["d"], ["e"], ["f"]]
    assert plan_shards(sizes, 1000) == [["a", "b", "c", "d", "e", "f"]]
    assert shard_file_names("tf_model.h5", 2) == ["tf_model-00001-of-00002.h5", "tf_model-00002-of-00002.h5"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_sharded_write_and_read(tmp_path: Path, tiny_config, fmt: str) -> None:
    head = "masked_lm"
    state = random_state(tiny_config, head, np.dtype(ml_dtypes.bfloat16), seed=3)
    single = tmp_path / "single"
    write_weights(single, state, fmt, head=head, config=tiny_config)
    written = write_weights(tmp_path, state, fmt, head=head, config=tiny_config, max_shard_size="3KB")
    index = tmp_path / INDEX_NAMES[fmt]
    assert written[-1] == index and len(written) > 3
    content = json.loads(index.read_text())
    assert content["metadata"]["total_size"] > 0
    assert sorted(set(content["weight_map"].values())) == [p.name for p in written[:-1]]
    for shard in written[:-1]:
        part = read_weights([shard], fmt)
        part.pop("vocab_projector.weight", None)  # the .bin's second reference to the embedding storage
        assert sum(a.nbytes for a in part.values()) <= 3000 or len(part) == 1
    found_fmt, files = find_weights(tmp_path)
    assert found_fmt == fmt and files == written[:-1]
    assert_same_state(read_weights(files, fmt), read_weights(find_weights(single)[1], fmt))
    # a later unsharded save replaces the shards and the index (no stale files are picked up)
    write_weights(tmp_path, state, fmt, head=head, config=tiny_config)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [WEIGHTS_NAMES[fmt]]


def test_tf_sharded_layout_matches_transformers(tmp_path: Path, tiny_config) -> None:
    state = random_state(tiny_config, "sequence_classification", np.dtype(np.float32))
    write_weights(tmp_path, state, "tf_h5", head="sequence_classification", config=tiny_config, max_shard_size=5000)
    ours = json.loads((tmp_path / "tf_model.h5.index.json").read_text())["weight_map"]
    theirs = json.loads((FIXTURES / "sharded" / "tf_model.h5.index.json").read_text())["weight_map"]
    assert all(name.startswith("tf_distil_bert_for_sequence_classification/") for name in ours)
    # the same Keras weight names (transformers ignores the model name, which Keras numbers per process)
    assert sorted(n.split("/", 1)[1] for n in ours) == sorted(n.split("/", 1)[1] for n in theirs)
    first = shard_files(tmp_path / "tf_model.h5.index.json")[0]
    with h5py.File(first, "r") as handle:
        for name in handle.attrs["layer_names"]:
            assert isinstance(handle[name.decode()], h5py.Dataset)


def test_index_errors(tmp_path: Path) -> None:
    (tmp_path / "model.safetensors.index.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a valid sharded-checkpoint index"):
        find_weights(tmp_path)
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"a": "missing.safetensors"}}))
    with pytest.raises(FileNotFoundError, match=r"missing.safetensors"):
        find_weights(tmp_path)


# ------------------------------------------------------------------ errors


def test_format_errors(tmp_path: Path, tiny_config) -> None:
    with pytest.raises(ValueError, match="unknown weights format 'onnx'"):
        read_weights([tmp_path / "x"], "onnx")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_weights([tmp_path / "absent.safetensors"], "safetensors")
    junk = tmp_path / "junk"
    junk.write_bytes(b"this is not a weights file at all" * 10)
    for fmt in FORMATS:
        with pytest.raises(ValueError, match="junk"):
            read_weights([junk], fmt)
    with pytest.raises(TypeError, match="dtype complex64"):
        write_weights(
            tmp_path,
            {"classifier.weight": np.zeros((2, 2), np.complex64)},
            "pytorch_bin",
            head="token_classification",
            config=tiny_config,
        )
    with pytest.raises(ValueError, match="unknown head"):
        write_weights(tmp_path, {}, "safetensors", head="seq2seq", config=tiny_config)
