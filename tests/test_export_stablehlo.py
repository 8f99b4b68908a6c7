"""StableHLO through jax.export: symbolic (batch, sequence), one file, deserialised and run by jax alone."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from export_checkpoints import tiny_checkpoint

from distilbert_mf.export import export

pytestmark = pytest.mark.flax

# a process with jax only: deserialise, run two shapes, and a sequence past the constraint
STANDALONE = """
import sys
import numpy as np
import jax
exported = jax.export.deserialize(bytearray(open(sys.argv[1], "rb").read()))
print([str(a) for a in exported.in_avals], list(exported.platforms))
for shape in ((1, 3), (5, 64)):
    out = exported.call(np.ones(shape, np.int32), np.ones(shape, np.int32))
    print(sorted(out), [tuple(v.shape) for v in out.values()])
try:
    exported.call(np.ones((1, 65), np.int32), np.ones((1, 65), np.int32))
except Exception as err:
    print("too long:", type(err).__name__)
print([m for m in sys.modules if m.startswith(("distilbert_mf", "flax"))])
"""


def test_stablehlo_runs_with_jax_alone(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "question_answering", shared_data)
    result = export(checkpoint, tmp_path / "out", format="stablehlo")
    assert result.verification.passed and result.verification.standalone
    assert result.artifact == tmp_path / "out" / "model.jax_export"
    done = subprocess.run(
        [sys.executable, "-I", "-c", STANDALONE, str(result.artifact)], capture_output=True, text=True, check=True
    )
    lines = done.stdout.strip().splitlines()
    assert lines[0] == (
        "['int32[batch_size,sequence_length]', 'int32[batch_size,sequence_length]'] ['cpu', 'cuda', 'tpu']"
    )
    assert lines[1] == "['end_logits', 'start_logits'] [(1, 3), (1, 3)]"
    assert lines[2] == "['end_logits', 'start_logits'] [(5, 64), (5, 64)]"
    assert lines[3].startswith("too long:")  # sequence_length <= max_position_embeddings (64)
    assert lines[4] == "[]"
    metadata = json.loads((tmp_path / "out" / "export.json").read_text())
    assert metadata["writer"]["platforms"] == ["cpu", "cuda", "tpu"]
    assert metadata["inputs"]["input_ids"]["dtype"] == "int32"


def test_stablehlo_multiple_choice_bfloat16(tmp_path: Path, shared_data: Path) -> None:
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "multiple_choice", shared_data)
    result = export(checkpoint, tmp_path / "out", format="stablehlo", dtype="bfloat16")
    assert result.verification.passed and result.dtype == "bfloat16"
    process = result.verification.details["runtime_process"]
    assert process["in_avals"] == ["int32[batch_size,num_choices,sequence_length]"] * 2


def test_cpu_kernels_step_aside_for_symbolic_shapes(
    tmp_path: Path, shared_data: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With both CPU kernels switched on (the feed-forward blocked past 8 tokens), a concrete trace holds their
    ``lax.map`` loops, the symbolic export holds none (the plain math) and still verifies."""
    import jax
    import numpy as np

    from distilbert_mf.flax import FlaxDistilBertForSequenceClassification, cpu_kernels

    monkeypatch.setattr(cpu_kernels, "FFN_ROWS_ON_CPU", 8)
    monkeypatch.setattr(cpu_kernels, "PER_HEAD_ATTENTION_ON_CPU", True)
    checkpoint = tiny_checkpoint(tmp_path / "ckpt", "sequence_classification", shared_data)
    model = FlaxDistilBertForSequenceClassification.from_pretrained(checkpoint)
    ids = np.ones((3, 11), np.int32)  # 33 tokens: five feed-forward blocks
    concrete = jax.jit(lambda i, m: model(input_ids=i, attention_mask=m).logits).lower(ids, ids).as_text()
    assert "stablehlo.while" in concrete  # the kernels ran for a known shape

    result = export(checkpoint, tmp_path / "out", format="stablehlo")
    assert result.verification.passed
    exported = jax.export.deserialize(bytearray(result.artifact.read_bytes()))
    assert "stablehlo.while" not in exported.mlir_module()
