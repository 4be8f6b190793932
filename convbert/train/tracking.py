"""Run tracking: a local metrics.jsonl always, plus a wandb run (online/offline/disabled)."""

from __future__ import annotations

import json
import math
import os
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

from convbert.io import write_text_atomic


def default_mode() -> str:
    """The tracking mode when none is given: $WANDB_MODE, else offline (conf/tracking/wandb.yaml)."""
    return os.environ.get("WANDB_MODE", "offline")


WANDB_MODES = ("online", "offline", "disabled")


def _jsonable(v: Any) -> Any:
    if hasattr(v, "item"):
        v = v.item()
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    return v


class Tracker:
    """One tracker per job. On non-main ranks (enabled=False) every call is a no-op.

    The wandb run id is kept in the run dir so a resumed job continues the same wandb run."""

    def __init__(
        self,
        run_dir: str | Path,
        config: dict,
        mode: str = "disabled",
        project: str = "convbert",
        group: str | None = None,
        name: str | None = None,
        job_type: str | None = None,
        tags: list[str] | None = None,
        enabled: bool = True,
    ):
        if mode not in WANDB_MODES:
            raise ValueError(f"tracking.mode must be one of {WANDB_MODES}, got {mode!r}")
        self.enabled = enabled
        self.run = None
        if not enabled:
            return
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.metrics_path = self.run_dir / "metrics.jsonl"
        self._start = time.time()
        if mode != "disabled":
            import wandb  # lazy: the library must import without wandb's start-up cost

            id_file = self.run_dir / "wandb_id.txt"
            run_id = id_file.read_text().strip() if id_file.exists() else uuid.uuid4().hex[:8]
            id_file.write_text(run_id)
            self.run = wandb.init(
                project=project, group=group, name=name, job_type=job_type, tags=tags, config=config,
                dir=str(self.run_dir), mode=mode, id=run_id, resume="allow",
            )

    def log(self, metrics: dict[str, Any], step: int) -> None:
        if not self.enabled:
            return
        row = {"step": step, "time_s": round(time.time() - self._start, 3)}
        row.update({k: _jsonable(v) for k, v in metrics.items()})
        with open(self.metrics_path, "a") as f:
            f.write(json.dumps(row) + "\n")
        if self.run is not None:
            self.run.log({k: v for k, v in row.items() if k != "step"}, step=step)

    def summary(self, values: dict[str, Any]) -> None:
        if self.run is not None:
            self.run.summary.update({k: _jsonable(v) for k, v in values.items()})

    def log_table(self, key: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self.run is not None:
            import wandb

            self.run.log({key: wandb.Table(columns=columns, data=rows)})

    def finish(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


def read_metrics(run_dir: str | Path) -> list[dict]:
    """The rows of metrics.jsonl. A torn last line (a job killed mid-write) is dropped with a warning naming
    the file; a bad line anywhere else is an error naming the file and line."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return []
    lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    rows = []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            if not isinstance(row, dict) or not isinstance(row.get("step"), int):
                raise ValueError("not a {\"step\": <int>, ...} row")
        except ValueError as e:
            if n == len(lines):
                warnings.warn(f"{path}: dropping its torn last line {n} ({e})", stacklevel=2)
                break
            raise ValueError(f"{path}:{n}: {e}; fix or delete that line") from e
        rows.append(row)
    return rows


def keep_metrics_until(run_dir: str | Path, step: int) -> None:
    """On every (re)start: metrics.jsonl keeps exactly its rows up to `step`, the step being resumed from
    (none when starting at 0), so the steps a job logged after its last checkpoint are not there twice."""
    path = Path(run_dir) / "metrics.jsonl"
    if not path.exists():
        return
    rows = [r for r in read_metrics(run_dir) if r["step"] <= step]
    write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in rows))

