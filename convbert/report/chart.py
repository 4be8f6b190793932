"""PNG bar chart: one group per task (main metric), models side by side; published rows hatched."""

from __future__ import annotations

import io

from convbert.report.aggregate import Average, Table, row_lookup
from convbert.report.tasks import MAIN_METRIC, METRIC_ABBREV, TASK_TITLES


def chart_png(table: Table, dpi: int = 120) -> bytes:
    """Median of each task's main metric (ELECTRA convention) and the GLUE-8 average; min-max whiskers."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe to call repeatedly
    import matplotlib.pyplot as plt

    groups = [(TASK_TITLES[t] + f"\n{METRIC_ABBREV[MAIN_METRIC[t]]}", t) for t in table.tasks]
    groups.append(("GLUE-8\n(ELECTRA)", None))
    n_rows = max(len(table.rows), 1)
    width = 0.8 / n_rows
    fig, ax = plt.subplots(figsize=(max(6.0, 1.0 + len(groups) * (0.35 + 0.18 * n_rows)), 4.0))
    cmap = plt.get_cmap("tab10")
    for i, row in enumerate(table.rows):
        xs, heights, lo, hi = [], [], [], []
        lookup = row_lookup(row)
        for j, (_, task) in enumerate(groups):
            if task is None:
                v = row.averages.get("electra8", Average(None)).value
            else:
                v = lookup(task, MAIN_METRIC[task])[0]
            if v is None:
                if not row.is_reference:  # our own missing task: say so on the chart
                    ax.text(j - 0.4 + width * (i + 0.5), 1.0, "n/a", rotation=90, ha="center", va="bottom",
                            fontsize=6, color=cmap(i % 10))
                continue
            cell = row.cells.get(task) if task else None
            s = cell.stats.get(MAIN_METRIC[task]) if cell else None
            xs.append(j - 0.4 + width * (i + 0.5))
            heights.append(v)
            lo.append(v - s.min if s is not None and s.min is not None else 0.0)
            hi.append(s.max - v if s is not None and s.max is not None else 0.0)
        ax.bar(xs, heights, width, yerr=None if row.is_reference else [lo, hi], capsize=2, color=cmap(i % 10),
               hatch="//" if row.is_reference else None, alpha=0.55 if row.is_reference else 0.95,
               edgecolor="black", linewidth=0.4,
               label=row.label + (f" ({row.kind})" if row.is_reference else ""))
    ax.set_xticks(range(len(groups)), [g for g, _ in groups], fontsize=7)
    ax.set_ylabel("dev score (%), median over seeds")
    ax.set_ylim(bottom=min(0.0, ax.get_ylim()[0]))
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncols=min(n_rows, 3), loc="upper center", bbox_to_anchor=(0.5, -0.18))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    plt.close(fig)
    return buf.getvalue()
