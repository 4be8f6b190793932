"""`make gpu-check` as a dry run on CPU (tiny sizes, aot_eager, gloo): the script a GPU machine will run works."""

import json
import sys

import pytest
from helpers import run_process


@pytest.mark.slow  # the whole script in a subprocess: training steps, DDP, a fine-tune
def test_gpu_check_dry_run_on_cpu_passes_every_check():
    proc = run_process([sys.executable, "benchmarks/gpu_check.py", "--device", "cpu", "--profile"])
    rows = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    checks = [r["check"] for r in rows]
    assert checks == ["env", "matmul", "conv", "step", "fp16", "ddp", "finetune", "step", "step", "run", "done"], checks
    assert all(r["ok"] for r in rows)
    steps = {r["mode"]: r for r in rows if r["check"] == "step"}
    for r in steps.values():
        assert r["tokens_per_s"] > 0 and r["mfu"] > 0 and r["peak_memory_mb"] > 0
        assert r["profile"]["kernels_per_step"] == 0  # the profile counts device kernels: none on CPU
    # eager and compiled run the same step from the same weights: same loss up to bf16 rounding
    for mode in ("compiled", "graphed"):
        assert abs(steps["eager"]["loss"] - steps[mode]["loss"]) < 0.05 * abs(steps["eager"]["loss"]), mode
    # the whole step as one graph (trainer.cuda_graphs; a CUDA graph on a GPU) trains as the eager step does
    assert steps["graphed"]["diff_over_update"] < 0.05 and steps["graphed"]["speedup_vs_eager"] > 0
    run = next(r for r in rows if r["check"] == "run")  # the pipeline's own run, beside the bench's step
    assert run["tokens_per_s"] > 0 and run["ratio"] > 0 and not run["graphed"]  # no CUDA graphs on a CPU
    ddp = next(r for r in rows if r["check"] == "ddp")
    assert ddp["backend"] == "gloo" and ddp["max_weight_diff"] < 1e-4

