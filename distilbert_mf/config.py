"""Framework-neutral DistilBERT configuration, compatible with transformers' ``config.json``.

``DistilBertConfig`` is frozen: derive a changed copy with :meth:`DistilBertConfig.replace`.
A ``config.json`` read with :meth:`DistilBertConfig.from_pretrained` and written back with
:meth:`DistilBertConfig.save_pretrained` is unchanged: unknown keys are kept, and fields that the file
did not contain are only written when they differ from their default.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from distilbert_mf.hub import CONFIG_NAME, resolve_file

logger = logging.getLogger(__name__)

MODEL_TYPE = "distilbert"
SUPPORTED_ACTIVATIONS = ("gelu", "relu", "gelu_new", "gelu_pytorch_tanh")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# transformers' generic names for DistilBERT's fields
ALIASES = {"hidden_size": "dim", "num_attention_heads": "n_heads", "num_hidden_layers": "n_layers"}


def _default_id2label(num_labels: int) -> dict[int, str]:
    return {i: f"LABEL_{i}" for i in range(num_labels)}


@dataclasses.dataclass(frozen=True, eq=True)
class DistilBertConfig:
    """DistilBERT hyper-parameters (field names and defaults of transformers' ``DistilBertConfig``)."""

    vocab_size: int = 30522  # number of WordPiece tokens
    max_position_embeddings: int = 512  # longest sequence the position table covers
    sinusoidal_pos_embds: bool = False  # fixed interleaved sin/cos position table instead of a learned one
    n_layers: int = 6  # transformer blocks
    n_heads: int = 12  # attention heads per block
    dim: int = 768  # hidden size
    hidden_dim: int = 3072  # feed-forward inner size
    dropout: float = 0.1  # dropout on embeddings, attention output and feed-forward output
    attention_dropout: float = 0.1  # dropout on attention probabilities
    activation: str = "gelu"  # feed-forward activation: one of SUPPORTED_ACTIVATIONS
    initializer_range: float = 0.02  # std of the normal initialiser
    qa_dropout: float = 0.1  # dropout before the question-answering head
    seq_classif_dropout: float = 0.2  # dropout before the classification heads
    pad_token_id: int = 0  # id of [PAD]; its embedding row is zero-initialised
    tie_word_embeddings: bool = True  # masked-LM projector shares the word embedding matrix
    id2label: dict[int, str] | None = None  # label names by class index (None: LABEL_0, LABEL_1)
    label2id: dict[str, int] | None = None  # inverse of id2label (None: derived)
    num_labels: int | None = None  # classes of the classification heads (None: len(id2label) or 2)
    problem_type: str | None = None  # regression / single_label_classification / multi_label_classification
    output_attentions: bool = False  # models return attention probabilities unless a call says otherwise
    output_hidden_states: bool = False  # models return every hidden state unless a call says otherwise
    return_dict: bool = True  # models return output objects (False: tuples, transformers' order)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, compare=False)  # unknown config.json keys, kept
    _source_keys: tuple[str, ...] | None = dataclasses.field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        id2label = self.id2label
        if id2label is None and self.label2id is not None:  # label2id alone: its inverse names the classes
            if not isinstance(self.label2id, Mapping):
                raise TypeError(f"label2id must be a dict of name -> class index, got {type(self.label2id).__name__}")
            try:
                id2label = {int(v): str(k) for k, v in self.label2id.items()}
            except (TypeError, ValueError) as err:
                raise ValueError(f"label2id values must be integer class indices, got {self.label2id}") from err
        if id2label is not None:
            if not isinstance(id2label, Mapping):
                raise TypeError(f"id2label must be a dict of class index -> name, got {type(id2label).__name__}")
            try:
                id2label = {int(k): str(v) for k, v in id2label.items()}
            except (TypeError, ValueError) as err:
                raise ValueError(
                    f"id2label keys must be integers (or integer strings), got {list(self.id2label)}"
                ) from err
        num_labels = self.num_labels
        if num_labels is None:
            num_labels = len(id2label) if id2label else 2
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"num_labels must be a positive integer, got {num_labels!r}")
        if id2label is None:
            id2label = _default_id2label(num_labels)
        if len(id2label) != num_labels or sorted(id2label) != list(range(num_labels)):
            raise ValueError(
                f"num_labels={num_labels} is inconsistent with id2label={id2label}: id2label must map exactly "
                f"the indices 0..{num_labels - 1}. Pass matching num_labels and id2label, or only one of them."
            )
        label2id = self.label2id
        if label2id is None:
            label2id = {v: k for k, v in id2label.items()}
        else:
            if not isinstance(label2id, Mapping):
                raise TypeError(f"label2id must be a dict of name -> class index, got {type(label2id).__name__}")
            try:
                label2id = {str(k): int(v) for k, v in label2id.items()}
            except (TypeError, ValueError) as err:
                raise ValueError(f"label2id values must be integer class indices, got {self.label2id}") from err
        object.__setattr__(self, "id2label", id2label)
        object.__setattr__(self, "label2id", label2id)
        object.__setattr__(self, "num_labels", num_labels)
        object.__setattr__(self, "extra", dict(self.extra))
        self._validate()

    def _validate(self) -> None:
        for name in ("vocab_size", "max_position_embeddings", "n_layers", "n_heads", "dim", "hidden_dim"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.dim % self.n_heads != 0:
            raise ValueError(
                f"n_heads={self.n_heads} must divide dim={self.dim} (each head gets dim / n_heads features); "
                f"choose n_heads among the divisors of {self.dim}"
            )
        for name in ("dropout", "attention_dropout", "qa_dropout", "seq_classif_dropout"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not 0.0 <= float(value) < 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1), got {value!r}")
        if (
            isinstance(self.initializer_range, bool)
            or not isinstance(self.initializer_range, (int, float))
            or self.initializer_range < 0
        ):
            raise ValueError(f"initializer_range must be a number >= 0, got {self.initializer_range!r}")
        for name in (
            "sinusoidal_pos_embds",
            "tie_word_embeddings",
            "output_attentions",
            "output_hidden_states",
            "return_dict",
        ):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if self.activation not in SUPPORTED_ACTIVATIONS:
            raise ValueError(f"activation must be one of {SUPPORTED_ACTIVATIONS}, got {self.activation!r}")
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type must be None or one of {PROBLEM_TYPES}, got {self.problem_type!r}")
        pad = self.pad_token_id
        if pad is not None and (isinstance(pad, bool) or not isinstance(pad, int) or not 0 <= pad < self.vocab_size):
            raise ValueError(f"pad_token_id must be in [0, vocab_size={self.vocab_size}), got {self.pad_token_id!r}")

    # transformers' generic names
    @property
    def hidden_size(self) -> int:
        return self.dim

    @property
    def num_attention_heads(self) -> int:
        return self.n_heads

    @property
    def num_hidden_layers(self) -> int:
        return self.n_layers

    @property
    def head_dim(self) -> int:
        return self.dim // self.n_heads

    @property
    def model_type(self) -> str:
        return MODEL_TYPE

    def __hash__(self) -> int:
        # hashable despite its dict fields (consistent with ==), so a model can keep its config as static jit metadata
        return hash(tuple(_freeze(getattr(self, f.name)) for f in dataclasses.fields(self) if f.compare))

    def replace(self, **changes: Any) -> DistilBertConfig:
        """Return a copy with ``changes`` applied (aliases accepted); unknown names raise ``TypeError``."""
        if not changes:
            return self
        data = {k: v for k, v in self.to_dict(full=True).items() if k not in ALIASES}  # aliases: re-derived
        data.update(_apply_aliases(changes, strict=True))
        _relabel(data, changes)
        config = DistilBertConfig.from_dict(data)
        object.__setattr__(config, "_source_keys", self._source_keys)
        return config

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], **overrides: Any) -> DistilBertConfig:
        """Build a config from a ``config.json``-style dict; unknown keys are kept in ``extra``."""
        if not isinstance(data, Mapping):
            raise TypeError(f"from_dict expects a dict, got {type(data).__name__}")
        model_type = data.get("model_type", MODEL_TYPE)
        if model_type != MODEL_TYPE:
            raise UnsupportedModelTypeError(model_type)
        source_keys = tuple(data)
        for alias, name in ALIASES.items():
            if alias in data and name in data and data[alias] != data[name]:
                raise ValueError(
                    f"config sets {name}={data[name]!r} and its alias {alias}={data[alias]!r}; they must agree"
                )
        merged = _apply_aliases(dict(data), strict=False)
        overrides = _apply_aliases(overrides, strict=True)
        _relabel(merged, overrides)
        merged.update(overrides)
        field_names = {f.name for f in dataclasses.fields(cls)} - {"extra", "_source_keys"}
        known = {k: v for k, v in merged.items() if k in field_names}
        extra = {k: v for k, v in merged.items() if k not in field_names and k not in ALIASES}
        extra.update(merged.get("extra", {}) if isinstance(merged.get("extra"), Mapping) else {})
        extra.pop("extra", None)
        config = cls(**known, extra=extra)
        object.__setattr__(config, "_source_keys", source_keys)
        return config

    def to_dict(self, *, full: bool = False) -> dict[str, Any]:
        """The ``config.json`` content. ``full=True`` writes every field, defaults included."""
        defaults = DistilBertConfig()
        source = set(self._source_keys or ())
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("extra", "_source_keys"):
                continue
            value = getattr(self, f.name)
            if f.name == "id2label":
                value = {str(k): v for k, v in value.items()}
                default_value = {str(k): v for k, v in _default_id2label(self.num_labels).items()}
            elif f.name == "label2id":
                default_value = {v: k for k, v in _default_id2label(self.num_labels).items()}
            elif f.name == "num_labels":
                default_value = 2
            else:
                default_value = getattr(defaults, f.name)
            if full or self._source_keys is None or f.name in source or value != default_value:
                out[f.name] = value
        for key in source & set(ALIASES):
            out[key] = getattr(self, ALIASES[key])
            if not full and ALIASES[key] not in source:
                out.pop(ALIASES[key], None)  # the file named this field only by its alias: keep it that way
        if "num_labels" in out and not full and "num_labels" not in source and "id2label" in out:
            del out["num_labels"]  # transformers derives it from id2label
        out.update(self.extra)
        out["model_type"] = MODEL_TYPE
        return dict(sorted(out.items()))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write ``config.json`` into ``directory`` atomically; returns the file's path."""
        from distilbert_mf._io import atomic_write_bytes

        path = Path(directory)
        path.mkdir(parents=True, exist_ok=True)
        target = path / CONFIG_NAME
        atomic_write_bytes(target, self.to_json_string().encode("utf-8"))
        return target

    @classmethod
    def from_json_file(cls, path: str | os.PathLike[str], **overrides: Any) -> DistilBertConfig:
        try:
            with open(path, encoding="utf-8") as handle:
                data = json.load(handle)
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from err
        return cls.from_dict(data, **overrides)

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike[str],
        *,
        revision: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        local_files_only: bool = False,
        token: str | bool | None = None,
        subfolder: str | None = None,
        force_download: bool = False,
        user_agent: dict[str, Any] | str | None = None,
        trust_remote_code: bool = False,
        return_unused_kwargs: bool = False,
        **overrides: Any,
    ) -> DistilBertConfig | tuple[DistilBertConfig, dict[str, Any]]:
        """Read ``config.json`` from a folder, a file, a built-in name or a Hub repo id; ``overrides`` replace
        fields (``num_labels=3``, ``id2label={...}``: the label fields follow). Hub keywords as in every
        ``from_pretrained``. ``return_unused_kwargs=True`` returns ``(config, {})``: every keyword is used or
        refused. ``trust_remote_code=True`` is refused: no remote code ever runs."""
        if trust_remote_code:
            raise ValueError("trust_remote_code=True is not supported: distilbert_mf never runs code from a checkpoint")
        path = Path(name_or_path)
        if path.is_file():
            config = cls.from_json_file(path, **overrides)
        else:
            config_file = resolve_file(
                name_or_path,
                CONFIG_NAME,
                revision=revision,
                cache_dir=cache_dir,
                local_files_only=local_files_only,
                token=token,
                subfolder=subfolder,
                force_download=force_download,
                user_agent=user_agent,
            )
            config = cls.from_json_file(config_file, **overrides)
        return (config, {}) if return_unused_kwargs else config


class UnsupportedModelTypeError(ValueError):
    """A config of another ``model_type``: names it and says what distilbert_mf loads instead."""

    def __init__(self, model_type: Any) -> None:
        self.model_type = model_type
        bert = (
            " This is a BERT checkpoint: convert it exactly (every layer, or a subset) with "
            "distilbert_mf.checkpoint.bert.convert_bert(SRC, DST) (or `python conversion/bert_to_distilbert.py SRC "
            "DST` from a source checkout), then load DST."
            if model_type == "bert"
            else " Use transformers for other model types."
        )
        super().__init__(
            f"this config has model_type={model_type!r}; distilbert_mf loads model_type 'distilbert' "
            f"checkpoints, and BERT ones through its BERT conversion.{bert}"
        )


def _relabel(data: dict[str, Any], changes: Mapping[str, Any]) -> None:
    """Drop from ``data`` the label fields that ``changes`` make stale: a new ``num_labels`` replaces the label
    names, new ``id2label`` / ``label2id`` replace the other mapping and the count (as transformers'
    ``from_pretrained(num_labels=...)`` / ``(id2label=...)``)."""
    given = {"num_labels", "id2label", "label2id"} & set(changes)
    if given:
        for name in {"num_labels", "id2label", "label2id"} - given:
            data.pop(name, None)


def _apply_aliases(data: Mapping[str, Any], *, strict: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    field_names = {f.name for f in dataclasses.fields(DistilBertConfig)} - {"_source_keys"}
    for key, value in data.items():
        name = ALIASES.get(key, key)
        if strict and name not in field_names:
            raise TypeError(
                f"unknown DistilBertConfig field {key!r}; known fields: {sorted(field_names - {'extra'})} "
                f"and aliases {sorted(ALIASES)}"
            )
        out[name] = value
    return out


def _refuse_assignment(self: DistilBertConfig, name: str, value: Any) -> None:
    fields = {f.name for f in dataclasses.fields(DistilBertConfig)} | set(ALIASES)
    if name in ("output_attentions", "output_hidden_states", "return_dict"):
        instead = (
            f"pass {name}={value!r} to the model call, or give the model a changed copy: "
            f"model.config = model.config.replace({name}={value!r})"
        )
    elif name in fields:
        instead = (
            f"build a changed copy with config.replace({name}={value!r}); to change a loaded model's "
            f"{name}, load it again: Model.from_pretrained(path, {name}={value!r}"
            + (", ignore_mismatched_sizes=True)" if name in ("num_labels", "id2label", "label2id") else ")")
        )
    else:
        instead = f"{name!r} is not a DistilBertConfig field; unknown config.json keys live in config.extra"
    raise dataclasses.FrozenInstanceError(f"DistilBertConfig is immutable (it is hashed and shared): {instead}")


DistilBertConfig.__setattr__ = _refuse_assignment  # type: ignore[method-assign,assignment]
DistilBertConfig.__delattr__ = lambda self, name: _refuse_assignment(self, name, None)  # type: ignore[method-assign]


def _freeze(value: Any) -> Any:
    """A hashable view of a config field value (dicts and lists become sorted tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((str(k), _freeze(v)) for k, v in value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_freeze(v) for v in value)
    return value
