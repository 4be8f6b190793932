"""Examples -> token ids, and batches with dynamic padding from length-bucketed index lists."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from tokenizers import Tokenizer

from convbert.glue.data import GlueExample


@dataclass
class Features:
    """Variable-length encoded examples; one int32 array per example (no padding stored)."""

    input_ids: list[np.ndarray]
    token_type_ids: list[np.ndarray]
    labels: np.ndarray | None  # [N] int64 classes or float32 scores; None for unlabeled test data
    idx: np.ndarray  # [N] example ids (leaderboard ids for test sets)

    def __len__(self) -> int:
        return len(self.input_ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))


def truncate_pair(len_a: int, len_b: int, budget: int) -> tuple[int, int]:
    """BERT's longest-first pair truncation in closed form: tokens are removed one at a time from the
    longer segment (segment B on ties) until len_a + len_b <= budget."""
    if len_a + len_b <= budget:
        return len_a, len_b
    short = min(len_a, len_b)
    if 2 * short <= budget:  # only the longer one is cut
        return (budget - len_b, len_b) if len_a > len_b else (len_a, budget - len_a)
    return (budget + 1) // 2, budget // 2  # both cut to half; A keeps the odd token (B loses ties)


def special_ids(tokenizer: Tokenizer) -> dict[str, int]:
    ids = {t: tokenizer.token_to_id(t) for t in ("[CLS]", "[SEP]", "[PAD]")}
    missing = [t for t, i in ids.items() if i is None]
    if missing:
        raise ValueError(f"tokenizer has no {missing} token(s); expected a BERT WordPiece vocabulary")
    return ids


def featurize(
    examples: Sequence[GlueExample],
    tokenizer: Tokenizer,
    max_length: int = 128,
    regression: bool = False,
    swap: bool = False,
) -> Features:
    """[CLS] a [SEP] (b [SEP]), token types 0 for A (+ its specials) and 1 for B; longest-first
    truncation to max_length. `swap` encodes (b, a) instead (double_unordered augmentation)."""
    if max_length < 4:
        raise ValueError(f"max_length must be >= 4, got {max_length}")
    sp = special_ids(tokenizer)
    if tokenizer.truncation is not None or tokenizer.padding is not None:
        tokenizer = Tokenizer.from_str(tokenizer.to_str())  # a copy, so the caller's settings stay
        tokenizer.no_truncation()
        tokenizer.no_padding()
    first = [ex.text_b if swap else ex.text_a for ex in examples]
    second = [ex.text_a if swap else ex.text_b for ex in examples]
    pair = any(t is not None for t in second)
    if pair and any(t is None for t in second):
        raise ValueError("mixed single-sentence and pair examples")
    enc_a = [e.ids for e in tokenizer.encode_batch(first, add_special_tokens=False)]
    enc_b = [e.ids for e in tokenizer.encode_batch(second, add_special_tokens=False)] if pair else None
    cls, sep = sp["[CLS]"], sp["[SEP]"]
    input_ids, token_types = [], []
    for i, a in enumerate(enc_a):
        if enc_b is None:
            a = a[: max_length - 2]
            ids = [cls, *a, sep]
            tt = np.zeros(len(ids), dtype=np.int32)
        else:
            b = enc_b[i]
            la, lb = truncate_pair(len(a), len(b), max_length - 3)
            ids = [cls, *a[:la], sep, *b[:lb], sep]
            tt = np.zeros(len(ids), dtype=np.int32)
            tt[la + 2 :] = 1
        input_ids.append(np.asarray(ids, dtype=np.int32))
        token_types.append(tt)
    labels = None
    if examples and all(ex.label is not None for ex in examples):
        labels = np.asarray([ex.label for ex in examples], dtype=np.float32 if regression else np.int64)
    idx = np.asarray([ex.idx for ex in examples], dtype=np.int64)
    return Features(input_ids, token_types, labels, idx)


def concat_features(parts: Sequence[Features]) -> Features:
    labels = None
    if all(p.labels is not None for p in parts):
        labels = np.concatenate([p.labels for p in parts])
    return Features(
        [x for p in parts for x in p.input_ids],
        [x for p in parts for x in p.token_type_ids],
        labels,
        np.concatenate([p.idx for p in parts]),
    )


def collate(features: Features, indices: Sequence[int], pad_id: int = 0, pad_to_multiple: int = 1) -> dict:
    """Pad a batch to its longest member (rounded up to pad_to_multiple) -> tensors:
    input_ids/attention_mask/token_type_ids [B, T] (long), labels [B] when available, idx [B]."""
    rows = [features.input_ids[i] for i in indices]
    longest = max(len(r) for r in rows)
    t = -(-longest // pad_to_multiple) * pad_to_multiple
    ids = np.full((len(rows), t), pad_id, dtype=np.int64)
    types = np.zeros((len(rows), t), dtype=np.int64)
    mask = np.zeros((len(rows), t), dtype=np.int64)
    for j, i in enumerate(indices):
        n = len(features.input_ids[i])
        ids[j, :n] = features.input_ids[i]
        types[j, :n] = features.token_type_ids[i]
        mask[j, :n] = 1
    batch = {
        "input_ids": torch.from_numpy(ids),
        "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(types),
        "idx": torch.from_numpy(features.idx[list(indices)]),
    }
    if features.labels is not None:
        batch["labels"] = torch.from_numpy(features.labels[list(indices)])
    return batch
