"""ConvBERT configuration: one dataclass, named presets and the ELECTRA generator derivation. (The checks every
config group shares live in convbert/settings.py.)"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from convbert.settings import check_bools, check_ints, reject_unknown

# Backbone sizes from the paper / official configs (docs/design.md §2). `tiny` is ours, for CPU runs and tests.
PRESETS: dict[str, dict[str, Any]] = {
    "tiny": dict(hidden_size=128, embedding_size=128, num_hidden_layers=4, num_attention_heads=4,
                 intermediate_size=512, num_groups=1),
    "small": dict(hidden_size=256, embedding_size=128, num_hidden_layers=12, num_attention_heads=4,
                  intermediate_size=1024, num_groups=1),
    "medium-small": dict(hidden_size=384, embedding_size=128, num_hidden_layers=12, num_attention_heads=8,
                         intermediate_size=1536, num_groups=2),
    "base": dict(hidden_size=768, embedding_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, num_groups=1),
}

ATTENTION_KINDS = ("mixed", "self")


@dataclass
class ConvBertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    embedding_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12  # total heads (self-attention + conv), as in HF transformers
    head_ratio: int = 2  # gamma: self-attention heads = max(1, heads // gamma), same number of conv heads
    conv_kernel_size: int = 9
    intermediate_size: int = 3072
    num_groups: int = 1  # grouped-linear FFN groups
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    pad_token_id: int = 0
    attention: str = "mixed"  # "mixed" (ConvBERT) or "self" (plain BERT/ELECTRA block)
    mask_conv_padding: bool = True  # zero padding inside the conv branch (HF/official checkpoints: False)

    def __post_init__(self) -> None:
        self.validate()

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def num_sa_heads(self) -> int:
        """Self-attention heads N (the same number of conv heads run beside them in mixed attention)."""
        if self.attention == "self":
            return self.num_attention_heads
        return max(1, int(self.num_attention_heads // self.head_ratio))

    @property
    def attention_head_size(self) -> int:
        if self.attention == "self":
            return self.hidden_size // self.num_attention_heads
        # HF sizing: the SA + conv concat is 2 * N * d_h = hidden_size for every head_ratio
        return self.hidden_size // (2 * self.num_sa_heads)

    # ---- validation ----------------------------------------------------------------------------
    def validate(self) -> None:
        check_ints(self, "ConvBertConfig", ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers",
                                            "num_attention_heads", "intermediate_size", "num_groups",
                                            "max_position_embeddings", "type_vocab_size", "conv_kernel_size"),
                   error=ValueError)
        check_bools(self, "ConvBertConfig", ("mask_conv_padding",), error=ValueError)
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"ConvBertConfig.attention must be one of {ATTENTION_KINDS}, "
                             f"got {self.attention!r}")
        hr = self.head_ratio
        if isinstance(hr, bool) or not isinstance(hr, int | float) or not hr > 0:
            raise ValueError(f"ConvBertConfig.head_ratio must be a positive number, got {hr!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"ConvBertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                             f"num_attention_heads ({self.num_attention_heads})")
        if self.attention == "mixed":
            if self.hidden_size % (2 * self.num_sa_heads):
                raise ValueError(f"ConvBertConfig.hidden_size ({self.hidden_size}) must be divisible by "
                                 f"2 * self-attention heads ({2 * self.num_sa_heads}) for head_ratio={hr}")
            if self.conv_kernel_size % 2 == 0:
                raise ValueError(f"ConvBertConfig.conv_kernel_size must be odd ('same' padding), "
                                 f"got {self.conv_kernel_size}")
        for name in ("hidden_size", "intermediate_size"):
            if getattr(self, name) % self.num_groups:
                raise ValueError(f"ConvBertConfig.num_groups ({self.num_groups}) must divide "
                                 f"{name} ({getattr(self, name)})")
        for name in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            p = getattr(self, name)
            if not 0.0 <= p < 1.0:
                raise ValueError(f"ConvBertConfig.{name} must be in [0, 1), got {p!r}")
        if not 0 <= self.pad_token_id < self.vocab_size:
            raise ValueError(f"ConvBertConfig.pad_token_id ({self.pad_token_id}) must be in [0, vocab_size)")

    # ---- construction --------------------------------------------------------------------------
    @classmethod
    def from_preset(cls, name: str, **overrides: Any) -> ConvBertConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown ConvBERT preset {name!r}; available presets: {', '.join(PRESETS)}")
        return cls.from_dict({**PRESETS[name], **overrides})

    def generator_config(self, size_ratio: float | None = None) -> ConvBertConfig:
        """ELECTRA generator: same depth and embeddings, width and heads scaled by size_ratio, FFN = 4x width.

        Default ratio (docs/design.md §2): 1/3 for base-sized models (d >= 768), 1/4 otherwise. The generator keeps the
        discriminator's attention kind (mixed for ConvBERT), kernel size, head ratio and FFN groups.
        """
        if size_ratio is None:
            size_ratio = 1 / 3 if self.hidden_size >= 768 else 1 / 4
        if not 0 < size_ratio <= 1:
            raise ValueError(f"generator size_ratio must be in (0, 1], got {size_ratio}")
        hidden = max(1, round(self.hidden_size * size_ratio))
        heads = max(1, round(self.num_attention_heads * size_ratio))
        return dataclasses.replace(self, hidden_size=hidden, num_attention_heads=heads,
                                   intermediate_size=4 * hidden)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ConvBertConfig:
        reject_unknown("ConvBertConfig", d, (f.name for f in dataclasses.fields(cls)), ValueError)
        return cls(**d)
