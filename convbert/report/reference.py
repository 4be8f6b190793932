"""Published reference rows (ELECTRA README, PaddleNLP) kept in reference.yaml next to this file."""

from __future__ import annotations

from pathlib import Path

import yaml

from convbert.report.aggregate import REPORTED, Cell, Compute, Row, Stats
from convbert.report.schema import ReportError
from convbert.report.tasks import TASK_METRICS, TASKS

REFERENCE_FILE = Path(__file__).with_name("reference.yaml")


def _scores(label: str, scores: object, where: str) -> dict[str, Cell]:
    if not isinstance(scores, dict):
        raise ReportError(f"{where}: row {label!r}: 'scores' must be a mapping task -> {{metric: value}}")
    cells = {}
    for task, metrics in scores.items():
        if task not in TASKS:
            raise ReportError(f"{where}: row {label!r}: unknown task {task!r}")
        if not isinstance(metrics, dict) or not metrics:
            raise ReportError(f"{where}: row {label!r}: {task} must map metric -> value")
        for m, v in metrics.items():
            if m not in TASK_METRICS[task] + (REPORTED,):
                raise ReportError(f"{where}: row {label!r}: {task} has no metric {m!r}")
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ReportError(f"{where}: row {label!r}: {task}.{m} = {v!r} is not a number")
        cells[task] = Cell(task, {m: Stats(median=float(v)) for m, v in metrics.items()})
    return cells


def load_references(path: str | Path | None = None) -> list[Row]:
    """Published rows as table rows (no seeds: each cell holds the published number as its median)."""
    path = Path(path) if path is not None else REFERENCE_FILE
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as e:
        raise ReportError(f"{path}: cannot read reference numbers: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("rows"), list):
        raise ReportError(f"{path}: expected a mapping with a 'rows' list")
    rows = []
    for i, raw in enumerate(data["rows"]):
        if not isinstance(raw, dict) or not raw.get("label") or not raw.get("source"):
            raise ReportError(f"{path}: rows[{i}] needs 'label' and 'source'")
        comp = raw.get("compute") or {}
        compute = Compute(pretrain_tokens=comp.get("tokens"), pretrain_flops=comp.get("flops"),
                          pretrain_device_hours=comp.get("device_hours"), pretrain_device=comp.get("device"))
        source = raw["source"] + (f" <{raw['url']}>" if raw.get("url") else "")
        notes = [raw["note"]] if raw.get("note") else []
        rows.append(Row(str(raw["label"]), _scores(raw["label"], raw.get("scores"), str(path)),
                        compute=compute, published=source, notes=notes))
    return rows
