"""ELECTRA-style pretraining run: data -> model -> training loop -> checkpoints -> HF export.

`run(cfg, run_dir)` takes the plain-dict config that pipelines/pretrain.py composes with Hydra. The same code
runs as one process, under torchrun (one or many nodes) and under srun; rank 0 alone logs and writes.
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from convbert.config import ConvBertConfig
from convbert.data import PretrainDataset, ResumableBatches, check_compatible, load_tokenizer, prepare
from convbert.data.config import from_mapping
from convbert.electra import (
    STAT_KEYS,
    ElectraObjective,
    ElectraPretrainer,
    example_seeds,
    prepare_batch,
    summarize,
    to_device,
    train_flops,
    train_step,
)
from convbert.train import (
    DistInfo,
    Precision,
    Tracker,
    all_reduce_sum,
    barrier,
    build_optimizer,
    device_name,
    drop_metrics_after,
    find_latest,
    git_revision,
    init_distributed,
    linear_schedule,
    load_checkpoint,
    read_metrics,
    save_checkpoint,
)
from convbert.train.files import write_json_atomic
from convbert.train.plot import plot_curves
from convbert.train.runinfo import flatten_settings, settings_changes

NEVER_MASKED = ("[PAD]", "[CLS]", "[SEP]", "[MASK]")  # SPEC §3 (as ELECTRA; [UNK] may be masked)
RESUME_MODES = ("auto", "never")
# config entries a resumed run may change (where and how it runs, how long, what it logs); any other
# difference from the run's config.json would silently mix two runs' settings, so resuming refuses it
MAY_CHANGE_ON_RESUME = ("name", "resume", "tracking", "num_workers", "data_dir", "trainer.device",
                        "trainer.precision", "trainer.compile", "trainer.num_threads", "trainer.max_steps",
                        "trainer.stop_after", "trainer.log_every", "trainer.ckpt_every", "trainer.keep_last",
                        "trainer.progress")
# settings added after runs were written without them, with the value those runs used
PREDATED = {"trainer.adam_bias_correction": True}


@dataclass
class TrainerConfig:
    device: str = "auto"
    precision: str = "fp32"
    compile: bool = False
    num_threads: int | None = None
    batch_size: int = 128  # global: ranks x grad_accum x micro-batch
    grad_accum: int = 1
    max_steps: int = 1_000_000
    stop_after: int | None = None  # end this job at that step (checkpointed) without changing the schedule
    warmup_steps: int = 10_000
    lr: float = 3e-4
    weight_decay: float = 0.01
    adam_betas: tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-6
    adam_bias_correction: bool = False  # False: ELECTRA's optimizer, as the paper's recipes assume
    max_grad_norm: float = 1.0
    log_every: int = 100
    ckpt_every: int = 10_000
    keep_last: int = 3
    progress: bool = True

    def __post_init__(self) -> None:
        at_least = {"batch_size": 1, "grad_accum": 1, "max_steps": 1, "warmup_steps": 0, "log_every": 1,
                    "ckpt_every": 1, "keep_last": 1}
        for key, low in at_least.items():
            if getattr(self, key) < low:
                raise ValueError(f"trainer.{key} must be >= {low}, got {getattr(self, key)}")
        if self.stop_after is not None and self.stop_after < 1:
            raise ValueError(f"trainer.stop_after must be >= 1 or null, got {self.stop_after}")

    def micro_batch(self, world_size: int) -> int:
        per_step = world_size * self.grad_accum
        if self.batch_size % per_step:
            raise ValueError(f"trainer.batch_size={self.batch_size} is not divisible by world_size "
                             f"({world_size}) x trainer.grad_accum ({self.grad_accum})")
        return self.batch_size // per_step


def model_config(model: dict[str, Any], vocab_size: int) -> ConvBertConfig:
    """ConvBertConfig from the `model` config group: a preset plus the knobs that are not null."""
    knobs = {k: v for k, v in model.items() if k not in ("preset", "name") and v is not None}
    return ConvBertConfig.from_preset(model["preset"], vocab_size=vocab_size, **knobs)


def check_resume_config(saved: dict[str, Any], cfg: dict[str, Any], run_dir: Path) -> None:
    """Refuse to resume a run under settings that differ from its config.json (other than
    MAY_CHANGE_ON_RESUME), naming every differing key."""
    diff = settings_changes({**PREDATED, **flatten_settings(saved)}, cfg, MAY_CHANGE_ON_RESUME)
    if diff:
        raise ValueError(f"{run_dir} holds a run with other settings ({diff}). Resume it with its own settings "
                         "(config.json there), or start a new run with name=<new name>.")


def _check_writable(run_dir: Path) -> None:
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        probe = run_dir / ".write_test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise PermissionError(f"run dir {run_dir} is not writable: {e}") from e


def _rng_state(info: DistInfo) -> list[dict]:
    """Every rank's RNG state (dropout is the only unkeyed randomness), gathered for rank 0 to save."""
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if info.device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(info.device)
    if not info.distributed:
        return [state]
    gathered: list[Any] = [None] * info.world_size
    dist.all_gather_object(gathered, state)
    return gathered


def _set_rng_state(states: list[dict], info: DistInfo) -> None:
    if len(states) != info.world_size:
        raise ValueError(f"checkpoint was written by {len(states)} ranks, this run has {info.world_size}; "
                         "resume with the same number of processes")
    state = states[info.rank]
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and info.device.type == "cuda":
        torch.cuda.set_rng_state(state["cuda"], info.device)


class _Progress:
    def __init__(self, enabled: bool, start: int, total: int):
        self.bar = None
        if enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, desc="pretrain", unit="step", dynamic_ncols=True)

    def update(self, **postfix: Any) -> None:
        if self.bar is not None:
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def prepare_data(cfg: dict[str, Any], info: DistInfo) -> Path:
    """Tokenized shards for the configured corpus: rank 0 builds them if missing, the others then reuse."""
    kwargs = dict(corpus=cfg["corpus"], tokenizer=cfg["tokenizer"], max_seq_length=cfg["max_seq_length"],
                  seed=cfg["data_seed"], num_workers=cfg["num_workers"], data_dir=cfg["data_dir"])
    path = prepare(**kwargs, progress=info.is_main) if info.is_main else None
    barrier()
    return path or prepare(**kwargs, progress=False)


def run(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    run_dir = Path(run_dir)
    trainer = from_mapping(TrainerConfig, "trainer", cfg["trainer"])
    objective = from_mapping(ElectraObjective, "objective", cfg.get("objective", {}))
    info = init_distributed(trainer.device)
    if trainer.num_threads:
        torch.set_num_threads(trainer.num_threads)
    micro = trainer.micro_batch(info.world_size)
    model_config(cfg["model"], vocab_size=1)  # check the model knobs before a possibly long tokenization
    if info.is_main:
        _check_writable(run_dir)
    resume = cfg.get("resume", "auto")
    if resume not in RESUME_MODES:
        raise ValueError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    ckpt_dir = run_dir / "checkpoints"
    latest = find_latest(ckpt_dir)
    if latest is not None and resume == "never":
        raise FileExistsError(f"{ckpt_dir} already holds checkpoints; use resume=auto or another run name")
    if latest is not None and (run_dir / "config.json").exists():
        check_resume_config(json.loads((run_dir / "config.json").read_text()), cfg, run_dir)

    data_path = prepare_data(cfg, info)
    tokenizer = load_tokenizer(data_path)
    vocab_size = tokenizer.get_vocab_size()
    config = model_config(cfg["model"], vocab_size)
    check_compatible(data_path, config.vocab_size)
    dataset = PretrainDataset(data_path)
    if dataset.max_seq_length > config.max_position_embeddings:
        raise ValueError(f"shards have max_seq_length {dataset.max_seq_length} > the model's "
                         f"{config.max_position_embeddings} positions")
    special_ids = [i for t in NEVER_MASKED if (i := tokenizer.token_to_id(t)) is not None]
    mask_id = tokenizer.token_to_id("[MASK]")
    if mask_id is None:
        raise ValueError(f"tokenizer in {data_path} has no [MASK] token")

    torch.manual_seed(cfg["seed"])
    model = ElectraPretrainer(config, objective).to(info.device)
    optimizer = build_optimizer(model, trainer.lr, trainer.weight_decay, trainer.adam_betas, trainer.adam_eps,
                                bias_correction=trainer.adam_bias_correction)
    scheduler = linear_schedule(optimizer, trainer.warmup_steps, trainer.max_steps)
    precision = Precision(trainer.precision, info.device)
    batches = ResumableBatches(dataset, micro, cfg["seed"], info.rank, info.world_size)

    step, totals = 0, {"tokens": 0.0, "masked": 0.0, "flops": 0.0, "train_time_s": 0.0}
    if latest is not None:
        state = load_checkpoint(latest)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        precision.load_state_dict(state["scaler"])
        batches.load_state_dict(state["data"])
        _set_rng_state(state["rng"], info)
        step, totals = state["step"], state["totals"]
        # the saved lr is the old schedule's: re-derive it from this one (trainer.max_steps may have changed)
        for group, base, factor in zip(optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas,
                                       strict=True):
            group["lr"] = base * factor(step)
        if info.is_main:
            drop_metrics_after(run_dir, step)
            print(f"resumed from {latest} at step {step}")

    if trainer.compile:
        model.generator.compile()
        model.discriminator.compile()
    net = model
    if info.distributed:
        # find_unused_parameters: each phase of train_step leaves the other model's own parameters unused
        net = DistributedDataParallel(model, device_ids=[info.device.index] if info.device.type == "cuda" else None,
                                      find_unused_parameters=True)
    tracker = Tracker(
        run_dir, cfg, mode=cfg["tracking"]["mode"], project=cfg["tracking"]["project"],
        group=cfg["tracking"].get("group") or "pretrain", name=cfg["tracking"].get("name") or cfg["name"],
        job_type="pretrain", tags=cfg["tracking"].get("tags"), enabled=info.is_main,
    )
    if info.is_main:
        for f in ("tokenizer.json", "vocab.txt"):
            shutil.copy2(data_path / f, run_dir / f)
        write_json_atomic(run_dir / "config.json", cfg)

    def checkpoint() -> None:
        rng = _rng_state(info)
        if info.is_main:
            save_checkpoint(ckpt_dir, step, {
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": precision.state_dict(), "data": batches.state_dict(),
                "rng": rng, "step": step, "totals": totals, "config": config.to_dict(),
            }, trainer.keep_last)
        barrier()

    end = min(trainer.max_steps, trainer.stop_after or trainer.max_steps)
    progress = _Progress(trainer.progress and info.is_main, step, end)
    window = {k: 0.0 for k in STAT_KEYS}
    window_start, window_tokens = time.perf_counter(), 0.0
    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    while step < end:
        t0 = time.perf_counter()
        micro_batches = []
        for a in range(trainer.grad_accum):
            seeds = example_seeds(cfg["seed"], step, (a * info.world_size + info.rank) * micro, micro)
            b = prepare_batch(next(batches), special_ids, mask_id, seeds, objective)  # masks on the host
            micro_batches.append(to_device(b, info.device))
        norms = torch.stack([sum(b["mask_valid"].sum() for b in micro_batches),
                             sum(b["attention_mask"].sum() for b in micro_batches)]).float()
        norms = all_reduce_sum(norms)  # global counts: exact loss normalisation across ranks/micro-batches

        for a, b in enumerate(micro_batches):
            last = a == len(micro_batches) - 1  # all-reduce gradients once a step
            loss, stats = train_step(net, b, norms, precision, float(info.world_size), sync=last)
            for k in STAT_KEYS:
                window[k] += float(stats[k])
        grad_norm = float(precision.step(optimizer, params, trainer.max_grad_norm))  # a tensor: read here
        if not math.isfinite(grad_norm) and precision.scaler is None:
            last = find_latest(ckpt_dir)
            raise FloatingPointError(
                f"non-finite loss/gradients at step {step + 1} (grad norm {grad_norm}); weights were not updated "
                f"from here. Last good checkpoint: {last or 'none'}. Try a lower trainer.lr or precision=fp32.")
        lr = optimizer.param_groups[0]["lr"]  # the lr of this step (all groups share it in pretraining)
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        step += 1
        n_tokens, n_masked = float(norms[1]), float(norms[0])
        totals["tokens"] += n_tokens
        totals["masked"] += n_masked
        totals["flops"] += train_flops(config, model.generator_config, dataset.max_seq_length, n_tokens, n_masked)
        totals["train_time_s"] += time.perf_counter() - t0
        window_tokens += n_tokens
        progress.update(loss=f"{float(loss.detach()) / info.world_size:.3f}",
                        tok_s=f"{n_tokens / (time.perf_counter() - t0):.0f}")

        if step % trainer.log_every == 0 or step == end:
            summed = all_reduce_sum(torch.tensor([window[k] for k in STAT_KEYS], dtype=torch.float64,
                                                 device=info.device))
            metrics = summarize(dict(zip(STAT_KEYS, summed.tolist(), strict=True)))
            metrics["loss"] = objective.mlm_weight * metrics["mlm_loss"] + objective.rtd_weight * metrics["rtd_loss"]
            elapsed = time.perf_counter() - window_start
            metrics.update(lr=lr, grad_norm=grad_norm, tokens_per_s=window_tokens / elapsed,
                           tokens=totals["tokens"], flops=totals["flops"])
            tracker.log(metrics, step)
            window = {k: 0.0 for k in STAT_KEYS}
            window_start, window_tokens = time.perf_counter(), 0.0
        if step % trainer.ckpt_every == 0 or step == end:
            checkpoint()
    progress.close()

    summary = {
        "steps": step, "finished": step >= trainer.max_steps, "tokens": int(totals["tokens"]),
        "flops": totals["flops"], "device_hours": totals["train_time_s"] * info.world_size / 3600,
        "device": device_name(info.device), "world_size": info.world_size, "data_dir": str(data_path),
        "model": {"name": cfg["model"].get("name") or f"convbert-{cfg['model']['preset']}", **config.to_dict()},
        "git_revision": git_revision(),
    }
    if info.is_main:
        rows = read_metrics(run_dir)
        if rows:
            summary["final_metrics"] = {k: v for k, v in rows[-1].items() if k != "time_s"}
        _export(model, data_path, run_dir)
        write_json_atomic(run_dir / "pretrain_summary.json", summary)
        plot_curves(rows, ["rtd_loss", "mlm_loss", "mlm_accuracy", "disc_accuracy"], run_dir / "loss.png")
        tracker.summary(summary.get("final_metrics", {}))
    tracker.finish()
    barrier()
    return summary


def _export(model: ElectraPretrainer, data_path: Path, run_dir: Path) -> None:
    """The discriminator in transformers format (hf/), with the vocabulary it was trained on."""
    tmp = run_dir / ".hf.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model.discriminator.to_hf(tmp)
    for f in ("tokenizer.json", "vocab.txt"):
        shutil.copy2(data_path / f, tmp / f)
    shutil.rmtree(run_dir / "hf", ignore_errors=True)
    os.replace(tmp, run_dir / "hf")
