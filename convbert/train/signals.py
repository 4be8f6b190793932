"""Graceful stops for long jobs: SIGTERM (what SLURM and most schedulers send), SIGUSR1 (`sbatch
--signal=USR1@120`) and SIGINT (Ctrl-C) ask the job to finish its current step, checkpoint and exit with
PREEMPTED_EXIT_CODE, so that rerunning the same command resumes. Further signals while it saves are noted and
ignored: the checkpoint write is atomic either way."""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)
PREEMPTED_EXIT_CODE = 75  # EX_TEMPFAIL: stopped on request, checkpointed; rerun to continue


class Preempted(SystemExit):
    """Raised after the stop checkpoint is written; exits the process with PREEMPTED_EXIT_CODE."""

    def __init__(self, message: str) -> None:
        super().__init__(PREEMPTED_EXIT_CODE)
        self.message = message

    def __str__(self) -> str:
        return self.message


class StopRequest:
    """`with StopRequest() as stop:` ... `if stop.requested: <checkpoint>; raise Preempted(...)`.

    Handlers are installed only in the main thread (signal's rule) and the previous ones restored on exit."""

    def __init__(self) -> None:
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    @property
    def requested(self) -> bool:
        return self.signal_name is not None

    def _handle(self, signum: int, frame: object) -> None:
        name = signal.Signals(signum).name
        if self.signal_name is None:
            self.signal_name = name
            print(f"{name} received: finishing the current step, then checkpointing", file=sys.stderr, flush=True)
        else:
            print(f"{name} received again: already stopping, the checkpoint is being written", file=sys.stderr,
                  flush=True)

    def __enter__(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous.clear()
