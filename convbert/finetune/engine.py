"""`run_job`: the steps every job shares (lock, record, seed, init, data, model, fit, results.json). A task kind
(convbert/glue/run.py, convbert/squad/run.py) supplies a `TaskAdapter`: data, model, loss, evaluation and
its own output files.
"""

from __future__ import annotations

import dataclasses
import importlib
import math
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch

from convbert.config import ConvBertConfig
from convbert.finetune.config import DEFAULT_LR, FinetuneConfig, FinetuneTrainerConfig, init_name, upgrade_job_record
from convbert.finetune.fit import FitResult, fit, seed_everything
from convbert.finetune.init import Pretrained, load_init
from convbert.finetune.sampler import LengthBucketSampler
from convbert.io import read_json, write_json_atomic
from convbert.report.schema import ModelInfo, Pretraining, Result
from convbert.settings import ConfigError
from convbert.train import Precision, Tracker, git_revision, init_distributed
from convbert.train.checkpoint import find_latest
from convbert.train.lock import DirLock
from convbert.train.precision import resolve_precision
from convbert.train.runinfo import recorded_changes, recorded_differences
from convbert.train.signals import StopRequest
from convbert.train.tracking import default_mode


@dataclass
class TaskOutput:
    """What a task adds to results.json after training."""

    metrics: dict[str, float]
    predictions_file: Path
    dev_examples: tuple[int, int]  # (used, total)
    flops: float = 0.0  # inference after training (test sets)
    extras: dict[str, Any] = field(default_factory=dict)  # task-specific results.json keys


class TaskAdapter(Protocol):
    """What a task kind supplies to `run_job` (convbert/glue/run.py, convbert/squad/run.py)."""

    name: str
    epochs: int  # task.epochs (the task registry's when null)
    max_length: int
    train_lengths: np.ndarray  # after load()

    def load(self, pre: Pretrained, device: torch.device) -> None: ...  # data + features, before training
    def build_model(self, config: ConvBertConfig) -> torch.nn.Module: ...
    def collate_train(self, indices: list[int]) -> dict[str, torch.Tensor]: ...
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...
    def evaluate(self, model: torch.nn.Module, epoch: int, last: bool, autocast) -> dict[str, float]: ...
    def finish(self, model: torch.nn.Module, run_dir: Path, autocast) -> TaskOutput: ...
    def untrained_loss(self) -> tuple[float, str]: ...  # what loss() scores for an untrained model, and its name
    def hparams(self) -> dict[str, Any]: ...


class JobDone(FileExistsError):
    """The job dir already holds results.json."""


def task_adapter(cfg: FinetuneConfig) -> TaskAdapter:
    kind = cfg.task.get("kind")
    try:
        module = importlib.import_module(f"convbert.{kind}.run")
    except ModuleNotFoundError as e:
        raise ConfigError(f"task.kind={kind!r}: no module convbert.{kind}.run ({e})") from e
    return module.Adapter(cfg)


def default_lr(cfg: FinetuneConfig, pre: Pretrained) -> float:
    if cfg.optim.lr is not None:
        return float(cfg.optim.lr)
    preset = pre.model_info["preset"]
    if preset not in DEFAULT_LR:
        raise ConfigError(f"optim.lr is null and model preset {preset!r} has no default learning rate (defaults: "
                          f"{DEFAULT_LR}); set optim.lr=...")
    return DEFAULT_LR[preset]


class SettingsMismatch(ConfigError):
    """The job dir holds a job (trained state, or results) with other settings."""


def record_job(run_dir: Path, cfg: FinetuneConfig) -> None:
    """job.json: init, task, seed and settings. Once the dir holds trained state (a checkpoint, or the results
    of a finished job), a rerun must have the same settings; until then a rerun's settings replace those of an
    attempt that failed before training (a wrong data.dir, a too long task.max_length)."""
    _refuse_changes(run_dir, recorded_changes(run_dir / "job.json", _job_record(cfg), binding=_trained(run_dir),
                                              error=ConfigError, upgrade=upgrade_job_record))


def check_job(run_dir: Path, cfg: FinetuneConfig) -> None:
    """SettingsMismatch when run_dir holds trained state recorded under other settings; writes nothing."""
    if _trained(run_dir):
        _refuse_changes(run_dir, recorded_differences(run_dir / "job.json", _job_record(cfg), ConfigError,
                                                      upgrade_job_record))


def _refuse_changes(run_dir: Path, diff: str) -> None:
    if diff:
        raise SettingsMismatch(f"{run_dir} holds a job with other settings ({diff}); rerun with its settings to "
                               f"continue it, use another run dir, or delete it to start over")


def _job_record(cfg: FinetuneConfig) -> dict[str, Any]:
    return {"init": cfg.init, "init_name": init_name(cfg.init, cfg.model.preset), "task": cfg.task["name"],
            "seed": cfg.seed, "settings": cfg.settings()}


def _trained(run_dir: Path) -> bool:
    return (run_dir / "results.json").exists() or find_latest(run_dir / "checkpoint") is not None


def finished_job(run_dir: Path) -> str | None:
    """Why run_dir cannot take a job because a finished job is there (its results.json), or None."""
    path = run_dir / "results.json"
    if not path.exists():
        return None
    try:
        read_json(path)
    except ValueError as e:
        return f"{run_dir} holds a finished job whose results.json is damaged ({e}); delete it to run the job again"
    return f"{run_dir} already holds the results.json of a finished job; choose another run dir (nothing was changed)"


def run_job(cfg: FinetuneConfig, run_dir: str | Path) -> Result:
    """One fine-tuning job in run_dir: resumes what a killed/stopped job left there; refuses a finished dir
    and a dir another live job holds."""
    run_dir = Path(run_dir).resolve()
    with DirLock(run_dir, "fine-tuning job"):
        if why := finished_job(run_dir):  # e.g. two runs started in the same second, or a reused dir
            raise JobDone(why)
        with StopRequest() as stop:
            return _run(cfg, run_dir, stop)


def _run(cfg: FinetuneConfig, run_dir: Path, stop: StopRequest) -> Result:
    t_start = time.time()
    adapter = task_adapter(cfg)
    record_job(run_dir, cfg)
    device = _device(cfg.trainer)
    seed_everything(cfg.seed)
    pre, model, lr = _model(cfg, adapter, device)
    t = cfg.tracking
    tracker = Tracker(run_dir, dataclasses.asdict(cfg), mode=t.get("mode", default_mode()),
                      project=t.get("project", "convbert"), group=t.get("group"),
                      name=t.get("name") or f"{adapter.name}-seed{cfg.seed}", job_type="finetune",
                      tags=[adapter.name, pre.model_info["name"]])
    precision = Precision(resolve_precision(cfg.trainer.precision, device), device)  # one warning, one scaler
    fitted = _train(cfg, adapter, model, lr, precision, tracker, run_dir, stop)
    out = adapter.finish(model, run_dir, precision.autocast)
    o = cfg.optim
    hparams = {"lr": lr, "batch_size": cfg.trainer.batch_size, "epochs": adapter.epochs,
               "max_length": adapter.max_length,
               **adapter.hparams(), "layer_decay": o.layer_decay, "layer_decay_variant": o.layer_decay_variant,
               "weight_decay": o.weight_decay, "warmup_fraction": o.warmup_fraction,
               "bias_correction": o.bias_correction, "precision": precision.kind}
    result = Result(
        task=adapter.name, metrics=out.metrics, seed=cfg.seed, model=ModelInfo(**pre.model_info),
        pretraining=Pretraining(**pre.pretraining) if pre.pretraining else None, steps=fitted.steps,
        examples_seen=fitted.examples_seen, wall_time_s=round(time.time() - t_start, 3),
        flops=fitted.train_flops + fitted.eval_flops + out.flops, git_revision=git_revision(),
        run_dir=str(run_dir), predictions_file=str(out.predictions_file), dev_examples=out.dev_examples,
        search=cfg.search,
        extras={**out.extras, "history": fitted.history, "hparams": hparams, "resumed_from_step": fitted.resumed_from,
                "job": {"init": cfg.init, "init_name": init_name(cfg.init, cfg.model.preset)},
                "device": str(device), "threads": torch.get_num_threads()},
    )
    write_json_atomic(run_dir / "results.json", result.to_json())
    tracker.summary({f"final/{k}": v for k, v in out.metrics.items() if v is not None and math.isfinite(v)})
    tracker.finish()
    if not cfg.trainer.keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return result


def _device(tr: FinetuneTrainerConfig) -> torch.device:
    if tr.threads:
        torch.set_num_threads(tr.threads)
    dist = init_distributed(tr.device)
    if dist.distributed:
        raise NotImplementedError("fine-tuning runs one process per job; launch many jobs (multirun), not "
                                  "torchrun/srun with several tasks")
    return dist.device


def _model(cfg: FinetuneConfig, adapter: TaskAdapter, device: torch.device
           ) -> tuple[Pretrained, torch.nn.Module, float]:
    """The init, the task model on `device` with the init's backbone weights, and the peak learning rate."""
    pre = load_init(cfg.init, cfg.model.preset, cfg.model.vocab, cfg.model.overrides)
    positions = pre.config.max_position_embeddings
    if adapter.max_length > positions:
        raise ConfigError(f"task.max_length={adapter.max_length} exceeds the model's max_position_embeddings="
                          f"{positions} ({pre.model_info['name']}); set task.max_length<={positions}")
    lr = default_lr(cfg, pre)
    adapter.load(pre, device)
    model = adapter.build_model(pre.config)
    model.convbert.load_state_dict(pre.backbone.state_dict())
    pre.backbone = None  # free the second copy
    return pre, model.to(device), lr


def _train(cfg: FinetuneConfig, adapter: TaskAdapter, model: torch.nn.Module, lr: float, precision: Precision,
           tracker: Tracker, run_dir: Path, stop: StopRequest) -> FitResult:
    """fit() over length-bucketed batches, with the dev set evaluated after every epoch; a job resumed after its
    training had ended predicts again, so that finish() has the dev predictions."""
    trainer = cfg.trainer
    sampler = LengthBucketSampler(adapter.train_lengths, trainer.batch_size, shuffle=True, seed=cfg.seed,
                                  pool_batches=trainer.bucket_pool_batches)

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield adapter.collate_train(idx)

    total = adapter.epochs * len(sampler)
    last_epoch = math.ceil((total if trainer.max_steps is None else min(total, trainer.max_steps)) / len(sampler)) - 1
    evaluated: list[int] = []

    def evaluate(epoch: int) -> dict[str, float]:
        metrics = adapter.evaluate(model, epoch, epoch == last_epoch, precision.autocast)
        evaluated.append(epoch)
        return metrics

    device = next(model.parameters()).device
    fitted = fit(model, batches, len(sampler), adapter.epochs, adapter.loss, cfg.optim, trainer, device, lr, evaluate,
                 tracker, run_dir / "checkpoint", stop, precision, adapter.untrained_loss())
    if last_epoch not in evaluated:  # resumed after training had ended: predict again (same weights)
        with torch.no_grad(), precision.autocast():
            adapter.evaluate(model, last_epoch, True, precision.autocast)
    return fitted
