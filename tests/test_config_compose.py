"""Every stage's config, every experiment and every task compose with Hydra and resolve (nothing trains)."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import CONF, STAGES, compose_resolved

from convbert.config import PRESETS
from convbert.pretrain.config import PretrainModelConfig
from convbert.tasks import REGISTRY

EXPERIMENTS = sorted(p.stem for p in (CONF / "experiment").glob("*.yaml"))
TASK_FILES = sorted(p.stem for p in (CONF / "task").glob("*.yaml"))


def test_the_groups_are_not_empty():
    assert "convbert-small" in EXPERIMENTS and "smoke" in EXPERIMENTS
    assert {"sst2", "squad1"} <= set(TASK_FILES)


@pytest.mark.parametrize("stage", STAGES)
def test_stage_default_config_resolves(stage, tmp_path):
    cfg = compose_resolved(stage, run_dir=tmp_path)
    assert cfg and "hydra" not in cfg


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_with_pretraining(name, tmp_path):
    cfg = compose_resolved("pretrain", [f"experiment={name}"], run_dir=tmp_path)
    assert cfg["model"]["preset"] in PRESETS
    PretrainModelConfig.parse(cfg["model"]).build(vocab_size=30522)  # every model knob is a valid ConvBertConfig value
    assert isinstance(cfg["name"], str) and cfg["name"]
    reproduce = compose_resolved("reproduce", [f"experiments=[{name}]"], run_dir=tmp_path)
    assert reproduce["experiments"] == [name]


@pytest.mark.parametrize("name", TASK_FILES)
def test_task_composes_with_finetuning(name, tmp_path):
    cfg = compose_resolved("finetune", [f"task={name}"], run_dir=tmp_path)
    info = REGISTRY[cfg["task"]["name"]]  # every task file names a registry task
    assert info.name == name and cfg["task"]["kind"] == info.kind


def test_unknown_experiment_or_task_is_named(tmp_path):
    from hydra.errors import MissingConfigException

    with pytest.raises(MissingConfigException, match="experiment/nope"):
        compose_resolved("pretrain", ["experiment=nope"], run_dir=tmp_path)
    with pytest.raises(MissingConfigException, match="task/nope"):
        compose_resolved("finetune", ["task=nope"], run_dir=tmp_path)


def test_hydra_interpolations_resolve_against_the_working_dir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = compose_resolved("prepare", run_dir=tmp_path)
    assert Path(cfg["data_dir"]).parent == tmp_path
