"""tokenize -> pretrain -> GLUE sweep -> score table for one experiment: `make reproduce EXPERIMENT=...`.

Each stage is the ordinary entry point run as a subprocess, so a reproduction is exactly what a user would
get by typing the stages by hand. Finished work is reused: the pretraining run resumes (or is already done),
and GLUE jobs whose results.json exists are not run again, as long as the pretrained weights and fine-tuning
settings are those that made them.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from convbert.finetune import sha256_prefix
from convbert.train.files import write_json_atomic
from convbert.train.proc import run_child
from convbert.train.runinfo import settings_changes

log = logging.getLogger("reproduce")


def stage(name: str, args: list[str]) -> bool:
    cmd = [sys.executable, "-m", *args]
    log.info("[%s] %s", name, " ".join(cmd))
    ok = run_child(cmd) == 0  # dies with this process: no orphan keeps training after a kill
    if not ok:
        log.error("[%s] failed", name)
    return ok


def missing_seeds(glue_dir: Path, task: str, seeds: list[int]) -> list[int]:
    return [s for s in seeds if not (glue_dir / f"{task}-seed{s}" / "results.json").exists()]


def check_glue_settings(glue_out: Path, settings: dict) -> bool:
    """Finished GLUE jobs are reused only under the settings that made them (recorded beside them): the same
    pretrained weights, fine-tuning overrides and data. Returns False (after logging why) when they differ."""
    record = glue_out / "reproduce_settings.json"
    if record.exists():
        diff = settings_changes(json.loads(record.read_text()), settings)
        if diff:
            log.error("[glue] %s holds results made with other settings (%s); rerun with another name= or "
                      "output_dir=, or delete that dir to redo them", glue_out, diff)
            return False
    write_json_atomic(record, settings)
    return True


@hydra.main(config_path="../conf", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    embedded = c["pretrain_experiment"] is None
    seeds = c["embedded_default"]["seeds"] if embedded else c["seeds"]
    finetune_args = (c["embedded_default"]["finetune_args"] if embedded else []) + c["finetune_args"]
    name = c["name"] or c["pretrain_experiment"] or "tiny-default"
    out = Path(c["output_dir"]) / name
    pretrain_dir = Path(c["pretrain_dir"] or f"runs/pretrain/{name}")

    experiment = [] if embedded else [f"experiment={c['pretrain_experiment']}"]
    if not stage("pretrain", ["pipelines.pretrain", *experiment, f"name={name}",
                              f"hydra.run.dir={pretrain_dir}", *c["pretrain_args"]]):
        sys.exit(1)

    glue_out, failed = out / "glue", []
    settings = {"init_checkpoint_id": sha256_prefix(pretrain_dir / "hf" / "model.safetensors"),
                "finetune_args": finetune_args, "glue_dir": c["glue_dir"]}
    if not check_glue_settings(glue_out, settings):
        sys.exit(1)
    for task in c["tasks"]:
        todo = missing_seeds(glue_out, task, seeds)
        if not todo:
            log.info("[glue] %s: all seeds done, reusing", task)
            continue
        args = ["pipelines.finetune", "-m", f"task={task}", "seed=" + ",".join(map(str, todo)),
                f"init={pretrain_dir.resolve()}", f"hydra.sweep.dir={glue_out}",
                "hydra.sweep.subdir=${task.name}-seed${seed}", *finetune_args]
        if c["glue_dir"]:
            args.append(f"glue_dir={c['glue_dir']}")
        if not stage(f"glue {task}", args):
            failed.append(task)  # the other tasks go on; the table shows what is missing

    table_ok = stage("table", ["pipelines.table", f"runs_dir={glue_out}", f"output_dir={out / 'table'}"])
    if failed or not table_ok:
        log.error("finished with failures: %s", ", ".join(failed + ([] if table_ok else ["table"])))
        sys.exit(1)
    log.info("table: %s", out / "table" / "table.md")


if __name__ == "__main__":
    main()
