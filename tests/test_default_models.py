"""Default model per task (issue 15 point 7): which model ``pipeline(task)`` and ``distilbert-mf run`` load when none
is given, loaded from a Hugging Face cache folder laid out as ``hf_hub_download`` leaves it (never the network)."""

from __future__ import annotations

import hashlib
import io
import json
import sys
from pathlib import Path

import pytest

from distilbert_mf import cli
from distilbert_mf.models import DEFAULT_SENTENCE_EMBEDDING_MODEL, DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path
from distilbert_mf.pipelines import DEFAULT_MODELS, NoDefaultModelError, default_model, pipeline

COMMIT = "0123456789abcdef0123456789abcdef01234567"
HUB_DEFAULTS = {
    "fill-mask": ("distilbert/distilbert-base-uncased", "masked_lm"),
    "question-answering": ("distilbert/distilbert-base-cased-distilled-squad", "question_answering"),
    "feature-extraction": ("distilbert/distilbert-base-cased", "base"),
}


def put_in_cache(cache: Path, repo_id: str, folder: Path) -> None:
    """Every file of ``folder`` as the cached snapshot of ``repo_id`` (blobs, snapshot links, refs/main)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    snapshot.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for path in folder.iterdir():
        data = path.read_bytes()
        blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        (snapshot / path.name).symlink_to(Path("../../blobs") / blob.name)


@pytest.fixture(scope="module")
def cache(tmp_path_factory, shared_data) -> Path:
    """A cache holding tiny stand-ins for the three Hub defaults, each with the head its task needs."""
    from test_cli_policy import tiny_checkpoint

    root = tmp_path_factory.mktemp("default-models")
    for task, (repo_id, head) in HUB_DEFAULTS.items():
        folder = tiny_checkpoint(root / task, head, shared_data)
        put_in_cache(root / "cache", repo_id, folder)
    return root / "cache"


def test_the_defaults():
    assert DEFAULT_MODELS == {
        "text-classification": DEFAULT_TEXT_CLASSIFICATION_MODEL,
        **{task: repo for task, (repo, _) in HUB_DEFAULTS.items()},
    }
    assert default_model("sentiment-analysis") == DEFAULT_TEXT_CLASSIFICATION_MODEL
    assert default_model("feature-extraction") == "distilbert/distilbert-base-cased"  # transformers' own default
    assert default_model("feature-extraction", pooling="mean") == DEFAULT_SENTENCE_EMBEDDING_MODEL  # offline
    for task in ("ner", "zero-shot-classification"):
        with pytest.raises(NoDefaultModelError, match="is not a DistilBERT") as info:
            default_model(task)
        assert "pass model=<folder" in str(info.value) and "pass --model <folder" in info.value.cli_message


@pytest.mark.parametrize("task", list(HUB_DEFAULTS))
def test_hub_defaults_load_from_the_cache(task, cache, monkeypatch, caplog):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    pipe = pipeline(task, cache_dir=cache, framework="pt" if "pt" in _installed() else None)
    assert (pipe.config.dim, pipe.config.vocab_size) == (32, 1124)  # the cached stand-in, not another model
    assert f"uses its default, {HUB_DEFAULTS[task][0]!r} from the Hugging Face Hub" in caplog.text


def test_cli_uses_the_cached_default(cache, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello [MASK] world\n"))
    assert cli.main(["run", "--task", "fill-mask", "--cache-dir", str(cache), "--top-k", "2"]) == 0
    (proposals,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(proposals) == 2 and {"score", "token", "token_str", "sequence"} == set(proposals[0])


def test_offline_without_cache_names_the_default(tmp_path, monkeypatch):
    from distilbert_mf.hub import NotInCacheError

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(NotInCacheError, match=r"'distilbert/distilbert-base-cased-distilled-squad' \(revision main\)"):
        pipeline("question-answering", cache_dir=tmp_path)


def test_pooled_feature_extraction_defaults_to_the_embedded_model(tmp_path, monkeypatch):
    if builtin_path(DEFAULT_SENTENCE_EMBEDDING_MODEL) is None:
        pytest.skip("the embedded sentence model is not packaged")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    embed = pipeline("feature-extraction", pooling="mean", normalize=True, cache_dir=tmp_path)  # an empty cache
    vector = embed("hello world")
    assert len(vector) == 384 and sum(x * x for x in vector) == pytest.approx(1.0, abs=1e-6)


def _installed() -> list[str]:
    from distilbert_mf.frameworks import available_frameworks

    if not available_frameworks():
        pytest.skip("no framework installed")
    return available_frameworks()
