"""Step 2: accuracy from task loss, Acc(L) = a / (1 + exp(-k (L - L0))) + b.

Fitted by least squares on the smoothed intermediate checkpoints of the ladder runs plus the
anchor point (L = 0, Acc = 1): a model with no task loss answers everything right. Bounds as in
the paper's code: a in [-1, 0] (accuracy falls as the loss grows), k >= 0, L0 >= 0 and b in
[0, 1]; so b is the accuracy ceiling (approached as the loss falls) and a + b the floor, which the task's
chance level seeds. Multi-start: a grid of initial values (the paper's [chance - 1, 0.9, 3, 1]
among them) is run at once by the vectorised solver, and scipy's bounded least squares polishes
the best end points; the lowest sum of squares wins.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import least_squares
from scipy.special import expit

from ladder.errors import LadderError
from ladder.fit import batched
from ladder.fit.step1 import at_bound, run_starts

PARAMS = ("a", "k", "L0", "b")
N_PARAMS = len(PARAMS)
ANCHOR = (0.0, 1.0)  # (loss, accuracy) of a perfect model
K_MAX = 1e3
POLISHED = 2  # best grid end points that scipy polishes (besides the paper's start)
REFIT_ITERATIONS = 30  # bootstrap refits start at the full-data optimum


def sigmoid(loss, a, k, L0, b) -> np.ndarray:
    """Acc(L) (expit: no overflow for steep k)."""
    return a * expit(k * (np.asarray(loss, dtype=float) - L0)) + b


@dataclass
class Step2Fit:
    """A fitted Acc(L) = a / (1 + exp(-k (L - L0))) + b, with its diagnostics."""

    a: float
    """amplitude (negative: accuracy falls with loss)"""
    k: float
    """steepness"""
    L0: float
    """loss at the midpoint"""
    b: float
    """accuracy ceiling (approached as the loss falls); a + b is the floor (as the loss grows)"""
    chance: float
    """the task's chance accuracy (seeds the floor)"""
    sse: float
    """sum of squared residuals (anchor included)"""
    rmse: float
    """root mean square residual over the ladder points"""
    n_points: int
    """ladder points fitted (the anchor not counted)"""
    n_starts: int
    """initial values tried"""
    converged: bool
    """the polishing optimiser reported convergence from the winning start"""
    at_bound: list[str] = field(default_factory=list)
    """parameters that ended on a bound"""

    def predict(self, loss) -> np.ndarray:
        return sigmoid(loss, self.a, self.k, self.L0, self.b)

    @property
    def theta(self) -> np.ndarray:
        return np.array([self.a, self.k, self.L0, self.b])

    def as_dict(self) -> dict[str, float]:
        return {name: getattr(self, name) for name in PARAMS}


def sigmoid_residuals(theta: np.ndarray, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Residuals Acc(x) - y [B, M] and their Jacobian [B, 4, M] for thetas [B, 4]; x and y are
    [B, M], or [1, M] when every theta sees the same points."""
    a, k, L0, b = (theta[:, i : i + 1] for i in range(N_PARAMS))
    shifted = x - L0
    jacobian = np.empty((len(theta), N_PARAMS, x.shape[1]))
    s = expit(k * shifted, out=jacobian[:, 0, :])
    residual = a * s + b - y
    slope = s * (1.0 - s)
    slope *= a
    np.multiply(slope, shifted, out=jacobian[:, 1, :])
    np.multiply(slope, -k, out=jacobian[:, 2, :])
    jacobian[:, 3, :] = 1.0
    return residual, jacobian


@dataclass
class Step2Problem:
    """Points (with the anchor appended) and bounds; evaluates residuals for one or many thetas."""

    loss: np.ndarray
    """ladder points' loss"""
    acc: np.ndarray
    """ladder points' accuracy"""
    chance: float
    """the task's chance accuracy"""

    def __post_init__(self) -> None:
        self.x = np.append(np.asarray(self.loss, dtype=float), ANCHOR[0])
        self.y = np.append(np.asarray(self.acc, dtype=float), ANCHOR[1])
        self.lower = np.array([-1.0, 0.0, 0.0, 0.0])
        self.upper = np.array([0.0, K_MAX, 10.0 * float(np.max(self.x)), 1.0])

    def residuals(self, theta: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Residuals [B, M] and Jacobian [B, 4, M] for thetas [B, 4]."""
        return sigmoid_residuals(theta, self.x[None, :], self.y[None, :])

    def starts(self) -> np.ndarray:
        """Grid of initial values (a, k, L0, b), the paper's (chance - 1, 3, 0.9, 1) first."""
        middle = float(np.median(self.loss))
        grid = [(self.chance - 1.0, 3.0, 0.9, 1.0)]
        grid += [
            (amplitude, steep / middle, centre * middle, ceiling)
            for amplitude, steep, centre, ceiling in itertools.product(
                (self.chance - 1.0, 0.5 * (self.chance - 1.0)), (1.0, 3.0, 10.0, 30.0), (0.5, 1.0, 1.5), (1.0, 0.8)
            )
        ]
        return np.clip(np.array(grid), self.lower, self.upper)


def check_points(loss: np.ndarray, acc: np.ndarray, what: str) -> None:
    values = np.stack([loss, acc]).astype(float)
    if not np.isfinite(values).all():
        raise LadderError(f"{what}: step 2 points contain NaN or infinite values")
    if len(loss) < N_PARAMS:
        raise LadderError(f"{what}: step 2 has {len(loss)} checkpoint point(s), fewer than its {N_PARAMS} parameters")


def fit_step2(loss, acc, chance: float, *, what: str = "step 2") -> Step2Fit:
    """Multi-start bounded least-squares fit of Acc(L) through the points and the anchor."""
    problem = Step2Problem(loss, acc, chance)
    check_points(np.asarray(loss), np.asarray(acc), what)
    starts = problem.starts()
    ends, _, order = run_starts(problem.residuals, starts, len(problem.x), problem.lower, problem.upper, huber=False)
    best = None
    for start in [starts[0]] + [ends[i] for i in order[:POLISHED]]:
        # least_squares needs a start strictly inside the bounds.
        inside = np.clip(start, problem.lower + 1e-9, problem.upper - 1e-9)
        result = least_squares(
            lambda t: problem.residuals(t[None, :])[0][0],
            inside,
            jac=lambda t: problem.residuals(t[None, :])[1][0].T,
            bounds=(problem.lower, problem.upper),
            method="trf",
            x_scale="jac",
            ftol=1e-12,
            xtol=1e-12,
            gtol=1e-12,
            max_nfev=20000,
        )
        if np.isfinite(result.cost) and (best is None or result.cost < best.cost):
            best = result
    if best is None:
        raise LadderError(f"{what}: the optimiser failed from every start (non-finite residuals)")
    theta = best.x
    residual = problem.residuals(theta[None, :])[0][0]
    return Step2Fit(
        a=float(theta[0]),
        k=float(theta[1]),
        L0=float(theta[2]),
        b=float(theta[3]),
        chance=chance,
        sse=float(residual @ residual),
        rmse=float(np.sqrt(np.mean(residual[:-1] ** 2))),
        n_points=len(problem.x) - 1,
        n_starts=len(starts),
        converged=bool(best.status > 0),
        at_bound=at_bound(theta, problem.lower, problem.upper, PARAMS),
    )


def refit_step2(problem: Step2Problem, weights: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """Refit many reweighted data sets at once; weights [B, M] (anchor last), theta [4] the full-data fit.

    Each data set starts one Gauss-Newton step away from `theta` (with the shared Jacobian);
    returns the refitted parameters [B, 4].
    """
    residual, jacobian = problem.residuals(theta[None, :])
    starts = batched.newton_starts(
        np.repeat(residual, len(weights), axis=0),
        jacobian[0],
        weights,
        theta,
        problem.lower,
        problem.upper,
        huber=False,
    )
    refitted, _ = batched.solve(
        lambda t, rows: problem.residuals(t),
        starts,
        weights,
        problem.lower,
        problem.upper,
        huber=False,
        max_iter=REFIT_ITERATIONS,
        rtol=1e-6,
    )
    return refitted
