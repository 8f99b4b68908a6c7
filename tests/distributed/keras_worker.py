"""One Keras fine-tuning run (``distilbert_mf.training.trainer.train``, the Keras loop's ``model.fit``) under a
distribution engine, in a process of its own (the backend is chosen by KERAS_BACKEND before Keras is imported).

strategy "single": no engine; "data_parallel" / "model_parallel" (JAX backend, 2 CPU devices from XLA_FLAGS):
keras.distribution set before the model is built, then the whole run. Writes result.json: the logged losses and
gradient norms, the devices, and how the first kernel of the FFN is laid out.

"mirrored" / "mirrored-single" (TensorFlow backend): inference only — tf.distribute.MirroredStrategy over 2 logical
CPU devices (or one), a trained model built in its scope and filled by ``variable.assign``, ``model.predict`` over the
run's global batches (the training loop does not run under a tf.distribute strategy yet: /work/notes/requests.md).
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
    state = json.loads((Path(output.output_dir) / "trainer_state.json").read_text(encoding="utf-8"))
    entries = [entry for entry in state["log_history"] if "loss" in entry]
    write_result(
        spec, losses=[e["loss"] for e in entries], grad_norms=[e["grad_norm"] for e in entries],
        backend=keras.backend.backend(), replicas=replicas, seconds=seconds, layout=_layout(strategy, str(output.output_dir)),
    )  # fmt: skip


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
