"""Batch inference beyond one machine: a pipeline over a corpus on Ray Data (``pip install 'distilbert-mf[distributed]'``).

Why Ray Data: it is a Python-native engine that runs the same code on a laptop and on a cluster (``ray start`` on
every machine, or a KubeRay / SLURM-launched cluster), streams a corpus through a pool of long-lived workers that
each load the model once (``map_batches`` with a callable class), reads and writes the columnar formats corpora come
in (Parquet, JSON Lines, CSV), and needs no JVM. Spark would add a JVM and move rows through Arrow to Python workers
for the same result; Beam's portable runners add a job service and the same hop. Ray is an optional extra, not a core
dependency: ``import distilbert_mf`` never imports it.

::

    import ray
    from distilbert_mf.pipelines.distributed import predict_dataset

    ray.init()                                              # or ray.init(address="auto") on a cluster
    corpus = ray.data.read_json("s3://bucket/reviews/")      # a "text" column
    labelled = predict_dataset(corpus, "text-classification", "path/or/hub-id", workers=8, batch_size=64)
    labelled.write_parquet("s3://bucket/labelled/")         # the input columns plus "output" (JSON per row)

Each worker runs ``distilbert_mf.pipeline(task, model, ...)`` on its batches: the outputs are the one-process
pipeline's, row for row (tested: the same batches give bit-identical outputs on 2 workers and in one process).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

__all__ = ["OUTPUT_COLUMN", "PipelinePredictor", "jsonable", "predict_dataset", "predict_texts"]

logger = logging.getLogger(__name__)

OUTPUT_COLUMN = "output"


def _ray() -> Any:
    try:
        import ray
        import ray.data  # the Data library, not only the core
    except ImportError as err:
        raise ImportError(
            f"batch inference on Ray needs Ray Data ({err}); install it with pip install 'distilbert-mf[distributed]'"
        ) from None
    return ray


def jsonable(value: Any) -> Any:
    """A pipeline output as plain JSON types (numpy scalars and arrays become floats, ints and lists)."""
    if isinstance(value, Mapping):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


class PipelinePredictor:
    """The callable class ``map_batches`` runs in each worker: the pipeline is built once per worker, then every
    batch's ``column`` (strings) goes through it; the batch comes back with :data:`OUTPUT_COLUMN`, one JSON text per
    row (any task's output, lossless for float32 scores).

    Args:
        task / model / framework: as :func:`distilbert_mf.pipeline`.
        column: the text column (question answering: a column of ``{"question", "context"}`` JSON texts).
        pipeline_options: more :func:`distilbert_mf.pipeline` keywords (``batch_size``, ``dtype``, ``device`` ...).
        call_options: keywords of every pipeline call (``top_k``, ``aggregation_strategy`` ...).
    """

    def __init__(
        self,
        task: str,
        model: Any,
        *,
        column: str = "text",
        framework: str | None = None,
        pipeline_options: Mapping[str, Any] | None = None,
        call_options: Mapping[str, Any] | None = None,
    ) -> None:
        from distilbert_mf.pipelines import pipeline

        self.task = task
        self.column = column
        self.call_options = dict(call_options or {})
        self.pipe = pipeline(task, model, framework=framework, **dict(pipeline_options or {}))

    def __call__(self, batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        if self.column not in batch:
            raise KeyError(f"the batch has no column {self.column!r}; it has {sorted(batch)} (pass column=...)")
        values = [item.item() if isinstance(item, np.generic) else item for item in batch[self.column]]
        if self.task == "question-answering":
            inputs = [json.loads(v) if isinstance(v, str) else dict(v) for v in values]
        else:
            inputs = [str(v) for v in values]
        outputs = self.pipe(inputs, **self.call_options) if inputs else []
        if len(inputs) == 1 and not (isinstance(outputs, list) and len(outputs) == 1):
            outputs = [outputs]  # a pipeline returns one input's output unwrapped
        texts = np.array([json.dumps(jsonable(output)) for output in outputs], dtype=object)
        return {**dict(batch), OUTPUT_COLUMN: texts}


def predict_dataset(
    dataset: Any,
    task: str,
    model: Any,
    *,
    column: str = "text",
    batch_size: int = 64,
    workers: int = 2,
    cpus_per_worker: float = 1.0,
    gpus_per_worker: float = 0.0,
    framework: str | None = None,
    pipeline_options: Mapping[str, Any] | None = None,
    **call_options: Any,
) -> Any:
    """``dataset`` (a ``ray.data.Dataset`` with a text ``column``) with the pipeline's :data:`OUTPUT_COLUMN` added,
    computed by a pool of ``workers`` Ray actors (each ``cpus_per_worker`` CPUs / ``gpus_per_worker`` GPUs, the model
    loaded once each) on batches of ``batch_size`` rows. Lazy, as Ray datasets are: write or iterate it."""
    ray = _ray()
    for name, value in (("batch_size", batch_size), ("workers", workers)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    options = {"batch_size": batch_size, **dict(pipeline_options or {})}
    return dataset.map_batches(
        PipelinePredictor,
        fn_constructor_args=(task, model),
        fn_constructor_kwargs={
            "column": column,
            "framework": framework,
            "pipeline_options": options,
            "call_options": call_options,
        },
        batch_size=batch_size,
        batch_format="numpy",
        compute=ray.data.ActorPoolStrategy(size=workers),
        num_cpus=cpus_per_worker,
        num_gpus=gpus_per_worker,
    )


def predict_texts(
    texts: Sequence[Any],
    task: str,
    model: Any,
    *,
    batch_size: int = 64,
    workers: int = 2,
    framework: str | None = None,
    pipeline_options: Mapping[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    **call_options: Any,
) -> list[Any]:
    """The pipeline's outputs for ``texts``, in order, computed on the running Ray cluster (``ray.init()`` first)
    by ``workers`` actors over consecutive batches of ``batch_size`` texts (so the batches, and the outputs, are the
    ones ``pipeline(...)(texts[i:i + batch_size])`` gives in one process). ``timings``, when given, receives
    ``seconds``, ``rows_per_second`` and ``rows_per_second_per_worker`` (wall clock of the whole job: starting the
    workers and loading the model in each included). Sets Ray Data's ``preserve_order`` for the process."""
    ray = _ray()
    if not ray.is_initialized():
        raise RuntimeError("no Ray cluster: call ray.init() (or ray.init(address='auto') on a cluster) first")
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    import pyarrow as pa

    column = [json.dumps(t) if task == "question-answering" else str(t) for t in texts]
    # one block per batch: map_batches never joins rows of two blocks, so the batches are texts[i:i + batch_size]
    chunks = [column[i : i + batch_size] for i in range(0, len(column), batch_size)] or [[]]
    dataset = ray.data.from_arrow([pa.table({"text": pa.array(chunk, pa.string())}) for chunk in chunks])
    labelled = predict_dataset(
        dataset, task, model, column="text", batch_size=batch_size, workers=workers, framework=framework,
        pipeline_options=pipeline_options, **call_options,
    )  # fmt: skip
    started = time.perf_counter()
    records = labelled.take_all()
    seconds = time.perf_counter() - started
    if timings is not None:
        timings.update(
            seconds=seconds,
            rows_per_second=len(column) / seconds if seconds > 0 else 0.0,
            rows_per_second_per_worker=len(column) / seconds / workers if seconds > 0 else 0.0,
        )
    logger.info("%d rows through %d Ray workers in %.2f s", len(column), workers, seconds)
    return [json.loads(record[OUTPUT_COLUMN]) for record in records]
