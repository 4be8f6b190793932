"""Group results by model and task and summarise them over seeds: the score table's data."""

from __future__ import annotations

import json
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path

from convbert.report.budget import compute_basis_notes
from convbert.report.schema import ModelInfo, ModelKey, Pretraining, ReportError, Result
from convbert.report.tasks import (
    ELECTRA_TASKS,
    GLUE_TASKS,
    MAIN_METRIC,
    SQUAD_TASKS,
    TASK_METRICS,
    TASK_TITLES,
    TASKS,
    order_tasks,
)

DEV_SELECTED_MARK = "§"  # hyper-parameters chosen on dev by a search
COLLAPSED_MARK = "!"  # dev predictions collapsed onto one class / value in at least one seed
# published rows sometimes give one number for a two-metric task without saying which metric it is
REPORTED = "reported"


@dataclass(frozen=True)
class Stats:
    """Summary of one metric over seeds; a published figure has only the median and n=None."""

    median: float
    mean: float | None = None
    std: float | None = None  # sample std (ddof=1); None when n < 2
    min: float | None = None
    max: float | None = None
    n: int | None = None

    @classmethod
    def of(cls, values: Sequence[float]) -> Stats:
        v = list(values)
        return cls(median=statistics.median(v), mean=statistics.fmean(v),
                   std=statistics.stdev(v) if len(v) > 1 else None, min=min(v), max=max(v), n=len(v))


@dataclass
class Cell:
    """One model on one task."""

    task: str
    stats: dict[str, Stats]
    seeds: tuple[int, ...] = ()  # seeds present, sorted
    # metric -> per-seed values, aligned with seeds
    values: dict[str, tuple[float, ...]] = field(default_factory=dict)
    missing_seeds: tuple[int, ...] = ()
    sources: tuple[str, ...] = ()  # results.json paths, aligned with seeds
    dev_selected: bool = False  # hyper-parameters chosen on dev by a search: the dev score is optimistic
    collapsed: tuple[int, ...] = ()  # seeds whose dev predictions collapsed onto one answer (results.json)

    def value(self, metric: str) -> float | None:
        s = self.stats.get(metric)
        return None if s is None else s.median


@dataclass(frozen=True)
class Average:
    """A GLUE average; value is None when a task it needs is missing (never averaged over a subset)."""

    value: float | None
    missing: tuple[str, ...] = ()
    approximate: tuple[str, ...] = ()  # tasks where a published single number stood in for the metric


@dataclass(frozen=True)
class Compute:
    pretrain_tokens: int | None = None
    pretrain_flops: float | None = None
    pretrain_device_hours: float | None = None
    pretrain_device: str | None = None
    finetune_flops: float | None = None  # summed over the row's runs
    finetune_hours: float | None = None  # summed wall time over the row's runs
    n_runs: int = 0
    pretraining: Pretraining | None = None  # the whole record: steps, nominal FLOPs, budget (report/budget.py)


@dataclass
class Row:
    label: str
    cells: dict[str, Cell]  # only tasks with at least one run (or a published number)
    key: ModelKey | None = None  # None for a published row
    model: ModelInfo | None = None
    expected_seeds: tuple[int, ...] = ()
    compute: Compute = field(default_factory=Compute)
    averages: dict[str, Average] = field(default_factory=dict)
    published: str | None = None  # citation of a published row; None for our runs
    baseline: str | None = None  # what a reference row fitted here on the jobs' data is (report/baselines.py)
    notes: list[str] = field(default_factory=list)

    @property
    def is_reference(self) -> bool:
        """A published or a fitted reference row: no seeds, never compared with our models."""
        return self.published is not None or self.baseline is not None

    @property
    def kind(self) -> str:
        return "published" if self.published is not None else "baseline" if self.baseline is not None else "run"


@dataclass
class Table:
    rows: list[Row]
    tasks: tuple[str, ...]  # columns, canonical order
    notes: list[str] = field(default_factory=list)

    @property
    def models(self) -> list[Row]:
        return [r for r in self.rows if not r.is_reference]

    def row(self, label: str) -> Row:
        for r in self.rows:
            if r.label == label:
                return r
        raise ReportError(f"no model labelled {label!r}; known: {', '.join(r.label for r in self.rows)}")


# ---- GLUE averages (docs/design.md §5) ----

AVERAGES: dict[str, str] = {
    "electra8": "ELECTRA's convention: plain mean over the 8 tasks without WNLI, one metric each (CoLA MCC, "
                "STS-B Spearman, MNLI matched accuracy, accuracy for the rest incl. MRPC and QQP)",
    "lb9": "GLUE-leaderboard convention: average within each task first (MRPC F1/acc, QQP F1/acc, STS-B "
           "Pearson/Spearman, MNLI m/mm), then the mean over all 9 tasks incl. WNLI",
    "lb8": "the leaderboard convention over the 8 tasks without WNLI (for runs that skip WNLI; not a "
           "leaderboard score)",
}
AVERAGE_SHORT: dict[str, str] = {
    "electra8": "GLUE-8 (ELECTRA)", "lb9": "GLUE-LB (9)", "lb8": "GLUE-LB (8, no WNLI)",
}

Lookup = Callable[[str, str], "tuple[float | None, bool]"]


def _mean_over(tasks: Sequence[str], score: Callable[[str], tuple[float | None, bool]]) -> Average:
    got = {t: score(t) for t in tasks}
    missing = tuple(t for t, (v, _) in got.items() if v is None)
    approx = tuple(t for t, (v, exact) in got.items() if v is not None and not exact)
    value = None if missing else statistics.fmean(v for v, _ in got.values())
    return Average(value, missing, approx)


def glue_averages(lookup: Lookup) -> dict[str, Average]:
    """lookup(task, metric) -> (median or None, exact). Averages are means of per-task medians."""

    def main(t: str) -> tuple[float | None, bool]:
        return lookup(t, MAIN_METRIC[t])

    def within(t: str) -> tuple[float | None, bool]:
        got = [lookup(t, m) for m in TASK_METRICS[t]]
        if any(v is None for v, _ in got):
            return None, True
        return statistics.fmean(v for v, _ in got), all(e for _, e in got)

    return {"electra8": _mean_over(ELECTRA_TASKS, main), "lb9": _mean_over(GLUE_TASKS, within),
            "lb8": _mean_over(ELECTRA_TASKS, within)}


def row_lookup(row: Row) -> Lookup:
    """Median of a metric; a published row's unlabelled single number stands in (flagged inexact)."""

    def lookup(task: str, metric: str) -> tuple[float | None, bool]:
        cell = row.cells.get(task)
        if cell is None:
            return None, True
        if metric in cell.stats:
            return cell.stats[metric].median, True
        if REPORTED in cell.stats:
            return cell.stats[REPORTED].median, False
        return None, True

    return lookup


# ---- grouping ----


def _short(value: str, n: int = 8) -> str:
    return value if len(value) <= n + 2 else value[:n]


def _labels(groups: dict[ModelKey, list[Result]]) -> tuple[dict[ModelKey, str], list[str]]:
    """Row label = model.name; keys sharing a name get the fields that tell them apart appended."""
    notes, names = [], {}
    for key, rs in groups.items():
        counts = Counter(r.model.name for r in rs)
        names[key] = sorted(counts, key=lambda n: (-counts[n], n))[0]
        if len(counts) > 1:
            notes.append(f"{names[key]}: one checkpoint carries several names ({', '.join(sorted(counts))}); "
                         f"labelled {names[key]!r}")
    by_name: dict[str, list[ModelKey]] = defaultdict(list)
    for key, name in names.items():
        by_name[name].append(key)
    labels = {}
    for name, keys in by_name.items():
        if len(keys) == 1:
            labels[keys[0]] = name
            continue
        differ = [f.name for f in fields(ModelKey) if len({getattr(k, f.name) for k in keys}) > 1]
        for n in (8, 10**6):  # short ids unless two of them share a prefix
            tags = {k: ", ".join(f"{f}={_short(getattr(k, f), n)}" for f in differ) for k in keys}
            if len(set(tags.values())) == len(keys):
                break
        labels |= {k: f"{name} [{tags[k]}]" for k in keys}
        notes.append(f"{len(keys)} different models are named {name!r} (different {', '.join(differ)}); "
                     "they are kept apart")
    return labels, notes


def _dedupe(label: str, results: list[Result], duplicates: str) -> tuple[list[Result], list[str]]:
    """One result per (task, seed); a rerun keeps the newest file, or is an error."""
    by_run: dict[tuple[str, int], list[Result]] = defaultdict(list)
    for r in results:
        by_run[(r.task, r.seed)].append(r)
    kept, notes = [], []
    for (task, seed), rs in sorted(by_run.items()):
        rs = sorted(rs, key=lambda r: (r.mtime, r.source))
        if len(rs) > 1:
            files = ", ".join(r.source for r in rs)
            if duplicates == "error":
                raise ReportError(f"{label}: {task} seed {seed} has {len(rs)} results: {files}")
            notes.append(f"{label}: {task} seed {seed} has {len(rs)} results; kept {rs[-1].source}")
        kept.append(rs[-1])
    return kept, notes


def _cell(task: str, results: list[Result], expected: tuple[int, ...]) -> Cell:
    rs = sorted(results, key=lambda r: r.seed)
    seeds = tuple(r.seed for r in rs)
    metrics = [m for m in rs[0].metrics if all(m in r.metrics for r in rs)]  # reported + extras all runs have
    values = {m: tuple(r.metrics[m] for r in rs) for m in metrics}
    return Cell(task, {m: Stats.of(v) for m, v in values.items()}, seeds, values,
                tuple(s for s in expected if s not in seeds), tuple(r.source for r in rs),
                any(r.dev_selected for r in rs), tuple(r.seed for r in rs if r.extras.get("collapsed") is True))


def _sum(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) if known else None


def _compute(label: str, results: list[Result]) -> tuple[Compute, list[str]]:
    notes = []
    pre = Counter(r.pretraining for r in results if r.pretraining is not None)
    p = pre.most_common(1)[0][0] if pre else Pretraining(None, None, None, None)
    if len(pre) > 1:
        notes.append(f"{label}: runs disagree on the pretraining record ({len(pre)} versions); "
                     "showing the most common")
    if pre and sum(pre.values()) < len(results):
        notes.append(f"{label}: {len(results) - sum(pre.values())} runs have no pretraining record")
    hours = _sum([None if r.wall_time_s is None else r.wall_time_s / 3600 for r in results])
    if any(r.wall_time_s is None for r in results) and hours is not None:
        notes.append(f"{label}: fine-tuning time is a lower bound (some runs lack wall_time_s)")
    ft_flops = _sum([r.flops for r in results])
    return Compute(p.tokens, p.flops, p.device_hours, p.device, ft_flops, hours, len(results),
                   pretraining=p if pre else None), notes


def collapsed_jobs(table: Table) -> list[str]:
    """'<model>: <task> seed <s> (<results.json>)' for every run whose dev predictions collapsed."""
    return [f"{row.label}: {TASK_TITLES[t]} seed {seed} ({cell.sources[cell.seeds.index(seed)]})"
            for row in table.models for t, cell in row.cells.items() for seed in cell.collapsed]


def _missing_notes(row: Row, tasks: Sequence[str]) -> list[str]:
    notes = []
    absent = [t for t in tasks if t not in row.cells]
    if absent:
        notes.append(f"{row.label}: no results for {', '.join(TASK_TITLES[t] for t in absent)}")
    for t in tasks:
        c = row.cells.get(t)
        if c is not None and c.collapsed:
            notes.append(f"{COLLAPSED_MARK} {row.label}: {TASK_TITLES[t]} collapsed in {len(c.collapsed)} of "
                         f"{len(c.seeds)} seed(s) ({', '.join(map(str, c.collapsed))}): its dev predictions are "
                         "(nearly) all one class or one value, so the score measures no learning")
        if c is not None and c.missing_seeds:
            missing = ", ".join(map(str, c.missing_seeds))
            notes.append(f"{row.label}: {TASK_TITLES[t]} missing seed(s) {missing} "
                         f"({len(c.seeds)}/{len(c.seeds) + len(c.missing_seeds)} present)")
    return notes


def _model_row(label: str, results: list[Result], seeds: tuple[int, ...] | None,
               duplicates: str) -> tuple[Row, list[str]]:
    kept, notes = _dedupe(label, results, duplicates)
    for task in order_tasks({r.task for r in kept}):
        partial = [r.dev_examples for r in kept
                   if r.task == task and r.dev_examples and r.dev_examples[0] < r.dev_examples[1]]
        if partial:
            used, total = min(partial)
            notes.append(f"{label}: {TASK_TITLES[task]} scored on part of the dev set ({used} of {total} examples, "
                         "max_eval_examples): not comparable with full-dev scores")
    expected = seeds if seeds is not None else tuple(sorted({r.seed for r in kept}))
    by_task: dict[str, list[Result]] = defaultdict(list)
    for r in kept:
        by_task[r.task].append(r)
    cells = {t: _cell(t, by_task[t], expected) for t in order_tasks(by_task)}
    compute, compute_notes = _compute(label, kept)
    model = kept[0].model
    row = Row(label, cells, key=model.key, model=model, expected_seeds=expected, compute=compute)
    row.averages = glue_averages(row_lookup(row))
    return row, notes + compute_notes


def best_trial(search_dir: str) -> dict | None:
    """The best finished trial recorded in a search's search_summary.json (None: none yet / unreadable)."""
    try:
        summary = json.loads((Path(search_dir) / "search_summary.json").read_text())
    except (OSError, ValueError):
        return None
    best = summary.get("best") if isinstance(summary, dict) else None
    return best if isinstance(best, dict) and "number" in best else None


def select_searches(results: Sequence[Result]) -> tuple[list[Result], list[str]]:
    """Results of a hyper-parameter search: only its best trial's (one row per seed, like any run), noted with
    the trial and its parameters; a search without a finished trial is left out."""
    kept, best = [], {}
    for r in results:
        if r.search is None:
            kept.append(r)
            continue
        d = str(r.search.get("dir"))
        if d not in best:
            best[d] = best_trial(d)
        if best[d] is not None and r.search.get("trial") == best[d]["number"]:
            kept.append(r)
    notes = []
    for d, b in best.items():
        if b is None:
            notes.append(f"search {d}: no finished trial in its search_summary.json; its results are left out")
        else:
            params = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in b["params"].items())
            notes.append(f"{DEV_SELECTED_MARK} search {d}: best trial {b['number']} (objective {b['value']:.2f}; "
                         f"{params}); hyper-parameters chosen on the dev set, so its dev scores are optimistic")
    return kept, notes


def _columns(results: Iterable[Result], tasks: Sequence[str] | None) -> tuple[str, ...]:
    if tasks is not None:
        unknown = [t for t in tasks if t not in TASKS]
        if unknown:
            raise ReportError(f"unknown task(s) {', '.join(unknown)} in tasks (known: {', '.join(TASKS)})")
        return order_tasks(tasks)
    seen = {r.task for r in results}
    # every GLUE task gets a column once any GLUE result exists, so a missing one is visible
    return order_tasks((set(GLUE_TASKS) if seen & set(GLUE_TASKS) else set()) | (seen & set(SQUAD_TASKS)))


def aggregate(results: Sequence[Result], *, seeds: Sequence[int] | None = None,
              tasks: Sequence[str] | None = None, duplicates: str = "latest",
              references: Sequence[Row] = ()) -> Table:
    """Group by (checkpoint_id, vocab_id, preset, attention) and task; summarise each metric over seeds.

    seeds: the seeds of the table, each task should have all of them and others are left out (None: the
    union each model ran); tasks: the columns (None:
    all of GLUE once any GLUE result exists, plus SQuAD tasks that were run); duplicates: 'latest' keeps
    the newest file of a rerun (noted), 'error' refuses; references: published and fitted reference rows to
    append.
    """
    if not results:
        raise ReportError("no results to aggregate")
    results, search_notes = select_searches(results)
    if not results:
        raise ReportError("no results to aggregate: " + "; ".join(search_notes))
    if duplicates not in ("latest", "error"):
        raise ReportError(f"duplicates must be 'latest' or 'error', got {duplicates!r}")
    expected = tuple(sorted(set(seeds))) if seeds is not None else None
    left_out = sorted({r.seed for r in results} - set(expected)) if expected is not None else []
    if left_out:  # the table is over exactly these seeds, so that every median is over the same ones
        results = [r for r in results if r.seed in expected]
        if not results:
            raise ReportError(f"no results for seeds {list(expected)} (found seeds {left_out})")
    groups: dict[ModelKey, list[Result]] = defaultdict(list)
    for r in results:
        groups[r.model.key].append(r)
    labels, notes = _labels(groups)
    notes += search_notes
    if left_out:
        notes.append(f"left out results of seed(s) {', '.join(map(str, left_out))}: not in seeds")
    columns = _columns(results, tasks)
    rows = []
    for key in sorted(groups, key=lambda k: labels[k]):
        row, row_notes = _model_row(labels[key], groups[key], expected, duplicates)
        rows.append(row)
        notes += row_notes + _missing_notes(row, columns)
    notes += compute_basis_notes([(r.label, r.compute.pretraining) for r in rows])  # equal compute or steps?
    taken = {r.label for r in rows}
    for ref in references:
        if ref.label in taken:  # a run named like a reference row: keep them apart
            ref.label = f"{ref.label} ({ref.kind})"
        ref.averages = glue_averages(row_lookup(ref))
    return Table(rows + list(references), columns, notes)
