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

from convbert.finetune.sweep import glue_sweep, pretrained, stage
from convbert.io import read_json
from pipelines import run_hydra

log = logging.getLogger("reproduce")


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
                   finetune_args: list[str], random_init: bool) -> list[str]:
    """pretrain -> GLUE sweep for one experiment (its pretraining run is `name`), and with random_init the same
    sweep from random weights of the same architecture; returns the failed stages."""
    pretrain_dir = Path(c["pretrain_root"]) / name
    if not stage(f"pretrain {name}", ["pipelines.pretrain", *pretrain_overrides(experiment, c["pretrain_args"]),
                                      f"hydra.run.dir={pretrain_dir}"]):
        return [f"pretrain {name}"]
    failed = glue_sweep(name, pretrained(pretrain_dir), out / name / "glue", c["tasks"], seeds, finetune_args,
                        c["data"]["dir"])
    if random_init:
        args = random_init_args(pretrain_dir)
        failed += glue_sweep(f"{name} (random init)", (args, {"random_init": args}), out / name / "glue-random-init",
                             c["tasks"], seeds, finetune_args, c["data"]["dir"])
    return failed


def random_init_args(pretrain_dir: Path) -> list[str]:
    """Fine-tuning overrides for the run's architecture and vocabulary with random weights (init=null): the
    model settings its pretrain_summary.json records, so that only pretraining differs."""
    model = read_json(pretrain_dir / "pretrain_summary.json")["model"]
    preset = read_json(pretrain_dir / "config.json")["model"]["preset"]

    def value(v: object) -> str:
        return str(v).lower() if isinstance(v, bool) else str(v)

    fields = [f"model.{k}={value(v)}" for k, v in model.items() if k not in ("name", "vocab_size") and v is not None]
    return ["init=null", f"model.preset={preset}", f"model.vocab={(pretrain_dir / 'vocab.txt').resolve()}", *fields]


def report_collapsed(out: Path) -> None:
    """Name the fine-tuning jobs whose dev predictions collapsed onto one answer, and what to try."""
    from convbert.glue.metrics import COLLAPSE_ADVICE
    from convbert.report import aggregate, collect
    from convbert.report.aggregate import collapsed_jobs

    try:
        jobs = collapsed_jobs(aggregate(collect([out])))
    except ValueError:  # no results at all: the failures were reported already
        return
    if jobs:
        log.warning("collapsed fine-tuning jobs (marked ! in the table):\n  %s\nFor these, %s", "\n  ".join(jobs),
                    COLLAPSE_ADVICE)


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

    random_init = c["random_init"] if c["random_init"] != "auto" else smoke
    failed = []
    for experiment, name in zip(experiments, names, strict=True):
        own = {**c, "pretrain_args": c["pretrain_args"] + budgets[experiment]}  # equal compute (or a ratio)
        failed += run_experiment(experiment, name, own, out, seeds, finetune_args, random_init)
    # one table over every experiment's results: rows side by side, and the comparison of the two experiments
    # (or, for one experiment, of its pretrained and random-init rows)
    compare = [f"compare=[{names[0]},{names[1]}]"] if len(names) == 2 else []
    table_ok = stage("table", ["pipelines.table", f"runs_dir={out}", f"output_dir={out / 'table'}", *compare])
    report_collapsed(out)
    if failed or not table_ok:
        log.error("finished with failures: %s", ", ".join(failed + ([] if table_ok else ["table"])))
        sys.exit(1)
    log.info("table: %s", out / "table" / "table.md")


if __name__ == "__main__":
    run_hydra(main, "reproduce")
