"""Tiny seeded checkpoints for the export tests, written without any framework (numpy arrays, our safetensors
writer), with the real tokenizer of transformers' tiny random DistilBERT next to them (vocabulary 1124)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from distilbert_mf import DistilBertConfig
from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.checkpoint.names import expected_shapes

TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
# odd sizes so shape bugs show; the vocabulary of the shared tokenizer; a short position table (64) so the
# verification's longest batch (128 tokens) is cut at the model's limit
TINY = {"vocab_size": 1124, "dim": 32, "n_heads": 4, "hidden_dim": 37, "n_layers": 2, "max_position_embeddings": 64}


def tiny_checkpoint(folder: Path, head: str, shared_data: Path | None, *, seed: int = 0, **config: object) -> Path:
    """A ``head`` checkpoint of random weights large enough that outputs are far from zero (std 0.2, LayerNorm
    scales around 1), plus the tokenizer files when ``shared_data`` is given."""
    labels = 2 if head == "question_answering" else 3  # QA reads two logits per token
    cfg = DistilBertConfig(**{**TINY, "num_labels": labels, **config})
    rng = np.random.default_rng(seed)
    arrays = {}
    for key, shape in expected_shapes(cfg, head).items():
        values = rng.normal(0.0, 0.2, shape)
        if "LayerNorm" in key or "layer_norm" in key:
            values = values + (1.0 if key.endswith("weight") else 0.0)
        arrays[key] = values.astype(np.float32)
    save_pretrained(folder, cfg, arrays, head)
    if shared_data is not None:
        for name in TOKENIZER_FILES:
            shutil.copyfile(shared_data / "tiny-random-distilbert" / name, folder / name)
    return folder
