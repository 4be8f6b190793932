"""One GLUE fine-tuning job: load data and init, train with dev evaluation after every epoch, write
results.json, dev predictions and leaderboard submission files into the run dir.

`run(cfg, run_dir)` takes the plain-dict config that conf/finetune.yaml composes (keys documented
there) and returns the results dict."""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convbert.config import ConvBertConfig
from convbert.finetune import (
    FinetuneHParams,
    count_flop_params,
    fit,
    forward_flops,
    load_init_from_cfg,
    move,
    resolve_lr,
    resolve_precision,
    seed_everything,
)
from convbert.glue.data import GlueDataError, GlueSplit, load_split
from convbert.glue.features import Features, LengthBucketSampler, collate, concat_features, featurize
from convbert.glue.metrics import task_metrics
from convbert.glue.submission import write_submission
from convbert.glue.tasks import GlueTask, get_task
from convbert.model import ConvBertForSequenceClassification
from convbert.train import Precision, Tracker, git_revision, init_distributed
from convbert.train.files import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def _load(task: GlueTask, split: str, cfg: dict, limit: int | None = None) -> tuple[GlueSplit, int]:
    """The split, cut to its first `limit` examples when limit is set, and its full size."""
    hub = cfg.get("hub_path") or "nyu-mll/glue"
    data = load_split(task, split, cfg.get("glue_dir"), hub, cfg.get("cache_dir"))
    total = len(data.examples)
    if limit is not None:
        data.examples = data.examples[:limit]
    return data, total


@torch.no_grad()
def predict(model: torch.nn.Module, feats: Features, batch_size: int, device: torch.device, pad_id: int,
            autocast, pad_to_multiple: int = 1) -> tuple[np.ndarray, float]:
    """Logits [N, num_labels] in the features' order (batches are length-sorted), and forward FLOPs."""
    model.eval()
    out = np.zeros((len(feats), model.num_labels), dtype=np.float32)
    flops, n_params = 0.0, count_flop_params(model)
    for idx in LengthBucketSampler(feats.lengths, batch_size, shuffle=False):
        batch = move(collate(feats, idx, pad_id, pad_to_multiple), device)
        with autocast():
            logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        out[idx] = logits.float().cpu().numpy()
        flops += forward_flops(model.config, n_params, *batch["input_ids"].shape)
    return out, flops


def batch_multiple(config: ConvBertConfig, max_length: int, device: torch.device) -> int:
    """Batches are padded to a multiple of this: 8 on GPUs (tensor-core shapes), else 1; max_length for
    released checkpoints, whose conv branch reads padding: their official fine-tuning padded every batch to
    max_length, and so outputs do not depend on how examples are batched."""
    if not config.mask_conv_padding:
        return max_length
    return 8 if device.type == "cuda" else 1


def to_predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def run(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    t_start = time.time()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    task = get_task(cfg["task"]["name"])
    epochs = int(cfg.get("epochs") or cfg["task"].get("epochs", task.epochs))
    double = bool(cfg["task"].get("double_unordered", task.double_unordered))
    seed, max_length = int(cfg.get("seed", 1)), int(cfg.get("max_length", 128))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    dist = init_distributed(cfg.get("device", "auto"))
    if dist.distributed:
        raise NotImplementedError("GLUE fine-tuning runs one process per job; launch many jobs (multirun), "
                                  "not torchrun/srun with several tasks")
    device = dist.device
    seed_everything(seed)

    pre = load_init_from_cfg(cfg)
    hp = FinetuneHParams.from_cfg({**cfg, "epochs": epochs, "lr": resolve_lr(cfg, pre)})
    tok, pad_id = pre.tokenizer, pre.config.pad_token_id

    # ---- data
    train, _ = _load(task, "train", cfg, cfg.get("max_train_examples"))
    dev_loaded = {s: _load(task, s, cfg, cfg.get("max_eval_examples")) for s in task.dev_splits}
    dev = {s: d for s, (d, _) in dev_loaded.items()}
    dev_examples = {"used": sum(len(d) for d in dev.values()), "total": sum(n for _, n in dev_loaded.values())}
    if dev_examples["used"] < dev_examples["total"]:
        log.warning("%s: scoring %d of %d dev examples (max_eval_examples): not comparable with full-dev scores",
                    task.name, dev_examples["used"], dev_examples["total"])
    regression = task.is_regression
    train_feats = featurize(train.examples, tok, max_length, regression)
    if double:  # MRPC / STS-B: also train on the swapped pair
        swapped = featurize(train.examples, tok, max_length, regression, swap=True)
        train_feats = concat_features([train_feats, swapped])
    dev_feats = {s: featurize(d.examples, tok, max_length, regression) for s, d in dev.items()}
    test_feats: dict[str, Features] = {}  # loaded before training so a missing file fails fast
    if cfg.get("predict_test", True):
        for s in task.test_splits:
            try:
                data, total = _load(task, s, cfg, cfg.get("max_eval_examples"))
            except GlueDataError as e:
                if task.source(s).optional:
                    log.warning("skipping optional test split %s/%s: %s", task.name, s, e)
                    continue
                raise
            if len(data) < total:  # a leaderboard file must cover the whole test set
                log.warning("%s/%s: no leaderboard file, max_eval_examples keeps %d of %d test examples",
                            task.name, s, len(data), total)
                continue
            test_feats[s] = featurize(data.examples, tok, max_length, regression)
    log.info("%s: %d training features (%s), dev %s", task.name, len(train_feats), train.source,
             {s: len(f) for s, f in dev_feats.items()})

    # ---- model
    model = ConvBertForSequenceClassification(pre.config, task.num_labels)
    model.convbert.load_state_dict(pre.backbone.state_dict())
    pre.backbone = None  # free the second copy
    model.to(device)

    tr = cfg.get("tracking") or {}
    tracker = Tracker(run_dir, cfg, mode=tr.get("mode", "disabled"), project=tr.get("project", "convbert"),
                      group=tr.get("group"), name=tr.get("name") or f"{task.name}-seed{seed}",
                      job_type="finetune", tags=[task.name, pre.model_info["name"]])

    batch_size, eval_bs = int(cfg.get("batch_size", 32)), int(cfg.get("eval_batch_size", 128))
    sampler = LengthBucketSampler(train_feats.lengths, batch_size, shuffle=True, seed=seed,
                                  pool_batches=int(cfg.get("bucket_pool_batches", 50)))

    multiple = batch_multiple(pre.config, max_length, device)

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield collate(train_feats, idx, pad_id, multiple)

    def loss_fn(m: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = m(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # [B, C]
        if regression:
            return F.mse_loss(logits[:, 0].float(), batch["labels"].float())
        return F.cross_entropy(logits.float(), batch["labels"])

    autocast = Precision(resolve_precision(hp.precision, device), device).autocast
    dev_out: dict[str, np.ndarray] = {}

    def evaluate(epoch: int) -> dict[str, float]:
        metrics: dict[str, float] = {"_flops": 0.0}
        for s, feats in dev_feats.items():
            logits, flops = predict(model, feats, eval_bs, device, pad_id, autocast, multiple)
            dev_out[s] = to_predictions(task, logits)
            metrics.update(task_metrics(task, s, dev_out[s], feats.labels))
            metrics["_flops"] += flops
        return metrics

    result = fit(model, batches, len(sampler), loss_fn, hp, device, evaluate, tracker,
                 log_every=int(cfg.get("log_every", 50)))
    final = result.history[-1]
    metrics = {k: final[k] for k in task.metrics}

    # ---- dev predictions (gold + predicted, for re-scoring and bootstrap)
    rows = ["split\tidx\tlabel\tprediction"]
    for s, feats in dev_feats.items():
        fmt = (lambda v: f"{v:.6g}") if regression else (lambda v: str(int(v)))
        pairs = zip(feats.idx, feats.labels, dev_out[s], strict=True)
        rows += [f"{s}\t{i}\t{fmt(y)}\t{fmt(p)}" for i, y, p in pairs]
    pred_file = run_dir / "dev_predictions.tsv"
    write_text_atomic(pred_file, "\n".join(rows) + "\n")

    # ---- test sets -> leaderboard files
    test_flops, submissions = 0.0, {}
    for s, feats in test_feats.items():
        logits, flops = predict(model, feats, eval_bs, device, pad_id, autocast, multiple)
        test_flops += flops
        path = write_submission(task, s, feats.idx, to_predictions(task, logits), run_dir / "submission")
        submissions[s] = str(path)

    results = {
        "task": task.name,
        "metrics": metrics,
        "seed": seed,
        "model": pre.model_info,
        "pretraining": pre.pretraining,
        "steps": result.steps,
        "examples_seen": result.examples_seen,
        "wall_time_s": round(time.time() - t_start, 3),
        "flops": result.train_flops + result.eval_flops + test_flops,
        "git_revision": git_revision(),
        "run_dir": str(run_dir),
        "predictions_file": str(pred_file),
        "dev_examples": dev_examples,  # used < total: scored on part of the dev set
        # extras (not read by the table stage)
        "submission_files": submissions,
        "history": result.history,
        "hparams": {"lr": hp.lr, "batch_size": batch_size, "epochs": epochs, "max_length": max_length,
                    "layer_decay": hp.layer_decay, "layer_decay_variant": hp.layer_decay_variant,
                    "weight_decay": hp.weight_decay, "warmup_fraction": hp.warmup_fraction,
                    "adam_bias_correction": hp.adam_bias_correction,
                    "double_unordered": double, "precision": resolve_precision(hp.precision, device)},
        "data": {"source": train.source, "train_examples": len(train), "train_features": len(train_feats),
                 "skipped_train_lines": len(train.skipped_lines)},
        "device": str(device),
        "threads": torch.get_num_threads(),
    }
    write_json_atomic(run_dir / "results.json", results)
    tracker.summary({f"final/{k}": v for k, v in metrics.items() if not math.isnan(v)})
    tracker.finish()
    return results
