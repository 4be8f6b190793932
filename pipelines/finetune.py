"""Fine-tune a pretrained ConvBERT on one task and evaluate it (Hydra entry point).

    python -m pipelines.finetune task=rte init=runs/pretrain/<run> glue_dir=/data/glue
    python -m pipelines.finetune -m task=cola,sst2,mrpc,stsb,qqp,mnli,qnli,rte seed=1,2,3 init=runs/pretrain/<run>
    python -m pipelines.finetune -m task=rte lr=1e-4,3e-4 batch_size=16,32 init=... hydra/launcher=local_parallel

Dispatches on task.kind: the job runs `convbert.<kind>.run.run(cfg: dict, run_dir: Path) -> dict`.
"""

from __future__ import annotations

import importlib
import logging
import os
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from convbert.train.files import write_json_atomic

log = logging.getLogger("finetune")


def task_runner(kind: str):
    try:
        module = importlib.import_module(f"convbert.{kind}.run")
    except ModuleNotFoundError as e:
        raise ValueError(f"task.kind={kind!r}: no module convbert.{kind}.run ({e})") from e
    return module.run


@hydra.main(config_path="../conf", config_name="finetune", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    run_dir = Path(hc.runtime.output_dir)
    config = OmegaConf.to_container(cfg, resolve=True)
    launcher = hc.launcher.get("_target_", "")
    if config.get("threads") is None and launcher.endswith("JoblibLauncher"):
        # parallel jobs on one machine: split the cores instead of every job grabbing all of them
        n_jobs = hc.launcher.get("n_jobs", -1)
        cores = os.cpu_count() or 1
        config["threads"] = max(1, cores // (cores if n_jobs is None or n_jobs < 1 else n_jobs))
    tracking = config.setdefault("tracking", {})
    if tracking.get("group") is None:  # one wandb group per sweep; single runs group by task
        multirun = hc.mode == RunMode.MULTIRUN
        tracking["group"] = Path(hc.sweep.dir).name if multirun else f"finetune-{config['task']['name']}"
    if (run_dir / "results.json").exists():  # e.g. two runs started in the same second, or a reused run dir
        raise FileExistsError(f"{run_dir} already holds the results.json of a finished job; "
                              "choose another hydra.run.dir (nothing was changed)")
    try:
        results = task_runner(config["task"]["kind"])(config, run_dir)
    except BaseException as e:  # leave a trace in the run dir for the table stage, then fail the job
        failure = {"task": config["task"].get("name"), "seed": config.get("seed"),
                   "error": f"{type(e).__name__}: {e}", "traceback": traceback.format_exc()}
        write_json_atomic(run_dir / "failed.json", failure)
        raise
    (run_dir / "failed.json").unlink(missing_ok=True)  # a re-run of a failed job succeeded
    log.info("%s seed %s: %s -> %s", results["task"], results["seed"], results["metrics"], run_dir)
    metrics = results.get("metrics") or {}
    return next(iter(metrics.values()), None)  # the first metric, for Hydra sweepers that optimise


if __name__ == "__main__":
    main()
