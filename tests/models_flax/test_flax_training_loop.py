"""The Flax fine-tuning step (distilbert_mf.flax.training) against PyTorch's AdamW, and its training state.

Same weights, same batches, dropout 0: the per-step losses of our nnx.jit step under the optax chain follow
``torch.optim.AdamW`` + ``clip_grad_norm_`` on our PyTorch model within 1e-5 relative over 50 steps (weight decay,
warm-up and clipping active), with and without gradient accumulation.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("optax")

import jax
import jax.numpy as jnp
from flax import nnx
from flax_helpers import tiny
from safetensors.numpy import load_file
from training_runs import TASKS, random_batch, realistic_weights, run_arguments, stand_in_run, torch_trajectory

from distilbert_mf.flax import (
    FlaxDistilBertForSequenceClassification,
    FlaxDistilBertForTokenClassification,
)
from distilbert_mf.flax import training as flax_training
from distilbert_mf.flax.loading import canonical_key
from distilbert_mf.training.batching import widen_batch
from distilbert_mf.training.schedules import no_weight_decay

pytestmark = pytest.mark.flax

NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}
STEPS = 50
# attention.k_lin.bias has a zero gradient in exact arithmetic (adding a constant to every key's score leaves the
# softmax unchanged), so Adam's m / sqrt(v) turns its float rounding noise into full learning-rate steps of random
# sign: it random-walks in every framework (and has no effect on any output). Every other weight is held to this:
WEIGHT_ATOL = 1e-5
NOISE_ONLY = ".attention.k_lin.bias"


@pytest.mark.slow
@pytest.mark.parametrize("accumulation", [1, 3])
def test_steps_follow_torch_adamw(accumulation):
    pytest.importorskip("torch")
    config = tiny(**NO_DROPOUT)
    head = "sequence_classification"
    weights = realistic_weights(config, head)
    run = stand_in_run()
    rng = np.random.default_rng(accumulation)
    steps = [[random_batch(rng, config) for _ in range(accumulation)] for _ in range(STEPS)]

    model = FlaxDistilBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    model.load_canonical_state_dict(weights)
    optimizer = flax_training.create_optimizer(model, run)
    step = flax_training.TrainStep(model, optimizer, pad_token_id=config.pad_token_id)
    results = [step(batches) for batches in steps]
    losses, norms = np.asarray([r[0] for r in results]), np.asarray([r[1] for r in results])

    ref_losses, ref_norms, ref_state = torch_trajectory(config, weights, steps, run)
    clipped = int(np.sum(ref_norms > run.args.max_grad_norm))
    assert 0 < clipped < STEPS, ref_norms  # clipping is active, and not on every step
    assert abs(ref_losses[-1] - ref_losses[0]) > 1e-2  # the trajectory moves
    np.testing.assert_allclose(losses, ref_losses, rtol=1e-5)
    np.testing.assert_allclose(norms, ref_norms, rtol=1e-5)
    assert int(np.asarray(optimizer.step.get_value())) == STEPS
    state = model.canonical_state_dict()
    for key, value in state.items():
        if not key.endswith(NOISE_ONLY):
            np.testing.assert_allclose(value, ref_state[key], atol=WEIGHT_ATOL, err_msg=key)


def test_decay_mask_schedule_and_update_rule():
    """A zero-gradient update only decays: decayed weights shrink by (1 - lr * wd), biases and LayerNorm stay;
    the optax schedule equals run.schedule at every update."""
    config = tiny(**NO_DROPOUT)
    run = stand_in_run(learning_rate=0.1, weight_decay=0.5, warmup_steps=3, total_steps=10)
    model = FlaxDistilBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    optimizer = flax_training.create_optimizer(model, run)

    schedule = flax_training.learning_rate_schedule(run.schedule)
    values = np.asarray([schedule(jnp.asarray(s)) for s in range(12)])
    np.testing.assert_allclose(values, [run.schedule(s) for s in range(12)], rtol=1e-7, atol=0)

    mask = flax_training.decay_mask(run.decays)(nnx.as_pure(nnx.state(model, nnx.Param)))
    names = {
        canonical_key(tuple(p.key for p in path))[0]: bool(v) for path, v in jax.tree_util.tree_leaves_with_path(mask)
    }
    assert names["distilbert.transformer.layer.0.attention.q_lin.weight"] is True
    assert names["distilbert.embeddings.word_embeddings.weight"] is True
    assert names["distilbert.transformer.layer.1.ffn.lin2.bias"] is False
    assert names["distilbert.transformer.layer.0.sa_layer_norm.weight"] is False
    assert names["distilbert.embeddings.LayerNorm.weight"] is False
    assert sum(names.values()) == sum(1 for n in names if not no_weight_decay(n))

    before = model.canonical_state_dict()
    for _ in range(2):  # update 0 has lr 0 (warm-up), update 1 has lr 0.1 / 3
        zeros = jax.tree.map(jnp.zeros_like, nnx.state(model, nnx.Param))
        flax_training.apply_step(model, optimizer, zeros)
    after = model.canonical_state_dict()
    factor = 1 - run.schedule(1) * run.args.weight_decay
    for key, value in after.items():
        expected = before[key] * factor if not no_weight_decay(key) else before[key]
        np.testing.assert_allclose(value, expected, rtol=1e-6, err_msg=key)


def test_bias_correction_is_pytorchs():
    """1 - b**t as PyTorch computes it (Python floats), to float32 rounding; optax's float32 power is 2e-5 off for
    b2 = 0.999, enough to move 200-update trajectories 1e-4 apart. And one update from a constant gradient moves
    every weight by exactly lr * g / (|g| + eps) (m_hat = g, v_hat = g**2)."""
    counts = np.arange(1, 2001)
    for decay in (0.9, 0.98, 0.999, 0.9999):
        exact = 1.0 - decay ** counts.astype(np.float64)
        ours = np.asarray(flax_training.bias_correction(decay, jnp.asarray(counts, jnp.int32)), np.float64)
        np.testing.assert_allclose(ours, exact, rtol=4e-7, err_msg=str(decay))
    plain = np.asarray(1 - jnp.float32(0.999) ** jnp.asarray(counts[:10], jnp.int32), np.float64)
    assert np.abs(plain / (1.0 - 0.999 ** counts[:10]) - 1).max() > 1e-5  # what this replaces
    assert float(flax_training.bias_correction(0.0, jnp.asarray(3))) == 1.0

    config = tiny(**NO_DROPOUT)
    run = stand_in_run(learning_rate=0.01, weight_decay=0.0, warmup_steps=0, total_steps=10, max_grad_norm=None)
    model = FlaxDistilBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    optimizer = flax_training.create_optimizer(model, run)
    before = model.canonical_state_dict()
    grads = jax.tree.map(lambda p: jnp.full_like(p, 0.003), nnx.state(model, nnx.Param))
    flax_training.apply_step(model, optimizer, grads)
    step = 0.01 * 0.003 / (0.003 + 1e-8)
    for key, value in model.canonical_state_dict().items():
        if key != "distilbert.embeddings.position_embeddings.weight" or not config.sinusoidal_pos_embds:
            np.testing.assert_allclose(before[key] - value, step, rtol=2e-4, atol=0, err_msg=key)


def test_widened_batches_give_the_same_loss_and_outputs():
    """Rounding a batch's width up to a multiple of 8 (pad tokens, mask 0, labels -100) changes no number beyond
    float rounding, and predictions come back at the batch's own width."""
    config = tiny(**NO_DROPOUT)
    rng = np.random.default_rng(0)
    batch = random_batch(rng, config, widths=(11,), token_labels=True)
    model = FlaxDistilBertForTokenClassification(config, rngs=nnx.Rngs(0))
    model.load_canonical_state_dict(realistic_weights(config, "token_classification"))
    optimizer = flax_training.create_optimizer(model, stand_in_run())
    plain = flax_training.TrainStep(model, optimizer, pad_token_id=config.pad_token_id)
    widened = flax_training.TrainStep(
        model, optimizer, pad_token_id=config.pad_token_id, width_multiple=8, token_level_labels=True, max_width=64
    )
    wide = widened.device_batch(batch)
    assert wide["input_ids"].shape == (4, 16) and int(wide["attention_mask"][:, 11:].sum()) == 0
    assert (np.asarray(wide["labels"][:, 11:]) == -100).all()
    a, b = plain.predict(batch), widened.predict(batch)
    assert a["logits"].shape == b["logits"].shape == (4, 11, config.num_labels)
    np.testing.assert_allclose(b["logits"], a["logits"], atol=1e-5)
    np.testing.assert_allclose(b["loss"], a["loss"], rtol=1e-6)
    # never past the position table
    capped = widen_batch(
        random_batch(rng, config, widths=(62,)), 8, pad_token_id=0, token_level_labels=False, max_width=64
    )
    assert capped["input_ids"].shape[1] == 64


def _train_with_dropout(model, run, steps):
    optimizer = flax_training.create_optimizer(model, run)
    step = flax_training.TrainStep(model, optimizer, pad_token_id=model.config.pad_token_id)
    return optimizer, [step(batches)[0] for batches in steps]


def test_resume_from_saved_state_gives_the_same_trajectory(tmp_path):
    """6 updates with dropout on == 3 updates, save, a fresh model + optimizer loaded from the folder, 3 more."""
    config = tiny(dropout=0.2, attention_dropout=0.1)
    rng = np.random.default_rng(0)
    steps = [[random_batch(rng, config, widths=(8,))] for _ in range(6)]
    run = stand_in_run(total_steps=6, warmup_steps=2)
    initial = FlaxDistilBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    initial.load_canonical_state_dict(realistic_weights(config, "sequence_classification"))
    initial.save_pretrained(tmp_path / "initial")

    def fresh():  # every model loaded the same way has the same graph: the steps compile once
        model = FlaxDistilBertForSequenceClassification.from_pretrained(tmp_path / "initial", rngs=nnx.Rngs(7))
        model.train()
        return model

    _, straight = _train_with_dropout(fresh(), run, steps)

    model = fresh()
    optimizer, first = _train_with_dropout(model, run, steps[:3])
    flax_training.save_training_state(tmp_path / "checkpoint-3", model, optimizer)
    assert first == straight[:3]
    checkpoint = tmp_path / "checkpoint-3"
    meta = json.loads((checkpoint / flax_training.STATE_META_FILE).read_text())
    assert meta["optimizer_step"] == 3 and meta["framework"] == "flax"
    assert sorted(p.name for p in checkpoint.iterdir()) == sorted(
        ["config.json", "model.safetensors", flax_training.STATE_FILE, flax_training.STATE_META_FILE]
    )

    resumed = FlaxDistilBertForSequenceClassification.from_pretrained(checkpoint, rngs=nnx.Rngs(123))
    resumed.train()
    optimizer = flax_training.create_optimizer(resumed, run)
    flax_training.load_training_state(checkpoint, resumed, optimizer)
    assert int(np.asarray(optimizer.step.get_value())) == 3
    step = flax_training.TrainStep(resumed, optimizer, pad_token_id=config.pad_token_id)
    rest = [step(batches)[0] for batches in steps[3:]]
    assert rest == straight[3:]  # bit for bit: same weights, moments, counts and dropout streams

    # without the RNG state the dropout masks differ: the test above can fail
    other = FlaxDistilBertForSequenceClassification.from_pretrained(checkpoint, rngs=nnx.Rngs(123))
    other.train()
    optimizer = flax_training.create_optimizer(other, run)
    arrays = load_file(checkpoint / flax_training.STATE_FILE)
    flax_training._fill(nnx.state(optimizer, nnx.OptState), "optimizer", arrays, {}, checkpoint)
    step = flax_training.TrainStep(other, optimizer, pad_token_id=config.pad_token_id)
    assert [step(batches)[0] for batches in steps[3:]] != straight[3:]


def test_training_state_refuses_another_model(tmp_path):
    config = tiny(**NO_DROPOUT)
    model = FlaxDistilBertForSequenceClassification(config, rngs=nnx.Rngs(0))
    optimizer = flax_training.create_optimizer(model, stand_in_run())
    with pytest.raises(FileNotFoundError, match="no Flax training state"):
        flax_training.load_training_state(tmp_path, model, optimizer)
    flax_training.save_training_state(tmp_path, model, optimizer)

    other = FlaxDistilBertForTokenClassification(config, rngs=nnx.Rngs(0))
    with pytest.raises(KeyError, match="does not fit"):
        flax_training.load_training_state(tmp_path, other, flax_training.create_optimizer(other, stand_in_run()))
    bigger = FlaxDistilBertForSequenceClassification(config.replace(num_labels=5), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"classifier/bias is float32\[3\]"):
        flax_training.load_training_state(tmp_path, bigger, flax_training.create_optimizer(bigger, stand_in_run()))


def test_bfloat16_compute_keeps_float32_parameters():
    config = tiny(**NO_DROPOUT)
    weights = realistic_weights(config, "sequence_classification")
    model = FlaxDistilBertForSequenceClassification(
        config, rngs=nnx.Rngs(0), dtype=jnp.bfloat16, param_dtype=jnp.float32
    )
    model.load_canonical_state_dict(weights)
    optimizer = flax_training.create_optimizer(model, stand_in_run(learning_rate=3e-3, total_steps=20))
    step = flax_training.TrainStep(model, optimizer, pad_token_id=0)
    rng = np.random.default_rng(0)
    batch = random_batch(rng, config, widths=(8,))
    losses = [step([batch])[0] for _ in range(20)]
    assert losses[-1] < losses[0] - 0.1, losses
    for _, variable in nnx.to_flat_state(nnx.state(model, nnx.Param)):
        assert variable.get_value().dtype == jnp.float32
    for _, variable in nnx.to_flat_state(nnx.state(optimizer, nnx.OptState)):
        assert variable.get_value().dtype in (jnp.float32, jnp.int32, jnp.uint32)
    assert step.predict(batch)["logits"].dtype == np.float32


# ----------------------------------------------------------------------------------------------------------------------
# fit: train(TrainingArguments(..., framework="flax")) end to end on tiny runs of every task
# ----------------------------------------------------------------------------------------------------------------------


def _losses(history):
    return [entry["loss"] for entry in history if "loss" in entry and "eval_loss" not in entry]


def _outputs_in(framework, folder, head, config, inputs):
    from distilbert_mf.frameworks import model_class
    from distilbert_mf.parity import run_framework

    model = model_class(framework, head).from_pretrained(folder)
    out = run_framework(framework, model, inputs, output_hidden_states=False, output_attentions=False)
    return {k: v for k, v in out.items() if k in ("logits", "start_logits", "end_logits")}


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_train_every_task_and_load_the_model_in_every_framework(task, tmp_path, shared_data):
    from distilbert_mf.config import DistilBertConfig
    from distilbert_mf.parity import make_inputs
    from distilbert_mf.training.data import TASK_HEADS
    from distilbert_mf.training.trainer import TrainingArguments, train

    args = TrainingArguments(**run_arguments(tmp_path, task, shared_data, "flax"))
    out = train(args)
    output = Path(args.output_dir)
    assert out.global_step == 6
    losses = _losses(out.log_history)
    assert len(losses) == 6 and all(np.isfinite(losses))
    logged = [e for e in out.log_history if "learning_rate" in e]
    assert [e["learning_rate"] for e in logged] == [0.0, 5e-4, 1e-3, 7.5e-4, 5e-4, 2.5e-4]  # update s: schedule(s)
    assert all(e["grad_norm"] > 0 for e in logged)
    assert out.eval_metrics and np.isfinite(out.eval_metrics["eval_loss"])
    for step in (3, 6):
        checkpoint = output / f"checkpoint-{step}"
        assert (checkpoint / flax_training.STATE_FILE).is_file() and (checkpoint / "tokenizer.json").is_file()
        assert json.loads((checkpoint / flax_training.STATE_META_FILE).read_text())["optimizer_step"] == step
    for name in ("config.json", "model.safetensors", "tokenizer.json", "trainer_state.json", "eval_results.json"):
        assert (output / name).is_file(), name

    # the folder loads in every framework, with the same outputs
    head = TASK_HEADS[args.task]
    config = DistilBertConfig.from_pretrained(output)
    inputs = make_inputs(config, ["a first sentence", "and a second, longer one here"], head)
    results = {"flax": _outputs_in("flax", output, head, config, inputs)}
    for framework, module in (("pt", "torch"), ("tf", "tensorflow")):
        if importlib.util.find_spec(module) is not None:
            results[framework] = _outputs_in(framework, output, head, config, inputs)
    assert len(results) == 3, f"torch and tensorflow are needed here, found {sorted(results)}"
    for framework, outputs in results.items():
        for key, value in outputs.items():
            np.testing.assert_allclose(value, results["flax"][key], atol=1e-5, err_msg=f"{framework} {key}")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory, shared_data):
    """6 updates of 2 micro-batches each with dropout on, checkpoints at 3 and 6: the reference trajectory."""
    from distilbert_mf.training.trainer import TrainingArguments, train

    tmp = tmp_path_factory.mktemp("straight")
    kwargs = run_arguments(tmp, "text-classification", shared_data, "flax", dropout=True, gradient_accumulation_steps=2)
    return tmp, kwargs, train(TrainingArguments(**kwargs))


@pytest.mark.slow
def test_resume_from_checkpoint_follows_the_uninterrupted_run(straight_run, tmp_path):
    from distilbert_mf.training.trainer import TrainingArguments, train

    _, kwargs, straight = straight_run
    checkpoint = Path(kwargs["output_dir"]) / "checkpoint-3"
    resumed = train(
        TrainingArguments(
            **{**kwargs, "output_dir": str(tmp_path / "resumed"), "resume_from_checkpoint": str(checkpoint)}
        )
    )
    assert _losses(resumed.log_history) == _losses(straight.log_history)  # steps 1-3 from the checkpoint's history
    assert resumed.training_loss == straight.training_loss
    a = load_file(Path(kwargs["output_dir"]) / "model.safetensors")
    b = load_file(tmp_path / "resumed" / "model.safetensors")
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_interrupt_in_the_middle_of_an_update_saves_the_last_complete_one(straight_run, tmp_path, monkeypatch):
    """Ctrl-C after the micro-batches of update 3 drew their dropout masks but before the optimizer applied them:
    checkpoint-2 holds update 2 exactly, and resuming from it gives the uninterrupted trajectory."""
    from distilbert_mf.training.trainer import TrainingArguments, train

    _, kwargs, straight = straight_run
    calls = []
    real_init = flax_training.TrainStep.__init__

    def init_with_an_interrupt(self, *args, **kwargs):
        real_init(self, *args, **kwargs)
        apply = self._apply

        def interrupted_apply(grads):
            calls.append(1)
            if len(calls) == 3:  # update 3: both micro-batches done, nothing applied
                raise KeyboardInterrupt
            return apply(grads)

        self._apply = interrupted_apply

    monkeypatch.setattr(flax_training.TrainStep, "__init__", init_with_an_interrupt)
    output = tmp_path / "interrupted"
    args = {**kwargs, "output_dir": str(output), "save_steps": 100}
    with pytest.raises(KeyboardInterrupt):
        train(TrainingArguments(**args))
    assert sorted(p.name for p in output.glob("checkpoint-*")) == ["checkpoint-2"]
    monkeypatch.undo()
    resumed = train(TrainingArguments(**{**args, "resume_from_checkpoint": True}))
    assert _losses(resumed.log_history) == _losses(straight.log_history)
