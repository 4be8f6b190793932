"""Markdown, CSV and LaTeX renderings of a Table (+ Comparison), and atomic writing of all outputs."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path

from convbert.io import write_bytes_atomic, write_text_atomic
from convbert.report.aggregate import AVERAGE_SHORT, AVERAGES, COLLAPSED_MARK, REPORTED, Average, Table
from convbert.report.compare import Comparison
from convbert.report.format import (
    BASELINE_MARK,
    MISSING,
    PUBLISHED_MARK,
    UNNAMED_MARK,
    main_cells,
    main_headers,
    num,
)
from convbert.report.schema import Pretraining, ReportError
from convbert.report.tasks import TASK_METRICS, TASK_TITLES

# ---- Markdown ----


def _md_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"

    return [line(headers), line(["---"] * len(headers))] + [line(r) for r in rows]


def _md_stats(table: Table) -> list[str]:
    head = ["Model", "Task", "Metric", "median", "mean", "std", "min", "max", "n", "missing seeds"]
    rows = []
    for r in table.models:
        for t in table.tasks:
            cell = r.cells.get(t)
            if cell is None:  # one line for a task that was not run at all
                miss = ", ".join(map(str, r.expected_seeds)) or "all"
                rows.append([r.label, TASK_TITLES[t], "/".join(TASK_METRICS[t])] + [MISSING] * 5 + ["0", miss])
                continue
            for m in TASK_METRICS[t]:
                s = cell.stats[m]
                rows.append([r.label, TASK_TITLES[t], m, num(s.median, 2), num(s.mean, 2), num(s.std, 2),
                             num(s.min, 2), num(s.max, 2), str(s.n),
                             ", ".join(map(str, cell.missing_seeds)) or "none"])
    return _md_table(head, rows)


def _md_comparison(c: Comparison) -> list[str]:
    pct = f"{100 * c.confidence:g}%"
    head = ["Task", "Metric", c.a, c.b, f"{c.a} − {c.b}", "p", f"{pct} CI", "significant", "n (a/b)"]
    rows = []
    for d in c.rows:
        title = AVERAGE_SHORT.get(d.task) or TASK_TITLES[d.task]
        ci = MISSING if d.low is None else f"[{d.low:+.2f}, {d.high:+.2f}]"
        diff = MISSING if d.diff is None else f"{d.diff:+.2f}"
        p = MISSING if d.p_value is None else f"{d.p_value:.3g}"
        sig = d.note or {True: "yes", False: "no"}[d.significant]
        rows.append([title, d.metric, num(d.a, 2), num(d.b, 2), diff, p, ci, sig, f"{d.n_a}/{d.n_b}"])
    return [f"## Comparison: {c.a} vs {c.b}", "", f"Method: {c.method}.", ""] + _md_table(head, rows)


def _md_models(table: Table) -> list[str]:
    head = ["Model", "checkpoint_id", "vocab_id", "preset", "attention", "init", "runs"]
    rows = [[r.label, r.key.checkpoint_id, r.key.vocab_id, r.key.preset, r.key.attention,
             r.model.init if r.model else MISSING, str(r.compute.n_runs)] for r in table.models]
    return _md_table(head, rows)


def to_markdown(table: Table, comparison: Comparison | None = None) -> str:
    out = ["# Score table", "",
           "Dev-set scores in percent, median over fine-tuning seeds; each column lists the task's metrics "
           "(MNLI m/mm = matched/mismatched accuracy, STS-B P/S = Pearson/Spearman, EM = exact match). "
           f"`(k/N)`: only k of N expected seeds present. `{MISSING}`: missing (not run / not published). "
           f"{PUBLISHED_MARK}: published number, not run here. {BASELINE_MARK}: reference row fitted here on the "
           f"same data (see below). {UNNAMED_MARK}: the source gives one number "
           f"for a two-metric task without naming the metric. {COLLAPSED_MARK}: collapsed, the dev predictions of "
           "at least one seed are (nearly) all one class or one value (see Notes).", ""]
    out += _md_table(main_headers(table), [main_cells(table, r) for r in table.rows])
    out += ["", "Averages (means of per-task medians; shown only when every task they need is present):"]
    out += [f"- **{AVERAGE_SHORT[k]}**: {AVERAGES[k]}" for k in AVERAGE_SHORT]
    out += ["- Compute: pretraining tokens/FLOPs/device-hours from the runs' pretraining records; "
            "fine-tune wall-h = summed wall time of the row's fine-tuning runs; pretrain budget = the compute "
            "budget the run was pretrained to (trainer.budget) and the share of it spent."]
    if table.models:
        out += ["", "## Per-task statistics over seeds", ""] + _md_stats(table)
    if comparison is not None:
        out += [""] + _md_comparison(comparison)
    if table.models:
        out += ["", "## Models (grouped by checkpoint_id, vocab_id, preset, attention)", ""]
        out += _md_models(table)
    fitted = [r for r in table.rows if r.kind == "baseline"]
    if fitted:
        out += ["", f"## Reference rows fitted on the same data ({BASELINE_MARK})", "",
                "Fitted and scored here on exactly the training and dev examples the fine-tuning jobs used, with "
                "the same metric functions; never part of a comparison. A fine-tuned model at or below them has "
                "learned no more than the label distribution or word counts.", ""]
        out += [f"- {r.label}: {r.baseline}" for r in fitted]
    refs = [r for r in table.rows if r.kind == "published"]
    if refs:
        out += ["", f"## Published rows ({PUBLISHED_MARK})", ""]
        out += [f"- {r.label}: {r.published}" + (f". {' '.join(r.notes)}" if r.notes else "") for r in refs]
    if table.notes:
        out += ["", "## Notes", ""] + [f"- {n}" for n in table.notes]
    return "\n".join(out) + "\n"


# ---- CSV ----

BUDGET_COLUMNS = ["pretrain_steps", "pretrain_nominal_flops", "pretrain_budget_kind", "pretrain_budget",
                  "pretrain_budget_used"]


def budget_columns(p: Pretraining | None) -> list[object]:
    if p is None:
        return [None] * len(BUDGET_COLUMNS)
    return [p.steps, p.nominal_flops, p.budget_kind, p.budget_value, p.budget_used]



def _csv(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows([["" if v is None else v for v in r] for r in rows])
    return buf.getvalue()


def table_csv(table: Table) -> str:
    """Wide: one row per model, medians per task/metric, averages, compute. Empty field = missing."""
    metric_cols = [(t, m) for t in table.tasks for m in TASK_METRICS[t]]
    metric_cols += [(t, REPORTED) for t in table.tasks
                    if any(t in r.cells and REPORTED in r.cells[t].stats for r in table.rows)]
    header = (["model", "kind"] + [f"{t}_{m}" for t, m in metric_cols] + [f"{t}_n" for t in table.tasks]
              + [f"glue_{k}" for k in AVERAGE_SHORT]
              + ["pretrain_tokens", "pretrain_flops", "pretrain_device_hours", "pretrain_device",
                 "finetune_flops", "finetune_hours", "checkpoint_id", "vocab_id", "preset", "attention",
                 "source"] + BUDGET_COLUMNS)
    rows = []
    for r in table.rows:
        c, k = r.compute, r.key
        rows.append([r.label, r.kind]
                    + [r.cells[t].value(m) if t in r.cells else None for t, m in metric_cols]
                    + [len(r.cells[t].seeds) if t in r.cells and not r.is_reference else None
                       for t in table.tasks]
                    + [r.averages.get(a, Average(None)).value for a in AVERAGE_SHORT]
                    + [c.pretrain_tokens, c.pretrain_flops, c.pretrain_device_hours, c.pretrain_device,
                       c.finetune_flops, c.finetune_hours]
                    + ([k.checkpoint_id, k.vocab_id, k.preset, k.attention] if k else [None] * 4)
                    + [r.published or r.baseline] + budget_columns(c.pretraining))
    return _csv(header, rows)


def scores_csv(table: Table) -> str:
    """Long: one line per model, task, metric (every metric all runs report), with the seed statistics."""
    header = ["model", "kind", "task", "metric", "median", "mean", "std", "min", "max", "n", "n_expected",
              "seeds", "missing_seeds"]
    rows = []
    for r in table.rows:
        for t, cell in r.cells.items():
            for m, s in cell.stats.items():
                expected = None if r.is_reference else len(r.expected_seeds)
                rows.append([r.label, r.kind, t, m, s.median, s.mean, s.std,
                             s.min, s.max, s.n, expected, " ".join(map(str, cell.seeds)),
                             " ".join(map(str, cell.missing_seeds))])
    return _csv(header, rows)


def runs_csv(table: Table) -> str:
    """Every results.json that went into the table (after de-duplication)."""
    rows = []
    for r in table.models:
        for t, cell in r.cells.items():
            for i, seed in enumerate(cell.seeds):
                metrics = {m: v[i] for m, v in cell.values.items()}
                rows.append([r.label, t, seed, json.dumps(metrics, sort_keys=True), cell.sources[i]])
    return _csv(["model", "task", "seed", "metrics_json", "results_file"], rows)


def comparison_csv(c: Comparison) -> str:
    header = ["a", "b", "task", "metric", "median_a", "median_b", "diff", "p_value", "ci_low", "ci_high",
              "confidence", "significant", "note", "n_a", "n_b", "n_boot"]
    rows = [[c.a, c.b, d.task, d.metric, d.a, d.b, d.diff, d.p_value, d.low, d.high, c.confidence, d.significant,
             d.note, d.n_a, d.n_b, c.n_boot] for d in c.rows]
    return _csv(header, rows)


# ---- LaTeX ----

_TEX_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
                "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\^{}",
                "–": "--", "−": "-", PUBLISHED_MARK: r"$^\dagger$", UNNAMED_MARK: r"$^\ddagger$",
                BASELINE_MARK: r"$^\circ$"}


def tex_escape(s: str) -> str:
    return "".join(_TEX_ESCAPES.get(ch, ch) for ch in s)


def to_latex(table: Table) -> str:
    """booktabs table of the main grid; published rows below a rule."""
    headers = main_headers(table)
    lines = [r"\begin{table}[t]", r"\centering", r"\scriptsize", r"\setlength{\tabcolsep}{3pt}",
             r"\begin{tabular}{l" + "c" * (len(headers) - 1) + "}", r"\toprule",
             " & ".join(tex_escape(h) for h in headers) + r" \\", r"\midrule"]
    ours, refs = table.models, [r for r in table.rows if r.is_reference]
    lines += [" & ".join(tex_escape(c) for c in main_cells(table, r)) + r" \\" for r in ours]
    if ours and refs:
        lines.append(r"\midrule")
    lines += [" & ".join(tex_escape(c) for c in main_cells(table, r)) + r" \\" for r in refs]
    caption = ("Dev-set scores (\\%), median over fine-tuning seeds. "
               + " ".join(f"{tex_escape(AVERAGE_SHORT[k])}: {tex_escape(v)}." for k, v in AVERAGES.items())
               + r" $^\dagger$published number, not run here. $^\circ$fitted here on the same data."
               r" $^\ddagger$one published number for a"
               " two-metric task, metric not named. (k/N): k of N seeds present. -- : missing."
               f" {COLLAPSED_MARK}: dev predictions collapsed onto one class or value in at least one seed.")
    lines += [r"\bottomrule", r"\end{tabular}", r"\caption{" + caption + "}", r"\label{tab:scores}",
              r"\end{table}"]
    return "\n".join(lines) + "\n"


# ---- files ----


def write_atomic(path: Path, data: str | bytes) -> None:
    """Write text or bytes atomically (see convbert.io): a reader never sees half a file."""
    if isinstance(data, str):
        write_text_atomic(path, data)
    else:
        write_bytes_atomic(path, data)


def write_outputs(table: Table, out_dir: str | Path, comparison: Comparison | None = None,
                  formats: Sequence[str] = ("md", "csv", "tex", "png")) -> dict[str, Path]:
    """Write the requested formats into out_dir; returns name -> path of every file written."""
    unknown = set(formats) - {"md", "csv", "tex", "png"}
    if unknown:
        raise ReportError(f"unknown output format(s) {sorted(unknown)}; choose from md, csv, tex, png")
    out = Path(out_dir)
    texts: dict[str, str] = {}
    if "md" in formats:
        texts["table.md"] = to_markdown(table, comparison)
    if "csv" in formats:
        texts |= {"table.csv": table_csv(table), "scores.csv": scores_csv(table), "runs.csv": runs_csv(table)}
        if comparison is not None:
            texts["comparison.csv"] = comparison_csv(comparison)
    if "tex" in formats:
        texts["table.tex"] = to_latex(table)
    written = {}
    for name, text in texts.items():
        write_atomic(out / name, text)
        written[name] = out / name
    if "png" in formats:
        from convbert.report.chart import chart_png  # matplotlib only when a chart is asked for

        write_atomic(out / "chart.png", chart_png(table))
        written["chart.png"] = out / "chart.png"
    return written
