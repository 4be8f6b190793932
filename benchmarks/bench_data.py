"""Raw text -> pretraining shards, MB/s: our prepare() vs the raw `tokenizers` encode_batch rate.

Both run in this process on the same text file (the pydocs corpus, repeated up to --mb MB) with the
same trained WordPiece vocab. Ours is end to end: read + decode, tokenize, build ELECTRA examples,
write shards + index + checksums + manifest. Prints JSON lines (impl, mb_per_s, ratio_to_reference).

    python benchmarks/bench_data.py [--mb 11] [--workers 2] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

from convbert.data import prepare
from convbert.data.config import TokenizerConfig
from convbert.data.corpus import _pydocs_documents
from convbert.data.tokenizer import save, train_wordpiece


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--mb", type=float, default=11.0, help="MB of text (the pydocs corpus repeated)")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3, help="timed runs of each; the median is reported")
    p.add_argument("--vocab-size", type=int, default=8192)
    p.add_argument("--max-seq-length", type=int, default=128)
    args = p.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        docs = [d for d in _pydocs_documents() if d]
        one_copy = "".join("\n".join(d) + "\n\n" for d in docs)
        copies = max(1, round(args.mb * 1e6 / len(one_copy.encode())))
        text_file = tmp / "corpus.txt"
        text_file.write_text(one_copy * copies, encoding="utf-8")
        n_bytes = text_file.stat().st_size
        mb = n_bytes / 1e6

        tcfg = TokenizerConfig(vocab_size=args.vocab_size)
        tok = train_wordpiece(tcfg, (u for d in docs for u in d))
        save(tok, tmp)
        lines = [line for line in text_file.read_text(encoding="utf-8").splitlines() if line]

        ref, fast, ours = [], [], []
        for r in range(args.repeats):
            t = time.perf_counter()
            tok.encode_batch(lines, add_special_tokens=False)
            ref.append(time.perf_counter() - t)
            t = time.perf_counter()
            tok.encode_batch_fast(lines, add_special_tokens=False)
            fast.append(time.perf_counter() - t)
            t = time.perf_counter()
            prepare(
                corpus={"name": "bench", "source": "text", "paths": [str(text_file)]},
                tokenizer={"kind": "pretrained", "path": str(tmp / "tokenizer.json"), "vocab_size": args.vocab_size},
                max_seq_length=args.max_seq_length,
                num_workers=args.workers,
                data_dir=tmp / f"data{r}",
                progress=False,
            )
            ours.append(time.perf_counter() - t)

        report(mb, {"tokenizers.encode_batch": ref, "tokenizers.encode_batch_fast": fast,
                    "convbert.data.prepare": ours}, {"cpus": os.cpu_count(), "repeats": args.repeats}, args.workers)


def report(mb: float, seconds: dict[str, list[float]], common: dict, workers: int) -> None:
    """One JSON line per implementation: the median rate, and its ratio to the first (the reference)."""
    rates = {impl: mb / statistics.median(times) for impl, times in seconds.items()}
    ref_rate = next(iter(rates.values()))
    for i, (impl, rate) in enumerate(rates.items()):
        row = {"impl": impl, "mb_per_s": round(rate, 3)}
        if i:
            row["ratio_to_reference"] = round(rate / ref_rate, 3)
        if impl == "convbert.data.prepare":
            row["workers"] = workers
        print(json.dumps({**row, "mb": round(mb, 2), **common}))

if __name__ == "__main__":
    main()
