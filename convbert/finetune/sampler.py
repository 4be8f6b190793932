"""Length-bucketed batches for fine-tuning and evaluation (every task kind: GLUE, SQuAD)."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np


class LengthBucketSampler:
    """Batches of indices whose examples have similar lengths, so dynamic padding wastes little.

    Training (shuffle=True): each epoch shuffles all indices, cuts them into pools of
    batch_size * pool_batches, sorts each pool by length, splits it into batches and shuffles the batch
    order (randomness of plain shuffling, padding of sorted batches). Evaluation (shuffle=False): one
    global sort by length; callers put predictions back in order by index.
    """

    def __init__(
        self,
        lengths: Sequence[int] | np.ndarray,
        batch_size: int,
        shuffle: bool = True,
        seed: int = 0,
        pool_batches: int = 50,
        drop_last: bool = False,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = np.asarray(lengths)
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self.pool = batch_size * max(1, pool_batches)
        self.drop_last = drop_last
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            order = np.argsort(self.lengths, kind="stable")
            batches = [order[i : i + self.batch_size] for i in range(0, n, self.batch_size)]
        else:
            rng = np.random.default_rng([self.seed, self.epoch])
            perm = rng.permutation(n)
            batches = []
            for start in range(0, n, self.pool):
                pool = perm[start : start + self.pool]
                pool = pool[np.argsort(self.lengths[pool], kind="stable")]
                batches += [pool[i : i + self.batch_size] for i in range(0, len(pool), self.batch_size)]
            rng.shuffle(batches)  # shuffles the list of batches
        for b in batches:
            if self.drop_last and len(b) < self.batch_size:
                continue
            yield b.tolist()
