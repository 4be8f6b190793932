"""Cell and header text shared by the Markdown, LaTeX and CSV writers."""

from __future__ import annotations

from convbert.report.aggregate import AVERAGE_SHORT, COLLAPSED_MARK, DEV_SELECTED_MARK, REPORTED, Average, Row, Table
from convbert.report.budget import budget_text
from convbert.report.tasks import TASK_METRICS, metric_header

MISSING = "–"
PUBLISHED_MARK = "†"  # published number, not run here
UNNAMED_MARK = "‡"  # one published number for a two-metric task, metric not named
BASELINE_MARK = "°"  # reference row fitted here on the fine-tuning jobs' own data (report/baselines.py)
COMPUTE_HEADERS = ("seeds", "pretrain tokens", "pretrain FLOPs", "pretrain device-h", "fine-tune wall-h",
                   "pretrain budget")


def num(v: float | None, digits: int = 1) -> str:
    return MISSING if v is None else f"{v:.{digits}f}"


def sci(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2e}"


def hours(v: float | None) -> str:
    return MISSING if v is None else f"{v:.2f}" if v < 10 else f"{v:.1f}"


def count(v: int | None) -> str:
    if v is None:
        return MISSING
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "k")):
        if v >= div:
            return f"{v / div:.1f}{unit}"
    return str(v)


def cell_text(row: Row, task: str) -> str:
    """'88.1/84.0' style medians; '(k/N)' when seeds are missing; '–' for a missing task or metric."""
    cell = row.cells.get(task)
    if cell is None:
        return MISSING
    shown = [cell.value(m) for m in TASK_METRICS[task]]
    if all(v is None for v in shown) and REPORTED in cell.stats:
        return num(cell.value(REPORTED), 2) + UNNAMED_MARK
    digits = 2 if row.is_reference and any(v is not None and round(v, 1) != v for v in shown) else 1
    text = "/".join(num(v, digits) for v in shown)
    if cell.missing_seeds:
        text += f" ({len(cell.seeds)}/{len(cell.seeds) + len(cell.missing_seeds)})"
    return text + (DEV_SELECTED_MARK if cell.dev_selected else "") + (COLLAPSED_MARK if cell.collapsed else "")


def average_text(avg: Average) -> str:
    return num(avg.value, 1) + (UNNAMED_MARK if avg.value is not None and avg.approximate else "")


def seeds_text(row: Row) -> str:
    if row.is_reference:
        return MISSING
    ns = sorted({len(c.seeds) for c in row.cells.values()})
    return f"{ns[0]}" if len(ns) == 1 else f"{ns[0]}–{ns[-1]}"


def device_hours_text(row: Row) -> str:
    c = row.compute
    if c.pretrain_device_hours is None:
        return MISSING
    return hours(c.pretrain_device_hours) + (f" ({c.pretrain_device})" if c.pretrain_device else "")


def row_label(row: Row) -> str:
    return row.label + {"published": PUBLISHED_MARK, "baseline": BASELINE_MARK}.get(row.kind, "")


def main_headers(table: Table) -> list[str]:
    return (["Model"] + [metric_header(t) for t in table.tasks] + list(AVERAGE_SHORT.values())
            + list(COMPUTE_HEADERS))


def main_cells(table: Table, row: Row) -> list[str]:
    c = row.compute
    return ([row_label(row)] + [cell_text(row, t) for t in table.tasks]
            + [average_text(row.averages.get(k, Average(None))) for k in AVERAGE_SHORT]
            + [seeds_text(row), count(c.pretrain_tokens), sci(c.pretrain_flops), device_hours_text(row),
               hours(c.finetune_hours), budget_text(c.pretraining)])
