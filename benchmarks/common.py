"""What the benchmark scripts share: thread pinning, machine facts, FLOP counts, the worker protocol, peak RSS.

Every worker process calls :func:`pin_threads` *before* importing its framework, so PyTorch, TensorFlow/Keras,
JAX/XLA and ONNX Runtime all run with the same number of threads on the same cores:

- the process is bound to the first ``threads`` CPUs (``os.sched_setaffinity``; JAX/XLA sizes its CPU thread pool
  from the CPUs it may run on, and has no other switch),
- ``OMP_NUM_THREADS`` / ``MKL_NUM_THREADS`` / ``OPENBLAS_NUM_THREADS`` = ``threads``, and the driver's
  ``OMP_WAIT_POLICY`` (PyTorch's OpenMP threads; ``passive`` by default, see docs/benchmarks.md),
- ``TF_NUM_INTRAOP_THREADS`` = ``threads``, ``TF_NUM_INTEROP_THREADS`` = 1,
- then, after the import, ``torch.set_num_threads(threads)`` / ``torch.set_num_interop_threads(1)``,
  ``tf.config.threading`` intra = ``threads`` / inter = 1, ONNX Runtime ``intra_op_num_threads`` = ``threads`` /
  ``inter_op_num_threads`` = 1 (see :func:`pin_framework_threads`).
"""

from __future__ import annotations

import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
RESULTS = ROOT / "benchmarks" / "results"

logger = logging.getLogger("benchmarks")

LABELS = {"id2label": {0: "NEGATIVE", 1: "POSITIVE"}, "label2id": {"NEGATIVE": 0, "POSITIVE": 1}}
# distilbert-base-uncased (DistilBertConfig's defaults: vocab 30522, dim 768, 12 heads, 6 layers), its tokenizer
FULL_CONFIG: dict[str, Any] = {"num_labels": 2, **LABELS}
FULL_TOKENIZER = SHARED / "distilbert-base-uncased-tokenizer"
# --smoke: tiny odd sizes over the vocabulary of transformers' tiny random DistilBERT (1124 tokens)
SMOKE_CONFIG: dict[str, Any] = {
    "vocab_size": 1124,
    "dim": 32,
    "n_heads": 4,
    "hidden_dim": 37,
    "n_layers": 2,
    "num_labels": 2,
    **LABELS,
}
SMOKE_TOKENIZER = SHARED / "tiny-random-distilbert"
TOKENIZER_FILES = ("vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def pin_threads(threads: int, omp_wait_policy: str | None = None) -> None:
    """Bind this process to ``threads`` CPUs and set the thread environment variables (before framework imports).

    ``omp_wait_policy`` ("passive" / "active") sets ``OMP_WAIT_POLICY`` for this process and its children.
    """
    if threads < 1:
        raise ValueError(f"threads must be >= 1, got {threads}")
    if omp_wait_policy is not None:
        if omp_wait_policy.lower() not in ("passive", "active"):
            raise ValueError(f"omp_wait_policy must be 'passive' or 'active', got {omp_wait_policy!r}")
        os.environ["OMP_WAIT_POLICY"] = omp_wait_policy.upper()
    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus[:threads])
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "TF_NUM_INTRAOP_THREADS"):
        os.environ[name] = str(threads)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def pin_framework_threads(framework: str, threads: int) -> dict[str, Any]:
    """Apply the framework's own thread settings after its import; returns what was set (for the JSON)."""
    if framework == "torch":
        import torch

        torch.set_num_threads(threads)
        try:
            torch.set_num_interop_threads(1)
        except RuntimeError:  # already set once in this process
            pass
        return {"torch_intra_op": torch.get_num_threads(), "torch_inter_op": torch.get_num_interop_threads()}
    if framework == "tensorflow":
        import tensorflow as tf

        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(1)
        except RuntimeError:  # the runtime was already initialised with the environment's values
            pass
        return {
            "tf_intra_op": tf.config.threading.get_intra_op_parallelism_threads(),
            "tf_inter_op": tf.config.threading.get_inter_op_parallelism_threads(),
        }
    if framework == "jax":
        return {"xla_cpu_threads": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None}
    if framework == "onnxruntime":
        return {"ort_intra_op": threads, "ort_inter_op": 1}
    raise ValueError(f"unknown framework {framework!r}; expected torch, tensorflow, jax or onnxruntime")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_flags() -> list[str]:
    """The AVX-512 / AMX flags that decide the float32 and bfloat16 kernels."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            flags = next(line.split(":", 1)[1].split() for line in handle if line.startswith("flags"))
    except (OSError, StopIteration):
        return []
    return sorted(f for f in flags if f.startswith(("avx512", "amx", "avx2", "fma")))


def memory_total_bytes() -> int | None:
    try:
        with open("/proc/meminfo", encoding="utf-8") as handle:
            return next(int(line.split()[1]) * 1024 for line in handle if line.startswith("MemTotal:"))
    except (OSError, StopIteration):
        return None


def machine_info() -> dict[str, Any]:
    """What decides the numbers: CPU, cores, memory, the load while measuring, library versions."""
    from importlib import metadata

    versions = {}
    for package in (
        "torch",
        "tensorflow",
        "keras",
        "jax",
        "flax",
        "onnxruntime",
        "onnx",
        "transformers",
        "tokenizers",
        "safetensors",
        "numpy",
        "distilbert-mf",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_flags": cpu_flags(),
        "memory_bytes": memory_total_bytes(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "load_average": list(os.getloadavg()),
        "versions": versions,
    }


# ---------------------------------------------------------------------------------------------------------- FLOPs
def forward_flops(config: Any, batch: int, seq: int, num_labels: int | None = None) -> int:
    """Multiply-add FLOPs (2 per MAC) of a sequence-classification forward: the matmuls only.

    Per layer and token: q/k/v/out projections ``4 d^2``, the FFN ``2 d h``, scores and context ``2 seq d``; then
    ``pre_classifier`` (``d^2``) and ``classifier`` on the first token of each sequence. LayerNorm, softmax, GELU
    and the embeddings are a few percent and left out, as usual for GFLOP/s against a GEMM peak.
    """
    d, h, layers = config.dim, config.hidden_dim, config.n_layers
    labels = config.num_labels if num_labels is None else num_labels
    per_token_layer = 4 * d * d + 2 * d * h + 2 * seq * d
    head = d * d + d * labels
    return 2 * (batch * seq * layers * per_token_layer + batch * head)


# ------------------------------------------------------------------------------------------- machine load
def cpu_ticks() -> tuple[int, int]:
    """(busy ticks of normal-priority work, ticks of niced work) summed over all CPUs, from ``/proc/stat``."""
    try:
        with open("/proc/stat", encoding="utf-8") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return 0, 0
    user, nice, system, _idle, _iowait, irq, softirq = fields[:7]
    return user + system + irq + softirq, nice


def wait_for_quiet(
    max_wait_s: float, *, min_wait_s: float = 0.05, window_s: float = 0.1, busy_ticks: int = 1
) -> tuple[float, bool]:
    """Sleep ``min_wait_s``, then until a ``window_s`` window passes in which normal-priority work (this process
    included) used at most ``busy_ticks`` clock ticks of CPU, for at most ``max_wait_s`` more.

    Niced work (other people's test runs, run with ``nice``) is ignored: the scheduler gives the benchmark the
    cores. Returns (seconds waited, whether the machine was quiet).
    """
    start = time.perf_counter()
    time.sleep(min_wait_s)
    while True:
        before = cpu_ticks()[0]
        time.sleep(window_s)
        if cpu_ticks()[0] - before <= busy_ticks:
            return time.perf_counter() - start, True
        if time.perf_counter() - start > min_wait_s + max_wait_s:
            return time.perf_counter() - start, False


# --------------------------------------------------------------------------------------------- statistics
def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def rotate(items: Sequence[Any], shift: int) -> list[Any]:
    """``items`` rotated left by ``shift``: each round starts with another contender."""
    shift %= max(len(items), 1)
    return [*items[shift:], *items[:shift]]


# ------------------------------------------------------------------------------------------- worker protocol
class WorkerChannel:
    """The worker side of the JSON-lines protocol: requests on stdin, one JSON reply per request.

    The protocol gets a private copy of the original stdout; file descriptor 1 is pointed at stderr, so whatever a
    framework prints (or logs to stdout) cannot corrupt a reply.
    """

    def __init__(self) -> None:
        self._out: TextIO = os.fdopen(os.dup(1), "w", buffering=1, encoding="utf-8")
        sys.stdout.flush()
        os.dup2(2, 1)

    def requests(self) -> Iterator[dict[str, Any]]:
        for line in sys.stdin:
            if line.strip():
                yield json.loads(line)

    def reply(self, message: dict[str, Any]) -> None:
        self._out.write(json.dumps(message) + "\n")
        self._out.flush()


class WorkerProcess:
    """The driver side: one long-lived worker process per framework, driven one request at a time.

    Only one worker computes at any moment (the others wait on their stdin), so the frameworks take turns on the
    same cores and the driver can interleave their timed runs.
    """

    def __init__(self, name: str, argv: list[str], *, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=None,  # the worker's logs go to the driver's stderr
            text=True,
            env=env,
            cwd=ROOT,
        )

    def request(self, **message: Any) -> dict[str, Any]:
        if self.process.stdin is None or self.process.stdout is None:  # never: created with PIPEs
            raise RuntimeError(f"benchmark worker {self.name} has no pipes")
        try:
            self.process.stdin.write(json.dumps(message) + "\n")
            self.process.stdin.flush()
        except BrokenPipeError as error:
            raise RuntimeError(f"benchmark worker {self.name} exited (code {self.process.poll()})") from error
        line = self.process.stdout.readline()
        if not line:
            raise RuntimeError(f"benchmark worker {self.name} exited (code {self.process.wait()}) during {message}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"benchmark worker {self.name} failed on {message}: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.process.poll() is None:
            try:
                self.request(cmd="quit")
            except RuntimeError:
                pass
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def emit_json(result: Any, path: str | os.PathLike[str] | None) -> None:
    """Write ``result`` as JSON to ``path``, or print it when no path is given."""
    text = json.dumps(result, indent=2)
    if path:
        Path(path).write_text(text + "\n", encoding="utf-8")
    else:
        print(text)


def run_script(argv: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess[str]:
    """Run another benchmark script in its own process (stdout captured, stderr passed through)."""
    logger.info("running %s", " ".join(argv))
    return subprocess.run(argv, cwd=ROOT, stdout=subprocess.PIPE, text=True, timeout=timeout, check=False)


# -------------------------------------------------------------------------------------------------- memory
def rss_bytes(field: str = "VmRSS") -> int:
    """``VmRSS`` (resident now) or ``VmHWM`` (peak resident) of this process, in bytes."""
    with open("/proc/self/status", encoding="utf-8") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field + ":"))


def reset_peak_rss() -> bool:
    """Reset ``VmHWM`` to the current RSS (Linux ``clear_refs`` 5), so a later peak measures only what follows."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="utf-8") as handle:
            handle.write("5")
    except OSError:
        return False
    return True
