"""Reference rows fitted on the fine-tuning jobs' own data (convbert/report/baselines.py) and their place in the
score table: majority class and bag of words, cached by the examples' fingerprint, never compared."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from glue_fixtures import make_benchmark, write_glue_dir
from helpers import run_process
from test_table import record, write

from convbert.glue.data import load_split
from convbert.report import aggregate, collect, compare, to_markdown
from convbert.report.baselines import DataSpec, baseline_rows, task_baselines
from convbert.report.writers import table_csv


@pytest.fixture(scope="module")
def glue(tmp_path_factory) -> Path:
    # labels signalled by a cue word: words alone predict them, which a bag of words must find
    return write_glue_dir(tmp_path_factory.mktemp("glue"), make_benchmark(n_train=200, n_dev=60, n_test=4),
                          tasks=["sst2", "rte", "stsb", "mnli"])


def test_majority_class_is_the_training_mode_scored_on_dev(glue):
    spec = DataSpec(dir=str(glue), max_train_examples=50, max_eval_examples=40)
    scores = task_baselines("sst2", spec)
    train = [ex.label for ex in load_split("sst2", "train", glue).examples[:50]]
    dev = np.array([ex.label for ex in load_split("sst2", "validation", glue).examples[:40]])
    mode = Counter(train).most_common(1)[0][0]
    assert scores["majority class"] == {"accuracy": pytest.approx(100 * np.mean(dev == mode))}
    more = task_baselines("sst2", DataSpec(dir=str(glue), max_eval_examples=40))["bag of words"]["accuracy"]
    assert scores["bag of words"]["accuracy"] < more >= 85  # the cue words separate the classes, given examples
    mnli = task_baselines("mnli", DataSpec(dir=str(glue)))
    assert set(mnli["bag of words"]) == {"accuracy_m", "accuracy_mm"}  # both dev sets, the jobs' metric names


def test_regression_baselines(glue):
    scores = task_baselines("stsb", DataSpec(dir=str(glue)))
    assert scores["majority class"] == {}  # a constant has no correlation: shown as missing, not as 0
    assert scores["bag of words"]["pearson"] > 50  # the cue word tracks the score's half


def test_fits_are_cached_by_the_examples_fingerprint(glue, tmp_path):
    spec = DataSpec(dir=str(glue), max_train_examples=100)
    first = task_baselines("rte", spec, tmp_path)
    (cached,) = tmp_path.glob("rte-*.json")
    cached.write_text(json.dumps({"majority class": {"accuracy": 12.5}, "bag of words": {"accuracy": 25.0}}))
    assert task_baselines("rte", spec, tmp_path)["bag of words"] == {"accuracy": 25.0}  # read, not refitted
    cached.write_text('{"torn')
    assert task_baselines("rte", spec, tmp_path) == first  # a torn cache file is refitted and rewritten
    assert json.loads(cached.read_text()) == first
    task_baselines("rte", DataSpec(dir=str(glue), max_train_examples=80), tmp_path)  # other examples, other file
    assert len(list(tmp_path.glob("rte-*.json"))) == 2


def data(glue: Path, cap: int | None = None) -> dict:
    return {"data": {"dir": str(glue), "hub_path": None, "max_train_examples": cap, "max_eval_examples": None}}


def test_the_table_shows_reference_rows_apart_from_the_models(glue, tmp_path):
    runs = tmp_path / "runs"
    for name, shift in (("convbert-small", 0.0), ("electra-small", -3.0)):
        for seed in (1, 2, 3):
            for task in ("sst2", "rte"):
                write(runs, record(task, seed, name=name, checkpoint=name, shift=shift, **data(glue, 150)))
    same = {"name": "convbert-small", "checkpoint": "convbert-small"}
    for seed, cap in ((1, None), (2, 120), (3, 120)):  # jobs on different data: the most common wins, noted
        write(runs, record("stsb", seed, **same, **data(glue, cap)))
    results = collect([runs])
    fitted, notes = baseline_rows(results, ("sst2", "rte", "stsb"), tmp_path / "cache")
    assert [r.label for r in fitted] == ["majority class", "bag of words"]
    assert set(fitted[1].cells) == {"sst2", "rte", "stsb"} and "stsb" not in fitted[0].cells
    assert fitted[1].cells["sst2"].value("accuracy") == task_baselines("sst2", DataSpec(str(glue), None, 150))[
        "bag of words"]["accuracy"]
    assert any("STS-B jobs used 2 different data settings" in n for n in notes)
    table = aggregate(results, references=fitted)
    assert [r.label for r in table.models] == ["convbert-small", "electra-small"]
    assert compare(table, "convbert-small", "electra-small", n_boot=200).a == "convbert-small"
    md = to_markdown(table)
    assert "| bag of words° |" in md and "## Reference rows fitted on the same data (°)" in md
    assert "bag of words,baseline," in table_csv(table)


def test_results_without_data_settings_or_with_unreadable_data(glue, tmp_path):
    old = record("rte", 1)  # no data section at all
    assert baseline_rows([parse(old)], ("rte",)) == ([], [])
    gone = parse(record("rte", 1, **data(tmp_path / "moved")))
    rows, notes = baseline_rows([gone], ("rte",))
    assert rows == [] and len(notes) == 1 and notes[0].startswith("reference rows: RTE not fitted: ")


def parse(rec: dict):
    from convbert.report.schema import parse_result

    return parse_result(rec)


@pytest.mark.slow  # a subprocess through the entry point
def test_standalone_stage_writes_the_reference_table(glue, tmp_path):
    out = tmp_path / "out"
    done = run_process(["-m", "pipelines.baselines", f"data.dir={glue}", "tasks=[sst2,stsb]",
                        "data.max_train_examples=100", f"output_dir={out}", f"cache_dir={tmp_path / 'cache'}"],
                       timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    bow = task_baselines("sst2", DataSpec(str(glue), None, 100))["bag of words"]["accuracy"]
    md = (out / "table.md").read_text()
    assert f"| bag of words° | {bow:.1f}" in md and "| majority class° |" in md
    assert len(list((tmp_path / "cache").glob("*.json"))) == 2
    bad = run_process(["-m", "pipelines.baselines", f"data.dir={glue}", "tasks=[squad1]", f"output_dir={out}"])
    assert bad.returncode == 1 and "tasks ['squad1'] are not GLUE tasks" in bad.stderr
