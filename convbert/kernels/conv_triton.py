"""Triton kernels for the conv branch of mixed attention (docs/design.md §2): the span-based dynamic
("lightweight") convolution, optionally fused with the softmax over its k taps and the padding mask, and the
depthwise key convolution. Each is one forward and one backward launch; inputs may be strided views (the conv
values V' are a slice of the fused qkv projection) and are read in place. fp32, bf16 and fp16 inputs;
products are accumulated in fp32 and results stored in the input's dtype.

This module imports triton unconditionally: import it only where convbert.kernels.HAVE_TRITON is true.
"""

from __future__ import annotations

import contextlib

import torch
import triton
import triton.language as tl

LCONV_BLOCK_T = 32  # rows of one program; every program holds a [BLOCK_T, D] tile per tap
DW_BLOCK_T, DW_BLOCK_C = 32, 64


# ---------------------------------------------------------------------------------------------------------
# shared device helpers: tensors are addressed as [B, T, N, C] (depthwise: N = 1, stride 0)


@triton.jit
def _tile(ptr, b, n, rows, cols, T, C, s_b, s_t, s_n, s_c):
    """fp32 [len(rows), len(cols)] tile at (b, rows, n, cols); zero outside [0, T) x [0, C) ('same' padding)."""
    mask = ((rows >= 0) & (rows < T))[:, None] & (cols < C)[None, :]
    offs = b * s_b + rows[:, None] * s_t + n * s_n + cols[None, :] * s_c
    return tl.load(ptr + offs, mask=mask, other=0).to(tl.float32)


@triton.jit
def _tap(ptr, b, n, rows, j, T, s_b, s_t, s_n, s_c):
    """fp32 [len(rows)] column j at (b, rows, n); zero outside [0, T)."""
    mask = (rows >= 0) & (rows < T)
    return tl.load(ptr + b * s_b + rows * s_t + n * s_n + j * s_c, mask=mask, other=0).to(tl.float32)


@triton.jit
def _store_tile(ptr, x, b, n, rows, cols, T, C, s_b, s_t, s_n, s_c):
    mask = (rows < T)[:, None] & (cols < C)[None, :]
    offs = b * s_b + rows[:, None] * s_t + n * s_n + cols[None, :] * s_c
    tl.store(ptr + offs, x.to(ptr.dtype.element_ty), mask=mask)


@triton.jit
def _column(tile, taps, j):
    """tile[:, j] of a register tile [R, BLOCK_K] (registers cannot be indexed, so a masked row sum)."""
    return tl.sum(tl.where(taps[None, :] == j, tile, 0.0), axis=1)


@triton.jit
def _softmax_taps(logits, taps, K: tl.constexpr):
    """Row softmax of a [R, BLOCK_K] tile over its first K columns (the rest are power-of-2 padding)."""
    x = tl.where((taps < K)[None, :], logits, float("-inf"))
    x = tl.exp(x - tl.max(x, axis=1)[:, None])
    return x / tl.sum(x, axis=1)[:, None]


# ---------------------------------------------------------------------------------------------------------
# dynamic conv: out[b,t,n] = sum_j a[b,t,n,j] * v[b, t + j - K//2, n], a = kernel or softmax(logits) * keep


@triton.jit
def _lconv_fwd(v_ptr, w_ptr, keep_ptr, out_ptr, p_ptr, T, N, D,
               sv_b, sv_t, sv_n, sv_d, sw_b, sw_t, sw_n, sw_k, sk_b, sk_t, sk_n, sk_k,
               so_b, so_t, so_n, so_d, sp_b, sp_t, sp_n, sp_k,
               K: tl.constexpr, SOFTMAX: tl.constexpr, HAS_KEEP: tl.constexpr,
               BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    pid_t, pid_bn = tl.program_id(0), tl.program_id(1)
    b, n = pid_bn // N, pid_bn % N
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols, taps = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_K)
    a = _tile(w_ptr, b, n, rows, taps, T, K, sw_b, sw_t, sw_n, sw_k)  # [BLOCK_T, BLOCK_K]
    if SOFTMAX:
        a = _softmax_taps(a, taps, K)
        _store_tile(p_ptr, a, b, n, rows, taps, T, K, sp_b, sp_t, sp_n, sp_k)  # unmasked, for backward
    if HAS_KEEP:
        a = a * _tile(keep_ptr, b, n, rows, taps, T, K, sk_b, sk_t, sk_n, sk_k)
    acc = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(K):
        x = _tile(v_ptr, b, n, rows + (j - K // 2), cols, T, D, sv_b, sv_t, sv_n, sv_d)
        acc += _column(a, taps, j)[:, None] * x
    _store_tile(out_ptr, acc, b, n, rows, cols, T, D, so_b, so_t, so_n, so_d)


@triton.jit
def _lconv_bwd(v_ptr, w_ptr, keep_ptr, g_ptr, gv_ptr, gw_ptr, T, N, D,
               sv_b, sv_t, sv_n, sv_d, sw_b, sw_t, sw_n, sw_k, sk_b, sk_t, sk_n, sk_k,
               sg_b, sg_t, sg_n, sg_d, sgv_b, sgv_t, sgv_n, sgv_d, sgw_b, sgw_t, sgw_n, sgw_k,
               K: tl.constexpr, SOFTMAX: tl.constexpr, HAS_KEEP: tl.constexpr,
               BLOCK_T: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_K: tl.constexpr):
    """Each program owns rows of both gradients, so nothing is accumulated across programs (no atomics):
    the tap-weight gradient of its output rows and the v gradient of its input rows, which output rows
    `rows - shift` read through tap j. w holds the kernel, or with SOFTMAX the saved softmax p."""
    pid_t, pid_bn = tl.program_id(0), tl.program_id(1)
    b, n = pid_bn // N, pid_bn % N
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    cols, taps = tl.arange(0, BLOCK_D), tl.arange(0, BLOCK_K)
    g = _tile(g_ptr, b, n, rows, cols, T, D, sg_b, sg_t, sg_n, sg_d)  # [BLOCK_T, BLOCK_D]
    grad_a = tl.zeros((BLOCK_T, BLOCK_K), dtype=tl.float32)
    grad_v = tl.zeros((BLOCK_T, BLOCK_D), dtype=tl.float32)
    for j in tl.static_range(K):
        shift = j - K // 2
        x = _tile(v_ptr, b, n, rows + shift, cols, T, D, sv_b, sv_t, sv_n, sv_d)
        grad_a += tl.where(taps[None, :] == j, tl.sum(g * x, axis=1)[:, None], 0.0)
        a = _tap(w_ptr, b, n, rows - shift, j, T, sw_b, sw_t, sw_n, sw_k)  # [BLOCK_T]
        if HAS_KEEP:
            a = a * _tap(keep_ptr, b, n, rows - shift, j, T, sk_b, sk_t, sk_n, sk_k)
        grad_v += a[:, None] * _tile(g_ptr, b, n, rows - shift, cols, T, D, sg_b, sg_t, sg_n, sg_d)
    _store_tile(gv_ptr, grad_v, b, n, rows, cols, T, D, sgv_b, sgv_t, sgv_n, sgv_d)
    if HAS_KEEP:  # a = p * keep: masked taps pass no gradient to p
        grad_a = grad_a * _tile(keep_ptr, b, n, rows, taps, T, K, sk_b, sk_t, sk_n, sk_k)
    if SOFTMAX:  # softmax backward: dl = p * (dp - <p, dp>)
        p = _tile(w_ptr, b, n, rows, taps, T, K, sw_b, sw_t, sw_n, sw_k)
        grad_a = p * (grad_a - tl.sum(p * grad_a, axis=1)[:, None])
    _store_tile(gw_ptr, grad_a, b, n, rows, taps, T, K, sgw_b, sgw_t, sgw_n, sgw_k)


# ---------------------------------------------------------------------------------------------------------
# depthwise conv: out[b,t,c] = sum_j w[j,c] * x[b, t + j - K//2, c], rows where pad is True read as zero


@triton.jit
def _dw_input(x_ptr, pad_ptr, b, rows, chans, T, C, sx_b, sx_t, sx_c, sp_b, sp_t, HAS_PAD: tl.constexpr):
    """[len(rows), len(chans)] fp32 input tile, zero outside the sequence and at padding rows."""
    x = _tile(x_ptr, b, 0, rows, chans, T, C, sx_b, sx_t, 0, sx_c)
    if HAS_PAD:  # where, not a multiply: padding rows may hold anything
        x = tl.where(_tap(pad_ptr, b, 0, rows, 0, T, sp_b, sp_t, 0, 0)[:, None] != 0, 0.0, x)
    return x


@triton.jit
def _dw_fwd(x_ptr, w_ptr, pad_ptr, out_ptr, T, C, sx_b, sx_t, sx_c, sw_k, sw_c, sp_b, sp_t, so_b, so_t, so_c,
            K: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    chans = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(K):
        w = tl.load(w_ptr + j * sw_k + chans * sw_c, mask=chans < C, other=0).to(tl.float32)  # [BLOCK_C]
        x = _dw_input(x_ptr, pad_ptr, b, rows + (j - K // 2), chans, T, C, sx_b, sx_t, sx_c, sp_b, sp_t, HAS_PAD)
        acc += w[None, :] * x
    _store_tile(out_ptr, acc, b, 0, rows, chans, T, C, so_b, so_t, 0, so_c)


@triton.jit
def _dw_bwd(x_ptr, w_ptr, pad_ptr, g_ptr, gx_ptr, gw_ptr, T, C, sx_b, sx_t, sx_c, sw_k, sw_c, sp_b, sp_t,
            sg_b, sg_t, sg_c, sgx_b, sgx_t, sgx_c,
            K: tl.constexpr, HAS_PAD: tl.constexpr, BLOCK_T: tl.constexpr, BLOCK_C: tl.constexpr):
    """grad_x of this program's rows (gathered from the output rows that read them) and this tile's share of
    grad_w, written to gw_ptr [tiles, K, C] fp32 and summed on the host: deterministic, no atomics."""
    pid_t, pid_c, b = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)
    chans = pid_c * BLOCK_C + tl.arange(0, BLOCK_C)
    tile = b * tl.num_programs(0) + pid_t
    g = _tile(g_ptr, b, 0, rows, chans, T, C, sg_b, sg_t, 0, sg_c)  # [BLOCK_T, BLOCK_C]
    grad_x = tl.zeros((BLOCK_T, BLOCK_C), dtype=tl.float32)
    for j in tl.static_range(K):
        shift = j - K // 2
        x = _dw_input(x_ptr, pad_ptr, b, rows + shift, chans, T, C, sx_b, sx_t, sx_c, sp_b, sp_t, HAS_PAD)
        tl.store(gw_ptr + (tile * K + j) * C + chans, tl.sum(g * x, axis=0), mask=chans < C)
        w = tl.load(w_ptr + j * sw_k + chans * sw_c, mask=chans < C, other=0).to(tl.float32)
        grad_x += w[None, :] * _tile(g_ptr, b, 0, rows - shift, chans, T, C, sg_b, sg_t, 0, sg_c)
    if HAS_PAD:
        grad_x = tl.where(_tap(pad_ptr, b, 0, rows, 0, T, sp_b, sp_t, 0, 0)[:, None] != 0, 0.0, grad_x)
    _store_tile(gx_ptr, grad_x, b, 0, rows, chans, T, C, sgx_b, sgx_t, 0, sgx_c)


# ---------------------------------------------------------------------------------------------------------
# host side


def _on_device(t: torch.Tensor):
    """Launch on t's GPU (Triton launches on the current device); nothing to do for the CPU interpreter."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _lconv_args(v: torch.Tensor, w: torch.Tensor, keep: torch.Tensor | None
                ) -> tuple[tuple, dict, tuple, torch.Tensor]:
    """Grid, launch constants, the sizes and (v, w, keep) strides shared by both launches, and the keep
    pointer: keep broadcast over heads, or w as a placeholder when there is no mask."""
    B, T, N, D = v.shape
    K = w.shape[-1]
    keep_t = w if keep is None else keep.expand(B, T, N, K)
    grid = (triton.cdiv(T, LCONV_BLOCK_T), B * N)
    meta = dict(K=K, HAS_KEEP=keep is not None, BLOCK_T=LCONV_BLOCK_T,
                BLOCK_D=triton.next_power_of_2(D), BLOCK_K=triton.next_power_of_2(K))
    return grid, meta, (T, N, D, *v.stride(), *w.stride(), *keep_t.stride()), keep_t


class _DynamicConv(torch.autograd.Function):
    """v [B, T, N, D], w [B, T, N, k] -> [B, T, N, D] (v's dtype). softmax=False: w is the tap kernel;
    softmax=True: w holds logits, the taps are softmax_k(w) * keep (keep [B, T, 1 or N, k] bool or None), and
    the fp32 softmax is saved for backward instead of being recomputed."""

    @staticmethod
    def forward(ctx, v: torch.Tensor, w: torch.Tensor, keep: torch.Tensor | None, softmax: bool) -> torch.Tensor:
        grid, meta, args, keep_t = _lconv_args(v, w, keep)
        out = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        p = torch.empty(w.shape, dtype=torch.float32, device=w.device) if softmax else out  # out: unused
        with _on_device(v):
            _lconv_fwd[grid](v, w, keep_t, out, p, *args, *out.stride(), *p.stride(), SOFTMAX=softmax, **meta)
        ctx.save_for_backward(v, p if softmax else w, keep)
        ctx.softmax, ctx.w_dtype = softmax, w.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None]:
        v, w, keep = ctx.saved_tensors  # w: the kernel, or the softmax p
        grid, meta, args, keep_t = _lconv_args(v, w, keep)
        grad_v = torch.empty(v.shape, dtype=v.dtype, device=v.device)
        grad_w = torch.empty(w.shape, dtype=ctx.w_dtype, device=w.device)
        with _on_device(v):
            _lconv_bwd[grid](v, w, keep_t, grad, grad_v, grad_w, *args, *grad.stride(), *grad_v.stride(),
                             *grad_w.stride(), SOFTMAX=ctx.softmax, **meta)
        return grad_v, grad_w, None, None


def lightweight_conv_triton(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """convbert.ops.lightweight_conv as Triton kernels: v [B, T, N, D], kernel [B, T, N, k] -> [B, T, N, D]."""
    return _DynamicConv.apply(v, kernel, None, False)


def softmax_lightweight_conv_triton(v: torch.Tensor, logits: torch.Tensor, keep: torch.Tensor | None = None
                                    ) -> torch.Tensor:
    """lightweight_conv(v, softmax(logits, -1) * keep) in one launch each way: v [B, T, N, D], logits
    [B, T, N, k], keep [B, T, 1, k] bool (convbert.ops.conv_tap_mask) or None -> [B, T, N, D]."""
    return _DynamicConv.apply(v, logits, keep, True)


class _DepthwiseConvSameTriton(torch.autograd.Function):
    """x [B, T, C], weight [k, C], pad [B, T, 1] bool or None -> [B, T, C] (x's dtype)."""

    @staticmethod
    def _args(x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None) -> tuple[tuple, dict, tuple]:
        B, T, C = x.shape
        pad_t = weight if pad is None else pad  # unused pointer when there is no mask
        grid = (triton.cdiv(T, DW_BLOCK_T), triton.cdiv(C, DW_BLOCK_C), B)
        meta = dict(K=weight.shape[0], HAS_PAD=pad is not None, BLOCK_T=DW_BLOCK_T, BLOCK_C=DW_BLOCK_C)
        return grid, meta, (pad_t, T, C, *x.stride(), *weight.stride(), *pad_t.stride()[:2])

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        grid, meta, (pad_t, *args) = _DepthwiseConvSameTriton._args(x, weight, pad)
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        with _on_device(x):
            _dw_fwd[grid](x, weight, pad_t, out, *args, *out.stride(), **meta)
        ctx.save_for_backward(x, weight, pad)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, weight, pad = ctx.saved_tensors
        grid, meta, (pad_t, *args) = _DepthwiseConvSameTriton._args(x, weight, pad)
        grad_x = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        partial = torch.empty(grid[0] * grid[2], *weight.shape, dtype=torch.float32, device=x.device)  # [tiles, k, C]
        with _on_device(x):
            _dw_bwd[grid](x, weight, pad_t, grad, grad_x, partial, *args, *grad.stride(), *grad_x.stride(), **meta)
        return grad_x, partial.sum(0).to(weight.dtype), None


def depthwise_conv_same_triton(x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None = None
                               ) -> torch.Tensor:
    """convbert.ops.depthwise_conv_same as Triton kernels: x [B, T, C], weight [k, C] -> [B, T, C]; rows where
    pad [B, T, 1] is True count as zeros."""
    return _DepthwiseConvSameTriton.apply(x, weight, pad)
