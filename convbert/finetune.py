"""Fine-tuning: one job engine for every task kind (no Hydra here).

- `load_init`: the starting point: one of our pretraining run dirs, a transformers-format directory (or hub
  id), or random weights -> backbone, tokenizer, provenance.
- `FinetuneConfig`: the composed conf/finetune.yaml (groups data / model / optim / task / trainer), with the
  old flat spellings mapped to the new ones (and a deprecation warning).
- `fit`: epoch loop (AdamW + layer-wise lr decay, warmup/decay, mixed precision, dev evaluation after each
  epoch) that checkpoints at every epoch end and on SIGTERM/SIGUSR1/SIGINT and resumes bit-identically.
- `run_job`: the steps every job shares (lock, record, seed, init, data, model, fit, results.json); a task
  kind (convbert/glue/run.py, convbert/squad/run.py) supplies a `TaskAdapter`: data, model, loss, evaluation
  and its own output files.
"""

from __future__ import annotations

import dataclasses
import importlib
import itertools
import logging
import math
import random
import shutil
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tokenizers import Tokenizer

from convbert.config import (
    PRESETS,
    ConfigError,
    ConvBertConfig,
    check_int,
    check_ints,
    from_mapping,
    move_renamed,
    reject_unknown,
)
from convbert.io import read_json, sha256_prefix
from convbert.model import ConvBertModel
from convbert.report.schema import ModelInfo, Pretraining, Result
from convbert.tasks import recipe_defaults, task_info
from convbert.train import Precision, Tracker, git_revision, init_distributed
from convbert.train.checkpoint import find_latest, load_checkpoint, save_checkpoint
from convbert.train.files import write_json_atomic
from convbert.train.lock import DirLock
from convbert.train.optim import OptimConfig
from convbert.train.precision import DTYPES, resolve_precision
from convbert.train.runinfo import recorded_changes
from convbert.train.signals import Preempted, StopRequest
from convbert.train.tracking import drop_metrics_after

log = logging.getLogger(__name__)

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
PRETRAIN_SUMMARY_KEYS = ("tokens", "flops", "device_hours", "device")


class InitError(ValueError):
    """The init checkpoint / tokenizer cannot be used: missing files, vocab-model mismatch, ..."""


# ---------------------------------------------------------------------------------------------- init
@dataclass
class Pretrained:
    backbone: ConvBertModel
    config: ConvBertConfig
    tokenizer: Tokenizer
    model_info: dict[str, Any]  # results.json "model": name, preset, attention, init, checkpoint_id, vocab_id
    pretraining: dict[str, Any] | None  # results.json "pretraining" (from pretrain_summary.json)


def vocab_id(tokenizer: Tokenizer) -> str:
    """Hash of the vocabulary as vocab.txt text (one token per line, in id order): the same id whether
    the vocab came from a tokenizer.json or a vocab.txt."""
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    return sha256_prefix("".join(t + "\n" for t, _ in vocab).encode("utf-8"))


def match_preset(config: ConvBertConfig) -> str:
    """Name of the size preset the config matches (architecture keys only), else 'custom'."""
    for name, keys in PRESETS.items():
        if all(getattr(config, k) == v for k, v in keys.items()):
            return name
    return "custom"


def tokenizer_file(path: str | Path) -> Path:
    """tokenizer.json or vocab.txt: the file itself, or the one in a directory (tokenizer.json first)."""
    path = Path(path).expanduser()
    if path.is_dir():
        found = [path / n for n in ("tokenizer.json", "vocab.txt") if (path / n).is_file()]
        if not found:
            raise InitError(f"{path}: no tokenizer.json or vocab.txt (the vocabulary must travel with "
                            f"the model)")
        path = found[0]
    if not path.is_file():
        raise InitError(f"vocabulary {path}: no such file")
    return path


def load_tokenizer(path: str | Path) -> Tokenizer:
    """tokenizer.json, vocab.txt (uncased BERT WordPiece), or a directory holding one of them."""
    from convbert.data.tokenizer import bert_wordpiece, read_vocab_txt

    path = tokenizer_file(path)
    try:
        if path.suffix == ".json":
            tok = Tokenizer.from_file(str(path))
        else:
            tok = bert_wordpiece(read_vocab_txt(path), lowercase=True)
    except Exception as e:
        raise InitError(f"{path}: cannot load tokenizer ({e})") from e
    for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]"):
        if tok.token_to_id(t) is None:
            raise InitError(f"{path}: vocabulary has no {t} token (a BERT WordPiece vocab is required)")
    return tok


def _check_vocab(tokenizer: Tokenizer, config: ConvBertConfig, tok_src: str, model_src: str) -> None:
    n = tokenizer.get_vocab_size()
    if n != config.vocab_size:
        raise InitError(
            f"vocabulary/model mismatch: {tok_src} has {n} tokens but {model_src} has vocab_size="
            f"{config.vocab_size}; fine-tune with the vocabulary the model was pretrained with"
        )
    pad = tokenizer.token_to_id("[PAD]")
    if pad != config.pad_token_id:  # e.g. transformers' ConvBertConfig default (1) left in a saved config
        log.warning("%s says pad_token_id=%d but [PAD] is id %d in %s: padding with %d", model_src,
                    config.pad_token_id, pad, tok_src, pad)
        config.pad_token_id = pad  # only batch padding reads it: the embeddings have no padding_idx


def _weights_file(hf_dir: Path) -> Path:
    for name in WEIGHT_FILES:
        if (hf_dir / name).is_file():
            return hf_dir / name
    raise InitError(f"{hf_dir}: no weights ({', '.join(WEIGHT_FILES)})")


def _read_pretrain_summary(run_dir: Path) -> dict[str, Any] | None:
    path = run_dir / "pretrain_summary.json"
    if not path.is_file():
        log.warning("%s: no pretrain_summary.json; results will have pretraining=null", run_dir)
        return None
    summary = read_json(path, error=InitError)
    missing = [k for k in PRETRAIN_SUMMARY_KEYS if k not in summary]
    if missing:
        raise InitError(f"{path}: missing keys {missing}")
    return {k: summary[k] for k in PRETRAIN_SUMMARY_KEYS}


def _download(repo_id: str) -> Path:
    """A transformers-format model from the HF hub (config, weights, vocab only)."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id, allow_patterns=["config.json", *WEIGHT_FILES, "vocab.txt",
                                                                "tokenizer.json", "*.safetensors"]))
    except Exception as e:
        raise InitError(f"init={repo_id!r} is not a local directory and could not be downloaded from the "
                        f"HF hub ({type(e).__name__}: {e})") from e


def load_init(
    init: str | Path | None,
    preset: str | None = None,
    tokenizer: str | Path | None = None,
    config_overrides: dict[str, Any] | None = None,
) -> Pretrained:
    """Resolve the starting point of fine-tuning.

    init = a pretraining run dir (has hf/ + tokenizer.json/vocab.txt + pretrain_summary.json), a
    transformers-format dir (config.json + weights + vocab.txt/tokenizer.json; a hub id such as
    YituTech/conv-bert-small is downloaded), or None/"random" (no pretraining: needs preset + tokenizer).
    `tokenizer` overrides the vocabulary that travelled with the model (sizes must still agree).
    """
    overrides = dict(config_overrides or {})
    if is_random_init(init):
        if not preset or not tokenizer:
            raise InitError("random init (init=null) needs both a model preset and a vocabulary "
                            "(e.g. preset=small vocab=/path/to/vocab.txt)")
        tok = load_tokenizer(tokenizer)
        config = ConvBertConfig.from_preset(preset, vocab_size=tok.get_vocab_size(), **overrides)
        _check_vocab(tok, config, str(tokenizer_file(tokenizer)), f"preset {preset}")
        info = dict(name=f"random-{preset}", preset=preset, attention=config.attention, init="random",
                    init_kind="random", checkpoint_id="random", vocab_id=vocab_id(tok))
        return Pretrained(ConvBertModel(config), config, tok, info, None)

    path, hub_id = Path(str(init)).expanduser(), None
    if not path.exists():
        if str(init).startswith((".", "/", "~")) or str(init).count("/") != 1:
            raise InitError(f"init={init}: no such directory")
        path, hub_id = _download(str(init)), str(init)
    if not path.is_dir():
        raise InitError(f"init={init}: not a directory")
    if (path / "hf" / "config.json").is_file():  # one of our pretraining run dirs
        kind, hf_dir, pretraining = "run_dir", path / "hf", _read_pretrain_summary(path)
    elif (path / "config.json").is_file():
        kind, hf_dir, pretraining = "hf", path, None
        if (path / "pretrain_summary.json").is_file():  # e.g. init=<run dir>/hf
            pretraining = _read_pretrain_summary(path)
        elif (path.parent / "pretrain_summary.json").is_file():
            pretraining = _read_pretrain_summary(path.parent)
    else:
        raise InitError(f"init={init}: neither a pretraining run dir (hf/config.json) nor a "
                        f"transformers-format model dir (config.json)")
    weights = _weights_file(hf_dir)
    if tokenizer:
        tok_src = Path(tokenizer)
    else:  # the vocabulary that travelled with the model: next to the weights, or in their run dir
        where = [path, hf_dir] + ([path.parent] if kind == "hf" and path.name == "hf" else [])
        tok_src = next((d for d in where if (d / "tokenizer.json").is_file() or (d / "vocab.txt").is_file()),
                       path)
    tok = load_tokenizer(tok_src)
    try:
        backbone = ConvBertModel.from_hf(hf_dir, **overrides)
    except (ValueError, FileNotFoundError, KeyError) as e:
        raise InitError(f"init={init}: cannot load the model ({e})") from e
    config = backbone.config
    _check_vocab(tok, config, str(tokenizer_file(tok_src)), str(hf_dir / "config.json"))
    name = path.name if kind == "run_dir" or path.name != "hf" else path.parent.name
    info = dict(name=hub_id.split("/")[-1] if hub_id else name,  # a hub snapshot dir is named by its commit
                preset=match_preset(config), attention=config.attention, init=hub_id or str(path.resolve()),
                init_kind=kind, checkpoint_id=sha256_prefix(weights), vocab_id=vocab_id(tok))
    return Pretrained(backbone, config, tok, info, pretraining)




# -------------------------------------------------------------------------------------------- config
DEFAULT_LR = {"tiny": 3e-4, "small": 3e-4, "medium-small": 3e-4, "base": 1e-4}  # optim.lr null (docs/design.md §4)


@dataclass
class DataConfig:
    """`data`: where the task's examples come from (the task's hub dataset unless `dir` is set)."""

    dir: str | None = None  # local copy: a GLUE dir in the original layout / the official SQuAD json files
    hub_path: str | None = None  # null: the task's hub dataset (nyu-mll/glue, rajpurkar/squad[_v2])
    cache_dir: str | None = None
    max_train_examples: int | None = None  # first N examples (quick runs)
    max_eval_examples: int | None = None  # first N dev examples: scores not comparable with full-dev ones
    predict_test: bool = True  # GLUE: leaderboard files for the test sets


@dataclass
class ModelConfig:
    """`model`: preset + vocab for random init; every other key is a ConvBertConfig field (null: from the
    checkpoint, or the preset for random init)."""

    preset: str | None = "small"
    vocab: str | None = None  # default: the vocabulary that travelled with the model
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ModelConfig:
        fields = {f.name for f in dataclasses.fields(ConvBertConfig)}
        reject_unknown("model", values, fields | {"preset", "vocab"})
        return cls(values.get("preset"), values.get("vocab"),
                   {k: v for k, v in values.items() if k in fields and v is not None})


@dataclass
class TrainerConfig:
    """`trainer`: how and where the job runs."""

    epochs: int | None = None  # null: the task's default (task.epochs)
    batch_size: int = 32
    eval_batch_size: int = 128
    max_steps: int | None = None  # stop early (quick runs, benchmarks)
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on a bf16-capable GPU, else fp32)
    device: str = "auto"
    threads: int | None = None  # torch CPU threads; null: torch's default (cores / n_jobs under joblib)
    bucket_pool_batches: int = 50  # length bucketing: sort within pools of this many batches
    log_every: int = 50
    keep_checkpoint: bool = False  # keep <job dir>/checkpoint/ once the job has finished

    def __post_init__(self) -> None:
        check_ints(self, "trainer", ("batch_size", "eval_batch_size", "log_every"))
        check_ints(self, "trainer", ("epochs", "max_steps", "threads"), nullable=True)
        if self.precision not in ("auto", *DTYPES):
            raise ConfigError(f"trainer.precision must be auto or one of {sorted(DTYPES)}, got {self.precision!r}")


# old flat spellings -> new keys (accepted for one release with a FutureWarning; lr_by_preset is gone)
LEGACY_KEYS = {
    "lr": "optim.lr", "adam_bias_correction": "optim.bias_correction", "adam_betas": "optim.betas",
    "adam_eps": "optim.eps", "weight_decay": "optim.weight_decay", "warmup_fraction": "optim.warmup_fraction",
    "max_grad_norm": "optim.max_grad_norm", "layer_decay": "optim.layer_decay",
    "layer_decay_variant": "optim.layer_decay_variant", "max_length": "task.max_length",
    "epochs": "trainer.epochs", "batch_size": "trainer.batch_size", "eval_batch_size": "trainer.eval_batch_size",
    "max_steps": "trainer.max_steps", "precision": "trainer.precision", "device": "trainer.device",
    "threads": "trainer.threads", "bucket_pool_batches": "trainer.bucket_pool_batches",
    "log_every": "trainer.log_every", "glue_dir": "data.dir", "hub_path": "data.hub_path",
    "cache_dir": "data.cache_dir", "max_train_examples": "data.max_train_examples",
    "max_eval_examples": "data.max_eval_examples", "predict_test": "data.predict_test",
    "preset": "model.preset", "vocab": "model.vocab", "model_overrides": "model",
    "task.data_dir": "data.dir", "task.hub_path": "data.hub_path",
}


def task_config(task: Any) -> dict[str, Any]:
    """The `task` group with the registry's recipe (convbert/tasks.py) where it is null or absent: conf/task/
    leaves epochs and pair swapping to the registry, and job.json records the values the job runs with."""
    if not isinstance(task, dict) or "kind" not in task or "name" not in task:
        raise ConfigError("task: must be a task config with kind and name (e.g. task=rte)")
    try:
        info = task_info(task["name"])
    except KeyError as e:
        raise ConfigError(f"task.name: {e.args[0]}") from None
    if task["kind"] != info.kind:
        raise ConfigError(f"task.kind={task['kind']!r}, but {info.name} is a {info.kind} task")
    task = {**task, **{k: v for k, v in recipe_defaults(info.name).items() if task.get(k) is None}}
    check_int("task.epochs", task["epochs"])
    return task


# fine-tuning's optimizer defaults where they differ from OptimConfig's (conf/optim/finetune.yaml spells them too)
FINETUNE_OPTIM: dict[str, Any] = {"lr": None, "warmup_fraction": 0.1, "layer_decay": 0.8}


@dataclass
class FinetuneConfig:
    """The composed conf/finetune.yaml. `task` stays a mapping (with the registry's recipe filled in): its task
    kind's adapter validates the rest."""

    task: dict[str, Any]
    seed: int = 1
    seeds: list[int] | None = None  # several seeds in one job (seed<s>/ subdirs): the search objective
    init: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(**FINETUNE_OPTIM))
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    tracking: dict[str, Any] = field(default_factory=lambda: {"mode": "disabled"})
    search: dict[str, Any] | None = None  # set by a hyper-parameter search: its dir, trial and objective

    def __post_init__(self) -> None:
        self.task = task_config(self.task)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """Validate every group (unknown keys fail naming the valid ones); old spellings are mapped."""
        # conf/legacy/finetune.yaml keeps a null placeholder for each old spelling: only a set one is moved
        cfg, moved = move_renamed(values, LEGACY_KEYS, skip_unset=True)
        for old, new in moved:
            use = "model.<ConvBertConfig field>" if new == "model" else new
            warnings.warn(f"'{old}' is deprecated and will be removed: use '{use}'", FutureWarning, stacklevel=2)
        cfg.pop("paths", None)  # only used by the config's interpolations
        reject_unknown("fine-tuning", cfg, [f.name for f in dataclasses.fields(cls)] + ["paths"])
        seeds = cfg.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds or
                                  not all(isinstance(x, int) and not isinstance(x, bool) for x in seeds)):
            raise ConfigError(f"seeds={seeds!r}: must be null or a non-empty list of integers, e.g. seeds=[1,2,3]")
        optim = {**FINETUNE_OPTIM, **(cfg.get("optim") or {})}
        return cls(task=cfg.get("task"), seed=int(cfg.get("seed", 1)), seeds=cfg.get("seeds"), init=cfg.get("init"),
                   data=from_mapping(DataConfig, "data", cfg.get("data")),
                   model=ModelConfig.from_dict(cfg.get("model") or {}),
                   optim=from_mapping(OptimConfig, "optim", optim),
                   trainer=from_mapping(TrainerConfig, "trainer", cfg.get("trainer")),
                   tracking=dict(cfg.get("tracking") or {"mode": "disabled"}), search=cfg.get("search"))

    def settings(self) -> dict[str, Any]:
        """What makes the job's results: a resumed job must have the same (tracking and resources may change)."""
        d = dataclasses.asdict(self)
        for k in ("tracking", "seeds", "search"):
            d.pop(k)
        for k in ("threads", "device", "log_every", "keep_checkpoint"):
            d["trainer"].pop(k)
        d["data"].pop("cache_dir")
        d["optim"]["betas"] = list(d["optim"]["betas"])
        return d


def is_random_init(init: str | None) -> bool:
    """init=null (or "random"): no pretrained weights."""
    return init is None or str(init).lower() in ("random", "none", "null", "")


def init_name(init: str | None, preset: str | None = None) -> str:
    """The name a job's dir uses for its init: the pretraining run's name, the model dir's, random-<preset>."""
    if is_random_init(init):
        return f"random-{preset}"
    path = Path(str(init).rstrip("/"))
    return path.parent.name if path.name == "hf" and path.parent.name else path.name


# ------------------------------------------------------------------------------------------ training
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def forward_flops(config: ConvBertConfig, n_params: int, batch: int, length: int) -> float:
    """Forward FLOPs of one [batch, length] pass: 2 per non-embedding parameter per token plus the
    attention products (QK^T, AV: 4·T·N·d_h per token and layer) and the lightweight conv
    (2·k·N·d_h per token and layer). Backward ~ 2x forward."""
    inner = config.num_sa_heads * config.attention_head_size
    conv = 2 * config.conv_kernel_size * inner if config.attention == "mixed" else 0
    per_layer = 4 * length * inner + conv
    return float(batch * length * (2 * n_params + config.num_hidden_layers * per_layer))


def count_flop_params(model: torch.nn.Module) -> int:
    """Parameters that cost multiply-adds per token (embedding tables are lookups)."""
    return sum(p.numel() for n, p in model.named_parameters() if ".embeddings." not in f".{n}")


def move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.no_grad()
def predict_batches(model: torch.nn.Module, lengths: np.ndarray, batch_size: int,
                    collate: Callable[[list[int]], dict[str, torch.Tensor]], device: torch.device, autocast
                    ) -> Iterator[tuple[list[int], Any, float]]:
    """Evaluation batches in length order: (indices, model outputs, forward FLOPs) per batch."""
    from convbert.glue.features import LengthBucketSampler

    model.eval()
    n_params = count_flop_params(model)
    for idx in LengthBucketSampler(lengths, batch_size, shuffle=False):
        batch = move(collate(idx), device)
        with autocast():
            out = model(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"])
        yield idx, out, forward_flops(model.config, n_params, *batch["input_ids"].shape)


@dataclass
class FitState:
    """Where training is: saved in every checkpoint, so that a resumed job continues bit-identically."""

    step: int = 0
    epoch: int = 0  # the epoch in progress (0-based)
    batch: int = 0  # batches of that epoch done
    examples: int = 0
    train_flops: float = 0.0
    eval_flops: float = 0.0
    train_time_s: float = 0.0
    loss_sum: torch.Tensor | None = None  # the epoch's summed training loss (kept on the device)
    loss_n: int = 0
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class FitResult:
    steps: int
    examples_seen: int
    train_flops: float
    eval_flops: float
    train_time_s: float
    history: list[dict[str, Any]]  # one entry per epoch: {"epoch", "train_loss", **eval metrics}
    resumed_from: int | None = None  # the checkpoint's step when the job continued one


def _resume(ckpt_dir: Path | None, parts: dict[str, Any], tracker: Tracker | None) -> FitState | None:
    latest = find_latest(ckpt_dir) if ckpt_dir is not None else None
    if latest is None:
        return None
    ck = load_checkpoint(latest)
    for name, obj in parts.items():
        obj.load_state_dict(ck[name])
    torch.set_rng_state(ck["rng"])
    state = FitState(**ck["fit"])
    if tracker is not None and tracker.enabled:  # steps logged after the checkpoint are logged again
        drop_metrics_after(tracker.run_dir, state.step)
    log.info("resuming from %s (step %d, epoch %d, batch %d)", latest, state.step, state.epoch + 1, state.batch)
    return state


def fit(
    model: torch.nn.Module,
    batches: Callable[[int], Iterable[dict[str, torch.Tensor]]],
    steps_per_epoch: int,
    loss_fn: Callable[[torch.nn.Module, dict[str, torch.Tensor]], torch.Tensor],
    optim: OptimConfig,
    trainer: TrainerConfig,
    device: torch.device,
    lr: float | None = None,
    evaluate: Callable[[int], dict[str, float]] | None = None,
    tracker: Tracker | None = None,
    ckpt_dir: Path | None = None,
    stop: StopRequest | None = None,
    precision: Precision | None = None,
) -> FitResult:
    """Train `model` for trainer.epochs epochs. batches(epoch) yields dicts of tensors (on CPU; moved here)
    with "input_ids" [B, T], the same ones for the same epoch; loss_fn(model, batch) -> scalar loss.
    evaluate(epoch) runs after every epoch and returns metrics (logged as eval/<name>; "_flops" counted).
    With ckpt_dir: continues from its latest checkpoint, checkpoints after every epoch and, when `stop` was
    requested, after the current step, then raises Preempted. `precision`: the caller's (its fp16 scaler is
    checkpointed here), else trainer.precision's. The model ends in eval mode."""
    if not trainer.epochs:
        raise ValueError("fit needs trainer.epochs")
    total = trainer.epochs * steps_per_epoch
    if trainer.max_steps is not None:
        total = min(total, trainer.max_steps)
    if total < 1:
        raise ValueError("no training steps: the training set is empty")
    model.to(device)
    optimizer = optim.build(model, lr)
    scheduler = optim.schedule(optimizer, total)
    precision = precision or Precision(resolve_precision(trainer.precision, device), device)
    parts = {"model": model, "optimizer": optimizer, "scheduler": scheduler, "precision": precision}
    s = _resume(ckpt_dir, parts, tracker)
    resumed_from = None if s is None else s.step
    s = s or FitState()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    n_flop_params, config = count_flop_params(model), getattr(model, "config", None)
    zero = torch.zeros((), device=device)

    def save() -> None:
        if ckpt_dir is not None:
            state = {name: obj.state_dict() for name, obj in parts.items()}
            save_checkpoint(ckpt_dir, s.step, {**state, "rng": torch.get_rng_state(),
                                               "fit": dataclasses.asdict(s)}, keep_last=1)

    for epoch in range(s.epoch, trainer.epochs):
        if s.step >= total:
            break
        model.train()
        t0 = time.perf_counter()
        s.loss_sum = zero.clone() if s.loss_sum is None else s.loss_sum.to(device)
        for batch in itertools.islice(batches(epoch), s.batch, None):
            if s.step >= total:
                break
            batch = move(batch, device)
            with precision.autocast():
                loss = loss_fn(model, batch)
            precision.backward(loss)
            precision.step(optimizer, params, optim.max_grad_norm or 0.0)
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            s.step, s.batch = s.step + 1, s.batch + 1
            b, t = batch["input_ids"].shape
            s.examples += b
            if config is not None:
                s.train_flops += 3 * forward_flops(config, n_flop_params, b, t)
            s.loss_sum += loss.detach().float()
            s.loss_n += 1
            if tracker is not None and s.step % trainer.log_every == 0:
                tracker.log({"train/loss": loss.item(), "train/lr": scheduler.get_last_lr()[0],
                             "train/examples": s.examples}, s.step)
            if stop is not None and stop.requested:
                s.train_time_s += time.perf_counter() - t0
                save()
                raise Preempted(f"stopped by {stop.signal_name} at step {s.step} (checkpointed); rerun the same "
                                f"command to continue")
        s.train_time_s += time.perf_counter() - t0
        row: dict[str, Any] = {"epoch": epoch + 1, "train_loss": (s.loss_sum / max(s.loss_n, 1)).item()}
        if evaluate is not None:
            model.eval()
            with torch.no_grad(), precision.autocast():
                metrics = evaluate(epoch)
            s.eval_flops += float(metrics.pop("_flops", 0.0))
            row.update(metrics)
        s.history.append(row)
        log.info("epoch %d: %s", epoch + 1, row)
        if tracker is not None:
            tracker.log({k if k in ("epoch", "train_loss") else f"eval/{k}": v for k, v in row.items()}, s.step)
        s.epoch, s.batch, s.loss_sum, s.loss_n = epoch + 1, 0, None, 0
        save()
        if stop is not None and stop.requested:
            raise Preempted(f"stopped by {stop.signal_name} after epoch {epoch + 1} (checkpointed); rerun the same "
                            f"command to continue")
    model.eval()
    return FitResult(s.step, s.examples, s.train_flops, s.eval_flops, s.train_time_s, s.history, resumed_from)


# -------------------------------------------------------------------------------------------- engine
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
    epochs: int  # the task's default
    max_length: int
    train_lengths: np.ndarray  # after load()

    def load(self, pre: Pretrained, device: torch.device) -> None: ...  # data + features, before training
    def build_model(self, config: ConvBertConfig) -> torch.nn.Module: ...
    def collate_train(self, indices: list[int]) -> dict[str, torch.Tensor]: ...
    def loss(self, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor: ...
    def evaluate(self, model: torch.nn.Module, epoch: int, last: bool, autocast) -> dict[str, float]: ...
    def finish(self, model: torch.nn.Module, run_dir: Path, autocast) -> TaskOutput: ...
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


def record_job(run_dir: Path, cfg: FinetuneConfig) -> None:
    """job.json: init, task, seed and settings; a rerun in the same dir must have the same settings."""
    path = run_dir / "job.json"
    record = {"init": cfg.init, "init_name": init_name(cfg.init, cfg.model.preset), "task": cfg.task["name"],
              "seed": cfg.seed, "settings": cfg.settings()}
    diff = recorded_changes(path, record)
    if diff:
        raise ConfigError(f"{run_dir} holds a job with other settings ({diff}); use another run dir, or delete "
                          f"it to start over")


def run_job(cfg: FinetuneConfig, run_dir: str | Path) -> Result:
    """One fine-tuning job in run_dir: resumes what a killed/stopped job left there; refuses a finished dir
    and a dir another live job holds."""
    run_dir = Path(run_dir).resolve()
    with DirLock(run_dir, "fine-tuning job"):
        if (run_dir / "results.json").exists():  # e.g. two runs started in the same second, or a reused dir
            raise JobDone(f"{run_dir} already holds the results.json of a finished job; choose another run dir "
                          f"(nothing was changed)")
        with StopRequest() as stop:
            return _run(cfg, run_dir, stop)


def _run(cfg: FinetuneConfig, run_dir: Path, stop: StopRequest) -> Result:
    t_start = time.time()
    adapter = task_adapter(cfg)
    record_job(run_dir, cfg)
    tr = cfg.trainer
    trainer = dataclasses.replace(tr, epochs=tr.epochs or adapter.epochs)
    if tr.threads:
        torch.set_num_threads(tr.threads)
    dist = init_distributed(tr.device)
    if dist.distributed:
        raise NotImplementedError("fine-tuning runs one process per job; launch many jobs (multirun), not "
                                  "torchrun/srun with several tasks")
    device = dist.device
    seed_everything(cfg.seed)

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
    model.to(device)

    t = cfg.tracking
    tracker = Tracker(run_dir, dataclasses.asdict(cfg), mode=t.get("mode", "disabled"),
                      project=t.get("project", "convbert"), group=t.get("group"),
                      name=t.get("name") or f"{adapter.name}-seed{cfg.seed}", job_type="finetune",
                      tags=[adapter.name, pre.model_info["name"]])
    from convbert.glue.features import LengthBucketSampler

    sampler = LengthBucketSampler(adapter.train_lengths, tr.batch_size, shuffle=True, seed=cfg.seed,
                                  pool_batches=tr.bucket_pool_batches)

    def batches(epoch: int) -> Iterator[dict[str, torch.Tensor]]:
        sampler.set_epoch(epoch)
        for idx in sampler:
            yield adapter.collate_train(idx)

    precision = Precision(resolve_precision(tr.precision, device), device)  # one object: one warning, one scaler
    autocast = precision.autocast
    total = trainer.epochs * len(sampler) if tr.max_steps is None else min(trainer.epochs * len(sampler), tr.max_steps)
    last_epoch = math.ceil(total / len(sampler)) - 1
    evaluated: list[int] = []

    def evaluate(epoch: int) -> dict[str, float]:
        metrics = adapter.evaluate(model, epoch, epoch == last_epoch, autocast)
        evaluated.append(epoch)
        return metrics

    fitted = fit(model, batches, len(sampler), adapter.loss, cfg.optim, trainer, device, lr, evaluate, tracker,
                 run_dir / "checkpoint", stop, precision)
    if last_epoch not in evaluated:  # resumed after training had ended: predict again (same weights)
        with torch.no_grad(), autocast():
            adapter.evaluate(model, last_epoch, True, autocast)
    out = adapter.finish(model, run_dir, autocast)
    o = cfg.optim
    hparams = {"lr": lr, "batch_size": tr.batch_size, "epochs": trainer.epochs, "max_length": adapter.max_length,
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
    if not tr.keep_checkpoint:
        shutil.rmtree(run_dir / "checkpoint", ignore_errors=True)
    return result
