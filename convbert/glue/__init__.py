"""GLUE: task registry, loaders (hub / original directory), metrics, features, submission files."""

from convbert.glue.data import (
    GlueDataError,
    GlueExample,
    GlueSplit,
    load_dir_split,
    load_hub_split,
    load_split,
)
from convbert.glue.metrics import accuracy, f1, matthews_corrcoef, pearson, spearman, task_metrics
from convbert.glue.tasks import ELECTRA_TASKS, GLUE_TASKS, TASKS, GlueTask, get_task

__all__ = [
    "ELECTRA_TASKS", "GLUE_TASKS", "TASKS", "GlueDataError", "GlueExample", "GlueSplit", "GlueTask", "accuracy", "f1",
    "get_task", "load_dir_split", "load_hub_split", "load_split", "matthews_corrcoef", "pearson",
    "spearman", "task_metrics",
]
