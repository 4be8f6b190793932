"""Training-curve plots written next to a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path


def plot_curves(rows: list[dict], keys: list[str], path: str | Path, overlay: str | None = None) -> Path | None:
    """One panel per metric against the step; with `overlay` (a key prefix such as "heldout_"), the
    prefixed metric is drawn in the same panel (train vs held-out). Nothing is written when no row has any
    of the keys."""
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        series = [(key, "train" if overlay else None)]
        if overlay and any(overlay + key in r for r in rows):
            series.append((overlay + key, overlay.rstrip("_")))
        for name, label in series:
            points = [(r["step"], r[name]) for r in rows if isinstance(r.get(name), int | float)]
            ax.plot([p[0] for p in points], [p[1] for p in points], label=label,
                    marker="o" if name != key else None, markersize=3)
        if len(series) > 1:
            ax.legend(fontsize=8)
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
