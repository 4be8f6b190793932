"""Atomic training checkpoints: step_XXXXXXXX.pt files in a folder, the last K kept, and chosen steps kept for
good in its kept/ subfolder (which pruning and resuming never look at).

A write goes to a temporary file that is fsynced and renamed, and removed whatever goes wrong (a full disk
must not stay full of our leftovers). Reading falls back from an unreadable newest file to the previous one.
"""

from __future__ import annotations

import errno
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")
KEPT = "kept"  # <ckpt_dir>/kept/step_XXXXXXXX.pt: checkpoints kept for good


class CheckpointError(RuntimeError):
    """A checkpoint could not be written, or no checkpoint of a run dir could be read."""


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def find_latest(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def checkpoint_step(path: str | Path) -> int:
    m = _NAME.match(Path(path).name)
    if not m:
        raise ValueError(f"{path} is not a step_XXXXXXXX.pt checkpoint")
    return int(m.group(1))


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict, keep_last: int = 2, keep: bool = False) -> Path:
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written step_*.pt, and a
    failed write (no space, no permission) removes its temporary file and raises CheckpointError naming
    the path. With `keep`, the checkpoint is also kept for good in kept/. Earlier checkpoints beyond keep_last
    are removed only after the new one is in place (and kept)."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{step:08d}.pt"
    tmp = d / f".{path.name}.tmp"
    try:
        with open(tmp, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        err = e if isinstance(e, OSError) else getattr(e, "__cause__", None) or getattr(e, "__context__", None)
        if isinstance(err, OSError) and err.errno in (errno.ENOSPC, errno.EDQUOT):
            raise CheckpointError(f"{os.strerror(err.errno).lower()} writing {path}; the previous checkpoints are "
                                  "intact. Free some space and rerun the same command to resume.") from e
        if isinstance(e, OSError | RuntimeError):  # torch reports a failed write as RuntimeError
            raise CheckpointError(f"could not write the checkpoint {path}: {e}; the previous checkpoints are "
                                  "intact") from e
        raise
    if keep:
        keep_checkpoint(path)
    # keep_last counts this checkpoint and the ones before it. A later step here is one that resuming skipped
    # as unreadable: it is neither counted nor deleted (counting it once deleted the only good checkpoints)
    older = [p for p in list_checkpoints(d) if checkpoint_step(p) < step]
    for old in older[:max(0, len(older) - keep_last + 1)] if keep_last > 0 else []:
        old.unlink()
    return path


def keep_checkpoint(path: Path) -> Path:
    """Link `path` into kept/ beside it (a hard link: no extra space; a copy where links are not supported),
    atomically: a kept file is always whole. Pruning the original leaves the kept one."""
    kept = path.parent / KEPT / path.name
    kept.parent.mkdir(exist_ok=True)
    tmp = kept.parent / f".{path.name}.tmp"
    tmp.unlink(missing_ok=True)
    try:
        try:
            os.link(path, tmp)
        except OSError:
            shutil.copy2(path, tmp)
        os.replace(tmp, kept)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise CheckpointError(f"could not keep {path} as {kept}: {e}") from e
    return kept


def list_kept(ckpt_dir: str | Path) -> list[Path]:
    """The checkpoints kept for good (save_checkpoint(keep=True)), by step."""
    return list_checkpoints(Path(ckpt_dir) / KEPT)


def load_checkpoint(path: str | Path) -> dict:
    """Tensors and plain Python values only: never unpickles code. A damaged file raises CheckpointError
    naming it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:
        raise CheckpointError(f"cannot read checkpoint {path}: {type(e).__name__}: {e}") from e


def load_latest(ckpt_dir: str | Path, check: Callable[[dict], None] | None = None) -> tuple[Path, dict] | None:
    """The newest checkpoint that loads (and passes `check`, which raises ValueError to reject a state), with
    a warning naming each newer one that did not; None when there are none; CheckpointError naming every
    file tried when none loads."""
    failures = []
    for path in reversed(list_checkpoints(ckpt_dir)):
        try:
            state = load_checkpoint(path)
            if check is not None:
                check(state)
        except (CheckpointError, ValueError, KeyError) as e:
            warnings.warn(f"skipping checkpoint {path}: {e}", stacklevel=2)
            failures.append(f"{path}: {e}")
            continue
        return path, state
    if failures:
        raise CheckpointError("no checkpoint could be resumed from:\n  " + "\n  ".join(failures)
                              + "\nMove them away (or use another name=) to start over.")
    return None
