"""`make help` documents the variables with their defaults; `make test-fast` skips the slow tests."""

from __future__ import annotations

import re
import shutil

import pytest
from conftest import REPO, run_process

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
