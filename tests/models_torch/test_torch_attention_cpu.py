"""Eager attention on CPU inference, a few (batch, head) pairs at a time: when it is taken, and the same numbers
(bit for bit in bfloat16, to float32 rounding in float32)."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from distilbert_mf import DistilBertConfig  # noqa: E402
from distilbert_mf.torch import DistilBertForSequenceClassification, cpu_kernels  # noqa: E402

pytestmark = pytest.mark.torch
CONFIG = DistilBertConfig(vocab_size=99, dim=32, n_heads=4, hidden_dim=37, n_layers=2, max_position_embeddings=64)


def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(1, CONFIG.vocab_size, (3, 11), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[2, 5:] = 0  # padding, and a row that attends to 5 tokens only
    return ids, mask


@pytest.fixture
def blocks(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record every blocked attention call (its block size) while still running it."""
    seen: list[int] = []
    real = cpu_kernels.attend_in_blocks

    def record(*args):
        seen.append(cpu_kernels.HEADS_AT_A_TIME_ON_CPU)
        return real(*args)

    monkeypatch.setattr(cpu_kernels, "attend_in_blocks", record)
    return seen


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("heads", [1, 5])  # 5: blocks of 5 over 12 (batch, head) pairs, the last one short
def test_blocked_eager_attention_gives_the_numbers_of_one_batched_product(dtype, heads, blocks, monkeypatch) -> None:
    torch.manual_seed(0)
    model = DistilBertForSequenceClassification(CONFIG, attn_implementation="eager").to(dtype).eval()
    ids, mask = inputs()
    results = {}
    with torch.inference_mode():
        for per_block in (heads, 0):
            monkeypatch.setattr(cpu_kernels, "HEADS_AT_A_TIME_ON_CPU", per_block)
            out = model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
            results[per_block] = (out.logits, *out.hidden_states)
    assert blocks == [heads] * CONFIG.n_layers  # taken with blocks on, never with 0
    for blocked, batched in zip(results[heads], results[0]):
        if dtype == torch.bfloat16:
            assert torch.equal(blocked, batched)
        else:  # the batched matmul of the strided 4-D view and bmm of contiguous blocks may round a last bit apart
            torch.testing.assert_close(blocked, batched, rtol=1e-6, atol=1e-6)


def test_blocks_only_for_plain_cpu_inference(blocks) -> None:
    model = DistilBertForSequenceClassification(CONFIG.replace(attention_dropout=0.5), attn_implementation="eager")
    ids, mask = inputs()
    model.eval()
    with torch.no_grad():
        probs = model(input_ids=ids, attention_mask=mask, output_attentions=True).attentions
    assert blocks == [] and probs[0].shape == (3, 4, 11, 11)  # probabilities asked for: the batched path
    model(input_ids=ids, attention_mask=mask).logits.sum().backward()  # gradients: the batched path
    assert blocks == []
    model.train()
    with torch.no_grad():
        first, second = (model(input_ids=ids).logits for _ in range(2))
    assert blocks == [] and not torch.equal(first, second)  # attention dropout still applies in training
    sdpa = DistilBertForSequenceClassification(CONFIG).eval()
    with torch.no_grad():
        sdpa(input_ids=ids, attention_mask=mask)
    assert blocks == []  # "sdpa" keeps PyTorch's kernel
