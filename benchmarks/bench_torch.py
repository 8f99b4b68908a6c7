"""PyTorch forward speed: distilbert_mf.torch vs transformers (5.x) on the same weights, in one process.

Full-size DistilBERT (random weights; the timing does not depend on their values), DistilBertModel forward under
``torch.inference_mode`` with an all-ones attention mask, batch 1 x 128 and 32 x 128, float32 and bfloat16 (the
model's dtype). Ours and theirs alternate run by run (the order flips every repeat) so load from other processes
hits both alike; medians after warm-up. Prints one JSON object; ``ratio`` = ours / theirs median time
(< 1: ours is faster).

    python benchmarks/bench_torch.py                 # the full run (about 2-3 minutes on 2 cores)
    python benchmarks/bench_torch.py --quick         # tiny config, seconds: checks the script works
    python benchmarks/bench_torch.py --load          # also from_pretrained time and peak RSS (subprocesses)
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from distilbert_mf import DistilBertConfig
from distilbert_mf.torch import DistilBertModel

FULL = {}  # DistilBertConfig defaults are distilbert-base: 6 layers, dim 768, 12 heads, vocab 30522
QUICK = {"vocab_size": 99, "dim": 32, "n_heads": 4, "hidden_dim": 37, "n_layers": 2}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def build_pair(config: DistilBertConfig, dtype: torch.dtype):
    import transformers

    torch.manual_seed(0)
    ours = DistilBertModel(config, dtype=dtype).eval()
    theirs_config = transformers.DistilBertConfig(**config.to_dict(full=True), attn_implementation="sdpa")
    theirs = transformers.DistilBertModel(theirs_config).to(dtype).eval()
    missing, unexpected = theirs.load_state_dict(ours.state_dict(), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"weights did not transfer: missing {missing}, unexpected {unexpected}")
    return ours, theirs


def time_once(model, ids: torch.Tensor, mask: torch.Tensor, ours: bool) -> float:
    synchronize = torch.cuda.synchronize if ids.is_cuda else (lambda: None)
    synchronize()
    start = time.perf_counter()
    with torch.inference_mode():
        if ours:
            model(ids, mask)
        else:
            model(input_ids=ids, attention_mask=mask)
    synchronize()
    return time.perf_counter() - start


def bench_case(
    config: DistilBertConfig, dtype_name: str, batch: int, seq: int, reps: int, warmup: int, device: str = "cpu"
) -> dict:
    ours, theirs = build_pair(config, DTYPES[dtype_name])
    ours, theirs = ours.to(device), theirs.to(device)
    ids = torch.randint(1, config.vocab_size, (batch, seq), generator=torch.Generator().manual_seed(1)).to(device)
    mask = torch.ones(batch, seq, dtype=torch.long, device=device)
    with torch.inference_mode():
        a = ours(ids, mask).last_hidden_state.float()
        b = theirs(input_ids=ids, attention_mask=mask).last_hidden_state.float()
    max_diff = float((a - b).abs().max())
    for _ in range(warmup):
        time_once(ours, ids, mask, True)
        time_once(theirs, ids, mask, False)
    ours_t, theirs_t = [], []
    for rep in range(reps):
        pair = [(ours, True, ours_t), (theirs, False, theirs_t)]
        for model, is_ours, sink in pair if rep % 2 == 0 else pair[::-1]:
            sink.append(time_once(model, ids, mask, is_ours))
    ours_ms, theirs_ms = 1e3 * statistics.median(ours_t), 1e3 * statistics.median(theirs_t)
    return {
        "device": device,
        "dtype": dtype_name,
        "batch": batch,
        "seq": seq,
        "reps": reps,
        "ours_ms": round(ours_ms, 2),
        "theirs_ms": round(theirs_ms, 2),
        "ratio": round(ours_ms / theirs_ms, 3),
        "max_abs_diff": max_diff,
    }


_LOAD_SNIPPET = """
import sys, time
import torch

def status(field):
    with open("/proc/self/status") as handle:
        return next(int(line.split()[1]) * 1024 for line in handle if line.startswith(field + ":"))

which, folder = sys.argv[1], sys.argv[2]
if which == "ours":
    from distilbert_mf.torch import DistilBertModel as cls
else:
    from transformers import DistilBertModel as cls
    import transformers.modeling_utils  # noqa: F401  (imports done before the clock starts)
before = status("VmRSS")
start = time.perf_counter()
model = cls.from_pretrained(folder)
elapsed = time.perf_counter() - start
print(elapsed, status("VmHWM") - before)
"""


def bench_load(config: DistilBertConfig, reps: int) -> dict:
    """from_pretrained wall time (after imports) and peak RSS growth during it, each in a fresh subprocess."""
    with tempfile.TemporaryDirectory() as tmp:
        DistilBertModel(config).save_pretrained(tmp)
        weights = (Path(tmp) / "model.safetensors").stat().st_size
        results: dict[str, list[tuple[float, int]]] = {"ours": [], "theirs": []}
        for rep in range(reps):
            for which in ("ours", "theirs") if rep % 2 == 0 else ("theirs", "ours"):
                out = subprocess.run(
                    [sys.executable, "-c", _LOAD_SNIPPET, which, tmp], capture_output=True, text=True, check=True
                )
                seconds, rss = out.stdout.split()[-2:]
                results[which].append((float(seconds), int(rss)))
    summary = {"weights_bytes": weights}
    for which, runs in results.items():
        summary[f"{which}_load_s"] = round(statistics.median(s for s, _ in runs), 3)
        summary[f"{which}_peak_rss_growth_bytes"] = int(statistics.median(r for _, r in runs))
        summary[f"{which}_peak_rss_growth_over_weights"] = round(summary[f"{which}_peak_rss_growth_bytes"] / weights, 3)
    summary["load_ratio"] = round(summary["ours_load_s"] / summary["theirs_load_s"], 3)
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny config: check that the script runs")
    parser.add_argument("--reps", type=int, default=None, help="timed repeats per case (default: by batch size)")
    parser.add_argument("--load", action="store_true", help="also time from_pretrained and measure peak RSS")
    parser.add_argument("--dtypes", default="float32,bfloat16")
    parser.add_argument("--batches", default="1,32")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (the load benchmark always runs on cpu)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    import transformers

    config = DistilBertConfig(**(QUICK if args.quick else FULL))
    cases = []
    for dtype_name in args.dtypes.split(","):
        for batch in (int(b) for b in args.batches.split(",")):
            reps = args.reps or (15 if batch == 1 else 5)
            warmup = 3 if batch == 1 or args.device != "cpu" else 1
            cases.append(bench_case(config, dtype_name, batch, args.seq, reps, warmup, args.device))
    report = {
        "benchmark": "distilbert_mf.torch vs transformers DistilBertModel forward",
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
        "machine": platform.processor() or platform.machine(),
        "config": "quick" if args.quick else "distilbert-base (dim 768, 6 layers, vocab 30522)",
        "cases": cases,
    }
    if args.load:
        report["load"] = bench_load(config, reps=3)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
