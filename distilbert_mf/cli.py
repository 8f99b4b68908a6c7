"""The ``distilbert-mf`` command line: every subcommand and all its argument parsing live in this module.

Subcommands: ``run`` (a pipeline over input lines, one JSON result per line), ``convert`` (checkpoint formats),
``parity`` (one checkpoint in every framework, compared), ``env`` (versions and devices), ``export`` (serving
artifacts, verified), ``train`` (fine-tuning in PyTorch, Keras or Flax) and ``distill`` (a smaller student from a
teacher). Results go to stdout; logging, progress bars and errors go to stderr.

Exit status, the same for every subcommand:

====  ==========================================================================================================
0     success
1     the command ran and its check failed: ``parity`` found a difference past its bound or an argmax disagreement;
      ``export``'s verification of the artifact failed (nothing is written then)
2     the command could not do its job: bad usage (an unknown option, a missing argument, a value of the wrong
      form) or an error the user can fix (a missing or unreadable file, a model that cannot be found, the Hub
      unreachable, a framework not installed, an invalid input line); one ``distilbert-mf <command>: error: ...``
      message, naming command-line flags
3     internal error: an unexpected exception (a bug, or a framework failing); the traceback is printed
130   interrupted (Ctrl-C)
====  ==========================================================================================================

So a CI job can tell "the frameworks disagree" (1) from "the check could not run" (2).

Each subcommand is a :class:`Command` in the ``COMMANDS`` registry: a name, a help line, a function adding its
arguments and a function running it (returning the exit status). A new one (``train``, ``distill``, ``export``) is
a section of this module built from the shared option helpers, so that every subcommand spells its options the
same way (:func:`add_framework_option`, :func:`add_device_option`, :func:`add_dtype_option`,
:func:`add_hub_options`) and shows progress the same way (:class:`Progress`)::

    def _export_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("model", help="checkpoint folder, Hub repo id or built-in short name")
        add_dtype_option(parser, "cast the weights (default: the checkpoint's dtype)")
        add_hub_options(parser, "MODEL")

    def _export(args: argparse.Namespace) -> int:
        ...
        return EXIT_OK

    register(Command("export", "export a checkpoint to ONNX", _export_arguments, _export))

An error a user can cause (``ValueError``, ``TypeError``, ``KeyError``, ``OSError``, ``ImportError``, or
:class:`CLIError`) becomes the one-line message and exit status 2; where the exception has a ``cli_message``
attribute (the Hub errors, the device and framework errors of the pipelines) that text is printed, since it names
flags where the Python message names keywords. ``--verbose`` adds INFO logging and the traceback.

TensorFlow's start-up lines (cuInit, oneDNN, absl) are silenced while a subcommand runs; set
``DISTILBERT_MF_SHOW_TF_LOGS=1`` to see them.
"""

from __future__ import annotations

import argparse
import importlib.abc
import importlib.util
import json
import logging
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from types import ModuleType, TracebackType
from typing import Any, TextIO

logger = logging.getLogger("distilbert_mf.cli")

PROG = "distilbert-mf"
EXIT_OK = 0
EXIT_CHECK_FAILED = 1
EXIT_ERROR = 2
EXIT_INTERNAL_ERROR = 3
EXIT_INTERRUPTED = 130
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, NotImplementedError)
SHOW_TF_LOGS = "DISTILBERT_MF_SHOW_TF_LOGS"
PROGRESS_DELAY = 2.0  # seconds: parity and env show a progress bar only when they take longer


class CLIError(Exception):
    """A user-facing command-line error: printed as one ``error:`` line, exit status ``code`` (default 2)."""

    def __init__(self, message: str, code: int = EXIT_ERROR) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class Command:
    """One subcommand: ``add_arguments(parser)`` declares its options, ``run(args)`` returns the exit status."""

    name: str
    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]
    description: str | None = None
    epilog: str | None = None


COMMANDS: dict[str, Command] = {}


def register(command: Command) -> Command:
    """Add ``command`` to the ``distilbert-mf`` subcommands (a name registered twice is an error)."""
    if command.name in COMMANDS:
        raise ValueError(f"a subcommand named {command.name!r} is already registered")
    COMMANDS[command.name] = command
    return command


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every registered subcommand."""
    from distilbert_mf import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="DistilBERT in PyTorch, TensorFlow/Keras and Flax: pipelines, conversion, parity checks.",
        epilog=f"Run '{PROG} <command> --help' for a command's options. Exit status: 0 success, 1 a check failed "
        "(parity), 2 an error (usage, file, model, network), 3 an internal error, 130 interrupted.",
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>", title="commands")
    for command in COMMANDS.values():
        sub = subparsers.add_parser(
            command.name,
            help=command.help,
            description=command.description or command.help,
            epilog=command.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        sub.add_argument("-v", "--verbose", action="store_true", help="log at INFO level and show tracebacks")
        command.add_arguments(sub)
        sub.set_defaults(_command=command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``distilbert-mf`` console script; returns the exit status (argparse exits with 2 itself)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return EXIT_ERROR
    _configure_logging(args.verbose)
    try:
        with quiet_tensorflow():
            return command.run(args)
    except CLIError as err:
        _report(command, err, args.verbose)
        return err.code
    except USER_ERRORS as err:
        _report(command, err, args.verbose)
        return EXIT_ERROR
    except KeyboardInterrupt:
        sys.stderr.write(f"{PROG} {command.name}: interrupted\n")
        return EXIT_INTERRUPTED
    except Exception as err:  # a bug or a framework failure: never exit 1, which means "the check failed"
        logger.error("traceback", exc_info=err)
        sys.stderr.write(
            f"{PROG} {command.name}: internal error: {type(err).__name__}: {err} (the traceback is above; if this is "
            "a bug in distilbert-mf, please report it with the traceback)\n"
        )
        return EXIT_INTERNAL_ERROR


def _report(command: Command, err: BaseException, verbose: bool) -> None:
    """One ``error:`` message: the exception's ``cli_message`` when it has one (flags, not Python keywords)."""
    message = getattr(err, "cli_message", None)
    if not isinstance(message, str) or not message:
        message = str(err.args[0]) if isinstance(err, KeyError) and err.args else str(err)
    if verbose:
        logger.error("traceback", exc_info=err)
    sys.stderr.write(f"{PROG} {command.name}: error: {message}\n")


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO if verbose else logging.WARNING)


# -- options shared by the subcommands: one spelling everywhere -----------------------------------------------------
def add_framework_option(parser: argparse.ArgumentParser) -> None:
    """``--framework``: pt, tf or flax (aliases torch, tensorflow, jax)."""
    parser.add_argument(
        "--framework", help="pt, tf or flax (aliases torch, tensorflow, jax); default: first installed of pt, tf, flax"
    )


def add_device_option(parser: argparse.ArgumentParser) -> None:
    """``--device``: transformers' spellings; messages echo the value as typed."""
    parser.add_argument(
        "--device", help="cpu, -1, a GPU index like 0, cuda, cuda:1, gpu:0 or mps (default: framework's)"
    )


def parse_dtype(text: str) -> str:
    """A ``--dtype`` value -> ``"float32"``, ``"bfloat16"``, ``"float16"`` or ``"auto"`` (every subcommand alike)."""
    from distilbert_mf.modeling_utils import dtype_name

    if text.strip().lower() == "auto":
        return "auto"
    try:
        name = dtype_name(text.strip())
    except ValueError:
        name = None
    if name is None:
        raise argparse.ArgumentTypeError(
            f"unsupported dtype {text!r}: choose float32 (fp32), bfloat16 (bf16), float16 (fp16, half) or auto"
        )
    return name


def add_dtype_option(parser: argparse.ArgumentParser, meaning: str) -> None:
    """``--dtype``: float32/fp32, bfloat16/bf16, float16/fp16/half or auto (the checkpoint's dtype)."""
    parser.add_argument(
        "--dtype",
        type=parse_dtype,
        default=None,
        metavar="DTYPE",
        help=f"float32 (fp32), bfloat16 (bf16), float16 (fp16) or auto (the checkpoint's dtype); {meaning}",
    )


def add_hub_options(parser: argparse.ArgumentParser, what: str) -> None:
    """``--revision``, ``--cache-dir``, ``--local-files-only``: how ``what`` is fetched from the Hub."""
    parser.add_argument("--revision", default=None, help=f"Hub branch, tag or commit of {what}")
    parser.add_argument("--cache-dir", default=None, help="Hugging Face cache folder for Hub downloads")
    parser.add_argument("--local-files-only", action="store_true", help="never download: use the local cache only")


def hub_arguments(args: argparse.Namespace) -> dict[str, Any]:
    """The ``from_pretrained`` keywords of :func:`add_hub_options`."""
    return {"revision": args.revision, "cache_dir": args.cache_dir, "local_files_only": args.local_files_only}


# -- TensorFlow's start-up noise ------------------------------------------------------------------------------------
# lines TensorFlow's C++ side writes to stderr while it is imported, before its logging honours TF_CPP_MIN_LOG_LEVEL
_TF_NOISE = re.compile(
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} \d+:\d+:\d+\.\d+\s+\d+ \S+:\d+\] .*"  # absl: I0000 00:00:1796242553.292549 12020 port.cc:153] ...
    r"|\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d+: [IWE] \S+:\d+\] .*"  # older TensorFlow releases
    r"|To enable the following instructions: .*rebuild TensorFlow with the appropriate compiler flags\."
)


def drop_tensorflow_noise(text: str) -> str:
    """``text`` without TensorFlow's start-up log lines (every other line kept, in order)."""
    return "".join(line for line in text.splitlines(keepends=True) if not _TF_NOISE.fullmatch(line.rstrip("\r\n")))


@contextmanager
def _stderr_filtered(keep: Callable[[str], str]) -> Iterator[None]:
    """Send file descriptor 2 to a temporary file for the block, then write ``keep(captured)`` to stderr (all of
    it, unfiltered, when the block raises)."""
    with suppress(Exception):
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        failed = True
        try:
            yield
            failed = False
        finally:
            with suppress(Exception):
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            text = capture.read().decode("utf-8", "replace")
            shown = text if failed else keep(text)
            if shown:
                sys.stderr.write(shown)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    """Runs the real loader of a module with its C-level stderr output filtered."""

    def __init__(self, loader: Any) -> None:
        self._loader = loader

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        module.__loader__ = self._loader  # the module keeps its real loader (resources, reload)
        if module.__spec__ is not None:
            module.__spec__.loader = self._loader
        with _stderr_filtered(drop_tensorflow_noise):
            self._loader.exec_module(module)


class _QuietImport(importlib.abc.MetaPathFinder):
    """Finds ``names`` as usual and hands back a spec whose loader imports them with the noise filtered."""

    def __init__(self, names: Iterable[str]) -> None:
        self.names = frozenset(names)
        self._finding = False

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname not in self.names or self._finding:
            return None
        self._finding = True
        try:
            spec = importlib.util.find_spec(fullname)
        finally:
            self._finding = False
        if spec is None or spec.loader is None:
            return None
        spec.loader = _QuietLoader(spec.loader)
        return spec


def _show_tf_logs() -> bool:
    return os.environ.get(SHOW_TF_LOGS, "").strip().lower() in ("1", "true", "yes", "on")


@contextmanager
def quiet_tensorflow() -> Iterator[None]:
    """While the block runs: TensorFlow's C++ logging at FATAL only (``TF_CPP_MIN_LOG_LEVEL=3`` unless already set),
    its import-time lines dropped, the ``absl`` and ``tensorflow`` Python loggers at ERROR. Nothing changes when
    ``DISTILBERT_MF_SHOW_TF_LOGS=1``. TensorFlow is not imported here."""
    if _show_tf_logs():
        yield
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # read when TensorFlow is imported
    loggers = [logging.getLogger(name) for name in ("absl", "tensorflow")]
    levels = [log.level for log in loggers]
    for log in loggers:
        log.setLevel(logging.ERROR)
    finder = _QuietImport(["tensorflow"])
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        with suppress(ValueError):
            sys.meta_path.remove(finder)
        for log, level in zip(loggers, levels):
            log.setLevel(level)


# -- progress -------------------------------------------------------------------------------------------------------
def _stderr_is_terminal() -> bool:
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    """A tqdm bar on stderr for a command's steps, shown once the work has taken ``delay`` seconds (default
    :data:`PROGRESS_DELAY`).

    The elapsed time keeps moving while one long step runs. ``enabled=None`` shows it only when stderr is a
    terminal (progress bars are not log lines). A disabled bar accepts every call and shows nothing.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str,
        *,
        delay: float | None = None,
        enabled: bool | None = None,
        leave: bool = False,
    ) -> None:
        self._bar: Any = None
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._ticker: threading.Thread | None = None
        if not (_stderr_is_terminal() if enabled is None else enabled):
            return
        from tqdm.auto import tqdm

        delay = PROGRESS_DELAY if delay is None else delay
        # miniters=0: every update, even update(0) from the ticker, may redraw (at most every mininterval)
        self._bar = tqdm(total=total, desc=desc, unit=unit, delay=delay, leave=leave, miniters=0, file=sys.stderr)
        self._ticker = threading.Thread(target=self._tick, name="distilbert-mf-progress", daemon=True)
        self._ticker.start()

    @property
    def n(self) -> int:
        """Steps done so far."""
        return 0 if self._bar is None else int(self._bar.n)

    def _tick(self) -> None:
        while not self._stop.wait(0.25):
            with self._lock:
                self._bar.update(0)

    def update(self, n: int = 1) -> None:
        if self._bar is not None:
            with self._lock:
                self._bar.update(n)

    def step(self, text: str) -> None:
        """Name the step now running (shown after the counts)."""
        if self._bar is not None:
            with self._lock:
                self._bar.set_postfix_str(text, refresh=False)

    def close(self) -> None:
        if self._bar is None:
            return
        self._stop.set()
        if self._ticker is not None:
            self._ticker.join()
        self._bar.close()
        self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()


# -- run ------------------------------------------------------------------------------------------------------------
RUN_EPILOG = """\
input, one per line (blank lines are skipped):
  text-classification       text, or {"text": ..., "text_pair": ...}
  fill-mask                 text with [MASK]
  token-classification      text
  feature-extraction        text
  question-answering        {"question": ..., "context": ...}
  zero-shot-classification  {"sequences": ..., "candidate_labels": [...]} (optional "hypothesis_template",
                            "multi_label"), or text with --param candidate_labels='["a", "b"]'
output: one JSON line per input line, what pipeline(task)(input) returns for it.

default models (no --model): text-classification the embedded distilbert-mf/minilm-sst2 (offline);
fill-mask distilbert/distilbert-base-uncased, question-answering distilbert/distilbert-base-cased-distilled-squad,
feature-extraction distilbert/distilbert-base-cased (from the Hub), or with -p pooling=mean|cls the embedded
distilbert-mf/all-minilm-l6-v2 (offline); token-classification and zero-shot-classification need --model.

examples:
  echo "I love this!" | distilbert-mf run --task text-classification
  echo "hello world" | distilbert-mf run --task feature-extraction -p pooling=mean -p normalize=true
  distilbert-mf run --task ner --model ./my-ner --param aggregation_strategy=simple --input in.txt
  echo '{"question": "Who?", "context": "Ann wrote it."}' | distilbert-mf run --task question-answering --model ./qa

exit status: 0 success, 2 an error (usage, input, model, network), 3 an internal error, 130 interrupted.
"""


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    from distilbert_mf.pipelines import TASK_ALIASES, TASKS

    tasks = ", ".join([*TASKS, *TASK_ALIASES])
    parser.add_argument("--task", required=True, help=f"the pipeline task: {tasks}")
    parser.add_argument(
        "--model", help="model folder, Hub repo id or built-in short name (default: the task's, see below)"
    )
    parser.add_argument("--tokenizer", help="tokenizer folder or repo id (default: the model's)")
    add_framework_option(parser)
    parser.add_argument("--input", default="-", help="input file, one input per line (default: stdin)")
    parser.add_argument("--output", default="-", help="output file, one JSON result per line (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default: 32)")
    add_device_option(parser)
    add_dtype_option(parser, "the weights and compute dtype (default: float32)")
    parser.add_argument("--top-k", type=int, help="number of results per input (text-classification, fill-mask, QA)")
    parser.add_argument(
        "--param",
        "-p",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a task parameter, VALUE read as JSON when it parses (else a string); repeatable, e.g. "
        "-p aggregation_strategy=simple -p ignore_labels='[\"O\"]'",
    )
    parser.add_argument("--progress", action="store_true", help="one progress bar over the whole input, on stderr")
    add_hub_options(parser, "--model")


def _run(args: argparse.Namespace) -> int:
    from distilbert_mf.pipelines import TASKS, pipeline, resolve_task

    task = resolve_task(args.task)
    params = _parse_params(args.param)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    try:
        TASKS[task].check_names(params)  # a misspelt parameter fails before any model is loaded
    except TypeError as err:
        raise CLIError(f"{err} (--top-k sets top_k; -p/--param KEY=VALUE sets the others)") from err
    if "progress" in params or "batch_size" in params:
        raise CLIError("use --progress and --batch-size, not --param progress= / --param batch_size=")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer, got {args.batch_size}")
    items = list(_read_inputs(args.input, task))
    plan = _plan(task, items, params)
    if args.model is not None and _looks_like_path(args.model) and not Path(args.model).expanduser().exists():
        raise CLIError(f"model folder {args.model!r} does not exist")
    device: Any = args.device
    if device is not None and device.lstrip("-").isdigit():
        device = int(device)
    pipe = pipeline(
        task,
        model=args.model,
        tokenizer=args.tokenizer,
        framework=args.framework,
        device=device,
        dtype=args.dtype,
        batch_size=args.batch_size,
        **{k: v for k, v in hub_arguments(args).items() if v},
        **({"pooling": params["pooling"]} if task == "feature-extraction" and "pooling" in params else {}),
    )
    with Progress(len(items), task, "line", delay=0.0, enabled=args.progress, leave=True) as bar:
        with _open_output(args.output) as out:
            for result in _predict(pipe, task, items, plan, bar):
                out.write(json.dumps(result, ensure_ascii=False, default=_json_default) + "\n")
                out.flush()
    return EXIT_OK


def _parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--param expects KEY=VALUE, got {pair!r}")
        try:
            params[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            params[key.strip()] = value
    return params


def _read_inputs(source: str, task: str) -> Iterable[tuple[int, Any]]:
    """``(line_number, input)`` for each non-blank line, parsed as ``task`` expects."""
    try:
        if source == "-":
            lines = sys.stdin.read().splitlines()
        else:
            lines = Path(source).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CLIError(f"cannot read input {'stdin' if source == '-' else repr(source)}: {err}") from err
    for number, line in enumerate(lines, start=1):
        if line.strip():
            yield number, _parse_line(line, number, task)


_JSON_TASKS = {"question-answering": ("question", "context"), "zero-shot-classification": ("sequences",)}


def _parse_line(line: str, number: int, task: str) -> Any:
    """One input line -> the pipeline input (a string, or a dict for pairs, QA and zero-shot)."""
    is_object = line.lstrip().startswith("{")
    if not is_object:
        if task == "question-answering":
            raise CLIError(f"line {number}: question-answering takes {_shape(task)} per line, got plain text")
        return {"sequences": line} if task == "zero-shot-classification" else line
    try:
        value = json.loads(line)
    except json.JSONDecodeError as err:
        raise CLIError(f"line {number}: invalid JSON ({err.msg} at column {err.colno}): {line[:80]!r}") from err
    if not isinstance(value, dict):
        raise CLIError(f"line {number}: expected a JSON object, got {type(value).__name__}")
    required = _JSON_TASKS.get(task, ("text",))
    missing = [key for key in required if key not in value]
    if missing:
        raise CLIError(f"line {number}: the JSON object lacks {missing}; {task} takes {_shape(task)}")
    if task in ("fill-mask", "token-classification", "feature-extraction"):
        if set(value) != {"text"}:
            raise CLIError(f'line {number}: {task} takes a text line or {{"text": ...}}, got keys {sorted(value)}')
        return value["text"]
    return value


def _shape(task: str) -> str:
    """The per-line input a task takes, for error messages."""
    return {
        "question-answering": '{"question": ..., "context": ...}',
        "zero-shot-classification": '{"sequences": ..., "candidate_labels": [...]}',
    }.get(task, 'a text line or {"text": ..., "text_pair": ...}')


_ZERO_SHOT_KEYS = ("candidate_labels", "hypothesis_template", "multi_label")


def _plan(task: str, items: list[tuple[int, Any]], params: dict[str, Any]) -> list[tuple[dict[str, Any], list[int]]]:
    """Group the inputs (by index) that share call parameters: every line for most tasks; for zero-shot, the lines
    with the same labels and template. Checked before any model is loaded."""
    if task != "zero-shot-classification":
        return [(params, list(range(len(items))))]
    groups: dict[str, tuple[dict[str, Any], list[int]]] = {}
    for index, (number, value) in enumerate(items):
        unknown = set(value) - {"sequences", *_ZERO_SHOT_KEYS}
        if unknown:
            raise CLIError(f"line {number}: unknown key(s) {sorted(unknown)}; zero-shot takes {_shape(task)}")
        options = {**params, **{k: value[k] for k in _ZERO_SHOT_KEYS if k in value}}
        if "candidate_labels" not in options:
            raise CLIError(f"line {number}: no candidate_labels (give them in the line or with --param)")
        groups.setdefault(json.dumps(options, sort_keys=True), (options, []))[1].append(index)
    return list(groups.values())


def _predict(
    pipe: Any,
    task: str,
    items: list[tuple[int, Any]],
    plan: list[tuple[dict[str, Any], list[int]]],
    bar: Progress,
) -> Iterable[Any]:
    """Results in input order. Each group runs in chunks of many lines, so length-grouped batching pays off; output
    is written as soon as every earlier line has its result. ``bar`` counts input lines across all chunks."""
    from distilbert_mf.pipelines import ProgressShare

    values = [value["sequences"] if task == "zero-shot-classification" else value for _, value in items]
    chunk = max(256, 8 * pipe.batch_size)
    results: dict[int, Any] = {}
    following = 0
    for options, indices in plan:
        for begin in range(0, len(indices), chunk):
            part = indices[begin : begin + chunk]
            share = ProgressShare(bar, len(part))
            results.update(zip(part, pipe.each([values[i] for i in part], **{**options, "progress": share})))
            share.finish()
            while following in results:
                yield results.pop(following)
                following += 1


def _looks_like_path(name: str) -> bool:
    """A local path rather than a Hub repo id ("owner/name") or a short name."""
    return name.startswith((".", "/", "~")) or name.count("/") > 1


@contextmanager
def _open_output(target: str) -> Iterator[TextIO]:
    """stdout for "-", else the file (created or truncated)."""
    if target == "-":
        yield sys.stdout
        return
    try:
        handle = open(target, "w", encoding="utf-8")
    except OSError as err:
        raise CLIError(f"cannot write output {target!r}: {err}") from err
    with handle:
        yield handle


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# -- convert --------------------------------------------------------------------------------------------------------
CONVERT_EPILOG = """\
examples:
  distilbert-mf convert ./my-model ./my-model-all --to safetensors,pytorch_bin,tf_h5,flax_msgpack
  distilbert-mf convert distilbert-base-uncased ./dbu-bf16 --to safetensors --dtype bf16
  distilbert-mf convert ./tf-only-model ./out --to safetensors --overwrite

exit status: 0 converted, 2 an error (usage, unreadable source, non-empty destination, ...), 3 an internal error.
"""


def _convert_arguments(parser: argparse.ArgumentParser) -> None:
    from distilbert_mf.checkpoint.io import FORMATS

    parser.add_argument("src", help="checkpoint folder, Hub repo id or built-in short name (any weights format)")
    parser.add_argument("dst", help="output folder (absent or empty unless --overwrite)")
    parser.add_argument(
        "--to",
        default="safetensors",
        metavar="FORMATS",
        help=f"comma-separated output formats among {','.join(FORMATS)} (default: safetensors)",
    )
    add_dtype_option(parser, "cast floating weights (default, and auto: keep them bit for bit)")
    parser.add_argument("--overwrite", action="store_true", help="replace the weight files of a non-empty DST")
    from distilbert_mf.checkpoint.sharding import DEFAULT_MAX_SHARD_SIZE

    parser.add_argument(
        "--max-shard-size",
        default=DEFAULT_MAX_SHARD_SIZE,
        help=f"shard each output past this size (default: {DEFAULT_MAX_SHARD_SIZE})",
    )
    add_hub_options(parser, "SRC")


def _convert(args: argparse.Namespace) -> int:
    """Print the written paths, one per line."""
    from distilbert_mf.conversion import convert

    written = convert(
        args.src,
        args.dst,
        formats=args.to,
        dtype=None if args.dtype == "auto" else args.dtype,
        overwrite=args.overwrite,
        max_shard_size=args.max_shard_size,
        **hub_arguments(args),
    )
    sys.stdout.write("".join(f"{path}\n" for path in written))
    return EXIT_OK


# -- parity ---------------------------------------------------------------------------------------------------------
PARITY_EPILOG = """\
exit status: 0 every framework pair within its bounds (--atol on the outputs, --hidden-atol on hidden states and
attention maps, each times max(1, max |x|)) with the same argmax; 1 past a bound or an argmax disagreement; 2 the
check could not run (bad arguments, unreadable model, fewer than two frameworks); 3 an internal error.

examples:
  distilbert-mf parity ./my-finetuned-model
  distilbert-mf parity ./my-finetuned-model --frameworks pt,flax --texts dev_sentences.txt --json
  distilbert-mf parity distilbert-base-uncased --head masked_lm --atol 1e-4
"""


def _parity_arguments(parser: argparse.ArgumentParser) -> None:
    from distilbert_mf.checkpoint.names import HEADS
    from distilbert_mf.parity import DEFAULT_ATOL, DEFAULT_HIDDEN_ATOL

    parser.add_argument("model", help="checkpoint folder, Hub repo id or built-in short name (any weights format)")
    parser.add_argument(
        "--frameworks", default=None, help="comma-separated frameworks among pt,tf,flax (default: every installed one)"
    )
    parser.add_argument(
        "--texts", default=None, metavar="FILE", help="input texts, one per line ('-' for stdin; default: samples)"
    )
    parser.add_argument(
        "--atol",
        type=float,
        default=DEFAULT_ATOL,
        help="largest max |Δ| allowed on the outputs (logits, last_hidden_state), times max(1, max |output|) "
        f"(default: {DEFAULT_ATOL:g})",
    )
    parser.add_argument(
        "--hidden-atol",
        type=float,
        default=DEFAULT_HIDDEN_ATOL,
        help="the same for every hidden state and attention map (default: "
        f"{DEFAULT_HIDDEN_ATOL:g}; float32 rounding accumulates through the layers)",
    )
    parser.add_argument("--json", action="store_true", help="print the report as JSON instead of a table")
    parser.add_argument("--head", choices=HEADS, default=None, help="head to run (default: the checkpoint's own)")
    add_hub_options(parser, "MODEL")


def _read_texts(source: str) -> list[str]:
    try:
        lines = (
            sys.stdin.read() if source == "-" else Path(source).expanduser().read_text(encoding="utf-8")
        ).splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CLIError(f"cannot read --texts {source}: {err}") from err
    texts = [line.strip() for line in lines if line.strip()]
    if not texts:
        raise CLIError(f"--texts {source} holds no text: give one input text per line")
    return texts


def _parity(args: argparse.Namespace) -> int:
    """Print the table (or JSON); exit 1 when the frameworks disagree."""
    from distilbert_mf.parity import prepare_parity

    for flag, value in (("--atol", args.atol), ("--hidden-atol", args.hidden_atol)):
        if not value > 0 or not math.isfinite(value):
            raise CLIError(f"{flag} must be a positive finite number, got {value}")
    frameworks = [f.strip() for f in args.frameworks.split(",") if f.strip()] if args.frameworks else None
    plan = prepare_parity(
        args.model,
        frameworks=frameworks,
        texts=_read_texts(args.texts) if args.texts else None,
        atol=args.atol,
        hidden_atol=args.hidden_atol,
        head=args.head,
        hub=hub_arguments(args),
    )
    results = {}
    with Progress(len(plan.frameworks), "parity", "framework") as bar:
        for framework in plan.frameworks:
            bar.step(framework)
            results[framework] = plan.run(framework)
            bar.update()
    report = plan.report(results)
    sys.stdout.write((report.to_json() if args.json else report.table()) + "\n")
    if not report.passed:
        logger.error("parity FAILED for %s: max |Δ| %.2e, atol %.0e", args.model, report.worst, report.atol)
        return EXIT_CHECK_FAILED
    return EXIT_OK


# -- env ------------------------------------------------------------------------------------------------------------
PACKAGES = ("numpy", "tokenizers", "safetensors", "huggingface_hub", "tqdm")
FRAMEWORK_PACKAGES = {"torch": ("torch",), "tensorflow": ("tensorflow", "keras"), "flax": ("jax", "jaxlib", "flax")}
_DEVICE_PROBES = {
    "torch": (
        "import json, torch\n"
        "n = torch.cuda.device_count() if torch.cuda.is_available() else 0\n"
        "d = ['cpu'] + [f'cuda:{i} ({torch.cuda.get_device_name(i)})' for i in range(n)]\n"
        "mps = getattr(torch.backends, 'mps', None)\n"
        "d += ['mps'] if mps is not None and mps.is_available() else []\n"
        "print(json.dumps(d))"
    ),
    "tensorflow": (
        "import json, tensorflow as tf\n"
        "print(json.dumps([d.name.replace('/physical_device:', '') for d in tf.config.list_physical_devices()]))"
    ),
    "flax": "import json, jax\nprint(json.dumps([f'{d.platform}:{d.id} ({d.device_kind})' for d in jax.devices()]))",
}


def _version(distribution: str) -> str:
    try:
        return metadata.version(distribution)
    except metadata.PackageNotFoundError:
        return "not installed"


def environment(*, devices: bool = True, timeout: float = 120.0, progress: Progress | None = None) -> dict[str, Any]:
    """Versions of Python, this library, its dependencies and each framework, plus each framework's devices.

    Versions come from package metadata (no imports). Devices are probed by importing each installed framework in
    its own subprocess, all in parallel, so a missing framework is never imported and the slowest import sets the time.
    ``progress``, when given, advances by one per probe.
    """
    from distilbert_mf import __version__

    info: dict[str, Any] = {
        "python": f"{platform.python_version()} ({platform.python_implementation()}, {platform.platform()})",
        "distilbert_mf": __version__,
    }
    info.update({name: _version(name) for name in PACKAGES})
    installed = {}
    for framework, packages in FRAMEWORK_PACKAGES.items():
        for package in packages:
            info[package] = _version(package)
        installed[framework] = all(info[p] != "not installed" for p in packages)
    if devices:
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
        probes = {
            name: subprocess.Popen(
                [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
            )
            for name, code in _DEVICE_PROBES.items()
            if installed[name]
        }
        for name in FRAMEWORK_PACKAGES:
            key = f"{name} devices"
            if name not in probes:
                info[key] = "not installed"
                continue
            if progress is not None:
                progress.step(name)
            info[key] = _probe_result(probes[name], timeout)
            if progress is not None:
                progress.update()
    return info


def _probe_result(probe: subprocess.Popen, timeout: float) -> Any:
    try:
        stdout, stderr = probe.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        probe.kill()
        probe.communicate()
        return f"probe timed out after {timeout:.0f} s"
    lines = stdout.strip().splitlines()
    if probe.returncode == 0 and lines:
        return json.loads(lines[-1])
    return f"probe failed: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'}"


def _env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of 'name: value' lines")
    parser.add_argument(
        "--no-devices", action="store_true", help="skip the device probes (which import each installed framework)"
    )


def _env(args: argparse.Namespace) -> int:
    probes = (
        0
        if args.no_devices
        else sum(all(_version(p) != "not installed" for p in ps) for ps in FRAMEWORK_PACKAGES.values())
    )
    with Progress(probes, "env", "probe") as bar:
        info = environment(devices=not args.no_devices, progress=bar)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    width = max(len(key) for key in info)
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        sys.stdout.write(f"{key:<{width}}  {shown}\n")
    return EXIT_OK


register(
    Command(
        "run",
        "run a pipeline task on input lines, one JSON result per line",
        _run_arguments,
        _run,
        description="Run a pipeline task on each input line (stdin or --input) and print one JSON result per line.",
        epilog=RUN_EPILOG,
    )
)
register(
    Command(
        "convert",
        "convert a checkpoint between weight formats (safetensors, pytorch_bin, tf_h5, flax_msgpack), losslessly",
        _convert_arguments,
        _convert,
        epilog=CONVERT_EPILOG,
    )
)
register(
    Command(
        "parity",
        "run a checkpoint in every installed framework and compare every output (exit 1 past --atol)",
        _parity_arguments,
        _parity,
        epilog=PARITY_EPILOG,
    )
)
register(
    Command(
        "env",
        "print versions of Python, this library, its dependencies and frameworks, and the devices each sees",
        _env_arguments,
        _env,
    )
)


# -- export ---------------------------------------------------------------------------------------------------------
EXPORT_EPILOG = """\
examples:
  distilbert-mf export distilbert-mf/minilm-sst2 serving/minilm-onnx --format onnx --quantize int8 \\
      --eval-file glue_sst2/dev.tsv
  distilbert-mf export ./my-qa-model serving/qa/1 --format saved_model
  distilbert-mf export ./my-model serving/my-model-jax --format stablehlo --dtype bf16 --overwrite

exit status: 0 written and verified; 1 the verification failed (a max |Δ| past --atol x max(1, max |x|), the runtime
process imported distilbert_mf, or int8 lost more than --max-accuracy-drop points on --eval-file) and nothing was
written; 2 an error (usage, unknown format or task, framework or runtime not installed, existing DST, ...); 3 an
internal error.
"""


def _export_arguments(parser: argparse.ArgumentParser) -> None:
    from distilbert_mf.export import FORMATS, TASKS

    parser.add_argument("model", help="checkpoint folder, Hub repo id or built-in short name (any weights format)")
    parser.add_argument("dst", help="the folder to write (absent unless --overwrite)")
    parser.add_argument("--format", default="onnx", help=f"{', '.join(FORMATS)} (default: onnx)")
    parser.add_argument("--task", default=None, help=f"{', '.join(TASKS)} (default: the checkpoint's own head)")
    parser.add_argument("--opset", type=int, default=None, help="ONNX opset, 18 or newer (default: 18)")
    add_dtype_option(parser, "the artifact's float dtype (default: float32)")
    parser.add_argument("--quantize", choices=("int8",), default=None, help="also write the int8 ONNX model")
    parser.add_argument(
        "--eval-file", default=None, metavar="FILE", help="with --quantize: labelled TSV/CSV/JSONL to measure accuracy"
    )
    parser.add_argument(
        "--max-accuracy-drop", type=float, default=1.0, help="accuracy points int8 may lose on --eval-file (default 1)"
    )
    parser.add_argument(
        "--atol", type=float, default=None, help="verification bound x max(1, max |x|) (default: 1e-5 in float32)"
    )
    parser.add_argument(
        "--verify",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run the artifact in a fresh process without distilbert_mf and compare with the model (default: on)",
    )
    parser.add_argument("--overwrite", action="store_true", help="replace DST (an empty folder or an earlier export)")
    parser.add_argument("--threads", type=int, default=None, help="runtime threads while verifying")
    parser.add_argument("--json", action="store_true", help="print export.json instead of the summary")
    add_hub_options(parser, "MODEL")


def _export(args: argparse.Namespace) -> int:
    """Print the summary (or export.json); exit 1 when the verification fails (nothing is written then)."""
    from distilbert_mf.export import ExportVerificationError, export

    if args.dtype == "auto":
        raise CLIError("--dtype auto does not apply to export: choose float32, bfloat16 or float16")
    try:
        result = export(
            args.model,
            args.dst,
            format=args.format,
            task=args.task,
            opset=args.opset,
            dtype=args.dtype or "float32",
            quantize=args.quantize,
            verify=args.verify,
            overwrite=args.overwrite,
            atol=args.atol,
            eval_file=args.eval_file,
            max_accuracy_drop=args.max_accuracy_drop,
            threads=args.threads,
            **hub_arguments(args),
        )
    except ExportVerificationError as err:
        sys.stdout.write(f"{err}\n")
        sys.stderr.write(f"{PROG} export: verification failed; nothing was written to {args.dst}\n")
        return EXIT_CHECK_FAILED
    text = json.dumps(result.metadata, indent=2) if args.json else "\n".join(result.lines())
    sys.stdout.write(text + "\n")
    return EXIT_OK


register(
    Command(
        "export",
        "export a checkpoint for serving (onnx, saved_model, stablehlo, exported_program), verified without "
        "distilbert_mf",
        _export_arguments,
        _export,
        epilog=EXPORT_EPILOG,
    )
)


# -- train ----------------------------------------------------------------------------------------------------------
TRAIN_EPILOG = """\
Option names are transformers' TrainingArguments names, dashed. The run folder (--output-dir) gets what
transformers' Trainer writes: config.json, model.safetensors and the tokenizer files (every framework and
transformers load it), trainer_state.json (log_history: step, epoch, loss, learning_rate, grad_norm, eval_*),
eval_results.json, train_results.json, all_results.json, training_curves.png and checkpoint-N/ folders (weights,
optimizer and RNG state, data position). Ctrl-C saves a checkpoint of the last completed update; resume it with
--resume-from-checkpoint (the same trajectory as an uninterrupted run).

examples:
  distilbert-mf train --task text-classification --model distilbert-mf/all-minilm-l6-v2 \\
      --train-file train.tsv --validation-file dev.tsv --output-dir out --num-train-epochs 3 \\
      --learning-rate 5e-5 --warmup-ratio 0.06 --eval-steps 500
  distilbert-mf train --task ner --model ./base --train-file train.conll --validation-file dev.conll \\
      --output-dir ner --framework flax --label-all-tokens
  distilbert-mf train ... --output-dir out --resume-from-checkpoint            # the latest checkpoint of out
  distilbert-mf train ... --config-override dropout=0.0 --config-override attention_dropout=0.0

stdout: one JSON object at the end (global_step, train_loss, the eval_* metrics, output_dir).
exit status: 0 trained; 2 an error found before the first step (bad option or data, a missing column, labels outside
--num-labels, an output folder holding another run, a checkpoint of another run, a framework not installed) or a
diverged loss; 3 an internal error; 130 interrupted (a checkpoint of the last completed update is saved).
"""


def _config_override(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` -> (key, VALUE read as JSON when it parses, else the string)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE (e.g. dropout=0.0), got {text!r}")
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        parsed = value
    return key.strip(), parsed


def _train_arguments(parser: argparse.ArgumentParser, *, distill: bool = False) -> None:
    """The options of ``train`` (``distill``: the same, with ``--task`` and ``--model`` optional)."""
    from distilbert_mf.training.data import TASK_ALIASES, TASKS
    from distilbert_mf.training.readers import FORMATS
    from distilbert_mf.training.trainer import STRATEGIES

    flag = {"action": "store_true", "default": None}
    switch = {"action": argparse.BooleanOptionalAction, "default": None}
    run = parser.add_argument_group("model and data")
    if distill:
        run.add_argument(
            "--task",
            help="masked-lm (general distillation, one document per line; the default), text-classification, "
            "token-classification or question-answering (task-specific, with a fine-tuned teacher)",
        )
        run.add_argument(
            "--model",
            help="the student's starting checkpoint; default: built from the teacher's --student-layers into "
            "OUTPUT_DIR/student-init",
        )
    else:
        tasks = f"{', '.join(TASKS)} (aliases {', '.join(sorted(TASK_ALIASES))})"
        run.add_argument("--task", required=True, help=tasks)
        run.add_argument("--model", required=True, help="starting model: folder, Hub repo id or built-in short name")
    run.add_argument("--train-file", required=True, help="TSV, CSV, JSON Lines, SQuAD JSON, CoNLL or text file")
    run.add_argument("--validation-file", help="evaluation data, same format (labels must be seen in training)")
    run.add_argument("--output-dir", required=True, help="the run folder")
    run.add_argument("--data-format", choices=FORMATS, help="the files' format when the suffix does not tell")
    add_framework_option(run)
    run.add_argument("--num-labels", type=int, help="head size (default: the training data's classes)")
    run.add_argument("--label-names", nargs="+", metavar="NAME", help="class names in id order")
    run.add_argument("--max-seq-length", type=int, help="tokens per row (default 384 for question answering, else 128)")
    run.add_argument("--max-train-samples", type=int, help="use the first N training examples")
    run.add_argument("--max-eval-samples", type=int, help="use the first N evaluation examples")
    run.add_argument(
        "--config-override",
        type=_config_override,
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change a config field, VALUE read as JSON when it parses; repeatable (e.g. dropout=0.0)",
    )
    add_hub_options(run, "--model")
    columns = parser.add_argument_group("columns and task options")
    columns.add_argument("--text-column", help="text (default: text, sentence or sentence1)")
    columns.add_argument("--text-pair-column", help="second text of a pair (default: sentence2 after sentence1)")
    columns.add_argument("--label-column", help="label column (default: label)")
    columns.add_argument(
        "--problem-type",
        choices=("single_label_classification", "regression", "multi_label_classification"),
        help="text classification (default: from the labels)",
    )
    columns.add_argument("--label-separator", help="separator of multi-label labels in one TSV/CSV field")
    columns.add_argument("--tokens-column", help="token classification words (default: tokens)")
    columns.add_argument("--tags-column", help="token classification tags (default: ner_tags)")
    columns.add_argument("--label-all-tokens", **flag, help="tag every piece of a word, not only the first")
    columns.add_argument("--question-column", help="question answering question (default: question)")
    columns.add_argument(
        "--context-column", help="question answering context (default: context; multiple choice sent1)"
    )
    columns.add_argument("--answers-column", help="SQuAD answers (default: answers)")
    columns.add_argument("--id-column", help="question answering example id (default: id)")
    columns.add_argument("--doc-stride", type=int, help="tokens shared by two question-answering windows (default 128)")
    columns.add_argument("--choice-columns", nargs="+", metavar="COLUMN", help="multiple-choice endings (ending0..3)")
    columns.add_argument("--choices-column", help="multiple choice: one column holding the list of endings")
    columns.add_argument("--mlm-probability", type=float, help="masked LM: share of tokens masked (default 0.15)")
    columns.add_argument("--whole-word-mask", **flag, help="masked LM: mask every piece of a chosen word")
    columns.add_argument("--mask-replace-prob", type=float, help="masked LM: chosen tokens set to [MASK] (0.8)")
    columns.add_argument("--random-replace-prob", type=float, help="masked LM: chosen tokens set at random (0.1)")
    columns.add_argument("--line-by-line", **switch, help="masked LM: one row per line (default) or blocks")
    columns.add_argument("--max-answer-length", type=int, help="question answering evaluation (default 30)")
    columns.add_argument("--version-2-with-negative", **flag, help="question answering: unanswerable questions")
    optim = parser.add_argument_group("optimisation")
    optim.add_argument("--num-train-epochs", type=float, help="epochs (default 3; --max-steps wins)")
    optim.add_argument("--max-steps", type=int, help="updates to run (> 0 overrides --num-train-epochs)")
    optim.add_argument("--per-device-train-batch-size", type=int, help="rows per micro-batch (default 8)")
    optim.add_argument("--per-device-eval-batch-size", type=int, help="rows per evaluation batch (default 8)")
    optim.add_argument("--gradient-accumulation-steps", type=int, help="micro-batches per update (default 1)")
    optim.add_argument("--learning-rate", type=float, help="AdamW peak learning rate (default 5e-5)")
    optim.add_argument("--weight-decay", type=float, help="AdamW weight decay, not on biases / LayerNorm (default 0)")
    optim.add_argument("--adam-beta1", type=float, help="default 0.9")
    optim.add_argument("--adam-beta2", type=float, help="default 0.999")
    optim.add_argument("--adam-epsilon", type=float, help="default 1e-8")
    optim.add_argument("--warmup-ratio", type=float, help="share of the updates warming up linearly (default 0)")
    optim.add_argument("--warmup-steps", type=int, help="warm-up updates (instead of --warmup-ratio)")
    optim.add_argument("--max-grad-norm", type=float, help="global-norm clipping (default 1.0; 0: none)")
    optim.add_argument("--bf16", **flag, help="bfloat16 mixed precision (float32 weights and optimizer state)")
    optim.add_argument("--seed", type=int, help="data order, masking, new head weights, dropout (default 42)")
    optim.add_argument("--group-by-length", **switch, help="batch rows of similar length together (default: on)")
    optim.add_argument("--dataloader-drop-last", **flag, help="drop each epoch's last, smaller batch")
    optim.add_argument("--pad-to-multiple-of", type=int, help="round each batch's width up (e.g. 8)")
    add_device_option(optim)
    optim.add_argument(
        "--fsdp",
        **flag,
        help="PyTorch under torchrun: shard with FSDP2 instead of replicating with DDP (docs/scaling.md)",
    )
    logs = parser.add_argument_group("logging, evaluation, checkpoints")
    logs.add_argument("--logging-steps", type=int, help="a log_history entry every N updates (default 50)")
    logs.add_argument("--logging-first-step", **flag, help="also log the first update")
    logs.add_argument("--eval-strategy", choices=STRATEGIES, help="default: steps with --eval-steps, else no")
    logs.add_argument("--eval-steps", type=int, help="evaluate every N updates (default: --logging-steps)")
    logs.add_argument("--save-strategy", choices=STRATEGIES, help="checkpoints (default: steps)")
    logs.add_argument("--save-steps", type=int, help="a checkpoint every N updates and at the end (default 500)")
    logs.add_argument("--save-total-limit", type=int, help="keep at most N checkpoints (the newest and best kept)")
    logs.add_argument("--metric-for-best-model", help="track best_metric, e.g. accuracy or loss")
    logs.add_argument("--greater-is-better", **switch, help="default: false for a loss, true otherwise")
    logs.add_argument(
        "--resume-from-checkpoint",
        nargs="?",
        const=True,
        default=None,
        metavar="CHECKPOINT",
        help="continue a run: a checkpoint-N folder, or the latest checkpoint of --output-dir when no value",
    )
    logs.add_argument("--overwrite-output-dir", **flag, help="start over in an --output-dir holding a run")
    logs.add_argument("--progress", **switch, help="the progress bar (default: when stderr is a terminal)")


# CLI destinations that are not TrainingArguments fields of the same name
_TRAIN_CLI_ONLY = ("command", "verbose", "_command", "config_override", "framework")
_RUN_LOGGERS = ("distilbert_mf.training.trainer", "distilbert_mf.training.state")


def _training_values(args: argparse.Namespace) -> dict[str, Any]:
    """The given options of ``train`` / ``distill`` as ``TrainingArguments`` keywords (unset ones left to the
    dataclass defaults)."""
    from distilbert_mf.frameworks import available_frameworks

    values = {k: v for k, v in vars(args).items() if k not in _TRAIN_CLI_ONLY and v is not None}
    if args.framework is None:
        installed = available_frameworks()
        if not installed:
            raise CLIError("no framework is installed: pip install 'distilbert-mf[torch]' (or [tensorflow], [flax])")
        values["framework"] = installed[0]
    else:
        values["framework"] = args.framework
    if "label_names" in values:
        values["label_names"] = tuple(values["label_names"])
    if "choice_columns" in values:
        values["choice_columns"] = tuple(values["choice_columns"])
    if "max_grad_norm" in values and values["max_grad_norm"] == 0:
        values["max_grad_norm"] = None
    overrides: dict[str, Any] = {}
    for key, value in args.config_override:
        if key in overrides:
            raise CLIError(f"--config-override {key}= is given twice")
        overrides[key] = value
    values["config_overrides"] = overrides
    return values


def _run_training(args: argparse.Namespace, run: Callable[[], Any], loggers: Sequence[str] = _RUN_LOGGERS) -> int:
    """Run ``run()`` (train / distill) with the run's log lines at INFO, print the one-line JSON summary."""
    from distilbert_mf.training.trainer import TrainingDivergedError

    if not args.verbose:  # the run's log lines (log_history entries, checkpoints) without everyone's INFO
        for name in loggers:
            logging.getLogger(name).setLevel(logging.INFO)
    try:
        output = run()
    except TrainingDivergedError as err:
        raise CLIError(str(err)) from err
    summary = {
        "global_step": output.global_step,
        "train_loss": output.training_loss,
        **output.eval_metrics,
        "output_dir": str(output.output_dir),
    }
    # under torchrun (RANK) or as a JAX job (JAX_PROCESS_ID) every process ran the run; process 0 reports it
    if os.environ.get("RANK", "0") == "0" and os.environ.get("JAX_PROCESS_ID", "0") in ("", "0"):
        sys.stdout.write(json.dumps(summary) + "\n")
    return EXIT_OK


def _train(args: argparse.Namespace) -> int:
    """Train, then print one JSON summary line."""
    from distilbert_mf.training.trainer import TrainingArguments, train

    arguments = TrainingArguments(**_training_values(args))
    return _run_training(args, lambda: train(arguments))


register(
    Command(
        "train",
        "fine-tune a model (PyTorch, Keras or Flax) on a TSV/CSV/JSONL/SQuAD/CoNLL file; transformers' option names",
        _train_arguments,
        _train,
        epilog=TRAIN_EPILOG,
    )
)


# -- distill --------------------------------------------------------------------------------------------------------
DISTILL_EPILOG = """\
Every train option applies to the student's run. The run folder is train's (config.json, model.safetensors, tokenizer
files, trainer_state.json, eval_results.json, checkpoint-N/, training_curves.png) plus student-init/ (the student
built from the teacher's --student-layers), distillation.json (teacher, layers, loss weights; checked on resume) and,
in each log_history entry, the loss components beside loss: loss_ce, loss_mlm, loss_cos, loss_mse (general) or
loss_task (task-specific). Without --learning-rate etc., general distillation takes DistilBERT's recipe (lr 5e-4,
betas 0.9 / 0.98, eps 1e-6, 5 % warm-up, clipping at 5.0); task-specific distillation the fine-tuning defaults.

examples:
  distilbert-mf distill --teacher distilbert/distilbert-base-uncased --train-file corpus.txt --output-dir student \\
      --student-layers 0 2 4 --max-steps 10000 --per-device-train-batch-size 32
  distilbert-mf distill --task text-classification --teacher ./sst2-teacher --train-file train.tsv \\
      --validation-file dev.tsv --output-dir sst2-student --student-layers every_other

exit status as train: 0 done; 2 an error before the first step (or a diverged loss); 3 internal; 130 interrupted.
"""


def _student_layers(values: list[str]) -> tuple[int, ...] | str:
    """``--student-layers 0 2 4`` -> (0, 2, 4); ``distilbert`` / ``every_other`` stay names."""
    if len(values) == 1 and values[0] in ("distilbert", "every_other"):
        return values[0]
    try:
        return tuple(int(v) for v in values)
    except ValueError:
        raise CLIError(
            f"--student-layers takes teacher layer numbers (e.g. 0 2 4) or one of distilbert, every_other; got "
            f"{' '.join(values)}"
        ) from None


def _distill_arguments(parser: argparse.ArgumentParser) -> None:
    _train_arguments(parser, distill=True)
    group = parser.add_argument_group("distillation")
    group.add_argument("--teacher", required=True, help="the teacher: folder, Hub repo id or built-in name")
    group.add_argument(
        "--student-layers",
        nargs="+",
        metavar="LAYER",
        help="teacher layers the student keeps: numbers, or distilbert (default) / every_other",
    )
    group.add_argument("--temperature", type=float, help="soft-target temperature (default 2.0)")
    group.add_argument("--alpha-ce", type=float, help="soft-target weight (default 5.0 general, 0.5 task-specific)")
    group.add_argument("--alpha-mlm", type=float, help="general: masked-LM loss weight (default 2.0)")
    group.add_argument("--alpha-cos", type=float, help="general: hidden-state cosine weight (default 1.0)")
    group.add_argument("--alpha-mse", type=float, help="general: logit MSE weight (default 0.0)")
    group.add_argument("--alpha-task", type=float, help="task-specific: true-label loss weight (default 0.5)")
    group.add_argument(
        "--restrict-ce-to-mask", action="store_true", default=None, help="general: soft targets on masked tokens only"
    )
    group.add_argument("--mlm-smoothing", type=float, help="general: masking probability count ** -x (default 0.7)")
    group.add_argument("--teacher-bf16", action="store_true", default=None, help="run the teacher in bfloat16")


def _distill(args: argparse.Namespace) -> int:
    """Distil, then print one JSON summary line."""
    from distilbert_mf.distillation.run import DistillationArguments, distill

    values = _training_values(args)
    if "student_layers" in values:
        values["student_layers"] = _student_layers(values["student_layers"])
    arguments = DistillationArguments(**values)
    return _run_training(args, lambda: distill(arguments), (*_RUN_LOGGERS, "distilbert_mf.distillation.run"))


register(
    Command(
        "distill",
        "distil a teacher into a smaller student with DistilBERT's losses (PyTorch, Keras or Flax)",
        _distill_arguments,
        _distill,
        epilog=DISTILL_EPILOG,
    )
)


if __name__ == "__main__":
    sys.exit(main())
