"""A compute budget instead of a step count (docs/design.md §3, "Compute budgets").

`trainer.budget.flops` fixes trainer.max_steps before the first step from the run's nominal FLOPs per step:
full-length sequences (batch_size x max_seq_length tokens) with the most positions masking masks in them
(max_predictions), counted by electra.train_flops, the formula the run logs. It is a function of the settings
only, so resumed and DDP runs get the same steps. `trainer.budget.hours` (device-hours: wall-clock x ranks of the
training steps, as the summary counts them) times `measure_steps` steps of the job after `skip_steps` untimed
ones, fixes max_steps from that rate and records the rate as trainer.budget.step_device_s in config.json, so a
resume keeps the schedule; time lost to restarts does not lengthen it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import torch

from convbert.config import ConvBertConfig
from convbert.electra import max_predictions, train_flops
from convbert.settings import ConfigError, check_int
from convbert.train.dist import DistInfo, all_reduce_sum


@dataclass
class BudgetConfig:
    """The `trainer.budget` group: at most one of flops and hours; none means trainer.max_steps sets the length."""

    flops: float | None = None  # training FLOPs (nominal: full-length sequences)
    hours: float | None = None  # device-hours of training steps (wall-clock x ranks)
    skip_steps: int = 5  # hours: this job's first steps, not timed (compilation, caches, allocator)
    measure_steps: int = 20  # hours: steps timed to fix max_steps
    step_device_s: float | None = None  # hours: device-seconds per step; null: measured, then recorded here

    def __post_init__(self) -> None:
        for key in ("flops", "hours", "step_device_s"):
            v = getattr(self, key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < math.inf):
                raise ConfigError(f"trainer.budget.{key} must be a positive number or null, got {v!r}")
        if self.flops is not None and self.hours is not None:
            raise ConfigError(f"trainer.budget.flops={self.flops:g} and trainer.budget.hours={self.hours:g} are both "
                              "set: give one budget")
        check_int("trainer.budget.skip_steps", self.skip_steps, low=0)
        check_int("trainer.budget.measure_steps", self.measure_steps)

    @property
    def kind(self) -> str | None:
        return "flops" if self.flops is not None else "hours" if self.hours is not None else None

    @property
    def value(self) -> float | None:
        return self.flops if self.flops is not None else self.hours


def step_flops(config: ConvBertConfig, gen_config: ConvBertConfig, batch_size: int, seq_len: int,
               mask_prob: float) -> float:
    """Nominal training FLOPs of one step: every sequence full length, masking its most positions."""
    return train_flops(config, gen_config, seq_len, batch_size * seq_len,
                       batch_size * max_predictions(seq_len, mask_prob))


def flops_steps(budget: float, per_step: float) -> int:
    """The most whole steps within `budget` FLOPs (the run never spends more than its budget)."""
    steps = math.floor(budget / per_step)
    if steps < 1:
        raise ConfigError(f"trainer.budget.flops={budget:.3g} is less than one step ({per_step:.3g} FLOPs)")
    return steps


def hours_steps(hours: float, step_device_s: float) -> int:
    """The most whole steps within `hours` device-hours at `step_device_s` device-seconds per step (at least 1)."""
    return max(1, math.floor(hours * 3600 / step_device_s))


class StepMeter:
    """Times steps skip_steps+1 .. skip_steps+measure_steps of this job; `done(step)` returns the measured
    device-seconds per step (mean over ranks x world size, the same on every rank) once, else None."""

    def __init__(self, budget: BudgetConfig, info: DistInfo, first_step: int):
        self.info, self.start_at = info, first_step + budget.skip_steps
        self.stop_at = self.start_at + budget.measure_steps
        self.t0: float | None = None

    def _now(self) -> float:
        if self.info.device.type == "cuda":  # the steps run asynchronously: time them finished
            torch.cuda.synchronize(self.info.device)
        return time.perf_counter()

    def before_step(self, step: int) -> None:
        if step == self.start_at:
            self.t0 = self._now()

    def done(self, step: int) -> float | None:
        if step != self.stop_at or self.t0 is None:
            return None
        mean = all_reduce_sum(torch.tensor([self._now() - self.t0], dtype=torch.float64,
                                           device=self.info.device)).item() / self.info.world_size
        return mean * self.info.world_size / (self.stop_at - self.start_at)


def budget_record(budget: BudgetConfig, max_steps: int | None, per_step_flops: float, steps: int,
                  device_hours: float) -> dict[str, Any] | None:
    """pretrain_summary.json's "budget": what was budgeted, the steps it gave and the share spent so far."""
    if budget.kind is None:
        return None
    spent = steps * per_step_flops if budget.kind == "flops" else device_hours
    return {"kind": budget.kind, "value": budget.value, "max_steps": max_steps, "spent": spent,
            "used": spent / budget.value, **({"step_device_s": budget.step_device_s} if budget.hours else {})}
