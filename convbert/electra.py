"""ELECTRA-style pretraining objective (SPEC §3): masking, generator sampling, replaced-token detection.

Randomness is keyed per example, by (seed, step, position of the example in the global batch), never by
rank or micro-batch. Losses are sums divided by global token counts. Together these make a step identical
whether the global batch runs in one process or is split over ranks and accumulation micro-batches.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from convbert.config import ConvBertConfig
from convbert.model import ConvBertModel, DiscriminatorHead, GeneratorHead


@dataclass
class ElectraObjective:
    mask_prob: float = 0.15  # share of real tokens masked, exactly round(mask_prob * real tokens) per sequence
    mask_token_prob: float = 0.85  # masked positions shown as [MASK]; the rest keep their token
    mlm_weight: float = 1.0
    rtd_weight: float = 50.0
    temperature: float = 1.0  # generator sampling temperature
    generator_size: float | None = None  # generator width / discriminator width; None: SPEC default

    def __post_init__(self) -> None:
        for name in ("mask_prob", "mask_token_prob"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"objective.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"objective.temperature must be positive, got {self.temperature}")


def example_seeds(seed: int, step: int, first: int, count: int) -> list[int]:
    """One 63-bit seed per example from (run seed, optimizer step, position in the global batch)."""
    out = []
    for pos in range(first, first + count):
        x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + pos * 0x94D049BB133111EB) & (2**64 - 1)
        x ^= x >> 31
        x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
        out.append((x ^ (x >> 32)) & (2**63 - 1))
    return out


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


def mask_tokens(
    input_ids: torch.Tensor,  # [B,T]
    attention_mask: torch.Tensor,  # [B,T], 1 = real token
    special_ids: list[int],  # never masked ([CLS], [SEP], [PAD], ...)
    mask_token_id: int,
    seeds: list[int],  # one per example
    objective: ElectraObjective,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Returns (generator input ids [B,T], masked positions bool [B,T])."""
    B, T = input_ids.shape
    real = attention_mask.bool()
    candidate = real & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    # ELECTRA: round(p * real tokens) (round half to even), at least 1, at most the candidates
    n_mask = torch.round(real.sum(1) * objective.mask_prob).long().clamp(min=1)
    n_mask = torch.minimum(n_mask, candidate.sum(1))
    noise = torch.stack([torch.rand(2, T, generator=_generator(s, torch.device("cpu"))) for s in seeds])
    noise = noise.to(input_ids.device)  # [B,2,T]: pick order, then [MASK]-or-keep
    order = noise[:, 0].masked_fill(~candidate, 2.0)  # non-candidates sort last
    rank = order.argsort(1).argsort(1)
    masked = rank < n_mask[:, None]
    show_mask = masked & (noise[:, 1] < objective.mask_token_prob)
    return input_ids.masked_fill(show_mask, mask_token_id), masked


def gumbel_sample(logits: torch.Tensor, counts: list[int], seeds: list[int], temperature: float) -> torch.Tensor:
    """Gumbel-max sampling in fp32 (fp16 Gumbel noise gives NaN). logits [M,V], rows grouped by example."""
    logits = logits.float() / temperature
    noise = torch.cat([
        torch.rand(n, logits.shape[1], generator=_generator(s + 1, logits.device), device=logits.device)
        for n, s in zip(counts, seeds, strict=True)
    ])
    gumbel = -torch.log((-torch.log(noise.clamp_min(1e-20))).clamp_min(1e-20))
    return (logits + gumbel).argmax(-1)


class ElectraPretrainer(nn.Module):
    """Generator + discriminator sharing the embedding layer; the generator head is tied to word embeddings."""

    def __init__(self, config: ConvBertConfig, objective: ElectraObjective | None = None):
        super().__init__()
        self.objective = objective or ElectraObjective()
        self.config = config
        self.generator_config = config.generator_config(self.objective.generator_size)
        self.discriminator = ConvBertModel(config)
        self.generator = ConvBertModel(self.generator_config, embeddings=self.discriminator.embeddings)
        self.generator_head = GeneratorHead(self.generator_config, self.discriminator.embeddings.word_embeddings)
        self.discriminator_head = DiscriminatorHead(config)

    def forward(
        self,
        input_ids: torch.Tensor,  # [B,T] original tokens
        masked_ids: torch.Tensor,  # [B,T] generator input
        masked: torch.Tensor,  # [B,T] bool
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        seeds: list[int],
        norms: torch.Tensor,  # [2]: global masked-token and real-token counts of the whole step
        loss_scale: float = 1.0,  # world size under DDP, whose gradient all-reduce averages over ranks
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        obj = self.objective
        gen_hidden = self.generator(masked_ids, attention_mask, token_type_ids)  # [B,T,dg]
        logits = self.generator_head(gen_hidden[masked])  # [M,V]: vocab logits at masked positions only
        targets = input_ids[masked]  # [M]
        mlm_sum = F.cross_entropy(logits.float(), targets, reduction="sum")

        with torch.no_grad():
            sampled = gumbel_sample(logits.detach(), masked.sum(1).tolist(), seeds, obj.temperature)
            corrupted = input_ids.masked_scatter(masked, sampled)
            replaced = corrupted != input_ids  # masked AND the sample differs from the original
            mlm_correct = (logits.argmax(-1) == targets).sum()
        del logits  # [M,V]: backward needs only cross-entropy's saved log-probs, free it before the discriminator

        disc_hidden = self.discriminator(corrupted, attention_mask, token_type_ids)  # [B,T,d]
        real = attention_mask.bool()
        disc_logits = self.discriminator_head(disc_hidden)[real].float()  # [R]
        labels = replaced[real].float()
        rtd_sum = F.binary_cross_entropy_with_logits(disc_logits, labels, reduction="sum")
        loss = (obj.mlm_weight * mlm_sum / norms[0] + obj.rtd_weight * rtd_sum / norms[1]) * loss_scale

        with torch.no_grad():
            predicted = disc_logits > 0
            stats = {
                "mlm_loss_sum": mlm_sum.detach(),
                "rtd_loss_sum": rtd_sum.detach(),
                "mlm_correct": mlm_correct,
                "masked": masked.sum(),
                "tokens": real.sum(),
                "disc_correct": (predicted == labels.bool()).sum(),
                "replaced": labels.sum(),
                "predicted_replaced": predicted.sum(),
                "true_positive": (predicted & labels.bool()).sum(),
            }
        return loss, {k: v.float() for k, v in stats.items()}


STAT_KEYS = ("mlm_loss_sum", "rtd_loss_sum", "mlm_correct", "masked", "tokens", "disc_correct", "replaced",
             "predicted_replaced", "true_positive")


def summarize(stats: dict[str, float]) -> dict[str, float]:
    """Turn summed counts (over micro-batches and ranks) into the logged metrics."""
    masked, tokens = max(stats["masked"], 1.0), max(stats["tokens"], 1.0)
    return {
        "mlm_loss": stats["mlm_loss_sum"] / masked,
        "rtd_loss": stats["rtd_loss_sum"] / tokens,
        "mlm_accuracy": stats["mlm_correct"] / masked,
        "disc_accuracy": stats["disc_correct"] / tokens,
        "disc_precision": stats["true_positive"] / max(stats["predicted_replaced"], 1.0),
        "disc_recall": stats["true_positive"] / max(stats["replaced"], 1.0),
        "replaced_fraction": stats["replaced"] / tokens,
    }


def encoder_flops_per_token(config: ConvBertConfig, seq_len: int) -> float:
    """Forward FLOPs per token of one encoder: 2 per weight of every matmul plus attention's score/value
    products (2·2·T·N·d_h) and the lightweight conv (2·k·N·d_h). Embedding lookups are free."""
    d, L = config.hidden_size, config.num_hidden_layers
    n, dh, k = config.num_sa_heads, config.attention_head_size, config.conv_kernel_size
    proj = 2 * config.embedding_size * d if config.embedding_size != d else 0
    if config.attention == "self":
        attn_weights = 4 * d * d
        attn_ops = 4 * seq_len * d
    else:
        a = n * dh
        # q, k, v, conv values, pointwise span key, kernel generation, output
        attn_weights = 4 * d * a + d * k + a * n * k + 2 * a * d
        attn_ops = 4 * seq_len * a + 2 * k * a
    ffn_weights = 2 * d * config.intermediate_size // config.num_groups
    return proj + L * (2 * (attn_weights + ffn_weights) + attn_ops)


def train_flops(config: ConvBertConfig, gen_config: ConvBertConfig, seq_len: int, tokens: float,
                masked: float) -> float:
    """Training FLOPs (3x forward) of ELECTRA steps that processed `tokens` tokens, `masked` of them masked."""
    e = config.embedding_size
    per_token = (encoder_flops_per_token(config, seq_len) + encoder_flops_per_token(gen_config, seq_len)
                 + 2 * (config.hidden_size**2 + config.hidden_size))  # discriminator head
    per_masked = 2 * (gen_config.hidden_size * e + e * config.vocab_size)  # generator head
    return 3.0 * (per_token * tokens + per_masked * masked)
