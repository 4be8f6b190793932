"""PretrainDataset and ResumableBatches over a tiny pydocs data dir."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from convbert.data import DataError, PretrainDataset, ResumableBatches, prepare, read_manifest

T = 32


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> PretrainDataset:
    d = prepare(
        {"name": "pydocs", "source": "pydocs", "max_bytes": 150_000},
        {"kind": "wordpiece", "vocab_size": 600},
        max_seq_length=T,
        num_workers=1,
        data_dir=tmp_path_factory.mktemp("data"),
        progress=False,
    )
    return PretrainDataset(d)


def test_items_are_padded_examples(data: PretrainDataset) -> None:
    m = read_manifest(data.dir)
    assert len(data) == m["counts"]["examples"] > 200
    assert data.vocab_size == 600 and data.max_seq_length == T and data.manifest == m
    shard = np.fromfile(data.dir / "shard-00000.bin", dtype=np.uint16)
    offset = 0
    for i in range(len(data)):
        item = data[i]
        assert set(item) == {"input_ids", "token_type_ids", "attention_mask"}
        assert all(v.dtype == torch.long and v.shape == (T,) for v in item.values())
        ids, types, mask = item["input_ids"], item["token_type_ids"], item["attention_mask"]
        n = int(mask.sum())
        assert mask[:n].all() and not mask[n:].any()  # real tokens first, then padding
        assert ids[:n].tolist() == shard[offset : offset + n].tolist() and not ids[n:].any()
        offset += n
        assert ids[0] == 2 and ids[n - 1] == 3  # [CLS] ... [SEP]
        b = int(n - types.sum())
        assert not types[:b].any() and types[b:n].all() and not types[n:].any()
        assert ids[b - 1] == 3  # segment A ends with [SEP]; B (type 1) runs to the final [SEP]
    assert offset == len(shard)
    assert data[-1]["input_ids"].equal(data[len(data) - 1]["input_ids"])
    with pytest.raises(IndexError):
        data[len(data)]


def take(it: ResumableBatches, n: int) -> list[dict[str, torch.Tensor]]:
    return list(itertools.islice(it, n))


def rows(batch: dict[str, torch.Tensor]) -> list[tuple[int, ...]]:
    return [tuple(r) for r in batch["input_ids"].tolist()]


def test_two_ranks_equal_one_rank_with_double_batch(data: PretrainDataset) -> None:
    one = ResumableBatches(data, batch_size=16, seed=3)
    ranks = [ResumableBatches(data, batch_size=8, seed=3, rank=r, world_size=2) for r in range(2)]
    assert one.batches_per_epoch == ranks[0].batches_per_epoch == len(data) // 16
    steps = one.batches_per_epoch + 3  # crosses into the second epoch
    for big, *parts in zip(take(one, steps), *(take(r, steps) for r in ranks), strict=True):
        for key in big:
            assert torch.equal(big[key], torch.cat([p[key] for p in parts]))


def test_epoch_covers_each_example_once_without_rank_overlap(data: PretrainDataset) -> None:
    ranks = [ResumableBatches(data, batch_size=4, seed=0, rank=r, world_size=3) for r in range(3)]
    per_epoch = ranks[0].batches_per_epoch
    seen = [[i for _ in range(per_epoch) for i in r.next_ids().tolist()] for r in ranks]
    flat = [i for s in seen for i in s]
    assert len(flat) == len(set(flat)) == per_epoch * 12  # disjoint across ranks, nothing repeated
    assert len(data) - len(flat) < 12  # only the incomplete last global batch is dropped
    assert all(r.state_dict() == {"epoch": 1, "index": 0} for r in ranks)
    # global batch s is P[12s : 12s + 12]; rank r takes its slice [4r : 4r + 4]
    perm = ranks[0].permutation(0)
    assert seen[1][:4] == perm[4:8].tolist() and seen[2][4:8] == perm[20:24].tolist()
    fresh = ResumableBatches(data, batch_size=4, seed=0, rank=1, world_size=3)
    assert next(fresh)["input_ids"].equal(data.gather(perm[4:8])["input_ids"])


def test_order_is_seeded_and_changes_each_epoch(data: PretrainDataset) -> None:
    a, b, c = (ResumableBatches(data, batch_size=8, seed=s) for s in (1, 1, 2))
    assert all(rows(x) == rows(y) for x, y in zip(take(a, 5), take(b, 5), strict=True))
    assert rows(take(c, 1)[0]) != rows(ResumableBatches(data, batch_size=8, seed=1).__next__())
    assert not np.array_equal(a.permutation(0), a.permutation(1))
    assert np.array_equal(np.sort(a.permutation(1)), np.arange(len(data)))


def test_resume_continues_with_the_exact_next_batch(data: PretrainDataset) -> None:
    ref = ResumableBatches(data, batch_size=8, seed=5, rank=1, world_size=2)
    per_epoch = ref.batches_per_epoch
    expected = take(ref, 2 * per_epoch + 2)
    for stop in (0, 3, per_epoch - 1, per_epoch, per_epoch + 1):
        it = ResumableBatches(data, batch_size=8, seed=5, rank=1, world_size=2)
        take(it, stop)
        state = it.state_dict()
        assert state == {"epoch": stop // per_epoch, "index": stop % per_epoch}
        resumed = ResumableBatches(data, batch_size=8, seed=5, rank=1, world_size=2)
        resumed.load_state_dict(state)
        for got, want in zip(take(resumed, 3), expected[stop : stop + 3], strict=True):
            assert all(torch.equal(got[k], want[k]) for k in want)
    it = ResumableBatches(data, batch_size=8, seed=5)
    it.load_state_dict({"epoch": 0, "index": it.batches_per_epoch})  # end of epoch 0 == start of 1
    assert it.state_dict() == {"epoch": 1, "index": 0}
    with pytest.raises(ValueError, match="bad position"):
        it.load_state_dict({"epoch": 0, "index": it.batches_per_epoch + 1})


def test_batch_larger_than_dataset_and_bad_rank(data: PretrainDataset) -> None:
    with pytest.raises(DataError, match="fewer than one global batch"):
        ResumableBatches(data, batch_size=len(data), seed=0, world_size=2)
    with pytest.raises(ValueError, match="rank=2"):
        ResumableBatches(data, batch_size=4, seed=0, rank=2, world_size=2)


def test_unfinished_dir_is_rejected(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a finished data dir"):
        PretrainDataset(tmp_path)


def test_prefetcher_hands_out_the_same_batches_and_resumes_where_the_consumer_is(data: PretrainDataset) -> None:
    from convbert.data.dataset import Prefetcher

    plain = ResumableBatches(data, 4, seed=3)
    feed = Prefetcher(ResumableBatches(data, 4, seed=3), depth=3)
    try:
        for _ in range(5):
            assert rows(next(feed)) == rows(next(plain))
        assert feed.state_dict() == plain.state_dict()  # not the builder's position, which is ahead
    finally:
        feed.close()
