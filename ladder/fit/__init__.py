"""Two-stage task scaling-law fitting (Bhagia et al. 2024): step 1 L(N, D), step 2 Acc(L), chained.

Modules: points (table -> fitting points), step1, laws (the other step-1 laws), methods (which
laws a fit uses and how they combine: the paper's, the ensemble), step2, chain (chained
prediction, single-step baseline), batched (vectorised least squares for the bootstrap),
bootstrap (prediction intervals), calibration (intervals widened by the extrapolation, kappa),
early (the early-target offset), variance (checkpoint-to-checkpoint noise), pipeline (a whole
table), backtest (fit the smaller sizes, predict the larger ones).

Never imports torch, matplotlib or the report layer: `ladder.report` takes the fitted objects
and writes their tables, plots and reports (and holds the `ladder fit` / `predict` / `backtest`
commands).
"""

import os

# The fits are thousands of tiny problems: BLAS threads only add contention (L-BFGS-B slows by
# 10x on a busy 2-core machine). Effective only when numpy is not imported yet; users may override.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
