"""The oneDNN kernel of the PyTorch linear layers (``cpu_kernels``): when it is taken, and that it changes no numbers."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from torch_helpers import ALL_CLASSES, build, main_output, make_inputs  # noqa: E402

from distilbert_mf.torch import cpu_kernels, modeling  # noqa: E402

pytestmark = [
    pytest.mark.torch,
    pytest.mark.skipif(not cpu_kernels.ONEDNN_LINEAR, reason="this PyTorch build has no oneDNN linear kernel"),
]


@pytest.fixture
def calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[int, ...]]:
    """Record every oneDNN linear call (input shape) while still running it."""
    seen: list[tuple[int, ...]] = []
    real = torch.ops.mkldnn._linear_pointwise

    class Recorder:
        def __getattr__(self, name: str):
            if name != "_linear_pointwise":
                return getattr(torch.ops.mkldnn, name)

            def record(x, *args):
                seen.append(tuple(x.shape))
                return real(x, *args)

            return record

    monkeypatch.setattr(cpu_kernels.torch.ops, "mkldnn", Recorder(), raising=False)
    return seen


def test_float32_inference_uses_onednn_with_the_same_numbers(calls) -> None:
    layer = modeling.Linear(32, 37)
    x = torch.randn(2, 7, 32)
    with torch.inference_mode():
        fast = layer(x)
    assert calls == [(2, 7, 32)]
    plain = torch.nn.functional.linear(x, layer.weight, layer.bias)
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    with torch.no_grad():
        layer(x.transpose(0, 1))  # non-contiguous inputs too
    assert len(calls) == 2


@pytest.mark.parametrize("cls", ALL_CLASSES, ids=lambda c: c.__name__)
def test_models_match_the_plain_path(cls, tiny_config, monkeypatch, calls) -> None:
    model = build(cls, tiny_config).eval()
    ids, mask = make_inputs(cls, tiny_config)  # the last row is padded
    with torch.inference_mode():
        fast = main_output(cls, model(ids, mask))
        n_linear = len(calls)
        monkeypatch.setattr(cpu_kernels, "ONEDNN_LINEAR", False)
        plain = main_output(cls, model(ids, mask))
    assert n_linear >= 6 * tiny_config.n_layers and len(calls) == n_linear  # the switch turns the fast path off
    torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)


BF16 = pytest.param(
    torch.bfloat16,
    marks=pytest.mark.skipif(not cpu_kernels.ONEDNN_BF16, reason="oneDNN has no bfloat16 inner product on this CPU"),
    id="torch.bfloat16",
)


@pytest.mark.parametrize("activation", ["gelu", "gelu_new", "gelu_pytorch_tanh", "relu"])
@pytest.mark.parametrize("dtype", [pytest.param(torch.float32, id="torch.float32"), BF16])
def test_fused_activation_matches_the_plain_path(activation, dtype, monkeypatch, calls) -> None:
    torch.manual_seed(0)
    layer = modeling.Linear(32, 37).to(dtype)
    x = torch.randn(2, 7, 32, dtype=dtype)
    act = modeling.activation_fn(activation)
    with torch.inference_mode():
        assert cpu_kernels.use_onednn(x, layer.weight)
        fused = cpu_kernels.linear(x, layer, activation)
        monkeypatch.setattr(cpu_kernels, "ONEDNN_LINEAR", False)
        assert not cpu_kernels.use_onednn(x, layer.weight)
        plain = act(layer(x))
    assert len(calls) == 1
    expected = modeling.activation_fn(activation)(torch.nn.functional.linear(x, layer.weight, layer.bias))
    torch.testing.assert_close(plain, expected, rtol=0, atol=0)
    tolerance = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 1.6e-2, "atol": 1e-2}
    torch.testing.assert_close(fused, plain, **tolerance)


def test_autograd_float16_and_empty_inputs_take_the_plain_path(calls) -> None:
    layer = modeling.Linear(8, 3)
    x = torch.randn(4, 8, requires_grad=True)
    modeling.activation_fn("gelu")(layer(x)).sum().backward()  # gradients flow: autograd never sees the oneDNN op
    assert x.grad is not None and layer.weight.grad is not None
    with torch.no_grad():
        frozen = modeling.Linear(8, 3).requires_grad_(False)
        frozen(torch.randn(4, 8))  # no autograd needed: fast path
        assert len(calls) == 1
        layer.to(torch.float16)(torch.randn(4, 8, dtype=torch.float16))
        assert layer(torch.randn(0, 8, dtype=torch.float16)).shape == (0, 3)
        layer.float()(torch.randn(0, 8))
    assert len(calls) == 1


def test_export_sees_the_plain_linear(tiny_config) -> None:
    model = build(ALL_CLASSES[2], tiny_config).eval()  # sequence classification
    ids = torch.randint(1, tiny_config.vocab_size, (2, 5))
    exported = torch.export.export(model, (ids, torch.ones_like(ids)))
    graph = str(exported.graph)
    assert "mkldnn" not in graph and "linear" in graph


def test_bfloat16_stays_on_the_plain_path_where_onednn_cannot(tiny_config, monkeypatch, calls) -> None:
    """A CPU without AVX-512 BF16 or AMX (oneDNN refuses its bfloat16 inner product): bfloat16 inference runs F.linear
    instead of failing, float32 keeps the kernel."""
    monkeypatch.setattr(cpu_kernels, "ONEDNN_BF16", False)
    model = build(ALL_CLASSES[2], tiny_config).eval().to(torch.bfloat16)
    ids, mask = make_inputs(ALL_CLASSES[2], tiny_config)
    with torch.inference_mode():
        out = model(ids, mask).logits
        assert not cpu_kernels.use_onednn(
            torch.ones(2, 4, dtype=torch.bfloat16), torch.ones(3, 4, dtype=torch.bfloat16)
        )
        assert cpu_kernels.use_onednn(torch.ones(2, 4), torch.ones(3, 4))
    assert calls == [] and out.dtype == torch.bfloat16 and bool(torch.isfinite(out).all())
