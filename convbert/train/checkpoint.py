"""Atomic training checkpoints: step_XXXXXXXX.pt files in a folder, the last K kept."""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

_NAME = re.compile(r"^step_(\d{8})\.pt$")


def list_checkpoints(ckpt_dir: str | Path) -> list[Path]:
    d = Path(ckpt_dir)
    if not d.is_dir():
        return []
    return sorted(p for p in d.iterdir() if _NAME.match(p.name))


def find_latest(ckpt_dir: str | Path) -> Path | None:
    ckpts = list_checkpoints(ckpt_dir)
    return ckpts[-1] if ckpts else None


def save_checkpoint(ckpt_dir: str | Path, step: int, state: dict, keep_last: int = 2) -> Path:
    """Write to a temporary file, fsync, then rename: a crash never leaves a half-written step_*.pt."""
    d = Path(ckpt_dir)
    d.mkdir(parents=True, exist_ok=True)
    path = d / f"step_{step:08d}.pt"
    tmp = d / f".{path.name}.tmp"
    with open(tmp, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    for old in list_checkpoints(d)[:-keep_last] if keep_last > 0 else []:
        old.unlink()
    return path


def load_checkpoint(path: str | Path) -> dict:
    """Tensors and plain Python values only: never unpickles code."""
    return torch.load(path, map_location="cpu", weights_only=True)
