"""The benchmark driver in its tiny ``--smoke`` mode, so the benchmark code cannot rot; and the report's verdicts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import report

ROOT = Path(__file__).resolve().parents[1]


def run_driver(tmp_path: Path, *args: str, timeout: int = 600) -> tuple[Path, Path, Path]:
    out, page, chart = tmp_path / "results", tmp_path / "benchmarks.md", tmp_path / "img" / "benchmarks.png"
    command = [sys.executable, "-m", "benchmarks.run", "--smoke", "--out-dir", str(out), "--page", str(page)]
    done = subprocess.run(
        [*command, "--chart", str(chart), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return out, page, chart


@pytest.mark.torch
def test_smoke_run_torch_inference_loading_accuracy(tmp_path: Path, shared_data: Path) -> None:
    out, page, chart = run_driver(tmp_path, "--parts", "inference,loading,accuracy", "--workers", "torch")

    inference = json.loads((out / "inference.json").read_text())
    cases = {(c["contender"], c["dtype"], c["batch"], c["seq"]): c for c in inference["cases"]}
    expected = {"ours-torch-eager", "ours-torch-sdpa", "transformers-torch-sdpa"}
    for dtype in ("float32", "bfloat16"):
        for shape in ((1, 16), (4, 32)):
            assert {name for name, d, *s in cases if d == dtype and tuple(s) == shape} == expected
    for (name, dtype, *_), case in cases.items():
        assert case["median_ms"] > 0 and case["gflops"] > 0 and 0 < case["fraction_of_gemm_peak"]
        # same weights, same inputs: every contender computes the same logits
        assert case["max_abs_logits_diff_vs_ours_torch_fp32"] < (1e-5 if dtype == "float32" else 0.05), name
    assert inference["threads"]["torch"] == {"torch_intra_op": 2, "torch_inter_op": 1}
    assert set(inference["gemm_peak_gflops"]) == {"float32", "bfloat16"}

    loading = json.loads((out / "loading.json").read_text())
    assert set(loading["contenders"]) == {"ours-torch", "transformers-torch"}
    for entry in loading["contenders"].values():
        assert entry["load_s"] > 0 and entry["peak_growth_bytes"] >= 0
    accuracy = json.loads((out / "accuracy.json").read_text())
    assert accuracy["sentences"] == 16 and 0 <= accuracy["float32"]["accuracy"] <= 1

    machine = json.loads((out / "machine.json").read_text())
    assert machine["threads"] == 2 and len(machine["load_average_start"]) == 3
    text = page.read_text()
    assert report.BEGIN in text and report.END in text
    assert "| PyTorch fp32 latency 1×16 vs transformers |" in text
    assert "| ours-torch-sdpa |" in text and "### Loading" in text and "### bfloat16 accuracy" in text
    assert chart.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tensorflow
@pytest.mark.flax
def test_smoke_run_every_part(tmp_path: Path, shared_data: Path) -> None:
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    out, _, _ = run_driver(tmp_path)
    for part in ("onnx", "inference", "loading", "pipelines", "accuracy", "tokenizers", "machine"):
        assert (out / f"{part}.json").is_file(), part
    onnx = json.loads((out / "onnx.json").read_text())
    assert onnx["verify_max_abs_diff"] <= onnx["verify_atol"]
    contenders = {case["contender"] for case in json.loads((out / "inference.json").read_text())["cases"]}
    assert contenders == set(report.ORDER)
    verdicts = report.evaluate_targets(report.load_results(out))
    assert all(row["met"] is not None for row in verdicts), [row["target"] for row in verdicts if row["met"] is None]


def fake_results() -> dict:
    """Two shapes, ours 10% faster than transformers at 1x128 and 10% slower at 32x128; bf16 2x; ORT faster."""

    def case(contender: str, dtype: str, shape: tuple[int, int], ms: float) -> dict:
        return {
            "contender": contender,
            "dtype": dtype,
            "batch": shape[0],
            "seq": shape[1],
            "repeats": 3,
            "median_ms": ms,
            "first_call_ms": ms,
            "sequences_per_s": 1e3 * shape[0] / ms,
            "gflops": 100.0,
            "fraction_of_gemm_peak": 0.5,
            "max_abs_logits_diff_vs_ours_torch_fp32": 0.0,
        }

    cases = [
        case("ours-torch-sdpa", "float32", (1, 128), 90.0),
        case("transformers-torch-sdpa", "float32", (1, 128), 99.0),
        case("ours-keras-xla", "float32", (1, 128), 100.0),
        case("onnxruntime", "float32", (1, 128), 80.0),
        case("ours-torch-sdpa", "float32", (32, 128), 2200.0),
        case("transformers-torch-sdpa", "float32", (32, 128), 2000.0),
        case("onnxruntime", "float32", (32, 128), 2100.0),
        case("ours-torch-sdpa", "bfloat16", (32, 128), 1100.0),
    ]
    loading = {
        "weights_bytes": 1000,
        "repeats": 1,
        "contenders": {
            "ours-torch": {"load_s": 0.01, "peak_growth_over_weights": 0.1},
            "ours-flax": {"load_s": 0.5, "peak_growth_over_weights": 2.0},
            "transformers-torch": {"load_s": 0.1, "peak_growth_over_weights": 0.1},
        },
    }
    accuracy = {
        "model": "m",
        "framework": "pt",
        "batch_size": 32,
        "sentences": 872,
        "float32": {"accuracy": 0.9, "correct": 785, "median_seconds": 2.0, "sentences_per_second": 436.0},
        "bfloat16": {"accuracy": 0.9023, "correct": 787, "median_seconds": 1.0, "sentences_per_second": 872.0},
        "accuracy_drop_points": -0.23,
        "label_agreement": 0.99,
        "bf16_speedup": 2.0,
    }
    return {"inference": {"cases": cases}, "loading": loading, "accuracy": accuracy}


def test_targets_are_side_by_side_ratios() -> None:
    verdicts = {row["target"]: row for row in report.evaluate_targets(fake_results())}
    latency = verdicts["PyTorch fp32 latency 1×128 vs transformers"]
    assert latency["measured"] == pytest.approx(1.1) and latency["met"] is True
    throughput = verdicts["PyTorch fp32 throughput 32×128 vs transformers"]
    assert throughput["measured"] == pytest.approx(2000 / 2200) and throughput["met"] is False
    assert verdicts["Keras XLA fp32 1×128 vs our PyTorch"]["measured"] == pytest.approx(0.9)
    assert verdicts["Keras XLA fp32 1×128 vs our PyTorch"]["met"] is True
    assert verdicts["Keras XLA fp32 32×128 vs our PyTorch"]["met"] is None  # not measured: not a pass
    assert verdicts["Flax nnx.jit (tree mode) fp32 1×128 vs our PyTorch"]["met"] is None
    assert verdicts["bf16 throughput 32×128 vs fp32 (our PyTorch)"]["measured"] == pytest.approx(2.0)
    assert verdicts["best fp32 path 1×128 vs ONNX Runtime"]["measured"] == pytest.approx(90 / 80)
    assert verdicts["best fp32 path 1×128 vs ONNX Runtime"]["met"] is False
    assert verdicts["best fp32 path 32×128 vs ONNX Runtime"]["met"] is True
    assert verdicts["SST-2 dev accuracy, bf16 vs fp32 (default model, pipeline)"]["measured"] == pytest.approx(0.23)
    assert verdicts["load time ours-torch vs transformers"]["met"] is True
    assert verdicts["load time ours-flax vs transformers"]["measured"] == pytest.approx(5.0)
    assert verdicts["peak RSS of from_pretrained, ours-flax"]["met"] is False
    assert verdicts["load time ours-keras vs transformers"]["met"] is None


def test_page_keeps_the_written_analysis(tmp_path: Path) -> None:
    page = tmp_path / "benchmarks.md"
    page.write_text(f"# Benchmarks\n\nintro\n\n{report.BEGIN}\nold numbers\n{report.END}\n\n## Analysis\n\nkept\n")
    report.write_page(page, report.generated_block(fake_results(), None, page))
    text = page.read_text()
    assert text.startswith("# Benchmarks\n\nintro\n\n") and text.endswith("## Analysis\n\nkept\n")
    assert "old numbers" not in text and text.count(report.BEGIN) == 1
    assert "| PyTorch fp32 throughput 32×128 vs transformers | 0.909 | ≥ 1 | **missed** |" in text


@pytest.mark.torch
def test_smoke_training_part_torch(tmp_path: Path, shared_data: Path) -> None:
    """The training part at tiny size, 2 timed updates: transformers' plain loop and ours, fp32 and bf16, the
    distillation update against fine-tuning, the GEMM fraction, peak RSS, the targets and the page section."""
    out, page, _ = run_driver(tmp_path, "--parts", "training", "--workers", "torch", timeout=300)
    training = json.loads((out / "training.json").read_text())
    cases = {(c["contender"], c["dtype"]): c for c in training["cases"]}
    assert set(cases) == {(n, d) for n in ("transformers-torch", "ours-torch") for d in ("float32", "bfloat16")}
    for (name, dtype), case in cases.items():
        assert len(case["times_s"]) == case["steps"] == 2 and case["median_s"] > 0 and case["sequences_per_s"] > 0
        assert len(case["losses"]) == case["warmup"] + case["steps"]
        assert 0 < case["fraction_of_gemm_peak"] and case["gflops"] > 0 and 0 < case["cpu_share"]
        assert case["peak_rss_bytes"] >= case["rss_before_bytes"] > 0 and case["peak_growth_bytes"] > 0
        # same weights, batches and dropout seed: our update computes transformers' losses, bit for bit
        assert case["losses"] == cases[("transformers-torch", dtype)]["losses"], (name, dtype)
        assert case["loss_max_abs_diff_vs_transformers"] == 0.0
    assert set(training["gemm_peak_gflops"]) == {"float32", "bfloat16"}
    assert training["vs_transformers"]["float32"]["ours-torch"] == pytest.approx(
        cases[("transformers-torch", "float32")]["median_s"] / cases[("ours-torch", "float32")]["median_s"]
    )
    (distil_fp32,) = training["distillation"]  # --smoke: float32 only
    assert (distil_fp32["framework"], distil_fp32["dtype"], distil_fp32["task"]) == (
        "torch",
        "float32",
        "text-classification",
    )
    assert distil_fp32["student_layers"] == [0] and distil_fp32["teacher_layers"] == 2
    for kind in ("distillation", "fine_tuning"):
        assert len(distil_fp32[kind]["times_s"]) == 2 and distil_fp32[kind]["median_s"] > 0
    assert distil_fp32["distillation_over_fine_tuning"] > 0 and distil_fp32["flops_ratio"] > 1
    verdicts = {row["target"]: row for row in report.evaluate_targets(report.load_results(out))}
    assert verdicts["training float32 4×32: ours PyTorch vs transformers"]["met"] is not None
    assert verdicts["training bfloat16 4×32: Flax nnx.jit vs our PyTorch"]["met"] is None  # flax not run
    text = page.read_text()
    assert "### Training" in text and "| ours-torch | bfloat16 |" in text and "**Distillation**" in text


@pytest.mark.slow
@pytest.mark.torch
@pytest.mark.tensorflow
@pytest.mark.flax
def test_smoke_training_every_framework(tmp_path: Path, shared_data: Path) -> None:
    """bench_training --quick with Keras (graph and XLA) and Flax, general distillation (the triple loss; the task
    variant's update is timed by the PyTorch part's smoke test), float32."""
    path = tmp_path / "training.json"
    command = [sys.executable, "-m", "benchmarks.bench_training", "--quick", "--dtypes", "float32", "--json", str(path)]
    command += ["--contenders", "ours-torch,ours-keras,ours-keras-xla,ours-flax"]
    command += ["--distill-frameworks", "keras,flax", "--distill-tasks", "masked-lm"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]
    training = json.loads(path.read_text())
    cases = {c["contender"]: c for c in training["cases"]}
    assert set(cases) == {"ours-torch", "ours-keras", "ours-keras-xla", "ours-flax"}
    assert cases["ours-keras"]["jit_compile"] is False and cases["ours-keras-xla"]["jit_compile"] is True
    for case in cases.values():
        assert len(case["times_s"]) == 2 and all(0.5 < loss < 0.9 for loss in case["losses"])  # ~ln 2, 2 labels
    assert set(training["vs_ours_torch"]["float32"]) == {"ours-keras", "ours-keras-xla", "ours-flax"}
    runs = {(c["framework"], c["task"]): c for c in training["distillation"]}
    assert set(runs) == {("keras", "masked-lm"), ("flax", "masked-lm")}
    for case in runs.values():
        assert case["distillation"]["median_s"] > 0 and case["fine_tuning"]["median_s"] > 0
    assert runs[("flax", "masked-lm")]["loss_options"]["alpha_cos"] == 1.0


def run_distributed_part(tmp_path: Path, cases: str) -> dict:
    """``bench_distributed --quick`` with only ``cases`` (and each framework's one-process baseline)."""
    path = tmp_path / "distributed.json"
    command = [sys.executable, "-m", "benchmarks.bench_distributed", "--quick", "--cases", cases, "--json", str(path)]
    done = subprocess.run([*command, "--timeout", "120"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(path.read_text())


def check_cases(distributed: dict, expected: set) -> dict:
    """Every case: its timed updates, a record per rank, the one-process losses (dropout 0); sharded ones hold less
    per rank than one process, replicated ones as much."""
    cases = {(c["framework"], c["case"]): c for c in distributed["cases"]}
    assert set(cases) == expected
    for key, case in cases.items():
        assert len(case["times_s"]) == distributed["steps"] == 2 and case["median_s"] > 0
        assert len(case["losses"]) == distributed["warmup"] + distributed["steps"]
        assert len(case["ranks"]) == case["processes"]
        for rank in case["ranks"]:
            assert rank["peak_rss_bytes"] > 0 and rank["parameter_bytes"] > 0 and rank["optimizer_state_bytes"] > 0
        if case["world_size"] > 1:
            assert case["overhead_vs_one_process"] > 0
            assert case["loss_max_rel_diff_vs_one_process"] <= 1e-5, key  # the same numbers as one process
            for kind in ("parameter_bytes_vs_one_process", "optimizer_state_bytes_vs_one_process"):
                if key[1] in ("fsdp2", "model", "model-parallel"):  # sharded: falls as the world grows
                    assert case[kind] < 1, (key, kind)
                else:  # replicated
                    assert case[kind] == 1, (key, kind)
    text = "\n".join(report.distributed_section(distributed))
    assert "### Distributed training (issue 17)" in text and "shared with other work" in text
    return cases


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.torch
def test_smoke_distributed_torch(tmp_path: Path, shared_data: Path) -> None:
    """bench_distributed --quick, PyTorch: one process, DDP and FSDP2 on 2 gloo ranks of one thread each."""
    distributed = run_distributed_part(tmp_path, "torch:ddp,torch:fsdp2")
    cases = check_cases(distributed, {("torch", c) for c in ("one-process", "ddp", "fsdp2")})
    one, fsdp2 = cases[("torch", "one-process")], cases[("torch", "fsdp2")]
    assert fsdp2["parameter_bytes_per_rank"] < one["parameter_bytes_per_rank"]
    cpus = [rank["cpus"] for rank in cases[("torch", "ddp")]["ranks"]]
    assert [len(c) for c in cpus] == [1, 1] and cpus[0] != cpus[1]  # one thread each, on a CPU of its own
    assert distributed["parameters"] == one["parameter_bytes_per_rank"] // 4
    assert distributed["omp_wait_policy"] and len(distributed["load_average_start"]) == 3
    assert "| torch | fsdp2 | 2 (2 processes) |" in "\n".join(report.distributed_section(distributed))


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.flax
def test_smoke_distributed_jax(tmp_path: Path, shared_data: Path) -> None:
    """bench_distributed --quick, Flax: one device, a model mesh of 2 CPU devices, 2 jax.distributed processes."""
    distributed = run_distributed_part(tmp_path, "jax:model,jax:data-processes")
    cases = check_cases(distributed, {("jax", c) for c in ("one-device", "model", "data-processes")})
    assert cases[("jax", "model")]["mesh"] == {"data": 1, "model": 2}
    assert cases[("jax", "data-processes")]["mesh"] == {"data": 2, "model": 1}


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.tensorflow
def test_smoke_distributed_keras(tmp_path: Path, shared_data: Path) -> None:
    """bench_distributed --quick, Keras on the JAX backend: one device and ModelParallel over 2 CPU devices."""
    pytest.importorskip("jax")
    distributed = run_distributed_part(tmp_path, "keras:model-parallel")
    cases = check_cases(distributed, {("keras", c) for c in ("one-device", "model-parallel")})
    assert [len(rank["devices"]) for rank in cases[("keras", "model-parallel")]["ranks"]] == [2]


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.torch
def test_smoke_distributed_ray(tmp_path: Path, shared_data: Path) -> None:
    """bench_distributed --quick, Ray Data: 1 and 2 workers label SST-2 sentences as the pipeline in one process."""
    pytest.importorskip("ray", reason="Ray Data is the optional extra 'distributed'")
    distributed = run_distributed_part(tmp_path, "ray")
    assert distributed["cases"] == [] and distributed["skipped"] == {}
    ray = distributed["ray"]
    assert [job["workers"] for job in ray["workers"]] == [1, 2] and ray["rows"] == 32
    for job in ray["workers"]:
        assert job["labels_equal_one_process"] and job["job_rows_per_s"] > 0
        assert job["job_rows_per_s_per_worker"] == pytest.approx(job["job_rows_per_s"] / job["workers"])
    assert set(ray["one_process"]) == {"1", "2"}
    assert "**Ray Data batch inference**" in "\n".join(report.distributed_section(distributed))
