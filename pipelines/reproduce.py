"""tokenize -> pretrain -> GLUE sweep -> score table for one or more experiments: `make reproduce EXPERIMENT=a,b`.

Each stage is the ordinary entry point run as a subprocess, so a reproduction is exactly what a user would
get by typing the stages by hand. Finished work is reused: the pretraining run resumes (or is already done),
and GLUE jobs whose results.json exists are not run again, as long as the pretrained weights and fine-tuning
settings are those that made them.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from hydra import compose
from omegaconf import DictConfig, OmegaConf

from convbert.io import sha256_prefix
from convbert.train.proc import run_child
from convbert.train.runinfo import recorded_changes
from pipelines import run_hydra

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
    pretrained weights, fine-tuning overrides and data. Returns False (after logging why) when they differ. While
    no job has finished, a rerun's settings replace the recorded ones (a first attempt that failed on them)."""
    diff = recorded_changes(glue_out / "reproduce_settings.json", settings,
                            binding=any(glue_out.glob("*/results.json")))
    if diff:
        log.error("[glue] %s holds results made with other settings (%s); rerun with another name= or "
                  "output_dir=, or delete that dir to redo them", glue_out, diff)
    return not diff


def pretrain_overrides(experiment: str | None, pretrain_args: list[str]) -> list[str]:
    return ([] if experiment is None else [f"experiment={experiment}"]) + list(pretrain_args)


def pretrain_run(experiment: str | None, pretrain_args: list[str]) -> tuple[str, bool]:
    """The run name pipelines.pretrain will use for this experiment, and whether its model is tiny."""
    cfg = compose(config_name="pretrain", overrides=pretrain_overrides(experiment, pretrain_args))
    return str(cfg.name), cfg.model.preset == "tiny"


def budget_args(budget: dict, experiments: list[str | None]) -> dict[str | None, list[str]]:
    """Each experiment's trainer.budget override: the one budget (flops or hours) times its ratio (default 1).
    Raises SystemExit naming the bad key."""
    kinds = [k for k in ("flops", "hours") if budget.get(k) is not None]
    ratio = budget.get("ratio") or {}
    unknown = sorted(set(budget) - {"flops", "hours", "ratio"})
    if unknown:
        raise SystemExit(f"budget has unknown key(s) {unknown}; its keys are flops, hours, ratio")
    if len(kinds) > 1:
        raise SystemExit(f"budget.flops={budget['flops']} and budget.hours={budget['hours']} are both set: give one")
    if ratio and not kinds:
        raise SystemExit("budget.ratio is set but no budget.flops or budget.hours to scale")
    for name, share in ratio.items():
        if name not in experiments:
            raise SystemExit(f"budget.ratio.{name}: not one of the experiments {experiments}")
        if isinstance(share, bool) or not isinstance(share, int | float) or not share > 0:
            raise SystemExit(f"budget.ratio.{name} must be a positive number, got {share!r}")
    if not kinds:
        return {e: [] for e in experiments}
    kind = kinds[0]
    value = budget[kind]
    if isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
        raise SystemExit(f"budget.{kind} must be a positive number, got {value!r}")
    return {e: [f"trainer.budget.{kind}={float(value) * ratio.get(e, 1.0)!r}"] for e in experiments}


def run_experiment(experiment: str | None, name: str, c: dict, out: Path, seeds: list[int],
                   finetune_args: list[str]) -> list[str]:
    """pretrain -> GLUE sweep for one experiment (its pretraining run is `name`); returns the failed stages."""
    pretrain_dir = Path(c["pretrain_root"]) / name
    if not stage(f"pretrain {name}", ["pipelines.pretrain", *pretrain_overrides(experiment, c["pretrain_args"]),
                                      f"hydra.run.dir={pretrain_dir}"]):
        return [f"pretrain {name}"]
    glue_out, failed = out / name / "glue", []
    settings = {"init_checkpoint_id": sha256_prefix(pretrain_dir / "hf" / "model.safetensors"),
                "finetune_args": finetune_args, "glue_dir": c["glue_dir"]}
    if not check_glue_settings(glue_out, settings):
        return [f"glue {name}"]
    for task in c["tasks"]:
        todo = missing_seeds(glue_out, task, seeds)
        if not todo:
            log.info("[glue] %s %s: all seeds done, reusing", name, task)
            continue
        args = ["pipelines.finetune", "-m", f"task={task}", "seed=" + ",".join(map(str, todo)),
                f"init={pretrain_dir.resolve()}", f"hydra.sweep.dir={glue_out}",
                "hydra.sweep.subdir=${task.name}-seed${seed}", *finetune_args]
        if c["glue_dir"]:
            args.append(f"data.dir={c['glue_dir']}")
        if not stage(f"glue {name} {task}", args):
            failed.append(f"{name} {task}")  # the other tasks go on; the table shows what is missing
    return failed


@hydra.main(config_path="../conf", config_name="reproduce", version_base="1.3")
def main(cfg: DictConfig) -> None:
    c = OmegaConf.to_container(cfg, resolve=True)
    experiments = c["experiments"] or [None]
    if isinstance(experiments, str):
        experiments = [e for e in experiments.split(",") if e]
    if len(set(experiments)) != len(experiments):
        raise SystemExit(f"experiments lists one twice: {experiments}")
    budgets = budget_args(c["budget"], experiments)
    runs = [pretrain_run(e, c["pretrain_args"]) for e in experiments]  # fails early on a bad experiment
    names = [n for n, _ in runs]
    if len(set(names)) != len(names):
        raise SystemExit(f"experiments {experiments} share a pretraining run name ({names}); give them distinct "
                         "names (pretrain_args or the experiment files)")
    smoke = c["smoke"] if c["smoke"] != "auto" else all(tiny for _, tiny in runs)
    seeds = c["smoke_scale"]["seeds"] if smoke else c["seeds"]
    finetune_args = (c["smoke_scale"]["finetune_args"] if smoke else []) + c["finetune_args"]
    out = Path(c["output_dir"]) / (c["name"] or "+".join(names if experiments == [None] else experiments))

    failed = []
    for experiment, name in zip(experiments, names, strict=True):
        own = {**c, "pretrain_args": c["pretrain_args"] + budgets[experiment]}  # equal compute (or a ratio)
        failed += run_experiment(experiment, name, own, out, seeds, finetune_args)
    # one table over every experiment's results: rows side by side, and the comparison when there are two
    table_ok = stage("table", ["pipelines.table", f"runs_dir={out}", f"output_dir={out / 'table'}"])
    if failed or not table_ok:
        log.error("finished with failures: %s", ", ".join(failed + ([] if table_ok else ["table"])))
        sys.exit(1)
    log.info("table: %s", out / "table" / "table.md")


if __name__ == "__main__":
    run_hydra(main, "reproduce")
