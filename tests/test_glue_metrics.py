"""GLUE metrics: our wrappers equal scikit-learn / scipy, and keep their documented edge cases."""

import numpy as np
import pytest
from scipy import stats
from sklearn import metrics as skm

from convbert.glue import accuracy, f1, get_task, matthews_corrcoef, pearson, spearman, task_metrics


@pytest.mark.parametrize("seed", range(5))
def test_classification_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    y, p = rng.integers(0, 2, n), rng.integers(0, 2, n)
    agree = rng.random(n) < 0.6  # correlated predictions, so MCC/F1 are not all near 0
    p[agree] = y[agree]
    assert accuracy(p, y) == pytest.approx(skm.accuracy_score(y, p))
    assert f1(p, y) == pytest.approx(skm.f1_score(y, p))
    assert matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
    y3, p3 = rng.integers(0, 3, n), rng.integers(0, 3, n)
    assert matthews_corrcoef(p3, y3) == pytest.approx(skm.matthews_corrcoef(y3, p3))
    assert accuracy(p3, y3) == pytest.approx(skm.accuracy_score(y3, p3))


def test_degenerate_cases_match_sklearn():
    y = np.array([0, 1, 1, 0, 1])
    for p in (np.zeros(5, int), np.ones(5, int), y, 1 - y):
        assert matthews_corrcoef(p, y) == pytest.approx(skm.matthews_corrcoef(y, p))
        assert f1(p, y) == pytest.approx(skm.f1_score(y, p, zero_division=0))
    assert f1(np.zeros(3, int), np.zeros(3, int)) == 0.0
    with pytest.raises(ValueError, match="equal length"):
        accuracy([0, 1], [0])
    with pytest.raises(ValueError, match="zero examples"):
        accuracy([], [])


@pytest.mark.parametrize("seed", range(5))
def test_correlations_match_scipy(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(3, 200))
    x = rng.normal(size=n)
    y = x + rng.normal(size=n)
    yt = np.round(rng.uniform(0, 5, n) * 2) / 2  # STS-B-like scores with many ties
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0])
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0])
    assert spearman(x, yt) == pytest.approx(stats.spearmanr(x, yt)[0])
    assert np.isnan(pearson(np.ones(4), np.arange(4)))  # constant input: undefined, as scipy
    diverged = np.array([0.5, np.nan, 2.0, 1.0])  # a diverged STS-B run
    assert np.isnan(spearman(diverged, np.arange(4))) and np.isnan(stats.spearmanr(diverged, np.arange(4))[0])


def test_task_metrics_percent_and_keys():
    y, p = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    assert task_metrics(get_task("mrpc"), "validation", p, y) == {
        "f1": pytest.approx(100 * 2 / 3), "accuracy": 75.0}
    assert set(task_metrics(get_task("cola"), "validation", p, y)) == {"mcc"}
    assert task_metrics(get_task("mnli"), "validation_mismatched", p, y) == {"accuracy_mm": 75.0}
    assert task_metrics(get_task("mnli"), "validation_matched", p, y) == {"accuracy_m": 75.0}
    s = task_metrics(get_task("stsb"), "validation", np.array([0.1, 2.0, 3.5, 4.0]), np.array([0, 2.5, 3, 5]))
    assert set(s) == {"pearson", "spearman"} and s["spearman"] == pytest.approx(100.0)


def test_edge_cases_are_quiet_and_documented(recwarn):
    """Constant, single-example and non-finite inputs: NaN correlations and 0 MCC/F1, without warnings."""
    y = np.array([0, 1, 1, 0])
    assert matthews_corrcoef(np.zeros(4, int), y) == 0.0 and f1(np.zeros(4, int), y) == 0.0
    assert matthews_corrcoef(np.ones(3, int), np.ones(3, int)) == 0.0  # everything one class
    for x, z in [(np.ones(4), np.arange(4.0)), (np.arange(4.0), np.full(4, 2.5)), ([1.0], [2.0]),
                 (np.array([0.5, np.inf, 2.0, 1.0]), np.arange(4.0)), (np.array([0.5, np.nan, 2, 1]), np.arange(4.0))]:
        assert np.isnan(pearson(x, z)) and np.isnan(spearman(x, z))
    assert not [w for w in recwarn.list if issubclass(w.category, (RuntimeWarning, UserWarning))]
    s = task_metrics(get_task("stsb"), "validation", np.full(4, np.nan), np.array([0, 2.5, 3, 5]))
    assert all(np.isnan(v) for v in s.values())


def test_prediction_spread_flags_a_collapsed_classifier_or_regressor():
    from convbert.glue.metrics import prediction_spread

    rte, stsb = get_task("rte"), get_task("stsb")
    labels = np.array([0, 1] * 50)
    one_class = np.array([1] * 96 + [0] * 4)
    s = prediction_spread(rte, one_class, labels)
    assert s == {"counts": {"0": 4, "1": 96}, "top_share": 0.96, "collapsed": True}
    assert not prediction_spread(rte, np.array([1] * 94 + [0] * 6), labels)["collapsed"]  # 94% is a (weak) model
    rng = np.random.default_rng(0)
    scores = rng.uniform(0, 5, 200)
    flat = 2.5 + 0.01 * rng.standard_normal(200)  # the label mean, give or take 0.01: no signal
    s = prediction_spread(stsb, flat, scores)
    assert s["collapsed"] and s["label_std"] == pytest.approx(np.std(scores)) and s["std"] < 0.02
    assert not prediction_spread(stsb, scores + rng.normal(0, 1, 200), scores)["collapsed"]
    assert prediction_spread(stsb, np.full(200, np.nan), scores)["collapsed"]
