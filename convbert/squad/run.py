"""One SQuAD 1.1 / 2.0 fine-tuning job: load data and init, train span heads (+ the 2.0 answerable
classifier), predict the dev set, score it with the official rules, write predictions.json
(qid -> text), null_odds.json (2.0) and results.json into the run dir.

`run(cfg, run_dir)` takes the plain-dict config that conf/finetune.yaml composes with conf/task/squad*.yaml.
SQuAD settings live under `task` (max_length 512, doc_stride 128, ...): the top-level `max_length` is
GLUE's. Shared with GLUE: init (`load_init_from_cfg`), recipe (`FinetuneHParams`), loop (`fit`), batching.
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

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
from convbert.glue.features import LengthBucketSampler
from convbert.model import ConvBertForQuestionAnswering
from convbert.squad.data import LoadReport, SquadExample, gold_answers, load_squad
from convbert.squad.features import FeatureConfig, FeatureReport, SquadFeatures, build_features
from convbert.squad.postprocess import PostprocessConfig, Predictions, postprocess
from convbert.squad.scoring import score_squad_v1, score_squad_v2
from convbert.train import Precision, Tracker, git_revision, init_distributed
from convbert.train.files import write_json_atomic

log = logging.getLogger(__name__)

V1_METRICS = ("exact", "f1")
V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
              "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


def collate(feats: SquadFeatures, indices: list[int], pad_id: int, pad_to: int | None = None
            ) -> dict[str, torch.Tensor]:
    """Pad windows to the batch's longest (or to pad_to). answer_mask marks where a span may point: [CLS] +
    context."""
    t = pad_to or max(len(feats.input_ids[i]) for i in indices)
    b = len(indices)
    ids = np.full((b, t), pad_id, dtype=np.int64)
    types, mask, answer_mask = (np.zeros((b, t), dtype=np.int64) for _ in range(3))
    for j, i in enumerate(indices):
        n, c = len(feats.input_ids[i]), feats.context_start[i]
        ids[j, :n] = feats.input_ids[i]
        types[j, c:n] = 1
        mask[j, :n] = 1
        answer_mask[j, 0] = 1
        answer_mask[j, c:c + feats.span_length[i]] = 1
    return {
        "input_ids": torch.from_numpy(ids),  # [B, T]
        "attention_mask": torch.from_numpy(mask),
        "token_type_ids": torch.from_numpy(types),
        "answer_mask": torch.from_numpy(answer_mask).bool(),
        "start_positions": torch.tensor([feats.start_positions[i] for i in indices]),  # [B]
        "end_positions": torch.tensor([feats.end_positions[i] for i in indices]),
        "answerable": torch.tensor([feats.answerable[i] for i in indices], dtype=torch.float32),
    }


def qa_loss(model: torch.nn.Module, batch: dict[str, torch.Tensor], answerable_weight: float) -> torch.Tensor:
    """(CE(start) + CE(end)) / 2 over [CLS] + context positions, + weight * BCE(answerable) (SPEC §4)."""
    start, end, answerable = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    allowed = batch["answer_mask"]
    start = start.float().masked_fill(~allowed, -1e4)  # [B, T]
    end = end.float().masked_fill(~allowed, -1e4)
    loss = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
    if answerable is not None:
        loss = loss + answerable_weight * F.binary_cross_entropy_with_logits(answerable.float(),
                                                                             batch["answerable"])
    return loss


@torch.no_grad()
def predict_logits(model: ConvBertForQuestionAnswering, feats: SquadFeatures, batch_size: int,
                   device: torch.device, pad_id: int, autocast, pad_to: int | None = None
                   ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None, float]:
    """Per-window start/end logits (unpadded, feature order), answerable logits [N] or None, FLOPs."""
    model.eval()
    n = len(feats)
    starts: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    ends: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    answerable = np.zeros(n, dtype=np.float32) if model.answerable is not None else None
    flops, n_params = 0.0, count_flop_params(model)
    lengths = np.fromiter((len(x) for x in feats.input_ids), dtype=np.int64, count=n)
    for idx in LengthBucketSampler(lengths, batch_size, shuffle=False):
        batch = move(collate(feats, idx, pad_id, pad_to), device)
        with autocast():
            s, e, a = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
        for j, i in enumerate(idx):
            starts[i], ends[i] = s[j, :lengths[i]], e[j, :lengths[i]]
        if answerable is not None:
            answerable[idx] = a.float().cpu().numpy()
        flops += forward_flops(model.config, n_params, *batch["input_ids"].shape)
    return starts, ends, answerable, flops


def score(examples: list[SquadExample], preds: Predictions, v2: bool, null_threshold: float) -> dict:
    gold = gold_answers(examples)
    if not v2:
        return score_squad_v1(gold, preds.answers)
    # the sweep answers with the best non-null span; exact/f1 apply the configured threshold to it,
    # which equals scoring predictions.json (where those questions are already "")
    return score_squad_v2(gold, preds.best_spans, preds.null_odds, null_threshold)


def _load(version: str, split: str, cfg: dict, limit: int | None) -> tuple[list[SquadExample], LoadReport]:
    t = cfg["task"]
    source = t.get("data_dir") or t.get("hub_path")
    kwargs = {"cache_dir": cfg["cache_dir"]} if cfg.get("cache_dir") else {}
    examples, report = load_squad(version, split, source, **kwargs)
    if limit is not None:
        examples = examples[:limit]
    return examples, report


def _report_dict(r: LoadReport | FeatureReport) -> dict[str, Any]:
    return {k: v for k, v in vars(r).items()}


def run(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    t_start = time.time()
    run_dir = Path(run_dir).resolve()
    run_dir.mkdir(parents=True, exist_ok=True)
    task = cfg["task"]
    name, version = task["name"], str(task.get("version", "1.1"))
    if version not in ("1.1", "2.0"):
        raise ValueError(f"task.version must be '1.1' or '2.0', got {version!r}")
    v2 = version == "2.0"
    epochs = int(cfg.get("epochs") or task.get("epochs", 2))
    seed = int(cfg.get("seed", 1))
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    dist = init_distributed(cfg.get("device", "auto"))
    if dist.distributed:
        raise NotImplementedError("SQuAD fine-tuning runs one process per job; launch many jobs (multirun)")
    device = dist.device
    seed_everything(seed)

    pre = load_init_from_cfg(cfg)
    hp = FinetuneHParams.from_cfg({**cfg, "epochs": epochs, "lr": resolve_lr(cfg, pre)})
    tok, pad_id = pre.tokenizer, pre.config.pad_token_id
    fcfg = FeatureConfig(int(task.get("max_length", 512)), int(task.get("max_query_length", 64)),
                         int(task.get("doc_stride", 128)))
    if fcfg.max_seq_length > pre.config.max_position_embeddings:
        raise ValueError(f"task.max_length={fcfg.max_seq_length} exceeds the model's "
                         f"max_position_embeddings={pre.config.max_position_embeddings}")
    # released checkpoints: the conv branch reads padding; pad to max_length as their official code did
    pad_to = None if pre.config.mask_conv_padding else fcfg.max_seq_length
    use_classifier = v2 and bool(task.get("answerable_classifier", True))
    null_score = task.get("null_score") or "auto"
    if null_score == "auto":
        null_score = "classifier" if use_classifier else "span"
    pcfg = PostprocessConfig(int(task.get("n_best", 20)), int(task.get("max_answer_length", 30)),
                             null_score, float(task.get("null_threshold", 0.0)))

    # ---- data
    train, train_rep = _load(version, "train", cfg, cfg.get("max_train_examples"))
    dev, dev_rep = _load(version, "validation", cfg, cfg.get("max_eval_examples"))
    train_feats, train_frep = build_features(train, tok, fcfg, training=True)
    dev_feats, dev_frep = build_features(dev, tok, fcfg, training=False)
    for what, rep in (("train", train_frep), ("dev", dev_frep)):
        log.info("%s %s: %s", name, what, rep.summary())
    if len(train_feats) == 0:
        raise ValueError(f"{train_rep.source}: no usable training questions ({train_frep.summary()})")

    # ---- model
    model = ConvBertForQuestionAnswering(pre.config, answerable=use_classifier)
    model.convbert.load_state_dict(pre.backbone.state_dict())
    pre.backbone = None
    model.to(device)

    tr = cfg.get("tracking") or {}
    tracker = Tracker(run_dir, cfg, mode=tr.get("mode", "disabled"), project=tr.get("project", "convbert"),
                      group=tr.get("group"), name=tr.get("name") or f"{name}-seed{seed}",
                      job_type="finetune", tags=[name, pre.model_info["name"]])

    batch_size, eval_bs = int(cfg.get("batch_size", 32)), int(cfg.get("eval_batch_size", 128))
    lengths = np.fromiter((len(x) for x in train_feats.input_ids), dtype=np.int64, count=len(train_feats))
    sampler = LengthBucketSampler(lengths, batch_size, shuffle=True, seed=seed,
                                  pool_batches=int(cfg.get("bucket_pool_batches", 50)))
    total_steps = epochs * len(sampler) if hp.max_steps is None else min(epochs * len(sampler), hp.max_steps)
    last_epoch = math.ceil(total_steps / len(sampler)) - 1
    eval_every = bool(task.get("eval_every_epoch", False))
    answerable_weight = float(task.get("answerable_weight", 0.5))

    def batches(epoch: int):
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield collate(train_feats, idx, pad_id, pad_to)

    autocast = Precision(resolve_precision(hp.precision, device), device).autocast
    final: dict[str, Any] = {}

    def evaluate(epoch: int) -> dict[str, float]:
        if epoch != last_epoch and not eval_every:
            return {}
        s, e, a, flops = predict_logits(model, dev_feats, eval_bs, device, pad_id, autocast, pad_to)
        final["preds"] = preds = postprocess(dev, dev_feats, s, e, a, pcfg, v2)
        final["scores"] = scores = score(dev, preds, v2, pcfg.null_threshold)
        return {**{k: v for k, v in scores.items() if k in V2_METRICS}, "_flops": flops}

    result = fit(model, batches, len(sampler), lambda m, b: qa_loss(m, b, answerable_weight), hp, device,
                 evaluate, tracker, log_every=int(cfg.get("log_every", 50)))
    preds, scores = final["preds"], final["scores"]
    metrics = {k: scores.get(k) for k in (V2_METRICS if v2 else V1_METRICS)}

    # ---- prediction files (official formats: qid -> text; qid -> no-answer odds)
    pred_file = write_json_atomic(run_dir / "predictions.json", preds.answers)
    files = {"predictions": str(pred_file)}
    if v2:
        files["null_odds"] = str(write_json_atomic(run_dir / "null_odds.json", preds.null_odds))
        files["best_spans"] = str(write_json_atomic(run_dir / "best_spans.json", preds.best_spans))

    results = {
        "task": name,
        "metrics": metrics,
        "seed": seed,
        "model": pre.model_info,
        "pretraining": pre.pretraining,
        "steps": result.steps,
        "examples_seen": result.examples_seen,  # training windows
        "wall_time_s": round(time.time() - t_start, 3),
        "flops": result.train_flops + result.eval_flops,
        "git_revision": git_revision(),
        "run_dir": str(run_dir),
        "predictions_file": str(pred_file),
        "dev_examples": {"used": len(dev), "total": dev_rep.examples},  # used < total: part of the dev set
        # extras (not read by the table stage)
        "files": files,
        "history": result.history,
        "counts": {k: scores[k] for k in ("total", "missing", "HasAns_total", "NoAns_total") if k in scores},
        "hparams": {"lr": hp.lr, "batch_size": batch_size, "epochs": epochs,
                    "max_length": fcfg.max_seq_length, "max_query_length": fcfg.max_query_length,
                    "doc_stride": fcfg.doc_stride, "doc_stride_convention": "distance between window starts",
                    "n_best": pcfg.n_best, "max_answer_length": pcfg.max_answer_length,
                    "null_score": pcfg.null_score if v2 else None,
                    "null_threshold": pcfg.null_threshold if v2 else None,
                    "answerable_weight": answerable_weight if use_classifier else None,
                    "layer_decay": hp.layer_decay, "layer_decay_variant": hp.layer_decay_variant,
                    "weight_decay": hp.weight_decay, "warmup_fraction": hp.warmup_fraction,
                    "adam_bias_correction": hp.adam_bias_correction,
                    "precision": resolve_precision(hp.precision, device)},
        "data": {"train": _report_dict(train_rep), "dev": _report_dict(dev_rep),
                 "train_features": _report_dict(train_frep), "dev_features": _report_dict(dev_frep),
                 "train_examples_used": len(train), "dev_examples_used": len(dev)},
        "device": str(device),
    }
    write_json_atomic(run_dir / "results.json", results)
    tracker.summary({f"final/{k}": v for k, v in metrics.items() if v is not None and math.isfinite(v)})
    tracker.finish()
    return results
