"""AutoTokenizer, transformers' from_pretrained keywords, and file resolution through distilbert_mf.hub only."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

import pytest

from distilbert_mf import hub
from distilbert_mf.tokenization import AutoTokenizer, DistilBertTokenizer, DistilBertTokenizerFast
from distilbert_mf.tokenization import files as tokenizer_files

HUB = "distilbert-base-uncased-tokenizer"
TEXT = "Hello, how are you? Caf\u00e9 \u4e2d\u6587 unwanted"


def _copy(shared_data: Path, tmp_path: Path, name: str = HUB) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(shared_data / name, folder)
    return folder


def test_fast_by_default_slow_on_request(shared_data: Path) -> None:
    fast = AutoTokenizer.from_pretrained(shared_data / HUB)
    slow = AutoTokenizer.from_pretrained(shared_data / HUB, use_fast=False)
    assert type(fast) is DistilBertTokenizerFast and type(slow) is DistilBertTokenizer
    assert (
        dict(fast(TEXT)) == dict(slow(TEXT)) == dict(DistilBertTokenizerFast.from_pretrained(shared_data / HUB)(TEXT))
    )
    tiny = AutoTokenizer.from_pretrained(shared_data / "tiny-random-distilbert", model_max_length=8)
    assert tiny.model_max_length == 8 and tiny.vocab_size == 1124
    with pytest.raises(TypeError, match="use_fast must be True or False, got 'no'"):
        AutoTokenizer.from_pretrained(shared_data / HUB, use_fast="no")
    with pytest.raises(TypeError, match=r"call AutoTokenizer.from_pretrained"):
        AutoTokenizer()


def test_fast_falls_back_without_tokenizers(shared_data: Path, monkeypatch: pytest.MonkeyPatch, caplog: Any) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tokenizers" else real(name, *a))
    with caplog.at_level("WARNING"):
        tok = AutoTokenizer.from_pretrained(shared_data / HUB)
    assert type(tok) is DistilBertTokenizer and "'tokenizers' package is not installed" in caplog.text


def test_bert_tokenizer_loads(shared_data: Path) -> None:
    """A BERT checkpoint's tokenizer (model_type bert, BertTokenizer): the same WordPiece, no token_type_ids."""
    folder = shared_data / "all-MiniLM-L6-v2"
    assert json.loads((folder / "config.json").read_text())["model_type"] == "bert"
    assert json.loads((folder / "tokenizer_config.json").read_text())["tokenizer_class"] == "BertTokenizer"
    for use_fast in (True, False):
        tok = AutoTokenizer.from_pretrained(folder, use_fast=use_fast)
        assert set(tok(TEXT)) == {"input_ids", "attention_mask"}
        assert tok(TEXT)["input_ids"] == AutoTokenizer.from_pretrained(shared_data / HUB)(TEXT)["input_ids"]


@pytest.mark.reference
def test_bert_tokenizer_ids_equal_transformers(shared_data: Path) -> None:
    transformers = pytest.importorskip("transformers")
    folder = shared_data / "all-MiniLM-L6-v2"
    theirs = transformers.AutoTokenizer.from_pretrained(folder)
    texts = [TEXT, "A second, longer sentence with rare words: zymurgy!"]
    mine = AutoTokenizer.from_pretrained(folder)(texts, padding=True)
    assert mine["input_ids"] == theirs(texts, padding=True)["input_ids"]


@pytest.mark.parametrize(
    ("file", "content", "named"),
    [
        ("config.json", {"model_type": "roberta"}, "'roberta' model (config.json model_type)"),
        ("tokenizer_config.json", {"tokenizer_class": "GPT2Tokenizer"}, "'GPT2Tokenizer' tokenizer"),
    ],
)
def test_other_model_types_refused(shared_data: Path, tmp_path: Path, file: str, content: dict, named: str) -> None:
    folder = _copy(shared_data, tmp_path)
    (folder / file).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=re.escape(named)) as info:
        AutoTokenizer.from_pretrained(folder)
    assert "loads DistilBERT and BERT only" in str(info.value)
    assert "conversion/bert_to_distilbert.py" in str(info.value)
    (folder / "vocab.txt").unlink()  # refused for its model type before any vocabulary is needed
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ValueError, match=re.escape(named)):
        AutoTokenizer.from_pretrained(folder)


def test_config_and_tokenizer_type_arguments(shared_data: Path) -> None:
    from distilbert_mf.config import DistilBertConfig

    assert AutoTokenizer.from_pretrained(shared_data / HUB, config=DistilBertConfig()).vocab_size == 30522
    assert AutoTokenizer.from_pretrained(shared_data / HUB, config={"model_type": "bert"}, tokenizer_type="bert")
    with pytest.raises(ValueError, match="'t5' model"):
        AutoTokenizer.from_pretrained(shared_data / HUB, config={"model_type": "t5"})
    with pytest.raises(ValueError, match="tokenizer_type='gpt2'"):
        AutoTokenizer.from_pretrained(shared_data / HUB, tokenizer_type="gpt2")


@pytest.mark.parametrize("load", [AutoTokenizer.from_pretrained, DistilBertTokenizer.from_pretrained])
def test_transformers_keywords(load: Any, shared_data: Path, tmp_path: Path) -> None:
    folder = tmp_path / "repo"
    (folder / "tok").mkdir(parents=True)
    for name in ("vocab.txt", "tokenizer_config.json", "config.json"):
        shutil.copy(shared_data / HUB / name, folder / "tok" / name)
    tok = load(
        folder,
        subfolder="tok",
        revision=None,
        cache_dir=tmp_path / "cache",
        local_files_only=True,
        token=None,
        force_download=False,
        trust_remote_code=False,
    )
    assert tok("hello")["input_ids"] == [101, 7592, 102]
    with pytest.raises(ValueError, match="no remote code ever runs"):
        load(folder, subfolder="tok", trust_remote_code=True)
    with pytest.raises(TypeError, match=r"unexpected keyword arguments \['foo'\]; allowed: .*'do_lower_case'") as info:
        load(folder, subfolder="tok", foo=1)
    assert "'subfolder'" in str(info.value) and "trust_remote_code=False" in str(info.value)
    with pytest.raises(FileNotFoundError, match="no subfolder 'nope'"):
        load(folder, subfolder="nope")


def test_hub_repo_from_the_cache_with_subfolder(shared_data: Path, tmp_path: Path) -> None:
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = tmp_path / "models--org--tok" / "snapshots" / commit
    DistilBertTokenizer.from_pretrained(shared_data / HUB).save_pretrained(snapshot / "tokenizer")
    (tmp_path / "models--org--tok" / "refs").mkdir()
    (tmp_path / "models--org--tok" / "refs" / "main").write_text(commit, encoding="utf-8")
    tok = AutoTokenizer.from_pretrained("org/tok", subfolder="tokenizer", cache_dir=tmp_path, local_files_only=True)
    assert tok("hello")["input_ids"] == [101, 7592, 102]


@pytest.mark.parametrize(
    "load",
    [AutoTokenizer.from_pretrained, DistilBertTokenizerFast.from_pretrained, DistilBertTokenizer.from_pretrained],
)
def test_files_resolved_by_the_hub_module_in_one_call(
    load: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Offline with an empty cache: one call to distilbert_mf.hub.resolve_files for every file, one clear error."""
    calls: list[list[str]] = []
    real = hub.resolve_files

    def counting(name_or_path: Any, filenames: Any, **kwargs: Any) -> Any:
        calls.append(list(filenames))
        assert kwargs["optional"] is True
        return real(name_or_path, filenames, **kwargs)

    monkeypatch.setattr(hub, "resolve_files", counting)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hub.reset_hub_state()
    start = time.monotonic()
    with pytest.raises(
        hub.NotInCacheError, match=r"'org/absent' \(revision main\): looked for tokenizer_config"
    ) as err:
        load("org/absent", cache_dir=tmp_path)
    assert time.monotonic() - start < 5
    assert len(calls) == 1 and {"vocab.txt", "tokenizer.json"} <= set(calls[0])
    assert "vocab.txt" in str(err.value) and "HF_HUB_OFFLINE" in str(err.value)


def test_files_module_has_no_network_logic() -> None:
    """tokenization/files.py finds files through distilbert_mf.hub only (the offline rules live there)."""
    source = Path(tokenizer_files.__file__).read_text(encoding="utf-8")
    for word in ("huggingface_hub", "hf_hub_download", "requests", "urllib", "socket", "HF_HUB_OFFLINE"):
        assert word not in source
    assert "hub.resolve_files(" in source
