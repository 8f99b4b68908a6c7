"""Pipelines without any framework: the numpy pre/post-processing driven by scripted logits.

A ``ScriptedAdapter`` stands in for a framework: its forward pass computes logits from the token ids with a
rule the test chooses, so every expected answer can be worked out by hand. Covers question answering (windows
over long contexts, impossible answers, top_k, max_answer_len, word alignment), batching (length grouping, order,
padding), parameter handling and the pipeline() argument mapping.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.pipelines import (
    TASKS,
    FeatureExtractionPipeline,
    QuestionAnsweringPipeline,
    TextClassificationPipeline,
    UnknownTaskError,
    pipeline,
    resolve_task,
)
from distilbert_mf.pipelines.base import softmax
from distilbert_mf.pipelines.frameworks import Device, ModelAdapter, parse_device, resolve_framework


class ScriptedAdapter(ModelAdapter):
    """A fake framework: ``rule(input_ids, attention_mask) -> outputs``; records every batch shape it sees."""

    framework = "numpy"

    def __init__(self, head: str, config: DistilBertConfig, rule) -> None:
        model = type("ScriptedModel", (), {"head": head})()
        model.config = config
        super().__init__(model)
        self.rule = rule
        self.shapes: list[tuple[int, int]] = []

    def forward(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> dict[str, np.ndarray]:
        assert input_ids.dtype == np.int64 and attention_mask.dtype == np.int64
        self.shapes.append(input_ids.shape)
        return self.rule(input_ids, attention_mask)


@pytest.fixture(scope="module")
def tokenizer(shared_data):
    from distilbert_mf import DistilBertTokenizerFast

    return DistilBertTokenizerFast.from_pretrained(shared_data / "distilbert-base-uncased-tokenizer")


@pytest.fixture(scope="module")
def config():
    return DistilBertConfig(vocab_size=30522, dim=8, n_heads=2, hidden_dim=8, n_layers=1)


def token_id(tokenizer, token: str) -> int:
    return tokenizer.convert_tokens_to_ids(token)


def qa_pipeline(tokenizer, config, scores: dict[int, tuple[float, float]]) -> QuestionAnsweringPipeline:
    """QA whose start/end logits are ``scores[token_id]`` for listed tokens and 0 elsewhere."""

    def rule(ids, mask):
        start = np.zeros(ids.shape, np.float32)
        end = np.zeros(ids.shape, np.float32)
        for token, (s, e) in scores.items():
            start[ids == token] = s
            end[ids == token] = e
        return {"start_logits": start, "end_logits": end}

    return QuestionAnsweringPipeline(ScriptedAdapter("question_answering", config, rule), tokenizer)


# -- question answering, worked out by hand ---------------------------------------------------------------------
def test_qa_single_window_score_is_the_product_of_softmaxes(tokenizer, config):
    banana = token_id(tokenizer, "banana")
    qa = qa_pipeline(tokenizer, config, {banana: (5.0, 5.0)})
    context = "the fruit is banana today"
    result = qa(question="what fruit?", context=context)
    # allowed tokens: [CLS] + 5 context tokens; every logit 0 except banana's 5
    p = math.exp(5) / (math.exp(5) + 5)
    assert result["answer"] == "banana"
    assert context[result["start"] : result["end"]] == "banana"
    assert result["start"] == context.index("banana")
    assert result["score"] == pytest.approx(p * p, rel=1e-5)


def test_qa_answer_in_a_later_window(tokenizer, config):
    banana = token_id(tokenizer, "banana")
    qa = qa_pipeline(tokenizer, config, {banana: (8.0, 8.0)})
    filler = " ".join(["the cat sat on the mat"] * 12)
    context = filler + " and the fruit is banana ."
    adapter = qa.adapter
    adapter.shapes.clear()
    result = qa(question="what fruit?", context=context, max_seq_len=32, doc_stride=8)
    windows = sum(rows for rows, _ in adapter.shapes)
    assert windows > 3  # the context needed several windows
    assert result["answer"] == "banana"
    assert result["start"] == context.index("banana") and result["end"] == result["start"] + len("banana")
    # banana is the only strong token: only the window(s) holding it propose it, with a score close to 1
    assert 0.9 < result["score"] <= 2.0


def test_qa_impossible_answer(tokenizer, config):
    cls = token_id(tokenizer, "[CLS]")
    qa = qa_pipeline(tokenizer, config, {cls: (6.0, 6.0)})
    context = "nothing here answers it"
    n = len(tokenizer(context, add_special_tokens=False)["input_ids"])
    best = qa(question="why?", context=context, handle_impossible_answer=True)
    p_null = math.exp(6) / (math.exp(6) + n)
    assert best == {"score": pytest.approx(p_null**2, rel=1e-5), "start": 0, "end": 0, "answer": ""}
    # without handle_impossible_answer, [CLS] never answers
    assert qa(question="why?", context=context)["answer"] != ""


def test_qa_top_k_sorted_and_max_answer_len(tokenizer, config):
    ids = {w: token_id(tokenizer, w) for w in ("red", "green", "blue")}
    qa = qa_pipeline(tokenizer, config, {ids["red"]: (4.0, 1.0), ids["green"]: (1.0, 4.0), ids["blue"]: (3.0, 3.0)})
    context = "red apples and green pears and blue plums"
    answers = qa(question="colour?", context=context, top_k=3)
    assert len(answers) == 3
    assert [a["score"] for a in answers] == sorted((a["score"] for a in answers), reverse=True)
    assert answers[0]["answer"] == "red apples and green"  # start 4 at red and end 4 at green beat blue's 3 + 3
    for answer in answers:
        assert context[answer["start"] : answer["end"]] == answer["answer"]
    # red .. green spans 4 tokens: with max_answer_len=3 it is not a candidate any more
    short = qa(question="colour?", context=context, max_answer_len=3)
    assert short["answer"] == "blue"


def test_qa_align_to_words(tokenizer, config):
    pieces = tokenizer.tokenize("unaffable")
    assert len(pieces) > 1 and pieces[1].startswith("##")
    middle = token_id(tokenizer, pieces[1])
    qa = qa_pipeline(tokenizer, config, {middle: (9.0, 9.0)})
    context = "he was unaffable indeed"
    assert qa(question="how?", context=context)["answer"] == "unaffable"
    piece = qa(question="how?", context=context, align_to_words=False)
    assert piece["answer"] == pieces[1].removeprefix("##")
    assert context[piece["start"] : piece["end"]] == piece["answer"]


def test_qa_input_forms_and_errors(tokenizer, config):
    qa = qa_pipeline(tokenizer, config, {token_id(tokenizer, "paris"): (5.0, 5.0)})
    one = qa(question="where?", context="in paris")
    assert one["answer"] == "paris"
    assert qa({"question": "where?", "context": "in paris"}) == one
    assert qa("where?", "in paris") == one
    assert qa([{"question": "where?", "context": "in paris"}] * 2) == [one, one]
    assert qa(question=["where?", "which city?"], context="in paris") == [one, one]
    assert qa.each([{"question": "where?", "context": "in paris"}]) == [one]
    with pytest.raises(ValueError, match="2 questions but 1 contexts"):
        qa(question=["a?", "b?"], context=["in paris"])
    with pytest.raises(KeyError, match="context"):
        qa({"question": "where?"})
    with pytest.raises(ValueError, match="question is empty"):
        qa(question="  ", context="in paris")
    with pytest.raises(ValueError, match="top_k must be a positive integer"):
        qa(question="where?", context="in paris", top_k=0)
    with pytest.raises(ValueError, match="doc_stride=40 is larger than max_seq_len=32"):
        qa(question="where?", context="in paris", max_seq_len=32, doc_stride=40)
    with pytest.raises(ValueError, match="leaving"):
        qa(question="where " * 30 + "?", context="in paris " * 40, max_seq_len=40, doc_stride=10, max_question_len=64)


def test_qa_max_question_len_cuts_the_question(tokenizer, config):
    seen = []

    def rule(ids, mask):
        seen.extend(row[: int(m.sum())].tolist() for row, m in zip(ids, mask))
        zeros = np.zeros(ids.shape, np.float32)
        return {"start_logits": zeros, "end_logits": zeros}

    qa = QuestionAnsweringPipeline(ScriptedAdapter("question_answering", config, rule), tokenizer)
    qa(question="one two three four five six", context="seven eight", max_question_len=3)
    sep = token_id(tokenizer, "[SEP]")
    assert seen[0].index(sep) == 4  # [CLS] + 3 question tokens


# -- batching ----------------------------------------------------------------------------------------------------
def classifier(tokenizer, config, **kwargs) -> TextClassificationPipeline:
    """Logits (length, -length, 0): the label depends on the text's length only, so padding must not matter."""

    def rule(ids, mask):
        length = mask.sum(axis=1).astype(np.float32)
        assert np.all(ids[mask == 0] == 0), "padding must use the pad id"
        return {"logits": np.stack([length, -length, np.zeros_like(length)], axis=1) / 10}

    adapter = ScriptedAdapter("sequence_classification", config.replace(num_labels=3), rule)
    return TextClassificationPipeline(adapter, tokenizer, **kwargs)


def test_batches_grouped_by_length_and_order_preserved(tokenizer, config):
    texts = ["word " * n for n in (1, 30, 2, 29, 3, 28, 4, 27)]
    pipe = classifier(tokenizer, config, batch_size=2)
    results = pipe(texts, top_k=None, function_to_apply="none")
    widths = [width for _, width in pipe.adapter.shapes]
    assert [rows for rows, _ in pipe.adapter.shapes] == [2, 2, 2, 2]
    assert widths == [32, 30, 6, 4]  # longest first, each batch padded only to its own longest row
    for text, result in zip(texts, results):
        length = len(text.split()) + 2
        assert result[0] == {"label": "LABEL_0", "score": pytest.approx(length / 10)}


def test_generator_input_streams_results_in_order(tokenizer, config):
    pipe = classifier(tokenizer, config)
    texts = ["a " * (i % 7 + 1) for i in range(20)]
    streamed = pipe(text for text in texts)
    assert not isinstance(streamed, list)
    assert list(streamed) == pipe(texts)


def test_progress_bar(tokenizer, config, capsys):
    pipe = classifier(tokenizer, config, progress=True)
    pipe(["one", "two three"])
    assert "2/2" in capsys.readouterr().err


def test_text_classification_result_shapes(tokenizer, config):
    pipe = classifier(tokenizer, config)
    single = pipe("hello")
    assert isinstance(single, list) and len(single) == 1 and set(single[0]) == {"label", "score"}
    assert isinstance(pipe(["hello", "world"])[0], dict)
    assert isinstance(pipe({"text": "a", "text_pair": "b"}), dict)
    assert len(pipe("hello", top_k=2)) == 2
    assert len(pipe(["hello"], top_k=None)[0]) == 3
    ranked = classifier(tokenizer, config, top_k=2)
    assert len(ranked("hello")) == 2  # constructor top_k: one list per input (no extra nesting)
    assert pipe.each(["hello", {"text": "a", "text_pair": "b"}]) == [
        pipe("hello"),
        pipe({"text": "a", "text_pair": "b"}),
    ]
    scores = [r["score"] for r in pipe("hi there", top_k=None)]
    assert sum(scores) == pytest.approx(1.0)
    sigmoid = pipe("hi there", top_k=None, function_to_apply="sigmoid")
    assert all(0 < r["score"] < 1 for r in sigmoid) and sum(r["score"] for r in sigmoid) != pytest.approx(1.0)


def test_default_function_follows_problem_type(tokenizer, config):
    def rule(ids, mask):
        return {"logits": np.full((ids.shape[0], 1), 2.0, np.float32)}

    one_label = TextClassificationPipeline(
        ScriptedAdapter("sequence_classification", config.replace(num_labels=1), rule), tokenizer
    )
    assert one_label("x")[0]["score"] == pytest.approx(1 / (1 + math.exp(-2)))
    regression = TextClassificationPipeline(
        ScriptedAdapter("sequence_classification", config.replace(num_labels=1, problem_type="regression"), rule),
        tokenizer,
    )
    assert regression("x")[0]["score"] == pytest.approx(2.0)


def test_feature_extraction_pooling(tokenizer, config):
    def rule(ids, mask):
        hidden = np.stack([ids, mask * 2, np.ones_like(ids)], axis=-1).astype(np.float32)  # (batch, seq, 3)
        return {"last_hidden_state": hidden}

    pipe = FeatureExtractionPipeline(ScriptedAdapter("base", config, rule), tokenizer)
    ids = tokenizer("hello world")["input_ids"]
    tokens = pipe("hello world")
    assert np.asarray(tokens).shape == (1, len(ids), 3)
    assert pipe("hello world", return_tensors=True).shape == (1, len(ids), 3)
    mean = pipe(["hello world", "a much longer text than that"], pooling="mean")[0]
    assert mean == pytest.approx([np.mean(ids), 2.0, 1.0])  # padding excluded
    cls = pipe("hello world", pooling="cls", normalize=True)
    expected = np.array([ids[0], 2.0, 1.0])
    assert cls == pytest.approx((expected / np.linalg.norm(expected)).tolist())
    with pytest.raises(ValueError, match="pooling"):
        pipe("x", normalize=True)
    with pytest.raises(ValueError, match="pooling must be one of"):
        pipe("x", pooling="max")


# -- parameters and pipeline() arguments ---------------------------------------------------------------------------
def test_unknown_parameters_are_type_errors(tokenizer, config):
    pipe = classifier(tokenizer, config)
    with pytest.raises(TypeError, match=r"unexpected keyword argument\(s\) \['topk'\]"):
        pipe("x", topk=2)
    with pytest.raises(TypeError, match="aggregation_strategy"):
        classifier(tokenizer, config, aggregation_strategy="simple")
    with pytest.raises(ValueError, match="function_to_apply must be one of"):
        pipe("x", function_to_apply="softmin")
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe("x", batch_size=0)
    with pytest.raises(TypeError, match="input 1"):
        pipe(["ok", 3])
    with pytest.raises(ValueError, match="'text'"):
        pipe({"txt": "a"})


def test_pipeline_rejects_unknown_keywords_and_tasks():
    with pytest.raises(TypeError, match=r"\['device_mapp'\]"):
        pipeline("text-classification", model=_scripted_classifier(), tokenizer=object(), device_mapp="auto")
    with pytest.raises(UnknownTaskError, match="unknown task 'summarization'; available tasks") as info:
        pipeline("summarization", model="x")
    assert isinstance(info.value, KeyError)
    assert resolve_task("sentiment-analysis") == "text-classification" and resolve_task("ner") == "token-classification"
    assert set(TASKS) == {
        "text-classification",
        "fill-mask",
        "token-classification",
        "question-answering",
        "feature-extraction",
        "zero-shot-classification",
    }


def _scripted_classifier():
    config = DistilBertConfig(vocab_size=30522, dim=8, n_heads=2, hidden_dim=8, n_layers=1)
    return ScriptedAdapter("sequence_classification", config, lambda ids, mask: {"logits": np.zeros((len(ids), 2))})


def test_pipeline_with_an_adapter_checks_the_head(tokenizer):
    adapter = _scripted_classifier()
    assert pipeline("sentiment-analysis", model=adapter, tokenizer=tokenizer)("fine")[0]["score"] == 0.5
    with pytest.raises(ValueError, match="fill-mask pipeline needs a masked_lm model"):
        pipeline("fill-mask", model=adapter, tokenizer=tokenizer)
    with pytest.raises(ValueError, match="already built"):
        pipeline("text-classification", model=adapter, tokenizer=tokenizer, dtype="bfloat16")
    with pytest.raises(TypeError, match="not both"):
        pipeline("text-classification", model=adapter, dtype="float32", torch_dtype="float32")


def test_missing_model_messages(monkeypatch):
    from distilbert_mf import models

    monkeypatch.setattr(models, "BUILTIN", {})
    with pytest.raises(ValueError, match="distilbert-mf/minilm-sst2"):
        pipeline("text-classification")
    # fill-mask has a default on the Hub now (issue 15): the tasks without one still say what to pass
    with pytest.raises(ValueError, match=r"token-classification pipeline has no default model: .* pass model="):
        pipeline("ner")
    with pytest.raises(ValueError, match=r"zero-shot-classification pipeline has no default model: .* pass model="):
        pipeline("zero-shot-classification")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        (None, None),
        (-1, Device("cpu")),
        ("cpu", Device("cpu")),
        (0, Device("gpu", 0)),
        ("cuda", Device("gpu", None)),
        ("cuda:1", Device("gpu", 1)),
        ("GPU:0", Device("gpu", 0)),
        ("mps", Device("mps")),
    ],
)
def test_parse_device(given, expected):
    assert parse_device(given) == expected


@pytest.mark.parametrize("bad", ["tpu", "cuda:x", -2, True, 1.5])
def test_parse_device_rejects(bad):
    with pytest.raises((ValueError, TypeError), match="device"):
        parse_device(bad)


def test_resolve_framework():
    with pytest.raises(ValueError, match="unknown framework 'mxnet'"):
        resolve_framework("mxnet")
    import importlib.util

    def has(*modules):
        return all(importlib.util.find_spec(m) is not None for m in modules)

    installed = [
        n for n, m in (("pt", ("torch",)), ("tf", ("tensorflow", "keras")), ("flax", ("jax", "flax"))) if has(*m)
    ]
    if installed:
        assert resolve_framework(None) == installed[0]
        assert resolve_framework({"pt": "torch", "tf": "tensorflow", "flax": "jax"}[installed[0]]) == installed[0]


def test_softmax_is_stable():
    probs = softmax(np.array([1000.0, 1000.0, -1000.0], np.float32))
    assert probs.tolist() == pytest.approx([0.5, 0.5, 0.0])
    assert json.dumps(float(probs[0]))


# -- transformers 4.x's return_all_scores, progress shares, devices echoed as given -------------------------------
def test_return_all_scores_is_the_4x_alias_of_top_k_none(tokenizer, config, recwarn):
    import warnings

    pipe = classifier(tokenizer, config)
    ranked = pipe("hello", top_k=None)  # sorted by score: LABEL_0, LABEL_2, LABEL_1 for logits (0.3, -0.3, 0)
    assert [r["label"] for r in ranked] == ["LABEL_0", "LABEL_2", "LABEL_1"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        legacy = pipe("hello", return_all_scores=True)
    assert [str(w.message).startswith("`return_all_scores` is now deprecated") for w in caught] == [True]
    assert caught[0].category is UserWarning
    # as transformers 4.x: one string gives [[...]], every label in label order (not sorted), same scores
    assert (
        isinstance(legacy, list)
        and len(legacy) == 1
        and [r["label"] for r in legacy[0]]
        == [
            "LABEL_0",
            "LABEL_1",
            "LABEL_2",
        ]
    )
    assert sorted(legacy[0], key=lambda r: -r["score"]) == ranked
    assert pipe(["hello", "a b c"], return_all_scores=True) == [legacy[0], pipe("a b c", return_all_scores=True)[0]]
    assert pipe({"text": "a", "text_pair": "b"}, return_all_scores=True) == sorted(
        pipe({"text": "a", "text_pair": "b"}, top_k=None), key=lambda r: r["label"]
    )
    assert pipe("hello", return_all_scores=False) == pipe("hello")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert pipe("hello", return_all_scores=True, top_k=2) == pipe("hello", top_k=2)  # top_k wins, no warning
        constructed = classifier(tokenizer, config, return_all_scores=True)
    assert len(caught) == 1
    assert constructed("hello") == legacy and constructed("hello", top_k=1) == pipe("hello", top_k=1)
    assert constructed.each(["hello"]) == [legacy]
    with pytest.raises(TypeError, match="return_all_scores must be True, False or None, got 'yes'"):
        pipe("hello", return_all_scores="yes")


def test_return_all_scores_warns_once_under_the_default_filter(shared_data):
    import subprocess
    import sys

    script = (
        "import logging, warnings\n"
        "warnings.resetwarnings(); warnings.simplefilter('default')\n"
        "from test_pipelines_numpy import classifier, DistilBertConfig\n"
        "from distilbert_mf import DistilBertTokenizerFast\n"
        "import sys; tok = DistilBertTokenizerFast.from_pretrained(sys.argv[1])\n"
        "pipe = classifier(tok, DistilBertConfig(vocab_size=30522, dim=8, n_heads=2, hidden_dim=8, n_layers=1))\n"
        "for _ in range(3): pipe('hello', return_all_scores=True)\n"
    )
    from pathlib import Path

    here = Path(__file__).resolve().parent
    folder = shared_data / "distilbert-base-uncased-tokenizer"
    done = subprocess.run(
        [sys.executable, "-c", script, str(folder)], capture_output=True, text=True, cwd=here, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.count("`return_all_scores` is now deprecated") == 1


def test_progress_share_spreads_one_bar_over_calls(tokenizer, config):
    from distilbert_mf.pipelines import ProgressShare

    class Bar:
        n = 0

        def update(self, k):
            assert k > 0
            self.n += k

    bar = Bar()
    pipe = classifier(tokenizer, config, batch_size=2)
    share = ProgressShare(bar, 10)
    pipe(["a"] * 5, progress=share)  # 5 rows carry 10 steps
    assert bar.n == 10
    share.finish()
    assert bar.n == 10  # already complete: finish adds nothing
    empty = ProgressShare(bar, 3)
    empty.finish()  # a call that ran no rows still accounts for its share
    assert bar.n == 13
    with pytest.raises(ValueError, match="amount must be a non-negative integer, got -1"):
        ProgressShare(bar, -1)


@pytest.mark.parametrize("given", ["cuda", "CUDA:1", "gpu:0", 0, 3])
def test_devices_are_echoed_as_given(given):
    from distilbert_mf.pipelines.frameworks import _no_gpu

    device = parse_device(given)
    assert str(device) == str(given).strip()
    err = _no_gpu(device, "PyTorch", 0)
    assert f"device={str(given)!r} asks for a GPU" in str(err) and "'gpu'" not in str(err)
    assert err.cli_message.startswith(f"--device {given} asks for a GPU") and "--device cpu" in err.cli_message
    assert isinstance(err, ValueError)
