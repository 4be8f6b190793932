"""ConvBERT (Jiang et al., 2020) in one file: embeddings, mixed attention, grouped FFN, encoder and heads.

Layout convention: activations stay [B, T, features] end to end; heads are split with views only.
The mixed-attention block follows docs/design.md §2; HF transformers' ConvBertModel state-dict is the interchange
format (see convbert/hf.py for the key mapping).
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import hf
from .config import ConvBertConfig
from .ops import (
    Dropout,
    compute_dtype,
    conv_tap_mask,
    depthwise_conv_same,
    dynamic_conv,
    feed_forward,
    grouped_or_dense,
    self_attention,
    tied_lm_cross_entropy,
)

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
        dt = compute_dtype(x)
        return grouped_or_dense(x.to(dt), self.weight.to(dt), self.bias.to(dt))


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
        x_in = x.to(compute_dtype(x))  # under autocast: one low-precision copy, saved by both qkv and the conv
        proj = self.qkv(x_in).view(B, T, 4 if self.mixed else 3, N, D)
        parts = proj.unbind(2)  # q, k, v[, V'] each [B, T, N, D]; unbind's backward is a single stack
        q, k, v = parts[:3]
        if attn_bias is not None:
            attn_bias = attn_bias.to(q.dtype)
        sa = self_attention(q, k, v, attn_bias, self.attn_dropout if self.training else 0.0)  # [B, T, N, D]
        if self.mixed:
            pad = pad if self.mask_conv_padding else None
            ks = self.key_conv_pointwise(depthwise_conv_same(x_in, self.key_conv_depthwise, pad))  # span key [B,T,A]
            logits = self.conv_kernel(ks * q.reshape(B, T, A)).view(B, T, N, self.kernel_size)
            conv = dynamic_conv(parts[3], logits, conv_keep if self.mask_conv_padding else None)  # [B, T, N, D]
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
        ff = feed_forward(h, self.intermediate, self.output)  # output(gelu(intermediate(h)))
        return self.LayerNorm(h + self.dropout(ff))


def _has_padding(attention_mask: torch.Tensor) -> bool:
    """False only when the mask is known to have no padding without asking the device: CPU masks are
    checked (free), masks on an accelerator or in a compiled graph are assumed padded (no host sync)."""
    if attention_mask.device.type != "cpu" or torch.compiler.is_compiling():
        return True
    return not bool(attention_mask.all())


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
        # input_ids [B, T]; attention_mask [B, T] (1 = token, 0 = padding). Pass None when nothing is padded:
        # without a mask SDPA may pick its flash kernel on GPU. A CPU mask without padding is dropped here (the
        # check is free there; on an accelerator it would wait for the device, so the caller decides).
        x = self.embeddings(input_ids, token_type_ids)  # [B, T, E]
        if self.embeddings_project is not None:
            x = self.embeddings_project(x)  # [B, T, d]
        attn_bias = pad = conv_keep = None
        if attention_mask is not None and _has_padding(attention_mask):
            keep = attention_mask.bool()  # [B, T]
            # the compute dtype's most negative finite value: -1e9 overflows to -inf in fp16, and a fully padded
            # row stays finite instead of NaN
            dtype = compute_dtype(x)
            attn_bias = torch.zeros(keep.shape, dtype=dtype, device=keep.device)
            attn_bias = attn_bias.masked_fill(~keep, torch.finfo(dtype).min)[:, None, None, :]  # [B, 1, 1, T]
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
        """Load a transformers-format directory: ConvBERT (config.json model_type convbert) or ELECTRA
        (model_type electra, loaded as attention='self'), weights in model.safetensors or pytorch_model.bin."""
        config, sd, source = hf.read_hf(path, **config_overrides)
        model = cls(config)
        model.load_state_dict(hf.convert_from_hf(sd, config, model.state_dict(), source), strict=True)
        return model

    def to_hf(self, path: str | Path) -> None:
        """Write a directory that transformers loads: ConvBertModel.from_pretrained for attention='mixed',
        ElectraModel.from_pretrained for attention='self'. With mask_conv_padding (our pretraining default)
        transformers, which has no such option, gives other outputs for the last k//2 real tokens of padded
        sequences; ConvBertModel.from_hf keeps the setting."""
        hf.write_hf(self.config, self.state_dict(), path)


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
        return F.linear(self._transform(hidden), self.word_embeddings.weight, self.bias)  # [..., V]

    def loss(self, hidden: torch.Tensor, targets: torch.Tensor, row_weights: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """hidden [M, d], targets [M], row_weights [M] (None: all 1) -> (weighted summed cross-entropy,
        detached fp32 softmax probabilities [M, V]), which backward reads (see ops.tied_lm_cross_entropy)."""
        return tied_lm_cross_entropy(self._transform(hidden), self.word_embeddings.weight, self.bias, targets,
                                     row_weights)

    def _transform(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(hidden)))  # [..., E]


class DiscriminatorHead(nn.Module):
    """Replaced-token detection: Linear d->d, GELU, Linear d->1. hidden [B, T, d] -> logits [B, T]."""

    def __init__(self, config: ConvBertConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.out = nn.Linear(config.hidden_size, 1)
        self.apply(lambda m: init_weights(m, config))

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return feed_forward(hidden, self.dense, self.out).squeeze(-1)  # out(gelu(dense(hidden)))


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
    "ConvBertForQuestionAnswering", "init_weights",
]
