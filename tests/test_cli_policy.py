"""The rules every ``distilbert-mf`` subcommand follows: exit status, flags in messages, --dtype, devices, progress,
and no TensorFlow start-up noise. Tiny numpy-written checkpoints, in process where possible; no network (the Hub is
a refused port on 127.0.0.1)."""

from __future__ import annotations

import io
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import huggingface_hub.constants
import numpy as np
import pytest

from distilbert_mf import cli
from distilbert_mf.checkpoint.loading import save_pretrained
from distilbert_mf.checkpoint.names import TIED_KEY, TIED_SOURCE, expected_shapes
from distilbert_mf.config import DistilBertConfig
from distilbert_mf.frameworks import available_frameworks

ROOT = Path(__file__).resolve().parents[1]
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
SUBCOMMANDS = ("run", "convert", "parity", "env")


def tiny_checkpoint(folder: Path, head: str, shared_data: Path, **config_fields) -> Path:
    """A seeded random checkpoint of ``head`` with the tiny tokenizer of shared/data/tiny-random-distilbert."""
    config = DistilBertConfig(vocab_size=1124, dim=32, n_heads=4, hidden_dim=37, n_layers=2, **config_fields)
    rng = np.random.default_rng(0)
    state = {
        k: rng.normal(0, shape[-1] ** -0.5 if len(shape) == 2 else 0.5, shape).astype(np.float32)
        for k, shape in expected_shapes(config, head).items()
    }
    if head == "masked_lm":
        state[TIED_KEY] = state[TIED_SOURCE]
    save_pretrained(folder, config, state, head)
    for name in TOKENIZER_FILES:
        shutil.copy(shared_data / "tiny-random-distilbert" / name, folder / name)
    return folder


@pytest.fixture(scope="module")
def classifier_folder(tmp_path_factory, shared_data) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("policy") / "cls", "sequence_classification", shared_data)


def call(args: list[str], capsys, monkeypatch, stdin: str = "") -> tuple[int, str, str]:
    monkeypatch.setattr(sys, "stdin", io.StringIO(stdin))
    try:
        code = cli.main(args)
    except SystemExit as exit_info:  # argparse rejects the command line itself
        code = exit_info.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_args(model: Path, fw: str, *extra: str) -> list[str]:
    """``run --task sentiment-analysis`` on ``model`` with ``fw``, then ``extra``."""
    return ["run", "--task", "sentiment-analysis", "--model", str(model), "--framework", fw, *extra]


def framework() -> str:
    installed = available_frameworks()
    if not installed:
        pytest.skip("no framework installed")
    return installed[0]


# -- one exit-status policy -----------------------------------------------------------------------------------------
def test_every_subcommand_is_registered_and_documents_the_policy():
    assert set(SUBCOMMANDS) <= set(cli.COMMANDS)
    assert (cli.EXIT_OK, cli.EXIT_CHECK_FAILED, cli.EXIT_ERROR, cli.EXIT_INTERNAL_ERROR, cli.EXIT_INTERRUPTED) == (
        0,
        1,
        2,
        3,
        130,
    )
    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    for status in ("| 0 |", "| 1 |", "| 2 |", "| 3 |", "| 130 |"):
        assert status in doc
    for line in ("0     success", "130   interrupted"):
        assert line in cli.__doc__


@pytest.mark.parametrize("name", SUBCOMMANDS)
@pytest.mark.parametrize(
    ("raised", "status", "message"),
    [
        (ValueError("bad value"), 2, "error: bad value"),
        (FileNotFoundError("no such file"), 2, "error: no such file"),
        (KeyError("missing key"), 2, "error: missing key"),
        (cli.CLIError("flag problem"), 2, "error: flag problem"),
        (RuntimeError("kernel failed"), 3, "internal error: RuntimeError: kernel failed"),
        (KeyboardInterrupt(), 130, "interrupted"),
    ],
)
def test_exit_status_per_subcommand(name, raised, status, message, capsys, monkeypatch):
    """Whatever a subcommand raises maps to the same status and one message line naming the subcommand."""

    def fail(args):
        raise raised

    monkeypatch.setitem(cli.COMMANDS, name, cli.Command(name, "", cli.COMMANDS[name].add_arguments, fail))
    argv = {"run": ["--task", "fill-mask"], "convert": ["a", "b"], "parity": ["m"], "env": []}[name]
    code, out, err = call([name, *argv], capsys, monkeypatch)
    assert (code, out) == (status, "")
    assert f"distilbert-mf {name}: {message}" in err


def test_usage_errors_exit_2_in_every_subcommand(capsys, monkeypatch, tmp_path):
    for argv in (
        ["run", "--task", "fill-mask", "--dtype", "int8"],
        ["run", "--no-such-option"],
        ["convert", "only-src"],
        ["convert", "a", "b", "--dtype", "fp8"],
        ["parity", "m", "--head", "pooler"],
        ["parity", "m", "--atol", "tiny"],
        ["env", "--devices"],
        ["no-such-command"],
    ):
        code, out, err = call(argv, capsys, monkeypatch)
        assert code == 2 and out == "", argv
        assert "usage: distilbert-mf" in err, argv
    code, _, err = call(["parity", "m", "--atol", "0"], capsys, monkeypatch)
    assert code == 2 and "--atol must be a positive finite number, got 0.0" in err
    code, _, err = call(["run", "--task", "fill-mask", "-p", "batch_size=2"], capsys, monkeypatch, "a [MASK]\n")
    assert code == 2 and "use --progress and --batch-size" in err


def test_success_statuses(classifier_folder, capsys, monkeypatch, tmp_path):
    fw = framework()
    code, out, _ = call(
        run_args(classifier_folder, fw),
        capsys,
        monkeypatch,
        "great\n",
    )
    assert code == 0 and json.loads(out)[0]["label"].startswith("LABEL_")
    code, out, _ = call(["convert", str(classifier_folder), str(tmp_path / "out")], capsys, monkeypatch)
    assert code == 0 and "model.safetensors" in out
    code, out, _ = call(["env", "--no-devices", "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["distilbert_mf"]


@pytest.mark.parity
def test_parity_statuses_0_1_2(classifier_folder, capsys, monkeypatch, tmp_path):
    pair = ",".join(available_frameworks()[:2])
    assert call(["parity", str(classifier_folder), "--frameworks", pair], capsys, monkeypatch)[0] == 0
    code, _, err = call(
        ["parity", str(classifier_folder), "--frameworks", pair, "--atol", "1e-15", "--hidden-atol", "1e-15"],
        capsys,
        monkeypatch,
    )
    assert code == 1 and "parity FAILED" in err
    code, _, err = call(["parity", str(tmp_path / "absent"), "--frameworks", pair], capsys, monkeypatch)
    assert code == 2 and err.startswith("distilbert-mf parity: error: ")


# -- messages name flags ----------------------------------------------------------------------------------------------
def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def unreachable_hub(monkeypatch, tmp_path):
    """Downloads allowed, the Hub a refused port, an empty cache: what a machine without network sees."""
    from distilbert_mf.hub import reset_hub_state

    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_TOKEN", "")
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{closed_port()}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf" / "hub"))
    reset_hub_state()
    yield
    reset_hub_state()


@pytest.mark.parametrize(
    ("argv", "stdin", "repo"),
    [
        (["run", "--task", "fill-mask"], "a [MASK]\n", "distilbert/distilbert-base-uncased"),
        (["run", "--task", "question-answering"], '{"question": "q", "context": "c"}\n', "distilbert/distilbert-base-"),
        (["run", "--task", "feature-extraction"], "hi\n", "distilbert/distilbert-base-cased"),
        (["convert", "org/absent", "OUT"], "", "org/absent"),
        (["parity", "org/absent", "--frameworks", "pt,tf"], "", "org/absent"),
    ],
)
def test_hub_unreachable_fails_fast_naming_flags(argv, stdin, repo, unreachable_hub, capsys, monkeypatch, tmp_path):
    if argv[0] == "parity" and len(available_frameworks()) < 2:
        pytest.skip("parity needs two frameworks")
    argv = [str(tmp_path / "out") if a == "OUT" else a for a in argv]
    start = time.monotonic()
    code, out, err = call(argv, capsys, monkeypatch, stdin)
    assert time.monotonic() - start < 5
    assert code == 2 and out == ""
    assert "could not reach the Hugging Face Hub" in err and f"'{repo}" in err
    assert "--cache-dir DIR" in err and "cache_dir=" not in err and "local_files_only" not in err


def test_other_errors_name_flags(classifier_folder, capsys, monkeypatch, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    code, _, err = call(["convert", str(classifier_folder), str(tmp_path / "full")], capsys, monkeypatch)
    assert code == 2 and "pass --overwrite" in err and "overwrite=True" not in err
    code, _, err = call(["run", "--task", "ner"], capsys, monkeypatch, "x\n")
    assert code == 2 and "--model dslim/distilbert-NER" in err and "model=" not in err
    missing = next((f for f in ("pt", "tf", "flax") if f not in available_frameworks()), None)
    if missing is not None:
        code, _, err = call(
            ["run", "--task", "ner", "--model", str(classifier_folder), "--framework", missing],
            capsys,
            monkeypatch,
            "x\n",
        )
        assert code == 2 and f"--framework {missing} needs" in err


def test_device_is_echoed_as_written(classifier_folder, capsys, monkeypatch):
    fw = framework()
    if fw == "pt":
        import torch

        if torch.cuda.is_available():
            pytest.skip("this machine has a GPU")
    for device in ("cuda", "cuda:1", "GPU:0", "0"):
        code, _, err = call(
            run_args(classifier_folder, fw, "--device", device),
            capsys,
            monkeypatch,
            "x\n",
        )
        assert code == 2, err
        assert f"error: --device {device} asks for a GPU" in err and "'gpu'" not in err and "device=" not in err


# -- --dtype, the same in every subcommand ----------------------------------------------------------------------------
def test_dtype_is_one_option_everywhere():
    parser = cli.build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command").choices
    with_dtype = [name for name, sub in subparsers.items() if any(a.dest == "dtype" for a in sub._actions)]
    assert {"run", "convert"} <= set(with_dtype)
    for name in with_dtype:
        action = next(a for a in subparsers[name]._actions if a.dest == "dtype")
        assert action.type is cli.parse_dtype and action.metavar == "DTYPE"
    spellings = {
        "fp32": "float32",
        "float32": "float32",
        "BF16": "bfloat16",
        "bfloat16": "bfloat16",
        "fp16": "float16",
        "half": "float16",
        "auto": "auto",
        " Auto ": "auto",
    }
    assert {given: cli.parse_dtype(given) for given in spellings} == spellings


def test_convert_and_run_accept_bf16(classifier_folder, capsys, monkeypatch, tmp_path):
    from safetensors import safe_open

    code, _, err = call(
        ["convert", str(classifier_folder), str(tmp_path / "bf16"), "--dtype", "bf16"], capsys, monkeypatch
    )
    assert code == 0, err
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "np") as handle:
        assert {handle.get_slice(k).get_dtype() for k in handle.keys()} == {"BF16"}
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["torch_dtype"] == "bfloat16"
    code, _, err = call(
        ["convert", str(classifier_folder), str(tmp_path / "auto"), "--dtype", "auto"], capsys, monkeypatch
    )
    assert (
        code == 0
        and (tmp_path / "auto" / "model.safetensors").read_bytes()
        == (classifier_folder / "model.safetensors").read_bytes()
    )  # auto: the checkpoint's dtype, bit for bit
    fw = framework()
    code, _, err = call(
        run_args(tmp_path / "bf16", fw, "--dtype", "bf16"),
        capsys,
        monkeypatch,
        "x\n",
    )
    assert code == 0, err


# -- progress ---------------------------------------------------------------------------------------------------------
@pytest.mark.torch
def test_run_progress_is_one_bar_for_the_whole_input(classifier_folder, capsys, monkeypatch):
    lines = "".join(f"line number {i}\n" for i in range(600))  # 3 chunks of 256 lines
    code, out, err = call(
        run_args(classifier_folder, "pt", "--batch-size", "8", "--progress"),
        capsys,
        monkeypatch,
        lines,
    )
    assert code == 0 and len(out.splitlines()) == 600
    frames = [f for f in err.replace("\r", "\n").splitlines() if "line" in f and "/" in f]
    assert frames and all("/600" in f for f in frames), frames  # never a bar of 256 or 8
    assert "600/600" in frames[-1]


def test_progress_shows_only_past_its_delay(capsys):
    with cli.Progress(3, "quick", "step", delay=0.5, enabled=True) as bar:
        bar.update(3)
    assert "quick" not in capsys.readouterr().err
    with cli.Progress(3, "slow", "step", delay=0.3, enabled=True) as bar:
        bar.step("first")
        time.sleep(0.8)  # the bar appears while the step still runs
        assert "slow" in capsys.readouterr().err
        bar.update(3)
    with cli.Progress(3, "off", "step", delay=0.0) as bar:  # stderr is not a terminal under pytest
        time.sleep(0.3)
        bar.update()
    assert "off" not in capsys.readouterr().err and bar.n == 0


def test_env_and_parity_show_progress_on_a_terminal(capsys, monkeypatch):
    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0.0)
    monkeypatch.setattr(cli, "_version", lambda name: "1.0")  # every framework "installed"
    probe = "import json, time; time.sleep(0.3); print(json.dumps(['cpu']))"
    monkeypatch.setattr(cli, "_DEVICE_PROBES", dict.fromkeys(cli._DEVICE_PROBES, probe))
    code, out, err = call(["env", "--json"], capsys, monkeypatch)
    assert code == 0 and json.loads(out)["flax devices"] == ["cpu"]
    assert "env" in err and "probe" in err


@pytest.mark.parity
def test_parity_progress(classifier_folder, capsys, monkeypatch):
    monkeypatch.setattr(cli, "_stderr_is_terminal", lambda: True)
    monkeypatch.setattr(cli, "PROGRESS_DELAY", 0.0)
    pair = ",".join(available_frameworks()[:2])
    code, out, err = call(["parity", str(classifier_folder), "--frameworks", pair], capsys, monkeypatch)
    assert code == 0 and "PASS" in out
    assert "parity" in err and "framework" in err


# -- TensorFlow's start-up noise ----------------------------------------------------------------------------------------
NOISE = (
    "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n"
    "I0000 00:00:1796242553.292549   12020 port.cc:153] oneDNN custom operations are on. You may see slightly "
    "different numerical results due to floating-point round-off errors.\n"
    "I0000 00:00:1796242553.292875   12020 cudart_stub.cc:31] Could not find cuda drivers on your machine.\n"
    "E0000 00:00:1796242556.752050   12020 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow with the appropriate "
    "compiler flags.\n"
    "2024-01-01 10:00:00.123456: I tensorflow/core/util/port.cc:113] oneDNN custom operations are on.\n"
)


def test_noise_filter_keeps_every_other_line():
    kept = "a real warning\nUserWarning: something\n"
    assert cli.drop_tensorflow_noise(NOISE + kept) == kept
    assert cli.drop_tensorflow_noise("I0000 is not an absl line\n") == "I0000 is not an absl line\n"


def test_quiet_import_filters_what_a_module_writes_while_imported(tmp_path, monkeypatch, capfd):
    package = tmp_path / "noisy_pkg"
    package.mkdir()
    (package / "__init__.py").write_text(
        f"import os\nos.write(2, {(NOISE + 'kept line').encode()!r} + b'\\n')\nVALUE = 1\n"
    )
    (tmp_path / "failing_pkg.py").write_text(f"import os\nos.write(2, {NOISE.encode()!r})\nraise ImportError('boom')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    finder = cli._QuietImport(["noisy_pkg", "failing_pkg"])
    monkeypatch.setattr(sys, "meta_path", [finder, *sys.meta_path])
    for name in ("noisy_pkg", "failing_pkg"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    import noisy_pkg

    assert noisy_pkg.VALUE == 1 and type(noisy_pkg.__loader__).__name__ != "_QuietLoader"
    err = capfd.readouterr().err
    assert err == "kept line\n"
    with pytest.raises(ImportError, match="boom"):
        import failing_pkg  # noqa: F401
    assert "cuInit" in capfd.readouterr().err  # a failed import shows everything


def test_quiet_tensorflow_restores_state(monkeypatch):
    import logging

    monkeypatch.delenv(cli.SHOW_TF_LOGS, raising=False)
    before = list(sys.meta_path)
    with cli.quiet_tensorflow():
        assert isinstance(sys.meta_path[0], cli._QuietImport)
        assert logging.getLogger("absl").level == logging.ERROR
    assert sys.meta_path == before
    monkeypatch.setenv(cli.SHOW_TF_LOGS, "1")
    with cli.quiet_tensorflow():
        assert sys.meta_path == before


@pytest.mark.slow
@pytest.mark.tensorflow
def test_tensorflow_run_prints_nothing_but_results(classifier_folder):
    env = {k: v for k, v in os.environ.items() if k not in ("TF_CPP_MIN_LOG_LEVEL", cli.SHOW_TF_LOGS)}
    argv = [
        sys.executable,
        "-m",
        "distilbert_mf.cli",
        "run",
        "--task",
        "sentiment-analysis",
        "--model",
        str(classifier_folder),
        "--framework",
        "tf",
    ]
    quiet = subprocess.run(argv, input="great\n", capture_output=True, text=True, env=env, timeout=300)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr
    assert json.loads(quiet.stdout)[0]["label"].startswith("LABEL_")
    loud = subprocess.run(
        argv, input="great\n", capture_output=True, text=True, timeout=300, env={**env, cli.SHOW_TF_LOGS: "1"}
    )
    assert loud.returncode == 0 and loud.stdout == quiet.stdout
    assert "absl::InitializeLog" in loud.stderr or "oneDNN" in loud.stderr  # TensorFlow 2.21 on x86-64


# -- docs/cli.md ----------------------------------------------------------------------------------------------------
def test_cli_doc_examples(capsys, monkeypatch):
    import re

    doc = (ROOT / "docs" / "cli.md").read_text(encoding="utf-8")
    (block,) = re.findall(r"```python\n(.*?)```", doc, flags=re.S)
    monkeypatch.setattr(cli, "COMMANDS", dict(cli.COMMANDS))
    exec(compile(block, "docs/cli.md", "exec"), {})
    code, out, err = call(["hello", "you", "--dtype", "bf16"], capsys, monkeypatch)
    assert (code, out) == (0, "hello you\n")
    # the documented error message is the real one
    documented = next(line for line in doc.splitlines() if line.startswith("distilbert-mf run: error: the token-"))
    code, _, err = call(["run", "--task", "ner"], capsys, monkeypatch, "x\n")
    assert code == 2 and err.strip() == documented
