"""The shared run-dir lock and stop-signal helpers (convbert/train/lock.py, signals.py)."""

import json
import os
import signal
import socket

import pytest
from helpers import run_process

from convbert.train.lock import DirLock, DirLockedError
from convbert.train.signals import StopRequest


def test_second_lock_refused_and_released(tmp_path):
    with DirLock(tmp_path, "run"):
        with pytest.raises(DirLockedError, match=f"pid {os.getpid()}"):
            DirLock(tmp_path, "run").acquire()
    assert not (tmp_path / ".lock").exists()
    with DirLock(tmp_path):  # free again
        pass


def test_stale_lock_of_dead_process_taken_over(tmp_path):
    dead = run_process(["-c", "import os; print(os.getpid())"])
    pid = int(dead.stdout)
    (tmp_path / ".lock").write_text(json.dumps({"pid": pid, "host": socket.gethostname(), "started": "x"}))
    with pytest.warns(UserWarning, match="gone"):
        lock = DirLock(tmp_path).acquire()
    assert json.loads((tmp_path / ".lock").read_text())["pid"] == os.getpid()
    lock.release()


def test_lock_from_other_host_names_file(tmp_path):
    (tmp_path / ".lock").write_text(json.dumps({"pid": 1, "host": "node-that-is-not-here", "started": "x"}))
    with pytest.raises(DirLockedError, match="remove .*\\.lock"):
        DirLock(tmp_path).acquire()


def test_stop_request_records_first_signal():
    with StopRequest() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        os.kill(os.getpid(), signal.SIGTERM)
        assert stop.signal_name == "SIGUSR1"
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
