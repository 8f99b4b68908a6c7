"""Framework-neutral training infrastructure (numpy only): data, batches, schedules, metrics, run folders.

The three training loops (PyTorch, Keras, Flax) share everything here and write only their update step::

    from distilbert_mf import DistilBertConfig, DistilBertTokenizerFast
    from distilbert_mf.training import (BatchLoader, DataOptions, Evaluator, RunState, TrainerState, check_output_dir,
        iter_steps, no_weight_decay, plot_history, prepare_dataset, run_fingerprint, save_checkpoint,
        write_eval_results)

    tok = DistilBertTokenizerFast.from_pretrained(model_dir)
    config = DistilBertConfig.from_pretrained(model_dir)
    options = DataOptions(text_column="sentence", label_column="label")
    train = prepare_dataset("text-classification", "train.tsv", tok, options=options, config=config)
    dev = prepare_dataset("text-classification", "dev.tsv", tok, options=options, config=config, labels_from=train)
    # build the model with config.replace(**train.config_overrides()); decay only names where not no_weight_decay(name)

    loader = BatchLoader(train, batch_size=32, seed=42, pad_to_multiple_of=8)   # world_size=, rank= to shard
    plan = loader.plan(num_train_epochs=3, gradient_accumulation_steps=1)       # or max_steps=
    schedule = plan.schedule(5e-5, warmup_ratio=0.06)                           # schedule(s): lr of update s
    fingerprint = run_fingerprint(task="text-classification", model=model_dir, config=config,
                                  label_names=train.label_names, framework="pt")
    check_output_dir(out, fingerprint, overwrite_output_dir=False)
    state = TrainerState(max_steps=plan.max_steps, num_train_epochs=plan.epochs, train_batch_size=32)

    for step in iter_steps(loader, plan):          # resume: start=run_state.position, global_step=state.global_step
        lr = schedule(step.global_step - 1)
        for batch in step.batches:                 # {"input_ids", "attention_mask", "labels"}: numpy int64
            ...                                    # forward / backward (loss / len(step.batches))
        ...                                        # clip to max_grad_norm, optimizer update with lr
        state.global_step, state.epoch = step.global_step, step.epoch_progress
        state.log_training(loss=loss, learning_rate=lr, grad_norm=grad_norm)
        run_state = RunState(fingerprint, seed=42, position=step.position, global_batch_size=32,
                             num_rows=len(train))
        save_checkpoint(out, state=state, run_state=run_state, write_files=save_model_optimizer_rng)

    evaluator = Evaluator(dev)
    for batch in BatchLoader(dev, batch_size=64, shuffle=False):
        evaluator.add(logits=np.asarray(model(**batch).logits))   # eval_loss from the same outputs
    metrics = evaluator.compute()                  # {"accuracy", "f1", "matthews_correlation"}
    state.log_evaluation(metrics | {"loss": eval_loss}); write_eval_results(out, metrics)
    state.save(out); plot_history(state.log_history, out / "training_curves.png")

Modules: :mod:`.readers` (files -> records), :mod:`.data` (records -> tokenized task rows), :mod:`.batching`
(seeded batches, resumable positions, data-parallel shards, accumulation steps), :mod:`.masking` (masked LM),
:mod:`.schedules`, :mod:`.metrics`, :mod:`.evaluation` (predictions -> metrics), :mod:`.state` (trainer state,
checkpoints, run folder), :mod:`.plot`.
"""

from __future__ import annotations

from distilbert_mf.training.batching import TOKEN_LEVEL_TASKS, BatchLoader, DataPosition, Step, iter_steps, widen_batch
from distilbert_mf.training.data import (
    TASK_HEADS,
    TASKS,
    DataOptions,
    QuestionAnsweringFeatures,
    TaskDataset,
    canonical_task,
    prepare_dataset,
    select_records,
    split_records,
)
from distilbert_mf.training.evaluation import Evaluator, question_answering_predictions
from distilbert_mf.training.masking import IGNORE_INDEX, BertMasker, Masker
from distilbert_mf.training.plot import plot_history
from distilbert_mf.training.readers import FORMATS, DataError, Records, read_records
from distilbert_mf.training.schedules import (
    LinearSchedule,
    TrainingPlan,
    linear_schedule,
    no_weight_decay,
    warmup_steps_for,
    weight_decay_mask,
)
from distilbert_mf.training.state import (
    CHECKPOINT_PREFIX,
    EVAL_RESULTS_NAME,
    PLOT_NAME,
    RUN_STATE_NAME,
    TRAINER_STATE_NAME,
    RunState,
    TrainerState,
    check_output_dir,
    check_resume,
    latest_checkpoint,
    load_checkpoint,
    resolve_resume,
    rotate_checkpoints,
    run_fingerprint,
    save_checkpoint,
    sorted_checkpoints,
    write_eval_results,
)

__all__ = [
    "CHECKPOINT_PREFIX",
    "EVAL_RESULTS_NAME",
    "FORMATS",
    "IGNORE_INDEX",
    "PLOT_NAME",
    "RUN_STATE_NAME",
    "TASKS",
    "TASK_HEADS",
    "TOKEN_LEVEL_TASKS",
    "TRAINER_STATE_NAME",
    "BatchLoader",
    "BertMasker",
    "DataError",
    "DataOptions",
    "DataPosition",
    "Evaluator",
    "LinearSchedule",
    "Masker",
    "QuestionAnsweringFeatures",
    "Records",
    "RunState",
    "Step",
    "TaskDataset",
    "TrainerState",
    "TrainingPlan",
    "canonical_task",
    "check_output_dir",
    "check_resume",
    "iter_steps",
    "latest_checkpoint",
    "linear_schedule",
    "load_checkpoint",
    "no_weight_decay",
    "plot_history",
    "prepare_dataset",
    "question_answering_predictions",
    "read_records",
    "resolve_resume",
    "rotate_checkpoints",
    "run_fingerprint",
    "save_checkpoint",
    "select_records",
    "sorted_checkpoints",
    "split_records",
    "warmup_steps_for",
    "weight_decay_mask",
    "widen_batch",
    "write_eval_results",
]
