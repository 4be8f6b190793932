"""The epoch loop (`fit`): AdamW + layer-wise lr decay, warmup/decay, mixed precision, dev evaluation after each
epoch; checkpoints at every epoch end and on SIGTERM/SIGUSR1/SIGINT, and resumes bit-identically.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from convbert.config import ConvBertConfig
from convbert.finetune.config import FinetuneTrainerConfig
from convbert.finetune.sampler import LengthBucketSampler
from convbert.train import Precision, Tracker
from convbert.train.checkpoint import CheckpointError, find_latest, load_checkpoint, save_checkpoint
from convbert.train.divergence import Diverged, loss_diverged
from convbert.train.optim import OptimConfig
from convbert.train.precision import resolve_precision
from convbert.train.signals import Preempted, StopRequest
from convbert.train.tracking import keep_metrics_until

log = logging.getLogger(__name__)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def forward_flops(config: ConvBertConfig, n_params: int, batch: int, length: int) -> float:
    """Forward FLOPs of one [batch, length] pass: 2 per non-embedding parameter per token plus the
    attention products (QK^T, AV: 4·T·N·d_h per token and layer) and the lightweight conv
    (2·k·N·d_h per token and layer). Backward ~ 2x forward."""
    inner = config.num_sa_heads * config.attention_head_size
    conv = 2 * config.conv_kernel_size * inner if config.attention == "mixed" else 0
    per_layer = 4 * length * inner + conv
    return float(batch * length * (2 * n_params + config.num_hidden_layers * per_layer))


def count_flop_params(model: torch.nn.Module) -> int:
    """Parameters that cost multiply-adds per token (embedding tables are lookups)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".embeddings." not in f".{n}")


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict_batches(model: torch.nn.Module, lengths: np.ndarray, batch_size: int,
                    collate: Callable[[list[int]], dict[str, torch.Tensor]], device: torch.device, autocast
                    ) -> Iterator[tuple[list[int], Any, float]]:
    """Evaluation batches in length order: (indices, model outputs, forward FLOPs) per batch."""
    model.eval()
    n_params = count_flop_params(model)
    for idx in LengthBucketSampler(lengths, batch_size, shuffle=False):
        batch = move(collate(idx), device)
        with autocast():
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        yield idx, out, forward_flops(model.config, n_params, *batch["input_ids"].shape)


def check_diverged(model: torch.nn.Module, train_loss: float, untrained_loss: tuple[float, str] | None,
                   when: str) -> None:
    """Diverged weights still predict a class, and that accuracy would be reported (and win a search): stop on
    non-finite weights, or an epoch's mean training loss far above an untrained model's. (The fp16 scaler
    skips the steps whose gradients overflow, so only a real divergence gets here.)"""
    bad = [name for name, p in model.named_parameters() if not torch.isfinite(p).all()]
    why = f"non-finite weights ({', '.join(bad[:3])}{', ...' if len(bad) > 3 else ''})" if bad else None
    if not bad and untrained_loss is not None:
        why = loss_diverged("the mean training loss", train_loss, *untrained_loss)
    if why:
        loss = "" if why.startswith("the mean") else f", mean training loss {train_loss:.4g}"
        raise Diverged(f"training diverged {when}: {why}{loss}; lower optim.lr")


@dataclass
class FitState:
    """Where training is: saved in every checkpoint, so that a resumed job continues bit-identically."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch done
    examples: int = 0
    train_flops: float = 0.0
    eval_flops: float = 0.0
    train_time_s: float = 0.0
    loss_sum: torch.Tensor | None = None  # the epoch's summed training loss (kept on the device)
    loss_n: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitResult:
    steps: int
    examples_seen: int
    train_flops: float
    eval_flops: float
    train_time_s: float
    history: list[dict[str, Any]]  # one entry per epoch: {"epoch", "train_loss", **eval metrics}
    resumed_from: int | None = None  # the checkpoint's step when the job continued one


def _resume(ckpt_dir: Path | None, parts: dict[str, Any], tracker: Tracker | None) -> FitState | None:
    latest = find_latest(ckpt_dir) if ckpt_dir is not None else None
    if latest is None:
        if tracker is not None and tracker.enabled:  # rows of an attempt killed before its first checkpoint
            keep_metrics_until(tracker.run_dir, 0)
        return None
    ck = load_checkpoint(latest)
    try:
        for name, obj in parts.items():
            obj.load_state_dict(ck[name])
    except (KeyError, RuntimeError, ValueError) as e:  # another model's (or job's) checkpoint
        raise CheckpointError(f"cannot resume from {latest}: it does not fit this job ({type(e).__name__}: "
                              f"{str(e).splitlines()[0]}); move it away to start the job over") from e
    torch.set_rng_state(ck["rng"])
    state = FitState(**ck["fit"])
    if tracker is not None and tracker.enabled:  # steps logged after the checkpoint are logged again
        keep_metrics_until(tracker.run_dir, state.step)
    log.info("resuming from %s (step %d, epoch %d, batch %d)", latest, state.step, state.epoch + 1, state.batch)
    return state


@dataclass
class _Loop:
    """What the epoch loop shares: the parts a checkpoint holds, the state, and where to log and save."""

    model: torch.nn.Module
    parts: dict[str, Any]  # model, optimizer, scheduler, precision: what a checkpoint holds besides the state
    s: FitState
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor]
    max_grad_norm: float
    device: torch.device
    tracker: Tracker | None
    ckpt_dir: Path | None
    stop: StopRequest | None
    log_every: int

    def __post_init__(self) -> None:
        self.optimizer, self.scheduler = self.parts["optimizer"], self.parts["scheduler"]
        self.precision: Precision = self.parts["precision"]
        self.params = [p for g in self.optimizer.param_groups for p in g["params"]]
        self.n_flop_params, self.config = count_flop_params(self.model), getattr(self.model, "config", None)

    def save(self) -> None:
        if self.ckpt_dir is not None:
            state = {name: obj.state_dict() for name, obj in self.parts.items()}
            save_checkpoint(self.ckpt_dir, self.s.step, {**state, "rng": torch.get_rng_state(),
                                                         "fit": dataclasses.asdict(self.s)}, keep_last=1)

    def step(self, batch: dict[str, torch.Tensor]) -> None:
        s, batch = self.s, move(batch, self.device)
        with self.precision.autocast():
            loss = self.loss_fn(self.model, batch)
        self.precision.backward(loss)
        self.precision.step(self.optimizer, self.params, self.max_grad_norm)
        self.optimizer.zero_grad(set_to_none=True)
        self.scheduler.step()
        s.step, s.batch = s.step + 1, s.batch + 1
        b, t = batch["input_ids"].shape
        s.examples += b
        if self.config is not None:
            s.train_flops += 3 * forward_flops(self.config, self.n_flop_params, b, t)
        s.loss_sum += loss.detach().float()
        s.loss_n += 1
        if self.tracker is not None and s.step % self.log_every == 0:
            self.tracker.log({"train/loss": loss.item(), "train/lr": self.scheduler.get_last_lr()[0],
                              "train/examples": s.examples}, s.step)

    def train_epoch(self, epoch: int, batches: Iterable[dict[str, torch.Tensor]], total: int) -> None:
        """The rest of epoch `epoch` (a resumed one continues after its saved batch), up to `total` steps."""
        s = self.s
        self.model.train()
        t0 = time.perf_counter()
        s.loss_sum = torch.zeros((), device=self.device) if s.loss_sum is None else s.loss_sum.to(self.device)
        for batch in itertools.islice(batches, s.batch, None):
            if s.step >= total:
                break
            self.step(batch)
            if self.stop is not None and self.stop.requested:
                s.train_time_s += time.perf_counter() - t0
                self.save()
                raise Preempted(f"stopped by {self.stop.signal_name} at step {s.step} (checkpointed); rerun the "
                                "same command to continue")
        s.train_time_s += time.perf_counter() - t0

    def end_epoch(self, epoch: int, evaluate: Callable[[int], dict[str, float]] | None,
                  untrained_loss: tuple[float, str] | None) -> None:
        """Divergence check, dev evaluation, the epoch's row, a checkpoint; Preempted if a stop was asked."""
        s = self.s
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": (s.loss_sum / max(s.loss_n, 1)).item()}
        check_diverged(self.model, row["train_loss"], untrained_loss, f"in epoch {epoch + 1} (step {s.step})")
        if evaluate is not None:
            self.model.eval()
            with torch.no_grad(), self.precision.autocast():
                metrics = evaluate(epoch)
            s.eval_flops += float(metrics.pop("_flops", 0.0))
            row.update(metrics)
        s.history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if self.tracker is not None:
            self.tracker.log({k if k in ("epoch", "train_loss") else f"eval/{k}": v for k, v in row.items()}, s.step)
        s.epoch, s.batch, s.loss_sum, s.loss_n = epoch + 1, 0, None, 0
        self.save()
        if self.stop is not None and self.stop.requested:
            raise Preempted(f"stopped by {self.stop.signal_name} after epoch {epoch + 1} (checkpointed); rerun the "
                            "same command to continue")


def fit(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    steps_per_epoch: int,
    epochs: int,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    optim: OptimConfig,
    trainer: FinetuneTrainerConfig,
    device: torch.device,
    lr: float | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    tracker: Tracker | None = None,
    ckpt_dir: Path | None = None,
    stop: StopRequest | None = None,
    precision: Precision | None = None,
    untrained_loss: tuple[float, str] | None = None,
) -> FitResult:
    """Train `model` for `epochs` epochs (trainer.max_steps may stop it earlier). batches(epoch) yields dicts of
    tensors (on CPU; moved here) with "input_ids" [B, T], the same ones for the same epoch; loss_fn(model, batch)
    -> scalar loss.
    evaluate(epoch) runs after every epoch and returns metrics (logged as eval/<name>; "_flops" counted).
    With ckpt_dir: continues from its latest checkpoint, checkpoints after every epoch and, when `stop` was
    requested, after the current step, then raises Preempted. `precision`: the caller's (its fp16 scaler is
    checkpointed here), else trainer.precision's. `untrained_loss`: what an untrained model's loss_fn scores,
    and how to say it (e.g. (0.693, "ln 2")), to stop a run that diverged without leaving finite numbers.
    The model ends in eval mode."""
    if not epochs:
        raise ValueError("fit needs epochs >= 1")
    total = epochs * steps_per_epoch
    if trainer.max_steps is not None:
        total = min(total, trainer.max_steps)
    if total < 1:
        raise ValueError("no training steps: the training set is empty")
    model.to(device)
    optimizer = optim.build(model, lr)
    parts = {"model": model, "optimizer": optimizer, "scheduler": optim.schedule(optimizer, total),
             "precision": precision or Precision(resolve_precision(trainer.precision, device), device)}
    resumed = _resume(ckpt_dir, parts, tracker)
    resumed_from = None if resumed is None else resumed.step
    loop = _Loop(model, parts, resumed or FitState(), loss_fn, optim.max_grad_norm or 0.0, device, tracker,
                 ckpt_dir, stop, trainer.log_every)
    for epoch in range(loop.s.epoch, epochs):
        if loop.s.step >= total:
            break
        loop.train_epoch(epoch, batches(epoch), total)
        loop.end_epoch(epoch, evaluate, untrained_loss)
    model.eval()
    s = loop.s
    return FitResult(s.step, s.examples, s.train_flops, s.eval_flops, s.train_time_s, s.history, resumed_from)
