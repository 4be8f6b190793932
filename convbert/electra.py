"""ELECTRA-style pretraining objective (docs/design.md §3): masking, generator sampling, replaced-token detection.

Randomness is keyed per example, by (seed, step, position of the example in the global batch), never by
rank or micro-batch. Losses are sums divided by global token counts. Together these make a step identical
whether the global batch runs in one process or is split over ranks and accumulation micro-batches.
"""

from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass
from typing import Any, NamedTuple

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
    generator_size: float | None = None  # generator width / discriminator width; None: the default of docs/design.md §2

    def __post_init__(self) -> None:
        for name in ("mask_prob", "mask_token_prob"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ValueError(f"objective.{name} must be in (0, 1], got {getattr(self, name)}")
        if self.temperature <= 0:
            raise ValueError(f"objective.temperature must be positive, got {self.temperature}")
        size = self.generator_size
        if size is not None and (isinstance(size, bool) or not isinstance(size, int | float) or not 0 < size <= 1):
            raise ValueError(f"objective.generator_size must be in (0, 1] or null, got {size!r}")


def example_seeds(seed: int, step: int, first: int, count: int) -> list[int]:
    """One 63-bit seed per example from (run seed, optimizer step, position in the global batch)."""
    out = []
    for pos in range(first, first + count):
        x = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + pos * 0x94D049BB133111EB) & (2**64 - 1)
        x ^= x >> 31
        x = (x * 0xD6E8FEB86659FD93) & (2**64 - 1)
        out.append((x ^ (x >> 32)) & (2**63 - 1))
    return out


# ---- counter-based noise ----------------------------------------------------------------------------
# Every random number of the objective is a hash of (example seed, stream, counter): computed by plain tensor
# ops on any device, vectorised over the batch, traceable by torch.compile, and the same whichever process or
# micro-batch holds the example. Arithmetic stays in int64 on values below 2^32 times constants below 2^27, so
# no product overflows on any backend.

_MASK32 = 0xFFFFFFFF
_MUL = 0x45D9F3B  # multiply-xorshift hash constant (good avalanche on 32-bit inputs)
_ORDER, _SHOW, _SAMPLE, _SLOT = 0x2545F491, 0x9E3779B9, 0x7FEB352D, 0x68E31DA4  # stream salts
_HIGH, _LOW = 0x1B873593, 0xCC9E2D51  # the two halves of a 53-bit uniform


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A bijective hash of 32-bit values held in int64 (two multiply-xorshift rounds)."""
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    x = ((x >> 16) ^ x) * _MUL & _MASK32
    return (x >> 16) ^ x


def _keys(seeds: torch.Tensor, salt: int) -> torch.Tensor:
    """seeds [...] int64 (63-bit) -> 32-bit stream keys [...]."""
    return _mix32(_mix32((seeds & _MASK32) ^ salt) ^ (seeds >> 32))


def _counters(n: int, salt: int, device: torch.device) -> torch.Tensor:
    """The hashed counters 0..n-1 of a stream [n]: xor-ed with a key and hashed again, one uniform each."""
    return _mix32(torch.arange(n, dtype=torch.long, device=device) ^ salt)


def _unit(h: torch.Tensor) -> torch.Tensor:
    """32-bit hashes -> fp32 uniforms in (0, 1) with 24 bits (2^-25 away from both ends)."""
    return (h >> 8).float().mul_(2.0**-24).add_(2.0**-25)


def _hashes(seeds: torch.Tensor, key_salt: int, counter_salt: int, n: int) -> torch.Tensor:
    """seeds [B] -> 32-bit hashes [B, n]: counter i of example b keyed by (seed_b, the two salts, i)."""
    return _mix32(_keys(seeds, key_salt)[:, None] ^ _counters(n, counter_salt, seeds.device))


def _uniform(seeds: torch.Tensor, salt: int, n: int) -> torch.Tensor:
    """seeds [B] -> uniforms [B, n] of stream `salt`."""
    return _unit(_hashes(seeds, salt, salt, n))


def as_seed_tensor(seeds: list[int] | torch.Tensor, device: torch.device | None = None) -> torch.Tensor:
    """example_seeds' list (or a tensor) as an int64 tensor [B]."""
    return torch.as_tensor(seeds, dtype=torch.long, device=device)


# ---- masking ---------------------------------------------------------------------------------------

@functools.cache
def max_predictions(seq_len: int, mask_prob: float) -> int:
    """ELECTRA's max_predictions_per_seq: the most positions a sequence of at most seq_len tokens masks
    (round(mask_prob * n) in fp32, as ELECTRA and mask_tokens compute it; at least 1)."""
    n = torch.round(torch.arange(seq_len + 1) * mask_prob).long()
    return int(n.max().clamp(min=1).clamp(max=max(seq_len, 1)))


class MaskedTokens(NamedTuple):
    """mask_tokens' result. The masked positions are given as a fixed number P = max_predictions(T) of slots
    per sequence (valid ones first), so that no later shape depends on how many tokens were masked."""

    masked_ids: torch.Tensor  # [B, T] generator input
    positions: torch.Tensor  # [B, P] long: distinct positions, the masked ones first, then unmasked fillers
    valid: torch.Tensor  # [B, P] bool: slot holds a masked position

    def dense(self) -> torch.Tensor:
        """Masked positions as bool [B, T]."""
        return torch.zeros_like(self.masked_ids, dtype=torch.bool).scatter_(1, self.positions, self.valid)


def mask_tokens(
    input_ids: torch.Tensor,  # [B,T]
    attention_mask: torch.Tensor,  # [B,T], 1 = real token
    special_ids: list[int],  # never masked ([CLS], [SEP], [PAD], ...)
    mask_token_id: int,
    seeds: list[int] | torch.Tensor,  # one per example
    objective: ElectraObjective,
) -> MaskedTokens:
    """ELECTRA masking (docs/design.md §3). Pure tensor ops on the inputs' device: the training loop runs it on
    the CPU batch before the copy, so the device never waits for it."""
    B, T = input_ids.shape
    seeds = as_seed_tensor(seeds, input_ids.device)
    real = attention_mask.bool()
    candidate = real & ~torch.isin(input_ids, torch.tensor(special_ids, device=input_ids.device))
    # ELECTRA: round(p * real tokens) in fp32 (round half to even), at least 1, at most the candidates
    n_mask = torch.round(real.sum(1) * objective.mask_prob).long().clamp(min=1)
    n_mask = torch.minimum(n_mask, candidate.sum(1))
    P = max_predictions(T, objective.mask_prob)
    order = _uniform(seeds, _ORDER, T).masked_fill(~candidate, 2.0)  # non-candidates sort last
    positions = order.argsort(dim=1, stable=True)[:, :P]  # [B, P] distinct
    valid = torch.arange(P, device=input_ids.device) < n_mask[:, None]
    show_mask = valid & (_uniform(seeds, _SHOW, P) < objective.mask_token_prob)
    shown = torch.where(show_mask, mask_token_id, input_ids.gather(1, positions))
    return MaskedTokens(input_ids.scatter(1, positions, shown), positions, valid)


def prepare_batch(batch: dict[str, torch.Tensor], special_ids: list[int], mask_token_id: int,
                  seeds: list[int] | torch.Tensor, objective: ElectraObjective) -> dict[str, Any]:
    """A data batch (input_ids, attention_mask, token_type_ids) plus what train_step needs: masked_ids,
    mask_positions, mask_valid, seeds (int64 tensor) and has_padding (a Python bool, read here on the host:
    False lets the encoders skip the attention mask). Call it on the CPU batch, then move the tensors."""
    m = mask_tokens(batch["input_ids"], batch["attention_mask"], special_ids, mask_token_id, seeds, objective)
    has_padding = batch["attention_mask"].device.type != "cpu" or not bool(batch["attention_mask"].all())
    return {**batch, "masked_ids": m.masked_ids, "mask_positions": m.positions, "mask_valid": m.valid,
            "seeds": as_seed_tensor(seeds), "has_padding": has_padding}


def to_device(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    """prepare_batch's result on `device` (tensors only; pinned CPU tensors copy asynchronously)."""
    return {k: v.to(device, non_blocking=True) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


# ---- sampling --------------------------------------------------------------------------------------
# ELECTRA samples with Gumbel-max, which draws one random number per vocabulary entry. Inverse-CDF sampling
# draws from the same softmax distribution with one uniform per masked position: the generator head already
# returns the probabilities, so a sample costs one cumulative sum instead of V hashes and logs per row.

def sample_chunk(device: torch.device) -> int:
    """CDF elements per chunk: eager on CPU 2 MB of fp64 that stay in cache; on accelerators and in compiled
    graphs (a kernel launch or graph node per op) 128 MB, a handful of chunks per step."""
    return 1 << 18 if device.type == "cpu" and not torch.compiler.is_compiling() else 1 << 24


def sample_uniforms(seeds: torch.Tensor, slots: int) -> torch.Tensor:
    """One fp64 uniform in [0, 1) with 53 random bits per (example, slot): [B, slots], slot p of example b
    keyed by (seed_b, p). 53 bits (not the 24 of an fp32 uniform) keep a token's chance exact to ~1e-16."""
    keys = _hashes(seeds, _SAMPLE, _SLOT, slots)  # [B, slots]
    high, low = _mix32(keys ^ _HIGH), _mix32(keys ^ _LOW)  # two independent 32-bit hashes
    return ((high << 21) | (low >> 11)).double() * 2.0**-53


def sample_tokens(probs: torch.Tensor, uniforms: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Inverse-CDF sampling: the first index whose cumulative probability exceeds u times the row's total.
    probs [..., V] (softmax at temperature 1), uniforms [...] (sample_uniforms) -> token ids [...] long;
    temperature t samples in proportion to probs^(1/t), i.e. softmax(logits / t). The CDF is summed in fp64,
    so rounding moves no token's chance by more than ~1e-12; a zero-probability token is never drawn.
    Rows go in chunks of sample_chunk() elements, which bounds the fp64 CDF temporary."""
    V = probs.shape[-1]
    p, u = probs.reshape(-1, V), uniforms.reshape(-1, 1).double()

    def sample(p: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        if temperature != 1.0:
            p = p.double().pow(1.0 / temperature)
        cdf = p.cumsum(-1, dtype=torch.float64)  # [rows, V]
        # u < 1 gives u * total < total in fp64 rounding: the index never passes the last token with mass. A
        # NaN row (a diverged generator) would give V: clamped, so that the step reaches the trainer's
        # non-finite check instead of failing on an out-of-range token id
        return torch.searchsorted(cdf, u * cdf[:, -1:], right=True).squeeze(-1).clamp_(max=V - 1)

    rows = max(1, sample_chunk(probs.device) // V)
    if p.shape[0] <= rows:
        return sample(p, u).view(probs.shape[:-1])
    # compiled too: the fp64 CDF of a whole GPU batch would be a GB-sized temporary
    out = torch.cat([sample(p[i:i + rows], u[i:i + rows]) for i in range(0, p.shape[0], rows)])
    return out.view(probs.shape[:-1])


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
        positions: torch.Tensor,  # [B,P] masked positions (mask_tokens)
        valid: torch.Tensor,  # [B,P] bool
        attention_mask: torch.Tensor | None,  # [B,T]; None: no padding
        token_type_ids: torch.Tensor,
        seeds: torch.Tensor,  # [B] int64
        norms: torch.Tensor,  # [2]: global masked-token and real-token counts of the whole step
        loss_scale: float = 1.0,  # world size under DDP, whose gradient all-reduce averages over ranks
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted MLM loss, corrupted ids [B,T] sampled from the generator, stats). Fixed shapes and no
        reads of device values: the phase compiles as one graph and never waits for the device."""
        obj = self.objective
        B, P = positions.shape
        gen_hidden = self.generator(masked_ids, attention_mask, token_type_ids)  # [B,T,dg]
        targets = input_ids.gather(1, positions)  # [B,P]
        hidden = gen_hidden.gather(1, positions[:, :, None].expand(B, P, gen_hidden.shape[-1]))  # [B,P,dg]
        weights = valid.to(torch.float32)
        # vocabulary softmax at the P slots only, fp32, detached (the head keeps it for its backward)
        mlm_sum, probs = self.generator_head.loss(hidden.flatten(0, 1), targets.flatten(), weights.flatten())
        with torch.no_grad():
            probs = probs.view(B, P, -1)
            mlm_correct = ((probs.argmax(-1) == targets) & valid).sum()
            sampled = sample_tokens(probs, sample_uniforms(seeds, P), obj.temperature)  # [B,P]
            # unmasked filler slots write their own token back; positions are distinct, so the scatter is exact
            corrupted = input_ids.scatter(1, positions, torch.where(valid, sampled, targets))
        loss = obj.mlm_weight * mlm_sum / norms[0] * loss_scale
        stats = {"mlm_loss_sum": mlm_sum.detach(), "mlm_correct": mlm_correct, "masked": valid.sum()}
        return loss, corrupted, {k: v.float() for k, v in stats.items()}

    def discriminator_phase(
        self,
        input_ids: torch.Tensor,  # [B,T] original tokens
        corrupted: torch.Tensor,  # [B,T] from generator_phase
        attention_mask: torch.Tensor,  # [B,T], weights of the loss
        token_type_ids: torch.Tensor,
        norms: torch.Tensor,
        loss_scale: float = 1.0,
        has_padding: bool = True,  # False: the encoder runs without attention mask
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """-> (weighted replaced-token-detection loss, stats)."""
        disc_hidden = self.discriminator(corrupted, attention_mask if has_padding else None, token_type_ids)
        disc_logits = self.discriminator_head(disc_hidden).float()  # [B,T]
        rtd_sum, stats = rtd_sums(disc_logits, input_ids, corrupted, attention_mask.bool())
        loss = self.objective.rtd_weight * rtd_sum / norms[1] * loss_scale
        return loss, {k: v.float() for k, v in stats.items()}


def rtd_sums(disc_logits: torch.Tensor, input_ids: torch.Tensor, corrupted: torch.Tensor, real: torch.Tensor
             ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Replaced-token detection over the real tokens (fixed shapes, no indexing): disc_logits [B,T] fp32,
    real [B,T] bool -> (summed BCE, differentiable; the discriminator's summed counts of STAT_KEYS)."""
    replaced = corrupted != input_ids  # masked AND the sample differs (never at padding)
    rtd_sum = F.binary_cross_entropy_with_logits(disc_logits, replaced.float(), weight=real.float(), reduction="sum")
    with torch.no_grad():
        predicted = (disc_logits > 0) & real
        stats = {
            "rtd_loss_sum": rtd_sum.detach(),
            "tokens": real.sum(),
            "disc_correct": ((predicted == replaced) & real).sum(),
            "replaced": replaced.sum(),
            "predicted_replaced": predicted.sum(),
            "true_positive": (predicted & replaced).sum(),
        }
    return rtd_sum, stats


def train_step(net: nn.Module, batch: dict, norms: torch.Tensor, precision: Precision, loss_scale: float = 1.0,
               sync: bool = True) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Forward and backward of one micro-batch through an ElectraPretrainer (or its DDP wrapper), generator
    phase first. batch: prepare_batch's keys, on the model's device. Under DDP the gradients are all-reduced
    after the discriminator's backward when `sync` (needs find_unused_parameters=True: the generator's own
    parameters are not used in that phase). Nothing here reads a device value, so the host runs ahead.
    Returns (the micro-batch's total loss, detached; summed stats as 0-dim fp32 tensors, STAT_KEYS)."""
    ids, am, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    padded = batch.get("has_padding", True)
    no_sync = net.no_sync if isinstance(net, DistributedDataParallel) else contextlib.nullcontext
    with no_sync():
        with precision.autocast():
            gen_loss, corrupted, stats = net("generator_phase", ids, batch["masked_ids"], batch["mask_positions"],
                                             batch["mask_valid"], am if padded else None, tt, batch["seeds"],
                                             norms, loss_scale)
        precision.backward(gen_loss)
    with contextlib.nullcontext() if sync else no_sync():
        with precision.autocast():
            disc_loss, disc_stats = net("discriminator_phase", ids, corrupted, am, tt, norms, loss_scale, padded)
        precision.backward(disc_loss)
    return gen_loss.detach() + disc_loss.detach(), {**stats, **disc_stats}


STAT_KEYS = ("mlm_loss_sum", "rtd_loss_sum", "mlm_correct", "masked", "tokens", "disc_correct", "replaced",
             "predicted_replaced", "true_positive")


def stat_vector(stats: dict[str, torch.Tensor]) -> torch.Tensor:
    """Summed counts as one fp64 vector in STAT_KEYS order, on their device: what log windows, held-out batches
    and ranks add up."""
    return torch.stack([stats[k].double() for k in STAT_KEYS])


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
