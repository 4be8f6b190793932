"""One home for every default: conf/ holds them, and where the library keeps a value for a config dict that
lacks a key (typed dataclass defaults, fallbacks), it must be conf's. A run from Python and `make <stage>` get
the same settings: pipelines.compose gives exactly what the command line composes."""

from __future__ import annotations

import dataclasses
import inspect
import math

import pytest
import yaml
from helpers import CONF, REPO, STAGES, run_process

import pipelines
from convbert.config import PRESETS, ConvBertConfig
from convbert.data import prepare
from convbert.data.config import TokenizerConfig
from convbert.finetune.config import FINETUNE_OPTIM, DataConfig
from convbert.finetune.config import FinetuneTrainerConfig as FinetuneTrainer
from convbert.pretrain.config import TOP_LEVEL_DEFAULTS, TrackingConfig
from convbert.pretrain.config import PretrainTrainerConfig as PretrainTrainer
from convbert.tasks import ELECTRA_TASKS
from convbert.train.optim import OptimConfig
from convbert.train.tracking import default_mode


def conf(path: str) -> dict:
    return yaml.safe_load((CONF / path).read_text())


def defaults(cls: type, **given: object) -> dict:
    """The values a config dict without these keys gets from the dataclass."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cls(**given)).items()}


@pytest.mark.parametrize("cls, values, given", [
    (PretrainTrainer, lambda: conf("trainer/default.yaml"), {}),
    (OptimConfig, lambda: conf("optim/finetune.yaml"), FINETUNE_OPTIM),
    (TokenizerConfig, lambda: conf("tokenizer/wordpiece.yaml"), {}),
    (FinetuneTrainer, lambda: conf("finetune.yaml")["trainer"], {}),
    (DataConfig, lambda: conf("finetune.yaml")["data"], {}),
    (TrackingConfig, lambda: {**conf("tracking/wandb.yaml"), "mode": default_mode()}, {}),
], ids=["pretrain trainer", "finetune optim", "tokenizer", "finetune trainer", "finetune data", "tracking"])
def test_dataclass_defaults_are_confs(cls, values, given):
    ours, theirs = defaults(cls, **given), values()
    assert {k: v for k, v in ours.items() if k in theirs} == theirs


def test_the_pretraining_optimizer_sets_what_the_schema_leaves_open():
    pretrain = conf("optim/pretrain.yaml")
    schema = defaults(OptimConfig, warmup_steps=0)  # the schema has no lr and no warmup of its own
    assert {k: v for k, v in schema.items() if k not in ("lr", "warmup_steps")} == \
        {k: v for k, v in pretrain.items() if k not in ("lr", "warmup_steps")}
    assert OptimConfig.lr is None and OptimConfig.warmup_steps is None


def test_top_level_fallbacks_and_prepare_defaults_are_confs():
    shards, stage = conf("shards/default.yaml"), conf("pretrain.yaml")
    assert {k: TOP_LEVEL_DEFAULTS[k] for k in ("max_seq_length", "data_seed", "heldout_fraction", "num_workers")} \
        == {k: shards[k] for k in ("max_seq_length", "data_seed", "heldout_fraction", "num_workers")}
    assert TOP_LEVEL_DEFAULTS["seed"] == stage["seed"] and TOP_LEVEL_DEFAULTS["resume"] == stage["resume"]
    params = inspect.signature(prepare).parameters
    assert params["seed"].default == shards["data_seed"] and params["max_seq_length"].default == \
        shards["max_seq_length"] and params["heldout_fraction"].default == shards["heldout_fraction"]


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_model_presets_are_the_model_group(preset):
    group = conf(f"model/{preset}.yaml")
    built = dataclasses.asdict(ConvBertConfig.from_preset(preset, vocab_size=30522))
    assert {k: group[k] for k in PRESETS[preset]} == PRESETS[preset]
    assert {k: v for k, v in group.items() if k not in ("preset", "vocab_size")} == \
        {k: v for k, v in built.items() if k in group and k != "vocab_size"}


def test_one_glue_task_list():
    makefile = (REPO / "Makefile").read_text()
    tasks = next(line for line in makefile.splitlines() if line.startswith("TASKS ?="))
    assert tasks.split("?=")[1].split("##")[0].strip() == ",".join(ELECTRA_TASKS)
    for stage in ("reproduce", "baselines", "curve"):
        assert pipelines.compose(stage)["tasks"] == list(ELECTRA_TASKS), stage


@pytest.mark.slow  # one subprocess per stage
@pytest.mark.parametrize("stage", STAGES)
def test_python_and_the_command_line_compose_the_same_settings(stage, monkeypatch):
    monkeypatch.chdir(REPO)  # paths.root is the directory the command runs from
    shown = run_process(["-m", f"pipelines.{stage}", "--cfg", "job", "--resolve"], timeout=120)
    assert shown.returncode == 0, shown.stderr[-2000:]
    cli = yaml.safe_load(shown.stdout)
    ours = pipelines.compose(stage)
    assert ours == cli and not any(isinstance(v, float) and math.isnan(v) for v in ours.values())


def test_one_name_per_knob_across_the_stages():
    """threads, data_seed, the GLUE directory: one spelling in every stage; an old one on the command line names
    the new key, and a dict from Python (or an old run's config.json) is read in today's spelling."""
    from convbert.pretrain.config import parse_config

    for stage, knob in (("pretrain", "trainer.threads"), ("finetune", "trainer.threads"),
                        ("pretrain", "data_seed"), ("prepare", "data_seed"), ("finetune", "data.dir"),
                        ("reproduce", "data.dir"), ("curve", "data.dir"), ("baselines", "data.dir")):
        node = pipelines.compose(stage)
        for part in knob.split("."):
            node = node[part]  # KeyError: the stage spells the knob otherwise
    assert pipelines.unknown_key_errors("pretrain", ["trainer.num_threads=1"]) == [
        "error: 'trainer.num_threads' is now 'trainer.threads'; the old spelling is no longer read on the command line"]
    assert pipelines.unknown_key_errors("reproduce", ["glue_dir=/data/glue"]) == [
        "error: 'glue_dir' is now 'data.dir'; the old spelling is no longer read on the command line"]
    old = pipelines.compose("pretrain")
    old["trainer"]["num_threads"] = old["trainer"].pop("threads")
    with pytest.warns(DeprecationWarning, match="trainer.num_threads is deprecated: use trainer.threads"):
        assert parse_config(old).trainer.threads == 2


def test_what_a_resume_may_change_follows_from_the_fields():
    """Runtime fields (how, where, how long a run runs) are marked where they are declared; the resume check and
    the fine-tuning job record follow from the marks, not from hand-kept lists."""
    from convbert.finetune import FinetuneConfig
    from convbert.pretrain.config import MAY_CHANGE_ON_RESUME
    from convbert.settings import runtime_fields

    runtime = {f"trainer.{n}" for n in runtime_fields(PretrainTrainer)}
    assert {"trainer.device", "trainer.threads", "trainer.log_every", "trainer.max_steps"} <= runtime
    assert runtime <= set(MAY_CHANGE_ON_RESUME) and not {"trainer.batch_size", "trainer.grad_accum"} & runtime
    job = FinetuneConfig.from_dict(pipelines.compose("finetune", ["task=rte"]))
    record = job.settings()
    assert "tracking" not in record and "threads" not in record["trainer"] and "cache_dir" not in record["data"]
    assert record["trainer"]["batch_size"] == job.trainer.batch_size and record["optim"]["betas"] == [0.9, 0.999]


def test_one_knob_for_epochs_and_records_written_with_the_old_one_still_match(tmp_path):
    """task.epochs is the number of epochs (trainer.epochs was a second knob for it); a job dir trained under
    trainer.epochs still resumes, and a pipeline's finetune_args are read in today's spelling."""
    import json

    from convbert.finetune import FinetuneConfig, SettingsMismatch, check_job
    from convbert.finetune.config import upgrade_args
    from convbert.finetune.engine import _job_record

    assert upgrade_args(["trainer.epochs=1", "lr=1e-4", "task.max_length=32", "model_overrides={}"]) == [
        "task.epochs=1", "optim.lr=1e-4", "task.max_length=32", "model_overrides={}"]
    job = FinetuneConfig.from_dict(pipelines.compose("finetune", ["task=rte", "task.epochs=2"]))
    old = _job_record(job)
    old["settings"]["task"]["epochs"], old["settings"]["trainer"]["epochs"] = 10, 2  # the registry's, overridden
    (tmp_path / "job.json").write_text(json.dumps(old))
    (tmp_path / "results.json").write_text("{}")  # a finished job: its record binds
    check_job(tmp_path, job)  # the same job, in today's spelling
    old["settings"]["trainer"]["epochs"] = 3
    (tmp_path / "job.json").write_text(json.dumps(old))
    with pytest.raises(SettingsMismatch, match=r"task.epochs: 3 -> 2"):
        check_job(tmp_path, job)


@pytest.mark.parametrize("stage", ["reproduce", "curve", "table", "baselines"])
def test_stages_writing_into_an_output_dir_share_one_hydra_output_config(stage):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF), version_base="1.3", job_name=stage):
        config = compose(stage, overrides=["output_dir=/out/x"], return_hydra_config=True)
    hydra = config.hydra
    assert hydra.runtime.choices["hydra/output"] == "in_output_dir"
    dirs = OmegaConf.to_container(hydra, resolve=False)
    assert dirs["run"]["dir"].startswith("${output_dir}/hydra/") and hydra.run.dir.startswith("/out/x/hydra/")
    assert dirs["sweep"]["dir"].startswith("${output_dir}/hydra/multirun_") and not hydra.job.chdir
