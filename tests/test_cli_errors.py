"""Unknown keys on the command line: with `+` our config parsing names them (test_pretrain_config); without,
Hydra refuses them and pipelines.run_hydra adds the valid keys of that level."""

from __future__ import annotations

import pytest
from helpers import run_process

from pipelines import unknown_key_errors


@pytest.mark.parametrize(("config", "args", "key", "valid"), [
    ("pretrain", ["model=small", "model.num_hidden_layer=2"], "model.num_hidden_layer", "'model' are: attention"),
    ("pretrain", ["-m", "lrr=1,2", "seed=1"], "lrr", "the top level are: corpus"),
    ("pretrain", ["trainer.precison=bf16"], "trainer.precison", "precision"),
    ("finetune", ["task=stsb,mrpc", "task.epoch=3"], "task.epoch", "epochs"),
    ("finetune", ["optim.learning_rate=1e-4"], "optim.learning_rate", "'optim' are:"),
])
def test_plain_override_of_a_missing_key_is_named_with_the_valid_keys(config, args, key, valid):
    errors = unknown_key_errors(config, args)
    assert len(errors) == 1 and f"unknown key '{key}'" in errors[0] and valid in errors[0], errors


def test_valid_overrides_groups_and_additions_give_no_message():
    assert unknown_key_errors("pretrain", ["model=small", "model.num_hidden_layers=2", "trainer.precision=bf16",
                                           "+extra=1", "hydra.run.dir=/tmp/x", "experiment=tiny"]) == []
    assert unknown_key_errors("finetune", ["-m", "task=cola,sst2", "seed=1,2", "task.epochs=2"]) == []
    assert unknown_key_errors("pretrain", ["not an override ==="]) == []


@pytest.mark.slow
def test_the_entry_point_prints_the_valid_keys(tmp_path):
    proc = run_process(["-m", "pipelines.pretrain", "model.hidden=3", f"paths.root={tmp_path}"])
    assert proc.returncode != 0
    assert "unknown key 'model.hidden'" in proc.stderr and "num_hidden_layers" in proc.stderr, proc.stderr[-2000:]
    assert not list(tmp_path.iterdir())  # nothing was written
