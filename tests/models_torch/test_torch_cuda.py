"""PyTorch models on a CUDA GPU: loading onto the device, half-precision masking, kernels, a training step.

Skipped where no GPU is visible (CI runs them on GPU runners only).
"""

from __future__ import annotations

import logging

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch_helpers import ALL_CLASSES, build, main_output, make_inputs, make_labels  # noqa: E402

from distilbert_mf.modeling_utils import CPU_FLOAT16_WARNING  # noqa: E402
from distilbert_mf.torch import DistilBertForMaskedLM, DistilBertForSequenceClassification  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]


@pytest.fixture(autouse=True)
def exact_float32_matmul():
    """Keep float32 matrix products in float32 (no TF32), so CPU and GPU agree to float32 rounding."""
    previous = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = previous


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_from_pretrained_onto_the_gpu_matches_cpu(cls, tiny_config, tmp_path):
    cpu = build(cls, tiny_config).eval()
    cpu.save_pretrained(tmp_path)
    gpu = cls.from_pretrained(tmp_path, device="cuda")
    assert all(p.device.type == "cuda" for p in gpu.parameters())
    ids, mask = make_inputs(cls, cpu.config)
    with torch.no_grad():
        want = main_output(cls, cpu(ids, mask))
        got = main_output(cls, gpu(ids.numpy(), mask.numpy()))  # numpy inputs go to the model's device
    assert got.device.type == "cuda"
    torch.testing.assert_close(got.cpu(), want, rtol=0, atol=1e-5)
    state = gpu.canonical_state_dict()
    np.testing.assert_array_equal(state[next(iter(state))], cpu.canonical_state_dict()[next(iter(state))])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_fully_masked_row_is_finite_on_gpu(attn, dtype, tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config, attn_implementation=attn)
    model = model.to(device="cuda", dtype=dtype).eval()
    ids = torch.randint(1, tiny_config.vocab_size, (3, 6), device="cuda")
    mask = torch.tensor([[1, 1, 1, 0, 0, 0], [0, 0, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]], device="cuda")
    with torch.no_grad():
        out = model(ids, mask, output_hidden_states=True)
    assert torch.isfinite(out.logits).all()
    assert all(torch.isfinite(h).all() for h in out.hidden_states)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_eager_equals_sdpa_on_gpu(dtype, tiny_config):
    sdpa = build(DistilBertForMaskedLM, tiny_config).to(device="cuda", dtype=dtype).eval()
    eager = build(DistilBertForMaskedLM, tiny_config, attn_implementation="eager").to(device="cuda", dtype=dtype).eval()
    ids, mask = (t.cuda() for t in make_inputs(DistilBertForMaskedLM, tiny_config))
    with torch.no_grad():
        a, b = sdpa(ids, mask).logits.float(), eager(ids, mask).logits.float()
    torch.testing.assert_close(a, b, rtol=0, atol=1e-5 if dtype == torch.float32 else 2e-2)


def test_training_step_on_gpu_with_gradient_checkpointing(tiny_config):
    model = build(DistilBertForSequenceClassification, tiny_config).cuda().train()
    model.gradient_checkpointing_enable()
    for module in model.modules():  # keep the step deterministic: checkpointing on, dropout off
        if isinstance(module, torch.nn.Dropout):
            module.p = 0.0
    ids, mask = (t.cuda() for t in make_inputs(DistilBertForSequenceClassification, tiny_config))
    labels = make_labels(DistilBertForSequenceClassification, tiny_config, ids)["labels"].cuda()
    optimiser = torch.optim.SGD(model.parameters(), lr=0.5)
    before = model(ids, mask, labels=labels).loss
    before.backward()
    assert all(p.grad is not None and p.grad.device.type == "cuda" for p in model.parameters())
    optimiser.step()
    with torch.no_grad():
        after = model(ids, mask, labels=labels).loss
    assert float(after) < float(before.detach())


def test_float16_on_gpu_logs_no_cpu_warning(tiny_config, tmp_path, caplog):
    build(DistilBertForSequenceClassification, tiny_config).save_pretrained(tmp_path)
    with caplog.at_level(logging.WARNING):
        model = DistilBertForSequenceClassification.from_pretrained(tmp_path, dtype="float16", device="cuda")
    assert model.dtype == torch.float16 and CPU_FLOAT16_WARNING not in caplog.text
    ids, mask = (t.cuda() for t in make_inputs(DistilBertForSequenceClassification, tiny_config))
    assert torch.isfinite(model(ids, mask).logits).all()


def test_tied_weights_survive_moving_to_the_gpu(tiny_config):
    model = build(DistilBertForMaskedLM, tiny_config).cuda()
    assert model.vocab_projector.weight is model.distilbert.embeddings.word_embeddings.weight
    empty = DistilBertForMaskedLM(tiny_config, device="meta").to_empty(device="cuda")
    assert empty.vocab_projector.weight is empty.distilbert.embeddings.word_embeddings.weight
