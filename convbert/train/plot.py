"""Training-curve plots written next to a run's metrics.jsonl."""

from __future__ import annotations

from pathlib import Path


def plot_curves(rows: list[dict], keys: list[str], path: str | Path) -> Path | None:
    """One panel per metric against the step; nothing is written when no row has any of the keys."""
    keys = [k for k in keys if any(k in r for r in rows)]
    if not keys:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys, strict=True):
        points = [(r["step"], r[key]) for r in rows if isinstance(r.get(key), int | float)]
        ax.plot([p[0] for p in points], [p[1] for p in points])
        ax.set_title(key)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return Path(path)
