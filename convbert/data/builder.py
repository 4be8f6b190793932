"""ELECTRA's pretraining example builder (build_pretraining_dataset.py), and the per-chunk worker.

Units (lines) of a document are appended until the target length is reached; the end of a document
always closes the current example, so examples never cross documents. Each example is
[CLS] A [SEP] (B [SEP]) with A aiming at about half the target length; 10% of examples keep a single
segment; after each example the next target length is random in [5, max_len] with probability 5%.

A unit that does not fit in what is left of the example (overflow="split", the default) fills it and
continues in the next example of the same document, so no token is lost. ELECTRA's builder instead takes
the whole unit and cuts the example at max_len (overflow="truncate"): that drops a fifth of a corpus of
long paragraphs, and all but the first example's worth of a unit longer than an example (docs/design.md §3).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np

OVERFLOW = ("split", "truncate")


@dataclass
class ExampleBuilder:
    max_length: int
    cls_id: int
    sep_id: int
    rng: random.Random
    # built examples, flat: tokens of all examples back to back, and per example its length and the
    # position where segment B starts (== length when there is no B)
    tokens: list[int] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    b_starts: list[int] = field(default_factory=list)
    overflow: str = "split"  # a unit that overflows the example: "split" it, or "truncate" it (ELECTRA)
    truncated: int = 0  # tokens lost to trimming (overflow="truncate": a unit that overshoots max_length)

    def __post_init__(self) -> None:
        if self.max_length < 5:
            raise ValueError(f"max_seq_length={self.max_length} must be at least 5")
        if self.overflow not in OVERFLOW:
            raise ValueError(f"overflow={self.overflow!r} is not one of {list(OVERFLOW)}")
        self._units: list[list[int]] = []
        self._length = 0
        self._target = self.max_length

    def add_unit(self, ids: list[int]) -> None:
        if not ids:
            return  # an empty unit changes nothing (ELECTRA would append an empty list)
        if self.overflow == "split":
            # room: the target less [CLS] A [SEP] B [SEP]'s three special tokens, so _emit never trims
            while self._length + len(ids) >= self._target - 3:
                take = self._target - 3 - self._length  # >= 2: _emit leaves the example empty, targets >= 5
                self._units.append(ids[:take])
                self._length += take
                ids = ids[take:]
                self._emit()
                if not ids:
                    return
        self._units.append(ids)
        self._length += len(ids)
        if self._length >= self._target:
            self._emit()

    def end_document(self) -> None:
        if self._length:
            self._emit()

    def _emit(self) -> None:
        rng, target = self.rng, self._target
        # -3 leaves room for [CLS] A [SEP] B [SEP]; single-segment examples put everything in A
        a_target = 100_000 if rng.random() < 0.1 else (target - 3) // 2
        a: list[int] = []
        b: list[int] = []
        for unit in self._units:
            # a unit joins A if A is empty, if it fits under A's target, or, while B is still empty and
            # A is short of its target, on a coin flip; everything else goes to B
            if not a or len(a) + len(unit) < a_target or (not b and len(a) < a_target and rng.random() < 0.5):
                a += unit
            else:
                b += unit
        n_in = len(a) + len(b)
        a = a[: self.max_length - 2]
        b = b[: max(0, self.max_length - len(a) - 3)]
        self.truncated += n_in - len(a) - len(b)

        ids = [self.cls_id, *a, self.sep_id]
        b_start = len(ids)
        if b:
            ids += b
            ids.append(self.sep_id)
        self.tokens += ids
        self.lengths.append(len(ids))
        self.b_starts.append(b_start if b else len(ids))

        self._units = []
        self._length = 0
        self._target = rng.randint(5, self.max_length) if rng.random() < 0.05 else self.max_length


# ------------------------------------------------------------------------ worker (runs in a pool)
_WORKER: dict = {}


def init_worker(tokenizer_json: str, max_length: int, seed: int, dtype: str, overflow: str = "split") -> None:
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(tokenizer_json)
    _WORKER.update(
        tok=tok,
        max_length=max_length,
        seed=seed,
        overflow=overflow,
        dtype=np.dtype(dtype),
        cls=tok.token_to_id("[CLS]"),
        sep=tok.token_to_id("[SEP]"),
    )


def build_chunk(task: tuple[int, list[list[str]]]) -> dict:
    """Tokenize one chunk of whole documents and build its examples.

    The RNG is seeded by (seed, chunk index), and chunks are cut by size alone, so the output does not
    depend on the number of workers.
    """
    index, docs = task
    w = _WORKER
    units = [u for doc in docs for u in doc]
    # encode_batch_fast skips character offsets, which we never use
    ids = [e.ids for e in w["tok"].encode_batch_fast(units, add_special_tokens=False)]
    builder = ExampleBuilder(w["max_length"], w["cls"], w["sep"], random.Random(f"{w['seed']}:{index}"),
                             overflow=w["overflow"])
    pos = 0
    for doc in docs:
        for unit_ids in ids[pos : pos + len(doc)]:
            builder.add_unit(unit_ids)
        pos += len(doc)
        builder.end_document()
    return {
        "index": index,
        "tokens": np.array(builder.tokens, dtype=w["dtype"]),
        "lengths": np.array(builder.lengths, dtype=np.int32),
        "b_starts": np.array(builder.b_starts, dtype=np.int32),
        "documents": len(docs),
        "units": len(units),
        "corpus_tokens": sum(len(x) for x in ids),
        "truncated_tokens": builder.truncated,
    }
