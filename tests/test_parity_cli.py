"""``distilbert_mf.parity.check_parity`` and ``distilbert-mf parity``: report, JSON, exit status 0 / 1 / 2."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.frameworks import available_frameworks
from distilbert_mf.parity import PairResult, ParityReport, argmax_mismatches, check_parity, make_inputs

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny masked-LM checkpoint (no tokenizer: the parity batch is seeded random ids)."""
    config = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64)
    rng = np.random.default_rng(0)
    state = {
        k: rng.normal(0, shape[-1] ** -0.5 if len(shape) == 2 else 0.5, shape).astype(np.float32)
        for k, shape in expected_shapes(config, "masked_lm").items()
    }
    state[TIED_KEY] = state[TIED_SOURCE]
    folder = tmp_path_factory.mktemp("parity-cli") / "tiny-mlm"
    save_pretrained(folder, config, state, "masked_lm")
    return folder


def _cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "distilbert_mf.cli", "parity", *args],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        input=stdin,
    )


# ----------------------------------------------------------------------------------------------- report pieces


def test_argmax_mismatches_ignores_near_ties_and_padding() -> None:
    mask = np.array([[True, True, False]])
    a = np.array([[[1.0, 2.0], [3.0, 3.0 + 1e-7], [0.0, 9.0]]])  # (1, 3, 2)
    b = np.array([[[1.0, 2.0], [3.0 + 1e-7, 3.0], [9.0, 0.0]]])
    assert argmax_mismatches("logits", a, b, mask, atol=1e-5) == 0  # a near tie, and a padded position
    assert argmax_mismatches("logits", a, b, mask, atol=0.0) == 1
    b[0, 0] = [2.5, 2.0]
    assert argmax_mismatches("logits", a, b, mask, atol=1e-5) == 1
    start_a, start_b = np.array([[0.0, 1.0, 5.0]]), np.array([[0.0, 1.0, 7.0]])
    assert argmax_mismatches("start_logits", start_a, start_b, mask, atol=1e-5) == 0  # position 2 is padding


def test_report_verdict_json_and_table() -> None:
    good = PairResult(("pt", "tf"), {"logits": 2e-7, "hidden_states[0]": 4e-7}, argmax_compared=True)
    nan = PairResult(("pt", "flax"), {"logits": math.nan, "hidden_states[0]": 1e-7})
    assert good.worst == 4e-7 and math.isinf(nan.worst)
    report = ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [good])
    assert report.passed
    assert not ParityReport("m", "base", ["pt", "tf"], 1e-7, (2, 3), [good]).passed
    assert not ParityReport("m", "base", ["pt", "flax"], 1e-5, (2, 3), [nan]).passed
    assert not ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [PairResult(("pt", "tf"), {}, 2)]).passed
    data = json.loads(ParityReport("m", "base", ["pt", "tf", "flax"], 1e-5, (2, 3), [good, nan]).to_json())
    assert data["passed"] is False and data["max_abs_diff"] is None
    assert data["pairs"][1]["max_abs_diff"]["logits"] is None
    table = report.table().splitlines()
    assert table[1].split() == ["output", "pt-tf", "bound"]
    assert table[2].split() == ["logits", "2.00e-07", "1.0e-05"]
    assert table[3].split() == ["hidden_states[0]", "4.00e-07", "1.0e-04"]
    assert table[-2].split() == ["argmax", "agrees", "yes"]
    assert table[-1].startswith("PASS: max |Δ| 4.00e-07; bounds: atol 1e-05 on outputs, 1e-04 on hidden states")


def test_sample_batch_is_padded() -> None:
    config = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=20)
    batch = make_inputs(config, ["a", "b", "c"], "base")
    assert batch["input_ids"].shape == (3, 20)
    assert batch["attention_mask"][0].all() and not batch["attention_mask"].all()
    assert np.all(batch["input_ids"][batch["attention_mask"] == 0] == config.pad_token_id)
    choices = make_inputs(config, ["a", "b", "c"], "multiple_choice")
    assert choices["input_ids"].shape == (3, 2, 20)


# ----------------------------------------------------------------------------------------------- the API


@pytest.mark.parity
def test_check_parity_on_a_tiny_checkpoint(checkpoint: Path) -> None:
    report = check_parity(checkpoint)
    installed = available_frameworks()
    assert report.frameworks == installed and report.head == "masked_lm"
    assert len(report.pairs) == len(installed) * (len(installed) - 1) // 2
    for pair in report.pairs:
        assert set(pair.max_abs_diff) == {"logits"} | {f"hidden_states[{i}]" for i in range(3)} | {
            f"attentions[{i}]" for i in range(2)
        }
        assert pair.worst < 1e-5 and pair.argmax_agree
    assert report.passed
    assert not check_parity(checkpoint, frameworks=installed[:2], atol=1e-12).passed


@pytest.mark.parity
def test_check_parity_with_the_real_tokenizer(shared_data: Path) -> None:
    """transformers' own tiny random checkpoint, tokenised texts, and a head the checkpoint does not have refused."""
    folder = shared_data / "tiny-random-distilbert"
    texts = ["hello world", "a somewhat longer sentence with more tokens in it", "x"]
    report = check_parity(folder, texts=texts, frameworks=available_frameworks()[:2])
    assert report.head == "base" and report.batch_shape[0] == 3 and report.passed
    with pytest.raises(ValueError, match=r"no weights for .* DistilBertForSequenceClassification"):
        check_parity(folder, head="sequence_classification")


@pytest.mark.parity
def test_argument_errors() -> None:
    two = available_frameworks()[:2]
    with pytest.raises(ValueError, match="unknown framework 'mxnet'"):
        check_parity("anything", frameworks=["pt", "mxnet"])
    with pytest.raises(ValueError, match="at least two frameworks"):
        check_parity("anything", frameworks=[two[0], two[0]])
    with pytest.raises(ValueError, match="atol must be a positive finite number"):
        check_parity("anything", frameworks=two, atol=-1.0)
    with pytest.raises(ValueError, match="texts is empty"):
        check_parity("anything", frameworks=two, texts=[])


# ----------------------------------------------------------------------------------------------- the command


@pytest.mark.parity
def test_cli_pass_prints_json_and_exits_0(checkpoint: Path) -> None:
    result = _cli(str(checkpoint), "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["passed"] is True and data["head"] == "masked_lm" and data["atol"] == 1e-5
    assert data["frameworks"] == available_frameworks()
    assert all(p["argmax_agree"] and p["worst"] < 1e-5 for p in data["pairs"])
    assert "attentions[1]" in data["pairs"][0]["max_abs_diff"]


@pytest.mark.parity
def test_cli_failure_past_tolerance_exits_1(checkpoint: Path, tmp_path: Path) -> None:
    """float32 frameworks differ by ~1e-7, so an atol of 1e-12 is a real failure; texts come from a file."""
    texts = tmp_path / "texts.txt"
    texts.write_text("first line\n\nsecond line\nthird\n", encoding="utf-8")
    pair = ",".join(available_frameworks()[:2])
    result = _cli(str(checkpoint), "--frameworks", pair, "--atol", "1e-12", "--texts", str(texts))
    assert result.returncode == 1, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].endswith("(masked_lm), batch (3, 64)")
    assert lines[1].split() == ["output", pair.replace(",", "-"), "bound"]
    assert lines[-1].startswith("FAIL: max |Δ| ") and "atol 1e-12 on outputs" in lines[-1]
    assert "parity FAILED" in result.stderr


@pytest.mark.parity
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--frameworks", "pt"], "at least two frameworks"),
        (["--frameworks", "pt,caffe"], "unknown framework 'caffe'"),
        (["--atol", "0"], "atol must be a positive finite number"),
    ],
)
def test_cli_usage_errors_exit_2(checkpoint: Path, args: list[str], message: str) -> None:
    result = _cli(str(checkpoint), *args)
    assert result.returncode == 2
    assert result.stderr.startswith("distilbert-mf parity: error: ") and message in result.stderr
    assert result.stdout == ""


@pytest.mark.parity
def test_cli_unreadable_model_and_bad_options_exit_2(tmp_path: Path, checkpoint: Path) -> None:
    missing = _cli(str(tmp_path / "no-such-model"))
    assert missing.returncode == 2 and "error:" in missing.stderr
    empty = tmp_path / "empty.txt"
    empty.write_text("\n \n", encoding="utf-8")
    no_texts = _cli(str(checkpoint), "--texts", str(empty))
    assert no_texts.returncode == 2 and "holds no text" in no_texts.stderr
    assert _cli(str(checkpoint), "--head", "nonsense").returncode == 2  # argparse
    assert _cli(str(checkpoint), "--atol", "tiny").returncode == 2


@pytest.mark.parity
def test_doc_examples_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/parity.md: the python example runs; the CI job is valid YAML running the parity command."""
    import re

    doc = (ROOT / "docs" / "parity.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    assert len(blocks) == 1
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    exec(compile(blocks[0], "docs/parity.md", "exec"), namespace)
    assert namespace["report"].passed and len(namespace["worst"]) >= 1
    (job,) = re.findall(r"```yaml\n(.*?)```", doc, flags=re.S)
    yaml = pytest.importorskip("yaml")
    steps = yaml.safe_load(job)["jobs"]["parity"]["steps"]
    assert any("distilbert-mf parity ./my-finetuned-model --json" in step.get("run", "") for step in steps)


# ----------------------------------------------------------------------------------------------- frameworks registry


def test_framework_registry() -> None:
    from distilbert_mf.frameworks import framework_of, model_class, normalize_framework, to_numpy

    assert [normalize_framework(n) for n in ("torch", "PyTorch", "keras", "tensorflow", "jax", "flax")] == [
        "pt",
        "pt",
        "tf",
        "tf",
        "flax",
        "flax",
    ]
    with pytest.raises(ValueError, match="unknown framework 'mxnet'"):
        normalize_framework("mxnet")
    with pytest.raises(ValueError, match="unknown head 'pooler'"):
        model_class("pt", "pooler")
    with pytest.raises(TypeError, match="not a distilbert_mf model"):
        framework_of(object())
    import ml_dtypes

    values = to_numpy((np.ones(2, ml_dtypes.bfloat16), [np.zeros(1, np.float32)]))
    assert values[0].dtype == np.float32 and isinstance(values[1], list) and to_numpy(None) is None


@pytest.mark.parity
def test_model_classes_by_framework_and_head() -> None:
    from distilbert_mf.checkpoint.names import ARCHITECTURES, HEADS
    from distilbert_mf.frameworks import FRAMEWORKS, framework_of, model_class

    for fw in available_frameworks():
        prefix = FRAMEWORKS[fw][1]
        for head in HEADS:
            cls = model_class(fw, head)
            assert cls.__name__ == prefix + ARCHITECTURES[head] and cls.head == head
    config = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2)
    fw = available_frameworks()[0]
    assert framework_of(model_class(fw, "base")(config)) == fw


def test_bounds_hold_outputs_to_atol_and_intermediates_to_hidden_atol() -> None:
    """Outputs use --atol, intermediates --hidden-atol, both scaled by max(1, max |x|)."""
    inter = PairResult(("pt", "tf"), {"logits": 1e-6, "hidden_states[3]": 5e-5}, scale={"hidden_states[3]": 1.0})
    assert ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [inter]).passed
    assert not ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [inter], hidden_atol=1e-5).passed
    logits = PairResult(("pt", "tf"), {"logits": 5e-5}, scale={"logits": 1.0})
    assert not ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [logits]).passed
    big = PairResult(("pt", "tf"), {"logits": 5e-5}, scale={"logits": 10.0})  # 5e-5 <= 1e-5 * 10
    report = ParityReport("m", "base", ["pt", "tf"], 1e-5, (2, 3), [big])
    assert report.passed and report.bound("logits", 10.0) == pytest.approx(1e-4)
    assert json.loads(report.to_json())["pairs"][0]["bound"]["logits"] == pytest.approx(1e-4)
    with pytest.raises(ValueError, match="hidden_atol must be a positive"):
        check_parity("unused", frameworks=["pt", "tf"], hidden_atol=0.0)


@pytest.mark.parity
@pytest.mark.slow
def test_the_embedded_trained_model_passes_parity_with_default_bounds() -> None:
    """A real trained checkpoint: float32 rounding reaches ~1e-4 in middle hidden states, within the default bounds."""
    from distilbert_mf.models import DEFAULT_TEXT_CLASSIFICATION_MODEL, builtin_path

    if builtin_path(DEFAULT_TEXT_CLASSIFICATION_MODEL) is None:
        pytest.skip("the embedded model is not packaged")
    report = check_parity(DEFAULT_TEXT_CLASSIFICATION_MODEL)
    assert report.head == "sequence_classification"
    assert report.passed, report.table()
    for pair in report.pairs:
        assert pair.max_abs_diff["logits"] <= 1e-5 and pair.argmax_agree
