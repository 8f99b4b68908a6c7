"""The same Keras classes under another Keras backend (fixed at import time, hence one subprocess per backend)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from tf_helpers import make_inputs, make_labels  # noqa: E402

pytestmark = [pytest.mark.tensorflow, pytest.mark.slow]

HEADS = ("masked_lm", "question_answering", "multiple_choice")
# loads each head's checkpoint folder under KERAS_BACKEND, runs inputs.npz (call and predict), writes outputs.npz
# ("name" or "name:i" for tuples), then fits the last model
SCRIPT = textwrap.dedent(
    """
    import sys
    import keras
    import numpy as np
    from distilbert_mf.frameworks import model_class

    backend, folders = sys.argv[1], sys.argv[2:]
    assert keras.backend.backend() == backend, keras.backend.backend()
    for folder in folders:
        data = dict(np.load(folder + "/inputs.npz"))
        model = model_class("tf", str(data.pop("head"))).from_pretrained(folder)
        out = model(**data, output_hidden_states=True, output_attentions=True)
        features = {"input_ids": data["input_ids"], "attention_mask": data["attention_mask"]}
        predicted = model.predict(features, batch_size=1, verbose=0)  # jit-compiled steps, one row each
        for key in ("logits", "start_logits"):
            if key in out:
                np.testing.assert_allclose(predicted[key], keras.ops.convert_to_numpy(out[key]), atol=1e-5)
        arrays = {}
        for key, value in out.items():
            for i, item in enumerate(value) if isinstance(value, tuple) else [("", value)]:
                arrays[f"{key}:{i}" if i != "" else key] = keras.ops.convert_to_numpy(item)
        np.savez(folder + "/outputs.npz", **arrays)
    # fit trains on the model's own loss in this backend too (the last head: multiple choice)
    model.compile(optimizer=keras.optimizers.Adam(3e-3))
    losses = model.fit(data, batch_size=1, epochs=6, verbose=0, shuffle=False).history["loss"]
    assert losses[-1] < 0.9 * losses[0], losses
    """
)


@pytest.mark.parametrize("backend", ["jax", "torch"])
def test_other_keras_backend_matches_tensorflow(backend, tf_models, tmp_path):
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    expected = {}
    for head in HEADS:
        model = tf_models[head]
        model.save_pretrained(tmp_path / head)
        ids, mask = make_inputs(head, model.config)
        inputs = {"input_ids": ids, "attention_mask": mask, **make_labels(head, model.config, ids)}
        np.savez(tmp_path / head / "inputs.npz", head=head, **inputs)
        expected[head] = model(**inputs, output_hidden_states=True, output_attentions=True)
    env = {**os.environ, "KERAS_BACKEND": backend}
    folders = [str(tmp_path / head) for head in HEADS]
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT, backend, *folders], env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    for head in HEADS:
        theirs = dict(np.load(tmp_path / head / "outputs.npz"))
        ours = expected[head]
        assert {k.split(":")[0] for k in theirs} == set(ours) and "loss" in ours
        assert sum(k.startswith("hidden_states:") for k in theirs) == ours["hidden_states"].__len__()
        for key, value in theirs.items():
            name, _, index = key.partition(":")
            np.testing.assert_allclose(
                value, np.asarray(ours[name][int(index)] if index else ours[name]), atol=1e-5, err_msg=f"{head} {key}"
            )
