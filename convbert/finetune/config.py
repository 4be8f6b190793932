"""The composed conf/finetune.yaml as typed configs (groups data / model / optim / task / trainer), with the
old flat spellings mapped to the new ones (and a deprecation warning).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from convbert.config import ConvBertConfig
from convbert.settings import (
    ConfigError,
    check_bools,
    check_int,
    check_ints,
    check_seed,
    from_mapping,
    move_renamed,
    reject_unknown,
    result_settings,
    runtime,
)
from convbert.tasks import recipe_defaults, task_info
from convbert.train.optim import OptimConfig
from convbert.train.precision import DTYPES
from convbert.train.tracking import default_mode

DEFAULT_LR = {"tiny": 3e-4, "small": 3e-4, "medium-small": 3e-4, "base": 1e-4}  # optim.lr null (docs/design.md §4)


@dataclass
class DataConfig:
    """`data`: where the task's examples come from (the task's hub dataset unless `dir` is set)."""

    dir: str | None = None  # local copy: a GLUE dir in the original layout / the official SQuAD json files
    hub_path: str | None = None  # null: the task's hub dataset (nyu-mll/glue, rajpurkar/squad[_v2])
    cache_dir: str | None = runtime(None)  # where the hub dataset is cached: not what it holds
    max_train_examples: int | None = None  # first N examples (quick runs)
    max_eval_examples: int | None = None  # first N dev examples: scores not comparable with full-dev ones
    predict_test: bool = True  # GLUE: leaderboard files for the test sets

    def __post_init__(self) -> None:
        check_ints(self, "data", ("max_train_examples", "max_eval_examples"), nullable=True)
        check_bools(self, "data", ("predict_test",))


@dataclass
class FinetuneModelConfig:
    """`model`: preset + vocab for random init; every other key is a ConvBertConfig field (null: from the
    checkpoint, or the preset for random init)."""

    preset: str | None = "small"
    vocab: str | None = None  # default: the vocabulary that travelled with the model
    overrides: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneModelConfig:
        fields = {f.name for f in dataclasses.fields(ConvBertConfig)}
        reject_unknown("model", values, fields | {"preset", "vocab"})
        return cls(values.get("preset"), values.get("vocab"),
                   {k: v for k, v in values.items() if k in fields and v is not None})


@dataclass
class FinetuneTrainerConfig:
    """`trainer`: how and where the job runs."""

    batch_size: int = 32
    eval_batch_size: int = 128
    max_steps: int | None = None  # stop early (quick runs, benchmarks)
    precision: str = "auto"  # fp32 | bf16 | fp16 | auto (bf16 on a bf16-capable GPU, else fp32)
    device: str = runtime("auto")
    threads: int | None = runtime(None)  # torch CPU threads; null: torch's default (cores / n_jobs under joblib)
    bucket_pool_batches: int = 50  # length bucketing: sort within pools of this many batches
    log_every: int = runtime(50)
    keep_checkpoint: bool = runtime(False)  # keep <job dir>/checkpoint/ once the job has finished

    def __post_init__(self) -> None:
        check_ints(self, "trainer", ("batch_size", "eval_batch_size", "log_every", "bucket_pool_batches"))
        check_ints(self, "trainer", ("max_steps", "threads"), nullable=True)
        check_bools(self, "trainer", ("keep_checkpoint",))
        if self.precision not in ("auto", *DTYPES):
            raise ConfigError(f"trainer.precision must be auto or one of {sorted(DTYPES)}, got {self.precision!r}")


# old flat spellings -> new keys (accepted for one release with a FutureWarning; lr_by_preset is gone)
LEGACY_KEYS = {
    "lr": "optim.lr", "adam_bias_correction": "optim.bias_correction", "adam_betas": "optim.betas",
    "adam_eps": "optim.eps", "weight_decay": "optim.weight_decay", "warmup_fraction": "optim.warmup_fraction",
    "max_grad_norm": "optim.max_grad_norm", "layer_decay": "optim.layer_decay",
    "layer_decay_variant": "optim.layer_decay_variant", "max_length": "task.max_length",
    "epochs": "task.epochs", "trainer.epochs": "task.epochs", "batch_size": "trainer.batch_size",
    "eval_batch_size": "trainer.eval_batch_size",
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


# fine-tuning's optimizer defaults where they differ from OptimConfig's: conf/optim/finetune.yaml's values, for a
# config dict from Python that lacks them (tests/test_one_home.py checks that the two agree)
FINETUNE_OPTIM: dict[str, Any] = {"lr": None, "warmup_fraction": 0.1, "layer_decay": 0.8}


@dataclass
class FinetuneConfig:
    """The composed conf/finetune.yaml. `task` stays a mapping (with the registry's recipe filled in): its task
    kind's adapter validates the rest."""

    task: dict[str, Any]
    seed: int = 1
    seeds: list[int] | None = runtime(None)  # several seeds in one job (seed<s>/ subdirs): the search objective
    init: str | None = None
    data: DataConfig = field(default_factory=DataConfig)
    model: FinetuneModelConfig = field(default_factory=FinetuneModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(**FINETUNE_OPTIM))
    trainer: FinetuneTrainerConfig = field(default_factory=FinetuneTrainerConfig)
    tracking: dict[str, Any] = runtime(default_factory=lambda: {"mode": default_mode()})
    search: dict[str, Any] | None = runtime(None)  # set by a hyper-parameter search: its dir, trial and objective

    def __post_init__(self) -> None:
        self.task = task_config(self.task)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> FinetuneConfig:
        """Validate every group (unknown keys fail naming the valid ones); old spellings are mapped."""
        # a dict from a library caller may still use them (the command line names the new key instead:
        # pipelines.renamed_keys); a null one is dropped
        cfg, moved = move_renamed(values, LEGACY_KEYS, skip_unset=True)
        for old, new in moved:
            use = "model.<ConvBertConfig field>" if new == "model" else new
            warnings.warn(f"'{old}' is deprecated and will be removed: use '{use}'", FutureWarning, stacklevel=2)
        cfg.pop("paths", None)  # only used by the config's interpolations
        reject_unknown("fine-tuning", cfg, [f.name for f in dataclasses.fields(cls)] + ["paths"])
        check_seed("seed", cfg.get("seed", 1))
        seeds = cfg.get("seeds")
        if seeds is not None and (not isinstance(seeds, list) or not seeds):
            raise ConfigError(f"seeds={seeds!r}: must be null or a non-empty list of integers, e.g. seeds=[1,2,3]")
        for s in seeds or ():
            check_seed("seeds[]", s)
        optim = {**FINETUNE_OPTIM, **(cfg.get("optim") or {})}
        return cls(task=cfg.get("task"), seed=cfg.get("seed", 1), seeds=cfg.get("seeds"), init=cfg.get("init"),
                   data=from_mapping(DataConfig, "data", cfg.get("data")),
                   model=FinetuneModelConfig.from_dict(cfg.get("model") or {}),
                   optim=from_mapping(OptimConfig, "optim", optim),
                   trainer=from_mapping(FinetuneTrainerConfig, "trainer", cfg.get("trainer")),
                   tracking=dict(cfg.get("tracking") or {"mode": default_mode()}), search=cfg.get("search"))

    def settings(self) -> dict[str, Any]:
        """What makes the job's results (every non-runtime field): a resumed job must have the same."""
        return result_settings(self)


def upgrade_args(args: list[str]) -> list[str]:
    """Fine-tuning command-line overrides in today's spelling (old flat keys, trainer.epochs -> task.epochs): what
    pipelines that pass overrides on (reproduce, curve) record and run, so that their older records still match."""
    out = []
    for arg in args:
        key, sep, value = arg.partition("=")
        new = LEGACY_KEYS.get(key) if sep else None
        # model_overrides={...} maps onto the whole model group: no single key to rename it to
        out.append(f"{new}={value}" if new and new != "model" else arg)
    return out


def upgrade_job_record(record: Any) -> Any:
    """A job.json written while trainer.epochs existed (it overrode task.epochs) in today's spelling."""
    trainer = record.get("settings", {}).get("trainer", {}) if isinstance(record, dict) else {}
    if "epochs" in trainer:
        epochs = trainer.pop("epochs")
        if epochs is not None:
            record["settings"]["task"]["epochs"] = epochs
    return record


def is_random_init(init: str | None) -> bool:
    """init=null (or "random"): no pretrained weights."""
    return init is None or str(init).lower() in ("random", "none", "null", "")


def init_name(init: str | None, preset: str | None = None) -> str:
    """The name a job's dir uses for its init: the pretraining run's name, the model dir's, random-<preset>."""
    if is_random_init(init):
        return f"random-{preset}"
    path = Path(str(init).rstrip("/"))
    return path.parent.name if path.name == "hf" and path.parent.name else path.name
