"""The pretrained-model core, written once for PyTorch, Keras and Flax.

:class:`PreTrainedModel` is the framework-neutral base of every model class: ``from_pretrained``,
``save_pretrained``, ``push_to_hub``, the canonical state dict in and out, strict key checks, the tied masked-LM
projector, the load report, dtype resolution (``"auto"`` included), ``ignore_mismatched_sizes``,
``num_parameters``, the embedding accessors and ``resize_token_embeddings``. Everything here is numpy.

Each framework supplies a small adapter module (its ``loading.py``, named by the model class's ``weights_io``):

==========================================  ======================================================================
``check_options(cls, dtype, options)``      validate the framework's own ``from_pretrained`` keywords before any
                                            file is read; returns ``(dtype, options)`` normalised
``declare(cls, config, dtype, options,      a model whose variables exist with the right shapes, dtype and device
fill)``                                     but whose values are not drawn where ``fill`` (canonical keys about to
                                            be assigned) covers them
``assign(model, arrays, owned)``            copy canonical arrays (PyTorch names and layout, already checked) into
                                            the variables; ``owned``: the arrays are the loader's own (a memory map
                                            it may adopt or give back page by page)
``read(model)``                             every variable as a canonical array (the tied projector may be left out)
``frozen_keys(model)``                      canonical keys of weights that do not train
``replace_vocabulary(model, config,         give the model a new vocabulary size: new word embeddings (and
arrays)``                                   projector) holding ``arrays``, ``model.config = config``
==========================================  ======================================================================
"""

from __future__ import annotations

import importlib
import logging
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import numpy as np

from distilbert_mf.checkpoint.loading import (
    DEFAULT_MAX_SHARD_SIZE,
    LoadReport,
    ShapeMismatchError,
    check_arrays,
    read_pretrained,
    save_pretrained,
)
from distilbert_mf.checkpoint.names import PREFIX, TIED_KEY, TIED_SOURCE, expected_shapes
from distilbert_mf.config import DistilBertConfig

logger = logging.getLogger(__name__)

Model = TypeVar("Model", bound="PreTrainedModel")

# from_pretrained keywords every framework accepts (besides config overrides and the framework's own options)
HUB_OPTIONS = ("revision", "cache_dir", "local_files_only", "token", "subfolder", "use_safetensors", "force_download")
COMPATIBILITY_FLAGS = ("from_pt", "from_tf", "from_flax", "low_cpu_mem_usage")
WORD_EMBEDDINGS = "embeddings.word_embeddings.weight"
POSITION_EMBEDDINGS = "embeddings.position_embeddings.weight"


def checkpoint_dtype(arrays: Mapping[str, np.ndarray]) -> str:
    """The float dtype a checkpoint stores (its word embeddings'; float64 reads as float32): ``dtype="auto"``."""
    stored = arrays.get(TIED_SOURCE, arrays.get(WORD_EMBEDDINGS))
    if stored is None:
        stored = next((a for a in arrays.values() if a.dtype.kind == "f" or a.dtype.name == "bfloat16"), None)
    name = "float32" if stored is None else stored.dtype.name
    return name if name in ("bfloat16", "float16") else "float32"


def _unknown_argument(err: TypeError, cls: type, name_or_path: Any) -> TypeError:
    known = sorted(
        {
            "config",
            "dtype",
            "ignore_mismatched_sizes",
            "output_loading_info",
            "trust_remote_code",
            *HUB_OPTIONS,
            *COMPATIBILITY_FLAGS,
            *cls.load_options,
        }
    )
    return TypeError(f"{err} — {cls.__name__}.from_pretrained({str(name_or_path)!r}) arguments: {known}")


class PreTrainedModel:
    """What every DistilBERT model shares, in every framework: config, canonical weights, loading and saving.

    Subclasses set ``head`` (a key of :data:`distilbert_mf.checkpoint.names.HEADS`), ``framework`` (``"pt"``,
    ``"tf"``, ``"flax"``), ``weights_io`` (the adapter module) and ``load_options`` (their own ``from_pretrained``
    keywords with defaults).
    """

    head: ClassVar[str] = "base"
    framework: ClassVar[str] = ""
    weights_io: ClassVar[str] = ""
    load_options: ClassVar[Mapping[str, Any]] = {}
    config: DistilBertConfig

    # ------------------------------------------------------------------------------------------- the adapter
    @classmethod
    def _io(cls) -> Any:
        return importlib.import_module(cls.weights_io)

    # ------------------------------------------------------------------------------------------- structure
    @property
    def base_model(self) -> Any:
        """The encoder: ``self`` for the base model, ``self.distilbert`` for the heads."""
        return self if self.head == "base" else self.distilbert

    def _tied(self) -> bool:
        return self.head == "masked_lm" and self.config.tie_word_embeddings

    def _output(self, output: Any, return_dict: bool | None) -> Any:
        """``output`` as is, or as a tuple of its non-``None`` fields when ``return_dict`` (default: the config's)
        is False — transformers' order: loss first when there is one."""
        use_dict = self.config.return_dict if return_dict is None else return_dict
        return output if use_dict else output.to_tuple()

    # ------------------------------------------------------------------------------------------- canonical weights
    def canonical_state_dict(self) -> dict[str, np.ndarray]:
        """Every canonical key of this head (tied projector included) as numpy, PyTorch layout, in the variable
        dtype, in state-dict order."""
        state = self._io().read(self)
        if self._tied():
            state[TIED_KEY] = state.get(TIED_KEY, state[TIED_SOURCE])
        expected = expected_shapes(self.config, self.head)
        if set(state) != set(expected):  # a broken model definition, not a user error
            raise RuntimeError(
                f"{type(self).__name__}: variables do not match the canonical keys: "
                f"{sorted(set(state) ^ set(expected))}"
            )
        return {key: state[key] for key in expected}

    def load_canonical_state_dict(self, arrays: Mapping[str, Any], *, strict: bool = True) -> LoadReport:
        """Copy canonical ``arrays`` (PyTorch names and layout, any float dtype) into the variables.

        Every shape is checked first (:class:`ShapeMismatchError` naming the key and both shapes), so a failed load
        changes nothing. With ``strict`` (default) a missing or unexpected key raises ``KeyError``; with
        ``strict=False`` missing weights keep their values. With tied embeddings ``vocab_projector.weight`` is
        only checked: the projector reads the word embeddings. Returns the :class:`LoadReport`.
        """
        arrays = {key: np.asarray(value) for key, value in arrays.items()}
        checked, report = check_arrays(arrays, self.config, self.head, source=type(self).__name__)
        if strict and (report.missing or report.unexpected):
            raise KeyError(
                f"load_canonical_state_dict(strict=True) into {type(self).__name__}: missing keys {report.missing}, "
                f"unexpected keys {report.unexpected}; pass strict=False to load a subset"
            )
        self._io().assign(self, checked, owned=False)
        return report

    # ------------------------------------------------------------------------------------------- from_pretrained
    @classmethod
    def from_pretrained(
        cls: type[Model],
        name_or_path: str | os.PathLike[str],
        *,
        config: DistilBertConfig | None = None,
        dtype: Any = None,
        ignore_mismatched_sizes: bool = False,
        output_loading_info: bool = False,
        trust_remote_code: bool = False,
        **kwargs: Any,
    ) -> Model:
        """Load a built-in name, a folder or a Hub repo holding any weights format into this class, in eval mode.

        ``dtype``: the parameter dtype (``"auto"``: the checkpoint's); each framework documents its default and
        its own keywords (PyTorch ``device`` / ``device_map`` / ``attn_implementation`` / ``torch_dtype``, Keras
        ``name``, Flax ``param_dtype`` / ``rngs``). Hub keywords: ``revision``, ``cache_dir``,
        ``local_files_only``, ``token``, ``subfolder``, ``use_safetensors``, ``force_download``. Any other keyword
        overrides a config field (``num_labels=3``, ``id2label=...``, ``output_hidden_states=True``, ...).

        ``ignore_mismatched_sizes=True`` initialises afresh the weights whose checkpoint shape differs (a new head
        size) and reports them by name with both shapes. ``output_loading_info=True`` returns
        ``(model, {"missing_keys", "unexpected_keys", "mismatched_keys", "error_msgs"})``.
        ``from_pt`` / ``from_tf`` / ``from_flax`` are accepted for compatibility (every format loads without
        them); ``low_cpu_mem_usage`` is accepted and has no effect: loading never holds two copies of the weights.
        ``trust_remote_code=True`` is refused: no remote code ever runs.
        """
        if trust_remote_code:
            raise ValueError(
                "trust_remote_code=True is not supported: distilbert_mf never runs code from a checkpoint; "
                "DistilBERT needs none (pass trust_remote_code=False or leave it out)"
            )
        hub = {name: kwargs.pop(name) for name in HUB_OPTIONS if name in kwargs}
        for name in COMPATIBILITY_FLAGS:
            kwargs.pop(name, None)
        options = {name: kwargs.pop(name, default) for name, default in cls.load_options.items()}
        dtype, options = cls._io().check_options(cls, dtype, options)  # bad options fail before any file is read
        try:
            config, state, source = read_pretrained(name_or_path, cls.head, config=config, overrides=kwargs, **hub)
        except TypeError as err:
            if "unknown DistilBertConfig field" in str(err):
                raise _unknown_argument(err, cls, name_or_path) from None
            raise
        if isinstance(dtype, str) and dtype == "auto":
            dtype = checkpoint_dtype(state)
        arrays, report = check_arrays(
            state, config, cls.head, source=source, from_file=True, ignore_mismatched_sizes=ignore_mismatched_sizes
        )
        del state
        model = cls._io().declare(cls, config, dtype, options, fill=set(arrays))
        cls._io().assign(model, arrays, owned=True, options=options)
        report.log(type(model).__name__)
        if output_loading_info:
            return model, report.loading_info()
        return model

    # ------------------------------------------------------------------------------------------- saving
    def save_pretrained(
        self,
        directory: str | os.PathLike[str],
        *,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        safe_serialization: bool = True,
        push_to_hub: bool = False,
        **hub_kwargs: Any,
    ) -> list[Path]:
        """Write ``config.json`` + ``model.safetensors`` (``safe_serialization=False``: ``pytorch_model.bin``),
        PyTorch key names, the tied projector stored once, sharded past ``max_shard_size``; every file appears
        atomically. ``push_to_hub=True`` then uploads the folder (``repo_id`` defaults to the folder name; other
        keywords as :meth:`push_to_hub`). Returns the written files."""
        if hub_kwargs and not push_to_hub:
            raise TypeError(f"save_pretrained got {sorted(hub_kwargs)}, which only apply with push_to_hub=True")
        fmt = "safetensors" if safe_serialization else "pytorch_bin"
        written = save_pretrained(
            directory, self.config, self.canonical_state_dict(), self.head, max_shard_size=max_shard_size, fmt=fmt
        )
        if push_to_hub:
            from distilbert_mf.checkpoint.upload import upload_folder

            repo_id = hub_kwargs.pop("repo_id", Path(directory).name)
            upload_folder(directory, repo_id, **hub_kwargs)
        return written

    def push_to_hub(
        self,
        repo_id: str,
        *,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | bool | None = None,
        revision: str | None = None,
        create_pr: bool = False,
        max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
        safe_serialization: bool = True,
    ) -> str:
        """Save to a temporary folder and upload it to the Hub repo ``repo_id`` (created if needed) through
        ``huggingface_hub``; ``HF_ENDPOINT`` selects the server. Returns the commit URL."""
        from distilbert_mf.checkpoint.upload import upload_folder

        with tempfile.TemporaryDirectory(prefix="distilbert_mf_push_") as folder:
            self.save_pretrained(folder, max_shard_size=max_shard_size, safe_serialization=safe_serialization)
            return upload_folder(
                folder,
                repo_id,
                commit_message=commit_message or f"Upload {type(self).__name__}",
                private=private,
                token=token,
                revision=revision,
                create_pr=create_pr,
            )

    # ------------------------------------------------------------------------------------------- parameters
    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """The number of parameters (the tied projector counted once); ``only_trainable`` leaves out frozen ones
        (the sinusoidal table, weights you froze); ``exclude_embeddings`` the word and position tables."""
        shapes = expected_shapes(self.config, self.head)
        if self._tied():
            shapes.pop(TIED_KEY)
        frozen = self._io().frozen_keys(self) if only_trainable else set()
        embeddings = {key for key in shapes if key.removeprefix(PREFIX) in (WORD_EMBEDDINGS, POSITION_EMBEDDINGS)}
        skip = frozen | (embeddings if exclude_embeddings else set())
        return int(sum(int(np.prod(shape)) for key, shape in shapes.items() if key not in skip))

    def get_input_embeddings(self) -> Any:
        """The word-embedding layer (``distilbert.embeddings.word_embeddings``)."""
        return self.base_model.embeddings.word_embeddings

    def set_input_embeddings(self, value: Any) -> None:
        """Replace the word-embedding layer; its table must be (vocab_size, dim) of the config."""
        embeddings = self.base_model.embeddings
        setter = getattr(self._io(), "set_sublayer", None)  # Keras locks built layers; its adapter unlocks
        if setter is None:
            embeddings.word_embeddings = value
        else:
            setter(embeddings, "word_embeddings", value)
        if self._tied():
            self.tie_weights()

    def get_output_embeddings(self) -> Any:
        """The masked-LM ``vocab_projector``; ``None`` for the other heads."""
        return self.vocab_projector if self.head == "masked_lm" else None

    def tie_weights(self) -> None:
        """Make the tied projector read the word embeddings (frameworks that hold a separate variable override)."""

    def resize_token_embeddings(self, new_num_tokens: int | None = None, pad_to_multiple_of: int | None = None) -> Any:
        """Give the model ``new_num_tokens`` word embeddings (rounded up to ``pad_to_multiple_of``), as transformers:
        kept rows unchanged, new rows drawn from a normal distribution with the old rows' mean and covariance
        (falling back to N(0, initializer_range) when that is degenerate), the masked-LM projector resized with
        them (still tied; new bias entries at the old bias's mean). ``config.vocab_size`` follows. Returns the new embedding layer."""
        from distilbert_mf.checkpoint.resize import resized_vocabulary

        config, arrays = resized_vocabulary(
            self.canonical_state_dict(), self.config, self.head, new_num_tokens, pad_to_multiple_of
        )
        if config.vocab_size != self.config.vocab_size:
            self._io().replace_vocabulary(self, config, arrays)
        return self.get_input_embeddings()


__all__ = ["LoadReport", "PreTrainedModel", "ShapeMismatchError", "checkpoint_dtype"]
