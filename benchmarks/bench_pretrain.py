"""One ELECTRA pretraining step (mask -> generator -> sample -> discriminator -> backward -> clipped AdamW):
our ElectraPretrainer vs a reference step assembled from transformers' ConvBERT classes.

Reference: ConvBertForMaskedLM generator (vocab logits at all positions, as HF computes them) and
ConvBertForTokenClassification discriminator (one label), embeddings shared and the LM head tied to them as
in ELECTRA, same generator size (config.generator_config()), same masking (our mask_tokens), Gumbel sampling
at the masked positions, loss 1·MLM + 50·RTD with the same global normalisers, the same AdamW + clipping.

Memory: peak RSS of the process (ru_maxrss) and, from one extra profiled step, the peak bytes of live tensors
("peak_tensor_mb"), which leaves out freed memory that the allocator (glibc) keeps resident. Every
(impl, precision) runs in a fresh subprocess (`--one ours:fp32`) so that its peak RSS is its own. The impls of a
precision are alive together and step in turn (order rotated every step), so machine load from other
processes hits them alike. "ours-compiled" is ours under torch.compile (inductor, fullgraph); its first step
includes the compilation, reported apart as "compile_s" and left out of the timed steps.

Utilisation: in the same run, the ours child records every matmul of one step (aten mm/addmm/bmm/baddbmm with
shapes, strides and dtypes, as dispatched under that precision) and times each shape alone: "gemm_tflops" is
the rate this machine reaches on the step's own GEMMs. "model_tflops" is the model's training FLOPs
(convbert.electra.train_flops, 3x the forward) per second of step, and "utilization" = model_tflops /
gemm_tflops: the share of the achievable matmul rate the whole step delivers (1.0 = no overhead at all).

Prints JSON lines: an "env" header (with "amx": whether the CPU has AMX tiles, and "bf16_speedup": the
measured bf16 / fp32 matmul rate, which without AMX is below 1 on some AVX512-BF16 CPUs and above on
others), then per configuration
  {"impl": "reference"|"ours"|"ours-compiled", "precision": "fp32"|"bf16", "tokens_per_s", "model_tflops",
   "gemm_tflops", "utilization", "peak_rss_mb", "peak_tensor_mb", "rss_after_build_mb", ... and for ours
   "ratio_to_reference", "memory_ratio_to_reference", "tensor_memory_ratio_to_reference"}.
tokens_per_s counts all B·T positions per step and uses the median timed step.

    python benchmarks/bench_pretrain.py [--steps 5] [--warmup 2] [--quick] [--precisions fp32,bf16]
                                             [--impls reference,ours,ours-compiled]
"""

from __future__ import annotations

import argparse
import collections
import importlib.metadata
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from bench_common import MASK, NEVER_MASKED, make_batch, step_parser
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

from convbert.config import ConvBertConfig
from convbert.electra import (
    ElectraObjective,
    ElectraPretrainer,
    example_seeds,
    mask_tokens,
    prepare_batch,
    train_flops,
    train_step,
)
from convbert.train import Precision, build_optimizer
from convbert.train.precision import cpu_bf16_speedup

IMPLS = ("reference", "ours", "ours-compiled")
GEMM_OPS = ("aten.mm", "aten.addmm", "aten.bmm", "aten.baddbmm")
HF_KEYS = ("vocab_size", "hidden_size", "embedding_size", "num_hidden_layers", "num_attention_heads",
           "intermediate_size", "head_ratio", "conv_kernel_size", "num_groups", "max_position_embeddings",
           "type_vocab_size", "hidden_dropout_prob", "attention_probs_dropout_prob", "layer_norm_eps",
           "initializer_range", "pad_token_id")
LR, WEIGHT_DECAY, MAX_GRAD_NORM = 5e-4, 0.01, 1.0


def build_ours(config: ConvBertConfig, objective: ElectraObjective, batch, precision: str,
               compiled: bool = False) -> Callable[[int], float]:
    """The step of convbert/pretrain.py (one micro-batch, one process): masking on the host, the two phases,
    the clipped AdamW step. compiled: the model under torch.compile (both phases, fullgraph)."""
    model = ElectraPretrainer(config, objective).train()
    optimizer = build_optimizer(model, LR, WEIGHT_DECAY, eps=1e-6)
    prec = Precision(precision, torch.device("cpu"))
    params = [p for p in model.parameters() if p.requires_grad]
    if compiled:
        model.compile(fullgraph=True)
    B = batch["input_ids"].shape[0]

    def step(i: int) -> float:
        micro = prepare_batch(batch, NEVER_MASKED, MASK, example_seeds(0, i, 0, B), objective)
        norms = torch.stack([micro["mask_valid"].sum(), micro["attention_mask"].sum()]).float()
        loss, stats = train_step(model, micro, norms, prec)
        prec.step(optimizer, params, MAX_GRAD_NORM)
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def gumbel_max(logits: torch.Tensor, counts: list[int], seeds: list[int], temperature: float) -> torch.Tensor:
    """The reference's sampler, kept here so that changes to ours never change the reference: Gumbel-max
    over the full vocabulary, argmax(logits / t - log(-log U)), noise keyed per example. logits [M,V]."""
    z = logits.float() / temperature
    u = torch.cat([torch.rand(n, z.shape[1], generator=torch.Generator().manual_seed(s + 1))
                   for n, s in zip(counts, seeds, strict=True)])
    return (z - (-u.clamp_min(1e-20).log()).clamp_min(1e-20).log()).argmax(-1)


def build_reference(config: ConvBertConfig, objective: ElectraObjective, batch,
                    precision: str) -> Callable[[int], float]:
    """ELECTRA step from transformers' ConvBERT heads, computed the way HF models do it (full-vocab logits)."""
    import transformers  # benchmark-only dependency

    def hf_config(c: ConvBertConfig, **extra) -> transformers.ConvBertConfig:
        return transformers.ConvBertConfig(**{k: getattr(c, k) for k in HF_KEYS}, hidden_act="gelu", **extra)

    gen = transformers.ConvBertForMaskedLM(hf_config(config.generator_config(objective.generator_size)))
    disc = transformers.ConvBertForTokenClassification(hf_config(config, num_labels=1))
    gen.convbert.embeddings = disc.convbert.embeddings  # ELECTRA: one embedding module for both
    gen.generator_lm_head.weight = disc.convbert.embeddings.word_embeddings.weight  # tied MLM decoder
    model = nn.ModuleDict({"generator": gen, "discriminator": disc}).train()
    optimizer = build_optimizer(model, LR, WEIGHT_DECAY, eps=1e-6)
    params = [p for p in model.parameters() if p.requires_grad]
    ids, am, tt = batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]
    B, real = ids.shape[0], am.bool()
    bf16 = precision == "bf16"

    def step(i: int) -> float:
        seeds = example_seeds(0, i, 0, B)
        masking = mask_tokens(ids, am, NEVER_MASKED, MASK, seeds, objective)
        masked_ids, masked = masking.masked_ids, masking.dense()
        norms = torch.stack([masked.sum(), am.sum()]).float()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = gen(input_ids=masked_ids, attention_mask=am, token_type_ids=tt).logits  # [B,T,V]
            mlm_logits = logits[masked]  # [M,V]
            mlm_sum = F.cross_entropy(mlm_logits.float(), ids[masked], reduction="sum")
            with torch.no_grad():
                sampled = gumbel_max(mlm_logits.detach(), masked.sum(1).tolist(), seeds, objective.temperature)
                corrupted = ids.masked_scatter(masked, sampled)
            disc_logits = disc(input_ids=corrupted, attention_mask=am, token_type_ids=tt).logits[..., 0]  # [B,T]
            labels = (corrupted != ids)[real].float()
            rtd_sum = F.binary_cross_entropy_with_logits(disc_logits[real].float(), labels, reduction="sum")
            loss = objective.mlm_weight * mlm_sum / norms[0] + objective.rtd_weight * rtd_sum / norms[1]
        loss.backward()
        nn.utils.clip_grad_norm_(params, MAX_GRAD_NORM)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    return step


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


class Child:
    """One configuration in its own process, stepping in lock-step with the parent (so that the two impls'
    steps interleave and share whatever load the machine has) and reporting its own peak RSS at the end."""

    def __init__(self, impl: str, precision: str, args: argparse.Namespace):
        self.impl, self.precision = impl, precision
        cmd = [sys.executable, os.path.abspath(__file__), "--one", f"{impl}:{precision}", "--preset", args.preset,
               "--batch-size", str(args.batch_size), "--seq-len", str(args.seq_len), "--threads", str(args.threads)]
        self.stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr,
                                     text=True, bufsize=1)

    def ask(self, command: str) -> dict:
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            self.stderr.seek(0)
            lines = self.stderr.read().strip().splitlines()
            raise RuntimeError(f"{self.impl}:{self.precision} child failed (exit {self.proc.returncode}): "
                               + (lines[-1] if lines else "no output"))
        return json.loads(line)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.stderr.close()


def serve(impl: str, precision: str, args: argparse.Namespace) -> None:
    """Child mode: build, then answer "step I" (one step, prints its time), "gemm I" (the matmul rate of step I's
    GEMMs, see gemm_rate) and "done I" (prints peak RSS, then profiles step I for the peak tensor memory)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset(args.preset)
    objective = ElectraObjective()
    batch = make_batch(args.batch_size, args.seq_len, config.vocab_size)
    if impl == "reference":
        step = build_reference(config, objective, batch, precision)
    else:
        step = build_ours(config, objective, batch, precision, compiled=impl == "ours-compiled")
    masked = mask_tokens(batch["input_ids"], batch["attention_mask"], NEVER_MASKED, MASK,
                         example_seeds(0, 0, 0, args.batch_size), objective).valid.sum()
    print(json.dumps({"rss_after_build_mb": _rss_mb(), "real_tokens": int(batch["attention_mask"].sum()),
                      "masked_tokens": int(masked)}), flush=True)
    loss = float("nan")
    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "step":
            t0 = time.perf_counter()
            loss = step(int(cmd[1]))
            print(json.dumps({"step_s": time.perf_counter() - t0}), flush=True)
        elif cmd[0] == "gemm":
            print(json.dumps(gemm_rate(step, int(cmd[1]))), flush=True)
        elif cmd[0] == "done":
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux; read before profiling
            print(json.dumps({"peak_rss_mb": peak, "loss": loss, "peak_tensor_mb": peak_tensor_mb(step, int(cmd[1]))}),
                  flush=True)
            return


class _GemmRecorder(TorchDispatchMode):
    """Records (op, operand shapes and strides, dtype) of every GEMM dispatched while active."""

    def __init__(self):
        super().__init__()
        self.calls: collections.Counter = collections.Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        name = str(func.overloadpacket)
        if name in GEMM_OPS:
            tensors = tuple((tuple(a.shape), tuple(a.stride())) for a in args if isinstance(a, torch.Tensor))
            scalars = tuple(sorted((kwargs or {}).items()))
            self.calls[(name, tensors, args[-1].dtype, scalars)] += 1
        return func(*args, **(kwargs or {}))


def _gemm_flops(name: str, tensors: tuple) -> float:
    a, b = tensors[-2][0], tensors[-1][0]  # the two matrix operands (addmm/baddbmm lead with the bias)
    return 2.0 * math.prod(a) * b[-1]  # [..., m, k] @ [..., k, n]: 2 * batch * m * k * n


def gemm_rate(step: Callable[[int], float], i: int, rounds: int = 5, round_s: float = 0.005) -> dict:
    """Run step i once, recording its GEMMs; then time each distinct GEMM alone (same shapes, strides, dtype)
    and return the step's GEMM FLOPs over their summed time: the matmul rate this machine gives these shapes.
    Each GEMM's time is the best of `rounds` short rounds, so that a burst of load from other processes does
    not lower the rate (which would inflate the utilisation)."""
    recorder = _GemmRecorder()
    with recorder:
        step(i)
    flops = seconds = 0.0
    for (name, tensors, dtype, scalars), count in recorder.calls.items():
        operands = [torch.empty_strided(shape, stride, dtype=dtype).normal_() for shape, stride in tensors]
        fn = getattr(torch.ops.aten, name.split(".", 1)[1])
        fn(*operands, **dict(scalars))  # warm-up
        best = math.inf
        for _ in range(rounds):
            reps, t0 = 0, time.perf_counter()
            while reps < 1 or time.perf_counter() - t0 < round_s:
                fn(*operands, **dict(scalars))
                reps += 1
            best = min(best, (time.perf_counter() - t0) / reps)
        seconds += count * best
        flops += count * _gemm_flops(name, tensors)
    return {"gemm_tflops": flops / seconds / 1e12, "gemm_flops_per_step": flops, "gemm_s_per_step": seconds,
            "gemm_shapes": len(recorder.calls)}


def peak_tensor_mb(step: Callable[[int], float], i: int) -> float:
    """Peak bytes of live tensors during one step, from the profiler's memory timeline: independent of how
    the allocator (glibc here) keeps freed memory resident, which peak RSS includes."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True, record_shapes=True, with_stack=True) as prof:
        step(i)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "timeline.json")
        prof.export_memory_timeline(path, device="cpu")
        with open(path) as f:
            _, sizes = json.load(f)  # bytes per category at each event
    return max(sum(s) for s in sizes) / 2**20


def measure(precision: str, impls: list[str], args: argparse.Namespace) -> dict[str, dict]:
    """The impls at one precision; warm-up and timed steps rotate between them (order rotated each step)."""
    children = {impl: Child(impl, precision, args) for impl in impls}
    try:
        res = {impl: c.read() for impl, c in children.items()}
        loads = []
        for impl in impls:
            res[impl]["step_s"], res[impl]["first_step_s"] = [], None
        for i in range(args.warmup + args.steps):
            loads.append(os.getloadavg()[0])
            for impl in impls[i % len(impls):] + impls[:i % len(impls)]:
                t = children[impl].ask(f"step {i}")["step_s"]
                if i == 0:
                    res[impl]["first_step_s"] = t
                if i >= args.warmup:
                    res[impl]["step_s"].append(t)
        n = args.warmup + args.steps
        gemm = children["ours"].ask(f"gemm {n}") if "ours" in children else {}
        for impl, c in children.items():
            res[impl].update(c.ask(f"done {n + 1}"), load_avg_1m=round(statistics.mean(loads), 2), **gemm)
        return res
    finally:
        for c in children.values():
            c.close()


def _probe(name: str) -> bool | None:
    fn = getattr(torch.cpu, name, None)  # private torch helpers: absent in some versions
    return bool(fn()) if fn is not None else None


def env_row(args: argparse.Namespace) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    return {"impl": "env", "torch": torch.__version__, "transformers": importlib.metadata.version("transformers"),
            "python": platform.python_version(), "cpu": cpu, "cpu_count": os.cpu_count(), "threads": args.threads,
            "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "amx": _probe("_is_amx_tile_supported"), "avx512_bf16": _probe("_is_avx512_bf16_supported"),
            "bf16_speedup": round(cpu_bf16_speedup(), 2),
            "load_avg_1m": round(os.getloadavg()[0], 2), "preset": args.preset, "batch_size": args.batch_size,
            "seq_len": args.seq_len, "warmup": args.warmup, "steps": args.steps}


def main() -> None:
    ap = step_parser(__doc__)
    ap.add_argument("--impls", default=",".join(IMPLS), help=f"subset of {','.join(IMPLS)}")
    ap.add_argument("--quick", action="store_true", help="1 warm-up + 2 timed steps")
    ap.add_argument("--one", help=argparse.SUPPRESS)  # child mode: "impl:precision"
    args = ap.parse_args()
    if args.one:
        impl, precision = args.one.split(":")
        serve(impl, precision, args)
        return
    if args.quick:
        args.warmup, args.steps = 1, 2
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    precisions = args.precisions.split(",")
    bad = sorted(set(precisions) - {"fp32", "bf16"})
    if bad:
        ap.error(f"--precisions: unknown {bad}; use fp32 and/or bf16")

    impls = args.impls.split(",")
    if set(impls) - set(IMPLS) or not impls:
        ap.error(f"--impls: use a subset of {','.join(IMPLS)}")
    print(json.dumps(env_row(args)), flush=True)
    tokens = args.batch_size * args.seq_len
    config = ConvBertConfig.from_preset(args.preset)
    gen_config = config.generator_config(ElectraObjective().generator_size)
    for precision in precisions:
        res = measure(precision, impls, args)
        med = {impl: statistics.median(r["step_s"]) for impl, r in res.items()}
        for impl in impls:
            r = res[impl]
            model_tflops = train_flops(config, gen_config, args.seq_len, r["real_tokens"], r["masked_tokens"]) / (
                med[impl] * 1e12)
            row = {"impl": impl, "precision": precision, "tokens_per_s": round(tokens / med[impl], 1),
                   "model_tflops": round(model_tflops, 4)}
            if "gemm_tflops" in r:
                row.update(gemm_tflops=round(r["gemm_tflops"], 4),
                           utilization=round(model_tflops / r["gemm_tflops"], 3))
            row.update({"peak_rss_mb": round(r["peak_rss_mb"], 1), "peak_tensor_mb": round(r["peak_tensor_mb"], 1),
                        "rss_after_build_mb": round(r["rss_after_build_mb"], 1),
                        "step_s_median": round(med[impl], 3), "step_s_min": round(min(r["step_s"]), 3),
                        "real_tokens_per_s": round(r["real_tokens"] / med[impl], 1), "loss": round(r["loss"], 4),
                        "load_avg_1m": r["load_avg_1m"], "step_s": [round(t, 3) for t in r["step_s"]]})
            if impl == "ours-compiled":
                row["compile_s"] = round(r["first_step_s"] - med[impl], 1)  # first step minus a compiled step
            if impl != "reference" and "reference" in res:
                ref = res["reference"]
                row["ratio_to_reference"] = round(med["reference"] / med[impl], 3)
                # fastest step vs fastest step: less sensitive to load bursts that hit one impl's steps
                row["ratio_to_reference_best"] = round(min(ref["step_s"]) / min(r["step_s"]), 3)
                row["memory_ratio_to_reference"] = round(r["peak_rss_mb"] / ref["peak_rss_mb"], 3)
                row["tensor_memory_ratio_to_reference"] = round(r["peak_tensor_mb"] / ref["peak_tensor_mb"], 3)
            print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
