"""Provenance recorded with every run: git revision, device, and how two runs' settings differ."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from convbert.io import read_json, write_json_atomic

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


def matmul_tflops(device: torch.device, dtype: torch.dtype, n: int | None = None, reps: int | None = None) -> float:
    """The device's measured square-matmul rate in TFLOP/s (dtype's products; fp32 goes through TF32 where it is
    allowed): the denominator of MFU in runs and in `make gpu-check`. A fraction of a second by default: on CUDA
    the mean of 20 products of 8192², on a CPU the fastest of 4 products of 768² (a shared CPU's load would
    otherwise pass for a slow chip and inflate MFU)."""
    cuda = device.type == "cuda"
    n, reps = n or (8192 if cuda else 768), reps or (20 if cuda else 4)
    g = torch.Generator(device).manual_seed(0)  # its own generator: measuring must not move the run's random stream
    a, b = (torch.randn(n, n, device=device, dtype=dtype, generator=g) for _ in range(2))

    def timed(count: int) -> float:
        if cuda:
            torch.cuda.synchronize(device)
        t0 = time.perf_counter()
        for _ in range(count):
            a @ b
        if cuda:
            torch.cuda.synchronize(device)
        return (time.perf_counter() - t0) / count

    timed(1)  # warm-up: kernel selection, caches
    seconds = timed(reps) if cuda else min(timed(1) for _ in range(reps))
    return 2 * n**3 / seconds / 1e12


def flatten_settings(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{'trainer': {'lr': 1}} -> {'trainer.lr': 1}; tuples become lists, as in a JSON round trip."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(flatten_settings(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def settings_changes(old: dict[str, Any], new: dict[str, Any], may_change: tuple[str, ...] = ()) -> str:
    """'key: old -> new; ...' over the dotted keys of two nested settings dicts, leaving out the keys under
    `may_change` prefixes; '' when nothing else differs."""
    a, b = flatten_settings(old), flatten_settings(new)
    missing = object()
    changed = [k for k in sorted(a.keys() | b.keys())
               if a.get(k, missing) != b.get(k, missing)
               and not any(k == p or k.startswith(p + ".") for p in may_change)]
    return "; ".join(f"{k}: {a.get(k, '<unset>')!r} -> {b.get(k, '<unset>')!r}" for k in changed)


def recorded_differences(path: Path, settings: dict[str, Any], error: type[Exception] = ValueError,
                         upgrade: Callable[[Any], Any] | None = None) -> str:
    """The differences (settings_changes) from the settings recorded in the JSON file `path` to `settings`; ""
    when they agree or none are recorded. Reads only (a damaged file raises `error` naming it). `upgrade` turns a
    record written in an older spelling into today's before comparing."""
    if not path.exists():
        return ""
    recorded = read_json(path, error)
    return settings_changes(upgrade(recorded) if upgrade else recorded, json.loads(json.dumps(settings)))


def recorded_changes(path: Path, settings: dict[str, Any], binding: bool = True,
                     error: type[Exception] = ValueError, upgrade: Callable[[Any], Any] | None = None) -> str:
    """recorded_differences once the recorded settings are `binding` (the work they made exists): a dir reused
    under other settings is refused with them. Otherwise, or when none are recorded, `settings` are recorded."""
    if binding and path.exists():
        return recorded_differences(path, settings, error, upgrade)
    write_json_atomic(path, settings)
    return ""
