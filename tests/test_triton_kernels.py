"""The Triton conv kernels (convbert/kernels/conv_triton.py) against the reference ops on CPU: forward and
both gradients, run by Triton's interpreter (no GPU needed).

TRITON_INTERPRET=1 must be set before triton itself is imported (its own library functions are wrapped at
import), which another test in the same process may have done already, and setting it process-wide would
turn every later Triton use interpreted (torch.compile on a GPU included). So the kernel tests, marked
`triton_interpreter`, run in a fresh pytest process with that variable (test_kernels_under_triton_interpreter)
and are skipped in the calling process. Skipped everywhere where triton is not installed; the package itself
must import and run without it (last test)."""

import os
import subprocess
import sys

import pytest
import torch

from convbert import ops
from convbert.config import ConvBertConfig
from convbert.kernels import HAVE_TRITON
from convbert.model import ConvBertModel

INTERPRETED = os.environ.get("TRITON_INTERPRET") == "1"
NO_TRITON = "triton is not installed (optional; pip install triton to run these)"
interpreted = pytest.mark.triton_interpreter


@pytest.fixture(scope="module")
def ct():
    """convbert.kernels.conv_triton with its kernels run by Triton's interpreter."""
    if not HAVE_TRITON:
        pytest.skip(NO_TRITON)
    if not INTERPRETED:
        pytest.skip("runs in test_kernels_under_triton_interpreter's subprocess (TRITON_INTERPRET=1)")
    from convbert.kernels import conv_triton

    return conv_triton


@pytest.mark.skipif(not HAVE_TRITON, reason=NO_TRITON)
@pytest.mark.skipif(INTERPRETED, reason="already in the interpreter process")
def test_kernels_under_triton_interpreter():
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-m", "triton_interpreter", __file__]
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and " passed" in run.stdout and "skipped" not in run.stdout, run.stdout[-6000:]


def _grads(out: torch.Tensor, inputs: tuple[torch.Tensor, ...], seed: int = 1) -> tuple[torch.Tensor, ...]:
    g = torch.randn(out.shape, generator=torch.Generator().manual_seed(seed)).to(out.dtype)
    return (out, *torch.autograd.grad(out, inputs, g))


def _close(got: tuple[torch.Tensor, ...], want: tuple[torch.Tensor, ...], atol: float, rtol: float) -> None:
    for name, a, b in zip(("out", "grad 1", "grad 2"), got, want, strict=True):
        torch.testing.assert_close(a.float(), b.float(), atol=atol, rtol=rtol, msg=lambda m, n=name: f"{n}: {m}")


def _padding(B: int, T: int, lengths: tuple[int, ...]) -> torch.Tensor:
    """keep [B, T] bool: sequence b has lengths[b] real tokens."""
    return torch.arange(T)[None, :] < torch.tensor(lengths)[:, None]


# (B, T, N, D, k): odd T; T < k (taps fall off both ends); T over one 32-row tile; D not a power of 2
LCONV_SHAPES = [(2, 13, 2, 16, 9), (1, 7, 1, 8, 3), (2, 5, 2, 16, 9), (2, 37, 1, 12, 9), (1, 33, 2, 20, 3)]


@interpreted
@pytest.mark.parametrize("shape", LCONV_SHAPES)
def test_lightweight_conv_matches_reference(ct, shape):
    B, T, N, D, k = shape
    torch.manual_seed(0)
    v = torch.randn(B, T, N, D, requires_grad=True)
    kernel = torch.randn(B, T, N, k).softmax(-1).requires_grad_()
    got = _grads(ct.lightweight_conv_triton(v, kernel), (v, kernel))
    _close(got, _grads(ops.lightweight_conv(v, kernel), (v, kernel)), atol=1e-5, rtol=1e-5)


@interpreted
@pytest.mark.parametrize("shape", LCONV_SHAPES)
@pytest.mark.parametrize("padded", [False, True])
def test_softmax_conv_matches_dynamic_conv(ct, shape, padded):
    """The fused softmax + padding mask + conv against ops.dynamic_conv's CPU ops (what model.py runs), with v
    a strided slice of a fused projection as in the model."""
    B, T, N, D, k = shape
    torch.manual_seed(0)
    proj = torch.randn(B, T, 4, N, D, requires_grad=True)
    v = proj[:, :, 3]  # [B, T, N, D] view, not contiguous
    logits = (3 * torch.randn(B, T, N, k)).requires_grad_()
    lengths = (T, 1, T // 2)[:B] if padded else (T,) * B  # a one-token sequence: most taps masked
    keep = ops.conv_tap_mask(_padding(B, T, lengths), k) if padded else None
    got = _grads(ct.softmax_lightweight_conv_triton(v, logits, keep), (proj, logits))
    _close(got, _grads(ops.dynamic_conv(v, logits, keep), (proj, logits)), atol=1e-5, rtol=1e-5)


@interpreted
def test_bf16_inputs_accumulate_in_fp32(ct):
    """bf16 v and logits (the autocast dtypes) against fp32 reference math on the same rounded values;
    outputs and gradients keep the inputs' dtypes."""
    B, T, N, D, k = 2, 21, 2, 32, 9
    torch.manual_seed(0)
    v = torch.randn(B, T, N, D).bfloat16().requires_grad_()
    logits = torch.randn(B, T, N, k).bfloat16().requires_grad_()
    keep = ops.conv_tap_mask(_padding(B, T, (T, 11)), k)
    got = _grads(ct.softmax_lightweight_conv_triton(v, logits, keep), (v, logits))
    assert [t.dtype for t in got] == [torch.bfloat16] * 3
    v32, l32 = (t.detach().float().requires_grad_() for t in (v, logits))
    _close(got, _grads(ops.dynamic_conv(v32, l32, keep), (v32, l32)), atol=2e-2, rtol=2e-2)

    kernel = logits.detach().float().softmax(-1).requires_grad_()  # fp32 kernel, as softmax under autocast
    got = _grads(ct.lightweight_conv_triton(v, kernel), (v, kernel))
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32]
    k32 = kernel.detach().requires_grad_()
    _close(got, _grads(ops.lightweight_conv(v32, k32), (v32, k32)), atol=2e-2, rtol=2e-2)


# (B, T, C, k): odd T; T over one 32-row tile and C over one 64-channel tile, neither a multiple
@interpreted
@pytest.mark.parametrize("shape", [(2, 13, 40, 9), (1, 7, 24, 3), (2, 37, 70, 9), (1, 5, 16, 9)])
@pytest.mark.parametrize("padded", [False, True])
def test_depthwise_conv_matches_reference(ct, shape, padded):
    B, T, C, k = shape
    torch.manual_seed(0)
    x = torch.randn(B, T, C, requires_grad=True)
    w = (torch.randn(k, C) / k).requires_grad_()
    pad = ~_padding(B, T, (T, T // 2)[:B])[:, :, None] if padded else None  # [B, T, 1]
    got = _grads(ct.depthwise_conv_same_triton(x, w, pad), (x, w))
    _close(got, _grads(ops.depthwise_conv_same(x, w, pad), (x, w)), atol=1e-5, rtol=1e-5)


@interpreted
def test_depthwise_conv_bf16(ct):
    B, T, C, k = 2, 19, 48, 9
    torch.manual_seed(0)
    x = torch.randn(B, T, C).bfloat16().requires_grad_()
    w = (torch.randn(k, C) / k).requires_grad_()
    pad = ~_padding(B, T, (T, 8))[:, :, None]
    got = _grads(ct.depthwise_conv_same_triton(x, w, pad), (x, w))
    assert [t.dtype for t in got] == [torch.bfloat16, torch.bfloat16, torch.float32]
    x32 = x.detach().float().requires_grad_()
    _close(got, _grads(ops.depthwise_conv_same(x32, w, pad), (x32, w)), atol=2e-2, rtol=2e-2)


@interpreted
def test_model_through_the_triton_path(ct, monkeypatch):
    """The model with both Triton kernels switched in (as on CUDA) matches its CPU path: padded batch,
    forward and parameter gradients."""
    cfg = ConvBertConfig.from_preset("tiny", vocab_size=300, num_hidden_layers=1)
    torch.manual_seed(0)
    model = ConvBertModel(cfg).eval()  # no dropout: both runs see the same function
    ids = torch.randint(5, 300, (2, 19))
    mask = _padding(2, 19, (19, 12)).long()

    def run() -> list[torch.Tensor]:
        model.zero_grad()
        out = model(ids, mask)
        out.pow(2).sum().backward()
        return [out.detach()] + [p.grad.clone() for p in model.parameters()]

    want = run()
    monkeypatch.setattr(ops, "TRITON_CONV", True)  # both switches are off by default until a GPU has timed them
    monkeypatch.setattr(ops, "TRITON_DEPTHWISE", True)
    monkeypatch.setattr(ops, "CPU_TAP_LOOPS", False)  # the depthwise switch sits on the fused path
    monkeypatch.setattr(ops, "use_triton", lambda x, switch: switch)  # CPU tensors, interpreted
    got = run()
    for a, b in zip(got, want, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)


def test_cpu_never_takes_the_triton_path():
    x = torch.zeros(1)
    assert not ops.use_triton(x, True)


def test_package_runs_without_triton():
    """triton is optional: with it made unimportable the model still imports and runs (on CPU)."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch\n"
            "from convbert import kernels, ops\n"
            "from convbert.config import ConvBertConfig\n"
            "from convbert.model import ConvBertModel\n"
            "assert not kernels.HAVE_TRITON\n"
            "m = ConvBertModel(ConvBertConfig.from_preset('tiny', vocab_size=50, num_hidden_layers=1))\n"
            "m(torch.randint(0, 50, (1, 5))).sum().backward()\n")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
