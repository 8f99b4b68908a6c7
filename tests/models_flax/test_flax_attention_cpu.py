"""The CPU inference paths of Flax (attention one (batch, head) pair at a time, the feed-forward a block of tokens at
a time): same numbers, inference only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("flax")

import jax
import jax.numpy as jnp
from flax import nnx

from distilbert_mf import DistilBertConfig
from distilbert_mf.flax import FlaxDistilBertForSequenceClassification, cpu_kernels

pytestmark = [
    pytest.mark.flax,
    pytest.mark.skipif(jax.default_backend() != "cpu", reason="the per-head path is for the CPU backend"),
]
CONFIG = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64)


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((row for row in text.splitlines() if row.startswith("flags")), "")
    return set(line.split(":", 1)[-1].split())


AVX512 = "avx512f" in _cpu_flags()


def inputs() -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(0).integers(1, CONFIG.vocab_size, (3, 11))
    mask = np.ones((3, 11), np.int32)
    mask[2, 5:] = 0  # padding, and a row that attends to 5 tokens only
    return ids, mask


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_per_head_path_gives_the_same_numbers(dtype, monkeypatch) -> None:
    model = FlaxDistilBertForSequenceClassification(CONFIG, rngs=nnx.Rngs(0), dtype=dtype)
    model.eval()
    ids, mask = inputs()
    results = {}
    for per_head in (True, False):
        monkeypatch.setattr(cpu_kernels, "PER_HEAD_ATTENTION_ON_CPU", per_head)
        assert cpu_kernels.per_head_attention() is per_head
        eager = model(ids, mask, output_attentions=True)
        jitted = nnx.jit(lambda m, i, a: m(i, a).logits, graph=False)(model, jnp.asarray(ids), jnp.asarray(mask))
        results[per_head] = (eager.logits, *eager.attentions, jitted)
    for fast, plain in zip(results[True], results[False]):
        np.testing.assert_array_equal(np.asarray(fast, np.float32), np.asarray(plain, np.float32))
    probs = np.asarray(results[True][1], np.float32)  # (batch, heads, q, k)
    assert probs.shape == (3, 4, 11, 11) and np.all(probs[2, :, :, 5:] == 0)


def test_per_head_operands_flatten_batch_and_heads() -> None:
    q = jnp.arange(2 * 3 * 5 * 4, dtype=jnp.float32).reshape(2, 3, 5, 4)
    bias = jnp.arange(2 * 5, dtype=jnp.float32).reshape(2, 1, 1, 5)
    fq, fk, fv, fbias = cpu_kernels.per_head_operands(q, q, q, bias)
    assert fq.shape == fk.shape == fv.shape == (6, 5, 4) and fbias.shape == (6, 1, 5)
    np.testing.assert_array_equal(fq[4], q[1, 1])
    np.testing.assert_array_equal(fbias[4, 0], bias[1, 0, 0])
    _, _, _, zeros = cpu_kernels.per_head_operands(q, q, q, None)
    assert zeros.shape == (6, 1, 5) and not np.any(zeros)


def test_training_keeps_attention_dropout() -> None:
    model = FlaxDistilBertForSequenceClassification(CONFIG.replace(dropout=0.0, attention_dropout=0.5))
    model.train()
    ids, _ = inputs()
    first, second = model(ids).logits, model(ids).logits  # dropout draws new masks: the batched path ran
    assert not np.allclose(np.asarray(first), np.asarray(second))
    model.eval()
    np.testing.assert_array_equal(np.asarray(model(ids).logits), np.asarray(model(ids).logits))


def test_row_blocked_feed_forward_gives_the_same_numbers(monkeypatch) -> None:
    model = FlaxDistilBertForSequenceClassification(CONFIG, rngs=nnx.Rngs(0))
    model.eval()
    ids, mask = inputs()  # 3 x 11 = 33 tokens
    results = {}
    for rows in (8, 0):  # 8: five blocks of 7 tokens, 2 of them padding; 0: one product
        monkeypatch.setattr(cpu_kernels, "FFN_ROWS_ON_CPU", rows)
        eager = model(ids, mask, output_hidden_states=True)
        jitted = nnx.jit(lambda m, i, a: m(i, a).logits, graph=False)(model, jnp.asarray(ids), jnp.asarray(mask))
        results[rows] = (eager.logits, *eager.hidden_states, jitted)
    for blocked, plain in zip(results[8], results[0]):
        if AVX512:  # XLA:CPU's matmul sums each row in the same order whatever the number of rows
            np.testing.assert_array_equal(np.asarray(blocked), np.asarray(plain))
        else:  # its AVX2 kernels tile by rows, so a row's products may be summed in another order: 1-2 ulps
            scale = float(np.abs(np.asarray(plain)).max())
            np.testing.assert_allclose(
                np.asarray(blocked), np.asarray(plain), rtol=0, atol=4 * np.spacing(np.float32(scale))
            )


def test_bfloat16_compute_keeps_one_feed_forward_product(monkeypatch) -> None:
    calls = []
    monkeypatch.setattr(cpu_kernels, "FFN_ROWS_ON_CPU", 8)
    monkeypatch.setattr(cpu_kernels, "map_rows", lambda *a: calls.append(a))
    model = FlaxDistilBertForSequenceClassification(CONFIG, rngs=nnx.Rngs(0), dtype="bfloat16")
    model.eval()
    model(*inputs())
    assert calls == []


def test_feed_forward_block_sizes(monkeypatch) -> None:
    assert cpu_kernels.FFN_ROWS_ON_CPU == 512
    assert cpu_kernels.ffn_rows_at_a_time(128) == 0  # batch 1 x 128: one product
    assert cpu_kernels.ffn_rows_at_a_time(4096) == 512
    assert cpu_kernels.ffn_rows_at_a_time(655) == 328  # two even blocks, one padding row
    monkeypatch.setattr(cpu_kernels, "FFN_ROWS_ON_CPU", 0)
    assert cpu_kernels.ffn_rows_at_a_time(4096) == 0
    x = jnp.arange(2 * 5 * 3, dtype=jnp.float32).reshape(2, 5, 3)
    np.testing.assert_array_equal(cpu_kernels.map_rows(lambda t: t * 2, x, 4), x * 2)  # 10 tokens in 3 blocks of 4


def test_training_keeps_feed_forward_dropout(monkeypatch) -> None:
    monkeypatch.setattr(cpu_kernels, "FFN_ROWS_ON_CPU", 8)
    model = FlaxDistilBertForSequenceClassification(CONFIG.replace(dropout=0.5, attention_dropout=0.0))
    model.train()
    ids, _ = inputs()
    assert not np.allclose(np.asarray(model(ids).logits), np.asarray(model(ids).logits))
