"""The score table's view of the task registry (convbert/tasks.py; metrics in docs/design.md §5)."""

from __future__ import annotations

from convbert.tasks import (
    ELECTRA_TASKS,
    GLUE_TASKS,
    METRIC_ABBREV,
    REGISTRY,
    SIGNED_METRICS,
    SQUAD_TASKS,
    TASKS,
    order_tasks,
)

__all__ = [
    "ELECTRA_TASKS", "GLUE_TASKS", "MAIN_METRIC", "METRIC_ABBREV", "SIGNED_METRICS", "SQUAD_TASKS", "TASKS",
    "TASK_METRICS", "TASK_TITLES", "metric_header", "order_tasks",
]

# metrics shown per task, in the order the table prints them
TASK_METRICS: dict[str, tuple[str, ...]] = {t.name: t.metrics for t in REGISTRY.values()}
# one number per task, as in ELECTRA's README table: CoLA MCC, STS-B Spearman, SQuAD EM, accuracy for the
# rest (MNLI: matched accuracy)
MAIN_METRIC: dict[str, str] = {t.name: t.main_metric for t in REGISTRY.values()}
TASK_TITLES: dict[str, str] = {t.name: t.title for t in REGISTRY.values()}


def metric_header(task: str) -> str:
    """Column title such as 'MRPC F1/acc'."""
    return f"{TASK_TITLES[task]} {'/'.join(METRIC_ABBREV[m] for m in TASK_METRICS[task])}"
