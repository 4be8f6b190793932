"""One task registry (convbert/tasks.py): the GLUE loader, the score table and conf/task/ agree with it."""

from __future__ import annotations

import pytest
import yaml
from helpers import CONF

from convbert import tasks
from convbert.glue import tasks as glue_tasks
from convbert.report import tasks as report_tasks


def test_glue_data_table_covers_exactly_the_registry_glue_tasks():
    assert tuple(glue_tasks.TASKS) == tasks.GLUE_TASKS == glue_tasks.GLUE_TASKS == report_tasks.GLUE_TASKS
    assert len(tasks.GLUE_TASKS) == 9 and tasks.ELECTRA_TASKS == tuple(t for t in tasks.GLUE_TASKS if t != "wnli")
    assert tasks.TASKS == tasks.GLUE_TASKS + tasks.SQUAD_TASKS == ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli",
                                                                    "qnli", "rte", "wnli", "squad1", "squad2")


@pytest.mark.parametrize("name", tasks.GLUE_TASKS)
def test_glue_task_reads_its_recipe_from_the_registry(name):
    info, task = tasks.task_info(name), glue_tasks.get_task(name)
    assert (task.metrics, task.primary_metric) == (info.metrics, info.main_metric)
    assert info.main_metric in info.metrics and set(info.metrics) <= set(tasks.METRIC_ABBREV)


def test_recipe_facts():
    """docs/design.md §4-§5: 10 epochs for RTE and STS-B, pairs swapped for MRPC and STS-B, ELECTRA's
    one number per task."""
    assert {t for t in tasks.GLUE_TASKS if tasks.task_info(t).epochs == 10} == {"rte", "stsb"}
    assert {t for t in tasks.TASKS if tasks.task_info(t).double_unordered} == {"mrpc", "stsb"}
    assert {t: tasks.task_info(t).main_metric for t in ("cola", "stsb", "mnli", "squad2")} == {
        "cola": "mcc", "stsb": "spearman", "mnli": "accuracy_m", "squad2": "exact"}
    assert report_tasks.metric_header("mrpc") == "MRPC F1/acc" and report_tasks.TASK_TITLES["squad1"] == "SQuAD1.1"


def test_lookup_is_forgiving_about_spelling_and_names_the_choices():
    assert tasks.task_info("SST-2").name == "sst2" and glue_tasks.get_task("MNLI").name == "mnli"
    with pytest.raises(KeyError, match="unknown task 'glue9'; known tasks: cola, sst2"):
        tasks.task_info("glue9")
    assert tasks.order_tasks({"squad1", "rte", "cola"}) == ("cola", "rte", "squad1")


@pytest.mark.parametrize("path", sorted((CONF / "task").glob("*.yaml")), ids=lambda p: p.stem)
def test_task_config_files_leave_the_recipe_to_the_registry(path):
    cfg = yaml.safe_load(path.read_text())
    info = tasks.task_info(cfg["name"])
    assert cfg["name"] == path.stem and cfg.get("kind", info.kind) == info.kind
    for key in tasks.RECIPE_KEYS[info.kind]:  # listed (task.epochs=... needs no +), null: not a second copy
        assert key in cfg and cfg[key] is None, f"{path.name}: {key}"
