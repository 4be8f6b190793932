"""Fine-tuning throughput on SST-2-shaped data: our loop (convbert.finetune.fit with length-bucketed,
dynamically padded batches) vs transformers' ConvBertForSequenceClassification with every batch padded
to 128 tokens (the common run_glue setup). Same model size, batch size, optimiser and thread count;
each implementation runs in its own child process so that peak RSS is its own.

    python benchmarks/bench_finetune.py [--preset small] [--threads 2] [--steps 8]

Prints one JSON line per implementation: {impl, examples_per_s, peak_rss_mb, ratio_to_reference}.
Sequence lengths come from the real SST-2 train.tsv when present (whitespace tokens + [CLS]/[SEP]),
else from a log-normal fit of them; token ids are random (throughput does not depend on them).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SST2 = ROOT.parent / "shared" / "data" / "glue" / "SST-2" / "train.tsv"


def sst2_lengths(n: int, max_length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if SST2.is_file():
        rows = SST2.read_text(encoding="utf-8").splitlines()[1:]
        words = np.array([len(r.split("\t")[0].split()) for r in rows])
        lengths = rng.choice(words, size=n) + 2
    else:  # SST-2 train: mean ~9 words, long tail to ~50
        lengths = np.round(np.exp(rng.normal(np.log(8.0), 0.7, size=n))).astype(int) + 2
    return np.clip(lengths, 3, max_length)


def make_batches(args, vocab_size: int) -> list[tuple[list[np.ndarray], np.ndarray]]:
    n = args.batch_size * (args.steps + args.warmup)
    lengths = sst2_lengths(n, 128, args.seed)
    rng = np.random.default_rng(args.seed + 1)
    ids = [rng.integers(5, vocab_size, size=int(t)).astype(np.int32) for t in lengths]
    labels = rng.integers(0, 2, size=n)
    return ids, labels


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def run_ours(args) -> dict:
    from convbert.config import ConvBertConfig
    from convbert.finetune import FinetuneTrainerConfig, fit
    from convbert.finetune.sampler import LengthBucketSampler
    from convbert.glue.features import Features, collate
    from convbert.model import ConvBertForSequenceClassification
    from convbert.train.optim import OptimConfig

    config = ConvBertConfig.from_preset(args.preset)
    ids, labels = make_batches(args, config.vocab_size)
    feats = Features(ids, [np.zeros_like(x) for x in ids], labels.astype(np.int64), np.arange(len(ids)))
    model = ConvBertForSequenceClassification(config, 2)
    sampler = LengthBucketSampler(feats.lengths, args.batch_size, shuffle=True, seed=args.seed)

    def batches(epoch):
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield collate(feats, idx, pad_id=0)

    def loss_fn(m, b):
        return torch.nn.functional.cross_entropy(m(b["input_ids"], b["attention_mask"], b["token_type_ids"]),
                                                 b["labels"])

    optim = OptimConfig(lr=3e-4, warmup_fraction=0.1, layer_decay=0.8)  # the fine-tuning recipe
    trainer = FinetuneTrainerConfig(precision="fp32", max_steps=args.warmup)
    fit(model, batches, len(sampler), 1, loss_fn, optim, trainer, torch.device("cpu"))  # warm-up (allocator, kernels)
    trainer.max_steps = args.steps
    res = fit(model, batches, len(sampler), 1, loss_fn, optim, trainer, torch.device("cpu"))
    return {"examples_per_s": res.examples_seen / res.train_time_s, "steps": res.steps,
            "mean_length": float(np.mean(feats.lengths))}


def run_reference(args) -> dict:
    import transformers

    from convbert.config import ConvBertConfig
    from convbert.hf import config_to_hf
    from convbert.train import build_optimizer, linear_schedule

    config = ConvBertConfig.from_preset(args.preset)
    ids, labels = make_batches(args, config.vocab_size)
    hf_cfg = transformers.ConvBertConfig(**{**config_to_hf(config), "num_labels": 2})
    model = transformers.ConvBertForSequenceClassification(hf_cfg)
    model.train()
    opt = build_optimizer(model, 3e-4, layer_decay=None)
    sched = linear_schedule(opt, 1, 10_000)
    order = np.random.default_rng(args.seed).permutation(len(ids))

    def step(k: int) -> None:
        idx = order[k * args.batch_size:(k + 1) * args.batch_size]
        x = np.zeros((len(idx), 128), dtype=np.int64)  # padded to max_length, as run_glue does by default
        mask = np.zeros_like(x)
        for j, i in enumerate(idx):
            x[j, :len(ids[i])], mask[j, :len(ids[i])] = ids[i], 1
        out = model(input_ids=torch.from_numpy(x), attention_mask=torch.from_numpy(mask),
                    token_type_ids=torch.zeros_like(torch.from_numpy(x)),
                    labels=torch.from_numpy(labels[idx]))
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        sched.step()

    for k in range(args.warmup):
        step(k)
    t0 = time.perf_counter()
    for k in range(args.warmup, args.warmup + args.steps):
        step(k)
    return {"examples_per_s": args.steps * args.batch_size / (time.perf_counter() - t0), "steps": args.steps,
            "mean_length": 128.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="small")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--steps", type=int, default=8, help="timed optimizer steps per implementation")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--impl", choices=["ours", "transformers"], help=argparse.SUPPRESS)  # child process
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    if args.impl:  # child: measure one implementation, print one JSON object
        out = run_ours(args) if args.impl == "ours" else run_reference(args)
        print(json.dumps({**out, "peak_rss_mb": peak_rss_mb()}))
        return

    results = {}
    child_args = [a for a in sys.argv[1:]]
    for impl in ("transformers", "ours"):
        p = subprocess.run([sys.executable, __file__, *child_args, "--impl", impl], capture_output=True, text=True)
        if p.returncode != 0:
            sys.exit(f"{impl} benchmark failed:\n{p.stderr[-3000:]}")
        results[impl] = json.loads(p.stdout.strip().splitlines()[-1])
    ref = results["transformers"]["examples_per_s"]
    for impl in ("ours", "transformers"):
        r = results[impl]
        print(json.dumps({"impl": impl, "examples_per_s": round(r["examples_per_s"], 2),
                          "peak_rss_mb": round(r["peak_rss_mb"], 1),
                          "ratio_to_reference": round(r["examples_per_s"] / ref, 3),
                          "preset": args.preset, "threads": args.threads, "batch_size": args.batch_size,
                          "mean_tokens_per_example": round(r["mean_length"], 1)}))


if __name__ == "__main__":
    main()
