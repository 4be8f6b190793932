"""Autograd kernels behind convbert.model, written for memory and speed: sequence convolutions (shifted
multiply-adds on CPU, fused conv1d / unfold forms on accelerators and in compiled graphs), a cheap dropout,
attention with dropout, FFN and LM-head functions that save less for backward. Each saves only what its
backward cannot cheaply rebuild; tests check them against plain PyTorch autograd.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .kernels import HAVE_TRITON


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate reductions in at least fp32 (bf16/fp16 inputs), keep fp64 as is."""
    return torch.promote_types(dtype, torch.float32)


def _tap_ranges(j: int, k: int, T: int) -> tuple[slice, slice]:
    """Tap j of a centred k-tap conv: output rows t and input rows t + j - k//2 that lie inside [0, T)."""
    o = j - k // 2
    return slice(max(0, -o), T - max(0, o)), slice(max(0, o), T + min(0, o))


class _DepthwiseConvSame(torch.autograd.Function):
    """Depthwise conv over time with 'same' zero padding, channels last, as k shifted multiply-adds on
    sub-ranges (no padded copy, no unfold). Hand-written backward: autograd through k slices would allocate
    and zero a full-size gradient buffer per tap; here each gradient accumulates into one buffer. Rows where
    `pad` ([B, T, 1] bool) is True are read as zeros; the masked input is rebuilt in backward instead of
    saved. Low-precision inputs are convolved in fp32 and the output stays fp32 (the next matmul casts it
    under autocast)."""

    @staticmethod
    def _input(x: torch.Tensor, keep: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor:
        """x in dtype with padding rows zeroed: one pass. A multiply by the [B, T, 1] keep mask, not a
        masked_fill: on CPU a broadcast masked_fill is ~10x slower than a broadcast multiply (padding rows
        hold finite hidden states, so 0 * x is 0)."""
        if keep is None:
            return x.to(dtype)
        return x * keep if x.dtype == dtype else x.to(dtype).mul_(keep)

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        w = weight.to(_acc_dtype(x.dtype))
        keep = None if pad is None else (~pad).to(w.dtype)  # [B, T, 1]
        ctx.save_for_backward(x, w, keep)
        ctx.weight_dtype = weight.dtype
        xs = _DepthwiseConvSame._input(x, keep, w.dtype)
        k, T = w.shape[0], x.shape[1]
        out = xs * w[k // 2]  # centre tap covers every row
        for j in range(k):
            if j != k // 2:
                o, i = _tap_ranges(j, k, T)
                out[:, o].addcmul_(xs[:, i], w[j])
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, w, keep = ctx.saved_tensors
        xs = _DepthwiseConvSame._input(x, keep, w.dtype)
        grad = grad.to(w.dtype)
        k, T = w.shape[0], grad.shape[1]
        grad_x = grad * w[k // 2]
        grad_w = torch.empty(w.shape, dtype=w.dtype, device=w.device)
        for j in range(k):
            o, i = _tap_ranges(j, k, T)
            grad_w[j] = (xs[:, i] * grad[:, o]).sum((0, 1), dtype=w.dtype)
            if j != k // 2:
                grad_x[:, i].addcmul_(grad[:, o], w[j])
        if keep is not None:
            grad_x.mul_(keep)
        return grad_x.to(x.dtype), grad_w.to(ctx.weight_dtype), None


CPU_TAP_LOOPS = True  # False: the fused conv forms on CPU too (op counts, or a CPU where they are faster)


def fused_kernels(x: torch.Tensor) -> bool:
    """Whether the conv branch runs as a few fused ops (F.conv1d, unfold) instead of k shifted multiply-adds.

    The tap loops below are 1.5-4x faster on CPU in eager mode (T=128, measured) but cost ~50 small kernels
    per conv: on accelerators (kernel launches) and in compiled graphs (one fused loop) the fused forms win.
    """
    return x.device.type != "cpu" or torch.compiler.is_compiling() or not CPU_TAP_LOOPS


# Triton kernels for the conv branch on CUDA (convbert/kernels, used only where triton imports; never on CPU
# or in compiled graphs, where inductor fuses the forms below itself)
TRITON_CONV = False  # the dynamic conv (softmax, padding mask, sum) as one Triton kernel each way: off until a GPU
# session has checked and timed it (make gpu-check's conv check)
TRITON_DEPTHWISE = False  # the depthwise key conv as Triton instead of cuDNN: off until a GPU benchmark says


def use_triton(x: torch.Tensor, switch: bool) -> bool:
    """Whether a conv on x runs as a Triton kernel: switch on, x on CUDA, triton importable, eager mode."""
    return switch and x.is_cuda and HAVE_TRITON and not torch.compiler.is_compiling()


def depthwise_conv_same(x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, T, C], weight [k, C] -> [B, T, C];  out[:, t] = sum_j weight[j] * x[:, t + j - k // 2].
    Rows where pad [B, T, 1] is True count as zeros (outside the sequence). Under autocast the CPU tap loops
    accumulate and return fp32; the fused path (one grouped F.conv1d: cuDNN on GPU, or Triton with
    TRITON_DEPTHWISE) computes in the autocast dtype with fp32 accumulation."""
    if not fused_kernels(x):
        return _DepthwiseConvSame.apply(x, weight, pad)
    if use_triton(x, TRITON_DEPTHWISE):
        from .kernels import conv_triton

        return conv_triton.depthwise_conv_same_triton(x.to(compute_dtype(x)), weight, pad)
    if pad is not None:
        x = x.masked_fill(pad, 0.0)
    k, C = weight.shape
    w = weight.t().unsqueeze(1).to(compute_dtype(x))  # [C, 1, k]: one filter per channel
    return F.conv1d(x.transpose(1, 2), w, padding=k // 2, groups=C).transpose(1, 2)


class _LightweightConv(torch.autograd.Function):
    """out[b,t,n] = sum_j kernel[b,t,n,j] * v[b, t + j - k//2, n]; only v and the kernel are saved
    (HF's unfold materialises k shifted copies of v)."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
        k, T = kernel.shape[-1], v.shape[1]
        a = kernel.to(v.dtype).unsqueeze(-1)  # [B, T, N, k, 1]
        out = v * a[..., k // 2, :]
        for j in range(k):
            if j != k // 2:
                o, i = _tap_ranges(j, k, T)
                out[:, o].addcmul_(v[:, i], a[:, o, :, j])
        ctx.save_for_backward(v, a)
        ctx.kernel_dtype = kernel.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        v, a = ctx.saved_tensors
        k, T = a.shape[-2], grad.shape[1]
        grad_v = grad * a[..., k // 2, :]
        acc = _acc_dtype(v.dtype)
        grad_a = torch.zeros(a.shape[:-1], dtype=acc, device=a.device)  # [B, T, N, k]
        for j in range(k):
            o, i = _tap_ranges(j, k, T)
            grad_a[:, o, :, j] = (v[:, i] * grad[:, o]).sum(-1, dtype=acc)
            if j != k // 2:
                grad_v[:, i].addcmul_(grad[:, o], a[:, o, :, j])
        return grad_v, grad_a.to(ctx.kernel_dtype)


def compute_dtype(t: torch.Tensor) -> torch.dtype:
    """The dtype ops on t compute in: the autocast dtype when autocast is on for t's device, else t's."""
    dev = t.device.type
    # dynamo before torch 2.13 cannot trace is_autocast_available; compiled code runs on autocast devices
    available = torch.compiler.is_compiling() or torch.amp.is_autocast_available(dev)
    if available and torch.is_autocast_enabled(dev):
        return torch.get_autocast_dtype(dev)
    return t.dtype


def grouped_or_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x @ W + b for a Linear weight [out, in] or a grouped weight [g, in/g, out/g]."""
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    g, gi, go = weight.shape
    xg = x.reshape(-1, g, gi).transpose(0, 1)  # [g, M, in/g]
    return torch.bmm(xg, weight).transpose(0, 1).reshape(*x.shape[:-1], g * go) + bias


def _linear_backward(x: torch.Tensor, weight: torch.Tensor, grad: torch.Tensor, reuse_x: bool = False
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Gradients of grouped_or_dense w.r.t. (x, weight, bias); bias gradient accumulated in fp32.
    reuse_x: x is a temporary of the caller's, and a dense layer writes the input gradient over it."""
    x2, gy = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])  # [M, in], [M, out]
    if weight.dim() == 2:  # W [out, in]
        grad_w = gy.t().mm(x2)
        grad_x = torch.mm(gy, weight, out=x2) if reuse_x and x2.is_contiguous() else gy.mm(weight)
    else:  # W [G, in/G, out/G]
        G = weight.shape[0]
        xg = x2.view(-1, G, weight.shape[1]).transpose(0, 1)  # [G, M, in/G]
        gyg = gy.view(-1, G, weight.shape[2]).transpose(0, 1)  # [G, M, out/G]
        grad_w = torch.bmm(xg.transpose(1, 2), gyg)  # [G, in/G, out/G]
        grad_x = torch.bmm(gyg, weight.transpose(1, 2)).transpose(0, 1).reshape(x2.shape)
    return grad_x.view(x.shape), grad_w, gy.sum(0, dtype=_acc_dtype(gy.dtype))


class _FeedForward(torch.autograd.Function):
    """y = gelu(x W1 + b1) W2 + b2 (dense or grouped weights), saving x and the pre-activation a = x W1 + b1
    but not gelu(a), which backward recomputes: the FFN's two [..., 4d] activations are the largest saved
    tensors of a layer, this keeps one. Autocast is applied by hand (compute in the autocast dtype)."""

    @staticmethod
    def forward(ctx, x, w1, b1, w2, b2):
        dt, ctx.param_dtype = compute_dtype(x), w1.dtype
        with torch.autocast(x.device.type, enabled=False):
            x, w1, w2, b1, b2 = (t.to(dt) for t in (x, w1, w2, b1, b2))
            a = grouped_or_dense(x, w1, b1)  # [..., hidden]
            y = grouped_or_dense(F.gelu(a), w2, b2)
        ctx.save_for_backward(x, a, w1, w2)
        return y

    @staticmethod
    def backward(ctx, grad):
        x, a, w1, w2 = ctx.saved_tensors
        # the last layer's FFN backward is the step's memory peak: one [..., 4d] buffer holds gelu(a), then the
        # gradient w.r.t. it, then (in place) the gradient w.r.t. a
        grad_a, grad_w2, grad_b2 = _linear_backward(F.gelu(a), w2, grad.to(x.dtype), reuse_x=True)
        grad_a = torch.ops.aten.gelu_backward.grad_input(grad_a, a, grad_input=grad_a)
        grad_x, grad_w1, grad_b1 = _linear_backward(x, w1, grad_a)
        pd = ctx.param_dtype
        return grad_x, grad_w1.to(pd), grad_b1.to(pd), grad_w2.to(pd), grad_b2.to(pd)


def feed_forward(x: torch.Tensor, linear1: nn.Module, linear2: nn.Module) -> torch.Tensor:
    """linear2(gelu(linear1(x))) for nn.Linear or GroupedLinear layers; gelu's output is not saved."""
    return _FeedForward.apply(x, linear1.weight, linear1.bias, linear2.weight, linear2.bias)


def conv_tap_mask(keep: torch.Tensor, k: int) -> torch.Tensor:
    """keep [B, T] bool -> [B, T, 1, k] bool: tap j of token t reads position t + j - k//2, a real token."""
    padded = F.pad(keep, (k // 2, k // 2), value=False)  # [B, T + k - 1]
    return padded.unfold(1, k, 1)[:, :, None, :]


def lightweight_conv(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Dynamic (per token, per head) conv, zero outside the sequence.

    v [B, T, N, D], kernel [B, T, N, k] (softmaxed over k) -> [B, T, N, D]. The fused path (see
    fused_kernels) reads the k shifted windows of the zero-padded v as one strided view (unfold, no copy) and
    reduces them against the kernel: two ops forward, a few backward; compiled, one loop. On CUDA with
    Triton (TRITON_CONV): one Triton kernel each way.
    """
    if use_triton(v, TRITON_CONV):
        from .kernels import conv_triton

        return conv_triton.lightweight_conv_triton(v, kernel)
    if not fused_kernels(v):
        return _LightweightConv.apply(v, kernel)
    k = kernel.shape[-1]
    windows = F.pad(v, (0, 0, 0, 0, k // 2, k // 2)).unfold(1, k, 1)  # [B, T, N, D, k] view
    return (windows * kernel.to(v.dtype).unsqueeze(-2)).sum(-1)


def dynamic_conv(v: torch.Tensor, logits: torch.Tensor, conv_keep: torch.Tensor | None = None) -> torch.Tensor:
    """docs/design.md §2 steps 3 and 5 after the kernel projection: lightweight_conv(v, softmax_k(logits) *
    conv_keep). v [B, T, N, D], logits [B, T, N, k], conv_keep [B, T, 1, k] bool (conv_tap_mask) or None
    -> [B, T, N, D]. On CUDA with Triton (TRITON_CONV) the softmax, mask and weighted sum are one kernel each
    way; elsewhere the three ops below."""
    if use_triton(v, TRITON_CONV):
        from .kernels import conv_triton

        return conv_triton.softmax_lightweight_conv_triton(v, logits, conv_keep)
    kernel = logits.softmax(-1)
    if conv_keep is not None:
        # zeroing the taps that read padding == zeroing V' at padding ("outside the sequence")
        kernel = kernel * conv_keep.to(kernel.dtype)
    return lightweight_conv(v, kernel)


def _keep_mask(x: torch.Tensor, p: float) -> torch.Tensor:
    """Bool keep-mask shaped like x with P(drop) = p rounded to a multiple of 2^-16. One 64-bit draw of the
    generator yields four 16-bit uniforms: torch's bernoulli_ draws one number per element and dominates
    small-model CPU steps."""
    n = x.numel()
    bits = torch.empty((n + 3) // 4, dtype=torch.int64, device=x.device).random_(-(2**63), 2**63 - 1)
    u16 = bits.view(torch.int16)[:n].view(x.shape)  # uniform in [-2^15, 2^15)
    return u16 >= round(p * 65536) - 32768


class _Dropout(torch.autograd.Function):
    """Inverted dropout with the cheap mask above, kept as bool (1 byte per element) for backward."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, p: float) -> torch.Tensor:
        keep = _keep_mask(x, p)
        ctx.save_for_backward(keep)
        ctx.scale = 1.0 / (1.0 - p)
        return torch.where(keep, x, 0.0).mul_(ctx.scale)  # where() is much faster than a bool multiply

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        (keep,) = ctx.saved_tensors
        return torch.where(keep, grad, 0.0).mul_(ctx.scale), None


def dropout(x: torch.Tensor, p: float, training: bool) -> torch.Tensor:
    if not training or p == 0.0:
        return x
    if x.device.type != "cpu" or torch.compiler.is_compiling():
        return F.dropout(x, p, True)  # accelerators / compiled graphs have fast fused dropout
    return _Dropout.apply(x, p)


class Dropout(nn.Dropout):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dropout(x, self.p, self.training)


class _AttentionWithDropout(torch.autograd.Function):
    """softmax(q k^T / sqrt(D) + bias) -> dropout -> @ v. Saves the row log-sum-exp and the bool dropout mask,
    not the [B, N, T, T] probabilities: backward rebuilds them with one q k^T (q, k, v are views of the fused
    projection, alive anyway). q, k, v [B, T, N, D] -> [B, T, N, D]."""

    @staticmethod
    def _scores(qs, kh, bias):
        scores = torch.matmul(qs, kh.transpose(-1, -2))  # [B, N, T, T]
        return scores if bias is None else scores.add_(bias)

    @staticmethod
    def forward(ctx, q, k, v, bias, p: float):
        dt = compute_dtype(q)
        with torch.autocast(q.device.type, enabled=False):
            qh, kh, vh = (t.transpose(1, 2).to(dt) for t in (q, k, v))  # [B, N, T, D]
            bias = bias.to(dt) if bias is not None else None
            # scaling q is cheaper than scaling the scores when D < T; the scaled copy is not saved
            scores = _AttentionWithDropout._scores(qh * qh.shape[-1] ** -0.5, kh, bias)
            probs = scores.softmax(-1)
            # log-sum-exp from the row max (probs there is >= 1/T, so its log is accurate), kept in fp32
            acc = _acc_dtype(dt)
            lse = scores.amax(-1, keepdim=True).to(acc) - probs.amax(-1, keepdim=True).to(acc).log()  # [B,N,T,1]
            del scores
            keep = _keep_mask(probs, p)
            # the dropout scale goes on the [.., T, D] product, not the [.., T, T] probabilities (D < T)
            out = torch.matmul(torch.where(keep, probs, 0.0), vh).mul_(1.0 / (1.0 - p))  # [B, N, T, D]
        ctx.save_for_backward(qh, kh, vh, bias, lse, keep)
        ctx.p = p
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        qh, kh, vh, bias, lse, keep = ctx.saved_tensors
        scale = qh.shape[-1] ** -0.5
        qs = qh * scale
        probs = _AttentionWithDropout._scores(qs, kh, bias).sub_(lse).exp_()
        # the dropout scale goes on the output gradient: one [B, N, T, D] pass instead of two over [B, N, T, T]
        go = grad.transpose(1, 2).to(qh.dtype) * (1.0 / (1.0 - ctx.p))  # [B, N, T, D]
        grad_v = torch.matmul(torch.where(keep, probs, 0.0).transpose(-1, -2), go)
        grad_probs = torch.where(keep, torch.matmul(go, vh.transpose(-1, -2)), 0.0)  # [B, N, T, T]
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype)
        grad_q = torch.matmul(grad_scores, kh).mul_(scale)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), qs)
        return grad_q.transpose(1, 2), grad_k.transpose(1, 2), grad_v.transpose(1, 2), None, None


def self_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_bias: torch.Tensor | None,
                   dropout_p: float) -> torch.Tensor:
    """Scaled dot-product attention. q, k, v [B, T, N, D]; attn_bias [B, 1, 1, T] additive -> [B, T, N, D].

    SDPA everywhere except CPU training with attention dropout: there SDPA falls back to its math path with
    bernoulli dropout, and the explicit kernel above is ~1.5x faster at T=128 and saves less.
    """
    if dropout_p > 0.0 and q.device.type == "cpu" and not torch.compiler.is_compiling():
        return _AttentionWithDropout.apply(q, k, v, attn_bias, dropout_p)
    q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # [B, N, T, D] views
    return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias, dropout_p=dropout_p).transpose(1, 2)


def _cast_chunk_rows(t: torch.Tensor, dtype: torch.dtype, cols: int) -> int | None:
    """Rows per chunk for writing an [M, cols] result computed from t in another dtype. On CPU such a write first
    computes into a full-size temporary of the computation's dtype (74 MB at the small preset's generator
    head), so there rows go in ~1 MB chunks. None: in one piece (same dtype, an accelerator, a compiled graph)."""
    if t.dtype == dtype or t.device.type != "cpu" or torch.compiler.is_compiling():
        return None
    return max(1, (1 << 18) // cols)


class _TiedLMCrossEntropy(torch.autograd.Function):
    """sum_i w_i CE(h_i W^T + b, target_i), returning the softmax probabilities as well. The [M, V] logits
    buffer becomes the probabilities in place and is kept for backward, whose gradient (probs - onehot) then
    costs one pass instead of a second vocabulary matmul. The probabilities are returned detached for
    sampling and accuracy; backward only reads them. Row weights let a fixed number of rows (ELECTRA's max
    predictions per sequence) stand for a varying number of masked tokens: weight 0 rows cost compute but add
    nothing, and no shape depends on the data."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                row_weights: torch.Tensor | None):
        dt = compute_dtype(h)
        with torch.autocast(h.device.type, enabled=False):
            h, w, b = h.to(dt), weight.to(dt), bias.to(dt)
            acc = _acc_dtype(dt)
            chunk = _cast_chunk_rows(h, acc, len(w))
            if chunk is None:
                probs = F.linear(h, w, b).to(acc)  # [M, V] logits, fp32 under autocast
            else:
                probs = torch.empty(len(h), len(w), dtype=acc, device=h.device)
                for r in range(0, len(h), chunk):
                    probs[r:r + chunk] = F.linear(h[r:r + chunk], w, b)
            target_logit = probs.gather(1, targets[:, None]).squeeze(1)  # [M]
            row_max = probs.amax(1, keepdim=True)
            row_sum = probs.sub_(row_max).exp_().sum(1, keepdim=True)  # softmax numerators, in place
            probs.div_(row_sum)
            per_row = (row_max + row_sum.log()).squeeze(1) - target_logit  # log-sum-exp - target logit
            if row_weights is not None:
                row_weights = row_weights.to(per_row.dtype)
                per_row = per_row * row_weights
            loss_sum = per_row.sum()
        ctx.save_for_backward(h, w, targets, probs, row_weights)
        ctx.param_dtype = weight.dtype
        ctx.mark_non_differentiable(probs)
        return loss_sum, probs

    @staticmethod
    def backward(ctx, grad_loss: torch.Tensor, _grad_probs: None):
        h, w, targets, probs, row_weights = ctx.saved_tensors
        scale = grad_loss.expand(len(targets)) if row_weights is None else row_weights * grad_loss  # [M]
        with torch.autocast(h.device.type, enabled=False):  # a compiled backward may trace under autocast
            # d loss / d logits = scale * (softmax - onehot), in the compute dtype, each value rounded once
            grad = torch.empty(probs.shape, dtype=h.dtype, device=h.device)  # [M, V]
            chunk = _cast_chunk_rows(probs, h.dtype, probs.shape[1]) or len(probs)
            for r in range(0, len(probs), chunk):
                torch.mul(probs[r:r + chunk], scale[r:r + chunk, None], out=grad[r:r + chunk])
            rows = torch.arange(len(targets), device=grad.device)
            grad[rows, targets] = ((probs[rows, targets] - 1) * scale).to(grad.dtype)
            grad_b = (scale[None] @ probs).squeeze(0).index_add_(0, targets, -scale)  # [V], from the fp32 probs
            grad_h, grad_w = grad.mm(w), grad.t().mm(h)
        return grad_h, grad_w.to(ctx.param_dtype), grad_b.to(ctx.param_dtype), None, None


def tied_lm_cross_entropy(h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, targets: torch.Tensor,
                          row_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """h [M, E], weight [V, E], bias [V], targets [M], row_weights [M] or None (all 1)
    -> (weighted sum of the rows' cross-entropies, detached fp32 softmax probabilities [M, V])."""
    return _TiedLMCrossEntropy.apply(h, weight, bias, targets, row_weights)
