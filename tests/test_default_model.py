"""The embedded default model (distilbert-mf/minilm-sst2): loads everywhere, agrees everywhere, meets the bar.

Skips (with the reason) while the packaged folder is absent: examples/train_sentiment.py then
examples/package_default_model.py write it.
"""

from __future__ import annotations

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


# ------------------------------------------------------------------------------- the recipe (a 2-update smoke run)


def _example(name: str):
    import importlib.util

    examples = Path(__file__).resolve().parents[1] / "examples"
    spec = importlib.util.spec_from_file_location(name, examples / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def test_recipe_docstring_shows_the_command_it_runs():
    recipe = _example("train_sentiment")
    command = recipe.train_command(
        model=recipe.BASE_MODEL,
        data_dir=recipe.ROOT.parent / "shared" / "data" / "glue_sst2",
        output_dir=recipe.OUTPUT_DIR,
        framework="pt",
    )
    shown = " ".join(recipe.__doc__.replace("\\\n", " ").split())
    assert recipe.display_command(command) in shown
    for flag, value in (("--learning-rate", "1e-4"), ("--per-device-train-batch-size", "32"), ("--seed", "42")):
        assert command[command.index(flag) + 1] == value
    assert command[command.index("--label-names") + 1 : command.index("--label-names") + 3] == list(LABELS.values())


@pytest.mark.slow
@pytest.mark.torch
def test_recipe_trains_two_updates_and_packages_into_a_temporary_folder(tmp_path, shared_data):
    import torch
    from safetensors import safe_open

    from distilbert_mf import pipeline
    from distilbert_mf.torch import DistilBertForSequenceClassification

    recipe = _example("train_sentiment")
    packager = _example("package_default_model")
    committed = packager.DEST / "model.safetensors"
    before = committed.stat().st_mtime_ns if committed.is_file() else None
    run_dir, dest = tmp_path / "run", tmp_path / "minilm-sst2"
    paths = ["--output-dir", str(run_dir), "--data-dir", str(shared_data / "glue_sst2")]
    smoke = ["--max-steps", "2", "--max-train-samples", "64", "--max-eval-samples", "32", "--save-steps", "0"]
    threads = torch.get_num_threads()
    try:
        status = recipe.main([*paths, "--threads", "1", *smoke])
    finally:
        torch.set_num_threads(threads)
    assert status == 0
    state = json.loads((run_dir / "trainer_state.json").read_text(encoding="utf-8"))
    assert state["global_step"] == 2 and state["train_batch_size"] == 32
    assert 0.0 <= json.loads((run_dir / "eval_results.json").read_text(encoding="utf-8"))["eval_accuracy"] <= 1.0
    record = json.loads((run_dir / recipe.RECIPE_NAME).read_text(encoding="utf-8"))
    assert record["command"].startswith(
        "distilbert-mf train --task text-classification --model distilbert-mf/all-minilm-l6-v2 "
    )
    assert record["framework"] == "pt" and record["argv"][-2:] == ["--save-steps", "0"]
    model = DistilBertForSequenceClassification.from_pretrained(run_dir)
    assert model.config.id2label == LABELS and (model.config.dim, model.config.n_layers) == (384, 6)

    summary = packager.package(
        run_dir, dest, shared_data / "glue_sst2", overwrite=False, frameworks=["pt"], dev_limit=16
    )
    assert set(summary) == {"pt/float32", "pt/bfloat16"}
    with safe_open(str(dest / "model.safetensors"), "np") as handle:
        assert {handle.get_slice(key).get_dtype() for key in handle.keys()} == {"BF16"}
    assert json.loads((dest / "tokenizer_config.json").read_text(encoding="utf-8"))["model_max_length"] == 512
    card = (dest / "README.md").read_text(encoding="utf-8")
    for needle in (record["command"], "| `learning_rate` | `1e-4` |", "| `adam_epsilon` | `1e-08` |"):
        assert needle in card, needle
    assert "the first 16 of its 872 sentences" in card
    label = pipeline("text-classification", model=str(dest), framework="pt")(POSITIVE_TEXT)[0]["label"]
    assert label in LABELS.values()
    with pytest.raises(FileExistsError, match="--overwrite"):
        packager.package(run_dir, dest, shared_data / "glue_sst2", overwrite=False, frameworks=["pt"], dev_limit=4)
    after = committed.stat().st_mtime_ns if committed.is_file() else None
    assert after == before  # the committed model is never touched
