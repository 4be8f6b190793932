"""Provenance recorded with every run: git revision and device."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

_ROOT = Path(__file__).resolve().parents[2]


def git_revision() -> str:
    """HEAD of the project checkout, with '-dirty' when tracked files changed; 'unknown' outside git."""
    def git(*args: str) -> str:
        out = subprocess.run(["git", *args], cwd=_ROOT, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    try:
        return git("rev-parse", "HEAD") + ("-dirty" if git("status", "--porcelain", "-uno") else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({torch.get_num_threads()} threads)"
