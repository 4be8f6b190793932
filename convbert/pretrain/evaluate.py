"""Held-out evaluation of the generator (MLM) and discriminator (RTD) with fixed masking.

The first `examples` held-out examples are masked and sampled with seeds that depend only on the example's
position (never on the run's seed or step), so numbers compare across steps and runs. Nothing here draws
from torch's global RNG (dropout is off in eval mode and every random draw has its own seeded generator),
so a run evaluates without changing its training stream. Under DDP each rank takes a strided share and
the counts are summed; AUC comes from a 1000-bin histogram of the discriminator's probabilities per class.
"""

from __future__ import annotations

import torch

from convbert.data import PretrainDataset
from convbert.electra import (
    STAT_KEYS,
    ElectraPretrainer,
    as_seed_tensor,
    example_seeds,
    mask_tokens,
    rtd_sums,
    stat_vector,
    summarize,
)
from convbert.train.dist import DistInfo, all_reduce_sum
from convbert.train.precision import Precision

EVAL_SEED = 20_240_601  # fixed: the same masks for every run and step
AUC_BINS = 1000
EVAL_KEYS = ("mlm_loss", "mlm_accuracy", "rtd_loss", "disc_accuracy", "disc_precision", "disc_recall", "disc_auc")


def histogram_auc(pos: torch.Tensor, neg: torch.Tensor) -> float:
    """ROC AUC from per-bin counts of positives and negatives (bins in increasing score order; ties in a
    bin count one half)."""
    pos, neg = pos.double(), neg.double()
    if pos.sum() == 0 or neg.sum() == 0:
        return float("nan")
    neg_below = torch.cumsum(neg, 0) - neg
    return float(((neg_below + 0.5 * neg) * pos).sum() / (pos.sum() * neg.sum()))


class HeldOutEval:
    def __init__(self, data_path, examples: int, batch_size: int, special_ids: list[int], mask_id: int,
                 info: DistInfo) -> None:
        self.dataset = PretrainDataset(data_path, split="heldout")
        n = min(examples, len(self.dataset))
        self.ids = torch.arange(n)[info.rank::info.world_size]  # this rank's share
        self.count, self.batch_size = n, batch_size
        self.special_ids, self.mask_id, self.info = special_ids, mask_id, info
        self.seeds = example_seeds(EVAL_SEED, 0, 0, n)

    def _generate(self, model: ElectraPretrainer, b: dict, seeds: list[int]) -> tuple[torch.Tensor, dict]:
        """Fixed masking, then the generator's samples: (corrupted ids, generator stats)."""
        m = mask_tokens(b["input_ids"], b["attention_mask"], self.special_ids, self.mask_id, seeds, model.objective)
        dev = m.masked_ids.device
        _, corrupted, gen = model.generator_phase(b["input_ids"], m.masked_ids, m.positions, m.valid,
                                                  b["attention_mask"], b["token_type_ids"], as_seed_tensor(seeds, dev),
                                                  torch.ones(2, device=dev))
        return corrupted, gen

    @staticmethod
    def _disc_stats(gen: dict, logits: torch.Tensor, corrupted: torch.Tensor, b: dict) -> torch.Tensor:
        """The summed counts of STAT_KEYS for one batch."""
        _, disc = rtd_sums(logits, b["input_ids"], corrupted, b["attention_mask"].bool())
        return stat_vector({**gen, **disc})

    @torch.no_grad()
    def __call__(self, model: ElectraPretrainer, precision: Precision) -> dict[str, float]:
        was_training = model.training
        model.eval()
        dev = self.info.device
        stats = torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=dev)
        hist = torch.zeros(2, AUC_BINS, dtype=torch.float64, device=dev)
        for start in range(0, len(self.ids), self.batch_size):
            ids = self.ids[start:start + self.batch_size]
            b = {k: v.to(dev) for k, v in self.dataset.gather(ids.numpy()).items()}
            with precision.autocast():
                corrupted, gen = self._generate(model, b, [self.seeds[i] for i in ids.tolist()])
                hidden = model.discriminator(corrupted, b["attention_mask"], b["token_type_ids"])
                logits = model.discriminator_head(hidden).float()
            stats += self._disc_stats(gen, logits, corrupted, b)
            real = b["attention_mask"].bool()
            replaced = (corrupted != b["input_ids"])[real]
            bins = (torch.sigmoid(logits[real]) * AUC_BINS).long().clamp_(0, AUC_BINS - 1)
            hist[1].index_add_(0, bins[replaced], torch.ones_like(bins[replaced], dtype=torch.float64))
            hist[0].index_add_(0, bins[~replaced], torch.ones_like(bins[~replaced], dtype=torch.float64))
        stats, hist = all_reduce_sum(stats), all_reduce_sum(hist)
        model.train(was_training)
        out = summarize(dict(zip(STAT_KEYS, stats.tolist(), strict=True)))
        out["disc_auc"] = histogram_auc(hist[1], hist[0])
        return {k: out[k] for k in EVAL_KEYS}
