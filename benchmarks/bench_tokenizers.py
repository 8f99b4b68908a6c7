"""Tokenizer speed on SST-2 dev (872 sentences): ours against the reference implementations.

Measures the best of ``--repeats`` runs of tokenizing the whole dev set in one call (the functions compared in
one process take turns, so they see the same load on a shared machine):

* slow: our pure-Python ``DistilBertTokenizer`` against transformers 4.57.6's pure-Python
  ``DistilBertTokenizer`` (run with the interpreter given by ``--ref457``, in a subprocess, since 4.57 and 5.x
  cannot share an environment) and, when importable, transformers 5.x's ``BertTokenizerLegacy`` (the Python
  tokenizer 5.x still ships). Ours is timed "cold" (a fresh tokenizer per run, empty word cache) and "warm"
  (same tokenizer again); target: cold at least 2x faster than 4.57.6.
* fast: our ``DistilBertTokenizerFast`` against calling ``tokenizers.Tokenizer.encode_batch`` directly and
  reading ``ids`` / ``attention_mask`` (lists), and padded to numpy arrays; target: within 20%.

Prints one JSON object (and writes it to ``--output`` when given)::

    python benchmarks/bench_tokenizers.py --repeats 20 --output bench_tokenizers.json
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("DISTILBERT_MF_SHARED_DATA", ROOT.parent / "shared" / "data"))
HUB = DATA / "distilbert-base-uncased-tokenizer"

_REFERENCE_SCRIPT = """
import json, sys, time
from transformers import DistilBertTokenizer
import transformers
folder, texts_path, repeats = sys.argv[1], sys.argv[2], int(sys.argv[3])
texts = json.load(open(texts_path, encoding="utf-8"))
tok = DistilBertTokenizer.from_pretrained(folder)
assert not tok.is_fast
times = []
for _ in range(repeats):
    start = time.perf_counter()
    ids = tok(texts)["input_ids"]
    times.append(time.perf_counter() - start)
print(json.dumps({"seconds": min(times), "version": transformers.__version__, "ids": ids}))
"""


def sst2_sentences() -> list[str]:
    with open(DATA / "glue_sst2" / "dev.tsv", encoding="utf-8", newline="") as handle:
        rows = list(csv.reader(handle, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [row[0] for row in rows[1:]]


def interleaved_seconds(fns: dict[str, Callable[[], Callable[[], Any]]], repeats: int) -> dict[str, float]:
    """Best (minimum) wall time of each measurement over ``repeats`` rounds, taking turns each round.

    ``fns[name]()`` prepares one run (not timed) and returns the zero-argument callable that is timed. Taking turns
    exposes every measurement to the same machine load; the minimum is the run least disturbed by other processes
    (the machine is shared), as ``timeit`` recommends.
    """
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, prepare in fns.items():
            run = prepare()
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    return {name: min(values) for name, values in times.items()}


def _same(fn: Callable[[], Any]) -> Callable[[], Callable[[], Any]]:
    """A measurement without per-run preparation."""
    return lambda: fn


def bench_slow(texts: list[str], repeats: int, ref457: Path | None) -> dict[str, Any]:
    from distilbert_mf.tokenization import DistilBertTokenizer

    result: dict[str, Any] = {}
    ours_ids = DistilBertTokenizer.from_pretrained(HUB)(texts)["input_ids"]
    warm = DistilBertTokenizer.from_pretrained(HUB)
    fns: dict[str, Callable[[], Callable[[], Any]]] = {
        # a fresh tokenizer each run (empty word cache); building it is not timed
        "ours_cold_s": lambda: partial(DistilBertTokenizer.from_pretrained(HUB), texts),
        "ours_warm_s": _same(lambda: warm(texts)),
    }
    try:
        import transformers
        from transformers.models.bert.tokenization_bert_legacy import BertTokenizerLegacy
    except ImportError:
        legacy = None
    else:
        legacy = BertTokenizerLegacy(str(HUB / "vocab.txt"), do_lower_case=True)
        fns["transformers_5_legacy_python_s"] = _same(lambda: legacy(texts))
        result["transformers_5_version"] = transformers.__version__
        result["same_ids_as_transformers_5_legacy"] = legacy(texts)["input_ids"] == ours_ids
    warm(texts)
    result.update(interleaved_seconds(fns, repeats))
    if legacy is not None:
        result["speedup_cold_vs_transformers_5_legacy"] = (
            result["transformers_5_legacy_python_s"] / result["ours_cold_s"]
        )

    if ref457 is not None and ref457.is_file():
        texts_path = Path(os.environ.get("TMPDIR", "/tmp")) / f"bench_tokenizers_{os.getpid()}.json"
        texts_path.write_text(json.dumps(texts), encoding="utf-8")
        try:
            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            out = subprocess.run(
                [str(ref457), "-c", _REFERENCE_SCRIPT, str(HUB), str(texts_path), str(repeats)],
                capture_output=True,
                text=True,
                check=True,
                env={**env, "TRANSFORMERS_VERBOSITY": "error"},
            )
        finally:
            texts_path.unlink(missing_ok=True)
        reference = json.loads(out.stdout.strip().splitlines()[-1])
        result["transformers_4_slow_s"] = reference["seconds"]
        result["transformers_4_version"] = reference["version"]
        result["same_ids_as_transformers_4"] = reference["ids"] == ours_ids
        result["speedup_cold_vs_transformers_4"] = reference["seconds"] / result["ours_cold_s"]
        result["speedup_warm_vs_transformers_4"] = reference["seconds"] / result["ours_warm_s"]
    return result


def bench_fast(texts: list[str], repeats: int) -> dict[str, Any]:
    import numpy as np
    from tokenizers import Tokenizer

    from distilbert_mf.tokenization import DistilBertTokenizerFast

    library = Tokenizer.from_file(str(HUB / "tokenizer.json"))
    padded_library = Tokenizer.from_file(str(HUB / "tokenizer.json"))
    padded_library.enable_padding(pad_id=0, pad_token="[PAD]")
    ours = DistilBertTokenizerFast.from_pretrained(HUB)

    def library_lists() -> Any:
        encodings = library.encode_batch(texts)
        return [e.ids for e in encodings], [e.attention_mask for e in encodings]

    def library_numpy() -> Any:
        encodings = padded_library.encode_batch(texts)
        return (
            np.asarray([e.ids for e in encodings], dtype=np.int64),
            np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        )

    fns = {
        "library_encode_batch_lists_s": _same(library_lists),
        "ours_lists_s": _same(lambda: ours(texts)),
        "library_encode_batch_padded_numpy_s": _same(library_numpy),
        "ours_padded_numpy_s": _same(lambda: ours(texts, padding=True, return_tensors="np")),
    }
    for prepare in fns.values():
        prepare()()  # warm-up (thread pool, caches)
    result: dict[str, Any] = interleaved_seconds(fns, repeats)
    result["overhead_lists"] = result["ours_lists_s"] / result["library_encode_batch_lists_s"] - 1
    result["overhead_padded_numpy"] = result["ours_padded_numpy_s"] / result["library_encode_batch_padded_numpy_s"] - 1
    result["same_ids_as_library"] = ours(texts)["input_ids"] == library_lists()[0]
    return result


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=15, help="runs per measurement (the best is reported)")
    parser.add_argument(
        "--ref457",
        type=Path,
        default=ROOT.parent / "ref457" / "bin" / "python",
        help="python of an environment with transformers 4.57.x (skipped when missing)",
    )
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    args = parser.parse_args(argv)

    import tokenizers

    texts = sst2_sentences()
    report = {
        "data": f"SST-2 dev, {len(texts)} sentences, one call for the whole set",
        "python": sys.version.split()[0],
        "tokenizers_version": tokenizers.__version__,
        "cpu_count": os.cpu_count(),
        "repeats": args.repeats,
        "load_average_1min": os.getloadavg()[0],
        "slow": bench_slow(texts, args.repeats, args.ref457),
        "fast": bench_fast(texts, args.repeats),
    }
    text = json.dumps(report, indent=2)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n", encoding="utf-8")
    return report


if __name__ == "__main__":
    main()
