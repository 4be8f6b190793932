"""Hydra entry points, one per stage: `python -m pipelines.<stage> [overrides]`."""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from omegaconf import DictConfig

CONF_DIR = Path(__file__).resolve().parents[1] / "conf"


def _register_resolvers() -> None:
    """${glue_tasks:} in conf/: the task registry's eight GLUE tasks (convbert/tasks.py), so that the stages'
    task lists have one home."""
    from omegaconf import OmegaConf

    from convbert.tasks import ELECTRA_TASKS

    OmegaConf.register_new_resolver("glue_tasks", lambda: OmegaConf.create(list(ELECTRA_TASKS)), replace=True)


_register_resolvers()
# old command-line spellings -> today's, per stage (one name per knob across the stages): refused naming the new
# key. A config dict given to the library in an old spelling still works, with a deprecation warning.
RENAMED = {"prepare": {"seed": "data_seed"}, "reproduce": {"glue_dir": "data.dir"},
           "curve": {"glue_dir": "data.dir"}}


def renamed_keys(config_name: str) -> dict[str, str]:
    if config_name == "finetune":
        from convbert.finetune.config import LEGACY_KEYS

        return {old: "model.<ConvBertConfig field>" if new == "model" else new for old, new in LEGACY_KEYS.items()}
    if config_name == "pretrain":
        from convbert.pretrain.config import RENAMED as PRETRAIN_RENAMED

        return PRETRAIN_RENAMED
    return RENAMED.get(config_name, {})


def run_hydra(main: Callable[[], None], config_name: str) -> None:
    """Call a @hydra.main function. When the command fails, name each plain override (`a.b=v`, no `+`) whose
    key the composed config lacks, with the keys that level has: Hydra names the key but not the valid ones,
    and suggests `+`, which our config parsing then refuses."""
    try:
        main()
    except SystemExit as stop:
        if stop.code not in (0, None):
            for line in unknown_key_errors(config_name, sys.argv[1:]):
                print(line, file=sys.stderr)
        raise


def callback_config(config: DictConfig) -> DictConfig:
    """Make ${hydra:...} values (the default paths.root is ${hydra:runtime.cwd}) resolvable in a callback,
    which Hydra calls before it sets its own config for the job (the job sets it again). Call it first in
    every callback method: otherwise reading hydra.run.dir raises, and Hydra turns that into a warning."""
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)
    return config


def resolved_settings(config: DictConfig) -> dict[str, Any]:
    """The settings of a composed config (its `hydra` node left out), resolved, as a callback sees them before
    Hydra starts the job."""
    from omegaconf import OmegaConf

    callback_config(config)
    return OmegaConf.to_container(OmegaConf.masked_copy(config, [k for k in config if k != "hydra"]), resolve=True)


def compose(stage: str, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The settings `python -m pipelines.<stage> <overrides>` runs with (resolved, from this directory), as a
    plain dict: what a caller of the library passes (convbert.pretrain.run, convbert.finetune.run_job after
    FinetuneConfig.from_dict) to get `make <stage>`'s recipe, defaults included, from Python."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    if stage == "finetune":
        import pipelines.finetune  # noqa: F401  (its init_name resolver names the job dirs)
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3", job_name=stage):
        config = hydra_compose(stage, overrides=list(overrides), return_hydra_config=True)
    try:
        return resolved_settings(config)
    finally:
        HydraConfig.instance().cfg = None


def unknown_key_errors(config_name: str, args: list[str]) -> list[str]:
    """One message per value override whose key is not in `config_name` composed with the command line's
    group selections (the first value of a swept one); [] when the overrides cannot be read."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        overrides = OverridesParser.create().parse_overrides([a for a in args if not a.startswith("-")])
    except Exception:  # Hydra has already said what is wrong with the syntax
        return []
    groups, keys = [], []
    for o in overrides:
        key = o.key_or_group
        if key.startswith("hydra") or o.is_delete():
            continue
        if (CONF_DIR / key).is_dir():
            value = next(o.sweep_string_iterator()) if o.is_sweep_override() else o.get_value_element_as_str()
            groups.append(f"{'+' if o.is_add() else ''}{key}={value}")
        elif not (o.is_add() or o.is_force_add()):
            keys.append(key)
    renamed = renamed_keys(config_name)
    errors = [f"error: '{k}' is now '{renamed[k]}'; the old spelling is no longer read on the command line"
              for k in keys if k in renamed]
    keys = [k for k in keys if k not in renamed]
    if not keys:
        return errors
    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            config = OmegaConf.to_container(compose(config_name, overrides=groups), resolve=False)
    except Exception:
        return errors
    for key in keys:
        node, path = config, []
        for part in key.split("."):
            if not isinstance(node, dict):
                break
            if part not in node:
                where = f"'{'.'.join(path)}'" if path else "the top level"
                errors.append(f"error: unknown key '{key}'; the valid keys of {where} are: {', '.join(sorted(node))}")
                break
            node = node[part]
            path.append(part)
    return errors
