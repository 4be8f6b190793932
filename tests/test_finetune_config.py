"""conf/finetune.yaml: grouped keys, struct mode (unknown keys fail naming them and the valid ones), old
spellings mapped with a warning, the per-task recipe from the task registry, and job dirs that name the init
(three sweeps started together never collide)."""

import json
import re
from pathlib import Path

import pytest
from helpers import compose_resolved, run_entry
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

import pipelines.finetune  # noqa: F401  (registers the init_name resolver)
from convbert.finetune import FinetuneConfig, record_job, task_adapter
from convbert.settings import ConfigError
from convbert.tasks import task_info
from pipelines import unknown_key_errors

ROOT = Path(__file__).resolve().parents[1]


def composed(*overrides: str, hydra: bool = False):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("finetune", overrides=["paths.root=/r", *overrides], return_hydra_config=hydra)


SQUAD = ROOT / "tests" / "fixtures" / "squad"  # the adapter checks that data.dir holds the official files


def job(*overrides: str) -> FinetuneConfig:
    job = FinetuneConfig.from_dict(compose_resolved("finetune", ["paths.root=/r", *overrides]))
    task_adapter(job)
    return job


def test_groups_and_one_spelling_per_knob():
    j = job("task=squad1", "task.max_length=384", "optim.lr=1e-4", "optim.bias_correction=true",
            "model.hidden_dropout_prob=0.2", "trainer.batch_size=16", f"data.dir={SQUAD}")
    assert j.task["max_length"] == 384 and j.optim.lr == 1e-4 and j.optim.bias_correction
    assert j.model.overrides == {"hidden_dropout_prob": 0.2} and j.trainer.batch_size == 16 and j.data.dir == str(SQUAD)
    g = job("task=rte")
    assert g.task["max_length"] == 128 and g.optim.lr is None and g.optim.layer_decay == 0.8
    assert g.optim.warmup_fraction == 0.1 and g.task["epochs"] == 10 and g.model.overrides == {}


@pytest.mark.parametrize("override, key, valid", [
    ("+lrr=1", "lrr", "optim"), ("+task.epoch=3", "epoch", "double_unordered"),
    ("+trainer.batchsize=3", "batchsize", "batch_size"), ("+model.hiden_size=3", "hiden_size", "hidden_size"),
    ("+optim.lrr=1", "lrr", "layer_decay"), ("+data.glue=1", "glue", "hub_path"),
])
def test_unknown_keys_fail_naming_them_and_the_valid_keys(override, key, valid):
    with pytest.raises(ConfigError, match=rf"unknown .*'{key}'.*valid keys: .*{valid}"):
        job(override)


def test_unknown_key_without_plus_fails_in_hydra():
    with pytest.raises(ConfigCompositionException, match=r"Could not override 'task.epoch'"):
        composed("task.epoch=3")


def test_old_spellings_work_from_python_with_a_warning_and_are_named_on_the_command_line():
    old = {"lr": 1e-4, "max_length": 64, "batch_size": 8, "glue_dir": "/glue", "model_overrides": {"attention": "self"},
           "adam_bias_correction": True}
    with pytest.warns(FutureWarning, match="'lr' is deprecated.*'optim.lr'"):
        j = FinetuneConfig.from_dict({**compose_resolved("finetune", ["paths.root=/r"]), **old})
    assert j.optim.lr == 1e-4 and j.task["max_length"] == 64 and j.trainer.batch_size == 8
    assert j.data.dir == "/glue" and j.model.overrides == {"attention": "self"} and j.optim.bias_correction
    assert unknown_key_errors("finetune", ["lr=1e-4", "glue_dir=/glue", "trainer.batch_size=8"]) == [
        "error: 'lr' is now 'optim.lr'; the old spelling is no longer read on the command line",
        "error: 'glue_dir' is now 'data.dir'; the old spelling is no longer read on the command line"]
    assert unknown_key_errors("prepare", ["seed=7"]) == [
        "error: 'seed' is now 'data_seed'; the old spelling is no longer read on the command line"]


@pytest.mark.parametrize("name", ["rte", "mrpc", "sst2", "squad2"])
def test_the_task_recipe_comes_from_the_registry_and_job_json_records_it(name, tmp_path):
    info, j = task_info(name), job(f"task={name}")
    adapter = task_adapter(j)
    assert j.task["epochs"] == info.epochs == adapter.epochs
    if info.kind == "glue":
        assert j.task["double_unordered"] == info.double_unordered == adapter.double
    else:
        assert "double_unordered" not in j.task
    record_job(tmp_path, j)
    assert json.loads((tmp_path / "job.json").read_text())["settings"]["task"] == j.task


def test_the_task_recipe_can_still_be_overridden():
    j = job("task=mrpc", "task.epochs=4", "task.double_unordered=false")
    adapter = task_adapter(j)
    assert (j.task["epochs"], j.task["double_unordered"], adapter.epochs, adapter.double) == (4, False, 4, False)
    assert task_adapter(job("task=squad1", "task.epochs=1")).epochs == 1


@pytest.mark.parametrize("task, message", [
    ({"kind": "glue", "name": "rte", "epochs": 0}, "task.epochs must be a positive integer, got 0"),
    ({"kind": "glue", "name": "glue9"}, "task.name: unknown task 'glue9'; known tasks: cola, sst2"),
    ({"kind": "squad", "name": "rte"}, "task.kind='squad', but rte is a glue task"),
    ({"name": "rte"}, "task: must be a task config with kind and name"),
])
def test_task_group_errors_name_the_key(task, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        FinetuneConfig.from_dict({"task": task})


def resolved_dirs(*overrides: str) -> tuple[str, str]:
    cfg = composed(*overrides, hydra=True)
    HydraConfig.instance().set_config(cfg)
    return OmegaConf.select(cfg, "hydra.run.dir"), OmegaConf.select(cfg, "hydra.sweep.dir")


def test_job_dirs_name_the_init_and_three_inits_do_not_collide():
    run, sweep = resolved_dirs("task=rte", "seed=2", "init=/ckpt/runs/pretrain/small-mixed")
    assert run == "/r/runs/finetune/small-mixed/rte/seed2"
    assert sweep.startswith("/r/runs/finetune/small-mixed/multirun/")
    sweeps = {resolved_dirs(f"init={init}")[1]
              for init in ("/x/runs/pretrain/a", "/x/runs/pretrain/b/hf", "YituTech/conv-bert-small")}
    assert len(sweeps) == 3 and {Path(s).parts[4] for s in sweeps} == {"a", "b", "conv-bert-small"}
    assert resolved_dirs("init=null", "model.preset=tiny")[0] == "/r/runs/finetune/random-tiny/sst2/seed1"
    assert resolved_dirs("paths.runs_dir=/elsewhere", "init=/x/a")[0] == "/elsewhere/finetune/a/sst2/seed1"


def test_entry_point_rejects_a_typo_before_any_work(tmp_path):
    # the exit code and stderr of such a refusal are test_cli_errors' subject; here: nothing is written
    with pytest.raises(ConfigError, match=re.escape("unknown task config key(s) ['epoch']") + ".*epochs"):
        run_entry("finetune", "task=rte", "+task.epoch=3", run_dir=tmp_path / "run")
    assert not (tmp_path / "run" / "failed.json").exists() and not (tmp_path / "run" / "job.json").exists()
