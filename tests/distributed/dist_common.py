"""What the distributed tests share: tiny runs described by a JSON spec, launched as subprocesses with timeouts.

A spec names a tiny checkpoint folder (with its tokenizer), a training file, the task, the *global* batch size, the
number of updates, and what to save or resume. Workers (``torch_worker.py``, ``jax_worker.py`` ...) read it, train
through the library's data layer (``BatchLoader(world_size=, rank=)``) and write ``result.json`` (rank 0): per-update
losses and gradient norms, per-rank parameter bytes, seconds per update. The tests compare those of N processes
with one process's.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
NO_DROPOUT = {"dropout": 0.0, "attention_dropout": 0.0, "seq_classif_dropout": 0.0, "qa_dropout": 0.0}
RTOL = 1e-5  # the bound: losses and final weights of N processes vs one


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(**extra: str) -> dict[str, str]:
    """The test process's environment for a worker: quiet, offline, one thread per process (two cores here),
    without the fake-device flags of the in-process tests or a launcher's variables."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k
        not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT", "XLA_FLAGS", "JAX_NUM_CPU_DEVICES")
    }
    env.update(
        OMP_NUM_THREADS="1",
        MKL_NUM_THREADS="1",
        TF_CPP_MIN_LOG_LEVEL="3",
        HF_HUB_OFFLINE="1",
        PYTHONPATH=os.pathsep.join([str(ROOT), str(HERE), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
    )
    env.update(extra)
    return env


def run_command(command: list[str], *, env: dict[str, str], timeout: float, cwd: Path = ROOT) -> tuple[int, str]:
    """Run ``command`` in its own process group; on timeout kill the whole group (no stray ranks) and fail."""
    started = time.perf_counter()
    process = subprocess.Popen(
        command, env=env, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(
            f"{' '.join(command)} ran past {timeout:.0f} s and was killed; its output:\n{output[-4000:]}"
        ) from None
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    logger_line = f"[{time.perf_counter() - started:.1f} s] {' '.join(command[-2:])}"
    return process.returncode, f"{logger_line}\n{output}"


def torchrun(script: Path, spec_path: Path, nproc: int, *, timeout: float = 60.0, **env: str) -> tuple[int, str]:
    """``torchrun --nproc_per_node nproc script spec`` on 127.0.0.1 (a free port), under ``timeout``."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", str(nproc),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), "--max_restarts", "0",
        str(script), str(spec_path),
    ]  # fmt: skip
    return run_command(command, env=child_env(**env), timeout=timeout)


def torch_variables(rank: int, nproc: int, port: int) -> dict[str, str]:
    """torchrun's variables for ``rank`` of ``nproc`` on 127.0.0.1:``port``."""
    return {"RANK": str(rank), "WORLD_SIZE": str(nproc), "LOCAL_RANK": str(rank), "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port)}  # fmt: skip


def jax_variables(rank: int, nproc: int, port: int, devices: int = 1) -> dict[str, str]:
    """jax.distributed's variables for process ``rank`` of ``nproc`` (``devices`` CPU devices each)."""
    return {"JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}", "JAX_NUM_PROCESSES": str(nproc),
            "JAX_PROCESS_ID": str(rank), "XLA_FLAGS": f"--xla_force_host_platform_device_count={devices}"}  # fmt: skip


def launch_ranks(
    script: Path, spec_path: Path, nproc: int, *, timeout: float = 60.0, variables: Any = torch_variables
) -> list[tuple[int, str]]:
    """Start ``nproc`` ranks of ``script`` by hand (``variables(rank, nproc, port)``: torchrun's by default, a free
    port), each with its own output, so a test can check what *every* rank said; all are killed if any runs past
    ``timeout``."""
    return launch_processes([sys.executable, str(script), str(spec_path)], nproc, timeout=timeout, variables=variables)


def launch_processes(
    command: list[str], nproc: int, *, timeout: float = 60.0, variables: Any = torch_variables
) -> list[tuple[int, str]]:
    """Start ``nproc`` copies of ``command``, each with ``variables(rank, nproc, port)`` (a free port) and its own
    output; all are killed if any runs past ``timeout``. Returns (exit status, output) per rank."""
    port = free_port()
    processes = []
    for rank in range(nproc):
        env = child_env(**variables(rank, nproc, port))
        processes.append(
            subprocess.Popen(
                command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                start_new_session=True,
            )
        )  # fmt: skip
    deadline = time.monotonic() + timeout
    results = []
    try:
        for process in processes:
            output, _ = process.communicate(timeout=max(deadline - time.monotonic(), 0.1))
            results.append((process.returncode, output))
    except subprocess.TimeoutExpired:
        raise AssertionError(f"{' '.join(command[:4])} ...: a rank ran past {timeout:.0f} s (killed)") from None
    finally:
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)
                process.communicate()
    return results


# the tiny run's options (tests/training_runs.py run_arguments) that the train command lines pass as flags
TRAIN_FLAGS = (
    "task", "model", "train_file", "validation_file", "max_steps", "learning_rate", "weight_decay", "warmup_steps",
    "max_seq_length", "pad_to_multiple_of", "logging_steps", "save_steps", "seed",
)  # fmt: skip


def train_command(arguments: dict, output_dir: Path, per_device: int, framework: str, *extra: str) -> list[str]:
    """``train --framework F --output-dir ... --per-device-train-batch-size N`` and the run's flags (dropout 0)."""
    flags = ["train", "--framework", framework, "--output-dir", str(output_dir), "--per-device-train-batch-size",
             str(per_device), "--per-device-eval-batch-size", "8"]  # fmt: skip
    for name in TRAIN_FLAGS:
        flags += [f"--{name.replace('_', '-')}", str(arguments[name])]
    for key, value in NO_DROPOUT.items():
        flags += ["--config-override", f"{key}={value}"]
    return [*flags, *extra]


def train_history(output_dir: Path) -> dict:
    """The logged losses and the final evaluation of a finished run folder."""
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text(encoding="utf-8"))
    losses = [entry["loss"] for entry in state["log_history"] if "loss" in entry]
    evaluation = json.loads((Path(output_dir) / "eval_results.json").read_text(encoding="utf-8"))
    return {"losses": losses, "eval_loss": evaluation["eval_loss"], "eval_accuracy": evaluation["eval_accuracy"]}


def distill_history(output_dir: Path, components: tuple[str, ...]) -> dict:
    """The logged steps, the logged ``components`` (``loss``, ``loss_ce`` ...) and the final evaluation loss of a
    finished distillation run folder."""
    state = json.loads((Path(output_dir) / "trainer_state.json").read_text(encoding="utf-8"))
    entries = [entry for entry in state["log_history"] if "loss" in entry and "step" in entry]
    evaluation = json.loads((Path(output_dir) / "eval_results.json").read_text(encoding="utf-8"))
    return {
        "steps": [entry["step"] for entry in entries],
        **{name: [entry[name] for entry in entries] for name in components},
        "eval_loss": evaluation["eval_loss"],
    }


def write_spec(folder: Path, **spec: Any) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    spec.setdefault("out", str(folder))
    path = folder / "spec.json"
    path.write_text(json.dumps(spec, indent=1), encoding="utf-8")
    return path


def read_result(folder: Path) -> dict[str, Any]:
    return json.loads((Path(folder) / "result.json").read_text(encoding="utf-8"))


# ---------------------------------------------------------------------------------------------------------------------
# Inside a worker
# ---------------------------------------------------------------------------------------------------------------------


def load_spec(path: str) -> dict[str, Any]:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def prepare_data(spec: dict[str, Any]) -> tuple[Any, Any]:
    """(config without dropout, with the data's head; the tokenized training set) of a spec."""
    from distilbert_mf import DistilBertConfig
    from distilbert_mf.tokenization.auto import AutoTokenizer
    from distilbert_mf.training.data import prepare_dataset

    config = DistilBertConfig.from_pretrained(spec["model"]).replace(**NO_DROPOUT)
    tokenizer = AutoTokenizer.from_pretrained(spec["model"])
    data = prepare_dataset(
        spec["task"], spec["train_file"], tokenizer, max_seq_length=spec.get("seq", 32), config=config
    )
    return config.replace(**data.config_overrides()), data


def make_loader(spec: dict[str, Any], data: Any, world_size: int, rank: int) -> tuple[Any, Any, Any]:
    """(BatchLoader of this rank's shard of every global batch, TrainingPlan, LinearSchedule)."""
    from distilbert_mf.training.batching import BatchLoader

    loader = BatchLoader(
        data, spec["global_batch"], seed=0, world_size=world_size, rank=rank, pad_to_multiple_of=spec.get("seq", 32),
        last_batch="drop",
    )  # fmt: skip
    plan = loader.plan(max_steps=spec["steps"], gradient_accumulation_steps=spec.get("accumulation", 1))
    return loader, plan, plan.schedule(spec.get("learning_rate", 2e-3), warmup_steps=2)


def stand_in_run(schedule: Any) -> types.SimpleNamespace:
    """What the frameworks' ``create_optimizer`` reads from a TrainingRun."""
    from distilbert_mf.training.schedules import no_weight_decay

    args = types.SimpleNamespace(
        adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, weight_decay=0.01, max_grad_norm=1.0,
        gradient_accumulation_steps=1,
    )  # fmt: skip
    return types.SimpleNamespace(args=args, schedule=schedule, decays=lambda name: not no_weight_decay(name))


def write_result(spec: dict[str, Any], **values: Any) -> None:
    out = Path(spec["out"])
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "result.json.tmp"
    tmp.write_text(json.dumps(values, indent=1), encoding="utf-8")
    os.replace(tmp, out / "result.json")


# ---------------------------------------------------------------------------------------------------------------------
# Comparisons
# ---------------------------------------------------------------------------------------------------------------------


def load_weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(Path(folder) / "model.safetensors"))


def assert_same_losses(actual: list[float], expected: list[float], what: str) -> None:
    actual_a, expected_a = np.asarray(actual), np.asarray(expected)
    assert actual_a.shape == expected_a.shape, f"{what}: {actual_a.shape} updates vs {expected_a.shape}"
    worst = float(np.max(np.abs(actual_a - expected_a) / np.abs(expected_a)))
    assert worst <= RTOL, f"{what}: losses differ by {worst:.2e} relative (> {RTOL}):\n{actual_a}\n{expected_a}"


# The key biases: adding b to every key adds q.b to all scores of a query, which softmax cancels, so their exact
# gradient is 0; Adam divides the rounding noise left in it (1e-10) by its own root mean square and moves them by
# lr-sized steps in directions that depend on the summation order. They change no output, so they are compared
# through the models' outputs (the tests do), not entry by entry.
OUTPUT_INVARIANT = (".attention.k_lin.bias",)


def assert_same_weights(actual: dict[str, np.ndarray], expected: dict[str, np.ndarray], what: str) -> float:
    """Every weight within RTOL relative to the tensor's largest entry (but :data:`OUTPUT_INVARIANT` ones); returns
    the worst such difference."""
    assert sorted(actual) == sorted(expected), f"{what}: different weight names"
    worst = 0.0
    for key in expected:
        if key.endswith(OUTPUT_INVARIANT):
            continue
        scale = max(float(np.max(np.abs(expected[key]))), 1e-12)
        diff = float(np.max(np.abs(actual[key].astype(np.float64) - expected[key]))) / scale
        assert diff <= RTOL, f"{what}: {key} differs by {diff:.2e} of its largest entry (> {RTOL})"
        worst = max(worst, diff)
    return worst


def assert_same_run(history: dict, reference: dict, folder: Path, reference_folder: Path, what: str) -> None:
    """Two finished runs of the tiny 6-update recipe (:func:`train_history` of each): the same logged losses, the
    same evaluation (loss within RTOL, accuracy equal) and the same saved model (:func:`assert_same_weights`)."""
    assert len(history["losses"]) == 6, what
    assert_same_losses(history["losses"], reference["losses"], what)
    assert abs(history["eval_loss"] - reference["eval_loss"]) <= RTOL * abs(reference["eval_loss"]), what
    assert history["eval_accuracy"] == reference["eval_accuracy"], what
    assert_same_weights(load_weights(folder), load_weights(reference_folder), what)
