"""Optuna search as a Hydra sweep (hparams_search=glue_lr): 3 trials on the tiny fixtures, interrupted by SIGTERM
in the middle and continued by the same command; the best-trial summary; the table shows the best trial's seeds
marked as dev-selected."""

import json
import signal
import sqlite3
import time
from pathlib import Path

import pytest
from glue_fixtures import write_rte_finetune_env
from helpers import run_process, start_process

from convbert.report import aggregate, collect, to_markdown
from convbert.train.signals import PREEMPTED_EXIT_CODE

pytestmark = pytest.mark.slow  # end to end: an Optuna sweep of fine-tuning jobs, interrupted and continued


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_rte_finetune_env(tmp_path_factory.mktemp("search"), n_train=60)


def search_command(env: Path, sweep: Path) -> list[str]:
    return ["-m", "pipelines.finetune", "-m", "hparams_search=glue_lr", "task=rte",
            f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", "task.max_length=32", "trainer.batch_size=4",
            "trainer.threads=1", "trainer.log_every=1", "tracking.mode=disabled", "data.predict_test=false",
            "seeds=[1,2]", "hydra.sweeper.n_trials=3", "task.epochs=choice(1,2)", f"hydra.sweep.dir={sweep}"]


def trial_states(sweep: Path) -> dict[int, str]:
    with sqlite3.connect(sweep / "optuna.db") as db:
        return dict(db.execute("select number, state from trials"))


def test_search_completes_continues_after_interruption_and_reports_the_best_trial(env, tmp_path):
    sweep = tmp_path / "search"
    proc = start_process(search_command(env, sweep))
    deadline = time.time() + 300
    while not (sweep / "trial1" / "seed1" / "metrics.jsonl").exists() and proc.poll() is None \
            and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGTERM)  # in trial 1 (or just after): the job checkpoints and exits "preempted"
    _, err = proc.communicate(timeout=120)
    assert proc.returncode in (PREEMPTED_EXIT_CODE, -signal.SIGTERM), err[-3000:]
    states = trial_states(sweep)
    assert list(states.values()).count("RUNNING") == 1 and states[0] == "COMPLETE"
    interrupted = next(n for n, s in states.items() if s == "RUNNING")

    again = run_process(search_command(env, sweep))
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"relaunching interrupted trial(s) [{interrupted}]" in again.stdout + again.stderr
    assert trial_states(sweep) == {0: "COMPLETE", 1: "COMPLETE", 2: "COMPLETE"}
    summary = json.loads((sweep / "search_summary.json").read_text())
    assert summary["finished"] == 3 and [t["number"] for t in summary["trials"]] == [0, 1, 2]
    best = summary["best"]
    assert best["value"] == max(t["value"] for t in summary["trials"])
    assert set(best["params"]) == {"optim.lr", "optim.layer_decay", "task.epochs"}
    assert 1e-5 <= best["params"]["optim.lr"] <= 1e-3 and best["params"]["task.epochs"] in (1, 2)
    # each trial's objective is the median over its seeds of the main dev metric
    for t in summary["trials"]:
        objective = json.loads((Path(t["job_dir"]) / "objective.json").read_text())
        values = [json.loads((Path(t["job_dir"]) / f"seed{s}" / "results.json").read_text())["metrics"]["accuracy"]
                  for s in (1, 2)]
        assert objective["values"] == values and t["value"] == pytest.approx(sum(values) / 2)
        trial_result = json.loads((Path(t["job_dir"]) / "seed1" / "results.json").read_text())
        assert trial_result["search"]["trial"] == t["number"] and trial_result["search"]["name"] == "glue_lr"
        assert trial_result["hparams"]["lr"] == pytest.approx(t["params"]["optim.lr"])

    table = aggregate(collect([sweep]))
    (row,) = table.models
    cell = row.cells["rte"]
    assert cell.dev_selected and cell.seeds == (1, 2)
    assert all(f"trial{best['number']}" in s for s in cell.sources)
    assert cell.value("accuracy") == pytest.approx(best["value"])
    md = to_markdown(table)
    assert f"best trial {best['number']}" in md and "chosen on the dev set" in md and "§" in md


def test_a_busy_changed_or_all_failed_search_is_refused_and_failed_trials_are_retried(env, tmp_path):
    import os
    import shutil
    import socket

    sweep, glue = tmp_path / "search", tmp_path / "glue"
    shutil.copytree(env / "glue", glue)
    shutil.move(glue / "RTE", tmp_path / "RTE")  # every trial fails until the task is there
    command = [*search_command(env, sweep), f"data.dir={glue}", "seeds=[1]", "hydra.sweeper.n_trials=1"]
    sweep.mkdir()
    (sweep / ".lock").write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now",
                                             "proc_start": None}))  # this test process: a live search
    busy = run_process(command)
    assert busy.returncode != 0 and "in use by another hyper-parameter search" in busy.stderr
    assert not (sweep / "optuna.db").exists()
    (sweep / ".lock").unlink()

    failed = run_process(command)
    assert failed.returncode != 0 and "no trial of the search in" in failed.stderr + failed.stdout
    assert trial_states(sweep) == {0: "FAIL"}
    changed = run_process([*command, "task.max_length=48"])
    assert changed.returncode != 0 and "holds a search with other settings" in changed.stderr
    assert "fixed task.max_length=48 -> added" in changed.stderr and trial_states(sweep) == {0: "FAIL"}

    shutil.move(tmp_path / "RTE", glue / "RTE")  # the cause fixed: the same command replaces the failed trial
    again = run_process(command)
    assert again.returncode == 0, again.stderr[-3000:]
    assert trial_states(sweep) == {0: "FAIL", 1: "COMPLETE"}
