"""Typed settings, shared by every stage's config: the ConfigError type, strict mapping -> dataclass parsing
(an unknown key fails naming the valid ones), the integer / seed / bool checks, and renamed-key moves."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterable, Mapping
from typing import Any


class ConfigError(ValueError):
    """A config key or value is wrong; the message names the group and key."""


def reject_unknown(group: str, keys: Iterable[str], valid: Iterable[str], error: type[Exception] = ConfigError
                   ) -> None:
    """A typo (or a key added with `+`) fails naming it and the group's valid keys instead of being ignored."""
    valid = set(valid)
    unknown = sorted(set(keys) - valid)
    if unknown:
        raise error(f"unknown {group} config key(s) {unknown}; valid keys: {sorted(valid)}")


def from_mapping(cls: type, group: str, values: Mapping[str, Any] | Any, error: type[Exception] = ConfigError) -> Any:
    """Build a config dataclass from a plain dict (or DictConfig), naming unknown keys instead of ignoring
    them: every typed config group goes through here, so a typo fails with the group's valid keys."""
    if isinstance(values, cls):
        return values
    if type(values).__module__.startswith("omegaconf"):  # a DictConfig: same plain dict (and hash) as to_container
        from omegaconf import OmegaConf

        values = OmegaConf.to_container(values, resolve=True)
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise error(f"{group} config must be a mapping, got {type(values).__name__}")
    reject_unknown(group, values, (f.name for f in dataclasses.fields(cls)), error)
    return cls(**dict(values))


def check_int(name: str, value: Any, low: int | None = 1, nullable: bool = False,
              error: type[Exception] = ConfigError) -> None:
    """`name` (the key as the user spells it: trainer.epochs) must hold an integer >= low (any integer when low
    is None), or null where `nullable`. A bool is not an integer here: `epochs: true` is a mistake."""
    if value is None and nullable:
        return
    if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
        what = "an integer" if low is None else "a positive integer" if low == 1 else f"an integer >= {low}"
        raise error(f"{name} must be {what}{' or null' if nullable else ''}, got {value!r}")


MAX_SEED = 2**32 - 1  # numpy's RandomState and Generator take seeds in [0, 2**32 - 1]


def check_seed(name: str, value: Any, error: type[Exception] = ConfigError) -> None:
    """A seed (`name` as the user spells it) must be an integer in [0, MAX_SEED]: checked before any work, since
    numpy and torch refuse others only once they are used, after tokenizing or with their own wording."""
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SEED:
        raise error(f"{name} must be an integer in [0, {MAX_SEED}], got {value!r}")


def check_ints(config: Any, group: str, keys: Iterable[str], low: int | None = 1, nullable: bool = False,
               error: type[Exception] = ConfigError) -> None:
    """check_int for each of `keys`, attributes of the config dataclass `config`, named group.key."""
    for key in keys:
        check_int(f"{group}.{key}", getattr(config, key), low, nullable, error)


def check_bools(config: Any, group: str, keys: Iterable[str], nullable: bool = False,
                error: type[Exception] = ConfigError) -> None:
    """Each of `keys` (attributes of the config dataclass `config`, named group.key) must be true or false (or
    null where `nullable`). An override like `key=no` arrives as the string 'no', which Python counts as true."""
    for key in keys:
        value = getattr(config, key)
        if not (isinstance(value, bool) or (value is None and nullable)):
            raise error(f"{group}.{key} must be true or false{' or null' if nullable else ''}, got {value!r}")


def dotted_parent(cfg: dict[str, Any], dotted: str, create: bool = False) -> tuple[dict[str, Any] | None, str]:
    """The dict in the nested `cfg` that holds dotted key `dotted` ('optim.lr': cfg['optim']), and the last
    part of the key. A group missing (or null) on the way gives None, or is created when `create`."""
    *groups, key = dotted.split(".")
    holder = cfg
    for group in groups:
        if create and holder.get(group) is None:
            holder[group] = {}
        holder = holder.get(group)
        if not isinstance(holder, dict):
            if create:
                raise ConfigError(f"{group} config must be a mapping (to hold {dotted}), got {type(holder).__name__}")
            return None, key
    return holder, key


def move_renamed(cfg: Mapping[str, Any], renamed: Mapping[str, str], skip_unset: bool = False
                 ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
    """A copy of the nested dict `cfg` with each old dotted key of `renamed` (a top-level key has no dot) moved
    to its new one, and the (old, new) pairs moved, for the caller's deprecation warning. A mapping moved onto
    a mapping is merged into it (model_overrides -> model); a tuple becomes a list, as in the JSON a run
    records. `skip_unset`: a None or {} value is dropped, not moved: the placeholder a config file keeps so
    that the old spelling can still be overridden without `+`."""
    out = copy.deepcopy(dict(cfg))
    moved = []
    for old, new in renamed.items():
        holder, key = dotted_parent(out, old)
        if holder is None or key not in holder:
            continue
        value = holder.pop(key)
        if skip_unset and (value is None or value == {}):
            continue
        target, key = dotted_parent(out, new, create=True)
        if isinstance(value, Mapping) and isinstance(target.get(key), dict):
            target[key].update(value)
        else:
            target[key] = list(value) if isinstance(value, tuple) else value
        moved.append((old, new))
    return out, moved


def runtime(default: Any = dataclasses.MISSING, *, default_factory: Any = dataclasses.MISSING) -> Any:
    """A config dataclass field about how (or how long) a run runs, not what it computes: the jobs that continue
    one run may change it, and the records a resume is checked against leave it out (`runtime_fields`,
    `result_settings`)."""
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"runtime": True})


def runtime_fields(cls: type) -> list[str]:
    return [f.name for f in dataclasses.fields(cls) if f.metadata.get("runtime")]


def result_settings(value: Any) -> Any:
    """A config dataclass as plain data without its runtime fields, recursively: what defines its results."""
    if dataclasses.is_dataclass(value):
        return {f.name: result_settings(getattr(value, f.name)) for f in dataclasses.fields(value)
                if not f.metadata.get("runtime")}
    if isinstance(value, list | tuple):
        return [result_settings(v) for v in value]
    if isinstance(value, dict):
        return {k: result_settings(v) for k, v in value.items()}
    return copy.deepcopy(value)
