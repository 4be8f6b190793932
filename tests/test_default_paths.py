"""The stages as a user runs them: from their own working directory, with the default, relative `paths`
(resolved through ${hydra:runtime.cwd}). The run-dir callbacks must work there, not only with an absolute
hydra.run.dir, and bad settings must be refused before anything is written."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from glue_fixtures import make_benchmark, write_glue_dir
from helpers import run_process

from convbert.train.lock import DirLock

pytestmark = pytest.mark.slow  # subprocesses through the real entry points

FINETUNE = ["task=rte", "init=runs/pretrain/smoke", "data.dir=glue", "optim.lr=1e-4", "task.max_length=32",
            "trainer.batch_size=8", "task.epochs=1", "trainer.threads=1", "tracking.mode=disabled"]


def stage(name: str, cwd: Path, *args: str):
    return run_process(["-m", f"pipelines.{name}", *args], cwd=cwd, timeout=300)


def assert_callbacks_ran(proc) -> None:
    assert "Callback" not in proc.stderr and "HydraConfig was not set" not in proc.stderr, proc.stderr[-3000:]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A user's directory holding a finished smoke pretraining run (runs/pretrain/smoke) and a GLUE copy."""
    cwd = tmp_path_factory.mktemp("user")
    done = stage("pretrain", cwd, "experiment=smoke")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_callbacks_ran(done)
    write_glue_dir(cwd / "glue", make_benchmark(n_train=16, n_dev=8, n_test=4))
    return cwd


def test_pretraining_refusals_leave_the_run_record_alone(workdir):
    run = workdir / "runs" / "pretrain" / "smoke"
    record = (run / ".hydra" / "overrides.yaml").read_text()
    changed = stage("pretrain", workdir, "experiment=smoke", "optim.lr=5e-4")
    assert changed.returncode == 1 and "holds a run with other settings (optim.lr: 0.001 -> 0.0005)" in changed.stderr
    assert_callbacks_ran(changed)
    with DirLock(run, "pretraining run"):  # this test process: a live run in that dir
        busy = stage("pretrain", workdir, "experiment=smoke", "trainer.max_steps=4")
    assert busy.returncode == 1 and f"in use by another pretraining run: pid {os.getpid()}" in busy.stderr
    assert (run / ".hydra" / "overrides.yaml").read_text() == record  # neither refusal rewrote it


def test_bad_seeds_are_refused_before_any_dir_is_made(workdir):
    for bad in ("seed=-1", f"seed={2**70}", "data_seed=-1", "seed=abc"):
        proc = stage("pretrain", workdir, "experiment=smoke", "name=badseed", bad)
        key, value = bad.split("=")
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert f"error: {key} must be an integer in [0, 4294967295], got {value if value != 'abc' else repr(value)}" \
            in proc.stderr
    assert not (workdir / "runs" / "pretrain" / "badseed").exists()
    proc = stage("finetune", workdir, *FINETUNE, "seed=abc")
    assert proc.returncode == 1 and "error: seed must be an integer in [0, 4294967295], got 'abc'" in proc.stderr
    assert not (workdir / "runs" / "finetune" / "smoke" / "rte" / "seedabc").exists()


def test_squad_with_a_glue_dir_is_named_before_any_work(workdir):
    proc = stage("finetune", workdir, *[a for a in FINETUNE if not a.startswith("task.")], "task=squad1")
    assert proc.returncode == 1
    assert "error: data.dir=glue lacks train-v1.1.json, dev-v1.1.json: for SQuAD 1.1" in proc.stderr
    assert not (workdir / "runs" / "finetune" / "smoke" / "squad1").exists()


def test_a_finished_fine_tuning_job_is_refused_without_touching_its_record(workdir):
    done = stage("finetune", workdir, *FINETUNE, "seed=5")
    assert done.returncode == 0, done.stderr[-3000:]
    assert_callbacks_ran(done)
    job = workdir / "runs" / "finetune" / "smoke" / "rte" / "seed5"
    record = (job / ".hydra" / "overrides.yaml").read_text()
    again = stage("finetune", workdir, *FINETUNE, "seed=5", "optim.lr=2e-4")
    assert again.returncode == 1 and "already holds the results.json of a finished job" in again.stderr
    assert (job / ".hydra" / "overrides.yaml").read_text() == record


def test_a_run_dir_that_cannot_be_created_is_named(tmp_path):
    (tmp_path / "runs").write_text("not a directory")
    proc = stage("pretrain", tmp_path, "experiment=smoke")
    assert proc.returncode == 1
    assert f"error: run dir {tmp_path / 'runs' / 'pretrain' / 'smoke'} cannot be created: {tmp_path / 'runs'} is " \
           "not a directory" in proc.stderr
