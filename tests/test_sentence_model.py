"""The embedded sentence-embedding model distilbert-mf/all-minilm-l6-v2: packaged in float32, and its pipeline
embeddings equal to sentence-transformers' (the test-only reference) within 1e-5 in every framework.

The reference is sentence-transformers on the original BERT folder (shared/data/all-MiniLM-L6-v2) when it is
installed, else transformers' BertModel on the same folder with mean pooling and L2 normalisation. SOURCES.md pins
the normalised [CLS] vector of "hello world": that is ``pooling="cls"``, not the sentence-transformers embedding.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf.models import DEFAULT_SENTENCE_EMBEDDING_MODEL, builtin_path

BOUND = 1e-5
SENTENCES = [
    "hello world",
    "This framework generates embeddings for each input sentence.",
    "Résumé of a naïve café owner: unaffable! 🙂",
    "x",
]
LONG = " ".join(["Sentence embeddings are cut where sentence-transformers cuts them."] * 40)  # > 256 tokens
PINNED_CLS = [0.0259, 0.0058, 0.0114, 0.0380, -0.0233]  # SOURCES.md, 4 decimals
FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.torch),
    pytest.param("tf", marks=pytest.mark.tensorflow),
    pytest.param("flax", marks=pytest.mark.flax),
]


def _folder() -> Path:
    folder = builtin_path(DEFAULT_SENTENCE_EMBEDDING_MODEL)
    if folder is None or not (folder / "model.safetensors").is_file():
        pytest.skip(f"{DEFAULT_SENTENCE_EMBEDDING_MODEL} is not packaged: examples/package_sentence_model.py")
    return folder


@pytest.fixture(scope="module")
def reference(shared_data) -> np.ndarray:
    """(len(SENTENCES) + 1, 384) float32: the reference embeddings of SENTENCES and LONG."""
    source = shared_data / "all-MiniLM-L6-v2"
    texts = [*SENTENCES, LONG]
    if importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers import SentenceTransformer

        return SentenceTransformer(str(source), device="cpu").encode(texts)
    transformers = pytest.importorskip("transformers")
    torch = pytest.importorskip("torch")
    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(source))
    model = transformers.BertModel.from_pretrained(str(source)).eval()
    rows = []
    for text in texts:
        with torch.no_grad():
            hidden = model(**tokenizer(text, truncation=True, max_length=256, return_tensors="pt")).last_hidden_state
        vector = hidden[0].mean(0).numpy()
        rows.append(vector / np.linalg.norm(vector))
    return np.stack(rows)


def test_packaged_files():
    from safetensors import safe_open

    folder = _folder()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "distilbert" and config["architectures"] == ["DistilBertModel"]
    assert (config["dim"], config["n_layers"], config["n_heads"], config["hidden_dim"]) == (384, 6, 12, 1536)
    with safe_open(str(folder / "model.safetensors"), "np") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"F32"}
    size = (folder / "model.safetensors").stat().st_size
    assert 85 * 2**20 < size < 88 * 2**20, f"model.safetensors is {size} bytes, expected about 86 MiB"
    assert json.loads((folder / "tokenizer_config.json").read_text())["model_max_length"] == 256
    card = (folder / "README.md").read_text(encoding="utf-8")
    for needle in ("sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0", "float32", 'pooling="mean"'):
        assert needle in card


def test_exact_conversion_of_the_bert(shared_data):
    """The weights are all-MiniLM-L6-v2's, renamed, with token type 0 folded into the positions (nothing else)."""
    from safetensors.numpy import load_file

    bert = load_file(str(shared_data / "all-MiniLM-L6-v2" / "model.safetensors"))
    ours = load_file(str(_folder() / "model.safetensors"))
    prefix = "embeddings." if "embeddings.word_embeddings.weight" in bert else "bert.embeddings."
    assert np.array_equal(ours["embeddings.word_embeddings.weight"], bert[prefix + "word_embeddings.weight"])
    folded = bert[prefix + "position_embeddings.weight"] + bert[prefix + "token_type_embeddings.weight"][0]
    assert np.array_equal(ours["embeddings.position_embeddings.weight"], folded)
    layer = "encoder.layer.5.attention.self.query.weight"
    layer = layer if layer in bert else "bert." + layer
    assert np.array_equal(ours["transformer.layer.5.attention.q_lin.weight"], bert[layer])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_sentence_embeddings_equal_sentence_transformers(framework, reference):
    from distilbert_mf import pipeline

    _folder()
    embed = pipeline("feature-extraction", framework=framework, pooling="mean", normalize=True)  # the default
    ours = np.stack(embed([*SENTENCES, LONG], return_tensors=True))
    assert ours.shape == reference.shape == (len(SENTENCES) + 1, 384) and ours.dtype == np.float32
    assert np.max(np.abs(ours - reference)) <= BOUND
    assert np.allclose(np.linalg.norm(ours, axis=1), 1.0, atol=1e-6)
    cls = embed("hello world", pooling="cls", return_tensors=True)
    assert np.max(np.abs(cls[:5] - PINNED_CLS)) <= 5e-5  # the value SOURCES.md pins
    assert np.max(np.abs(ours[0, :5] - PINNED_CLS)) > 1e-2  # ... which is not the mean-pooled embedding
    tokens = embed("hello world", pooling=None, normalize=False, return_tensors=True)  # token vectors
    assert tokens.shape == (1, 4, 384)
