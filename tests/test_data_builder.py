"""Invariants of the ELECTRA example builder (convbert.data.builder), on synthetic token ids."""

from __future__ import annotations

import random

import pytest

from convbert.data.builder import ExampleBuilder

CLS, SEP = 2, 3


def build(docs: list[list[list[int]]], max_length: int, seed: int = 0, overflow: str = "split") -> ExampleBuilder:
    b = ExampleBuilder(max_length, CLS, SEP, random.Random(seed), overflow=overflow)
    for doc in docs:
        for unit in doc:
            b.add_unit(unit)
        b.end_document()
    return b


def examples(b: ExampleBuilder) -> list[tuple[list[int], int]]:
    out, pos = [], 0
    for length, b_start in zip(b.lengths, b.b_starts, strict=True):
        out.append((b.tokens[pos : pos + length], b_start))
        pos += length
    assert pos == len(b.tokens)
    return out


def synthetic_docs(n_docs: int, max_unit: int, seed: int = 0) -> list[list[list[int]]]:
    """Documents of units with globally increasing ids (>= 10), so order and origin are checkable."""
    rng, next_id, docs = random.Random(seed), 10, []
    for _ in range(n_docs):
        doc = []
        for _ in range(rng.randint(1, 30)):
            n = rng.randint(1, max_unit)
            doc.append(list(range(next_id, next_id + n)))
            next_id += n
        docs.append(doc)
    return docs


@pytest.mark.parametrize("max_length", [5, 16, 128])
def test_segment_layout_and_lengths(max_length: int) -> None:
    b = build(synthetic_docs(300, max_unit=40), max_length)
    assert len(b.lengths) > 100
    for ids, b_start in examples(b):
        assert 3 <= len(ids) <= max_length
        assert ids[0] == CLS and ids[b_start - 1] == SEP and ids[-1] == SEP
        assert 2 < b_start <= len(ids)
        specials = [i for i, t in enumerate(ids) if t in (CLS, SEP)]
        if b_start == len(ids):  # single segment: [CLS] A [SEP]
            assert specials == [0, len(ids) - 1]
        else:  # [CLS] A [SEP] B [SEP], B non-empty
            assert specials == [0, b_start - 1, len(ids) - 1] and len(ids) - b_start >= 2


def test_examples_never_cross_documents_and_keep_order() -> None:
    docs = synthetic_docs(200, max_unit=40)
    doc_of = {t: d for d, doc in enumerate(docs) for unit in doc for t in unit}
    b = build(docs, 64)
    last_doc, last_token = 0, 0
    for ids, b_start in examples(b):
        seg_a, seg_b = ids[1 : b_start - 1], ids[b_start:-1]
        origins = {doc_of[t] for t in seg_a + seg_b}
        assert len(origins) == 1  # one document per example
        # each segment keeps text order (a later short unit may still join A, as in ELECTRA), and an
        # example only uses text after the previous example's
        assert seg_a == sorted(seg_a) and seg_b == sorted(seg_b)
        assert min(seg_a + seg_b) > last_token and origins.pop() >= last_doc
        last_doc, last_token = doc_of[seg_a[0]], max(seg_a + seg_b)


def test_electra_truncation_counts_every_token_it_cuts() -> None:
    docs = synthetic_docs(100, max_unit=40)
    b = build(docs, 64, overflow="truncate")
    kept = [t for ids, _ in examples(b) for t in ids if t not in (CLS, SEP)]
    assert len(kept) + b.truncated == sum(len(u) for d in docs for u in d)
    assert b.truncated > 0
    # with 1-token units an example is closed exactly at its target, so it loses at most the room
    # taken by [CLS]/[SEP]/[SEP] (the target counts text tokens only, as in ELECTRA)
    ones = [[[t] for u in d for t in u] for d in docs]
    b = build(ones, 64, overflow="truncate")
    assert b.truncated <= 3 * len(b.lengths)
    kept = [t for ids, _ in examples(b) for t in ids if t not in (CLS, SEP)]
    assert len(kept) + b.truncated == sum(len(d) for d in ones)


@pytest.mark.parametrize("max_length", [5, 16, 64])
def test_split_keeps_every_token_and_fills_examples(max_length: int) -> None:
    docs = synthetic_docs(100, max_unit=3 * max_length)  # units up to three examples long
    b = build(docs, max_length)
    kept = [t for ids, _ in examples(b) for t in ids if t not in (CLS, SEP)]
    assert b.truncated == 0 and sorted(kept) == [t for d in docs for u in d for t in u]
    # an example that did not end its document is full: its target (max_length unless one of the 5% random
    # ones), less one for a single-segment example's missing second [SEP]
    last_of_doc = {u[-1] for d in docs for u in d[-1:]}
    full = [ids for ids, _ in examples(b) if not last_of_doc & set(ids)]
    assert sum(len(ids) >= max_length - 1 for ids in full) > 0.9 * len(full)


def test_a_unit_longer_than_many_examples_continues_across_them_in_order() -> None:
    line = list(range(10, 1010))  # one 1000-token line, as a corpus of one long line
    b = build([[line]], 32)
    rows = examples(b)
    assert b.truncated == 0 and len(rows) >= 1000 // 29
    assert [t for ids, _ in rows for t in ids if t not in (CLS, SEP)] == line  # consecutive pieces, in order
    assert all(len(ids) <= 32 for ids, _ in rows)


def test_document_end_flushes_short_example() -> None:
    b = build([[[10, 11]], [[12]]], 128)
    assert examples(b) == [([CLS, 10, 11, SEP], 4), ([CLS, 12, SEP], 3)]


def test_overlong_unit_is_trimmed_like_electra() -> None:
    b = build([[list(range(10, 60))]], 16, overflow="truncate")
    (ids, b_start), *rest = examples(b)
    assert ids == [CLS, *range(10, 24), SEP] and b_start == 16  # A trimmed to max_length - 2
    assert b.truncated == 50 - 14
    assert rest == []


def test_single_segment_and_random_length_rates() -> None:
    # long documents of 1-token units: every example ends on its target length, so a short example
    # means a random target (5%), and an example without B means the 10% single-segment draw
    docs = [[[10 + (i % 50)] for i in range(200_000)]]
    b = build(docs, 64, seed=1, overflow="truncate")
    full = examples(b)[:-1]  # the last one is cut by the end of the document
    single = sum(b_start == len(ids) for ids, b_start in full) / len(full)
    short = sum(len(ids) < 64 for ids, _ in full) / len(full)
    assert 0.07 < single < 0.13
    assert 0.03 < short < 0.07


class ScriptedRandom:
    """Plays back fixed draws so the segment rules can be checked one decision at a time."""

    def __init__(self, draws: list[float | int]) -> None:
        self.draws = list(draws)

    def random(self) -> float:
        return self.draws.pop(0)

    def randint(self, a: int, b: int) -> int:
        value = self.draws.pop(0)
        assert a <= value <= b
        return value


def test_segment_rules_step_by_step() -> None:
    # max_length 20 -> A aims at (20 - 3) // 2 = 8 tokens; units of 3 tokens
    units = [[10, 11, 12], [13, 14, 15], [16, 17, 18], [19, 20, 21], [22, 23, 24], [25, 26, 27], [28, 29, 30]]
    # 1st example: not single (0.5); 3rd unit 6+3 >= 8 but A is short -> coin 0.3 < 0.5 puts it in A;
    # 4th unit: A is full -> B. Units are added until 21 >= 20 (7 units). Then 0.01 < 0.05: random
    # next target 9.
    rng = ScriptedRandom([0.5, 0.3, 0.01, 9])
    b = ExampleBuilder(20, CLS, SEP, rng, overflow="truncate")  # type: ignore[arg-type]
    for u in units:
        b.add_unit(u)
    ((ids, b_start),) = examples(b)
    a = [10, 11, 12, 13, 14, 15, 16, 17, 18]
    assert ids[:b_start] == [CLS, *a, SEP]
    assert ids[b_start:] == [19, 20, 21, 22, 23, 24, 25, 26, SEP]  # B trimmed to 20 - 9 - 3 = 8
    assert b.truncated == 21 - 9 - 8
    # 2nd example: target 9 (A aims at 3): single-segment draw 0.05 (< 0.1) puts all in A
    rng.draws = [0.05, 0.9]
    b.add_unit([40, 41, 42, 43, 44])
    b.add_unit([45, 46, 47, 48])  # 9 >= target 9
    ids, b_start = examples(b)[1]
    assert ids == [CLS, *range(40, 49), SEP] and b_start == len(ids)
    # 3rd example: target back to 20; the coin flip 0.7 sends the unit that overshoots A to B
    rng.draws = [0.5, 0.7, 0.9]
    b.add_unit([50] * 7)
    b.add_unit([51] * 3)
    b.end_document()
    ids, b_start = examples(b)[2]
    assert ids == [CLS, *[50] * 7, SEP, *[51] * 3, SEP] and b_start == 9
    assert rng.draws == []


def test_same_seed_same_examples_other_seed_differs() -> None:
    docs = synthetic_docs(100, max_unit=40)
    first, again, other = build(docs, 64, seed=5), build(docs, 64, seed=5), build(docs, 64, seed=6)
    assert (first.tokens, first.b_starts) == (again.tokens, again.b_starts)
    assert (first.tokens, first.b_starts) != (other.tokens, other.b_starts)


def test_max_length_below_five_is_rejected() -> None:
    with pytest.raises(ValueError, match="at least 5"):
        ExampleBuilder(4, CLS, SEP, random.Random(0))
