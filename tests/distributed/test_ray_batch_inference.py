"""A pipeline over a corpus on Ray Data: a local cluster, 2 workers (actors), the outputs of one process exactly.

The tiny sequence classifier (real tokenizer) labels 96 SST-2 sentences through
``distilbert_mf.pipelines.distributed.predict_texts`` (batches of 16, 2 workers) and through
``pipeline(...)`` in this process over the same batches: the JSON outputs are equal, row for row (labels and
float32 scores bit for bit). The run's throughput per worker is logged (a warning, shown by pytest) for the report.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

ray = pytest.importorskip("ray", reason="Ray Data is the optional extra 'distributed'")
pytest.importorskip("ray.data")

pytestmark = [pytest.mark.torch, pytest.mark.distributed, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_two_ray_workers_label_as_one_process(tmp_path: Path, shared_data: Path, cluster) -> None:
    from export_checkpoints import tiny_checkpoint

    from distilbert_mf import pipeline
    from distilbert_mf.pipelines.distributed import jsonable, predict_texts

    model = str(tiny_checkpoint(tmp_path / "model", "sequence_classification", shared_data, num_labels=2))
    lines = (shared_data / "glue_sst2" / "dev.tsv").read_text(encoding="utf-8").splitlines()[1:97]
    texts = [line.rsplit("\t", 1)[0] for line in lines]
    timings: dict[str, float] = {}
    distributed = predict_texts(texts, "text-classification", model, batch_size=16, workers=2, framework="pt",
                                timings=timings)  # fmt: skip
    pipe = pipeline("text-classification", model, framework="pt", batch_size=16)
    one = [json.loads(json.dumps(jsonable(out))) for i in range(0, len(texts), 16) for out in pipe(texts[i : i + 16])]
    assert len(distributed) == len(texts) == 96
    assert distributed == one  # order kept, every label and score equal
    assert {out["label"] for out in one} <= {"LABEL_0", "LABEL_1"}
    logging.getLogger(__name__).warning(
        "ray x2: %.1f rows/s, %.1f per worker", timings["rows_per_second"], timings["rows_per_second_per_worker"]
    )


def test_bad_arguments_are_clear(cluster) -> None:
    from distilbert_mf.pipelines.distributed import predict_dataset

    dataset = ray.data.from_items([{"text": "a"}])
    with pytest.raises(ValueError, match="workers must be a positive integer, got 0"):
        predict_dataset(dataset, "text-classification", "unused", workers=0)
