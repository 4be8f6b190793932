"""GLUE along pretraining: checkpoints kept at chosen steps survive pruning, and `python -m pipelines.curve`
fine-tunes each of them (ordinary job dirs, reused on a rerun) into curve.csv and curve.png."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch
from glue_fixtures import write_glue_dir
from helpers import run_entry, run_process, start_process

from convbert.finetune.init import load_init
from convbert.pretrain import PretrainTrainerConfig, check_resume_config
from convbert.pretrain.kept import discriminator, export_kept
from convbert.report.curve import COLUMNS, Point, curve_csv, curve_rows, write_curve
from convbert.report.tracking import log_curve_to_wandb
from convbert.settings import ConfigError
from convbert.train.checkpoint import list_checkpoints, list_kept, load_checkpoint, save_checkpoint
from convbert.train.lock import DirLock

PRETRAIN = ["experiment=smoke", "trainer.max_steps=5", "trainer.ckpt_every=1", "trainer.keep_last=1",
            "trainer.keep_steps=[2]", "trainer.keep_every=4", "heldout_fraction=0.2", "trainer.eval_examples=8",
            "trainer.eval_every=null", "trainer.log_every=100"]
FINETUNE = ["task.max_length=32", "trainer.batch_size=8", "task.epochs=1", "optim.lr=3e-4",
            "data.predict_test=false"]


def state(value: float) -> dict:
    return {"model": {"w": torch.full((8, 8), value)}, "step": int(value)}


def test_kept_checkpoints_survive_pruning_and_a_later_unreadable_step(tmp_path: Path) -> None:
    save_checkpoint(tmp_path, 9, state(9.0))
    (tmp_path / "step_00000009.pt").write_bytes(b"torn")  # resuming skipped it: never counted nor deleted
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, state(float(step)), keep_last=1, keep=step in (2, 4))
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step_00000005.pt", "step_00000009.pt"]
    assert [p.name for p in list_kept(tmp_path)] == ["step_00000002.pt", "step_00000004.pt"]
    assert load_checkpoint(list_kept(tmp_path)[0])["step"] == 2
    save_checkpoint(tmp_path, 2, state(7.0), keep_last=1, keep=True)  # a resume that trains that step again
    assert torch.equal(load_checkpoint(list_kept(tmp_path)[0])["model"]["w"], state(7.0)["model"]["w"])
    assert not list(tmp_path.glob("kept/.*"))  # no temporary file left


def test_keep_settings_are_checked_and_may_change_on_resume() -> None:
    t = PretrainTrainerConfig(keep_steps=[3, 10], keep_every=4)
    assert [s for s in range(1, 13) if t.keeps(s)] == [3, 4, 8, 10, 12]
    assert not PretrainTrainerConfig().keeps(10_000)
    for bad in ({"keep_steps": [0]}, {"keep_steps": 5}, {"keep_steps": ["a"]}, {"keep_every": 0}):
        with pytest.raises(ConfigError, match="trainer.keep_"):
            PretrainTrainerConfig(**bad)
    saved = {"name": "r", "trainer": {"max_steps": 10, "keep_last": 3}}
    check_resume_config(saved, {**saved, "trainer": {**saved["trainer"], "keep_steps": [5], "keep_every": 2}},
                        Path("run"))


def result(task: str, seed: int, metrics: dict[str, float]) -> dict:
    """A minimal results.json of a fine-tuning job."""
    return {"task": task, "metrics": metrics, "seed": seed, "pretraining": None,
            "model": {"name": "r-step2", "preset": "tiny", "attention": "mixed", "init": "x", "checkpoint_id": "c",
                      "vocab_id": "v"}}


def test_curve_rows_take_the_median_over_the_seeds_that_finished(tmp_path: Path) -> None:
    for task, seed, metrics in [("cola", 1, {"mcc": 10.0}), ("cola", 2, {"mcc": 30.0}), ("cola", 3, {"mcc": 20.0}),
                                ("stsb", 2, {"pearson": 80.0, "spearman": 70.0})]:
        (tmp_path / f"{task}-seed{seed}").mkdir()
        (tmp_path / f"{task}-seed{seed}" / "results.json").write_text(json.dumps(result(task, seed, metrics)))
    (tmp_path / "stsb-seed1").mkdir()  # a job that failed: no results.json
    metrics = [{"step": 2, "mlm_loss": 6.0}, {"step": 2, "heldout_mlm_loss": 5.5, "heldout_rtd_loss": 0.6}]
    points = [Point(2, {"tokens": 100, "flops": 1e9, "device_hours": 0.1}, tmp_path),
              Point(3, {"tokens": 150, "flops": 1.5e9, "device_hours": 0.2}, tmp_path / "none")]
    rows = curve_rows(points, ["cola", "stsb"], [1, 2, 3], metrics)
    assert [(r["step"], r["task"], r["metric"], r["score"], r["n"], r["seeds"]) for r in rows] == [
        (2, "cola", "mcc", 20.0, 3, "1 2 3"), (2, "stsb", "spearman", 70.0, 1, "2"),
        (3, "cola", "mcc", None, 0, ""), (3, "stsb", "spearman", None, 0, "")]
    assert rows[0]["heldout_mlm_loss"] == 5.5 and "heldout_mlm_loss" not in rows[2]  # step 3: nothing logged
    text = curve_csv(rows).splitlines()
    assert text[0] == ",".join(COLUMNS) and text[3].startswith("3,150,1500000000.0,0.2,cola,mcc,,0,,")
    write_curve(rows, tmp_path / "out")
    assert (tmp_path / "out" / "curve.png").read_bytes()[:4] == b"\x89PNG"


@pytest.mark.slow  # wandb start-up
def test_curve_is_logged_to_wandb_offline(tmp_path: Path) -> None:
    rows = [{"step": 2, "tokens": 1, "flops": 2.0, "task": "rte", "metric": "accuracy", "score": 50.0, "n": 1,
             "heldout_mlm_loss": 6.0}]
    png = write_curve(rows, tmp_path)["curve.png"]
    assert log_curve_to_wandb(rows, png, mode="disabled", project="p") is None
    where = log_curve_to_wandb(rows, png, mode="offline", project="p", dir=tmp_path)
    assert Path(where).is_dir() and str(tmp_path) in where


def test_a_missing_run_dir_is_named_before_hydra_writes_into_it(tmp_path: Path) -> None:
    done = run_process(["-m", "pipelines.curve", f"init={tmp_path / 'nope'}"], timeout=120)
    assert done.returncode != 0 and f"init={tmp_path / 'nope'}: no such pretraining run dir" in done.stderr
    assert not (tmp_path / "nope").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A smoke pretraining run (5 steps, keep_last=1) that keeps steps 2 and 4."""
    tmp = tmp_path_factory.mktemp("curve")
    done = run_process(["-m", "pipelines.pretrain", *PRETRAIN, f"data_dir={tmp / 'data'}",
                        f"hydra.run.dir={tmp / 'run'}"])
    assert done.returncode == 0, done.stderr[-5000:]
    return tmp / "run"


@pytest.mark.slow  # end to end: pretraining through the entry point
def test_pretraining_keeps_chosen_steps_with_their_heldout_metrics(run_dir: Path, tmp_path: Path) -> None:
    assert [p.name for p in list_checkpoints(run_dir / "checkpoints")] == ["step_00000005.pt"]
    kept = list_kept(run_dir / "checkpoints")
    assert [p.name for p in kept] == ["step_00000002.pt", "step_00000004.pt"]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "heldout_mlm_loss" in r] == [2, 4, 5]  # kept steps and the end
    tokens = {r["step"]: r["tokens"] for r in rows if "tokens" in r}

    point = export_kept(run_dir, kept[0], tmp_path / "inits")
    assert point.name == f"{run_dir.name}-step2"
    summary = json.loads((point / "pretrain_summary.json").read_text())
    assert summary["step"] == 2 and summary["tokens"] == tokens[2] and 0 < summary["flops"]
    pre = load_init(str(point))
    assert pre.pretraining["tokens"] == tokens[2] and pre.model_info["name"] == point.name
    want = discriminator(load_checkpoint(kept[0]), kept[0]).state_dict()
    assert all(torch.equal(v, want[k]) for k, v in pre.backbone.state_dict().items())
    mtime = (point / "hf" / "model.safetensors").stat().st_mtime_ns
    assert export_kept(run_dir, kept[0], tmp_path / "inits") == point  # reused, not written again
    assert (point / "hf" / "model.safetensors").stat().st_mtime_ns == mtime


def curve(run_dir: Path, glue: Path, *extra: str) -> tuple[int, str]:
    args = [f"init={run_dir}", "tasks=[rte]", "seeds=[1]", f"data.dir={glue}",
            "finetune_args=[" + ",".join(f'"{a}"' for a in FINETUNE) + "]", *extra]
    done = run_process(["-m", "pipelines.curve", *args], timeout=600)
    return done.returncode, done.stdout + done.stderr


@pytest.mark.slow  # end to end: the curve stage runs fine-tuning jobs as subprocesses
def test_curve_fine_tunes_each_kept_step_and_a_rerun_reuses_the_jobs(run_dir: Path, tmp_path: Path) -> None:
    glue = write_glue_dir(tmp_path / "glue", tasks=["rte"])
    rc, log = curve(run_dir, glue)
    assert rc == 0, log[-5000:]
    out = run_dir / "curve"
    results = {s: out / "glue" / f"{run_dir.name}-step{s}" / "rte-seed1" / "results.json" for s in (2, 4)}
    assert all(p.is_file() for p in results.values())
    assert json.loads(results[4].read_text())["model"]["name"] == f"{run_dir.name}-step4"
    with open(out / "curve.csv") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == COLUMNS
    assert [(r["step"], r["task"], r["metric"], r["n"]) for r in rows] == [("2", "rte", "accuracy", "1"),
                                                                         ("4", "rte", "accuracy", "1")]
    assert int(rows[0]["tokens"]) < int(rows[1]["tokens"]) and float(rows[0]["flops"]) < float(rows[1]["flops"])
    for r in rows:
        assert 0 <= float(r["score"]) <= 100 and float(r["heldout_mlm_loss"]) > 0 and float(r["heldout_rtd_loss"]) > 0
    assert (out / "curve.png").read_bytes()[:4] == b"\x89PNG"

    before = {s: p.read_bytes() for s, p in results.items()}
    rc, log = curve(run_dir, glue)
    assert rc == 0, log[-5000:]
    assert "pipelines.finetune" not in log and log.count("all seeds done, reusing") == 2
    assert all(p.read_bytes() == before[s] for s, p in results.items())


@pytest.mark.slow  # end to end: the curve stage is signalled while a fine-tuning job runs
def test_sigterm_stops_the_running_job_with_a_checkpoint_and_a_rerun_resumes_it(run_dir: Path, tmp_path: Path) -> None:
    glue = write_glue_dir(tmp_path / "glue", tasks=["rte"])
    job = tmp_path / "out" / "glue" / f"{run_dir.name}-step2" / "rte-seed1"
    args = [f"init={run_dir}", "tasks=[rte]", "seeds=[1]", "steps=[2]", f"data.dir={glue}",
            f"output_dir={tmp_path / 'out'}", "finetune_args=[" + ",".join(f'"{a}"' for a in FINETUNE) + ","
            '"task.epochs=10"]']
    proc = start_process(["-m", "pipelines.curve", *args], stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (job / "checkpoint").is_dir() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)  # until the job has checkpointed its first epoch
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) != 0
    while (job / ".lock").exists() and time.time() < deadline:
        time.sleep(0.05)  # the job, which dies with the stage, checkpoints and ends
    assert not (job / "results.json").exists() and list((job / "checkpoint").glob("step_*.pt"))
    done = run_process(["-m", "pipelines.curve", *args], timeout=600)
    assert done.returncode == 0, done.stderr[-5000:]
    assert "resuming from" in (job / "finetune.log").read_text() and (job / "results.json").is_file()


@pytest.mark.slow  # uses the pretraining run
def test_curve_refuses_steps_that_were_not_kept_and_unknown_tasks(run_dir: Path, tmp_path: Path) -> None:
    out = f"output_dir={tmp_path / 'out'}"
    with pytest.raises(SystemExit, match=r"steps \[3\] were not kept .* \(kept: \[2, 4\]\)"):
        run_entry("curve", f"init={run_dir}", "tasks=[rte]", "steps=[2,3]", out, run_dir=tmp_path / "h")
    with pytest.raises(SystemExit, match="not GLUE tasks"):
        run_entry("curve", f"init={run_dir}", "tasks=[squad1]", out, run_dir=tmp_path / "h")
    assert not (tmp_path / "out" / "inits").exists()  # refused before any export


@pytest.mark.slow  # uses the pretraining run
def test_a_damaged_or_redone_kept_checkpoint_is_reported_and_a_busy_dir_refused(run_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"  # a copy whose kept step 4 is damaged and step 2 redone after its export
    shutil.copytree(run_dir, run, ignore=shutil.ignore_patterns("curve"))
    step2, step4 = list_kept(run / "checkpoints")
    point = export_kept(run, step2, run / "curve" / "inits")
    os.utime(step2, ns=(1, 1))  # as if written again
    with pytest.raises(FileExistsError, match=f"{point} was exported from another .*step_00000002.pt"):
        export_kept(run, step2, run / "curve" / "inits")
    step4.write_bytes(step4.read_bytes()[:1000])
    with pytest.raises(SystemExit) as stop:
        run_entry("curve", f"init={run}", "tasks=[rte]", "steps=[4]", run_dir=tmp_path / "h")
    assert stop.value.code == 1  # reported as a failure, after writing what there is
    assert (run / "curve" / "curve.csv").read_text().splitlines() == [",".join(COLUMNS)]
    with DirLock(run / "curve", "test"), pytest.raises(SystemExit, match="curve: .* in use by another GLUE curve"):
        run_entry("curve", f"init={run}", "tasks=[rte]", run_dir=tmp_path / "h")
