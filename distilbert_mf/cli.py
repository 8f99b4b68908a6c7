"""The ``distilbert-mf`` command line.

Subcommands: ``run`` (a pipeline over input lines, one JSON result per line) and ``env`` (versions and devices).
JSON goes to stdout, logging and errors to stderr. Exit status: 0 on success, 1 on an error, 2 on bad usage.

Each subcommand is a :class:`Command` in the ``COMMANDS`` registry: a name, a help line, a function adding its
arguments and a function running it. Adding one takes about ten lines::

    def _convert_arguments(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("src", help="checkpoint folder, Hub repo id or short name")

    def _convert(args: argparse.Namespace) -> int:
        ...
        return 0

    register(Command("convert", "convert a checkpoint between formats", _convert_arguments, _convert))

Errors a user can cause (``ValueError``, ``TypeError``, ``KeyError``, ``OSError``, ``ImportError``, or
:class:`CLIError`) become one ``distilbert-mf <command>: error: ...`` line and exit status 1; ``--verbose`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any, TextIO

logger = logging.getLogger("distilbert_mf.cli")

PROG = "distilbert-mf"
USER_ERRORS = (ValueError, TypeError, KeyError, OSError, ImportError, NotImplementedError)


class CLIError(Exception):
    """A user-facing command-line error: printed as one line, exit status ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
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
        epilog=f"Run '{PROG} <command> --help' for a command's options.",
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
    """Entry point of the ``distilbert-mf`` console script; returns the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # before any TensorFlow import
    parser = build_parser()
    args = parser.parse_args(argv)
    command: Command | None = getattr(args, "_command", None)
    if command is None:
        parser.print_help(sys.stderr)
        return 2
    _configure_logging(args.verbose)
    try:
        return command.run(args)
    except CLIError as err:
        _report(command, err, args.verbose)
        return err.code
    except USER_ERRORS as err:
        _report(command, err, args.verbose)
        return 1
    except KeyboardInterrupt:
        return 130


def _report(command: Command, err: BaseException, verbose: bool) -> None:
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

examples:
  echo "I love this!" | distilbert-mf run --task text-classification
  distilbert-mf run --task ner --model ./my-ner --param aggregation_strategy=simple --input in.txt
  echo '{"question": "Who?", "context": "Ann wrote it."}' | distilbert-mf run --task question-answering --model ./qa
"""


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    from distilbert_mf.pipelines import TASK_ALIASES, TASKS

    tasks = ", ".join([*TASKS, *TASK_ALIASES])
    parser.add_argument("--task", required=True, help=f"the pipeline task: {tasks}")
    parser.add_argument(
        "--model",
        help="model folder, Hub repo id or built-in short name (text-classification defaults to the packaged model)",
    )
    parser.add_argument("--tokenizer", help="tokenizer folder or repo id (default: the model's)")
    parser.add_argument(
        "--framework", help="pt, tf or flax (aliases torch, tensorflow, jax); default: first installed of pt, tf, flax"
    )
    parser.add_argument("--input", default="-", help="input file, one input per line (default: stdin)")
    parser.add_argument("--output", default="-", help="output file, one JSON result per line (default: stdout)")
    parser.add_argument("--batch-size", type=int, default=32, help="inputs per forward pass (default: 32)")
    parser.add_argument("--device", help="cpu, -1, a GPU index like 0, cuda:1, gpu:0 or mps (default: framework's)")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: float32)")
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
    parser.add_argument("--progress", action="store_true", help="show a progress bar on stderr")


def _run(args: argparse.Namespace) -> int:
    from distilbert_mf.pipelines import TASKS, pipeline, resolve_task

    task = resolve_task(args.task)
    params = _parse_params(args.param)
    if args.top_k is not None:
        params["top_k"] = args.top_k
    TASKS[task].check_names(params)  # a misspelt parameter fails before any model is loaded
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be a positive integer, got {args.batch_size}", code=2)
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
        progress=args.progress,
    )
    with _open_output(args.output) as out:
        for result in _predict(pipe, task, items, plan):
            out.write(json.dumps(result, ensure_ascii=False, default=_json_default) + "\n")
            out.flush()
    return 0


def _parse_params(pairs: Iterable[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise CLIError(f"--param expects KEY=VALUE, got {pair!r}", code=2)
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
    pipe: Any, task: str, items: list[tuple[int, Any]], plan: list[tuple[dict[str, Any], list[int]]]
) -> Iterable[Any]:
    """Results in input order. Each group runs in chunks of many lines, so length-grouped batching pays off; output
    is written as soon as every earlier line has its result."""
    values = [value["sequences"] if task == "zero-shot-classification" else value for _, value in items]
    chunk = max(256, 8 * pipe.batch_size)
    results: dict[int, Any] = {}
    following = 0
    for options, indices in plan:
        for begin in range(0, len(indices), chunk):
            part = indices[begin : begin + chunk]
            results.update(zip(part, pipe.each([values[i] for i in part], **options)))
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


def environment(*, devices: bool = True, timeout: float = 120.0) -> dict[str, Any]:
    """Versions of Python, this library, its dependencies and each framework, plus each framework's devices.

    Versions come from package metadata (no imports). Devices are probed by importing each installed framework in
    its own subprocess, all in parallel, so a missing framework is never imported and the slowest import sets the time.
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
            try:
                stdout, stderr = probes[name].communicate(timeout=timeout)
                lines = stdout.strip().splitlines()
                info[key] = (
                    json.loads(lines[-1])
                    if probes[name].returncode == 0 and lines
                    else (f"probe failed: {stderr.strip().splitlines()[-1] if stderr.strip() else 'no output'}")
                )
            except subprocess.TimeoutExpired:
                probes[name].kill()
                probes[name].communicate()
                info[key] = f"probe timed out after {timeout:.0f} s"
    return info


def _env_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of 'name: value' lines")
    parser.add_argument(
        "--no-devices", action="store_true", help="skip the device probes (which import each installed framework)"
    )


def _env(args: argparse.Namespace) -> int:
    info = environment(devices=not args.no_devices)
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return 0
    width = max(len(key) for key in info)
    for key, value in info.items():
        shown = ", ".join(value) if isinstance(value, list) else value
        sys.stdout.write(f"{key:<{width}}  {shown}\n")
    return 0


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
        "env",
        "print versions of Python, this library, its dependencies and frameworks, and the devices each sees",
        _env_arguments,
        _env,
    )
)


# -- convert, parity: options and runners live next to their APIs (distilbert_mf.conversion / .parity) --------------
def _register_conversion_and_parity() -> None:
    from distilbert_mf import conversion, parity

    register(
        Command(
            "convert",
            "convert a checkpoint between weight formats (safetensors, pytorch_bin, tf_h5, flax_msgpack), losslessly",
            conversion.add_cli_arguments,
            conversion.run_cli,
            epilog=conversion.CLI_EPILOG,
        )
    )
    register(
        Command(
            "parity",
            "run a checkpoint in every installed framework and compare every output (exit 1 past --atol)",
            parity.add_cli_arguments,
            parity.run_cli,
            epilog=parity.CLI_EPILOG,
        )
    )


_register_conversion_and_parity()


if __name__ == "__main__":
    sys.exit(main())
