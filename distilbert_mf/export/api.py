"""``export(model_or_path, dst, format=...)``: write a serving artifact, verify it, and only then put it in place.

Every export is written into a temporary folder next to ``dst`` (the artifact, ``config.json``, the tokenizer
files and ``export.json``), verified there in a fresh process that never imports distilbert_mf, and renamed onto
``dst`` at the end: an error, a failed verification or an interruption leaves nothing half-written behind.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from distilbert_mf.conversion import TOKENIZER_FILES
from distilbert_mf.export.formats import ExportFormat, check_installed, get_format
from distilbert_mf.export.quantize import QUANTIZED_NAME, check_labelled_file, check_quantize
from distilbert_mf.export.tasks import INPUT_NAMES, ExportTask, resolve_task, task_of_head
from distilbert_mf.export.verify import ExportVerificationError, VerificationReport, check_atol

logger = logging.getLogger(__name__)

METADATA_NAME = "export.json"
_UMASK = os.umask(0)
os.umask(_UMASK)


class DestinationExistsError(FileExistsError):
    """``dst`` exists and ``overwrite`` was not given (``cli_message`` names ``--overwrite``)."""

    def __init__(self, dst: Path) -> None:
        super().__init__(f"destination {dst} already exists; pass overwrite=True to replace it")
        self.cli_message = f"destination {dst} already exists; pass --overwrite to replace it"


@dataclass
class ExportResult:
    """What :func:`export` wrote: the folder, the artifact in it, its verification and quantisation."""

    path: Path
    format: str
    task: str
    head: str
    dtype: str
    artifact: Path
    files: list[str]
    opset: int | None = None
    verification: VerificationReport | None = None
    quantization: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def lines(self) -> list[str]:
        """A human-readable summary (what the CLI prints)."""
        out = [f"exported {self.task} ({self.head}) as {self.format} ({self.dtype}) to {self.path}"]
        out += [f"  {name}" for name in self.files]
        if self.verification is not None:
            out += self.verification.lines()
        if self.quantization is not None:
            q = self.quantization
            out.append(
                f"int8 model {q['file']}: {q['size_bytes'] / 1e6:.1f} MB (float32 {q['float32_size_bytes'] / 1e6:.1f} MB)"
            )
            for name, diff in q.get("vs_source", {}).get("max_abs_diff", {}).items():
                agree = q["vs_source"]["argmax_agreement"][name]
                out.append(f"  {name}: max|Δ| vs source {diff:.3g}, argmax agreement {100 * agree:.2f}%")
            acc = q.get("accuracy")
            if acc:
                out.append(
                    f"  accuracy on {acc['file']} ({acc['examples']} examples): source {100 * acc['source']:.2f}%, "
                    f"onnx float32 {100 * acc['onnx_float32']:.2f}%, int8 {100 * acc['onnx_int8']:.2f}% "
                    f"(drop {acc['drop_points']:.2f} points, allowed {acc['max_drop_points']:g})"
                )
        return out


# ------------------------------------------------------------------------------------------------------ export
def export(
    model_or_path: Any,
    dst: str | os.PathLike[str],
    *,
    format: str = "onnx",
    task: str | None = None,
    opset: int | None = None,
    dtype: str = "float32",
    quantize: str | None = None,
    verify: bool = True,
    overwrite: bool = False,
    atol: float | None = None,
    eval_file: str | os.PathLike[str] | None = None,
    max_accuracy_drop: float = 1.0,
    tokenizer: Any = None,
    threads: int | None = None,
    revision: str | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    local_files_only: bool = False,
    token: str | bool | None = None,
) -> ExportResult:
    """Export a DistilBERT for serving into the folder ``dst``.

    Args:
        model_or_path: a checkpoint (folder, Hub repo id or built-in short name, any weights format) or a model
            instance of any framework (PyTorch, Keras, Flax); weights of another framework are converted first.
        dst: the folder to write: the artifact, ``config.json``, the tokenizer files and ``export.json``.
        format: ``onnx`` (``model.onnx``), ``exported_program`` (``model.pt2``), ``saved_model`` (the folder is the
            SavedModel) or ``stablehlo`` (``model.jax_export``).
        task: ``feature-extraction``, ``fill-mask``, ``text-classification``, ``multiple-choice``,
            ``token-classification`` or ``question-answering`` (default: the checkpoint's own head).
        opset: ONNX opset (>= 18, default 18); onnx only.
        dtype: the artifact's float dtype (``float32``; ``float16`` for onnx, ``bfloat16`` for exported_program and
            stablehlo).
        quantize: ``"int8"``: also write ``model_quantized.onnx``, ONNX Runtime's dynamic int8 quantisation; onnx
            only.
        verify: run the artifact in a fresh process that never imports distilbert_mf on tokenized batches of
            several sizes and lengths and compare with the source model: max |Δ| <= ``atol`` x max(1, max |x|)
            (``atol`` default 1e-5 in float32), else :class:`ExportVerificationError` and nothing is written.
        overwrite: replace an existing ``dst`` (only a folder that is empty or holds a previous export).
        eval_file: with ``quantize``, a labelled text-classification file (TSV/CSV with ``sentence`` and
            ``label``, or JSON lines) on which the accuracy of the source, float32 and int8 models is measured; a
            drop past ``max_accuracy_drop`` percentage points raises :class:`ExportVerificationError`.
        tokenizer: the tokenizer (object or folder) to copy next to the artifact, for a model instance (a
            checkpoint's own tokenizer files are copied by default).
        threads: intra-op threads of the runtime during verification (default: the runtime's).
        revision: Hub branch, tag or commit of a checkpoint name.
        cache_dir: the Hugging Face cache folder for Hub downloads.
        local_files_only: never download; use the local cache only.
        token: Hub token for private or gated repos.

    Returns the :class:`ExportResult` (also written as ``dst/export.json``).

    Raises ``ValueError`` for an unknown format or task, a dtype or option the format does not take, or a
    checkpoint without the task's head; :class:`~distilbert_mf.export.formats.MissingExportDependencyError`
    (an ``ImportError``) naming the pip extra when the format's framework or runtime is missing;
    :class:`DestinationExistsError` for an existing ``dst`` without ``overwrite``.
    """
    fmt = get_format(format)
    dtype = _check_dtype(dtype, fmt)
    quantize = check_quantize(quantize, fmt.name)
    atol = check_atol(atol)
    if opset is not None and fmt.name != "onnx":
        raise ValueError(f"an opset applies to the onnx format only, got opset {opset!r} with format {fmt.name!r}")
    if quantize and dtype != "float32":
        raise ValueError(f"int8 quantisation starts from the float32 model, got dtype {dtype!r}")
    if eval_file is not None and not quantize:
        raise ValueError(
            "an eval file measures the accuracy cost of int8 quantisation: give it with quantize='int8' "
            "(command line: --quantize int8)"
        )
    if not (
        isinstance(max_accuracy_drop, (int, float)) and max_accuracy_drop >= 0 and math.isfinite(max_accuracy_drop)
    ):
        raise ValueError(f"max_accuracy_drop must be a number of percentage points >= 0, got {max_accuracy_drop!r}")
    check_installed(fmt, runtime=verify or quantize is not None)
    if eval_file is not None:
        check_labelled_file(eval_file)
    dst = Path(dst)
    _check_destination(dst, overwrite)
    if fmt.name == "onnx":
        from distilbert_mf.export.onnx_export import check_opset

        opset = check_opset(opset)
    hub = {"revision": revision, "cache_dir": cache_dir, "local_files_only": local_files_only, "token": token}

    with _staging(dst) as folder:
        source = load_source(model_or_path, fmt, task, dtype, folder, tokenizer=tokenizer, hub=hub)
        written = fmt.load_writer()(source.model, folder, source.task, dtype=dtype, opset=opset)
        source.model = None  # the traced copy is no longer needed
        files = [*written["files"], *source.copied]
        artifact = folder / fmt.artifact
        verification = quantization = None
        tok = _load_tokenizer(folder)
        if verify:
            label = str(dst / fmt.artifact) if fmt.artifact != "." else str(dst)
            verification = _verify(fmt, artifact, source, tok, dtype, atol, threads, label)
        if quantize:
            quantization = _quantize(artifact, folder / QUANTIZED_NAME, source, tok, verify, eval_file, threads)
            files.append(QUANTIZED_NAME)
            acc = quantization.get("accuracy")
            if acc is not None:
                acc["max_drop_points"] = float(max_accuracy_drop)
                if acc["drop_points"] > max_accuracy_drop:
                    raise ExportVerificationError(
                        f"int8 quantisation costs {acc['drop_points']:.2f} accuracy points on {eval_file} "
                        f"(float32 {100 * acc['onnx_float32']:.2f}%, int8 {100 * acc['onnx_int8']:.2f}%), more than the "
                        f"{max_accuracy_drop:g} allowed (max_accuracy_drop, command line: --max-accuracy-drop)",
                        verification,
                    )
        metadata = _metadata(fmt, source, dtype, opset, files, written, verification, quantization)
        (folder / METADATA_NAME).write_text(json.dumps(metadata, indent=2) + "\n", encoding="utf-8")
        files.append(METADATA_NAME)
    artifact = dst / fmt.artifact if fmt.artifact != "." else dst
    logger.info("exported %s to %s", source.task.name, dst)
    return ExportResult(
        path=dst,
        format=fmt.name,
        task=source.task.name,
        head=source.task.head,
        dtype=dtype,
        artifact=artifact,
        files=files,
        opset=opset,
        verification=verification,
        quantization=quantization,
        metadata=metadata,
    )


def _verify(
    fmt: ExportFormat,
    artifact: Path,
    source: Source,
    tok: Any,
    dtype: str,
    atol: float | None,
    threads: int | None,
    label: str,
) -> VerificationReport:
    from distilbert_mf.export.verify import verify_artifact

    report = verify_artifact(
        fmt.name,
        artifact,
        source.reference,
        source.framework,
        source.task,
        tokenizer=tok,
        dtype=dtype,
        atol=atol,
        threads=threads,
        label=label,
    )
    for line in report.lines():
        logger.info("%s", line)
    if not report.passed:
        why = (
            f"the process that ran it imported {report.distilbert_mf_modules}"
            if not report.standalone
            else f"max |Δ| {report.worst:.3g} exceeds the bound (atol {report.atol:g} x max(1, max |x|))"
        )
        raise ExportVerificationError(
            f"verification of the {fmt.name} export failed: {why}\n" + "\n".join(report.lines()), report
        )
    return report


def _quantize(
    src: Path, dst: Path, source: Source, tok: Any, verify: bool, eval_file: Any, threads: int | None
) -> dict[str, Any]:
    from distilbert_mf.export.quantize import accuracy_cost, quantize_int8, quantized_agreement
    from distilbert_mf.export.verify import reference_outputs, run_standalone, verification_inputs

    summary = quantize_int8(src, dst)
    if verify:
        batches = verification_inputs(source.reference.config, source.task, tok)
        reference = reference_outputs(source.reference, source.framework, batches, source.task.output_names)
        runs, info = run_standalone("onnx", dst, batches, threads=threads)
        if info.get("distilbert_mf_modules"):
            raise ExportVerificationError(f"the process that ran {dst} imported {info['distilbert_mf_modules']}")
        summary["vs_source"] = quantized_agreement(reference, runs["default"], source.task.output_names)
    if eval_file is not None:
        if source.task.head != "sequence_classification":
            raise ValueError(f"eval_file measures text-classification accuracy; this export is {source.task.name}")
        summary["accuracy"] = accuracy_cost(
            eval_file,
            model=source.reference,
            framework=source.framework,
            tokenizer=tok,
            float_model=src,
            quantized_model=dst,
            threads=threads,
        )
    return summary


# ------------------------------------------------------------------------------------------------------ source
@dataclass
class Source:
    """The model to trace (in the format's framework and dtype), the float32 model to compare with (in the
    source's framework), the task, and the files copied next to the artifact."""

    model: Any
    reference: Any
    framework: str
    task: ExportTask
    description: str
    copied: list[str]


def load_source(
    model_or_path: Any,
    fmt: ExportFormat,
    task: str | None,
    dtype: str,
    folder: Path,
    *,
    tokenizer: Any = None,
    hub: dict[str, Any],
) -> Source:
    """Load (or convert) the model for ``fmt`` and copy ``config.json`` and the tokenizer files into ``folder``."""
    from distilbert_mf.frameworks import framework_of, model_class

    if isinstance(model_or_path, (str, os.PathLike)):
        export_task = resolve_task(task) if task is not None else _checkpoint_task(model_or_path, hub)
        model = _load_checked(model_class(fmt.framework, export_task.head), model_or_path, export_task, "float32", hub)
        reference = model
        if dtype != "float32" and fmt.framework == "pt":
            model = copy.deepcopy(reference)  # the writer casts it (the float32 model stays the reference)
        elif dtype != "float32":
            model = _load_checked(model_class(fmt.framework, export_task.head), model_or_path, export_task, dtype, hub)
        copied = _copy_files(model_or_path, folder, hub, tokenizer)
        return Source(model, reference, fmt.framework, export_task, str(model_or_path), copied)
    framework = framework_of(model_or_path)  # TypeError for anything that is not one of our models
    head = getattr(type(model_or_path), "head", None)
    export_task = resolve_task(task) if task is not None else task_of_head(str(head))
    if export_task.head not in (head, "base"):
        raise ValueError(
            f"{type(model_or_path).__name__} is a {head} model; task {export_task.name!r} needs a "
            f"{export_task.architecture} (or pass task={task_of_head(str(head)).name!r})"
        )
    with tempfile.TemporaryDirectory(prefix="distilbert_mf_export_src_") as scratch:
        model_or_path.save_pretrained(scratch)  # canonical weights: any framework loads them
        reference = model_class(framework, export_task.head).from_pretrained(scratch, dtype="float32")
        if fmt.framework == framework and (dtype == "float32" or framework == "pt"):
            model = reference if dtype == "float32" else copy.deepcopy(reference)
        else:
            load_dtype = "float32" if fmt.framework == "pt" else dtype  # the PyTorch writers cast themselves
            model = model_class(fmt.framework, export_task.head).from_pretrained(scratch, dtype=load_dtype)
        copied = _copy_files(scratch, folder, {}, tokenizer, tokenizer_required=False)
    if framework != fmt.framework:
        logger.info("converted the %s model to %s weights for the %s export", framework, fmt.framework, fmt.name)
    return Source(model, reference, framework, export_task, type(model_or_path).__name__, copied)


def _checkpoint_task(name_or_path: Any, hub: dict[str, Any]) -> ExportTask:
    from distilbert_mf.conversion import read_checkpoint

    _, head, _, _ = read_checkpoint(name_or_path, **hub)
    return task_of_head(head)


def _load_checked(cls: type, name_or_path: Any, task: ExportTask, dtype: str, hub: dict[str, Any]) -> Any:
    """``cls.from_pretrained`` that refuses a checkpoint lacking the task's weights (they would be random)."""
    model, info = cls.from_pretrained(name_or_path, dtype=dtype, output_loading_info=True, **hub)
    missing = list(info["missing_keys"]) + [key for key, *_ in info.get("mismatched_keys", [])]
    if missing:
        own = _checkpoint_task(name_or_path, hub)
        raise ValueError(
            f"{name_or_path} has no weights for {len(missing)} key(s) of {task.architecture} ({missing[:3]}...): "
            f"task {task.name!r} needs a checkpoint with that head; this checkpoint exports as {own.name!r}"
        )
    return model


def _copy_files(
    name_or_path: Any, folder: Path, hub: dict[str, Any], tokenizer: Any, *, tokenizer_required: bool = False
) -> list[str]:
    """Copy ``config.json`` and the tokenizer files (of ``tokenizer`` when given) into ``folder``."""
    from distilbert_mf.hub import CONFIG_NAME, resolve_files

    names = [CONFIG_NAME, *([] if tokenizer is not None else TOKENIZER_FILES)]
    found = resolve_files(name_or_path, names, optional=True, **hub)
    copied = []
    for name, path in found.items():
        if path is not None:
            shutil.copyfile(path, folder / name)
            copied.append(name)
    if tokenizer is not None:
        if isinstance(tokenizer, (str, os.PathLike)):
            found = resolve_files(tokenizer, TOKENIZER_FILES, optional=True, **hub)
            for name, path in found.items():
                if path is not None:
                    shutil.copyfile(path, folder / name)
                    copied.append(name)
        elif hasattr(tokenizer, "save_pretrained"):
            before = set(os.listdir(folder))
            tokenizer.save_pretrained(folder)
            copied += sorted(set(os.listdir(folder)) - before)
        else:
            raise TypeError(f"tokenizer must be a tokenizer or a folder holding one, got {type(tokenizer).__name__}")
    if not any(name in copied for name in ("vocab.txt", "tokenizer.json")):
        logger.warning("no tokenizer files found for %s: the export is verified on random ids", name_or_path)
    return copied


def _load_tokenizer(folder: Path) -> Any:
    """The tokenizer copied next to the artifact (``None`` when there is none)."""
    if not any((folder / name).is_file() for name in ("vocab.txt", "tokenizer.json")):
        return None
    from distilbert_mf.tokenization import DistilBertTokenizerFast

    return DistilBertTokenizerFast.from_pretrained(folder)


# ------------------------------------------------------------------------------------------------------ checks
def _check_dtype(dtype: Any, fmt: ExportFormat) -> str:
    from distilbert_mf.modeling_utils import dtype_name

    name = dtype_name(dtype) if dtype is not None else "float32"
    if name not in fmt.dtypes:
        raise ValueError(f"the {fmt.name} format is written in {' or '.join(fmt.dtypes)}, got dtype {dtype!r}")
    return name


def _check_destination(dst: Path, overwrite: bool) -> None:
    if not (dst.exists() or dst.is_symlink()):
        return
    if not overwrite:
        raise DestinationExistsError(dst)
    if not dst.is_dir() or dst.is_symlink():
        raise NotADirectoryError(f"destination {dst} exists and is not a folder; overwrite replaces only folders")
    if any(dst.iterdir()) and not (dst / METADATA_NAME).is_file():
        raise FileExistsError(
            f"destination {dst} holds files but no {METADATA_NAME}: it is not an export of distilbert_mf, so "
            "overwrite will not delete it; choose another destination"
        )


@contextlib.contextmanager
def _staging(dst: Path) -> Iterator[Path]:
    """A temporary folder next to ``dst``, renamed onto it when the body succeeds (an existing ``dst`` replaced)
    and removed otherwise."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        yield folder
        os.chmod(folder, 0o777 & ~_UMASK)
        if dst.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".old", dir=dst.parent))
            os.replace(dst, old / "previous")
            try:
                os.replace(folder, dst)
            except BaseException:
                os.replace(old / "previous", dst)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(folder, dst)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _metadata(
    fmt: ExportFormat,
    source: Source,
    dtype: str,
    opset: int | None,
    files: list[str],
    written: dict[str, Any],
    verification: VerificationReport | None,
    quantization: dict[str, Any] | None,
) -> dict[str, Any]:
    from distilbert_mf import __version__

    task = source.task
    return {
        "format": fmt.name,
        "description": fmt.description,
        "artifact": fmt.artifact,
        "task": task.name,
        "architecture": task.architecture,
        "dtype": dtype,
        "opset": opset,
        "inputs": {name: {"dtype": fmt.input_dtype, "axes": list(task.input_axes)} for name in INPUT_NAMES},
        "outputs": {name: {"axes": list(axes)} for name, axes in task.outputs.items()},
        "max_sequence_length": source.reference.config.max_position_embeddings,
        "files": files,
        "source": source.description,
        "source_framework": source.framework,
        "writer": {k: v for k, v in written.items() if k != "files"},
        "verification": verification.to_dict() if verification is not None else None,
        "quantization": quantization,
        "distilbert_mf_version": __version__,
    }
