"""Fine-tuning children of pipelines.reproduce die with it: kill -9 of the driver mid-GLUE leaves no orphan (the
child gets SIGTERM from the kernel, checkpoints and exits)."""

import json
import signal
import subprocess
import time
from pathlib import Path

import pytest
from glue_fixtures import make_benchmark, write_glue_dir, write_pretrained_run_dir
from helpers import start_process

pytestmark = pytest.mark.slow  # end to end: reproduce and its fine-tuning child, killed


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has exited (its new parent may not reap it)


def test_killing_reproduce_mid_glue_leaves_no_orphan(tmp_path):
    write_glue_dir(tmp_path / "glue", make_benchmark(n_train=120, n_dev=8, n_test=4), tasks=["rte"])
    write_pretrained_run_dir(tmp_path / "pretrain")
    job = tmp_path / "job"
    args = ["pipelines.finetune", "task=rte", f"init={tmp_path / 'pretrain'}", f"data.dir={tmp_path / 'glue'}",
            "task.max_length=32", "trainer.batch_size=2", "task.epochs=2", "trainer.threads=1",
            "trainer.log_every=1", "tracking.mode=disabled", f"hydra.run.dir={job}"]
    driver = f"import sys; from pipelines.reproduce import stage; sys.exit(0 if stage('glue rte', {args!r}) else 1)"
    proc = start_process(["-c", driver], stderr=subprocess.DEVNULL)  # nobody reads its output while it runs
    deadline = time.time() + 240
    while not (job / "metrics.jsonl").exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    child = json.loads((job / ".lock").read_text())["pid"]
    assert child != proc.pid and alive(child)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 60
    while alive(child) and time.time() < deadline:
        time.sleep(0.05)
    assert not alive(child), "the fine-tuning job outlived the killed driver"
    assert (job / "checkpoint").is_dir() and not (job / "results.json").exists()  # stopped as on SIGTERM
    assert not (job / "failed.json").exists()  # rerunning continues it (tests/test_finetune_resume.py)
