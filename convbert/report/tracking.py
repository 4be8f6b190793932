"""Log the score table to Weights & Biases (wandb imported only when tracking is on)."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convbert.report.aggregate import Table
from convbert.report.compare import Comparison
from convbert.report.format import main_cells, main_headers
from convbert.report.schema import ReportError
from convbert.report.writers import comparison_csv, scores_csv

MODES = ("online", "offline", "disabled")


def _rows(text: str) -> tuple[list[str], list[list[str]]]:
    rows = list(csv.reader(io.StringIO(text)))
    return rows[0], rows[1:]


@contextmanager
def _wandb_run(mode: str, project: str, group: str | None, name: str | None, tags: Sequence[str], job_type: str,
         dir: str | Path | None) -> Iterator[Any]:
    """A wandb run, finished on the way out; None when mode is 'disabled'."""
    if mode not in MODES:
        raise ReportError(f"tracking mode must be one of {MODES}, got {mode!r}")
    if mode == "disabled":
        yield None
        return
    import wandb

    run = wandb.init(mode=mode, project=project, group=group, name=name, tags=list(tags), job_type=job_type,
                     dir=str(dir) if dir is not None else None)
    try:
        yield run
    finally:
        run.finish()


def log_to_wandb(table: Table, comparison: Comparison | None, files: dict[str, Path], *, mode: str,
                 project: str, group: str | None = None, name: str | None = None,
                 tags: Sequence[str] = (), dir: str | Path | None = None) -> str | None:
    """One wandb run (job_type 'table') with the score grid, per-metric stats, comparison and chart.

    Returns the run's URL/dir label, or None when mode is 'disabled'."""
    with _wandb_run(mode, project, group, name, tags, "table", dir) as run:
        if run is None:
            return None
        import wandb

        logged = {"score_table": wandb.Table(columns=main_headers(table),
                                             data=[main_cells(table, r) for r in table.rows])}
        cols, data = _rows(scores_csv(table))
        logged["scores"] = wandb.Table(columns=cols, data=data)
        if comparison is not None:
            cols, data = _rows(comparison_csv(comparison))
            logged["comparison"] = wandb.Table(columns=cols, data=data)
        if "chart.png" in files:
            logged["chart"] = wandb.Image(str(files["chart.png"]))
        run.log(logged)
        for r in table.models:
            run.summary[f"{r.label}/glue_electra8"] = r.averages["electra8"].value
        return getattr(run, "url", None) or str(getattr(run, "dir", ""))


def log_curve_to_wandb(rows: list[dict], png: Path, *, mode: str, project: str, group: str | None = None,
                       name: str | None = None, tags: Sequence[str] = (), dir: str | Path | None = None) -> str | None:
    """One wandb run (job_type 'curve'): each task's dev score and the held-out metrics against the pretraining
    step (a new run each time: a rerun may add steps before ones already logged), curve.csv as a table and
    curve.png. Returns the run's URL/dir label, or None when mode is 'disabled'."""
    from convbert.report.curve import HELDOUT, curve_csv

    with _wandb_run(mode, project, group, name, tags, "curve", dir) as run:
        if run is None:
            return None
        import wandb

        for step in sorted({r["step"] for r in rows}):
            at = [r for r in rows if r["step"] == step]
            logged = {f"{r['task']}/{r['metric']}": r["score"] for r in at if r["score"] is not None}
            logged.update({k: at[0][k] for k in ("tokens", "flops", *HELDOUT) if at[0].get(k) is not None})
            run.log(logged, step=step)
        cols, data = _rows(curve_csv(rows))
        run.log({"curve": wandb.Table(columns=cols, data=data), "curve_plot": wandb.Image(str(png))})
        return getattr(run, "url", None) or str(getattr(run, "dir", ""))
