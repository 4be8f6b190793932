"""The one registry of benchmark tasks (docs/design.md §4-§5): kind, display name, reported metrics, the
one number per task, the fine-tuning recipe's per-task epochs and pair swapping (conf/task/ leaves those
null: FinetuneConfig fills them in from here).

Torch-free and dependency-free, so the score table, the GLUE and SQuAD loaders and the configs' checks all
read the same facts. Where GLUE data lives (hub configs, TSV quirks, labels) stays in convbert/glue/tasks.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class TaskInfo:
    name: str  # our key: the HF hub config for GLUE, squad1 / squad2 for SQuAD
    kind: Literal["glue", "squad"]
    title: str  # display name in tables and logs
    metrics: tuple[str, ...]  # results.json metric keys, in the order tables print them
    main_metric: str  # the one number per task of ELECTRA's README table
    epochs: int = 3  # fine-tuning epochs of the recipe (docs/design.md §4)
    double_unordered: bool = False  # also train on the swapped pair (b, a) (docs/design.md §4)
    in_electra_average: bool = True  # counted in ELECTRA's 8-task GLUE average (WNLI is not)


_ALL = (
    TaskInfo("cola", "glue", "CoLA", ("mcc",), "mcc"),
    TaskInfo("sst2", "glue", "SST-2", ("accuracy",), "accuracy"),
    # leaderboard order for two-metric tasks: F1/acc, Pearson/Spearman, matched/mismatched
    TaskInfo("mrpc", "glue", "MRPC", ("f1", "accuracy"), "accuracy", double_unordered=True),
    TaskInfo("stsb", "glue", "STS-B", ("pearson", "spearman"), "spearman", epochs=10, double_unordered=True),
    TaskInfo("qqp", "glue", "QQP", ("f1", "accuracy"), "accuracy"),
    TaskInfo("mnli", "glue", "MNLI", ("accuracy_m", "accuracy_mm"), "accuracy_m"),
    TaskInfo("qnli", "glue", "QNLI", ("accuracy",), "accuracy"),
    TaskInfo("rte", "glue", "RTE", ("accuracy",), "accuracy", epochs=10),
    TaskInfo("wnli", "glue", "WNLI", ("accuracy",), "accuracy", in_electra_average=False),
    TaskInfo("squad1", "squad", "SQuAD1.1", ("exact", "f1"), "exact", epochs=2, in_electra_average=False),
    TaskInfo("squad2", "squad", "SQuAD2.0", ("exact", "f1"), "exact", epochs=2, in_electra_average=False),
)

REGISTRY: dict[str, TaskInfo] = {t.name: t for t in _ALL}

TASKS: tuple[str, ...] = tuple(REGISTRY)  # canonical order: GLUE, then SQuAD
GLUE_TASKS: tuple[str, ...] = tuple(t.name for t in _ALL if t.kind == "glue")  # all 9, WNLI included
SQUAD_TASKS: tuple[str, ...] = tuple(t.name for t in _ALL if t.kind == "squad")
ELECTRA_TASKS: tuple[str, ...] = tuple(t.name for t in _ALL if t.in_electra_average)  # 8, no WNLI

# the task config keys whose null means the registry's value, by kind (SQuAD has no sentence pair to swap)
RECIPE_KEYS: dict[str, tuple[str, ...]] = {"glue": ("epochs", "double_unordered"), "squad": ("epochs",)}

# correlations may be negative; every other reported metric is a percentage in [0, 100]
SIGNED_METRICS = frozenset({"mcc", "pearson", "spearman"})
METRIC_ABBREV: dict[str, str] = {
    "mcc": "MCC", "accuracy": "acc", "f1": "F1", "pearson": "P", "spearman": "S",
    "accuracy_m": "m", "accuracy_mm": "mm", "exact": "EM",
}


def task_info(name: str) -> TaskInfo:
    """The registry entry for `name` (case and '-' ignored: 'SST-2' == 'sst2'); KeyError lists the tasks."""
    key = name.lower().replace("-", "")
    if key not in REGISTRY:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}")
    return REGISTRY[key]


def recipe_defaults(name: str) -> dict[str, Any]:
    """The fine-tuning recipe's per-task settings (RECIPE_KEYS) of task `name`."""
    info = task_info(name)
    return {key: getattr(info, key) for key in RECIPE_KEYS[info.kind]}


def order_tasks(tasks: set[str] | list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Canonical GLUE-then-SQuAD order."""
    wanted = set(tasks)
    return tuple(t for t in TASKS if t in wanted)
