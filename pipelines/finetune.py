"""Fine-tune a pretrained ConvBERT on one task and evaluate it (Hydra entry point; config conf/finetune.yaml).

    python -m pipelines.finetune task=rte init=runs/pretrain/<run> data.dir=/data/glue
    python -m pipelines.finetune -m task=cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte seed=1,2,3 init=runs/pretrain/<run>
    python -m pipelines.finetune -m task=rte optim.lr=1e-4,3e-4 init=... hydra/launcher=local_parallel
    python -m pipelines.finetune -m hparams_search=glue_lr task=rte init=...   # Optuna TPE over lr/epochs/decay

One job = convbert.finetune.run_job in the job dir (rerunning the same command resumes it). With `seeds`
set, the job runs each seed in <job dir>/seed<s> and returns the median of the task's main dev metric: the
objective a search optimises.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import statistics
import sys
import traceback
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from convbert.finetune import (
    FinetuneConfig,
    JobDone,
    SettingsMismatch,
    check_job,
    finished_job,
    init_name,
    record_job,
    run_job,
    task_adapter,
)
from convbert.io import write_json_atomic
from convbert.report.collect import load_result
from convbert.report.schema import Result
from convbert.report.tasks import MAIN_METRIC
from convbert.train.lock import DirLock, DirLockedError
from convbert.train.signals import Preempted
from pipelines import callback_config, resolved_settings, run_hydra

log = logging.getLogger("finetune")
OmegaConf.register_new_resolver("init_name", init_name, replace=True)  # job dirs name the checkpoint


class JobDirCheck(Callback):
    """A single run's job dir that holds a finished job, one another live job is running in, or a trained job
    with other settings is refused before Hydra writes its .hydra/ files there (conf/finetune.yaml
    hydra.callbacks): the refusal changes nothing. So are settings that do not parse, before Hydra creates the
    job dir. (run_job checks them all again under the lock.)"""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(callback_config(config).hydra.run.dir)
        # SystemExit: Hydra turns a callback's exceptions into warnings
        if why := finished_job(run_dir):
            sys.exit(f"error: {why}")
        try:
            DirLock(run_dir, "fine-tuning job").check()
        except DirLockedError as e:
            sys.exit(f"error: {e}")
        try:  # settings that do not parse (no job dir is left behind), or a trained job under other settings
            with warnings.catch_warnings():  # the job itself warns about old spellings
                warnings.simplefilter("ignore")
                job = FinetuneConfig.from_dict(resolved_settings(config))
            task_adapter(job)
            check_job(run_dir, job)
        except ValueError as e:  # ConfigError, and the task's own checks of its values
            sys.exit(f"error: {e}")


def reuse_finished(cfg: FinetuneConfig, run_dir: Path) -> float | None:
    """A job of a sweep (or a seed of a multi-seed job) that finished before the sweep was interrupted: its
    value, provided it ran with these settings."""
    record_job(run_dir, cfg)  # raises naming the differences
    result = load_result(run_dir / "results.json")  # names the file when it is damaged
    value = main_value(result)
    log.info("%s seed %s: reusing %s (%s)", result.task, cfg.seed, run_dir, value)
    return value


def main_value(result: Result) -> float | None:
    """The task's main dev metric: what a sweep optimises."""
    return result.metrics.get(MAIN_METRIC.get(result.task, ""))


def run_seed(cfg: FinetuneConfig, run_dir: Path) -> float | None:
    """One job; failed.json records a failure for the table stage (not a refusal: that dir is another job's, or
    this job's under other settings; not a stop: the job continues when rerun)."""
    try:
        result = run_job(cfg, run_dir)
    except Preempted as stop:  # a SystemExit: it carries the exit code, not the message
        print(stop.message, file=sys.stderr, flush=True)
        raise
    except (JobDone, DirLockedError, SettingsMismatch):
        raise
    except BaseException as e:
        failure = {"task": cfg.task.get("name"), "seed": cfg.seed, "error": f"{type(e).__name__}: {e}",
                   "traceback": traceback.format_exc()}
        write_json_atomic(run_dir / "failed.json", failure)
        raise
    (run_dir / "failed.json").unlink(missing_ok=True)  # a re-run of a failed job succeeded
    log.info("%s seed %s: %s -> %s", result.task, result.seed, result.metrics, run_dir)
    return main_value(result)


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    multirun = hc.mode == RunMode.MULTIRUN
    if config.get("search") is not None:  # a search trial: record where its hyper-parameters come from
        config["search"] = {**config["search"], "dir": str(Path(hc.sweep.dir).resolve()), "trial": hc.job.num,
                            "overrides": list(hc.overrides.task)}
    job = FinetuneConfig.from_dict(config)
    task_adapter(job)  # the task group's keys are checked before any job dir is touched
    launcher = hc.launcher.get("_target_", "")
    if job.trainer.threads is None and launcher.endswith("JoblibLauncher"):
        # parallel jobs on one machine: split the cores instead of every job grabbing all of them
        n_jobs = hc.launcher.get("n_jobs", -1)
        cores = os.cpu_count() or 1
        job.trainer.threads = max(1, cores // (cores if n_jobs is None or n_jobs < 1 else n_jobs))
    if job.tracking.get("group") is None:  # one wandb group per sweep; single runs group by task
        job.tracking["group"] = Path(hc.sweep.dir).name if multirun else f"finetune-{job.task['name']}"
    if not job.seeds:  # a rerun sweep reuses its finished jobs; a single run refuses a finished dir
        done = multirun and (run_dir / "results.json").exists()
        return reuse_finished(job, run_dir) if done else run_seed(job, run_dir)
    values = []
    for s in job.seeds:
        seed_job, seed_dir = dataclasses.replace(job, seed=int(s), seeds=None), run_dir / f"seed{s}"
        done = (seed_dir / "results.json").exists()
        values.append(reuse_finished(seed_job, seed_dir) if done else run_seed(seed_job, seed_dir))
    finite = [v for v in values if v is not None]
    objective = statistics.median(finite) if len(finite) == len(values) else float("nan")
    log.info("%s seeds %s: main metric %s, median %s", job.task["name"], job.seeds, values, objective)
    write_json_atomic(run_dir / "objective.json", {"task": job.task["name"], "seeds": job.seeds,
                                                   "values": values, "median": objective})
    return objective


if __name__ == "__main__":
    run_hydra(main, "finetune")
