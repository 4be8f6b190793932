"""What the benchmark scripts share (and the op-count tests import): the command line of the step benchmarks, a
synthetic pretraining batch with our tokenizer's special ids, and a dispatch-mode counter of aten ops."""

from __future__ import annotations

import argparse
import collections

import torch
from torch.utils._python_dispatch import TorchDispatchMode

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4  # our tokenizer's special ids


def step_parser(description: str | None) -> argparse.ArgumentParser:
    """The options every training-step benchmark takes (bench_model, bench_pretrain); each adds its own."""
    ap = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="small")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", "--iters", type=int, default=5, help="timed steps per configuration (median reported)")
    ap.add_argument("--precisions", default="fp32,bf16")
    return ap
NEVER_MASKED = [PAD, CLS, SEP, MASK]  # as convbert/pretrain


def make_batch(B: int, T: int, vocab_size: int, padded: bool = True, seed: int = 0) -> dict[str, torch.Tensor]:
    """[CLS] A [SEP] B [SEP] with random word ids; with `padded`, an eighth of the rows are shorter and padded
    (as in shards)."""
    g = torch.Generator().manual_seed(seed)
    input_ids = torch.full((B, T), PAD, dtype=torch.long)
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    attention_mask = torch.zeros(B, T, dtype=torch.long)
    for b in range(B):
        n = T if not padded or b >= max(1, B // 8) else int(torch.randint(T // 4, T, (1,), generator=g))
        a_len = int(torch.randint(1, n - 3, (1,), generator=g))  # segment A length
        input_ids[b, :n] = torch.randint(5, vocab_size, (n,), generator=g)
        input_ids[b, 0] = CLS
        input_ids[b, 1 + a_len] = SEP
        input_ids[b, n - 1] = SEP
        token_type_ids[b, 2 + a_len:n] = 1
        attention_mask[b, :n] = 1
    return {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}


class OpCounter(TorchDispatchMode):
    """Counts the aten ops (by overload packet name, e.g. "aten.mm") dispatched while active."""

    def __init__(self):
        super().__init__()
        self.ops: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))
