"""The PyTorch fine-tuning loop (distilbert_mf.torch.training) end to end on tiny models.

- every task head learns its toy problem in a few dozen updates;
- per-step losses, gradient norms and learning rates equal a plain transformers 5.24 loop (transformers' model,
  its decay rule and linear schedule, torch AdamW, clip_grad_norm_) bit for bit, with and without accumulation, in
  float32 and bf16 autocast (transformers' Trainer itself needs accelerate, which the venv does not have);
- the output folder loads in our three frameworks and in transformers; trainer_state.json has transformers' layout;
- a resumed run (dropout on) equals the uninterrupted one exactly; Ctrl-C (an exception from a hook, and a real
  SIGINT held to the end of the update) leaves a complete checkpoint that resumes exactly;
- the optimizer / RNG state is safetensors + JSON, no pickle.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from safetensors.numpy import load_file  # noqa: E402
from training_helpers import NO_DROPOUT, TASKS, losses, make_tiny_model, tiny_args, toy_data  # noqa: E402

from distilbert_mf import AutoTokenizer  # noqa: E402
from distilbert_mf.frameworks import is_available  # noqa: E402
from distilbert_mf.torch import (  # noqa: E402
    DistilBertForSequenceClassification,
    DistilBertForTokenClassification,
)
from distilbert_mf.torch import training as pt_training  # noqa: E402
from distilbert_mf.training import TrainerState, latest_checkpoint  # noqa: E402
from distilbert_mf.training.trainer import prepare_run, train  # noqa: E402

pytestmark = pytest.mark.torch

LEARNS = {  # task -> (metric, at least) after 30 updates at lr 5e-3
    "text-classification": ("eval_accuracy", 0.9),
    "token-classification": ("eval_f1", 0.9),
    "question-answering": ("eval_exact_match", 90.0),
    "masked-lm": ("eval_accuracy", 0.6),
    "multiple-choice": ("eval_accuracy", 0.9),
}


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """One intra-op thread: tiny models run far faster on a busy 2-core machine (both sides of every comparison run
    in this process with the same setting)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    return tmp_path_factory.mktemp("torch_training")


@pytest.fixture(scope="module")
def base(root):
    return make_tiny_model(root / "base")


@pytest.fixture(scope="module")
def trained(root, base):
    """Finished 30-update runs of text and token classification: their output folders."""
    outputs = {}
    for task in ("text-classification", "token-classification"):
        data = toy_data(root / "data", task)
        args = tiny_args(base, data, root / f"run-{task}", task, max_steps=30, learning_rate=5e-3, save_steps=10)
        outputs[task] = train(args)
    return outputs


@pytest.mark.parametrize("task", TASKS)
def test_every_head_learns_its_toy_task(root, base, task, trained):
    if task in trained:
        output = trained[task]
    else:
        data = toy_data(root / "data", task)
        args = tiny_args(base, data, root / f"learn-{task}", task, max_steps=30, learning_rate=5e-3, save_strategy="no")
        output = train(args)
    curve = losses(output.log_history)
    assert len(curve) == 30 and all(np.isfinite(curve))
    assert np.mean(curve[-3:]) < 0.7 * np.mean(curve[:3]), curve
    metric, least = LEARNS[task]
    assert output.eval_metrics[metric] >= least, output.eval_metrics


# -- against transformers ------------------------------------------------------------------------------------------


def _transformers_loop(model_dir, step_batches, *, lr, weight_decay, warmup, total, max_grad_norm, bf16):
    """transformers' model with the Trainer's own decay rule and schedule, torch AdamW and clip_grad_norm_."""
    transformers = pytest.importorskip("transformers")

    model = transformers.AutoModelForSequenceClassification.from_pretrained(
        model_dir, dropout=0.0, attention_dropout=0.0, seq_classif_dropout=0.0
    )
    model.train()
    decay = set(transformers.Trainer.get_decay_parameter_names(None, model))
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if n in decay], "weight_decay": weight_decay},
        {"params": [p for n, p in named if n not in decay], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=lr)
    scheduler = transformers.get_linear_schedule_with_warmup(optimizer, warmup, total)
    logs = []
    for batches in step_batches:
        step_losses = []
        for batch in batches:
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                loss = model(**{k: torch.from_numpy(v) for k, v in batch.items()}).loss
            (loss / len(batches)).backward()
            step_losses.append(loss.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), max_grad_norm)
        learning_rate = scheduler.get_last_lr()[0]
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        mean = step_losses[0] if len(step_losses) == 1 else torch.stack(step_losses).float().mean()
        logs.append((float(mean), float(grad_norm), learning_rate))
    return logs


@pytest.mark.reference
@pytest.mark.parametrize(("accumulation", "bf16"), [(1, False), (3, False), (1, True)])
def test_losses_equal_a_transformers_loop_bit_for_bit(tmp_path, accumulation, bf16):
    model = make_tiny_model(
        tmp_path / "model",
        head="sequence_classification",
        num_labels=2,
        id2label={0: "neg", 1: "pos"},
        label2id={"neg": 0, "pos": 1},
    )
    data = toy_data(tmp_path, "text-classification", n_train=96)
    args = tiny_args(
        model,
        (data[0], None),
        tmp_path / "ours",
        "text-classification",
        max_steps=36,
        weight_decay=0.01,
        warmup_steps=3,
        max_grad_norm=0.5,  # clipping active
        gradient_accumulation_steps=accumulation,
        bf16=bf16,
        save_strategy="no",
    )
    run = prepare_run(args)
    assert run.new_weights == {}  # the checkpoint's head: both sides start from the same weights
    step_batches = [step.batches for step in run.steps()]
    assert len(step_batches) == run.plan.max_steps and run.plan.max_steps > run.plan.update_steps_per_epoch  # 2+ epochs
    ours = pt_training.fit(prepare_run(dataclasses.replace(args, overwrite_output_dir=True)))
    theirs = _transformers_loop(
        model,
        step_batches,
        lr=args.learning_rate,
        weight_decay=0.01,
        warmup=3,
        total=run.plan.max_steps,
        max_grad_norm=0.5,
        bf16=bf16,
    )
    mine = [(e["loss"], e["grad_norm"], e["learning_rate"]) for e in ours.log_history if "loss" in e]
    assert mine == theirs
    assert theirs[-1][0] < 0.8 * theirs[0][0]  # it trained


# -- the output folder ---------------------------------------------------------------------------------------------


def _batch(folder, texts, **kwargs):
    tok = AutoTokenizer.from_pretrained(folder)
    return tok(texts, padding=True, return_tensors="np", **kwargs)


def test_output_folder_loads_in_every_framework_and_transformers(trained):
    out = trained["text-classification"].output_dir
    for name in ("config.json", "model.safetensors", "tokenizer.json", "vocab.txt", "tokenizer_config.json"):
        assert (out / name).is_file(), name
    texts = ["good great day", "awful sad and poor", "a"]
    enc = _batch(out, texts)
    ours = DistilBertForSequenceClassification.from_pretrained(out)
    assert ours.config.id2label == {0: "neg", 1: "pos"} and ours.config.num_labels == 2
    reference = ours(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.detach().numpy()
    assert (reference.argmax(-1) == [1, 0, reference.argmax(-1)[2]]).all()
    if is_available("tf"):
        from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification

        tf_logits = TFDistilBertForSequenceClassification.from_pretrained(out)(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).logits
        np.testing.assert_allclose(np.asarray(tf_logits), reference, atol=1e-5)
    if is_available("flax"):
        from distilbert_mf.flax import FlaxDistilBertForSequenceClassification

        flax_logits = FlaxDistilBertForSequenceClassification.from_pretrained(out)(
            input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]
        ).logits
        np.testing.assert_allclose(np.asarray(flax_logits), reference, atol=1e-5)
    transformers = pytest.importorskip("transformers")
    hf_tok = transformers.AutoTokenizer.from_pretrained(out)
    hf_enc = hf_tok(texts, padding=True, return_tensors="pt")
    np.testing.assert_array_equal(hf_enc["input_ids"].numpy(), enc["input_ids"])
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(out)
    assert hf.config.id2label == {0: "neg", 1: "pos"}
    with torch.no_grad():
        hf_logits = hf(**hf_enc).logits.numpy()
    np.testing.assert_allclose(hf_logits, reference, atol=1e-5)


def test_token_classification_folder_and_checkpoints_load(trained):
    out = trained["token-classification"].output_dir
    enc = _batch(out, [["alice", "met", "bob"]], is_split_into_words=True)
    ours = DistilBertForTokenClassification.from_pretrained(out)
    logits = ours(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).logits.detach().numpy()
    tags = [ours.config.id2label[int(i)] for i in logits[0].argmax(-1)[1:4]]
    assert tags == ["B-PER", "O", "B-PER"]
    checkpoint = out / "checkpoint-20"
    again = DistilBertForTokenClassification.from_pretrained(checkpoint)  # a checkpoint is a model folder too
    assert again.config.id2label == ours.config.id2label
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForTokenClassification.from_pretrained(out)
    with torch.no_grad():
        hf_logits = hf(
            input_ids=torch.from_numpy(enc["input_ids"]), attention_mask=torch.from_numpy(enc["attention_mask"])
        ).logits
    np.testing.assert_allclose(hf_logits.numpy(), logits, atol=1e-5)


def test_trainer_state_has_transformers_layout(trained):
    out = trained["text-classification"].output_dir
    data = json.loads((out / "trainer_state.json").read_text())
    history = data["log_history"]
    train_logs = [e for e in history if "loss" in e]
    eval_logs = [e for e in history if "eval_loss" in e]
    assert {frozenset(e) for e in train_logs} == {frozenset({"loss", "grad_norm", "learning_rate", "epoch", "step"})}
    assert [e["step"] for e in train_logs] == list(range(1, 31))
    assert set(eval_logs[-1]) == {
        "eval_loss",
        "eval_accuracy",
        "eval_f1",
        "eval_matthews_correlation",
        "eval_runtime",
        "eval_samples_per_second",
        "eval_steps_per_second",
        "epoch",
        "step",
    }
    assert set(history[-1]) == {
        "train_runtime",
        "train_samples_per_second",
        "train_steps_per_second",
        "total_flos",
        "train_loss",
        "epoch",
        "step",
    }
    assert data["global_step"] == 30 and data["max_steps"] == 30 and data["epoch"] == pytest.approx(5.0)
    assert json.loads((out / "eval_results.json").read_text())["eval_accuracy"] == eval_logs[-1]["eval_accuracy"]
    transformers = pytest.importorskip("transformers")
    state = transformers.TrainerState.load_from_json(str(out / "trainer_state.json"))
    assert state.global_step == 30 and state.log_history == history
    assert (out / "training_curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- resume, Ctrl-C, the training state -------------------------------------------------------------------------------


def _run_args(base, data, out, **kwargs):
    fields = {"max_steps": 6, "save_steps": 3, "config_overrides": {}, "learning_rate": 5e-3}  # dropout on: RNG matters
    fields.update(kwargs)
    return tiny_args(base, data, out, "text-classification", **fields)


def _trajectory(output):
    return [(e["loss"], e["grad_norm"], e["learning_rate"], e["epoch"]) for e in output.log_history if "loss" in e]


def _weights(folder):
    return load_file(Path(folder) / "model.safetensors")


def _assert_same_weights(a, b):
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        np.testing.assert_array_equal(wa[key], wb[key], err_msg=key)


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resume_gives_the_identical_trajectory(root, base, tmp_path, accumulation):
    data = toy_data(root / "data", "text-classification")
    whole = train(_run_args(base, data, tmp_path / "whole", gradient_accumulation_steps=accumulation))
    torch.manual_seed(1234)  # the resumed run must restore the RNG from the checkpoint
    checkpoint = tmp_path / "whole" / "checkpoint-3"  # saved by the uninterrupted run on its way
    resumed = train(
        _run_args(
            base,
            data,
            tmp_path / "resumed",
            gradient_accumulation_steps=accumulation,
            resume_from_checkpoint=str(checkpoint),
        )
    )
    assert resumed.global_step == 6
    assert len(_trajectory(whole)) == 6
    assert _trajectory(resumed) == _trajectory(whole)  # 1..3 from the checkpoint's state, 4..6 run again: equal
    _assert_same_weights(resumed.output_dir, whole.output_dir)
    assert resumed.eval_metrics["eval_loss"] == whole.eval_metrics["eval_loss"]


class _Interrupt:
    """Wraps the model's forward: after training call ``at`` (its dropout drawn) either raises KeyboardInterrupt (a
    hook's exception) or sends this process a real SIGINT."""

    def __init__(self, monkeypatch, at, *, real_signal=False):
        self.calls = 0
        self.at = at
        self.real_signal = real_signal
        original = DistilBertForSequenceClassification.forward

        def forward(model, *args, **kwargs):
            out = original(model, *args, **kwargs)  # dropout has drawn from the RNG by now
            if model.training:
                self.calls += 1
                if self.calls == self.at:
                    if not self.real_signal:
                        raise KeyboardInterrupt
                    os.kill(os.getpid(), signal.SIGINT)
            return out

        monkeypatch.setattr(DistilBertForSequenceClassification, "forward", forward)


@pytest.mark.parametrize("real_signal", [False, True], ids=["exception-from-a-hook", "real-sigint"])
def test_ctrl_c_leaves_a_complete_checkpoint_that_resumes_exactly(root, base, tmp_path, monkeypatch, real_signal):
    data = toy_data(root / "data", "text-classification")
    whole = train(_run_args(base, data, tmp_path / "whole", max_steps=7, save_steps=3))
    out = tmp_path / "cut"
    interrupt = _Interrupt(monkeypatch, at=5, real_signal=real_signal)
    with pytest.raises(KeyboardInterrupt):
        train(_run_args(base, data, out, max_steps=7, save_steps=3))
    monkeypatch.undo()
    # a hook's exception stops inside update 5 (4 done); a real Ctrl-C is held until update 5 is done
    done = 5 if real_signal else 4
    checkpoint = latest_checkpoint(out)
    assert checkpoint.name == f"checkpoint-{done}" and interrupt.calls == 5
    assert not list(out.glob(".checkpoint-*"))  # no half-written folder left
    assert TrainerState.load(checkpoint).global_step == done
    files = {p.name for p in checkpoint.iterdir()}
    assert {"model.safetensors", "config.json", "torch_training_state.safetensors", "run_state.json"} <= files
    DistilBertForSequenceClassification.from_pretrained(checkpoint)
    torch.manual_seed(1234)  # the resumed run must restore the RNG from the checkpoint, not inherit this process's
    resumed = train(_run_args(base, data, out, max_steps=7, save_steps=3, resume_from_checkpoint=True))
    assert _trajectory(resumed)[done:] == _trajectory(whole)[done:]
    _assert_same_weights(resumed.output_dir, whole.output_dir)


def test_training_state_is_safetensors_and_json_without_pickle(trained, base, tmp_path):
    checkpoint = trained["text-classification"].output_dir / "checkpoint-10"
    names = {p.name for p in checkpoint.iterdir()}
    assert not {n for n in names if n.endswith((".bin", ".pt", ".pth", ".pkl", ".ckpt"))}
    tensors = load_file(checkpoint / pt_training.STATE_FILE)  # plain safetensors: numpy reads it
    assert "rng/cpu" in tensors and tensors["rng/cpu"].dtype == np.uint8
    word = "distilbert.embeddings.word_embeddings.weight"
    assert tensors[f"optimizer/{word}/exp_avg"].shape == (len(AutoTokenizer.from_pretrained(base)), 32)
    assert float(tensors[f"optimizer/{word}/step"]) == 10.0
    meta = json.loads((checkpoint / pt_training.STATE_META_FILE).read_text())
    decayed, not_decayed = (set(g["names"]) for g in meta["param_groups"])
    assert word in decayed and "classifier.weight" in decayed
    assert {n for n in not_decayed} == {
        n for n in decayed | not_decayed if n.endswith(".bias") or "layer_norm" in n or "LayerNorm" in n
    }
    assert [g["weight_decay"] for g in meta["param_groups"]] == [0.0, 0.0]  # weight_decay=0 in this run
    # another head's optimizer does not take it
    other = prepare_run(
        tiny_args(base, toy_data(tmp_path, "token-classification"), tmp_path / "o", "token-classification")
    )
    model = pt_training.load_model(other, torch.device("cpu"))
    optimizer = pt_training.create_optimizer(model, other)
    with pytest.raises(KeyError, match=r"the optimizer state does not fit this model"):
        pt_training.load_training_state(checkpoint, model, optimizer)


def test_parameter_groups_follow_the_decay_rule(base, root):
    run = prepare_run(
        tiny_args(base, toy_data(root / "data", "masked-lm"), root / "groups", "masked-lm", weight_decay=0.1)
    )
    model = pt_training.load_model(run, torch.device("cpu"))
    decay, no_decay = pt_training.parameter_groups(model, run)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert "vocab_projector.weight" not in decay["names"] + no_decay["names"]  # tied: the word embeddings, once
    assert "distilbert.embeddings.word_embeddings.weight" in decay["names"]
    assert "vocab_layer_norm.weight" in no_decay["names"] and "vocab_projector.bias" in no_decay["names"]
    assert all(n.endswith("bias") or "norm" in n.lower() for n in no_decay["names"])
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert set(decay["names"]) | set(no_decay["names"]) == trainable


def test_new_head_is_the_neutral_draw(base, root):
    run = prepare_run(tiny_args(base, toy_data(root / "data", "question-answering"), root / "qa-init", "qa"))
    model = pt_training.load_model(run, torch.device("cpu"))
    for key, value in run.new_weights.items():
        np.testing.assert_array_equal(model.state_dict()[key].numpy(), value)
    assert sorted(run.new_weights) == ["qa_outputs.bias", "qa_outputs.weight"]


def test_no_dropout_overrides_reach_the_model(base, root):
    run = prepare_run(
        tiny_args(base, toy_data(root / "data", "text-classification"), root / "nodrop", "text-classification")
    )
    model = pt_training.load_model(run, torch.device("cpu"))
    assert {k: getattr(model.config, k) for k in NO_DROPOUT} == NO_DROPOUT and model.training
