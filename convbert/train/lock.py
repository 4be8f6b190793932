"""One job per directory: a lock file holding the owner's pid, host and start time.

A second job on the same run dir (a requeued SLURM job while the old one still runs, two sweeps started in
the same second) refuses with a message naming the owner. A lock left by a process that is gone on this host
is taken over with a warning. A lock written on another host cannot be checked from here: it is refused, and
the message says which file to remove once that job is known to be dead. The lock is created with O_EXCL,
which is atomic on local disks and NFSv3+; a shared file system without it gives no guarantee.
"""

from __future__ import annotations

import json
import os
import socket
import time
import warnings
from pathlib import Path

LOCK_NAME = ".lock"


class DirLockedError(RuntimeError):
    """Another live job owns the directory."""


def _process_start(pid: int) -> str | None:
    """The kernel's start time of `pid` (/proc/<pid>/stat field 22), to tell a reused pid from the owner."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def _alive(pid: int, start: str | None) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by another user
        return True
    return start is None or _process_start(pid) in (None, start)


class DirLock:
    """`with DirLock(run_dir, "pretraining run"):` holds `run_dir/.lock` for the block."""

    def __init__(self, directory: str | Path, what: str = "job") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self.what = what
        self.held = False

    def owner(self) -> dict:
        """The lock file's contents ({} when unreadable: torn by a crash while being written)."""
        try:
            data = json.loads(self.path.read_text())
            return data if isinstance(data, dict) else {}
        except (OSError, ValueError):
            return {}

    def acquire(self) -> DirLock:
        self.directory.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "proc_start": _process_start(os.getpid())}
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                self._take_over_if_stale()
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self.held = True
            return self
        raise DirLockedError(f"could not lock {self.path}: another job keeps taking it")

    def _take_over_if_stale(self) -> None:
        owner = self.owner()
        pid, host = owner.get("pid"), owner.get("host")
        if not owner:  # torn or empty: a writer died between create and write, or is writing right now
            if time.time() - self.path.stat().st_mtime < 10:
                time.sleep(1.0)
                owner = self.owner()
                pid, host = owner.get("pid"), owner.get("host")
        if owner:
            self._refuse_if_held(owner)
        warnings.warn(f"taking over the lock {self.path} of a {self.what} that is gone "
                      f"(pid {pid}, host {host}, started {owner.get('started')})", stacklevel=3)
        self.path.unlink(missing_ok=True)

    def check(self) -> None:
        """Raise DirLockedError when another job holds the directory (as acquire would); changes nothing."""
        if self.path.exists() and (owner := self.owner()):
            self._refuse_if_held(owner)

    def _refuse_if_held(self, owner: dict) -> None:
        pid, host = owner.get("pid"), owner.get("host")
        if host == socket.gethostname() and isinstance(pid, int) and _alive(pid, owner.get("proc_start")):
            raise DirLockedError(
                f"{self.directory} is in use by another {self.what}: pid {pid} on {host}, started "
                f"{owner.get('started')}. Wait for it to end or stop it; to run beside it, use another name.")
        if host != socket.gethostname():
            raise DirLockedError(
                f"{self.directory} is locked by a {self.what} on host {host} (pid {pid}, started "
                f"{owner.get('started')}), which cannot be checked from {socket.gethostname()}. If that job has "
                f"ended (e.g. its node died), remove {self.path} and rerun.")

    def release(self) -> None:
        if self.held and self.owner().get("pid") == os.getpid():
            self.path.unlink(missing_ok=True)
        self.held = False

    def __enter__(self) -> DirLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()
