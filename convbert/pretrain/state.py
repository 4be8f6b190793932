"""Everything a pretraining run resumes from: models, optimizer, schedule, precision scaler, data position,
every rank's RNG, the step, running totals and the open metrics window, behind state_dict/load_state_dict."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.distributed as dist

from convbert.data import ResumableBatches
from convbert.data.dataset import Prefetcher
from convbert.electra import STAT_KEYS, ElectraPretrainer
from convbert.train.dist import DistInfo
from convbert.train.precision import Precision


def new_totals() -> dict[str, float]:
    return {"tokens": 0.0, "masked": 0.0, "flops": 0.0, "train_time_s": 0.0}


def device_hours(totals: dict[str, float], world_size: int) -> float:
    """Device-hours of the training steps so far: their wall-clock time on every rank."""
    return totals["train_time_s"] * world_size / 3600


def rng_state(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (dropout is the only unkeyed randomness), gathered for rank 0 to save."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if info.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(info.device)
    if not info.distributed:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def set_rng_state(states: list[dict], info: DistInfo) -> None:
    if len(states) != info.world_size:
        raise ValueError(f"checkpoint was written by {len(states)} ranks, this run has {info.world_size}; "
                         "resume with the same number of processes")
    state = states[info.rank]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and info.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], info.device)


@dataclass
class TrainState:
    model: ElectraPretrainer
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LambdaLR
    precision: Precision
    batches: ResumableBatches
    info: DistInfo
    step: int = 0
    totals: dict[str, float] = field(default_factory=new_totals)
    window: torch.Tensor | None = None  # summed STAT_KEYS since the last log row (on the device)
    feed: Prefetcher | None = None  # the batches as the loop takes them (set once the state is loaded)
    grad_norm: torch.Tensor = field(default_factory=lambda: torch.tensor(float("nan")))  # of the last step
    lr: float = float("nan")  # of the last step
    window_start: float = field(default_factory=time.perf_counter)

    def __post_init__(self) -> None:
        if self.window is None:
            self.window = self.new_window()

    def new_window(self) -> torch.Tensor:
        return torch.zeros(len(STAT_KEYS), dtype=torch.float64, device=self.info.device)

    def state_dict(self) -> dict[str, Any]:
        """Collective under DDP (the RNG states of all ranks are gathered): call it on every rank."""
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(), "scaler": self.precision.state_dict(),
            "data": (self.feed or self.batches).state_dict(), "rng": rng_state(self.info), "step": self.step,
            "totals": dict(self.totals), "window": all_ranks_window(self.window, self.info),
            "config": self.model.config.to_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.precision.load_state_dict(state["scaler"])
        self.batches.load_state_dict(state["data"])
        set_rng_state(state["rng"], self.info)
        self.step, self.totals = int(state["step"]), dict(state["totals"])
        window = state.get("window")  # absent in checkpoints written before windows were saved
        self.window = self.new_window() if window is None else window[self.info.rank].to(self.info.device)
        # the saved lr is the old schedule's: re-derive it from this one (trainer.max_steps may have changed)
        self.rederive_lr()

    def follow_schedule(self, factor: Callable[[int], float]) -> None:
        """Take lr factor(step) from the next step on: a schedule fixed mid-run (an hours budget)."""
        self.scheduler.lr_lambdas = [factor] * len(self.optimizer.param_groups)
        self.rederive_lr()

    def rederive_lr(self) -> None:
        for group, base, factor in zip(self.optimizer.param_groups, self.scheduler.base_lrs,
                                       self.scheduler.lr_lambdas, strict=True):
            group["lr"] = base * factor(self.step)

    def weights_finite(self) -> bool:
        """One reduction over all parameters (a host sync): checked before any checkpoint or export."""
        norms = torch._foreach_norm([p.detach() for p in self.model.parameters()])
        return bool(torch.isfinite(torch.stack(norms)).all())


def all_ranks_window(window: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """[world_size, len(STAT_KEYS)] on the CPU: each rank's open window, so a resume logs the same rows."""
    if not info.distributed:
        return window.detach().cpu()[None]
    out = [torch.zeros_like(window) for _ in range(info.world_size)]
    dist.all_gather(out, window)
    return torch.stack(out).cpu()
