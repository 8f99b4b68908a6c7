"""transformers-4.x-style user scripts with only the import line changed, in each framework, against transformers.

Each script is what a user of transformers' documentation types (Auto classes, tokenizer calls, config overrides,
return_dict=False, output_hidden_states, num_parameters, add_tokens + resize_token_embeddings, encode_plus,
save_pretrained / from_pretrained, a pipeline). The PyTorch script runs once with ``from transformers import`` (5.24)
and once with ``from distilbert_mf import``; the Keras and Flax scripts (transformers 4.x spelling: TFAuto…, FlaxAuto…,
``return_tensors="tf"`` / ``"np"``) run with ``from distilbert_mf.tensorflow`` / ``.flax`` and are compared with the
same transformers results. The docs page "Coming from transformers" lists these calls.
"""

from __future__ import annotations

import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from test_hub import online  # noqa: F401  (fixture: downloads allowed, no token)

# fp32 on CPU; the masked-LM logits are compared without the resized row, a random draw on both sides
ATOL = 2e-5

SCRIPT = {
    "pt": """
        import torch
        from transformers import (AutoConfig, AutoModel, AutoModelForMaskedLM, AutoModelForQuestionAnswering,
            AutoModelForSequenceClassification, AutoModelForTokenClassification, AutoTokenizer, pipeline)

        out = {}
        tokenizer = AutoTokenizer.from_pretrained(CLS)
        model = AutoModelForSequenceClassification.from_pretrained(CLS)
        model.eval()
        inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="pt")
        with torch.no_grad():
            outputs = model(**inputs, output_hidden_states=True)
            out["logits"] = outputs.logits.numpy()
            out["hidden"] = outputs.hidden_states[-1].numpy()
            out["tuple_logits"] = model(**inputs, return_dict=False)[0].numpy()
            out["loss"] = model(**inputs, labels=torch.tensor([0, 1])).loss.numpy()
        out["num_parameters"] = model.num_parameters()
        out["trainable_no_embeddings"] = model.num_parameters(only_trainable=True, exclude_embeddings=True)
        out["label"] = model.config.id2label[1]
        pair = tokenizer.encode_plus("hello world", "the fox", truncation=True, max_length=12, return_tensors="pt")
        out["encode_plus"] = pair["input_ids"].numpy()
        batch = tokenizer.batch_encode_plus(["a b c", "hello"], padding="max_length", max_length=8)
        out["batch_encode_plus"] = np.array(batch["attention_mask"])

        config = AutoConfig.from_pretrained(CLS, num_labels=4)
        new_head = AutoModelForSequenceClassification.from_pretrained(CLS, num_labels=4, ignore_mismatched_sizes=True)
        out["new_head"] = (config.num_labels, new_head.config.num_labels, len(new_head.config.id2label))

        tokens = AutoModelForTokenClassification.from_pretrained(TOK)
        qa = AutoModelForQuestionAnswering.from_pretrained(QA)
        base = AutoModel.from_pretrained(CLS)
        with torch.no_grad():
            out["token_logits"] = tokens(**inputs).logits.numpy()
            qa_out = qa(**tokenizer("who?", "the fox", return_tensors="pt"))
            out["start"], out["end"] = qa_out.start_logits.numpy(), qa_out.end_logits.numpy()
            out["base"] = base(**inputs).last_hidden_state.numpy()

        tokenizer.add_tokens(["<fox>"])
        mlm = AutoModelForMaskedLM.from_pretrained(MLM)
        mlm.resize_token_embeddings(len(tokenizer))
        mlm.eval()
        with torch.no_grad():
            logits = mlm(**tokenizer(["the fox jumps"], return_tensors="pt")).logits.numpy()
            out["mlm"], out["mlm_width"] = logits[..., :-1], logits.shape[-1]  # the new row is a random draw
        mlm.save_pretrained(SAVED)
        tokenizer.save_pretrained(SAVED)
        again = AutoModelForMaskedLM.from_pretrained(SAVED)
        out["vocab_after_reload"] = again.config.vocab_size
        fill = pipeline("fill-mask", model=MLM, tokenizer=MLM)
        out["fill"] = [round(x["score"], 5) for x in fill("the [MASK] jumps", top_k=3)]
    """,
    "tf": """
        from distilbert_mf.tensorflow import (TFAutoModel, TFAutoModelForMaskedLM, TFAutoModelForQuestionAnswering,
            TFAutoModelForSequenceClassification, TFAutoModelForTokenClassification)
        from distilbert_mf import AutoConfig, AutoTokenizer, pipeline

        out = {}
        tokenizer = AutoTokenizer.from_pretrained(CLS)
        model = TFAutoModelForSequenceClassification.from_pretrained(CLS)
        inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="tf")
        outputs = model(**inputs, output_hidden_states=True)
        out["logits"] = outputs.logits.numpy()
        out["hidden"] = outputs.hidden_states[-1].numpy()
        out["tuple_logits"] = model(**inputs, return_dict=False)[0].numpy()
        out["loss"] = model(**inputs, labels=np.array([0, 1])).loss.numpy()
        out["num_parameters"] = model.num_parameters()
        out["trainable_no_embeddings"] = model.num_parameters(only_trainable=True, exclude_embeddings=True)
        out["label"] = model.config.id2label[1]
        pair = tokenizer.encode_plus("hello world", "the fox", truncation=True, max_length=12, return_tensors="tf")
        out["encode_plus"] = pair["input_ids"].numpy()
        batch = tokenizer.batch_encode_plus(["a b c", "hello"], padding="max_length", max_length=8)
        out["batch_encode_plus"] = np.array(batch["attention_mask"])

        config = AutoConfig.from_pretrained(CLS, num_labels=4)
        new_head = TFAutoModelForSequenceClassification.from_pretrained(CLS, num_labels=4, ignore_mismatched_sizes=True)
        out["new_head"] = (config.num_labels, new_head.config.num_labels, len(new_head.config.id2label))

        tokens = TFAutoModelForTokenClassification.from_pretrained(TOK)
        qa = TFAutoModelForQuestionAnswering.from_pretrained(QA)
        base = TFAutoModel.from_pretrained(CLS)
        out["token_logits"] = tokens(**inputs).logits.numpy()
        qa_out = qa(**tokenizer("who?", "the fox", return_tensors="tf"))
        out["start"], out["end"] = qa_out.start_logits.numpy(), qa_out.end_logits.numpy()
        out["base"] = base(**inputs).last_hidden_state.numpy()

        tokenizer.add_tokens(["<fox>"])
        mlm = TFAutoModelForMaskedLM.from_pretrained(MLM)
        mlm.resize_token_embeddings(len(tokenizer))
        logits = mlm(**tokenizer(["the fox jumps"], return_tensors="tf")).logits.numpy()
        out["mlm"], out["mlm_width"] = logits[..., :-1], logits.shape[-1]  # the new row is a random draw
        mlm.save_pretrained(SAVED)
        tokenizer.save_pretrained(SAVED)
        again = TFAutoModelForMaskedLM.from_pretrained(SAVED)
        out["vocab_after_reload"] = again.config.vocab_size
        fill = pipeline("fill-mask", model=MLM, tokenizer=MLM, framework="tf")
        out["fill"] = [round(x["score"], 5) for x in fill("the [MASK] jumps", top_k=3)]
    """,
    "flax": """
        from distilbert_mf.flax import (FlaxAutoModel, FlaxAutoModelForMaskedLM, FlaxAutoModelForQuestionAnswering,
            FlaxAutoModelForSequenceClassification, FlaxAutoModelForTokenClassification)
        from distilbert_mf import AutoConfig, AutoTokenizer, pipeline

        out = {}
        tokenizer = AutoTokenizer.from_pretrained(CLS)
        model = FlaxAutoModelForSequenceClassification.from_pretrained(CLS)
        inputs = tokenizer(TEXTS, padding=True, truncation=True, max_length=16, return_tensors="np")
        outputs = model(**inputs, output_hidden_states=True)
        out["logits"] = np.asarray(outputs.logits)
        out["hidden"] = np.asarray(outputs.hidden_states[-1])
        out["tuple_logits"] = np.asarray(model(**inputs, return_dict=False)[0])
        out["loss"] = np.asarray(model(**inputs, labels=np.array([0, 1])).loss)
        out["num_parameters"] = model.num_parameters()
        out["trainable_no_embeddings"] = model.num_parameters(only_trainable=True, exclude_embeddings=True)
        out["label"] = model.config.id2label[1]
        pair = tokenizer.encode_plus("hello world", "the fox", truncation=True, max_length=12, return_tensors="np")
        out["encode_plus"] = pair["input_ids"]
        batch = tokenizer.batch_encode_plus(["a b c", "hello"], padding="max_length", max_length=8)
        out["batch_encode_plus"] = np.array(batch["attention_mask"])

        config = AutoConfig.from_pretrained(CLS, num_labels=4)
        new_head = FlaxAutoModelForSequenceClassification.from_pretrained(
            CLS, num_labels=4, ignore_mismatched_sizes=True
        )
        out["new_head"] = (config.num_labels, new_head.config.num_labels, len(new_head.config.id2label))

        tokens = FlaxAutoModelForTokenClassification.from_pretrained(TOK)
        qa = FlaxAutoModelForQuestionAnswering.from_pretrained(QA)
        base = FlaxAutoModel.from_pretrained(CLS)
        out["token_logits"] = np.asarray(tokens(**inputs).logits)
        qa_out = qa(**tokenizer("who?", "the fox", return_tensors="np"))
        out["start"], out["end"] = np.asarray(qa_out.start_logits), np.asarray(qa_out.end_logits)
        out["base"] = np.asarray(base(**inputs).last_hidden_state)

        tokenizer.add_tokens(["<fox>"])
        mlm = FlaxAutoModelForMaskedLM.from_pretrained(MLM)
        mlm.resize_token_embeddings(len(tokenizer))
        logits = np.asarray(mlm(**tokenizer(["the fox jumps"], return_tensors="np")).logits)
        out["mlm"], out["mlm_width"] = logits[..., :-1], logits.shape[-1]  # the new row is a random draw
        mlm.save_pretrained(SAVED)
        tokenizer.save_pretrained(SAVED)
        again = FlaxAutoModelForMaskedLM.from_pretrained(SAVED)
        out["vocab_after_reload"] = again.config.vocab_size
        fill = pipeline("fill-mask", model=MLM, tokenizer=MLM, framework="flax")
        out["fill"] = [round(x["score"], 5) for x in fill("the [MASK] jumps", top_k=3)]
    """,
}
OURS = {"pt": "from distilbert_mf import", "tf": None, "flax": None}


@pytest.fixture(scope="module")
def folders(tmp_path_factory, shared_data: Path) -> dict[str, Path]:
    """Complete checkpoints of every head (written by our PyTorch models from the transformers-written tiny
    checkpoint, heads seeded), each with the tokenizer files."""
    torch = pytest.importorskip("torch")
    import distilbert_mf.torch as ours

    source = shared_data / "tiny-random-distilbert"
    root = tmp_path_factory.mktemp("from_transformers")
    out = {}
    for name, cls in {
        "CLS": ours.DistilBertForSequenceClassification,
        "TOK": ours.DistilBertForTokenClassification,
        "QA": ours.DistilBertForQuestionAnswering,
        "MLM": ours.DistilBertForMaskedLM,
    }.items():
        torch.manual_seed(0)
        folder = root / name
        model = cls.from_pretrained(source, id2label={0: "NEGATIVE", 1: "POSITIVE"}) if name == "CLS" else None
        model = model or cls.from_pretrained(source)
        model.save_pretrained(folder)
        for file in ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
            shutil.copy(source / file, folder / file)
        out[name] = folder
    return out


def run_script(framework: str, folders: dict[str, Path], saved: Path, *, reference: bool = False) -> dict:
    code = textwrap.dedent(SCRIPT[framework])
    if framework == "pt" and not reference:
        code = code.replace("from transformers import", OURS["pt"], 1)
    if reference:  # transformers 5 removed encode_plus / batch_encode_plus; in 4.x they were __call__
        code = code.replace("tokenizer.encode_plus(", "tokenizer(").replace(
            "tokenizer.batch_encode_plus(", "tokenizer("
        )
    namespace = {
        "np": np,
        "TEXTS": ["hello world", "the quick brown fox jumps over"],
        "SAVED": str(saved),
        **{key: str(value) for key, value in folders.items()},
    }
    exec(compile(code, f"<{framework} user script>", "exec"), namespace)
    return namespace["out"]


@pytest.fixture(scope="module")
def reference(folders, tmp_path_factory) -> dict:
    pytest.importorskip("transformers")
    return run_script("pt", folders, tmp_path_factory.mktemp("saved_ref"), reference=True)


def compare(ours: dict, theirs: dict) -> None:
    assert ours.keys() == theirs.keys()
    for key, expected in theirs.items():
        if isinstance(expected, np.ndarray):
            np.testing.assert_allclose(np.asarray(ours[key]), expected, atol=ATOL, rtol=0, err_msg=key)
        elif key == "fill":
            np.testing.assert_allclose(ours[key], expected, atol=2e-5, err_msg=key)
        else:
            assert ours[key] == expected, key


@pytest.mark.parametrize(
    "framework",
    [
        pytest.param("pt", marks=pytest.mark.torch),
        pytest.param("tf", marks=pytest.mark.tensorflow),
        pytest.param("flax", marks=pytest.mark.flax),
    ],
)
def test_user_script_gives_transformers_results(framework, folders, reference, tmp_path) -> None:
    compare(run_script(framework, folders, tmp_path / "saved"), reference)


@pytest.mark.parametrize(
    "framework",
    [
        pytest.param("pt", marks=pytest.mark.torch),
        pytest.param("tf", marks=pytest.mark.tensorflow),
        pytest.param("flax", marks=pytest.mark.flax),
    ],
)
@pytest.mark.usefixtures("online")
def test_offline_with_no_cache_fails_in_seconds_with_one_error(framework, tmp_path, monkeypatch) -> None:
    """Auto model, Auto tokenizer, config and pipeline of a Hub id, no network, empty cache: HubUnreachableError
    naming the repo and the three fixes, everything within 5 s (the first failure is remembered)."""
    import huggingface_hub
    from test_hub import closed_port

    import distilbert_mf
    from distilbert_mf import HubUnreachableError
    from distilbert_mf.hub import reset_hub_state

    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    reset_hub_state()
    prefix = {"pt": "", "tf": "TF", "flax": "Flax"}[framework]
    calls = [
        getattr(distilbert_mf, prefix + "AutoModelForSequenceClassification").from_pretrained,
        distilbert_mf.AutoTokenizer.from_pretrained,
        distilbert_mf.AutoConfig.from_pretrained,
        lambda name: distilbert_mf.pipeline("fill-mask", model=name, framework=framework),
    ]
    import time

    start = time.monotonic()
    for call in calls:
        with pytest.raises(HubUnreachableError) as err:
            call("someone/distilbert-finetuned")
        text = str(err.value)
        assert "could not reach the Hugging Face Hub" in text and "someone/distilbert-finetuned" in text
        assert "HF_HUB_OFFLINE=1" in text and "local folder" in text
    assert time.monotonic() - start < 5
    reset_hub_state()
