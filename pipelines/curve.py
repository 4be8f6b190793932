"""GLUE along pretraining: `make curve INIT=<run> TASKS=...` (config conf/curve.yaml).

A falling pretraining loss does not guarantee a better GLUE score: this fine-tunes every checkpoint the run
kept (trainer.keep_steps / keep_every) with the fine-tuning entry point, as child sweeps whose jobs are ordinary
job dirs (finished ones are reused on a rerun, under the settings that made them), and writes curve.csv and
curve.png: the median dev score against the pretraining step and FLOPs, beside the held-out MLM/RTD metrics the
run logged at those steps. Exit status 1 when a job failed (the outputs show what is missing).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

import hydra
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from convbert.finetune.sweep import glue_sweep, pretrained
from convbert.io import read_json
from convbert.pretrain.kept import export_kept, kept_checkpoints
from convbert.report.curve import Point, curve_rows, write_curve
from convbert.report.tasks import GLUE_TASKS
from convbert.report.tracking import log_curve_to_wandb
from convbert.settings import ConfigError, check_int, check_seed
from convbert.train.checkpoint import CheckpointError, checkpoint_step
from convbert.train.lock import DirLock, DirLockedError
from convbert.train.tracking import read_metrics
from pipelines import callback_config, run_hydra

log = logging.getLogger("curve")


class InitCheck(Callback):
    """init= must be an existing dir; checked before Hydra writes its files under <init>/curve."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        init = callback_config(config).init
        if not Path(str(init)).is_dir():
            sys.exit(f"error: init={init}: no such pretraining run dir")  # Hydra turns exceptions into warnings


def as_list(key: str, value: Any) -> list:
    """A list setting, also given as 'a,b' (one override value)."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v]
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{key} must be a non-empty list, got {value!r}")
    return value


def settings(c: dict[str, Any]) -> tuple[list[str], list[int], list[int] | None]:
    """The tasks, seeds and steps, checked before any work."""
    tasks = as_list("tasks", c["tasks"])
    unknown = [t for t in tasks if t not in GLUE_TASKS]
    if unknown:
        raise ConfigError(f"tasks: {unknown} are not GLUE tasks ({', '.join(GLUE_TASKS)})")
    seeds = as_list("seeds", c["seeds"])
    for s in seeds:
        check_seed("seeds[]", s)
    steps = None if c["steps"] is None else as_list("steps", c["steps"])
    for s in steps or ():
        check_int("steps[]", s)
    return tasks, seeds, steps


def chosen(kept: list[Path], steps: list[int] | None, init: Path) -> list[Path]:
    if steps is None:
        return kept
    have = {checkpoint_step(p): p for p in kept}
    missing = sorted(set(steps) - set(have))
    if missing:
        raise FileNotFoundError(f"steps {missing} were not kept by {init} (kept: {sorted(have)})")
    return [have[s] for s in sorted(set(steps))]


def run(c: dict[str, Any]) -> list[str]:
    """Export, fine-tune and plot every chosen kept step; returns the failed sweeps."""
    tasks, seeds, steps = settings(c)
    init, out = Path(c["init"]), Path(c["output_dir"])
    points, failed = [], []
    with DirLock(out, "GLUE curve"):
        for ckpt in chosen(kept_checkpoints(init), steps, init):
            step = checkpoint_step(ckpt)
            try:
                point = export_kept(init, ckpt, out / "inits")
            except CheckpointError as e:  # e.g. a damaged file: the other steps go on
                log.error("[export step %d] %s", step, e)
                failed.append(f"step {step} export")
                continue
            jobs = out / "glue" / point.name
            failed += glue_sweep(f"step {step}", pretrained(point), jobs, tasks, seeds, list(c["finetune_args"]),
                                 c["data"]["dir"])
            points.append(Point(step, read_json(point / "pretrain_summary.json"), jobs))
        rows = curve_rows(points, tasks, seeds, read_metrics(init))
        files = write_curve(rows, out)
        t = c["tracking"]
        where = log_curve_to_wandb(rows, files["curve.png"], mode=t["mode"], project=t["project"],
                                   group=t.get("group") or "curve", name=t.get("name") or f"curve-{init.name}",
                                   tags=t.get("tags") or [], dir=out)
    if where:
        log.info("logged to wandb: %s", where)
    log.info("wrote %s", ", ".join(str(p) for p in files.values()))
    return failed


@hydra.main(config_path="../conf", config_name="curve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    try:
        failed = run(OmegaConf.to_container(cfg, resolve=True))
    except (ValueError, OSError, CheckpointError, DirLockedError) as e:  # ValueError: ConfigError, ReportError
        sys.exit(f"curve: {e}")  # a clear one-line message naming the file or key, not a traceback
    if failed:
        log.error("finished with failures: %s", ", ".join(failed))
        sys.exit(1)


if __name__ == "__main__":
    run_hydra(main, "curve")
