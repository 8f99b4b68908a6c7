"""The framework-neutral fine-tuning driver (distilbert_mf.training.trainer): arguments, every bad input before the
first step, the shared head initialisation, and the loop bookkeeping driven by a numpy stand-in for a framework."""

from __future__ import annotations

import json
import logging
import os
import re
import signal

import numpy as np
import pytest
from training_helpers import NO_DROPOUT, losses, make_tiny_model, tiny_args, toy_data

from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.frameworks import available_frameworks
from distilbert_mf.training import TrainerState, latest_checkpoint
from distilbert_mf.training.readers import DataError
from distilbert_mf.training.trainer import (
    RUN_FILES,
    TrainingArguments,
    TrainingDivergedError,
    hold_interrupts,
    prepare_run,
)

FRAMEWORK = next(iter(available_frameworks()), None)
needs_framework = pytest.mark.skipif(FRAMEWORK is None, reason="prepare_run checks that the framework is installed")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def sentiment(tmp_path_factory):
    return toy_data(tmp_path_factory.mktemp("data"), "text-classification")


def args_for(model, data, out, task="text-classification", **kwargs):
    return tiny_args(model, data, out, task, framework=FRAMEWORK or "pt", **kwargs)


# -- arguments ---------------------------------------------------------------------------------------------------


BAD_ARGUMENTS = [
    ({"learning_rate": -1.0}, r"learning_rate must be a number >= 0.0 and finite, got -1.0"),
    ({"learning_rate": float("nan")}, r"learning_rate must be .* got nan"),
    ({"per_device_train_batch_size": 0}, r"per_device_train_batch_size must be an integer >= 1, got 0"),
    ({"gradient_accumulation_steps": 1.5}, r"gradient_accumulation_steps must be an integer >= 1, got 1.5"),
    ({"warmup_ratio": 1.5}, r"warmup_ratio must be a number >= 0.0 and <= 1.0, got 1.5"),
    ({"warmup_ratio": 0.1, "warmup_steps": 3}, r"give warmup_steps \(3\) or warmup_ratio \(0.1\), not both"),
    ({"adam_beta2": 1.0}, r"adam_beta2 must be a number >= 0.0 and < 1.0, got 1.0"),
    ({"adam_epsilon": 0.0}, r"adam_epsilon must be a number > 0, got 0.0"),
    (
        {"max_steps": -1, "num_train_epochs": 0},
        r"num_train_epochs must be a positive number when max_steps <= 0, got 0",
    ),
    ({"max_steps": "10"}, r"max_steps must be an integer .* got '10'"),
    ({"seed": -3}, r"seed must be an integer >= 0, got -3"),
    ({"logging_steps": 0}, r"logging_steps must be an integer >= 1, got 0"),
    ({"eval_strategy": "sometimes"}, r"eval_strategy must be one of \['no', 'steps', 'epoch'\], got 'sometimes'"),
    ({"save_strategy": "best"}, r"save_strategy must be one of \['no', 'steps', 'epoch'\], got 'best'"),
    ({"framework": "mxnet"}, r"unknown framework 'mxnet'"),
    ({"task": "summarization"}, r"unknown task 'summarization'"),
    ({"label_names": ("a", "a")}, r"label_names must be distinct class names, got \['a', 'a'\]"),
    ({"label_names": ("a", "b"), "num_labels": 3}, r"num_labels=3 disagrees with the 2 label_names"),
    ({"max_seq_length": 2}, r"max_seq_length must be an integer >= 4 or None, got 2"),
    ({"data_format": "xml"}, r"data_format must be one of \['tsv', 'csv', 'jsonl', 'json', 'conll', 'text'\]"),
    ({"problem_type": "ranking"}, r"problem_type must be one of"),
    ({"doc_stride": -1}, r"doc_stride must be an integer >= 0, got -1"),
    ({"bf16": "yes"}, r"bf16 must be True or False, got 'yes'"),
    ({"resume_from_checkpoint": True, "overwrite_output_dir": True}, r"exclude each other"),
    ({"validation_file": None, "eval_steps": 2}, r"eval_strategy='steps' needs validation_file"),
    ({"device": "cuda", "framework": "flax"}, r"device='cuda' applies to the PyTorch loop"),
    ({"config_overrides": ["dropout=0"]}, r"config_overrides must be a mapping of config field names to values"),
]


@pytest.mark.parametrize(("change", "message"), BAD_ARGUMENTS, ids=[next(iter(c)) for c, _ in BAD_ARGUMENTS])
def test_bad_arguments_name_the_value_and_what_is_allowed(tmp_path, change, message):
    fields = {
        "output_dir": str(tmp_path / "out"),
        "task": "text-classification",
        "model": "m",
        "train_file": "train.tsv",
        "validation_file": "dev.tsv",
        **change,
    }
    with pytest.raises(ValueError, match=message):
        TrainingArguments(**fields)


def test_arguments_normalise_and_default_like_transformers(tmp_path):
    args = TrainingArguments(
        output_dir=tmp_path, task="ner", model="m", train_file=tmp_path / "t.conll", framework="torch"
    )
    assert (args.task, args.framework, args.output_dir) == ("token-classification", "pt", str(tmp_path))
    assert (args.learning_rate, args.num_train_epochs, args.max_grad_norm, args.adam_epsilon) == (5e-5, 3.0, 1.0, 1e-8)
    assert (args.eval_strategy, args.save_strategy, args.save_steps, args.logging_steps) == ("no", "steps", 500, 50)
    assert args.data_options().tags_column == "ner_tags"
    with_eval = TrainingArguments(
        output_dir="o", task="qa", model="m", train_file="t", validation_file="d", eval_steps=7
    )
    assert (with_eval.eval_strategy, with_eval.eval_every) == ("steps", 7)
    json.dumps(args.to_dict())  # JSON-able


# -- bad input: every one an error before the first step -----------------------------------------------------------


def _write(path, text, encoding="utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


BAD_INPUTS = {
    "missing column": (
        lambda d: (_write(d / "t.tsv", "review\tlabel\ngood\tpos\n"), None),
        {},
        r"t\.tsv.*no column 'text', 'sentence' or 'sentence1'|t\.tsv.*'review'",
    ),
    "label outside num_labels": (
        lambda d: (_write(d / "t.tsv", "sentence\tlabel\ngood\t0\nbad\t3\n"), None),
        {"num_labels": 2},
        r"t\.tsv line 3.*label.*3",
    ),
    "label unseen in training": (
        lambda d: (
            _write(d / "t.tsv", "sentence\tlabel\ngood\tpos\nbad\tneg\n"),
            _write(d / "v.tsv", "sentence\tlabel\nso-so\tmixed\n"),
        ),
        {},
        r"v\.tsv line 2.*'mixed' is not among the labels seen in training",
    ),
    "empty file": (lambda d: (_write(d / "t.tsv", ""), None), {}, r"t\.tsv.*empty"),
    "not UTF-8": (
        lambda d: (_write(d / "t.tsv", "sentence\tlabel\ncaf\u00e9\tpos\n", encoding="latin-1"), None),
        {},
        r"t\.tsv line 2.*not UTF-8",
    ),
    "max_seq_length above max_position_embeddings": (
        lambda d: (_write(d / "t.tsv", "sentence\tlabel\ngood\tpos\n"), None),
        {"max_seq_length": 65},
        r"max_seq_length=65 is larger than the model's max_position_embeddings=64",
    ),
    "config_overrides sets the head": (
        lambda d: (_write(d / "t.tsv", "sentence\tlabel\ngood\tpos\n"), None),
        {"config_overrides": {"num_labels": 5}},
        r"config_overrides may not set \['num_labels'\]: the head comes from the data",
    ),
    "config_overrides unknown field": (
        lambda d: (_write(d / "t.tsv", "sentence\tlabel\ngood\tpos\n"), None),
        {"config_overrides": {"dropuot": 0.0}},
        r"config_overrides: unknown DistilBertConfig field 'dropuot'",
    ),
}


@needs_framework
@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_fails_before_the_first_step(tmp_path, model, case):
    make_files, extra, message = BAD_INPUTS[case]
    data = make_files(tmp_path)
    out = tmp_path / "out"
    with pytest.raises((ValueError, DataError), match=message):
        prepare_run(args_for(model, data, out, **extra))
    assert not (out / "trainer_state.json").exists() and latest_checkpoint(out) is None


@needs_framework
def test_output_dir_holding_another_run_is_refused_unless_overwritten(tmp_path, model, sentiment):
    out = tmp_path / "out"
    out.mkdir()
    TrainerState(global_step=9).save(out)  # e.g. a transformers Trainer run
    with pytest.raises(FileExistsError, match=r"already holds a run \(trainer_state\.json\).*--overwrite-output-dir"):
        prepare_run(args_for(model, sentiment, out))
    run = prepare_run(args_for(model, sentiment, out, overwrite_output_dir=True))
    assert run.state.global_step == 0 and not (out / "trainer_state.json").exists()


@needs_framework
def test_missing_framework_names_the_extra(tmp_path, model, sentiment, monkeypatch):
    from distilbert_mf.training import trainer

    monkeypatch.setattr(trainer, "is_available", lambda name: False)
    with pytest.raises(ImportError, match=r"pip install 'distilbert-mf\[(torch|tensorflow|flax)\]'"):
        prepare_run(args_for(model, sentiment, tmp_path / "out"))


# -- the shared start: new head weights drawn once, in numpy -------------------------------------------------------


@needs_framework
def test_new_head_weights_are_seeded_numpy_draws(tmp_path, model, sentiment):
    first = prepare_run(args_for(model, sentiment, tmp_path / "a"))
    again = prepare_run(args_for(model, sentiment, tmp_path / "b"))
    other = prepare_run(args_for(model, sentiment, tmp_path / "c", seed=7))
    assert sorted(first.new_weights) == [
        "classifier.bias",
        "classifier.weight",
        "pre_classifier.bias",
        "pre_classifier.weight",
    ]
    assert first.new_weights["classifier.weight"].shape == (2, 32)
    assert not first.new_weights["classifier.bias"].any()
    std = float(first.new_weights["pre_classifier.weight"].std())
    assert 0.015 < std < 0.025  # normal(0, initializer_range=0.02)
    for key, value in first.new_weights.items():
        np.testing.assert_array_equal(value, again.new_weights[key])
    assert not np.array_equal(first.new_weights["classifier.weight"], other.new_weights["classifier.weight"])
    assert first.config.num_labels == 2 and first.config.id2label == {0: "neg", 1: "pos"}


@needs_framework
def test_a_head_of_another_size_is_redrawn_and_the_encoder_never(tmp_path, sentiment, caplog):
    three = make_tiny_model(tmp_path / "three", head="sequence_classification", num_labels=3)
    with caplog.at_level(logging.WARNING, logger="distilbert_mf.training.trainer"):
        run = prepare_run(args_for(three, sentiment, tmp_path / "out"))
    assert sorted(run.new_weights) == ["classifier.bias", "classifier.weight"]  # pre_classifier keeps its weights
    assert "classifier.weight: checkpoint (3, 32) -> run (2, 32)" in caplog.text
    with pytest.raises(
        ValueError,
        match=r"'distilbert\.embeddings\.position_embeddings\.weight' has shape \(64, 32\) but the run's config needs \(80, 32\)",
    ):
        prepare_run(args_for(three, sentiment, tmp_path / "out2", config_overrides={"max_position_embeddings": 80}))


# -- resume checks -------------------------------------------------------------------------------------------------


class FakeFramework:
    """A numpy stand-in for a framework loop: the 'loss' falls with the step, predict returns fixed logits."""

    def __init__(self, run):
        self.run = run
        self.saved = []

    def save(self, folder):
        self.saved.append(folder.name)
        (folder / "weights.npy").write_bytes(b"x")

    def save_model(self, folder):
        config = self.run.config
        from distilbert_mf.checkpoint.names import expected_shapes

        arrays = {k: np.zeros(s, np.float32) for k, s in expected_shapes(config, self.run.head).items()}
        save_pretrained(folder, config, arrays, self.run.head)

    def predict(self, batch):
        n = len(batch["input_ids"])
        logits = np.tile(np.array([[0.0, 1.0]], np.float32), (n, 1))
        return {"logits": logits, "loss": np.float32(0.5)}

    def fit(self, stop_after=None, extra=False):
        for step in self.run.steps():
            if stop_after is not None and step.global_step > stop_after:
                raise KeyboardInterrupt
            loss = 1.0 / step.global_step + len(step.batches) * 1e-3
            self.run.end_step(
                step,
                loss=loss,
                grad_norm=0.5,
                learning_rate=self.run.schedule(step.global_step - 1),
                save=self.save,
                predict=self.predict,
                extra={"loss_part": loss / 4, "odd": 1.0} if extra and step.global_step % 2 else None,
            )
        return self.run.finish(save_model=self.save_model, predict=self.predict)


@needs_framework
def test_driver_logs_evaluates_and_saves_as_transformers(tmp_path, model, sentiment):
    out = tmp_path / "out"
    run = prepare_run(args_for(model, sentiment, out, max_steps=7, logging_steps=2, eval_steps=3, save_steps=4))
    output = FakeFramework(run).fit()
    history = output.log_history
    train_logs = [e for e in history if "loss" in e]
    assert [e["step"] for e in train_logs] == [2, 4, 6]
    assert set(train_logs[0]) == {"loss", "grad_norm", "learning_rate", "epoch", "step"}
    assert train_logs[0]["loss"] == pytest.approx((1.0 + 0.5) / 2 + 1e-3)  # the mean since the last log
    assert train_logs[0]["learning_rate"] == run.schedule(1)
    evals = [e for e in history if "eval_loss" in e]
    assert [e["step"] for e in evals] == [3, 6, 7]  # every eval_steps and at the end, as transformers
    assert {"eval_loss", "eval_accuracy", "eval_f1", "eval_matthews_correlation", "eval_runtime"} <= set(evals[0])
    assert evals[0]["eval_loss"] == pytest.approx(0.5)
    assert [p.name for p in sorted(out.glob("checkpoint-*"))] == ["checkpoint-4", "checkpoint-7"]  # + the last one
    assert set(history[-1]) >= {"train_runtime", "train_samples_per_second", "train_loss", "total_flos", "step"}
    assert output.training_loss == pytest.approx(np.mean([1.0 / s + 1e-3 for s in range(1, 8)]))
    for name in RUN_FILES:
        assert (out / name).is_file(), name
    assert json.loads((out / "eval_results.json").read_text())["eval_loss"] == pytest.approx(0.5)
    checkpoint = out / "checkpoint-4"
    assert {"weights.npy", "trainer_state.json", "run_state.json", "tokenizer.json", "vocab.txt"} <= {
        p.name for p in checkpoint.iterdir()
    }
    state = TrainerState.load(out)
    assert state.global_step == 7 and state.num_input_tokens_seen > 0 and state.total_flos > 0


@needs_framework
def test_resumed_logs_equal_the_uninterrupted_ones(tmp_path, model, sentiment):
    kwargs = {"max_steps": 9, "logging_steps": 2, "save_steps": 3, "gradient_accumulation_steps": 2}
    whole = FakeFramework(prepare_run(args_for(model, sentiment, tmp_path / "whole", **kwargs))).fit()
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        FakeFramework(prepare_run(args_for(model, sentiment, out, **kwargs))).fit(stop_after=5)
    assert latest_checkpoint(out).name == "checkpoint-3"
    resumed = FakeFramework(prepare_run(args_for(model, sentiment, out, resume_from_checkpoint=True, **kwargs))).fit()
    assert losses(resumed.log_history) == losses(whole.log_history)  # the log at 4 averages updates 3 and 4
    assert resumed.training_loss == whole.training_loss
    assert [e["step"] for e in resumed.log_history if "loss" in e] == [2, 4, 6, 8]


@needs_framework
def test_interrupted_saves_the_last_completed_update(tmp_path, model, sentiment):
    out = tmp_path / "out"
    run = prepare_run(args_for(model, sentiment, out, max_steps=9, save_steps=3))
    fake = FakeFramework(run)
    with pytest.raises(KeyboardInterrupt):
        fake.fit(stop_after=5)
    run.interrupted(fake.save)
    assert fake.saved[-1].startswith(".checkpoint-5")  # written into a temporary folder, renamed when complete
    assert latest_checkpoint(out).name == "checkpoint-5"
    assert run.interrupted(fake.save) == out / "checkpoint-5"  # already saved: nothing written again
    assert len(fake.saved) == 2


@needs_framework
def test_resume_from_another_run_is_refused(tmp_path, model, sentiment):
    out = tmp_path / "out"
    FakeFramework(prepare_run(args_for(model, sentiment, out, max_steps=3, save_steps=3))).fit()
    checkpoint = out / "checkpoint-3"
    ner = toy_data(tmp_path, "token-classification")
    with pytest.raises(ValueError, match=r"comes from another run \(.*task: checkpoint 'text-classification'"):
        prepare_run(args_for(model, ner, tmp_path / "o2", task="ner", resume_from_checkpoint=str(checkpoint)))
    other_model = make_tiny_model(tmp_path / "other", seed=3)
    with pytest.raises(ValueError, match=r"comes from another run .*model: checkpoint"):
        prepare_run(args_for(other_model, sentiment, tmp_path / "o3", resume_from_checkpoint=str(checkpoint)))
    with pytest.raises(ValueError, match=r"cannot resume .* exactly: seed: checkpoint 42, this run 5"):
        prepare_run(args_for(model, sentiment, tmp_path / "o4", seed=5, resume_from_checkpoint=str(checkpoint)))
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint-N folder"):
        prepare_run(args_for(model, sentiment, tmp_path / "empty", resume_from_checkpoint=True))


@needs_framework
def test_a_diverged_loss_stops_the_run(tmp_path, model, sentiment):
    run = prepare_run(args_for(model, sentiment, tmp_path / "out"))
    step = next(iter(run.steps()))
    with pytest.raises(TrainingDivergedError, match=r"update 1: the training loss is nan; training diverged"):
        run.end_step(step, loss=float("nan"), grad_norm=1.0, learning_rate=1e-3, save=None, predict=None)


@needs_framework
def test_limits_and_epoch_strategies(tmp_path, model, sentiment):
    run = prepare_run(
        args_for(
            model,
            sentiment,
            tmp_path / "out",
            max_train_samples=16,
            max_eval_samples=8,
            max_steps=-1,
            num_train_epochs=2,
            eval_strategy="epoch",
            save_strategy="epoch",
        )
    )
    assert (len(run.train_data), len(run.eval_data), run.plan.max_steps) == (16, 8, 4)
    output = FakeFramework(run).fit()
    assert [e["step"] for e in output.log_history if "eval_loss" in e] == [2, 4]
    assert [p.name for p in sorted((tmp_path / "out").glob("checkpoint-*"))] == ["checkpoint-2", "checkpoint-4"]


def test_hold_interrupts_defers_ctrl_c_to_the_end_of_the_block():
    done = []
    with pytest.raises(KeyboardInterrupt):
        with hold_interrupts():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("finished the update")
    assert done == ["finished the update"]
    with pytest.raises(KeyboardInterrupt), hold_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        os.kill(os.getpid(), signal.SIGINT)  # a second Ctrl-C stops at once
        done.append("not reached")
    assert done == ["finished the update"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_no_dropout_overrides_are_config_fields(tiny_config):
    tiny_config.replace(**NO_DROPOUT)


@needs_framework
def test_extra_values_are_averaged_per_log_and_survive_a_resume(tmp_path, model, sentiment):
    kwargs = {"max_steps": 8, "logging_steps": 4, "save_steps": 2}
    whole = FakeFramework(prepare_run(args_for(model, sentiment, tmp_path / "whole", **kwargs))).fit(extra=True)
    logs = [e for e in whole.log_history if "loss" in e]
    assert logs[0]["loss_part"] == pytest.approx((1.0 + 1 / 3) / 4 / 2 + 1e-3 / 4)  # updates 1 and 3 gave it
    assert logs[0]["odd"] == 1.0 and list(logs[0])[:4] == ["loss", "grad_norm", "learning_rate", "loss_part"]
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        FakeFramework(prepare_run(args_for(model, sentiment, out, **kwargs))).fit(stop_after=3, extra=True)
    resumed = FakeFramework(prepare_run(args_for(model, sentiment, out, resume_from_checkpoint=True, **kwargs)))
    again = [e for e in resumed.fit(extra=True).log_history if "loss" in e]
    assert [(e["loss"], e["loss_part"]) for e in again] == [(e["loss"], e["loss_part"]) for e in logs]


@needs_framework
def test_with_masker_masks_the_training_batches(tmp_path, model):
    corpus = toy_data(tmp_path, "masked-lm")
    run = prepare_run(args_for(model, corpus, tmp_path / "out", task="masked-lm"))

    def mask_first(input_ids, attention_mask, rng):
        labels = np.full(input_ids.shape, -100)
        labels[:, 1] = input_ids[:, 1]
        masked = input_ids.copy()
        masked[:, 1] = 4  # [MASK]
        return masked, labels

    run.with_masker(mask_first)
    batch = next(iter(run.steps())).batches[0]
    assert (batch["input_ids"][:, 1] == 4).all() and ((batch["labels"] != -100).sum(axis=1) == 1).all()
    assert run.loader.dataset is run.train_data


@needs_framework
def test_progress_bar_shows_loss_learning_rate_and_throughput(tmp_path, model, sentiment, monkeypatch):
    from distilbert_mf import cli

    bars = []

    class Recorder:
        def __init__(self, total, desc, unit, **kwargs):
            self.total, self.kwargs, self.texts, self.n = total, kwargs, [], 0
            bars.append(self)

        def update(self, n=1):
            self.n += n

        def step(self, text):
            self.texts.append(text)

        def close(self):
            self.closed = True

    monkeypatch.setattr(cli, "Progress", Recorder)
    run = prepare_run(args_for(model, sentiment, tmp_path / "out", max_steps=4, progress=True, save_strategy="no"))
    FakeFramework(run).fit()
    (bar,) = bars
    assert (bar.total, bar.n, bar.kwargs["enabled"], bar.closed) == (4, 4, True, True)
    assert re.fullmatch(r"loss 0\.251, lr 0\.0005, [0-9.]+ seq/s", bar.texts[-1]), bar.texts[-1]
