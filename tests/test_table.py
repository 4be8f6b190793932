"""Score table: aggregation, averages, bootstrap comparison and outputs on synthetic results.json files."""

from __future__ import annotations

import csv
import io
import itertools
import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_process

from convbert.report import (
    ReportError,
    aggregate,
    collect,
    compare,
    load_references,
    load_result,
    scan,
    to_markdown,
    write_outputs,
)
from convbert.report.aggregate import collapsed_jobs
from convbert.report.compare import min_p_value
from convbert.report.tasks import ELECTRA_TASKS, GLUE_TASKS, MAIN_METRIC, TASK_METRICS

REPO = Path(__file__).resolve().parents[1]

# per-task base scores for the synthetic model; every metric of a task gets base + an offset
BASE = {"cola": 55.0, "sst2": 90.0, "mrpc": 86.0, "stsb": 86.0, "qqp": 88.0, "mnli": 80.0, "qnli": 87.0,
        "rte": 65.0, "wnli": 56.0, "squad1": 75.0, "squad2": 70.0}


def metrics_for(task: str, base: float) -> dict[str, float]:
    # distinct values per metric so a wrong metric choice changes the averages
    return {m: base + 2.0 * i for i, m in enumerate(TASK_METRICS[task])}


def record(task: str, seed: int, metrics: dict | None = None, name: str = "convbert-small",
           checkpoint: str = "ckptA", vocab: str = "vocab1", shift: float = 0.0, **extra) -> dict:
    return {
        "task": task,
        "metrics": metrics if metrics is not None else metrics_for(task, BASE[task] + shift + seed),
        "seed": seed,
        "model": {"name": name, "preset": "small", "attention": "mixed", "init": f"runs/pretrain/{checkpoint}",
                  "checkpoint_id": checkpoint, "vocab_id": vocab},
        "pretraining": {"tokens": 2_000_000, "flops": 3.5e15, "device_hours": 0.25, "device": "cpu"},
        "steps": 100, "examples_seen": 3200, "wall_time_s": 36.0, "flops": 1.0e12, "git_revision": "abc123",
        "run_dir": f"runs/ft/{task}/{seed}", "predictions_file": "predictions.jsonl",
    } | extra


def write(root: Path, rec: dict, sub: str | None = None) -> Path:
    d = root / (sub or f"{rec['model']['checkpoint_id']}-{rec['model']['vocab_id']}-{rec['task']}-{rec['seed']}")
    d.mkdir(parents=True, exist_ok=True)
    (d / "results.json").write_text(json.dumps(rec))
    return d / "results.json"


def write_model(root: Path, tasks=ELECTRA_TASKS, seeds=(1, 2, 3), **kw) -> None:
    for t in tasks:
        for s in seeds:
            write(root, record(t, s, **kw))


# ---- aggregation ----


def test_median_and_seed_statistics(tmp_path):
    for seed, v in [(1, 50.0), (2, 70.0), (3, 60.0)]:
        write(tmp_path, record("cola", seed, {"mcc": v}))
    table = aggregate(collect([tmp_path]))
    (row,) = table.models
    s = row.cells["cola"].stats["mcc"]
    assert (s.median, s.mean, s.std, s.min, s.max, s.n) == (60.0, 60.0, 10.0, 50.0, 70.0, 3)
    assert row.cells["cola"].seeds == (1, 2, 3)
    assert row.compute.n_runs == 3 and row.compute.pretrain_tokens == 2_000_000
    assert row.compute.finetune_hours == pytest.approx(3 * 36.0 / 3600)


def test_both_glue_averages(tmp_path):
    write_model(tmp_path, tasks=GLUE_TASKS)
    (row,) = aggregate(collect([tmp_path])).models
    # seeds 1..3 -> median at seed 2; metric i of a task is base + 2 + 2i
    main = [BASE[t] + 2 + 2 * TASK_METRICS[t].index(MAIN_METRIC[t]) for t in ELECTRA_TASKS]
    assert row.averages["electra8"].value == pytest.approx(sum(main) / 8)
    # ELECTRA's average uses MRPC/QQP accuracy (the second listed metric), not F1
    assert MAIN_METRIC["mrpc"] == "accuracy" and row.cells["mrpc"].value("accuracy") == BASE["mrpc"] + 4

    def within(t):
        return BASE[t] + 2 + (len(TASK_METRICS[t]) - 1)  # mean of base+2, base+4 (or base+2 alone)

    assert row.averages["lb9"].value == pytest.approx(sum(within(t) for t in GLUE_TASKS) / 9)
    assert row.averages["lb8"].value == pytest.approx(sum(within(t) for t in ELECTRA_TASKS) / 8)


def test_missing_tasks_and_seeds_are_shown_not_averaged_away(tmp_path):
    write_model(tmp_path, tasks=[t for t in ELECTRA_TASKS if t != "rte"])
    (tmp_path / "ckptA-vocab1-cola-3" / "results.json").unlink()
    table = aggregate(collect([tmp_path]))
    (row,) = table.models
    assert row.averages["electra8"].value is None and row.averages["electra8"].missing == ("rte",)
    assert row.averages["lb9"].missing == ("rte", "wnli")
    assert row.cells["cola"].missing_seeds == (3,) and row.cells["cola"].seeds == (1, 2)
    assert "wnli" in table.tasks and "rte" not in row.cells
    md = to_markdown(table)
    assert "(2/3)" in md
    assert any("no results for RTE, WNLI" in n for n in table.notes)
    assert any("CoLA missing seed(s) 3" in n for n in table.notes)
    # explicit expected seeds: seed 4 is missing everywhere
    row = aggregate(collect([tmp_path]), seeds=[1, 2, 3, 4]).models[0]
    assert row.cells["sst2"].missing_seeds == (4,) and row.cells["cola"].missing_seeds == (3, 4)
    # seeds outside the list are left out (noted), so every task's median is over the same seeds
    table = aggregate(collect([tmp_path]), seeds=[1, 2])
    assert table.models[0].cells["sst2"].seeds == (1, 2) and table.models[0].cells["sst2"].missing_seeds == ()
    assert any("left out results of seed(s) 3" in n for n in table.notes)
    with pytest.raises(ReportError, match="no results for seeds"):
        aggregate(collect([tmp_path]), seeds=[7])


def test_scores_on_part_of_the_dev_set_are_noted(tmp_path):
    write_model(tmp_path, tasks=["rte"], seeds=(1,))
    path = tmp_path / "ckptA-vocab1-rte-1" / "results.json"
    res = json.loads(path.read_text())
    path.write_text(json.dumps({**res, "dev_examples": {"used": 100, "total": 277}}))
    table = aggregate(collect([tmp_path]))
    assert any("RTE scored on part of the dev set (100 of 277" in n for n in table.notes)
    path.write_text(json.dumps({**res, "dev_examples": {"used": 300, "total": 277}}))
    with pytest.raises(ReportError, match="dev_examples"):
        aggregate(collect([tmp_path], on_error="raise"))


def test_collapsed_runs_are_marked_and_named(tmp_path):
    write_model(tmp_path, tasks=["rte", "sst2"], seeds=(1, 2, 3))
    path = tmp_path / "ckptA-vocab1-rte-2" / "results.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), "collapsed": True}))
    table = aggregate(collect([tmp_path]))
    row = table.row("convbert-small")
    assert row.cells["rte"].collapsed == (2,) and row.cells["sst2"].collapsed == ()
    md = to_markdown(table)
    assert "| 92.0 | – | – | – | – | – | 67.0! |" in md  # the RTE median carries the mark, SST-2 does not
    assert any(n.startswith("! convbert-small: RTE collapsed in 1 of 3 seed(s) (2)") for n in table.notes)
    assert collapsed_jobs(table) == [f"convbert-small: RTE seed 2 ({path})"]


def test_different_vocab_or_checkpoint_never_merged(tmp_path):
    write_model(tmp_path, tasks=["sst2"])
    write_model(tmp_path, tasks=["sst2"], vocab="vocab2", shift=5.0)
    write_model(tmp_path, tasks=["sst2"], name="bert-small", checkpoint="ckptB", shift=-5.0)
    table = aggregate(collect([tmp_path]))
    labels = sorted(r.label for r in table.models)
    assert labels == ["bert-small", "convbert-small [vocab_id=vocab1]", "convbert-small [vocab_id=vocab2]"]
    assert {r.cells["sst2"].stats["accuracy"].n for r in table.models} == {3}
    assert any("kept apart" in n for n in table.notes)


def test_duplicate_seed_keeps_newest_or_fails(tmp_path):
    write(tmp_path, record("rte", 1, {"accuracy": 60.0}), sub="old")
    newer = write(tmp_path, record("rte", 1, {"accuracy": 70.0}), sub="new")
    os.utime(newer, (2e9, 2e9))
    results = collect([tmp_path])
    table = aggregate(results)
    assert table.models[0].cells["rte"].value("accuracy") == 70.0
    assert any("rte seed 1 has 2 results" in n for n in table.notes)
    with pytest.raises(ReportError, match="rte seed 1 has 2 results"):
        aggregate(results, duplicates="error")


def test_unknown_task_in_columns(tmp_path):
    write_model(tmp_path, tasks=["sst2"], seeds=(1,))
    with pytest.raises(ReportError, match="unknown task.*boolq"):
        aggregate(collect([tmp_path]), tasks=["sst2", "boolq"])


# ---- bad input ----


def test_malformed_files_are_named_and_skipped(tmp_path, caplog):
    write_model(tmp_path, tasks=["sst2"], seeds=(1,))
    bad = tmp_path / "broken" / "results.json"
    bad.parent.mkdir()
    bad.write_text('{"task": "sst2",\n "metrics": {')
    with caplog.at_level(logging.WARNING):
        results = collect([tmp_path])
    assert len(results) == 1
    assert str(bad) in caplog.text and "invalid JSON at line 2" in caplog.text
    with pytest.raises(ReportError, match="broken/results.json: invalid JSON"):
        collect([tmp_path], on_error="raise")


def test_failed_jobs_are_reported_and_stale_results_skipped(tmp_path, caplog):
    write_model(tmp_path, tasks=["sst2"], seeds=(1, 2))
    stale = tmp_path / "ckptA-vocab1-sst2-2"
    (stale / "failed.json").write_text(json.dumps({"error": "RuntimeError: out of memory"}))
    lost = tmp_path / "other-job"
    lost.mkdir()
    (lost / "failed.json").write_text(json.dumps({"error": "FileNotFoundError: no GLUE dir"}))
    with caplog.at_level(logging.WARNING):
        results = collect([tmp_path])
    assert [r.seed for r in results] == [1]
    assert "stale, the job run in that dir since failed" in caplog.text
    assert f"failed job, shown as missing: {lost.resolve()} (FileNotFoundError: no GLUE dir)" in caplog.text


@pytest.mark.parametrize("change, message", [
    ({"task": "boolq"}, "key 'task': unknown task 'boolq'"),
    ({"metrics": {"f1": 88.0}}, "key 'metrics.accuracy': missing"),
    ({"metrics": {"accuracy": 0.91, "f1": 0.88}}, "look like fractions"),
    ({"metrics": {"accuracy": 101.0, "f1": 88.0}}, r"outside \[0, 100\]"),
    ({"metrics": {"accuracy": "high", "f1": 88.0}}, "metrics.accuracy': expected a number"),
    ({"seed": "one"}, "key 'seed': expected a number"),
    ({"model": {"name": "x"}}, "key 'model.preset': missing"),
    ({"pretraining": [1]}, "key 'pretraining': expected an object or null"),
])
def test_validation_names_the_key(tmp_path, change, message):
    path = write(tmp_path, record("qqp", 1) | change, sub="run")
    with pytest.raises(ReportError, match=message) as err:
        load_result(path)
    assert str(path) in str(err.value)


def test_an_untrained_squad_run_is_not_mistaken_for_fractions(tmp_path):
    # EM 0 and F1 0.83 are percent from a random-init model, not fractions of a trained one
    result = load_result(write(tmp_path, record("squad1", 1, metrics={"exact": 0.0, "f1": 0.83}), sub="run"))
    assert result.metrics == {"exact": 0.0, "f1": 0.83}


def test_empty_or_missing_dir(tmp_path):
    with pytest.raises(ReportError, match="no results.json found under"):
        collect([tmp_path])
    with pytest.raises(ReportError, match="does not exist"):
        collect([tmp_path / "nope"])
    bad = tmp_path / "a" / "results.json"
    bad.parent.mkdir()
    bad.write_text("[]")
    with pytest.raises(ReportError, match="all 1 results.json files were malformed"):
        collect([tmp_path])


# ---- comparison ----


def test_bootstrap_comparison(tmp_path):
    for seed, (a, b) in enumerate([(80.0, 70.0), (81.0, 71.5), (82.0, 70.5), (80.5, 72.0), (81.5, 71.0)]):
        write(tmp_path, record("sst2", seed, {"accuracy": a, "f1": 0.0}, name="A", checkpoint="a"))
        write(tmp_path, record("sst2", seed, {"accuracy": b, "f1": 0.0}, name="B", checkpoint="b"))
    for seed, (a, b) in enumerate([(60.0, 61.0), (66.0, 59.0), (63.0, 65.0), (58.0, 62.0), (64.0, 60.0)]):
        write(tmp_path, record("rte", seed, {"accuracy": a}, name="A", checkpoint="a"))
        write(tmp_path, record("rte", seed, {"accuracy": b}, name="B", checkpoint="b"))
    write(tmp_path, record("cola", 0, {"mcc": 50.0}, name="A", checkpoint="a"))
    write(tmp_path, record("cola", 0, {"mcc": 40.0}, name="B", checkpoint="b"))
    table = aggregate(collect([tmp_path]))
    c = compare(table, "A", "B", n_boot=2000, confidence=0.95, seed=1)
    by = {(d.task, d.metric): d for d in c.rows}
    sst = by[("sst2", "accuracy")]
    assert sst.diff == pytest.approx(81.0 - 71.0) and sst.low <= sst.diff <= sst.high
    assert sst.low > 0 and sst.significant is True
    assert sst.p_value == pytest.approx(exact_median_test(*seed_values(table, "sst2", "accuracy")))
    assert 2 / 252 <= sst.p_value < 0.05  # complete separation; medians tie across some of the C(10, 5) splits
    rte = by[("rte", "accuracy")]
    assert rte.low < 0 < rte.high and rte.significant is False
    assert rte.p_value == pytest.approx(exact_median_test(*seed_values(table, "rte", "accuracy")))
    cola = by[("cola", "mcc")]
    assert cola.diff == 10.0 and cola.low is None and cola.significant is None  # one seed: no CI
    assert cola.note == "too few seeds"
    assert by[("electra8", "mean of main metrics")].diff is None  # tasks missing
    assert compare(table, "A", "B", n_boot=2000, seed=1) == c  # deterministic
    assert "permutation test" in c.method and "too few seeds" in c.method
    with pytest.raises(ReportError, match="no model labelled 'C'"):
        compare(table, "A", "C")


def seed_values(table, task, metric):
    return [np.asarray(table.row(m).cells[task].values[metric]) for m in ("A", "B")]


def exact_median_test(xa, xb) -> float:
    """Two-sided p of the difference of medians over every split of the pooled seeds (independent check)."""
    pooled, n = np.concatenate([xa, xb]), len(xa)
    observed = abs(np.median(xa) - np.median(xb))
    splits = list(itertools.combinations(range(len(pooled)), n))
    hits = sum(abs(np.median(pooled[list(s)]) - np.median(np.delete(pooled, list(s)))) >= observed - 1e-12
               for s in splits)
    return hits / len(splits)


def test_two_seeds_per_model_are_too_few_to_claim_anything(tmp_path):
    """The case that was called significant: 2 seeds each, CoLA +5.5 MCC near chance. An exact test over 4 seeds
    cannot go below p = 1/3, so no p-value or interval is claimed; 4 seeds each are tested."""
    for seed, (a, b) in enumerate([(12.0, 6.0), (13.0, 7.5)]):
        write(tmp_path, record("cola", seed, {"mcc": a}, name="A", checkpoint="a"))
        write(tmp_path, record("cola", seed, {"mcc": b}, name="B", checkpoint="b"))
    d = compare(aggregate(collect([tmp_path])), "A", "B", n_boot=1000).rows[0]
    assert d.diff == pytest.approx(5.75) and d.p_value is None and d.low is None and d.note == "too few seeds"
    assert min_p_value(2, 2) == pytest.approx(1 / 3) and min_p_value(3, 3) == pytest.approx(0.1)
    assert min_p_value(4, 4) < 0.05
    for seed, (a, b) in enumerate([(14.0, 5.0), (11.0, 8.0)], start=2):
        write(tmp_path, record("cola", seed, {"mcc": a}, name="A", checkpoint="a"))
        write(tmp_path, record("cola", seed, {"mcc": b}, name="B", checkpoint="b"))
    d = compare(aggregate(collect([tmp_path])), "A", "B", n_boot=1000).rows[0]
    assert d.p_value == pytest.approx(exact_median_test(*seed_values(aggregate(collect([tmp_path])), "cola", "mcc")))
    assert d.note == "" and d.significant is (d.p_value < 0.05) and d.low is not None


# ---- references and outputs ----


def test_reference_rows():
    refs = {r.label: r for r in load_references()}
    assert {"ELECTRA-small", "ELECTRA-base", "ConvBERT-small (PaddleNLP)"} <= set(refs)
    assert all(r.is_reference and "README" in r.published for r in refs.values())
    rows = aggregate([load_result_like()], references=list(refs.values())).rows
    small = next(r for r in rows if r.label == "ELECTRA-small")
    assert small.averages["electra8"].value == pytest.approx(
        (57.0 + 91.2 + 88.0 + 87.5 + 89.0 + 81.3 + 88.4 + 66.7) / 8)
    assert small.averages["lb9"].value is None  # only one metric per task was published
    paddle = next(r for r in rows if r.label == "ConvBERT-small (PaddleNLP)")
    assert set(paddle.averages["electra8"].approximate) == {"mrpc", "stsb", "qqp", "mnli"}


def load_result_like():
    from convbert.report.schema import parse_result

    return parse_result(record("sst2", 1))


def test_bad_reference_file(tmp_path):
    p = tmp_path / "ref.yaml"
    p.write_text("rows:\n  - label: X\n    source: s\n    scores: {sst2: {accuracy: high}}\n")
    with pytest.raises(ReportError, match="sst2.accuracy = 'high' is not a number"):
        load_references(p)


def test_outputs_exist_and_parse(tmp_path):
    runs = tmp_path / "runs"
    write_model(runs, tasks=list(ELECTRA_TASKS) + ["squad2"], name="convbert-small")
    write_model(runs, tasks=ELECTRA_TASKS, seeds=(1, 2), name="bert-small", checkpoint="ckptB", shift=-3.0)
    table = aggregate(collect([runs]), references=load_references())
    comparison = compare(table, "convbert-small", "bert-small", n_boot=500)
    files = write_outputs(table, tmp_path / "out", comparison)
    assert set(files) == {"table.md", "table.csv", "scores.csv", "runs.csv", "comparison.csv", "table.tex",
                          "chart.png"}
    md = files["table.md"].read_text()
    assert "GLUE-8 (ELECTRA)" in md and "GLUE-LB (9)" in md and "ELECTRA-base†" in md
    assert "## Comparison: convbert-small vs bert-small" in md
    wide = list(csv.DictReader(io.StringIO(files["table.csv"].read_text())))
    assert [r["model"] for r in wide][:2] == ["bert-small", "convbert-small"] and len(wide) == 2 + 4
    ours = next(r for r in wide if r["model"] == "convbert-small")
    assert float(ours["glue_electra8"]) == pytest.approx(table.row("convbert-small").averages["electra8"].value)
    assert ours["wnli_accuracy"] == "" and ours["squad2_exact"] != ""
    long = list(csv.DictReader(io.StringIO(files["scores.csv"].read_text())))
    assert any(r["task"] == "squad2" and r["metric"] == "f1" and r["n"] == "3" for r in long)
    runs_rows = list(csv.DictReader(io.StringIO(files["runs.csv"].read_text())))
    assert len(runs_rows) == 8 * 3 + 3 + 8 * 2 and Path(runs_rows[0]["results_file"]).is_file()
    cmp_rows = list(csv.DictReader(io.StringIO(files["comparison.csv"].read_text())))
    assert cmp_rows[-1]["task"] == "electra8" and cmp_rows[-1]["note"].startswith("not tested")
    assert "too few seeds" in md and "Method: difference of medians" in md  # 2 seeds for bert-small
    tex = files["table.tex"].read_text()
    body = [ln for ln in tex.splitlines() if ln.endswith(r"\\")]
    assert tex.count(r"\begin{tabular}") == 1 and len({ln.count("&") for ln in body}) == 1
    assert "_" not in tex.replace(r"\_", "")
    assert files["chart.png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    import matplotlib.image

    assert matplotlib.image.imread(files["chart.png"]).shape[0] > 100


@pytest.mark.slow
def test_wandb_offline_and_bad_mode(tmp_path):
    from convbert.report.tracking import log_to_wandb

    write_model(tmp_path / "runs", tasks=["sst2"], seeds=(1, 2))
    table = aggregate(collect([tmp_path / "runs"]))
    assert log_to_wandb(table, None, {}, mode="disabled", project="p") is None
    with pytest.raises(ReportError, match="tracking mode"):
        log_to_wandb(table, None, {}, mode="cloud", project="p")
    files = write_outputs(table, tmp_path / "out", formats=["png"])
    where = log_to_wandb(table, None, files, mode="offline", project="p", dir=tmp_path / "out")
    assert Path(where).is_dir() and str(tmp_path) in where


@pytest.mark.slow
def test_pipeline_command(tmp_path):
    write_model(tmp_path / "runs", tasks=["sst2", "cola"], seeds=(1, 2))
    out = tmp_path / "out"
    done = run_process(["-m", "pipelines.table", f"runs_dir={tmp_path / 'runs'}", f"output_dir={out}",
                        "formats=[md,csv]"], timeout=120)
    assert done.returncode == 0, done.stderr
    assert "| convbert-small |" in done.stdout
    assert (out / "table.md").is_file() and (out / "table.csv").is_file() and not (out / "chart.png").exists()
    assert (out / "hydra").is_dir() and not (REPO / "outputs").exists()


def test_pipeline_config_in_process(tmp_path):
    from helpers import hydra_job

    from pipelines.table import run

    (tmp_path / "empty").mkdir()
    dirs = [f"runs_dir={tmp_path / 'empty'}", f"output_dir={tmp_path / 'out'}"]
    with hydra_job("table", dirs, run_dir=tmp_path) as cfg, pytest.raises(ReportError, match="no results.json found"):
        run(cfg)
    write_model(tmp_path / "empty", tasks=["rte"], seeds=(1, 2))
    write_model(tmp_path / "empty", tasks=["rte"], seeds=(1, 2), name="other", checkpoint="B")
    with hydra_job("table", [*dirs, "compare=auto", "formats=[csv]", "bootstrap.samples=500"], tmp_path) as cfg:
        files = run(cfg)
        assert set(files) == {"table.csv", "scores.csv", "runs.csv", "comparison.csv"}
        cfg.compare = ["convbert-small", "ELECTRA-small"]
        with pytest.raises(ReportError, match="published row without per-seed scores"):
            run(cfg)


def test_same_name_ids_sharing_a_prefix_stay_distinct(tmp_path):
    write_model(tmp_path, tasks=["rte"], seeds=(1,), checkpoint="0123456789ab")
    write_model(tmp_path, tasks=["rte"], seeds=(1,), checkpoint="0123456789cd")
    labels = sorted(r.label for r in aggregate(collect([tmp_path])).models)
    assert labels == ["convbert-small [checkpoint_id=0123456789ab]", "convbert-small [checkpoint_id=0123456789cd]"]


def test_a_looping_results_symlink_is_reported_not_fatal(tmp_path):
    write(tmp_path, record("rte", 1), sub="good")
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "results.json").symlink_to("results.json")  # points at itself
    results, errors, _ = scan([tmp_path])
    assert [r.task for r in results] == ["rte"]
    assert len(errors) == 1 and "loop/results.json: cannot read" in errors[0]
