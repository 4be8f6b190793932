"""Kernel launches per layer: the fused conv branch (what accelerators and compiled graphs run) dispatches a
handful of aten ops where the k-tap loops dispatch ~50 per conv. Counted with a dispatch mode, forward and
backward, on CPU with the fused forms forced (ops.CPU_TAP_LOOPS = False).

Measured (torch 2.13, small preset widths; compute ops = all aten ops but views, all ops in parentheses):
tap loops: depthwise 50 (129), lightweight 47 (151), whole layer 211 (538); fused: depthwise 6 (15),
lightweight 8 (15), whole layer 128 (288). The bounds below leave a little room for other torch versions'
decompositions."""


import pytest
import torch
import torch.nn.functional as F

from benchmarks.bench_common import OpCounter
from convbert import ops
from convbert.config import ConvBertConfig
from convbert.model import ConvBertLayer

VIEWS = {"aten.view", "aten._unsafe_view", "aten.reshape", "aten._reshape_alias", "aten.transpose", "aten.t",
         "aten.permute", "aten.unsqueeze", "aten.squeeze", "aten.expand", "aten.slice", "aten.select",
         "aten.unbind", "aten.split", "aten.split_with_sizes", "aten.as_strided", "aten.unfold", "aten.alias",
         "aten.detach"}


def compute_ops(counter: OpCounter) -> int:
    return sum(n for name, n in counter.ops.items() if name not in VIEWS)


def _count(fn) -> OpCounter:
    with OpCounter() as counter:
        fn()
    return counter


@pytest.fixture
def fused(monkeypatch):
    monkeypatch.setattr(ops, "CPU_TAP_LOOPS", False)


def _inputs(B=4, T=32, d=256, N=2, D=64, k=9):
    torch.manual_seed(0)
    x = torch.randn(B, T, d, requires_grad=True)
    w = torch.randn(k, d, requires_grad=True)
    v = torch.randn(B, T, N, D, requires_grad=True)
    a = torch.randn(B, T, N, k).softmax(-1).requires_grad_()
    pad = torch.zeros(B, T, 1, dtype=torch.bool)
    pad[1, 20:] = True
    return x, w, v, a, pad


def test_fused_conv_branch_dispatches_a_few_ops(fused):
    x, w, v, a, pad = _inputs()
    out_dw, out_lw = ops.depthwise_conv_same(x, w, pad), ops.lightweight_conv(v, a)
    g_dw, g_lw = torch.randn_like(out_dw), torch.randn_like(out_lw)
    dw = _count(lambda: torch.autograd.backward(ops.depthwise_conv_same(x, w, pad), g_dw))
    lw = _count(lambda: torch.autograd.backward(ops.lightweight_conv(v, a), g_lw))
    assert dw.ops["aten.convolution"] == 1 and dw.ops["aten.convolution_backward"] == 1
    assert compute_ops(dw) <= 8, dw.ops  # masked_fill, conv, conv backward, masked_fill, weight cast and grads
    assert compute_ops(lw) <= 10, lw.ops


def test_layer_op_count_fused_vs_tap_loops(monkeypatch):
    cfg = ConvBertConfig.from_preset("small", vocab_size=100)
    torch.manual_seed(0)
    layer = ConvBertLayer(cfg).train()
    x = torch.randn(4, 32, cfg.hidden_size, requires_grad=True)
    keep = torch.ones(4, 32, dtype=torch.bool)
    keep[1, 20:] = False
    bias = torch.zeros(4, 32).masked_fill(~keep, torch.finfo(torch.float32).min)[:, None, None, :]
    args = (x, bias, ~keep[:, :, None], ops.conv_tap_mask(keep, cfg.conv_kernel_size))

    def step():
        layer.zero_grad(set_to_none=True)
        x.grad = None
        layer(*args).sum().backward()

    taps = compute_ops(_count(step))
    monkeypatch.setattr(ops, "CPU_TAP_LOOPS", False)
    fused = compute_ops(_count(step))
    assert fused <= 130 and taps - fused >= 75, (fused, taps)


@pytest.mark.parametrize("dtype,tol", [(torch.float64, 1e-10), (torch.bfloat16, 2e-2)])
def test_fused_conv_kernels_equal_the_tap_loops(monkeypatch, dtype, tol):
    x, w, v, a, pad = _inputs(B=3, T=13, d=16, N=2, D=8, k=9)  # T close to k: taps fall off both ends
    x, v, a = (t.detach().to(dtype if t is not a else torch.float64).requires_grad_() for t in (x, v, a))
    w = w.detach().double().requires_grad_()

    def run(conv_fn, *inputs):
        out = conv_fn(*inputs)
        grads = torch.autograd.grad(out, [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad],
                                    torch.ones_like(out))
        return [out.double(), *(g.double() for g in grads)]

    def both(fn, *inputs):
        monkeypatch.setattr(ops, "CPU_TAP_LOOPS", True)
        ref = run(fn, *inputs)
        monkeypatch.setattr(ops, "CPU_TAP_LOOPS", False)
        return ref, run(fn, *inputs)

    for fn, inputs in ((ops.depthwise_conv_same, (x, w.to(x.dtype) if dtype == torch.float64 else w, pad)),
                       (ops.lightweight_conv, (v, a))):
        ref, got = both(fn, *inputs)
        for r, g in zip(ref, got, strict=True):
            assert torch.allclose(g, r, rtol=tol, atol=tol), (fn.__name__, (g - r).abs().max())


def test_fused_depthwise_conv_matches_conv1d_definition(fused):
    x = torch.randn(2, 11, 6, dtype=torch.double)
    w = torch.randn(5, 6, dtype=torch.double)
    ref = F.conv1d(x.transpose(1, 2), w.t().unsqueeze(1), padding=2, groups=6).transpose(1, 2)
    assert torch.allclose(ops.depthwise_conv_same(x, w), ref)
