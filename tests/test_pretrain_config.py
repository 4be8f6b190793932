"""The pretraining config groups, composed by Hydra and parsed once (convbert/pretrain/config.py)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from helpers import compose_resolved

from convbert.config import PRESETS
from convbert.pretrain import parse_config
from convbert.pretrain.config import PretrainModelConfig, saved_settings
from convbert.settings import ConfigError

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = sorted(p.stem for p in (ROOT / "conf" / "experiment").glob("*.yaml"))


def composed(*overrides: str) -> dict:
    return compose_resolved("pretrain", [f"paths.root={ROOT}", *overrides])


def test_model_group_lists_every_field_so_plain_overrides_work():
    c = parse_config(composed("model=tiny", "model.num_hidden_layers=2", "model.conv_kernel_size=7"))
    config = c.model.build(vocab_size=600)
    assert (config.num_hidden_layers, config.conv_kernel_size, config.hidden_size) == (2, 7, 128)
    for preset in PRESETS:  # each file holds its preset's sizes
        fields = composed(f"model={preset}")["model"]
        assert fields["preset"] == preset and all(fields[k] == v for k, v in PRESETS[preset].items())


def test_default_recipe_and_experiments_select_their_optimizer():
    default = parse_config(composed())
    assert (default.optim.lr, default.optim.bias_correction, default.optim.warmup_steps) == (1e-3, True, 200)
    assert default.heldout_fraction > 0 and default.trainer.eval_examples > 0
    for name in EXPERIMENTS:
        c = parse_config(composed(f"experiment={name}"))
        assert c.optim.lr > 0, name
    small = parse_config(composed("experiment=convbert-small"))
    assert (small.optim.lr, small.optim.bias_correction, small.model.preset) == (3e-4, False, "small")
    base = parse_config(composed("experiment=electra-base"))
    assert (base.model.preset, base.model.fields["attention"], base.optim.lr) == ("base", "self", 2e-4)


@pytest.mark.parametrize(("override", "named"), [
    ("+max_seq_lenght=128", "max_seq_lenght"), ("+trainer.lrr=1", "'lrr'"), ("+model.hidden=3", "'hidden'"),
    ("+optim.momentum=0.9", "'momentum'"), ("+paths.logs=/x", "'logs'"),
    ("+objective.mask=0.2", "'mask'"), ("+tracking.entity=me", "'entity'"),
])
def test_unknown_keys_added_with_plus_fail_naming_the_key_and_valid_keys(override, named):
    with pytest.raises(ConfigError, match=rf"unknown .*{named}.*valid keys"):
        parse_config(composed(override))


@pytest.mark.parametrize(("override", "message"), [
    ("seed=1.5", "seed must be an integer"), ("optim.lr=-1", "optim.lr"), ("trainer.precision=fp8", "precision"),
    ("tracking.mode=loud", "tracking.mode"), ("max_seq_length=1024", "max_position_embeddings"),
    ("resume=yes", "resume must be one of"), ("model.head_ratio=0", "head_ratio"), ("heldout_fraction=1", "heldout"),
    ("objective.generator_size=5", r"objective.generator_size must be in \(0, 1\]"),
    ("objective.generator_size=0.01", "objective.generator_size=0.01: "),  # too narrow for the model's heads
    ("trainer.progress=no", "trainer.progress must be true or false"),
])
def test_cheap_checks_come_before_any_data_work(override, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(composed(override))


def test_old_spellings_are_mapped_with_a_warning():
    cfg = composed()
    del cfg["optim"]["lr"]
    cfg["trainer"]["lr"], cfg["trainer"]["adam_bias_correction"] = 5e-4, False
    with pytest.warns(DeprecationWarning, match="trainer.lr is deprecated: use optim.lr"):
        c = parse_config(cfg)
    assert (c.optim.lr, c.optim.bias_correction) == (5e-4, False)


def test_an_older_runs_config_json_reads_in_todays_spelling_silently():
    old = {"name": "r", "trainer": {"lr": 5e-4, "adam_betas": (0.9, 0.98), "max_grad_norm": None, "log_every": 5},
           "model": {"preset": "tiny", "hidden_size": None}}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        s = saved_settings(old)
    assert s["trainer"] == {"log_every": 5}
    assert s["optim"] == {"lr": 5e-4, "betas": [0.9, 0.98], "max_grad_norm": None,  # null: no clipping, kept
                          "bias_correction": True, "warmup_fraction": None, "layer_decay": None,
                          "layer_decay_variant": "electra"}
    assert s["heldout_fraction"] == 0.0 and s["model"]["hidden_size"] == PRESETS["tiny"]["hidden_size"]
    assert old["trainer"]["lr"] == 5e-4 and old["model"]["hidden_size"] is None  # the input is left alone


def test_vocab_size_given_must_match_the_tokenizer():
    model = PretrainModelConfig.parse({"preset": "tiny", "vocab_size": 500})
    with pytest.raises(ConfigError, match="model.vocab_size=500 but the tokenizer has 600"):
        model.build(600)
