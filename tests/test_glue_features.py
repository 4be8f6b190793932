"""Featurisation, length-bucketed batching with dynamic padding, and leaderboard submission files."""

import numpy as np
import pytest
from glue_fixtures import make_examples, make_tokenizer

from convbert.finetune.sampler import LengthBucketSampler
from convbert.glue import GlueExample, get_task
from convbert.glue.features import collate, featurize, truncate_pair
from convbert.glue.submission import write_submission


def _truncate_loop(la, lb, budget):  # BERT's reference loop
    while la + lb > budget:
        if la > lb:
            la -= 1
        else:
            lb -= 1
    return la, lb


def test_truncate_pair_matches_reference_loop():
    for la in range(0, 20):
        for lb in range(0, 20):
            for budget in range(0, 25):
                assert truncate_pair(la, lb, budget) == _truncate_loop(la, lb, budget), (la, lb, budget)


def test_featurize_pair_and_single():
    tok = make_tokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    ex = [GlueExample(7, "The cat runs .", "a dog", 1)]
    f = featurize(ex, tok, max_length=32)
    want = [cls, *tok.encode("the cat runs .", add_special_tokens=False).ids, sep,
            tok.token_to_id("a"), tok.token_to_id("dog"), sep]
    assert f.input_ids[0].tolist() == want
    assert f.token_type_ids[0].tolist() == [0] * 6 + [1] * 3
    assert f.labels.tolist() == [1] and f.idx.tolist() == [7]
    swapped = featurize(ex, tok, max_length=32, swap=True)
    assert swapped.input_ids[0].tolist() == [cls, want[6], want[7], sep, *want[1:5], sep]
    long = [GlueExample(0, " ".join(["cat"] * 50), " ".join(["dog"] * 10), 0)]
    f = featurize(long, tok, max_length=16)
    ids = f.input_ids[0].tolist()
    assert len(ids) == 16 and ids.count(tok.token_to_id("dog")) == 6  # longest-first: 7 cats, 6 dogs
    single = featurize([GlueExample(0, " ".join(["cat"] * 50), None, None)], tok, max_length=10)
    assert single.input_ids[0].tolist() == [cls] + [tok.token_to_id("cat")] * 8 + [sep]
    assert single.labels is None and single.token_type_ids[0].sum() == 0
    stsb = featurize([GlueExample(0, "a", "b", 3.2)], tok, 16, regression=True)
    assert stsb.labels.dtype == np.float32
    tok.enable_truncation(5)  # the caller's tokenizer settings must not leak into or be changed by featurize
    assert len(featurize(long, tok, 16).input_ids[0]) == 16 and tok.truncation is not None


def test_length_bucket_sampler_and_collate():
    tok = make_tokenizer()
    feats = featurize(make_examples(get_task("rte"), 203, seed=0), tok, max_length=32)
    lengths = feats.lengths
    s = LengthBucketSampler(lengths, batch_size=8, shuffle=True, seed=3, pool_batches=5)
    epoch0 = list(s)
    assert len(epoch0) == len(s) == 26
    assert sorted(i for b in epoch0 for i in b) == list(range(203))
    s.set_epoch(1)
    assert list(s) != epoch0
    s.set_epoch(0)
    assert list(s) == epoch0  # deterministic per (seed, epoch)
    # bucketing pads less than random batches
    padded = sum(len(b) * lengths[b].max() for b in epoch0)
    rng = np.random.default_rng(0)
    perm = rng.permutation(203)
    random_padded = sum(len(b) * lengths[b].max() for b in np.array_split(perm, 26))
    assert padded < random_padded
    ev = list(LengthBucketSampler(lengths, 8, shuffle=False))
    assert [i for b in ev for i in b] == np.argsort(lengths, kind="stable").tolist()
    assert len(list(LengthBucketSampler(lengths, 8, drop_last=True))) == 25

    batch = collate(feats, epoch0[0], pad_id=0, pad_to_multiple=8)
    b, t = batch["input_ids"].shape
    assert b == 8 and t % 8 == 0 and t - 8 < lengths[epoch0[0]].max() <= t
    assert batch["attention_mask"].sum(1).tolist() == lengths[epoch0[0]].tolist()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == 0).all()
    assert batch["labels"].tolist() == feats.labels[epoch0[0]].tolist()
    with pytest.raises(ValueError, match="batch_size"):
        LengthBucketSampler(lengths, 0)


def test_submission_files(tmp_path):
    p = write_submission("mnli", "test_mismatched", [2, 0, 1], np.array([2, 0, 1]), tmp_path)
    assert p.name == "MNLI-mm.tsv"
    assert p.read_text() == "index\tprediction\n0\tentailment\n1\tneutral\n2\tcontradiction\n"
    p = write_submission("stsb", "test", [0, 1], np.array([5.7, -0.2]), tmp_path)
    assert p.name == "STS-B.tsv" and p.read_text().splitlines()[1:] == ["0\t5.000", "1\t0.000"]
    assert write_submission("rte", "test", [0], [1], tmp_path).read_text().endswith("0\tnot_entailment\n")
    assert write_submission("wnli", "test", [0], [1], tmp_path).read_text().endswith("0\t1\n")
    assert write_submission("mnli", "ax", [0], [0], tmp_path).name == "AX.tsv"
    names = {f for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
             for f in get_task(t).submission_files.values()}
    assert names == {"CoLA.tsv", "SST-2.tsv", "MRPC.tsv", "STS-B.tsv", "QQP.tsv", "MNLI-m.tsv", "MNLI-mm.tsv",
                     "QNLI.tsv", "RTE.tsv", "WNLI.tsv", "AX.tsv"}
    with pytest.raises(ValueError, match="outside 0..1"):
        write_submission("sst2", "test", [0], [2], tmp_path)
    assert sorted(x.name for x in tmp_path.iterdir()) == ["AX.tsv", "MNLI-mm.tsv", "RTE.tsv", "STS-B.tsv",
                                                          "WNLI.tsv"]  # no temp files left behind
