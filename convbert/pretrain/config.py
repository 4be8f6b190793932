"""Typed pretraining config: the Hydra-composed dict is parsed once, here, before any work starts.

Every group goes through `from_mapping`, so an unknown key (a typo, or one added with `+`) fails naming the
group's valid keys. Old spellings (trainer.lr, trainer.adam_*, trainer.warmup_steps, null model knobs) are
mapped to today's by `upgrade_settings`, with a deprecation warning for a config given to `run` and silently
for the config.json of an older run (so that its settings compare with today's on resume).
"""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any

from convbert.config import PRESETS, ConvBertConfig
from convbert.data.config import CorpusConfig, TokenizerConfig
from convbert.data.shards import DATA_SEED, HELDOUT_FRACTION
from convbert.electra import ElectraObjective
from convbert.pretrain.budget import BudgetConfig
from convbert.settings import (
    ConfigError,
    check_bools,
    check_int,
    check_ints,
    check_seed,
    dotted_parent,
    from_mapping,
    move_renamed,
    reject_unknown,
    runtime,
    runtime_fields,
)
from convbert.train.optim import OptimConfig
from convbert.train.precision import DTYPES
from convbert.train.tracking import WANDB_MODES, default_mode

RESUME_MODES = ("auto", "never")
PRECISIONS = ("auto", *DTYPES)
DEVICES = ("auto", "cpu", "cuda")

# renamed keys: old dotted spelling -> new (one spelling per knob across the stages); on the command line the old
# spelling is refused naming the new one (pipelines.renamed_keys)
RENAMED = {"trainer.lr": "optim.lr", "trainer.weight_decay": "optim.weight_decay",
           "trainer.adam_betas": "optim.betas", "trainer.adam_eps": "optim.eps",
           "trainer.adam_bias_correction": "optim.bias_correction", "trainer.max_grad_norm": "optim.max_grad_norm",
           "trainer.warmup_steps": "optim.warmup_steps", "trainer.num_threads": "trainer.threads"}
# settings added after runs were written without them, with the value those runs used
PREDATED = {"optim.bias_correction": True, "optim.warmup_fraction": None, "optim.layer_decay": None,
            "optim.layer_decay_variant": "electra", "heldout_fraction": 0.0, "corpus.overflow": "truncate"}


@dataclass
class PretrainTrainerConfig:
    """The `trainer` group: the global batch, and how, where and how long the run runs (conf/trainer/default.yaml
    documents each key). Runtime fields may change when a run resumes; the others make its results."""

    device: str = runtime("auto")
    precision: str = runtime("auto")
    compile: bool | str = runtime("auto")
    cuda_graphs: bool | str = runtime("auto")  # the whole step as one CUDA graph (convbert/pretrain/graphed.py)
    threads: int | None = runtime(None)
    batch_size: int = 128  # global: ranks x grad_accum x micro-batch
    grad_accum: int = 1
    max_steps: int | None = runtime(1_000_000)  # null: trainer.budget sets it; a change re-derives the schedule
    budget: BudgetConfig = runtime(default_factory=BudgetConfig)  # may change like max_steps
    stop_after: int | None = runtime(None)  # end this job at that step (checkpointed) without changing the schedule
    log_every: int = runtime(100)
    ckpt_every: int = runtime(10_000)
    keep_last: int = runtime(3)
    keep_steps: list[int] = runtime(default_factory=list)  # also checkpointed and kept for good (checkpoints/kept/)
    keep_every: int | None = runtime(None)  # as keep_steps, every N steps
    eval_every: int | None = runtime(10_000)
    eval_examples: int = runtime(2048)
    max_bad_steps: int = runtime(0)
    stop_check_every: int = runtime(10)
    data_wait_s: float = runtime(86_400.0)
    progress: bool = runtime(True)

    def __post_init__(self) -> None:
        check_ints(self, "trainer", ("batch_size", "grad_accum", "log_every", "ckpt_every", "keep_last",
                                     "stop_check_every"))
        check_ints(self, "trainer", ("max_steps",), nullable=True)
        self.budget = from_mapping(BudgetConfig, "trainer.budget", self.budget)
        if self.budget.kind and self.max_steps is not None:
            raise ConfigError(f"trainer.max_steps={self.max_steps} and trainer.budget.{self.budget.kind}="
                              f"{self.budget.value:g} are both set: a budget sets the run's length, so give one "
                              "(trainer.max_steps=null with a budget)")
        if not self.budget.kind and self.max_steps is None:
            raise ConfigError("trainer.max_steps is null and no trainer.budget.flops or trainer.budget.hours is "
                              "set: give the run a length")
        check_ints(self, "trainer", ("eval_examples", "max_bad_steps"), low=0)
        check_ints(self, "trainer", ("stop_after", "eval_every", "threads"), nullable=True)
        check_bools(self, "trainer", ("progress",))
        check_ints(self, "trainer", ("keep_every",), nullable=True)
        if not isinstance(self.keep_steps, list | tuple):
            raise ConfigError(f"trainer.keep_steps must be a list of steps, e.g. [1000,5000], got {self.keep_steps!r}")
        for s in self.keep_steps:
            check_int("trainer.keep_steps[]", s)
        if self.device not in DEVICES:
            raise ConfigError(f"trainer.device must be one of {DEVICES}, got {self.device!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"trainer.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if not (self.compile == "auto" or isinstance(self.compile, bool)):
            raise ConfigError(f"trainer.compile must be auto, true or false, got {self.compile!r}")
        if not (self.cuda_graphs == "auto" or isinstance(self.cuda_graphs, bool)):
            raise ConfigError(f"trainer.cuda_graphs must be auto, true or false, got {self.cuda_graphs!r}")
        if not self.data_wait_s > 0:
            raise ConfigError(f"trainer.data_wait_s must be > 0, got {self.data_wait_s!r}")

    def micro_batch(self, world_size: int) -> int:
        per_step = world_size * self.grad_accum
        if self.batch_size % per_step:
            raise ConfigError(f"trainer.batch_size={self.batch_size} is not divisible by world_size "
                              f"({world_size}) x trainer.grad_accum ({self.grad_accum})")
        return self.batch_size // per_step

    def keeps(self, step: int) -> bool:
        """Whether `step` is one whose checkpoint is kept for good (keep_steps, keep_every)."""
        return step in self.keep_steps or bool(self.keep_every and step % self.keep_every == 0)

    @property
    def end(self) -> int | None:
        """The step this job stops at; None while an hours budget is still measuring (and no stop_after)."""
        if self.max_steps is None:
            return self.stop_after
        return min(self.max_steps, self.stop_after or self.max_steps)


@dataclass
class PretrainModelConfig:
    """The `model` group: a preset name (for summaries) and every ConvBertConfig field; vocab_size null
    means the tokenizer's."""

    preset: str = "tiny"
    fields: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, values: dict[str, Any]) -> PretrainModelConfig:
        values = dict(values)
        preset = values.pop("preset", None)
        if preset not in PRESETS:
            raise ConfigError(f"model.preset={preset!r} is not one of {sorted(PRESETS)}")
        known = {f.name for f in dataclasses.fields(ConvBertConfig)}
        reject_unknown("model", values, known | {"preset"})
        fields = {**PRESETS[preset], **{k: v for k, v in values.items() if v is not None}}
        model = cls(preset, fields)
        model.build(vocab_size=fields.get("vocab_size") or 1 + fields.get("pad_token_id", 0))  # cheap check
        return model

    def build(self, vocab_size: int) -> ConvBertConfig:
        """The ConvBertConfig for a tokenizer of `vocab_size` tokens."""
        given = self.fields.get("vocab_size")
        if given is not None and given != vocab_size:
            raise ConfigError(f"model.vocab_size={given} but the tokenizer has {vocab_size} tokens; set "
                              f"model.vocab_size=null (the tokenizer's) or {vocab_size}")
        try:
            return ConvBertConfig.from_dict({**self.fields, "vocab_size": vocab_size})
        except (TypeError, ValueError) as e:
            raise ConfigError(f"model: {e}") from e


@dataclass
class TrackingConfig:
    mode: str = field(default_factory=default_mode)
    project: str = "convbert"
    group: str | None = None
    name: str | None = None
    tags: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.mode not in WANDB_MODES:
            raise ConfigError(f"tracking.mode must be one of {WANDB_MODES}, got {self.mode!r}")


@dataclass
class PathsConfig:
    """The `paths` group (conf/paths/default.yaml): checked for unknown keys; the entries that matter here
    (data_dir, the run dir) arrive already resolved."""

    root: str = "."
    data_dir: str = "data"
    runs_dir: str = "runs"


@dataclass
class PretrainConfig:
    """The whole pretraining config, typed. `raw` is the (upgraded) plain dict, recorded as config.json."""

    name: str = runtime()
    seed: int
    resume: str = runtime()
    model: PretrainModelConfig
    optim: OptimConfig
    trainer: PretrainTrainerConfig
    objective: ElectraObjective
    tracking: TrackingConfig = runtime()
    corpus: dict[str, Any]
    tokenizer: dict[str, Any]
    max_seq_length: int
    data_seed: int
    heldout_fraction: float
    num_workers: int = runtime()  # tokenizer processes: the shards do not depend on them
    data_dir: str = runtime()
    raw: dict[str, Any]

    def data_args(self) -> dict[str, Any]:
        """Keyword arguments of convbert.data.prepare."""
        return dict(corpus=self.corpus, tokenizer=self.tokenizer, max_seq_length=self.max_seq_length,
                    seed=self.data_seed, heldout_fraction=self.heldout_fraction, num_workers=self.num_workers,
                    data_dir=self.data_dir)


# the config entries a resumed run may change: its runtime fields (where and how it runs, how long, what it logs)
# and conf's paths; any other difference from the run's config.json would silently mix two runs' settings, so
# resuming refuses it
MAY_CHANGE_ON_RESUME = (*runtime_fields(PretrainConfig), "paths",
                        *(f"trainer.{name}" for name in runtime_fields(PretrainTrainerConfig)))
# what parse_config takes for a top-level key its config lacks: conf/pretrain.yaml's (and conf/shards/) values,
# so that a dict from Python and `make pretrain` agree (tests/test_one_home.py checks them)
TOP_LEVEL_DEFAULTS = {"seed": 1, "resume": "auto", "max_seq_length": 128, "data_seed": DATA_SEED,
                      "heldout_fraction": HELDOUT_FRACTION, "num_workers": 2, "data_dir": "data"}
TOP_LEVEL = ("name", "seed", "resume", "model", "optim", "trainer", "objective", "tracking", "corpus", "tokenizer",
             "max_seq_length", "data_seed", "heldout_fraction", "num_workers", "data_dir", "paths")


def parse_config(cfg: dict[str, Any]) -> PretrainConfig:
    """Validate every group (cheap checks only: nothing is read or tokenized) and return the typed config."""
    cfg = {**TOP_LEVEL_DEFAULTS, **upgrade_settings(cfg, warn=True)}
    reject_unknown("pretraining", cfg, TOP_LEVEL)
    missing = [k for k in ("name", "model", "corpus", "tokenizer") if k not in cfg]
    if missing:
        raise ConfigError(f"pretraining config lacks {missing}")
    seed, data_seed = cfg["seed"], cfg["data_seed"]
    check_seed("seed", seed)
    check_seed("data_seed", data_seed)
    resume = cfg["resume"]
    if resume not in RESUME_MODES:
        raise ConfigError(f"resume must be one of {RESUME_MODES}, got {resume!r}")
    heldout = cfg["heldout_fraction"]
    if isinstance(heldout, bool) or not isinstance(heldout, int | float) or not 0 <= heldout < 1:
        raise ConfigError(f"heldout_fraction must be in [0, 1), got {heldout!r}")
    try:
        objective = from_mapping(ElectraObjective, "objective", cfg.get("objective", {}))
    except ConfigError:
        raise
    except ValueError as e:  # ElectraObjective's own checks raise plain ValueError
        raise ConfigError(str(e)) from e
    optim = from_mapping(OptimConfig, "optim", cfg.get("optim", {}))
    if optim.lr is None:
        raise ConfigError("optim.lr must be set for pretraining")
    if optim.layer_decay is not None:
        raise ConfigError("optim.layer_decay is for fine-tuning; set it to null for pretraining")
    model = PretrainModelConfig.parse(cfg["model"])
    try:  # the generator is sized from the model: checked now, not after tokenizing the corpus
        model.build(vocab_size=model.fields.get("vocab_size") or 1 + model.fields.get("pad_token_id", 0)
                    ).generator_config(objective.generator_size)
    except ValueError as e:
        raise ConfigError(f"objective.generator_size={objective.generator_size}: {e}") from e
    max_seq_length = cfg["max_seq_length"]
    check_int("max_seq_length", max_seq_length, low=5)
    if max_seq_length > model.fields["max_position_embeddings"]:
        raise ConfigError(f"max_seq_length={max_seq_length} exceeds the model's "
                          f"max_position_embeddings={model.fields['max_position_embeddings']}")
    from_mapping(PathsConfig, "paths", cfg.get("paths", {}))
    # the data groups are checked here too (their own errors name the key), not first inside the tokenizer
    from_mapping(CorpusConfig, "corpus", cfg["corpus"], error=ConfigError)
    from_mapping(TokenizerConfig, "tokenizer", cfg["tokenizer"], error=ConfigError)
    return PretrainConfig(
        name=str(cfg["name"]), seed=seed, resume=resume, model=model, optim=optim,
        trainer=from_mapping(PretrainTrainerConfig, "trainer", cfg.get("trainer", {})), objective=objective,
        tracking=from_mapping(TrackingConfig, "tracking", cfg.get("tracking", {})),
        corpus=cfg["corpus"], tokenizer=cfg["tokenizer"], max_seq_length=max_seq_length, data_seed=data_seed,
        heldout_fraction=float(heldout), num_workers=cfg["num_workers"], data_dir=str(cfg["data_dir"]), raw=cfg,
    )


def upgrade_settings(cfg: dict[str, Any], warn: bool = False) -> dict[str, Any]:
    """Today's spelling of a (possibly older) pretraining config: renamed keys moved (RENAMED), null model
    knobs replaced by the preset's values. Returns a new dict; `warn` names each old key it moved."""
    out, moved = move_renamed(cfg, RENAMED)
    if warn:
        for old, new in moved:
            warnings.warn(f"{old} is deprecated: use {new} (one spelling per knob across the stages)",
                          DeprecationWarning, stacklevel=3)
    model = out.get("model")
    if isinstance(model, dict) and model.get("preset") in PRESETS:
        for key, value in PRESETS[model["preset"]].items():
            if model.get(key) is None:
                model[key] = value
        if model.get("name") is None:
            model.pop("name", None)
    return out


def saved_settings(saved: dict[str, Any]) -> dict[str, Any]:
    """A run's config.json in today's spelling, with PREDATED defaults for settings it predates; the model's
    remaining null knobs take ConvBertConfig's defaults, as those runs did."""
    out = upgrade_settings(saved)
    for dotted, value in PREDATED.items():
        group, key = dotted_parent(out, dotted, create=True)
        group.setdefault(key, value)
    model = out.get("model")
    if isinstance(model, dict):  # fields an older model group did not list: the values those runs got
        preset = PRESETS.get(model.get("preset"), {})
        for f in dataclasses.fields(ConvBertConfig):
            if model.get(f.name) is None:
                model[f.name] = None if f.name == "vocab_size" else preset.get(f.name, f.default)
    return out
