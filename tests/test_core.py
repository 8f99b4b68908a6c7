"""The framework-neutral core: lazy imports, outputs, shared rules, framework registry."""

from __future__ import annotations

import pickle
import subprocess
import sys

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.frameworks import framework_of, normalize_framework, to_numpy
from distilbert_mf.modeling_utils import (
    check_input_choice,
    check_token_range,
    dtype_name,
    problem_type_for,
    reject_unsupported_inputs,
)
from distilbert_mf.outputs import BaseModelOutput, QuestionAnsweringModelOutput, SequenceClassifierOutput


def test_import_loads_no_framework():
    code = (
        "import sys, distilbert_mf\n"
        "from distilbert_mf import DistilBertConfig\n"
        "import distilbert_mf.checkpoint, distilbert_mf.conversion, distilbert_mf.parity, distilbert_mf.frameworks\n"
        "bad = {'torch', 'tensorflow', 'jax', 'keras', 'flax'} & set(sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_attribute_is_attribute_error():
    import distilbert_mf

    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        distilbert_mf.Nope  # noqa: B018


def test_output_access_by_attribute_key_and_index():
    out = SequenceClassifierOutput(logits=np.ones(2), hidden_states=(1, 2))
    assert out.loss is None and "loss" not in out
    assert out[0] is out.logits is out["logits"]
    assert out[1] == (1, 2)
    assert list(out.keys()) == ["logits", "hidden_states"]
    out.loss = 3.0
    assert list(out.keys()) == ["loss", "logits", "hidden_states"] and out[0] == 3.0
    assert out.to_tuple()[0] == 3.0


def test_output_rejects_unknown_fields_and_pickles():
    with pytest.raises(TypeError, match="no field"):
        BaseModelOutput(logits=1)
    with pytest.raises(AttributeError):
        BaseModelOutput(last_hidden_state=1).nope  # noqa: B018
    out = QuestionAnsweringModelOutput(start_logits=np.zeros(3), end_logits=np.ones(3))
    again = pickle.loads(pickle.dumps(out))
    assert type(again) is QuestionAnsweringModelOutput and list(again) == ["start_logits", "end_logits"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("float32", "float32"),
        ("bf16", "bfloat16"),
        ("torch.float16", "float16"),
        (np.float32, "float32"),
        (np.dtype("float16"), "float16"),
        (None, None),
        ("auto", None),
    ],
)
def test_dtype_name(given, expected):
    assert dtype_name(given) == expected


def test_dtype_name_rejects_unknown():
    with pytest.raises(ValueError, match="unsupported dtype 'int8'"):
        dtype_name("int8")


def test_shared_input_rules():
    with pytest.raises(ValueError, match="token_type_ids"):
        reject_unsupported_inputs(token_type_ids=[0])
    with pytest.raises(ValueError, match="head_mask"):
        reject_unsupported_inputs(head_mask=[1])
    with pytest.raises(ValueError, match="outside the vocabulary"):
        check_token_range(0, 99, 99)
    with pytest.raises(ValueError, match="token id -1"):
        check_token_range(-1, 5, 99)
    check_token_range(0, 98, 99)
    with pytest.raises(ValueError, match="both are None"):
        check_input_choice(None, None)
    with pytest.raises(ValueError, match="not both"):
        check_input_choice(1, 1)


def test_problem_type_inference_is_per_call():
    config = DistilBertConfig(num_labels=3)
    assert problem_type_for(config, True) == "single_label_classification"
    assert problem_type_for(config, False) == "multi_label_classification"
    assert problem_type_for(config.replace(num_labels=1), False) == "regression"
    assert config.problem_type is None
    assert problem_type_for(config.replace(problem_type="regression"), True) == "regression"


def test_framework_registry():
    assert normalize_framework("torch") == "pt" and normalize_framework("JAX") == "flax"
    with pytest.raises(ValueError, match="unknown framework 'mxnet'"):
        normalize_framework("mxnet")
    with pytest.raises(TypeError, match="not a distilbert_mf model"):
        framework_of(object())
    assert to_numpy((np.ones(2), None))[1] is None
