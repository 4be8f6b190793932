"""GLUE along pretraining: one row per (kept step, task) with the median dev score over seeds, that step's
tokens and FLOPs and the run's held-out MLM/RTD metrics at that step -> curve.csv and curve.png.
"""

from __future__ import annotations

import csv
import io
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from convbert.io import write_bytes_atomic, write_text_atomic
from convbert.report.collect import load_result
from convbert.report.tasks import MAIN_METRIC, METRIC_ABBREV, TASK_TITLES

HELDOUT = ("heldout_mlm_loss", "heldout_mlm_accuracy", "heldout_rtd_loss", "heldout_disc_accuracy",
           "heldout_disc_auc")
COLUMNS = ("step", "tokens", "flops", "device_hours", "task", "metric", "score", "n", "seeds", *HELDOUT)


@dataclass
class Point:
    """One kept checkpoint: its step, its pretrain_summary.json and the dir of its fine-tuning jobs."""

    step: int
    summary: dict[str, Any]
    jobs_dir: Path


def heldout_at(metrics: list[dict], step: int) -> dict[str, Any]:
    """The held-out metrics the run logged at `step` (metrics.jsonl), {} when it logged none there."""
    rows = [r for r in metrics if r["step"] == step and "heldout_mlm_loss" in r]
    return {k: rows[-1].get(k) for k in HELDOUT} if rows else {}


def curve_rows(points: list[Point], tasks: list[str], seeds: list[int], metrics: list[dict]) -> list[dict]:
    """One row per (point, task); score is the median of the task's main dev metric over the seeds that have
    results (n of them; none: empty). A damaged results.json raises ReportError naming it."""
    rows = []
    for p in points:
        held = heldout_at(metrics, p.step)
        for task in tasks:
            metric = MAIN_METRIC[task]
            done = [(s, load_result(f)) for s in seeds if (f := p.jobs_dir / f"{task}-seed{s}" / "results.json")
                    .is_file()]
            values = [(s, r.metrics[metric]) for s, r in done if r.metrics.get(metric) is not None]
            rows.append({"step": p.step, "tokens": p.summary.get("tokens"), "flops": p.summary.get("flops"),
                         "device_hours": p.summary.get("device_hours"), "task": task, "metric": metric,
                         "score": statistics.median(v for _, v in values) if values else None, "n": len(values),
                         "seeds": " ".join(str(s) for s, _ in values), **held})
    return rows


def curve_csv(rows: list[dict]) -> str:
    out = io.StringIO()
    w = csv.DictWriter(out, COLUMNS, lineterminator="\n")
    w.writeheader()
    w.writerows({k: "" if r.get(k) is None else r[k] for k in COLUMNS} for r in rows)
    return out.getvalue()


def curve_png(rows: list[dict], dpi: int = 100) -> bytes:
    """Dev score against the step and against FLOPs (one line per task), and the held-out losses."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for task in dict.fromkeys(r["task"] for r in rows):
        scored = [r for r in rows if r["task"] == task and r["score"] is not None]
        label = f"{TASK_TITLES[task]} {METRIC_ABBREV[MAIN_METRIC[task]]}"
        for ax, x in zip(axes[:2], ("step", "flops"), strict=True):
            ax.plot([r[x] for r in scored], [r["score"] for r in scored], marker="o", label=label)
    for ax, x in zip(axes[:2], ("pretraining step", "pretraining FLOPs"), strict=True):
        ax.set_xlabel(x)
        ax.set_ylabel("dev score (median over seeds)")
        if ax.lines:
            ax.legend(fontsize=8)
    ax = axes[2]  # the two losses have different scales: one y axis each
    for a, key, label, style in ((ax, "heldout_mlm_loss", "held-out MLM loss", ("o", "tab:blue")),
                                 (ax.twinx(), "heldout_rtd_loss", "held-out RTD loss", ("s", "tab:red"))):
        by_step = {r["step"]: r[key] for r in rows if r.get(key) is not None}
        a.plot(sorted(by_step), [by_step[s] for s in sorted(by_step)], marker=style[0], color=style[1])
        a.set_ylabel(label, color=style[1])
    ax.set_xlabel("pretraining step")
    ax.set_title("held-out losses", fontsize=10)
    axes[0].set_title("GLUE dev along pretraining", fontsize=10)
    axes[1].set_title("... against pretraining compute", fontsize=10)
    for a in axes:
        a.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()


def write_curve(rows: list[dict], out_dir: Path) -> dict[str, Path]:
    """curve.csv and curve.png in out_dir, each written atomically."""
    out_dir.mkdir(parents=True, exist_ok=True)
    files = {"curve.csv": out_dir / "curve.csv", "curve.png": out_dir / "curve.png"}
    write_text_atomic(files["curve.csv"], curve_csv(rows))
    write_bytes_atomic(files["curve.png"], curve_png(rows))
    return files
