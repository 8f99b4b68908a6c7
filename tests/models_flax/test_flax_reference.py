"""flax_model.msgpack across implementations: a file written here loads in transformers 4.57.6's Linen Flax classes
with the same outputs, and a file written by transformers loads here.

transformers 4.57.6 (the last release with Flax DistilBERT) lives in its own virtual environment, never a dependency:
set DISTILBERT_MF_REF457 to its folder (default ``../ref457``); the test skips without it.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")

from flax_helpers import ALL_CLASSES, BY_HEAD, build, fit_config, make_inputs, tiny

from distilbert_mf.checkpoint.io import write_weights

pytestmark = [pytest.mark.flax, pytest.mark.reference, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
REFERENCE_PYTHON = Path(os.environ.get("DISTILBERT_MF_REF457", ROOT.parent / "ref457")) / "bin" / "python"
TOLERANCE = 1e-5

# runs inside the transformers 4.57.6 environment: no distilbert_mf there
REFERENCE_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    import transformers

    work = Path(sys.argv[1])
    for head in sys.argv[2:]:
        inputs = np.load(work / f"inputs_{head}.npz")
        folder = work / "ours" / head
        cls = getattr(transformers, "Flax" + transformers.DistilBertConfig.from_pretrained(folder).architectures[0])

        def main(model):
            out = model(inputs["input_ids"], attention_mask=inputs["attention_mask"])
            if hasattr(out, "start_logits"):
                return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
            return np.asarray(out.logits if hasattr(out, "logits") else out.last_hidden_state)

        np.save(work / f"reference_on_ours_{head}.npy", main(cls.from_pretrained(folder)))
        theirs = cls(cls.config_class.from_pretrained(folder), seed=0)
        theirs.save_pretrained(work / "theirs" / head)
        np.save(work / f"reference_own_{head}.npy", main(theirs))
    """
)


def main_output(out) -> np.ndarray:
    if "start_logits" in out:
        return np.stack([np.asarray(out.start_logits), np.asarray(out.end_logits)])
    return np.asarray(out.logits if "logits" in out else out.last_hidden_state)


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """Write every head's msgpack here, run transformers 4.57.6 on it and on its own models, once."""
    if not REFERENCE_PYTHON.exists():
        pytest.skip(f"transformers 4.57.6 environment not found at {REFERENCE_PYTHON}")
    work = tmp_path_factory.mktemp("reference")
    ours = {}
    for cls in ALL_CLASSES:
        config = fit_config(cls, tiny())
        model = build(cls, config, seed=11)
        folder = work / "ours" / cls.head
        config.replace(extra={"architectures": [cls.__name__.removeprefix("Flax")]}).save_pretrained(folder)
        write_weights(folder, model.canonical_state_dict(), "flax_msgpack", head=cls.head, config=config)
        input_ids, mask = make_inputs(cls, config)
        np.savez(work / f"inputs_{cls.head}.npz", input_ids=input_ids, attention_mask=mask)
        ours[cls.head] = main_output(model(input_ids, mask))
    script = work / "reference.py"
    script.write_text(REFERENCE_SCRIPT)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "XLA_FLAGS")}
    subprocess.run(
        [str(REFERENCE_PYTHON), str(script), str(work), *(cls.head for cls in ALL_CLASSES)],
        check=True,
        env=env,
        timeout=300,
        cwd=work,
    )
    return work, ours


@pytest.mark.parametrize("head", [cls.head for cls in ALL_CLASSES])
def test_our_msgpack_loads_in_transformers_flax(head, reference_run):
    work, ours = reference_run
    np.testing.assert_allclose(np.load(work / f"reference_on_ours_{head}.npy"), ours[head], atol=TOLERANCE)


@pytest.mark.parametrize("head", [cls.head for cls in ALL_CLASSES])
def test_transformers_flax_msgpack_loads_here(head, reference_run):
    work, _ = reference_run
    folder = work / "theirs" / head
    assert (folder / "flax_model.msgpack").exists() and not (folder / "model.safetensors").exists()
    model = BY_HEAD[head].from_pretrained(folder)
    inputs = np.load(work / f"inputs_{head}.npz")
    got = main_output(model(inputs["input_ids"], inputs["attention_mask"]))
    np.testing.assert_allclose(got, np.load(work / f"reference_own_{head}.npy"), atol=TOLERANCE)
