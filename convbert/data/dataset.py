"""Torch views of a data dir: a map-style Dataset, and resumable per-rank batches for pretraining."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .config import DataError
from .shards import check_files

SPLITS = ("train", "heldout")


class PretrainDataset(Dataset):
    """Examples of a finished data dir, memory-mapped; items are zero-padded to max_seq_length.

    split="heldout" reads the documents the prepare stage set aside (manifest.json "heldout"). Token ids
    are bounds-checked as batches are built: a shard overwritten in place names its file and offset
    instead of failing later inside the embedding."""

    def __init__(self, directory: str | Path, split: str = "train") -> None:
        self.dir = Path(directory)
        self.manifest = check_files(self.dir)
        self.vocab_size: int = self.manifest["vocab_size"]
        self.max_seq_length: int = self.manifest["max_seq_length"]
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        part = self.manifest if split == "train" else self.manifest.get("heldout")
        if part is None or part["index"]["rows"] == 0:
            raise DataError(f"{self.dir} has no held-out examples (built with heldout_fraction "
                            f"{(part or {}).get('fraction', 0)}); rebuild it with heldout_fraction > 0")
        dtype = np.dtype(self.manifest["dtype"])
        self.shard_files = [self.dir / s["file"] for s in part["shards"]]
        self.shards = [np.memmap(f, dtype=dtype, mode="r", shape=(s["tokens"],))
                       for f, s in zip(self.shard_files, part["shards"], strict=True)]
        rows = part["index"]["rows"]
        self.index_file = self.dir / part["index"]["file"]
        self.index = np.memmap(self.index_file, dtype=np.int32, mode="r", shape=(rows, 4))
        self._positions = np.arange(self.max_seq_length)

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"example {i} out of range for {len(self)} examples")
        batch = self.gather(np.array([i % len(self)]))
        return {k: v[0] for k, v in batch.items()}

    def gather(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        """Collated examples: input_ids, token_type_ids, attention_mask, each LongTensor [len(ids), T]."""
        rows = self.index[ids]  # [n, 4]: shard, offset, length, b_start
        T = self.max_seq_length
        input_ids = np.zeros((len(ids), T), dtype=np.int64)
        for j, (shard, offset, length, _) in enumerate(rows.tolist()):
            if not (0 <= shard < len(self.shards) and 0 < length <= T and 0 <= offset
                    and offset + length <= len(self.shards[shard])):
                raise DataError(f"{self.index_file}: row {int(ids[j])} (shard {shard}, offset {offset}, length "
                                f"{length}) points outside the shards; the data dir is damaged: delete it to rebuild")
            input_ids[j, :length] = self.shards[shard][offset : offset + length]
        if len(ids) and (input_ids.max() >= self.vocab_size or input_ids.min() < 0):
            self._report_bad_id(input_ids, rows)
        lengths, b_starts = rows[:, 2:3], rows[:, 3:4]
        attention_mask = self._positions < lengths  # [n, T]
        token_type_ids = (self._positions >= b_starts) & attention_mask
        return {
            "input_ids": torch.from_numpy(input_ids),
            "token_type_ids": torch.from_numpy(token_type_ids.astype(np.int64)),
            "attention_mask": torch.from_numpy(attention_mask.astype(np.int64)),
        }


    def _report_bad_id(self, input_ids: np.ndarray, rows: np.ndarray) -> None:
        j, t = np.argwhere((input_ids >= self.vocab_size) | (input_ids < 0))[0]
        shard, offset = int(rows[j, 0]), int(rows[j, 1])
        raise DataError(f"{self.shard_files[shard]}: token id {int(input_ids[j, t])} at token offset {offset + t} "
                        f"(byte {(offset + t) * self.shards[shard].itemsize}) is outside the vocabulary of "
                        f"{self.vocab_size}; the shard is damaged: delete {self.dir} to rebuild it")


class ResumableBatches:
    """Infinite per-rank batches over epochs, in an order that depends only on (seed, epoch).

    Epoch e uses a permutation P of all examples seeded by (seed, e). Global batch s is
    P[s*W*b : (s+1)*W*b] and rank r takes its slice [r*b : (r+1)*b], so W ranks x b examples equal
    one rank x W*b. The last incomplete global batch of an epoch is dropped. state_dict() is the
    position of the next batch; load_state_dict() continues exactly there.
    """

    def __init__(self, dataset: PretrainDataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1):
        if batch_size < 1 or world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"bad batch_size={batch_size} / rank={rank} / world_size={world_size}")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.global_batch = batch_size * world_size
        self.batches_per_epoch = len(dataset) // self.global_batch
        if self.batches_per_epoch == 0:
            raise DataError(
                f"{dataset.dir} has {len(dataset)} examples, fewer than one global batch of "
                f"{self.global_batch} (batch_size {batch_size} x world_size {world_size})"
            )
        self.epoch = self.index = 0
        self._perm_epoch: int | None = None
        self._perm: np.ndarray | None = None

    def permutation(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            rng = np.random.default_rng([self.seed, epoch])
            self._perm, self._perm_epoch = rng.permutation(len(self.dataset)), epoch
        return self._perm

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.dataset.gather(self.next_ids())

    def next_ids(self) -> np.ndarray:
        """Example ids of this rank's next batch [batch_size]; advances the position like next()."""
        start = self.index * self.global_batch + self.rank * self.batch_size
        ids = self.permutation(self.epoch)[start : start + self.batch_size]
        self.index += 1
        if self.index == self.batches_per_epoch:
            self.epoch, self.index = self.epoch + 1, 0
        return ids

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "index": self.index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        epoch, index = int(state["epoch"]), int(state["index"])
        if epoch < 0 or not 0 <= index <= self.batches_per_epoch:
            raise ValueError(f"bad position {state} (batches_per_epoch={self.batches_per_epoch})")
        if index == self.batches_per_epoch:
            epoch, index = epoch + 1, 0
        self.epoch, self.index = epoch, index


class Prefetcher:
    """Batches of a ResumableBatches built `depth` ahead on a background thread (numpy gathers release the
    GIL), in pinned memory when `pin` (so that copies to a GPU are asynchronous).

    state_dict() is the position after the last batch handed out, not after the last one built: a
    checkpoint resumes exactly at the next batch the loop will use."""

    def __init__(self, batches: ResumableBatches, depth: int = 2, pin: bool = False) -> None:
        self.batches, self.pin = batches, pin
        self._state = batches.state_dict()
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, depth))
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, name="batch-prefetch", daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            try:
                batch = next(self.batches)
                if self.pin:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
                item = (batch, self.batches.state_dict(), None)
            except Exception as e:  # handed to the consumer, which raises it with its own traceback
                item = (None, None, e)
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        batch, state, error = self._queue.get()
        if error is not None:
            raise error
        self._state = state
        return batch

    def state_dict(self) -> dict[str, int]:
        return dict(self._state)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
