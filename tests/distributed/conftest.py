"""Fixtures of the distributed tests: the tiny checkpoints and data files they train on (module-wide, written once)."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def masked_lm_run(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> dict[str, object]:
    """A tiny masked-LM checkpoint (dim 32, 4 heads, FFN 38 so that a 2-way model axis splits it, 2 layers, the tied
    projector, the real 1124-token tokenizer) and 96 SST-2 sentences: the common part of a spec (global batch 8,
    20 updates)."""
    from export_checkpoints import tiny_checkpoint
    from training_runs import task_files

    folder = tmp_path_factory.mktemp("dist-data")
    model = tiny_checkpoint(folder / "model-mlm", "masked_lm", shared_data, hidden_dim=38)
    files = task_files(folder / "data-mlm", "masked-lm", shared_data, train_rows=96, eval_rows=4)
    return {"model": str(model), "train_file": files["train_file"], "task": "masked-lm", "global_batch": 8, "steps": 20}
