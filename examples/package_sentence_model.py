#!/usr/bin/env python
"""Package all-MiniLM-L6-v2 as the embedded sentence-embedding model ``distilbert-mf/all-minilm-l6-v2``.

Writes ``distilbert_mf/models/all-minilm-l6-v2/``: the exact DistilBERT conversion of the BERT
sentence-transformers/all-MiniLM-L6-v2 (``conversion/bert_to_distilbert.py``; float32, nothing cast), its tokenizer
with ``model_max_length`` 256 (sentence-transformers' ``max_seq_length`` for this model, so long texts are cut where
sentence-transformers cuts them) and a ``README.md`` model card. The card's numbers are measured here, on the
packaged folder: the feature-extraction pipeline with ``pooling="mean", normalize=True`` in every installed framework
against the reference (sentence-transformers when installed, else transformers' ``BertModel`` on the original BERT
with mean pooling and L2 normalisation).

Usage::

    python examples/package_sentence_model.py [--src ../shared/data/all-MiniLM-L6-v2] [--overwrite]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DEST = ROOT / "distilbert_mf" / "models" / "all-minilm-l6-v2"
SRC = ROOT.parent / "shared" / "data" / "all-MiniLM-L6-v2"
SHORT_NAME = "distilbert-mf/all-minilm-l6-v2"
MAX_SEQ_LENGTH = 256  # sentence_bert_config.json of all-MiniLM-L6-v2
BOUND = 1e-5
SENTENCES = [
    "hello world",
    "This framework generates embeddings for each input sentence.",
    "Sentences are passed as a list of strings.",
    "The quick brown fox jumps over the lazy dog.",
    "Résumé of a naïve café owner: unaffable!",
    "A much longer sentence that keeps going so that the other rows of the batch need plenty of padding tokens.",
]
FRAMEWORK_NAMES = {"pt": "PyTorch", "tf": "TensorFlow (Keras 3)", "flax": "Flax NNX"}

logger = logging.getLogger("package_sentence_model")

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_sentiment import _load_converter  # noqa: E402  (loads conversion/bert_to_distilbert.py)


def reference_embeddings(src: Path, sentences: Sequence[str]) -> tuple[str, np.ndarray]:
    """``(what, (n, 384) float32)``: sentence-transformers' embeddings of ``sentences``, or mean pooling + L2
    normalisation of transformers' BertModel on the original BERT when sentence-transformers is not installed."""
    if importlib.util.find_spec("sentence_transformers") is not None:
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(src), device="cpu")
        import sentence_transformers

        return f"sentence-transformers {sentence_transformers.__version__}", model.encode(list(sentences))
    import torch
    import transformers

    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(src))
    model = transformers.BertModel.from_pretrained(str(src)).eval()
    rows = []
    for sentence in sentences:
        encoded = tokenizer(sentence, truncation=True, max_length=MAX_SEQ_LENGTH, return_tensors="pt")
        with torch.no_grad():
            hidden = model(**encoded).last_hidden_state[0].numpy()
        vector = hidden.mean(axis=0)
        rows.append(vector / np.linalg.norm(vector))
    return f"transformers {transformers.__version__} BertModel, mean pooling, L2 normalisation", np.stack(rows)


def measure(folder: Path, reference: np.ndarray) -> list[dict[str, Any]]:
    """The pipeline's sentence embeddings of :data:`SENTENCES` in every installed framework vs ``reference``."""
    from distilbert_mf import pipeline
    from distilbert_mf.frameworks import available_frameworks

    results = []
    for framework in available_frameworks():
        extractor = pipeline("feature-extraction", model=str(folder), framework=framework, dtype="float32")
        ours = np.stack(extractor(SENTENCES, pooling="mean", normalize=True, return_tensors=True))
        cls = np.asarray(extractor("hello world", pooling="cls", normalize=True, return_tensors=True))
        results.append(
            {
                "framework": framework,
                "max_abs_diff": float(np.max(np.abs(ours - reference))),
                "hello_world_cls": [round(float(x), 4) for x in cls[:5]],
                "hello_world_mean": [round(float(x), 4) for x in ours[0, :5]],
            }
        )
    return results


def model_card(reference_name: str, results: list[dict[str, Any]], size: int) -> str:
    rows = "\n".join(
        f"| {FRAMEWORK_NAMES[r['framework']]} | {r['max_abs_diff']:.1e} | `{r['hello_world_mean']}` |" for r in results
    )
    first = results[0]
    return f"""---
language: en
license: apache-2.0
library_name: distilbert_mf
base_model: sentence-transformers/all-MiniLM-L6-v2
pipeline_tag: feature-extraction
tags:
- sentence-embeddings
---

# {SHORT_NAME}

[sentence-transformers/all-MiniLM-L6-v2](https://huggingface.co/sentence-transformers/all-MiniLM-L6-v2) (Apache-2.0)
in the DistilBERT architecture, shipped inside `distilbert_mf` so that sentence embeddings work offline in PyTorch,
TensorFlow and Flax: 6 layers, hidden size 384, 12 heads, feed-forward 1536, 22.6M parameters, float32
(`model.safetensors`, {size / 2**20:.1f} MiB).

```python
from distilbert_mf import pipeline

embed = pipeline("feature-extraction", pooling="mean", normalize=True)  # this model; or model="{SHORT_NAME}"
embed(["hello world", "good morning"])  # two unit vectors of 384 floats
```

## Origin

all-MiniLM-L6-v2 is a BERT. `conversion/bert_to_distilbert.py` converts it exactly (no retraining): token type
embedding 0 folded into the position embeddings, the pooler dropped, the keys renamed. Nothing is cast or quantised:
weights cast to bfloat16 move these embeddings by 1.5e-3 and to float16 by 1.7e-4 (measured), past the 1e-5 this
model is held to. The
tokenizer is all-MiniLM-L6-v2's (uncased English WordPiece) with `model_max_length` {MAX_SEQ_LENGTH}, where
sentence-transformers cuts this model's inputs.

## Equal to sentence-transformers

Measured on this folder with `pooling="mean", normalize=True` (mean over the real tokens, [CLS] and [SEP] included,
then unit L2 norm: what sentence-transformers computes for this model) on {len(SENTENCES)} sentences, against
{reference_name}:

| framework | max abs difference | "hello world", first 5 values |
| --- | --- | --- |
{rows}

With `pooling="cls", normalize=True` the "hello world" vector begins `{first["hello_world_cls"]}`.

## Intended use and limits

Semantic search, clustering and similarity of short English texts (the base model's card describes its training
on one billion sentence pairs). Texts past {MAX_SEQ_LENGTH} tokens are truncated. It inherits the base model's
biases and limits; see its card.
"""


def package(src: Path, dest: Path, *, overwrite: bool) -> list[dict[str, Any]]:
    """Convert, measure in every installed framework, write the card; ``dest`` appears in one rename."""
    if dest.exists() and not overwrite:
        raise FileExistsError(f"{dest} exists; pass --overwrite to replace it")
    staging = dest.parent / f".{dest.name}.staging"
    if staging.exists():
        shutil.rmtree(staging)
    _load_converter().convert_bert(src, staging)
    tokenizer_config_path = staging / "tokenizer_config.json"
    tokenizer_config = json.loads(tokenizer_config_path.read_text(encoding="utf-8"))
    tokenizer_config["model_max_length"] = MAX_SEQ_LENGTH
    tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n", encoding="utf-8")

    reference_name, reference = reference_embeddings(src, SENTENCES)
    results = measure(staging, reference)
    worst = max(r["max_abs_diff"] for r in results)
    if worst > BOUND:
        raise ValueError(f"the packaged embeddings differ from {reference_name} by {worst:.2e} > {BOUND:.0e}")
    size = (staging / "model.safetensors").stat().st_size
    (staging / "README.md").write_text(model_card(reference_name, results, size), encoding="utf-8")
    for path in staging.iterdir():
        path.chmod(0o644)  # package data: readable by everyone
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(staging, dest)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--src", type=Path, default=SRC, help=f"the all-MiniLM-L6-v2 BERT folder (default: {SRC})")
    parser.add_argument("--dest", type=Path, default=DEST, help=f"default: {DEST}")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing destination")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    results = package(args.src, args.dest, overwrite=args.overwrite)
    logger.info("packaged %s: %s", args.dest, json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
