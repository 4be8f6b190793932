"""GLUE as a fine-tuning task (convbert.finetune.run_job does the job): load the splits, train a classifier
or regressor on [CLS], score the dev splits after every epoch, write dev_predictions.tsv and the leaderboard
files of the test sets (submission/)."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from convbert.config import ConvBertConfig
from convbert.finetune import FinetuneConfig, Pretrained, TaskOutput, predict_batches, run_job
from convbert.glue.data import GlueDataError, GlueSplit, load_split
from convbert.glue.features import Features, collate, concat_features, featurize
from convbert.glue.metrics import COLLAPSE_ADVICE, prediction_spread, task_metrics
from convbert.glue.submission import write_submission
from convbert.glue.tasks import HUB_DATASET, GlueTask, get_task
from convbert.io import write_text_atomic
from convbert.model import ConvBertForSequenceClassification
from convbert.settings import ConfigError, check_bools, from_mapping

log = logging.getLogger(__name__)


@dataclass
class GlueTaskConfig:
    """conf/task/<glue task>.yaml; FinetuneConfig has filled a null epochs / double_unordered with the task
    registry's (convbert/tasks.py)."""

    kind: str
    name: str
    epochs: int | None = None
    max_length: int = 128  # tokens per pair, [CLS]/[SEP] included
    double_unordered: bool | None = None  # also train on (b, a) pairs (MRPC, STS-B)

    def __post_init__(self) -> None:
        check_bools(self, "task", ("double_unordered",), nullable=True)


def batch_multiple(config: ConvBertConfig, max_length: int, device: torch.device) -> int:
    """Batches are padded to a multiple of this: 8 on GPUs (tensor-core shapes), else 1; max_length for
    released checkpoints, whose conv branch reads padding: their official fine-tuning padded every batch to
    max_length, and so outputs do not depend on how examples are batched."""
    if not config.mask_conv_padding:
        return max_length
    return 8 if device.type == "cuda" else 1


def predict(model: torch.nn.Module, feats: Features, batch_size: int, device: torch.device, pad_id: int,
            autocast, pad_to_multiple: int = 1) -> tuple[np.ndarray, float]:
    """Logits [N, num_labels] in the features' order (batches are length-sorted), and forward FLOPs."""
    out = np.zeros((len(feats), model.num_labels), dtype=np.float32)
    flops = 0.0
    for idx, logits, f in predict_batches(model, feats.lengths, batch_size,
                                          lambda i: collate(feats, i, pad_id, pad_to_multiple), device, autocast):
        out[idx] = logits.float().cpu().numpy()
        flops += f
    return out, flops


def to_predictions(task: GlueTask, logits: np.ndarray) -> np.ndarray:
    return logits[:, 0] if task.is_regression else logits.argmax(-1)


def check_finite(task: GlueTask, split: str, preds: np.ndarray) -> None:
    """A leaderboard file must not carry NaN/inf scores (a diverged STS-B regressor)."""
    bad = int((~np.isfinite(preds)).sum())
    if bad:
        raise ValueError(f"{task.name}/{split}: {bad} of {len(preds)} predictions are not finite (NaN/inf; the "
                         f"model diverged?): no leaderboard file written")


class Adapter:
    """The GLUE task for convbert.finetune.run_job."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        t = from_mapping(GlueTaskConfig, "task", cfg.task, ConfigError)
        self.cfg, self.task, self.name = cfg, get_task(t.name), t.name
        self.epochs, self.max_length, self.double = int(t.epochs), int(t.max_length), bool(t.double_unordered)

    def _load(self, split: str, limit: int | None) -> tuple[GlueSplit, int]:
        """The split, cut to its first `limit` examples when limit is set, and its full size."""
        d = self.cfg.data
        data = load_split(self.task, split, d.dir, d.hub_path or HUB_DATASET, d.cache_dir)
        total = len(data.examples)
        if limit is not None:
            data.examples = data.examples[:limit]
        return data, total

    def load(self, pre: Pretrained, device: torch.device) -> None:
        task, d, tok, n = self.task, self.cfg.data, pre.tokenizer, self.max_length
        reg = task.is_regression
        self.pad_id = pre.config.pad_token_id
        self.multiple = batch_multiple(pre.config, n, device)
        self.eval_bs = self.cfg.trainer.eval_batch_size
        self.train, _ = self._load("train", d.max_train_examples)
        dev = {s: self._load(s, d.max_eval_examples) for s in task.dev_splits}
        self.dev_examples = (sum(len(x) for x, _ in dev.values()), sum(total for _, total in dev.values()))
        if self.dev_examples[0] < self.dev_examples[1]:
            log.warning("%s: scoring %d of %d dev examples (data.max_eval_examples): not comparable with full-dev "
                        "scores", task.name, *self.dev_examples)
        feats = featurize(self.train.examples, tok, n, reg)
        if self.double:  # MRPC / STS-B: also train on the swapped pair
            feats = concat_features([feats, featurize(self.train.examples, tok, n, reg, swap=True)])
        self.train_feats, self.train_lengths = feats, feats.lengths
        self.dev_feats = {s: featurize(x.examples, tok, n, reg) for s, (x, _) in dev.items()}
        self.test_feats: dict[str, Features] = {}  # loaded before training so that a missing file fails fast
        for s in task.test_splits if d.predict_test else ():
            try:
                data, total = self._load(s, d.max_eval_examples)
            except GlueDataError as e:
                if task.source(s).optional:
                    log.warning("skipping optional test split %s/%s: %s", task.name, s, e)
                    continue
                raise
            if len(data) < total:  # a leaderboard file must cover the whole test set
                log.warning("%s/%s: no leaderboard file, data.max_eval_examples keeps %d of %d test examples",
                            task.name, s, len(data), total)
                continue
            self.test_feats[s] = featurize(data.examples, tok, n, reg)
        log.info("%s: %d training features (%s), dev %s", task.name, len(feats), self.train.source,
                 {s: len(f) for s, f in self.dev_feats.items()})

    def build_model(self, config: ConvBertConfig) -> torch.nn.Module:
        return ConvBertForSequenceClassification(config, self.task.num_labels)

    def collate_train(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate(self.train_feats, indices, self.pad_id, self.multiple)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        logits = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])  # [B, C]
        if self.task.is_regression:
            return F.mse_loss(logits[:, 0].float(), batch["labels"].float())
        return F.cross_entropy(logits.float(), batch["labels"])

    def untrained_loss(self) -> tuple[float, str]:
        """Uniform class probabilities (ln C), or, for regression, predictions near 0: the mean squared label."""
        if self.task.is_regression:
            labels = np.asarray(self.train_feats.labels, dtype=np.float64)
            return max(float(np.mean(labels**2)), 1e-3), "the mean squared training label"
        return math.log(self.task.num_labels), f"ln {self.task.num_labels}"

    def _predict(self, model: torch.nn.Module, feats: Features, autocast) -> tuple[np.ndarray, float]:
        logits, flops = predict(model, feats, self.eval_bs, next(model.parameters()).device, self.pad_id, autocast,
                                self.multiple)
        return to_predictions(self.task, logits), flops

    def evaluate(self, model: torch.nn.Module, epoch: int, last: bool, autocast) -> dict[str, float]:
        metrics: dict[str, float] = {"_flops": 0.0}
        self.dev_out: dict[str, np.ndarray] = {}
        for s, feats in self.dev_feats.items():
            self.dev_out[s], flops = self._predict(model, feats, autocast)
            metrics.update(task_metrics(self.task, s, self.dev_out[s], feats.labels))
            metrics["_flops"] += flops
        self.metrics = {k: v for k, v in metrics.items() if k != "_flops"}
        return metrics

    def finish(self, model: torch.nn.Module, run_dir: Path, autocast) -> TaskOutput:
        fmt = (lambda v: f"{v:.6g}") if self.task.is_regression else (lambda v: str(int(v)))
        rows = ["split\tidx\tlabel\tprediction"]  # gold + predicted, for re-scoring and bootstrap
        for s, feats in self.dev_feats.items():
            rows += [f"{s}\t{i}\t{fmt(y)}\t{fmt(p)}" for i, y, p in zip(feats.idx, feats.labels, self.dev_out[s],
                                                                          strict=True)]
        pred_file = write_text_atomic(run_dir / "dev_predictions.tsv", "\n".join(rows) + "\n")
        flops, submissions = 0.0, {}
        for s, feats in self.test_feats.items():
            preds, f = self._predict(model, feats, autocast)
            flops += f
            check_finite(self.task, s, preds)
            submissions[s] = str(write_submission(self.task, s, feats.idx, preds, run_dir / "submission"))
        metrics = {k: self.metrics[k] for k in self.task.metrics}
        d = self.cfg.data
        data = {"source": self.train.source, "train_examples": len(self.train),
                "train_features": len(self.train_feats), "skipped_train_lines": len(self.train.skipped_lines),
                # what the score table needs to fit its reference rows on the same examples
                "dir": str(Path(d.dir).resolve()) if d.dir else None, "hub_path": d.hub_path,
                "max_train_examples": d.max_train_examples,
                "max_eval_examples": d.max_eval_examples}
        spread = {s: prediction_spread(self.task, self.dev_out[s], f.labels) for s, f in self.dev_feats.items()}
        collapsed = any(x["collapsed"] for x in spread.values())
        if collapsed:
            log.warning("%s seed %s collapsed: %s; %s", self.name, self.cfg.seed, spread, COLLAPSE_ADVICE)
        return TaskOutput(metrics, pred_file, self.dev_examples, flops,
                          {"submission_files": submissions, "data": data, "dev_predictions": spread,
                           "collapsed": collapsed})

    def hparams(self) -> dict[str, Any]:
        return {"double_unordered": self.double}


def run(cfg: dict[str, Any], run_dir: str | Path) -> dict[str, Any]:
    """One GLUE job from a conf/finetune.yaml-shaped dict; returns the results.json object."""
    return run_job(FinetuneConfig.from_dict(cfg), run_dir).to_json()
