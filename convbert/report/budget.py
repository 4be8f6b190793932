"""What the table's models were compared at: equal compute (one pretraining budget), budgets in a ratio, or
equal steps (docs/design.md §3, "Compute budgets"). Reads the pretraining record each result carries."""

from __future__ import annotations

import math

from convbert.report.schema import Pretraining

UNITS = {"flops": "FLOPs", "hours": "device-hours"}
NOMINAL = ("nominal FLOPs = steps x a full-length batch (batch_size x max_seq_length tokens), what a FLOP budget "
           "counts; the pretrain FLOPs column counts the tokens processed, padding excluded")


def budget_text(p: Pretraining | None) -> str:
    """The 'pretrain budget' cell: '3.00e+14 FLOPs (99.9%)', '24.0 device-hours (101.2%)' or '–'."""
    if p is None or p.budget_kind is None or p.budget_value is None:
        return "–"
    value = f"{p.budget_value:.2e}" if p.budget_kind == "flops" else f"{p.budget_value:.3g}"
    used = "" if p.budget_used is None else f" ({100 * p.budget_used:.1f}%)"
    return f"{value} {UNITS[p.budget_kind]}{used}"


def _run_text(label: str, p: Pretraining) -> str:
    steps = "?" if p.steps is None else str(p.steps)
    nominal = "?" if p.nominal_flops is None else f"{p.nominal_flops:.3e}"
    return f"{label} {steps} steps, {nominal} nominal FLOPs"


def compute_basis_notes(models: list[tuple[str, Pretraining | None]]) -> list[str]:
    """One note saying at what the models (label, pretraining record) were compared, when at least two have a
    pretraining record."""
    ours = [(label, p) for label, p in models if p is not None]
    if len(ours) < 2:
        return []
    runs = "; ".join(_run_text(label, p) for label, p in ours) + f" ({NOMINAL})"
    records = [p for _, p in ours]
    kinds = {p.budget_kind for p in records}
    if kinds == {None}:
        steps = {p.steps for p in records}
        if None in steps:  # records written before steps were: nothing to say
            return []
        if len(steps) == 1:
            return [f"Pretrained at equal steps ({records[0].steps} each), not at equal compute: {runs}"]
        return [f"Pretrained neither to one compute budget nor for equal steps: {runs}"]
    if len(kinds) > 1:
        return [f"Not an equal-compute comparison: only some models were pretrained to a budget: {runs}"]
    kind, values = kinds.pop(), [p.budget_value for p in records]
    if all(math.isclose(v, values[0], rel_tol=1e-9) for v in values):
        return [f"Pretrained at equal compute: one budget of {values[0]:.3g} {UNITS[kind]} each "
                f"(trainer.budget.{kind}): {runs}"]
    top = max(values)
    ratios = ", ".join(f"{label} {v / top:.3g}x" for (label, _), v in zip(ours, values, strict=True))
    return [f"Pretrained to compute budgets in a ratio ({ratios} of {top:.3g} {UNITS[kind]}): {runs}"]
