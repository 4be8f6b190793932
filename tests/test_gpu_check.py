"""`make gpu-check` as a dry run on CPU (tiny sizes, aot_eager, gloo): the script a GPU machine will run works."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the whole script in a subprocess: training steps, DDP, a fine-tune
def test_gpu_check_dry_run_on_cpu_passes_every_check():
    env = {**os.environ, "WANDB_MODE": "disabled", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "tests/benchmarks/gpu_check.py", "--device", "cpu", "--profile"]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = [r["check"] for r in rows]
    assert checks == ["env", "matmul", "step", "fp16", "ddp", "finetune", "step", "done"], checks
    assert all(r["ok"] for r in rows)
    steps = {r["mode"]: r for r in rows if r["check"] == "step"}
    for r in steps.values():
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["peak_memory_mb"] > 0
        assert r["profile"]["kernels_per_step"] == 0  # the profile counts device kernels: none on CPU
    # eager and compiled run the same step from the same weights: same loss up to bf16 rounding
    assert abs(steps["eager"]["loss"] - steps["compiled"]["loss"]) < 0.05 * abs(steps["eager"]["loss"])
    ddp = next(r for r in rows if r["check"] == "ddp")
    assert ddp["backend"] == "gloo" and ddp["max_weight_diff"] < 1e-4

