"""Two models side by side: per-task difference of medians with a bootstrap confidence interval."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from convbert.report.aggregate import Row, Table
from convbert.report.schema import ReportError
from convbert.report.tasks import ELECTRA_TASKS, MAIN_METRIC, TASK_METRICS


@dataclass(frozen=True)
class Difference:
    task: str  # a task name, or "electra8" for ELECTRA's GLUE average
    metric: str
    a: float | None  # median of a
    b: float | None
    diff: float | None  # a - b
    low: float | None  # confidence interval of the difference; None when a side has < 2 seeds
    high: float | None
    n_a: int
    n_b: int

    @property
    def significant(self) -> bool | None:
        """CI excludes 0; None when no CI could be formed."""
        if self.low is None or self.high is None:
            return None
        return self.low > 0 or self.high < 0


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    n_boot: int
    confidence: float
    seed: int
    rows: tuple[Difference, ...]


def _medians(x: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """Median of n_boot resamples (with replacement) of the seeds in x: [n_boot]."""
    return np.median(x[rng.integers(0, len(x), size=(n_boot, len(x)))], axis=1)


def _values(row: Row, task: str, metric: str) -> np.ndarray:
    cell = row.cells.get(task)
    if cell is None or metric not in cell.values:
        return np.empty(0)
    return np.asarray(cell.values[metric], dtype=np.float64)


def _interval(d: np.ndarray, confidence: float) -> tuple[float, float]:
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(d, [tail, 1.0 - tail])
    return float(lo), float(hi)


def _task_diff(ra: Row, rb: Row, task: str, metric: str, n_boot: int, confidence: float,
               rng: np.random.Generator) -> tuple[Difference, np.ndarray | None]:
    xa, xb = _values(ra, task, metric), _values(rb, task, metric)
    a = float(np.median(xa)) if len(xa) else None
    b = float(np.median(xb)) if len(xb) else None
    diff = None if a is None or b is None else a - b
    if len(xa) < 2 or len(xb) < 2:
        return Difference(task, metric, a, b, diff, None, None, len(xa), len(xb)), None
    # seeds of different checkpoints are not paired: resample each side on its own
    d = _medians(xa, n_boot, rng) - _medians(xb, n_boot, rng)
    return Difference(task, metric, a, b, diff, *_interval(d, confidence), len(xa), len(xb)), d


def compare(table: Table, a: str, b: str, n_boot: int = 10000, confidence: float = 0.95,
            seed: int = 0) -> Comparison:
    """Per task and metric, median(a) - median(b) with a percentile-bootstrap CI over seeds.

    Also ELECTRA's 8-task GLUE average (mean of per-task medians, each task resampled on its own) when
    every task has >= 2 seeds on both sides. Deterministic for a given seed.
    """
    if not 0.0 < confidence < 1.0:
        raise ReportError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 100:
        raise ReportError(f"n_boot must be >= 100 for a usable interval, got {n_boot}")
    ra, rb = table.row(a), table.row(b)
    for r in (ra, rb):
        if r.is_reference:
            raise ReportError(f"{r.label!r} is a published row without per-seed scores; compare our own runs")
    rng = np.random.default_rng(seed)
    rows, main_draws = [], {}
    tasks = [t for t in table.tasks if t in ra.cells or t in rb.cells]
    for task in tasks:
        for metric in TASK_METRICS[task]:
            diff, draws = _task_diff(ra, rb, task, metric, n_boot, confidence, rng)
            rows.append(diff)
            if metric == MAIN_METRIC[task]:
                main_draws[task] = draws
    rows.append(_average_diff(ra, rb, main_draws, confidence))
    return Comparison(a, b, n_boot, confidence, seed, tuple(rows))


def _average_diff(ra: Row, rb: Row, draws: dict[str, np.ndarray | None], confidence: float) -> Difference:
    av_a, av_b = ra.averages["electra8"].value, rb.averages["electra8"].value
    diff = None if av_a is None or av_b is None else av_a - av_b
    lo = hi = None
    if all(draws.get(t) is not None for t in ELECTRA_TASKS):
        lo, hi = _interval(np.mean([draws[t] for t in ELECTRA_TASKS], axis=0), confidence)
    n_a = min((len(ra.cells[t].seeds) if t in ra.cells else 0) for t in ELECTRA_TASKS)
    n_b = min((len(rb.cells[t].seeds) if t in rb.cells else 0) for t in ELECTRA_TASKS)
    return Difference("electra8", "mean of main metrics", av_a, av_b, diff, lo, hi, n_a, n_b)
