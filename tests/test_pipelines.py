"""Every pipeline task in every framework against the reference implementations, on the same checkpoints.

Tiny random checkpoints (the tiny vocabulary of ``shared/data/tiny-random-distilbert``) are built and saved here with
transformers' PyTorch classes, so transformers and distilbert_mf load identical weights. Each task runs in pt, tf and
flax and must give transformers 5.x's labels, spans and words exactly, and its scores within 1e-5. Question answering
(removed from transformers in v5.3) is compared with transformers 4.57.6 run in its own virtual environment.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.reference

TOLERANCE = 1e-5
FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.torch),
    pytest.param("tf", marks=pytest.mark.tensorflow),
    pytest.param("flax", marks=pytest.mark.flax),
]
REF457_PYTHON = (
    Path(os.environ.get("DISTILBERT_MF_REF457", Path(__file__).resolve().parents[2] / "ref457")) / "bin" / "python"
)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
NLI_LABELS = {0: "contradiction", 1: "neutral", 2: "entailment"}
NER_LABELS = {0: "O", 1: "B-PER", 2: "I-PER", 3: "B-LOC", 4: "I-LOC"}
TEXTS = [
    "John lives in New York, and works at Microsoft.",
    "hello world",
    "Résumé of a naïve café owner: unaffable!",
    "x",
]
LONG_TEXT = " ".join(["Anna met John in Paris and they flew to New York together."] * 12)
QA_CONTEXT = "John lives in New York and works at Microsoft. " * 10 + "The secret word is banana."
QA_CASES = [
    {"question": "Who lives here?", "context": "John lives in New York and works at Microsoft.", "kwargs": {}},
    {
        "question": "Who lives here?",
        "context": "John lives in New York and works at Microsoft.",
        "kwargs": {"top_k": 3},
    },
    {"question": "What is the secret word?", "context": QA_CONTEXT, "kwargs": {"max_seq_len": 48, "doc_stride": 12}},
    {
        "question": "What is the secret word?",
        "context": QA_CONTEXT,
        "kwargs": {"max_seq_len": 48, "doc_stride": 12, "top_k": 5, "handle_impossible_answer": True},
    },
    {
        "question": "What?",
        "context": QA_CONTEXT,
        "kwargs": {"max_seq_len": 64, "doc_stride": 20, "top_k": 4, "align_to_words": False, "max_answer_len": 5},
    },
    {
        "question": ["Who?", "Where does he work?"],
        "context": ["John lives in New York.", "He works at Microsoft in Redmond."],
        "kwargs": {"top_k": 2},
    },
    {"question": "Where?", "context": "Paris.", "kwargs": {"handle_impossible_answer": True, "top_k": 2}},
]


def assert_close(ours, theirs, path: str = "result") -> None:
    """Same structure, same strings and ints, floats within TOLERANCE."""
    if isinstance(theirs, dict):
        assert isinstance(ours, dict) and set(ours) == set(theirs), f"{path}: keys {sorted(ours)} != {sorted(theirs)}"
        for key in theirs:
            assert_close(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(theirs, (list, tuple)):
        assert isinstance(ours, (list, tuple)) and len(ours) == len(theirs), f"{path}: {ours!r} != {theirs!r}"
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_close(a, b, f"{path}[{i}]")
    elif isinstance(theirs, (float, np.floating)):
        assert isinstance(ours, float), f"{path}: {type(ours).__name__} is not a float"
        assert abs(ours - float(theirs)) <= TOLERANCE, f"{path}: {ours} != {float(theirs)}"
    else:
        assert (ours == theirs and type(ours) is type(theirs)) or (
            isinstance(ours, int) and isinstance(theirs, (int, np.integer)) and ours == theirs
        ), f"{path}: {ours!r} != {theirs!r}"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, shared_data):
    """Folders of tiny random checkpoints saved by transformers, one per head, with the tiny tokenizer."""
    pytest.importorskip("transformers")
    pytest.importorskip("torch")
    import torch
    import transformers

    tokenizer_folder = shared_data / "tiny-random-distilbert"
    root = tmp_path_factory.mktemp("pipeline-checkpoints")
    sizes = {"vocab_size": 1124, "dim": 32, "n_heads": 4, "hidden_dim": 37, "n_layers": 2, "initializer_range": 0.2}
    heads = {
        "cls": ("DistilBertForSequenceClassification", NLI_LABELS),
        "mlm": ("DistilBertForMaskedLM", None),
        "ner": ("DistilBertForTokenClassification", NER_LABELS),
        "qa": ("DistilBertForQuestionAnswering", None),
        "base": ("DistilBertModel", None),
    }
    folders = {}
    for seed, (name, (cls_name, labels)) in enumerate(heads.items()):
        torch.manual_seed(seed)
        extra = {"id2label": labels, "label2id": {v: k for k, v in labels.items()}} if labels else {}
        config = transformers.DistilBertConfig(**sizes, **extra)
        folder = root / name
        getattr(transformers, cls_name)(config).eval().save_pretrained(folder)
        for file in TOKENIZER_FILES:
            shutil.copy(tokenizer_folder / file, folder / file)
        folders[name] = folder
    return folders


class Reference:
    """transformers 5.x's pipelines on the test checkpoints, built once each."""

    def __init__(self, checkpoints):
        self.checkpoints = checkpoints
        self.cache = {}

    def pipeline(self, task, name):
        from transformers import pipeline as reference_pipeline

        if (task, name) not in self.cache:
            self.cache[task, name] = reference_pipeline(task, model=str(self.checkpoints[name]))
        return self.cache[task, name]

    def __call__(self, task, name, inputs, **kwargs):
        return self.pipeline(task, name)(inputs, **kwargs)


@pytest.fixture(scope="module")
def reference(checkpoints):
    from transformers.utils import logging as transformers_logging

    transformers_logging.set_verbosity_error()
    transformers_logging.disable_progress_bar()
    return Reference(checkpoints)


@pytest.fixture(scope="module")
def ours(checkpoints):
    """``ours(framework, task, checkpoint)``: distilbert_mf's pipeline (cached), with its own tokenizer."""
    from distilbert_mf import pipeline

    cache = {}

    def get(framework, task, name):
        if (framework, task, name) not in cache:
            cache[framework, task, name] = pipeline(task, str(checkpoints[name]), framework=framework)
        return cache[framework, task, name]

    return get


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_text_classification(framework, ours, reference):
    pipe = ours(framework, "text-classification", "cls")
    assert pipe.framework == framework
    pairs = [{"text": "hello", "text_pair": "world"}, {"text": "a much longer first text", "text_pair": "x"}]
    cases = [
        (TEXTS, {}),
        (TEXTS[0], {}),
        (TEXTS, {"top_k": None}),
        (TEXTS[1], {"top_k": 2, "function_to_apply": "sigmoid"}),
        (pairs[0], {}),
        (pairs, {"function_to_apply": "none"}),
    ]
    for inputs, kwargs in cases:
        assert_close(pipe(inputs, **kwargs), reference("text-classification", "cls", inputs, **kwargs))
    # transformers 4.x's return_all_scores=True (gone from 5.x): top_k=None's scores, in label order, a single
    # string nested once more
    with pytest.warns(UserWarning, match="`return_all_scores` is now deprecated"):
        legacy = pipe(TEXTS, return_all_scores=True)
    labels = [pipe.config.id2label[i] for i in range(pipe.config.num_labels)]
    for got, want in zip(legacy, reference("text-classification", "cls", TEXTS, top_k=None)):
        assert [r["label"] for r in got] == labels
        assert_close(sorted(got, key=lambda r: -r["score"]), want)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_fill_mask(framework, ours, reference):
    pipe = ours(framework, "fill-mask", "mlm")
    cases = [
        ("hello [MASK] world.", {}),
        (["hello [MASK] world", "a [MASK] b [MASK]", "[MASK]"], {"top_k": 3}),
        (["the [MASK] is red"], {"targets": ["a", "b", "red"], "top_k": 2}),
    ]
    for inputs, kwargs in cases:
        assert_close(pipe(inputs, **kwargs), reference("fill-mask", "mlm", inputs, **kwargs))
    with pytest.raises(ValueError, match=r"no mask token \(\[MASK\]\) found in input 1"):
        pipe(["a [MASK]", "no mask here"])


@pytest.mark.parametrize("strategy", ["none", "simple", "first", "average", "max"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_token_classification(framework, strategy, ours, reference):
    pipe = ours(framework, "token-classification", "ner")
    for inputs, kwargs in [(TEXTS, {}), (TEXTS[0], {"ignore_labels": []})]:
        kwargs = {"aggregation_strategy": strategy, **kwargs}
        ours_result = pipe(inputs, **kwargs)
        assert_close(ours_result, reference("token-classification", "ner", inputs, **kwargs))
    for entity in ours_result:  # start/end index the original string
        text = TEXTS[0][entity["start"] : entity["end"]]
        assert text.lower().replace(" ", "") == entity["word"].replace("##", "").replace(" ", "")


@pytest.mark.parametrize("strategy", ["simple", "first"])
@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_token_classification_stride_windows(framework, strategy, ours, reference, monkeypatch):
    pipe = ours(framework, "token-classification", "ner")
    theirs = reference.pipeline("token-classification", "ner")
    # the tiny vocabulary spells words letter by letter: LONG_TEXT is about 600 tokens, so windows of 128 overlap
    monkeypatch.setattr(pipe.tokenizer, "model_max_length", 128)
    monkeypatch.setattr(theirs.tokenizer, "model_max_length", 128)
    kwargs = {"aggregation_strategy": strategy, "stride": 16}
    result = pipe(LONG_TEXT, **kwargs)
    assert_close(result, theirs(LONG_TEXT, **kwargs))
    assert max(entity["end"] for entity in result) > len(LONG_TEXT) - 10  # the last window was used
    with pytest.raises(ValueError, match="aggregation_strategy"):
        pipe(LONG_TEXT, stride=16)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_feature_extraction(framework, ours, reference):
    pipe = ours(framework, "feature-extraction", "base")
    assert_close(pipe(TEXTS), reference("feature-extraction", "base", TEXTS))
    assert_close(pipe(TEXTS[0]), reference("feature-extraction", "base", TEXTS[0]))
    tokens = np.asarray(reference("feature-extraction", "base", TEXTS[0]))[0]  # (seq, dim)
    mean = pipe(TEXTS[0], pooling="mean", normalize=True, return_tensors=True)
    expected = tokens.mean(axis=0)
    np.testing.assert_allclose(mean, expected / np.linalg.norm(expected), atol=TOLERANCE)
    np.testing.assert_allclose(pipe(TEXTS[0], pooling="cls"), tokens[0], atol=TOLERANCE)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_zero_shot_classification(framework, ours, reference):
    pipe = ours(framework, "zero-shot-classification", "cls")
    cases = [
        {"candidate_labels": ["sports", "politics", "cooking"]},
        {"candidate_labels": "sports, politics", "multi_label": True},
        {"candidate_labels": ["weather"]},
        {"candidate_labels": ["sports", "politics"], "hypothesis_template": "It is about {}"},
    ]
    for kwargs in cases:
        assert_close(pipe(TEXTS, **kwargs), reference("zero-shot-classification", "cls", TEXTS, **kwargs))
        assert_close(pipe(TEXTS[0], **kwargs), reference("zero-shot-classification", "cls", TEXTS[0], **kwargs))
    with pytest.raises(ValueError, match="hypothesis_template"):
        pipe(TEXTS[0], candidate_labels=["a"], hypothesis_template="no placeholder")


def test_zero_shot_needs_nli_labels(ours):
    pipe = ours(_first_framework(), "zero-shot-classification", "ner")  # wrong head is caught first
    with pytest.raises(ValueError, match="entail"):
        pipe("text", candidate_labels=["a", "b"])


def _first_framework():
    from distilbert_mf.pipelines import available_frameworks

    installed = available_frameworks()
    if not installed:
        pytest.skip("no framework installed")
    return installed[0]


# -- question answering vs transformers 4.57.6 ----------------------------------------------------------------------
REF457_SCRIPT = """
import json, sys, warnings
warnings.filterwarnings("ignore")
from transformers import pipeline
from transformers.utils import logging
logging.set_verbosity_error()
qa = pipeline("question-answering", model=sys.argv[1], framework="pt")
cases = json.load(sys.stdin)
print(json.dumps([qa(question=c["question"], context=c["context"], **c["kwargs"]) for c in cases]))
"""


@pytest.fixture(scope="module")
def qa_reference(checkpoints):
    if not REF457_PYTHON.is_file():
        pytest.skip(f"transformers 4.57.6 environment not found at {REF457_PYTHON}")
    done = subprocess.run(
        [str(REF457_PYTHON), "-c", REF457_SCRIPT, str(checkpoints["qa"])],
        input=json.dumps(QA_CASES),
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "HF_HUB_OFFLINE": "1"},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_question_answering_matches_transformers_457(framework, ours, qa_reference):
    pipe = ours(framework, "question-answering", "qa")
    for case, expected in zip(QA_CASES, qa_reference):
        result = pipe(question=case["question"], context=case["context"], **case["kwargs"])
        assert_close(result, expected, path=f"{case['question']!r} {case['kwargs']}")


# -- the three frameworks agree with each other ---------------------------------------------------------------------
@pytest.mark.parity
def test_frameworks_give_identical_spans(ours):
    from distilbert_mf.pipelines import available_frameworks

    runs = {}
    for framework in available_frameworks():
        ner = ours(framework, "token-classification", "ner")
        qa = ours(framework, "question-answering", "qa")
        runs[framework] = (
            ner(TEXTS, aggregation_strategy="simple"),
            qa(question="What is the secret word?", context=QA_CONTEXT, max_seq_len=48, doc_stride=12, top_k=3),
        )
    first, *others = runs
    for framework in others:
        assert_close(runs[framework], runs[first], path=f"{framework} vs {first}")


# -- model instances, dtype and device arguments --------------------------------------------------------------------
@pytest.mark.torch
def test_model_instance_and_transformers_style_arguments(checkpoints, caplog):
    import torch

    from distilbert_mf import pipeline
    from distilbert_mf.modeling_utils import CPU_FLOAT16_WARNING
    from distilbert_mf.torch import DistilBertForSequenceClassification

    model = DistilBertForSequenceClassification.from_pretrained(checkpoints["cls"])
    by_instance = pipeline("sentiment-analysis", model=model, tokenizer=str(checkpoints["cls"]))
    assert by_instance.framework == "pt" and by_instance.model is model
    by_path = pipeline("sentiment-analysis", str(checkpoints["cls"]), framework="torch", device=-1)
    assert by_instance(TEXTS) == by_path(TEXTS)
    with pytest.raises(ValueError, match="framework='tf' but the model given is a pt model"):
        pipeline("text-classification", model=model, tokenizer=str(checkpoints["cls"]), framework="tf")
    with caplog.at_level(logging.WARNING):
        half = pipeline("text-classification", str(checkpoints["cls"]), framework="pt", torch_dtype=torch.float16)
    assert CPU_FLOAT16_WARNING in caplog.text
    assert next(half.model.parameters()).dtype == torch.float16
    bf16 = pipeline("text-classification", str(checkpoints["cls"]), framework="pt", dtype="bfloat16")
    assert [r["label"] for r in bf16(TEXTS)] == [r["label"] for r in by_path(TEXTS)]
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="asks for a GPU but PyTorch sees 0 GPU"):
            pipeline("text-classification", str(checkpoints["cls"]), framework="pt", device=0)
        with pytest.raises(ValueError, match="asks for a GPU"):
            pipeline("text-classification", str(checkpoints["cls"]), framework="pt", device=torch.device("cuda:0"))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_task_inferred_from_the_checkpoint(framework, checkpoints):
    from distilbert_mf import pipeline

    assert pipeline(model=str(checkpoints["mlm"]), framework=framework).task == "fill-mask"
