"""Reference rows fitted on the fine-tuning jobs' own data: what a trivial model and a linear bag of words score
on the same training and dev examples, so that a table can say whether a fine-tuned transformer learned more
than word counts (docs/design.md §5, "Reference rows").

- majority class: the most frequent training label for every dev example (regression: the training mean,
  which has no correlation with anything, so STS-B shows none);
- bag of words: TF-IDF over word 1-2-grams with scikit-learn's LogisticRegression (classification) or Ridge
  (STS-B). A pair is represented by its two sides' vectors and their element-wise product (the n-grams both
  sides share), so a linear model can use either side and their overlap.

Scored by the fine-tuning jobs' own metric functions (convbert/glue/metrics.py). A fit is cached under
`cache_dir` by the fingerprint of the exact examples and of this method.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from convbert.glue.data import GlueExample, load_split
from convbert.glue.metrics import task_metrics
from convbert.glue.tasks import HUB_DATASET, GlueTask, get_task
from convbert.io import read_json, write_json_atomic
from convbert.report.aggregate import Cell, Row, Stats
from convbert.report.schema import Result
from convbert.report.tasks import GLUE_TASKS, TASK_TITLES

log = logging.getLogger(__name__)

METHOD_VERSION = 1  # part of the cache key: bump when a baseline's method changes
KINDS = {  # row label -> what it is
    "majority class": "the most frequent training label for every dev example",
    "bag of words": "TF-IDF word 1-2-grams + LogisticRegression (Ridge for STS-B), fitted on the same training "
                    "examples",
}


@dataclass(frozen=True)
class DataSpec:
    """Which examples a fine-tuning job saw: results.json's data section."""

    dir: str | None = None
    hub_path: str | None = None
    max_train_examples: int | None = None
    max_eval_examples: int | None = None

    @classmethod
    def of(cls, result: Result) -> DataSpec | None:
        data = result.extras.get("data")
        if not isinstance(data, dict) or "max_train_examples" not in data:
            return None  # written before jobs recorded their data settings
        return cls(data.get("dir"), data.get("hub_path"), data.get("max_train_examples"),
                   data.get("max_eval_examples"))


def _examples(task: GlueTask, split: str, spec: DataSpec, limit: int | None) -> list[GlueExample]:
    examples = load_split(task, split, spec.dir, spec.hub_path or HUB_DATASET).examples
    return examples if limit is None else examples[:limit]


def _fingerprint(task: str, splits: dict[str, list[GlueExample]]) -> str:
    import sklearn

    h = hashlib.sha256(f"{task}|{METHOD_VERSION}|{sklearn.__version__}".encode())
    for split, examples in splits.items():
        h.update(split.encode())
        for ex in examples:
            h.update(json.dumps([ex.text_a, ex.text_b, ex.label]).encode())
    return h.hexdigest()[:16]


def _features(task: GlueTask, train: list[GlueExample]) -> Any:
    """A function from examples to the sparse feature matrix, fitted on the training texts."""
    from scipy import sparse
    from sklearn.feature_extraction.text import TfidfVectorizer

    texts = [ex.text_a for ex in train] + ([ex.text_b or "" for ex in train] if task.is_pair else [])
    vec = TfidfVectorizer(ngram_range=(1, 2)).fit(texts)

    def featurize(examples: list[GlueExample]) -> Any:
        a = vec.transform([ex.text_a for ex in examples])
        if not task.is_pair:
            return a
        b = vec.transform([ex.text_b or "" for ex in examples])
        return sparse.hstack([a, b, a.multiply(b)]).tocsr()

    return featurize


def _fit_predict(task: GlueTask, train: list[GlueExample], dev: dict[str, list[GlueExample]]
                 ) -> dict[str, dict[str, np.ndarray]]:
    """kind -> dev split -> predictions."""
    from sklearn.linear_model import LogisticRegression, Ridge

    y = np.array([ex.label for ex in train], dtype=np.float64 if task.is_regression else np.int64)
    constant = float(y.mean()) if task.is_regression else Counter(y.tolist()).most_common(1)[0][0]
    featurize = _features(task, train)
    model = Ridge(alpha=1.0) if task.is_regression else LogisticRegression(max_iter=2000)
    model.fit(featurize(train), y)
    return {"majority class": {s: np.full(len(x), constant) for s, x in dev.items()},
            "bag of words": {s: model.predict(featurize(x)) for s, x in dev.items()}}


def task_baselines(task_name: str, spec: DataSpec, cache_dir: str | Path | None = None) -> dict[str, dict[str, float]]:
    """Row label (KINDS) -> the task's metrics in percent (a metric that is undefined, e.g. the correlation of
    a constant, is left out), on the examples `spec` selects."""
    task = get_task(task_name)
    train = _examples(task, "train", spec, spec.max_train_examples)
    dev = {s: _examples(task, s, spec, spec.max_eval_examples) for s in task.dev_splits}
    cache = Path(cache_dir) / f"{task.name}-{_fingerprint(task.name, {'train': train, **dev})}.json" \
        if cache_dir else None
    if cache is not None and cache.is_file():
        try:
            return read_json(cache)
        except ValueError:  # a torn cache file is only a cache: fit again
            log.warning("ignoring unreadable baseline cache %s", cache)
    out: dict[str, dict[str, float]] = {}
    for kind, preds in _fit_predict(task, train, dev).items():
        labels = {s: np.array([ex.label for ex in x]) for s, x in dev.items()}
        metrics: dict[str, float] = {}
        for s in dev:
            metrics.update(task_metrics(task, s, preds[s], labels[s]))
        out[kind] = {m: v for m, v in metrics.items() if np.isfinite(v)}
    if cache is not None:
        write_json_atomic(cache, out)
    return out


def baseline_rows(results: list[Result], tasks: tuple[str, ...], cache_dir: str | Path | None = None
                  ) -> tuple[list[Row], list[str]]:
    """The reference rows for the table's GLUE columns, each task fitted on the data its jobs saw (the most
    common data settings when jobs differ), and notes on what could not be fitted."""
    specs: dict[str, Counter] = {}
    for r in results:
        spec = DataSpec.of(r)
        if r.task in GLUE_TASKS and r.task in tasks and spec is not None:
            specs.setdefault(r.task, Counter())[spec] += 1
    chosen, notes = {}, []
    for task in [t for t in tasks if t in specs]:
        (chosen[task], _), *others = specs[task].most_common()
        if others:
            notes.append(f"reference rows: {TASK_TITLES[task]} jobs used {len(others) + 1} different data settings; "
                         f"fitted on the most common ({chosen[task]})")
    rows, fit_notes = _rows(chosen, cache_dir)
    return rows, notes + fit_notes


def baseline_table_rows(tasks: list[str], spec: DataSpec, cache_dir: str | Path | None = None
                        ) -> tuple[list[Row], list[str]]:
    """The reference rows of `tasks`, all on the examples `spec` selects (pipelines/baselines.py)."""
    return _rows(dict.fromkeys(tasks, spec), cache_dir)


def _rows(specs: dict[str, DataSpec], cache_dir: str | Path | None) -> tuple[list[Row], list[str]]:
    cells: dict[str, dict[str, Cell]] = {kind: {} for kind in KINDS}
    notes = []
    for task, spec in specs.items():
        try:
            scores = task_baselines(task, spec, cache_dir)
        except (OSError, ValueError) as e:
            notes.append(f"reference rows: {TASK_TITLES[task]} not fitted: {type(e).__name__}: {e}")
            continue
        for kind, metrics in scores.items():
            if metrics:
                cells[kind][task] = Cell(task, {m: Stats(median=v) for m, v in metrics.items()})
    rows = [Row(kind, cells[kind], baseline=KINDS[kind]) for kind in KINDS if cells[kind]]
    if rows and "stsb" in cells["bag of words"] and "stsb" not in cells["majority class"]:
        notes.append("reference rows: a constant prediction has no correlation, so majority class shows none for "
                     "STS-B")
    return rows, notes
