"""Interop with transformers 4.57.6's TensorFlow DistilBERT (the last release that had it), run in its own venv.

Both ways, through transformers' own ``tf_model.h5`` layout: a file written from our Keras model loads in
``transformers.TFDistilBertFor*`` with the same logits, and a file their TF model saved loads here with the same
logits. Needs a venv with transformers 4.57.6 + tf-keras + tensorflow: set ``DISTILBERT_MF_REF457`` to its root
(default ``../ref457``); the test skips without it.
"""

from __future__ import annotations

import os
import subprocess
import textwrap
from pathlib import Path

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_helpers import CLASSES, main_output, make_inputs  # noqa: E402

from distilbert_mf.checkpoint.io import write_weights  # noqa: E402

pytestmark = [pytest.mark.tensorflow, pytest.mark.reference, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
REF457_PYTHON = Path(os.environ.get("DISTILBERT_MF_REF457", ROOT.parent / "ref457")) / "bin" / "python"
HEADS = ("sequence_classification", "question_answering", "masked_lm", "token_classification")

# in the reference venv: run our files through transformers' TF classes; save their own random models
SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["TF_USE_LEGACY_KERAS"] = "1"
    import numpy as np
    import tensorflow as tf
    import transformers

    def outputs(model, data):
        out = model(input_ids=tf.constant(data["input_ids"]), attention_mask=tf.constant(data["attention_mask"]),
                    training=False)
        return {k: out[k].numpy() for k in ("logits", "start_logits", "end_logits") if k in out}

    for folder in sys.argv[1:]:
        data = dict(np.load(os.path.join(folder, "inputs.npz")))
        cls = getattr(transformers, str(data.pop("tf_class")))
        ours = cls.from_pretrained(os.path.join(folder, "ours"))
        np.savez(os.path.join(folder, "ours_in_transformers.npz"), **outputs(ours, data))
        tf.random.set_seed(1)
        theirs = cls(ours.config)
        theirs(theirs.dummy_inputs)
        theirs.save_pretrained(os.path.join(folder, "theirs"), safe_serialization=False)
        np.savez(os.path.join(folder, "theirs_in_transformers.npz"), **outputs(theirs, data))
    """
)


def test_tf_h5_interop_with_transformers_457(tf_models, tmp_path):
    if not REF457_PYTHON.is_file():
        pytest.skip(f"no transformers 4.57.6 reference venv at {REF457_PYTHON.parent.parent}")
    folders = []
    for head in HEADS:
        model = tf_models[head]
        folder = tmp_path / head
        write_weights(folder / "ours", model.canonical_state_dict(), "tf_h5", head=head, config=model.config)
        model.config.save_pretrained(folder / "ours")
        ids, mask = make_inputs(head, model.config)
        np.savez(folder / "inputs.npz", input_ids=ids, attention_mask=mask, tf_class=type(model).__name__)
        folders.append(str(folder))
    env = {k: v for k, v in os.environ.items() if k != "KERAS_BACKEND"}
    result = subprocess.run(
        [str(REF457_PYTHON), "-c", SCRIPT, *folders], env=env, capture_output=True, text=True, timeout=600
    )
    assert result.returncode == 0, result.stderr[-4000:]
    for head in HEADS:
        folder = tmp_path / head
        inputs = dict(np.load(folder / "inputs.npz"))
        inputs = {"input_ids": inputs["input_ids"], "attention_mask": inputs["attention_mask"]}
        assert (folder / "theirs" / "tf_model.h5").is_file()
        ours_there = main_output(head, dict(np.load(folder / "ours_in_transformers.npz")))
        np.testing.assert_allclose(ours_there, main_output(head, tf_models[head](**inputs)), atol=1e-5, err_msg=head)
        theirs_here = CLASSES[head].from_pretrained(folder / "theirs")
        theirs_there = main_output(head, dict(np.load(folder / "theirs_in_transformers.npz")))
        np.testing.assert_allclose(main_output(head, theirs_here(**inputs)), theirs_there, atol=1e-5, err_msg=head)
