"""GLUE sweeps run as child processes of a pipeline (pipelines.reproduce, pipelines.curve): each job is an
ordinary `python -m pipelines.finetune -m ...` job dir, <sweep dir>/<task>-seed<s>. Finished jobs are reused on
a rerun, under the settings that made them (recorded beside them); failures are logged and returned.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any

from convbert.finetune.config import upgrade_args
from convbert.io import sha256_prefix
from convbert.train.proc import run_child
from convbert.train.runinfo import recorded_changes

log = logging.getLogger("sweep")
SETTINGS_FILE = "reproduce_settings.json"  # beside the job dirs; the name predates pipelines.curve


def stage(name: str, args: list[str]) -> bool:
    """`python -m <args>` as a child that dies with this process (no orphan keeps training after a kill)."""
    cmd = [sys.executable, "-m", *args]
    log.info("[%s] %s", name, " ".join(cmd))
    ok = run_child(cmd) == 0
    if not ok:
        log.error("[%s] failed", name)
    return ok


def missing_seeds(glue_dir: Path, task: str, seeds: list[int]) -> list[int]:
    return [s for s in seeds if not (glue_dir / f"{task}-seed{s}" / "results.json").exists()]


def check_glue_settings(glue_out: Path, settings: dict) -> bool:
    """Finished GLUE jobs are reused only under the settings that made them (recorded beside them): the same
    pretrained weights, fine-tuning overrides and data. Returns False (after logging why) when they differ. While
    no job has finished, a rerun's settings replace the recorded ones (a first attempt that failed on them)."""
    diff = recorded_changes(glue_out / SETTINGS_FILE, settings, binding=any(glue_out.glob("*/results.json")),
                            upgrade=_upgrade_record)
    if diff:
        log.error("[glue] %s holds results made with other settings (%s); rerun with another name= or "
                  "output_dir=, or delete that dir to redo them", glue_out, diff)
    return not diff


def pretrained(run_dir: Path) -> tuple[list[str], dict[str, Any]]:
    """glue_sweep's init arguments and settings record for a pretraining run dir: its exported weights."""
    return [f"init={run_dir.resolve()}"], {"init_checkpoint_id": sha256_prefix(run_dir / "hf" / "model.safetensors")}


def _upgrade_record(record: Any) -> Any:
    """Settings recorded with fine-tuning overrides in an older spelling, in today's."""
    if isinstance(record, dict) and isinstance(record.get("finetune_args"), list):
        record["finetune_args"] = upgrade_args(record["finetune_args"])
    return record


def glue_sweep(label: str, init: tuple[list[str], dict[str, Any]], glue_out: Path, tasks: list[str], seeds: list[int],
               finetune_args: list[str], glue_dir: str | None) -> list[str]:
    """Fine-tune from `init` (its fine-tuning overrides, and what identifies it in the settings record: see
    `pretrained`) on every task x seed into glue_out/<task>-seed<s>, one child sweep per task with the seeds not
    yet done; returns the failed ones ('<label> <task>')."""
    init_args, record = init
    finetune_args = upgrade_args(finetune_args)  # old spellings are refused by the fine-tuning command line
    if not check_glue_settings(glue_out, {**record, "finetune_args": finetune_args, "glue_dir": glue_dir}):
        return [f"glue {label}"]
    failed = []
    for task in tasks:
        todo = missing_seeds(glue_out, task, seeds)
        if not todo:
            log.info("[glue] %s %s: all seeds done, reusing", label, task)
            continue
        args = ["pipelines.finetune", "-m", f"task={task}", "seed=" + ",".join(map(str, todo)), *init_args,
                f"hydra.sweep.dir={glue_out}", "hydra.sweep.subdir=${task.name}-seed${seed}", *finetune_args]
        if glue_dir:
            args.append(f"data.dir={glue_dir}")
        if not stage(f"glue {label} {task}", args):
            failed.append(f"{label} {task}")  # the other tasks go on; the outputs show what is missing
    return failed
