"""GLUE metrics in numpy (checked against scikit-learn/scipy in tests). The base functions return
fractions / correlations like sklearn and scipy; `task_metrics` reports percent (0-100) per SPEC §5."""

from __future__ import annotations

import numpy as np

from convbert.glue.tasks import GlueTask


def accuracy(preds, labels) -> float:
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    return float((preds == labels).mean())


def f1(preds, labels, positive: int = 1) -> float:
    """Binary F1 of the positive class; 0 when there are no true positives (sklearn's zero_division=0)."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    tp = np.sum((preds == positive) & (labels == positive))
    fp = np.sum((preds == positive) & (labels != positive))
    fn = np.sum((preds != positive) & (labels == positive))
    return 0.0 if tp == 0 else float(2 * tp / (2 * tp + fp + fn))


def matthews_corrcoef(preds, labels) -> float:
    """Multiclass MCC from the confusion matrix (Gorodkin's R_K, what sklearn computes); 0 if undefined."""
    preds, labels = np.asarray(preds), np.asarray(labels)
    _check(preds, labels)
    classes, inv = np.unique(np.concatenate([labels, preds]), return_inverse=True)
    k, n = len(classes), len(labels)
    cm = np.zeros((k, k), dtype=np.float64)  # [true, pred]
    np.add.at(cm, (inv[:n], inv[n:]), 1)
    t, p = cm.sum(1), cm.sum(0)
    c, s = np.trace(cm), cm.sum()
    cov_tp, cov_pp, cov_tt = c * s - t @ p, s * s - p @ p, s * s - t @ t
    if cov_pp * cov_tt == 0:
        return 0.0
    return float(cov_tp / np.sqrt(cov_tt * cov_pp))


def pearson(x, y) -> float:
    """Pearson r; NaN when either input is constant (as scipy)."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    _check(x, y)
    xm, ym = x - x.mean(), y - y.mean()
    denom = np.sqrt((xm @ xm) * (ym @ ym))
    if denom == 0:
        return float("nan")
    return float(np.clip((xm @ ym) / denom, -1.0, 1.0))


def rankdata(x) -> np.ndarray:
    """Ranks 1..n with ties given their average rank (scipy.stats.rankdata method='average')."""
    x = np.asarray(x)
    order = np.argsort(x, kind="mergesort")
    xs = x[order]
    # start of each run of equal values; run k spans sorted positions [starts[k], ends[k])
    new = np.r_[True, xs[1:] != xs[:-1]]
    starts = np.flatnonzero(new)
    ends = np.r_[starts[1:], len(x)]
    avg = (starts + ends + 1) / 2.0  # mean of 1-based ranks starts+1..ends
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat(avg, ends - starts)
    return ranks


def spearman(x, y) -> float:
    """Spearman rho; NaN when either input holds a NaN (which ranking would otherwise sort last) or is
    constant, as scipy."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if np.isnan(x).any() or np.isnan(y).any():
        return float("nan")
    return pearson(rankdata(x), rankdata(y))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}


def _check(a: np.ndarray, b: np.ndarray) -> None:
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D of equal length, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("cannot compute a metric on zero examples")


def task_metrics(task: GlueTask, split: str, preds, labels) -> dict[str, float]:
    """Every metric of the task on one dev split, in percent; MNLI's keys get _m / _mm."""
    suffix = task.metric_suffix(split)
    names = dict.fromkeys(m.removesuffix("_mm").removesuffix("_m") for m in task.metrics)
    return {f"{name}{suffix}": 100.0 * METRICS[name](preds, labels) for name in names}
