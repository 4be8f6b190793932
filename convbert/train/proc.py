"""Child processes that die with their parent (pipelines.reproduce runs every stage as one).

A child started by `run_child` gets its own process group and, on Linux, PR_SET_PDEATHSIG: when the parent
dies, even by kill -9, the kernel sends the child SIGTERM, which a training job treats as "finish the step,
checkpoint, exit" (convbert/train/signals.py). When the parent is interrupted in Python (Ctrl-C), the child's
group gets SIGTERM and a grace period before SIGKILL. Its own group keeps the terminal's Ctrl-C from reaching
the child directly, so it is stopped once, by the parent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _die_with_parent(parent: int) -> None:
    """In the child, between fork and exec."""
    os.setpgrp()
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)


def stop_child(proc: subprocess.Popen, grace_s: float = 60.0) -> int:
    """SIGTERM to the child's process group, then SIGKILL after grace_s; its exit code."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, None)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            break
        try:
            return proc.wait(wait)
        except subprocess.TimeoutExpired:
            continue
    return proc.wait()


def run_child(cmd: Sequence[str], grace_s: float = 60.0, **popen_kwargs) -> int:
    """subprocess.run(cmd).returncode, for a child that cannot outlive this process."""
    parent = os.getpid()
    proc = subprocess.Popen(list(cmd), preexec_fn=lambda: _die_with_parent(parent), **popen_kwargs)
    try:
        return proc.wait()
    except BaseException:  # Ctrl-C or another exception in the parent: stop the child before going
        stop_child(proc, grace_s)
        raise
