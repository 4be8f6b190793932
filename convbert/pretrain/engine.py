"""ELECTRA-style pretraining run: config -> data -> state -> training loop -> checkpoints -> HF export.

`run(cfg, run_dir)` takes the plain-dict config that pipelines/pretrain.py composes with Hydra. The same code
runs as one process, under torchrun (one or many nodes) and under srun; rank 0 alone logs and writes.
Long-run safety (docs/design.md §3 and README "Long runs"): one job per run dir (a lock), stop signals end
with a checkpoint and PREEMPTED_EXIT_CODE, unreadable checkpoints fall back to older ones, non-finite weights
are never written, and a finished run whose export failed retries only the export when rerun.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.nn.parallel import DistributedDataParallel

from convbert import hf
from convbert.config import ConvBertConfig
from convbert.data import PretrainDataset, ResumableBatches, check_compatible, load_shards_tokenizer, prepare
from convbert.data.dataset import Prefetcher
from convbert.data.shards import data_path as planned_data_path
from convbert.electra import (
    STAT_KEYS,
    ElectraPretrainer,
    example_seeds,
    prepare_batch,
    stat_vector,
    summarize,
    to_device,
    train_flops,
    train_step,
)
from convbert.io import read_json, write_json_atomic
from convbert.model import ConvBertModel
from convbert.pretrain import graphed as graphs
from convbert.pretrain.budget import StepMeter, budget_record, flops_steps, hours_steps, step_flops
from convbert.pretrain.config import (
    MAY_CHANGE_ON_RESUME,
    PretrainConfig,
    parse_config,
    saved_settings,
)
from convbert.pretrain.evaluate import HeldOutEval
from convbert.pretrain.state import TrainState, device_hours
from convbert.settings import ConfigError
from convbert.train.checkpoint import list_checkpoints, load_latest, save_checkpoint
from convbert.train.dist import DistInfo, all_reduce_sum, any_rank, barrier, init_distributed
from convbert.train.divergence import Diverged, loss_diverged
from convbert.train.lock import DirLock
from convbert.train.plot import plot_curves
from convbert.train.precision import Precision, resolve_precision
from convbert.train.runinfo import device_name, git_revision, matmul_tflops, settings_changes
from convbert.train.signals import Preempted, StopRequest
from convbert.train.tracking import Tracker, keep_metrics_until, read_metrics

NEVER_MASKED = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")  # docs/design.md §3 (as ELECTRA; [UNK] may be masked)


# pretrain_summary.json says which FLOPs are which (docs/design.md §3, "Compute budgets")
FLOPS_BASIS = ("flops: the tokens the steps processed (padding excluded); nominal_flops: steps x a full-length "
               "step (batch_size x max_seq_length tokens), what trainer.budget.flops counts")


class ExportError(RuntimeError):
    """Training finished and is checkpointed, but writing hf/ failed."""


# ------------------------------------------------------------------------------------------ checks
def check_resume_config(saved: dict[str, Any], cfg: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run under settings that differ from its config.json (other than
    MAY_CHANGE_ON_RESUME), naming every differing key. Both sides are compared in today's spelling."""
    diff = settings_changes(saved_settings(saved), saved_settings(cfg), MAY_CHANGE_ON_RESUME)
    if diff:
        raise ConfigError(f"{run_dir} holds a run with other settings ({diff}). Resume it with its own settings "
                          "(config.json there), or start a new run with name=<new name>.")


def check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / f".write_test.{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"run dir {run_dir} is not writable: {e}") from e


def check_exportable(config: ConvBertConfig) -> None:
    """Refuse, before any tokenization or training, a model the final transformers export cannot write."""
    try:
        hf.check_exportable(config)
    except ValueError as e:
        raise ConfigError(f"the model cannot be exported to transformers format at the end of the run ({e}); "
                          "change that model setting before training") from e


def check_run_dir(c: PretrainConfig, run_dir: Path) -> None:
    """Resume mode, config.json present and matching, before any data work."""
    ckpts = list_checkpoints(run_dir / "checkpoints")
    if not ckpts:
        return
    if c.resume == "never":
        raise FileExistsError(f"{run_dir / 'checkpoints'} already holds checkpoints; use resume=auto or another "
                              "run name")
    config_file = run_dir / "config.json"
    if not config_file.is_file():
        raise ConfigError(f"{run_dir} holds checkpoints but no {config_file.name}, so its settings cannot be "
                          f"checked; restore {config_file} or start a new run with name=<new name>")
    saved = read_json(config_file, error=ConfigError)
    if not isinstance(saved, dict):
        raise ConfigError(f"{config_file}: expected the run's settings as a JSON object, got "
                          f"{type(saved).__name__}; restore it or start a new run with name=<new name>")
    check_resume_config(saved, c.raw, run_dir)


def check_same_vocabulary(run_dir: Path, data_path: Path) -> None:
    """A run with checkpoints keeps its vocabulary, so that token ids mean what they meant in training. A
    changed corpus file gets a new data dir (its fingerprint changed), whose vocabulary may differ."""
    own = run_dir / "vocab.txt"
    if not list_checkpoints(run_dir / "checkpoints") or not own.is_file():
        return
    if own.read_bytes() != (data_path / "vocab.txt").read_bytes():
        raise ConfigError(f"{run_dir} was trained with the vocabulary in {own}, but the data prepared now "
                          f"({data_path}) has another one: the corpus or tokenizer inputs changed since the run "
                          "started. Resume with the original inputs, or start a new run with name=<new name>.")


# ---------------------------------------------------------------------------------------- setup
def prepare_data(c: PretrainConfig, info: DistInfo) -> Path:
    """Rank 0 builds the shards if missing; the other ranks wait for the finished dir to appear (polling the
    file system, not in a collective whose timeout would abort a long tokenization)."""
    if info.is_main:
        return prepare(**c.data_args(), progress=True)
    path = planned_data_path(**c.data_args())
    deadline = time.monotonic() + c.trainer.data_wait_s
    while not (path / "manifest.json").is_file():
        if time.monotonic() > deadline:
            raise TimeoutError(f"rank {info.rank} waited {c.trainer.data_wait_s:.0f} s for rank 0 to build {path}; "
                               "raise trainer.data_wait_s, or run pipelines.prepare with the same settings first")
        time.sleep(2.0)
    return prepare(**c.data_args(), progress=False)


@dataclass
class LoopContext:
    """What the loop needs besides the state: settings, data and where things go."""

    c: PretrainConfig
    info: DistInfo
    run_dir: Path
    data_path: Path
    config: ConvBertConfig
    net: torch.nn.Module
    micro: int
    special_ids: list[int]
    mask_id: int
    tracker: Tracker | None
    stop: StopRequest
    evaluate: HeldOutEval | None
    seq_len: int
    step_flops: float  # nominal FLOPs of a step (what trainer.budget.flops counts)
    progress: Any = None  # a tqdm bar on rank 0
    graphed: graphs.GraphedStep | None = None  # trainer.cuda_graphs: the whole step as one graph
    peak_tflops: float | None = None  # the device's measured matmul rate: MFU's denominator (rank 0)
    first_row: tuple[float, float, float] | None = None  # (time, tokens, FLOPs) at this job's first log row
    last_row: tuple[float, float, float] | None = None  # ... and at its latest

    @property
    def ckpt_dir(self) -> Path:
        return self.run_dir / "checkpoints"


def build_state(c: PretrainConfig, info: DistInfo, config: ConvBertConfig, dataset: PretrainDataset,
                micro: int) -> TrainState:
    torch.manual_seed(c.seed)  # the same initial weights on every rank
    model = ElectraPretrainer(config, c.objective).to(info.device)
    if info.rank:  # dropout masks must differ across ranks; rank 0 keeps a 1-process run's stream
        torch.manual_seed(c.seed + 1_000_003 * info.rank)
    optimizer = c.optim.build(model)
    return TrainState(model, optimizer, c.optim.schedule(optimizer, c.trainer.max_steps),
                      Precision(resolve_precision(c.trainer.precision, info.device), info.device),
                      ResumableBatches(dataset, micro, c.seed, info.rank, info.world_size), info)


def resume(state: TrainState, r: LoopContext) -> None:
    """Load the newest readable checkpoint with finite weights of this model's shape (older ones are tried when
    it is not)."""
    own = {k: v.shape for k, v in state.model.state_dict().items()}

    def usable(s: dict) -> None:
        saved = s["model"]
        if set(saved) != set(own):
            extra, missing = sorted(set(saved) - set(own)), sorted(set(own) - set(saved))
            parts = [f"{len(names)} {what} (e.g. {names[0]})" for names, what in
                     ((missing, "of this model's weights missing"), (extra, "weights this model lacks")) if names]
            raise ValueError(f"written for another model: {'; '.join(parts)}")
        shape = next((k for k, v in saved.items() if v.shape != own[k]), None)
        if shape is not None:
            raise ValueError(f"written for another model shape: {shape} is {list(saved[shape].shape)}, this model's "
                             f"is {list(own[shape])}")
        bad = [k for k, v in saved.items() if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise ValueError(f"non-finite weights ({bad[0]})")

    found = load_latest(r.ckpt_dir, usable)
    if found is not None:
        path, saved = found
        state.load_state_dict(saved)
        if r.info.is_main:
            print(f"resumed from {path} at step {state.step}", flush=True)


# ---------------------------------------------------------------------------------------- budgets
def budget_steps(c: PretrainConfig, run_dir: Path, per_step: float, info: DistInfo) -> None:
    """Fix trainer.max_steps from a budget before the first step: a FLOP budget always, an hours budget when its
    rate is known (given, or measured by this run before a restart: read back from config.json)."""
    b = c.trainer.budget
    if b.flops is not None:
        c.trainer.max_steps = flops_steps(b.flops, per_step)
        say(info, f"budget: {b.flops:.3g} FLOPs at {per_step:.3g} nominal FLOPs a step (batch_size x "
                  f"max_seq_length tokens) gives trainer.max_steps={c.trainer.max_steps}")
    elif b.hours is not None:
        if b.step_device_s is None:
            b.step_device_s = recorded_step_time(run_dir)
            raw_budget(c)["step_device_s"] = b.step_device_s
        if b.step_device_s is not None:
            c.trainer.max_steps = hours_steps(b.hours, b.step_device_s)
            say(info, f"budget: {b.hours:.3g} device-hours at {b.step_device_s:.4g} device-s a step (recorded "
                      f"in config.json) gives trainer.max_steps={c.trainer.max_steps}")


def recorded_step_time(run_dir: Path) -> float | None:
    """The step time an hours budget measured in this run before (config.json), if the run has checkpoints."""
    if not list_checkpoints(run_dir / "checkpoints") or not (run_dir / "config.json").is_file():
        return None
    saved = read_json(run_dir / "config.json", error=ConfigError)
    return ((saved.get("trainer") or {}).get("budget") or {}).get("step_device_s")


def fix_hours_budget(state: TrainState, r: LoopContext, step_device_s: float, measured: int) -> None:
    """An hours budget has measured its rate: fix max_steps and the schedule, and record the rate."""
    c = r.c
    b = c.trainer.budget
    b.step_device_s = raw_budget(c)["step_device_s"] = step_device_s
    c.trainer.max_steps = max(hours_steps(b.hours, step_device_s), state.step)
    if c.trainer.max_steps == state.step:
        say(r.info, f"budget: trainer.budget.hours={b.hours:g} was spent while measuring: the run ends here")
    state.follow_schedule(c.optim.factor(c.trainer.max_steps))
    if r.info.is_main:
        write_json_atomic(r.run_dir / "config.json", c.raw)
        if r.progress is not None:
            r.progress.total = c.trainer.end
    say(r.info, f"budget: {b.hours:.3g} device-hours at {step_device_s:.4g} device-s a step (measured over "
                f"steps {state.step - measured + 1}-{state.step}, recorded in config.json as "
                f"trainer.budget.step_device_s) gives trainer.max_steps={c.trainer.max_steps}")


def raw_budget(c: PretrainConfig) -> dict[str, Any]:
    """trainer.budget in the settings config.json records."""
    return c.raw.setdefault("trainer", {}).setdefault("budget", {})


def budget_used(state: TrainState, r: LoopContext) -> float | None:
    """The share of the budget spent at this step (FLOPs: nominal, steps x a full step's)."""
    b, totals = r.c.trainer.budget, state.totals
    if b.kind == "flops":
        return state.step * r.step_flops / b.flops
    if b.kind == "hours":
        return device_hours(totals, r.info.world_size) / b.hours
    return None


def say(info: DistInfo, message: str) -> None:
    if info.is_main:
        print(message, flush=True)


# -------------------------------------------------------------------------------------- the loop
def train(state: TrainState, r: LoopContext) -> None:
    t = r.c.trainer
    last_ckpt = state.step
    meter = StepMeter(t.budget, r.info, state.step) if t.max_steps is None else None
    while t.end is None or state.step < t.end:
        if meter is not None:
            meter.before_step(state.step)
        t0 = time.perf_counter()
        one_step(state, r)
        state.totals["train_time_s"] += time.perf_counter() - t0
        if meter is not None and (rate := meter.done(state.step)) is not None:
            fix_hours_budget(state, r, rate, meter.stop_at - meter.start_at)
            meter = None
        if r.progress is not None:
            r.progress.update(1)
        kept = t.keeps(state.step)  # a kept step gets a row, held-out metrics and its totals up to date
        row = log_window(state, r) if state.step % t.log_every == 0 or state.step == t.end or kept else {}
        if r.evaluate is not None and (state.step == t.end or kept
                                       or (t.eval_every and state.step % t.eval_every == 0)):
            row.update({f"heldout_{k}": v for k, v in r.evaluate(state.model, state.precision).items()})
        if row:
            r.tracker.log(row, state.step)
        if "mlm_loss" in row:  # logged first: the diverged row is there to see
            check_losses(row, state, r)
        if state.step % t.ckpt_every == 0 or state.step == t.end or kept:
            checkpoint(state, r)
            last_ckpt = state.step
        if stop_requested(state, r):
            path = checkpoint(state, r) if last_ckpt != state.step else r.ckpt_dir / f"step_{state.step:08d}.pt"
            raise Preempted(f"stopped by {r.stop.signal_name or 'a stop signal on another rank'} at step "
                            f"{state.step}; checkpoint {path}; rerun the same command to resume")


def one_step(state: TrainState, r: LoopContext) -> None:
    """One optimizer step over the global batch: grad_accum micro-batches on every rank. No host sync
    (statistics stay on the device until log_window), except with the skip-bad-steps policy."""
    micro_batches = [next_micro_batch(state, r, a) for a in range(r.c.trainer.grad_accum)]
    norms = torch.stack([sum(b["mask_valid"].sum() for b in micro_batches),
                         sum(b["attention_mask"].sum() for b in micro_batches)]).float()
    norms = all_reduce_sum(norms)  # global counts: exact loss normalisation across ranks/micro-batches
    lr = state.optimizer.param_groups[0]["lr"]  # this step's lr (all groups share it in pretraining)
    if r.graphed is None or not graphed_step(state, r, micro_batches, norms, lr):
        eager_step(state, r, micro_batches, norms)
        state.optimizer.zero_grad(set_to_none=True)  # (the graphed step keeps its gradients' memory)
    state.lr = lr
    state.scheduler.step()
    state.step += 1


GRAPH_TRIAL_STEPS = 3  # CUDA graph trees warm up, then record: by this step the graph has been built


def graphed_step(state: TrainState, r: LoopContext, micro_batches: list[dict[str, Any]], norms: torch.Tensor,
                 lr: float) -> bool:
    """The step through trainer.cuda_graphs' graph; False when, under `auto`, building it failed in this job's
    first steps: then the run goes on with the compiled step (saying why) and this step is taken that way."""
    try:
        window, norm = r.graphed(micro_batches, norms, lr)
    except Exception as e:
        if r.c.trainer.cuda_graphs is True or r.graphed.calls >= GRAPH_TRIAL_STEPS:
            raise
        say(r.info, f"cuda graphs off: building the graphed step failed ({type(e).__name__}: {str(e)[:300]}); "
                    "going on with the compiled step (trainer.cuda_graphs=false skips the attempt)")
        r.graphed = None
        state.optimizer.zero_grad(set_to_none=True)
        compile_or_wrap(state, r)
        return False
    state.window += window
    state.grad_norm = norm.clone()  # the next replay reuses the output's memory
    return True


def eager_step(state: TrainState, r: LoopContext, micro_batches: list[dict[str, Any]], norms: torch.Tensor) -> None:
    """Forward and backward of every micro-batch, then the clipped optimizer step, op by op."""
    t, info = r.c.trainer, r.info
    for a, b in enumerate(micro_batches):
        _, stats = train_step(r.net, b, norms, state.precision, float(info.world_size),
                              sync=a == len(micro_batches) - 1)  # all-reduce gradients once a step
        state.window += stat_vector(stats)
    params = [p for p in state.model.parameters() if p.requires_grad]
    skip = t.max_bad_steps and state.precision.scaler is None and skip_bad_step(state, r, params)
    if not skip:  # the grad norm stays a device tensor, read in log_window
        state.grad_norm = state.precision.step(state.optimizer, params, r.c.optim.max_grad_norm or 0)


def next_micro_batch(state: TrainState, r: LoopContext, a: int) -> dict[str, Any]:
    """Micro-batch `a` of this rank in this step, masked with per-example seeds (docs/design.md §3), on the
    device. The seeds depend on the example's place in the global batch, not on rank or accumulation."""
    info = r.info
    seeds = example_seeds(r.c.seed, state.step, (a * info.world_size + info.rank) * r.micro, r.micro)
    b = prepare_batch(next(state.feed), r.special_ids, r.mask_id, seeds, r.c.objective)  # masks on the host
    return to_device(b, info.device)


def skip_bad_step(state: TrainState, r: LoopContext, params: list[torch.Tensor]) -> bool:
    """trainer.max_bad_steps > 0: a step whose gradients are not finite is skipped (one host sync per step)."""
    norm = torch.nn.utils.clip_grad_norm_(params, float("inf"))
    if torch.isfinite(norm):
        return False
    state.totals["skipped_steps"] = state.totals.get("skipped_steps", 0) + 1
    print(f"step {state.step + 1}: non-finite gradients (norm {float(norm)}), update skipped "
          f"({int(state.totals['skipped_steps'])} of at most {r.c.trainer.max_bad_steps})", file=sys.stderr)
    if state.totals["skipped_steps"] > r.c.trainer.max_bad_steps:
        raise_non_finite(state, r, f"more than trainer.max_bad_steps={r.c.trainer.max_bad_steps} steps had "
                                   "non-finite gradients")
    state.grad_norm = norm
    return True


def reduced_window(state: TrainState) -> dict[str, float]:
    """The open window's summed statistics over all ranks (a collective: call it on every rank)."""
    return dict(zip(STAT_KEYS, all_reduce_sum(state.window.clone()).tolist(), strict=True))


def log_window(state: TrainState, r: LoopContext) -> dict[str, Any]:
    """The metrics of the steps since the last row: the one host sync of the window."""
    summed = reduced_window(state)
    state.window = state.new_window()
    metrics = summarize(summed)
    obj = r.c.objective
    metrics["loss"] = obj.mlm_weight * metrics["mlm_loss"] + obj.rtd_weight * metrics["rtd_loss"]
    grad_norm = float(state.grad_norm)
    totals, now = state.totals, time.perf_counter()
    window_flops = train_flops(r.config, state.model.generator_config, r.seq_len, summed["tokens"], summed["masked"])
    totals["tokens"] += summed["tokens"]
    totals["masked"] += summed["masked"]
    totals["flops"] += window_flops
    elapsed, state.window_start = now - state.window_start, now
    r.last_row = (now, totals["tokens"], totals["flops"])
    r.first_row = r.first_row or r.last_row
    metrics.update(lr=state.lr, grad_norm=grad_norm, tokens=totals["tokens"], flops=totals["flops"],
                   nominal_flops=state.step * r.step_flops,
                   device_hours=device_hours(totals, r.info.world_size))
    if elapsed > 0:
        metrics.update(throughput(summed["tokens"], window_flops, elapsed, r))
    used = budget_used(state, r)
    if used is not None:
        metrics["budget_used"] = used
    if not all(map(_finite, metrics.values())) and not state.weights_finite():
        raise_non_finite(state, r, f"non-finite loss/gradients and weights by step {state.step} (grad norm "
                                   f"{grad_norm})")
    if r.progress is not None:
        speed = {"tok/s": f"{metrics['tokens_per_s']:.3g}"} if "tokens_per_s" in metrics else {}
        if "mfu" in metrics:
            speed["mfu"] = f"{metrics['mfu']:.1%}"
        r.progress.set_postfix(loss=f"{metrics['loss']:.3f}", refresh=False, **speed, **budget_postfix(metrics, r))
    return metrics


def throughput(tokens: float, flops: float, seconds: float, r: LoopContext) -> dict[str, float]:
    """Tokens per second and MFU (model FLOPs per second over the measured matmul rate of every device) of
    `seconds` in which the run trained `tokens` tokens (docs/design.md §3 counts the FLOPs)."""
    out = {"tokens_per_s": tokens / seconds}
    if r.peak_tflops:
        out["mfu"] = flops / seconds / (r.peak_tflops * 1e12 * r.info.world_size)
    return out


def budget_postfix(metrics: dict[str, Any], r: LoopContext) -> dict[str, str]:
    """The progress line's budget part: share used and what was spent, e.g. 'budget=37% of 3e+14 FLOPs'."""
    b = r.c.trainer.budget
    if b.kind is None:
        return {}
    spent, unit = ((metrics["nominal_flops"], "FLOPs") if b.kind == "flops"
                   else (metrics["budget_used"] * b.value, "device-h"))
    return {"budget": f"{metrics['budget_used']:.0%} ({spent:.3g} of {b.value:.3g} {unit})"}


def _finite(v: Any) -> bool:
    return not isinstance(v, float) or v == v and abs(v) != float("inf")


def check_losses(metrics: dict[str, float], state: TrainState, r: LoopContext) -> None:
    """Divergence that stays finite: a window's MLM or RTD loss far above an untrained model's (ln V for the
    generator's V-way prediction, ln 2 for the discriminator's). Every rank sees the same reduced metrics."""
    v = r.config.vocab_size
    why = (loss_diverged("mlm_loss", metrics["mlm_loss"], math.log(v), f"ln {v}")
           or loss_diverged("rtd_loss", metrics["rtd_loss"], math.log(2), "ln 2"))
    if why:
        raise_non_finite(state, r, f"training diverged by step {state.step}: {why}")


def raise_non_finite(state: TrainState, r: LoopContext, what: str) -> None:
    last = list_checkpoints(r.ckpt_dir)
    raise Diverged(f"{what}: stopping without writing a checkpoint or export of these weights. Last checkpoint "
                   f"(checked when written): {last[-1] if last else 'none'}. Try a lower optim.lr or a longer "
                   "optim.warmup_steps, trainer.precision=fp32, or trainer.max_bad_steps > 0 to skip rare steps "
                   "with non-finite gradients.")


def stop_requested(state: TrainState, r: LoopContext) -> bool:
    """Whether to stop after this step. Under DDP the ranks agree every trainer.stop_check_every steps (one
    small all-reduce), so that all stop at the same step whichever rank got the signal."""
    if not r.info.distributed:
        return r.stop.requested
    if state.step % r.c.trainer.stop_check_every:
        return False
    return any_rank(r.stop.requested, r.info.device)


def checkpoint(state: TrainState, r: LoopContext) -> Path:
    """Every rank contributes (RNG states are gathered); rank 0 writes, after checking the weights and the
    losses of the steps not yet logged."""
    if not state.weights_finite():
        raise_non_finite(state, r, f"non-finite weights at step {state.step}")
    window = reduced_window(state)
    if window["tokens"] > 0:
        check_losses(summarize(window), state, r)
    saved = state.state_dict()
    path = r.ckpt_dir / f"step_{state.step:08d}.pt"
    if r.info.is_main:
        path = save_checkpoint(r.ckpt_dir, state.step, saved, r.c.trainer.keep_last,
                               keep=r.c.trainer.keeps(state.step))
    barrier()
    return path


# ------------------------------------------------------------------------------------- finishing
def finish(state: TrainState, r: LoopContext) -> dict[str, Any]:
    """Summary, export and plot (rank 0). Rerunning a finished run comes straight here: only these retry."""
    c, info = r.c, r.info
    hours = device_hours(state.totals, info.world_size)
    summary = {
        "steps": state.step, "finished": c.trainer.max_steps is not None and state.step >= c.trainer.max_steps,
        "tokens": int(state.totals["tokens"]), "flops": state.totals["flops"],
        "nominal_flops": state.step * r.step_flops, "flops_basis": FLOPS_BASIS,
        "budget": budget_record(c.trainer.budget, c.trainer.max_steps, r.step_flops, state.step, hours),
        "device_hours": hours,
        "device": device_name(info.device), "world_size": info.world_size, "data_dir": str(r.data_path),
        "model": {"name": f"convbert-{c.model.preset}", **r.config.to_dict()}, "git_revision": git_revision(),
    }
    if state.totals.get("skipped_steps"):
        summary["skipped_steps"] = int(state.totals["skipped_steps"])
    if r.first_row and r.last_row[0] > r.first_row[0]:  # from this job's first log row: compiling comes before it
        (t0, tokens0, flops0), (t1, tokens1, flops1) = r.first_row, r.last_row
        summary["throughput"] = {**throughput(tokens1 - tokens0, flops1 - flops0, t1 - t0, r),
                                 "matmul_tflops": r.peak_tflops, "tokens_measured": tokens1 - tokens0}
    if not info.is_main:
        return summary
    rows = read_metrics(r.run_dir)
    train_rows = [row for row in rows if "mlm_loss" in row]
    if train_rows:
        summary["final_metrics"] = {k: v for k, v in train_rows[-1].items() if k not in ("time_s",)
                                    and not k.startswith("heldout_")}
    held = [row for row in rows if "heldout_mlm_loss" in row]
    if held:
        summary["heldout_metrics"] = {"step": held[-1]["step"],
                                      **{k[8:]: v for k, v in held[-1].items() if k.startswith("heldout_")}}
    if not state.weights_finite():
        raise_non_finite(state, r, "non-finite weights at the end of training")
    try:
        export(state.model.discriminator, r.data_path, r.run_dir)
    except Exception as e:
        ckpts = list_checkpoints(r.ckpt_dir)
        raise ExportError(f"training reached step {state.step} and is saved in {ckpts[-1] if ckpts else r.ckpt_dir}, "
                          f"but the export to {r.run_dir / 'hf'} failed: {type(e).__name__}: {e}. Fix the cause "
                          "and rerun the same command: a finished run only retries the export.") from e
    write_json_atomic(r.run_dir / "pretrain_summary.json", summary)
    plot_curves(rows, ["mlm_loss", "rtd_loss", "mlm_accuracy", "disc_accuracy"], r.run_dir / "loss.png",
                overlay="heldout_")
    budget = {f"budget_{k}": v for k, v in (summary["budget"] or {}).items()}
    r.tracker.summary({**summary.get("final_metrics", {}), "nominal_flops": summary["nominal_flops"], **budget,
                       **{f"heldout_{k}": v for k, v in summary.get("heldout_metrics", {}).items()}})
    return summary


def export(discriminator: ConvBertModel, vocab_dir: Path, run_dir: Path) -> None:
    """The discriminator in transformers format (run_dir/hf/), with the vocabulary it was trained on (the
    tokenizer.json and vocab.txt in vocab_dir: the data dir, or a run dir, which has copies)."""
    tmp = run_dir / ".hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        discriminator.to_hf(tmp)
        for f in ("tokenizer.json", "vocab.txt"):
            shutil.copy2(vocab_dir / f, tmp / f)
        shutil.rmtree(run_dir / "hf", ignore_errors=True)
        os.replace(tmp, run_dir / "hf")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# -------------------------------------------------------------------------------------------- run
def run(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """Train (or resume, or only finish) the run in `run_dir`; returns its summary. Raises Preempted
    (exit status 75) after checkpointing when a stop signal arrives."""
    c = parse_config(cfg)  # every cheap check, before any tokenization
    run_dir = Path(run_dir)
    check_exportable(c.model.build(vocab_size=c.model.fields.get("vocab_size") or 30522))
    info = init_distributed(c.trainer.device)
    micro = c.trainer.micro_batch(info.world_size)
    graphs_reason(c, info.device, info.world_size)  # cuda_graphs=true where they cannot run: an error, no files
    if c.trainer.threads:
        torch.set_num_threads(c.trainer.threads)
    with contextlib.ExitStack() as stack:
        if info.is_main:
            check_writable(run_dir)
            stack.enter_context(DirLock(run_dir, "pretraining run"))
        check_run_dir(c, run_dir)
        path = prepare_data(c, info)  # a signal here ends the job at once: nothing to checkpoint yet
        stop = stack.enter_context(StopRequest())
        return _train_prepared(c, info, run_dir, path, micro, stop, stack)


def graphs_reason(c: PretrainConfig, device: torch.device, world_size: int) -> str | None:
    """Why trainer.cuda_graphs cannot be on for this run (None: it can); an error when it was asked for."""
    t = c.trainer
    reason = graphs.cuda_graphs_reason(device, resolve_precision(t.precision, device), world_size, t.max_bad_steps,
                                       t.compile, t.cuda_graphs)
    if t.cuda_graphs is True and reason:
        raise ConfigError(f"trainer.cuda_graphs=true: {reason}")
    return reason


def how_to_step(state: TrainState, r: LoopContext) -> None:
    """trainer.cuda_graphs, trainer.compile and DDP: how the step runs, never what it computes."""
    t, info = r.c.trainer, r.info
    reason = graphs_reason(r.c, info.device, info.world_size)
    if t.cuda_graphs and reason is None:
        r.graphed = graphs.GraphedStep(state.model, state.optimizer, state.precision, r.c.optim.max_grad_norm,
                                       t.grad_accum, world_size=info.world_size)  # no DDP: it all-reduces itself
        say(info, "cuda graphs: the whole step is compiled as one graph and replayed (trainer.cuda_graphs)")
        # it updates the weights without optimizer.step(), as it must: torch's scheduler would say otherwise
        warnings.filterwarnings("ignore", r"Detected call of `lr_scheduler\.step\(\)` before", UserWarning)
        return
    if t.cuda_graphs == "auto" and info.device.type == "cuda":
        say(info, f"cuda graphs off: {reason}")
    compile_or_wrap(state, r)


def compile_or_wrap(state: TrainState, r: LoopContext) -> None:
    """The step without CUDA graphs: the pretrainer compiled (trainer.compile) and, across processes, DDP."""
    t, info = r.c.trainer, r.info
    if t.compile is True or t.compile == "auto" and info.device.type == "cuda":
        # the whole pretrainer: both phases' forward (and through AOT autograd their backward) as one graph
        # each; make gpu-check measured 1.3-1.7x eager's step on an H200 after 96-160 s of compiling
        state.model.compile()
    if info.distributed:
        # find_unused_parameters: each phase of train_step leaves the other model's own parameters unused
        r.net = DistributedDataParallel(state.model, device_ids=[info.device.index] if info.device.type == "cuda"
                                        else None, find_unused_parameters=True, gradient_as_bucket_view=True)


def _train_prepared(c: PretrainConfig, info: DistInfo, run_dir: Path, data_path: Path, micro: int,
                    stop: StopRequest, stack: contextlib.ExitStack) -> dict[str, Any]:
    """Model, state and loop once the data dir is ready: resume, train, finish."""
    check_same_vocabulary(run_dir, data_path)
    tokenizer = load_shards_tokenizer(data_path)
    config = c.model.build(tokenizer.get_vocab_size())
    check_compatible(data_path, config.vocab_size)
    dataset = PretrainDataset(data_path)
    if dataset.max_seq_length > config.max_position_embeddings:
        raise ConfigError(f"shards have max_seq_length {dataset.max_seq_length} > the model's "
                          f"{config.max_position_embeddings} positions")
    special_ids = [i for t in NEVER_MASKED if (i := tokenizer.token_to_id(t)) is not None]
    mask_id = tokenizer.token_to_id("[MASK]")
    if mask_id is None:
        raise ConfigError(f"tokenizer in {data_path} has no [MASK] token")
    evaluate = None
    if c.trainer.eval_examples and (dataset.manifest.get("heldout") or {}).get("index", {}).get("rows"):
        evaluate = HeldOutEval(data_path, c.trainer.eval_examples, micro, special_ids, mask_id, info)
    elif c.trainer.eval_examples and info.is_main:
        print(f"no held-out evaluation: {data_path} has no held-out examples (heldout_fraction="
              f"{c.heldout_fraction})", file=sys.stderr)

    per_step = step_flops(config, config.generator_config(c.objective.generator_size), c.trainer.batch_size,
                          dataset.max_seq_length, c.objective.mask_prob)
    budget_steps(c, run_dir, per_step, info)
    state = build_state(c, info, config, dataset, micro)
    r = LoopContext(c, info, run_dir, data_path, config, state.model, micro, special_ids, mask_id, None, stop,
                    evaluate, dataset.max_seq_length, per_step)
    resume(state, r)
    if info.is_main:
        keep_metrics_until(run_dir, state.step)
        for f in ("tokenizer.json", "vocab.txt"):
            shutil.copy2(data_path / f, run_dir / f)
        write_json_atomic(run_dir / "config.json", c.raw)
    how_to_step(state, r)
    t = c.tracking
    r.tracker = Tracker(run_dir, c.raw, mode=t.mode, project=t.project, group=t.group or "pretrain",
                        name=t.name or c.name, job_type="pretrain", tags=t.tags, enabled=info.is_main)
    stack.callback(r.tracker.finish)
    state.feed = Prefetcher(state.batches, pin=info.device.type == "cuda")
    stack.callback(state.feed.close)
    if c.trainer.end is not None and state.step >= c.trainer.end and info.is_main:
        print(f"{run_dir} is already at step {state.step}: writing its export and summary only", flush=True)
    if c.trainer.progress and info.is_main and (c.trainer.end is None or state.step < c.trainer.end):
        from tqdm import tqdm

        r.progress = stack.enter_context(tqdm(total=c.trainer.end, initial=state.step, desc="pretrain",
                                              unit="step", dynamic_ncols=True))
    if info.is_main and (c.trainer.end is None or state.step < c.trainer.end):  # steps to come: MFU's denominator
        r.peak_tflops = matmul_tflops(info.device, state.precision.dtype)
    state.model.train()
    train(state, r)
    return finish(state, r)
