"""ELECTRA-style pretraining: `python -m pipelines.pretrain [overrides]` / `make pretrain` / torchrun / srun.

Exit status 0: finished (or this job's trainer.stop_after reached); 75 (convbert.pretrain.PREEMPTED_EXIT_CODE):
stopped by SIGTERM/SIGUSR1/SIGINT after writing a checkpoint, rerun the same command to resume."""

from __future__ import annotations

import os
import sys
import warnings

# Idle OpenMP threads sleep instead of spinning. On a shared or oversubscribed CPU (2 cores, several jobs)
# spinning threads wait for descheduled ones: the default tiny run measured 15 s/step there vs 0.8 s with
# PASSIVE. Set before torch loads its OpenMP runtime; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from convbert.pretrain import Preempted, PretrainConfig, parse_config, run
from convbert.pretrain.engine import check_run_dir, graphs_reason
from convbert.settings import ConfigError
from convbert.train.dist import launch_env, pick_device
from convbert.train.lock import DirLock, DirLockedError
from pipelines import callback_config, resolved_settings, run_hydra


class RunDirCheck(Callback):
    """Refuses, before Hydra creates the run dir or rewrites its .hydra/ files: settings that do not parse, a
    run dir that cannot be created, one that another live run holds, and one whose checkpoints were trained
    under other settings (conf/pretrain.yaml hydra.callbacks). The run checks them all again."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        run_dir = Path(callback_config(config).hydra.run.dir)
        c = _parse(config, list(config.hydra.overrides.task))
        _check_cuda_graphs(c)
        _check_creatable(run_dir)
        if launch_env()[0] == 0:  # the other ranks of this run wait for rank 0, which takes the lock
            try:
                DirLock(run_dir, "pretraining run").check()
            except DirLockedError as e:
                sys.exit(f"error: {e}")
            try:
                check_run_dir(c, run_dir)
            except (ConfigError, FileExistsError) as e:
                sys.exit(f"error: {e}")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_creatable(Path(callback_config(config).hydra.sweep.dir))


def _parse(config: DictConfig, overrides: list[str]) -> PretrainConfig:
    """The typed settings; a ConfigError ends the command here, so that a bad value leaves no run dir behind.
    SystemExit: Hydra turns a callback's exceptions into warnings and would go on to start the run."""
    try:
        with warnings.catch_warnings():  # the run itself warns about old spellings
            warnings.simplefilter("ignore")
            return parse_config(budget_sets_length(resolved_settings(config), overrides))
    except ValueError as e:  # ConfigError, and the data groups' DataError
        sys.exit(f"error: {e}")


def _check_cuda_graphs(c: PretrainConfig) -> None:
    """trainer.cuda_graphs=true where the run could not use them: said before the run dir exists."""
    if c.trainer.cuda_graphs is not True:
        return
    _, world_size, local_rank = launch_env()
    try:
        graphs_reason(c, pick_device(c.trainer.device, local_rank), world_size)
    except (ConfigError, RuntimeError) as e:
        sys.exit(f"error: {e}")


def _check_creatable(run_dir: Path) -> None:
    existing = run_dir.absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir() or not os.access(existing, os.W_OK | os.X_OK):
        why = "is not a directory" if not existing.is_dir() else "is not writable"
        sys.exit(f"error: run dir {run_dir} cannot be created: {existing} {why}; choose another hydra.run.dir "
                 "or paths.runs_dir")


def budget_sets_length(settings: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """The command line's run length wins over the config files': a budget given there replaces the trainer
    group's (or an experiment's) max_steps, a max_steps given there replaces an experiment's budget. Both on the
    command line are left for the run to refuse, naming both."""
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    trainer = settings.get("trainer") or {}
    budget = trainer.get("budget") or {}
    budget_given = any(k.startswith("trainer.budget") for k in keys)
    steps_given = "trainer.max_steps" in keys
    if budget_given and not steps_given and (budget.get("flops") or budget.get("hours")):
        trainer["max_steps"] = None
    elif steps_given and not budget_given and trainer.get("max_steps") is not None:
        for kind in ("flops", "hours"):
            if budget.get(kind) is not None:
                print(f"trainer.max_steps={trainer['max_steps']} replaces the config's trainer.budget.{kind}="
                      f"{budget[kind]}", file=sys.stderr)
                budget[kind] = None
    return settings


@hydra.main(config_path="../conf", config_name="pretrain", version_base="1.3")
def main(cfg: DictConfig) -> None:
    settings = budget_sets_length(OmegaConf.to_container(cfg, resolve=True), list(HydraConfig.get().overrides.task))
    try:
        summary = run(settings, HydraConfig.get().runtime.output_dir)
    except Preempted as stop:
        rank = launch_env()[0]
        print(f"rank {rank}: {stop.message}" if rank else stop.message, file=sys.stderr, flush=True)
        raise
    if launch_env()[0] == 0:
        metrics = summary.get("final_metrics", {})
        held = summary.get("heldout_metrics", {})
        print(f"done: {summary['steps']} steps, {summary['tokens']} tokens, "
              + ", ".join(f"{k}={v:.4g}" for k, v in metrics.items() if isinstance(v, float))
              + "".join(f"; held-out {k}={v:.4g}" for k, v in held.items() if isinstance(v, float)))


if __name__ == "__main__":
    if launch_env()[0] != 0:  # only rank 0 writes Hydra's files and logs into the (shared) run dir
        sys.argv += ["hydra.output_subdir=null", "hydra/job_logging=disabled", "hydra/hydra_logging=disabled"]
    run_hydra(main, "pretrain")
