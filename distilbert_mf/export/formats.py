"""The export formats: one entry per format (framework, artifact file, what it needs installed, dtypes, writer).

Nothing here imports a framework: :func:`check_installed` looks the modules up without importing them, so a
missing exporter or runtime is reported before anything is loaded or written.
"""

from __future__ import annotations

import importlib
import importlib.util
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

DTYPES = ("float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ExportFormat:
    """An export format.

    ``framework``: the distilbert_mf framework whose model is traced (``pt``, ``tf``, ``flax``); ``artifact``: the
    file inside the destination folder that a runtime loads (``"."``: the folder itself, a SavedModel);
    ``writer`` / ``exporter``: what writing needs; ``runtime``: what loading it back needs (verification,
    quantisation); ``extras``: the pip extras that provide both; ``dtypes``: the parameter dtypes it can be
    written in; ``input_dtype``: the integer dtype of its inputs.
    """

    name: str
    framework: str
    artifact: str
    writer: str  # "module:function" inside distilbert_mf.export
    exporter: tuple[tuple[str, str], ...]  # (module, pip package) needed to write
    runtime: tuple[tuple[str, str], ...]  # (module, pip package) needed to load and run the artifact
    extras: str
    dtypes: tuple[str, ...]
    input_dtype: str
    description: str

    def load_writer(self) -> Callable[..., Any]:
        module, function = self.writer.split(":")
        return getattr(importlib.import_module(f"distilbert_mf.export.{module}"), function)


FORMATS: dict[str, ExportFormat] = {
    fmt.name: fmt
    for fmt in (
        ExportFormat(
            name="onnx",
            framework="pt",
            artifact="model.onnx",
            writer="onnx_export:write_onnx",
            exporter=(("torch", "torch"), ("onnx", "onnx"), ("onnxscript", "onnxscript")),
            runtime=(("onnxruntime", "onnxruntime"),),
            extras="export,torch",
            dtypes=("float32", "float16"),
            input_dtype="int64",
            description="ONNX (torch.onnx dynamo exporter), run by ONNX Runtime",
        ),
        ExportFormat(
            name="exported_program",
            framework="pt",
            artifact="model.pt2",
            writer="exported_program:write_exported_program",
            exporter=(("torch", "torch"),),
            runtime=(("torch", "torch"),),
            extras="torch",
            dtypes=("float32", "bfloat16"),
            input_dtype="int64",
            description="torch.export ExportedProgram (.pt2), loaded by torch.export.load",
        ),
        ExportFormat(
            name="saved_model",
            framework="tf",
            artifact=".",
            writer="saved_model:write_saved_model",
            exporter=(("tensorflow", "tensorflow"), ("keras", "keras")),
            runtime=(("tensorflow", "tensorflow"),),
            extras="tensorflow",
            dtypes=("float32",),
            input_dtype="int64",
            description="TensorFlow SavedModel with serving_default (int64) and serving_int32 signatures",
        ),
        ExportFormat(
            name="stablehlo",
            framework="flax",
            artifact="model.jax_export",
            writer="stablehlo:write_stablehlo",
            exporter=(("jax", "jax"), ("flax", "flax")),
            runtime=(("jax", "jax"),),
            extras="flax",
            dtypes=("float32", "bfloat16"),
            input_dtype="int32",
            description="StableHLO through jax.export (serialised Exported), run by jax.export.deserialize",
        ),
    )
}


class MissingExportDependencyError(ImportError):
    """A package that a format needs is not installed; the message names the pip extra to install."""


def get_format(name: str) -> ExportFormat:
    """The :class:`ExportFormat` called ``name`` (ValueError listing the formats otherwise)."""
    if not isinstance(name, str):
        raise TypeError(f"format must be a string, one of {', '.join(FORMATS)}; got {type(name).__name__}")
    fmt = FORMATS.get(name.strip().lower().replace("-", "_"))
    if fmt is None:
        raise ValueError(f"unknown export format {name!r}; choose one of {', '.join(FORMATS)}")
    return fmt


def _installed(module: str) -> bool:
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return False
    return spec is not None and spec.origin not in (None, "namespace")  # a bare folder is not the package


def check_installed(fmt: ExportFormat, *, runtime: bool) -> None:
    """Raise :class:`MissingExportDependencyError` naming the extra when a package ``fmt`` needs is missing
    (the runtime's packages too when ``runtime``: verification and quantisation load the artifact)."""
    needed = fmt.exporter + (fmt.runtime if runtime else ())
    missing = list(dict.fromkeys(package for module, package in needed if not _installed(module)))
    if missing:
        why = "to write and verify" if runtime else "to write"
        raise MissingExportDependencyError(
            f"the {fmt.name} export needs {', '.join(missing)} {why} it, which is not installed: "
            f"pip install 'distilbert-mf[{fmt.extras}]'"
        )


__all__ = ["DTYPES", "FORMATS", "ExportFormat", "MissingExportDependencyError", "check_installed", "get_format"]
