"""ELECTRA-style pretraining objective (SPEC §3): masking, generator sampling, replaced-token detection.

Randomness is keyed per example, by (seed, step, position of the example in the global batch), never by
rank or micro-batch. Losses are sums divided by global token counts. Together these make a step identical
whether the global batch runs in one process or is split over ranks and accumulation micro-batches.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from convbert.config import ConvBertConfig
from convbert.model import ConvBertModel, DiscriminatorHead, GeneratorHead
from convbert.train.precision import Precision


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
    """Gumbel-max sampling in fp32 (fp16 Gumbel noise gives NaN): argmax(logits / t - log(-log U)), with U drawn
    per example from its seed. logits [M,V], rows grouped by example. Works one example at a time, in place,
    so that the noise stays in cache instead of several [M,V] temporaries."""
    samples, start = [], 0
    for n, s in zip(counts, seeds, strict=True):
        z = logits[start:start + n].float()
        z = z / temperature if temperature != 1.0 else z
        u = torch.rand(n, logits.shape[1], generator=_generator(s + 1, logits.device), device=logits.device)
        neg_gumbel = u.clamp_min_(1e-20).log_().neg_().clamp_min_(1e-20).log_()  # log(-log U) = -Gumbel noise
        samples.append((z - neg_gumbel).argmax(-1))
        start += n
    if start != logits.shape[0]:
        raise ValueError(f"counts sum to {start}, logits have {logits.shape[0]} rows")
    return torch.cat(samples) if samples else logits.new_zeros(0, dtype=torch.long)


class ElectraPretrainer(nn.Module):
    """Generator + discriminator sharing the embedding layer; the generator head is tied to word embeddings.

    A step runs in two phases, each with its own backward (see `train_step`): the generator's loss does not
    depend on the discriminator (sampling is not differentiated), so its activations are freed before the
    discriminator runs. The gradients are the same as one backward of the summed loss; the peak memory is
    the larger phase's, not both together. `forward(phase, ...)` dispatches so that DDP can wrap both.
    """

    PHASES = ("generator_phase", "discriminator_phase")

    def __init__(self, config: ConvBertConfig, objective: ElectraObjective | None = None):
        super().__init__()
        self.objective = objective or ElectraObjective()
        self.config = config
        self.generator_config = config.generator_config(self.objective.generator_size)
        self.discriminator = ConvBertModel(config)
        self.generator = ConvBertModel(self.generator_config, embeddings=self.discriminator.embeddings)
        self.generator_head = GeneratorHead(self.generator_config, self.discriminator.embeddings.word_embeddings)
        self.discriminator_head = DiscriminatorHead(config)

    def forward(self, phase: str, *args, **kwargs):
        if phase not in self.PHASES:
            raise ValueError(f"phase must be one of {self.PHASES}, got {phase!r}")
        return getattr(self, phase)(*args, **kwargs)

    def generator_phase(
        self,
        input_ids: torch.Tensor,  # [B,T] original tokens
        masked_ids: torch.Tensor,  # [B,T] generator input
        masked: torch.Tensor,  # [B,T] bool
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        seeds: list[int],
        norms: torch.Tensor,  # [2]: global masked-token and real-token counts of the whole step
        loss_scale: float = 1.0,  # world size under DDP, whose gradient all-reduce averages over ranks
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted MLM loss, corrupted ids [B,T] sampled from the generator, stats)."""
        obj = self.objective
        gen_hidden = self.generator(masked_ids, attention_mask, token_type_ids)  # [B,T,dg]
        targets = input_ids[masked]  # [M]
        # vocab logits at masked positions only, fp32, detached: backward rebuilds what it needs
        mlm_sum, logits = self.generator_head.loss(gen_hidden[masked], targets)  # [], [M,V]
        with torch.no_grad():
            mlm_correct = (logits.argmax(-1) == targets).sum()
            sampled = gumbel_sample(logits, masked.sum(1).tolist(), seeds, obj.temperature)
            corrupted = input_ids.masked_scatter(masked, sampled)
        loss = obj.mlm_weight * mlm_sum / norms[0] * loss_scale
        stats = {"mlm_loss_sum": mlm_sum.detach(), "mlm_correct": mlm_correct, "masked": masked.sum()}
        return loss, corrupted, {k: v.float() for k, v in stats.items()}

    def discriminator_phase(
        self,
        input_ids: torch.Tensor,  # [B,T] original tokens
        corrupted: torch.Tensor,  # [B,T] from generator_phase
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor,
        norms: torch.Tensor,
        loss_scale: float = 1.0,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted replaced-token-detection loss, stats)."""
        disc_hidden = self.discriminator(corrupted, attention_mask, token_type_ids)  # [B,T,d]
        real = attention_mask.bool()
        disc_logits = self.discriminator_head(disc_hidden)[real].float()  # [R]
        labels = (corrupted != input_ids)[real].float()  # replaced: masked AND the sample differs
        rtd_sum = F.binary_cross_entropy_with_logits(disc_logits, labels, reduction="sum")
        loss = self.objective.rtd_weight * rtd_sum / norms[1] * loss_scale
        with torch.no_grad():
            predicted, replaced = disc_logits > 0, labels.bool()
            stats = {
                "rtd_loss_sum": rtd_sum.detach(),
                "tokens": real.sum(),
                "disc_correct": (predicted == replaced).sum(),
                "replaced": labels.sum(),
                "predicted_replaced": predicted.sum(),
                "true_positive": (predicted & replaced).sum(),
            }
        return loss, {k: v.float() for k, v in stats.items()}


def train_step(net: nn.Module, batch: dict, norms: torch.Tensor, precision: Precision, loss_scale: float = 1.0,
               sync: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of one micro-batch through an ElectraPretrainer (or its DDP wrapper), generator
    phase first. batch: input_ids, masked_ids, masked, attention_mask, token_type_ids, seeds. Under DDP the
    gradients are all-reduced after the discriminator's backward when `sync` (needs
    find_unused_parameters=True: the generator's own parameters are not used in that phase).
    Returns (the micro-batch's total loss, detached; summed stats)."""
    ids, am, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    no_sync = net.no_sync if isinstance(net, DistributedDataParallel) else contextlib.nullcontext
    with no_sync():
        with precision.autocast():
            gen_loss, corrupted, stats = net("generator_phase", ids, batch["masked_ids"], batch["masked"], am, tt,
                                             batch["seeds"], norms, loss_scale)
        precision.backward(gen_loss)
    with contextlib.nullcontext() if sync else no_sync():
        with precision.autocast():
            disc_loss, disc_stats = net("discriminator_phase", ids, corrupted, am, tt, norms, loss_scale)
        precision.backward(disc_loss)
    return gen_loss.detach() + disc_loss.detach(), {**stats, **disc_stats}


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
