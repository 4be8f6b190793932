"""GLUE leaderboard submission files: one `index<TAB>prediction` TSV per test set, named and labelled
as gluebenchmark.com expects (CoLA.tsv ... MNLI-m.tsv, MNLI-mm.tsv, AX.tsv)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from convbert.glue.tasks import GlueTask, get_task
from convbert.io import write_text_atomic


def prediction_strings(task: GlueTask, preds) -> list[str]:
    """Class indices -> the leaderboard's label strings; STS-B scores clipped to [0, 5]."""
    preds = np.asarray(preds)
    if task.is_regression:
        return [f"{v:.3f}" for v in np.clip(preds.astype(np.float64), 0.0, 5.0)]
    bad = (preds < 0) | (preds >= task.num_labels)
    if bad.any():
        raise ValueError(f"{task.name}: predicted class {preds[bad][0]} outside 0..{task.num_labels - 1}")
    return [task.file_labels[int(p)] for p in preds]


def write_submission(task: GlueTask | str, split: str, ids, preds, out_dir: str | Path) -> Path:
    """Write `<out_dir>/<leaderboard file>` for one test split, rows sorted by id; returns the path."""
    task = get_task(task) if isinstance(task, str) else task
    if split not in task.submission_files:
        raise KeyError(f"{task.name} has no leaderboard file for split {split!r}")
    ids = np.asarray(ids)
    if len(ids) != len(preds):
        raise ValueError(f"{len(ids)} ids but {len(preds)} predictions")
    order = np.argsort(ids, kind="stable")
    labels = prediction_strings(task, np.asarray(preds)[order])
    lines = ["index\tprediction"] + [f"{int(i)}\t{s}" for i, s in zip(ids[order], labels, strict=True)]
    path = Path(out_dir) / task.submission_files[split]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return path
