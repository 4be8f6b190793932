"""SQuAD 1.1 / 2.0 as a fine-tuning task (convbert.finetune.run_job does the job): train span heads (+ the
2.0 answerable classifier), predict the dev set, score it with the official rules, write predictions.json
(qid -> text), null_odds.json and best_spans.json (2.0) into the run dir. Settings: conf/task/squad*.yaml."""

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
from convbert.finetune import FinetuneConfig, Pretrained, TaskOutput, predict_batches
from convbert.io import write_json_atomic
from convbert.model import ConvBertForQuestionAnswering
from convbert.settings import ConfigError, check_bools, check_ints, from_mapping
from convbert.squad.data import OFFICIAL_FILES, LoadReport, SquadExample, gold_answers, load_squad
from convbert.squad.features import FeatureConfig, SquadFeatures, build_features
from convbert.squad.postprocess import PostprocessConfig, Predictions, postprocess
from convbert.squad.scoring import score_squad_v1, score_squad_v2

log = logging.getLogger(__name__)

V1_METRICS = ("exact", "f1")
V2_METRICS = ("exact", "f1", "HasAns_exact", "HasAns_f1", "NoAns_exact", "NoAns_f1",
              "best_exact", "best_exact_thresh", "best_f1", "best_f1_thresh")


@dataclass
class SquadTaskConfig:
    """conf/task/squad1.yaml, squad2.yaml (docs/design.md §4 recipe); FinetuneConfig has filled a null epochs
    with the task registry's (convbert/tasks.py)."""

    kind: str
    name: str
    version: str = "1.1"
    epochs: int | None = None
    max_length: int = 512  # window: [CLS] question [SEP] context-window [SEP]
    max_query_length: int = 64
    doc_stride: int = 128  # distance between window starts (BERT/ELECTRA convention)
    n_best: int = 20
    max_answer_length: int = 30  # tokens
    eval_every_epoch: bool = False  # score the dev set after the last epoch only
    answerable_classifier: bool = True  # 2.0
    answerable_weight: float = 0.5
    null_score: str = "auto"  # auto: classifier when answerable_classifier, else span
    null_threshold: float = 0.0

    def __post_init__(self) -> None:
        self.version = str(self.version)
        if self.version not in ("1.1", "2.0"):
            raise ConfigError(f"task.version must be '1.1' or '2.0', got {self.version!r}")
        check_ints(self, "task", ("n_best", "max_answer_length"))
        check_bools(self, "task", ("eval_every_epoch", "answerable_classifier"))


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
    """(CE(start) + CE(end)) / 2 over [CLS] + context positions, + weight * BCE(answerable) (docs/design.md §4)."""
    start, end, answerable = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
    allowed = batch["answer_mask"]
    start = start.float().masked_fill(~allowed, -1e4)  # [B, T]
    end = end.float().masked_fill(~allowed, -1e4)
    loss = (F.cross_entropy(start, batch["start_positions"]) + F.cross_entropy(end, batch["end_positions"])) / 2
    if answerable is not None:
        loss = loss + answerable_weight * F.binary_cross_entropy_with_logits(answerable.float(),
                                                                             batch["answerable"])
    return loss


def predict_logits(model: ConvBertForQuestionAnswering, feats: SquadFeatures, batch_size: int,
                   device: torch.device, pad_id: int, autocast, pad_to: int | None = None
                   ) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray | None, float]:
    """Per-window start/end logits (unpadded, feature order), answerable logits [N] or None, FLOPs."""
    n = len(feats)
    starts: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    ends: list[np.ndarray] = [np.zeros(0, np.float32)] * n
    answerable = np.zeros(n, dtype=np.float32) if model.answerable is not None else None
    flops = 0.0
    lengths = np.fromiter((len(x) for x in feats.input_ids), dtype=np.int64, count=n)
    for idx, (s, e, a), f in predict_batches(model, lengths, batch_size, lambda i: collate(feats, i, pad_id, pad_to),
                                             device, autocast):
        s, e = s.float().cpu().numpy(), e.float().cpu().numpy()
        for j, i in enumerate(idx):
            starts[i], ends[i] = s[j, :lengths[i]], e[j, :lengths[i]]
        if answerable is not None:
            answerable[idx] = a.float().cpu().numpy()
        flops += f
    return starts, ends, answerable, flops


def score(examples: list[SquadExample], preds: Predictions, v2: bool, null_threshold: float) -> dict:
    gold = gold_answers(examples)
    if not v2:
        return score_squad_v1(gold, preds.answers)
    # the sweep answers with the best non-null span; exact/f1 apply the configured threshold to it,
    # which equals scoring predictions.json (where those questions are already "")
    return score_squad_v2(gold, preds.best_spans, preds.null_odds, null_threshold)


def check_official_dir(path: Path, version: str) -> None:
    """data.dir for SQuAD: the official json files (or one of them), checked before any work; a GLUE dir or a
    datasets copy given there would otherwise fail inside `datasets` with an unrelated complaint."""
    if path.suffix == ".json" and path.is_file():
        return
    if not path.exists():
        raise ConfigError(f"data.dir={path} does not exist")
    wanted = [OFFICIAL_FILES[version, split] for split in ("train", "validation")]
    missing = [name for name in wanted if not (path / name).is_file()]
    if missing:
        raise ConfigError(f"data.dir={path} lacks {', '.join(missing)}: for SQuAD {version} it takes the directory "
                          f"of the official files ({', '.join(wanted)}); a copy of a hub dataset goes in "
                          "data.hub_path")


class Adapter:
    """SQuAD for convbert.finetune.run_job."""

    def __init__(self, cfg: FinetuneConfig) -> None:
        t = from_mapping(SquadTaskConfig, "task", cfg.task, ConfigError)
        self.cfg, self.t, self.name, self.epochs, self.max_length = cfg, t, t.name, int(t.epochs), t.max_length
        self.v2 = t.version == "2.0"
        self.fcfg = FeatureConfig(t.max_length, t.max_query_length, t.doc_stride)
        self.use_classifier = self.v2 and t.answerable_classifier
        null_score = t.null_score
        if null_score == "auto":
            null_score = "classifier" if self.use_classifier else "span"
        self.pcfg = PostprocessConfig(t.n_best, t.max_answer_length, null_score, float(t.null_threshold))
        if cfg.data.dir is not None:
            check_official_dir(Path(cfg.data.dir), t.version)

    def _load(self, split: str, limit: int | None) -> tuple[list[SquadExample], LoadReport]:
        d = self.cfg.data
        kwargs = {"cache_dir": d.cache_dir} if d.cache_dir else {}
        examples, report = load_squad(self.t.version, split, d.dir or d.hub_path, **kwargs)
        return (examples if limit is None else examples[:limit]), report

    def load(self, pre: Pretrained, device: torch.device) -> None:
        d, tok = self.cfg.data, pre.tokenizer
        self.pad_id = pre.config.pad_token_id
        # released checkpoints: the conv branch reads padding; pad to max_length as their official code did
        self.pad_to = None if pre.config.mask_conv_padding else self.fcfg.max_seq_length
        self.train, self.train_rep = self._load("train", d.max_train_examples)
        self.dev, self.dev_rep = self._load("validation", d.max_eval_examples)
        self.train_feats, self.train_frep = build_features(self.train, tok, self.fcfg, training=True)
        self.dev_feats, self.dev_frep = build_features(self.dev, tok, self.fcfg, training=False)
        for what, rep in (("train", self.train_frep), ("dev", self.dev_frep)):
            log.info("%s %s: %s", self.name, what, rep.summary())
        if len(self.train_feats) == 0:
            raise ValueError(f"{self.train_rep.source}: no usable training questions ({self.train_frep.summary()})")
        self.train_lengths = np.fromiter((len(x) for x in self.train_feats.input_ids), dtype=np.int64,
                                         count=len(self.train_feats))

    def build_model(self, config: ConvBertConfig) -> torch.nn.Module:
        return ConvBertForQuestionAnswering(config, answerable=self.use_classifier)

    def collate_train(self, indices: list[int]) -> dict[str, torch.Tensor]:
        return collate(self.train_feats, indices, self.pad_id, self.pad_to)

    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return qa_loss(model, batch, self.t.answerable_weight)

    def untrained_loss(self) -> tuple[float, str]:
        """Uniform start and end positions over at most task.max_length (+ the answerable classifier's ln 2)."""
        value, what = math.log(self.max_length), f"ln {self.max_length}"
        if self.use_classifier:
            value += self.t.answerable_weight * math.log(2)
            what += f" + {self.t.answerable_weight} ln 2"
        return value, what

    def evaluate(self, model: torch.nn.Module, epoch: int, last: bool, autocast) -> dict[str, float]:
        if not (last or self.t.eval_every_epoch):
            return {}
        device = next(model.parameters()).device
        s, e, a, flops = predict_logits(model, self.dev_feats, self.cfg.trainer.eval_batch_size, device,
                                        self.pad_id, autocast, self.pad_to)
        self.preds = postprocess(self.dev, self.dev_feats, s, e, a, self.pcfg, self.v2)
        self.scores = score(self.dev, self.preds, self.v2, self.pcfg.null_threshold)
        return {**{k: v for k, v in self.scores.items() if k in V2_METRICS}, "_flops": flops}

    def finish(self, model: torch.nn.Module, run_dir: Path, autocast) -> TaskOutput:
        preds, scores = self.preds, self.scores
        pred_file = write_json_atomic(run_dir / "predictions.json", preds.answers)  # official: qid -> text
        files = {"predictions": str(pred_file)}
        if self.v2:
            files["null_odds"] = str(write_json_atomic(run_dir / "null_odds.json", preds.null_odds))
            files["best_spans"] = str(write_json_atomic(run_dir / "best_spans.json", preds.best_spans))
        report = lambda r: dict(vars(r))  # noqa: E731
        extras = {
            "files": files,
            "counts": {k: scores[k] for k in ("total", "missing", "HasAns_total", "NoAns_total") if k in scores},
            "data": {"train": report(self.train_rep), "dev": report(self.dev_rep),
                     "train_features": report(self.train_frep), "dev_features": report(self.dev_frep),
                     "train_examples_used": len(self.train), "dev_examples_used": len(self.dev)},
        }
        metrics = {k: scores.get(k) for k in (V2_METRICS if self.v2 else V1_METRICS)}
        return TaskOutput(metrics, pred_file, (len(self.dev), self.dev_rep.examples), 0.0, extras)

    def hparams(self) -> dict[str, Any]:
        t, v2 = self.t, self.v2
        return {"max_query_length": t.max_query_length, "doc_stride": t.doc_stride,
                "doc_stride_convention": "distance between window starts", "n_best": t.n_best,
                "max_answer_length": t.max_answer_length, "null_score": self.pcfg.null_score if v2 else None,
                "null_threshold": t.null_threshold if v2 else None,
                "answerable_weight": t.answerable_weight if self.use_classifier else None}
