"""The embedded default model (distilbert-mf/minilm-sst2): loads everywhere, agrees everywhere, meets the bar.

Skips (with the reason) while the packaged folder is absent: examples/train_sentiment.py then
examples/package_default_model.py write it.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf.models import BUILTIN, DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path

LABELS = {0: "NEGATIVE", 1: "POSITIVE"}
ACCURACY_BAR = 0.89  # issue 9; distilbert-base-uncased-finetuned-sst-2-english gets 0.9106 on the same file
HIGH_SCORE = 0.9
POSITIVE_TEXT = "I love using Hugging Face Transformers!"  # the README's example
NEGATIVE_TEXT = "This movie was a complete waste of time: boring, predictable and badly acted."
FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.torch),
    pytest.param("tf", marks=pytest.mark.tensorflow),
    pytest.param("flax", marks=pytest.mark.flax),
]


def _folder() -> Path:
    folder = builtin_path(DEFAULT_TEXT_CLASSIFICATION_MODEL)
    if folder is None or not (folder / "model.safetensors").is_file():
        pytest.skip(
            f"the packaged model {DEFAULT_TEXT_CLASSIFICATION_MODEL} is not there yet "
            f"({BUILTIN[DEFAULT_TEXT_CLASSIFICATION_MODEL]}): write it with examples/train_sentiment.py and "
            "examples/package_default_model.py"
        )
    return folder


def _read_dev(shared_data: Path) -> tuple[list[str], np.ndarray]:
    lines = (shared_data / "glue_sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()
    assert lines[0] == "sentence\tlabel"
    rows = [line.rpartition("\t") for line in lines[1:] if line]
    return [text for text, _, _ in rows], np.array([int(label) for _, _, label in rows])


def _classifier(framework: str, **kwargs):
    """The text-classification pipeline with no model given: the packaged default."""
    from distilbert_mf import pipeline

    _folder()
    return pipeline("text-classification", framework=framework, **kwargs)


_PREDICTIONS: dict[str, list[str]] = {}


def _dev_predictions(framework: str, shared_data: Path) -> list[str]:
    """float32 predictions on the 872 dev sentences, computed once per framework."""
    if framework not in _PREDICTIONS:
        sentences, _ = _read_dev(shared_data)
        classifier = _classifier(framework, dtype="float32", batch_size=64)
        _PREDICTIONS[framework] = [result[0]["label"] for result in classifier.each(sentences)]
    return _PREDICTIONS[framework]


def test_registered_under_its_short_name():
    import distilbert_mf.models

    folder = BUILTIN[DEFAULT_TEXT_CLASSIFICATION_MODEL]
    assert folder == Path(distilbert_mf.models.__file__).resolve().parent / "minilm-sst2"  # package data


def test_packaged_files():
    from safetensors import safe_open

    folder = _folder()
    config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    assert config["model_type"] == "distilbert"
    assert config["architectures"] == ["DistilBertForSequenceClassification"]
    assert config["id2label"] == {"0": "NEGATIVE", "1": "POSITIVE"}
    assert config["label2id"] == {"NEGATIVE": 0, "POSITIVE": 1}
    with safe_open(str(folder / "model.safetensors"), "np") as handle:
        dtypes = {handle.get_slice(key).get_dtype() for key in handle.keys()}
    assert dtypes == {"BF16"}
    size = (folder / "model.safetensors").stat().st_size
    assert 40e6 < size < 50e6, f"model.safetensors is {size} bytes, expected about 45 MB"
    for name in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "README.md"):
        assert (folder / name).is_file(), f"{name} is missing"
    card = (folder / "README.md").read_text(encoding="utf-8")
    for needle in ("sentence-transformers/all-MiniLM-L6-v2", "Apache-2.0", "SST-2", "learning_rate", "dev accuracy"):
        assert needle in card, f"the model card does not mention {needle!r}"


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_loads_by_short_name(framework):
    from distilbert_mf.frameworks import model_class

    _folder()
    model = model_class(framework, "sequence_classification").from_pretrained(DEFAULT_TEXT_CLASSIFICATION_MODEL)
    assert model.config.id2label == LABELS
    assert (model.config.dim, model.config.n_layers, model.config.vocab_size) == (384, 6, 30522)


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_readme_example_positive_and_a_negative_sentence(framework):
    classifier = _classifier(framework)  # the checkpoint's dtype, as a user gets it
    positive, negative = classifier([POSITIVE_TEXT, NEGATIVE_TEXT])  # one {"label", "score"} per text
    assert positive["label"] == "POSITIVE" and positive["score"] >= HIGH_SCORE, positive
    assert negative["label"] == "NEGATIVE" and negative["score"] >= HIGH_SCORE, negative


@pytest.mark.slow
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_dev_accuracy_meets_the_bar(framework, shared_data):
    _, labels = _read_dev(shared_data)
    predicted = _dev_predictions(framework, shared_data)
    assert len(predicted) == len(labels) == 872
    accuracy = float(np.mean([p == LABELS[int(y)] for p, y in zip(predicted, labels)]))
    assert accuracy >= ACCURACY_BAR, f"{framework}: dev accuracy {accuracy:.4f} < {ACCURACY_BAR}"


@pytest.mark.slow
@pytest.mark.parity
def test_frameworks_give_identical_dev_predictions(shared_data):
    from distilbert_mf.frameworks import available_frameworks

    _folder()
    frameworks = available_frameworks()
    predictions = {framework: _dev_predictions(framework, shared_data) for framework in frameworks}
    first = frameworks[0]
    for framework in frameworks[1:]:
        differ = [i for i, (a, b) in enumerate(zip(predictions[first], predictions[framework])) if a != b]
        assert not differ, f"{first} and {framework} disagree on dev sentences {differ}"


@pytest.mark.slow
@pytest.mark.torch
def test_cli_run_uses_the_default_model():
    _folder()
    result = subprocess.run(
        [sys.executable, "-m", "distilbert_mf.cli", "run", "--task", "text-classification", "--framework", "pt"],
        input=POSITIVE_TEXT + "\n",
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    answer = answer[0] if isinstance(answer, list) else answer
    assert answer["label"] == "POSITIVE" and answer["score"] >= HIGH_SCORE, answer


# ------------------------------------------------------------------------------- the recipe's helpers (fast)


def _recipe():
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "train_sentiment.py"
    spec = importlib.util.spec_from_file_location("train_sentiment", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_length_grouped_batches_cover_every_example_once_and_are_seeded():
    recipe = _recipe()
    lengths = np.random.default_rng(0).integers(3, 65, size=1000)
    batches = recipe.length_grouped_batches(lengths, 32, np.random.default_rng(7), window=5)
    again = recipe.length_grouped_batches(lengths, 32, np.random.default_rng(7), window=5)
    other = recipe.length_grouped_batches(lengths, 32, np.random.default_rng(8), window=5)
    assert sorted(np.concatenate(batches).tolist()) == list(range(1000))
    assert all(len(b) <= 32 for b in batches)
    assert [b.tolist() for b in batches] == [b.tolist() for b in again]
    assert [b.tolist() for b in batches] != [b.tolist() for b in other]
    padded = sum(len(b) * lengths[b].max() for b in batches)
    random_order = np.random.default_rng(7).permutation(1000)
    padded_random = sum(32 * lengths[random_order[i : i + 32]].max() for i in range(0, 1000, 32))
    assert padded < 0.8 * padded_random  # grouping by length saves padding


def test_linear_schedule_warms_up_then_decays_to_zero():
    recipe = _recipe()
    factors = [recipe.linear_schedule(step, 100, 10) for step in range(101)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0) and factors[55] == pytest.approx(0.5) and factors[100] == 0.0
    assert all(a >= b for a, b in itertools.pairwise(factors[9:]))


def test_read_tsv(tmp_path, shared_data):
    recipe = _recipe()
    sentences, labels = recipe.read_tsv(shared_data / "glue_sst2" / "dev.tsv")
    assert len(sentences) == 872 and int(labels.sum()) == 444
    bad = tmp_path / "bad.tsv"
    bad.write_text("text\tlabel\nfine\t1\n")
    with pytest.raises(ValueError, match="header"):
        recipe.read_tsv(bad)
    bad.write_text("sentence\tlabel\nfine\t2\n")
    with pytest.raises(ValueError, match="label must be 0 or 1, got '2'"):
        recipe.read_tsv(bad)
