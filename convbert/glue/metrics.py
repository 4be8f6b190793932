"""GLUE metrics (docs/design.md §5): scikit-learn and scipy, with the edge cases fixed here.

The base functions return fractions / correlations as sklearn and scipy do; `task_metrics` reports percent.
Edge cases (what a tiny or diverged model produces):
- no examples, or predictions and labels of different lengths: ValueError (never a silent 0);
- F1 with no predicted and no true positives: 0 (sklearn's zero_division=0), no warning;
- MCC with constant predictions or labels: 0 (sklearn's definition), no warning;
- Pearson / Spearman with a constant input, fewer than 2 examples or a NaN/inf value: NaN, no warning (the
  results.json value is then null and the score table names it).
"""

from __future__ import annotations

import warnings

import numpy as np

from convbert.glue.tasks import GlueTask

# scikit-learn and scipy are imported where used: importing convbert.glue (the trainer, the benchmarks) should
# not pay their start-up time and memory.


def _check(a, b) -> tuple[np.ndarray, np.ndarray]:
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"predictions and labels must be 1-D of equal length, got {a.shape} and {b.shape}")
    if len(a) == 0:
        raise ValueError("cannot compute a metric on zero examples")
    return a, b


def accuracy(preds, labels) -> float:
    from sklearn.metrics import accuracy_score

    preds, labels = _check(preds, labels)
    return float(accuracy_score(labels, preds))


def f1(preds, labels, positive: int = 1) -> float:
    """Binary F1 of the positive class; 0 when there are no true positives."""
    from sklearn.metrics import f1_score

    preds, labels = _check(preds, labels)
    return float(f1_score(labels, preds, labels=[positive], pos_label=positive, average="micro",
                              zero_division=0))


def matthews_corrcoef(preds, labels) -> float:
    """Multiclass MCC (Gorodkin's R_K); 0 when undefined (constant predictions or labels)."""
    from sklearn.metrics import matthews_corrcoef as mcc

    preds, labels = _check(preds, labels)
    with warnings.catch_warnings():  # sklearn warns on the undefined cases it returns 0 for
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.simplefilter("ignore", UserWarning)  # "A single label was found": all one class
        return float(mcc(labels, preds))


def _correlation(fn, x, y) -> float:
    x, y = _check(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    if len(x) < 2 or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return float("nan")
    if np.ptp(x) == 0 or np.ptp(y) == 0:  # constant input: undefined (scipy warns and returns NaN)
        return float("nan")
    return float(fn(x, y).statistic)


def pearson(x, y) -> float:
    """Pearson r (scipy.stats.pearsonr); NaN when undefined."""
    from scipy.stats import pearsonr

    return _correlation(pearsonr, x, y)


def spearman(x, y) -> float:
    """Spearman rho (scipy.stats.spearmanr, ties at their average rank); NaN when undefined."""
    from scipy.stats import spearmanr

    return _correlation(spearmanr, x, y)


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews_corrcoef, "pearson": pearson, "spearman": spearman}


def task_metrics(task: GlueTask, split: str, preds, labels) -> dict[str, float]:
    """Every metric of the task on one dev split, in percent; MNLI's keys get _m / _mm."""
    suffix = task.metric_suffix(split)
    names = dict.fromkeys(m.removesuffix("_mm").removesuffix("_m") for m in task.metrics)
    return {f"{name}{suffix}": 100.0 * METRICS[name](preds, labels) for name in names}


# ---- collapse: a model that ignores its input (docs/design.md §5) ----
COLLAPSE_SHARE = 0.95  # a classifier predicting one class for at least this share of dev examples
COLLAPSE_SPREAD = 0.05  # a regressor whose predictions' std is below this fraction of the labels' std
COLLAPSE_ADVICE = ("the model predicts (nearly) the same answer for every dev example; try another optim.lr "
                   "(often lower), more task.epochs, or more training examples (data.max_train_examples)")


def prediction_spread(task: GlueTask, preds, labels) -> dict[str, object]:
    """How the dev predictions are distributed, and whether they collapsed onto one answer: the predicted
    classes' counts and the largest share, or the predictions' and labels' standard deviations."""
    preds, labels = _check(preds, labels)
    if task.is_regression:
        std, label_std = float(np.std(preds)), float(np.std(labels))
        collapsed = not std > COLLAPSE_SPREAD * label_std  # NaN predictions count as collapsed
        return {"std": std, "label_std": label_std, "collapsed": collapsed}
    classes, counts = np.unique(preds.astype(np.int64), return_counts=True)
    top = float(counts.max() / len(preds))
    return {"counts": {str(c): int(n) for c, n in zip(classes, counts, strict=True)}, "top_share": top,
            "collapsed": top >= COLLAPSE_SHARE}
