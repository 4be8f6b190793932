"""Task and metric facts the score table needs (SPEC §5)."""

from __future__ import annotations

GLUE_TASKS: tuple[str, ...] = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli")
SQUAD_TASKS: tuple[str, ...] = ("squad1", "squad2")
TASKS: tuple[str, ...] = GLUE_TASKS + SQUAD_TASKS
# ELECTRA's GLUE "average": 8 tasks, WNLI left out
ELECTRA_TASKS: tuple[str, ...] = GLUE_TASKS[:8]

# metrics shown per task, in the order the table prints them (leaderboard order: F1/acc, P/S, m/mm, EM/F1)
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "cola": ("mcc",),
    "sst2": ("accuracy",),
    "mrpc": ("f1", "accuracy"),
    "stsb": ("pearson", "spearman"),
    "qqp": ("f1", "accuracy"),
    "mnli": ("accuracy_m", "accuracy_mm"),
    "qnli": ("accuracy",),
    "rte": ("accuracy",),
    "wnli": ("accuracy",),
    "squad1": ("exact", "f1"),
    "squad2": ("exact", "f1"),
}

# one number per task, as in ELECTRA's README table: CoLA MCC, STS-B Spearman, SQuAD EM, accuracy for the
# rest (MNLI: matched accuracy)
MAIN_METRIC: dict[str, str] = {
    "cola": "mcc",
    "sst2": "accuracy",
    "mrpc": "accuracy",
    "stsb": "spearman",
    "qqp": "accuracy",
    "mnli": "accuracy_m",
    "qnli": "accuracy",
    "rte": "accuracy",
    "wnli": "accuracy",
    "squad1": "exact",
    "squad2": "exact",
}

# correlations may be negative; every other reported metric is a percentage in [0, 100]
SIGNED_METRICS = frozenset({"mcc", "pearson", "spearman"})

TASK_TITLES: dict[str, str] = {
    "cola": "CoLA", "sst2": "SST-2", "mrpc": "MRPC", "stsb": "STS-B", "qqp": "QQP", "mnli": "MNLI",
    "qnli": "QNLI", "rte": "RTE", "wnli": "WNLI", "squad1": "SQuAD1.1", "squad2": "SQuAD2.0",
}
METRIC_ABBREV: dict[str, str] = {
    "mcc": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "P", "spearman": "S",
    "accuracy_m": "m", "accuracy_mm": "mm", "exact": "EM",
}


def metric_header(task: str) -> str:
    """Column title such as 'MRPC F1/acc'."""
    return f"{TASK_TITLES[task]} {'/'.join(METRIC_ABBREV[m] for m in TASK_METRICS[task])}"


def order_tasks(tasks: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Canonical GLUE-then-SQuAD order."""
    return tuple(t for t in TASKS if t in set(tasks))
