"""Two models side by side: per task, the difference of median scores over fine-tuning seeds, with a p-value
that holds at the seed counts people actually run.

Method (stated in the table's notes): seeds of different checkpoints are independent samples, so the test is
scipy.stats.permutation_test on the difference of medians, two-sided, over every split of the pooled seeds
(exact when there are at most `n_boot` splits, which covers every realistic seed count). An exact test over
n_a + n_b seeds cannot give p below 2 / C(n_a + n_b, n_a): with 2 seeds per model that is 1/3, so no claim is
possible. Below that bound ("too few seeds": fewer than 4 seeds per model at 95%) no p-value or interval is
reported. The interval is scipy.stats.bootstrap's percentile interval of the difference of medians,
resampling each model's seeds on their own, given only where the test is possible. ELECTRA's GLUE average
gets its difference only (its tasks are tested one by one). No correction for testing many tasks.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb

import numpy as np

from convbert.report.aggregate import Row, Table
from convbert.report.schema import ReportError
from convbert.report.tasks import ELECTRA_TASKS, TASK_METRICS

METHOD = ("difference of medians over seeds; p: two-sided exact permutation test over seeds "
          "(scipy.stats.permutation_test, independent samples); CI: percentile bootstrap of the difference "
          "(scipy.stats.bootstrap), each model's seeds resampled on their own; 'too few seeds' when even a complete "
          "separation could not reach p < {alpha:g} (2 / C(n_a + n_b, n_a) > {alpha:g}: fewer than 4 seeds each at "
          "95%); no correction for testing many tasks")


@dataclass(frozen=True)
class Difference:
    task: str  # a task name, or "electra8" for ELECTRA's GLUE average
    metric: str
    a: float | None  # median of a
    b: float | None
    diff: float | None  # a - b
    low: float | None  # confidence interval of the difference; None when not testable
    high: float | None
    n_a: int
    n_b: int
    p_value: float | None = None  # None: not tested (see note)
    alpha: float = 0.05
    note: str = ""  # why there is no test: "too few seeds", "average: see its tasks"

    @property
    def significant(self) -> bool | None:
        """p < alpha; None when no test was possible."""
        return None if self.p_value is None else self.p_value < self.alpha


@dataclass(frozen=True)
class Comparison:
    a: str
    b: str
    n_boot: int
    confidence: float
    seed: int
    rows: tuple[Difference, ...]

    @property
    def method(self) -> str:
        return METHOD.format(alpha=1 - self.confidence)


def min_p_value(n_a: int, n_b: int) -> float:
    """The smallest two-sided p an exact permutation test over n_a + n_b seeds can give."""
    return min(1.0, 2 / comb(n_a + n_b, n_a)) if n_a and n_b else 1.0


def _values(row: Row, task: str, metric: str) -> np.ndarray:
    cell = row.cells.get(task)
    if cell is None or metric not in cell.values:
        return np.empty(0)
    return np.asarray(cell.values[metric], dtype=np.float64)


def _median_diff(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.median(x, axis=axis) - np.median(y, axis=axis)


def _task_diff(ra: Row, rb: Row, task: str, metric: str, n_boot: int, confidence: float, seed: int) -> Difference:
    xa, xb = _values(ra, task, metric), _values(rb, task, metric)
    a = float(np.median(xa)) if len(xa) else None
    b = float(np.median(xb)) if len(xb) else None
    diff = None if a is None or b is None else a - b
    alpha = 1.0 - confidence
    base = dict(task=task, metric=metric, a=a, b=b, diff=diff, n_a=len(xa), n_b=len(xb), alpha=alpha)
    if min_p_value(len(xa), len(xb)) >= alpha:
        return Difference(**base, low=None, high=None, note="too few seeds")
    from scipy import stats  # here, not at import: convbert.report.schema (read by every job) imports this package
    test = stats.permutation_test((xa, xb), _median_diff, permutation_type="independent", vectorized=True,
                                  n_resamples=n_boot, alternative="two-sided", random_state=seed)
    ci = stats.bootstrap((xa, xb), _median_diff, n_resamples=n_boot, confidence_level=confidence,
                         method="percentile", vectorized=True, random_state=seed).confidence_interval
    return Difference(**base, low=float(ci.low), high=float(ci.high), p_value=float(test.pvalue))


def compare(table: Table, a: str, b: str, n_boot: int = 10000, confidence: float = 0.95,
            seed: int = 0) -> Comparison:
    """Per task and metric, median(a) - median(b) with a permutation-test p-value and bootstrap CI over seeds
    (module docstring); plus the difference of ELECTRA's 8-task GLUE averages. Deterministic for a seed."""
    if not 0.0 < confidence < 1.0:
        raise ReportError(f"confidence must be in (0, 1), got {confidence}")
    if n_boot < 100:
        raise ReportError(f"n_boot must be >= 100 for a usable test, got {n_boot}")
    ra, rb = table.row(a), table.row(b)
    for r in (ra, rb):
        if r.is_reference:
            raise ReportError(f"{r.label!r} is a published row without per-seed scores; compare our own runs")
    tasks = [t for t in table.tasks if t in ra.cells or t in rb.cells]
    rows = [_task_diff(ra, rb, t, m, n_boot, confidence, seed) for t in tasks for m in TASK_METRICS[t]]
    av_a, av_b = ra.averages["electra8"].value, rb.averages["electra8"].value
    n_a = min((len(ra.cells[t].seeds) if t in ra.cells else 0) for t in ELECTRA_TASKS)
    n_b = min((len(rb.cells[t].seeds) if t in rb.cells else 0) for t in ELECTRA_TASKS)
    rows.append(Difference("electra8", "mean of main metrics", av_a, av_b,
                           None if av_a is None or av_b is None else av_a - av_b, None, None, n_a, n_b,
                           alpha=1.0 - confidence, note="not tested: see its tasks"))
    return Comparison(a, b, n_boot, confidence, seed, tuple(rows))
