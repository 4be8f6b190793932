"""Divergence that stays finite: a training loss far above what an untrained model scores.

NaN/inf are caught where they appear (weights checked before every checkpoint). A run whose learning rate
is orders of magnitude too high often stays finite instead, with losses of 1e3-1e11, and its weights would
otherwise be exported and scored like any other run's (docs/design.md §3, §4: "Divergence").
"""

from __future__ import annotations

import math

# A healthy run never averages 10x an untrained model's loss over a log window or an epoch: that is a mean
# probability of e^-69 on the right token (MLM, vocab 1000) or of e^-6.9 on the right class (binary).
FACTOR = 10.0


class Diverged(FloatingPointError):
    """Training diverged: non-finite weights or losses, or losses far above an untrained model's."""


def loss_diverged(name: str, loss: float, untrained: float, untrained_is: str) -> str | None:
    """Why `loss` shows that training diverged, or None. `untrained`: what an untrained model scores on this
    loss, described by `untrained_is` (e.g. "ln 2")."""
    if math.isfinite(loss) and loss > FACTOR * untrained:
        return (f"{name} {loss:.4g} is over {FACTOR:g}x what an untrained model scores ({untrained_is} = "
                f"{untrained:.3g})")
    return None
