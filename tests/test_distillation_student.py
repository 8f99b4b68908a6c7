"""distilbert_mf.distillation: student initialisation from DistilBERT / BERT teachers, loss weights, pre-checks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint import expected_shapes, load_pretrained
from distilbert_mf.distillation import (
    DISTILBERT_LAYERS,
    DistillationWeights,
    TaskDistillationWeights,
    check_hidden_sizes,
    check_masked_lm_teacher,
    check_vocabularies,
    init_student,
    init_student_from_pretrained,
    student_layers,
)

TEACHER = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=12)


def random_state(config, head, seed=0):
    rng = np.random.default_rng(seed)
    return {k: rng.normal(size=s).astype(np.float32) for k, s in expected_shapes(config, head).items()}


def test_layer_choices():
    assert student_layers(12) == [0, 2, 4, 7, 9, 11] == list(DISTILBERT_LAYERS)
    assert student_layers(12, "every_other") == [0, 2, 4, 6, 8, 10]
    assert student_layers(6) == [0, 2, 4] and student_layers(5, "distilbert") == [0, 2, 4]
    with pytest.raises(ValueError, match=r"layer strategy must be one of"):
        student_layers(12, "odd")


def test_distilbert_teacher_layers_renumbered():
    teacher = random_state(TEACHER, "masked_lm")
    student = init_student(teacher, TEACHER)
    assert student.layers == DISTILBERT_LAYERS and student.config.n_layers == 6 and student.head == "masked_lm"
    assert set(student.state) == set(expected_shapes(student.config, "masked_lm"))
    for j, i in enumerate(DISTILBERT_LAYERS):
        for name in ("attention.q_lin.weight", "ffn.lin2.bias", "output_layer_norm.weight"):
            key = f"distilbert.transformer.layer.{{}}.{name}"
            np.testing.assert_array_equal(student.state[key.format(j)], teacher[key.format(i)])
    for key in ("distilbert.embeddings.word_embeddings.weight", "vocab_transform.weight", "vocab_projector.bias"):
        np.testing.assert_array_equal(student.state[key], teacher[key])
    other = init_student(teacher, TEACHER, "every_other")
    np.testing.assert_array_equal(
        other.state["distilbert.transformer.layer.3.attention.k_lin.weight"],
        teacher["distilbert.transformer.layer.6.attention.k_lin.weight"],
    )


def test_classifier_teacher_keeps_its_head():
    config = TEACHER.replace(n_layers=6, num_labels=3)
    teacher = random_state(config, "sequence_classification")
    student = init_student(teacher, config, [0, 2, 4])
    assert student.head == "sequence_classification" and student.config.num_labels == 3
    np.testing.assert_array_equal(student.state["classifier.weight"], teacher["classifier.weight"])


def test_bad_layer_lists():
    teacher = random_state(TEACHER, "base")
    with pytest.raises(ValueError, match=r"layers \[12\] are outside the teacher's layers 0..11"):
        init_student(teacher, TEACHER, [0, 12])
    with pytest.raises(ValueError, match=r"at least one"):
        init_student(teacher, TEACHER, [])
    with pytest.raises(ValueError, match=r"distinct"):
        init_student(teacher, TEACHER, [1, 1])
    with pytest.raises(TypeError, match=r"integers"):
        init_student(teacher, TEACHER, ["0"])
    broken = dict(teacher)
    del broken["transformer.layer.4.ffn.lin1.weight"]
    with pytest.raises(ValueError, match=r"lacks weights the student needs"):
        init_student(broken, TEACHER)


def test_real_distilbert_teacher_round_trip(shared_data, tmp_path):
    student = init_student_from_pretrained(shared_data / "tiny-random-distilbert")  # 5 layers: every other
    assert student.layers == (0, 2, 4) and student.config.n_layers == 3
    student.save_pretrained(tmp_path)
    config, arrays, _ = load_pretrained(tmp_path, student.head)
    assert config.n_layers == 3 and set(arrays) == set(student.state)
    for key, value in student.state.items():
        np.testing.assert_array_equal(arrays[key], value)


def test_real_bert_teacher_through_the_conversion_mapping(shared_data):
    from safetensors.numpy import load_file

    folder = shared_data / "all-MiniLM-L6-v2"
    bert = load_file(str(folder / "model.safetensors"))
    bert_config = json.loads((folder / "config.json").read_text())
    student = init_student(bert, bert_config, [1, 5])
    assert student.config.n_layers == 2 and student.config.dim == 384 and student.head == "base"
    prefix = "" if "encoder.layer.0.attention.self.query.weight" in bert else "bert."
    np.testing.assert_array_equal(
        student.state["transformer.layer.1.attention.q_lin.weight"],
        bert[f"{prefix}encoder.layer.5.attention.self.query.weight"],
    )
    np.testing.assert_array_equal(
        student.state["transformer.layer.0.output_layer_norm.bias"],
        bert[f"{prefix}encoder.layer.1.output.LayerNorm.bias"],
    )
    folded = (
        bert[f"{prefix}embeddings.position_embeddings.weight"]
        + bert[f"{prefix}embeddings.token_type_embeddings.weight"][0]
    )
    np.testing.assert_allclose(student.state["embeddings.position_embeddings.weight"], folded)
    assert init_student_from_pretrained(folder).layers == (0, 2, 4)  # 6-layer teacher: every other layer
    with pytest.raises(TypeError, match=r"config.json as a dict"):
        init_student(bert, DistilBertConfig(), [0])


@pytest.mark.torch
def test_student_with_every_layer_computes_the_teacher(tmp_path):
    torch = pytest.importorskip("torch")
    from distilbert_mf.torch import DistilBertForMaskedLM

    config = TEACHER.replace(n_layers=3)
    teacher_state = random_state(config, "masked_lm", seed=3)
    init_student(teacher_state, config, [0, 1, 2]).save_pretrained(tmp_path / "same")
    init_student(teacher_state, config, [0, 2]).save_pretrained(tmp_path / "short")
    from distilbert_mf.checkpoint import save_pretrained

    save_pretrained(tmp_path / "teacher", config, teacher_state, "masked_lm")
    ids = torch.tensor([[1, 5, 7, 9, 2]])
    with torch.no_grad():
        teacher = DistilBertForMaskedLM.from_pretrained(tmp_path / "teacher")(input_ids=ids).logits
        same = DistilBertForMaskedLM.from_pretrained(tmp_path / "same")(input_ids=ids).logits
        short = DistilBertForMaskedLM.from_pretrained(tmp_path / "short")(input_ids=ids).logits
    torch.testing.assert_close(same, teacher, rtol=0, atol=0)
    assert not torch.allclose(short, teacher)


def test_loss_weights():
    weights = DistillationWeights()
    assert weights.as_kwargs() == {
        "temperature": 2.0,
        "alpha_ce": 5.0,
        "alpha_mlm": 2.0,
        "alpha_cos": 1.0,
        "alpha_mse": 0.0,
        "restrict_ce_to_mask": False,
    }
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got 0"):
        DistillationWeights(temperature=0)
    with pytest.raises(ValueError, match=r"temperature must be a finite number > 0, got -1"):
        DistillationWeights(temperature=-1.0)
    with pytest.raises(ValueError, match=r"every loss weight is zero"):
        DistillationWeights(alpha_ce=0, alpha_mlm=0, alpha_cos=0)
    with pytest.raises(ValueError, match=r"alpha_mlm must be a finite number >= 0"):
        DistillationWeights(alpha_mlm=-1)
    with pytest.raises(TypeError, match=r"restrict_ce_to_mask must be a bool"):
        DistillationWeights(restrict_ce_to_mask="yes")
    assert TaskDistillationWeights().as_kwargs() == {"temperature": 2.0, "alpha_ce": 0.5, "alpha_task": 0.5}
    with pytest.raises(ValueError, match=r"every loss weight is zero"):
        TaskDistillationWeights(alpha_ce=0, alpha_task=0)


def test_vocabulary_and_teacher_checks(shared_data):
    from distilbert_mf import DistilBertTokenizer

    uncased = DistilBertTokenizer(shared_data / "vocab" / "bert-base-uncased-vocab.txt")
    cased = DistilBertTokenizer(shared_data / "vocab" / "bert-base-cased-vocab.txt")
    check_vocabularies(uncased, uncased)
    check_vocabularies(uncased, DistilBertConfig())  # 30522 both
    with pytest.raises(ValueError, match=r"teacher's vocabulary has 30522 tokens but the student's 28996"):
        check_vocabularies(uncased, cased)
    with pytest.raises(ValueError, match=r"differ in 2 tokens"):
        check_vocabularies({"a": 0, "b": 1}, {"a": 1, "b": 0})
    check_masked_lm_teacher(expected_shapes(TEACHER, "masked_lm"))
    check_masked_lm_teacher(["bert.encoder.layer.0.output.dense.weight", "cls.predictions.bias"])
    with pytest.raises(ValueError, match=r"has no masked-LM head"):
        check_masked_lm_teacher(expected_shapes(TEACHER, "base"), source="teacher folder x")
    check_hidden_sizes(TEACHER, TEACHER, alpha_cos=1.0)
    check_hidden_sizes(TEACHER, TEACHER.replace(dim=64), alpha_cos=0.0)
    with pytest.raises(ValueError, match=r"teacher's width is 32 and the student's 64"):
        check_hidden_sizes(TEACHER, TEACHER.replace(dim=64), alpha_cos=1.0)
