"""The results.json record a fine-tuning job writes, and its validation."""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from convbert.report.tasks import SIGNED_METRICS, TASK_METRICS, TASKS


class ReportError(ValueError):
    """Bad input to the score table; the message names the file and the problem."""


@dataclass(frozen=True)
class ModelKey:
    """What makes two results comparable: same weights, same vocab, same architecture."""

    checkpoint_id: str
    vocab_id: str
    preset: str
    attention: str


@dataclass(frozen=True)
class ModelInfo:
    name: str
    preset: str
    attention: str
    init: str
    checkpoint_id: str
    vocab_id: str
    init_kind: str | None = None  # run_dir | hf | random

    @property
    def key(self) -> ModelKey:
        return ModelKey(self.checkpoint_id, self.vocab_id, self.preset, self.attention)


BUDGET_KINDS = ("flops", "hours")


@dataclass(frozen=True)
class Pretraining:
    tokens: int | None
    flops: float | None  # counted from the tokens processed (padding excluded)
    device_hours: float | None
    device: str | None
    steps: int | None = None
    nominal_flops: float | None = None  # steps x a full-length batch: what a FLOP budget counts
    budget_kind: str | None = None  # flops | hours: pretrained to a compute budget (trainer.budget)
    budget_value: float | None = None  # FLOPs or device-hours
    budget_used: float | None = None  # share of the budget spent

    def to_json(self) -> dict[str, Any]:
        """The results.json object: the four basic keys always, the others when known."""
        out = dataclasses.asdict(self)
        return {k: v for k, v in out.items() if v is not None or k in ("tokens", "flops", "device_hours", "device")}


@dataclass(frozen=True)
class Result:
    task: str
    metrics: dict[str, float]  # percent
    seed: int
    model: ModelInfo
    pretraining: Pretraining | None
    steps: int | None = None
    examples_seen: int | None = None
    wall_time_s: float | None = None
    flops: float | None = None
    git_revision: str | None = None
    run_dir: str | None = None
    predictions_file: str | None = None
    dev_examples: tuple[int, int] | None = None  # (used, total); used < total: scored on part of dev
    search: dict[str, Any] | None = None  # hyper-parameters chosen on dev by a search: {dir, trial, params, ...}
    extras: dict[str, Any] = field(default_factory=dict)  # other results.json keys (history, hparams, files)
    source: str = "<memory>"  # the results.json it came from
    mtime: float = 0.0

    @property
    def dev_selected(self) -> bool:
        """Hyper-parameters picked by their dev score: the dev score is then optimistic."""
        return self.search is not None

    def to_json(self) -> dict[str, Any]:
        """The results.json object (what parse_result reads back)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
               if f.name not in ("extras", "source", "mtime", "model", "pretraining", "dev_examples")}
        out["model"] = {k: v for k, v in dataclasses.asdict(self.model).items() if v is not None}
        out["pretraining"] = self.pretraining.to_json() if self.pretraining else None
        if self.dev_examples is not None:
            out["dev_examples"] = {"used": self.dev_examples[0], "total": self.dev_examples[1]}
        if self.search is None:
            del out["search"]
        return {**out, **self.extras}


def _fail(source: str, key: str, problem: str) -> ReportError:
    return ReportError(f"{source}: key '{key}': {problem}")


def _number(obj: dict, key: str, source: str, prefix: str = "", *, required: bool, integer: bool = False):
    name = prefix + key
    if key not in obj or obj[key] is None:
        if required:
            raise _fail(source, name, "missing" if key not in obj else "null (NaN/inf at evaluation?)")
        return None
    v = obj[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise _fail(source, name, f"expected a number, got {type(v).__name__} {v!r}")
    if integer and not (isinstance(v, int) or float(v).is_integer()):
        raise _fail(source, name, f"expected an integer, got {v!r}")
    if not math.isfinite(v):
        raise _fail(source, name, f"not finite ({v})")
    return int(v) if integer else float(v)


def _string(obj: dict, key: str, source: str, prefix: str = "", *, required: bool) -> str | None:
    v = obj.get(key)
    if v is None:
        if required:
            raise _fail(source, prefix + key, "missing")
        return None
    if not isinstance(v, str) or (required and not v.strip()):
        raise _fail(source, prefix + key, f"expected a non-empty string, got {v!r}")
    return v


def _object(obj: dict, key: str, source: str) -> dict:
    v = obj.get(key)
    if not isinstance(v, dict):
        raise _fail(source, key, "missing" if v is None else f"expected an object, got {type(v).__name__}")
    return v


def _metrics(task: str, raw: dict, source: str) -> dict[str, float]:
    # extra entries (SQuAD thresholds, counts) are kept when numeric and otherwise ignored
    metrics = {k: float(v) for k, v in raw.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}
    for m in TASK_METRICS[task]:
        if m in raw:
            _number(raw, m, source, "metrics.", required=True)  # names the bad value
        if m not in metrics:
            wanted = ", ".join(TASK_METRICS[task])
            raise _fail(source, f"metrics.{m}", f"missing (task {task} reports {wanted})")
        lo = -100.0 if m in SIGNED_METRICS else 0.0
        if not lo <= metrics[m] <= 100.0:
            raise _fail(source, f"metrics.{m}", f"{metrics[m]} outside [{lo:g}, 100] (metrics are percent)")
    shown = [metrics[m] for m in TASK_METRICS[task]]
    # fractions instead of percent: every reported score within [0, 1] is not a plausible trained model. Not
    # checked where an untrained model scores near 0 (CoLA's MCC, STS-B's correlations, SQuAD's EM and F1)
    if task not in ("cola", "stsb", "squad1", "squad2") and all(0.0 <= v <= 1.0 for v in shown) and any(shown):
        key = f"metrics.{TASK_METRICS[task][0]}"
        raise _fail(source, key, f"{shown} look like fractions; expected percent")
    return metrics


def _model(obj: dict, source: str) -> ModelInfo:
    raw = _object(obj, "model", source)
    fields = {k: _string(raw, k, source, "model.", required=True)
              for k in ("name", "preset", "attention", "init", "checkpoint_id", "vocab_id")}
    fields["init_kind"] = _string(raw, "init_kind", source, "model.", required=False)
    if fields["attention"] not in ("mixed", "self"):
        raise _fail(source, "model.attention", f"expected 'mixed' or 'self', got {fields['attention']!r}")
    return ModelInfo(**fields)


def _pretraining(obj: dict, source: str) -> Pretraining | None:
    raw = obj.get("pretraining")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(source, "pretraining", f"expected an object or null, got {type(raw).__name__}")
    p = "pretraining."
    return Pretraining(
        tokens=_number(raw, "tokens", source, p, required=False, integer=True),
        flops=_number(raw, "flops", source, p, required=False),
        device_hours=_number(raw, "device_hours", source, p, required=False),
        device=_string(raw, "device", source, p, required=False),
        **_budget_fields(raw, source),
    )


def _budget_fields(raw: dict, source: str) -> dict[str, Any]:
    """The optional steps and budget keys of a pretraining record (absent in results written before them)."""
    p = "pretraining."
    kind = _string(raw, "budget_kind", source, p, required=False)
    if kind is not None and kind not in BUDGET_KINDS:
        raise _fail(source, p + "budget_kind", f"expected one of {BUDGET_KINDS}, got {kind!r}")
    return dict(steps=_number(raw, "steps", source, p, required=False, integer=True),
                nominal_flops=_number(raw, "nominal_flops", source, p, required=False), budget_kind=kind,
                budget_value=_number(raw, "budget_value", source, p, required=False),
                budget_used=_number(raw, "budget_used", source, p, required=False))


def _dev_examples(obj: dict, source: str) -> tuple[int, int] | None:
    raw = obj.get("dev_examples")
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise _fail(source, "dev_examples", f"expected an object or null, got {type(raw).__name__}")
    used, total = (_number(raw, k, source, "dev_examples.", required=True, integer=True) for k in ("used", "total"))
    if not 0 < used <= total:
        raise _fail(source, "dev_examples", f"used={used} must be in 1..total={total}")
    return used, total


def _search(obj: dict, source: str) -> dict | None:
    raw = obj.get("search")
    if raw is not None and not isinstance(raw, dict):
        raise _fail(source, "search", f"expected an object or null, got {type(raw).__name__}")
    return raw


_FIELDS = {f.name for f in dataclasses.fields(Result)}


def parse_result(obj: Any, source: str = "<memory>", mtime: float = 0.0) -> Result:
    """Validate one decoded results.json; raise ReportError naming the file and key on any problem."""
    if not isinstance(obj, dict):
        raise ReportError(f"{source}: expected a JSON object at top level, got {type(obj).__name__}")
    task = _string(obj, "task", source, required=True)
    if task not in TASKS:
        raise _fail(source, "task", f"unknown task {task!r} (known: {', '.join(TASKS)})")
    return Result(
        task=task,
        metrics=_metrics(task, _object(obj, "metrics", source), source),
        seed=_number(obj, "seed", source, required=True, integer=True),
        model=_model(obj, source),
        pretraining=_pretraining(obj, source),
        steps=_number(obj, "steps", source, required=False, integer=True),
        examples_seen=_number(obj, "examples_seen", source, required=False, integer=True),
        wall_time_s=_number(obj, "wall_time_s", source, required=False),
        flops=_number(obj, "flops", source, required=False),
        git_revision=_string(obj, "git_revision", source, required=False),
        run_dir=_string(obj, "run_dir", source, required=False),
        predictions_file=_string(obj, "predictions_file", source, required=False),
        dev_examples=_dev_examples(obj, source),
        search=_search(obj, source),
        extras={k: v for k, v in obj.items() if k not in _FIELDS},
        source=source,
        mtime=mtime,
    )
