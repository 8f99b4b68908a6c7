"""distilbert_mf.training.state: transformers' trainer_state.json layout, atomic checkpoints, run-folder checks."""

from __future__ import annotations

import json

import pytest

from distilbert_mf import DistilBertConfig
from distilbert_mf.training import (
    DataPosition,
    RunState,
    TrainerState,
    check_output_dir,
    check_resume,
    latest_checkpoint,
    load_checkpoint,
    plot_history,
    resolve_resume,
    run_fingerprint,
    save_checkpoint,
    sorted_checkpoints,
    write_eval_results,
)

TINY = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2)


def fingerprint(**changes):
    base = {
        "task": "text-classification",
        "model": "tiny",
        "config": TINY,
        "label_names": ["neg", "pos"],
        "framework": "pt",
    }
    base.update(changes)
    return run_fingerprint(**base)


def run_state(position=None, **changes):
    position = position or DataPosition(0, 4)
    fields = {"fingerprint": fingerprint(), "seed": 42, "position": position, "global_batch_size": 8, "num_rows": 100}
    fields.update(changes)
    return RunState(**fields)


def state_at(step, epoch=0.5):
    state = TrainerState(max_steps=20, num_train_epochs=2, train_batch_size=8, logging_steps=1)
    state.global_step, state.epoch = step, epoch
    return state


def write_weights(folder):
    (folder / "model.safetensors").write_bytes(b"weights")
    (folder / "optimizer.pt").write_bytes(b"optimizer")


def test_log_history_layout_and_best_metric(tmp_path):
    state = state_at(10, 0.25)
    state.log_training(loss=0.7, learning_rate=1e-5, grad_norm=2.5)
    state.log_evaluation({"accuracy": 0.8, "loss": 0.5})
    assert state.log_history == [
        {"loss": 0.7, "grad_norm": 2.5, "learning_rate": 1e-5, "epoch": 0.25, "step": 10},
        {"eval_accuracy": 0.8, "eval_loss": 0.5, "epoch": 0.25, "step": 10},
    ]
    assert state.update_best({"eval_accuracy": 0.8}, "accuracy") and state.best_metric == 0.8
    state.global_step = 20
    assert not state.update_best({"eval_accuracy": 0.7}, "accuracy") and state.best_global_step == 10
    assert state.update_best({"eval_loss": 0.1}, "loss") is True  # a loss: lower is better (fresh best)
    with pytest.raises(KeyError, match=r"eval_f1"):
        state.update_best({"eval_accuracy": 1.0}, "f1")
    path = state.save(tmp_path)
    data = json.loads(path.read_text())
    assert list(data) == sorted(data) and data["global_step"] == 20
    assert TrainerState.load(tmp_path) == state


def test_trainer_state_loads_in_transformers(tmp_path):
    pytest.importorskip("torch")
    trainer_callback = pytest.importorskip("transformers.trainer_callback")
    state = state_at(3)
    state.log_training(loss=1.0, learning_rate=2e-5, grad_norm=0.5)
    state.save(tmp_path)
    theirs = trainer_callback.TrainerState.load_from_json(str(tmp_path / "trainer_state.json"))
    assert theirs.global_step == 3 and theirs.log_history == state.log_history and theirs.max_steps == 20
    theirs.save_to_json(str(tmp_path / "theirs.json"))
    assert TrainerState.load(tmp_path / "theirs.json") == state
    import dataclasses

    assert [f.name for f in dataclasses.fields(TrainerState)] == [f.name for f in dataclasses.fields(theirs)]


def test_checkpoint_is_complete_or_absent(tmp_path):
    path = save_checkpoint(tmp_path, state=state_at(5), run_state=run_state(), write_files=write_weights)
    assert path == tmp_path / "checkpoint-5"
    assert sorted(p.name for p in path.iterdir()) == [
        "model.safetensors",
        "optimizer.pt",
        "run_state.json",
        "trainer_state.json",
    ]

    def interrupted(folder):
        (folder / "model.safetensors").write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(tmp_path, state=state_at(10), run_state=run_state(), write_files=interrupted)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]  # no half checkpoint, no temp folder
    assert latest_checkpoint(tmp_path) == path
    state, restored = load_checkpoint(path)
    assert state.global_step == 5 and restored == run_state()
    # a leftover folder from a killed process (no rename happened) is ignored, then cleaned at the next save
    (tmp_path / ".checkpoint-7.abc").mkdir()
    (tmp_path / "checkpoint-9").mkdir()  # not ours / incomplete
    assert latest_checkpoint(tmp_path) == path
    save_checkpoint(tmp_path, state=state_at(6), run_state=run_state(), write_files=write_weights)
    assert not (tmp_path / ".checkpoint-7.abc").exists()
    assert [p.name for p in sorted_checkpoints(tmp_path)] == ["checkpoint-5", "checkpoint-6"]


def test_same_step_saved_again_replaces_it(tmp_path):
    save_checkpoint(tmp_path, state=state_at(5), run_state=run_state(), write_files=write_weights)

    def other(folder):
        (folder / "model.safetensors").write_bytes(b"new")

    path = save_checkpoint(tmp_path, state=state_at(5), run_state=run_state(), write_files=other)
    assert (path / "model.safetensors").read_bytes() == b"new" and not (path / "optimizer.pt").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-5"]


def test_rotation_keeps_newest_and_best(tmp_path):
    for step in (2, 4, 6, 8):
        state = state_at(step)
        if step == 4:
            state.best_metric, state.best_global_step = 0.9, 4
        save_checkpoint(tmp_path, state=state, run_state=run_state(), write_files=write_weights)
    state = state_at(10)
    state.best_model_checkpoint = str(tmp_path / "checkpoint-4")
    save_checkpoint(tmp_path, state=state, run_state=run_state(), write_files=write_weights, save_total_limit=2)
    assert [p.name for p in sorted_checkpoints(tmp_path)] == ["checkpoint-4", "checkpoint-10"]
    assert json.loads((tmp_path / "checkpoint-4" / "trainer_state.json").read_text())["best_model_checkpoint"] == str(
        tmp_path / "checkpoint-4"
    )


def test_output_dir_holding_a_run_is_refused(tmp_path):
    out = tmp_path / "run"
    check_output_dir(out, fingerprint())  # fresh: fine, writes run.json
    assert json.loads((out / "run.json").read_text())["task"] == "text-classification"
    check_output_dir(out, fingerprint())  # the same run restarted before it saved anything
    with pytest.raises(FileExistsError, match=r"already holds a run \(run.json\)"):
        check_output_dir(out, fingerprint(model="other"))
    save_checkpoint(out, state=state_at(5), run_state=run_state(), write_files=write_weights)
    with pytest.raises(FileExistsError, match=r"already holds a run .*checkpoint-5.*--overwrite-output-dir"):
        check_output_dir(out, fingerprint())
    check_output_dir(out, fingerprint(), resuming=True)  # the same run, resumed
    with pytest.raises(
        FileExistsError, match=r"holds another run .*task: folder 'text-classification', this run 'ner'"
    ):
        check_output_dir(out, fingerprint(task="ner"), resuming=True)
    (out / "notes.txt").write_text("keep me")
    check_output_dir(out, fingerprint(task="ner"), overwrite_output_dir=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt", "run.json"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(NotADirectoryError):
        check_output_dir(tmp_path / "file", fingerprint())


def test_resume_checks(tmp_path):
    path = save_checkpoint(tmp_path, state=state_at(5), run_state=run_state(), write_files=write_weights)
    data = {"seed": 42, "global_batch_size": 8, "gradient_accumulation_steps": 1, "num_rows": 100}
    state, restored = check_resume(path, fingerprint(), **data)
    assert restored.position == DataPosition(0, 4) and state.global_step == 5
    with pytest.raises(ValueError, match=r"comes from another run .*model: checkpoint 'tiny', this run 'other'"):
        check_resume(path, fingerprint(model="other"), **data)
    with pytest.raises(ValueError, match=r"config_sha256"):
        check_resume(path, fingerprint(config=TINY.replace(n_layers=3)), **data)
    with pytest.raises(ValueError, match=r"cannot resume .* seed: checkpoint 42, this run 1"):
        check_resume(path, fingerprint(), **{**data, "seed": 1})
    assert resolve_resume(True, tmp_path) == path and resolve_resume(tmp_path, tmp_path) == path
    assert resolve_resume(None, tmp_path) is None
    with pytest.raises(FileNotFoundError, match=r"does not exist"):
        resolve_resume(tmp_path / "absent", tmp_path)
    (tmp_path / "checkpoint-9").mkdir()
    with pytest.raises(FileNotFoundError, match=r"not a complete checkpoint: it lacks trainer_state.json"):
        resolve_resume(tmp_path / "checkpoint-9", tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no complete checkpoint-N"):
        resolve_resume(True, tmp_path / "empty")


def test_fingerprint_ignores_bookkeeping_fields():
    written = DistilBertConfig.from_dict({**TINY.to_dict(), "architectures": ["DistilBertForMaskedLM"]})
    a = fingerprint(config=written)
    assert a["config_sha256"] == fingerprint()["config_sha256"]
    assert fingerprint(max_seq_length=128)["max_seq_length"] == 128


def test_eval_results_and_plot(tmp_path):
    path = write_eval_results(tmp_path, {"accuracy": 0.9, "eval_loss": 0.3})
    assert json.loads(path.read_text()) == {"eval_accuracy": 0.9, "eval_loss": 0.3}
    pytest.importorskip("matplotlib")
    state = state_at(0)
    for step in range(1, 11):
        state.global_step = step
        state.log_training(loss=1.0 / step, learning_rate=1e-4 * step / 10, grad_norm=1.0)
        if step % 5 == 0:
            state.log_evaluation({"loss": 0.5 / step, "accuracy": 0.5 + step / 40})
    png = plot_history(state.log_history, tmp_path / "training_curves.png", title="tiny")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 5000
    with pytest.raises(ValueError, match=r"no 'loss'"):
        plot_history([{"step": 1, "epoch": 0.1}], tmp_path / "empty.png")
