"""Convert a BERT checkpoint folder into a DistilBERT-architecture folder (numpy only, no ML framework).

A BERT encoder block is a DistilBERT block under other names, so a BERT checkpoint converts *exactly* when
``token_type_ids`` are all zero: ``token_type_embeddings[0]`` is added to every row of the position embeddings
(BERT adds it to every token), the pooler and the next-sentence head are dropped, and the keys are renamed:

====================================================  ===============================================
BERT (``bert.`` prefix optional)                        DistilBERT
====================================================  ===============================================
``embeddings.word_embeddings``                          ``embeddings.word_embeddings``
``embeddings.position_embeddings`` + token type 0      ``embeddings.position_embeddings``
``embeddings.LayerNorm``                                ``embeddings.LayerNorm``
``encoder.layer.{i}.attention.self.{query,key,value}``  ``transformer.layer.{j}.attention.{q,k,v}_lin``
``encoder.layer.{i}.attention.output.dense``            ``transformer.layer.{j}.attention.out_lin``
``encoder.layer.{i}.attention.output.LayerNorm``        ``transformer.layer.{j}.sa_layer_norm``
``encoder.layer.{i}.intermediate.dense``                ``transformer.layer.{j}.ffn.lin1``
``encoder.layer.{i}.output.dense``                      ``transformer.layer.{j}.ffn.lin2``
``encoder.layer.{i}.output.LayerNorm``                  ``transformer.layer.{j}.output_layer_norm``
``cls.predictions.transform.dense``                     ``vocab_transform``
``cls.predictions.transform.LayerNorm``                 ``vocab_layer_norm``
``cls.predictions.decoder`` / ``cls.predictions.bias``  ``vocab_projector``
``pooler.*``, ``cls.seq_relationship.*``                dropped
====================================================  ===============================================

``j`` counts the kept teacher layers ``i`` (``--layers``). By default every layer is kept when the teacher has at
most 6; a deeper teacher keeps every other layer starting from the first, ``0, 2, 4, ...`` (for a 12-layer BERT:
``0, 2, 4, 6, 8, 10``), the "one layer out of two" initialisation of the DistilBERT paper (Sanh et al., 2019,
section 3). Hugging Face's original extraction script took ``0, 2, 4, 7, 9, 11``; pass ``--layers 0,2,4,7,9,11``
to reproduce it. Dropping layers makes a student to distil or fine-tune, no longer the teacher's function.

DistilBERT's LayerNorms use eps 1e-12 (fixed in the architecture): a BERT with another ``layer_norm_eps`` is
refused unless ``--allow-layer-norm-eps-mismatch`` (the result then differs slightly from the teacher).

From the command line: ``python conversion/bert_to_distilbert.py SRC DST [--layers 0,2,4] [--overwrite]``; the
distillation package uses the same mapping to initialise a student from a BERT teacher.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from distilbert_mf.checkpoint import PREFIX, prepare_state_dict, save_pretrained
from distilbert_mf.checkpoint.hub import find_weights
from distilbert_mf.checkpoint.io import INDEX_NAMES, WEIGHTS_NAMES, read_weights
from distilbert_mf.config import SUPPORTED_ACTIVATIONS, DistilBertConfig

logger = logging.getLogger(__name__)

DISTILBERT_LAYER_NORM_EPS = 1e-12
MAX_LAYERS_KEPT_BY_DEFAULT = 6
# BERT layer sub-keys -> DistilBERT layer sub-keys (".weight" / ".bias" follow)
LAYER_RENAMES = {
    "attention.self.query": "attention.q_lin",
    "attention.self.key": "attention.k_lin",
    "attention.self.value": "attention.v_lin",
    "attention.output.dense": "attention.out_lin",
    "attention.output.LayerNorm": "sa_layer_norm",
    "intermediate.dense": "ffn.lin1",
    "output.dense": "ffn.lin2",
    "output.LayerNorm": "output_layer_norm",
}
MLM_RENAMES = {
    "cls.predictions.transform.dense": "vocab_transform",
    "cls.predictions.transform.LayerNorm": "vocab_layer_norm",
    "cls.predictions.decoder": "vocab_projector",
}
# BERT keys with no DistilBERT counterpart (the token type table is folded, not dropped)
DROPPED_PREFIXES = ("pooler.", "cls.seq_relationship.")
IGNORED_SUFFIXES = ("embeddings.position_ids",)
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json")
_LAYER_KEY = re.compile(r"^encoder\.layer\.(\d+)\.(.+)\.(weight|bias)$")


class ConversionError(ValueError):
    """The source folder is not a BERT checkpoint this script can convert exactly."""


def default_layers(n_teacher_layers: int) -> list[int]:
    """All layers for a teacher of at most 6, else every other layer from the first (0, 2, 4, ...)."""
    if n_teacher_layers <= MAX_LAYERS_KEPT_BY_DEFAULT:
        return list(range(n_teacher_layers))
    return list(range(0, n_teacher_layers, 2))


def check_layers(layers: Sequence[int], n_teacher_layers: int) -> list[int]:
    """Validate the teacher layer indices to keep: distinct integers in ``[0, n_teacher_layers)``."""
    layers = list(layers)
    if not layers:
        raise ValueError(f"layers must name at least one of the teacher's {n_teacher_layers} layers, got {layers}")
    bad = [i for i in layers if isinstance(i, bool) or not isinstance(i, (int, np.integer))]
    if bad:
        raise TypeError(f"layers must be integers, got {bad!r}")
    out_of_range = [i for i in layers if not 0 <= i < n_teacher_layers]
    if out_of_range:
        raise ValueError(
            f"layers {out_of_range} are outside the teacher's layers 0..{n_teacher_layers - 1}; got layers={layers}"
        )
    if len(set(layers)) != len(layers):
        raise ValueError(f"layers must be distinct, got {layers}")
    return [int(i) for i in layers]


def bert_to_distilbert_config(
    bert: dict[str, Any], n_layers: int, *, allow_layer_norm_eps_mismatch: bool = False
) -> DistilBertConfig:
    """Map a BERT ``config.json`` dict onto a :class:`DistilBertConfig` with ``n_layers`` blocks."""
    model_type = bert.get("model_type", "bert")
    if model_type != "bert":
        raise ConversionError(f"expected a BERT config (model_type 'bert'), got model_type={model_type!r}")
    position_type = bert.get("position_embedding_type", "absolute")
    if position_type != "absolute":
        raise ConversionError(
            f"position_embedding_type={position_type!r} cannot be converted: DistilBERT has only absolute "
            "(learned) position embeddings; allowed: 'absolute'"
        )
    if bert.get("is_decoder") or bert.get("add_cross_attention"):
        raise ConversionError("a BERT decoder (is_decoder / add_cross_attention) cannot be converted to DistilBERT")
    activation = bert.get("hidden_act", "gelu")
    if activation not in SUPPORTED_ACTIVATIONS:
        raise ConversionError(
            f"hidden_act={activation!r} is not supported by DistilBERT; allowed: {SUPPORTED_ACTIVATIONS}"
        )
    eps = float(bert.get("layer_norm_eps", DISTILBERT_LAYER_NORM_EPS))
    if not math.isclose(eps, DISTILBERT_LAYER_NORM_EPS, rel_tol=1e-6):
        message = (
            f"layer_norm_eps={eps} but DistilBERT's LayerNorms use {DISTILBERT_LAYER_NORM_EPS}; the converted "
            "model would not reproduce the teacher exactly"
        )
        if not allow_layer_norm_eps_mismatch:
            raise ConversionError(message + " (pass --allow-layer-norm-eps-mismatch to convert anyway)")
        logger.warning(message)
    try:
        return DistilBertConfig(
            vocab_size=int(bert["vocab_size"]),
            max_position_embeddings=int(bert.get("max_position_embeddings", 512)),
            sinusoidal_pos_embds=False,
            n_layers=n_layers,
            n_heads=int(bert["num_attention_heads"]),
            dim=int(bert["hidden_size"]),
            hidden_dim=int(bert["intermediate_size"]),
            dropout=float(bert.get("hidden_dropout_prob", 0.1)),
            attention_dropout=float(bert.get("attention_probs_dropout_prob", 0.1)),
            activation=activation,
            initializer_range=float(bert.get("initializer_range", 0.02)),
            pad_token_id=int(bert.get("pad_token_id", 0) or 0),
            tie_word_embeddings=bool(bert.get("tie_word_embeddings", True)),
        )
    except KeyError as err:
        raise ConversionError(f"the BERT config has no {err.args[0]!r}; it is needed to build DistilBERT") from err


def _normalise_bert_key(key: str) -> str:
    # BertForPreTraining / BertForMaskedLM store the encoder under "bert."; old checkpoints say gamma/beta
    if key.startswith("bert."):
        key = key[len("bert.") :]
    if key.endswith(".gamma"):
        key = key[: -len(".gamma")] + ".weight"
    elif key.endswith(".beta"):
        key = key[: -len(".beta")] + ".bias"
    return key


def convert_state_dict(
    bert_state: dict[str, np.ndarray], config: DistilBertConfig, layers: Sequence[int]
) -> tuple[dict[str, np.ndarray], str]:
    """Rename and fold BERT arrays into DistilBERT canonical arrays; returns ``(arrays, head)``.

    ``head`` is ``"masked_lm"`` when the BERT has an MLM head (``cls.predictions.*``), else ``"base"``.
    Unknown BERT keys raise: nothing is silently left behind.
    """
    state = {_normalise_bert_key(k): v for k, v in bert_state.items() if not k.endswith(IGNORED_SUFFIXES)}
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise ConversionError(f"the BERT checkpoint has no {key!r}")
        used.add(key)
        return state[key]

    out: dict[str, np.ndarray] = {}
    out["embeddings.word_embeddings.weight"] = take("embeddings.word_embeddings.weight")
    position = take("embeddings.position_embeddings.weight")  # (max_positions, dim)
    if "embeddings.token_type_embeddings.weight" in state:
        token_type = take("embeddings.token_type_embeddings.weight")  # (type_vocab_size, dim)
        folded = position.astype(np.float32) + token_type[0].astype(np.float32)[None, :]  # (max_positions, dim)
        position = folded.astype(position.dtype)
    out["embeddings.position_embeddings.weight"] = position
    for name in ("weight", "bias"):
        out[f"embeddings.LayerNorm.{name}"] = take(f"embeddings.LayerNorm.{name}")
    for j, i in enumerate(layers):
        for bert_name, distil_name in LAYER_RENAMES.items():
            for name in ("weight", "bias"):
                out[f"transformer.layer.{j}.{distil_name}.{name}"] = take(f"encoder.layer.{i}.{bert_name}.{name}")

    head = "masked_lm" if any(k.startswith("cls.predictions.") for k in state) else "base"
    if head == "masked_lm":
        out = {PREFIX + k: v for k, v in out.items()}
        for bert_name, distil_name in MLM_RENAMES.items():
            for name in ("weight", "bias"):
                if f"{bert_name}.{name}" in state:
                    out[f"{distil_name}.{name}"] = take(f"{bert_name}.{name}")
        if "cls.predictions.bias" in state:  # the decoder's bias, stored once for the tied decoder
            out["vocab_projector.bias"] = take("cls.predictions.bias")
        if "vocab_projector.weight" not in out:  # tied to the word embeddings and stored once
            out["vocab_projector.weight"] = out[PREFIX + "embeddings.word_embeddings.weight"]

    kept_layers = set(layers)
    leftover = []
    for key in state:
        if key in used or key.startswith(DROPPED_PREFIXES):
            continue
        match = _LAYER_KEY.match(key)
        if match and int(match.group(1)) not in kept_layers and match.group(2) in LAYER_RENAMES:
            continue  # a teacher layer the student does not keep
        leftover.append(key)
    if leftover:
        raise ConversionError(
            f"the BERT checkpoint has weights with no DistilBERT counterpart: {sorted(leftover)}; only BertModel, "
            "BertForMaskedLM and BertForPreTraining weights can be converted"
        )
    return out, head


def _tied_projector(arrays: dict[str, np.ndarray]) -> bool:
    projector = arrays.get("vocab_projector.weight")
    embeddings = arrays.get(PREFIX + "embeddings.word_embeddings.weight")
    return projector is None or projector is embeddings or np.array_equal(projector, embeddings)


def _prepare_destination(dst: Path, src: Path, overwrite: bool) -> None:
    if dst.exists() and not dst.is_dir():
        raise NotADirectoryError(f"destination {dst} is a file; pass a folder")
    if dst.resolve() == src.resolve():
        raise ValueError(f"destination {dst} is the source folder; write the DistilBERT folder elsewhere")
    if dst.is_dir() and any(dst.iterdir()):
        if not overwrite:
            raise FileExistsError(f"destination {dst} is not empty; pass overwrite=True (--overwrite) to write into it")
        # weights of other formats left from an earlier model would be loaded instead of ours: remove them
        for name in (*WEIGHTS_NAMES.values(), *INDEX_NAMES.values()):
            stale = dst / name
            if name == WEIGHTS_NAMES["safetensors"]:
                continue  # replaced atomically by the new weights
            if stale.is_file():
                logger.info("removing %s from the destination", stale)
                stale.unlink()
    dst.mkdir(parents=True, exist_ok=True)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def copy_tokenizer_files(src: Path, dst: Path, *, model_max_length: int | None = None) -> list[Path]:
    """Copy ``vocab.txt`` and ``tokenizer.json`` (without stored padding / truncation) and write DistilBERT's
    ``tokenizer_config.json`` and ``special_tokens_map.json`` (settings such as ``do_lower_case`` kept)."""
    written = []
    if (src / "vocab.txt").is_file():
        shutil.copyfile(src / "vocab.txt", dst / "vocab.txt")
        written.append(dst / "vocab.txt")
    if (src / "tokenizer.json").is_file():
        fast = json.loads((src / "tokenizer.json").read_text(encoding="utf-8"))
        # padding / truncation are per-call settings; a stored one (all-MiniLM pads everything to 128) would leak
        # into every call of a tokenizer that honours the file as is
        fast["padding"] = None
        fast["truncation"] = None
        (dst / "tokenizer.json").write_text(json.dumps(fast, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(dst / "tokenizer.json")
    if not written:
        logger.warning("%s has no tokenizer files (%s): the DistilBERT folder has no tokenizer", src, TOKENIZER_FILES)
        return written
    tokenizer_config: dict[str, Any] = {}
    if (src / "tokenizer_config.json").is_file():
        tokenizer_config = json.loads((src / "tokenizer_config.json").read_text(encoding="utf-8"))
    tokenizer_config.pop("name_or_path", None)
    tokenizer_config.pop("auto_map", None)
    tokenizer_config["tokenizer_class"] = "DistilBertTokenizer"
    tokenizer_config["model_input_names"] = ["input_ids", "attention_mask"]  # no token_type_ids
    if model_max_length is not None:
        tokenizer_config.setdefault("model_max_length", model_max_length)
    _write_json(dst / "tokenizer_config.json", tokenizer_config)
    special = {
        "cls_token": "[CLS]",
        "mask_token": "[MASK]",
        "pad_token": "[PAD]",
        "sep_token": "[SEP]",
        "unk_token": "[UNK]",
    }
    if (src / "special_tokens_map.json").is_file():
        special = json.loads((src / "special_tokens_map.json").read_text(encoding="utf-8"))
    _write_json(dst / "special_tokens_map.json", special)
    written += [dst / "tokenizer_config.json", dst / "special_tokens_map.json"]
    return written


def convert_bert(
    src: str | os.PathLike[str],
    dst: str | os.PathLike[str],
    layers: Sequence[int] | None = None,
    *,
    overwrite: bool = False,
    allow_layer_norm_eps_mismatch: bool = False,
    copy_tokenizer: bool = True,
) -> DistilBertConfig:
    """Convert the BERT folder ``src`` (config.json + weights in any format the checkpoint package reads) into
    a DistilBERT folder ``dst`` (config.json, model.safetensors, tokenizer files).

    Args:
        src: BERT folder.
        dst: destination folder; must be empty or absent unless ``overwrite``.
        layers: teacher layer indices to keep, in order; ``None`` = :func:`default_layers`.
        overwrite: write into a non-empty ``dst``.
        allow_layer_norm_eps_mismatch: convert a BERT whose ``layer_norm_eps`` is not 1e-12 (with a warning).
        copy_tokenizer: copy the tokenizer files.

    Returns:
        The written :class:`DistilBertConfig`.
    """
    src, dst = Path(src), Path(dst)
    if not (src / "config.json").is_file():
        raise FileNotFoundError(f"{src} has no config.json; pass a BERT checkpoint folder")
    bert_config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    n_teacher = int(bert_config.get("num_hidden_layers", 0))
    layers = check_layers(default_layers(n_teacher) if layers is None else layers, n_teacher)
    config = bert_to_distilbert_config(
        bert_config, len(layers), allow_layer_norm_eps_mismatch=allow_layer_norm_eps_mismatch
    )
    fmt, files = find_weights(src)
    arrays, head = convert_state_dict(read_weights(files, fmt), config, layers)
    if head == "masked_lm" and not _tied_projector(arrays):
        config = config.replace(tie_word_embeddings=False)
    arrays, report = prepare_state_dict(arrays, config, head, source=str(src))  # checks every shape
    if report.missing:
        raise ConversionError(f"the BERT checkpoint lacks weights DistilBERT needs: {report.missing}")
    _prepare_destination(dst, src, overwrite)
    save_pretrained(dst, config, arrays, head)
    if copy_tokenizer:
        copy_tokenizer_files(src, dst, model_max_length=config.max_position_embeddings)
    logger.info(
        "converted %s (%d-layer BERT, %s) into %s: %s with teacher layers %s",
        src,
        n_teacher,
        fmt,
        dst,
        "DistilBertForMaskedLM" if head == "masked_lm" else "DistilBertModel",
        layers,
    )
    return config
