"""Chained prediction (step 1 then step 2) and the single-step baseline.

Chained: Acc(N, D) = Acc_step2(L_step1(N, D)).
Single step (the paper's baseline): accuracy straight from (N, D) in one fit,
Acc(N, D) = a / (1 + exp(-k (A / N^alpha + B / D^beta + C))) + b, where C = E - L0 (E and L0
cannot be told apart). It is fitted by bounded least squares on the step-1 points (one accuracy
per run), starting from the chained fit (a member of the family) and from it with halved exponents.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from ladder.fit.step1 import Step1Fit
from ladder.fit.step2 import Step2Fit

SINGLE_PARAMS = ("a", "k", "b", "A", "alpha", "B", "beta", "C")


@dataclass
class SingleStepFit:
    """Accuracy as a sigmoid of the step-1 form, fitted in one step."""

    params: dict[str, float]
    """a, k, b, A, alpha, B, beta, C"""
    sse: float
    """sum of squared residuals"""
    n_points: int
    """runs fitted"""
    converged: bool
    """the optimiser reported convergence from the winning start"""

    def predict(self, N, D) -> np.ndarray:
        p = self.params
        loss = (
            p["A"] / np.asarray(N, dtype=float) ** p["alpha"]
            + p["B"] / np.asarray(D, dtype=float) ** p["beta"]
            + p["C"]
        )
        return p["a"] * expit(p["k"] * loss) + p["b"]


def _model(theta: np.ndarray, log_n: np.ndarray, log_d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Accuracy at each point and its Jacobian [M, 8]."""
    a, k, b, size_log, alpha, data_log, beta, c = theta
    size_term = np.exp(size_log - alpha * log_n)
    data_term = np.exp(data_log - beta * log_d)
    loss = size_term + data_term + c
    s = expit(k * loss)
    slope = a * s * (1.0 - s)
    inner = slope * k
    jacobian = np.stack(
        [
            s,
            slope * loss,
            np.ones_like(s),
            inner * size_term,
            -inner * size_term * log_n,
            inner * data_term,
            -inner * data_term * log_d,
            inner,
        ],
        axis=1,
    )
    return a * s + b, jacobian


def fit_single_step(N, D, acc, step1: Step1Fit, step2: Step2Fit) -> SingleStepFit | None:
    """Fit the single-step baseline; None when there are fewer runs than its 8 parameters."""
    N, D, acc = (np.asarray(v, dtype=float) for v in (N, D, acc))
    if len(acc) < len(SINGLE_PARAMS) or not np.isfinite(acc).all():
        return None
    log_n_ref, log_d_ref = float(np.log(N).mean()), float(np.log(D).mean())
    log_n, log_d = np.log(N) - log_n_ref, np.log(D) - log_d_ref
    # The chained fit, written in this parametrisation: sigmoid argument L - L0 = terms + (E - L0).
    chain = np.array(
        [
            step2.a,
            step2.k,
            step2.b,
            math.log(step1.A) - step1.alpha * log_n_ref,
            step1.alpha,
            math.log(step1.B) - step1.beta * log_d_ref,
            step1.beta,
            step1.E - step2.L0,
        ]
    )
    lower = np.array([-1.0, 0.0, 0.0, -30.0, 0.0, -30.0, 0.0, -50.0])
    upper = np.array([0.0, 1e3, 1.0, 10.0, 4.0, 10.0, 4.0, 50.0])
    starts = [chain]
    for factor in (0.5,):
        varied = chain.copy()
        varied[[4, 6]] *= factor
        starts.append(varied)
    best = None
    for start in starts:
        inside = np.clip(start, lower + 1e-9, upper - 1e-9)
        result = least_squares(
            lambda t: _model(t, log_n, log_d)[0] - acc,
            inside,
            bounds=(lower, upper),
            jac=lambda t: _model(t, log_n, log_d)[1],
            method="trf",
            x_scale="jac",
            max_nfev=5000,
        )
        if np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        return None
    a, k, b, size_log, alpha, data_log, beta, c = best.x
    params = {
        "a": a,
        "k": k,
        "b": b,
        "A": math.exp(size_log + alpha * log_n_ref),
        "alpha": alpha,
        "B": math.exp(data_log + beta * log_d_ref),
        "beta": beta,
        "C": c,
    }
    return SingleStepFit(
        {name: float(value) for name, value in params.items()}, float(2 * best.cost), len(acc), bool(best.status > 0)
    )
