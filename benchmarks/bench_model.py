"""Encoder forward+backward throughput: our ConvBertModel vs transformers.ConvBertModel, same config and input.

Prints one JSON line per (impl, precision):
  {"impl": "ours"|"transformers", "precision": "fp32"|"bf16", "tokens_per_s": ..., ["ratio_to_reference": ...]}
Timed iterations of the two implementations are interleaved so that load from other processes hits both alike;
tokens_per_s uses the median wall time per step. cpu_s_per_step (process CPU time, all threads) is printed too:
on a shared machine it is the steadier figure (set OMP_WAIT_POLICY=PASSIVE so idle threads do not spin).
Usage: python benchmarks/bench_model.py [--preset small --steps 5]
"""

from __future__ import annotations

import json
import statistics
import time

import torch
from bench_common import step_parser

from convbert.config import ConvBertConfig
from convbert.model import ConvBertModel

HF_KEYS = ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
           "intermediate_size", "head_ratio", "conv_kernel_size", "num_groups", "max_position_embeddings",
           "type_vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps")


def make_step(model: torch.nn.Module, call, bf16: bool):
    def step() -> tuple[float, float]:
        model.zero_grad(set_to_none=True)
        t0, c0 = time.perf_counter(), time.process_time()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            hidden = call()
        hidden.float().square().mean().backward()  # a scalar that touches every output
        return time.perf_counter() - t0, time.process_time() - c0
    return step


def main() -> None:
    args = step_parser(__doc__).parse_args()

    import transformers  # benchmark-only dependency

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset(args.preset)
    ours = ConvBertModel(config).train()
    hf_config = transformers.ConvBertConfig(**{k: getattr(config, k) for k in HF_KEYS},
                                            pad_token_id=config.pad_token_id)
    ref = transformers.ConvBertModel(hf_config).train()

    B, T = args.batch_size, args.seq_len
    input_ids = torch.randint(5, config.vocab_size, (B, T))
    attention_mask = torch.ones(B, T, dtype=torch.long)
    attention_mask[: B // 4, T - T // 8:] = 0  # a quarter of the rows end in padding, as in real batches
    token_type_ids = torch.zeros(B, T, dtype=torch.long)
    token_type_ids[:, T // 2:] = 1

    for precision in args.precisions.split(","):
        bf16 = precision == "bf16"
        steps = {
            "ours": make_step(ours, lambda: ours(input_ids, attention_mask, token_type_ids), bf16),
            "transformers": make_step(ref, lambda: ref(input_ids=input_ids, attention_mask=attention_mask,
                                                       token_type_ids=token_type_ids).last_hidden_state, bf16),
        }
        for step in steps.values():
            for _ in range(args.warmup):
                step()
        times: dict[str, list[tuple[float, float]]] = {name: [] for name in steps}
        for _ in range(args.steps):
            for name, step in steps.items():
                times[name].append(step())
        med = {name: statistics.median(t[0] for t in ts) for name, ts in times.items()}
        cpu = {name: statistics.median(t[1] for t in ts) for name, ts in times.items()}
        for name in steps:
            row = {"impl": name, "precision": precision, "tokens_per_s": round(B * T / med[name], 1),
                   "cpu_s_per_step": round(cpu[name], 3), "preset": args.preset, "batch_size": B,
                   "seq_len": T, "threads": args.threads}
            if name == "ours":
                row["ratio_to_reference"] = round(med["transformers"] / med["ours"], 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
