"""The Keras fine-tuning loop (distilbert_mf.tensorflow.training): PyTorch's AdamW in Keras, the run through
``model.fit``, its training state, resume and Ctrl-C.

Same weights, same batches, dropout 0: the per-step losses of ``model.fit`` / ``train_on_batch`` under
:class:`PyTorchAdamW` follow ``torch.optim.AdamW`` + ``clip_grad_norm_`` on our PyTorch model within 1e-5 relative over
50 steps (weight decay, warm-up and clipping active), with and without gradient accumulation; Keras' own AdamW does
not (its epsilon sits before the bias correction).
"""

from __future__ import annotations

import functools
import json
import os
import signal

import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from safetensors.numpy import load_file  # noqa: E402
from tf_helpers import build, tiny_config  # noqa: E402
from training_runs import (  # noqa: E402
    NO_DROPOUT,
    TASKS,
    random_batch,
    realistic_weights,
    run_arguments,
    stand_in_run,
    torch_trajectory,
)

from distilbert_mf.frameworks import model_class  # noqa: E402
from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification  # noqa: E402
from distilbert_mf.tensorflow import training as tf_training  # noqa: E402
from distilbert_mf.training.batching import widen_batch  # noqa: E402
from distilbert_mf.training.data import TASK_HEADS, canonical_task  # noqa: E402
from distilbert_mf.training.schedules import no_weight_decay  # noqa: E402
from distilbert_mf.training.trainer import TrainingArguments, prepare_run, train  # noqa: E402

pytestmark = pytest.mark.tensorflow

STEPS = 50
# attention.k_lin.bias has a zero gradient in exact arithmetic (a constant added to every key's score leaves the
# softmax unchanged): Adam turns its rounding noise into full steps of random sign in every framework. Every other
# weight is held to this:
WEIGHT_ATOL = 1e-5
NOISE_ONLY = ".attention.k_lin.bias"


def keras_trajectory(model, optimizer, steps, *, jit_compile):
    """``train_on_batch`` per micro-batch (the compiled step ``fit`` runs) -> (mean losses, grad norms)."""
    model.compile(optimizer=optimizer, jit_compile=jit_compile)
    losses, norms = [], []
    for batches in steps:
        if optimizer.accumulation_steps:
            optimizer.set_micro_batches(len(batches))
        micro = [float(model.train_on_batch(batch, return_dict=True)["loss"]) for batch in batches]
        losses.append(np.mean(micro))
        norms.append(float(optimizer.grad_norm.numpy()))
    return np.asarray(losses), np.asarray(norms)


def canonical_model(config, weights):
    keras.utils.set_random_seed(0)
    model = TFDistilBertForSequenceClassification(config)
    model.load_canonical_state_dict(weights)
    return model


@pytest.mark.slow
@pytest.mark.parametrize(("accumulation", "jit_compile"), [(1, False), (3, True)])
def test_steps_follow_torch_adamw(accumulation, jit_compile):
    """Graph mode without accumulation, XLA with accumulation of 3 and 2 micro-batches per update."""
    pytest.importorskip("torch")
    config = tiny_config(**NO_DROPOUT)
    weights = realistic_weights(config, "sequence_classification")
    run = stand_in_run(gradient_accumulation_steps=accumulation)
    rng = np.random.default_rng(accumulation)
    # with accumulation every third update is short (2 micro-batches), as the last update of an epoch can be
    sizes = [accumulation - (s % 3 == 2) if accumulation > 1 else 1 for s in range(STEPS)]
    # one width (every row padded to it but the longest): one compilation per trajectory
    steps = [[random_batch(rng, config, widths=(12,)) for _ in range(size)] for size in sizes]

    model = canonical_model(config, weights)
    optimizer = tf_training.create_optimizer(model, run)
    losses, norms = keras_trajectory(model, optimizer, steps, jit_compile=jit_compile)

    ref_losses, ref_norms, ref_state = torch_trajectory(config, weights, steps, run)
    clipped = int(np.sum(ref_norms > run.args.max_grad_norm))
    assert 0 < clipped < STEPS, ref_norms  # clipping is active, and not on every step
    assert abs(ref_losses[-1] - ref_losses[0]) > 1e-2  # the trajectory moves
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-5)
    assert int(optimizer.iterations.numpy()) == STEPS
    assert int(optimizer._iterations.numpy()) == sum(sizes)  # Keras' own counter: one per micro-batch
    state = model.canonical_state_dict()
    for key, value in state.items():
        if not key.endswith(NOISE_ONLY):
            np.testing.assert_allclose(value, ref_state[key], atol=WEIGHT_ATOL, err_msg=key)

    if accumulation == 1:  # the test tells the rules apart: Keras' AdamW (epsilon hat) leaves the bound
        model = canonical_model(config, weights)
        names = tf_training.variable_names(model)
        stock = keras.optimizers.AdamW(
            learning_rate=tf_training.LinearWarmupDecay.from_schedule(run.schedule),
            weight_decay=0.01,
            epsilon=1e-8,
            global_clipnorm=run.args.max_grad_norm,
        )
        stock.exclude_from_weight_decay(var_list=[v for v in model.trainable_variables if not run.decays(names[id(v)])])
        model.compile(optimizer=stock, jit_compile=jit_compile)
        for batches in steps:
            model.train_on_batch(batches[0])
        off = max(
            float(np.max(np.abs(value - ref_state[key])))
            for key, value in model.canonical_state_dict().items()
            if not key.endswith(NOISE_ONLY)
        )
        assert off > 10 * WEIGHT_ATOL, off


def test_keras_gradient_accumulation_counts_micro_batches():
    """Keras 3's own ``gradient_accumulation_steps=N``: the update is the mean of N micro-batch gradients (PyTorch's
    ``(loss / N).backward()`` rule), but a schedule is called with the micro-batch count and N is fixed.
    PyTorchAdamW calls it with the update count and takes a shorter update when told."""
    torch = pytest.importorskip("torch")
    grads = [np.asarray(g, np.float32) for g in ([1.0, -2.0], [3.0, 0.5], [-1.0, 1.0], [2.0, 2.0], [0.5, -0.5])]

    class Recorded(keras.optimizers.schedules.LearningRateSchedule):
        def __init__(self):
            self.seen = []

        def __call__(self, step):
            self.seen.append(int(step))
            return 0.1 * (ops_cast(step) + 1.0)

    def ops_cast(step):
        return keras.ops.cast(step, "float32")

    schedule = Recorded()
    variable = keras.Variable(np.zeros(2, np.float32))
    sgd = keras.optimizers.SGD(learning_rate=schedule, gradient_accumulation_steps=2)
    for g in grads[:2]:
        sgd.apply([g], [variable])
    # the mean gradient, at the rate of "step 1" (the second micro-batch), not of update 0
    np.testing.assert_allclose(variable.numpy(), -0.2 * (grads[0] + grads[1]) / 2, rtol=1e-6)
    assert schedule.seen == [1]

    schedule = Recorded()
    variable = keras.Variable(np.zeros(2, np.float32))
    ours = tf_training.PyTorchAdamW(learning_rate=schedule, weight_decay=0.0, gradient_accumulation_steps=2)
    ours.build([variable])
    reference = torch.nn.Parameter(torch.zeros(2))
    torch_adamw = torch.optim.AdamW([reference], lr=0.1, weight_decay=0.0)
    updates = [grads[0:2], grads[2:4], grads[4:5]]  # the last update has one micro-batch
    for index, micro in enumerate(updates):
        ours.set_micro_batches(len(micro))
        for g in micro:
            ours.apply([g], [variable])
        reference.grad = torch.as_tensor(np.mean(micro, axis=0))
        for group in torch_adamw.param_groups:
            group["lr"] = 0.1 * (index + 1)
        torch_adamw.step()
        np.testing.assert_allclose(variable.numpy(), reference.detach().numpy(), rtol=1e-6, atol=1e-7)
    assert int(ours.iterations.numpy()) == 3 and int(ours._iterations.numpy()) == 5
    assert sorted(set(schedule.seen)) == [0, 1, 2]  # update counts (evaluated on every micro-batch)


def test_bias_correction_is_pytorchs():
    """1 - beta**t as PyTorch computes it (Python floats), to float32 rounding; the plain float32 power is 5e-5 off
    at t = 1 for 0.999."""
    counts = np.arange(1, 3001)
    for beta in (0.9, 0.98, 0.999, 0.9999):
        exact = 1.0 - beta ** counts.astype(np.float64)
        ours = np.asarray(tf_training._one_minus_power(beta, keras.ops.cast(counts, "float32")), np.float64)
        np.testing.assert_allclose(ours, exact, rtol=4e-7, err_msg=str(beta))
    plain = 1.0 - np.float32(0.999) ** counts[:10].astype(np.float32)
    assert np.abs(plain / (1.0 - 0.999 ** counts[:10]) - 1).max() > 1e-5  # what this replaces


def test_decay_mask_schedule_and_update_rule():
    """A zero-gradient update only decays: decayed weights shrink by (1 - lr * wd), biases and LayerNorm stay;
    the Keras schedule equals run.schedule at every update."""
    run = stand_in_run(learning_rate=0.1, weight_decay=0.5, warmup_steps=3, total_steps=10)
    schedule = tf_training.LinearWarmupDecay.from_schedule(run.schedule)
    values = [float(schedule(s)) for s in range(12)]
    np.testing.assert_allclose(values, [run.schedule(s) for s in range(12)], rtol=1e-6, atol=0)
    assert keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(schedule)).get_config() == (
        schedule.get_config()
    )

    model = build("sequence_classification", tiny_config(**NO_DROPOUT), seed=0)
    optimizer = tf_training.create_optimizer(model, run)
    names = tf_training.variable_names(model)
    decayed = {names[id(v)]: optimizer._use_weight_decay(v) for v in model.trainable_variables}
    assert decayed["distilbert.transformer.layer.0.attention.q_lin.weight"] is True
    assert decayed["distilbert.embeddings.word_embeddings.weight"] is True
    assert decayed["distilbert.transformer.layer.1.ffn.lin2.bias"] is False
    assert decayed["distilbert.transformer.layer.0.sa_layer_norm.weight"] is False
    assert decayed["distilbert.embeddings.LayerNorm.weight"] is False
    assert decayed == {name: not no_weight_decay(name) for name in decayed}

    before = model.canonical_state_dict()
    for _ in range(2):  # update 0 has lr 0 (warm-up), update 1 has lr 0.1 / 3
        optimizer.apply([keras.ops.zeros(v.shape) for v in model.trainable_variables], model.trainable_variables)
    after = model.canonical_state_dict()
    factor = 1 - run.schedule(1) * run.args.weight_decay
    for key, value in after.items():
        expected = before[key] * factor if not no_weight_decay(key) else before[key]
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=key)

    masked_lm = build("masked_lm", tiny_config(), seed=0)  # the tied projector is the word embedding matrix
    names = tf_training.variable_names(masked_lm)
    assert "vocab_projector.weight" not in names.values()
    assert "distilbert.embeddings.word_embeddings.weight" in names.values()


def test_plain_fit_with_accumulation_follows_torch():
    """Your own model.fit: PyTorchAdamW(gradient_accumulation_steps=2) built by Keras itself, a tf.data dataset of
    batches with labels, the decay exclusion by Keras names: the weights after 4 updates are torch's."""
    pytest.importorskip("torch")
    config = tiny_config(**NO_DROPOUT)
    weights = realistic_weights(config, "sequence_classification")
    rng = np.random.default_rng(5)
    batches = [random_batch(rng, config, widths=(12,)) for _ in range(8)]
    run = stand_in_run(total_steps=4, warmup_steps=1, gradient_accumulation_steps=2)
    model = canonical_model(config, weights)
    optimizer = tf_training.PyTorchAdamW(
        learning_rate=tf_training.LinearWarmupDecay.from_schedule(run.schedule),
        weight_decay=run.args.weight_decay,
        global_clipnorm=run.args.max_grad_norm,
        gradient_accumulation_steps=2,
    )
    optimizer.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
    model.compile(optimizer=optimizer)
    data = tf.data.Dataset.from_tensor_slices({k: np.stack([b[k] for b in batches]) for k in batches[0]})
    model.fit(data, epochs=1, verbose=0, shuffle=False)  # 8 batches of 4 rows, 12 wide
    assert int(optimizer.iterations.numpy()) == 4
    _, _, reference = torch_trajectory(config, weights, [batches[i : i + 2] for i in range(0, 8, 2)], run)
    for key, value in model.canonical_state_dict().items():
        if not key.endswith(NOISE_ONLY):
            np.testing.assert_allclose(value, reference[key], atol=WEIGHT_ATOL, err_msg=key)


def test_keras_name_exclusion_is_the_canonical_rule():
    """For your own model.fit: exclude_from_weight_decay(var_names=["bias", "gamma", "beta"]) (Keras leaf names)
    leaves out exactly what create_optimizer leaves out (biases and LayerNorm weights), in every head."""
    for head in ("masked_lm", "sequence_classification", "question_answering"):
        model = build(head, tiny_config(), seed=0)
        canonical = tf_training.create_optimizer(model, stand_in_run())
        by_name = tf_training.PyTorchAdamW()
        by_name.exclude_from_weight_decay(var_names=["bias", "gamma", "beta"])
        by_name.build(model.trainable_variables)
        for variable in model.trainable_variables:
            assert by_name._use_weight_decay(variable) == canonical._use_weight_decay(variable), variable.path


def test_optimizer_refuses_what_pytorch_adamw_is_not():
    for option in ("amsgrad", "use_ema", "clipnorm", "clipvalue"):
        with pytest.raises(ValueError, match=f"does not support {option}"):
            tf_training.PyTorchAdamW(**{option: 1.0 if option.startswith("clip") else True})
    with pytest.raises(ValueError, match="gradient_accumulation_steps must be an integer >= 1"):
        tf_training.PyTorchAdamW(gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match="global_clipnorm must be a number > 0"):
        tf_training.PyTorchAdamW(global_clipnorm=-1.0)
    optimizer = tf_training.PyTorchAdamW(gradient_accumulation_steps=4)
    optimizer.build([keras.Variable(np.zeros(2, np.float32))])
    with pytest.raises(ValueError, match=r"micro-batches per update must be in \[1, 4\], got 5"):
        optimizer.set_micro_batches(5)
    config = optimizer.get_config()
    assert config["gradient_accumulation_steps"] == 4 and config["epsilon"] == 1e-8
    assert type(tf_training.PyTorchAdamW.from_config(config)).__name__ == "PyTorchAdamW"


def test_widened_predictions_equal_the_plain_forward():
    """Rounding a batch's width up for XLA (pad tokens, mask 0, labels -100) changes no output beyond float rounding;
    predictions come back at the batch's own width."""
    model = build("token_classification", tiny_config(**NO_DROPOUT), seed=1)
    model.load_canonical_state_dict(realistic_weights(model.config, "token_classification"))
    batch = random_batch(np.random.default_rng(0), model.config, widths=(11,), token_labels=True)

    def widen(b):
        return widen_batch(b, 8, pad_token_id=0, token_level_labels=True, max_width=64)

    assert widen(batch)["input_ids"].shape == (4, 16) and (widen(batch)["labels"][:, 11:] == -100).all()
    predicted = tf_training.Predictor(model, widen=widen, jit_compile=True)(batch)
    plain = model(**batch)
    assert predicted["logits"].shape == (4, 11, model.config.num_labels) and predicted["logits"].dtype == np.float32
    np.testing.assert_allclose(predicted["logits"], plain.logits.numpy(), atol=1e-5)
    np.testing.assert_allclose(predicted["loss"], float(plain.loss), rtol=1e-6)
    wide_head = build("sequence_classification", tiny_config(num_labels=12), seed=1)  # more labels than tokens
    short = random_batch(np.random.default_rng(2), wide_head.config, widths=(5,))
    widen_ids = functools.partial(widen_batch, multiple=8, pad_token_id=0, token_level_labels=False)
    logits = tf_training.Predictor(wide_head, widen=widen_ids, jit_compile=False)(short)["logits"]
    np.testing.assert_allclose(logits, wide_head(**short).logits.numpy(), atol=1e-5)
    capped = widen_batch(
        random_batch(np.random.default_rng(1), model.config, widths=(62,)),
        8,
        pad_token_id=0,
        token_level_labels=False,
        max_width=64,
    )
    assert capped["input_ids"].shape[1] == 64


# ----------------------------------------------------------------------------------------------------------------------
# Runs through TrainingArguments / train
# ----------------------------------------------------------------------------------------------------------------------


def tf_run(tmp_path, shared_data, task="text-classification", **changes):
    """TrainingArguments of a tiny Keras run (tests/training_runs.py: real data, the tiny base checkpoint)."""
    return TrainingArguments(**run_arguments(tmp_path, task, shared_data, "tf", **changes))


def logged(history, key="loss"):
    return {entry["step"]: entry[key] for entry in history if key in entry and "step" in entry}


@pytest.mark.slow
def test_resume_and_ctrl_c_give_the_same_trajectory(tmp_path, shared_data):
    """6 updates with dropout on and accumulation (20 rows: 5 micro-batches an epoch, updates of 2, 2, 1): saved at
    3 and resumed, or interrupted by Ctrl-C during update 2 and resumed, give the losses, norms and learning rates
    of the uninterrupted run, bit for bit."""
    changes = {"gradient_accumulation_steps": 2, "max_train_samples": 20, "validation_file": None, "dropout": True}
    straight = train(tf_run(tmp_path, shared_data, **changes))
    assert sorted(logged(straight.log_history)) == [1, 2, 3, 4, 5, 6]
    checkpoint = straight.output_dir / "checkpoint-3"
    meta = json.loads((checkpoint / tf_training.STATE_META_FILE).read_text())
    assert meta["update_step"] == 3 and meta["framework"] == "tf"
    assert "distilbert.embeddings.LayerNorm.weight" in meta["excluded_from_weight_decay"]

    resumed = train(tf_run(tmp_path, shared_data, resume_from_checkpoint=str(checkpoint), **changes))
    for key in ("loss", "grad_norm", "learning_rate"):
        assert logged(resumed.log_history, key) == logged(straight.log_history, key), key

    # Ctrl-C during update 2: held until the update is recorded, then a checkpoint of update 2
    stopped = tmp_path / "stopped"
    run = prepare_run(tf_run(stopped, shared_data, **changes))
    end_step = run.end_step

    def end_step_then_ctrl_c(step, **kwargs):
        if step.global_step == 2:
            os.kill(os.getpid(), signal.SIGINT)
        end_step(step, **kwargs)

    run.end_step = end_step_then_ctrl_c
    with pytest.raises(KeyboardInterrupt):
        tf_training.fit(run)
    assert sorted(p.name for p in run.output_dir.glob("checkpoint-*")) == ["checkpoint-2"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
    again = train(tf_run(stopped, shared_data, resume_from_checkpoint=True, **changes))
    for key in ("loss", "grad_norm", "learning_rate"):
        assert logged(again.log_history, key) == logged(straight.log_history, key), key


@pytest.mark.slow
def test_fit_under_xla_follows_graph_mode(tmp_path, shared_data):
    """fit with jit_compile=True (widths rounded up to multiples of 8 for XLA) gives graph mode's losses."""
    results = {}
    for jit in (False, True):
        arguments = tf_run(
            tmp_path / str(jit), shared_data, max_train_samples=8, validation_file=None, pad_to_multiple_of=None
        )
        results[jit] = tf_training.fit(prepare_run(arguments), jit_compile=jit).log_history
    for key in ("loss", "grad_norm"):
        plain, xla = logged(results[False], key), logged(results[True], key)
        assert sorted(xla) == [1, 2, 3, 4, 5, 6]  # 3 epochs of 2 batches
        np.testing.assert_allclose([xla[s] for s in sorted(xla)], [plain[s] for s in sorted(xla)], rtol=1e-5)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_and_the_folder_loads_everywhere(task, tmp_path, shared_data):
    """Each task trains end to end (evaluation included); the output folder loads in Keras, PyTorch and Flax with the
    same outputs."""
    out = train(tf_run(tmp_path, shared_data, task, eval_steps=2, max_steps=4, save_steps=0))
    losses = logged(out.log_history)
    assert sorted(losses) == [1, 2, 3, 4] and all(np.isfinite(list(losses.values())))
    assert out.eval_metrics and np.isfinite(out.eval_metrics["eval_loss"])
    assert sorted(logged(out.log_history, "eval_loss")) == [2, 4]
    folder = out.output_dir
    for name in ("config.json", "model.safetensors", "trainer_state.json", "eval_results.json", "vocab.txt"):
        assert (folder / name).is_file(), name
    assert [p.name for p in folder.glob("checkpoint-*")] == ["checkpoint-4"]  # save_strategy "steps": at the end

    head = TASK_HEADS[canonical_task(task)]
    keras_model = model_class("tf", head).from_pretrained(folder)
    shape = (2, 3, 9) if head == "multiple_choice" else (2, 9)
    ids = np.random.default_rng(0).integers(5, keras_model.config.vocab_size, shape)
    mask = np.ones_like(ids)
    expected = main_output(keras_model(input_ids=ids, attention_mask=mask))
    pytest.importorskip("torch")
    import torch

    torch_model = model_class("pt", head).from_pretrained(folder).eval()
    with torch.no_grad():
        got = main_output(torch_model(input_ids=torch.as_tensor(ids), attention_mask=torch.as_tensor(mask)))
    np.testing.assert_allclose(got, expected, atol=1e-5)
    pytest.importorskip("flax")
    flax_model = model_class("flax", head).from_pretrained(folder)
    np.testing.assert_allclose(main_output(flax_model(input_ids=ids, attention_mask=mask)), expected, atol=1e-5)


JAX_SCRIPT = """
import json, sys
from pathlib import Path
import keras
from training_runs import run_arguments
from distilbert_mf.training.trainer import TrainingArguments, train

assert keras.backend.backend() == "jax", keras.backend.backend()
tmp, shared, out, kwargs = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), json.loads(sys.argv[4])
straight = train(TrainingArguments(**run_arguments(tmp, "text-classification", shared, "tf", **kwargs)))
resume = str(straight.output_dir / "checkpoint-3")
resumed = train(TrainingArguments(**run_arguments(tmp, "text-classification", shared, "tf", resume_from_checkpoint=resume, **kwargs)))
out.write_text(json.dumps({"straight": straight.log_history, "resumed": resumed.log_history}))
"""


@pytest.mark.slow
def test_the_loop_runs_under_the_jax_backend(tmp_path, shared_data):
    """KERAS_BACKEND=jax (a subprocess: the backend is fixed at import): the same run follows PyTorch's losses, and a
    resume from checkpoint-3 follows the uninterrupted run."""
    import importlib.util
    import subprocess
    import sys
    from pathlib import Path

    if importlib.util.find_spec("jax") is None:
        pytest.skip("jax is not installed")
    kwargs = {"gradient_accumulation_steps": 2, "max_train_samples": 20, "validation_file": None}
    tests = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "KERAS_BACKEND": "jax",
        "PYTHONPATH": os.pathsep.join([str(tests), os.environ.get("PYTHONPATH", "")]),
    }
    out = tmp_path / "logs.json"
    done = subprocess.run(
        [sys.executable, "-c", JAX_SCRIPT, str(tmp_path / "jax"), str(shared_data), str(out), json.dumps(kwargs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    logs = json.loads(out.read_text())
    reference = train(
        TrainingArguments(**run_arguments(tmp_path / "pt", "text-classification", shared_data, "pt", **kwargs))
    )
    jax_losses, torch_losses = logged(logs["straight"]), logged(reference.log_history)
    assert sorted(jax_losses) == [1, 2, 3, 4, 5, 6]
    np.testing.assert_allclose([jax_losses[s] for s in range(1, 7)], [torch_losses[s] for s in range(1, 7)], rtol=1e-5)
    assert logged(logs["resumed"]) == jax_losses


def main_output(out):
    keys = ("start_logits", "end_logits") if out.get("start_logits") is not None else ("logits",)
    return np.stack([np.asarray(out[key], dtype=np.float32) for key in keys])


def test_training_state_refuses_another_model(tmp_path):
    run = stand_in_run()
    model = build("sequence_classification", tiny_config(), seed=0)
    optimizer = tf_training.create_optimizer(model, run)
    with pytest.raises(FileNotFoundError, match="no Keras training state"):
        tf_training.load_training_state(tmp_path, model, optimizer)
    tf_training.save_training_state(tmp_path, model, optimizer)
    arrays = load_file(tmp_path / tf_training.STATE_FILE)
    # moments under PyTorch's names and layout (Linear weights (out, in))
    assert arrays["optimizer/distilbert.transformer.layer.0.ffn.lin1.weight/exp_avg"].shape == (37, 32)
    assert "rng/distilbert.transformer.layer.1.attention.dropout.seed_generator" in arrays

    other = build("token_classification", tiny_config(), seed=0)
    with pytest.raises(KeyError, match="does not fit"):
        tf_training.load_training_state(tmp_path, other, tf_training.create_optimizer(other, run))
    bigger = build("sequence_classification", tiny_config(num_labels=5), seed=0)
    with pytest.raises(ValueError, match=r"classifier.weight/exp_avg has shape \[3, 32\]"):
        tf_training.load_training_state(tmp_path, bigger, tf_training.create_optimizer(bigger, run))
    no_decay = build("sequence_classification", tiny_config(), seed=0)
    everything = stand_in_run()
    everything.decays = lambda name: True
    with pytest.raises(ValueError, match="another weight-decay mask"):
        tf_training.load_training_state(tmp_path, no_decay, tf_training.create_optimizer(no_decay, everything))


def test_bfloat16_compute_keeps_float32_variables(tmp_path, shared_data):
    run = prepare_run(tf_run(tmp_path, shared_data, bf16=True, max_steps=100, validation_file=None))
    model = tf_training.load_model(run)
    assert model.dtype_policy.name == "mixed_bfloat16" and model.compute_dtype == "bfloat16"
    optimizer = tf_training.create_optimizer(model, run)
    model.compile(optimizer=optimizer, jit_compile=True)
    batch = next(iter(run.loader.epoch(0)))
    losses = [float(model.train_on_batch(batch, return_dict=True)["loss"]) for _ in range(12)]
    assert losses[-1] < losses[0] - 0.05, losses
    assert {keras.backend.standardize_dtype(v.dtype) for v in model.trainable_variables} == {"float32"}
    assert {keras.backend.standardize_dtype(v.dtype) for v in optimizer._momentums + optimizer._velocities} == {
        "float32"
    }
    predicted = tf_training.Predictor(model, widen=dict, jit_compile=True)(batch)
    assert predicted["logits"].dtype == np.float32
