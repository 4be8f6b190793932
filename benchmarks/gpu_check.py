"""GPU readiness check (`make gpu-check`): what a first pretraining run on a GPU machine would trip over,
measured in one script of a few minutes. Prints JSON lines, one per check, each with "ok"; exits 1 when a
check failed.

  env        device, torch, native bf16, visible GPUs
  matmul     the device's measured bf16 (and fp32/TF32) matmul rate: the denominator of MFU
  step       per preset (small, base) x (eager, compiled, graphed): one ELECTRA step in bf16 (masking on the host,
             generator and discriminator phases, backward, clipped fused AdamW): tokens/s, peak memory,
             MFU = model FLOPs per second (convbert.electra.train_flops) / measured bf16 matmul rate, host
             syncs per step (torch.cuda.set_sync_debug_mode; must be 0), SDPA kernels actually used with and
             without padding (must not be the math fallback on CUDA); `graphed` is trainer.cuda_graphs' step
             (convbert/pretrain/graphed.py: the whole step, AdamW included, one CUDA graph), and its row
             adds the speed-up over eager and the weights' L2 distance from eager's after 10 steps, over
             eager's own update (diff_over_update, must be < 0.05)
  fp16       50 steps in fp16 autocast with GradScaler: losses and weights finite
  ddp        2 ranks (nccl) against 1 rank on the same global batch: same weights after 2 steps; skipped
             with a note when fewer than 2 GPUs are visible
  finetune   a small sequence-classification fine-tune (synthetic SST-2-like task) with precision=auto
  conv       the conv branch's kernels alone at each preset's shapes (bf16): forward+backward ms of the torch
             path and of the Triton kernels (convbert/kernels: dynamic conv with its softmax; depthwise key
             conv against cuDNN's grouped conv1d), and the Triton results' largest differences from torch's
  run        the real run: `python -m pipelines.pretrain experiment=convbert-small corpus=pydocs` for 300 steps
             (its defaults: trainer.cuda_graphs=auto, held-out evaluation and checkpoints every 100 steps);
             its pretrain_summary.json tokens/s must reach 90% of the fastest small step timed above

    python benchmarks/gpu_check.py [--device cuda] [--presets small,base] [--batch-size 128]
                                         [--checks step,...] [--modes eager,compiled,graphed] [--profile]

`--device cpu` is a dry run at tiny sizes (1 layer, a few steps, aot_eager instead of inductor, gloo instead
of nccl) that the test suite runs, so that the script works when a GPU machine is at hand.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import os
import resource
import socket
import sys
import tempfile
import time
import traceback
import warnings

import torch
import torch.nn.functional as F
from bench_common import MASK, NEVER_MASKED, OpCounter, make_batch

from convbert.config import ConvBertConfig
from convbert.electra import (
    ElectraObjective,
    ElectraPretrainer,
    example_seeds,
    prepare_batch,
    to_device,
    train_flops,
    train_step,
)
from convbert.model import ConvBertForSequenceClassification
from convbert.pretrain.graphed import GraphedStep
from convbert.train import Precision, build_optimizer, linear_schedule
from convbert.train.precision import auto_precision, native_bf16
from convbert.train.runinfo import matmul_tflops

T = 128
ELECTRA_BATCH = {"small": 128, "medium-small": 128, "base": 256}  # ELECTRA's pretraining batch sizes


def batch_size_of(preset: str, args) -> int:
    """--batch-size, or ELECTRA's pretraining batch for the preset."""
    return args.batch_size or ELECTRA_BATCH.get(preset, 128)


def emit(row: dict) -> bool:
    print(json.dumps(row), flush=True)
    return bool(row.get("ok", True))


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_memory_mb(device: torch.device) -> float:
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # process peak RSS on CPU


def sdpa_kernels(names: collections.Counter) -> list[str]:
    return sorted(n.removeprefix("aten.") for n in names if "scaled_dot_product" in n and "backward" not in n)


def count_syncs(fn, device: torch.device) -> int | None:
    """Synchronizing CUDA calls made by fn (torch.cuda.set_sync_debug_mode); None off CUDA."""
    if device.type != "cuda":
        fn()
        return None
    torch.cuda.set_sync_debug_mode("warn")
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            fn()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    return sum("synchroniz" in str(w.message) for w in caught)


class Stepper:
    """One process's ELECTRA training step on `device`, as the training loop runs it: masking on the CPU
    batch, a pinned copy sent without blocking, train_step, the clipped optimizer step."""

    def __init__(self, config: ConvBertConfig, device: torch.device, precision: str, compile_backend: str | None,
                 tf32: bool = True, seed: int = 0, graphed: bool = False):
        torch.manual_seed(seed)
        self.device, self.objective = device, ElectraObjective()
        self.model = ElectraPretrainer(config, self.objective).to(device).train()
        self.optimizer = build_optimizer(self.model, 2e-4, 0.01)
        self.precision = Precision(precision, device, tf32=tf32)
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        self.graphed = None
        if graphed:  # what trainer.cuda_graphs runs; the dry run traces the same graph with aot_eager
            cuda = device.type == "cuda"
            self.graphed = GraphedStep(self.model, self.optimizer, self.precision, 1.0, 1, backend=compile_backend,
                                       mode="reduce-overhead" if cuda else None)
        elif compile_backend:
            self.model.compile(fullgraph=True, backend=compile_backend)
        self.net = self.model

    def batch(self, data: dict, step: int, first: int = 0) -> tuple[dict, float, float]:
        """-> (device batch, real tokens, masked tokens): the counts come from the host copy, for free."""
        B = data["input_ids"].shape[0]
        b = prepare_batch(data, NEVER_MASKED, MASK, example_seeds(0, step, first, B), self.objective)
        counts = float(b["attention_mask"].sum()), float(b["mask_valid"].sum())
        if self.device.type == "cuda":
            b = {k: v.pin_memory() if isinstance(v, torch.Tensor) else v for k, v in b.items()}
        return to_device(b, self.device), *counts

    def step(self, b: dict, norms: torch.Tensor, loss_scale: float = 1.0) -> torch.Tensor:
        if self.graphed is not None:  # the same total loss as train_step's, from the summed statistics
            window = self.graphed([b], norms, 2e-4)[0]
            obj = self.objective
            return obj.mlm_weight * window[0] / norms[0] + obj.rtd_weight * window[1] / norms[1]
        loss, _ = train_step(self.net, b, norms, self.precision, loss_scale)
        self.precision.step(self.optimizer, self.params, 1.0)
        self.optimizer.zero_grad(set_to_none=True)
        return loss


def profile_steps(step, device: torch.device, step_s: float, n: int = 3, top: int = 8) -> dict:
    """Device busy time per step (the kernels' summed durations) over n profiled steps, against the unprofiled
    step time `step_s`: a busy fraction well below 1 means the host's kernel launches are the bottleneck.
    Also the kernels that take the most device time. (Profiling slows the host, so the profiled wall time
    is not the step time.)"""
    from torch.profiler import ProfilerActivity, profile

    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    sync(device)
    with profile(activities=activities) as prof:
        for _ in range(n):
            step()
        sync(device)
    time_ms: collections.Counter = collections.Counter()
    calls: collections.Counter = collections.Counter()
    for e in prof.events():  # kernels only: user annotations (Optimizer.step#...) span kernels on the GPU too
        if e.device_type == torch.autograd.DeviceType.CUDA and not getattr(e, "is_user_annotation", False):
            time_ms[e.name] += e.time_range.elapsed_us() / 1e3 / n
            calls[e.name] += 1
    busy_s = sum(time_ms.values()) / 1e3
    return {"device_busy_s_per_step": round(busy_s, 4), "busy_fraction": round(busy_s / step_s, 3),
            "kernels_per_step": sum(calls.values()) // n,
            "top_kernels": [{"name": name[:80], "ms_per_step": round(ms, 3), "calls_per_step": calls[name] // n}
                            for name, ms in time_ms.most_common(top)]}


def check_step(preset: str, mode: str, args, matmul: float) -> dict:
    """One ELECTRA step of `preset` in `mode` (eager | compiled | graphed), timed after warm-up."""
    device = torch.device(args.device)
    config = ConvBertConfig.from_preset(preset, **args.overrides)
    batch_size = batch_size_of(preset, args)
    row: dict = {"check": "step", "preset": preset, "mode": mode, "precision": args.precision,
                 "batch_size": batch_size, "seq_len": args.seq_len}
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    s = Stepper(config, device, args.precision, args.compile_backend if mode != "eager" else None,
                graphed=mode == "graphed")
    data = make_batch(batch_size, args.seq_len, config.vocab_size, padded=True)
    prepared = [s.batch(data, i) for i in range(args.warmup + args.steps)]
    b0, tokens, masked = prepared[0]
    norms = torch.tensor([masked, tokens], device=device)
    t0 = time.perf_counter()
    s.step(b0, norms)  # compiles when compiled
    sync(device)
    row["first_step_s"] = round(time.perf_counter() - t0, 2)
    for b, _, _ in prepared[1:args.warmup]:
        s.step(b, norms)  # graphed: CUDA graph trees record the graph in these
    sync(device)
    row["warmup_s"] = round(time.perf_counter() - t0, 2)  # compile + capture
    t0 = time.perf_counter()
    for b, _, _ in prepared[args.warmup:]:
        loss = s.step(b, norms)
    sync(device)
    step_s = (time.perf_counter() - t0) / args.steps
    flops = train_flops(config, s.model.generator_config, args.seq_len, tokens, masked)
    row.update(step_s=round(step_s, 4), tokens_per_s=round(batch_size * args.seq_len / step_s, 1),
               model_tflops=round(flops / step_s / 1e12, 3), mfu=round(flops / step_s / 1e12 / matmul, 4),
               peak_memory_mb=round(peak_memory_mb(device), 1), loss=float(loss.detach()))
    row["syncs_per_step"] = count_syncs(lambda: s.step(prepared[-1][0], norms), device)
    if args.profile:
        row["profile"] = profile_steps(lambda: s.step(prepared[-1][0], norms), device, step_s)
    if mode == "eager":
        kernels = {}
        for padded in (True, False):
            b, tok, msk = s.batch(make_batch(batch_size, args.seq_len, config.vocab_size, padded), 0)
            with OpCounter() as names:
                s.step(b, torch.tensor([msk, tok], device=device))
            kernels["padded" if padded else "unpadded"] = sdpa_kernels(names.ops)
        row["sdpa_kernels"] = kernels
    sync(device)
    row["ok"] = math.isfinite(row["loss"]) and row["syncs_per_step"] in (0, None)
    if device.type == "cuda" and mode == "eager":
        row["ok"] &= not any("math" in k for ks in row["sdpa_kernels"].values() for k in ks)
    args.rates[preset, mode] = row["tokens_per_s"]
    if mode == "graphed":
        row.update(graphed_vs_eager(preset, args))
        row["ok"] &= row["diff_over_update"] is not None and row["diff_over_update"] < 0.05
    return row


def graphed_vs_eager(preset: str, args) -> dict:
    """The graphed step against the eager one from the same weights on the same batches (dropout off: the two
    draw their masks differently): the weights' L2 distance after the steps, relative to how far the eager
    steps moved them (and the largest single difference), and the speed-up where the eager step was timed."""
    device = torch.device(args.device)
    config = ConvBertConfig.from_preset(preset, **{**args.overrides, "hidden_dropout_prob": 0.0,
                                                   "attention_probs_dropout_prob": 0.0})
    batch_size = batch_size_of(preset, args)
    data = make_batch(batch_size, args.seq_len, config.vocab_size, padded=True)
    moved = {}
    for graphed in (False, True):
        s = Stepper(config, device, args.precision, args.compile_backend if graphed else None, graphed=graphed)
        start = [p.detach().clone() for p in s.params]
        for i in range(args.compare_steps):
            b, tokens, masked = s.batch(data, i)
            s.step(b, torch.tensor([masked, tokens], device=device))
        sync(device)
        moved[graphed] = (start, [p.detach().float() for p in s.params])
        del s
    start, eager = moved[False]
    diffs = [g - e for g, e in zip(moved[True][1], eager, strict=True)]
    diff = torch.cat([d.flatten() for d in diffs]).norm()
    update = torch.cat([(e - w.float()).flatten() for e, w in zip(eager, start, strict=True)]).norm()
    out = {"compare_steps": args.compare_steps, "max_weight_diff_vs_eager": max(float(d.abs().max()) for d in diffs),
           # the weights' distance from eager's, over the distance eager's steps moved them (L2 over all weights)
           "diff_over_update": round(float(diff / update), 4) if update else None}
    if (preset, "eager") in args.rates:
        out["speedup_vs_eager"] = round(args.rates[preset, "graphed"] / args.rates[preset, "eager"], 3)
    return out


def check_fp16(args) -> dict:
    device = torch.device(args.device)
    config = ConvBertConfig.from_preset(args.fp16_preset, **args.overrides)
    s = Stepper(config, device, "fp16", None)
    data = make_batch(args.batch_size or 128, args.seq_len, config.vocab_size, padded=True)
    losses = []
    for i in range(args.fp16_steps):
        b, tokens, masked = s.batch(data, i)
        losses.append(s.step(b, torch.tensor([masked, tokens], device=device)))
    losses = [float(v) for v in losses]
    scale = s.precision.scaler.get_scale()
    finite_weights = all(bool(torch.isfinite(p).all()) for p in s.model.parameters())
    return {"check": "fp16", "preset": args.fp16_preset, "steps": args.fp16_steps, "first_loss": losses[0],
            "last_loss": losses[-1], "scale": scale, "finite_weights": finite_weights,
            "ok": all(math.isfinite(v) for v in losses) and finite_weights and scale > 0}


def _ddp_run(rank: int, world: int, port: int, device_type: str, out: str, args) -> None:
    """Rank `rank` of `world` (world 1: the reference) runs 2 steps on its share of the same global batch."""
    from torch.nn.parallel import DistributedDataParallel

    dist = torch.distributed
    if world > 1:
        os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo", rank=rank, world_size=world)
    device = torch.device(f"cuda:{rank}") if device_type == "cuda" else torch.device("cpu")
    if device_type == "cuda":
        torch.cuda.set_device(device)
    config = ConvBertConfig.from_preset("tiny", hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                        **args.overrides)
    s = Stepper(config, device, "fp32", None, tf32=False)
    if world > 1:
        s.net = DistributedDataParallel(s.model, device_ids=[rank] if device_type == "cuda" else None,
                                        find_unused_parameters=True)
    B = args.ddp_batch_size
    data = make_batch(B, args.seq_len, config.vocab_size, padded=True, seed=1)
    for step in range(2):
        share = B // world
        part = {k: v[rank * share:(rank + 1) * share] for k, v in data.items()}
        b, _, _ = s.batch(part, step, first=rank * share)
        full = prepare_batch(data, NEVER_MASKED, MASK, example_seeds(0, step, 0, B), s.objective)
        norms = torch.tensor([float(full["mask_valid"].sum()), float(data["attention_mask"].sum())], device=device)
        s.step(b, norms, float(world))
    if rank == 0:
        torch.save({k: v.cpu() for k, v in s.model.state_dict().items()}, out)
    if world > 1:
        dist.destroy_process_group()


def check_ddp(args) -> dict:
    world = 2
    if args.device == "cuda" and torch.cuda.device_count() < world:
        return {"check": "ddp", "skipped": f"needs 2 GPUs, {torch.cuda.device_count()} visible", "ok": True}
    import torch.multiprocessing as mp

    with tempfile.TemporaryDirectory() as tmp, socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        one, two = os.path.join(tmp, "one.pt"), os.path.join(tmp, "two.pt")
        _ddp_run(0, 1, port, args.device, one, args)
        mp.spawn(_ddp_run, args=(world, port, args.device, two, args), nprocs=world)
        w1, w2 = torch.load(one), torch.load(two)
    diff = max((w1[k] - w2[k]).abs().max().item() for k in w1)
    return {"check": "ddp", "backend": "nccl" if args.device == "cuda" else "gloo", "world_size": world,
            "max_weight_diff": diff, "ok": diff < 1e-4}


def finetune_accuracy(args, precision: Precision) -> tuple[float, float]:
    """Fine-tune a fresh model with the fine-tuning recipe (lr 1e-4, 10% linear warmup, clipped AdamW) on a
    sentence classification whose label is whether a cue token occurs -> (last loss, held-out accuracy)."""
    device = precision.device
    torch.manual_seed(0)
    config = ConvBertConfig.from_preset(args.finetune_preset, **args.overrides)
    model = ConvBertForSequenceClassification(config, num_labels=2).to(device)
    optimizer = build_optimizer(model, 1e-4, 0.01)
    schedule = linear_schedule(optimizer, args.finetune_steps // 10, args.finetune_steps)
    params = [p for p in model.parameters() if p.requires_grad]

    def batch(seed: int) -> dict[str, torch.Tensor]:
        b = make_batch(32, 64, config.vocab_size, padded=True, seed=1000 + seed)
        labels = torch.randint(0, 2, (32,), generator=torch.Generator().manual_seed(seed))
        b["input_ids"][labels == 1, 1] = 7  # the cue token
        b["labels"] = labels
        return to_device(b, device)

    model.train()
    for i in range(args.finetune_steps):
        b = batch(i)
        with precision.autocast():
            logits = model(b["input_ids"], b["attention_mask"], b["token_type_ids"])
            loss = F.cross_entropy(logits.float(), b["labels"])
        precision.backward(loss)
        precision.step(optimizer, params, 1.0)
        optimizer.zero_grad(set_to_none=True)
        schedule.step()
    model.eval()
    with torch.no_grad(), precision.autocast():
        b = batch(10_000)
        accuracy = float((model(b["input_ids"], b["attention_mask"], b["token_type_ids"]).argmax(-1)
                          == b["labels"]).float().mean())
    return float(loss.detach()), accuracy


def check_finetune(args) -> dict:
    """precision=auto's fine-tune, and fp32's beside it where they differ: a model that trains learns the cue."""
    device = torch.device(args.device)
    row: dict = {"check": "finetune", "preset": args.finetune_preset, "steps": args.finetune_steps, "ok": True}
    for kind in dict.fromkeys([auto_precision(device), "fp32"]):
        last, accuracy = finetune_accuracy(args, Precision(kind, device))
        row[kind] = {"last_loss": last, "accuracy": accuracy}
        # the dry run is too short to learn
        row["ok"] &= math.isfinite(last) and (accuracy >= 0.8 or args.device == "cpu")
    return row


def _timed_ms(fn, device: torch.device, reps: int) -> float:
    fn()  # warm-up: Triton compiles here
    sync(device)
    t0 = time.perf_counter()
    for _ in range(reps):
        fn()
    sync(device)
    return (time.perf_counter() - t0) / reps * 1e3


def check_conv(preset: str, args) -> dict:
    """The two conv kernels of a mixed-attention layer, torch path vs Triton, forward + backward, bf16."""
    from convbert import kernels, ops

    device = torch.device(args.device)
    config = ConvBertConfig.from_preset(preset, **args.overrides)
    B, T = batch_size_of(preset, args), args.seq_len
    N, D, k, C = config.num_sa_heads, config.attention_head_size, config.conv_kernel_size, config.hidden_size
    g = torch.Generator(device=device).manual_seed(0)
    v, logits = (torch.randn(B, T, N, m, device=device, generator=g, dtype=torch.bfloat16, requires_grad=True)
                 for m in (D, k))
    x = torch.randn(B, T, C, device=device, generator=g, dtype=torch.bfloat16, requires_grad=True)
    w = torch.randn(k, C, device=device, generator=g, requires_grad=True)
    keep = torch.ones(B, T, dtype=torch.bool, device=device)
    keep[1::2, T * 3 // 4:] = False  # every other row padded
    conv_keep, pad = ops.conv_tap_mask(keep, k), ~keep[:, :, None]
    cases = {"dynamic_conv": (lambda: ops.dynamic_conv(v, logits, conv_keep), (v, logits), "TRITON_CONV"),
             "depthwise_conv": (lambda: ops.depthwise_conv_same(x, w, pad), (x, w), "TRITON_DEPTHWISE")}
    row: dict = {"check": "conv", "preset": preset, "shape": [B, T, N, D, k], "triton": kernels.HAVE_TRITON,
                 "ok": True}
    for name, (fn, inputs, switch) in cases.items():
        results = {}
        for use in (False, True) if kernels.HAVE_TRITON and device.type == "cuda" else (False,):
            setattr(ops, switch, use)
            try:
                def step(fn=fn, inputs=inputs):
                    out = fn()
                    return [out.detach(), *torch.autograd.grad(out.float().square().mean(), inputs)]
                results[use] = step()
                row[f"{name}_{'triton' if use else 'torch'}_ms"] = round(_timed_ms(step, device, args.steps), 3)
            finally:
                setattr(ops, switch, False)
        if True in results:
            diff = max(float((a.float() - b.float()).abs().max() / (b.float().abs().max() + 1e-12))
                       for a, b in zip(results[True], results[False], strict=True))
            row[f"{name}_triton_max_rel_diff"] = diff
            row["ok"] &= diff < 0.05
    return row


def check_run(args) -> dict:
    """The pipeline's own run on the embedded corpus, against the bench: data loading, logging, evaluation and
    checkpoints must not stall the device. The dry run is the smoke experiment for a few steps."""
    import subprocess

    cpu = args.device == "cpu"
    steps = 4 if cpu else 300
    with tempfile.TemporaryDirectory() as tmp:
        experiment = ["experiment=smoke"] if cpu else ["experiment=convbert-small", "corpus=pydocs"]
        command = [sys.executable, "-m", "pipelines.pretrain", *experiment, f"trainer.max_steps={steps}",
                   f"trainer.log_every={1 if cpu else 50}",
                   f"trainer.ckpt_every={2 if cpu else 100}", f"trainer.eval_every={2 if cpu else 100}",
                   "trainer.progress=false", "tracking=disabled", f"paths.runs_dir={tmp}/runs",
                   f"data_dir={tmp}/data", f"hydra.run.dir={tmp}/run", f"trainer.device={args.device}"]
        t0 = time.perf_counter()
        proc = subprocess.run(command, capture_output=True, text=True, cwd=os.path.dirname(os.path.dirname(
            os.path.abspath(__file__))))
        row: dict = {"check": "run", "steps": steps, "wall_s": round(time.perf_counter() - t0, 1),
                     "graphed": "cuda graphs: the whole step" in proc.stdout + proc.stderr}
        if proc.returncode != 0:
            return {**row, "ok": False, "error": proc.stderr[-2000:]}
        with open(os.path.join(tmp, "run", "pretrain_summary.json")) as f:
            speed = json.load(f)["throughput"]
    row.update(tokens_per_s=round(speed["tokens_per_s"], 1), mfu=round(speed.get("mfu") or 0.0, 4))
    bench = {m: v for (p, m), v in args.rates.items() if p == ("tiny" if cpu else "small")}
    if not bench:  # e.g. --checks run alone
        return {**row, "ratio": None, "note": "no step of that preset timed in this call: nothing to compare with",
                "ok": row["tokens_per_s"] > 0}
    mode = max(bench, key=bench.get)
    row.update(bench_mode=mode, bench_tokens_per_s=bench[mode], ratio=round(row["tokens_per_s"] / bench[mode], 3))
    row["ok"] = row["tokens_per_s"] > 0 and (cpu or row["ratio"] >= 0.9)
    return row


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, plus each check's sizes: the GPU's, or the dry run's (tiny sizes; aot_eager traces what
    inductor would compile, without a C++ compiler)."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", choices=("cuda", "cpu"))
    ap.add_argument("--presets", default=None, help="default: small,base on cuda, tiny on cpu")
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--checks", default="matmul,conv,step,fp16,ddp,finetune,run")
    ap.add_argument("--modes", default="eager,compiled,graphed", help="the step's modes")
    ap.add_argument("--profile", action="store_true", help="add device busy time and top kernels to each step")
    ap.add_argument("--backend", default=None, help="torch.compile backend (default: inductor; aot_eager on cpu)")
    args = ap.parse_args(argv)
    cpu = args.device == "cpu"
    args.presets = (args.presets or ("tiny" if cpu else "small,base")).split(",")
    args.batch_size = args.batch_size or (4 if cpu else None)  # None: ELECTRA's batch of each preset
    args.compare_steps, args.rates = (2 if cpu else 10), {}
    args.seq_len = 32 if cpu else T
    args.overrides = {"num_hidden_layers": 1, "vocab_size": 500} if cpu else {}
    args.warmup, args.steps = (1, 1) if cpu else (3, 10)
    args.precision = "bf16"
    args.compile_backend = args.backend or ("aot_eager" if cpu else "inductor")
    args.fp16_preset, args.fp16_steps = ("tiny", 2) if cpu else ("small", 50)
    args.ddp_batch_size = 4 if cpu else 16
    args.finetune_preset, args.finetune_steps = ("tiny", 3) if cpu else ("small", 300)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpu = args.device == "cpu"
    if not cpu and not torch.cuda.is_available():
        emit({"check": "env", "ok": False, "error": "no CUDA device; use --device cpu for a dry run"})
        return 1
    checks = args.checks.split(",")

    device = torch.device(args.device)
    env = {"check": "env", "device": torch.cuda.get_device_name(device) if not cpu else "cpu",
           "torch": torch.__version__, "native_bf16": native_bf16(device),
           "gpus": torch.cuda.device_count() if not cpu else 0, "ok": True}
    if not cpu:
        env["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
    ok = emit(env)
    started = time.perf_counter()
    n, reps = (512, 3) if cpu else (8192, 20)
    matmul = matmul_tflops(device, torch.bfloat16, n, reps)
    if "matmul" in checks:
        torch.backends.cuda.matmul.allow_tf32 = False
        fp32 = matmul_tflops(device, torch.float32, n, reps)
        torch.backends.cuda.matmul.allow_tf32 = True
        tf32 = matmul_tflops(device, torch.float32, n, reps) if not cpu else None
        ok &= emit({"check": "matmul", "n": n, "bf16_tflops": round(matmul, 3), "fp32_tflops": round(fp32, 3),
                    "tf32_tflops": None if tf32 is None else round(tf32, 3), "ok": matmul > 0})
    # compiled steps last: their compile time is the long, uncertain part, and a run cut short by a time
    # limit should still have reported every other check
    modes = args.modes.split(",")
    runs = [("conv", lambda p=p: check_conv(p, args)) for p in args.presets]
    runs += [("step", lambda p=p: check_step(p, "eager", args, matmul)) for p in args.presets if "eager" in modes]
    runs += [("fp16", lambda: check_fp16(args)), ("ddp", lambda: check_ddp(args)),
             ("finetune", lambda: check_finetune(args))]
    runs += [("step", lambda p=p, m=m: check_step(p, m, args, matmul)) for m in ("compiled", "graphed")
             for p in args.presets if m in modes]
    runs += [("run", lambda: check_run(args))]
    for name, fn in runs:
        if name not in checks:
            continue
        try:
            ok &= emit(fn())
        except Exception as e:  # one failed check must not hide the others' results
            ok &= emit({"check": name, "ok": False, "error": f"{type(e).__name__}: {e}",
                        "traceback": traceback.format_exc(limit=3)})
    emit({"check": "done", "ok": ok, "wall_s": round(time.perf_counter() - started, 1)})
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
