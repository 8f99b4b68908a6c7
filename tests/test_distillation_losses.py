"""The distillation losses of each framework against values computed by hand and the float64 formulas of issue 16.

Each test runs in every installed framework (``pt``, ``tf``, ``flax``); the cross-framework comparison (values and
gradients between frameworks) is in ``tests/parity/test_distillation_parity.py``.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from distillation_helpers import (
    IGNORE,
    LOSS_FUNCTIONS,
    REFERENCES,
    module,
    random_case,
    reference_general,
    run_loss,
)

from distilbert_mf.distillation import DistillationWeights, TaskDistillationWeights
from distilbert_mf.distillation import losses as dl

FRAMEWORKS = [
    pytest.param("pt", marks=pytest.mark.torch, id="pt"),
    pytest.param("tf", marks=pytest.mark.tensorflow, id="tf"),
    pytest.param("flax", marks=pytest.mark.flax, id="flax"),
]
RTOL = 1e-6  # float32 against float64 on values of order one


def assert_losses(got: dict[str, float], expected: dict[str, float], rtol: float = RTOL, atol: float = 1e-7) -> None:
    assert set(got) == set(expected), (sorted(got), sorted(expected))
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=rtol, abs=atol), (key, got[key], value)


def hand_case() -> tuple[dict, dict, dict]:
    """One row of 3 positions, the last one padding (its values would change every term); vocab 2, width 2."""
    pad = [9.0, -9.0]
    student = {
        "logits": np.array([[[0.0, 0.0], [1.0, 0.0], pad]], np.float32),
        "hidden_states": (np.array([[[1.0, 0.0], [0.0, 2.0], pad]], np.float32),),
    }
    ln3 = math.log(3.0)
    teacher = {  # at T = 2 the teacher's first row is softmax([ln 3, 0]) = (3/4, 1/4)
        "logits": np.array([[[2 * ln3, 0.0], [1.0, 0.0], [-9.0, 9.0]]], np.float32),
        "hidden_states": (np.array([[[1.0, 1.0], [0.0, -3.0], [-9.0, 9.0]]], np.float32),),
    }
    kwargs = {"attention_mask": np.array([[1, 1, 0]]), "labels": np.array([[1, IGNORE, IGNORE]])}
    return student, teacher, kwargs


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_each_component_by_hand(framework: str) -> None:
    student, teacher, kwargs = hand_case()
    ln3 = math.log(3.0)
    # token 0: student uniform (1/2, 1/2), teacher (3/4, 1/4); token 1: equal logits, KL 0
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    expected = {
        "loss_ce": kl / 2 * 4,  # mean over the 2 real tokens, times T**2
        "loss_mlm": math.log(2.0),  # uniform prediction of the one target
        "loss_cos": ((1 - 1 / math.sqrt(2)) + (1 - (-1))) / 2,  # cos 1/sqrt(2), then opposite directions
        "loss_mse": ((0 - 2 * ln3) ** 2 + 0.0) / 2,  # summed over the vocabulary, over 2 tokens
    }
    expected["loss"] = 5 * expected["loss_ce"] + 2 * expected["loss_mlm"] + 1 * expected["loss_cos"]
    losses, _, _ = run_loss(framework, "distillation_loss", student, teacher, **kwargs)
    assert_losses(losses, expected)
    # restricted to the masked-LM target (token 0 only), with the MSE weighted in
    restricted, _, _ = run_loss(
        framework, "distillation_loss", student, teacher, **kwargs, restrict_ce_to_mask=True, alpha_mse=0.5
    )
    assert restricted["loss_ce"] == pytest.approx(kl * 4, rel=RTOL)
    assert restricted["loss_mse"] == pytest.approx((2 * ln3) ** 2, rel=RTOL)
    assert restricted["loss"] == pytest.approx(
        5 * kl * 4 + 2 * math.log(2.0) + expected["loss_cos"] + 0.5 * (2 * ln3) ** 2, rel=RTOL
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_task_components_by_hand(framework: str) -> None:
    ln3 = math.log(3.0)
    kl = 0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)
    student, teacher = {"logits": np.zeros((2, 2), np.float32)}, {"logits": np.array([[2 * ln3, 0], [0, 0]], "f4")}
    losses, _, _ = run_loss(
        framework, "sequence_classification_distillation_loss", student, teacher, labels=np.array([0, IGNORE])
    )
    assert_losses(losses, {"loss_ce": kl / 2 * 4, "loss_task": math.log(2), "loss": 0.5 * kl * 2 + 0.5 * math.log(2)})
    # token classification: the padding token's huge disagreement is left out
    student = {"logits": np.array([[[0.0, 0.0], [0.0, 0.0], [9.0, -9.0]]], np.float32)}
    teacher = {"logits": np.array([[[2 * ln3, 0.0], [0.0, 0.0], [-9.0, 9.0]]], np.float32)}
    losses, _, _ = run_loss(
        framework,
        "token_classification_distillation_loss",
        student,
        teacher,
        attention_mask=np.array([[1, 1, 0]]),
        alpha_task=0.0,
    )
    assert_losses(losses, {"loss_ce": kl / 2 * 4, "loss": 0.5 * kl * 2})
    # question answering: start terms kl, end terms 0 -> mean kl / 2; positions 0 and 1 of uniform logits: ln 2
    student = {"start_logits": np.zeros((1, 2), np.float32), "end_logits": np.zeros((1, 2), np.float32)}
    teacher = {"start_logits": np.array([[2 * ln3, 0.0]], np.float32), "end_logits": np.zeros((1, 2), np.float32)}
    losses, _, _ = run_loss(
        framework,
        "question_answering_distillation_loss",
        student,
        teacher,
        start_positions=np.array([0]),
        end_positions=np.array([1]),
        alpha_ce=1.0,
        alpha_task=2.0,
    )
    assert_losses(losses, {"loss_ce": kl / 2 * 4, "loss_task": math.log(2), "loss": kl * 2 + 2 * math.log(2)})


OPTIONS = {
    "distillation_loss": [
        {},
        {"restrict_ce_to_mask": True, "alpha_mse": 0.3, "temperature": 1.0},
        {"temperature": 4.0, "alpha_mlm": 0.0, "alpha_cos": 0.0},
    ],
    "sequence_classification_distillation_loss": [{}, {"temperature": 1.0, "alpha_ce": 2.0, "alpha_task": 0.0}],
    "token_classification_distillation_loss": [{}, {"temperature": 3.0}],
    "question_answering_distillation_loss": [{}, {"temperature": 1.5, "alpha_task": 0.1}],
}
CASES = [(name, i) for name in LOSS_FUNCTIONS for i in range(len(OPTIONS[name]))]


@pytest.mark.parametrize("framework", FRAMEWORKS)
@pytest.mark.parametrize(("name", "option"), CASES, ids=[f"{n}-{i}" for n, i in CASES])
def test_matches_the_float64_formulas(framework: str, name: str, option: int) -> None:
    student, teacher, kwargs = random_case(name, seed=option)
    options = OPTIONS[name][option]
    losses, grads, teacher_grads = run_loss(framework, name, student, teacher, **kwargs, **options)
    assert_losses(losses, REFERENCES[name](student, teacher, **kwargs, **options))
    for key, grad in grads.items():
        assert np.isfinite(grad).all(), key
    # the teacher is a target: no gradient reaches it
    assert all(g is None or not g.any() for g in teacher_grads.values()), teacher_grads


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_padding_and_unlabelled_positions_do_not_count(framework: str) -> None:
    student, teacher, kwargs = random_case("distillation_loss", seed=4)
    mask, labels = kwargs["attention_mask"], kwargs["labels"]
    base, grads, _ = run_loss(framework, "distillation_loss", student, teacher, **kwargs, alpha_mse=1.0)
    changed = {k: (tuple(x.copy() for x in v) if isinstance(v, tuple) else v.copy()) for k, v in student.items()}
    pad = mask == 0
    changed["logits"][pad] = 1e4  # huge, finite values in every padding position
    changed["hidden_states"][-1][pad] = -1e4
    again, _, _ = run_loss(framework, "distillation_loss", changed, teacher, **kwargs, alpha_mse=1.0)
    assert_losses(again, base)
    assert not grads["logits"][pad].any() and not grads["hidden_states:1"][pad].any()
    assert not grads["hidden_states:0"].any()  # only the last hidden states take part
    # restricted: the soft-target gradient reaches only the masked-LM targets
    _, grads, _ = run_loss(
        framework, "distillation_loss", student, teacher, **kwargs, restrict_ce_to_mask=True, alpha_mlm=0.0
    )
    assert not grads["logits"][labels == IGNORE].any() and grads["logits"][labels != IGNORE].all()


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bfloat16_teacher(framework: str) -> None:
    """A bfloat16 teacher (issue 16: the teacher may run in bfloat16 while the student trains in float32): the loss
    is the float32 loss of the teacher's values rounded to bfloat16."""
    import ml_dtypes

    student, teacher, kwargs = random_case("distillation_loss", seed=5)
    rounded = {
        "logits": teacher["logits"].astype(ml_dtypes.bfloat16).astype(np.float32),
        "hidden_states": tuple(h.astype(ml_dtypes.bfloat16).astype(np.float32) for h in teacher["hidden_states"]),
    }
    losses, _, _ = run_loss(framework, "distillation_loss", student, teacher, teacher_dtype="bfloat16", **kwargs)
    assert_losses(losses, reference_general(student, rounded, **kwargs))


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_weights_objects_feed_the_losses(framework: str) -> None:
    student, teacher, kwargs = random_case("distillation_loss", seed=6)
    weights = DistillationWeights(temperature=3.0, alpha_mse=0.5, restrict_ce_to_mask=True)
    losses, _, _ = run_loss(framework, "distillation_loss", student, teacher, **kwargs, **weights.as_kwargs())
    assert_losses(losses, reference_general(student, teacher, **kwargs, **weights.as_kwargs()))
    student, teacher, kwargs = random_case("sequence_classification_distillation_loss", seed=6)
    task = TaskDistillationWeights(alpha_task=0.25)
    losses, _, _ = run_loss(
        framework, "sequence_classification_distillation_loss", student, teacher, **kwargs, **task.as_kwargs()
    )
    assert_losses(
        losses, REFERENCES["sequence_classification_distillation_loss"](student, teacher, **kwargs, **task.as_kwargs())
    )


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_components_computed_from_what_is_given(framework: str) -> None:
    student, teacher, kwargs = random_case("distillation_loss", seed=7)
    logits_only = ({"logits": student["logits"]}, {"logits": teacher["logits"]})
    losses, _, _ = run_loss(
        framework,
        "distillation_loss",
        *logits_only,
        attention_mask=kwargs["attention_mask"],
        alpha_mlm=0.0,
        alpha_cos=0.0,
    )
    assert set(losses) == {"loss", "loss_ce", "loss_mse"}
    assert losses["loss"] == pytest.approx(5 * losses["loss_ce"], rel=RTOL)
    # a teacher wider than the student: with alpha_cos = 0 the cosine is simply not computed
    wide = {**teacher, "hidden_states": (np.ones((3, 7, 20), np.float32),)}
    losses, _, _ = run_loss(framework, "distillation_loss", student, wide, **kwargs, alpha_cos=0.0)
    assert "loss_cos" not in losses and "loss_mlm" in losses
    # a last_hidden_state is read as well as hidden_states[-1]
    last = ({"logits": student["logits"], "last_hidden_state": student["hidden_states"][-1]}, teacher)
    losses, _, _ = run_loss(framework, "distillation_loss", *last, **kwargs)
    assert_losses(losses, reference_general(student, teacher, **kwargs))


def call(framework: str, name: str, student: dict, teacher: dict, **kwargs):
    return run_loss(framework, name, student, teacher, **kwargs)


@pytest.mark.parametrize("framework", FRAMEWORKS)
def test_bad_inputs_are_clear_errors(framework: str) -> None:
    student, teacher, kwargs = random_case("distillation_loss", seed=8)
    name = "distillation_loss"
    bad_vocab = {**teacher, "logits": np.zeros((3, 7, 30), np.float32)}
    with pytest.raises(ValueError, match=r"teacher predicts 30 classes and the student 29"):
        call(framework, name, student, bad_vocab, **kwargs)
    with pytest.raises(ValueError, match=r"student's logits \(3, 7, 29\) and the teacher's \(3, 6, 29\) differ"):
        call(framework, name, student, {**teacher, "logits": teacher["logits"][:, :6]}, **kwargs)
    wide = {**teacher, "hidden_states": (np.ones((3, 7, 20), np.float32),)}
    with pytest.raises(ValueError, match=r"teacher's width is 20 and the student's 12; set alpha_cos=0 or project"):
        call(framework, name, student, wide, **kwargs)
    for temperature in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match=r"distillation_loss: temperature must be a finite number > 0, got"):
            call(framework, name, student, teacher, **kwargs, temperature=temperature)
    with pytest.raises(ValueError, match=r"every loss weight is zero"):
        call(framework, name, student, teacher, **kwargs, alpha_ce=0.0, alpha_mlm=0.0, alpha_cos=0.0)
    with pytest.raises(ValueError, match=r"alpha_ce must be a finite number >= 0, got -1"):
        call(framework, name, student, teacher, **kwargs, alpha_ce=-1.0)
    all_padding = {**kwargs, "attention_mask": np.zeros_like(kwargs["attention_mask"])}
    with pytest.raises(ValueError, match=r"every position of the batch is padding \(attention_mask is all 0\)"):
        call(framework, name, student, teacher, **all_padding)
    with pytest.raises(ValueError, match=r"attention_mask must have the logits' shape \(3, 7\)"):
        call(framework, name, student, teacher, **{**kwargs, "attention_mask": kwargs["attention_mask"][:, :5]})
    with pytest.raises(ValueError, match=r"alpha_mlm > 0 needs labels"):
        call(framework, name, student, teacher, attention_mask=kwargs["attention_mask"])
    with pytest.raises(ValueError, match=r"restrict_ce_to_mask needs labels"):
        call(
            framework,
            name,
            student,
            teacher,
            attention_mask=kwargs["attention_mask"],
            alpha_mlm=0.0,
            restrict_ce_to_mask=True,
        )
    with pytest.raises(ValueError, match=r"labels contains class id 29, outside \[0, 29\)"):
        call(
            framework,
            name,
            student,
            teacher,
            **{**kwargs, "labels": np.where(kwargs["labels"] == 3, 29, kwargs["labels"])},
        )
    no_hidden = {"logits": teacher["logits"]}
    with pytest.raises(
        ValueError, match=r"the teacher outputs hold none; call the model with output_hidden_states=True"
    ):
        call(framework, name, student, no_hidden, **kwargs)
    with pytest.raises(ValueError, match=r"teacher_outputs has no 'logits'"):
        call(framework, name, student, {"hidden_states": teacher["hidden_states"]}, **kwargs)
    with pytest.raises(TypeError, match=r"restrict_ce_to_mask must be True or False, got 1"):
        call(framework, name, student, teacher, **kwargs, restrict_ce_to_mask=1)
    # task variants
    s, t, kw = random_case("sequence_classification_distillation_loss")
    with pytest.raises(ValueError, match=r"alpha_task > 0 needs the true labels"):
        call(framework, "sequence_classification_distillation_loss", s, t)
    one = {"logits": np.zeros((3, 1), np.float32)}
    with pytest.raises(ValueError, match=r"soft targets need at least 2 classes"):
        call(framework, "sequence_classification_distillation_loss", one, one, alpha_task=0.0)
    with pytest.raises(ValueError, match=r"teacher predicts 4 classes and the student 5"):
        call(framework, "sequence_classification_distillation_loss", s, {"logits": t["logits"][:, :4]}, **kw)
    s, t, kw = random_case("token_classification_distillation_loss")
    with pytest.raises(ValueError, match=r"every position of the batch is padding"):
        call(
            framework,
            "token_classification_distillation_loss",
            s,
            t,
            **{**kw, "attention_mask": 0 * kw["attention_mask"]},
        )
    s, t, kw = random_case("question_answering_distillation_loss")
    with pytest.raises(ValueError, match=r"pass both start_positions and end_positions"):
        call(framework, "question_answering_distillation_loss", s, t, start_positions=kw["start_positions"])
    with pytest.raises(ValueError, match=r"student_outputs has no 'end_logits'"):
        call(framework, "question_answering_distillation_loss", {"start_logits": s["start_logits"]}, t, **kw)


@pytest.mark.parametrize("framework", FRAMEWORKS[1:])  # tf.function and jax.jit (PyTorch runs eagerly here)
def test_traced_all_padding_batch_is_finite(framework: str) -> None:
    """Inside jit / tf.function the mask's values are unknown, so the all-padding check cannot run: every mean divides
    by max(count, 1) and the loss is 0, never NaN. Under jit the values equal the eager ones."""
    student, teacher, kwargs = random_case("distillation_loss", seed=9)
    fn = module(framework).distillation_loss
    eager = reference_general(student, teacher, **kwargs)
    if framework == "flax":
        import jax

        jitted = jax.jit(lambda s, t, m, y: fn(s, t, attention_mask=m, labels=y))
    else:
        import tensorflow as tf

        jitted = tf.function(lambda s, t, m, y: fn(s, t, attention_mask=m, labels=y))
    got = jitted(student, teacher, kwargs["attention_mask"], kwargs["labels"])
    assert_losses({k: float(v) for k, v in got.items()}, eager)
    empty = jitted(student, teacher, np.zeros_like(kwargs["attention_mask"]), np.full_like(kwargs["labels"], IGNORE))
    assert {k: float(v) for k, v in empty.items()} == dict.fromkeys(eager, 0.0)


def test_loss_modules_import_only_their_framework() -> None:
    import subprocess
    import sys

    code = (
        "import sys, distilbert_mf.distillation.losses, distilbert_mf.distillation; "
        "print(sorted(m for m in ('torch', 'tensorflow', 'jax', 'keras') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]"


@pytest.mark.tensorflow
@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_keras_losses_under_other_backends(backend: str, tmp_path) -> None:
    """The Keras losses are keras.ops only: under KERAS_BACKEND=jax / torch they give the float64 formulas' values
    (the backend is fixed at import, hence a subprocess)."""
    import importlib.util
    import os
    import subprocess
    import sys

    if importlib.util.find_spec("jax" if backend == "jax" else "torch") is None:
        pytest.skip(f"{backend} is not installed")
    student, teacher, kwargs = random_case("distillation_loss", seed=12)
    np.savez(
        tmp_path / "case.npz",
        s_logits=student["logits"],
        s_hidden=student["hidden_states"][-1],
        t_logits=teacher["logits"],
        t_hidden=teacher["hidden_states"][-1],
        **kwargs,
    )
    code = (
        "import json, sys, keras, numpy as np\n"
        "from distilbert_mf.tensorflow.distillation import distillation_loss\n"
        "assert keras.backend.backend() == sys.argv[2], keras.backend.backend()\n"
        "d = np.load(sys.argv[1])\n"
        "out = distillation_loss({'logits': d['s_logits'], 'last_hidden_state': d['s_hidden']},\n"
        "    {'logits': d['t_logits'], 'last_hidden_state': d['t_hidden']},\n"
        "    attention_mask=d['attention_mask'], labels=d['labels'], alpha_mse=0.5)\n"
        "print(json.dumps({k: float(keras.ops.convert_to_numpy(v)) for k, v in out.items()}))\n"
    )
    env = {**os.environ, "KERAS_BACKEND": backend}
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "case.npz"), backend], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, result.stderr[-2000:]
    got = json.loads(result.stdout.strip().splitlines()[-1])
    assert_losses(got, reference_general(student, teacher, **kwargs, alpha_mse=0.5))


def _rows(value, rows: slice):
    if isinstance(value, tuple):
        return tuple(v[rows] for v in value)
    return value[rows]


@pytest.mark.torch  # the counts are neutral; the three frameworks' losses are equal (tests/parity)
@pytest.mark.parametrize(("name", "options"), [(n, {}) for n in LOSS_FUNCTIONS] + [
    ("distillation_loss", {"restrict_ce_to_mask": True})
])  # fmt: skip
def test_counts_make_halves_add_up_to_the_whole_batch(name: str, options: dict) -> None:
    """What several processes do (``averaged_over``): each part of a batch weights each component by its share of
    the component's count over both parts; the sums are the whole batch's components."""
    framework = "pt"
    student, teacher, kwargs = random_case(name, lengths=(7, 4, 1, 5))
    if name == "question_answering_distillation_loss":
        kwargs = {"start_positions": np.array([2, 0, 5, 1]), "end_positions": np.array([3, 0, 6, 1])}
    batch, seq = np.shape(next(iter(_leaves_of(student))))[:2]
    mask = kwargs.get("attention_mask", np.ones((batch, seq), np.int64))

    def split(rows: slice) -> tuple[dict, dict, dict, dict]:
        inputs = {"input_ids": np.zeros((batch, seq), np.int64)[rows], "attention_mask": mask[rows]}
        targets = {k: v[rows] for k, v in kwargs.items() if k != "attention_mask"}
        part = {k: _rows(v, rows) for k, v in kwargs.items()}
        s, t = ({k: _rows(v, rows) for k, v in side.items()} for side in (student, teacher))
        return inputs, targets, part, (s, t)

    whole = run_loss(framework, name, student, teacher, **kwargs, **options)[0]
    halves = [split(slice(0, 1)), split(slice(1, 4))]
    counts = [dl.averaged_over(name, inputs, targets, options) for inputs, targets, _, _ in halves]
    parts = [run_loss(framework, name, *sides, **part, **options)[0] for _, _, part, sides in halves]
    assert any(a != b for a, b in zip(counts[0].values(), counts[1].values()))  # the halves do weigh differently
    for component, value in whole.items():
        if component == "loss":
            continue
        total = counts[0][component] + counts[1][component]
        combined = sum(c[component] / total * p[component] for c, p in zip(counts, parts))
        assert combined == pytest.approx(value, rel=1e-5), component


def _leaves_of(outputs: dict) -> list:
    return [v[0] if isinstance(v, tuple) else v for v in outputs.values()]


def test_counts_refuse_question_answering_positions_outside_the_window() -> None:
    inputs = {"input_ids": np.zeros((2, 5), np.int64), "attention_mask": np.ones((2, 5), np.int64)}
    targets = {"start_positions": np.array([1, 7]), "end_positions": np.array([2, 3])}
    with pytest.raises(ValueError, match="start_positions hold positions >= the sequence length 5"):
        dl.averaged_over("question_answering_distillation_loss", inputs, targets, {})
