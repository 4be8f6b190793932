"""`make help` documents the variables with their defaults; `make test-fast` skips the slow tests."""

from __future__ import annotations

import re
import shutil

import pytest
from helpers import REPO, run_process

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")


def makefile_defaults() -> dict[str, str]:
    text = (REPO / "Makefile").read_text()
    return {m[1]: m[2].strip() for m in re.finditer(r"^([A-Z_]+) \?=([^#\n]*)##", text, re.M)}


def test_help_lists_every_variable_with_its_default():
    defaults = makefile_defaults()
    assert {"INIT", "GLUE_DIR", "EXPERIMENT", "SEEDS", "TASKS", "ARGS", "TORCH"} <= set(defaults)
    out = run_process(["make", "--no-print-directory", "help"], timeout=60)
    assert out.returncode == 0, out.stderr
    for name, default in defaults.items():
        block = re.search(rf"^  {name} +(.+)\n +default: (.*)$", out.stdout, re.M)
        assert block, f"make help does not list {name}:\n{out.stdout}"
        assert block[2] == (default or "(empty)")
    assert re.search(r"^  test-fast +", out.stdout, re.M)


def test_fast_target_deselects_the_slow_marker():
    out = run_process(["make", "--no-print-directory", "-n", "-o", ".venv/.installed",
                       "test-fast"], timeout=60)
    assert out.returncode == 0, out.stderr
    assert '-m "not slow"' in out.stdout and "pip install" not in out.stdout


@pytest.mark.parametrize("target", ["data", "pretrain", "glue", "search", "squad", "baselines", "curve", "table",
                                    "reproduce"])
def test_each_stage_target_composes_with_every_variable_set(target):
    """The command a target runs, with every variable it can pass set, composes in Hydra (--cfg job prints the
    config without running): a key the Makefile spells differently from conf/ fails here, not on a user."""
    values = ["INIT=runs/pretrain/x", "GLUE_DIR=/data/glue", "EXPERIMENT=tiny", "SEEDS=1,2", "TASK=rte",
              "TASKS=rte,stsb"]
    dry = run_process(["make", "--no-print-directory", "-n", "-o", ".venv/.installed", target, *values], timeout=60)
    assert dry.returncode == 0, dry.stderr
    (command,) = [line for line in dry.stdout.splitlines() if "-m pipelines." in line]
    args = command.split()
    module, *overrides = args[args.index("-m") + 1:]
    # --cfg composes one job: a sweep (-m, k=a,b) is checked at its first value
    overrides = [o if "=" not in o or o.split("=", 1)[1].startswith("[") else o.split(",")[0]
                 for o in overrides if o not in ("-m", "--multirun")]
    shown = run_process(["-m", module, *overrides, "--cfg", "job"], timeout=120)
    assert shown.returncode == 0, f"{command}\n{shown.stderr[-3000:]}"
