"""The checks every config group shares (convbert/config.py): integer and yes/no knobs, unknown keys, renamed
keys."""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from convbert.data import CorpusConfig, DataError
from convbert.finetune import DataConfig as FinetuneDataConfig
from convbert.finetune import FinetuneTrainerConfig
from convbert.glue.run import GlueTaskConfig
from convbert.settings import ConfigError, check_int, check_ints, dotted_parent, move_renamed, reject_unknown
from convbert.squad.run import SquadTaskConfig
from convbert.train.optim import OptimConfig


@pytest.mark.parametrize("value", [0, -1, 1.0, "3", True, None])
def test_check_int_rejects_non_positive_floats_strings_bools_and_null(value):
    with pytest.raises(ConfigError, match=rf"^trainer.epochs must be a positive integer, got {value!r}$"):
        check_int("trainer.epochs", value)


def test_check_int_bounds_null_and_error_type():
    check_int("trainer.epochs", 1)
    check_int("trainer.epochs", None, nullable=True)
    check_int("seed", -7, low=None)
    check_int("trainer.eval_examples", 0, low=0)
    with pytest.raises(ConfigError, match=r"^trainer.threads must be a positive integer or null, got 0$"):
        check_int("trainer.threads", 0, nullable=True)
    with pytest.raises(ConfigError, match=r"^trainer.eval_examples must be an integer >= 0, got -1$"):
        check_int("trainer.eval_examples", -1, low=0)
    with pytest.raises(ConfigError, match=r"^seed must be an integer, got 1.5$"):
        check_int("seed", 1.5, low=None)
    with pytest.raises(ValueError, match="max_seq_length must be an integer >= 5, got 4") as e:
        check_int("max_seq_length", 4, low=5, error=ValueError)
    assert type(e.value) is ValueError


def test_check_ints_names_the_first_bad_key_of_the_group():
    @dataclass
    class Trainer:
        batch_size: int = 8
        log_every: int = 0
        max_steps: int = -1

    with pytest.raises(ConfigError, match=r"^trainer.log_every must be a positive integer, got 0$"):
        check_ints(Trainer(), "trainer", ("batch_size", "log_every", "max_steps"))
    check_ints(Trainer(), "trainer", ("batch_size", "log_every"), low=0)


def test_reject_unknown_names_the_unknown_and_the_valid_keys():
    reject_unknown("model", {"preset": 1}, ("preset", "vocab"))
    with pytest.raises(ConfigError, match=r"^unknown model config key\(s\) \['presett', 'x'\]; "
                                          r"valid keys: \['preset', 'vocab'\]$"):
        reject_unknown("model", ["x", "presett", "vocab"], ("vocab", "preset"))


RENAMED = {"lr": "optim.lr", "trainer.adam_betas": "optim.betas", "model_overrides": "model",
           "task.data_dir": "data.dir", "trainer.warmup": "optim.warmup"}


def test_move_renamed_moves_top_level_and_nested_keys_and_merges_mappings():
    cfg = {"lr": 1e-4, "trainer": {"adam_betas": (0.9, 0.98), "batch_size": 8},
           "model_overrides": {"attention": "self"}, "model": {"preset": "tiny", "attention": None},
           "task": {"name": "rte", "data_dir": "/glue"}, "optim": {"lr": 3e-4, "eps": 1e-6}}
    out, moved = move_renamed(cfg, RENAMED)
    assert out == {"trainer": {"batch_size": 8}, "model": {"preset": "tiny", "attention": "self"},
                   "task": {"name": "rte"}, "optim": {"lr": 1e-4, "eps": 1e-6, "betas": [0.9, 0.98]},
                   "data": {"dir": "/glue"}}
    assert moved == [("lr", "optim.lr"), ("trainer.adam_betas", "optim.betas"), ("model_overrides", "model"),
                     ("task.data_dir", "data.dir")]
    assert cfg["lr"] == 1e-4 and cfg["trainer"]["adam_betas"] == (0.9, 0.98)  # the input is left alone
    assert cfg["model"]["attention"] is None


def test_move_renamed_keeps_or_drops_unset_values():
    cfg = {"lr": None, "model_overrides": {}, "trainer": {"adam_betas": None}, "optim": {"betas": [0.9, 0.999]}}
    out, moved = move_renamed(cfg, RENAMED)  # a null is a value: an old run's max_grad_norm=null meant no clipping
    assert out["optim"] == {"lr": None, "betas": None} and out["model"] == {} and len(moved) == 3
    out, moved = move_renamed(cfg, RENAMED, skip_unset=True)  # placeholders of the old spellings
    assert out == {"trainer": {}, "optim": {"betas": [0.9, 0.999]}} and moved == []


def test_dotted_parent_finds_or_creates_the_group():
    cfg = {"optim": {"lr": 1}, "model": None, "name": "x"}
    assert dotted_parent(cfg, "optim.lr") == ({"lr": 1}, "lr") and dotted_parent(cfg, "name") == (cfg, "name")
    assert dotted_parent(cfg, "model.preset") == (None, "preset") and dotted_parent(cfg, "a.b.c") == (None, "c")
    holder, key = dotted_parent(cfg, "a.b.c", create=True)
    holder[key] = 1
    assert cfg["a"] == {"b": {"c": 1}} and dotted_parent(cfg, "model.preset", create=True)[0] is cfg["model"] == {}
    with pytest.raises(ConfigError, match=r"^name config must be a mapping \(to hold name.x\), got str$"):
        dotted_parent(cfg, "name.x", create=True)


@pytest.mark.parametrize("build, error, message", [
    (lambda: CorpusConfig(source="pydocs", max_documents=True), DataError,
     "corpus.max_documents must be a positive integer or null, got True"),  # a bool used to pass as 1
    (lambda: OptimConfig(lr=1e-4, warmup_steps=-1), ConfigError,
     "optim.warmup_steps must be an integer >= 0 or null, got -1"),
])
def test_corpus_and_optim_groups_use_the_shared_integer_check(build, error, message):
    with pytest.raises(error, match=re.escape(message)):
        build()


@pytest.mark.parametrize("build, message", [
    (lambda: FinetuneDataConfig(predict_test="no"), "data.predict_test must be true or false, got 'no'"),
    (lambda: FinetuneDataConfig(max_train_examples=0), "data.max_train_examples must be a positive integer or null"),
    (lambda: FinetuneDataConfig(max_eval_examples=-3), "data.max_eval_examples must be a positive integer or null"),
    (lambda: FinetuneTrainerConfig(keep_checkpoint="no"), "trainer.keep_checkpoint must be true or false"),
    (lambda: GlueTaskConfig(kind="glue", name="mrpc", double_unordered="no"),
     "task.double_unordered must be true or false or null, got 'no'"),
    (lambda: SquadTaskConfig(kind="squad", name="squad1", n_best=0), "task.n_best must be a positive integer"),
    (lambda: SquadTaskConfig(kind="squad", name="squad1", max_answer_length=0), "task.max_answer_length must be"),
    (lambda: SquadTaskConfig(kind="squad", name="squad1", eval_every_epoch="yes"), "task.eval_every_epoch must be"),
    (lambda: OptimConfig(warmup_steps=0, bias_correction="false"), "optim.bias_correction must be true or false"),
])
def test_yes_no_settings_and_example_caps_are_checked(build, message):
    # an override like key=no reaches the config as the string 'no', which Python would count as true
    with pytest.raises(ConfigError, match=re.escape(message)):
        build()
