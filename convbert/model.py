"""ConvBERT (Jiang et al., 2020) in one file: embeddings, mixed attention, grouped FFN, encoder and heads.

Layout convention: activations stay [B, T, features] end to end; heads are split with views only.
The mixed-attention block follows SPEC §2; HF transformers' ConvBertModel state-dict is the interchange
format (see convbert/hf.py for the key mapping).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .config import ConvBertConfig

# ------------------------------------------------------------------------------------------------
# kernels: sequence convolutions as k shifted multiply-adds (no unfold copies), dropout, attention
# ------------------------------------------------------------------------------------------------


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate reductions in at least fp32 (bf16/fp16 inputs), keep fp64 as is."""
    return torch.promote_types(dtype, torch.float32)


def _tap_ranges(j: int, k: int, T: int) -> tuple[slice, slice]:
    """Tap j of a centred k-tap conv: output rows t and input rows t + j - k//2 that lie inside [0, T)."""
    o = j - k // 2
    return slice(max(0, -o), T - max(0, o)), slice(max(0, o), T + min(0, o))


class _DepthwiseConvSame(torch.autograd.Function):
    """Depthwise conv over time with 'same' zero padding, channels last, as k shifted multiply-adds on
    sub-ranges (no padded copy). Hand-written backward: autograd through k slices would allocate and zero
    a full-size gradient buffer per tap; here each gradient accumulates into one buffer. Optional `pad`
    ([B, T, 1] bool) rows are read as zeros; the masked input is rebuilt in backward instead of saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None) -> torch.Tensor:
        k, T = weight.shape[0], x.shape[1]
        w = weight.to(x.dtype)
        xs = x if pad is None else x.masked_fill(pad, 0.0)
        out = xs * w[k // 2]  # centre tap covers every row
        for j in range(k):
            if j != k // 2:
                o, i = _tap_ranges(j, k, T)
                out[:, o].addcmul_(xs[:, i], w[j])
        ctx.save_for_backward(x, w, pad)
        ctx.weight_dtype = weight.dtype
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None]:
        x, w, pad = ctx.saved_tensors
        k, T = w.shape[0], grad.shape[1]
        xs = x if pad is None else x.masked_fill(pad, 0.0)
        grad_x = grad * w[k // 2]
        acc = _acc_dtype(x.dtype)
        grad_w = torch.empty(w.shape, dtype=acc, device=w.device)
        for j in range(k):
            o, i = _tap_ranges(j, k, T)
            grad_w[j] = (xs[:, i] * grad[:, o]).sum((0, 1), dtype=acc)
            if j != k // 2:
                grad_x[:, i].addcmul_(grad[:, o], w[j])
        if pad is not None:
            grad_x.masked_fill_(pad, 0.0)
        return grad_x, grad_w.to(ctx.weight_dtype), None


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


def _compute_dtype(t: torch.Tensor) -> torch.dtype:
    dev = t.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else t.dtype


class _GeluLinear(torch.autograd.Function):
    """y = gelu(a) @ W + b for a Linear (W [out, in]) or grouped weight (W [g, in/g, out/g]).

    Saves only the pre-activation a and recomputes gelu(a) in backward: the FFN's two [B*T, 4d] activations
    are the largest saved tensors of a layer, this keeps one of them. Autocast is applied by hand (compute
    in the autocast dtype) so the saved a stays in bf16 under bf16 autocast.
    """

    @staticmethod
    def forward(ctx, a: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(a)
        with torch.autocast(a.device.type, enabled=False):
            a = a.to(dt)
            w, b = weight.to(dt), bias.to(dt)
            y = _grouped_or_dense(F.gelu(a), w, b)
        ctx.save_for_backward(a, w)
        ctx.param_dtype = weight.dtype
        return y

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        a, w = ctx.saved_tensors
        grad = grad.to(a.dtype)
        g = F.gelu(a)  # recomputed [..., in]
        g2, gy = g.reshape(-1, g.shape[-1]), grad.reshape(-1, grad.shape[-1])  # [M, in], [M, out]
        if w.dim() == 2:  # dense: W [out, in]
            grad_w = gy.t().mm(g2)
            grad_g = gy.mm(w)
        else:  # grouped: W [G, in/G, out/G]
            G = w.shape[0]
            gg = g2.view(-1, G, w.shape[1]).transpose(0, 1)  # [G, M, in/G]
            gyg = gy.view(-1, G, w.shape[2]).transpose(0, 1)  # [G, M, out/G]
            grad_w = torch.bmm(gg.transpose(1, 2), gyg)  # [G, in/G, out/G]
            grad_g = torch.bmm(gyg, w.transpose(1, 2)).transpose(0, 1).reshape(g2.shape)
        grad_a = torch.ops.aten.gelu_backward(grad_g.view(a.shape), a)
        grad_b = gy.sum(0, dtype=_acc_dtype(gy.dtype))
        return grad_a, grad_w.to(ctx.param_dtype), grad_b.to(ctx.param_dtype)


def _grouped_or_dense(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    if weight.dim() == 2:
        return F.linear(x, weight, bias)
    g, gi, go = weight.shape
    xg = x.reshape(-1, g, gi).transpose(0, 1)  # [g, M, in/g]
    return torch.bmm(xg, weight).transpose(0, 1).reshape(*x.shape[:-1], g * go) + bias


def gelu_linear(a: torch.Tensor, linear: nn.Module) -> torch.Tensor:
    """linear(gelu(a)) for nn.Linear or GroupedLinear, saving only a for backward."""
    return _GeluLinear.apply(a, linear.weight, linear.bias)


def conv_tap_mask(keep: torch.Tensor, k: int) -> torch.Tensor:
    """keep [B, T] bool -> [B, T, 1, k] bool: tap j of token t reads position t + j - k//2, a real token."""
    padded = F.pad(keep, (k // 2, k // 2), value=False)  # [B, T + k - 1]
    return padded.unfold(1, k, 1)[:, :, None, :]


def depthwise_conv_same(x: torch.Tensor, weight: torch.Tensor, pad: torch.Tensor | None = None) -> torch.Tensor:
    """x [B, T, C], weight [k, C] -> [B, T, C];  out[:, t] = sum_j weight[j] * x[:, t + j - k // 2].
    Rows where pad [B, T, 1] is True count as zeros (outside the sequence)."""
    return _DepthwiseConvSame.apply(x, weight, pad)


def lightweight_conv(v: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Dynamic (per token, per head) conv, zero outside the sequence.

    v [B, T, N, D], kernel [B, T, N, k] (softmaxed over k) -> [B, T, N, D].
    """
    return _LightweightConv.apply(v, kernel)


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
    """softmax(q k^T / sqrt(D) + bias) -> dropout -> @ v, saving only the probabilities and the bool dropout
    mask (q, k, v are views of the fused projection, alive anyway); the dropped probabilities are rebuilt in
    backward. q, k, v [B, T, N, D] -> [B, T, N, D]."""

    @staticmethod
    def forward(ctx, q, k, v, bias, p: float):
        dt = _compute_dtype(q)
        with torch.autocast(q.device.type, enabled=False):
            qh, kh, vh = (t.transpose(1, 2).to(dt) for t in (q, k, v))  # [B, N, T, D]
            scale = qh.shape[-1] ** -0.5
            scores = torch.matmul(qh, kh.transpose(-1, -2)).mul_(scale)  # [B, N, T, T]
            if bias is not None:
                scores.add_(bias.to(dt))
            probs = scores.softmax(-1)
            keep = _keep_mask(probs, p)
            out = torch.matmul(torch.where(keep, probs, 0.0).mul_(1.0 / (1.0 - p)), vh)  # [B, N, T, D]
        ctx.save_for_backward(qh, kh, vh, probs, keep)
        ctx.p, ctx.scale = p, scale
        return out.transpose(1, 2)

    @staticmethod
    def backward(ctx, grad):
        qh, kh, vh, probs, keep = ctx.saved_tensors
        drop_scale = 1.0 / (1.0 - ctx.p)
        go = grad.transpose(1, 2).to(qh.dtype)  # [B, N, T, D]
        grad_v = torch.matmul(torch.where(keep, probs, 0.0).mul_(drop_scale).transpose(-1, -2), go)
        grad_probs = torch.where(keep, torch.matmul(go, vh.transpose(-1, -2)), 0.0).mul_(drop_scale)  # [B,N,T,T]
        grad_scores = torch._softmax_backward_data(grad_probs, probs, -1, probs.dtype).mul_(ctx.scale)
        grad_q = torch.matmul(grad_scores, kh)
        grad_k = torch.matmul(grad_scores.transpose(-1, -2), qh)
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


# ------------------------------------------------------------------------------------------------
# modules
# ------------------------------------------------------------------------------------------------


class ConvBertEmbeddings(nn.Module):
    """word + position + token type -> LayerNorm -> dropout, all of size embedding_size (E)."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        E = config.embedding_size
        self.word_embeddings = nn.Embedding(config.vocab_size, E)
        self.position_embeddings = nn.Embedding(config.max_position_embeddings, E)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, E)
        self.LayerNorm = nn.LayerNorm(E, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        T = input_ids.shape[1]
        max_pos = self.position_embeddings.num_embeddings
        if T > max_pos:
            raise ValueError(f"sequence length {T} exceeds max_position_embeddings={max_pos}")
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:T]  # [B, T, E]
        if token_type_ids is None:
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class GroupedLinear(nn.Module):
    """Linear layer split into g independent groups: weight [g, in/g, out/g], one batched matmul."""

    def __init__(self, in_features: int, out_features: int, num_groups: int):
        super().__init__()
        self.num_groups = num_groups
        self.weight = nn.Parameter(
            torch.empty(num_groups, in_features // num_groups, out_features // num_groups))  # [g, in/g, out/g]
        self.bias = nn.Parameter(torch.zeros(out_features))
        nn.init.normal_(self.weight, 0.0, 0.02)  # standalone default; ConvBertModel applies config's init

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dt = _compute_dtype(x)
        return _grouped_or_dense(x.to(dt), self.weight.to(dt), self.bias.to(dt))


def _ffn_linear(in_features: int, out_features: int, num_groups: int) -> nn.Module:
    return nn.Linear(in_features, out_features) if num_groups == 1 else GroupedLinear(
        in_features, out_features, num_groups)


class ConvBertAttention(nn.Module):
    """Mixed attention (N self-attention heads + N span-based dynamic conv heads) or plain self-attention,
    followed by the output projection, dropout, residual and LayerNorm."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        d, k = config.hidden_size, config.conv_kernel_size
        self.mixed = config.attention == "mixed"
        self.num_heads = config.num_sa_heads  # N
        self.head_size = config.attention_head_size  # d_h
        self.kernel_size = k
        self.mask_conv_padding = config.mask_conv_padding
        self.attn_dropout = config.attention_probs_dropout_prob
        A = self.num_heads * self.head_size  # width of each branch (N * d_h)
        # one fused projection: [query | key | value | conv value V'] (V' only for mixed attention)
        self.qkv = nn.Linear(d, (4 if self.mixed else 3) * A)
        if self.mixed:
            self.key_conv_depthwise = nn.Parameter(torch.empty(k, d))  # depthwise conv taps, channels last
            self.key_conv_pointwise = nn.Linear(d, A)
            self.conv_kernel = nn.Linear(A, self.num_heads * k)
        self.dense = nn.Linear(2 * A if self.mixed else A, d)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(d, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None, pad: torch.Tensor | None,
                conv_keep: torch.Tensor | None = None) -> torch.Tensor:
        # x [B, T, d]; attn_bias [B, 1, 1, T] additive key mask or None; pad [B, T, 1] bool (True = padding);
        # conv_keep [B, T, 1, k] bool: tap j of token t reads a real token (see conv_tap_mask)
        B, T, _ = x.shape
        N, D = self.num_heads, self.head_size
        A = N * D
        proj = self.qkv(x).view(B, T, 4 if self.mixed else 3, N, D)
        parts = proj.unbind(2)  # q, k, v[, V'] each [B, T, N, D]; unbind's backward is a single stack
        q, k, v = parts[:3]
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        sa = self_attention(q, k, v, attn_bias, self.attn_dropout if self.training else 0.0)  # [B, T, N, D]
        if self.mixed:
            pad = pad if self.mask_conv_padding else None
            ks = self.key_conv_pointwise(depthwise_conv_same(x, self.key_conv_depthwise, pad))  # span key [B,T,A]
            kernel = self.conv_kernel(ks * q.reshape(B, T, A)).view(B, T, N, self.kernel_size).softmax(-1)
            if conv_keep is not None and self.mask_conv_padding:
                # zeroing the taps that read padding == zeroing V' at padding ("outside the sequence")
                kernel = kernel * conv_keep.to(kernel.dtype)
            conv = lightweight_conv(parts[3], kernel)  # [B, T, N, D]
            ctx = torch.cat([sa.reshape(B, T, A), conv.reshape(B, T, A).to(sa.dtype)], dim=-1)  # [B, T, 2A]
        else:
            ctx = sa.reshape(B, T, A)
        return self.LayerNorm(x + self.dropout(self.dense(ctx)))


class ConvBertLayer(nn.Module):
    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.attention = ConvBertAttention(config)
        self.intermediate = _ffn_linear(config.hidden_size, config.intermediate_size, config.num_groups)
        self.output = _ffn_linear(config.intermediate_size, config.hidden_size, config.num_groups)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor | None = None, pad: torch.Tensor | None = None,
                conv_keep: torch.Tensor | None = None) -> torch.Tensor:
        h = self.attention(x, attn_bias, pad, conv_keep)
        ff = gelu_linear(self.intermediate(h), self.output)  # output(gelu(intermediate(h)))
        return self.LayerNorm(h + self.dropout(ff))


def init_weights(module: nn.Module, config: ConvBertConfig) -> None:
    """Official init: normal(0, 0.02) dense/embeddings, depthwise conv normal(0, 1/k), zero bias, LN ones."""
    std = config.initializer_range
    if isinstance(module, nn.Linear):
        nn.init.normal_(module.weight, 0.0, std)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.Embedding):
        nn.init.normal_(module.weight, 0.0, std)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)
    elif isinstance(module, GroupedLinear):
        nn.init.normal_(module.weight, 0.0, std)
        nn.init.zeros_(module.bias)
    elif isinstance(module, ConvBertAttention) and module.mixed:
        nn.init.normal_(module.key_conv_depthwise, 0.0, 1.0 / module.kernel_size)


class ConvBertModel(nn.Module):
    """Encoder: embeddings (+ E->d projection) and a stack of ConvBertLayer. Returns hidden [B, T, d]."""

    def __init__(self, config: ConvBertConfig, embeddings: ConvBertEmbeddings | None = None):
        super().__init__()
        self.config = config
        shared = embeddings is not None
        if shared and embeddings.word_embeddings.embedding_dim != config.embedding_size:
            raise ValueError(f"shared embeddings have size {embeddings.word_embeddings.embedding_dim}, "
                             f"config.embedding_size is {config.embedding_size}")
        self.embeddings = embeddings if shared else ConvBertEmbeddings(config)
        self.embeddings_project = (nn.Linear(config.embedding_size, config.hidden_size)
                                   if config.embedding_size != config.hidden_size else None)
        self.layers = nn.ModuleList(ConvBertLayer(config) for _ in range(config.num_hidden_layers))
        for name, m in self.named_modules():
            if not (shared and (name == "embeddings" or name.startswith("embeddings."))):  # shared: keep as is
                init_weights(m, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        # input_ids [B, T]; attention_mask [B, T] (1 = token, 0 = padding)
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, E]
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # [B, T, d]
        attn_bias = pad = conv_keep = None
        if attention_mask is not None:
            keep = attention_mask.bool()  # [B, T]
            # finite large negative (not -inf) so a fully padded row stays finite instead of NaN
            attn_bias = torch.zeros(keep.shape, dtype=torch.float32, device=keep.device)
            attn_bias = attn_bias.masked_fill(~keep, -1e9)[:, None, None, :]  # [B, 1, 1, T]
            if self.config.attention == "mixed" and self.config.mask_conv_padding:
                pad = ~keep[:, :, None]  # [B, T, 1]
                conv_keep = conv_tap_mask(keep, self.config.conv_kernel_size)
        for layer in self.layers:
            x = layer(x, attn_bias, pad, conv_keep)
        return x

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        params = {id(p): p for n, p in self.named_parameters()
                  if not (exclude_embeddings and n.startswith("embeddings."))}
        return sum(p.numel() for p in params.values())

    @classmethod
    def from_hf(cls, path: str | Path, **config_overrides) -> ConvBertModel:
        """Load a transformers-format ConvBERT directory (config.json + model.safetensors or .bin)."""
        from .hf import load_hf

        return load_hf(path, **config_overrides)

    def to_hf(self, path: str | Path) -> None:
        """Write a directory that transformers.ConvBertModel.from_pretrained(path) loads."""
        from .hf import save_hf

        save_hf(self, path)


# ------------------------------------------------------------------------------------------------
# heads
# ------------------------------------------------------------------------------------------------


class GeneratorHead(nn.Module):
    """MLM head: Linear d->E, GELU, LayerNorm, decoder tied to the word embeddings (+ own bias).

    Apply it to hidden[masked_positions] ([M, d]) only: the vocab projection dominates small models.
    """

    def __init__(self, config: ConvBertConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.embedding_size)
        self.LayerNorm = nn.LayerNorm(config.embedding_size, eps=config.layer_norm_eps)
        self.word_embeddings = word_embeddings  # tied decoder weight [V, E]
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))
        init_weights(self.dense, config)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        h = self.LayerNorm(F.gelu(self.dense(hidden)))  # [..., E]
        return F.linear(h, self.word_embeddings.weight, self.bias)  # [..., V]


class DiscriminatorHead(nn.Module):
    """Replaced-token detection: Linear d->d, GELU, Linear d->1. hidden [B, T, d] -> logits [B, T]."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, 1)
        self.apply(lambda m: init_weights(m, config))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.dense(hidden))).squeeze(-1)


class ConvBertForSequenceClassification(nn.Module):
    """[CLS] -> dropout -> Linear(num_labels). num_labels == 1 means regression."""

    def __init__(self, config: ConvBertConfig, num_labels: int):
        super().__init__()
        self.config, self.num_labels = config, num_labels
        self.convbert = ConvBertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = nn.Linear(config.hidden_size, num_labels)
        init_weights(self.classifier, config)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        hidden = self.convbert(input_ids, attention_mask, token_type_ids)  # [B, T, d]
        return self.classifier(self.dropout(hidden[:, 0]))  # [B, num_labels]


class ConvBertForQuestionAnswering(nn.Module):
    """Span start/end logits per token; optional SQuAD 2.0 answerable classifier on [CLS]
    ([CLS] -> Linear d->d -> GELU -> Linear d->1). Padding is not masked here: the caller masks
    positions that cannot hold an answer."""

    def __init__(self, config: ConvBertConfig, answerable: bool = False):
        super().__init__()
        self.config = config
        self.convbert = ConvBertModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.answerable = (nn.Sequential(nn.Linear(config.hidden_size, config.hidden_size), nn.GELU(),
                                         nn.Linear(config.hidden_size, 1)) if answerable else None)
        init_weights(self.qa_outputs, config)
        if self.answerable is not None:
            self.answerable.apply(lambda m: init_weights(m, config))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        hidden = self.convbert(input_ids, attention_mask, token_type_ids)  # [B, T, d]
        start, end = self.qa_outputs(hidden).unbind(-1)  # [B, T] each
        ans = self.answerable(hidden[:, 0]).squeeze(-1) if self.answerable is not None else None  # [B]
        return start, end, ans


__all__ = [
    "ConvBertConfig", "ConvBertEmbeddings", "ConvBertAttention", "ConvBertLayer", "ConvBertModel",
    "GroupedLinear", "GeneratorHead", "DiscriminatorHead", "ConvBertForSequenceClassification",
    "ConvBertForQuestionAnswering", "depthwise_conv_same", "lightweight_conv", "init_weights",
]
