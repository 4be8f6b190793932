"""Resumable fine-tuning jobs: SIGTERM and kill -9 mid-epoch, then the same command again, give the results of
an uninterrupted job (bit-identical on CPU) with each step logged once; a live job's dir is refused."""

import json
import os
import signal
import time
from pathlib import Path

import pytest
from glue_fixtures import write_rte_finetune_env
from helpers import run_entry, start_process

from convbert.train.signals import PREEMPTED_EXIT_CODE

STEPS_PER_EPOCH = 100  # 200 RTE pairs, batches of 2: long enough to land a signal mid-epoch


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return write_rte_finetune_env(tmp_path_factory.mktemp("resume"), n_train=200)


def overrides(env: Path) -> list[str]:
    """The job's command line, less its run dir: for a subprocess or helpers.run_entry."""
    return ["task=rte", f"init={env / 'pretrain'}", f"data.dir={env / 'glue'}", "task.max_length=32",
            "trainer.batch_size=2", "task.epochs=2", "trainer.threads=1", "trainer.log_every=1",
            "trainer.device=cpu", "tracking.mode=disabled"]


def steps_logged(run_dir: Path) -> int:
    try:
        rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return 0
    return sum('"train/loss"' in r for r in rows)


def interrupt(env: Path, run_dir: Path, sig: int, after_step: int) -> tuple[int, str]:
    """Start the job, send `sig` once it has logged `after_step` steps -> (its exit code, its stderr)."""
    proc = start_process(["-m", "pipelines.finetune", *overrides(env), f"hydra.run.dir={run_dir}"])
    deadline = time.time() + 240
    while steps_logged(run_dir) < after_step and proc.poll() is None and time.time() < deadline:
        time.sleep(0.005)
    proc.send_signal(signal.SIGSTOP)  # freeze it where it is, to check that the signal lands mid-epoch
    time.sleep(0.1)
    n = steps_logged(run_dir)
    assert n % STEPS_PER_EPOCH and n < 2 * STEPS_PER_EPOCH, f"the signal would land at step {n}, not mid-epoch"
    proc.send_signal(sig)
    proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=120)
    assert not (run_dir / "results.json").exists(), "the job finished before the signal: make it longer"
    return proc.returncode, err


def train_rows(run_dir: Path) -> list[int]:
    rows = [json.loads(r) for r in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [r["step"] for r in rows if "train/loss" in r]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


@pytest.mark.slow  # end to end: two fine-tuning subprocesses, signalled mid-epoch
def test_sigterm_then_kill9_mid_epoch_then_rerun_gives_the_uninterrupted_results(env, tmp_path):
    run_dir = tmp_path / "run"
    rc, err = interrupt(env, run_dir, signal.SIGTERM, 30)
    # SIGTERM: finishes its step, checkpoints mid-epoch, exits "preempted" (no failure recorded)
    assert rc == PREEMPTED_EXIT_CODE, err[-3000:]
    assert "SIGTERM received" in err and not (run_dir / "failed.json").exists()
    assert "(checkpointed); rerun the same command" in err  # what to do next
    (ckpt,) = (run_dir / "checkpoint").iterdir()
    assert int(ckpt.stem.split("_")[1]) % STEPS_PER_EPOCH != 0  # mid-epoch
    # resumed, then kill -9 in epoch 2: back to the epoch-1 checkpoint, with a lock whose owner is gone
    rc, err = interrupt(env, run_dir, signal.SIGKILL, STEPS_PER_EPOCH + 30)
    assert rc == -signal.SIGKILL and (run_dir / ".lock").exists()
    assert steps_logged(run_dir) > STEPS_PER_EPOCH
    # the same command again (in this process: what is resumed comes from the run dir, not the process)
    with pytest.warns(UserWarning, match="taking over the lock"):
        run_entry("finetune", *overrides(env), run_dir=run_dir)
    res = results(run_dir)
    assert res["resumed_from_step"] == STEPS_PER_EPOCH
    run_entry("finetune", *overrides(env), run_dir=tmp_path / "uninterrupted")
    ref = results(tmp_path / "uninterrupted")
    assert res["metrics"] == ref["metrics"]  # bit-identical on CPU
    assert res["history"] == ref["history"] and res["steps"] == ref["steps"] == 2 * STEPS_PER_EPOCH
    assert res["examples_seen"] == ref["examples_seen"]
    assert train_rows(run_dir) == list(range(1, 2 * STEPS_PER_EPOCH + 1))  # each step once
    assert (run_dir / "dev_predictions.tsv").read_text() == Path(ref["predictions_file"]).read_text()
    assert not (run_dir / "checkpoint").exists() and not (run_dir / ".lock").exists()
    job = json.loads((run_dir / "job.json").read_text())
    assert job["task"] == "rte" and job["seed"] == 1 and job["init_name"] == "pretrain"
    assert job["settings"]["trainer"]["batch_size"] == 2


def test_a_live_job_dir_and_other_settings_are_refused(env, tmp_path):
    from convbert.finetune import FinetuneConfig, JobDone, SettingsMismatch, record_job, run_job
    from convbert.train.lock import DirLock, DirLockedError

    cfg = {"task": {"kind": "glue", "name": "rte", "max_length": 32, "epochs": 1}, "init": str(env / "pretrain"),
           "data": {"dir": str(env / "glue")}, "trainer": {"batch_size": 2, "threads": 1}}
    run_dir = tmp_path / "run"
    # a live job (this process) holds the dir: the entry point refuses it, naming the holder
    refused = f"in use by another fine-tuning job: pid {os.getpid()}"
    with DirLock(run_dir, "fine-tuning job"), pytest.raises(DirLockedError, match=refused):
        run_entry("finetune", *overrides(env), run_dir=run_dir)
    assert not (run_dir / "failed.json").exists()  # the refusal leaves the live job's dir alone
    # an attempt that failed before training: a rerun's settings replace its own
    record_job(run_dir, FinetuneConfig.from_dict({**cfg, "optim": {"lr": 1e-4}}))
    record_job(run_dir, FinetuneConfig.from_dict({**cfg, "optim": {"lr": 2e-4}}))
    assert json.loads((run_dir / "job.json").read_text())["settings"]["optim"]["lr"] == 2e-4
    # once a checkpoint holds trained state, only the same settings may continue it
    (run_dir / "checkpoint").mkdir()
    (run_dir / "checkpoint" / "step_00000003.pt").write_bytes(b"")
    with pytest.raises(SettingsMismatch, match=r"other settings \(settings.optim.lr: 0.0002 -> None"):
        run_job(FinetuneConfig.from_dict(cfg), run_dir)
    (run_dir / "results.json").write_text("{}")
    with pytest.raises(JobDone, match="already holds the results.json"):
        run_job(FinetuneConfig.from_dict(cfg), run_dir)
    (run_dir / "results.json").write_text('{"task": "rte", "metr')  # torn: the message says so
    with pytest.raises(JobDone, match=r"whose results.json is damaged \(.*invalid JSON at line 1"):
        run_job(FinetuneConfig.from_dict(cfg), run_dir)


def test_a_fresh_start_drops_the_rows_of_an_attempt_killed_before_its_first_checkpoint(tmp_path):
    from convbert.finetune.fit import _resume
    from convbert.train import Tracker, read_metrics

    tracker = Tracker(tmp_path, {}, mode="disabled")
    for step in (10, 20):
        tracker.log({"loss": 1.0}, step)
    assert _resume(tmp_path / "checkpoint", {}, tracker) is None  # no checkpoint: the job starts at step 0
    assert read_metrics(tmp_path) == []  # so the rerun's steps 10 and 20 are not logged twice
