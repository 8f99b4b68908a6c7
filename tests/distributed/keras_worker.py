"""One Keras fine-tuning run (``distilbert_mf.training.trainer.train``, the Keras loop's ``model.fit``) under a
distribution engine, in a process of its own (the backend is chosen by KERAS_BACKEND before Keras is imported).

strategy "single": no engine; "data_parallel" / "model_parallel" (JAX backend, 2 CPU devices from XLA_FLAGS):
keras.distribution set before the model is built, then the whole run. Writes result.json: the logged losses and
gradient norms, the devices, and how the first kernel of the FFN is laid out.

"mirrored" / "mirrored-single" (TensorFlow backend): inference only — tf.distribute.MirroredStrategy over 2 logical
CPU devices (or one), a trained model built in its scope and filled by ``variable.assign``, ``model.predict`` over the
run's global batches.

"tf_train" (TensorFlow backend, 2 logical CPU devices): the same run three times in this process — on one device,
inside a MirroredStrategy's scope over both devices (``with strategy.scope(): train(args)``), and resumed from
``checkpoint-<resume_at>``: the mirrored run's on one device, or (``resume="under the strategy"``) the one-device
run's in the strategy's scope; result.json holds each run's logged losses, gradient norms,
evaluation and seconds. "tf_bad_batch": the run inside the strategy's scope with the batch of ``arguments``, which
the replicas must not divide: result.json holds the error and whether anything was trained.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from pathlib import Path

from dist_common import load_spec, write_result


def main(spec_path: str) -> None:
    logging.basicConfig(level=logging.WARNING)
    spec = load_spec(spec_path)
    strategy = spec["strategy"]
    if strategy in ("tf_train", "tf_bad_batch"):
        _tf_train(spec)
        return
    if strategy == "tf_multi_worker":
        _tf_multi_worker(spec)
        return
    from distilbert_mf.tensorflow import distributed as D

    scope = contextlib.nullcontext()
    if strategy.startswith("mirrored"):
        D.logical_cpu_devices(2)
        engine = D.mirrored_strategy(None if strategy == "mirrored" else ["/device:CPU:0"])
        scope = engine.scope()
        replicas = engine.num_replicas_in_sync
    import keras

    if strategy == "data_parallel":
        keras.distribution.set_distribution(D.data_parallel())
    elif strategy == "model_parallel":
        from distilbert_mf import DistilBertConfig

        config = DistilBertConfig.from_pretrained(spec["arguments"]["model"])
        keras.distribution.set_distribution(D.model_parallel(model=2, config=config))
    if not strategy.startswith("mirrored"):
        replicas = len(keras.distribution.list_devices()) if strategy != "single" else 1
    if strategy.startswith("mirrored"):
        with scope:
            _mirrored(spec, replicas)
        return
    from distilbert_mf.training.trainer import TrainingArguments, train

    began = time.perf_counter()
    with scope:
        output = train(TrainingArguments(**spec["arguments"]))
    seconds = time.perf_counter() - began
    write_result(
        spec, **_logged(output.output_dir), backend=keras.backend.backend(), replicas=replicas, seconds=seconds,
        layout=_layout(strategy, str(output.output_dir)),
    )  # fmt: skip


def _logged(folder: str | Path) -> dict:
    """The per-update losses and gradient norms a run logged (trainer_state.json), and its final evaluation."""
    state = json.loads((Path(folder) / "trainer_state.json").read_text(encoding="utf-8"))
    entries = [entry for entry in state["log_history"] if "loss" in entry]
    evaluation = Path(folder) / "eval_results.json"
    return {
        "losses": [e["loss"] for e in entries],
        "grad_norms": [e["grad_norm"] for e in entries],
        "eval": json.loads(evaluation.read_text(encoding="utf-8")) if evaluation.is_file() else None,
    }


def _tf_train(spec: dict) -> None:
    """The runs of "tf_train" and "tf_bad_batch" (see the module docstring)."""
    from distilbert_mf.tensorflow import distributed as D

    D.logical_cpu_devices(2)
    strategy = D.mirrored_strategy()
    from distilbert_mf.training.trainer import TrainingArguments, train

    out = Path(spec["out"])

    def run(name: str, scope: object = None, **changes: object) -> dict:
        arguments = {**spec["arguments"], "output_dir": str(out / name), **changes}
        began = time.perf_counter()
        with scope if scope is not None else contextlib.nullcontext():
            output = train(TrainingArguments(**arguments))
        return {**_logged(output.output_dir), "seconds": time.perf_counter() - began}

    if spec["strategy"] == "tf_bad_batch":
        try:
            run("run", strategy.scope())
        except ValueError as err:
            folder = out / "run"
            trained = (folder / "trainer_state.json").exists() or any(folder.glob("checkpoint-*"))
            write_result(spec, error=str(err), trained=trained)
            return
        raise AssertionError("a batch the replicas do not divide was accepted")
    runs = {"one": run("one"), "mirrored": run("mirrored", strategy.scope())}
    # the mirrored run's checkpoint resumed on one device, or the one-device run's resumed under the strategy
    written, scope = ("one", strategy.scope()) if spec["resume"] == "under the strategy" else ("mirrored", None)
    resume = out / written / f"checkpoint-{spec['resume_at']}"
    runs["resumed"] = run("resumed", scope, resume_from_checkpoint=str(resume))
    write_result(spec, replicas=strategy.num_replicas_in_sync, devices=strategy.extended.worker_devices, runs=runs)


def _tf_multi_worker(spec: dict) -> None:
    """One worker of a MultiWorkerMirroredStrategy job (TF_CONFIG from the test, one CPU device per worker): the run
    inside the strategy's scope, into ``worker<index>/`` (each worker feeds the whole batches; tf.data gives each
    its half); then worker 0 trains the same run on its own device (outside the scope) into ``one/`` and writes
    result.json. Keras 3.15's ``fit`` fails under this strategy before the first step (docs/scaling.md)."""
    import json as json_module
    import os

    from distilbert_mf.tensorflow import distributed as D

    strategy = D.multi_worker_strategy()
    from distilbert_mf.training.trainer import TrainingArguments, train

    index = json_module.loads(os.environ["TF_CONFIG"])["task"]["index"]
    out = Path(spec["out"])
    runs = {}
    for name, scope in ((f"worker{index}", strategy.scope()), ("one", None)):
        if name == "one" and index != 0:
            break
        began = time.perf_counter()
        with scope if scope is not None else contextlib.nullcontext():
            output = train(TrainingArguments(**{**spec["arguments"], "output_dir": str(out / name)}))
        runs[name] = {**_logged(output.output_dir), "seconds": time.perf_counter() - began}
    if index == 0:
        write_result(spec, replicas=strategy.num_replicas_in_sync, runs=runs)


def _mirrored(spec: dict, replicas: int) -> None:
    """The trained model of ``spec["trained"]`` built in the strategy's scope (filled by ``variable.assign``), its
    logits for the run's first 4 global batches by ``model.predict`` (each batch split across the replicas)."""
    import keras
    import numpy as np

    from distilbert_mf.checkpoint.loading import load_pretrained
    from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification
    from distilbert_mf.tensorflow.loading import canonical_variables
    from distilbert_mf.training.trainer import TrainingArguments, prepare_run

    run = prepare_run(TrainingArguments(**spec["arguments"]))
    config, arrays, _ = load_pretrained(spec["trained"], "sequence_classification")
    model = TFDistilBertForSequenceClassification(config)
    for key, (variable, transposed) in canonical_variables(model).items():
        variable.assign(arrays[key].T if transposed else arrays[key])
    batches = [step.batches[0] for _, step in zip(range(4), run.steps())]
    inputs = {key: np.concatenate([b[key] for b in batches]) for key in ("input_ids", "attention_mask")}
    began = time.perf_counter()
    logits = model.predict(inputs, batch_size=len(batches[0]["input_ids"]), verbose=0)["logits"]
    np.save(Path(spec["out"]) / "logits.npy", logits)
    write_result(spec, losses=[], grad_norms=[], backend=keras.backend.backend(), replicas=replicas,
                 seconds=time.perf_counter() - began, layout=None)  # fmt: skip


def _layout(strategy: str, folder: str) -> str | None:
    """How the JAX backend laid out the first FFN kernel of the trained model, reloaded under the distribution (its
    sharding spec over the ("batch", "model") mesh)."""
    if strategy not in ("data_parallel", "model_parallel"):
        return None
    from distilbert_mf.tensorflow import TFDistilBertForSequenceClassification

    model = TFDistilBertForSequenceClassification.from_pretrained(folder)
    kernel = next(v for v in model.weights if v.path.endswith("layer_0/ffn/lin1/kernel"))
    return str(kernel.value.sharding.spec)


if __name__ == "__main__":
    main(sys.argv[1])
