"""Early-target mode: a target whose first checkpoints exist shifts step 2 by its own offset.

The ladder's sigmoid Acc(L) may sit above or below a bigger model's accuracy-vs-loss curve, a
shift the ladder cannot reveal. A target already training reveals it early: its checkpoints with
D <= 10% of its budget (the D predicted for), prepared as step 2's points are (the first
`skip_fraction` dropped, rounded up; a trailing mean of `window`), give the offset

    offset = mean over those points of (acc - Acc_step2(loss)),

and the early-target prediction is Acc_step2(L_step1(N, D)) + offset. It is reported beside the
plain prediction, never instead of it: it uses data from the target itself.
"""

from __future__ import annotations

import math

import numpy as np

from ladder.fit.points import trailing_mean
from ladder.fit.step2 import Step2Fit

EARLY_SHARE = 0.1  # share of the target's budget whose checkpoints the offset uses


def early_offset(
    history: np.ndarray, budget: float, step2: Step2Fit, skip_fraction: float, window: int
) -> tuple[float, int]:
    """(offset, points used) from a target's checkpoints `history` rows (D, loss, acc) in step order;
    (NaN, 0) when none lies within EARLY_SHARE of `budget`."""
    early = history[(history[:, 0] <= EARLY_SHARE * budget) & np.isfinite(history[:, 2])]
    early = early[math.ceil(skip_fraction * len(early)) :]
    if len(early) == 0:
        return math.nan, 0
    loss, acc = trailing_mean(early[:, 1], window), trailing_mean(early[:, 2], window)
    return float(np.mean(acc - step2.predict(loss))), len(early)
