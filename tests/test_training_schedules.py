"""distilbert_mf.training.schedules: training length, linear warm-up / decay and the weight-decay rule,
checked against transformers 5.24 (its functions called directly) where it is installed."""

from __future__ import annotations

import math
from types import SimpleNamespace

import numpy as np
import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint import ARCHITECTURES, HEADS, expected_shapes
from distilbert_mf.training import (
    LinearSchedule,
    TrainingPlan,
    linear_schedule,
    no_weight_decay,
    warmup_steps_for,
    weight_decay_mask,
)

TINY = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2)


def test_linear_schedule_by_hand():
    values = [linear_schedule(s, warmup_steps=4, total_steps=10) for s in range(12)]
    assert values == pytest.approx([0, 0.25, 0.5, 0.75, 1, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0, 0])
    assert linear_schedule(0, warmup_steps=0, total_steps=5) == 1.0
    schedule = LinearSchedule(2e-5, warmup_steps=2, total_steps=4)
    assert schedule.table().tolist() == pytest.approx([0, 1e-5, 2e-5, 1e-5, 0])
    assert schedule(1) == pytest.approx(1e-5)


def test_plan_by_hand():
    plan = TrainingPlan(batches_per_epoch=10, num_train_epochs=3, gradient_accumulation_steps=4)
    assert (plan.update_steps_per_epoch, plan.max_steps, plan.epochs) == (3, 9, 3)
    assert TrainingPlan(batches_per_epoch=10, num_train_epochs=0.5).max_steps == 5
    capped = TrainingPlan(batches_per_epoch=10, max_steps=25, gradient_accumulation_steps=2)
    assert (capped.max_steps, capped.epochs) == (25, 5)
    assert capped.position_of(12).to_dict() == {"epoch": 2, "batch_index": 4}
    assert plan.warmup_steps(warmup_ratio=0.1) == 1  # ceil(0.9)
    assert plan.schedule(1e-3, warmup_steps=3).warmup_steps == 3
    with pytest.raises(ValueError, match=r"num_train_epochs must be a positive number"):
        TrainingPlan(batches_per_epoch=10, num_train_epochs=0)
    with pytest.raises(ValueError, match=r"gradient_accumulation_steps must be an integer >= 1"):
        TrainingPlan(batches_per_epoch=10, gradient_accumulation_steps=0)
    with pytest.raises(ValueError, match=r"not both"):
        warmup_steps_for(100, warmup_ratio=0.1, warmup_steps=5)
    with pytest.raises(ValueError, match=r"warmup_ratio must be a number in \[0, 1\]"):
        warmup_steps_for(100, warmup_ratio=1.5)


def test_no_weight_decay_by_hand():
    assert no_weight_decay("distilbert.transformer.layer.0.attention.q_lin.bias")
    assert no_weight_decay("distilbert.transformer.layer.3.sa_layer_norm.weight")
    assert no_weight_decay("embeddings.LayerNorm.weight")
    assert no_weight_decay("vocab_layer_norm.weight")
    assert not no_weight_decay("distilbert.transformer.layer.0.ffn.lin1.weight")
    assert not no_weight_decay("distilbert.embeddings.word_embeddings.weight")
    assert not no_weight_decay("classifier.weight")
    mask = weight_decay_mask(expected_shapes(TINY, "sequence_classification"))
    assert sum(mask.values()) == 2 + 2 * 6 + 2  # embeddings, 6 matrices per layer, pre_classifier + classifier
    with pytest.raises(TypeError, match=r"must be a str"):
        no_weight_decay(3)


# -- against transformers 5.24 -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def transformers_mod():
    pytest.importorskip("torch")
    return pytest.importorskip("transformers")


@pytest.mark.reference
@pytest.mark.torch
def test_linear_schedule_equals_transformers(transformers_mod):
    from transformers.optimization import _get_linear_schedule_with_warmup_lr_lambda as reference

    for warmup, total in [(0, 10), (3, 10), (10, 10), (7, 100), (1, 1)]:
        ours = np.array([linear_schedule(s, warmup_steps=warmup, total_steps=total) for s in range(total + 3)])
        theirs = np.array([reference(s, num_warmup_steps=warmup, num_training_steps=total) for s in range(total + 3)])
        np.testing.assert_array_equal(ours, theirs)


@pytest.mark.reference
@pytest.mark.torch
def test_warmup_ratio_rounds_up_like_transformers(transformers_mod):
    from transformers import TrainingArguments

    for total, ratio in [(101, 0.06), (1000, 0.1), (7, 0.5), (3, 0.01), (50, 0.0)]:
        expected = TrainingArguments.get_warmup_steps(SimpleNamespace(warmup_steps=ratio), total)
        assert warmup_steps_for(total, warmup_ratio=ratio) == expected
        assert warmup_steps_for(total, warmup_ratio=ratio) == math.ceil(total * ratio)


@pytest.mark.reference
@pytest.mark.torch
def test_plan_equals_trainer_initial_values(transformers_mod):
    from transformers.trainer import Trainer

    for batches, epochs, max_steps, accumulation in [(10, 3, -1, 4), (10, 0.5, -1, 1), (10, 3, 25, 2), (7, 2.5, -1, 3)]:
        args = SimpleNamespace(
            max_steps=max_steps, num_train_epochs=epochs, gradient_accumulation_steps=accumulation, world_size=1
        )
        fake = SimpleNamespace(
            get_total_train_batch_size=lambda a: 8, get_sp_size=lambda: 1, num_examples=lambda d: 8 * len(d)
        )
        loader = [None] * batches
        epochs_ref, per_epoch_ref, *_, max_steps_ref = Trainer.set_initial_training_values(fake, args, loader)
        plan = TrainingPlan(
            batches, num_train_epochs=epochs, max_steps=max_steps, gradient_accumulation_steps=accumulation
        )
        assert (plan.epochs, plan.update_steps_per_epoch, plan.max_steps) == (epochs_ref, per_epoch_ref, max_steps_ref)


@pytest.mark.reference
@pytest.mark.torch
@pytest.mark.parametrize("head", [h for h in HEADS if h != "base"] + ["base"])
def test_no_weight_decay_equals_trainer(transformers_mod, head):
    import transformers
    from transformers.trainer import Trainer

    config = transformers.DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, num_labels=2)
    model = getattr(transformers, ARCHITECTURES[head])(config)
    decayed = set(Trainer.get_decay_parameter_names(None, model))
    # named_parameters() lists a tied weight once; the Trainer's walk over the modules lists the projector too
    names = {name for name, _ in model.named_parameters()} | decayed
    assert set(names) <= set(expected_shapes(TINY.replace(num_labels=2), head))  # canonical names = their keys
    assert {n for n in names if not no_weight_decay(n)} == decayed
